//! The read models the API answers with: the dashboard snapshot, the
//! repository rows, the health report and the performance figures.
//!
//! They are built from the services on each request (or once per second
//! for every WebSocket client together, see [`crate::ws`]); nothing here
//! is stored.

use std::collections::BTreeMap;

use orchex_core::{Event, HealthStatus, Job, JobState, TriggerKind};
use orchex_monitor::WatcherState;
use orchex_orchestrator::{BreakerInfo, OrchestratorSnapshot};
use orchex_store::{EventFilter, JobFilter, PageRequest};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::Role;
use crate::state::{AnalysisSummary, AppState, lock};
use crate::timeline::TimelineBucket;

/// Who is asking, so the page can hide what it may not do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AccessView {
    /// The caller's role.
    pub role: Role,
    /// Whether the server requires a token.
    pub auth_required: bool,
}

/// How a repository is watched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WatcherView {
    /// `starting`, `watching`, `polling`, `error`, `disabled`, or
    /// `unknown` while the monitor has not picked the repository up yet.
    pub state: String,
    /// Why it polls or failed, or why its refs cannot be read.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Directories with a watch.
    pub watched_dirs: usize,
}

/// A configured repository with its watcher state and latest analysis.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RepositoryView {
    /// Its name.
    pub name: String,
    /// Its working tree.
    pub path: String,
    /// The watched branch; absent follows `HEAD`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Whether it is watched and run.
    pub enabled: bool,
    /// The watcher.
    pub watcher: WatcherView,
    /// The latest analysis, once one ran.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSummary>,
    /// Pipelines a manual run may start on it.
    pub pipelines: Vec<String>,
}

/// `GET /api/dashboard`, and the `snapshot` of the WebSocket.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DashboardView {
    /// The caller's access.
    pub access: AccessView,
    /// The orchestrator: state, stats, limit, queue, running jobs,
    /// breakers, limiters, recent cycles.
    pub orchestrator: OrchestratorSnapshot,
    /// Component health.
    pub health: HealthStatus,
    /// The repositories.
    pub repositories: Vec<RepositoryView>,
    /// The 20 most recent jobs, newest first.
    pub recent_jobs: Vec<Job>,
    /// The 50 most recent events, newest first.
    pub recent_events: Vec<Event>,
    /// The last hour, one bucket a minute, oldest first.
    pub timeline: Vec<TimelineBucket>,
}

/// The WebSocket snapshot, in the sections of [`crate::ws::Snapshot`]: the
/// [`DashboardView`] without its recent events (the stream sends each one
/// as it happens) and with its recent jobs as table rows ([`JobRow`]).
///
/// `core` (access, orchestrator, health, repositories) goes to every client
/// every second; `jobs` (`recentJobs`) and `timeline` only when they
/// changed. Each is a whole `{"type": "snapshot", "snapshot": {...}}`
/// message.
#[derive(Debug)]
pub(crate) struct SnapshotMessages {
    pub(crate) core: String,
    pub(crate) jobs: String,
    pub(crate) timeline: String,
}

#[derive(Debug, Serialize)]
struct SnapshotMessage<T> {
    #[serde(rename = "type")]
    kind: &'static str,
    snapshot: T,
}

fn snapshot_message<T: Serialize>(snapshot: T) -> serde_json::Result<String> {
    serde_json::to_string(&SnapshotMessage {
        kind: "snapshot",
        snapshot,
    })
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct CoreSection<'a> {
    access: &'a AccessView,
    orchestrator: &'a OrchestratorSnapshot,
    health: &'a HealthStatus,
    repositories: &'a [RepositoryView],
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JobsSection<'a> {
    recent_jobs: Vec<JobRow<'a>>,
}

#[derive(Debug, Serialize)]
struct TimelineSection<'a> {
    timeline: &'a [TimelineBucket],
}

