//! Jobs: one run of one pipeline on one repository, and its state machine.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Delivery, RepoId, Timestamp, Trigger};

/// A job's unique id: a UUID v7, so ids sort by creation time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct JobId(Uuid);

impl JobId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        Self(Uuid::now_v7())
    }

    /// The underlying UUID.
    pub const fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl From<Uuid> for JobId {
    fn from(value: Uuid) -> Self {
        Self(value)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.hyphenated(), f)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Where a job is in its life.
///
/// The legal transitions are:
///
/// ```text
/// queued      → running | cancelled | skipped
/// running     → succeeded | failed | cancelled | timedOut | interrupted | skipped
/// interrupted → queued (re-queued once after a crash) | failed
/// succeeded   → rolledBack
/// ```
///
/// Every other state is final. [`JobState::transition`] refuses anything else.
///
/// `running → skipped` exists because the safety checks (rate limit, circuit
/// breaker, `unchanged` inputs) run on a claimed job, before any step runs:
/// claiming first is what lets several daemons share one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum JobState {
    /// Waiting in the queue.
    Queued,
    /// Steps are executing.
    Running,
    /// Finished and validated; the result (if any) was delivered.
    Succeeded,
    /// A step or the validation failed, or delivery was refused.
    Failed,
    /// Cancelled by an operator or an emergency stop.
    Cancelled,
    /// A step or the job exceeded its timeout.
    TimedOut,
    /// Not run: see the job's skip reason.
    Skipped,
    /// The daemon stopped while the job ran (crash or kill).
    Interrupted,
    /// A delivered result was undone.
    RolledBack,
}

/// A state change that the job state machine does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("illegal job state transition {from} -> {to}")]
pub struct IllegalTransition {
    /// The state the job was in.
    pub from: JobState,
    /// The state that was asked for.
    pub to: JobState,
}

impl JobState {
    /// Every state, in declaration order.
    pub const ALL: [JobState; 9] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
        JobState::TimedOut,
        JobState::Skipped,
        JobState::Interrupted,
        JobState::RolledBack,
    ];

    /// Whether the machine allows moving from `self` to `to`.
    pub const fn can_transition_to(self, to: JobState) -> bool {
        use JobState::{
            Cancelled, Failed, Interrupted, Queued, RolledBack, Running, Skipped, Succeeded,
            TimedOut,
        };
        matches!(
            (self, to),
            (Queued, Running | Cancelled | Skipped)
                | (
                    Running,
                    Succeeded | Failed | Cancelled | TimedOut | Interrupted | Skipped
                )
                | (Interrupted, Queued | Failed)
                | (Succeeded, RolledBack)
        )
    }

    /// Returns `to` when the transition is legal.
    pub const fn transition(self, to: JobState) -> Result<JobState, IllegalTransition> {
        if self.can_transition_to(to) {
            Ok(to)
        } else {
            Err(IllegalTransition { from: self, to })
        }
    }

    /// Whether the job has finished running (it may still be rolled back).
    pub const fn is_finished(self) -> bool {
        !matches!(
            self,
            JobState::Queued | JobState::Running | JobState::Interrupted
        )
    }

    /// Whether the job is waiting or running, i.e. can be cancelled.
    pub const fn is_active(self) -> bool {
        matches!(self, JobState::Queued | JobState::Running)
    }

    /// The camelCase name used in the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
            JobState::TimedOut => "timedOut",
            JobState::Skipped => "skipped",
            JobState::Interrupted => "interrupted",
            JobState::RolledBack => "rolledBack",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The string did not name a [`JobState`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job state {0:?}")]
pub struct UnknownJobState(pub String);

impl FromStr for JobState {
    type Err = UnknownJobState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| UnknownJobState(s.to_owned()))
    }
}

