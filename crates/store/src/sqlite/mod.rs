//! The embedded store: SQLite in WAL mode, one batching writer thread, a
//! small pool of reader connections.
//!
//! See `docs/storage.md` for the schema, the durability guarantees, recovery
//! and retention.

mod backups;
mod checkpoint;
pub(crate) mod codec;
mod events;
pub(crate) mod jobs;
mod readers;
mod schema;
mod writer;

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use orchex_core::{ComponentHealth, Event, Job, JobId, JobState, RepoId, StepResult, Timestamp};
use rusqlite::{Connection, OpenFlags};

use crate::error::{Result, StoreError};
use crate::export::ExportStream;
use crate::model::{
    Backup, EventFilter, ExportFormat, JobFilter, JobPatch, Page, PageRequest, RecoveryReport,
};
use crate::traits::{BackupStore, EventStore, JobStore, StoreFuture, StoreHealth};

pub use events::INSERT_EVENT_SQL;
use readers::Readers;
use writer::{Writer, WriterHandle};

/// The file name [`SqliteStore::open_in_dir`] uses.
pub const DB_FILE_NAME: &str = "orchex.sqlite3";

/// How hard a commit tries to survive a power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Durability {
    /// `synchronous = NORMAL` in WAL mode: a committed write survives the
    /// process being killed (`kill -9`) and never leaves the file corrupt;
    /// after a power loss or OS crash the last commits may be rolled back.
    #[default]
    Normal,
    /// `synchronous = FULL`: every commit is also fsynced, so it survives a
    /// power loss; commits are several times slower.
    Full,
}

/// When to run `PRAGMA integrity_check` at open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum IntegrityCheck {
    /// Only when the previous run did not close the store cleanly.
    #[default]
    AfterUncleanShutdown,
    /// At every open.
    Always,
    /// Never (for tests and benchmarks of huge files).
    Never,
}

/// How to open a [`SqliteStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreOptions {
    /// Reader connections (and concurrent queries). Default 4.
    pub readers: usize,
    /// Commit durability. Default [`Durability::Normal`].
    pub durability: Durability,
    /// When to check integrity at open.
    pub integrity_check: IntegrityCheck,
    /// Write operations waiting for the writer before callers wait to send.
    /// Default 1024.
    pub write_queue: usize,
    /// Most write operations in one transaction. Default 256.
    pub max_batch_ops: usize,
    /// Longest stored step output tail, in bytes. Default 64 KiB.
    pub output_tail_limit: usize,
    /// Events deleted per retention transaction. Default 5000.
    pub purge_batch: usize,
    /// SQLite page cache of each connection, in KiB. Default 16 MiB.
    pub cache_size_kib: u32,
    /// Caps the file at this many pages (`PRAGMA max_page_count`); writes
    /// beyond fail like on a full disk. For quotas and tests.
    pub max_page_count: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            readers: 4,
            durability: Durability::Normal,
            integrity_check: IntegrityCheck::AfterUncleanShutdown,
            write_queue: 1024,
            max_batch_ops: 256,
            output_tail_limit: 64 * 1024,
            purge_batch: 5000,
            cache_size_kib: 16 * 1024,
            max_page_count: None,
        }
    }
}

impl StoreOptions {
    /// Sets the number of reader connections.
    #[must_use]
    pub fn readers(mut self, readers: usize) -> Self {
        self.readers = readers.max(1);
        self
    }

    /// Sets the commit durability.
    #[must_use]
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Sets when integrity is checked at open.
    #[must_use]
    pub fn integrity_check(mut self, check: IntegrityCheck) -> Self {
        self.integrity_check = check;
        self
    }

    /// Sets the longest stored step output tail.
    #[must_use]
    pub fn output_tail_limit(mut self, bytes: usize) -> Self {
        self.output_tail_limit = bytes;
        self
    }

    /// Sets how many events a retention transaction deletes.
    #[must_use]
    pub fn purge_batch(mut self, rows: usize) -> Self {
        self.purge_batch = rows.max(1);
        self
    }

    /// Caps the database at `pages` pages.
    #[must_use]
    pub fn max_page_count(mut self, pages: u64) -> Self {
        self.max_page_count = Some(pages);
        self
    }
}

/// What happened when the store was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenReport {
    /// The database file.
    pub path: PathBuf,
    /// The file was created by this open.
    pub created: bool,
    /// The previous run did not close the store cleanly (it crashed or was
    /// killed).
    pub unclean_shutdown: bool,
    /// `PRAGMA integrity_check` ran (and passed: otherwise open fails).
    pub integrity_checked: bool,
    /// The schema version before migrating, when a migration ran.
    pub migrated_from: Option<i64>,
}

