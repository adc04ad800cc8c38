//! The orchestrator itself: a cheap-to-clone handle over the queue, the
//! safety primitives, the engine and the background loops.
//!
//! The background loops, started by [`Orchestrator::start`]:
//! - **intake** turns the trigger stream into queued jobs;
//! - **cycles** start on the free slots whenever work is queued (they
//!   overlap, so a long job holds only its own slot) and run the due work,
//!   `buffer_unordered`, each job behind the rate limiter, its circuit
//!   breaker and the bulkhead;
//! - **schedule** queues `schedule` triggers when repositories come due;
//! - **health** judges each interval and reports;
//! - **signals** forward breaker and concurrency changes as events.
//!
//! **Invariant:** every job taken from the queue ends in a recorded final
//! state, or stays `running` in the store if the store refuses the write;
//! recovery at the next start accounts for it (interrupted, re-queued once).

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt as _};
use orchex_core::config::Config;
use orchex_core::{
    ComponentHealth, Event, EventKind, Job, JobId, JobState, ParallelExecution, RepoId, Repository,
    Severity, SkipReason, Timestamp, Trigger, TriggerKind,
};
use orchex_git::Signature;
use orchex_resilience::{
    AdaptiveLimit, AimdConfig, Bulkhead, BulkheadConfig, CircuitBreakerConfig,
    CircuitBreakerRegistry, CircuitState, KeyedRateLimiter, LimitAlgorithm, LimitOutcome, Quota,
    SharedClock, SlidingWindow, SystemClock,
};
use orchex_store::{JobFilter, JobPatch, PageRequest, Store};
use orchex_telemetry::metrics::names;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::actions::ActionRegistry;
use crate::control::{
    BreakerInfo, CancelFilter, ControlError, LimiterInfo, ManualRun, OrchestratorSnapshot,
    RunState, RunningJob,
};
use crate::engine::{self, Engine, JobRequest, Outcome, RollbackError};
use crate::events::Events;
use crate::routing::{RouteEntry, RoutingTable};
use crate::schedule::Scheduler;
use crate::stats::StatsRecorder;

/// How long a claimed job's lease lasts before another daemon may take it.
const LEASE: Duration = Duration::from_secs(300);
/// How often the loops look for work when nothing wakes them.
const TICK: Duration = Duration::from_secs(1);
/// How long an emergency stop waits for cancelled jobs to end.
const EMERGENCY_WAIT: Duration = Duration::from_secs(10);

/// What the orchestrator is built from.
#[derive(Debug, Clone)]
pub struct OrchestratorDeps {
    /// Jobs, events and backups.
    pub store: Arc<dyn Store>,
    /// Where events go (the telemetry bus in the daemon).
    pub events: Events,
    /// The storage directory; job workspaces live under `workspaces/`.
    pub storage: PathBuf,
    /// Embedder-provided step kinds.
    pub actions: ActionRegistry,
    /// The clock of the breakers, limiters and adaptive limit.
    pub clock: SharedClock,
    /// The author and committer of delivered commits.
    pub signature: Signature,
}

impl OrchestratorDeps {
    /// Dependencies with the system clock, no custom actions and the
    /// `orchex <orchex@localhost>` signature.
    pub fn new(store: Arc<dyn Store>, events: Events, storage: impl Into<PathBuf>) -> Self {
        Self {
            store,
            events,
            storage: storage.into(),
            actions: ActionRegistry::default(),
            clock: SharedClock::from(SystemClock::default()),
            signature: Signature::new("orchex", "orchex@localhost"),
        }
    }
}

/// Why the orchestrator could not be built, started or configured.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OrchestratorError {
    /// `start` was called on a running orchestrator.
    #[error("the orchestrator is already running")]
    AlreadyRunning,
    /// The configuration cannot be turned into routing or limits.
    #[error("invalid configuration for the orchestrator: {0}")]
    Config(String),
    /// Crash recovery failed.
    #[error("recovery failed: {0}")]
    Recovery(String),
}

/// What start-up recovery did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoverySummary {
    /// Interrupted jobs put back in the queue.
    pub requeued: Vec<JobId>,
    /// Jobs interrupted a second time, now failed.
    pub failed: Vec<JobId>,
    /// Process groups of steps that survived the crash, killed.
    pub killed_groups: usize,
    /// Leftover workspaces removed.
    pub removed_workspaces: usize,
    /// Deliveries cut short and undone (files or branches restored).
    pub undone_deliveries: usize,
    /// Stale lock files of delivery branches removed (left by a crash in
    /// the middle of a branch update).
    pub removed_locks: usize,
    /// Rollbacks a stop cut short, finished (their jobs are `rolledBack`
    /// now).
    pub finished_rollbacks: Vec<JobId>,
}

/// The orchestrator. Cheap to clone; clones share everything.
#[derive(Debug, Clone)]
pub struct Orchestrator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    deps: OrchestratorDeps,
    engine: Engine,
    config: RwLock<Arc<Config>>,
    routing: RwLock<Arc<RoutingTable>>,
    limiter: KeyedRateLimiter<RepoId>,
    breakers: CircuitBreakerRegistry<String>,
    bulkhead: Bulkhead,
    adaptive: AdaptiveLimit,
    state: watch::Sender<RunState>,
    running: Mutex<HashMap<JobId, Running>>,
    running_changed: Notify,
    cancelled_while_queued: Mutex<HashSet<JobId>>,
    /// Sequences of triggers coalesced into an already queued job.
    follow_ups: Mutex<HashMap<JobId, VecDeque<Trigger>>>,
    wake: Notify,
    /// Slots held by running cycles (see [`Orchestrator::cycle_loop`]).
    reserved_slots: AtomicUsize,
    stats: Mutex<StatsRecorder>,
    scheduler: Mutex<Scheduler>,
    last_scheduled: Mutex<HashMap<RepoId, Timestamp>>,
    health: Mutex<ComponentHealth>,
    tasks: Mutex<Option<Tasks>>,
    worker: String,
}

#[derive(Debug)]
struct Running {
    token: CancellationToken,
    info: RunningJob,
}

#[derive(Debug)]
struct Tasks {
    shutdown: CancellationToken,
    handles: Vec<JoinHandle<()>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Logs a failure to record the held run state (see `held`).
fn report_hold(state: RunState, recorded: std::io::Result<()>) {
    if let Err(err) = recorded {
        tracing::error!(%err, state = state.as_str(), "cannot record the held run state; a restart would not keep it");
    }
}

fn breaker_config(config: &Config) -> CircuitBreakerConfig {
    let safety = &config.optimizer.safety;
    CircuitBreakerConfig::failure_count_in(
        safety.circuit_breaker_threshold,
        SlidingWindow::Time(Duration::from_secs(3600)),
    )
    .half_open(1, None)
    .open_duration(Duration::from_secs(safety.circuit_breaker_cooldown_secs))
    .open_backoff(
        2.0,
        Duration::from_secs(safety.circuit_breaker_cooldown_secs.saturating_mul(32)),
    )
    .open_jitter(0.1)
}

fn limit_algorithm(config: &Config) -> LimitAlgorithm {
    let max =
        u32::try_from(config.orchestrator.effective_max_concurrent().get()).unwrap_or(u32::MAX);
    // A job's latency is long and varied; only a job slower than its own
    // timeout counts as an overload signal, besides failures.
    LimitAlgorithm::Aimd(AimdConfig::new(max, 1, max).backoff_ratio(0.5).timeout(
        Duration::from_secs(config.optimizer.safety.job_timeout_secs),
    ))
}

fn max_concurrent(config: &Config) -> u32 {
    u32::try_from(config.orchestrator.effective_max_concurrent().get()).unwrap_or(u32::MAX)
}

fn now_plus(wait: Duration) -> Timestamp {
    jiff::SignedDuration::try_from(wait)
        .ok()
        .and_then(|wait| Timestamp::now().checked_add(wait).ok())
        .unwrap_or_else(Timestamp::now)
}

impl Orchestrator {
    /// Builds an orchestrator for `config`. Nothing runs until
    /// [`Orchestrator::start`]; call [`Orchestrator::recover`] first.
    pub fn new(config: &Config, deps: OrchestratorDeps) -> Result<Self, OrchestratorError> {
        let invalid = |e: &dyn std::fmt::Display| OrchestratorError::Config(e.to_string());
        let routing = RoutingTable::build(config).map_err(|e| invalid(&e))?;
        let limiter = KeyedRateLimiter::<RepoId>::builder(Quota::per_hour(
            config.optimizer.safety.rate_limit_per_hour,
        ))
        .clock(deps.clock.clone())
        .name("repository")
        .label_keys(|repo: &RepoId| repo.to_string())
        .max_keys(10_000)
        .build()
        .map_err(|e| invalid(&e))?;
        let breakers =
            CircuitBreakerRegistry::with_clock(breaker_config(config), deps.clock.clone())
                .map_err(|e| invalid(&e))?;
        let bulkhead = Bulkhead::builder(BulkheadConfig::new(max_concurrent(config)))
            .name("jobs")
            .build()
            .map_err(|e| invalid(&e))?;
        // Unnamed on purpose: a named limit would also export a labelled
        // `orchex_concurrency_limit{name}`, beside the unlabelled gauge of
        // PRODUCT.md §10 that the orchestrator sets itself.
        let adaptive = AdaptiveLimit::builder(limit_algorithm(config))
            .clock(deps.clock.clone())
            .build()
            .map_err(|e| invalid(&e))?;
        let interval = Duration::from_secs(
            config
                .optimizer
                .schedule
                .interval_minutes
                .saturating_mul(60),
        );
        let engine = Engine {
            storage: deps.storage.clone(),
            store: Arc::clone(&deps.store),
            events: deps.events.clone(),
            actions: deps.actions.clone(),
            signature: deps.signature.clone(),
            writers: engine::RepoWriters::default(),
        };
        let (state, _) = watch::channel(RunState::Stopped);
        Ok(Self {
            inner: Arc::new(Inner {
                engine,
                config: RwLock::new(Arc::new(config.clone())),
                routing: RwLock::new(Arc::new(routing)),
                limiter,
                breakers,
                bulkhead,
                adaptive,
                state,
                running: Mutex::new(HashMap::new()),
                running_changed: Notify::new(),
                cancelled_while_queued: Mutex::new(HashSet::new()),
                follow_ups: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                reserved_slots: AtomicUsize::new(0),
                stats: Mutex::new(StatsRecorder::default()),
                scheduler: Mutex::new(Scheduler::new(interval)),
                last_scheduled: Mutex::new(HashMap::new()),
                health: Mutex::new(ComponentHealth::ok()),
                tasks: Mutex::new(None),
                worker: format!("orchexd-{}", std::process::id()),
                deps,
            }),
        })
    }