impl SnapshotMessages {
    pub(crate) fn new(view: &DashboardView) -> serde_json::Result<Self> {
        Ok(Self {
            core: Self::core(view)?,
            jobs: snapshot_message(JobsSection {
                recent_jobs: view.recent_jobs.iter().map(JobRow::new).collect(),
            })?,
            timeline: snapshot_message(TimelineSection {
                timeline: &view.timeline,
            })?,
        })
    }

    /// The `core` section alone (the one that differs between roles).
    pub(crate) fn core(view: &DashboardView) -> serde_json::Result<String> {
        snapshot_message(CoreSection {
            access: &view.access,
            orchestrator: &view.orchestrator,
            health: &view.health,
            repositories: &view.repositories,
        })
    }
}

/// Whether [`dashboard`] reads the recent events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RecentEvents {
    Include,
    /// For the WebSocket snapshot, which does not send them.
    Omit,
}

/// A recent job in the live snapshot: what a row of the jobs table shows.
/// The full job (steps, trigger paths, diff, impact, the whole error) is
/// one `GET /api/jobs/{id}` away; a trigger's paths alone can be thousands.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JobRow<'a> {
    id: orchex_core::JobId,
    repo: &'a orchex_core::RepoId,
    pipeline: &'a str,
    state: JobState,
    trigger: TriggerRow,
    created_at: orchex_core::Timestamp,
    #[serde(skip_serializing_if = "Option::is_none")]
    started_at: Option<orchex_core::Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finished_at: Option<orchex_core::Timestamp>,
    #[serde(skip_serializing_if = "Option::is_none")]
    changed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skip_reason: Option<&'a orchex_core::SkipReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rollback: Option<orchex_core::RollbackState>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct TriggerRow {
    kind: TriggerKind,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    force: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    dry_run: bool,
}

/// Bytes of a job's error the live snapshot carries.
const ROW_ERROR_BYTES: usize = 240;

impl<'a> JobRow<'a> {
    fn new(job: &'a Job) -> Self {
        Self {
            id: job.id,
            repo: &job.repo,
            pipeline: &job.pipeline,
            state: job.state(),
            trigger: TriggerRow {
                kind: job.trigger.kind,
                force: job.trigger.force,
                dry_run: job.trigger.dry_run,
            },
            created_at: job.created_at,
            started_at: job.started_at,
            finished_at: job.finished_at,
            changed: job.changed,
            skip_reason: job.skip_reason.as_ref(),
            error: job
                .error
                .as_deref()
                .map(|error| prefix_at_char_boundary(error, ROW_ERROR_BYTES)),
            rollback: job.rollback,
        }
    }
}

