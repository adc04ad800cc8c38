//! The walk of a working tree behind the initial watch setup, the rescan
//! snapshot and every rescan.
//!
//! It is a walk of our own, not `ignore`'s `WalkParallel`, because the watch
//! setup is measured against that walk and needs less of it: `ignore` tries
//! to open a `.gitignore` in every directory whether or not there is one,
//! and matches every file against the rules even when only directories are
//! wanted. Here each directory is listed once, its `.gitignore` is read only
//! when the listing shows one, and without `stamps` no file is ever looked
//! at: a file needs no watch. The matching itself is still the `ignore`
//! crate's [`Gitignore`](ignore::gitignore::Gitignore), with git's
//! precedence ([`IgnoreRules`]), so the walk, the run-time checks and the
//! snapshot agree on what is ignored.
//!
//! Directories are shared out over a rayon pool of `threads` threads. A
//! directory's callback runs before the directory is listed, so a watch
//! installed there sees everything created in it after its listing began.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::Scan;
use super::rules::{DirChain, IgnoreRules, compile_gitignore};
use super::snapshot::Stamp;

/// What one walk does besides finding directories.
pub(crate) struct Walk<'a> {
    /// The working tree's root (canonical).
    pub(crate) root: &'a Path,
    /// The repository's rules; their per-directory part is ignored: the walk
    /// reads the `.gitignore` files it meets.
    pub(crate) rules: &'a IgnoreRules,
    /// Walker threads.
    pub(crate) threads: usize,
    /// Called for every directory that is not ignored (the root first),
    /// before it is listed, from the thread that found it.
    pub(crate) on_dir: Option<&'a (dyn Fn(&Path) + Sync)>,
    /// Stat every entry that is not ignored, for the snapshot.
    pub(crate) stamps: bool,
}

/// A directory still to be listed.
struct Pending {
    dir: PathBuf,
    /// The `.gitignore` matchers of its parent and above.
    chain: DirChain,
}

impl Walk<'_> {
    /// Walks the tree; the directories come in no particular order.
    pub(crate) fn run(&self) -> Scan {
        if let Some(on_dir) = self.on_dir {
            on_dir(self.root);
        }
        let root = Pending {
            dir: self.root.to_path_buf(),
            chain: DirChain::default(),
        };
        let threads = self.threads.max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("orchex-walk-{i}"))
            .build();
        let locals: Vec<Mutex<Local>> = (0..threads).map(|_| Mutex::default()).collect();
        match pool {
            Ok(pool) if threads > 1 => {
                pool.scope(|scope| self.spread(scope, root, &locals));
            }
            // One thread, or no thread could be started: walk right here.
            _ => {
                let mut stack = vec![root];
                let mut local = Local::default();
                while let Some(next) = stack.pop() {
                    stack.extend(self.list(next, &mut local));
                }
                return local.scan;
            }
        }
        let mut scan = Scan::default();
        for local in locals {
            let local = local
                .into_inner()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            scan.absorb(local.scan);
        }
        scan
    }

    /// Lists `pending` on this pool thread and hands its subdirectories to
    /// the pool.
    fn spread<'s>(
        &'s self,
        scope: &rayon::Scope<'s>,
        pending: Pending,
        locals: &'s [Mutex<Local>],
    ) {
        let slot = rayon::current_thread_index().unwrap_or(0) % locals.len();
        let children = match locals[slot].lock() {
            Ok(mut local) => self.list(pending, &mut local),
            Err(poisoned) => self.list(pending, &mut poisoned.into_inner()),
        };
        for child in children {
            scope.spawn(move |scope| self.spread(scope, child, locals));
        }
    }

    /// Lists one directory into `local`; returns its subdirectories that
    /// are not ignored (their callbacks already made).
    fn list(&self, pending: Pending, local: &mut Local) -> Vec<Pending> {
        let Pending { dir, chain } = pending;
        let Local { scan, buffer } = local;
        scan.dirs.push(dir.clone());
        let listing = match sys::Listing::read(&dir, buffer, self.stamps) {
            Ok(listing) => listing,
            // Removed, or replaced by a link, while the walk ran: its
            // parent's event reports it.
            Err(error) if sys::is_gone(&error) => return Vec::new(),
            Err(error) => {
                scan.errors.push(format!("{}: {error}", dir.display()));
                scan.failed.push(dir);
                return Vec::new();
            }
        };
        let chain = if listing.has_gitignore {
            let mut problems = Vec::new();
            let matcher = compile_gitignore(&dir, &mut problems);
            scan.errors.extend(problems);
            scan.gitignores.push((dir.clone(), matcher.clone()));
            chain.with(matcher)
        } else {
            chain
        };
        let mut children = Vec::new();
        for (name, is_dir) in &listing.entries {
            let path = dir.join(name);
            if self.rules.is_ignored_under(&path, *is_dir, &chain) {
                continue;
            }
            if self.stamps
                && let Ok(rel) = path.strip_prefix(self.root)
                && let Some(stamp) = listing.stamp(name, &path)
            {
                scan.entries
                    .insert(rel.to_string_lossy().into_owned(), stamp);
            }
            if *is_dir {
                if let Some(on_dir) = self.on_dir {
                    on_dir(&path);
                }
                children.push(Pending {
                    dir: path,
                    chain: chain.clone(),
                });
            }
        }
        children
    }
}

