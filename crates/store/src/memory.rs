//! [`MemoryStore`]: every store trait in process memory, with the same
//! semantics as [`SqliteStore`](crate::SqliteStore) and no durability.
//!
//! It is for embedders that keep their own records (or none), for tests of
//! the components above the store, and for the benchmarks that measure the
//! orchestrator with storage excluded. The same contract tests run against
//! both implementations (`tests/store/`), so a difference in claim order,
//! transition checks, pagination, recovery or purging is a test failure,
//! not a surprise.
//!
//! One `std::sync::Mutex` guards the whole state: every operation is a
//! short critical section that does no I/O and never awaits, which gives
//! the same atomicity as the SQLite writer's transactions (a claim and its
//! state change, a bounded insert and its count). The indexes mirror the
//! SQLite ones: the claim order, the queued jobs per repository and
//! pipeline, and creation order for lists, so no operation scans the queue.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use orchex_core::{ComponentHealth, Event, Job, JobId, JobState, RepoId, StepResult, Timestamp};

use crate::error::{Result, StoreError};
use crate::export::{ExportStream, export_pages};
use crate::model::{
    Backup, Cursor, EventFilter, ExportFormat, INTERRUPTED_TWICE, JobFilter, JobPatch, Page,
    PageRequest, RecoveryReport, StepPgid,
};
use crate::sqlite::codec::{add_duration, ts_to_sql};
use crate::sqlite::jobs::{skip_as_queue_full, truncate_tail};
use crate::traits::{BackupStore, EventStore, JobStore, StoreFuture, StoreHealth};

/// The cursor tags, the same as the SQLite store's: a cursor from one is
/// meaningless to the other, but both reject a cursor of the wrong kind.
const JOB_CURSOR_TAG: char = 'j';
const EVENT_CURSOR_TAG: char = 'e';

/// A store that keeps everything in memory. Cheap to clone: clones share
/// the state.
///
/// # Example
///
/// ```
/// use std::time::Duration;
/// use orchex_core::{Job, JobState, RepoId, Trigger};
/// use orchex_store::{JobStore, MemoryStore};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
/// # runtime.block_on(async {
/// let store = MemoryStore::new();
/// let repo = RepoId::new("api")?;
/// let job = Job::new(repo.clone(), "codegen".into(), Trigger::manual(repo));
/// store.insert_job(job.clone()).await?;
/// let claimed = store.claim_next("worker-1", Duration::from_secs(60)).await?;
/// assert_eq!(claimed.map(|job| job.id), Some(job.id));
/// store.transition(job.id, JobState::Succeeded, Default::default()).await?;
/// assert!(store.transition(job.id, JobState::Running, Default::default()).await.is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # })
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    output_tail_limit: usize,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store that keeps the last 64 KiB of each step's output, like
    /// [`StoreOptions::default`](crate::StoreOptions::default).
    pub fn new() -> Self {
        Self::with_output_tail_limit(64 * 1024)
    }

    /// An empty store that keeps the last `limit` bytes of each step's
    /// output.
    pub fn with_output_tail_limit(limit: usize) -> Self {
        Self {
            state: Arc::new(Mutex::new(State::default())),
            output_tail_limit: limit,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // No code under the lock panics, and every operation checks what
        // can fail before it changes anything, so a poisoned lock still
        // guards a consistent state.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn with<T: Send + 'static>(
        &self,
        operation: impl FnOnce(&mut State) -> Result<T>,
    ) -> StoreFuture<'_, T> {
        let result = operation(&mut self.lock());
        Box::pin(std::future::ready(result))
    }
}

/// One job as stored: the job without its steps, and what queries need.
#[derive(Debug)]
struct Entry {
    seq: i64,
    /// Nanoseconds since the epoch, as the SQLite store keeps it.
    created_at: i64,
    due_at: i64,
    job: Job,
    steps: BTreeMap<u32, StepResult>,
    lease: Option<Lease>,
}

#[derive(Debug)]
struct Lease {
    owner: String,
    #[allow(dead_code)] // kept like the SQLite column; nothing reads expiry yet
    expires_at: i64,
}

impl Entry {
    fn claim_key(&self) -> ClaimKey {
        ClaimKey {
            priority: std::cmp::Reverse(self.job.priority),
            created_at: self.created_at,
            seq: self.seq,
        }
    }

