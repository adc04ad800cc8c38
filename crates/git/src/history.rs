//! Change history for the analysis: which files each commit in a time
//! window touched, as fast as a tree diff allows.
//!
//! Only trees are compared, never blob contents; each worker thread keeps
//! its own object and delta-base caches (16 MiB each, at most four
//! workers). This module knows nothing about entropy,
//! hotspots or caching of results: the monitor turns [`ChangeHistory`] into
//! scores.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gix::bstr::{BStr, BString, ByteSlice, ByteVec};
use gix::diff::tree::{Visit, visit};
use gix::objs::TreeRefIter;
use gix::prelude::FindExt;
use gix::revision::walk::Sorting;
use gix::traverse::commit::simple::CommitTimeOrder;
use serde::Serialize;

use crate::error::{GitError, GixResultExt};
use crate::repo::{require_commit, timestamp};
use crate::{GitRepo, Oid, Timestamp};

/// The delta-base cache of each history worker (bytes).
const HISTORY_PACK_CACHE: usize = 16 * 1024 * 1024;
/// The object cache used while walking history (bytes).
const HISTORY_OBJECT_CACHE: usize = 16 * 1024 * 1024;

/// Which files changed, and how often, in a window of history.
///
/// See [`GitRepo::change_history`] for exactly which commits count.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ChangeHistory {
    /// The number of commits analysed (merge commits excluded).
    pub commits: u64,
    /// For each path, the number of analysed commits that touched it.
    pub per_file: BTreeMap<String, u64>,
    /// Each analysed commit with the paths it touched, newest first.
    pub per_commit: Vec<CommitChanges>,
}

/// The paths one commit touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitChanges {
    /// The commit.
    pub oid: Oid,
    /// Its committer time.
    pub time: Timestamp,
    /// Paths added, modified or deleted (files, symlinks and submodules;
    /// never directories), in tree order.
    pub paths: Vec<String>,
}

impl GitRepo {
    /// Every commit reachable from `tip` (through all parents, like
    /// `git log --since`) whose committer time is at or after `since`,
    /// with the files each one touched.
    ///
    /// - Merge commits are skipped: they are neither counted nor diffed,
    ///   because the changes they bring in are already counted on the
    ///   commits of the merged branches (like `git log --no-merges`).
    /// - A root commit counts every file it adds.
    /// - The walk stops at commits older than `since` (like
    ///   `git log --since`): an old commit hides its ancestors even if
    ///   one of them has a newer (skewed) committer time.
    /// - Renames are not detected: a rename touches two paths.
    /// - Paths that are not valid UTF-8 are converted lossily.
    ///
    /// Only trees are compared (no blob is read). Long histories are
    /// diffed on up to four threads.
    pub fn change_history(&self, tip: Oid, since: Timestamp) -> Result<ChangeHistory, GitError> {
        let items = self.commits_in_window(tip, since)?;
        let paths = self.diff_commits(&items)?;
        let mut history = ChangeHistory {
            commits: items.len() as u64,
            per_file: BTreeMap::new(),
            per_commit: Vec::with_capacity(items.len()),
        };
        for (item, paths) in items.iter().zip(paths) {
            let mut changes = CommitChanges {
                oid: item.id.into(),
                time: timestamp(item.seconds),
                paths: Vec::with_capacity(paths.len()),
            };
            for path in paths {
                let path = path.to_str_lossy().into_owned();
                if let Some(count) = history.per_file.get_mut(&path) {
                    *count += 1;
                } else {
                    history.per_file.insert(path.clone(), 1);
                }
                changes.paths.push(path);
            }
            history.per_commit.push(changes);
        }
        Ok(history)
    }