/// The embedded SQLite store: implements [`JobStore`], [`EventStore`],
/// [`BackupStore`] and [`StoreHealth`]. Cheap to clone (shared handle).
///
/// Writes go to one writer thread that batches them into transactions;
/// reads run on a small pool of connections on tokio's blocking pool. The
/// async methods need a tokio runtime.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    writer: WriterHandle,
    /// Stops the background checkpointer when the last handle goes.
    _checkpointer: Option<checkpoint::Checkpointer>,
    readers: Arc<Readers>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    report: OpenReport,
    options: StoreOptions,
}

impl fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.inner.report.path)
            .finish_non_exhaustive()
    }
}

fn open_writer_connection(path: &Path, options: &StoreOptions) -> Result<(Connection, OpenReport)> {
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI,
    )
    .map_err(|err| StoreError::Open {
        path: path.to_owned(),
        source: Arc::new(err),
    })?;
    schema::configure_common(&conn)?;
    let (created, migrated_from) = schema::migrate(&mut conn, path)?;
    let synchronous = match options.durability {
        Durability::Normal => "NORMAL",
        Durability::Full => "FULL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {synchronous}; PRAGMA cache_size = -{}; \
         PRAGMA wal_autocheckpoint = {};",
        options.cache_size_kib,
        checkpoint::WRITER_AUTOCHECKPOINT_PAGES
    ))
    .map_err(|err| StoreError::sqlite("configure the writer", err))?;
    if let Some(pages) = options.max_page_count {
        conn.execute_batch(&format!("PRAGMA max_page_count = {pages};"))
            .map_err(|err| StoreError::sqlite("cap the page count", err))?;
    }
    let clean: Option<String> = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'clean_shutdown'",
            [],
            |row| row.get(0),
        )
        .map_err(|err| StoreError::sqlite("read the shutdown marker", err))
        .ok();
    let unclean_shutdown = !created && clean.as_deref() != Some("1");
    let integrity_checked = match options.integrity_check {
        IntegrityCheck::Always => true,
        IntegrityCheck::AfterUncleanShutdown => unclean_shutdown,
        IntegrityCheck::Never => false,
    };
    if integrity_checked {
        schema::integrity_check(&conn, path)?;
    }
    if unclean_shutdown {
        tracing::warn!(
            path = %path.display(),
            "the store was not closed cleanly; integrity check {}",
            if integrity_checked { "passed" } else { "skipped" }
        );
    }
    // From here until a clean close, the file counts as in use.
    conn.execute(
        "INSERT OR REPLACE INTO meta (key, value) VALUES ('clean_shutdown', '0')",
        [],
    )
    .map_err(|err| StoreError::sqlite("set the shutdown marker", err))?;
    let report = OpenReport {
        path: path.to_owned(),
        created,
        unclean_shutdown,
        integrity_checked,
        migrated_from,
    };
    Ok((conn, report))
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, on the blocking
    /// pool. See [`SqliteStore::open_blocking`].
    pub async fn open(path: impl AsRef<Path>, options: StoreOptions) -> Result<Self> {
        let path = path.as_ref().to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(&path, options))
            .await
            .map_err(|err| StoreError::Task {
                detail: err.to_string(),
            })?
    }

    /// Opens `dir/orchex.sqlite3`, creating `dir` if needed.
    pub async fn open_in_dir(dir: impl AsRef<Path>, options: StoreOptions) -> Result<Self> {
        let dir = dir.as_ref().to_owned();
        tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&dir).map_err(|err| StoreError::CreateDir {
                path: dir.clone(),
                source: Arc::new(err),
            })?;
            Self::open_blocking(&dir.join(DB_FILE_NAME), options)
        })
        .await
        .map_err(|err| StoreError::Task {
            detail: err.to_string(),
        })?
    }

    /// Opens (creating if needed) the database at `path` on this thread:
    /// runs the migrations, refuses a newer schema, runs the integrity check
    /// after an unclean shutdown, and starts the writer thread. The async
    /// methods of the store need a tokio runtime; this one does not.
    pub fn open_blocking(path: &Path, options: StoreOptions) -> Result<Self> {
        let (conn, report) = open_writer_connection(path, &options)?;
        let (writer, thread) = Writer::spawn(
            conn,
            path.to_owned(),
            options.write_queue,
            options.max_batch_ops,
        )
        .map_err(|err| StoreError::Task {
            detail: format!("cannot start the writer thread: {err}"),
        })?;
        let readers = Arc::new(Readers::new(path, options.readers));
        let checkpointer = match checkpoint::Checkpointer::spawn(
            path.to_owned(),
            Arc::clone(&writer.shared),
        ) {
            Ok(checkpointer) => Some(checkpointer),
            Err(err) => {
                tracing::warn!(error = %err, "cannot start the checkpointer; the writer will checkpoint");
                None
            }
        };
        Ok(Self {
            inner: Arc::new(Inner {
                _checkpointer: checkpointer,
                writer,
                readers,
                thread: Mutex::new(Some(thread)),
                report,
                options,
            }),
        })
    }

    /// What happened at open (unclean shutdown, integrity check...).
    pub fn open_report(&self) -> &OpenReport {
        &self.inner.report
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.report.path
    }

    /// How many writes failed for storage reasons since open.
    pub fn write_failures(&self) -> u64 {
        self.inner.writer.shared.failures()
    }

    /// Finishes the queued writes, marks the database cleanly shut down,
    /// checkpoints the WAL and stops the writer thread. Later writes fail
    /// with [`StoreError::Closed`]. Idempotent.
    ///
    /// Dropping the last handle does the same in the background; call this
    /// at shutdown so that the process does not exit before it is done.
    pub async fn close(&self) -> Result<()> {
        let result = self.inner.writer.shutdown().await;
        let thread = self
            .inner
            .thread
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(thread) = thread {
            tokio::task::spawn_blocking(move || thread.join())
                .await
                .map_err(|err| StoreError::Task {
                    detail: err.to_string(),
                })?
                .map_err(|_| StoreError::Task {
                    detail: "the writer thread panicked".into(),
                })?;
        }
        result
    }

    /// Runs `work` in the writer's next transaction; returns once committed.
    async fn write<T, F>(&self, work: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.inner.writer.write(work).await
    }

    async fn read<T, F>(&self, query: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        self.inner.readers.read(query).await
    }

    /// Writes the matching events to `out` on the current thread (blocking),
    /// one page of rows at a time; returns how many were written. For CLIs
    /// and benchmarks; servers use [`EventStore::export_events`].
    pub fn export_events_to(
        &self,
        filter: &EventFilter,
        format: ExportFormat,
        limit: Option<u64>,
        out: &mut dyn Write,
    ) -> Result<u64> {
        self.inner
            .readers
            .read_blocking(|conn| events::export(conn, filter, format, limit, out))
    }

    /// Runs a purge of old events, one small transaction per batch.
    async fn purge_events(&self, cutoff: Timestamp) -> Result<u64> {
        let batch = self.inner.options.purge_batch;
        let mut total = 0u64;
        loop {
            let deleted = self
                .write(move |conn| events::purge_batch_tx(conn, cutoff, batch))
                .await?;
            total += deleted as u64;
            if deleted < batch {
                return Ok(total);
            }
        }
    }
}

