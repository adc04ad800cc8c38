//! Durable storage for orchex: jobs, events and delivery backups.
//!
//! The rest of orchex codes against three object-safe traits:
//!
//! - [`JobStore`]: the persistent queue and the record of every job: insert,
//!   state transitions checked by [`orchex_core::JobState`]'s machine inside
//!   the write transaction, an atomic [`JobStore::claim_next`] by priority
//!   then age with a lease, step results with bounded output tails, diff,
//!   delivery, rollback and impact, the process group of each running step,
//!   crash [`JobStore::recover`]y, lists with filters and cursors.
//! - [`EventStore`]: batched appends, filtered queries with cursors,
//!   retention purges, and constant-memory exports (NDJSON, JSON, CSV).
//! - [`BackupStore`]: what each delivery replaced (file contents or a branch
//!   value), kept until the job is purged.
//!
//! [`SqliteStore`] implements all three on an embedded SQLite database in
//! WAL mode with one writer thread that batches writes into transactions and
//! a small pool of reader connections. A write returns once it is committed;
//! a committed write survives `kill -9`. `docs/storage.md` describes the
//! schema, durability, recovery and retention.
//!
//! **Architecture Invariant:** this crate knows nothing about git, HTTP,
//! metrics or scheduling. It persists `orchex-core` values and answers
//! queries; when and why jobs run is the orchestrator's business, and
//! reporting its health is done by whoever polls [`StoreHealth::health`].
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use orchex_core::{Event, EventKind, Job, JobState, RepoId, Trigger};
//! use orchex_store::{EventFilter, EventStore, JobStore, PageRequest, SqliteStore, StoreOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # runtime.block_on(async {
//! let dir = tempfile::tempdir()?;
//! let store = SqliteStore::open_in_dir(dir.path(), StoreOptions::default()).await?;
//!
//! // Queue a job, claim it, finish it.
//! let repo = RepoId::new("api")?;
//! let job = Job::new(repo.clone(), "codegen".into(), Trigger::manual(repo.clone()));
//! store.insert_job(job.clone()).await?;
//! let claimed = store.claim_next("worker-1", Duration::from_secs(60)).await?;
//! assert_eq!(claimed.map(|job| job.id), Some(job.id));
//! store.transition(job.id, JobState::Succeeded, Default::default()).await?;
//! // The state machine is enforced: a finished job cannot run again.
//! assert!(store.transition(job.id, JobState::Running, Default::default()).await.is_err());
//!
//! // Events are appended in batches and queried newest first.
//! let event = Event::new(EventKind::JobSucceeded, "done").with_repo(repo).with_job(job.id);
//! store.append_events(vec![Arc::new(event)]).await?;
//! let page = store
//!     .query_events(EventFilter::new().kind(EventKind::JobSucceeded), PageRequest::first())
//!     .await?;
//! assert_eq!(page.items.len(), 1);
//!
//! store.close().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```

mod error;
mod export;
mod memory;
mod model;
mod retention;
mod sqlite;
mod traits;

pub use error::{Result, StoreError};
pub use export::{ChunkWriter, EXPORT_CHUNK_BYTES, ExportEncoder, ExportSender, ExportStream};
pub use memory::MemoryStore;
pub use model::{
    Backup, CSV_HEADER, DEFAULT_PAGE_LIMIT, EventFilter, ExportFormat, INTERRUPTED_TWICE,
    JobFilter, JobPatch, MAX_PAGE_LIMIT, Page, PageRequest, RecoveryReport, StepPgid,
};
pub use retention::{PurgeReport, RetentionPolicy, purge_once, run_retention};
pub use sqlite::{
    DB_FILE_NAME, Durability, INSERT_EVENT_SQL, IntegrityCheck, OpenReport, SqliteStore,
    StoreOptions, raw_connection_for_benchmarks,
};
pub use traits::{BackupStore, EventStore, JobStore, Store, StoreFuture, StoreHealth};
