//! Fault injection: each fault is injected into a real orchex stack
//! composed in-process from the library crates (a SQLite store in a
//! temporary directory, the telemetry bus with its persistence writer, the
//! health registry with the daemon's probes, the monitor and the
//! orchestrator running real steps on real git repositories made with the
//! git CLI), the way `orchexd` composes them. Two repositories, `alpha` (the
//! victim) and `beta` (the bystander), share one stack.
//!
//! For every fault the harness checks that it is reported (an event, and the
//! health report where a component is impaired), that the stack stays alive,
//! and that the other repository keeps working:
//!
//! - `overflow`: an injected kernel queue overflow on `alpha`; a file
//!   written while events are dropped is found by the rescan;
//! - `repo-deleted`: `alpha`'s directory is removed;
//! - `corrupt-ref`: garbage in `alpha`'s `.git/refs/heads/main`;
//! - `sqlite-full`: the database capped by `PRAGMA max_page_count`;
//! - `readonly-storage`: the storage directory made read-only, in a child
//!   process running as an unprivileged uid (root ignores permissions, and a
//!   read-only remount of a live database fails with `EBUSY`);
//! - `output-flood`: a step printing 1 GB;
//! - `never-exits`: a step that never exits, killed at its `timeoutSecs`.
//!
//! Traffic stays on the local machine (no listener is opened); each fault is
//! bounded in time. One `PASS`/`FAIL` line per fault, then a summary.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use futures::StreamExt as _;
use orchex_config::Loader;
use orchex_core::{ComponentHealth, Event, EventKind, HealthLevel, Job, JobState, RepoId};
use orchex_monitor::{Monitor, WatcherState};
use orchex_orchestrator::{Events, ManualRun, Orchestrator, OrchestratorDeps};
use orchex_store::{JobStore as _, SqliteStore, StoreHealth as _, StoreOptions};
use orchex_telemetry::{
    BusConfig, HealthRegistry, PERSISTENCE_COMPONENT, PersistenceConfig, PersistenceWriter,
    TelemetryBus,
};

/// Every fault, in the order they run.
const FAULTS: [&str; 7] = [
    "overflow",
    "repo-deleted",
    "corrupt-ref",
    "sqlite-full",
    "readonly-storage",
    "output-flood",
    "never-exits",
];

/// The unprivileged uid and gid of the `readonly-storage` child (`nobody`).
const NOBODY: u32 = 65534;

/// Bytes the `output-flood` step prints.
const FLOOD_BYTES: u64 = 1_000_000_000;

/// The most resident memory the harness (which is the daemon here) may
/// gain while a step prints 1 GB.
const FLOOD_RSS_BUDGET_KB: u64 = 256 * 1024;

/// Options of `orchex-reliability faults`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Run only these faults (comma-separated; default all): overflow,
    /// repo-deleted, corrupt-ref, sqlite-full, readonly-storage,
    /// output-flood, never-exits.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Give up on one fault (and fail it) after this many seconds.
    #[arg(long, default_value_t = 300)]
    fault_time_limit_secs: u64,
    /// Keep the temporary directories.
    #[arg(long)]
    keep: bool,
    /// Internal: run this fault's unprivileged part in this process.
    #[arg(long, hide = true)]
    child: Option<String>,
    /// Internal: the child's directory.
    #[arg(long, hide = true)]
    child_dir: Option<PathBuf>,
}

/// Runs the selected faults; `Ok(false)` when one failed.
pub(crate) fn run(args: &Args) -> Result<bool> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    if let Some(child) = &args.child {
        let dir = args
            .child_dir
            .clone()
            .context("--child needs --child-dir")?;
        ensure!(child == "readonly-storage", "unknown child {child}");
        return runtime.block_on(async {
            match readonly_child(&dir).await {
                Ok(notes) => {
                    for note in notes {
                        println!("{note}");
                    }
                    Ok(true)
                }
                Err(err) => {
                    println!("child failed: {err:#}");
                    Ok(false)
                }
            }
        });
    }
    let selected: Vec<&str> = if args.only.is_empty() {
        FAULTS.to_vec()
    } else {
        for name in &args.only {
            ensure!(
                FAULTS.contains(&name.as_str()),
                "unknown fault {name:?}; known: {}",
                FAULTS.join(", ")
            );
        }
        FAULTS
            .iter()
            .copied()
            .filter(|f| args.only.iter().any(|o| o == f))
            .collect()
    };
    let limit = Duration::from_secs(args.fault_time_limit_secs);
    let mut failed = Vec::new();
    for fault in &selected {
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix(&format!("orchex-fault-{fault}-"))
            .tempdir()
            .context("creating a temporary directory")?;
        let root = dir.path().to_path_buf();
        let outcome = runtime.block_on(async {
            match tokio::time::timeout(limit, run_fault(fault, &root)).await {
                Ok(result) => result,
                Err(_) => Err(anyhow::anyhow!(
                    "did not finish within {}s",
                    limit.as_secs()
                )),
            }
        });
        let secs = started.elapsed().as_secs_f64();
        match outcome {
            Ok(notes) => {
                println!("PASS {fault} ({secs:.1}s)");
                for note in notes {
                    println!("     {note}");
                }
            }
            Err(err) => {
                println!("FAIL {fault} ({secs:.1}s): {err:#}");
                failed.push(*fault);
            }
        }
        if args.keep || failed.last() == Some(fault) {
            let kept = dir.keep();
            println!("     kept {}", kept.display());
        }
    }
    // Steps still running in a stack that failed must not keep the process.
    runtime.shutdown_timeout(Duration::from_secs(5));
    if failed.is_empty() {
        println!("faults: {} passed, 0 failed", selected.len());
        Ok(true)
    } else {
        println!(
            "faults: {} passed, {} failed ({})",
            selected.len() - failed.len(),
            failed.len(),
            failed.join(", ")
        );
        Ok(false)
    }
}