// === impl JobStore ===

impl JobStore for SqliteStore {
    fn insert_job(&self, job: Job) -> StoreFuture<'_, ()> {
        let due_at = job.created_at;
        self.insert_job_due(job, due_at)
    }

    fn insert_job_due(&self, job: Job, due_at: Timestamp) -> StoreFuture<'_, ()> {
        let limit = self.inner.options.output_tail_limit;
        Box::pin(self.write(move |conn| jobs::insert_tx(conn, job, due_at, limit)))
    }

    fn insert_job_bounded(&self, job: Job, capacity: u64) -> StoreFuture<'_, Job> {
        let limit = self.inner.options.output_tail_limit;
        let now = Timestamp::now();
        Box::pin(self.write(move |conn| jobs::insert_bounded_tx(conn, job, capacity, limit, now)))
    }

    fn get_job(&self, id: JobId) -> StoreFuture<'_, Option<Job>> {
        Box::pin(self.read(move |conn| jobs::get(conn, id)))
    }

    fn list_jobs(&self, filter: JobFilter, page: PageRequest) -> StoreFuture<'_, Page<Job>> {
        Box::pin(self.read(move |conn| jobs::list(conn, &filter, &page)))
    }

    fn count_jobs(&self, filter: JobFilter) -> StoreFuture<'_, u64> {
        Box::pin(self.read(move |conn| jobs::count(conn, &filter)))
    }

    fn queue_depth(&self) -> StoreFuture<'_, u64> {
        Box::pin(self.read(jobs::queued_count))
    }

    fn find_queued(&self, repo: &RepoId, pipeline: &str) -> StoreFuture<'_, Option<JobId>> {
        let repo = repo.clone();
        let pipeline = pipeline.to_owned();
        Box::pin(self.read(move |conn| jobs::find_queued(conn, &repo, &pipeline)))
    }

    fn transition(&self, id: JobId, to: JobState, patch: JobPatch) -> StoreFuture<'_, Job> {
        let now = Timestamp::now();
        Box::pin(self.write(move |conn| jobs::transition_tx(conn, id, to, patch, now)))
    }

    fn update_job(&self, id: JobId, patch: JobPatch) -> StoreFuture<'_, Job> {
        Box::pin(self.write(move |conn| jobs::update_tx(conn, id, patch)))
    }

    fn record_step(&self, id: JobId, index: u32, step: StepResult) -> StoreFuture<'_, ()> {
        let limit = self.inner.options.output_tail_limit;
        Box::pin(self.write(move |conn| jobs::record_step_tx(conn, id, index, step, limit)))
    }

    fn claim_next(&self, worker: &str, lease: Duration) -> StoreFuture<'_, Option<Job>> {
        let worker = worker.to_owned();
        let now = Timestamp::now();
        Box::pin(self.write(move |conn| jobs::claim_tx(conn, &worker, lease, now)))
    }

    fn renew_lease(&self, id: JobId, worker: &str, lease: Duration) -> StoreFuture<'_, bool> {
        let worker = worker.to_owned();
        let now = Timestamp::now();
        Box::pin(self.write(move |conn| jobs::renew_lease_tx(conn, id, &worker, lease, now)))
    }

    fn set_step_pgid(&self, id: JobId, pgid: i32) -> StoreFuture<'_, ()> {
        let now = Timestamp::now();
        Box::pin(self.write(move |conn| jobs::set_pgid_tx(conn, id, pgid, now)))
    }

    fn clear_step_pgid(&self, id: JobId, pgid: i32) -> StoreFuture<'_, ()> {
        Box::pin(self.write(move |conn| jobs::clear_pgid_tx(conn, id, pgid)))
    }

    fn recover(&self) -> StoreFuture<'_, RecoveryReport> {
        let now = Timestamp::now();
        Box::pin(self.write(move |conn| jobs::recover_tx(conn, now)))
    }

    fn purge_jobs_finished_before(&self, cutoff: Timestamp) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let mut total = 0u64;
            loop {
                let deleted = self
                    .write(move |conn| jobs::purge_finished_batch_tx(conn, cutoff))
                    .await?;
                total += deleted as u64;
                if deleted < jobs::PURGE_BATCH {
                    return Ok(total);
                }
            }
        })
    }
}

