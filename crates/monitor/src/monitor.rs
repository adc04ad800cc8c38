//! [`Monitor`]: the public facade. It owns one task per repository (the
//! watcher, the settler and the ref tracker of that repository), the
//! trigger stream, the event broadcast and the [`Analyzer`].
//!
//! Each repository runs on its own: its events, settling, errors and
//! polling fallback never affect another one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{Stream, StreamExt};
use orchex_core::config::{MonitorConfig, ThresholdsConfig, TriggersConfig};
use orchex_core::{
    AnalysisReport, ChangeBatch, Event, EventKind, RepoId, Repository, Severity, Trigger,
    TriggerKind,
};
use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{BroadcastStream, UnboundedReceiverStream};

use crate::analysis::{Analyzer, AnalyzerOptions};
use crate::error::{BoxError, MonitorError};
use crate::git::GitHandle;
use crate::git_triggers::{RefChange, RefState, RefTracker};
use crate::settle::{SettleConfig, Settler};
use crate::watcher::{Mode, Outcome, RawEvent, RawSink, RepoFs, WatchOptions};

/// Most raw events handled in one go.
const MAX_EVENTS_PER_BATCH: usize = 16 * 1024;

/// Most paths listed in a `change_detected` event's data.
const MAX_PATHS_IN_EVENT: usize = 100;

/// Tuning that is not part of the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorOptions {
    /// Most watches one repository may use; beyond it the repository is
    /// polled instead. `None` means the kernel's limit.
    pub watch_limit: Option<usize>,
    /// Interval of the polling fallback.
    pub poll_interval: Duration,
    /// Poll every repository instead of using native watches.
    pub force_polling: bool,
    /// Walker threads per repository.
    pub walker_threads: usize,
    /// Analyse each repository when it is added and after each new commit,
    /// so that `threshold` triggers fire without anyone asking.
    pub analyse_on_commit: bool,
    /// Capacity of the event broadcast; a subscriber that falls further
    /// behind misses events.
    pub event_capacity: usize,
    /// The analyzer's tuning; `cache_ttl` and `history_days` are replaced by
    /// the configuration's values.
    pub analyzer: AnalyzerOptions,
}

impl Default for MonitorOptions {
    fn default() -> Self {
        Self {
            watch_limit: None,
            poll_interval: Duration::from_secs(2),
            force_polling: false,
            walker_threads: std::thread::available_parallelism()
                .map_or(1, std::num::NonZero::get)
                .min(4),
            analyse_on_commit: true,
            event_capacity: 4096,
            analyzer: AnalyzerOptions::default(),
        }
    }
}

/// How a repository is being watched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "camelCase")]
#[non_exhaustive]
pub enum WatcherState {
    /// The initial walk is running.
    Starting,
    /// Native watches (inotify on Linux) are installed.
    Watching,
    /// The repository is polled, for the given reason.
    Polling {
        /// Why (for instance the kernel watch limit, with the fix).
        reason: String,
    },
    /// The repository cannot be watched any more.
    Error {
        /// Why.
        reason: String,
    },
    /// Watching is switched off (`enabled = false` or `watchEnabled = false`).
    Disabled,
}

/// The watcher status of one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RepoStatus {
    /// The repository.
    pub repo: RepoId,
    /// Its working tree as configured.
    pub path: PathBuf,
    /// How it is watched.
    #[serde(flatten)]
    pub state: WatcherState,
    /// Directories with a watch (working tree and git directory).
    pub watched_dirs: usize,
    /// Why the repository's refs could not be read at the last look (a
    /// corrupt or unreadable ref); cleared once they read again. Watching
    /// goes on meanwhile, but no commit or push can be detected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ref_error: Option<String>,
}

/// The monitor's triggers, in the order they were produced. Ends when the
/// [`Monitor`] and all its repository tasks are gone.
#[derive(Debug)]
pub struct TriggerStream {
    inner: UnboundedReceiverStream<Trigger>,
}

