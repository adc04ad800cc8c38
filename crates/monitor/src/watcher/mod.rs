//! The ignore-aware file-system watcher of one repository.
//!
//! [`RepoFs`] owns the repository's watch backend and everything needed to
//! turn its raw events into repository-relative changed paths. On Linux the
//! backend calls inotify directly ([`inotify`]: a watch is one system call
//! from whichever thread finds the directory); elsewhere, and for the
//! polling fallback, it is notify. Either way the events arrive as
//! `notify::Event`s, so everything below handles them alike:
//!
//! - the initial walk ([`walk`]: parallel, git's rules — nested
//!   `.gitignore`, `.git/info/exclude`, the global excludes file — plus the
//!   configured globs, matched with the `ignore` crate) installs a
//!   **non-recursive** watch on each directory that is not ignored while the
//!   walk runs; an ignored `target/` or `node_modules/` costs nothing;
//! - the git directory gets its own watches: `.git/` itself (`HEAD`,
//!   `packed-refs`, `index.lock`), `.git/refs/`, and every directory under
//!   `refs/heads` and `refs/remotes`;
//! - a new directory gets its watch first and is then scanned, so files
//!   created in it before the watch existed are reported too; a removed
//!   directory loses its watches and reports everything it contained;
//! - when the kernel refuses a watch (inotify's `ENOSPC`, notify's
//!   `MaxFilesWatch`) or the configured watch budget is exceeded, the
//!   repository falls back to notify's `PollWatcher` on the same directory
//!   set, with a reason that names `fs.inotify.max_user_watches` and the
//!   number of watches needed;
//! - a queue overflow (notify's `Flag::Rescan`) or a forced rescan walks the
//!   tree again and compares it with a size-and-mtime [`Snapshot`].
//!
//! Everything here is synchronous; the monitor runs it on tokio's blocking
//! pool.

#[cfg(target_os = "linux")]
pub(crate) mod inotify;
pub(crate) mod rules;
pub(crate) mod snapshot;
mod walk;

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use ignore::WalkBuilder;
use ignore::gitignore::Gitignore;
use notify::event::{CreateKind, RemoveKind};
use notify::{EventKind, RecursiveMode, Watcher};
use orchex_core::RepoId;

use self::rules::IgnoreRules;
use self::snapshot::{Snapshot, Stamp};

/// What the backend hands us (notify's event type, whichever backend).
pub(crate) type RawEvent = notify::Result<notify::Event>;

/// Forwards the backend's events (from its own thread) into the monitor.
#[derive(Debug, Clone)]
pub(crate) struct RawSink(pub(crate) tokio::sync::mpsc::UnboundedSender<RawEvent>);

impl notify::EventHandler for RawSink {
    fn handle_event(&mut self, event: RawEvent) {
        // The receiver is gone only when the repository is being removed.
        let _ = self.0.send(event);
    }
}

/// How one repository is watched.
#[derive(Debug, Clone)]
pub(crate) struct WatchOptions {
    /// Configured gitignore-style globs.
    pub(crate) globs: Vec<String>,
    /// Most watches this repository may use before it is polled instead.
    pub(crate) watch_limit: Option<usize>,
    /// Interval of the polling fallback.
    pub(crate) poll_interval: Duration,
    /// Poll from the start (no native watcher).
    pub(crate) force_polling: bool,
    /// Threads of the walker.
    pub(crate) threads: usize,
}

/// How the repository is being watched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Native, event-driven watches (inotify on Linux).
    Native,
    /// notify's `PollWatcher`, for the given reason.
    Polling(String),
}

/// What a batch of raw events (or a rescan) amounted to.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Repository-relative paths that changed.
    pub(crate) changed: BTreeSet<String>,
    /// Whether a rescan produced (some of) the paths.
    pub(crate) rescan: bool,
    /// A ref, `HEAD` or `packed-refs` may have moved.
    pub(crate) refs_touched: bool,
    /// The new state of `.git/index.lock`, when it may have changed.
    pub(crate) index_locked: Option<bool>,
    /// The repository is gone (deleted, or its git directory is).
    pub(crate) gone: Option<String>,
    /// Problems worth an event (non-fatal).
    pub(crate) warnings: Vec<String>,
    /// The watch mode changed (polling fallback).
    pub(crate) mode_changed: bool,
    index_lock_touched: bool,
}

/// The result of walking a tree.
#[derive(Debug, Default)]
struct Scan {
    dirs: Vec<PathBuf>,
    entries: BTreeMap<String, Stamp>,
    /// Each directory with a `.gitignore`, and its compiled rules.
    gitignores: Vec<(PathBuf, Gitignore)>,
    errors: Vec<String>,
    /// Directories that exist but could not be listed (their errors are
    /// in `errors`): what is below them is unknown, not gone.
    failed: Vec<PathBuf>,
}

impl Scan {
    /// Adds what another walker thread found.
    fn absorb(&mut self, other: Scan) {
        self.dirs.extend(other.dirs);
        let mut entries = other.entries;
        self.entries.append(&mut entries);
        self.gitignores.extend(other.gitignores);
        self.errors.extend(other.errors);
        self.failed.extend(other.failed);
    }
}

