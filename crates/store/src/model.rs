//! The values that go in and out of the store traits: filters, pages and
//! cursors, job patches, backups, recovery reports and export formats.

use std::fmt;

use orchex_core::{
    DeliveryRecord, DiffSummary, Event, EventKind, FileImpact, Job, JobId, JobState, RepoId,
    RollbackState, Severity, SkipReason, Timestamp,
};

use crate::error::{Result, StoreError};

/// The default number of items in a page.
pub const DEFAULT_PAGE_LIMIT: u32 = 100;
/// The largest number of items a page may hold; larger limits are clamped.
pub const MAX_PAGE_LIMIT: u32 = 10_000;

/// Which page of a list to return.
///
/// Lists are ordered newest first and paginated by keyset: the cursor marks
/// the last item of the previous page, so pages stay stable while new items
/// arrive.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct PageRequest {
    /// At most this many items; `None` means [`DEFAULT_PAGE_LIMIT`]; values
    /// above [`MAX_PAGE_LIMIT`] are clamped to it, 0 is treated as 1.
    pub limit: Option<u32>,
    /// The `next_cursor` of the previous page, if any.
    pub cursor: Option<String>,
}

impl PageRequest {
    /// The first page, with the default limit.
    pub fn first() -> Self {
        Self::default()
    }

    /// Sets the limit.
    #[must_use]
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Continues after `cursor`.
    #[must_use]
    pub fn after(mut self, cursor: impl Into<String>) -> Self {
        self.cursor = Some(cursor.into());
        self
    }

    /// The limit after defaulting and clamping.
    pub fn effective_limit(&self) -> u32 {
        self.limit
            .unwrap_or(DEFAULT_PAGE_LIMIT)
            .clamp(1, MAX_PAGE_LIMIT)
    }
}

/// One page of a list.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// Pass this to get the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// A position in a newest-first list: the (time, insertion sequence) of the
/// last item returned. Serialised as an opaque, URL-safe string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) time: i64,
    pub(crate) seq: i64,
}

impl Cursor {
    pub(crate) fn encode(self, tag: char) -> String {
        format!("{tag}{}_{}", self.time, self.seq)
    }

    pub(crate) fn decode(tag: char, text: &str) -> Result<Self> {
        let invalid = || StoreError::InvalidCursor {
            cursor: text.to_owned(),
        };
        let rest = text.strip_prefix(tag).ok_or_else(invalid)?;
        let (time, seq) = rest.split_once('_').ok_or_else(invalid)?;
        Ok(Self {
            time: time.parse().map_err(|_| invalid())?,
            seq: seq.parse().map_err(|_| invalid())?,
        })
    }
}

/// Which jobs to list. Empty fields match everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct JobFilter {
    /// Any of these states (empty: any state).
    pub states: Vec<JobState>,
    /// Only this repository.
    pub repo: Option<RepoId>,
    /// Only this pipeline.
    pub pipeline: Option<String>,
    /// Only jobs in this rollback state.
    pub rollback: Option<RollbackState>,
}

impl JobFilter {
    /// Matches every job.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a state to match.
    #[must_use]
    pub fn state(mut self, state: JobState) -> Self {
        self.states.push(state);
        self
    }

    /// Restricts to one repository.
    #[must_use]
    pub fn repo(mut self, repo: RepoId) -> Self {
        self.repo = Some(repo);
        self
    }

    /// Restricts to one pipeline.
    #[must_use]
    pub fn pipeline(mut self, pipeline: impl Into<String>) -> Self {
        self.pipeline = Some(pipeline.into());
        self
    }

    /// Restricts to one rollback state (for instance the rollbacks a stop
    /// cut short, [`RollbackState::InProgress`]).
    #[must_use]
    pub fn rollback(mut self, rollback: RollbackState) -> Self {
        self.rollback = Some(rollback);
        self
    }

    /// Whether `job` matches (the same rule the store applies in SQL).
    pub fn matches(&self, job: &Job) -> bool {
        (self.states.is_empty() || self.states.contains(&job.state()))
            && self.repo.as_ref().is_none_or(|repo| *repo == job.repo)
            && self
                .pipeline
                .as_ref()
                .is_none_or(|pipeline| *pipeline == job.pipeline)
            && self
                .rollback
                .is_none_or(|rollback| job.rollback == Some(rollback))
    }
}

/// Which events to return. Empty fields match everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct EventFilter {
    /// Any of these kinds (empty: any kind).
    pub kinds: Vec<EventKind>,
    /// Only events about this repository.
    pub repo: Option<RepoId>,
    /// Only events about this pipeline.
    pub pipeline: Option<String>,
    /// Only events about this job.
    pub job_id: Option<JobId>,
    /// Only events of exactly this severity.
    pub severity: Option<Severity>,
    /// Only events of at least this severity.
    pub min_severity: Option<Severity>,
    /// Only events at or after this instant.
    pub since: Option<Timestamp>,
    /// Only events strictly before this instant.
    pub until: Option<Timestamp>,
}

impl EventFilter {
    /// Matches every event.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a kind to match.
    #[must_use]
    pub fn kind(mut self, kind: EventKind) -> Self {
        self.kinds.push(kind);
        self
    }

