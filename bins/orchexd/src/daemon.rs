//! The daemon: composes the services in dependency order (config → store →
//! telemetry → monitor → orchestrator → dashboard), keeps them in step with
//! configuration changes, and stops them in reverse order.
//!
//! Everything here is wiring; behaviour lives in the library crates.

use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use orchex_config::{ConfigHandle, Loader, ReloadOutcome};
use orchex_core::config::Config;
use orchex_core::{ComponentHealth, Event, EventKind, Severity};
use orchex_dashboard::{Dashboard, DashboardOptions, Services};
use orchex_monitor::{Monitor, WatcherState};
use orchex_orchestrator::{Events, Orchestrator, OrchestratorDeps};
use orchex_store::{RetentionPolicy, SqliteStore, Store, StoreHealth as _, StoreOptions};
use orchex_telemetry::{
    BusConfig, HealthRegistry, LiveFilter, PersistenceConfig, PersistenceWriter, Received,
    TelemetryBus,
};
use tokio::task::JoinHandle;

use crate::demo;
use crate::instance::InstanceLock;

/// How long running jobs may take to finish after SIGTERM before they are
/// cancelled (the systemd unit's `TimeoutStopSec` allows for it).
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// How the daemon was asked to run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) config: PathBuf,
    pub(crate) demo: bool,
}

/// What stops the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// SIGTERM or SIGINT: drain and exit 0.
    Signal(&'static str),
}

fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .with_context(|| format!("storage.path: cannot create {}", path.display()))?;
    let metadata = std::fs::metadata(path)
        .with_context(|| format!("storage.path: cannot read {}", path.display()))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("storage.path: cannot restrict {} to 0700", path.display()))?;
        tracing::warn!(path = %path.display(), "the storage directory was readable by others; it is now 0700");
    }
    Ok(())
}

/// The loader, with the demo layer when the file configures no repository
/// (or `--demo`). The demo repository lives under the storage directory, so
/// the file is read once first to find it.
pub(crate) fn loader(
    options: &Options,
) -> Result<(Loader, Option<PathBuf>), orchex_config::ConfigError> {
    let plain = Loader::new(&options.config);
    let loaded = plain.load()?;
    let wants_demo = options.demo || loaded.config.repositories.is_empty();
    if !wants_demo {
        return Ok((plain, None));
    }
    let repo = demo::repo_dir(&loaded.config.storage.path);
    let loader = Loader::new(&options.config).with_demo(demo::layer(&repo));
    Ok((loader, Some(repo)))
}

/// The running daemon.
pub(crate) struct Daemon {
    handle: ConfigHandle,
    store: Arc<SqliteStore>,
    bus: TelemetryBus,
    writer: Option<PersistenceWriter>,
    monitor: Monitor,
    orchestrator: Orchestrator,
    dashboard: Dashboard,
    server: JoinHandle<std::io::Result<()>>,
    server_stop: tokio::sync::oneshot::Sender<()>,
    tasks: Vec<JoinHandle<()>>,
    _file_watch: Option<orchex_config::FileWatchGuard>,
    // Dropped last, after the store is closed (see `shutdown`).
    _instance: InstanceLock,
}

