//! The errors of the monitor's public API.

use std::path::PathBuf;
use std::sync::Arc;

use orchex_core::RepoId;

/// A boxed error from a lower layer (git, the file system, notify).
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What went wrong in the monitor.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MonitorError {
    /// The repository is already being monitored.
    #[error("repository {repo} is already monitored")]
    AlreadyMonitored {
        /// The repository.
        repo: RepoId,
    },
    /// The repository is not being monitored.
    #[error("repository {repo} is not monitored")]
    UnknownRepository {
        /// The repository.
        repo: RepoId,
    },
    /// The path is not a readable git repository with a working tree.
    #[error("repository {repo}: {path} is not a usable git repository")]
    NotARepository {
        /// The repository.
        repo: RepoId,
        /// The configured path.
        path: PathBuf,
        /// Why it could not be opened.
        #[source]
        source: BoxError,
    },
    /// Reading refs or history failed.
    #[error("repository {repo}: {context}")]
    Git {
        /// The repository.
        repo: RepoId,
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// Installing a watch failed for a reason other than the kernel limit.
    #[error("repository {repo}: cannot watch {path}")]
    Watch {
        /// The repository.
        repo: RepoId,
        /// The path whose watch failed.
        path: PathBuf,
        /// notify's error.
        #[source]
        source: notify::Error,
    },
    /// The analysis of a repository failed.
    #[error("repository {repo}: analysis failed")]
    Analysis {
        /// The repository.
        repo: RepoId,
        /// Why (shared: one failed computation answers every waiting caller).
        #[source]
        source: Arc<AnalysisError>,
    },
    /// The monitor's background task is gone (it was shut down).
    #[error("the monitor has shut down")]
    ShutDown,
}

/// Why an analysis failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnalysisError {
    /// Reading the history failed.
    #[error("reading the history of {path} failed")]
    History {
        /// The working tree.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// Reading the head failed.
    #[error("reading HEAD of {path} failed")]
    Head {
        /// The working tree.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// Walking the working tree failed.
    #[error("walking {path} failed")]
    Walk {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: BoxError,
    },
    /// The blocking task running the analysis panicked or was cancelled.
    #[error("the analysis task ended abnormally: {0}")]
    Task(String),
}