    /// Restricts to one repository.
    #[must_use]
    pub fn repo(mut self, repo: RepoId) -> Self {
        self.repo = Some(repo);
        self
    }

    /// Restricts to one pipeline.
    #[must_use]
    pub fn pipeline(mut self, pipeline: impl Into<String>) -> Self {
        self.pipeline = Some(pipeline.into());
        self
    }

    /// Restricts to one job.
    #[must_use]
    pub fn job(mut self, job_id: JobId) -> Self {
        self.job_id = Some(job_id);
        self
    }

    /// Restricts to exactly one severity.
    #[must_use]
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = Some(severity);
        self
    }

    /// Restricts to a minimum severity.
    #[must_use]
    pub fn min_severity(mut self, severity: Severity) -> Self {
        self.min_severity = Some(severity);
        self
    }

    /// Only events at or after `since`.
    #[must_use]
    pub fn since(mut self, since: Timestamp) -> Self {
        self.since = Some(since);
        self
    }

    /// Only events strictly before `until`.
    #[must_use]
    pub fn until(mut self, until: Timestamp) -> Self {
        self.until = Some(until);
        self
    }

    /// Whether `event` matches (the same rule the store applies in SQL).
    pub fn matches(&self, event: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&event.kind))
            && self
                .repo
                .as_ref()
                .is_none_or(|repo| event.repo.as_ref() == Some(repo))
            && self
                .pipeline
                .as_ref()
                .is_none_or(|pipeline| event.pipeline.as_ref() == Some(pipeline))
            && self.job_id.is_none_or(|job| event.job_id == Some(job))
            && self
                .severity
                .is_none_or(|severity| event.severity == severity)
            && self.min_severity.is_none_or(|min| event.severity >= min)
            && self.since.is_none_or(|since| event.ts >= since)
            && self.until.is_none_or(|until| event.ts < until)
    }
}

/// Changes to a job's recorded results, applied together with (or without) a
/// state transition. Fields left `None` are not touched.
#[derive(Debug, Clone, PartialEq, Default)]
#[non_exhaustive]
pub struct JobPatch {
    /// Whether the result differed from the source.
    pub changed: Option<bool>,
    /// Why the job was skipped.
    pub skip_reason: Option<SkipReason>,
    /// Why the job failed.
    pub error: Option<String>,
    /// What the result changed.
    pub diff: Option<DiffSummary>,
    /// Where the result went.
    pub delivery: Option<DeliveryRecord>,
    /// Whether the delivery can be undone.
    pub rollback: Option<RollbackState>,
    /// Scores of touched files before and after.
    pub impact: Option<Vec<FileImpact>>,
    /// The hash of the job's inputs (for the `unchanged` skip).
    pub input_hash: Option<String>,
    /// Changed paths of a trigger coalesced into this queued job, added to
    /// its trigger's paths (distinct, in order).
    pub merge_trigger_paths: Vec<String>,
}

impl JobPatch {
    /// A patch that changes nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `changed`.
    #[must_use]
    pub fn changed(mut self, changed: bool) -> Self {
        self.changed = Some(changed);
        self
    }

    /// Sets the skip reason.
    #[must_use]
    pub fn skip_reason(mut self, reason: SkipReason) -> Self {
        self.skip_reason = Some(reason);
        self
    }

    /// Sets the error message.
    #[must_use]
    pub fn error(mut self, error: impl Into<String>) -> Self {
        self.error = Some(error.into());
        self
    }

    /// Sets the diff summary.
    #[must_use]
    pub fn diff(mut self, diff: DiffSummary) -> Self {
        self.diff = Some(diff);
        self
    }

    /// Sets the delivery record.
    #[must_use]
    pub fn delivery(mut self, delivery: DeliveryRecord) -> Self {
        self.delivery = Some(delivery);
        self
    }

    /// Sets the rollback state.
    #[must_use]
    pub fn rollback(mut self, rollback: RollbackState) -> Self {
        self.rollback = Some(rollback);
        self
    }

    /// Sets the impact.
    #[must_use]
    pub fn impact(mut self, impact: Vec<FileImpact>) -> Self {
        self.impact = Some(impact);
        self
    }

    /// Sets the input hash.
    #[must_use]
    pub fn input_hash(mut self, hash: impl Into<String>) -> Self {
        self.input_hash = Some(hash.into());
        self
    }

    /// Adds the changed paths of a coalesced trigger to the job's trigger.
    #[must_use]
    pub fn merge_trigger_paths(mut self, paths: impl IntoIterator<Item = String>) -> Self {
        self.merge_trigger_paths.extend(paths);
        self
    }