// === impl EventStore ===

impl EventStore for SqliteStore {
    fn append_events(&self, events: Vec<Arc<Event>>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            if events.is_empty() {
                return Ok(());
            }
            self.write(move |conn| events::append_tx(conn, &events))
                .await
        })
    }

    fn query_events(&self, filter: EventFilter, page: PageRequest) -> StoreFuture<'_, Page<Event>> {
        Box::pin(self.read(move |conn| {
            events::query(
                conn,
                &filter,
                page.cursor.as_deref(),
                page.effective_limit(),
            )
        }))
    }

    fn count_events(&self, filter: EventFilter) -> StoreFuture<'_, u64> {
        Box::pin(self.read(move |conn| events::count(conn, &filter)))
    }

    fn purge_events_before(&self, cutoff: Timestamp) -> StoreFuture<'_, u64> {
        Box::pin(self.purge_events(cutoff))
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

// === impl BackupStore ===

impl BackupStore for SqliteStore {
    fn put_backups(&self, job: JobId, backups: Vec<Backup>) -> StoreFuture<'_, ()> {
        let now = Timestamp::now();
        Box::pin(self.write(move |conn| backups::put_tx(conn, job, backups, now)))
    }

    fn backups(&self, job: JobId) -> StoreFuture<'_, Vec<Backup>> {
        Box::pin(self.read(move |conn| backups::list(conn, job)))
    }

    fn delete_backups(&self, job: JobId) -> StoreFuture<'_, u64> {
        Box::pin(self.write(move |conn| backups::delete_tx(conn, job)))
    }
}

impl StoreHealth for SqliteStore {
    fn health(&self) -> ComponentHealth {
        self.inner.writer.shared.health()
    }
}

/// Opens a raw connection configured like the store's writer, with the
/// store's schema: for benchmarks that compare the store with a hand-written
/// rusqlite loop. Not for production use.
#[doc(hidden)]
pub fn raw_connection_for_benchmarks(path: &Path) -> Result<Connection> {
    let (conn, _) = open_writer_connection(path, &StoreOptions::default())?;
    Ok(conn)
}
