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
    /// Rules for the working tree `root` and the configured gitignore-style
    /// `globs`. `common_dir` is the repository's common directory, where git
    /// reads `info/exclude` (for a linked worktree the main `.git`, not
    /// `.git/worktrees/<name>`). Returns the problems found (a bad glob is
    /// skipped, not fatal).
    pub(crate) fn new(root: &Path, common_dir: &Path, globs: &[String]) -> (Self, Vec<String>) {
        let mut problems = Vec::new();
        let configured = compile_lines(root, globs, &mut problems);
        let exclude = compile_file(
            root,
            &common_dir.join("info").join("exclude"),
            &mut problems,
        );
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
        if std::fs::symlink_metadata(dir.join(".gitignore")).is_err() {
            self.per_dir.remove(dir);
            return None;
        }
        let mut problems = Vec::new();
        let matcher = compile_gitignore(dir, &mut problems);
        self.per_dir.insert(dir.to_path_buf(), matcher);
        problems.into_iter().next()
    }

    /// Takes `dir/.gitignore` as the walk compiled it.
    pub(crate) fn insert_dir(&mut self, dir: PathBuf, matcher: Gitignore) {
        self.per_dir.insert(dir, matcher);
    }

    /// Takes `old`'s `.gitignore` matchers at and below `dir`: a directory
    /// that could not be listed keeps the rules it had.
    pub(crate) fn keep_tree_from(&mut self, old: &IgnoreRules, dir: &Path) {
        for (path, matcher) in &old.per_dir {
            if path.starts_with(dir) {
                self.per_dir
                    .entry(path.clone())
                    .or_insert_with(|| matcher.clone());
            }
        }
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

/// Compiles `dir/.gitignore`, rooted at `dir`. A missing file is an empty
/// matcher, and so is a symbolic link: git (since 2.32) does not read a
/// working tree's `.gitignore` through a link, and says so.
pub(crate) fn compile_gitignore(dir: &Path, problems: &mut Vec<String>) -> Gitignore {
    let file = dir.join(".gitignore");
    match std::fs::symlink_metadata(&file) {
        Ok(metadata) if metadata.file_type().is_symlink() => {
            problems.push(format!(
                "{}: a symbolic link; git does not read a .gitignore through a link, \
                 so its rules do not apply",
                file.display()
            ));
            Gitignore::empty()
        }
        Ok(metadata) if metadata.is_file() => compile_file(dir, &file, problems),
        _ => Gitignore::empty(),
    }
}

/// Compiles the gitignore file `file`, rooted at `root`. A missing file is
/// an empty matcher.
///
/// The file is read as bytes, line by line, as git reads it: a line that is
/// not UTF-8 is taken with its bad bytes replaced (such a pattern cannot
/// match a UTF-8 name anyway) instead of ending the file there, which is
/// what `GitignoreBuilder::add` would do.
fn compile_file(root: &Path, file: &Path, problems: &mut Vec<String>) -> Gitignore {
    if !file.is_file() {
        return Gitignore::empty();
    }
    let bytes = match std::fs::read(file) {
        Ok(bytes) => bytes,
        // Removed since the check: as if it had never been there.
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Gitignore::empty(),
        Err(error) => {
            problems.push(format!("{}: {error}", file.display()));
            return Gitignore::empty();
        }
    };
    let text = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let mut builder = GitignoreBuilder::new(root);
    for (index, line) in text.split(|byte| *byte == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let line = String::from_utf8_lossy(line);
        if let Err(error) = builder.add_line(Some(file.to_path_buf()), &line) {
            problems.push(format!("{}:{}: {error}", file.display(), index + 1));
        }
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