    fn config(&self) -> Arc<Config> {
        self.inner
            .config
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn routing(&self) -> Arc<RoutingTable> {
        self.inner
            .routing
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn publish(&self, event: Event) {
        self.inner.deps.events.publish(event);
    }

    fn job_event(job: &Job, kind: EventKind, message: String) -> Event {
        Event::new(kind, message)
            .with_repo(job.repo.clone())
            .with_pipeline(job.pipeline.clone())
            .with_job(job.id)
    }

    // === lifecycle ===

    /// Crash recovery, before [`Orchestrator::start`]: removes stale lock
    /// files of delivery branches, undoes deliveries cut short, re-queues interrupted jobs (once; a second interruption
    /// fails the job), kills the step process groups that survived a crash
    /// (recorded in the store or in their workspace) and forgets them, and
    /// removes leftover workspaces.
    pub async fn recover(&self) -> Result<RecoverySummary, OrchestratorError> {
        let store = &self.inner.deps.store;
        let config = self.config();
        // First the locks a crash left on delivery branches: the undo below
        // and every later delivery need them free.
        let removed_locks = self.remove_stale_branch_locks(&config).await;
        let (undone_deliveries, undo_failed) = self.undo_interrupted_deliveries(&config).await?;
        let mut summary = RecoverySummary {
            undone_deliveries,
            failed: undo_failed,
            finished_rollbacks: self.finish_interrupted_rollbacks(&config).await?,
            removed_locks,
            ..RecoverySummary::default()
        };
        let report = store
            .recover()
            .await
            .map_err(|e| OrchestratorError::Recovery(e.to_string()))?;
        for group in &report.pgids {
            let Ok(pgid) = u32::try_from(group.pgid) else {
                continue;
            };
            // Only a group still running this job's step is killed: the id
            // may belong to anyone by now.
            let job = group.job.to_string();
            let killed = engine::blocking(move || {
                crate::process::kill_job_group(pgid, &job).map_err(|e| e.to_string())
            })
            .await;
            if let Ok(killed) = killed {
                summary.killed_groups += usize::from(killed);
                // Handled, so forgotten: a record kept would make every later
                // recovery look at whatever group has that id by then. A
                // crash between the kill and this leaves the record, and the
                // next recovery checks it again.
                if let Err(err) = store.clear_step_pgid(group.job, group.pgid).await {
                    tracing::warn!(job = %group.job, pgid = group.pgid, %err, "cannot forget a killed process group");
                }
            }
        }
        // Every step creates its group file in its workspace before its
        // spawn and writes the group into it right after, even one the
        // daemon died too early to record in the store; a file left empty
        // is a step whose group is known only to the kernel, found by its
        // `ORCHEX_JOB_ID`.
        let storage = self.inner.deps.storage.clone();
        let recorded: Vec<u32> = report
            .pgids
            .iter()
            .filter_map(|group| u32::try_from(group.pgid).ok())
            .collect();
        let (killed, removed) = tokio::task::spawn_blocking(move || {
            let killed: usize = engine::workspace::leftover_groups(&storage)
                .into_iter()
                .map(|(job, pgid)| match pgid {
                    Some(pgid) if recorded.contains(&pgid) => 0,
                    Some(pgid) => {
                        usize::from(crate::process::kill_job_group(pgid, &job) == Ok(true))
                    }
                    None => crate::process::kill_job_processes(&job),
                })
                .sum();
            let removed = engine::workspace::remove_leftovers(&storage).unwrap_or(0);
            (killed, removed)
        })
        .await
        .unwrap_or((0, 0));
        summary.killed_groups += killed;
        summary.removed_workspaces = removed;
        for (ids, requeued) in [(&report.requeued, true), (&report.failed, false)] {
            for id in ids {
                let Ok(Some(job)) = store.get_job(*id).await else {
                    continue;
                };
                let message = if requeued {
                    format!(
                        "job {} was interrupted by a daemon stop and is queued again",
                        job.id
                    )
                } else {
                    format!("job {} was interrupted twice and has failed", job.id)
                };
                self.publish(Self::job_event(&job, EventKind::JobInterrupted, message));
                if requeued {
                    summary.requeued.push(job.id);
                } else {
                    summary.failed.push(job.id);
                }
            }
        }
        self.load_schedule_history(&config).await;
        Ok(summary)
    }

    /// Removes the lock files that a crash in the middle of a branch update
    /// left on the delivery branches of the configured pipelines: git never
    /// removes one, and every later update of the branch fails while it is
    /// there. Nothing of orchex writes a branch yet, so no lock on those
    /// branches is orchex's own live one. Returns how many were removed.
    async fn remove_stale_branch_locks(&self, config: &Config) -> usize {
        let routing = self.routing();
        let mut branches: Vec<(PathBuf, String)> = Vec::new();
        for repo in &config.repositories {
            for pipeline in &config.pipelines {
                if pipeline.deliver == orchex_core::Delivery::Branch
                    && routing.applies_to(&pipeline.name, repo.name.as_str())
                {
                    branches.push((repo.path.clone(), pipeline.delivery_branch()));
                }
            }
        }
        engine::blocking(move || {
            let mut removed = 0;
            for (path, branch) in &branches {
                let Ok(repo) = orchex_git::GitRepo::open(path) else {
                    continue;
                };
                match repo.remove_stale_branch_lock(branch) {
                    Ok(true) => {
                        tracing::warn!(repo = %path.display(), %branch, "removed the stale lock of a delivery branch, left by a crash");
                        removed += 1;
                    }
                    Ok(false) => {}
                    Err(err) => {
                        tracing::error!(repo = %path.display(), %branch, %err, "cannot remove the stale lock of a delivery branch");
                    }
                }
            }
            Ok(removed)
        })
        .await
        .unwrap_or(0)
    }

    /// Undoes the deliveries that a stop cut short, before the store
    /// re-queues their jobs: once a job is queued again no later recovery
    /// looks at it as interrupted, so an undo left for after the re-queue
    /// (as it was) was lost to a crash in between, and the branch kept a
    /// result that no succeeded job accounts for. A re-queued job whose
    /// branch still holds its own commit (a database left by such a crash)
    /// is taken back too; its commit names the job, so nothing else can
    /// account for it.
    ///
    /// A job whose undo fails (a file that cannot be written back) is
    /// failed, not re-queued: a re-run would take the half-applied tree for
    /// the user's and replace the backups of what the user had. Its error
    /// names the files, and its backups stay.
    ///
    /// Returns the number of branches and files restored, and the jobs
    /// failed that way.
    async fn undo_interrupted_deliveries(
        &self,
        config: &Config,
    ) -> Result<(usize, Vec<JobId>), OrchestratorError> {
        let store = &self.inner.deps.store;
        let filter = JobFilter::new()
            .state(JobState::Running)
            .state(JobState::Interrupted)
            .state(JobState::Queued);
        let mut undone = 0;
        let mut failed = Vec::new();
        for job in &self.recovery_jobs(filter).await? {
            let Some(record) = &job.delivery else {
                continue;
            };
            if job.state() == JobState::Queued
                && (job.interruptions == 0 || record.kind != orchex_core::Delivery::Branch)
            {
                continue;
            }
            let Some(repo) = config.repositories.iter().find(|r| r.name == job.repo) else {
                continue;
            };
            let outcome = engine::undo_interrupted_delivery(store.as_ref(), job, &repo.path).await;
            undone += outcome.restored;
            match outcome.incomplete {
                None => {}
                Some(err) => {
                    tracing::error!(job = %job.id, %err, "cannot undo an interrupted delivery");
                    if !matches!(job.state(), JobState::Running | JobState::Interrupted) {
                        continue;
                    }
                    let error = format!(
                        "interrupted during its delivery, and undoing it failed: {err}; \
                         the job is not run again, and its backups are kept"
                    );
                    match store
                        .transition(
                            job.id,
                            JobState::Failed,
                            JobPatch::new().error(error.clone()),
                        )
                        .await
                    {
                        Ok(job) => {
                            self.publish(Self::job_event(&job, EventKind::JobFailed, error));
                            failed.push(job.id);
                        }
                        Err(e) => {
                            tracing::error!(job = %job.id, %e, "cannot record that undoing an interrupted delivery failed");
                        }
                    }
                }
            }
        }
        Ok((undone, failed))
    }

    /// Every job that `filter` matches, for recovery (which looks at few:
    /// the active ones, the rollbacks in progress).
    async fn recovery_jobs(&self, filter: JobFilter) -> Result<Vec<Job>, OrchestratorError> {
        let mut page = PageRequest::first().limit(500);
        let mut all = Vec::new();
        loop {
            let jobs = self
                .inner
                .deps
                .store
                .list_jobs(filter.clone(), page.clone())
                .await
                .map_err(|e| OrchestratorError::Recovery(e.to_string()))?;
            all.extend(jobs.items);
            match jobs.next_cursor {
                Some(cursor) => page = PageRequest::first().limit(500).after(cursor),
                None => return Ok(all),
            }
        }
    }

    /// Finishes the rollbacks that a stop cut short: their intent was made
    /// durable before anything was restored, and the operator who asked
    /// for one got no answer, so recovery completes it (what was restored
    /// already counts as done) rather than leave a `succeeded` job whose
    /// result may be half gone. One that meets a change made since is
    /// marked `superseded`, as an operator's rollback would be.
    async fn finish_interrupted_rollbacks(
        &self,
        config: &Config,
    ) -> Result<Vec<JobId>, OrchestratorError> {
        let filter = JobFilter::new()
            .state(JobState::Succeeded)
            .rollback(orchex_core::RollbackState::InProgress);
        let mut finished = Vec::new();
        for job in &self.recovery_jobs(filter).await? {
            let Some(repo) = config.repositories.iter().find(|r| r.name == job.repo) else {
                tracing::warn!(job = %job.id, repo = %job.repo, "an interrupted rollback's repository is no longer configured; it stays in progress");
                continue;
            };
            match self.roll_back(job, &repo.path).await {
                Ok(job) => {
                    tracing::warn!(job = %job.id, "finished a rollback that a stop cut short");
                    finished.push(job.id);
                }
                Err(err) => {
                    tracing::error!(job = %job.id, %err, "cannot finish a rollback that a stop cut short");
                }
            }
        }
        Ok(finished)
    }

    /// Finds each repository's last scheduled run in the job history, so
    /// that a window missed while the daemon was down runs once, soon.
    async fn load_schedule_history(&self, config: &Config) {
        const PAGES: usize = 5;
        for repo in &config.repositories {
            let filter = JobFilter::new().repo(repo.name.clone());
            let mut page = PageRequest::first().limit(200);
            for _ in 0..PAGES {
                let Ok(jobs) = self
                    .inner
                    .deps
                    .store
                    .list_jobs(filter.clone(), page.clone())
                    .await
                else {
                    break;
                };
                if let Some(job) = jobs
                    .items
                    .iter()
                    .find(|j| j.trigger.kind == TriggerKind::Schedule)
                {
                    lock(&self.inner.last_scheduled).insert(repo.name.clone(), job.created_at);
                    break;
                }
                match jobs.next_cursor {
                    Some(cursor) => page = PageRequest::first().limit(200).after(cursor),
                    None => break,
                }
            }
        }
    }

    /// Starts the background loops, consuming `triggers`. Refuses when
    /// already running.
    pub fn start<S>(&self, triggers: S) -> Result<(), OrchestratorError>
    where
        S: Stream<Item = Trigger> + Send + 'static,
    {
        let mut tasks = lock(&self.inner.tasks);
        if tasks.is_some() {
            return Err(OrchestratorError::AlreadyRunning);
        }
        let shutdown = CancellationToken::new();
        // A pause or an emergency stop outlives a restart: only `resume`
        // ends it.
        let (held, problem) = crate::held::load(&self.inner.deps.storage);
        if let Some(problem) = problem {
            tracing::warn!(%problem, "reading the held run state");
        }
        self.inner
            .state
            .send_replace(held.unwrap_or(RunState::Running));
        self.sync_scheduler(&self.config());
        let handles = vec![
            tokio::spawn(
                self.clone()
                    .intake_loop(Box::pin(triggers), shutdown.clone()),
            ),
            tokio::spawn(self.clone().cycle_loop(shutdown.clone())),
            tokio::spawn(self.clone().schedule_loop(shutdown.clone())),
            tokio::spawn(self.clone().health_loop(shutdown.clone())),
            tokio::spawn(self.clone().signal_loop(shutdown.clone())),
        ];
        *tasks = Some(Tasks { shutdown, handles });
        drop(tasks);
        self.publish(Event::new(
            EventKind::OrchestratorStarted,
            "orchestrator started",
        ));
        if let Some(held) = held {
            self.publish(Event::new(
                EventKind::Paused,
                format!(
                    "dispatching stays {} as an operator left it before the restart; resume to continue",
                    if held == RunState::EmergencyStopped {
                        "emergency-stopped"
                    } else {
                        "paused"
                    }
                ),
            ));
        }
        metrics::gauge!(names::CONCURRENCY_LIMIT).set(f64::from(self.concurrency_limit()));
        Ok(())
    }

    /// Whether the background loops run.
    pub fn is_started(&self) -> bool {
        lock(&self.inner.tasks).is_some()
    }

    /// Stops gracefully: no new work is taken, running jobs get `grace` to
    /// finish and are then cancelled, and every background task has ended
    /// when this returns. Queued jobs stay queued for the next start. A job
    /// or task still not ended 10 s after its cancellation is logged and
    /// left (aborted, for a task): a stuck job never keeps the daemon from
    /// stopping, and the next start's recovery re-queues it.
    pub async fn stop(&self, grace: Duration) {
        let Some(tasks) = lock(&self.inner.tasks).take() else {
            return;
        };
        self.inner.state.send_replace(RunState::Stopped);
        tasks.shutdown.cancel();
        self.inner.wake.notify_waiters();
        let drained = tokio::time::timeout(grace, self.wait_idle()).await.is_ok();
        if !drained {
            for running in lock(&self.inner.running).values() {
                running.token.cancel();
            }
            // A cancelled job ends within moments (its process group is
            // killed); one that does not must not keep the daemon from
            // stopping. It stays `running` in the store, and the next
            // start's recovery re-queues it and kills what it left.
            if tokio::time::timeout(EMERGENCY_WAIT, self.wait_idle())
                .await
                .is_err()
            {
                let stuck: Vec<JobId> = lock(&self.inner.running).keys().copied().collect();
                tracing::error!(
                    ?stuck,
                    "jobs did not end within 10 s of their cancellation; stopping without them"
                );
            }
        }
        for handle in tasks.handles {
            let abort = handle.abort_handle();
            if tokio::time::timeout(EMERGENCY_WAIT, handle).await.is_err() {
                tracing::error!("a background task did not end within 10 s; aborting it");
                abort.abort();
            }
        }
        self.publish(Event::new(
            EventKind::OrchestratorStopped,
            "orchestrator stopped",
        ));
    }

    async fn wait_idle(&self) {
        loop {
            let notified = self.inner.running_changed.notified();
            if lock(&self.inner.running).is_empty() {
                return;
            }
            notified.await;
        }
    }

    /// Applies a new configuration: routing, rate limits, breakers,
    /// concurrency, schedules. State (tokens, breaker counts, queue) is
    /// kept.
    pub fn apply_config(&self, config: &Config) -> Result<(), OrchestratorError> {
        let invalid = |e: &dyn std::fmt::Display| OrchestratorError::Config(e.to_string());
        let routing = RoutingTable::build(config).map_err(|e| invalid(&e))?;
        self.inner
            .limiter
            .reconfigure(Quota::per_hour(config.optimizer.safety.rate_limit_per_hour))
            .map_err(|e| invalid(&e))?;
        self.inner
            .breakers
            .reconfigure_all(breaker_config(config))
            .map_err(|e| invalid(&e))?;
        self.inner
            .bulkhead
            .set_max_concurrent(max_concurrent(config))
            .map_err(|e| invalid(&e))?;
        self.inner
            .adaptive
            .reconfigure(limit_algorithm(config))
            .map_err(|e| invalid(&e))?;
        *self
            .inner
            .routing
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(routing);
        *self
            .inner
            .config
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(config.clone());
        self.sync_scheduler(config);
        self.inner.wake.notify_one();
        Ok(())
    }

    fn sync_scheduler(&self, config: &Config) {
        let now = Timestamp::now();
        let mut scheduler = lock(&self.inner.scheduler);
        scheduler.set_interval(
            Duration::from_secs(
                config
                    .optimizer
                    .schedule
                    .interval_minutes
                    .saturating_mul(60),
            ),
            now,
        );
        let wanted: HashSet<&RepoId> = config
            .repositories
            .iter()
            .filter(|r| r.enabled)
            .map(|r| &r.name)
            .collect();
        scheduler.retain(|repo| wanted.contains(repo));
        let history = lock(&self.inner.last_scheduled);
        for repo in &wanted {
            scheduler.add_repo((*repo).clone(), history.get(*repo).copied(), now);
        }
    }

    // === queue ===

    /// Routes `trigger` and queues a job per matching pipeline. A pipeline
    /// already queued for the repository is coalesced (its queued job is
    /// returned); beyond `queueCapacity` the job is recorded as skipped
    /// with `queueFull`. Returns the jobs, queued or skipped.
    pub async fn submit(&self, trigger: Trigger) -> Result<Vec<Job>, ControlError> {
        lock(&self.inner.stats).trigger_processed();
        let config = self.config();
        if !config.orchestrator.autonomous && trigger.kind != TriggerKind::Manual {
            tracing::debug!(kind = %trigger.kind, "not autonomous: ignoring an automatic trigger");
            return Ok(Vec::new());
        }
        let routing = self.routing();
        let matched = routing.route(&trigger);
        let sequential = matched.strategy == orchex_core::Strategy::Sequential;
        let pipelines: Vec<String> = matched.pipelines.iter().map(|p| p.name.clone()).collect();
        drop(matched);
        let mut jobs = Vec::new();
        let mut rest = pipelines.into_iter();
        if sequential {
            if let Some(first) = rest.next() {
                // The rest of the sequence travels in the stored trigger,
                // so it survives a restart (see `queue_follow_up`).
                let sequenced = Trigger {
                    then: rest.by_ref().collect(),
                    ..trigger.clone()
                };
                let job = self.enqueue(&sequenced, &first, &config).await?;
                if job.trigger.then != sequenced.then
                    && !sequenced.then.is_empty()
                    && job.state() == JobState::Queued
                {
                    // Coalesced into a job queued earlier, whose stored
                    // trigger has another sequence: remember this one
                    // beside it (in memory only).
                    lock(&self.inner.follow_ups)
                        .entry(job.id)
                        .or_default()
                        .push_back(sequenced);
                }
                jobs.push(job);
            }
        } else {
            for pipeline in rest {
                jobs.push(self.enqueue(&trigger, &pipeline, &config).await?);
            }
        }
        if !jobs.is_empty() {
            self.inner.wake.notify_one();
        }
        Ok(jobs)
    }

    async fn enqueue(
        &self,
        trigger: &Trigger,
        pipeline: &str,
        config: &Config,
    ) -> Result<Job, ControlError> {
        let store = &self.inner.deps.store;
        let internal = |e: &dyn std::fmt::Display| ControlError::Internal(format!("storage: {e}"));
        if let Some(existing) = store
            .find_queued(&trigger.repo, pipeline)
            .await
            .map_err(|e| internal(&e))?
            && let Some(job) = store.get_job(existing).await.map_err(|e| internal(&e))?
        {
            // Coalesced: the queued job also covers this trigger's paths,
            // so its steps see every changed path in ORCHEX_CHANGED_PATHS.
            let new_paths: Vec<String> = trigger
                .paths
                .iter()
                .filter(|p| !job.trigger.paths.contains(p))
                .cloned()
                .collect();
            if new_paths.is_empty() {
                return Ok(job);
            }
            return store
                .update_job(job.id, JobPatch::new().merge_trigger_paths(new_paths))
                .await
                .map_err(|e| internal(&e));
        }
        let job = Job::new(
            trigger.repo.clone(),
            pipeline.to_owned(),
            Trigger {
                pipeline: Some(pipeline.to_owned()),
                ..trigger.clone()
            },
        );
        // The store checks the capacity and inserts in one write: O(1) (a
        // counter), and concurrent submits cannot overshoot it. Beyond it the
        // job is stored `skipped` with `queueFull`.
        let capacity = u64::try_from(config.orchestrator.queue_capacity).unwrap_or(u64::MAX);
        let job = store
            .insert_job_bounded(job, capacity)
            .await
            .map_err(|e| internal(&e))?;
        if job.state() == JobState::Skipped {
            self.finish_bookkeeping(&job, "the queue is full (queueCapacity)".to_owned(), false);
            return Ok(job);
        }
        self.publish(
            Self::job_event(
                &job,
                EventKind::JobQueued,
                format!("job {} queued ({} on {})", job.id, job.pipeline, job.repo),
            )
            .with_data(serde_json::json!({"trigger": job.trigger.kind, "priority": job.priority})),
        );
        metrics::counter!(names::JOBS_QUEUED_TOTAL).increment(1);
        Ok(job)
    }

    // === cycles ===

    /// Starts a cycle on the free slots whenever work is queued and a slot
    /// is free: on a wake-up (a job queued, a job finished, a reload) or
    /// the tick. Cycles overlap: one whose long job still runs does not
    /// keep the other slots idle while work waits. Every cycle has ended
    /// when this returns.
    async fn cycle_loop(self, shutdown: CancellationToken) {
        let mut cycles = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.inner.wake.notified() => {}
                () = tokio::time::sleep(TICK) => {}
                Some(_) = cycles.join_next(), if !cycles.is_empty() => continue,
            }
            if self.state() != RunState::Running {
                continue;
            }
            if let Some(plan) = self.initialise_cycle().await {
                let this = self.clone();
                cycles.spawn(async move { this.run_planned_cycle(plan).await });
            }
        }
        while cycles.join_next().await.is_some() {}
    }

