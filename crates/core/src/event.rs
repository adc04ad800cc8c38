//! Events: the record of everything orchex does (PRODUCT.md §9).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{JobId, RepoId, Timestamp};

/// An event's unique id: a UUID v7, so ids sort by time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct EventId(Uuid);

impl EventId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The underlying UUID.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for EventId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for EventId {
    fn from(value: Uuid) -> Self {
        Self(value)
    }
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

/// How much attention an event deserves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Normal operation.
    Info,
    /// Something an operator may want to look at.
    Warn,
    /// Something failed.
    Error,
    /// orchex stopped doing its job (emergency stop, store unusable...).
    Critical,
}

impl Severity {
    /// Every severity, lowest first.
    pub const ALL: [Severity; 4] = [
        Severity::Info,
        Severity::Warn,
        Severity::Error,
        Severity::Critical,
    ];

    /// The lowercase name used in the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warn => "warn",
            Severity::Error => "error",
            Severity::Critical => "critical",
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Severity {
    type Err = UnknownEventKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Severity::ALL
            .into_iter()
            .find(|severity| severity.as_str() == s)
            .ok_or_else(|| UnknownEventKind(s.to_owned()))
    }
}

/// The string did not name a known event kind or severity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {0:?}")]
pub struct UnknownEventKind(pub String);

macro_rules! event_kinds {
    ($($variant:ident => $name:literal, $severity:ident, $doc:literal;)*) => {
        /// What an event is about (snake_case on the wire).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
        #[serde(rename_all = "snake_case")]
        #[non_exhaustive]
        pub enum EventKind {
            $(#[doc = $doc] $variant,)*
        }

        impl EventKind {
            /// Every kind, in the order of PRODUCT.md §9.
            pub const ALL: &'static [EventKind] = &[$(EventKind::$variant,)*];

            /// The snake_case name used on the wire, in metrics and in filters.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(EventKind::$variant => $name,)*
                }
            }

            /// The severity such an event has unless its publisher says otherwise.
            pub const fn default_severity(self) -> Severity {
                match self {
                    $(EventKind::$variant => Severity::$severity,)*
                }
            }
        }
    };
}

event_kinds! {
    OrchestratorStarted => "orchestrator_started", Info, "The orchestrator started.";
    OrchestratorStopped => "orchestrator_stopped", Info, "The orchestrator stopped.";
    CycleCompleted => "cycle_completed", Info, "A cycle finished; data holds its `ParallelExecution`.";
    JobQueued => "job_queued", Info, "A job entered the queue.";
    JobStarted => "job_started", Info, "A job started running.";
    JobProgress => "job_progress", Info, "A job finished a step.";
    JobSucceeded => "job_succeeded", Info, "A job succeeded.";
    JobFailed => "job_failed", Error, "A job failed.";
    JobCancelled => "job_cancelled", Warn, "A job was cancelled.";
    JobTimedOut => "job_timed_out", Error, "A job exceeded its timeout.";
    JobSkipped => "job_skipped", Info, "A job was skipped; data holds the reason.";
    JobInterrupted => "job_interrupted", Warn, "A job was interrupted by a daemon stop.";
    JobRolledBack => "job_rolled_back", Warn, "A job's delivery was undone.";
    ChangeDetected => "change_detected", Info, "Settled file changes were detected.";
    CommitDetected => "commit_detected", Info, "A new commit was detected.";
    PushDetected => "push_detected", Info, "A push was detected.";
    AnalysisCompleted => "analysis_completed", Info, "A repository analysis finished.";
    HealthCheck => "health_check", Info, "The health loop ran.";
    PerformanceWarning => "performance_warning", Warn, "A performance target was missed.";
    PerformanceAlert => "performance_alert", Error, "No cycle completed while work was queued.";
    ConcurrencyChanged => "concurrency_changed", Info, "The adaptive concurrency limit changed.";
    CircuitStateChanged => "circuit_state_changed", Warn, "A circuit breaker changed state.";
    RateLimited => "rate_limited", Warn, "A job was refused by the rate limiter.";
    ConfigReloaded => "config_reloaded", Info, "A new configuration was applied.";
    ConfigRejected => "config_rejected", Error, "A configuration change was invalid and ignored.";
    Paused => "paused", Warn, "Dispatching was paused.";
    Resumed => "resumed", Info, "Dispatching resumed.";
    EmergencyStop => "emergency_stop", Critical, "An emergency stop cancelled every job.";
    WatcherError => "watcher_error", Error, "The file-system watcher reported an error.";
    Error => "error", Error, "Any other error.";
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = UnknownEventKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL
            .iter()
            .copied()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownEventKind(s.to_owned()))
    }
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// Unique, time-ordered id.
    pub id: EventId,
    /// When it happened.
    pub ts: Timestamp,
    /// What it is about.
    pub kind: EventKind,
    /// How much attention it deserves.
    pub severity: Severity,
    /// The repository concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<RepoId>,
    /// The pipeline concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// The job concerned, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<JobId>,
    /// A human-readable sentence.
    pub message: String,
    /// Structured details; `null` when there are none.
    #[serde(default)]
    pub data: serde_json::Value,
}

impl Event {
    /// An event of `kind`, now, with the kind's default severity.
    ///
    /// ```
    /// use orchex_core::{Event, EventKind, Severity};
    /// let event = Event::new(EventKind::JobFailed, "step generate exited with 1");
    /// assert_eq!(event.severity, Severity::Error);
    /// ```
    pub fn new(kind: EventKind, message: impl Into<String>) -> Self {
        Self {
            id: EventId::new(),
            ts: Timestamp::now(),
            kind,
            severity: kind.default_severity(),
            repo: None,
            pipeline: None,
            job_id: None,
            message: message.into(),
            data: serde_json::Value::Null,
        }
    }

    /// Sets the repository.
    #[must_use]
    pub fn with_repo(mut self, repo: RepoId) -> Self {
        self.repo = Some(repo);
        self
    }

    /// Sets the pipeline.
    #[must_use]
    pub fn with_pipeline(mut self, pipeline: impl Into<String>) -> Self {
        self.pipeline = Some(pipeline.into());
        self
    }

    /// Sets the job.
    #[must_use]
    pub fn with_job(mut self, job_id: JobId) -> Self {
        self.job_id = Some(job_id);
        self
    }

    /// Overrides the severity.
    #[must_use]
    pub fn with_severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// Sets the structured details.
    #[must_use]
    pub fn with_data(mut self, data: serde_json::Value) -> Self {
        self.data = data;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_the_spec_exists_and_round_trips() {
        assert_eq!(EventKind::ALL.len(), 30);
        for &kind in EventKind::ALL {
            assert_eq!(kind.as_str().parse::<EventKind>(), Ok(kind));
            assert_eq!(
                serde_json::to_value(kind).unwrap(),
                serde_json::Value::String(kind.as_str().into())
            );
        }
    }

    #[test]
    fn event_serialises_camel_case_and_omits_empty_fields() {
        let job = JobId::new();
        let event = Event::new(EventKind::JobStarted, "started")
            .with_repo(RepoId::new("api").unwrap())
            .with_job(job);
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(value["kind"], "job_started");
        assert_eq!(value["severity"], "info");
        assert_eq!(value["jobId"], job.to_string());
        assert!(value.get("pipeline").is_none());
        let back: Event = serde_json::from_value(value).unwrap();
        assert_eq!(back, event);
    }
}