impl Daemon {
    /// Starts every service. The configuration is already valid; anything
    /// failing here is a runtime failure (exit 1).
    pub(crate) async fn start(
        loader: Loader,
        config: Config,
        demo_repo: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        // --- storage ---
        create_private_dir(&config.storage.path)?;
        // Before anything else touches the directory: recovery must never
        // run against a live daemon's work.
        let instance = InstanceLock::acquire(&config.storage.path)?;
        tracing::info!(lock = %instance.path().display(), "storage directory claimed");
        if let Some(repo) = &demo_repo {
            let storage = config.storage.path.clone();
            let repo = repo.clone();
            tokio::task::spawn_blocking(move || demo::ensure_repository(&storage))
                .await
                .context("creating the demo repository")??;
            tracing::info!(path = %repo.display(), "demo repository ready");
        }
        let store = Arc::new(
            SqliteStore::open_in_dir(&config.storage.path, StoreOptions::default())
                .await
                .with_context(|| {
                    format!("opening the store in {}", config.storage.path.display())
                })?,
        );
        let report = store.open_report();
        tracing::info!(path = %store.path().display(), report = ?report, "store open");

        // --- telemetry ---
        let metrics = match orchex_telemetry::install_prometheus() {
            Ok(handle) => Some(handle),
            Err(err) => {
                tracing::warn!(%err, "no Prometheus recorder; /metrics answers 503");
                None
            }
        };
        let health = HealthRegistry::new();
        let (bus, queue) = TelemetryBus::new(BusConfig::default());
        let writer =
            PersistenceWriter::spawn(queue, store.clone(), &health, PersistenceConfig::default());
        let probe_store = store.clone();
        health.register_probe("store", move || probe_store.health());
        let mut tasks = Vec::new();
        if let Some(metrics) = &metrics {
            let upkeep = metrics.spawn_upkeep(orchex_telemetry::DEFAULT_UPKEEP_INTERVAL);
            tasks.push(tokio::spawn(async move {
                let _ = upkeep.await;
            }));
        }

        // --- monitor ---
        let (monitor, triggers) = Monitor::new(&config.monitor, &config.optimizer.thresholds);
        let mut monitor_events = monitor.subscribe_events();
        let forward = bus.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(event) = monitor_events.next().await {
                forward.publish(event);
            }
        }));
        for repository in &config.repositories {
            add_repository(&monitor, &bus, repository.clone()).await;
        }
        let probe_monitor = monitor.clone();
        health.register_probe("monitor", move || watcher_health(&probe_monitor));

        // --- orchestrator ---
        let publish = bus.clone();
        let orchestrator = Orchestrator::new(
            &config,
            OrchestratorDeps::new(
                store.clone(),
                Events::new(move |event| {
                    publish.publish(event);
                }),
                config.storage.path.clone(),
            ),
        )
        .context("building the orchestrator")?;
        let recovery = orchestrator
            .recover()
            .await
            .context("recovering interrupted work")?;
        if recovery != orchex_orchestrator::RecoverySummary::default() {
            tracing::warn!(
                requeued = recovery.requeued.len(),
                failed = recovery.failed.len(),
                killed_groups = recovery.killed_groups,
                removed_workspaces = recovery.removed_workspaces,
                undone_deliveries = recovery.undone_deliveries,
                finished_rollbacks = recovery.finished_rollbacks.len(),
                removed_locks = recovery.removed_locks,
                "recovered from an unclean stop"
            );
        }
        orchestrator
            .start(triggers)
            .context("starting the orchestrator")?;
        let probe = orchestrator.clone();
        health.register_probe("orchestrator", move || probe.health());

        // --- dashboard ---
        let handle = ConfigHandle::new(loader, config.clone());
        let services = Services {
            orchestrator: orchestrator.clone(),
            monitor: monitor.clone(),
            store: store.clone() as Arc<dyn Store>,
            bus: bus.clone(),
            health: health.clone(),
            config: handle.clone(),
            metrics,
        };
        let dashboard = Dashboard::new(services, &config, DashboardOptions::default())
            .context("building the dashboard")?;
        let address = orchex_dashboard::check_bind(&config.dashboard, &dashboard.policy())?;
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .with_context(|| format!("dashboard: cannot listen on {address}"))?;
        let (server_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(dashboard.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        tracing::info!(url = %format!("http://{address}/"), "dashboard and API listening");

        // --- background work ---
        tasks.push(tokio::spawn(retention_loop(store.clone(), handle.clone())));
        tasks.push(tokio::spawn(analysis_loop(monitor.clone(), handle.clone())));
        tasks.push(tokio::spawn(notification_loop(bus.clone(), handle.clone())));
        tasks.push(tokio::spawn(reload_loop(
            handle.clone(),
            monitor.clone(),
            orchestrator.clone(),
            dashboard.clone(),
            bus.clone(),
        )));
        let file_watch = match handle.watch_file(Duration::from_millis(300)) {
            Ok(guard) => Some(guard),
            Err(err) => {
                tracing::warn!(%err, "the config file is not watched; use SIGHUP or POST /api/config/reload");
                None
            }
        };

        let daemon = Self {
            handle,
            store,
            bus,
            writer: Some(writer),
            monitor,
            orchestrator,
            dashboard,
            server,
            server_stop,
            tasks,
            _file_watch: file_watch,
            _instance: instance,
        };
        if demo_repo.is_some() {
            daemon.start_demo(address).await;
        }
        Ok(daemon)
    }

    async fn start_demo(&self, address: std::net::SocketAddr) {
        let repo = demo::repo_dir(&self.handle.current().storage.path);
        let queued = self
            .orchestrator
            .trigger(orchex_orchestrator::ManualRun {
                repo: demo::REPO.to_owned(),
                pipeline: Some(demo::PIPELINE.to_owned()),
                force: false,
                dry_run: false,
            })
            .await;
        match queued {
            Ok(jobs) => tracing::info!(jobs = jobs.len(), "demo: first job queued"),
            Err(err) => tracing::warn!(%err, "demo: could not queue the first job"),
        }
        let url = format!("http://{address}");
        tracing::info!(
            "demo mode (no repository in the config):\n  \
             dashboard:   {url}/\n  \
             status:      cargo run -p orchexctl -- --url {url} status\n  \
             jobs:        cargo run -p orchexctl -- --url {url} jobs\n  \
             run again:   cargo run -p orchexctl -- --url {url} run {repo_name} --wait\n  \
             live events: cargo run -p orchexctl -- --url {url} watch\n  \
             metrics:     curl {url}/metrics\n  \
             try: add a line to {schema}, commit it (git -C {dir} commit -am 'add a field'),\n       \
             then see the regenerated file on orchex/{pipeline} (git -C {dir} log orchex/{pipeline})",
            repo_name = demo::REPO,
            pipeline = demo::PIPELINE,
            schema = repo.join("schema/api.txt").display(),
            dir = repo.display(),
        );
    }

    /// Re-reads the configuration file (SIGHUP).
    pub(crate) fn reload(&self) {
        let handle = self.handle.clone();
        tokio::task::spawn_blocking(move || handle.reload());
    }

    /// Stops accepting work, drains running jobs for up to `grace`, then
    /// stops every service in reverse order and flushes the store.
    pub(crate) async fn shutdown(mut self, reason: Stop, grace: Duration) {
        tracing::info!(
            ?reason,
            grace_secs = grace.as_secs(),
            "stopping: draining running jobs"
        );
        // The API goes first: no new work arrives while jobs drain.
        let _ = self.server_stop.send(());
        self.dashboard.shutdown();
        self.orchestrator.stop(grace).await;
        self.monitor.shutdown().await;
        if tokio::time::timeout(Duration::from_secs(10), &mut self.server)
            .await
            .is_err()
        {
            tracing::warn!("the HTTP server did not stop within 10 s");
            self.server.abort();
        }
        for task in &self.tasks {
            task.abort();
        }
        self.bus.flush().await;
        if let Some(writer) = self.writer.take() {
            writer.shutdown().await;
        }
        if let Err(err) = self.store.close().await {
            tracing::warn!(%err, "closing the store failed");
        }
        tracing::info!("stopped");
    }
}

