//! The store's error type: every failure names what was being done and why.

use std::path::PathBuf;
use std::sync::Arc;

use orchex_core::{IllegalTransition, JobId};

/// Everything that can go wrong in a store.
///
/// SQLite failures are kept behind an [`Arc`] so that one failed commit can be
/// reported to every writer whose work was in that transaction.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database file could not be opened or configured.
    #[error("cannot open the store at {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        source: Arc<rusqlite::Error>,
    },
    /// The directory that should hold the database could not be created.
    #[error("cannot create the store directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// What the OS said.
        source: Arc<std::io::Error>,
    },
    /// The database was written by a newer orchex; refusing to touch it.
    #[error(
        "the store at {} has schema version {found}, newer than version {supported} that this \
         orchex understands; upgrade orchex or point storage.path elsewhere",
        path.display()
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// The version found in `PRAGMA user_version`.
        found: i64,
        /// The newest version this build knows.
        supported: i64,
    },
    /// `PRAGMA integrity_check` reported problems.
    #[error("the store at {} failed its integrity check: {report}", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// The first lines of SQLite's report.
        report: String,
    },
    /// A SQLite call failed.
    #[error("{context}: {source}")]
    Sqlite {
        /// What the store was doing.
        context: &'static str,
        /// What SQLite said.
        source: Arc<rusqlite::Error>,
    },
    /// No job has this id.
    #[error("job {job} not found")]
    JobNotFound {
        /// The id asked for.
        job: JobId,
    },
    /// A job with this id already exists.
    #[error("job {job} already exists")]
    JobExists {
        /// The duplicate id.
        job: JobId,
    },
    /// The job's state machine refused the change; nothing was written.
    #[error("job {job}: {source}")]
    IllegalTransition {
        /// The job.
        job: JobId,
        /// The refused transition.
        source: IllegalTransition,
    },
    /// A pagination cursor was not produced by this store (or is damaged).
    #[error("invalid cursor {cursor:?}")]
    InvalidCursor {
        /// The cursor as received.
        cursor: String,
    },
    /// A value could not be stored (e.g. a timestamp outside the range the
    /// store can represent).
    #[error("cannot store {what}: {detail}")]
    Encode {
        /// What was being stored.
        what: &'static str,
        /// Why it failed.
        detail: String,
    },
    /// A stored row could not be read back into a domain value.
    #[error("stored {what} is unreadable: {detail}")]
    Decode {
        /// What was being read.
        what: &'static str,
        /// Why it failed.
        detail: String,
    },
    /// Writing an export to its destination failed.
    #[error("export failed: {source}")]
    Export {
        /// The I/O error (a closed connection, a full disk...).
        source: Arc<std::io::Error>,
    },
    /// The store was closed, or its writer thread is gone.
    #[error("the store is closed")]
    Closed,
    /// A blocking task running a query panicked or was cancelled.
    #[error("a store task failed: {detail}")]
    Task {
        /// The join error.
        detail: String,
    },
}

impl StoreError {
    /// Wraps a SQLite error with what the store was doing.
    pub(crate) fn sqlite(context: &'static str, source: rusqlite::Error) -> Self {
        Self::Sqlite {
            context,
            source: Arc::new(source),
        }
    }

    /// Whether SQLite reported a full disk (or a reached `max_page_count`).
    pub fn is_full(&self) -> bool {
        self.sqlite_code() == Some(rusqlite::ErrorCode::DiskFull)
    }

    /// The SQLite error code, when the failure came from SQLite.
    pub fn sqlite_code(&self) -> Option<rusqlite::ErrorCode> {
        match self {
            Self::Sqlite { source, .. } | Self::Open { source, .. } => source.sqlite_error_code(),
            _ => None,
        }
    }

    /// Whether the failure comes from the storage itself (I/O, full disk,
    /// corruption, a closed store) rather than from the request (an illegal
    /// transition, an unknown job, a bad cursor). Storage failures make the
    /// store report itself degraded.
    pub fn is_storage_failure(&self) -> bool {
        matches!(
            self,
            Self::Open { .. }
                | Self::CreateDir { .. }
                | Self::Corrupt { .. }
                | Self::Sqlite { .. }
                | Self::Closed
                | Self::Task { .. }
        )
    }
}

/// Shorthand for results of store operations.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_full_is_recognised() {
        let err = StoreError::sqlite(
            "append events",
            rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_FULL),
                Some("database or disk is full".into()),
            ),
        );
        assert!(err.is_full());
        assert!(err.is_storage_failure());
        assert_eq!(err.to_string(), "append events: database or disk is full");
        let logical = StoreError::JobNotFound { job: JobId::new() };
        assert!(!logical.is_full());
        assert!(!logical.is_storage_failure());
    }
}
