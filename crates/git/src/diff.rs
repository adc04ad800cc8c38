//! What a job changed: file lists and line counts, between two commits or
//! trees ([`GitRepo::diff_summary`]) or between two directories
//! ([`diff_directories`], [`GitRepo::diff_dirs`]) for the `worktree` and
//! `none` deliveries.
//!
//! Line counts follow `git diff --numstat --no-renames`: a file with a NUL
//! byte in its first 8000 bytes is binary and counts no lines, renames are
//! an addition and a deletion, and a symlink's "content" is its target.
//! This module knows nothing about protected paths or impact scores.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;

use gix::bstr::ByteSlice;
use gix::diff::blob::{Algorithm, Diff, InternedInput};
use gix::prelude::FindExt;
use orchex_core::DiffSummary;
use serde::Serialize;

use crate::error::{GitError, GixResultExt};
use crate::history::tree_iter;
use crate::repo::peel_to_tree;
use crate::worktree::{FileContent, read_file, utf8_path, walk_files};
use crate::{GitRepo, Oid};

/// How many leading bytes git inspects to call a file binary.
const BINARY_PROBE_LEN: usize = 8000;

/// What happened to one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum ChangeKind {
    /// The path is new.
    Added,
    /// The content or the mode changed.
    Modified,
    /// The path is gone.
    Deleted,
}

/// One changed path with its line counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileChange {
    /// The path relative to the compared roots, with `/` separators.
    pub path: String,
    /// Added, modified or deleted.
    pub kind: ChangeKind,
    /// Lines added (0 for binary files).
    pub lines_added: u64,
    /// Lines removed (0 for binary files).
    pub lines_removed: u64,
    /// Whether either side is binary (no line counts then).
    pub binary: bool,
}

/// The differences between two directories, sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DirDiff {
    /// Every changed path.
    pub changes: Vec<FileChange>,
}

impl DirDiff {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// The paths of one kind of change, in order.
    pub fn paths(&self, kind: ChangeKind) -> impl Iterator<Item = &str> {
        self.changes
            .iter()
            .filter(move |change| change.kind == kind)
            .map(|change| change.path.as_str())
    }

    /// As the summary stored with a job.
    pub fn summary(&self) -> DiffSummary {
        summarize(&self.changes)
    }
}

impl From<DirDiff> for DiffSummary {
    fn from(diff: DirDiff) -> Self {
        diff.summary()
    }
}

impl From<&DirDiff> for DiffSummary {
    fn from(diff: &DirDiff) -> Self {
        diff.summary()
    }
}

/// Collapse changes into a [`DiffSummary`] (lists sorted by path).
pub(crate) fn summarize(changes: &[FileChange]) -> DiffSummary {
    let mut summary = DiffSummary::default();
    for change in changes {
        let list = match change.kind {
            ChangeKind::Added => &mut summary.added,
            ChangeKind::Modified => &mut summary.modified,
            ChangeKind::Deleted => &mut summary.deleted,
        };
        list.push(change.path.clone());
        summary.lines_added += change.lines_added;
        summary.lines_removed += change.lines_removed;
    }
    summary.added.sort();
    summary.modified.sort();
    summary.deleted.sort();
    summary
}

impl GitRepo {
    /// What changed from `old` to `new` (each a commit or a tree): files
    /// added, modified (content or mode) and deleted, with line counts as
    /// `git diff --numstat --no-renames old new` gives them.
    pub fn diff_summary(&self, old: Oid, new: Oid) -> Result<DiffSummary, GitError> {
        Ok(summarize(&self.diff_changes(old, new)?))
    }

    /// Like [`GitRepo::diff_summary`], but per file, sorted by path.
    pub fn diff_changes(&self, old: Oid, new: Oid) -> Result<Vec<FileChange>, GitError> {
        let mut repo = self.local();
        repo.object_cache_size_if_unset(4 * 1024 * 1024);
        diff_changes_in(&repo, old, new)
    }