    fn dispatching(&self) -> bool {
        self.state() == RunState::Running
    }

    /// Runs one cycle now: takes up to as many due jobs as there are free
    /// slots under the current concurrency limit, runs them in parallel,
    /// and records a [`ParallelExecution`]. Returns `None` when nothing was
    /// due or no slot was free.
    pub async fn run_cycle(&self) -> Option<ParallelExecution> {
        let plan = self.initialise_cycle().await?;
        self.run_planned_cycle(plan).await
    }

    async fn run_planned_cycle(&self, plan: CyclePlan) -> Option<ParallelExecution> {
        let started_at = Timestamp::now();
        let started = Instant::now();
        let in_flight = AtomicU32::new(0);
        let peak = AtomicU32::new(0);
        let outcomes = self.process_cycle(plan, &in_flight, &peak).await;
        if outcomes.is_empty() {
            return None;
        }
        let cycle =
            self.finalise_cycle(&outcomes, started_at, started, peak.load(Ordering::Relaxed));
        self.check_performance_targets(&cycle);
        Some(cycle)
    }

    /// Reserves the slots of a cycle: as many as jobs are queued and slots
    /// are free under the current limit (slots held by running cycles
    /// count); `None` when that is none.
    async fn initialise_cycle(&self) -> Option<CyclePlan> {
        let depth = self.inner.deps.store.queue_depth().await.ok()?;
        #[allow(clippy::cast_precision_loss)] // a queue never nears 2^52 jobs
        metrics::gauge!(names::QUEUE_DEPTH).set(depth as f64);
        if depth == 0 || !self.dispatching() {
            return None;
        }
        let limit = usize::try_from(self.concurrency_limit())
            .unwrap_or(1)
            .max(1);
        let depth = usize::try_from(depth).unwrap_or(usize::MAX);
        let slots = &self.inner.reserved_slots;
        let mut reserved = slots.load(Ordering::Acquire);
        loop {
            let budget = depth.min(limit.saturating_sub(reserved));
            if budget == 0 {
                return None;
            }
            match slots.compare_exchange(
                reserved,
                reserved + budget,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    return Some(CyclePlan {
                        budget,
                        slots: SlotReservation {
                            orchestrator: self.clone(),
                            held: budget,
                        },
                    });
                }
                Err(now) => reserved = now,
            }
        }
    }