/// The watcher state of one repository.
pub(crate) struct RepoFs {
    repo: RepoId,
    root: PathBuf,
    git_dir: PathBuf,
    /// Where the branches, remote-tracking refs, `packed-refs` and
    /// `info/exclude` are: `git_dir` itself, or for a linked worktree the
    /// main `.git`.
    common_dir: PathBuf,
    options: WatchOptions,
    rules: IgnoreRules,
    rules_dirty: bool,
    dirs: BTreeSet<PathBuf>,
    /// Directories the initial walk watched that are not in `dirs` yet:
    /// ordering 10,000 paths into the set takes ~5 ms, which `start`
    /// leaves to the first call that needs the set (the monitor's is
    /// [`RepoFs::build_snapshot`], in the background).
    walked_dirs: Vec<PathBuf>,
    git_dirs: BTreeSet<PathBuf>,
    snapshot: Snapshot,
    backend: Backend,
    mode: Mode,
    sink: RawSink,
    /// Runs between a rescan's walk and its watch installation, so tests
    /// can change the tree exactly there.
    #[cfg(test)]
    after_rescan_walk: Option<Box<dyn FnMut() + Send>>,
}

impl std::fmt::Debug for RepoFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoFs")
            .field("repo", &self.repo)
            .field("root", &self.root)
            .field("mode", &self.mode)
            .field("dirs", &(self.dirs.len() + self.walked_dirs.len()))
            .field("git_dirs", &self.git_dirs.len())
            .field("snapshot", &self.snapshot.len())
            .finish_non_exhaustive()
    }
}

/// Why a repository could not be watched at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    #[error("{path} is not a readable directory: {source}")]
    Unreadable {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create a file-system watcher: {0}")]
    Backend(notify::Error),
}

impl RepoFs {
    /// Walks the repository and installs its watches.
    ///
    /// Returns the watcher and the warnings found on the way.
    pub(crate) fn start(
        repo: RepoId,
        root: &Path,
        git_dir: &Path,
        common_dir: &Path,
        options: WatchOptions,
        sink: RawSink,
    ) -> Result<(Self, Vec<String>), StartError> {
        let root = fs::canonicalize(root).map_err(|source| StartError::Unreadable {
            path: root.to_path_buf(),
            source,
        })?;
        let git_dir = fs::canonicalize(git_dir).map_err(|source| StartError::Unreadable {
            path: git_dir.to_path_buf(),
            source,
        })?;
        let common_dir = fs::canonicalize(common_dir).map_err(|source| StartError::Unreadable {
            path: common_dir.to_path_buf(),
            source,
        })?;
        let (rules, mut warnings) = IgnoreRules::new(&root, &common_dir, &options.globs);

        let mut native_failure = None;
        let backend = if options.force_polling {
            Backend::Notify(Box::new(
                poll_watcher(&sink, options.poll_interval).map_err(StartError::Backend)?,
            ))
        } else {
            match Backend::native(&sink, options.threads) {
                Ok(backend) => backend,
                Err(error) => {
                    native_failure = Some(describe_backend_failure(&error));
                    Backend::Notify(Box::new(
                        poll_watcher(&sink, options.poll_interval).map_err(StartError::Backend)?,
                    ))
                }
            }
        };
        let mode = if options.force_polling {
            Mode::Polling("polling was requested".to_owned())
        } else if let Some(reason) = &native_failure {
            Mode::Polling(reason.clone())
        } else {
            Mode::Native
        };

        let mut this = Self {
            repo,
            root,
            git_dir,
            common_dir,
            options,
            rules,
            rules_dirty: false,
            dirs: BTreeSet::new(),
            walked_dirs: Vec::new(),
            git_dirs: BTreeSet::new(),
            snapshot: Snapshot::default(),
            backend,
            mode,
            sink,
            #[cfg(test)]
            after_rescan_walk: None,
        };
        if let Some(reason) = native_failure {
            warnings.push(reason);
        }

        // Walk and watch at once, so the walk never waits for a watch: with
        // inotify the walker threads install each directory's watch as they
        // find it (one system call; see `inotify`), otherwise they hand the
        // directories to an installer thread that makes notify's calls.
        let limit_hit = AtomicBool::new(false);
        let budget = this.options.watch_limit.unwrap_or(usize::MAX);
        let watch_errors = Mutex::new(Vec::new());
        let note_failure = |dir: &Path, error: notify::Error| {
            if matches!(error.kind, notify::ErrorKind::MaxFilesWatch) {
                limit_hit.store(true, Ordering::Relaxed);
            } else if let Ok(mut errors) = watch_errors.lock() {
                errors.push(format!("watching {}: {error}", dir.display()));
            }
        };
        let scan = match this.backend.installer() {
            #[cfg(target_os = "linux")]
            Some(installer) => {
                let installed = AtomicUsize::new(0);
                let on_dir = |dir: &Path| {
                    if limit_hit.load(Ordering::Relaxed) {
                        return;
                    }
                    if installed.fetch_add(1, Ordering::Relaxed) >= budget {
                        limit_hit.store(true, Ordering::Relaxed);
                        return;
                    }
                    if let Err(error) = installer.add(dir) {
                        note_failure(dir, error);
                    }
                };
                this.walk(Some(&on_dir), false)
            }
            _ => std::thread::scope(|scope| {
                let (found, to_install) = std::sync::mpsc::channel::<PathBuf>();
                let backend = &mut this.backend;
                let (limit_hit, note_failure) = (&limit_hit, &note_failure);
                scope.spawn(move || {
                    for (installed, dir) in to_install.into_iter().enumerate() {
                        if limit_hit.load(Ordering::Relaxed) {
                            continue;
                        }
                        if installed >= budget {
                            limit_hit.store(true, Ordering::Relaxed);
                            continue;
                        }
                        if let Err(error) = backend.watch(&dir) {
                            note_failure(&dir, error);
                        }
                    }
                });
                let on_dir = |dir: &Path| {
                    // The installer only stops early when the scope ends.
                    let _ = found.send(dir.to_path_buf());
                };
                // Field by field: the installer thread holds the backend.
                let scan = walk::Walk {
                    root: &this.root,
                    rules: &this.rules,
                    threads: this.options.threads,
                    on_dir: Some(&on_dir),
                    stamps: false,
                }
                .run();
                drop(found);
                scan
            }),
        };
        warnings.extend(scan.errors.iter().cloned());
        this.absorb_scan(scan);

        let git_dirs = git_watch_dirs(&this.git_dir, &this.common_dir);
        let needed = this.walked_dirs.len() + git_dirs.len();
        for dir in git_dirs {
            if !limit_hit.load(Ordering::Relaxed) {
                if needed > budget {
                    limit_hit.store(true, Ordering::Relaxed);
                } else if let Err(error) = this.backend.watch(&dir) {
                    note_failure(&dir, error);
                }
            }
            this.git_dirs.insert(dir);
        }
        warnings.extend(watch_errors.into_inner().unwrap_or_default());

        if limit_hit.load(Ordering::Relaxed) && this.mode == Mode::Native {
            let reason = this.limit_reason(needed);
            let mut outcome = Outcome::default();
            this.fall_back_to_polling(reason, &mut outcome);
            warnings.extend(outcome.warnings);
        }
        Ok((this, warnings))
    }