    /// The non-merge commits of the window, newest first.
    fn commits_in_window(&self, tip: Oid, since: Timestamp) -> Result<Vec<Item>, GitError> {
        let mut repo = self.local();
        repo.object_cache_size_if_unset(HISTORY_OBJECT_CACHE);
        require_commit(&repo, tip)?;
        let since_seconds = since.as_second();
        let context = || format!("walking history from {tip}");
        let walk = repo
            .rev_walk([tip.to_gix()])
            .sorting(Sorting::ByCommitTimeCutoff {
                order: CommitTimeOrder::NewestFirst,
                seconds: since_seconds,
            })
            .all()
            .ctx(context)?;
        let mut commit_buf = Vec::new();
        let mut items = Vec::new();
        for info in walk {
            let info = info.ctx(context)?;
            if info.parent_ids.len() > 1 {
                continue;
            }
            let seconds = match info.commit_time {
                Some(seconds) => seconds,
                None => repo
                    .objects
                    .find_commit(&info.id, &mut commit_buf)
                    .and_then(|commit| commit.committer().map(|sig| sig.seconds()))
                    .ctx(|| format!("reading commit {}", info.id))?,
            };
            if seconds < since_seconds {
                continue;
            }
            items.push(Item {
                id: info.id,
                parent: info.parent_ids.first().copied(),
                seconds,
            });
        }
        Ok(items)
    }

    /// The changed paths of each commit against its parent, in the order
    /// of `items`.
    ///
    /// Trees are stored as delta chains in packs and `gix` caches only the
    /// objects it was asked for, not the chain links in between, so the
    /// cost depends on visiting each chain from its base. Packs written by
    /// `git gc` usually keep the newest version whole (newest-first is
    /// cheap); packs written by `git fast-import` keep the oldest whole.
    /// A short probe of both orders on the newest commits picks the
    /// cheaper one for the rest, which is split across threads.
    fn diff_commits(&self, items: &[Item]) -> Result<Vec<Vec<BString>>, GitError> {
        let mut out: Vec<Vec<BString>> = vec![Vec::new(); items.len()];
        let mut worker = Worker::new(self);
        let mut done = 0;
        let mut order = Order::NewestFirst;
        if items.len() >= 4 * PROBE_COMMITS {
            let newest = worker.run(
                &items[..PROBE_COMMITS],
                &mut out[..PROBE_COMMITS],
                Order::NewestFirst,
            )?;
            let range = PROBE_COMMITS..2 * PROBE_COMMITS;
            let oldest = worker.run(&items[range.clone()], &mut out[range], Order::OldestFirst)?;
            if oldest < newest {
                order = Order::OldestFirst;
            }
            done = 2 * PROBE_COMMITS;
        }
        let (rest, rest_out) = (&items[done..], &mut out[done..]);
        let threads = std::thread::available_parallelism()
            .map_or(1, std::num::NonZeroUsize::get)
            .min(MAX_THREADS)
            .min(rest.len() / MIN_COMMITS_PER_THREAD)
            .max(1);
        if threads == 1 {
            worker.run(rest, rest_out, order)?;
        } else {
            let chunk = rest.len().div_ceil(threads);
            std::thread::scope(|scope| -> Result<(), GitError> {
                let mut item_chunks = rest.chunks(chunk);
                let mut out_chunks = rest_out.chunks_mut(chunk);
                // The warm worker takes the newest chunk, next to the probe.
                let (first_items, first_out) = (item_chunks.next(), out_chunks.next());
                let handles: Vec<_> = item_chunks
                    .zip(out_chunks)
                    .map(|(items, out)| {
                        scope.spawn(move || Worker::new(self).run(items, out, order).map(|_| ()))
                    })
                    .collect();
                let mut result = match (first_items, first_out) {
                    (Some(items), Some(out)) => worker.run(items, out, order).map(|_| ()),
                    _ => Ok(()),
                };
                for handle in handles {
                    let joined = handle.join().unwrap_or_else(|_| {
                        Err(GitError::other(
                            "diffing history",
                            "a worker thread panicked",
                        ))
                    });
                    result = result.and(joined);
                }
                result
            })?;
        }
        Ok(out)
    }
}