    async fn process_cycle(
        &self,
        plan: CyclePlan,
        in_flight: &AtomicU32,
        peak: &AtomicU32,
    ) -> Vec<JobState> {
        let CyclePlan { budget, slots } = plan;
        let slots = Mutex::new(slots);
        let claims = futures::stream::unfold(self.clone(), |this| async move {
            let job = this.claim().await?;
            Some((job, this))
        })
        .take(budget);
        let outcomes = claims
            .map(|job| async {
                let outcome = self.process_job(job, in_flight, peak).await;
                // The slot is free for the next cycle at once.
                lock(&slots).job_ended();
                outcome
            })
            .buffer_unordered(budget)
            .filter_map(|state| async move { state })
            .collect()
            .await;
        // Dropping the reservation frees the slots no job was claimed for.
        drop(slots);
        outcomes
    }

    async fn claim(&self) -> Option<Job> {
        if !self.dispatching() {
            return None;
        }
        match self
            .inner
            .deps
            .store
            .claim_next(&self.inner.worker, LEASE)
            .await
        {
            Ok(job) => job,
            Err(err) => {
                tracing::error!(%err, "cannot claim a job");
                *lock(&self.inner.health) =
                    ComponentHealth::degraded(format!("cannot claim jobs: {err}"));
                None
            }
        }
    }

    fn finalise_cycle(
        &self,
        outcomes: &[JobState],
        started_at: Timestamp,
        started: Instant,
        parallelism: u32,
    ) -> ParallelExecution {
        let count = |pred: fn(&JobState) -> bool| {
            u32::try_from(outcomes.iter().filter(|s| pred(s)).count()).unwrap_or(u32::MAX)
        };
        let duration = started.elapsed();
        let cycle = ParallelExecution {
            id: uuid::Uuid::now_v7(),
            started_at,
            finished_at: Timestamp::now(),
            duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
            executed: u32::try_from(outcomes.len()).unwrap_or(u32::MAX),
            succeeded: count(|s| *s == JobState::Succeeded),
            failed: count(|s| {
                matches!(
                    s,
                    JobState::Failed | JobState::TimedOut | JobState::Cancelled
                )
            }),
            parallelism,
        };
        lock(&self.inner.stats).cycle_completed(cycle.clone());
        metrics::counter!(names::CYCLES_TOTAL).increment(1);
        metrics::histogram!(names::CYCLE_DURATION_SECONDS).record(duration.as_secs_f64());
        self.publish(
            Event::new(
                EventKind::CycleCompleted,
                format!(
                    "cycle ran {} jobs: {} succeeded, {} failed, parallelism {}",
                    cycle.executed, cycle.succeeded, cycle.failed, cycle.parallelism
                ),
            )
            .with_data(serde_json::to_value(&cycle).unwrap_or_default()),
        );
        cycle
    }

    fn check_performance_targets(&self, cycle: &ParallelExecution) {
        let target = self.config().orchestrator.target_cycle_ms;
        if cycle.duration_ms > target {
            self.publish(
                Event::new(
                    EventKind::PerformanceWarning,
                    format!(
                        "cycle took {} ms, over the {target} ms target",
                        cycle.duration_ms
                    ),
                )
                .with_data(
                    serde_json::json!({"cycleMs": cycle.duration_ms, "targetCycleMs": target}),
                ),
            );
        }
    }

