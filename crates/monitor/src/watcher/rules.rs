//! Ignore rules of one repository: for deciding about single paths at run
//! time, and for the walk (`walk`), which carries each directory's chain of
//! `.gitignore` matchers instead of looking them up.
//!
//! Git's precedence, highest first: the configured `ignore` globs (an orchex
//! addition: they always win), the `.gitignore` of the nearest directory,
//! then of each parent up to the root, then `$GIT_DIR/info/exclude`, then the
//! global excludes file (`core.excludesFile`, default
//! `$XDG_CONFIG_HOME/git/ignore`). A path whose parent directory is watched
//! has no ignored ancestor, so only the path itself needs matching.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ignore::Match;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

/// The compiled rules of one repository.
#[derive(Debug, Clone)]
pub(crate) struct IgnoreRules {
    root: PathBuf,
    configured: Gitignore,
    per_dir: HashMap<PathBuf, Gitignore>,
    exclude: Gitignore,
    global: Gitignore,
}

impl IgnoreRules {
    /// Rules for the working tree `root` with git directory `git_dir` and
    /// the configured gitignore-style `globs`. Returns the problems found
    /// (a bad glob is skipped, not fatal).
    pub(crate) fn new(root: &Path, git_dir: &Path, globs: &[String]) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let configured = compile_lines(root, globs, &mut problems);
        let exclude = compile_file(root, &git_dir.join("info").join("exclude"), &mut problems);
        let global = match ignore::gitignore::gitconfig_excludes_path() {
            Some(path) => compile_file(root, &path, &mut problems),
            None => Gitignore::empty(),
        };
        (
            Self {
                root: root.to_path_buf(),
                configured,
                per_dir: HashMap::new(),
                exclude,
                global,
            },
            problems,
        )
    }

    /// The configured globs' matcher, for the walker's entry filter.
    pub(crate) fn configured(&self) -> &Gitignore {
        &self.configured
    }

    /// (Re)reads `dir/.gitignore`; forgets it when the file is gone.
    pub(crate) fn load_dir(&mut self, dir: &Path) -> Option<String> {
        let file = dir.join(".gitignore");
        if !file.is_file() {
            self.per_dir.remove(dir);
            return None;
        }
        let mut problems = Vec::new();
        let matcher = compile_file(dir, &file, &mut problems);
        self.per_dir.insert(dir.to_path_buf(), matcher);
        problems.into_iter().next()
    }

    /// Takes `dir/.gitignore` as the walk compiled it.
    pub(crate) fn insert_dir(&mut self, dir: PathBuf, matcher: Gitignore) {
        self.per_dir.insert(dir, matcher);
    }

    /// Forgets every `.gitignore` at or below `dir`.
    pub(crate) fn forget_tree(&mut self, dir: &Path) {
        self.per_dir.retain(|d, _| !d.starts_with(dir));
    }

    /// Whether `path` (absolute, inside the root) is ignored, assuming its
    /// parent directory is not.
    pub(crate) fn is_ignored(&self, path: &Path, is_dir: bool) -> bool {
        let nearest_first = path
            .ancestors()
            .skip(1)
            .take_while(|dir| dir.starts_with(&self.root))
            .filter_map(|dir| self.per_dir.get(dir));
        self.decide(path, is_dir, nearest_first)
    }

    /// Whether `path`, found in a directory whose own and ancestors'
    /// `.gitignore` matchers are `chain`, is ignored. The walk uses this:
    /// it carries each directory's chain instead of looking them up.
    pub(crate) fn is_ignored_under(&self, path: &Path, is_dir: bool, chain: &DirChain) -> bool {
        self.decide(path, is_dir, chain.nearest_first())
    }

    /// Git's decision for `path`, given the `.gitignore` matchers that
    /// apply to it, nearest directory first.
    fn decide<'a>(
        &'a self,
        path: &Path,
        is_dir: bool,
        nearest_first: impl Iterator<Item = &'a Gitignore>,
    ) -> bool {
        if path == self.root {
            return false;
        }
        if path.file_name().is_some_and(|name| name == ".git") {
            return true;
        }
        if !self.configured.is_empty() && self.configured.matched(path, is_dir).is_ignore() {
            return true;
        }
        for matcher in nearest_first {
            match matcher.matched(path, is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        match self.exclude.matched(path, is_dir) {
            Match::Ignore(_) => return true,
            Match::Whitelist(_) => return false,
            Match::None => {}
        }
        self.global.matched(path, is_dir).is_ignore()
    }
}

/// The `.gitignore` matchers that apply inside one directory: its own, then
/// its parent's, up to the root. Cheap to clone (shared links).
#[derive(Debug, Clone, Default)]
pub(crate) struct DirChain(Option<Arc<ChainLink>>);

#[derive(Debug)]
struct ChainLink {
    matcher: Gitignore,
    parent: DirChain,
}

impl DirChain {
    /// The chain of a child directory whose own `.gitignore` compiled to
    /// `matcher`.
    pub(crate) fn with(&self, matcher: Gitignore) -> Self {
        Self(Some(Arc::new(ChainLink {
            matcher,
            parent: self.clone(),
        })))
    }

    fn nearest_first(&self) -> impl Iterator<Item = &Gitignore> {
        std::iter::successors(self.0.as_deref(), |link| link.parent.0.as_deref())
            .map(|link| &link.matcher)
    }
}

/// Compiles the gitignore file `file`, rooted at `root`. A missing file is
/// an empty matcher.
pub(crate) fn compile_file(root: &Path, file: &Path, problems: &mut Vec<String>) -> Gitignore {
    if !file.is_file() {
        return Gitignore::empty();
    }
    let mut builder = GitignoreBuilder::new(root);
    if let Some(error) = builder.add(file) {
        problems.push(format!("{}: {error}", file.display()));
    }
    builder.build().unwrap_or_else(|error| {
        problems.push(format!("{}: {error}", file.display()));
        Gitignore::empty()
    })
}

/// Compiles gitignore-style `lines`, rooted at `root`.
fn compile_lines(root: &Path, lines: &[String], problems: &mut Vec<String>) -> Gitignore {
    let mut builder = GitignoreBuilder::new(root);
    for line in lines {
        if let Err(error) = builder.add_line(None, line) {
            problems.push(format!("ignore glob {line:?}: {error}"));
        }
    }
    builder.build().unwrap_or_else(|error| {
        problems.push(format!("ignore globs: {error}"));
        Gitignore::empty()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_rules_take_precedence_and_globs_win() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join(".git/info")).unwrap();
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join(".gitignore"), "*.gen\nbuild/\n").unwrap();
        std::fs::write(root.join("sub/.gitignore"), "!keep.gen\n").unwrap();
        std::fs::write(root.join(".git/info/exclude"), "secret.txt\n").unwrap();
        let (mut rules, problems) = IgnoreRules::new(root, &root.join(".git"), &["*.log".into()]);
        assert!(problems.is_empty(), "{problems:?}");
        rules.load_dir(root);
        rules.load_dir(&root.join("sub"));
        assert!(rules.is_ignored(&root.join("a.gen"), false));
        assert!(rules.is_ignored(&root.join("sub/x.gen"), false));
        assert!(!rules.is_ignored(&root.join("sub/keep.gen"), false));
        assert!(rules.is_ignored(&root.join("build"), true));
        assert!(!rules.is_ignored(&root.join("build"), false));
        assert!(rules.is_ignored(&root.join("secret.txt"), false));
        assert!(rules.is_ignored(&root.join("sub/trace.log"), false));
        assert!(rules.is_ignored(&root.join(".git"), true));
        assert!(!rules.is_ignored(&root.join("src.rs"), false));
    }
}