async fn run_fault(fault: &str, root: &Path) -> Result<Vec<String>> {
    match fault {
        "overflow" => overflow(root).await,
        "repo-deleted" => repo_deleted(root).await,
        "corrupt-ref" => corrupt_ref(root).await,
        "sqlite-full" => sqlite_full(root).await,
        "readonly-storage" => readonly_storage(root).await,
        "output-flood" => output_flood(root).await,
        "never-exits" => never_exits(root).await,
        other => bail!("unknown fault {other}"),
    }
}

// --------------------------------------------------------------------------
// The stack
// --------------------------------------------------------------------------

/// Every event the stack produced (monitor and orchestrator), in order,
/// whether or not the store could persist it.
#[derive(Debug, Clone, Default)]
struct Recorder {
    events: Arc<Mutex<Vec<Event>>>,
}

impl Recorder {
    fn push(&self, event: &Event) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event.clone());
    }

    fn len(&self) -> usize {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// The events recorded from index `from` on that match.
    fn since(&self, from: usize, matches: impl Fn(&Event) -> bool) -> Vec<Event> {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .skip(from)
            .filter(|e| matches(e))
            .cloned()
            .collect()
    }

    /// Waits up to `limit` for an event (recorded from index `from` on) that
    /// matches.
    async fn wait(
        &self,
        from: usize,
        limit: Duration,
        what: &str,
        matches: impl Fn(&Event) -> bool,
    ) -> Result<Event> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(event) = self.since(from, &matches).into_iter().next() {
                return Ok(event);
            }
            ensure!(
                Instant::now() < deadline,
                "no {what} event within {}s",
                limit.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn describe(event: &Event) -> String {
    format!(
        "{} [{}] {}",
        event.kind.as_str(),
        event.severity.as_str(),
        event.message
    )
}

/// A running stack in a temporary directory.
struct Stack {
    root: PathBuf,
    storage: PathBuf,
    store: Arc<SqliteStore>,
    bus: TelemetryBus,
    writer: Option<PersistenceWriter>,
    health: HealthRegistry,
    monitor: Monitor,
    orchestrator: Orchestrator,
    events: Recorder,
    forward: tokio::task::JoinHandle<()>,
}

fn alpha() -> Result<RepoId> {
    RepoId::new("alpha").context("repository id")
}

fn beta() -> Result<RepoId> {
    RepoId::new("beta").context("repository id")
}

pub(crate) fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Faults")
        .env("GIT_AUTHOR_EMAIL", "faults@example.com")
        .env("GIT_COMMITTER_NAME", "Faults")
        .env("GIT_COMMITTER_EMAIL", "faults@example.com")
        .output()
        .with_context(|| format!("running git {args:?}"))?;
    ensure!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A git repository `root/name` on `main` with one commit of `files`
/// (path under the repository, content).
pub(crate) fn make_repo(root: &Path, name: &str, files: &[(String, &str)]) -> Result<PathBuf> {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("src")).context("creating a repository")?;
    git(&dir, &["init", "-q", "-b", "main"])?;
    for (path, content) in files {
        std::fs::write(dir.join(path), content).context("writing a file")?;
    }
    git(&dir, &["add", "-A"])?;
    git(&dir, &["commit", "-q", "-m", "initial"])?;
    Ok(dir)
}

fn config_text(root: &Path) -> String {
    format!(
        r#"version = 2

[optimizer.schedule]
enabled = false

[optimizer.safety]
rateLimitPerHour = 1000

[orchestrator]
maxConcurrent = 2
adaptiveOptimization = false

[monitor.filesystem]
debounceMs = 50
maxWaitMs = 500

[storage]
path = "{root}/data"

[[repositories]]
name = "alpha"
path = "{root}/alpha"
branch = "main"

[[repositories]]
name = "beta"
path = "{root}/beta"
branch = "main"

[[pipelines]]
name = "gen"
repositories = ["alpha", "beta"]
triggers = ["manual", "commit"]
deliver = "none"

[[pipelines.steps]]
name = "generate"
run = ["sh", "-c", "cat src/lib.txt > out.txt && echo generated"]

[[pipelines]]
name = "flood"
repositories = ["alpha"]
triggers = ["manual"]
deliver = "none"

[[pipelines.steps]]
name = "print"
run = ["sh", "-c", "head -c {FLOOD_BYTES} /dev/zero | tr '\\0' a | dd bs=65536 2>{root}/flood.count; echo END"]
timeoutSecs = 280

[[pipelines]]
name = "hang"
repositories = ["alpha"]
triggers = ["manual"]
deliver = "none"

[[pipelines.steps]]
name = "forever"
run = ["sh", "-c", "echo $$ > {root}/hang.pids; sleep 100000 & echo $! >> {root}/hang.pids; wait"]
timeoutSecs = 2
"#,
        root = root.display(),
    )
}

/// The daemon's `monitor` probe: degraded while a repository's watcher is
/// in error or its refs cannot be read.
pub(crate) fn watcher_health(monitor: &Monitor) -> ComponentHealth {
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

/// The health report in one line: `health <status>: name=level (reason), ...`.
pub(crate) fn health_line(health: &HealthRegistry) -> String {
    let snapshot = health.snapshot();
    let checks: Vec<String> = snapshot
        .checks
        .iter()
        .map(|(name, check)| match &check.reason {
            Some(reason) => format!("{name}={} ({reason})", check.status),
            None => format!("{name}={}", check.status),
        })
        .collect();
    format!("health {}: {}", snapshot.status, checks.join(", "))
}

impl Stack {
    /// Creates `alpha` and `beta` under `root`, and starts every service.
    async fn start(root: &Path, store_options: StoreOptions) -> Result<Self> {
        let files = [("src/lib.txt".to_owned(), "v1\n")];
        make_repo(root, "alpha", &files)?;
        make_repo(root, "beta", &files)?;
        let config_path = root.join("orchex.toml");
        std::fs::write(&config_path, config_text(root)).context("writing the config")?;
        let config = Loader::new(&config_path)
            .without_env()
            .load()
            .context("loading the config")?
            .config;
        let storage = config.storage.path.clone();
        std::fs::create_dir_all(&storage).context("creating the storage directory")?;
        let store = Arc::new(
            SqliteStore::open_in_dir(&storage, store_options)
                .await
                .context("opening the store")?,
        );
        let health = HealthRegistry::new();
        let (bus, queue) = TelemetryBus::new(BusConfig::default());
        let writer =
            PersistenceWriter::spawn(queue, store.clone(), &health, PersistenceConfig::default());
        let probe_store = store.clone();
        health.register_probe("store", move || probe_store.health());

        let events = Recorder::default();
        let (monitor, triggers) = Monitor::new(&config.monitor, &config.optimizer.thresholds);
        let mut monitor_events = monitor.subscribe_events();
        let (forward_bus, forward_rec) = (bus.clone(), events.clone());
        let forward = tokio::spawn(async move {
            while let Some(event) = monitor_events.next().await {
                forward_rec.push(&event);
                forward_bus.publish(event);
            }
        });
        for repository in &config.repositories {
            let name = repository.name.clone();
            if let Err(err) = monitor.add_repository(repository.clone()).await {
                let event = Event::new(
                    EventKind::WatcherError,
                    format!("cannot watch {name}: {err}"),
                )
                .with_repo(name);
                events.push(&event);
                bus.publish(event);
            }
        }
        let probe_monitor = monitor.clone();
        health.register_probe("monitor", move || watcher_health(&probe_monitor));

        let (publish, record) = (bus.clone(), events.clone());
        let orchestrator = Orchestrator::new(
            &config,
            OrchestratorDeps::new(
                store.clone(),
                Events::new(move |event| {
                    record.push(&event);
                    publish.publish(event);
                }),
                storage.clone(),
            ),
        )
        .context("building the orchestrator")?;
        orchestrator.recover().await.context("recovering")?;
        orchestrator
            .start(triggers)
            .context("starting the orchestrator")?;
        let probe = orchestrator.clone();
        health.register_probe("orchestrator", move || probe.health());
        Ok(Self {
            root: root.to_path_buf(),
            storage,
            store,
            bus,
            writer: Some(writer),
            health,
            monitor,
            orchestrator,
            events,
            forward,
        })
    }

    fn repo_path(&self, name: &str) -> PathBuf {
        self.root.join(name)
    }

    /// The level of one component of the health report.
    fn level(&self, component: &str) -> Option<HealthLevel> {
        self.health
            .snapshot()
            .checks
            .get(component)
            .map(|check| check.status)
    }

    /// Waits up to 10 s for a component of the health report to reach
    /// `level`.
    async fn wait_level(&self, component: &str, level: HealthLevel) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.level(component) != Some(level) {
            ensure!(
                Instant::now() < deadline,
                "{component} not {level} within 10s: {}",
                self.health_line()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// The health report in one line.
    fn health_line(&self) -> String {
        health_line(&self.health)
    }

    /// Queues a forced manual run and returns its job's id.
    async fn trigger(&self, repo: &str, pipeline: &str) -> Result<orchex_core::JobId> {
        let jobs = self
            .orchestrator
            .trigger(ManualRun {
                repo: repo.to_owned(),
                pipeline: Some(pipeline.to_owned()),
                force: true,
                dry_run: false,
            })
            .await
            .map_err(|err| anyhow::anyhow!("manual run of {pipeline} on {repo}: {err}"))?;
        Ok(jobs.first().context("no job queued")?.id)
    }

    /// Waits up to `limit` for a job to finish.
    async fn wait_final(&self, id: orchex_core::JobId, limit: Duration) -> Result<Job> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(job) = self.store.get_job(id).await.context("reading a job")?
                && !matches!(job.state(), JobState::Queued | JobState::Running)
            {
                return Ok(job);
            }
            ensure!(
                Instant::now() < deadline,
                "job {id} unfinished after {}s",
                limit.as_secs()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn run_job(&self, repo: &str, pipeline: &str, limit: Duration) -> Result<Job> {
        let id = self.trigger(repo, pipeline).await?;
        self.wait_final(id, limit).await
    }

    /// Commits a change to `beta` and checks that the commit is detected
    /// and triggers a job that succeeds: the bystander is unaffected.
    async fn bystander_works(&self) -> Result<String> {
        let beta_id = beta()?;
        let dir = self.repo_path("beta");
        let mark = self.events.len();
        let stamp = format!("{:?}\n", Instant::now());
        std::fs::write(dir.join("src/lib.txt"), stamp).context("writing to beta")?;
        git(&dir, &["commit", "-q", "-am", "bystander change"])?;
        let queued = self
            .events
            .wait(mark, Duration::from_secs(20), "job_queued on beta", |e| {
                e.kind == EventKind::JobQueued && e.repo.as_ref() == Some(&beta_id)
            })
            .await?;
        let id = queued.job_id.context("job_queued without a job id")?;
        let job = self.wait_final(id, Duration::from_secs(60)).await?;
        ensure!(
            job.state() == JobState::Succeeded,
            "beta's commit job ended {:?}: {:?}",
            job.state(),
            job.error
        );
        Ok(format!(
            "bystander: a commit on beta triggered job {id} ({:?}, trigger {})",
            job.state(),
            job.trigger.kind.as_str()
        ))
    }

    /// Stops every service (bounded).
    async fn stop(mut self) {
        let bounded = Duration::from_secs(10);
        let _ = tokio::time::timeout(bounded, self.orchestrator.stop(Duration::from_secs(1))).await;
        let _ = tokio::time::timeout(bounded, self.monitor.shutdown()).await;
        self.forward.abort();
        let _ = tokio::time::timeout(bounded, self.bus.flush()).await;
        if let Some(writer) = self.writer.take() {
            let _ = tokio::time::timeout(bounded, writer.shutdown()).await;
        }
        let _ = tokio::time::timeout(bounded, self.store.close()).await;
    }
}

/// Runs `body` on a started stack, stopping the stack whatever happens.
async fn with_stack<F>(root: &Path, options: StoreOptions, body: F) -> Result<Vec<String>>
where
    F: AsyncFnOnce(&Stack) -> Result<Vec<String>>,
{
    let stack = Stack::start(root, options).await?;
    let result = body(&stack).await;
    let alive = stack.orchestrator.is_started();
    stack.stop().await;
    let mut notes = result?;
    ensure!(alive, "the orchestrator stopped during the fault");
    notes.push("stack alive to the end; stopped cleanly".to_owned());
    Ok(notes)
}

// --------------------------------------------------------------------------
// The faults
// --------------------------------------------------------------------------

async fn overflow(root: &Path) -> Result<Vec<String>> {
    with_stack(root, StoreOptions::default(), async |s: &Stack| {
        let id = alpha()?;
        let mut notes = Vec::new();
        // Answered once the repository's rescan snapshot exists.
        s.monitor.watched_dirs(&id).await?;
        let mark = s.events.len();
        s.monitor.simulate_overflow(&id)?;
        let path = "src/during-overflow.txt";
        std::fs::write(s.repo_path("alpha").join(path), "lost event\n")
            .context("writing during the overflow")?;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let early = s.events.since(mark, |e| {
            e.kind == EventKind::ChangeDetected && e.repo.as_ref() == Some(&id)
        });
        ensure!(
            early.is_empty(),
            "events were not dropped during the simulated overflow: {early:?}"
        );
        s.monitor.force_rescan(&id).await?;
        let event = s
            .events
            .wait(mark, Duration::from_secs(10), "rescan change_detected", |e| {
                e.kind == EventKind::ChangeDetected
                    && e.repo.as_ref() == Some(&id)
                    && e.data["rescan"] == true
            })
            .await?;
        let paths: BTreeSet<&str> = event.data["paths"]
            .as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
            .unwrap_or_default();
        ensure!(
            paths.contains(path),
            "the rescan missed {path}: {paths:?}"
        );
        notes.push(format!(
            "injected overflow on alpha; no event for the write; the rescan reported: {} (data.rescan = true, paths {paths:?})",
            describe(&event)
        ));
        let level = s.level("monitor");
        ensure!(
            level == Some(HealthLevel::Ok),
            "monitor health after the rescan: {level:?}"
        );
        notes.push(format!("after the rescan: {}", s.health_line()));
        notes.push(s.bystander_works().await?);
        Ok(notes)
    })
    .await
}

async fn repo_deleted(root: &Path) -> Result<Vec<String>> {
    with_stack(root, StoreOptions::default(), async |s: &Stack| {
        let id = alpha()?;
        let mut notes = Vec::new();
        s.monitor.watched_dirs(&id).await?;
        let mark = s.events.len();
        std::fs::remove_dir_all(s.repo_path("alpha")).context("deleting alpha")?;
        let event = s
            .events
            .wait(
                mark,
                Duration::from_secs(15),
                "fatal watcher_error on alpha",
                |e| {
                    e.kind == EventKind::WatcherError
                        && e.repo.as_ref() == Some(&id)
                        && e.severity == orchex_core::Severity::Error
                },
            )
            .await?;
        for earlier in s.events.since(mark, |e| {
            e.kind == EventKind::WatcherError && e.repo.as_ref() == Some(&id) && e.id != event.id
        }) {
            notes.push(format!("deleted alpha; event: {}", describe(&earlier)));
        }
        notes.push(format!(
            "deleted alpha; event: {} (data.fatal = {})",
            describe(&event),
            event.data["fatal"]
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while s.level("monitor") != Some(HealthLevel::Degraded) {
            ensure!(
                Instant::now() < deadline,
                "monitor health not degraded: {}",
                s.health_line()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        notes.push(s.health_line());
        // A manual run on the deleted repository fails; it does not crash.
        match s.trigger("alpha", "gen").await {
            Ok(job) => {
                let job = s.wait_final(job, Duration::from_secs(30)).await?;
                ensure!(
                    job.state() == JobState::Failed,
                    "a job on the deleted repository ended {:?}",
                    job.state()
                );
                notes.push(format!(
                    "a manual run on alpha failed: {}",
                    job.error.unwrap_or_default()
                ));
            }
            Err(err) => notes.push(format!("a manual run on alpha was refused: {err:#}")),
        }
        // The health loop's judgement of the interval (it runs every
        // `healthCheckIntervalSecs`; run once now).
        s.orchestrator.health_check().await;
        notes.push(format!("after the health check: {}", s.health_line()));
        notes.push(s.bystander_works().await?);
        Ok(notes)
    })
    .await
}

async fn corrupt_ref(root: &Path) -> Result<Vec<String>> {
    with_stack(root, StoreOptions::default(), async |s: &Stack| {
        let id = alpha()?;
        let mut notes = Vec::new();
        s.monitor.watched_dirs(&id).await?;
        let head = git(&s.repo_path("alpha"), &["rev-parse", "HEAD"])?;
        let ref_path = s.repo_path("alpha").join(".git/refs/heads/main");
        let mark = s.events.len();
        std::fs::write(&ref_path, "this is not an object id\n")
            .context("corrupting alpha's ref")?;
        let event = s
            .events
            .wait(
                mark,
                Duration::from_secs(15),
                "warning or error on alpha",
                |e| e.repo.as_ref() == Some(&id) && e.severity >= orchex_core::Severity::Warn,
            )
            .await?;
        notes.push(format!(
            "garbage in alpha's refs/heads/main; event: {}",
            describe(&event)
        ));
        s.wait_level("monitor", HealthLevel::Degraded).await?;
        notes.push(s.health_line());
        // A run on the corrupt repository ends (fails), the stack lives on.
        match s.trigger("alpha", "gen").await {
            Ok(job) => {
                let job = s.wait_final(job, Duration::from_secs(30)).await?;
                ensure!(
                    job.state() != JobState::Succeeded,
                    "a job on a repository whose branch is garbage succeeded"
                );
                let failure = s.events.since(mark, |e| {
                    e.job_id == Some(job.id) && e.kind == EventKind::JobFailed
                });
                ensure!(
                    !failure.is_empty(),
                    "no job_failed event for job {}",
                    job.id
                );
                notes.push(format!(
                    "a manual run on alpha ended {:?}: {}",
                    job.state(),
                    job.error.unwrap_or_default()
                ));
            }
            Err(err) => notes.push(format!("a manual run on alpha was refused: {err:#}")),
        }
        // The health loop's judgement of the interval (it runs every
        // `healthCheckIntervalSecs`; run once now).
        s.orchestrator.health_check().await;
        notes.push(format!("after the health check: {}", s.health_line()));
        notes.push(s.bystander_works().await?);
        std::fs::write(&ref_path, format!("{head}\n")).context("repairing alpha's ref")?;
        s.wait_level("monitor", HealthLevel::Ok).await?;
        notes.push("ref repaired: monitor health ok again".to_owned());
        Ok(notes)
    })
    .await
}

async fn sqlite_full(root: &Path) -> Result<Vec<String>> {
    // Enough pages for the schema and a few jobs; the flood fills the rest.
    let options = StoreOptions::default().max_page_count(120);
    with_stack(root, options, async |s: &Stack| {
        let mut notes = Vec::new();
        let job = s.run_job("alpha", "gen", Duration::from_secs(60)).await?;
        ensure!(job.state() == JobState::Succeeded, "baseline job {:?}", job.state());
        let started = Instant::now();
        let mut published = 0u64;
        let degraded = loop {
            for i in 0..200 {
                s.bus.publish(Event::new(
                    EventKind::JobProgress,
                    format!("filler {i} {}", "padding ".repeat(40)),
                ));
                published += 1;
            }
            let stats = s.bus.stats();
            let store = s.level("store");
            let persistence = s.level(PERSISTENCE_COMPONENT);
            if stats.dropped_store_failure > 0
                && matches!(store, Some(HealthLevel::Degraded | HealthLevel::Unhealthy))
            {
                break (stats, s.health_line(), persistence);
            }
            ensure!(
                started.elapsed() < Duration::from_secs(60),
                "the store never reported full: {:?}; {}",
                stats,
                s.health_line()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let (stats, line, persistence) = degraded;
        notes.push(format!(
            "max_page_count = 120; published {published} filler events: {} persisted, {} dropped (store failure), {} dropped (queue full)",
            stats.persisted, stats.dropped_store_failure, stats.dropped_queue_full
        ));
        notes.push(format!("{line} (persistence {persistence:?})"));
        // Publishing never blocks, and the rest keeps answering.
        let before = Instant::now();
        for _ in 0..1000 {
            s.bus.publish(Event::new(EventKind::JobProgress, "more"));
        }
        ensure!(
            before.elapsed() < Duration::from_secs(1),
            "publishing blocked on a full store"
        );
        match s.trigger("beta", "gen").await {
            Ok(id) => {
                let job = s.wait_final(id, Duration::from_secs(60)).await;
                notes.push(format!("a run on the full store: {:?}", job.map(|j| j.state())));
            }
            Err(err) => notes.push(format!("a run on the full store was refused: {err:#}")),
        }
        let recorded = s.events.since(0, |e| {
            e.severity >= orchex_core::Severity::Warn
        });
        if let Some(warning) = recorded.last() {
            notes.push(format!("latest warning-or-worse event: {}", describe(warning)));
        }
        let health = s.orchestrator.health();
        notes.push(format!("orchestrator health {}", health.status));
        Ok(notes)
    })
    .await
}

// --- read-only storage ------------------------------------------------------

async fn readonly_storage(root: &Path) -> Result<Vec<String>> {
    let dir = root.join("child");
    std::fs::create_dir(&dir).context("creating the child's directory")?;
    let exe = std::env::current_exe().context("the harness's path")?;
    let root_user = effective_uid()? == 0;
    let mut child = if root_user {
        // Root ignores permissions: the child drops to `nobody`.
        let setpriv = Path::new("/usr/bin/setpriv");
        ensure!(
            setpriv.exists(),
            "running as root and setpriv is not available: cannot drop to an unprivileged uid"
        );
        std::os::unix::fs::chown(root, Some(NOBODY), Some(NOBODY)).context("chown")?;
        std::os::unix::fs::chown(&dir, Some(NOBODY), Some(NOBODY)).context("chown")?;
        let mut command = tokio::process::Command::new(setpriv);
        command
            .arg(format!("--reuid={NOBODY}"))
            .arg(format!("--regid={NOBODY}"))
            .args(["--clear-groups", "--"])
            .arg(&exe);
        command
    } else {
        tokio::process::Command::new(&exe)
    };
    child
        .args(["faults", "--child", "readonly-storage", "--child-dir"])
        .arg(&dir)
        .env("HOME", &dir)
        .env("XDG_CONFIG_HOME", &dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(240), child.output())
        .await
        .context("the unprivileged child did not finish within 240s")?
        .context("running the unprivileged child")?;
    let text = String::from_utf8_lossy(&output.stdout);
    let mut notes: Vec<String> = text.lines().map(str::to_owned).collect();
    ensure!(
        output.status.success(),
        "the unprivileged child failed ({}): {}\n{}",
        output.status,
        notes.join(" | "),
        String::from_utf8_lossy(&output.stderr)
    );
    let how = if root_user {
        format!("ran as uid {NOBODY} through setpriv (root ignores permissions")
    } else {
        "ran as the current, unprivileged user (".to_owned()
    };
    notes.insert(
        0,
        format!(
            "{how}; a read-only remount of the live storage fails with EBUSY while SQLite \
             holds it open)"
        ),
    );
    Ok(notes)
}

/// The effective uid, from `/proc/self/status`.
fn effective_uid() -> Result<u32> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|euid| euid.parse().ok())
        .context("no effective uid in /proc/self/status")
}

fn chmod_tree(path: &Path, writable: bool) -> Result<()> {
    let mode = if writable { "u+w" } else { "a-w" };
    let status = Command::new("chmod")
        .args(["-R", mode])
        .arg(path)
        .status()
        .context("running chmod")?;
    ensure!(
        status.success(),
        "chmod -R {mode} {} failed",
        path.display()
    );
    Ok(())
}

/// The unprivileged part of `readonly-storage`.
async fn readonly_child(dir: &Path) -> Result<Vec<String>> {
    // A fresh storage directory that cannot be written: opening fails with
    // an error (orchexd exits 1 with it), no panic.
    let locked = dir.join("locked");
    std::fs::create_dir(&locked).context("creating a directory")?;
    chmod_tree(&locked, false)?;
    let mut notes = Vec::new();
    match SqliteStore::open_in_dir(&locked, StoreOptions::default()).await {
        Ok(_) => bail!("a store opened in a read-only directory"),
        Err(err) => notes.push(format!(
            "startup on a read-only storage directory: error {err}"
        )),
    }
    chmod_tree(&locked, true)?;

    let notes = with_stack(dir, StoreOptions::default(), async |s: &Stack| {
        let mut notes = notes;
        let job = s.run_job("alpha", "gen", Duration::from_secs(60)).await?;
        ensure!(
            job.state() == JobState::Succeeded,
            "baseline job {:?}",
            job.state()
        );
        chmod_tree(&s.storage, false)?;
        ensure!(
            std::fs::write(s.storage.join("probe"), "x").is_err(),
            "the read-only storage directory is writable"
        );
        notes.push(format!(
            "chmod -R a-w {} while running; a new file there: permission denied",
            s.storage.display()
        ));
        let mark = s.events.len();
        let job = s.run_job("alpha", "gen", Duration::from_secs(60)).await;
        match &job {
            Ok(job) => {
                notes.push(format!(
                    "a run with read-only storage ended {:?}: {}",
                    job.state(),
                    job.error.clone().unwrap_or_default()
                ));
                if job.state() != JobState::Succeeded {
                    let reported = s.events.since(mark, |e| {
                        e.job_id == Some(job.id) && e.kind == EventKind::JobFailed
                    });
                    ensure!(
                        !reported.is_empty(),
                        "no job_failed event for job {}",
                        job.id
                    );
                    notes.push(format!("event: {}", describe(&reported[0])));
                }
            }
            Err(err) => notes.push(format!("a run with read-only storage: {err:#}")),
        }
        notes.push(s.health_line());
        // The health loop's judgement of the interval (it runs every
        // `healthCheckIntervalSecs`; run once now).
        s.orchestrator.health_check().await;
        let level = s.level("orchestrator");
        ensure!(
            level == Some(HealthLevel::Degraded),
            "orchestrator health after failed jobs: {level:?}"
        );
        let warned = s
            .events
            .since(mark, |e| e.kind == EventKind::PerformanceWarning);
        ensure!(
            !warned.is_empty(),
            "no performance_warning after failed jobs"
        );
        notes.push(format!(
            "after the health check: {}; event: {}",
            s.health_line(),
            describe(&warned[0])
        ));
        chmod_tree(&s.storage, true)?;
        let job = s.run_job("alpha", "gen", Duration::from_secs(60)).await?;
        ensure!(
            job.state() == JobState::Succeeded,
            "after restoring write access, a job ended {:?}: {:?}",
            job.state(),
            job.error
        );
        notes.push("write access restored: the next job succeeded".to_owned());
        notes.push(s.bystander_works().await?);
        Ok(notes)
    })
    .await?;
    Ok(notes)
}

// --- steps ---------------------------------------------------------------

/// A `VmRSS` or `VmHWM` line of `/proc/self/status`, in KiB.
fn memory_kb(field: &str) -> Result<u64> {
    let status =
        std::fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("no {field} in /proc/self/status"))
}

async fn output_flood(root: &Path) -> Result<Vec<String>> {
    with_stack(root, StoreOptions::default(), async |s: &Stack| {
        let mut notes = Vec::new();
        let rss_before = memory_kb("VmRSS:")?;
        let started = Instant::now();
        let id = s.trigger("alpha", "flood").await?;
        let sampler = async {
            let mut peak = rss_before;
            loop {
                if let Ok(rss) = memory_kb("VmRSS:") {
                    peak = peak.max(rss);
                }
                match s.store.get_job(id).await {
                    Ok(Some(job)) if !matches!(job.state(), JobState::Queued | JobState::Running) => {
                        return Ok::<_, anyhow::Error>(peak);
                    }
                    Ok(_) => {}
                    Err(err) => return Err(err.into()),
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let peak = tokio::time::timeout(Duration::from_secs(290), sampler)
            .await
            .context("the flood job did not finish within 290s")??;
        let job = s.wait_final(id, Duration::from_secs(5)).await?;
        ensure!(
            job.state() == JobState::Succeeded,
            "the flood job ended {:?}: {:?}",
            job.state(),
            job.error
        );
        let tail = job
            .steps
            .first()
            .and_then(|step| step.output_tail.clone())
            .unwrap_or_default();
        ensure!(
            tail.len() <= 64 * 1024,
            "stored outputTail is {} bytes",
            tail.len()
        );
        ensure!(tail.ends_with("END\n"), "the tail lost the end of the output");
        // dd reports what it wrote to the step's stdout (the daemon's pipe).
        let count =
            std::fs::read_to_string(s.root.join("flood.count")).context("reading flood.count")?;
        let written: u64 = count
            .lines()
            .find(|line| line.contains(" bytes"))
            .and_then(|line| line.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no byte count in dd's report {count:?}"))?;
        ensure!(
            written == FLOOD_BYTES,
            "the step wrote {written} bytes, not {FLOOD_BYTES}"
        );
        let grown = peak.saturating_sub(rss_before);
        ensure!(
            grown < FLOOD_RSS_BUDGET_KB,
            "RSS grew by {grown} KiB (from {rss_before} KiB) while the step printed 1 GB"
        );
        notes.push(format!(
            "step printed {written} bytes (dd's count); job succeeded in {:.1}s; stored outputTail {} bytes (ends with END); RSS {rss_before} KiB -> peak {peak} KiB (+{grown} KiB)",
            started.elapsed().as_secs_f64(),
            tail.len()
        ));
        notes.push(s.health_line());
        Ok(notes)
    })
    .await
}

async fn never_exits(root: &Path) -> Result<Vec<String>> {
    with_stack(root, StoreOptions::default(), async |s: &Stack| {
        let mut notes = Vec::new();
        let mark = s.events.len();
        let started = Instant::now();
        let job = s.run_job("alpha", "hang", Duration::from_secs(60)).await?;
        let took = started.elapsed();
        ensure!(
            job.state() == JobState::TimedOut,
            "the hanging job ended {:?}: {:?}",
            job.state(),
            job.error
        );
        ensure!(
            job.steps.first().is_some_and(|step| step.timed_out),
            "the step is not marked timedOut: {:?}",
            job.steps
        );
        let event = s
            .events
            .wait(mark, Duration::from_secs(5), "job_timed_out", |e| {
                e.kind == EventKind::JobTimedOut && e.job_id == Some(job.id)
            })
            .await?;
        let pids_text =
            std::fs::read_to_string(s.root.join("hang.pids")).context("reading hang.pids")?;
        let pids: Vec<i32> = pids_text
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        ensure!(pids.len() == 2, "expected 2 pids, got {pids_text:?}");
        let group = nix::unistd::Pid::from_raw(pids[0]);
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let group_alive = nix::sys::signal::killpg(group, None).is_ok();
            let any_alive = pids
                .iter()
                .any(|&p| nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), None).is_ok());
            if !group_alive && !any_alive {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "process group {} still alive after the timeout",
                pids[0]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        notes.push(format!(
            "step with timeoutSecs = 2 ended timedOut after {:.1}s; event: {}; process group {} and pids {pids:?} gone",
            took.as_secs_f64(),
            describe(&event),
            pids[0]
        ));
        notes.push(s.health_line());
        notes.push(s.bystander_works().await?);
        Ok(notes)
    })
    .await
}