/// Commits diffed newest-first and oldest-first to choose the order.
const PROBE_COMMITS: usize = 32;
/// At most this many threads diff one history.
const MAX_THREADS: usize = 4;
/// Fewer commits than this per thread are not worth a thread.
const MIN_COMMITS_PER_THREAD: usize = 256;

/// One commit of the window.
#[derive(Debug, Clone, Copy)]
struct Item {
    id: gix::ObjectId,
    parent: Option<gix::ObjectId>,
    seconds: i64,
}

/// The order in which a worker visits its commits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    NewestFirst,
    OldestFirst,
}

/// A thread's view of the repository with caches tuned for history, and
/// a count of delta-chain steps to compare visiting orders.
struct Worker {
    repo: gix::Repository,
    differ: TreeDiffer,
    commit_buf: Vec<u8>,
    chain_steps: Arc<AtomicU64>,
}

impl Worker {
    fn new(repo: &GitRepo) -> Worker {
        let mut repo = repo.local();
        let chain_steps = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&chain_steps);
        repo.objects.set_pack_cache(move || {
            Box::new(CountingPackCache {
                inner: gix::odb::pack::cache::lru::MemoryCappedHashmap::new(HISTORY_PACK_CACHE),
                lookups: Arc::clone(&counter),
            })
        });
        repo.object_cache_size(HISTORY_OBJECT_CACHE);
        Worker {
            repo,
            differ: TreeDiffer::default(),
            commit_buf: Vec::new(),
            chain_steps,
        }
    }

    /// Diff `items` into `out` (same indices) in `order`; returns the
    /// delta-chain steps it took.
    fn run(
        &mut self,
        items: &[Item],
        out: &mut [Vec<BString>],
        order: Order,
    ) -> Result<u64, GitError> {
        let before = self.chain_steps.load(Ordering::Relaxed);
        let mut visit = |(item, slot): (&Item, &mut Vec<BString>)| -> Result<(), GitError> {
            *slot = self.diff(item)?;
            Ok(())
        };
        match order {
            Order::NewestFirst => items.iter().zip(out.iter_mut()).try_for_each(&mut visit)?,
            Order::OldestFirst => items
                .iter()
                .zip(out.iter_mut())
                .rev()
                .try_for_each(&mut visit)?,
        }
        Ok(self.chain_steps.load(Ordering::Relaxed) - before)
    }

    /// The paths one commit changed against its first parent.
    fn diff(&mut self, item: &Item) -> Result<Vec<BString>, GitError> {
        let tree = tree_of(&self.repo, item.id, &mut self.commit_buf)?;
        let parent_tree = match item.parent {
            Some(parent) => tree_of(&self.repo, parent, &mut self.commit_buf)?,
            None => gix::ObjectId::empty_tree(self.repo.object_hash()),
        };
        self.differ
            .changed_paths(&self.repo, parent_tree, tree)
            .ctx(|| format!("diffing commit {}", item.id))
    }
}

/// A delta-base cache that counts lookups: one per link of a delta chain
/// walked, which is what the visiting order changes.
struct CountingPackCache {
    inner: gix::odb::pack::cache::lru::MemoryCappedHashmap,
    lookups: Arc<AtomicU64>,
}

impl gix::odb::pack::cache::DecodeEntry for CountingPackCache {
    fn put(
        &mut self,
        pack_id: u32,
        offset: u64,
        data: &[u8],
        kind: gix::objs::Kind,
        compressed_size: usize,
    ) {
        self.inner.put(pack_id, offset, data, kind, compressed_size);
    }

    fn get(
        &mut self,
        pack_id: u32,
        offset: u64,
        out: &mut Vec<u8>,
    ) -> Option<(gix::objs::Kind, usize)> {
        self.lookups.fetch_add(1, Ordering::Relaxed);
        self.inner.get(pack_id, offset, out)
    }
}