async fn add_repository(
    monitor: &Monitor,
    bus: &TelemetryBus,
    repository: orchex_core::Repository,
) {
    let name = repository.name.clone();
    if let Err(err) = monitor.add_repository(repository).await {
        // A bad repository is reported and the others keep running.
        tracing::error!(repo = %name, %err, "cannot watch repository");
        bus.publish(
            Event::new(
                EventKind::WatcherError,
                format!("cannot watch {name}: {err}"),
            )
            .with_repo(name)
            .with_severity(Severity::Error),
        );
    }
}

fn watcher_health(monitor: &Monitor) -> ComponentHealth {
    let failing: Vec<String> = monitor
        .statuses()
        .into_iter()
        .filter_map(|status| match status.state {
            WatcherState::Error { reason } => Some(format!("{}: {reason}", status.repo)),
            // Watched, but a ref cannot be read: no commit can be detected.
            _ => status
                .ref_error
                .map(|reason| format!("{}: {reason}", status.repo)),
        })
        .collect();
    if failing.is_empty() {
        ComponentHealth::ok()
    } else {
        ComponentHealth::degraded(failing.join("; "))
    }
}

/// Applies every accepted configuration to the running services and turns
/// every reload outcome into an event.
async fn reload_loop(
    handle: ConfigHandle,
    monitor: Monitor,
    orchestrator: Orchestrator,
    dashboard: Dashboard,
    bus: TelemetryBus,
) {
    let mut configs = handle.subscribe();
    let mut outcomes = handle.outcomes();
    let mut running = handle.current();
    loop {
        tokio::select! {
            changed = configs.changed() => {
                if changed.is_err() {
                    return;
                }
                let next = configs.borrow_and_update().clone();
                apply(&running, &next, &monitor, &orchestrator, &dashboard, &bus).await;
                running = next;
            }
            outcome = outcomes.recv() => match outcome {
                Ok(ReloadOutcome::Applied { changed, needs_restart }) => {
                    let message = if needs_restart.is_empty() {
                        format!("configuration reloaded: {} keys changed", changed.len())
                    } else {
                        format!(
                            "configuration reloaded: {} keys changed; needs restart: {}",
                            changed.len(),
                            needs_restart.join(", ")
                        )
                    };
                    tracing::info!(?changed, ?needs_restart, "configuration reloaded");
                    bus.publish(
                        Event::new(EventKind::ConfigReloaded, message)
                            .with_data(serde_json::json!({"changed": changed, "needsRestart": needs_restart})),
                    );
                }
                Ok(ReloadOutcome::Rejected { error }) => {
                    tracing::error!(%error, "configuration rejected; the running one stays");
                    bus.publish(
                        Event::new(EventKind::ConfigRejected, format!("configuration rejected: {error}"))
                            .with_severity(Severity::Error)
                            .with_data(serde_json::json!({"error": error})),
                    );
                }
                // Nothing changed in the files, but what a service refused
                // before may work now (a repository `git init`ed since, a
                // token file written since): a reload is how an operator
                // says so.
                Ok(ReloadOutcome::Unchanged) => {
                    retry_refused(&handle.current(), &monitor, &dashboard, &bus).await;
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// Applies again what the running configuration asks for and a service
/// could not do when it was applied: repositories the monitor could not
/// watch (not a repository yet, unreadable), and the dashboard's policy
/// (its token files are read again).
async fn retry_refused(
    config: &Config,
    monitor: &Monitor,
    dashboard: &Dashboard,
    bus: &TelemetryBus,
) {
    for repository in &config.repositories {
        if monitor.status(&repository.name).is_none() {
            add_repository(monitor, bus, repository.clone()).await;
        }
    }
    if let Err(err) = dashboard.apply_config(config) {
        tracing::error!(%err, "the dashboard still refuses the configuration");
    }
}

async fn apply(
    old: &Config,
    new: &Config,
    monitor: &Monitor,
    orchestrator: &Orchestrator,
    dashboard: &Dashboard,
    bus: &TelemetryBus,
) {
    monitor.apply_config(&new.monitor, &new.optimizer.thresholds);
    // A repository whose entry changed in any way is watched afresh.
    for repository in &old.repositories {
        if !new.repositories.contains(repository)
            && let Err(err) = monitor.remove_repository(&repository.name).await
        {
            tracing::debug!(repo = %repository.name, %err, "repository was not watched");
        }
    }
    for repository in &new.repositories {
        if !old.repositories.contains(repository) {
            add_repository(monitor, bus, repository.clone()).await;
        }
    }
    if let Err(err) = orchestrator.apply_config(new) {
        tracing::error!(%err, "the orchestrator refused the new configuration");
        bus.publish(
            Event::new(EventKind::ConfigRejected, format!("orchestrator: {err}"))
                .with_severity(Severity::Error),
        );
    }
    if let Err(err) = dashboard.apply_config(new) {
        tracing::error!(%err, "the dashboard refused the new configuration");
        bus.publish(
            Event::new(EventKind::ConfigRejected, format!("dashboard: {err}"))
                .with_severity(Severity::Error),
        );
    }
}

/// Purges old events (and nothing else) every hour, following
/// `retentionPeriodDays` as it changes.
async fn retention_loop(store: Arc<SqliteStore>, handle: ConfigHandle) {
    let mut configs = handle.subscribe();
    loop {
        let days = configs
            .borrow_and_update()
            .dashboard
            .telemetry
            .retention_period_days;
        let task = tokio::spawn(orchex_store::run_retention(
            store.clone(),
            RetentionPolicy::days(days),
        ));
        loop {
            if configs.changed().await.is_err() {
                task.abort();
                return;
            }
            if configs.borrow().dashboard.telemetry.retention_period_days != days {
                break;
            }
        }
        task.abort();
    }
}

/// Analyses every repository at start and then every `cacheTtlSecs`, so the
/// dashboard's scores stay fresh and threshold triggers can fire.
async fn analysis_loop(monitor: Monitor, handle: ConfigHandle) {
    // Let the watchers settle before the first, heavier pass.
    tokio::time::sleep(Duration::from_secs(2)).await;
    loop {
        for (repo, result) in monitor.analyse_all().await {
            if let Err(err) = result {
                tracing::warn!(%repo, %err, "analysis failed");
            }
        }
        let every = handle.current().monitor.analysis.cache_ttl_secs.max(30);
        tokio::time::sleep(Duration::from_secs(every)).await;
    }
}

/// Posts events to the `[[notifications]]` URLs whose `on` lists their kind.
async fn notification_loop(bus: TelemetryBus, handle: ConfigHandle) {
    let mut events = bus.subscribe(LiveFilter::all());
    loop {
        let event = match events.recv().await {
            Some(Received::Event(event)) => event,
            Some(Received::Lagged(missed)) => {
                tracing::warn!(missed, "notifications fell behind; some were not sent");
                continue;
            }
            None => return,
        };
        let config = handle.current();
        for notification in &config.notifications {
            if !notification.on.contains(&event.kind) {
                continue;
            }
            let url = notification.url.clone();
            let payload = orchex_orchestrator::webhook::notification_payload(&event);
            tokio::spawn(async move {
                let result = orchex_orchestrator::webhook::post_json(
                    &url,
                    &payload,
                    Duration::from_secs(10),
                )
                .await;
                if let Err(err) = result {
                    // Incoming-webhook URLs carry their secret in the path.
                    let host = notification_host(&url);
                    let err = err.replace(&url, &format!("https://{host}/<redacted>"));
                    tracing::warn!(%host, %err, "notification not delivered");
                }
            });
        }
    }
}

/// The host (and port) of a notification URL, for logs: no credentials
/// (`user:password@`), no path, no query, since incoming-webhook URLs carry
/// their secret in those.
fn notification_host(url: &str) -> &str {
    let Some((_, rest)) = url.split_once("://") else {
        return "?";
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    if host.is_empty() { "?" } else { host }
}

#[cfg(test)]
mod tests {
    use super::notification_host;

    #[test]
    fn a_notification_url_is_logged_by_its_host_alone() {
        for (url, host) in [
            (
                "https://hooks.slack.com/services/T0/B0/secret",
                "hooks.slack.com",
            ),
            (
                "https://user:hunter2@example.com:8443/x?token=s",
                "example.com:8443",
            ),
            ("http://example.com?token=s", "example.com"),
            ("http://[::1]:9000/hook", "[::1]:9000"),
            ("not a url", "?"),
            ("https://", "?"),
        ] {
            assert_eq!(notification_host(url), host, "{url}");
        }
    }
}
