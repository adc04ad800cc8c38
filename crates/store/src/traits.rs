//! The storage traits the rest of orchex codes against.
//!
//! They are object safe (`Arc<dyn JobStore>` works): every method returns a
//! boxed [`StoreFuture`]. The embedded implementation is
//! [`SqliteStore`](crate::SqliteStore); a Postgres backend for several daemons
//! sharing one queue can implement the same traits (the claim maps onto
//! `SELECT ... FOR UPDATE SKIP LOCKED` plus a lease).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use orchex_core::{ComponentHealth, Event, Job, JobId, JobState, RepoId, StepResult, Timestamp};

use crate::error::{Result, StoreError};
use crate::export::ExportStream;
use crate::model::{
    Backup, EventFilter, ExportFormat, JobFilter, JobPatch, Page, PageRequest, RecoveryReport,
};

/// The future every store method returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// `now - age`, or an error when that instant cannot be represented.
pub(crate) fn cutoff_before_now(age: Duration) -> Result<Timestamp> {
    let span = jiff::SignedDuration::try_from(age).map_err(|err| StoreError::Encode {
        what: "retention age",
        detail: err.to_string(),
    })?;
    Timestamp::now()
        .checked_sub(span)
        .map_err(|err| StoreError::Encode {
            what: "retention cutoff",
            detail: err.to_string(),
        })
}

/// Durable jobs: the queue, their state machine and their results.
///
/// Every write returns once it is durable (committed). State changes go
/// through [`JobState`]'s machine inside the write transaction: an illegal
/// transition is an error ([`StoreError::IllegalTransition`]) and writes
/// nothing.
pub trait JobStore: Send + Sync {
    /// Stores a new job, due at once.
    fn insert_job(&self, job: Job) -> StoreFuture<'_, ()>;

    /// Stores a new job that [`JobStore::claim_next`] will not return before
    /// `due_at`.
    fn insert_job_due(&self, job: Job, due_at: Timestamp) -> StoreFuture<'_, ()>;

    /// Stores a new job, due at once, unless `capacity` jobs are already
    /// queued: then the job is stored `skipped` with
    /// [`SkipReason::QueueFull`](orchex_core::SkipReason::QueueFull) instead.
    /// The check and the insert are one atomic write, so concurrent calls
    /// never queue more than `capacity` jobs. Returns the job as stored
    /// (`queued` or `skipped`).
    fn insert_job_bounded(&self, job: Job, capacity: u64) -> StoreFuture<'_, Job>;

    /// The job with all its results, output tails included.
    fn get_job(&self, id: JobId) -> StoreFuture<'_, Option<Job>>;

    /// Jobs matching `filter`, newest first (by creation). Step output tails
    /// are left out of lists; [`JobStore::get_job`] has them.
    fn list_jobs(&self, filter: JobFilter, page: PageRequest) -> StoreFuture<'_, Page<Job>>;

    /// How many jobs match `filter`.
    fn count_jobs(&self, filter: JobFilter) -> StoreFuture<'_, u64>;