    /// Records the cancel of a job an operator cancelled while it was being
    /// claimed, unless the cancel already recorded a final state.
    async fn record_operator_cancel(&self, job: &Job) {
        match self
            .inner
            .deps
            .store
            .transition(
                job.id,
                JobState::Cancelled,
                JobPatch::new().error("cancelled by an operator"),
            )
            .await
        {
            Ok(cancelled) => self.finish_bookkeeping(
                &cancelled,
                format!("job {} cancelled before it started", job.id),
                false,
            ),
            Err(orchex_store::StoreError::IllegalTransition { source, .. })
                if source.from.is_finished() => {}
            Err(err) => {
                tracing::warn!(job = %job.id, %err, "cannot record an operator's cancel; recovery will account for it");
            }
        }
    }

    /// Runs one claimed job to its final state; `None` when it was not
    /// ours to finish (cancelled while queued).
    async fn process_job(
        &self,
        job: Job,
        in_flight: &AtomicU32,
        peak: &AtomicU32,
    ) -> Option<JobState> {
        if lock(&self.inner.cancelled_while_queued).remove(&job.id) {
            self.record_operator_cancel(&job).await;
            return None;
        }
        let config = self.config();
        let routing = self.routing();
        let token = CancellationToken::new();
        let pipeline = routing.pipeline(&job.pipeline).cloned();
        let repo = config
            .repositories
            .iter()
            .find(|r| r.name == job.repo)
            .cloned();
        let steps_total = pipeline.as_ref().map_or(0, |p| {
            u32::try_from(p.steps.len() + p.validate.len()).unwrap_or(u32::MAX)
        });
        lock(&self.inner.running).insert(
            job.id,
            Running {
                token: token.clone(),
                info: RunningJob {
                    id: job.id,
                    repo: job.repo.clone(),
                    pipeline: job.pipeline.clone(),
                    started_at: Timestamp::now(),
                    steps_done: 0,
                    steps_total,
                },
            },
        );
        // A cancel that read the job as queued just before this claim has
        // marked it by now: the job is the operator's, not ours to run.
        if lock(&self.inner.cancelled_while_queued).remove(&job.id) {
            lock(&self.inner.running).remove(&job.id);
            self.inner.running_changed.notify_waiters();
            self.record_operator_cancel(&job).await;
            return None;
        }
        let now_running = in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        peak.fetch_max(now_running, Ordering::Relaxed);
        metrics::gauge!(names::JOBS_RUNNING).increment(1.0);
        self.publish(Self::job_event(
            &job,
            EventKind::JobStarted,
            format!("job {} started", job.id),
        ));
        let started = Instant::now();

        // The repository's write lock, when the job got as far as a
        // delivery: held until the outcome is recorded.
        let mut writer = None;
        let (state, patch) = match (pipeline, repo) {
            (None, _) => (
                JobState::Failed,
                JobPatch::new().error(format!("pipeline {} is no longer configured", job.pipeline)),
            ),
            (_, None) => (
                JobState::Failed,
                JobPatch::new().error(format!("repository {} is no longer configured", job.repo)),
            ),
            (Some(pipeline), Some(repo)) => {
                self.guarded_run(
                    &job,
                    &pipeline,
                    &repo,
                    &config,
                    &token,
                    in_flight,
                    &mut writer,
                )
                .await
            }
        };

        in_flight.fetch_sub(1, Ordering::Relaxed);
        metrics::gauge!(names::JOBS_RUNNING).decrement(1.0);
        let recorded = self.inner.deps.store.transition(job.id, state, patch).await;
        // The outcome is durable: the repository's next writer may read it.
        drop(writer);
        let final_job = match recorded {
            Ok(job) => job,
            Err(orchex_store::StoreError::IllegalTransition { source, .. })
                if source.from.is_finished() =>
            {
                // An operator ended it (cancel) while it was being
                // dispatched; their outcome stands and nothing is wrong.
                tracing::info!(job = %job.id, state = %source.from, "the job was ended by an operator while it ran");
                lock(&self.inner.running).remove(&job.id);
                self.inner.running_changed.notify_waiters();
                return None;
            }
            Err(err) => {
                tracing::error!(job = %job.id, %err, "cannot record a job's outcome; recovery will account for it");
                *lock(&self.inner.health) =
                    ComponentHealth::degraded(format!("cannot record job outcomes: {err}"));
                lock(&self.inner.running).remove(&job.id);
                self.inner.running_changed.notify_waiters();
                return Some(state);
            }
        };
        lock(&self.inner.running).remove(&job.id);
        self.inner.running_changed.notify_waiters();
        metrics::histogram!(names::JOB_DURATION_SECONDS, "pipeline" => job.pipeline.clone())
            .record(started.elapsed().as_secs_f64());
        let message = outcome_message(&final_job);
        let delivered = final_job
            .delivery
            .as_ref()
            .is_some_and(|d| d.kind != orchex_core::Delivery::None && !d.files.is_empty());
        self.finish_bookkeeping(&final_job, message, delivered);
        self.queue_follow_up(&final_job).await;
        Some(state)
    }

    fn finish_bookkeeping(&self, job: &Job, message: String, delivered: bool) {
        let state = job.state();
        lock(&self.inner.stats).job_finished(state, delivered);
        metrics::counter!(
            names::JOBS_TOTAL,
            "repo" => job.repo.to_string(),
            "pipeline" => job.pipeline.clone(),
            "outcome" => state.as_str()
        )
        .increment(1);
        let kind = match state {
            JobState::Succeeded => EventKind::JobSucceeded,
            JobState::TimedOut => EventKind::JobTimedOut,
            JobState::Cancelled => EventKind::JobCancelled,
            JobState::Skipped => EventKind::JobSkipped,
            _ => EventKind::JobFailed,
        };
        let data = serde_json::json!({
            "state": state,
            "changed": job.changed,
            "skipReason": job.skip_reason,
            "error": job.error,
            "delivery": job.delivery,
            "diff": job.diff,
        });
        self.publish(Self::job_event(job, kind, message).with_data(data));
    }

    /// Queues the next pipeline of a `sequential` route once `job` ended:
    /// the head of the job's stored `trigger.then`, carrying the rest.
    async fn queue_follow_up(&self, job: &Job) {
        let mut sequences = Vec::new();
        if !job.trigger.then.is_empty() {
            sequences.push(job.trigger.clone());
        }
        if let Some(extra) = lock(&self.inner.follow_ups).remove(&job.id) {
            sequences.extend(extra);
        }
        let config = self.config();
        for sequence in sequences {
            let mut rest = sequence.then.clone().into_iter();
            let Some(pipeline) = rest.next() else {
                continue;
            };
            let next = Trigger {
                pipeline: Some(pipeline.clone()),
                then: rest.collect(),
                ..sequence
            };
            match self.enqueue(&next, &pipeline, &config).await {
                Ok(_) => self.inner.wake.notify_one(),
                Err(err) => tracing::error!(%err, "cannot queue the next sequential pipeline"),
            }
        }
    }

    /// The safety chain, in order: stop check, rate limiter, circuit
    /// breaker, bulkhead, then the engine (whose first check is the
    /// `unchanged` skip). The repository's write lock, if the engine took
    /// it for a delivery, is handed to `writer`, for the caller to release
    /// once the outcome is recorded.
    #[allow(clippy::too_many_arguments)]
    async fn guarded_run(
        &self,
        job: &Job,
        pipeline: &orchex_core::Pipeline,
        repo: &Repository,
        config: &Config,
        token: &CancellationToken,
        in_flight: &AtomicU32,
        writer: &mut Option<engine::WriterGuard>,
    ) -> (JobState, JobPatch) {
        if self.state() == RunState::EmergencyStopped {
            return (JobState::Cancelled, JobPatch::new().error("emergency stop"));
        }
        if !job.trigger.force
            && let Err(refused) = self.inner.limiter.check(&job.repo, pipeline.rate_cost)
        {
            let retry_at = now_plus(refused.wait_time().unwrap_or_default());
            self.publish(
                Self::job_event(
                    job,
                    EventKind::RateLimited,
                    format!(
                        "rate limit of {} reached; next token at {retry_at}",
                        job.repo
                    ),
                )
                .with_data(serde_json::json!({"retryAt": retry_at, "cost": pipeline.rate_cost})),
            );
            return (
                JobState::Skipped,
                JobPatch::new().skip_reason(SkipReason::RateLimited { retry_at }),
            );
        }
        let breaker = self
            .inner
            .breakers
            .get_or_insert(format!("{}/{}", job.repo, job.pipeline));
        let permit = match breaker.try_acquire_owned() {
            Ok(permit) => permit,
            Err(refused) => {
                let retry_at = refused.retry_after().map(now_plus);
                return (
                    JobState::Skipped,
                    JobPatch::new().skip_reason(SkipReason::CircuitOpen { retry_at }),
                );
            }
        };
        let slot = tokio::select! {
            slot = self.inner.bulkhead.acquire() => slot,
            () = token.cancelled() => {
                permit.ignore();
                return (JobState::Cancelled, JobPatch::new().error("cancelled while waiting for a slot"));
            }
        };
        let Ok(_slot) = slot else {
            permit.ignore();
            return (
                JobState::Failed,
                JobPatch::new().error("the job bulkhead refused the job"),
            );
        };
        let started = Instant::now();
        let progress_of = Arc::clone(&self.inner);
        let job_id = job.id;
        let result = self
            .inner
            .engine
            .run(JobRequest {
                on_step: Arc::new(move || {
                    if let Some(running) = lock(&progress_of.running).get_mut(&job_id) {
                        running.info.steps_done += 1;
                    }
                }),
                job,
                pipeline,
                repo,
                protected_paths: &config.protected_paths,
                job_timeout: Duration::from_secs(config.optimizer.safety.job_timeout_secs),
                cancel: token.clone(),
            })
            .await;
        *writer = result.writer;
        let latency = started.elapsed();
        let load = in_flight.load(Ordering::Relaxed);
        let mut patch = JobPatch::new();
        if let Some(hash) = result.input_hash {
            patch = patch.input_hash(hash);
        }
        match result.outcome {
            Outcome::Succeeded {
                changed,
                diff,
                delivery,
                impact,
            } => {
                permit.success();
                self.inner
                    .adaptive
                    .record(latency, load, LimitOutcome::Success);
                patch = patch.changed(changed);
                if let Some(diff) = diff {
                    patch = patch.diff(diff);
                }
                if let Some(delivery) = delivery {
                    let rollback = if delivery.kind == orchex_core::Delivery::None
                        || delivery.files.is_empty()
                    {
                        None
                    } else {
                        Some(orchex_core::RollbackState::Available)
                    };
                    patch = patch.delivery(delivery);
                    if let Some(rollback) = rollback {
                        patch = patch.rollback(rollback);
                    }
                }
                if !impact.is_empty() {
                    patch = patch.impact(impact);
                }
                (JobState::Succeeded, patch)
            }
            Outcome::Failed { error } => {
                permit.failure();
                self.inner
                    .adaptive
                    .record(latency, load, LimitOutcome::Dropped);
                (JobState::Failed, patch.error(error))
            }
            Outcome::TimedOut { error } => {
                permit.failure();
                self.inner
                    .adaptive
                    .record(latency, load, LimitOutcome::Dropped);
                (JobState::TimedOut, patch.error(error))
            }
            Outcome::Cancelled { reason } => {
                permit.ignore();
                (JobState::Cancelled, patch.error(reason))
            }
            Outcome::Skipped(reason) => {
                permit.ignore();
                (JobState::Skipped, patch.skip_reason(reason))
            }
        }
    }