    fn lookup_key(&self) -> (RepoId, String) {
        (self.job.repo.clone(), self.job.pipeline.clone())
    }

    /// The job with its steps, with or without their output tails.
    fn full_job(&self, with_tails: bool) -> Job {
        let mut job = self.job.clone();
        job.steps = self
            .steps
            .values()
            .map(|step| {
                let mut step = step.clone();
                if !with_tails {
                    step.output_tail = None;
                }
                step
            })
            .collect();
        job
    }
}

/// The claim order: highest priority, then oldest, then first inserted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct ClaimKey {
    priority: std::cmp::Reverse<u8>,
    created_at: i64,
    seq: i64,
}

#[derive(Debug, Default)]
struct State {
    next_seq: i64,
    jobs: HashMap<JobId, Entry>,
    /// Queued jobs in claim order (the SQLite `jobs_claim` index).
    queue: BTreeMap<ClaimKey, JobId>,
    /// Queued jobs per repository and pipeline, oldest first
    /// (`jobs_queued_by_repo`).
    queued_by_target: HashMap<(RepoId, String), BTreeMap<(i64, i64), JobId>>,
    /// Every job by (creation time, sequence), for newest-first lists.
    by_created: BTreeMap<(i64, i64), JobId>,
    /// Every job per repository and pipeline, by (creation time, sequence):
    /// the engine's "last success of this pipeline" lookup reads one entry.
    by_target: HashMap<(RepoId, String), BTreeMap<(i64, i64), JobId>>,
    /// Recorded step process groups: (job, pgid) → when recorded.
    pgids: HashMap<(JobId, i32), i64>,
    /// Backups per job, keyed the way the SQLite store orders them: files
    /// before branches, then by name.
    backups: HashMap<JobId, BTreeMap<(BackupKind, String), Backup>>,
    next_event_seq: i64,
    /// Every event by (time, sequence).
    events: BTreeMap<(i64, i64), Arc<Event>>,
}

/// Backup kinds in listing order: files first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum BackupKind {
    File,
    Branch,
}

impl State {
    fn entry(&self, id: JobId) -> Result<&Entry> {
        self.jobs
            .get(&id)
            .ok_or(StoreError::JobNotFound { job: id })
    }

    fn ensure_exists(&self, id: JobId) -> Result<()> {
        self.entry(id).map(|_| ())
    }

    /// Adds the job to the queue indexes (`listed`) or takes it out, if it
    /// is queued: around every change that may move its state or priority.
    fn index_queued(&mut self, id: JobId, listed: bool) {
        let Some(entry) = self.jobs.get(&id) else {
            return;
        };
        if entry.job.state() != JobState::Queued {
            return;
        }
        let claim = entry.claim_key();
        let target = entry.lookup_key();
        let created = (entry.created_at, entry.seq);
        if listed {
            self.queue.insert(claim, id);
            self.queued_by_target
                .entry(target)
                .or_default()
                .insert(created, id);
        } else {
            self.queue.remove(&claim);
            if let Some(jobs) = self.queued_by_target.get_mut(&target) {
                jobs.remove(&created);
                if jobs.is_empty() {
                    self.queued_by_target.remove(&target);
                }
            }
        }
    }

    /// Changes one job, keeping the indexes true: `change` may move the
    /// job's state or priority. Nothing changes when `change` fails.
    fn modify<T>(&mut self, id: JobId, change: impl FnOnce(&mut Entry) -> Result<T>) -> Result<T> {
        self.ensure_exists(id)?;
        self.index_queued(id, false);
        let result = match self.jobs.get_mut(&id) {
            Some(entry) => change(entry),
            None => Err(StoreError::JobNotFound { job: id }),
        };
        self.index_queued(id, true);
        result
    }