    /// How the repository is watched.
    pub(crate) fn mode(&self) -> &Mode {
        &self.mode
    }

    /// Watched directories of the working tree (canonical paths).
    pub(crate) fn watched_dirs(&self) -> impl Iterator<Item = &Path> {
        self.dirs
            .iter()
            .chain(&self.walked_dirs)
            .map(PathBuf::as_path)
    }

    /// Number of watches (working tree and git directory).
    pub(crate) fn n_watches(&self) -> usize {
        self.dirs.len() + self.walked_dirs.len() + self.git_dirs.len()
    }

    /// Whether `.git/index.lock` exists now.
    pub(crate) fn index_locked(&self) -> bool {
        self.git_dir.join("index.lock").exists()
    }

    /// Replaces the configured globs; the tree is rescanned so that newly
    /// ignored directories lose their watches and newly visible ones gain
    /// theirs. Paths that became visible are reported as changed; paths
    /// that became ignored are not.
    pub(crate) fn set_globs(&mut self, globs: Vec<String>) -> Outcome {
        let mut outcome = Outcome::default();
        if globs == self.options.globs {
            return outcome;
        }
        self.options.globs = globs;
        let (rules, problems) = IgnoreRules::new(&self.root, &self.common_dir, &self.options.globs);
        self.rules = rules;
        outcome.warnings.extend(problems);
        self.rescan_into(&mut outcome);
        outcome
    }

    /// Turns a batch of raw events into changed paths.
    pub(crate) fn process(&mut self, events: Vec<RawEvent>) -> Outcome {
        self.settle_walked_dirs();
        let mut outcome = Outcome::default();
        let mut need_rescan = false;
        // Each path is looked at once per batch, whatever number of events
        // named it.
        let mut hints: BTreeMap<PathBuf, Option<bool>> = BTreeMap::new();
        for event in events {
            match event {
                Err(error) => {
                    if matches!(error.kind, notify::ErrorKind::MaxFilesWatch) {
                        let needed = self.n_watches();
                        let reason = self.limit_reason(needed);
                        self.fall_back_to_polling(reason, &mut outcome);
                    } else {
                        outcome.warnings.push(format!("watcher: {error}"));
                    }
                }
                Ok(event) => {
                    if event.need_rescan() {
                        need_rescan = true;
                        continue;
                    }
                    let is_dir = match event.kind {
                        EventKind::Access(_) => continue,
                        EventKind::Create(CreateKind::Folder)
                        | EventKind::Remove(RemoveKind::Folder) => Some(true),
                        EventKind::Create(CreateKind::File)
                        | EventKind::Remove(RemoveKind::File) => Some(false),
                        _ => None,
                    };
                    for path in event.paths {
                        let hint = hints.entry(path).or_insert(None);
                        if hint.is_none() {
                            *hint = is_dir;
                        }
                    }
                }
            }
        }
        for (path, is_dir) in hints {
            self.on_path(&path, is_dir, &mut outcome);
        }
        if std::mem::take(&mut self.rules_dirty) {
            // A .gitignore changed: the set of watched directories may be
            // different now.
            need_rescan = true;
        }
        if need_rescan {
            self.rescan_into(&mut outcome);
        }
        self.finish(outcome)
    }

    /// Walks the whole tree again and reports what differs from the
    /// snapshot (after a queue overflow, or on request).
    pub(crate) fn rescan(&mut self) -> Outcome {
        let mut outcome = Outcome::default();
        self.rescan_into(&mut outcome);
        self.finish(outcome)
    }

    fn finish(&self, mut outcome: Outcome) -> Outcome {
        if outcome.index_lock_touched {
            outcome.index_locked = Some(self.index_locked());
        }
        if !self.root.is_dir() {
            outcome.gone = Some(format!(
                "repository directory {} no longer exists",
                self.root.display()
            ));
        } else if !self.git_dir.is_dir() {
            outcome.gone = Some(format!(
                "git directory {} no longer exists",
                self.git_dir.display()
            ));
        }
        outcome
    }