    /// Compare two directories the way git would see them as working trees
    /// of this repository: `.git`, nested repositories and files ignored by
    /// this repository's rules (`.gitignore` inside each directory,
    /// `.git/info/exclude`, `core.excludesFile`) are left out, unless the
    /// user's index tracks them. For the `worktree` and `none` deliveries,
    /// where build output must not count as a change.
    pub fn diff_dirs(&self, before: &Path, after: &Path) -> Result<DirDiff, GitError> {
        let mut repo = self.local();
        let index = repo
            .index_or_empty()
            .ctx(|| format!("reading the index of {}", self.git_dir().display()))?;
        let mut list = |root: &Path| -> Result<BTreeSet<String>, GitError> {
            repo.set_workdir(root.to_owned()).map_err(|err| {
                GitError::gix(format!("using {} as a working tree", root.display()), &err)
            })?;
            walk_files(&repo, &index)?
                .iter()
                .map(|rel| utf8_path(root, rel))
                .collect()
        };
        let before_files = list(before)?;
        let after_files = list(after)?;
        compare(before, &before_files, after, &after_files)
    }
}

/// [`GitRepo::diff_changes`] in `repo`, which may hold objects in memory
/// only.
pub(crate) fn diff_changes_in(
    repo: &gix::Repository,
    old: Oid,
    new: Oid,
) -> Result<Vec<FileChange>, GitError> {
    let old_tree = peel_to_tree(repo, old)?;
    let new_tree = peel_to_tree(repo, new)?;
    let context = || format!("diffing {old} and {new}");
    let (mut lhs_buf, mut rhs_buf) = (Vec::new(), Vec::new());
    let lhs = tree_iter(repo, old_tree, &mut lhs_buf).ctx(context)?;
    let rhs = tree_iter(repo, new_tree, &mut rhs_buf).ctx(context)?;
    let mut recorder = gix::diff::tree::Recorder::default();
    gix::diff::tree(
        lhs,
        rhs,
        gix::diff::tree::State::default(),
        &repo.objects,
        &mut recorder,
    )
    .map_err(|err| GitError::other(context(), err.to_string()))?;

    let (mut old_buf, mut new_buf) = (Vec::new(), Vec::new());
    let mut changes = Vec::new();
    for record in recorder.records {
        use gix::diff::tree::recorder::Change as Rec;
        let (kind, path, old_side, new_side) = match record {
            Rec::Addition {
                entry_mode,
                oid,
                path,
                ..
            } => (ChangeKind::Added, path, None, Some((entry_mode, oid))),
            Rec::Deletion {
                entry_mode,
                oid,
                path,
                ..
            } => (ChangeKind::Deleted, path, Some((entry_mode, oid)), None),
            Rec::Modification {
                previous_entry_mode,
                previous_oid,
                entry_mode,
                oid,
                path,
            } => (
                ChangeKind::Modified,
                path,
                Some((previous_entry_mode, previous_oid)),
                Some((entry_mode, oid)),
            ),
        };
        let is_tree = |side: Option<(gix::objs::tree::EntryMode, gix::ObjectId)>| {
            side.is_none_or(|(mode, _)| mode.is_tree())
        };
        if is_tree(old_side) && is_tree(new_side) {
            continue;
        }
        let old_data = blob_data(repo, old_side, &mut old_buf).ctx(context)?;
        let new_data = blob_data(repo, new_side, &mut new_buf).ctx(context)?;
        let counts = line_counts(old_data, new_data);
        changes.push(FileChange {
            path: path.to_str_lossy().into_owned(),
            kind,
            lines_added: counts.map_or(0, |(added, _)| added),
            lines_removed: counts.map_or(0, |(_, removed)| removed),
            binary: counts.is_none(),
        });
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(changes)
}

/// Compare two directories file by file (pure file system, no repository):
/// added, modified (content or mode) and deleted files with line counts,
/// skipping every `.git` entry. Symlinks are compared by target and never
/// followed; empty directories and special files do not count.
pub fn diff_directories(before: &Path, after: &Path) -> Result<DirDiff, GitError> {
    let before_files = list_dir(before)?;
    let after_files = list_dir(after)?;
    compare(before, &before_files, after, &after_files)
}

/// Diff two listings of relative paths under their roots.
fn compare(
    before_root: &Path,
    before: &BTreeSet<String>,
    after_root: &Path,
    after: &BTreeSet<String>,
) -> Result<DirDiff, GitError> {
    let mut changes = Vec::new();
    for path in before.union(after) {
        let old = if before.contains(path) {
            read_file(&before_root.join(path))?
        } else {
            None
        };
        let new = if after.contains(path) {
            read_file(&after_root.join(path))?
        } else {
            None
        };
        let kind = match (&old, &new) {
            (None, None) => continue,
            (None, Some(_)) => ChangeKind::Added,
            (Some(_), None) => ChangeKind::Deleted,
            (Some(old), Some(new)) => {
                if old.mode == new.mode && old.data == new.data {
                    continue;
                }
                ChangeKind::Modified
            }
        };
        let counts = line_counts(data(old.as_ref()), data(new.as_ref()));
        changes.push(FileChange {
            path: path.clone(),
            kind,
            lines_added: counts.map_or(0, |(added, _)| added),
            lines_removed: counts.map_or(0, |(_, removed)| removed),
            binary: counts.is_none(),
        });
    }
    Ok(DirDiff { changes })
}

/// The bytes of an optional file.
fn data(file: Option<&FileContent>) -> Option<&[u8]> {
    file.map(|file| file.data.as_slice())
}

/// Every regular file and symlink under `root`, relative, `/`-separated;
/// `.git` entries are skipped at any depth.
fn list_dir(root: &Path) -> Result<BTreeSet<String>, GitError> {
    let mut out = BTreeSet::new();
    let mut pending = vec![(root.to_owned(), String::new())];
    while let Some((dir, prefix)) = pending.pop() {
        let entries = fs::read_dir(&dir).map_err(|err| GitError::io(&dir, err))?;
        for entry in entries {
            let entry = entry.map_err(|err| GitError::io(&dir, err))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else {
                return Err(GitError::InvalidPath {
                    path: entry.path(),
                    message: "file names must be valid UTF-8".to_owned(),
                });
            };
            if name == ".git" {
                continue;
            }
            let rel = if prefix.is_empty() {
                name.to_owned()
            } else {
                format!("{prefix}/{name}")
            };
            let file_type = entry
                .file_type()
                .map_err(|err| GitError::io(entry.path(), err))?;
            if file_type.is_dir() {
                pending.push((entry.path(), rel));
            } else if file_type.is_file() || file_type.is_symlink() {
                out.insert(rel);
            }
        }
    }
    Ok(out)
}

/// The content of one side of a change: `None` when absent, a tree or a
/// submodule commit (no content to count).
fn blob_data<'a>(
    repo: &gix::Repository,
    side: Option<(gix::objs::tree::EntryMode, gix::ObjectId)>,
    buf: &'a mut Vec<u8>,
) -> Result<Option<&'a [u8]>, gix::Error> {
    match side {
        Some((mode, id)) if mode.is_blob_or_symlink() => {
            Ok(Some(repo.objects.find_blob(&id, buf)?.data))
        }
        _ => Ok(None),
    }
}

/// `(added, removed)` lines between two versions (absent = empty), or
/// `None` when either is binary.
pub(crate) fn line_counts(old: Option<&[u8]>, new: Option<&[u8]>) -> Option<(u64, u64)> {
    let old = old.unwrap_or_default();
    let new = new.unwrap_or_default();
    if is_binary(old) || is_binary(new) {
        return None;
    }
    let input = InternedInput::new(old, new);
    let diff = Diff::compute(Algorithm::Myers, &input);
    Some((
        u64::from(diff.count_additions()),
        u64::from(diff.count_removals()),
    ))
}

/// git's heuristic: a NUL byte among the first 8000 bytes.
fn is_binary(data: &[u8]) -> bool {
    data[..data.len().min(BINARY_PROBE_LEN)].contains(&0)
}