    fn insert(&mut self, mut job: Job, due_at: Timestamp, tail_limit: usize) -> Result<()> {
        if self.jobs.contains_key(&job.id) {
            return Err(StoreError::JobExists { job: job.id });
        }
        let created_at = ts_to_sql(job.created_at)?;
        let due_at = ts_to_sql(due_at)?;
        if let Some(finished) = job.finished_at {
            ts_to_sql(finished)?;
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        let steps = std::mem::take(&mut job.steps)
            .into_iter()
            .enumerate()
            .map(|(index, step)| {
                (
                    u32::try_from(index).unwrap_or(u32::MAX),
                    bounded(step, tail_limit),
                )
            })
            .collect();
        let id = job.id;
        self.by_created.insert((created_at, seq), id);
        self.by_target
            .entry((job.repo.clone(), job.pipeline.clone()))
            .or_default()
            .insert((created_at, seq), id);
        self.jobs.insert(
            id,
            Entry {
                seq,
                created_at,
                due_at,
                job,
                steps,
                lease: None,
            },
        );
        self.index_queued(id, true);
        Ok(())
    }

    fn queued_count(&self) -> u64 {
        self.queue.len() as u64
    }

    fn transition(
        &mut self,
        id: JobId,
        to: JobState,
        patch: JobPatch,
        now: Timestamp,
    ) -> Result<Job> {
        self.modify(id, |entry| {
            move_job(entry, to, now)?;
            patch.apply(&mut entry.job);
            Ok(entry.full_job(false))
        })
    }

    fn claim(&mut self, worker: &str, lease: Duration, now: Timestamp) -> Result<Option<Job>> {
        let now_nanos = ts_to_sql(now)?;
        let next = self
            .queue
            .values()
            .copied()
            .find(|id| self.jobs.get(id).is_some_and(|e| e.due_at <= now_nanos));
        let Some(id) = next else {
            return Ok(None);
        };
        let job = self.transition(id, JobState::Running, JobPatch::new(), now)?;
        if let Some(entry) = self.jobs.get_mut(&id) {
            entry.lease = Some(Lease {
                owner: worker.to_owned(),
                expires_at: add_duration(now_nanos, lease),
            });
        }
        Ok(Some(job))
    }

    fn recover(&mut self, now: Timestamp) -> Result<RecoveryReport> {
        let mut interrupted: Vec<(i64, JobId)> = self
            .jobs
            .values()
            .filter(|entry| matches!(entry.job.state(), JobState::Running | JobState::Interrupted))
            .map(|entry| (entry.seq, entry.job.id))
            .collect();
        interrupted.sort_unstable();
        let mut report = RecoveryReport::default();
        for (_, id) in interrupted {
            let requeued = self.modify(id, |entry| {
                if entry.job.state() == JobState::Running {
                    move_job(entry, JobState::Interrupted, now)?;
                }
                if entry.job.interruptions <= 1 {
                    move_job(entry, JobState::Queued, now)?;
                    Ok(true)
                } else {
                    move_job(entry, JobState::Failed, now)?;
                    entry.job.error = Some(INTERRUPTED_TWICE.to_owned());
                    Ok(false)
                }
            })?;
            if requeued {
                report.requeued.push(id);
            } else {
                report.failed.push(id);
            }
        }
        let mut pgids: Vec<(i64, i32, JobId)> = self
            .pgids
            .iter()
            .map(|(&(job, pgid), &recorded)| (recorded, pgid, job))
            .collect();
        pgids.sort_unstable_by_key(|&(recorded, pgid, _)| (recorded, pgid));
        report.pgids = pgids
            .into_iter()
            .map(|(_, pgid, job)| StepPgid { job, pgid })
            .collect();
        Ok(report)
    }

    fn purge_finished_before(&mut self, cutoff: Timestamp) -> Result<u64> {
        let cutoff = ts_to_sql(cutoff)?;
        let mut finished = Vec::new();
        for (id, entry) in &self.jobs {
            let state = entry.job.state();
            if matches!(
                state,
                JobState::Queued | JobState::Running | JobState::Interrupted
            ) {
                continue;
            }
            let Some(finished_at) = entry.job.finished_at else {
                continue;
            };
            if ts_to_sql(finished_at)? < cutoff {
                finished.push(*id);
            }
        }
        for id in &finished {
            if let Some(entry) = self.jobs.remove(id) {
                let created = (entry.created_at, entry.seq);
                self.by_created.remove(&created);
                let target = entry.lookup_key();
                if let Some(jobs) = self.by_target.get_mut(&target) {
                    jobs.remove(&created);
                    if jobs.is_empty() {
                        self.by_target.remove(&target);
                    }
                }
            }
            self.pgids.retain(|(job, _), _| job != id);
            self.backups.remove(id);
        }
        Ok(finished.len() as u64)
    }

    fn list(&self, filter: &JobFilter, page: &PageRequest) -> Result<Page<Job>> {
        let limit = page.effective_limit() as usize;
        let upper = match &page.cursor {
            Some(cursor) => {
                let cursor = Cursor::decode(JOB_CURSOR_TAG, cursor)?;
                std::ops::Bound::Excluded((cursor.time, cursor.seq))
            }
            None => std::ops::Bound::Unbounded,
        };
        let mut items = Vec::with_capacity(limit.min(1024));
        let mut last = None;
        let mut more = false;
        let range = (std::ops::Bound::Unbounded, upper);
        let empty = BTreeMap::new();
        let order = match (&filter.repo, &filter.pipeline) {
            (Some(repo), Some(pipeline)) => self
                .by_target
                .get(&(repo.clone(), pipeline.clone()))
                .unwrap_or(&empty),
            _ => &self.by_created,
        };
        let matching = order
            .range(range)
            .rev()
            .filter_map(|(_, id)| self.jobs.get(id))
            .filter(|entry| filter.matches(&entry.job));
        for entry in matching {
            if items.len() == limit {
                more = true;
                break;
            }
            items.push(entry.full_job(false));
            last = Some(Cursor {
                time: entry.created_at,
                seq: entry.seq,
            });
        }
        let next_cursor = if more {
            last.map(|cursor| cursor.encode(JOB_CURSOR_TAG))
        } else {
            None
        };
        Ok(Page { items, next_cursor })
    }

    fn put_backups(&mut self, job: JobId, backups: Vec<Backup>) -> Result<()> {
        self.ensure_exists(job)?;
        let kept = self.backups.entry(job).or_default();
        for backup in backups {
            let kind = match backup {
                Backup::File { .. } => BackupKind::File,
                Backup::Branch { .. } => BackupKind::Branch,
            };
            kept.insert((kind, backup.name().to_owned()), backup);
        }
        Ok(())
    }

    fn append_events(&mut self, events: Vec<Arc<Event>>) -> Result<()> {
        // Encode every timestamp first: a batch is all or nothing.
        let times = events
            .iter()
            .map(|event| ts_to_sql(event.ts))
            .collect::<Result<Vec<_>>>()?;
        for (event, ts) in events.into_iter().zip(times) {
            self.next_event_seq += 1;
            self.events.insert((ts, self.next_event_seq), event);
        }
        Ok(())
    }

    /// Up to `limit` matching events after `cursor`, newest first, and the
    /// cursor of the last one when more follow.
    fn events_page(
        &self,
        filter: &EventFilter,
        cursor: Option<Cursor>,
        limit: usize,
    ) -> Result<(Vec<Arc<Event>>, Option<Cursor>)> {
        let since = filter.since.map(ts_to_sql).transpose()?;
        let until = filter.until.map(ts_to_sql).transpose()?;
        let upper = match (until, cursor) {
            (Some(until), Some(cursor)) if until <= cursor.time => {
                std::ops::Bound::Excluded((until, i64::MIN))
            }
            (_, Some(cursor)) => std::ops::Bound::Excluded((cursor.time, cursor.seq)),
            (Some(until), None) => std::ops::Bound::Excluded((until, i64::MIN)),
            (None, None) => std::ops::Bound::Unbounded,
        };
        let lower = match since {
            Some(since) => std::ops::Bound::Included((since, i64::MIN)),
            None => std::ops::Bound::Unbounded,
        };
        let mut items = Vec::with_capacity(limit.min(1024));
        let mut last = None;
        for (&(ts, seq), event) in self.events.range((lower, upper)).rev() {
            if !filter.matches(event) {
                continue;
            }
            if items.len() == limit {
                return Ok((items, last));
            }
            items.push(Arc::clone(event));
            last = Some(Cursor { time: ts, seq });
        }
        Ok((items, None))
    }
}

/// Moves the job's state, as the SQLite store's `move_job` does: checked by
/// the state machine; re-queueing forgets the steps; leaving `running`
/// forgets the lease.
fn move_job(entry: &mut Entry, to: JobState, now: Timestamp) -> Result<()> {
    entry
        .job
        .transition_at(to, now)
        .map_err(|source| StoreError::IllegalTransition {
            job: entry.job.id,
            source,
        })?;
    if to == JobState::Queued {
        entry.steps.clear();
    }
    if to != JobState::Running {
        entry.lease = None;
    }
    Ok(())
}

fn bounded(mut step: StepResult, tail_limit: usize) -> StepResult {
    step.output_tail = step
        .output_tail
        .take()
        .map(|tail| truncate_tail(tail, tail_limit));
    step
}

// === impl JobStore ===

impl JobStore for MemoryStore {
    fn insert_job(&self, job: Job) -> StoreFuture<'_, ()> {
        let due_at = job.created_at;
        self.insert_job_due(job, due_at)
    }