    /// Runs `job` (already in the store) through the engine alone: the same
    /// future the cycle awaits inside its safety chain, without routing, the
    /// queue, the chain, the outcome's record, stats or events. Returns the
    /// state the cycle would record.
    ///
    /// For the benchmark that sets the full orchestrator path beside a bare
    /// `buffer_unordered` over the same engine futures; not part of the API.
    #[doc(hidden)]
    pub async fn run_engine_alone_for_benchmarks(&self, job: &Job) -> JobState {
        let config = self.config();
        let routing = self.routing();
        let (Some(pipeline), Some(repo)) = (
            routing.pipeline(&job.pipeline),
            config.repositories.iter().find(|r| r.name == job.repo),
        ) else {
            return JobState::Failed;
        };
        let result = self
            .inner
            .engine
            .run(JobRequest {
                on_step: Arc::new(|| {}),
                job,
                pipeline,
                repo,
                protected_paths: &config.protected_paths,
                job_timeout: Duration::from_secs(config.optimizer.safety.job_timeout_secs),
                cancel: CancellationToken::new(),
            })
            .await;
        match result.outcome {
            Outcome::Succeeded { .. } => JobState::Succeeded,
            Outcome::Failed { .. } => JobState::Failed,
            Outcome::TimedOut { .. } => JobState::TimedOut,
            Outcome::Cancelled { .. } => JobState::Cancelled,
            Outcome::Skipped(_) => JobState::Skipped,
        }
    }

    // === overrides ===

    /// The run state.
    pub fn state(&self) -> RunState {
        *self.inner.state.borrow()
    }

    /// A receiver that sees every run-state change.
    pub fn subscribe_state(&self) -> watch::Receiver<RunState> {
        self.inner.state.subscribe()
    }

    /// Records the held run state for the next start (see `held`). A
    /// failure (a full disk) is logged: the hold applies now, only a
    /// restart would forget it.
    fn remember_hold(&self, state: RunState) {
        report_hold(state, crate::held::save(&self.inner.deps.storage, state));
    }

    /// Stops dispatching new jobs; running jobs finish. The pause outlives
    /// a restart until [`Orchestrator::resume`].
    pub fn pause(&self) -> Result<RunState, ControlError> {
        match self.state() {
            RunState::Running | RunState::Paused => {
                self.inner.state.send_replace(RunState::Paused);
                self.remember_hold(RunState::Paused);
                self.publish(Event::new(
                    EventKind::Paused,
                    "dispatching paused by an operator",
                ));
                Ok(RunState::Paused)
            }
            other => Err(ControlError::Conflict(format!(
                "cannot pause while {}; resume first",
                other.as_str()
            ))),
        }
    }

    /// Resumes dispatching after a pause or an emergency stop.
    pub fn resume(&self) -> Result<RunState, ControlError> {
        if !self.is_started() {
            return Err(ControlError::Unavailable(
                "the orchestrator is not running".to_owned(),
            ));
        }
        self.inner.state.send_replace(RunState::Running);
        self.remember_hold(RunState::Running);
        self.publish(Event::new(EventKind::Resumed, "dispatching resumed"));
        self.inner.wake.notify_one();
        Ok(RunState::Running)
    }

    /// Stops dispatching, cancels every running job (their process groups
    /// are killed, their workspaces discarded, nothing is delivered) and
    /// returns once all of them have stopped. Stays stopped until
    /// [`Orchestrator::resume`], across restarts too. Returns the cancelled
    /// jobs.
    pub async fn emergency_stop(&self) -> Vec<JobId> {
        self.inner.state.send_replace(RunState::EmergencyStopped);
        let cancelled: Vec<JobId> = {
            let running = lock(&self.inner.running);
            for job in running.values() {
                job.token.cancel();
            }
            running.keys().copied().collect()
        };
        // Recorded while the jobs stop, not before: the fsync must not delay
        // a single kill.
        let storage = self.inner.deps.storage.clone();
        let recorded = tokio::task::spawn_blocking(move || {
            crate::held::save(&storage, RunState::EmergencyStopped)
        });
        let started = Instant::now();
        let stopped = tokio::time::timeout(EMERGENCY_WAIT, self.wait_idle())
            .await
            .is_ok();
        report_hold(
            RunState::EmergencyStopped,
            recorded
                .await
                .unwrap_or_else(|err| Err(std::io::Error::other(err))),
        );
        self.publish(
            Event::new(
                EventKind::EmergencyStop,
                format!(
                    "emergency stop: {} running jobs cancelled in {} ms",
                    cancelled.len(),
                    started.elapsed().as_millis()
                ),
            )
            .with_severity(Severity::Critical)
            .with_data(serde_json::json!({"cancelled": cancelled, "allStopped": stopped})),
        );
        cancelled
    }

    /// Cancels a queued or running job.
    pub async fn cancel(&self, id: JobId) -> Result<Job, ControlError> {
        if let Some(running) = lock(&self.inner.running).get(&id) {
            running.token.cancel();
        }
        let store = &self.inner.deps.store;
        let internal = |e: &dyn std::fmt::Display| ControlError::Internal(format!("storage: {e}"));
        let job = store
            .get_job(id)
            .await
            .map_err(|e| internal(&e))?
            .ok_or_else(|| ControlError::NotFound(format!("job {id} not found")))?;
        match job.state() {
            JobState::Running => {
                // Claimed between the first look and the read: cancel it
                // now, or, if the dispatcher has not registered it yet,
                // mark it so that the dispatcher drops it.
                if let Some(running) = lock(&self.inner.running).get(&id) {
                    running.token.cancel();
                } else {
                    lock(&self.inner.cancelled_while_queued).insert(id);
                }
                Ok(job)
            }
            JobState::Queued => {
                lock(&self.inner.cancelled_while_queued).insert(id);
                let job = store
                    .transition(
                        id,
                        JobState::Cancelled,
                        JobPatch::new().error("cancelled by an operator"),
                    )
                    .await
                    .map_err(|e| ControlError::Conflict(e.to_string()))?;
                lock(&self.inner.follow_ups).remove(&id);
                // The dispatcher may have claimed it between the read above
                // and the transition (running → cancelled is legal too) and
                // checked the mark before it was set: then it is registered
                // as running by now, and its step must not go on under a
                // record that says cancelled. A registration after this look
                // comes after the mark, which the dispatcher checks once it
                // has registered.
                if let Some(running) = lock(&self.inner.running).get(&id) {
                    running.token.cancel();
                }
                self.finish_bookkeeping(&job, format!("job {id} cancelled while queued"), false);
                Ok(job)
            }
            other => Err(ControlError::Conflict(format!(
                "job {id} is {other}; only queued or running jobs can be cancelled"
            ))),
        }
    }

    /// Cancels every queued or running job matching `filter`; returns them.
    pub async fn cancel_matching(&self, filter: &CancelFilter) -> Result<Vec<JobId>, ControlError> {
        let states: Vec<JobState> = match filter.state {
            Some(state @ (JobState::Queued | JobState::Running)) => vec![state],
            Some(other) => {
                return Err(ControlError::BadRequest(format!(
                    "state must be queued or running, got {other}"
                )));
            }
            None => vec![JobState::Queued, JobState::Running],
        };
        let repo = filter
            .repo
            .as_deref()
            .map(RepoId::new)
            .transpose()
            .map_err(|e| ControlError::BadRequest(format!("repo: {e}")))?;
        let mut ids = Vec::new();
        for state in states {
            let mut job_filter = JobFilter::new().state(state);
            if let Some(repo) = &repo {
                job_filter = job_filter.repo(repo.clone());
            }
            if let Some(pipeline) = &filter.pipeline {
                job_filter = job_filter.pipeline(pipeline.clone());
            }
            let mut page = PageRequest::first().limit(500);
            loop {
                let jobs = self
                    .inner
                    .deps
                    .store
                    .list_jobs(job_filter.clone(), page.clone())
                    .await
                    .map_err(|e| ControlError::Internal(format!("storage: {e}")))?;
                ids.extend(jobs.items.iter().map(|job| job.id));
                match jobs.next_cursor {
                    Some(cursor) => page = PageRequest::first().limit(500).after(cursor),
                    None => break,
                }
            }
        }
        let mut cancelled = Vec::new();
        for id in ids {
            if self.cancel(id).await.is_ok() {
                cancelled.push(id);
            }
        }
        Ok(cancelled)
    }