    /// Writes the set fields into `job`.
    pub fn apply(self, job: &mut Job) {
        if let Some(hash) = self.input_hash {
            job.input_hash = Some(hash);
        }
        if let Some(changed) = self.changed {
            job.changed = Some(changed);
        }
        if let Some(reason) = self.skip_reason {
            job.skip_reason = Some(reason);
        }
        if let Some(error) = self.error {
            job.error = Some(error);
        }
        if let Some(diff) = self.diff {
            job.diff = Some(diff);
        }
        if let Some(delivery) = self.delivery {
            job.delivery = Some(delivery);
        }
        if let Some(rollback) = self.rollback {
            job.rollback = Some(rollback);
        }
        if let Some(impact) = self.impact {
            job.impact = Some(impact);
        }
        for path in self.merge_trigger_paths {
            if !job.trigger.paths.contains(&path) {
                job.trigger.paths.push(path);
            }
        }
    }
}

/// The process group of a running step, recorded so that the daemon can kill
/// survivors after a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct StepPgid {
    /// The job the step belongs to.
    pub job: JobId,
    /// The process group id.
    pub pgid: i32,
}

/// What [`JobStore::recover`](crate::JobStore::recover) did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RecoveryReport {
    /// Jobs found running (or interrupted) and re-queued: their first
    /// interruption.
    pub requeued: Vec<JobId>,
    /// Jobs interrupted a second time, now `failed`.
    pub failed: Vec<JobId>,
    /// Every recorded step process group. Kill each group (it may have
    /// survived the crash), then forget it with
    /// [`JobStore::clear_step_pgid`](crate::JobStore::clear_step_pgid).
    pub pgids: Vec<StepPgid>,
}

/// The error recorded on a job that was interrupted twice.
pub const INTERRUPTED_TWICE: &str =
    "interrupted twice: the daemon stopped while the job ran, and it was already re-queued once";

/// What a delivery replaced, kept so that the job can be rolled back.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backup {
    /// A file of the user's working tree that a `worktree` delivery overwrote
    /// or created.
    File {
        /// Repository-relative path.
        path: String,
        /// The previous contents; `None` when the delivery created the file.
        previous: Option<Vec<u8>>,
        /// The previous Unix mode bits, when known.
        mode: Option<u32>,
    },
    /// A branch that a `branch` delivery moved or created.
    Branch {
        /// The branch name.
        name: String,
        /// The previous commit id (hex); `None` when the delivery created the
        /// branch.
        previous: Option<String>,
    },
}

impl Backup {
    /// The kind as stored (`file` or `branch`).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Backup::File { .. } => "file",
            Backup::Branch { .. } => "branch",
        }
    }

    /// The path or branch name.
    pub fn name(&self) -> &str {
        match self {
            Backup::File { path, .. } => path,
            Backup::Branch { name, .. } => name,
        }
    }
}

/// The serialisation of an event export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum ExportFormat {
    /// One JSON object per line (`application/x-ndjson`).
    #[default]
    NdJson,
    /// One JSON array.
    JsonArray,
    /// RFC 4180 CSV with a header row: `id,ts,kind,severity,repo,pipeline,
    /// jobId,message,data` (`data` holds the JSON text).
    Csv,
}

impl ExportFormat {
    /// The HTTP content type of this format.
    pub const fn content_type(self) -> &'static str {
        match self {
            ExportFormat::NdJson => "application/x-ndjson",
            ExportFormat::JsonArray => "application/json",
            ExportFormat::Csv => "text/csv; charset=utf-8",
        }
    }
}

impl fmt::Display for ExportFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ExportFormat::NdJson => "ndjson",
            ExportFormat::JsonArray => "json",
            ExportFormat::Csv => "csv",
        })
    }
}

/// The CSV header of an event export.
pub const CSV_HEADER: [&str; 9] = [
    "id", "ts", "kind", "severity", "repo", "pipeline", "jobId", "message", "data",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        let cursor = Cursor { time: -5, seq: 42 };
        let text = cursor.encode('e');
        assert_eq!(Cursor::decode('e', &text).unwrap(), cursor);
        for bad in ["", "e", "e1", "j1_2", "e1_x", "ex_1", "e1_2_3"] {
            assert!(
                matches!(
                    Cursor::decode('e', bad),
                    Err(StoreError::InvalidCursor { .. })
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn page_limits_are_defaulted_and_clamped() {
        assert_eq!(PageRequest::first().effective_limit(), 100);
        assert_eq!(PageRequest::first().limit(0).effective_limit(), 1);
        assert_eq!(PageRequest::first().limit(50_000).effective_limit(), 10_000);
    }

    #[test]
    fn event_filter_matches_like_the_sql() {
        let repo = RepoId::new("api").unwrap();
        let event = Event::new(EventKind::JobFailed, "boom").with_repo(repo.clone());
        assert!(EventFilter::new().matches(&event));
        assert!(
            EventFilter::new()
                .kind(EventKind::JobFailed)
                .matches(&event)
        );
        assert!(
            !EventFilter::new()
                .kind(EventKind::JobQueued)
                .matches(&event)
        );
        assert!(EventFilter::new().repo(repo).matches(&event));
        assert!(!EventFilter::new().pipeline("x").matches(&event));
        assert!(
            EventFilter::new()
                .min_severity(Severity::Warn)
                .matches(&event)
        );
        assert!(!EventFilter::new().severity(Severity::Info).matches(&event));
        assert!(!EventFilter::new().until(event.ts).matches(&event));
        assert!(EventFilter::new().since(event.ts).matches(&event));
    }
}