    fn insert_job_due(&self, job: Job, due_at: Timestamp) -> StoreFuture<'_, ()> {
        let limit = self.output_tail_limit;
        self.with(move |state| state.insert(job, due_at, limit))
    }

    fn insert_job_bounded(&self, mut job: Job, capacity: u64) -> StoreFuture<'_, Job> {
        let limit = self.output_tail_limit;
        let now = Timestamp::now();
        self.with(move |state| {
            if job.state() == JobState::Queued && state.queued_count() >= capacity {
                skip_as_queue_full(&mut job, now)?;
            }
            let due_at = job.created_at;
            state.insert(job.clone(), due_at, limit)?;
            Ok(job)
        })
    }

    fn get_job(&self, id: JobId) -> StoreFuture<'_, Option<Job>> {
        self.with(move |state| Ok(state.jobs.get(&id).map(|entry| entry.full_job(true))))
    }

    fn list_jobs(&self, filter: JobFilter, page: PageRequest) -> StoreFuture<'_, Page<Job>> {
        self.with(move |state| state.list(&filter, &page))
    }

    fn count_jobs(&self, filter: JobFilter) -> StoreFuture<'_, u64> {
        self.with(move |state| {
            Ok(state
                .jobs
                .values()
                .filter(|entry| filter.matches(&entry.job))
                .count() as u64)
        })
    }

    fn queue_depth(&self) -> StoreFuture<'_, u64> {
        self.with(|state| Ok(state.queued_count()))
    }

    fn find_queued(&self, repo: &RepoId, pipeline: &str) -> StoreFuture<'_, Option<JobId>> {
        let key = (repo.clone(), pipeline.to_owned());
        self.with(move |state| {
            Ok(state
                .queued_by_target
                .get(&key)
                .and_then(|jobs| jobs.values().next().copied()))
        })
    }

    fn transition(&self, id: JobId, to: JobState, patch: JobPatch) -> StoreFuture<'_, Job> {
        let now = Timestamp::now();
        self.with(move |state| state.transition(id, to, patch, now))
    }

    fn update_job(&self, id: JobId, patch: JobPatch) -> StoreFuture<'_, Job> {
        self.with(move |state| {
            state.modify(id, |entry| {
                patch.apply(&mut entry.job);
                Ok(entry.full_job(false))
            })
        })
    }

    fn record_step(&self, id: JobId, index: u32, step: StepResult) -> StoreFuture<'_, ()> {
        let limit = self.output_tail_limit;
        self.with(move |state| match state.jobs.get_mut(&id) {
            Some(entry) => {
                entry.steps.insert(index, bounded(step, limit));
                Ok(())
            }
            None => Err(StoreError::JobNotFound { job: id }),
        })
    }

    fn claim_next(&self, worker: &str, lease: Duration) -> StoreFuture<'_, Option<Job>> {
        let now = Timestamp::now();
        self.with(move |state| state.claim(worker, lease, now))
    }

    fn renew_lease(&self, id: JobId, worker: &str, lease: Duration) -> StoreFuture<'_, bool> {
        let now = Timestamp::now();
        self.with(move |state| {
            let expires = add_duration(ts_to_sql(now)?, lease);
            Ok(match state.jobs.get_mut(&id) {
                Some(entry) if entry.job.state() == JobState::Running => match &mut entry.lease {
                    Some(held) if held.owner == worker => {
                        held.expires_at = expires;
                        true
                    }
                    _ => false,
                },
                _ => false,
            })
        })
    }

    fn set_step_pgid(&self, id: JobId, pgid: i32) -> StoreFuture<'_, ()> {
        let now = Timestamp::now();
        self.with(move |state| {
            state.ensure_exists(id)?;
            state.pgids.insert((id, pgid), ts_to_sql(now)?);
            Ok(())
        })
    }

    fn clear_step_pgid(&self, id: JobId, pgid: i32) -> StoreFuture<'_, ()> {
        self.with(move |state| {
            state.pgids.remove(&(id, pgid));
            Ok(())
        })
    }

    fn recover(&self) -> StoreFuture<'_, RecoveryReport> {
        let now = Timestamp::now();
        self.with(move |state| state.recover(now))
    }

    fn purge_jobs_finished_before(&self, cutoff: Timestamp) -> StoreFuture<'_, u64> {
        self.with(move |state| state.purge_finished_before(cutoff))
    }
}