    fn rel(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.root).ok()?;
        let rel = rel.to_string_lossy();
        if rel.is_empty() {
            return None;
        }
        Some(if std::path::MAIN_SEPARATOR == '/' {
            rel.into_owned()
        } else {
            rel.replace(std::path::MAIN_SEPARATOR, "/")
        })
    }

    fn on_path(&mut self, path: &Path, hint_is_dir: Option<bool>, outcome: &mut Outcome) {
        if path.starts_with(&self.git_dir) || path.starts_with(&self.common_dir) {
            self.on_git_path(path, outcome);
            return;
        }
        let Some(rel) = self.rel(path) else {
            return;
        };
        let metadata = fs::symlink_metadata(path).ok();
        let is_dir = match &metadata {
            Some(metadata) => metadata.is_dir(),
            None => {
                hint_is_dir.unwrap_or(false)
                    || self.dirs.contains(path)
                    || self.snapshot.get(&rel).is_some_and(Stamp::is_dir)
            }
        };
        // Before the ignore check: git reads a watched directory's
        // `.gitignore` even when the file matches a rule itself (a cache
        // directory's `*`, say).
        if path.file_name().is_some_and(|name| name == ".gitignore")
            && let Some(parent) = path.parent()
            && self.dirs.contains(parent)
        {
            if let Some(problem) = self.rules.load_dir(parent) {
                outcome.warnings.push(problem);
            }
            self.rules_dirty = true;
        }
        if self.rules.is_ignored(path, is_dir) {
            return;
        }
        match metadata {
            Some(metadata) if metadata.is_dir() => {
                self.snapshot.insert(rel.clone(), Stamp::of(&metadata));
                outcome.changed.insert(rel);
                if !self.dirs.contains(path) {
                    self.add_tree(path, outcome);
                }
            }
            Some(metadata) => {
                self.snapshot.insert(rel.clone(), Stamp::of(&metadata));
                outcome.changed.insert(rel);
            }
            None => {
                if is_dir {
                    self.remove_tree(path, &rel, outcome);
                } else {
                    self.snapshot.remove(&rel);
                }
                outcome.changed.insert(rel);
            }
        }
    }

    fn on_git_path(&mut self, path: &Path, outcome: &mut Outcome) {
        // A linked worktree's git directory is inside the common one: its
        // own `HEAD` and index lock come first.
        let Ok(rel) = path
            .strip_prefix(&self.git_dir)
            .or_else(|_| path.strip_prefix(&self.common_dir))
        else {
            return;
        };
        let rel = rel.to_string_lossy();
        if rel == "index.lock" {
            outcome.index_lock_touched = true;
            return;
        }
        if rel.ends_with(".lock") {
            return;
        }
        if rel == "HEAD" || rel == "packed-refs" {
            outcome.refs_touched = true;
            return;
        }
        if !(rel.starts_with("refs/heads") || rel.starts_with("refs/remotes")) {
            return;
        }
        outcome.refs_touched = true;
        match fs::symlink_metadata(path) {
            Ok(metadata) if metadata.is_dir() => {
                if !self.git_dirs.contains(path) {
                    for dir in walk_dirs(path) {
                        self.watch_git_dir(dir, outcome);
                    }
                }
            }
            Ok(_) => {}
            Err(_) => {
                let gone: Vec<PathBuf> = self
                    .git_dirs
                    .range(path.to_path_buf()..)
                    .take_while(|dir| dir.starts_with(path))
                    .cloned()
                    .collect();
                for dir in gone {
                    let _ = self.backend.unwatch(&dir);
                    self.git_dirs.remove(&dir);
                }
            }
        }
    }

    fn watch_git_dir(&mut self, dir: PathBuf, outcome: &mut Outcome) {
        if self.install_watch(&dir, outcome) {
            self.git_dirs.insert(dir);
        }
    }

    /// Installs a non-recursive watch, switching to polling when the kernel
    /// (or the budget) says no. Returns whether the directory is covered.
    fn install_watch(&mut self, dir: &Path, outcome: &mut Outcome) -> bool {
        if self.mode == Mode::Native
            && self
                .options
                .watch_limit
                .is_some_and(|limit| self.n_watches() >= limit)
        {
            let needed = self.n_watches() + 1;
            let reason = self.limit_reason(needed);
            self.fall_back_to_polling(reason, outcome);
        }
        match self.backend.watch(dir) {
            Ok(()) => true,
            Err(error) if matches!(error.kind, notify::ErrorKind::MaxFilesWatch) => {
                let needed = self.n_watches() + 1;
                let reason = self.limit_reason(needed);
                self.fall_back_to_polling(reason, outcome);
                self.backend.watch(dir).is_ok()
            }
            // The directory vanished already; its parent's event reports it.
            Err(_) => false,
        }
    }

    /// Watches the new directory `dir`, then scans it: whatever was created
    /// in it before its watch existed is reported too.
    fn add_tree(&mut self, dir: &Path, outcome: &mut Outcome) {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(current) = stack.pop() {
            // Watch first, read second: nothing created in between is lost.
            if !self.install_watch(&current, outcome) {
                continue;
            }
            self.dirs.insert(current.clone());
            for (path, rel, metadata) in self.list_visible(&current, outcome) {
                self.snapshot.insert(rel.clone(), Stamp::of(&metadata));
                outcome.changed.insert(rel);
                if metadata.is_dir() && !self.dirs.contains(&path) {
                    stack.push(path);
                }
            }
        }
    }

    /// Lists `dir` (reading its `.gitignore` first, when it has one) and
    /// returns the entries that are not ignored: path, relative path and
    /// metadata (of a link itself, not of its target).
    fn list_visible(
        &mut self,
        dir: &Path,
        outcome: &mut Outcome,
    ) -> Vec<(PathBuf, String, fs::Metadata)> {
        let Ok(read) = fs::read_dir(dir) else {
            return Vec::new();
        };
        let entries: Vec<fs::DirEntry> = read.filter_map(Result::ok).collect();
        if entries
            .iter()
            .any(|entry| entry.file_name() == ".gitignore")
            && let Some(problem) = self.rules.load_dir(dir)
        {
            outcome.warnings.push(problem);
        }
        entries
            .into_iter()
            .filter_map(|entry| {
                let path = entry.path();
                let metadata = entry.metadata().ok()?;
                if self.rules.is_ignored(&path, metadata.is_dir()) {
                    return None;
                }
                let rel = self.rel(&path)?;
                Some((path, rel, metadata))
            })
            .collect()
    }

    /// Forgets the removed directory `dir` and everything below it; every
    /// path it contained is reported.
    fn remove_tree(&mut self, dir: &Path, rel: &str, outcome: &mut Outcome) {
        let gone: Vec<PathBuf> = self
            .dirs
            .range(dir.to_path_buf()..)
            .take_while(|watched| watched.starts_with(dir))
            .cloned()
            .collect();
        for watched in gone {
            // The kernel dropped the watch with the directory; this only
            // tidies notify's bookkeeping.
            let _ = self.backend.unwatch(&watched);
            self.dirs.remove(&watched);
        }
        self.rules.forget_tree(dir);
        outcome.changed.extend(self.snapshot.remove_tree(rel));
    }

    fn rescan_into(&mut self, outcome: &mut Outcome) {
        self.settle_walked_dirs();
        let (rules, problems) = IgnoreRules::new(&self.root, &self.common_dir, &self.options.globs);
        let previous_rules = std::mem::replace(&mut self.rules, rules);
        outcome.warnings.extend(problems);
        if !self.root.is_dir() {
            return;
        }
        let scan = self.walk(None, true);
        #[cfg(test)]
        if let Some(hook) = self.after_rescan_walk.as_mut() {
            hook();
        }
        self.apply_rescan(scan, &previous_rules, outcome);
    }

    /// Brings the watches, the rules and the snapshot in line with a fresh
    /// walk, reporting what differs.
    fn apply_rescan(&mut self, scan: Scan, previous_rules: &IgnoreRules, outcome: &mut Outcome) {
        outcome.warnings.extend(scan.errors.iter().cloned());
        // What is below a directory that could not be listed is unknown:
        // it keeps its watches, rules and snapshot entries.
        let unlisted = |path: &Path| scan.failed.iter().any(|dir| path.starts_with(dir));
        let fresh: BTreeSet<PathBuf> = scan.dirs.iter().cloned().collect();
        let stale: Vec<PathBuf> = self
            .dirs
            .difference(&fresh)
            .filter(|dir| !unlisted(dir))
            .cloned()
            .collect();
        for dir in stale {
            let _ = self.backend.unwatch(&dir);
            self.dirs.remove(&dir);
        }
        // Parents first (the set's order), so a catch-up below never meets
        // a directory whose parent is still unwatched.
        let new: Vec<PathBuf> = fresh.difference(&self.dirs).cloned().collect();
        let mut caught_up = Vec::new();
        for dir in new {
            if self.install_watch(&dir, outcome) {
                self.dirs.insert(dir.clone());
                caught_up.push(dir);
            }
        }
        for (dir, matcher) in scan.gitignores {
            self.rules.insert_dir(dir, matcher);
        }
        let mut entries = scan.entries;
        for dir in &scan.failed {
            self.rules.keep_tree_from(previous_rules, dir);
            if let Some(rel) = self
                .rel(dir)
                .or_else(|| (dir == &self.root).then(String::new))
            {
                for (path, stamp) in self.snapshot.below(&rel) {
                    entries.entry(path.clone()).or_insert(stamp);
                }
            }
        }
        let snapshot = Snapshot::from_map(entries);
        // A path that left the snapshot but is still on disk became ignored
        // (new globs or .gitignore): that is not a change.
        let root = &self.root;
        outcome
            .changed
            .extend(self.snapshot.diff(&snapshot).into_iter().filter(|rel| {
                snapshot.get(rel).is_some() || fs::symlink_metadata(root.join(rel)).is_err()
            }));
        self.snapshot = snapshot;
        // A directory the walk listed before its watch existed may have
        // gained entries in between; its watch sees everything after.
        for dir in caught_up {
            self.catch_up(&dir, outcome);
        }
        for dir in git_watch_dirs(&self.git_dir, &self.common_dir) {
            if !self.git_dirs.contains(&dir) {
                self.watch_git_dir(dir, outcome);
            }
        }
        outcome.rescan = true;
        // Events about refs and the index lock may have been lost too.
        outcome.refs_touched = true;
        outcome.index_lock_touched = true;
    }

    /// Lists the newly watched directory `dir` again and reports what its
    /// listing in the walk missed; a subdirectory that appeared meanwhile
    /// is added with everything in it.
    fn catch_up(&mut self, dir: &Path, outcome: &mut Outcome) {
        for (path, rel, metadata) in self.list_visible(dir, outcome) {
            let stamp = Stamp::of(&metadata);
            if self.snapshot.get(&rel) != Some(stamp) {
                self.snapshot.insert(rel.clone(), stamp);
                outcome.changed.insert(rel);
            }
            if metadata.is_dir() && !self.dirs.contains(&path) {
                self.add_tree(&path, outcome);
            }
        }
    }

    /// Takes the result of the initial walk (watches already installed).
    fn absorb_scan(&mut self, scan: Scan) {
        self.walked_dirs = scan.dirs;
        for (dir, matcher) in scan.gitignores {
            self.rules.insert_dir(dir, matcher);
        }
    }

    /// Walks the working tree with this repository's rules.
    fn walk(&self, on_dir: Option<&(dyn Fn(&Path) + Sync)>, stamps: bool) -> Scan {
        walk::Walk {
            root: &self.root,
            rules: &self.rules,
            threads: self.options.threads,
            on_dir,
            stamps,
        }
        .run()
    }

    /// Takes the size-and-mtime snapshot a rescan compares against.
    ///
    /// Deliberately not part of [`RepoFs::start`]: the watches are what
    /// make changes visible, so they go in first and `start` returns as
    /// soon as they are; the monitor then takes the snapshot before it
    /// handles any event, and every event re-stats its path, so a change
    /// made in between is reported, not lost.
    pub(crate) fn build_snapshot(&mut self) {
        self.settle_walked_dirs();
        let scan = self.walk(None, true);
        self.snapshot = Snapshot::from_map(scan.entries);
    }

    /// Moves the initial walk's directories into the ordered set that
    /// every change to the directory set works on.
    fn settle_walked_dirs(&mut self) {
        if !self.walked_dirs.is_empty() {
            self.dirs.extend(std::mem::take(&mut self.walked_dirs));
        }
    }

    fn limit_reason(&self, needed: usize) -> String {
        match self.options.watch_limit {
            Some(limit) if needed > limit => format!(
                "repository {} needs {needed} directory watches, more than the configured \
                 budget of {limit}; polling it every {:?} instead",
                self.repo, self.options.poll_interval
            ),
            _ => {
                let current = fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
                    .ok()
                    .and_then(|text| text.trim().parse::<usize>().ok());
                let suggestion = current.map_or(needed * 2, |current| {
                    (current + needed).next_power_of_two().max(current * 2)
                });
                format!(
                    "the kernel's inotify watch limit was reached while watching repository \
                     {repo}, which needs {needed} watches (fs.inotify.max_user_watches = {limit}, \
                     shared by every process of this user); raise it, e.g. `sudo sysctl \
                     fs.inotify.max_user_watches={suggestion}` (persist it in \
                     /etc/sysctl.d/), then re-add the repository; polling it every {interval:?} \
                     meanwhile",
                    repo = self.repo,
                    limit = current.map_or_else(|| "unknown".to_owned(), |c| c.to_string()),
                    interval = self.options.poll_interval,
                )
            }
        }
    }

    fn fall_back_to_polling(&mut self, reason: String, outcome: &mut Outcome) {
        if matches!(self.mode, Mode::Polling(_)) {
            return;
        }
        self.settle_walked_dirs();
        tracing::warn!(repo = %self.repo, "{reason}");
        match poll_watcher(&self.sink, self.options.poll_interval) {
            Ok(mut poller) => {
                for dir in self.dirs.iter().chain(self.git_dirs.iter()) {
                    let _ = poller.watch(dir, RecursiveMode::NonRecursive);
                }
                // Dropping the native watcher releases every inotify watch
                // it held.
                self.backend = Backend::Notify(Box::new(poller));
                self.mode = Mode::Polling(reason.clone());
                outcome.warnings.push(reason);
                outcome.mode_changed = true;
            }
            Err(error) => {
                outcome
                    .warnings
                    .push(format!("{reason}; but polling failed too: {error}"));
            }
        }
    }
}