/// Why a job was not run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "code", rename_all = "camelCase")]
#[non_exhaustive]
pub enum SkipReason {
    /// The pipeline's inputs equal those of its last successful job.
    Unchanged,
    /// The repository's rate limit had no token left.
    #[serde(rename_all = "camelCase")]
    RateLimited {
        /// When a token is available again.
        retry_at: Timestamp,
    },
    /// The circuit breaker of this repository × pipeline was open.
    #[serde(rename_all = "camelCase")]
    CircuitOpen {
        /// When the breaker will admit a trial call, if known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        retry_at: Option<Timestamp>,
    },
    /// The queue was at `queueCapacity`.
    QueueFull,
    /// A human changed the delivery branch; orchex leaves it alone.
    #[serde(rename_all = "camelCase")]
    ManuallyEdited {
        /// The branch that was edited.
        branch: String,
    },
    /// An identical job was already queued.
    #[serde(rename_all = "camelCase")]
    Coalesced {
        /// The job that will do the work.
        into: JobId,
    },
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SkipReason::Unchanged => f.write_str("unchanged: inputs equal the last successful run"),
            SkipReason::RateLimited { retry_at } => {
                write!(f, "rate limited: next token at {retry_at}")
            }
            SkipReason::CircuitOpen { retry_at: Some(at) } => {
                write!(f, "circuit open: next trial at {at}")
            }
            SkipReason::CircuitOpen { retry_at: None } => f.write_str("circuit open"),
            SkipReason::QueueFull => f.write_str("queue full"),
            SkipReason::ManuallyEdited { branch } => {
                write!(f, "branch {branch} was edited by hand; reset it to resume")
            }
            SkipReason::Coalesced { into } => write!(f, "coalesced into job {into}"),
        }
    }
}

/// The outcome of one step.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct StepResult {
    /// The step's name.
    pub name: String,
    /// Exit code, when the process exited normally.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Wall time of the step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// The last bytes of combined stdout/stderr (bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_tail: Option<String>,
    /// Whether the step was killed for exceeding its timeout.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub timed_out: bool,
    /// Whether this is a validation step.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub validation: bool,
}

/// What a job's result changed, compared with the source.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DiffSummary {
    /// Paths created.
    pub added: Vec<String>,
    /// Paths whose content or mode changed.
    pub modified: Vec<String>,
    /// Paths removed.
    pub deleted: Vec<String>,
    /// Lines added over all text files.
    pub lines_added: u64,
    /// Lines removed over all text files.
    pub lines_removed: u64,
}

impl DiffSummary {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.modified.is_empty() && self.deleted.is_empty()
    }

    /// Every touched path: added, modified and deleted.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.added
            .iter()
            .chain(&self.modified)
            .chain(&self.deleted)
            .map(String::as_str)
    }
}

/// Where a job's result went, and what it replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRecord {
    /// The delivery kind.
    pub kind: Delivery,
    /// The branch written (branch delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// The commit written (branch delivery).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The branch's value before the delivery; `None` when it was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<String>,
    /// Files written.
    #[serde(default)]
    pub files: Vec<String>,
    /// Files not written because the user changed them meanwhile.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<String>,
    /// Worktree delivery: the content hash of each file as written (`None`
    /// for a deletion). Rollback restores a file only while it still has
    /// this content, and crash recovery undoes exactly what was applied.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub written: std::collections::BTreeMap<String, Option<String>>,
}

/// Whether a delivered job can be, or was, undone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum RollbackState {
    /// The job delivered something and it is still in place.
    Available,
    /// The delivery was undone.
    RolledBack,
    /// What the job wrote has changed since; rollback is refused.
    Superseded,
    /// A rollback started and has not finished: its intent is durable
    /// before anything is restored, so a stop in the middle leaves this
    /// state, and the next start (or the operator's retry) finishes it.
    InProgress,
}

impl RollbackState {
    /// The wire name, as in the API's `rollback` field.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::RolledBack => "rolledBack",
            Self::Superseded => "superseded",
            Self::InProgress => "inProgress",
        }
    }
}