impl Stream for TriggerStream {
    type Item = Trigger;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Trigger>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// The monitor's events (`change_detected`, `commit_detected`,
/// `push_detected`, `analysis_completed`, `watcher_error`). A subscriber
/// that falls more than the broadcast capacity behind skips what it missed.
pub struct EventStream {
    inner: BroadcastStream<Event>,
}

impl std::fmt::Debug for EventStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventStream").finish_non_exhaustive()
    }
}

impl Stream for EventStream {
    type Item = Event;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        loop {
            match Pin::new(&mut self.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(event))) => return Poll::Ready(Some(event)),
                Poll::Ready(Some(Err(lagged))) => {
                    tracing::warn!("monitor event subscriber lagged: {lagged}");
                }
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

/// Watches repositories and turns what happens in them into [`Trigger`]s.
///
/// Cheap to clone; clones share everything. Needs a tokio runtime. Dropping
/// the last clone stops every repository task.
#[derive(Debug, Clone)]
pub struct Monitor {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    outputs: Arc<Outputs>,
    repos: Mutex<HashMap<RepoId, RepoEntry>>,
}

#[derive(Debug)]
struct RepoEntry {
    path: PathBuf,
    status: Arc<RwLock<RepoStatus>>,
    running: Option<Running>,
}

#[derive(Debug)]
struct Running {
    commands: mpsc::UnboundedSender<Command>,
    git: GitHandle,
    task: JoinHandle<()>,
}

/// What repository tasks share: where results go, and the live config.
#[derive(Debug)]
struct Outputs {
    triggers: mpsc::UnboundedSender<Trigger>,
    events: broadcast::Sender<Event>,
    analyzer: Analyzer,
    config: RwLock<(MonitorConfig, ThresholdsConfig)>,
    above_thresholds: Mutex<HashMap<RepoId, (bool, bool)>>,
    options: MonitorOptions,
}

#[derive(Debug)]
enum Command {
    Rescan(oneshot::Sender<()>),
    Apply {
        settle: SettleConfig,
        triggers: TriggersConfig,
        globs: Vec<String>,
    },
    WatchedDirs(oneshot::Sender<Vec<PathBuf>>),
    SimulateOverflow,
    Shutdown,
}

fn read<T: Clone>(lock: &RwLock<T>) -> T {
    match lock.read() {
        Ok(value) => value.clone(),
        Err(poisoned) => poisoned.into_inner().clone(),
    }
}

fn write<T>(lock: &RwLock<T>, f: impl FnOnce(&mut T)) {
    match lock.write() {
        Ok(mut value) => f(&mut value),
        Err(poisoned) => f(&mut poisoned.into_inner()),
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match mutex.lock() {
        Ok(guard) => guard,
        Err(poisoned) => poisoned.into_inner(),
    }
}

impl Monitor {
    /// A monitor with the given configuration and no repository, and the
    /// stream of its triggers.
    pub fn new(config: &MonitorConfig, thresholds: &ThresholdsConfig) -> (Self, TriggerStream) {
        Self::with_options(config, thresholds, MonitorOptions::default())
    }

    /// Like [`Monitor::new`], with explicit tuning.
    pub fn with_options(
        config: &MonitorConfig,
        thresholds: &ThresholdsConfig,
        options: MonitorOptions,
    ) -> (Self, TriggerStream) {
        let (triggers, receiver) = mpsc::unbounded_channel();
        let (events, _) = broadcast::channel(options.event_capacity.max(1));
        let mut analyzer_options = options.analyzer.clone();
        let from_config = AnalyzerOptions::from_config(&config.analysis);
        analyzer_options.cache_ttl = from_config.cache_ttl;
        analyzer_options.history_days = from_config.history_days;
        let outputs = Outputs {
            triggers,
            events,
            analyzer: Analyzer::new(analyzer_options),
            config: RwLock::new((config.clone(), thresholds.clone())),
            above_thresholds: Mutex::new(HashMap::new()),
            options,
        };
        (
            Self {
                shared: Arc::new(Shared {
                    outputs: Arc::new(outputs),
                    repos: Mutex::new(HashMap::new()),
                }),
            },
            TriggerStream {
                inner: UnboundedReceiverStream::new(receiver),
            },
        )
    }

    /// Subscribes to the monitor's events from now on.
    pub fn subscribe_events(&self) -> EventStream {
        EventStream {
            inner: BroadcastStream::new(self.shared.outputs.events.subscribe()),
        }
    }

    /// The analyzer (and its cache) the monitor uses.
    pub fn analyzer(&self) -> &Analyzer {
        &self.shared.outputs.analyzer
    }

    /// Starts watching `repository`.
    ///
    /// Returns once every watch is installed: from then on no change is
    /// missed. A path that is not a usable git repository is refused (and
    /// reported as a `watcher_error` event); other repositories are not
    /// affected.
    pub async fn add_repository(&self, repository: Repository) -> Result<RepoStatus, MonitorError> {
        let id = repository.name.clone();
        let status = Arc::new(RwLock::new(RepoStatus {
            repo: id.clone(),
            path: repository.path.clone(),
            state: WatcherState::Starting,
            watched_dirs: 0,
            ref_error: None,
        }));
        {
            let mut repos = lock(&self.shared.repos);
            if repos.contains_key(&id) {
                return Err(MonitorError::AlreadyMonitored { repo: id });
            }
            repos.insert(
                id.clone(),
                RepoEntry {
                    path: repository.path.clone(),
                    status: Arc::clone(&status),
                    running: None,
                },
            );
        }
        match self.start_repository(&repository, &status).await {
            Ok(running) => {
                let mut repos = lock(&self.shared.repos);
                match repos.get_mut(&id) {
                    Some(entry) => entry.running = running,
                    // Removed while starting: stop what was started.
                    None => {
                        if let Some(running) = running {
                            let _ = running.commands.send(Command::Shutdown);
                        }
                    }
                }
                Ok(read(&status))
            }
            Err(error) => {
                lock(&self.shared.repos).remove(&id);
                self.shared.outputs.event(
                    Event::new(EventKind::WatcherError, error.to_string())
                        .with_repo(id)
                        .with_data(serde_json::json!({ "path": repository.path })),
                );
                Err(error)
            }
        }
    }

    async fn start_repository(
        &self,
        repository: &Repository,
        status: &Arc<RwLock<RepoStatus>>,
    ) -> Result<Option<Running>, MonitorError> {
        let id = repository.name.clone();
        let (config, _) = read(&self.shared.outputs.config);
        if !repository.enabled || !config.filesystem.watch_enabled {
            write(status, |s| s.state = WatcherState::Disabled);
            return Ok(None);
        }
        let options = &self.shared.outputs.options;
        let path = repository.path.clone();
        let branch = repository.branch.clone();
        let (raw_tx, raw_rx) = mpsc::unbounded_channel();
        let watch_options = WatchOptions {
            globs: config.filesystem.ignore.clone(),
            watch_limit: options.watch_limit,
            poll_interval: options.poll_interval,
            force_polling: options.force_polling,
            threads: options.walker_threads.max(1),
        };
        let setup_id = id.clone();
        let setup = tokio::task::spawn_blocking(move || {
            let git = GitHandle::open(&path).map_err(|source| MonitorError::NotARepository {
                repo: setup_id.clone(),
                path: path.clone(),
                source,
            })?;
            let refs =
                RefState::read(&git, branch.as_deref()).map_err(|source| MonitorError::Git {
                    repo: setup_id.clone(),
                    context: "reading refs".to_owned(),
                    source,
                })?;
            let (fs, warnings) = RepoFs::start(
                setup_id.clone(),
                git.workdir(),
                git.git_dir(),
                git.common_dir(),
                watch_options,
                RawSink(raw_tx),
            )
            .map_err(|error| MonitorError::NotARepository {
                repo: setup_id.clone(),
                path: path.clone(),
                source: Box::new(error),
            })?;
            Ok::<_, MonitorError>((git, refs, fs, warnings))
        })
        .await
        .map_err(|error| MonitorError::NotARepository {
            repo: id.clone(),
            path: repository.path.clone(),
            source: Box::new(error),
        })?;
        let (git, refs, fs, warnings) = setup?;

        write(status, |s| {
            s.state = state_of(fs.mode());
            s.watched_dirs = fs.n_watches();
        });
        for warning in warnings {
            self.shared.outputs.watcher_warning(&id, &warning);
        }
        let (commands, command_rx) = mpsc::unbounded_channel();
        let mut settler = Settler::new(SettleConfig::from_config(
            &config.filesystem,
            &config.triggers,
        ));
        let now = tokio::time::Instant::now().into_std();
        settler.set_locked(fs.index_locked(), now);
        let actor = RepoActor {
            id: id.clone(),
            fs: Some(fs),
            git: git.clone(),
            refs: RefTracker::new(repository.branch.clone(), refs),
            settler,
            triggers: config.triggers.clone(),
            raw: raw_rx,
            commands: command_rx,
            outputs: Arc::clone(&self.shared.outputs),
            status: Arc::clone(status),
            anchor: (now, jiff::Timestamp::now()),
            dropping: false,
        };
        let task = tokio::spawn(actor.run());
        if self.shared.outputs.options.analyse_on_commit {
            Arc::clone(&self.shared.outputs).analyse_in_background(id, git.clone());
        }
        Ok(Some(Running {
            commands,
            git,
            task,
        }))
    }

    /// Stops watching `repo` (nothing on disk is touched). Returns once its
    /// watches are released.
    pub async fn remove_repository(&self, repo: &RepoId) -> Result<(), MonitorError> {
        let entry = lock(&self.shared.repos).remove(repo);
        let Some(entry) = entry else {
            return Err(MonitorError::UnknownRepository { repo: repo.clone() });
        };
        if let Some(running) = entry.running {
            let _ = running.commands.send(Command::Shutdown);
            let _ = running.task.await;
        }
        self.shared.outputs.analyzer.invalidate(repo);
        lock(&self.shared.outputs.above_thresholds).remove(repo);
        Ok(())
    }

    /// The status of every repository, sorted by name.
    pub fn statuses(&self) -> Vec<RepoStatus> {
        let mut statuses: Vec<RepoStatus> = lock(&self.shared.repos)
            .values()
            .map(|entry| read(&entry.status))
            .collect();
        statuses.sort_by(|a, b| a.repo.cmp(&b.repo));
        statuses
    }

    /// The status of one repository.
    pub fn status(&self, repo: &RepoId) -> Option<RepoStatus> {
        lock(&self.shared.repos)
            .get(repo)
            .map(|entry| read(&entry.status))
    }

    fn commands(&self, repo: &RepoId) -> Result<mpsc::UnboundedSender<Command>, MonitorError> {
        let repos = lock(&self.shared.repos);
        let entry = repos
            .get(repo)
            .ok_or_else(|| MonitorError::UnknownRepository { repo: repo.clone() })?;
        entry
            .running
            .as_ref()
            .map(|running| running.commands.clone())
            .ok_or(MonitorError::ShutDown)
    }

    /// The working-tree directories of `repo` that have a watch, sorted
    /// (canonical paths; the git directory's watches are not listed).
    pub async fn watched_dirs(&self, repo: &RepoId) -> Result<Vec<PathBuf>, MonitorError> {
        let (tx, rx) = oneshot::channel();
        self.commands(repo)?
            .send(Command::WatchedDirs(tx))
            .map_err(|_| MonitorError::ShutDown)?;
        rx.await.map_err(|_| MonitorError::ShutDown)
    }

    /// Walks `repo` again and reports whatever differs from the last known
    /// state, as the monitor does after a kernel queue overflow. Returns
    /// when the rescan is done (its changes are then settling).
    pub async fn force_rescan(&self, repo: &RepoId) -> Result<(), MonitorError> {
        let (tx, rx) = oneshot::channel();
        self.commands(repo)?
            .send(Command::Rescan(tx))
            .map_err(|_| MonitorError::ShutDown)?;
        rx.await.map_err(|_| MonitorError::ShutDown)
    }

    /// Test hook: behaves as if the kernel's event queue overflowed for
    /// `repo` — every event is dropped until the next
    /// [`Monitor::force_rescan`], which must then find the changes.
    #[doc(hidden)]
    pub fn simulate_overflow(&self, repo: &RepoId) -> Result<(), MonitorError> {
        self.commands(repo)?
            .send(Command::SimulateOverflow)
            .map_err(|_| MonitorError::ShutDown)
    }

    /// Applies a new configuration: debounce, `maxWaitMs`,
    /// `minChangesThreshold`, the trigger switches, the ignore globs (watches
    /// are added or removed to match), the analysis TTL and window, and the
    /// thresholds. Pending changes are kept and judged by the new rules.
    /// `watchEnabled` applies to repositories added afterwards.
    pub fn apply_config(&self, config: &MonitorConfig, thresholds: &ThresholdsConfig) {
        let outputs = &self.shared.outputs;
        let (old, _) = read(&outputs.config);
        write(&outputs.config, |current| {
            *current = (config.clone(), thresholds.clone());
        });
        let mut analyzer_options = outputs.analyzer.options();
        let from_config = AnalyzerOptions::from_config(&config.analysis);
        analyzer_options.cache_ttl = from_config.cache_ttl;
        analyzer_options.history_days = from_config.history_days;
        outputs.analyzer.set_options(analyzer_options);
        if old.filesystem.ignore != config.filesystem.ignore {
            outputs.analyzer.invalidate_all();
        }
        let settle = SettleConfig::from_config(&config.filesystem, &config.triggers);
        for entry in lock(&self.shared.repos).values() {
            if let Some(running) = &entry.running {
                let _ = running.commands.send(Command::Apply {
                    settle,
                    triggers: config.triggers.clone(),
                    globs: config.filesystem.ignore.clone(),
                });
            }
        }
    }

    /// The analysis of `repo` at its current head (cached per head commit
    /// for `cacheTtlSecs`; concurrent requests compute once). A fresh
    /// analysis emits `analysis_completed` and may fire a `threshold`
    /// trigger.
    pub async fn analysis(&self, repo: &RepoId) -> Result<Arc<AnalysisReport>, MonitorError> {
        let (git, path) = {
            let repos = lock(&self.shared.repos);
            let entry = repos
                .get(repo)
                .ok_or_else(|| MonitorError::UnknownRepository { repo: repo.clone() })?;
            (
                entry.running.as_ref().map(|running| running.git.clone()),
                entry.path.clone(),
            )
        };
        let git = if let Some(git) = git {
            git
        } else {
            let open_path = path.clone();
            tokio::task::spawn_blocking(move || GitHandle::open(&open_path))
                .await
                .map_err(|_| MonitorError::ShutDown)?
                .map_err(|source| MonitorError::NotARepository {
                    repo: repo.clone(),
                    path,
                    source,
                })?
        };
        Arc::clone(&self.shared.outputs).analyse(repo, git).await
    }

    /// Analyses every repository, at most `max_parallel` at once (see
    /// [`AnalyzerOptions`]).
    pub async fn analyse_all(&self) -> Vec<(RepoId, Result<Arc<AnalysisReport>, MonitorError>)> {
        let mut ids: Vec<RepoId> = lock(&self.shared.repos).keys().cloned().collect();
        ids.sort();
        let parallel = self.analyzer().options().max_parallel.max(1);
        futures::stream::iter(ids)
            .map(|id| async move {
                let result = self.analysis(&id).await;
                (id, result)
            })
            .buffer_unordered(parallel)
            .collect()
            .await
    }

    /// Stops every repository task and waits for them.
    pub async fn shutdown(&self) {
        let entries: Vec<RepoEntry> = lock(&self.shared.repos)
            .drain()
            .map(|(_, entry)| entry)
            .collect();
        for entry in entries {
            if let Some(running) = entry.running {
                let _ = running.commands.send(Command::Shutdown);
                let _ = running.task.await;
            }
        }
    }
}

fn state_of(mode: &Mode) -> WatcherState {
    match mode {
        Mode::Native => WatcherState::Watching,
        Mode::Polling(reason) => WatcherState::Polling {
            reason: reason.clone(),
        },
    }
}

impl Outputs {
    fn event(&self, event: Event) {
        // No subscriber is fine: events are best effort by design.
        let _ = self.events.send(event);
    }

    fn trigger(&self, trigger: Trigger) {
        let _ = self.triggers.send(trigger);
    }

    fn watcher_warning(&self, repo: &RepoId, message: &str) {
        tracing::warn!(%repo, "{message}");
        self.event(
            Event::new(EventKind::WatcherError, message)
                .with_repo(repo.clone())
                .with_severity(Severity::Warn),
        );
    }

    fn analyse_in_background(self: Arc<Self>, repo: RepoId, git: GitHandle) {
        tokio::spawn(async move {
            if let Err(error) = self.analyse(&repo, git).await {
                tracing::warn!(%repo, "background analysis failed: {error}");
            }
        });
    }

    async fn analyse(
        self: Arc<Self>,
        repo: &RepoId,
        git: GitHandle,
    ) -> Result<Arc<AnalysisReport>, MonitorError> {
        let (config, _) = read(&self.config);
        let (report, fresh) = self
            .analyzer
            .analyse_with(repo, git, config.filesystem.ignore.clone())
            .await?;
        if fresh {
            self.after_analysis(repo, &report);
        }
        Ok(report)
    }

    fn after_analysis(&self, repo: &RepoId, report: &AnalysisReport) {
        let name = repo.as_str().to_owned();
        metrics::gauge!("orchex_repository_health_score", "repo" => name.clone())
            .set(report.health);
        metrics::gauge!("orchex_repository_chaos_score", "repo" => name.clone()).set(report.chaos);
        metrics::gauge!("orchex_repository_complexity_score", "repo" => name)
            .set(report.complexity);
        self.event(
            Event::new(
                EventKind::AnalysisCompleted,
                format!(
                    "analysis of {repo}: complexity {:.2}, chaos {:.2}, health {:.2}",
                    report.complexity, report.chaos, report.health
                ),
            )
            .with_repo(repo.clone())
            .with_data(serde_json::json!({
                "commit": report.commit,
                "complexity": report.complexity,
                "chaos": report.chaos,
                "health": report.health,
                "durationMs": report.duration_ms,
            })),
        );
        let (_, thresholds) = read(&self.config);
        let above = (
            report.chaos > thresholds.chaos_threshold,
            report.complexity > thresholds.complexity_threshold,
        );
        let before = lock(&self.above_thresholds)
            .insert(repo.clone(), above)
            .unwrap_or((false, false));
        let chaos_crossed = above.0 && !before.0;
        let complexity_crossed = above.1 && !before.1;
        if chaos_crossed || complexity_crossed {
            let mut trigger = Trigger::new(repo.clone(), TriggerKind::Threshold);
            trigger.commit.clone_from(&report.commit);
            self.trigger(trigger);
        }
    }
}

/// The task of one repository.
struct RepoActor {
    id: RepoId,
    fs: Option<RepoFs>,
    git: GitHandle,
    refs: RefTracker,
    settler: Settler,
    triggers: TriggersConfig,
    raw: mpsc::UnboundedReceiver<RawEvent>,
    commands: mpsc::UnboundedReceiver<Command>,
    outputs: Arc<Outputs>,
    status: Arc<RwLock<RepoStatus>>,
    anchor: (std::time::Instant, jiff::Timestamp),
    dropping: bool,
}

fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

impl RepoActor {
    async fn run(mut self) {
        // The snapshot comes before any event is handled (see
        // `RepoFs::build_snapshot`); events wait in the channel meanwhile.
        if self.with_fs(RepoFs::build_snapshot).await.is_none() {
            return;
        }
        loop {
            let deadline = self.settler.deadline();
            tokio::select! {
                biased;
                command = self.commands.recv() => {
                    let Some(command) = command else { break };
                    if !self.on_command(command).await {
                        break;
                    }
                }
                Some(first) = self.raw.recv() => {
                    let mut events = vec![first];
                    while events.len() < MAX_EVENTS_PER_BATCH {
                        match self.raw.try_recv() {
                            Ok(event) => events.push(event),
                            Err(_) => break,
                        }
                    }
                    if !self.dropping && !self.process(events).await {
                        break;
                    }
                }
                () = sleep_until(deadline), if deadline.is_some() => {}
            }
            self.flush();
        }
        // Dropping the watcher releases its watches.
        self.fs = None;
    }

    async fn on_command(&mut self, command: Command) -> bool {
        match command {
            Command::Shutdown => return false,
            Command::Rescan(done) => {
                self.dropping = false;
                let alive = match self.with_fs(RepoFs::rescan).await {
                    Some(outcome) => self.apply(outcome).await,
                    None => false,
                };
                let _ = done.send(());
                return alive;
            }
            Command::SimulateOverflow => self.dropping = true,
            Command::WatchedDirs(reply) => {
                let mut dirs: Vec<PathBuf> = self
                    .fs
                    .as_ref()
                    .map(|fs| {
                        fs.watched_dirs()
                            .map(std::path::Path::to_path_buf)
                            .collect()
                    })
                    .unwrap_or_default();
                dirs.sort();
                let _ = reply.send(dirs);
            }
            Command::Apply {
                settle,
                triggers,
                globs,
            } => {
                self.settler.set_config(settle);
                self.triggers = triggers;
                return match self.with_fs(move |fs| fs.set_globs(globs)).await {
                    Some(outcome) => self.apply(outcome).await,
                    None => false,
                };
            }
        }
        true
    }

    /// Runs `f` on the watcher on the blocking pool.
    async fn with_fs<R, F>(&mut self, f: F) -> Option<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut RepoFs) -> R + Send + 'static,
    {
        let mut fs = self.fs.take()?;
        match tokio::task::spawn_blocking(move || {
            let result = f(&mut fs);
            (fs, result)
        })
        .await
        {
            Ok((fs, result)) => {
                self.fs = Some(fs);
                Some(result)
            }
            Err(error) => {
                self.fail(&format!("the watcher task failed: {error}"));
                None
            }
        }
    }

    async fn process(&mut self, events: Vec<RawEvent>) -> bool {
        match self.with_fs(move |fs| fs.process(events)).await {
            Some(outcome) => self.apply(outcome).await,
            None => false,
        }
    }

    /// Feeds an outcome to the settler and the ref tracker. Returns false
    /// when the repository is gone.
    async fn apply(&mut self, outcome: Outcome) -> bool {
        let now = now();
        for warning in &outcome.warnings {
            self.outputs.watcher_warning(&self.id, warning);
        }
        if let Some(fs) = &self.fs {
            let state = state_of(fs.mode());
            let n = fs.n_watches();
            write(&self.status, |status| {
                status.state = state;
                status.watched_dirs = n;
            });
        }
        if let Some(reason) = outcome.gone {
            self.fail(&reason);
            return false;
        }
        if let Some(locked) = outcome.index_locked {
            self.settler.set_locked(locked, now);
        }
        if outcome.rescan {
            self.settler.record_rescan(outcome.changed, now);
        } else {
            self.settler.record(outcome.changed, now);
        }
        if outcome.refs_touched {
            self.check_refs().await;
        }
        true
    }

    async fn check_refs(&mut self) {
        let git = self.git.clone();
        let mut refs = self.refs.clone();
        let result = tokio::task::spawn_blocking(move || {
            let result = refs.check(&git);
            (refs, result)
        })
        .await;
        let changes = match result {
            Ok((refs, Ok(changes))) => {
                self.refs = refs;
                write(&self.status, |status| status.ref_error = None);
                changes
            }
            Ok((_, Err(error))) => {
                self.git_warning(&error);
                return;
            }
            Err(error) => {
                self.git_warning(&error.into());
                return;
            }
        };
        let mut new_commit = false;
        for change in changes {
            match change {
                RefChange::Commit {
                    branch,
                    previous,
                    commit,
                } => {
                    new_commit = true;
                    self.outputs.event(
                        Event::new(
                            EventKind::CommitDetected,
                            format!(
                                "new commit {} on {}",
                                short(&commit),
                                branch.as_deref().unwrap_or("HEAD")
                            ),
                        )
                        .with_repo(self.id.clone())
                        .with_data(serde_json::json!({
                            "branch": branch, "previous": previous, "commit": commit,
                        })),
                    );
                    if self.triggers.on_commit {
                        let mut trigger = Trigger::new(self.id.clone(), TriggerKind::Commit);
                        trigger.commit = Some(commit);
                        trigger.previous_commit = previous;
                        self.outputs.trigger(trigger);
                    }
                }
                RefChange::Push {
                    remote,
                    branch,
                    previous,
                    commit,
                } => {
                    self.outputs.event(
                        Event::new(
                            EventKind::PushDetected,
                            format!("{remote}/{branch} moved to {}", short(&commit)),
                        )
                        .with_repo(self.id.clone())
                        .with_data(serde_json::json!({
                            "remote": remote, "branch": branch,
                            "previous": previous, "commit": commit,
                        })),
                    );
                    if self.triggers.on_push {
                        let mut trigger = Trigger::new(self.id.clone(), TriggerKind::Push);
                        trigger.commit = Some(commit);
                        trigger.previous_commit = previous;
                        self.outputs.trigger(trigger);
                    }
                }
            }
        }
        if new_commit && self.outputs.options.analyse_on_commit {
            Arc::clone(&self.outputs).analyse_in_background(self.id.clone(), self.git.clone());
        }
    }

    fn git_warning(&self, error: &BoxError) {
        let message = format!("reading refs failed: {error}");
        write(&self.status, |status| {
            status.ref_error = Some(message.clone());
        });
        self.outputs.watcher_warning(&self.id, &message);
    }

    /// Emits the settled batch, if one is due.
    fn flush(&mut self) {
        let Some(settled) = self.settler.poll(now()) else {
            return;
        };
        let count = settled.paths.len();
        metrics::counter!("orchex_changes_detected_total", "repo" => self.id.as_str().to_owned())
            .increment(count as u64);
        let batch = ChangeBatch {
            repo: self.id.clone(),
            paths: settled.paths,
            first_change_at: self.timestamp(settled.first_change),
            last_change_at: self.timestamp(settled.last_change),
            rescan: settled.rescan,
        };
        let listed: Vec<&String> = batch.paths.iter().take(MAX_PATHS_IN_EVENT).collect();
        self.outputs.event(
            Event::new(
                EventKind::ChangeDetected,
                format!("{count} changed path(s) in {}", self.id),
            )
            .with_repo(self.id.clone())
            .with_data(serde_json::json!({
                "count": count,
                "paths": listed,
                "truncated": count > MAX_PATHS_IN_EVENT,
                "rescan": batch.rescan,
            })),
        );
        if self.triggers.on_file_change {
            self.outputs.trigger(Trigger::from_batch(batch));
        }
    }

    fn timestamp(&self, instant: std::time::Instant) -> jiff::Timestamp {
        let (anchor, at) = self.anchor;
        let elapsed = instant.saturating_duration_since(anchor);
        jiff::SignedDuration::try_from(elapsed)
            .ok()
            .and_then(|elapsed| at.checked_add(elapsed).ok())
            .unwrap_or(at)
    }

    fn fail(&mut self, reason: &str) {
        tracing::error!(repo = %self.id, "{reason}");
        self.fs = None;
        self.settler.clear();
        write(&self.status, |status| {
            status.state = WatcherState::Error {
                reason: reason.to_owned(),
            };
            status.watched_dirs = 0;
        });
        self.outputs.event(
            Event::new(EventKind::WatcherError, reason)
                .with_repo(self.id.clone())
                .with_data(serde_json::json!({ "fatal": true })),
        );
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(tokio::time::Instant::from_std(deadline)).await;
    }
}

fn short(oid: &str) -> &str {
    oid.get(..12).unwrap_or(oid)
}