/// What installs the watches: inotify directly on Linux, notify elsewhere
/// and for the polling fallback.
enum Backend {
    #[cfg(target_os = "linux")]
    Inotify(self::inotify::InotifyWatcher),
    Notify(Box<dyn Watcher + Send>),
}

impl Backend {
    /// The platform's native, event-driven backend.
    /// `lanes`: how many threads will install watches at once (inotify
    /// gives each its own instance, see `inotify`).
    fn native(sink: &RawSink, lanes: usize) -> notify::Result<Self> {
        #[cfg(target_os = "linux")]
        {
            self::inotify::InotifyWatcher::new(sink.clone(), lanes)
                .map(Backend::Inotify)
                .map_err(notify::Error::io)
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = lanes;
            notify::recommended_watcher(sink.clone())
                .map(|watcher| Backend::Notify(Box::new(watcher)))
        }
    }

    /// A handle that other threads may install watches through, when the
    /// backend has one.
    #[cfg(target_os = "linux")]
    fn installer(&self) -> Option<&self::inotify::Installer> {
        match self {
            Backend::Inotify(watcher) => Some(watcher.installer()),
            Backend::Notify(_) => None,
        }
    }

    #[cfg(not(target_os = "linux"))]
    #[allow(clippy::unused_self)]
    fn installer(&self) -> Option<&()> {
        None
    }