/// The analysis scores of one touched file, before and after a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct FileImpact {
    /// Repository-relative path.
    pub path: String,
    /// Complexity score in [0, 1] before the job.
    pub complexity_before: f64,
    /// Complexity score in [0, 1] after the job.
    pub complexity_after: f64,
    /// Lines of code before the job.
    pub loc_before: u64,
    /// Lines of code after the job.
    pub loc_after: u64,
}

/// One run of one pipeline on one repository.
///
/// The state is private: it changes only through [`Job::transition_to`],
/// which enforces the state machine and keeps the timestamps consistent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Job {
    /// Unique, time-ordered id.
    pub id: JobId,
    /// The repository.
    pub repo: RepoId,
    /// The pipeline's name.
    pub pipeline: String,
    state: JobState,
    /// What caused the job.
    pub trigger: Trigger,
    /// Dispatch priority (from the trigger kind).
    pub priority: u8,
    /// When the job was queued.
    pub created_at: Timestamp,
    /// When it last started running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Timestamp>,
    /// When it reached a finished state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// Whether the result differed from the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changed: Option<bool>,
    /// Why the job was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_reason: Option<SkipReason>,
    /// Why the job failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Step outcomes, in order.
    #[serde(default)]
    pub steps: Vec<StepResult>,
    /// What the result changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<DiffSummary>,
    /// Where the result went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryRecord>,
    /// Whether the delivery can be undone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<RollbackState>,
    /// Analysis scores of touched files, before and after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub impact: Option<Vec<FileImpact>>,
    /// How many times the daemon stopped while this job ran.
    #[serde(default)]
    pub interruptions: u32,
    /// Hash of the pipeline definition and of the input files its `paths`
    /// select; equal hashes let a later job skip as `unchanged`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_hash: Option<String>,
}

impl Job {
    /// A queued job for `pipeline` on `repo`, created now.
    pub fn new(repo: RepoId, pipeline: String, trigger: Trigger) -> Self {
        Self {
            id: JobId::new(),
            repo,
            pipeline,
            state: JobState::Queued,
            priority: trigger.kind.priority(),
            trigger,
            created_at: Timestamp::now(),
            started_at: None,
            finished_at: None,
            changed: None,
            skip_reason: None,
            error: None,
            steps: Vec::new(),
            diff: None,
            delivery: None,
            rollback: None,
            impact: None,
            interruptions: 0,
            input_hash: None,
        }
    }

    /// The current state.
    pub const fn state(&self) -> JobState {
        self.state
    }

    /// Moves the job to `to`, now. See [`Job::transition_at`].
    pub fn transition_to(&mut self, to: JobState) -> Result<(), IllegalTransition> {
        self.transition_at(to, Timestamp::now())
    }

    /// Moves the job to `to` at `at`, refusing illegal transitions.
    ///
    /// Entering `running` sets `started_at`; entering a finished state sets
    /// `finished_at`; entering `interrupted` counts an interruption;
    /// re-queueing clears the run's timestamps and step results.
    pub fn transition_at(&mut self, to: JobState, at: Timestamp) -> Result<(), IllegalTransition> {
        self.state = self.state.transition(to)?;
        match to {
            JobState::Running => self.started_at = Some(at),
            JobState::Interrupted => self.interruptions = self.interruptions.saturating_add(1),
            JobState::Queued => {
                self.started_at = None;
                self.steps.clear();
            }
            JobState::RolledBack => self.rollback = Some(RollbackState::RolledBack),
            _ => {}
        }
        if to.is_finished() && to != JobState::RolledBack {
            self.finished_at = Some(at);
        }
        Ok(())
    }