// === impl EventStore ===

impl EventStore for MemoryStore {
    fn append_events(&self, events: Vec<Arc<Event>>) -> StoreFuture<'_, ()> {
        self.with(move |state| state.append_events(events))
    }

    fn query_events(&self, filter: EventFilter, page: PageRequest) -> StoreFuture<'_, Page<Event>> {
        self.with(move |state| {
            let cursor = page
                .cursor
                .as_deref()
                .map(|text| Cursor::decode(EVENT_CURSOR_TAG, text))
                .transpose()?;
            let limit = page.effective_limit() as usize;
            let (items, next) = state.events_page(&filter, cursor, limit)?;
            Ok(Page {
                items: items.iter().map(|event| Event::clone(event)).collect(),
                next_cursor: next.map(|cursor| cursor.encode(EVENT_CURSOR_TAG)),
            })
        })
    }

    fn count_events(&self, filter: EventFilter) -> StoreFuture<'_, u64> {
        self.with(move |state| {
            Ok(state
                .events
                .values()
                .filter(|event| filter.matches(event))
                .count() as u64)
        })
    }

    fn purge_events_before(&self, cutoff: Timestamp) -> StoreFuture<'_, u64> {
        self.with(move |state| {
            let cutoff = ts_to_sql(cutoff)?;
            let kept = state.events.split_off(&(cutoff, i64::MIN));
            let purged = std::mem::replace(&mut state.events, kept);
            Ok(purged.len() as u64)
        })
    }

    fn export_events(
        &self,
        filter: EventFilter,
        format: ExportFormat,
        limit: Option<u64>,
    ) -> ExportStream {
        let store = self.clone();
        ExportStream::spawn_blocking(move |out| store.export_events_to(&filter, format, limit, out))
    }
}