/// The longest prefix of `text` of at most `max` bytes that ends on a
/// character boundary.
fn prefix_at_char_boundary(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

pub(crate) fn watcher_view(status: Option<orchex_monitor::RepoStatus>) -> WatcherView {
    let Some(status) = status else {
        return WatcherView {
            state: "unknown".to_owned(),
            reason: None,
            watched_dirs: 0,
        };
    };
    let (state, reason) = match status.state {
        WatcherState::Starting => ("starting", None),
        WatcherState::Watching => ("watching", None),
        WatcherState::Polling { reason } => ("polling", Some(reason)),
        WatcherState::Error { reason } => ("error", Some(reason)),
        WatcherState::Disabled => ("disabled", None),
        _ => ("unknown", None),
    };
    // A ref that cannot be read stops commit detection though the files
    // are still watched: show it as the reason.
    let reason = reason.or(status.ref_error);
    WatcherView {
        state: state.to_owned(),
        reason,
        watched_dirs: status.watched_dirs,
    }
}

/// Every configured repository, in config order.
pub(crate) fn repositories(state: &AppState) -> Vec<RepositoryView> {
    let config = state.config();
    let monitor = &state.services().monitor;
    let analyses = lock(&state.inner.analyses).clone();
    config
        .repositories
        .iter()
        .map(|repo| {
            let pipelines = state
                .services()
                .orchestrator
                .pipelines_for(repo.name.as_str(), TriggerKind::Manual);
            RepositoryView {
                name: repo.name.to_string(),
                path: repo.path.display().to_string(),
                branch: repo.branch.clone(),
                enabled: repo.enabled,
                watcher: watcher_view(monitor.status(&repo.name)),
                analysis: analyses.get(&repo.name).cloned(),
                pipelines,
            }
        })
        .collect()
}

/// The dashboard snapshot for `role`.
pub(crate) async fn dashboard(
    state: &AppState,
    role: Role,
    recent_events: RecentEvents,
) -> DashboardView {
    let services = state.services();
    let orchestrator = services.orchestrator.snapshot().await;
    let store = &services.store;
    let recent_jobs = match store
        .list_jobs(JobFilter::new(), PageRequest::first().limit(20))
        .await
    {
        Ok(page) => page.items,
        Err(err) => {
            tracing::warn!(%err, "dashboard: cannot list recent jobs");
            Vec::new()
        }
    };
    let recent_events = match recent_events {
        RecentEvents::Omit => Vec::new(),
        RecentEvents::Include => match store
            .query_events(EventFilter::new(), PageRequest::first().limit(50))
            .await
        {
            Ok(page) => page.items,
            Err(err) => {
                tracing::warn!(%err, "dashboard: cannot list recent events");
                Vec::new()
            }
        },
    };
    let timeline = lock(&state.inner.timeline).buckets(orchex_core::Timestamp::now());
    DashboardView {
        access: AccessView {
            role,
            auth_required: state.policy().tokens.required(),
        },
        orchestrator,
        health: services.health.snapshot(),
        repositories: repositories(state),
        recent_jobs,
        recent_events,
        timeline,
    }
}

/// Memory of the daemon process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryView {
    /// Resident set size in bytes, where the platform tells.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
}

/// The store's view of itself.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StoreView {
    /// Its health.
    pub health: orchex_core::ComponentHealth,
    /// Jobs queued.
    pub queue_depth: u64,
}

/// A watched repository's watcher, for `GET /api/health/detailed`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WatcherRow {
    /// The repository.
    pub repo: String,
    /// The watcher.
    #[serde(flatten)]
    pub watcher: WatcherView,
}

/// `GET /api/health/detailed`.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DetailedHealth {
    /// The overall status and each component.
    #[serde(flatten)]
    pub health: HealthStatus,
    /// Circuit breakers.
    pub breakers: Vec<BreakerInfo>,
    /// Jobs queued.
    pub queue_depth: u64,
    /// Each repository's watcher.
    pub watchers: Vec<WatcherRow>,
    /// The store.
    pub store: StoreView,
    /// The process's memory.
    pub memory: MemoryView,
    /// Events the bus dropped since start.
    pub events_dropped: u64,
}

/// Resident memory of this process, from `/proc/self/statm` on Linux.
pub(crate) fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Cycle figures of `GET /api/metrics`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CycleFigures {
    /// Cycles run.
    pub total: u64,
    /// Average cycle time.
    pub average_ms: f64,
    /// 95th percentile cycle time.
    pub p95_ms: f64,
}

/// Job duration figures of `GET /api/metrics`, over the recent jobs.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DurationFigures {
    /// Jobs measured (the most recent finished ones, at most 1000).
    pub count: u64,
    /// Average.
    pub average_ms: f64,
    /// 95th percentile.
    pub p95_ms: f64,
}

/// `GET /api/metrics`: performance as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PerformanceView {
    /// Succeeded among finished (succeeded, failed, timed out), between 0 and 1;
    /// 1 when nothing finished yet.
    pub success_rate: f64,
    /// Cycles.
    pub cycles: CycleFigures,
    /// Jobs finished per minute over the last hour.
    pub throughput_per_minute: f64,
    /// Job durations.
    pub job_durations: DurationFigures,
    /// Jobs by final state since start.
    pub jobs_by_outcome: BTreeMap<String, u64>,
    /// The current concurrency limit.
    pub concurrency_limit: u32,
    /// Jobs queued.
    pub queue_depth: u64,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