    /// How many jobs are queued (the queue depth). [`SqliteStore`] reads a
    /// counter (O(1)); the default counts.
    ///
    /// [`SqliteStore`]: crate::SqliteStore
    fn queue_depth(&self) -> StoreFuture<'_, u64> {
        self.count_jobs(JobFilter::new().state(JobState::Queued))
    }

    /// The oldest queued job of `repo` × `pipeline`, if any: a new trigger
    /// for the same work can be coalesced into it.
    fn find_queued(&self, repo: &RepoId, pipeline: &str) -> StoreFuture<'_, Option<JobId>>;

    /// Moves a job to `to` (checked against the state machine) and applies
    /// `patch`, atomically. Returns the updated job (without output tails).
    fn transition(&self, id: JobId, to: JobState, patch: JobPatch) -> StoreFuture<'_, Job>;

    /// Applies `patch` without changing the state.
    fn update_job(&self, id: JobId, patch: JobPatch) -> StoreFuture<'_, Job>;

    /// Records (or replaces) the result of the step at `index`. The output
    /// tail is cut to the store's limit (the last 64 KiB by default).
    fn record_step(&self, id: JobId, index: u32, step: StepResult) -> StoreFuture<'_, ()>;

    /// Atomically takes the due queued job with the highest priority, oldest
    /// first among equals, marks it `running` and leases it to `worker` for
    /// `lease`. `None` when nothing is due.
    fn claim_next(&self, worker: &str, lease: Duration) -> StoreFuture<'_, Option<Job>>;

    /// Extends the lease of a running job held by `worker`. `false` when the
    /// job is no longer running or is leased to someone else.
    fn renew_lease(&self, id: JobId, worker: &str, lease: Duration) -> StoreFuture<'_, bool>;

    /// Records the process group of a running step.
    fn set_step_pgid(&self, id: JobId, pgid: i32) -> StoreFuture<'_, ()>;

    /// Forgets a process group (the step ended, or the group was killed).
    fn clear_step_pgid(&self, id: JobId, pgid: i32) -> StoreFuture<'_, ()>;

    /// Crash recovery, to run once at start before dispatching: every
    /// `running` job becomes `interrupted`, then `queued` if this was its
    /// first interruption or `failed` (with [`INTERRUPTED_TWICE`] as its
    /// error) if it was its second. Returns what it did and every recorded
    /// step process group, which the caller must kill.
    ///
    /// [`INTERRUPTED_TWICE`]: crate::INTERRUPTED_TWICE
    fn recover(&self) -> StoreFuture<'_, RecoveryReport>;

    /// Deletes finished jobs that finished before `cutoff`, with their steps
    /// and backups. Returns how many jobs were deleted.
    fn purge_jobs_finished_before(&self, cutoff: Timestamp) -> StoreFuture<'_, u64>;
}

/// Durable events: appended in batches, queried with filters and cursors,
/// purged by age and exported in constant memory.
pub trait EventStore: Send + Sync {
    /// Appends events in one transaction; returns once they are durable.
    fn append_events(&self, events: Vec<Arc<Event>>) -> StoreFuture<'_, ()>;

    /// Events matching `filter`, newest first.
    fn query_events(&self, filter: EventFilter, page: PageRequest) -> StoreFuture<'_, Page<Event>>;

    /// How many events match `filter`.
    fn count_events(&self, filter: EventFilter) -> StoreFuture<'_, u64>;

    /// Deletes every event older than `cutoff`, in small transactions so
    /// that other writes interleave, and returns the number deleted. Freed
    /// pages go back to the file system (incremental vacuum).
    fn purge_events_before(&self, cutoff: Timestamp) -> StoreFuture<'_, u64>;

    /// [`EventStore::purge_events_before`] with `cutoff = now - max_age`.
    fn purge_older_than(&self, max_age: Duration) -> StoreFuture<'_, u64> {
        match cutoff_before_now(max_age) {
            Ok(cutoff) => self.purge_events_before(cutoff),
            Err(err) => Box::pin(std::future::ready(Err(err))),
        }
    }

    /// Streams the events matching `filter` (newest first, at most `limit`
    /// of them when given) in `format`, in chunks of about 64 KiB, reading
    /// page by page so memory stays constant whatever the number of rows.
    fn export_events(
        &self,
        filter: EventFilter,
        format: ExportFormat,
        limit: Option<u64>,
    ) -> ExportStream;
}

/// What deliveries replaced, kept until the job's record is purged so that
/// the job can be rolled back.
pub trait BackupStore: Send + Sync {
    /// Stores backups for `job` (one per path or branch; a second backup of
    /// the same target replaces the first). The job must exist.
    fn put_backups(&self, job: JobId, backups: Vec<Backup>) -> StoreFuture<'_, ()>;

    /// Every backup of `job`, files first, by path.
    fn backups(&self, job: JobId) -> StoreFuture<'_, Vec<Backup>>;

    /// Deletes the backups of `job`; returns how many there were.
    fn delete_backups(&self, job: JobId) -> StoreFuture<'_, u64>;
}

/// A store that can say whether its writes are succeeding.
pub trait StoreHealth: Send + Sync {
    /// `ok`, or `degraded` with the last write failure (a full disk...) until
    /// a later write succeeds, or `unhealthy` once closed.
    fn health(&self) -> ComponentHealth;
}

/// Everything a daemon needs from its storage, in one object.
///
/// Implemented for every type that implements the four traits; hold an
/// `Arc<dyn Store>` and upcast to `Arc<dyn JobStore>` etc. where a component
/// needs only one side.
pub trait Store: JobStore + EventStore + BackupStore + StoreHealth + std::fmt::Debug {}

impl<T> Store for T where T: JobStore + EventStore + BackupStore + StoreHealth + std::fmt::Debug {}