impl MemoryStore {
    /// Writes the matching events (newest first, at most `limit`) to `out`,
    /// taking the lock for one page at a time so that appends go on during a
    /// long export. Returns how many were written.
    ///
    /// # Errors
    /// An encoding error or a failed write to `out`.
    pub fn export_events_to(
        &self,
        filter: &EventFilter,
        format: ExportFormat,
        limit: Option<u64>,
        out: &mut dyn Write,
    ) -> Result<u64> {
        export_pages(format, limit, out, |cursor, page, encoder| {
            let (events, next) = self.lock().events_page(filter, cursor, page as usize)?;
            for event in &events {
                encoder.write(event)?;
            }
            Ok(next)
        })
    }
}

// === impl BackupStore ===

impl BackupStore for MemoryStore {
    fn put_backups(&self, job: JobId, backups: Vec<Backup>) -> StoreFuture<'_, ()> {
        self.with(move |state| state.put_backups(job, backups))
    }

    fn backups(&self, job: JobId) -> StoreFuture<'_, Vec<Backup>> {
        self.with(move |state| {
            Ok(state
                .backups
                .get(&job)
                .map(|kept| kept.values().cloned().collect())
                .unwrap_or_default())
        })
    }

    fn delete_backups(&self, job: JobId) -> StoreFuture<'_, u64> {
        self.with(move |state| {
            Ok(state
                .backups
                .remove(&job)
                .map_or(0, |kept| kept.len() as u64))
        })
    }
}

impl StoreHealth for MemoryStore {
    /// Always `ok`: nothing here can fail to be written.
    fn health(&self) -> ComponentHealth {
        ComponentHealth::ok()
    }
}