/// The tree id of commit `id`.
fn tree_of(
    repo: &gix::Repository,
    id: gix::ObjectId,
    buf: &mut Vec<u8>,
) -> Result<gix::ObjectId, GitError> {
    repo.objects
        .find_commit_iter(&id, buf)
        .and_then(|mut commit| commit.tree_id())
        .ctx(|| format!("reading commit {id}"))
}

/// Reusable buffers for tree-to-tree diffs.
#[derive(Default)]
struct TreeDiffer {
    state: gix::diff::tree::State,
    lhs: Vec<u8>,
    rhs: Vec<u8>,
    collector: PathCollector,
}

impl TreeDiffer {
    /// The paths of non-tree entries that differ between `old` and `new`.
    fn changed_paths(
        &mut self,
        repo: &gix::Repository,
        old: gix::ObjectId,
        new: gix::ObjectId,
    ) -> Result<Vec<BString>, gix::Error> {
        let lhs = tree_iter(repo, old, &mut self.lhs)?;
        let rhs = tree_iter(repo, new, &mut self.rhs)?;
        self.collector.reset();
        match gix::diff::tree(
            lhs,
            rhs,
            &mut self.state,
            &repo.objects,
            &mut self.collector,
        ) {
            // The collector never cancels.
            Ok(()) | Err(gix::diff::tree::Error::Cancelled) => {}
            Err(gix::diff::tree::Error::Failure(err)) => return Err(err),
        }
        Ok(std::mem::take(&mut self.collector.out))
    }
}

/// The entries of tree `id` (the empty tree need not exist on disk).
pub(crate) fn tree_iter<'a>(
    repo: &gix::Repository,
    id: gix::ObjectId,
    buf: &'a mut Vec<u8>,
) -> Result<TreeRefIter<'a>, gix::Error> {
    if id.is_empty_tree() {
        buf.clear();
        return Ok(TreeRefIter::from_bytes(buf, id.kind()));
    }
    repo.objects.find_tree_iter(&id, buf)
}

/// A tree-diff delegate that only records the paths of changed non-tree
/// entries.
#[derive(Default)]
struct PathCollector {
    path: BString,
    path_deque: VecDeque<BString>,
    out: Vec<BString>,
}

impl PathCollector {
    fn reset(&mut self) {
        self.path.clear();
        self.path_deque.clear();
        self.out.clear();
    }

    fn push_element(&mut self, name: &BStr) {
        if name.is_empty() {
            return;
        }
        if !self.path.is_empty() {
            self.path.push(b'/');
        }
        self.path.push_str(name);
    }

    fn pop_element(&mut self) {
        if let Some(pos) = self.path.rfind_byte(b'/') {
            self.path.truncate(pos);
        } else {
            self.path.clear();
        }
    }
}

impl Visit for PathCollector {
    fn pop_front_tracked_path_and_set_current(&mut self) {
        self.path = self.path_deque.pop_front().unwrap_or_default();
    }

    fn push_back_tracked_path_component(&mut self, component: &BStr) {
        self.push_element(component);
        self.path_deque.push_back(self.path.clone());
    }

    fn push_path_component(&mut self, component: &BStr) {
        self.push_element(component);
    }

    fn pop_path_component(&mut self) {
        self.pop_element();
    }

    fn visit(&mut self, change: visit::Change) -> visit::Action {
        let touches_file = match &change {
            visit::Change::Addition { entry_mode, .. }
            | visit::Change::Deletion { entry_mode, .. } => !entry_mode.is_tree(),
            visit::Change::Modification {
                previous_entry_mode,
                entry_mode,
                ..
            } => !entry_mode.is_tree() || !previous_entry_mode.is_tree(),
        };
        if touches_file {
            self.out.push(self.path.clone());
        }
        std::ops::ControlFlow::Continue(())
    }
}