    /// Rebuilds a job from storage with the state it was saved in.
    ///
    /// Only stores should call this: it bypasses the state machine because
    /// the state was reached legally before it was saved.
    #[must_use]
    pub fn restore(mut self, state: JobState) -> Self {
        self.state = state;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn job() -> Job {
        let repo = RepoId::new("api").unwrap();
        Job::new(repo.clone(), "codegen".into(), Trigger::manual(repo))
    }

    #[test]
    fn happy_path_sets_timestamps() {
        let mut job = job();
        job.transition_to(JobState::Running).unwrap();
        assert!(job.started_at.is_some());
        assert!(job.finished_at.is_none());
        job.transition_to(JobState::Succeeded).unwrap();
        assert!(job.finished_at.is_some());
        job.transition_to(JobState::RolledBack).unwrap();
        assert_eq!(job.rollback, Some(RollbackState::RolledBack));
    }

    #[test]
    fn rollback_state_names_are_the_serde_names() {
        for state in [
            RollbackState::Available,
            RollbackState::RolledBack,
            RollbackState::Superseded,
            RollbackState::InProgress,
        ] {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
    }

    #[test]
    fn illegal_transitions_are_errors_and_change_nothing() {
        let mut job = job();
        let err = job.transition_to(JobState::Succeeded).unwrap_err();
        assert_eq!(
            err,
            IllegalTransition {
                from: JobState::Queued,
                to: JobState::Succeeded
            }
        );
        assert_eq!(job.state(), JobState::Queued);
        assert_eq!(
            err.to_string(),
            "illegal job state transition queued -> succeeded"
        );
    }

    #[test]
    fn interruption_requeues_once_then_fails() {
        let mut job = job();
        job.transition_to(JobState::Running).unwrap();
        job.transition_to(JobState::Interrupted).unwrap();
        job.transition_to(JobState::Queued).unwrap();
        assert_eq!(job.interruptions, 1);
        job.transition_to(JobState::Running).unwrap();
        job.transition_to(JobState::Interrupted).unwrap();
        job.transition_to(JobState::Failed).unwrap();
        assert_eq!(job.interruptions, 2);
    }

    #[test]
    fn states_round_trip_through_strings() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::Value::String(state.as_str().into())
            );
        }
    }

    #[test]
    fn job_serialises_camel_case() {
        let value = serde_json::to_value(job()).unwrap();
        assert_eq!(value["state"], "queued");
        assert!(value.get("createdAt").is_some());
        assert_eq!(value["trigger"]["kind"], "manual");
        let back: Job = serde_json::from_value(value).unwrap();
        assert_eq!(back.state(), JobState::Queued);
    }

    #[test]
    fn skip_reason_serialises_with_a_code() {
        let value = serde_json::to_value(SkipReason::QueueFull).unwrap();
        assert_eq!(value, serde_json::json!({"code": "queueFull"}));
    }

    fn any_state() -> impl Strategy<Value = JobState> {
        proptest::sample::select(JobState::ALL.to_vec())
    }

    proptest! {
        /// Over any sequence of requested transitions, the job only ever
        /// moves along legal edges, and refused requests leave it unchanged.
        #[test]
        fn only_legal_transitions_are_taken(requests in proptest::collection::vec(any_state(), 0..64)) {
            let mut job = job();
            for to in requests {
                let before = job.state();
                match job.transition_to(to) {
                    Ok(()) => {
                        prop_assert!(before.can_transition_to(to));
                        prop_assert_eq!(job.state(), to);
                    }
                    Err(err) => {
                        prop_assert!(!before.can_transition_to(to));
                        prop_assert_eq!(job.state(), before);
                        prop_assert_eq!(err, IllegalTransition { from: before, to });
                    }
                }
                if job.state().is_finished() && job.state() != JobState::RolledBack {
                    prop_assert!(job.finished_at.is_some());
                }
            }
        }

        /// Final states have no way out except the single rollback edge.
        #[test]
        fn final_states_are_final(from in any_state(), to in any_state()) {
            let finals = [JobState::Failed, JobState::Cancelled, JobState::TimedOut,
                          JobState::Skipped, JobState::RolledBack];
            if finals.contains(&from) {
                prop_assert!(!from.can_transition_to(to));
            }
        }
    }
}
