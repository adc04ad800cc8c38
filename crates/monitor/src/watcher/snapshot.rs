//! A size-and-mtime snapshot of a working tree, the reference a rescan
//! compares against after the kernel's event queue overflowed.
//!
//! Like Watchman's recrawl, a file is considered changed when its size,
//! modification time, inode or kind differ, or when it appeared or vanished.
//! A rewrite that keeps all of those identical (same size, within the file
//! system's timestamp granularity) is invisible to a rescan.

use std::collections::BTreeMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

/// What a rescan compares for one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    len: u64,
    mtime_ns: i64,
    ino: u64,
    is_dir: bool,
}

impl Stamp {
    pub(crate) fn of(metadata: &Metadata) -> Self {
        Self {
            len: if metadata.is_dir() { 0 } else { metadata.len() },
            mtime_ns: metadata
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(metadata.mtime_nsec()),
            ino: metadata.ino(),
            is_dir: metadata.is_dir(),
        }
    }

    /// A stamp from the raw fields of a `stat`.
    pub(crate) fn from_parts(len: u64, mtime_ns: i64, ino: u64, is_dir: bool) -> Self {
        Self {
            len: if is_dir { 0 } else { len },
            mtime_ns,
            ino,
            is_dir,
        }
    }

    pub(crate) fn is_dir(self) -> bool {
        self.is_dir
    }
}

/// Repository-relative path → stamp, for every file and directory that is
/// not ignored.
#[derive(Debug, Clone, Default)]
pub(crate) struct Snapshot {
    entries: BTreeMap<String, Stamp>,
}

impl Snapshot {
    /// A snapshot of `entries`.
    pub(crate) fn from_map(entries: BTreeMap<String, Stamp>) -> Self {
        Self { entries }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn get(&self, rel: &str) -> Option<Stamp> {
        self.entries.get(rel).copied()
    }

    pub(crate) fn insert(&mut self, rel: String, stamp: Stamp) {
        self.entries.insert(rel, stamp);
    }

    pub(crate) fn remove(&mut self, rel: &str) -> Option<Stamp> {
        self.entries.remove(rel)
    }

    /// The entries strictly below the directory `rel` (everything for the
    /// root, `""`).
    pub(crate) fn below<'a>(&'a self, rel: &str) -> impl Iterator<Item = (&'a String, Stamp)> {
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("{rel}/")
        };
        self.entries
            .range::<str, _>((
                std::ops::Bound::Included(prefix.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .take_while(move |(path, _)| path.starts_with(&prefix))
            .map(|(path, stamp)| (path, *stamp))
    }

    /// Removes `rel` and everything below it; returns the removed paths.
    pub(crate) fn remove_tree(&mut self, rel: &str) -> Vec<String> {
        let prefix = format!("{rel}/");
        // Every path starting with `prefix` sorts in one contiguous run.
        let below: Vec<String> = self
            .entries
            .range::<str, _>((
                std::ops::Bound::Included(prefix.as_str()),
                std::ops::Bound::Unbounded,
            ))
            .map(|(path, _)| path)
            .take_while(|path| path.starts_with(&prefix))
            .cloned()
            .collect();
        let mut removed = Vec::with_capacity(below.len() + 1);
        if self.entries.remove(rel).is_some() {
            removed.push(rel.to_owned());
        }
        for path in below {
            self.entries.remove(&path);
            removed.push(path);
        }
        removed
    }

    /// Paths that differ between `self` (before) and `after`.
    pub(crate) fn diff(&self, after: &Snapshot) -> Vec<String> {
        // Both maps are sorted, but the sets are usually nearly equal and a
        // lookup per entry is simple and fast enough.
        let mut changed: Vec<String> = after
            .entries
            .iter()
            .filter(|(path, stamp)| {
                self.entries
                    .get(path.as_str())
                    .is_none_or(|old| old != *stamp && !(old.is_dir && stamp.is_dir))
            })
            .map(|(path, _)| path.clone())
            .collect();
        changed.extend(
            self.entries
                .keys()
                .filter(|path| !after.entries.contains_key(path.as_str()))
                .cloned(),
        );
        changed.sort_unstable();
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(len: u64, mtime_ns: i64) -> Stamp {
        Stamp {
            len,
            mtime_ns,
            ino: 1,
            is_dir: false,
        }
    }

    #[test]
    fn diff_reports_added_removed_and_modified() {
        let mut before = Snapshot::default();
        before.insert("same".into(), stamp(1, 1));
        before.insert("grown".into(), stamp(1, 1));
        before.insert("touched".into(), stamp(1, 1));
        before.insert("gone".into(), stamp(1, 1));
        let mut after = Snapshot::default();
        after.insert("same".into(), stamp(1, 1));
        after.insert("grown".into(), stamp(2, 1));
        after.insert("touched".into(), stamp(1, 2));
        after.insert("new".into(), stamp(1, 1));
        assert_eq!(before.diff(&after), ["gone", "grown", "new", "touched"]);
    }

    #[test]
    fn directory_mtime_changes_are_not_reported() {
        let dir = |mtime_ns| Stamp {
            len: 0,
            mtime_ns,
            ino: 7,
            is_dir: true,
        };
        let mut before = Snapshot::default();
        before.insert("d".into(), dir(1));
        let mut after = Snapshot::default();
        after.insert("d".into(), dir(2));
        assert!(before.diff(&after).is_empty());
    }

    #[test]
    fn remove_tree_removes_only_the_subtree() {
        let mut snapshot = Snapshot::default();
        for path in ["a", "a/b", "a/b/c", "ab", "x"] {
            snapshot.insert(path.into(), stamp(0, 0));
        }
        let mut removed = snapshot.remove_tree("a");
        removed.sort();
        assert_eq!(removed, ["a", "a/b", "a/b/c"]);
        assert_eq!(snapshot.len(), 2);
    }
}