/// The performance figures.
pub(crate) async fn performance(state: &AppState) -> Result<PerformanceView, crate::ApiError> {
    let services = state.services();
    let stats = services.orchestrator.stats();
    let finished = services
        .store
        .list_jobs(
            JobFilter::new()
                .state(JobState::Succeeded)
                .state(JobState::Failed)
                .state(JobState::TimedOut),
            PageRequest::first().limit(1000),
        )
        .await?;
    let mut durations: Vec<f64> = finished
        .items
        .iter()
        .filter_map(|job| {
            let (start, end) = (job.started_at?, job.finished_at?);
            #[allow(clippy::cast_precision_loss)]
            Some(end.duration_since(start).as_millis() as f64)
        })
        .collect();
    durations.sort_by(f64::total_cmp);
    #[allow(clippy::cast_precision_loss)]
    let average = if durations.is_empty() {
        0.0
    } else {
        durations.iter().sum::<f64>() / durations.len() as f64
    };
    let count = |state: &str| stats.jobs_by_outcome.get(state).copied().unwrap_or(0);
    let succeeded = count("succeeded");
    let failed = count("failed") + count("timedOut");
    #[allow(clippy::cast_precision_loss)]
    let success_rate = if succeeded + failed == 0 {
        1.0
    } else {
        succeeded as f64 / (succeeded + failed) as f64
    };
    let buckets = lock(&state.inner.timeline).buckets(orchex_core::Timestamp::now());
    #[allow(clippy::cast_precision_loss)]
    let throughput_per_minute =
        buckets.iter().map(|b| b.jobs_finished).sum::<u64>() as f64 / buckets.len().max(1) as f64;
    Ok(PerformanceView {
        success_rate,
        cycles: CycleFigures {
            total: stats.total_cycles,
            average_ms: stats.average_cycle_ms,
            p95_ms: stats.p95_cycle_ms,
        },
        throughput_per_minute,
        job_durations: DurationFigures {
            count: durations.len() as u64,
            average_ms: average,
            p95_ms: percentile(&durations, 0.95),
        },
        jobs_by_outcome: stats.jobs_by_outcome.clone(),
        concurrency_limit: services.orchestrator.concurrency_limit(),
        queue_depth: services.store.queue_depth().await?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((percentile(&values, 0.95) - 95.0).abs() < 1.01);
        assert!((percentile(&[], 0.95)).abs() < f64::EPSILON);
        assert!((percentile(&[7.0], 0.5) - 7.0).abs() < f64::EPSILON);
    }

    #[test]
    fn a_snapshot_row_leaves_out_paths_steps_and_most_of_a_long_error() {
        let repo = orchex_core::RepoId::new("api").unwrap_or_else(|e| panic!("{e}"));
        let mut trigger = orchex_core::Trigger::new(repo.clone(), TriggerKind::FileChange);
        trigger.paths = (0..10_000)
            .map(|i| format!("src/generated/file_{i}.rs"))
            .collect();
        trigger.dry_run = true;
        let mut job = Job::new(repo, "codegen".into(), trigger);
        job.error = Some("é".repeat(1000));
        let row = serde_json::to_value(JobRow::new(&job)).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            row["trigger"],
            serde_json::json!({"kind": "fileChange", "dryRun": true})
        );
        assert_eq!(row["state"], "queued");
        assert!(row.get("steps").is_none());
        let error = row["error"].as_str().unwrap_or_default();
        assert!(error.len() <= ROW_ERROR_BYTES && error.len() >= ROW_ERROR_BYTES - 1);
        assert!(serde_json::to_string(&row).unwrap_or_default().len() < 1000);
        assert_eq!(prefix_at_char_boundary("short", 240), "short");
    }
}