    /// Queues a manual run.
    pub async fn trigger(&self, request: ManualRun) -> Result<Vec<Job>, ControlError> {
        let config = self.config();
        let repo = config
            .repositories
            .iter()
            .find(|r| r.name.as_str() == request.repo)
            .ok_or_else(|| {
                ControlError::NotFound(format!("repository {:?} is not configured", request.repo))
            })?;
        if !repo.enabled {
            return Err(ControlError::Conflict(format!(
                "repository {} is disabled",
                repo.name
            )));
        }
        if matches!(self.state(), RunState::EmergencyStopped) {
            return Err(ControlError::Unavailable(
                "an emergency stop is in effect; resume first".to_owned(),
            ));
        }
        let routing = self.routing();
        if let Some(pipeline) = &request.pipeline {
            if routing.pipeline(pipeline).is_none() {
                return Err(ControlError::NotFound(format!(
                    "pipeline {pipeline:?} is not configured"
                )));
            }
            if !routing.applies_to(pipeline, repo.name.as_str()) {
                return Err(ControlError::BadRequest(format!(
                    "pipeline {pipeline} does not apply to repository {}",
                    repo.name
                )));
            }
        }
        let mut trigger = Trigger::manual(repo.name.clone());
        trigger.pipeline = request.pipeline.clone();
        trigger.force = request.force;
        trigger.dry_run = request.dry_run;
        let jobs = self.submit(trigger).await?;
        if jobs.is_empty() {
            return Err(ControlError::BadRequest(format!(
                "no pipeline reacts to manual triggers on {}; name one with `pipeline`",
                repo.name
            )));
        }
        Ok(jobs)
    }

    /// Undoes a delivered job: restores exactly what it replaced, and
    /// refuses ([`ControlError::Conflict`]) where what it wrote has changed
    /// since, by the user or a later job.
    pub async fn rollback(&self, id: JobId) -> Result<Job, ControlError> {
        let store = &self.inner.deps.store;
        let job = store
            .get_job(id)
            .await
            .map_err(|e| ControlError::Internal(format!("storage: {e}")))?
            .ok_or_else(|| ControlError::NotFound(format!("job {id} not found")))?;
        let config = self.config();
        let repo = config
            .repositories
            .iter()
            .find(|r| r.name == job.repo)
            .ok_or_else(|| {
                ControlError::Conflict(format!("repository {} is no longer configured", job.repo))
            })?;
        self.roll_back(&job, &repo.path).await
    }

    /// Runs a rollback under the repository's writer lock and records its
    /// outcome: `rolledBack` with an event, or `superseded` on a conflict.
    async fn roll_back(&self, job: &Job, repo_path: &Path) -> Result<Job, ControlError> {
        let store = &self.inner.deps.store;
        let id = job.id;
        let _writer = self.inner.engine.writers.lock(&job.repo).await;
        // Read again under the lock: a rollback that held it before may
        // have finished this one already.
        let job = store
            .get_job(id)
            .await
            .map_err(|e| ControlError::Internal(format!("storage: {e}")))?
            .ok_or_else(|| ControlError::NotFound(format!("job {id} not found")))?;
        match engine::rollback(store.as_ref(), &job, repo_path).await {
            Ok(()) => {
                let job = store
                    .transition(
                        id,
                        JobState::RolledBack,
                        JobPatch::new().rollback(orchex_core::RollbackState::RolledBack),
                    )
                    .await
                    .map_err(|e| ControlError::Internal(format!("storage: {e}")))?;
                lock(&self.inner.stats).job_finished(JobState::RolledBack, false);
                self.publish(Self::job_event(
                    &job,
                    EventKind::JobRolledBack,
                    format!("job {id} rolled back"),
                ));
                Ok(job)
            }
            Err(RollbackError::Conflict(message)) => {
                // A resumed rollback may have restored part of the job
                // already: it stays in progress (a retry after the conflict
                // is resolved finishes it) instead of becoming `superseded`,
                // which no later rollback could resume.
                if job.rollback != Some(orchex_core::RollbackState::InProgress) {
                    let _ = store
                        .update_job(
                            id,
                            JobPatch::new().rollback(orchex_core::RollbackState::Superseded),
                        )
                        .await;
                }
                Err(ControlError::Conflict(message))
            }
            Err(RollbackError::NotDelivered(message)) => Err(ControlError::Conflict(message)),
            Err(refused @ (RollbackError::Refused(_) | RollbackError::Blocked(_))) => {
                // Nothing was restored: the intent recorded for this attempt
                // is withdrawn, so the next start does not retry it. A resumed
                // rollback stays in progress (an earlier attempt may have
                // restored part of it).
                if let Some(before) = job.rollback
                    && before != orchex_core::RollbackState::InProgress
                    && let Err(err) = store.update_job(id, JobPatch::new().rollback(before)).await
                {
                    tracing::warn!(job = %id, %err, "cannot withdraw a rollback that did not start");
                }
                Err(match refused {
                    RollbackError::Blocked(message) => ControlError::Conflict(message),
                    other => ControlError::Internal(other.to_string()),
                })
            }
            Err(RollbackError::Failed(message)) => Err(ControlError::Internal(message)),
        }
    }

    // === views ===

    /// The current concurrency limit: the adaptive limit when
    /// `adaptiveOptimization` is on, `maxConcurrent` otherwise.
    pub fn concurrency_limit(&self) -> u32 {
        let config = self.config();
        if config.orchestrator.adaptive_optimization {
            self.inner
                .adaptive
                .current()
                .clamp(1, max_concurrent(&config))
        } else {
            max_concurrent(&config)
        }
    }

    /// The adaptive limit, to observe or feed it.
    pub fn adaptive_limit(&self) -> &AdaptiveLimit {
        &self.inner.adaptive
    }

    /// The routing table.
    pub fn routing_table(&self) -> Vec<RouteEntry> {
        self.routing().entries()
    }

    /// The pipelines a trigger of `kind` on the repository `repo` may run,
    /// in configuration order (the dashboard's manual-run choices).
    pub fn pipelines_for(&self, repo: &str, kind: TriggerKind) -> Vec<String> {
        let routing = self.routing();
        let mut names: Vec<String> = Vec::new();
        for entry in routing.entries() {
            if entry.trigger == kind
                && routing.applies_to(&entry.pipeline, repo)
                && !names.contains(&entry.pipeline)
            {
                names.push(entry.pipeline);
            }
        }
        names
    }

    /// Running totals.
    pub fn stats(&self) -> orchex_core::OrchestrationStats {
        lock(&self.inner.stats).totals()
    }

    /// The orchestrator's own health (storage writes, claims).
    pub fn health(&self) -> ComponentHealth {
        lock(&self.inner.health).clone()
    }

    /// The circuit breakers created so far.
    pub fn breakers(&self) -> Vec<BreakerInfo> {
        let mut breakers: Vec<BreakerInfo> = self
            .inner
            .breakers
            .snapshots()
            .into_iter()
            .map(|(name, snapshot)| BreakerInfo {
                name,
                state: circuit_state_name(snapshot.state).to_owned(),
                failures: snapshot.failures,
                total: snapshot.calls,
                successes: snapshot.successes,
                rejections: snapshot.not_permitted,
                failure_rate: snapshot.failure_rate,
            })
            .collect();
        breakers.sort_by(|a, b| a.name.cmp(&b.name));
        breakers
    }

    /// Everything the dashboard shows, in one read.
    pub async fn snapshot(&self) -> OrchestratorSnapshot {
        let config = self.config();
        let queue_depth = self
            .inner
            .deps
            .store
            .queue_depth()
            .await
            .unwrap_or_default();
        let mut running: Vec<RunningJob> = lock(&self.inner.running)
            .values()
            .map(|r| r.info.clone())
            .collect();
        running.sort_by_key(|r| r.started_at);
        let per_hour = config.optimizer.safety.rate_limit_per_hour;
        let limiters = config
            .repositories
            .iter()
            .map(|repo| LimiterInfo {
                repo: repo.name.clone(),
                available: self.inner.limiter.available(&repo.name),
                per_hour,
            })
            .collect();
        OrchestratorSnapshot {
            state: self.state(),
            stats: self.stats(),
            concurrency_limit: self.concurrency_limit(),
            max_concurrent: max_concurrent(&config),
            queue_depth,
            running,
            breakers: self.breakers(),
            limiters,
            recent_cycles: lock(&self.inner.stats).recent_cycles(),
        }
    }

    // === background loops ===

    async fn intake_loop(
        self,
        mut triggers: std::pin::Pin<Box<dyn Stream<Item = Trigger> + Send>>,
        shutdown: CancellationToken,
    ) {
        loop {
            let trigger = tokio::select! {
                () = shutdown.cancelled() => return,
                trigger = triggers.next() => trigger,
            };
            let Some(trigger) = trigger else { return };
            if let Err(err) = self.submit(trigger).await {
                tracing::error!(%err, "cannot queue the jobs of a trigger");
            }
        }
    }