    /// Watches `dir`, not recursively.
    fn watch(&mut self, dir: &Path) -> notify::Result<()> {
        match self {
            #[cfg(target_os = "linux")]
            Backend::Inotify(watcher) => watcher.watch(dir),
            Backend::Notify(watcher) => watcher.watch(dir, RecursiveMode::NonRecursive),
        }
    }

    /// Stops watching `dir`.
    fn unwatch(&mut self, dir: &Path) -> notify::Result<()> {
        match self {
            #[cfg(target_os = "linux")]
            Backend::Inotify(watcher) => watcher.unwatch(dir),
            Backend::Notify(watcher) => watcher.unwatch(dir),
        }
    }
}

fn poll_watcher(sink: &RawSink, interval: Duration) -> notify::Result<notify::PollWatcher> {
    notify::PollWatcher::new(
        sink.clone(),
        notify::Config::default()
            .with_poll_interval(interval)
            .with_compare_contents(false),
    )
}

fn describe_backend_failure(error: &notify::Error) -> String {
    let instances =
        matches!(&error.kind, notify::ErrorKind::Io(io) if io.raw_os_error() == Some(24));
    if instances {
        "cannot create an inotify instance: the per-user limit fs.inotify.max_user_instances \
         is reached; raise it with sysctl; polling meanwhile"
            .to_owned()
    } else {
        format!("cannot create a native file-system watcher ({error}); polling instead")
    }
}

