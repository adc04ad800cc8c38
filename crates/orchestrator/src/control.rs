//! The operator-facing types of the orchestrator: its run state, the
//! snapshot the dashboard shows, and the errors of control operations.

use orchex_core::{JobId, OrchestrationStats, ParallelExecution, RepoId, Timestamp};
use serde::Serialize;

/// Whether the orchestrator dispatches work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum RunState {
    /// Not started, or stopped.
    Stopped,
    /// Dispatching.
    Running,
    /// Not dispatching new jobs; running jobs finish.
    Paused,
    /// Every running job was cancelled; nothing dispatches until `resume`.
    EmergencyStopped,
}

impl RunState {
    /// The camelCase name used in the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            RunState::Stopped => "stopped",
            RunState::Running => "running",
            RunState::Paused => "paused",
            RunState::EmergencyStopped => "emergencyStopped",
        }
    }
}

/// A job that is running now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RunningJob {
    /// The job.
    pub id: JobId,
    /// Its repository.
    pub repo: RepoId,
    /// Its pipeline.
    pub pipeline: String,
    /// When it started.
    pub started_at: Timestamp,
    /// Steps (and validations) finished so far.
    pub steps_done: u32,
    /// Steps and validations in all.
    pub steps_total: u32,
}

/// One circuit breaker, as shown to operators.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct BreakerInfo {
    /// `repo/pipeline`.
    pub name: String,
    /// `closed`, `open`, `halfOpen`, `forcedOpen`, `disabled` or `metricsOnly`.
    pub state: String,
    /// Failures in the current window.
    pub failures: u64,
    /// Calls recorded in all.
    pub total: u64,
    /// Successful calls in the window.
    pub successes: u64,
    /// Calls refused while open.
    pub rejections: u64,
    /// Failure rate in the window, in percent, when computable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_rate: Option<f64>,
}

/// A repository's rate limiter, as shown to operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LimiterInfo {
    /// The repository.
    pub repo: RepoId,
    /// Tokens available now.
    pub available: u32,
    /// Tokens per hour (and the burst).
    pub per_hour: u32,
}

/// Everything the dashboard shows about the orchestrator, in one read.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrchestratorSnapshot {
    /// The run state.
    pub state: RunState,
    /// Running totals.
    pub stats: OrchestrationStats,
    /// The current concurrency limit.
    pub concurrency_limit: u32,
    /// The configured maximum.
    pub max_concurrent: u32,
    /// Jobs waiting.
    pub queue_depth: u64,
    /// Jobs running now.
    pub running: Vec<RunningJob>,
    /// Circuit breakers.
    pub breakers: Vec<BreakerInfo>,
    /// Rate limiters of the configured repositories.
    pub limiters: Vec<LimiterInfo>,
    /// The most recent cycles, newest last.
    pub recent_cycles: Vec<ParallelExecution>,
}

/// Why a control operation was refused or failed. Each variant maps onto an
/// HTTP status ([`ControlError::code`] gives the API error code).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ControlError {
    /// The repository, pipeline or job does not exist (404).
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts the current state (409), e.g. a rollback
    /// after the user changed what the job wrote.
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The orchestrator cannot take work now (503).
    #[error("{0}")]
    Unavailable(String),
    /// Storage or another internal failure (500).
    #[error("{0}")]
    Internal(String),
}

impl ControlError {
    /// The machine-readable code of the API error body.
    pub const fn code(&self) -> &'static str {
        match self {
            ControlError::NotFound(_) => "not_found",
            ControlError::Conflict(_) => "conflict",
            ControlError::BadRequest(_) => "bad_request",
            ControlError::Unavailable(_) => "unavailable",
            ControlError::Internal(_) => "internal",
        }
    }
}

/// A manual run request (`POST /api/jobs`, `orchexctl run`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ManualRun {
    /// The repository's name.
    pub repo: String,
    /// One pipeline, or every pipeline that reacts to manual triggers.
    pub pipeline: Option<String>,
    /// Ignore the rate limiter and the `unchanged` skip.
    pub force: bool,
    /// Compute and store the diff; deliver nothing.
    pub dry_run: bool,
}

/// What a batch cancel matches.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CancelFilter {
    /// `queued` or `running` (both when absent).
    pub state: Option<orchex_core::JobState>,
    /// Only this repository.
    pub repo: Option<String>,
    /// Only this pipeline.
    pub pipeline: Option<String>,
}