    async fn schedule_loop(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(TICK) => {}
            }
            if !self.config().optimizer.schedule.enabled || self.state() != RunState::Running {
                continue;
            }
            let due = lock(&self.inner.scheduler).take_due(Timestamp::now());
            for repo in due {
                if let Err(err) = self.submit(Trigger::new(repo, TriggerKind::Schedule)).await {
                    tracing::error!(%err, "cannot queue a scheduled run");
                }
            }
        }
    }

    async fn health_loop(self, shutdown: CancellationToken) {
        loop {
            let interval =
                Duration::from_secs(self.config().orchestrator.health_check_interval_secs.max(1));
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(interval) => {}
            }
            self.health_check().await;
        }
    }

    /// Judges the interval since the last check and reports it: an alert
    /// when work was queued but no cycle completed, a warning when the
    /// success rate was under 90 % or the mean cycle time over target, a
    /// `health_check` event otherwise.
    pub async fn health_check(&self) {
        let figures = lock(&self.inner.stats).take_interval();
        let queue_depth = self.inner.deps.store.queue_depth().await.ok();
        let config = self.config();
        let target = config.orchestrator.target_cycle_ms;
        let open_breakers = self
            .breakers()
            .into_iter()
            .filter(|b| b.state != "closed")
            .map(|b| b.name)
            .collect::<Vec<_>>();
        let data = serde_json::json!({
            "cycles": figures.cycles,
            "successRate": figures.success_rate(),
            "averageCycleMs": figures.average_cycle_ms(),
            "queueDepth": queue_depth,
            "residentMemoryBytes": resident_memory_bytes(),
            "notClosedBreakers": open_breakers,
            "state": self.state(),
        });
        let (event, health) = if self.state() == RunState::Running
            && figures.cycles == 0
            && queue_depth.unwrap_or(0) > 0
        {
            (
                Event::new(
                    EventKind::PerformanceAlert,
                    "work is queued but no cycle completed in the last interval",
                ),
                ComponentHealth::degraded("no cycle completed while work was queued"),
            )
        } else if figures.success_rate().is_some_and(|rate| rate < 0.9) {
            (
                Event::new(
                    EventKind::PerformanceWarning,
                    "job success rate under 90 % in the last interval",
                ),
                ComponentHealth::degraded("success rate under 90 %"),
            )
        } else if figures
            .average_cycle_ms()
            .is_some_and(|ms| ms > f64::from(u32::try_from(target).unwrap_or(u32::MAX)))
        {
            (
                Event::new(
                    EventKind::PerformanceWarning,
                    format!("average cycle time over the {target} ms target"),
                ),
                ComponentHealth::degraded("cycles slower than targetCycleMs"),
            )
        } else {
            (
                Event::new(EventKind::HealthCheck, "orchestrator healthy"),
                ComponentHealth::ok(),
            )
        };
        *lock(&self.inner.health) = health;
        self.publish(event.with_data(data));
    }

    async fn signal_loop(self, shutdown: CancellationToken) {
        let mut breaker_changes = self.inner.breakers.subscribe();
        let mut limit_changes = self.inner.adaptive.changes();
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                change = breaker_changes.recv() => match change {
                    Ok(change) => {
                        let name = change.name.as_deref().unwrap_or("").to_owned();
                        let (repo, pipeline) = name.split_once('/').unwrap_or((name.as_str(), ""));
                        let mut event = Event::new(
                            EventKind::CircuitStateChanged,
                            format!("circuit breaker {name}: {} -> {}", circuit_state_name(change.from), circuit_state_name(change.to)),
                        )
                        .with_data(serde_json::json!({
                            "name": name,
                            "from": circuit_state_name(change.from),
                            "to": circuit_state_name(change.to),
                        }));
                        if let Ok(repo) = RepoId::new(repo) {
                            event = event.with_repo(repo);
                        }
                        if !pipeline.is_empty() {
                            event = event.with_pipeline(pipeline);
                        }
                        self.publish(event);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                change = limit_changes.recv() => match change {
                    Ok(change) => {
                        metrics::gauge!(names::CONCURRENCY_LIMIT).set(f64::from(change.to));
                        self.publish(
                            Event::new(EventKind::ConcurrencyChanged, format!("concurrency limit {} -> {}", change.from, change.to))
                                .with_data(serde_json::json!({"from": change.from, "to": change.to})),
                        );
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}

fn circuit_state_name(state: CircuitState) -> &'static str {
    match state {
        CircuitState::Closed => "closed",
        CircuitState::Open => "open",
        CircuitState::HalfOpen => "halfOpen",
        CircuitState::ForcedOpen => "forcedOpen",
        CircuitState::Disabled => "disabled",
        CircuitState::MetricsOnly => "metricsOnly",
        _ => "unknown",
    }
}

fn outcome_message(job: &Job) -> String {
    match job.state() {
        JobState::Succeeded if job.changed == Some(true) => {
            format!("job {} succeeded and delivered changes", job.id)
        }
        JobState::Succeeded => format!("job {} succeeded with no changes", job.id),
        JobState::Skipped => format!(
            "job {} skipped: {}",
            job.id,
            job.skip_reason
                .as_ref()
                .map_or_else(String::new, ToString::to_string)
        ),
        state => format!(
            "job {} {state}: {}",
            job.id,
            job.error.as_deref().unwrap_or("no reason recorded")
        ),
    }
}

/// Resident memory of this process, from `/proc/self/statm`.
fn resident_memory_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// A cycle's work: how many jobs it may claim, and the slots it holds.
struct CyclePlan {
    budget: usize,
    slots: SlotReservation,
}

/// Slots reserved by a cycle, freed one by one as its jobs end, and the
/// rest when it is dropped.
struct SlotReservation {
    orchestrator: Orchestrator,
    held: usize,
}

impl SlotReservation {
    /// Frees the slot of a job that ended, and wakes the cycle loop so the
    /// slot is filled at once if work is queued.
    fn job_ended(&mut self) {
        if self.release(1) {
            self.orchestrator.inner.wake.notify_one();
        }
    }

    fn release(&mut self, count: usize) -> bool {
        let count = count.min(self.held);
        if count == 0 {
            return false;
        }
        self.held -= count;
        self.orchestrator
            .inner
            .reserved_slots
            .fetch_sub(count, Ordering::AcqRel);
        true
    }
}

impl Drop for SlotReservation {
    /// The slots no job was claimed for: nothing claimable was left (the
    /// rest of the queue is not due yet, or dispatching stopped), so no
    /// wake-up; the next job queued or the tick starts the next cycle.
    fn drop(&mut self) {
        self.release(self.held);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use orchex_store::JobStore as _;

    use super::*;

    fn git(dir: &std::path::Path, args: &[&str]) -> String {
        let output = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "Test")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "Test")
            .env("GIT_COMMITTER_EMAIL", "test@example.com")
            .output()
            .unwrap();
        assert!(output.status.success(), "git {args:?}");
        String::from_utf8_lossy(&output.stdout).trim().to_owned()
    }

    /// Found by the crash loop (`orchex-reliability crash-loop`): a rollback
    /// (which holds the repository's write lock) ran between a delivery's
    /// read of the branch and its write or its recorded success, and the
    /// delivery failed ("branch moved") or was skipped as `manuallyEdited`.
    /// A delivery now waits for the lock, like rollbacks and recovery.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_delivery_waits_for_the_repository_writer() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let repo_dir = root.join("api");
        std::fs::create_dir_all(&repo_dir).unwrap();
        git(&repo_dir, &["init", "-q", "-b", "main"]);
        std::fs::write(repo_dir.join("README.md"), "hello\n").unwrap();
        git(&repo_dir, &["add", "-A"]);
        git(&repo_dir, &["commit", "-q", "-m", "initial"]);
        let marker = root.join("step-done");
        let mut config = Config::default();
        config.optimizer.schedule.enabled = false;
        let repo = RepoId::new("api").unwrap();
        config.repositories.push(Repository {
            name: repo.clone(),
            path: repo_dir.clone(),
            enabled: true,
            branch: Some("main".into()),
        });
        let script = format!("date +%N > stamp; touch {}", marker.display());
        let mut pipeline = orchex_core::Pipeline::new(
            "codegen",
            vec![orchex_core::Step {
                name: "generate".into(),
                run: Some(vec!["sh".into(), "-c".into(), script]),
                ..orchex_core::Step::default()
            }],
        );
        pipeline.triggers = vec![TriggerKind::Manual];
        config.pipelines.push(pipeline);
        let store = Arc::new(
            orchex_store::SqliteStore::open_in_dir(
                root.join("data"),
                orchex_store::StoreOptions::default(),
            )
            .await
            .unwrap(),
        );
        let orchestrator = Orchestrator::new(
            &config,
            OrchestratorDeps::new(store.clone(), Events::discard(), root.join("data")),
        )
        .unwrap();
        orchestrator.start(futures::stream::pending()).unwrap();

        // Someone (a rollback, say) holds the writer.
        let writer = orchestrator.inner.engine.writers.lock(&repo).await;
        let job = orchestrator
            .trigger(ManualRun {
                repo: "api".into(),
                pipeline: Some("codegen".into()),
                ..ManualRun::default()
            })
            .await
            .unwrap()
            .remove(0);
        while !marker.exists() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let waiting = store.get_job(job.id).await.unwrap().unwrap();
        assert_eq!(waiting.state(), JobState::Running);
        assert!(
            !repo_dir.join(".git/refs/heads/orchex/codegen").exists(),
            "the branch moved while another writer held the repository"
        );
        drop(writer);
        let mut done = waiting;
        for _ in 0..500 {
            done = store.get_job(job.id).await.unwrap().unwrap();
            if done.state() != JobState::Running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(done.state(), JobState::Succeeded, "{:?}", done.error);
        // Released once the outcome is recorded.
        let again = tokio::time::timeout(
            Duration::from_secs(5),
            orchestrator.inner.engine.writers.lock(&repo),
        )
        .await;
        assert!(again.is_ok(), "the job kept the repository's writer");
        orchestrator.stop(Duration::from_secs(5)).await;
    }
}