/// The directories of the git directory that are watched: the directory
/// itself, `refs/`, and everything under `refs/heads` and `refs/remotes`.
fn git_watch_dirs(git_dir: &Path, common_dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![git_dir.to_path_buf()];
    if common_dir != git_dir {
        // A linked worktree: its branches and `packed-refs` are shared.
        dirs.push(common_dir.to_path_buf());
    }
    let refs = common_dir.join("refs");
    if refs.is_dir() {
        dirs.push(refs.clone());
        for sub in ["heads", "remotes"] {
            dirs.extend(walk_dirs(&refs.join(sub)));
        }
    }
    dirs
}

/// `dir` and every directory below it (no ignore rules; for `.git/refs`).
fn walk_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        let Ok(read) = fs::read_dir(&current) else {
            continue;
        };
        for entry in read.filter_map(Result::ok) {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                stack.push(entry.path());
            }
        }
        out.push(current);
    }
    out
}

/// Builds the `ignore` walker the monitor uses for a working tree.
///
/// Git's rules exactly: `.gitignore` files (nested), `.git/info/exclude`,
/// the global excludes file; hidden files are *not* skipped (git tracks
/// them), `.ignore` files are not read (git does not), `.git` is skipped,
/// and so is whatever the configured globs match.
pub(crate) fn walk_builder(root: &Path, configured: &Gitignore, threads: usize) -> WalkBuilder {
    let mut builder = WalkBuilder::new(root);
    builder
        .hidden(false)
        .ignore(false)
        .parents(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(true)
        .require_git(false)
        .follow_links(false)
        .threads(threads);
    let configured = configured.clone();
    builder.filter_entry(move |entry| {
        if entry.file_name() == ".git" {
            return false;
        }
        if configured.is_empty() {
            return true;
        }
        let is_dir = entry.file_type().is_some_and(|kind| kind.is_dir());
        !configured.matched(entry.path(), is_dir).is_ignore()
    });
    builder
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink() -> (RawSink, tokio::sync::mpsc::UnboundedReceiver<RawEvent>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (RawSink(tx), rx)
    }

    fn options() -> WatchOptions {
        WatchOptions {
            globs: vec!["*.log".into()],
            watch_limit: None,
            poll_interval: Duration::from_millis(50),
            force_polling: false,
            threads: 2,
        }
    }

    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in [".git/refs/heads", "src/inner", "target/debug", "keep"] {
            fs::create_dir_all(root.join(sub)).unwrap();
        }
        fs::write(root.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
        fs::write(root.join(".gitignore"), "target/\n").unwrap();
        fs::write(root.join("src/a.rs"), "fn main() {}\n").unwrap();
        fs::write(root.join("src/inner/b.rs"), "\n").unwrap();
        fs::write(root.join("target/debug/x"), "x").unwrap();
        fs::write(root.join("keep/app.log"), "x").unwrap();
        dir
    }

    /// A watcher on `root` with its snapshot taken, whose events all go
    /// nowhere (as after a kernel queue overflow).
    fn started(root: &Path) -> RepoFs {
        let (sink, rx) = sink();
        let (mut fs_watch, warnings) = RepoFs::start(
            RepoId::new("t").unwrap(),
            root,
            &root.join(".git"),
            &root.join(".git"),
            options(),
            sink,
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        fs_watch.build_snapshot();
        // Every event is lost from here on, as after a queue overflow.
        drop(rx);
        fs_watch
    }

    #[test]
    fn rescan_finds_changes_whose_events_were_lost() {
        let dir = tree();
        let root = fs::canonicalize(dir.path()).unwrap();
        let mut fs_watch = started(&root);
        fs::write(root.join("src/a.rs"), "fn main() { changed(); }\n").unwrap();
        fs::remove_file(root.join("src/inner/b.rs")).unwrap();
        fs::create_dir(root.join("new")).unwrap();
        fs::write(root.join("new/c.rs"), "c").unwrap();
        fs::write(root.join("target/debug/y"), "ignored").unwrap();
        fs::write(root.join("keep/other.log"), "ignored").unwrap();
        let outcome = fs_watch.rescan();
        let changed: Vec<&str> = outcome.changed.iter().map(String::as_str).collect();
        assert_eq!(changed, ["new", "new/c.rs", "src/a.rs", "src/inner/b.rs"]);
        assert!(outcome.rescan);
        assert!(fs_watch.watched_dirs().any(|d| d == root.join("new")));
        // Nothing new on a second rescan.
        assert!(fs_watch.rescan().changed.is_empty());
    }

    #[test]
    fn a_rescan_reports_what_appears_in_a_new_directory_before_its_watch() {
        let dir = tree();
        let root = fs::canonicalize(dir.path()).unwrap();
        let mut fs_watch = started(&root);
        fs::create_dir(root.join("new")).unwrap();
        // The walk lists `new` empty; `new/sub/f` appears before `new` is
        // watched, so no event will ever tell of it.
        let late = root.clone();
        fs_watch.after_rescan_walk = Some(Box::new(move || {
            fs::create_dir(late.join("new/sub")).unwrap();
            fs::write(late.join("new/sub/f"), "late").unwrap();
        }));
        let outcome = fs_watch.rescan();
        fs_watch.after_rescan_walk = None;
        let changed: Vec<&str> = outcome.changed.iter().map(String::as_str).collect();
        assert_eq!(changed, ["new", "new/sub", "new/sub/f"]);
        assert!(fs_watch.watched_dirs().any(|d| d == root.join("new/sub")));
        assert!(fs_watch.rescan().changed.is_empty());
    }

    #[test]
    fn a_gitignore_that_ignores_itself_is_still_read_when_it_changes() {
        let dir = tree();
        let root = fs::canonicalize(dir.path()).unwrap();
        // What pytest, ruff and mypy write into their caches.
        fs::create_dir(root.join("cache")).unwrap();
        fs::write(root.join("cache/.gitignore"), "*\n").unwrap();
        fs::write(root.join("cache/a"), "x").unwrap();
        let mut fs_watch = started(&root);
        assert!(fs_watch.snapshot.get("cache/a").is_none());
        fs::remove_file(root.join("cache/.gitignore")).unwrap();
        let removed = notify::Event::new(EventKind::Remove(RemoveKind::File))
            .add_path(root.join("cache/.gitignore"));
        let outcome = fs_watch.process(vec![Ok(removed)]);
        assert!(outcome.changed.contains("cache/a"), "{outcome:?}");
        assert!(fs_watch.snapshot.get("cache/a").is_some());
    }

    #[test]
    fn a_directory_that_cannot_be_listed_keeps_its_watches_rules_and_snapshot() {
        let dir = tree();
        let root = fs::canonicalize(dir.path()).unwrap();
        fs::write(root.join("src/.gitignore"), "*.tmp\n").unwrap();
        fs::write(root.join("src/x.tmp"), "ignored").unwrap();
        let mut fs_watch = started(&root);
        let before: BTreeSet<PathBuf> = fs_watch.watched_dirs().map(Path::to_path_buf).collect();
        assert!(before.contains(&root.join("src/inner")));
        // A rescan whose listing of `src` failed (EMFILE, EIO, ...): the
        // walk found `src` but nothing below it. Running as root, a mode
        // change cannot make the listing fail, so the scan is edited.
        let mut scan = fs_watch.walk(None, true);
        let src = root.join("src");
        scan.dirs.retain(|d| d == &src || !d.starts_with(&src));
        scan.entries.retain(|rel, _| !rel.starts_with("src/"));
        scan.gitignores.retain(|(d, _)| !d.starts_with(&src));
        scan.errors
            .push(format!("{}: Too many open files", src.display()));
        scan.failed.push(src.clone());
        let previous = fs_watch.rules.clone();
        let mut outcome = Outcome::default();
        fs_watch.apply_rescan(scan, &previous, &mut outcome);
        assert!(outcome.changed.is_empty(), "{:?}", outcome.changed);
        assert!(
            outcome
                .warnings
                .iter()
                .any(|w| w.contains("Too many open files"))
        );
        let after: BTreeSet<PathBuf> = fs_watch.watched_dirs().map(Path::to_path_buf).collect();
        assert_eq!(after, before);
        assert!(fs_watch.snapshot.get("src/inner/b.rs").is_some());
        assert!(fs_watch.rules.is_ignored(&root.join("src/x.tmp"), false));
    }

    #[test]
    fn watch_budget_falls_back_to_polling_with_a_reason() {
        let dir = tree();
        let root = fs::canonicalize(dir.path()).unwrap();
        let (sink, _rx) = sink();
        let mut opts = options();
        opts.watch_limit = Some(2);
        let (fs_watch, warnings) = RepoFs::start(
            RepoId::new("t").unwrap(),
            &root,
            &root.join(".git"),
            &root.join(".git"),
            opts,
            sink,
        )
        .unwrap();
        let Mode::Polling(reason) = fs_watch.mode() else {
            panic!("expected polling, got {:?}", fs_watch.mode());
        };
        assert!(reason.contains("needs"), "{reason}");
        assert!(warnings.iter().any(|w| w == reason));
        // Every directory is still covered (by the poller).
        assert_eq!(fs_watch.watched_dirs().count(), 4);
    }

    #[test]
    fn kernel_limit_reason_names_the_sysctl_and_the_number() {
        let dir = tree();
        let root = fs::canonicalize(dir.path()).unwrap();
        let (sink, _rx) = sink();
        let (fs_watch, _) = RepoFs::start(
            RepoId::new("t").unwrap(),
            &root,
            &root.join(".git"),
            &root.join(".git"),
            options(),
            sink,
        )
        .unwrap();
        let reason = fs_watch.limit_reason(123_456);
        assert!(reason.contains("fs.inotify.max_user_watches"), "{reason}");
        assert!(reason.contains("123456"), "{reason}");
    }
}