/// What one walker thread keeps between directories.
#[derive(Default)]
struct Local {
    scan: Scan,
    /// The listing buffer, reused.
    buffer: Vec<std::mem::MaybeUninit<u8>>,
}

/// Listing a directory: on Linux straight from `getdents64` into a reused
/// buffer (std's `read_dir` allocates a name for every entry, and the walk
/// skips most entries unread), elsewhere through std.
mod sys {
    use std::ffi::{OsStr, OsString};
    use std::path::Path;

    use super::Stamp;

    /// Whether listing failed because the directory is no longer there as
    /// a directory: removed, or replaced by a symbolic link (which the walk
    /// does not follow, `ELOOP`).
    pub(super) fn is_gone(error: &std::io::Error) -> bool {
        #[cfg(target_os = "linux")]
        if error.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            return true;
        }
        error.kind() == std::io::ErrorKind::NotFound
    }

    /// The entries of one directory the walk looks at.
    pub(super) struct Listing {
        /// Name and whether it is a directory (a symbolic link is not).
        /// Without `all`, only the directories.
        pub(super) entries: Vec<(OsString, bool)>,
        /// The directory has a `.gitignore`.
        pub(super) has_gitignore: bool,
        #[cfg(target_os = "linux")]
        fd: rustix::fd::OwnedFd,
    }

    #[cfg(target_os = "linux")]
    impl Listing {
        /// Lists `dir`; with `all`, files too. `.`, `..` and `.git` are
        /// never listed.
        pub(super) fn read(
            dir: &Path,
            buffer: &mut Vec<std::mem::MaybeUninit<u8>>,
            all: bool,
        ) -> std::io::Result<Self> {
            use std::os::unix::ffi::OsStrExt;

            use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir};

            // Without following a link: a directory replaced by one while
            // the walk runs must not take the walk outside the tree.
            let fd = rustix::fs::openat(
                rustix::fs::CWD,
                dir,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                Mode::empty(),
            )?;
            if buffer.is_empty() {
                buffer.resize(32 * 1024, std::mem::MaybeUninit::uninit());
            }
            let mut entries = Vec::new();
            let mut has_gitignore = false;
            let mut raw = RawDir::new(&fd, buffer.as_mut_slice());
            while let Some(entry) = raw.next() {
                let entry = entry?;
                let name = entry.file_name().to_bytes();
                if matches!(name, b"." | b".." | b".git") {
                    continue;
                }
                if name == b".gitignore" {
                    has_gitignore = true;
                }
                let is_dir = match entry.file_type() {
                    FileType::Directory => true,
                    // The file system does not say: ask.
                    FileType::Unknown => {
                        rustix::fs::statat(&fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)
                            .is_ok_and(|stat| FileType::from_raw_mode(stat.st_mode).is_dir())
                    }
                    _ => false,
                };
                if is_dir || all {
                    entries.push((OsStr::from_bytes(name).to_owned(), is_dir));
                }
            }
            Ok(Self {
                entries,
                has_gitignore,
                fd,
            })
        }

        /// The snapshot stamp of the entry `name` (at `path`), unless it
        /// vanished.
        // The `stat` field types differ between targets.
        #[allow(clippy::useless_conversion)]
        pub(super) fn stamp(&self, name: &OsStr, _path: &Path) -> Option<Stamp> {
            use rustix::fs::{AtFlags, FileType};

            let stat = rustix::fs::statat(&self.fd, name, AtFlags::SYMLINK_NOFOLLOW).ok()?;
            let is_dir = FileType::from_raw_mode(stat.st_mode).is_dir();
            let mtime_ns = i64::try_from(stat.st_mtime)
                .unwrap_or(i64::MAX)
                .saturating_mul(1_000_000_000)
                .saturating_add(i64::try_from(stat.st_mtime_nsec).unwrap_or(0));
            Some(Stamp::from_parts(
                u64::try_from(stat.st_size).unwrap_or(0),
                mtime_ns,
                stat.st_ino,
                is_dir,
            ))
        }
    }

    #[cfg(not(target_os = "linux"))]
    impl Listing {
        /// Lists `dir`; with `all`, files too. `.git` is never listed.
        pub(super) fn read(
            dir: &Path,
            _buffer: &mut Vec<std::mem::MaybeUninit<u8>>,
            all: bool,
        ) -> std::io::Result<Self> {
            let mut entries = Vec::new();
            let mut has_gitignore = false;
            for entry in std::fs::read_dir(dir)? {
                let entry = entry?;
                let name = entry.file_name();
                if name == ".git" {
                    continue;
                }
                if name == ".gitignore" {
                    has_gitignore = true;
                }
                let is_dir = entry.file_type().is_ok_and(|kind| kind.is_dir());
                if is_dir || all {
                    entries.push((name, is_dir));
                }
            }
            Ok(Self {
                entries,
                has_gitignore,
            })
        }

        /// The snapshot stamp of the entry at `path`, unless it vanished.
        pub(super) fn stamp(&self, _name: &OsStr, path: &Path) -> Option<Stamp> {
            std::fs::symlink_metadata(path)
                .ok()
                .map(|metadata| Stamp::of(&metadata))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::fs;
    use std::process::Command;

    use proptest::prelude::*;

    use super::*;

    fn git(root: &Path, args: &[&str]) -> String {
        let output = Command::new("git")
            .arg("-C")
            .arg(root)
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "git {args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    }

    fn write(root: &Path, rel: &str, body: &str) {
        let path = root.join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, body).unwrap();
    }

    fn walk(
        root: &Path,
        globs: &[String],
        on_dir: Option<&(dyn Fn(&Path) + Sync)>,
        stamps: bool,
        threads: usize,
    ) -> Scan {
        let (rules, problems) = IgnoreRules::new(root, &root.join(".git"), globs);
        assert!(problems.is_empty(), "{problems:?}");
        Walk {
            root,
            rules: &rules,
            threads,
            on_dir,
            stamps,
        }
        .run()
    }

    /// The files the walk keeps, next to the untracked files git itself
    /// does not ignore (`--exclude` is how git takes the configured globs).
    fn walked_and_gits_files(
        root: &Path,
        globs: &[String],
        threads: usize,
    ) -> (BTreeSet<String>, BTreeSet<String>) {
        let scan = walk(root, globs, None, true, threads);
        let walked = scan
            .entries
            .iter()
            .filter(|(_, stamp)| !stamp.is_dir())
            .map(|(rel, _)| rel.clone())
            .collect();
        let mut args = vec!["ls-files", "--others", "--exclude-standard"];
        let excludes: Vec<String> = globs
            .iter()
            .map(|glob| format!("--exclude={glob}"))
            .collect();
        args.extend(excludes.iter().map(String::as_str));
        let gits = git(root, &args).lines().map(str::to_owned).collect();
        (walked, gits)
    }

    fn crafted_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(root, &["init", "-q"]);
        write(
            root,
            ".gitignore",
            "*.log\nbuild/\n/only-top.txt\nnode_modules/\n",
        );
        write(root, ".git/info/exclude", "secret.txt\n");
        write(root, "src/main.rs", "fn main() {}\n");
        write(root, "src/trace.log", "x\n");
        write(root, "src/only-top.txt", "kept: anchored pattern\n");
        write(root, "only-top.txt", "ignored\n");
        write(root, "src/.gitignore", "!keep.log\ngen/\n");
        write(root, "src/keep.log", "re-included\n");
        write(root, "src/gen/out.rs", "ignored dir\n");
        write(root, "src/deep/er/x.rs", "kept\n");
        write(root, "src/deep/er/.gitignore", "*.rs\n");
        write(root, "src/deep/y.rs", "kept\n");
        write(root, "build/a.o", "ignored\n");
        write(root, "docs/build", "a file named build is kept\n");
        write(root, "node_modules/pkg/index.js", "ignored\n");
        write(root, ".hidden/file", "kept: git tracks hidden files\n");
        write(root, "secret.txt", "excluded\n");
        write(root, "sub/secret.txt", "excluded at any depth\n");
        write(root, "generated.tmp", "configured glob\n");
        std::os::unix::fs::symlink(root.join("src"), root.join("link-to-src")).unwrap();
        dir
    }

    #[test]
    fn a_gitignore_is_read_past_a_line_that_is_not_utf8() {
        let dir = tempfile::tempdir().unwrap();
        let root = &fs::canonicalize(dir.path()).unwrap();
        git(root, &["init", "-q"]);
        fs::write(root.join(".gitignore"), b"# caf\xe9\nbuild/\n").unwrap();
        write(root, "build/x", "ignored\n");
        write(root, "src/y", "kept\n");
        let (walked, gits) = walked_and_gits_files(root, &[], 2);
        assert_eq!(walked, gits);
        assert!(!walked.contains("build/x"), "{walked:?}");
    }

    #[test]
    fn a_gitignore_that_is_a_symbolic_link_applies_no_rules_as_in_git() {
        let dir = tempfile::tempdir().unwrap();
        let root = &fs::canonicalize(dir.path()).unwrap();
        git(root, &["init", "-q"]);
        write(root, "rules", "*.log\n");
        std::os::unix::fs::symlink("rules", root.join(".gitignore")).unwrap();
        write(root, "a.log", "kept: git does not follow the link\n");
        let (walked, gits) = walked_and_gits_files(root, &[], 2);
        assert_eq!(walked, gits);
        assert!(walked.contains("a.log"), "{walked:?}");
        let scan = walk(root, &[], None, false, 1);
        assert!(
            scan.errors.iter().any(|e| e.contains("symbolic link")),
            "{:?}",
            scan.errors
        );
    }

    #[test]
    fn the_walk_keeps_exactly_the_files_git_does_not_ignore() {
        let dir = crafted_tree();
        let root = &fs::canonicalize(dir.path()).unwrap();
        let globs = vec!["*.tmp".to_owned()];
        for threads in [1, 2, 4] {
            let (walked, gits) = walked_and_gits_files(root, &globs, threads);
            assert_eq!(walked, gits, "{threads} threads");
        }
        // Not vacuous: every kind of rule above removed something.
        let (walked, _) = walked_and_gits_files(root, &globs, 2);
        for ignored in [
            "src/trace.log",
            "only-top.txt",
            "src/gen/out.rs",
            "src/deep/er/x.rs",
            "build/a.o",
            "secret.txt",
            "generated.tmp",
        ] {
            assert!(!walked.contains(ignored), "{ignored}");
        }
        for kept in [
            "src/keep.log",
            "src/only-top.txt",
            "docs/build",
            ".hidden/file",
            "link-to-src",
            "src/deep/y.rs",
        ] {
            assert!(walked.contains(kept), "{kept}");
        }
    }

    #[test]
    fn every_directory_not_ignored_is_reported_once_and_before_its_listing() {
        let dir = crafted_tree();
        let root = &fs::canonicalize(dir.path()).unwrap();
        let seen = Mutex::new(Vec::new());
        let on_dir = |dir: &Path| {
            // Before the listing: the walk has not recorded it yet, so the
            // callback can only see it if it was reported, not listed.
            seen.lock().unwrap().push(dir.to_path_buf());
        };
        let scan = walk(root, &[], Some(&on_dir), false, 2);
        let seen = seen.into_inner().unwrap();
        let unique: BTreeSet<PathBuf> = seen.iter().cloned().collect();
        assert_eq!(unique.len(), seen.len(), "a directory was reported twice");
        let listed: BTreeSet<PathBuf> = scan.dirs.iter().cloned().collect();
        assert_eq!(unique, listed);
        let rel: BTreeSet<String> = listed
            .iter()
            .map(|dir| {
                dir.strip_prefix(root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let expected: BTreeSet<String> = [
            "",
            "src",
            "src/deep",
            "src/deep/er",
            "docs",
            ".hidden",
            "sub",
        ]
        .into_iter()
        .map(str::to_owned)
        .collect();
        assert_eq!(rel, expected);
        assert!(scan.entries.is_empty(), "no stat without stamps");
        let with_rules: BTreeSet<PathBuf> =
            scan.gitignores.iter().map(|(dir, _)| dir.clone()).collect();
        assert_eq!(
            with_rules,
            [root.clone(), root.join("src"), root.join("src/deep/er")]
                .into_iter()
                .collect()
        );
    }

    #[test]
    fn a_directory_that_cannot_be_listed_is_reported_and_the_rest_is_walked() {
        let dir = crafted_tree();
        let root = &fs::canonicalize(dir.path()).unwrap();
        let (rules, _) = IgnoreRules::new(root, &root.join(".git"), &[]);
        let walk = Walk {
            root,
            rules: &rules,
            threads: 1,
            on_dir: None,
            stamps: true,
        };
        // What a directory replaced by a file between its parent's listing
        // and its own looks like (`ENOTDIR`; root may read anything, so a
        // permission is no way to fail here).
        let mut local = Local::default();
        let children = walk.list(
            Pending {
                dir: root.join("src/main.rs"),
                chain: DirChain::default(),
            },
            &mut local,
        );
        assert!(children.is_empty());
        assert_eq!(local.scan.errors.len(), 1, "{:?}", local.scan.errors);
        assert!(
            local.scan.errors[0].contains("src/main.rs"),
            "{:?}",
            local.scan.errors
        );
        // A vanished directory is no error: its parent's event reports it.
        let children = walk.list(
            Pending {
                dir: root.join("gone"),
                chain: DirChain::default(),
            },
            &mut local,
        );
        assert!(children.is_empty());
        assert_eq!(local.scan.errors.len(), 1);
        // The walk goes on past a directory it cannot list.
        let children = walk.list(
            Pending {
                dir: root.join("src"),
                chain: DirChain::default(),
            },
            &mut local,
        );
        assert!(children.iter().any(|child| child.dir.ends_with("src/deep")));
        assert!(local.scan.entries.contains_key("src/main.rs"));
    }

    const NAMES: &[&str] = &["a", "b.log", "c.rs", "keep.log", "out"];
    const RULES: &[&str] = &[
        "*.log",
        "!keep.log",
        "out/",
        "/a",
        "b*",
        "**/x/c.rs",
        "x/",
        "!x/",
        "*.rs",
        "/x/y/",
    ];

    fn tree_and_rules() -> impl Strategy<Value = (Vec<String>, Vec<(String, Vec<String>)>)> {
        let segment = prop::sample::select(vec!["x", "y", "x", "y", "out", "a"]);
        let dir = prop::collection::vec(segment, 0..3).prop_map(|parts| parts.join("/"));
        let file = (dir.clone(), prop::sample::select(NAMES)).prop_map(|(dir, name)| {
            if dir.is_empty() {
                name.to_owned()
            } else {
                format!("{dir}/{name}")
            }
        });
        let rules =
            prop::collection::vec(prop::sample::select(RULES).prop_map(str::to_owned), 1..5);
        (
            prop::collection::vec(file, 1..40),
            prop::collection::vec((dir, rules), 0..5),
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

        /// With git itself as the oracle: random trees, random nested
        /// `.gitignore` files.
        #[test]
        fn the_walk_agrees_with_git_on_random_trees((files, gitignores) in tree_and_rules()) {
            let dir = tempfile::tempdir().unwrap();
            let root = &fs::canonicalize(dir.path()).unwrap();
            git(root, &["init", "-q"]);
            for file in &files {
                // A path may be both a file and a directory's prefix; the
                // first one written wins.
                let path = root.join(file);
                if path.parent().is_some_and(|parent| fs::create_dir_all(parent).is_ok()) && !path.exists() {
                    fs::write(&path, "x\n").unwrap();
                }
            }
            for (dir, rules) in &gitignores {
                let dir = root.join(dir);
                if fs::create_dir_all(&dir).is_ok() {
                    let mut body = rules.join("\n");
                    body.push('\n');
                    fs::write(dir.join(".gitignore"), body).unwrap();
                }
            }
            let (walked, gits) = walked_and_gits_files(root, &[], 2);
            prop_assert_eq!(walked, gits);
        }
    }
}
