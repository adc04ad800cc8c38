//! Soak: the real orchex stack, composed in-process from the library
//! crates the way `orchexd` composes them (config → store → telemetry →
//! monitor → orchestrator → dashboard), under a steady load for `--secs`
//! seconds, then stopped and checked.
//!
//! The stack: a SQLite store in a temporary directory, the Prometheus
//! recorder, the telemetry bus with its persistence writer, the health
//! registry with the daemon's probes, the monitor watching two git
//! repositories made with the git CLI (`alpha`, delivered to a branch, and
//! `beta`, delivered to the working tree), the orchestrator running a
//! cheap real pipeline on each, and the dashboard served on a free
//! 127.0.0.1 port with an admin token.
//!
//! The load, all at once:
//!
//! - `--clients` concurrent API clients in a child process
//!   ([`crate::load`]): keep-alive connections, a mix of `GET /api/health`,
//!   `/api/dashboard`, `/api/jobs`, `/api/events?limit=50` and `/metrics`,
//!   a think time of `--think-ms` (± 50 %) between requests;
//! - a publisher thread putting `--rate` events a second on the bus
//!   ([`TelemetryBus::publish`]), paced by elapsed time;
//! - a writer thread changing files under `src/` of both repositories every
//!   100–500 ms (and committing on `alpha` every 25th change), so that the
//!   monitor fires `fileChange` (and `commit`) triggers and jobs run.
//!
//! Reported, and judged (`PASS`/`FAIL`; exit 1 on any `FAIL`):
//!
//! - the server's resident memory (`VmRSS`; the clients are in another
//!   process) after the warm-up, in the middle and at the end: drift
//!   (end − start) / start < 10 %;
//! - the API: p50/p99/max latency, requests, errors; every error (a status
//!   other than 2xx, a transport error, no answer within 30 s, a client
//!   that could not connect) fails;
//! - events: once publishing stopped and the persistence writer drained and
//!   shut down, the rows in the store against the bus's published and
//!   dropped counters: persisted + dropped = published;
//! - the publisher reached `--rate` (at least 99 % of `rate × secs`);
//! - the file changes made jobs: at least one succeeded, none failed or
//!   timed out.
//!
//! Bounded: the run gives up (and fails) after `--time-limit-secs`
//! (default `secs + 300`); the clients stop by themselves too. Network
//! traffic stays on 127.0.0.1.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use futures::StreamExt as _;
use orchex_config::{ConfigHandle, Loader};
use orchex_core::{Event, EventKind, JobState, RepoId, Severity};
use orchex_dashboard::{Dashboard, DashboardOptions, Services};
use orchex_monitor::Monitor;
use orchex_orchestrator::{Events, Orchestrator, OrchestratorDeps};
use orchex_store::{
    EventFilter, EventStore as _, JobFilter, JobStore as _, PageRequest, SqliteStore, Store,
    StoreHealth as _, StoreOptions,
};
use orchex_telemetry::{
    BusConfig, HealthRegistry, PersistenceConfig, PersistenceWriter, TelemetryBus,
};

use crate::faults::{git, make_repo, watcher_health};
use crate::load::{self, ChildOptions, LoadProcess, LoadResult};

/// The admin token of the soak's dashboard.
const TOKEN: &str = "soak-admin-token";

/// The pipeline name the publisher's events carry (no such pipeline runs),
/// so that they can be counted apart in the store.
const SOAK_PIPELINE: &str = "soak-publisher";

/// Files under `src/` the writer cycles through, per repository.
const FILES: u64 = 10;

/// The goal on the resident memory's drift.
const RSS_DRIFT_GOAL: f64 = 0.10;

/// Options of `orchex-reliability soak`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct Args {
    /// Length of the soak, in seconds (after the clients connected).
    #[arg(long, default_value_t = 600)]
    secs: u64,
    /// Concurrent API clients.
    #[arg(long, default_value_t = 1000)]
    clients: usize,
    /// Events published on the bus per second.
    #[arg(long, default_value_t = 10_000)]
    rate: u64,
    /// Mean think time of a client between a response and its next request,
    /// in ms (each pause is uniform within ± 50 %).
    #[arg(long, default_value_t = 1000)]
    think_ms: u64,
    /// RNG seed (random when absent; always printed).
    #[arg(long)]
    seed: Option<u64>,
    /// When the "start" resident memory is taken, in seconds into the soak
    /// (default: 10, or secs / 6 for runs shorter than a minute).
    #[arg(long)]
    warmup_secs: Option<u64>,
    /// Interval of the progress lines, in seconds (default: secs / 10,
    /// between 5 and 60).
    #[arg(long)]
    report_secs: Option<u64>,
    /// Worker threads of the clients' runtime (in the child process).
    #[arg(long, default_value_t = 1)]
    load_threads: usize,
    /// Give up (and fail) after this many seconds; default secs + 300.
    #[arg(long)]
    time_limit_secs: Option<u64>,
    /// Leave the repositories alone (no file changes, so no jobs): for
    /// telling the load's parts apart.
    #[arg(long)]
    no_file_changes: bool,
    /// Keep the temporary directory (config, database, repositories).
    #[arg(long)]
    keep: bool,
    /// Internal: run the API clients in this process.
    #[arg(long, hide = true)]
    load_child: bool,
    /// Internal: the dashboard's port, for the clients.
    #[arg(long, hide = true, default_value_t = 0)]
    load_port: u16,
    /// Internal: the clients' progress interval, in ms.
    #[arg(long, hide = true, default_value_t = 10_000)]
    load_report_ms: u64,
    /// Internal: the clients stop by themselves after this many seconds.
    #[arg(long, hide = true, default_value_t = 900)]
    load_limit_secs: u64,
}

/// Runs the soak (or, with `--load-child`, its clients); `Ok(false)` when
/// a goal was missed.
pub(crate) fn run(args: &Args) -> Result<bool> {
    let seed = args.seed.unwrap_or_else(crate::random_seed);
    if args.load_child {
        return load::child_main(&ChildOptions {
            port: args.load_port,
            clients: args.clients,
            think: Duration::from_millis(args.think_ms),
            seed,
            report: Duration::from_millis(args.load_report_ms),
            limit: Duration::from_secs(args.load_limit_secs),
            threads: args.load_threads,
        });
    }
    ensure!(args.secs >= 6, "--secs must be at least 6");
    ensure!(args.clients >= 1, "--clients must be at least 1");
    let limit = Duration::from_secs(args.time_limit_secs.unwrap_or(args.secs + 300));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("soak-server")
        .enable_all()
        .build()
        .context("building the tokio runtime")?;
    let dir = tempfile::Builder::new()
        .prefix("orchex-soak-")
        .tempdir()
        .context("creating a temporary directory")?;
    let root = dir
        .path()
        .canonicalize()
        .context("resolving the temporary directory")?;
    println!(
        "soak: {}s, {} clients (think {} ms), {} events/s, seed {seed}, in {}",
        args.secs,
        args.clients,
        args.think_ms,
        args.rate,
        root.display()
    );
    println!("{}", machine_notes());
    let outcome = runtime.block_on(async {
        match tokio::time::timeout(limit, soak(args, seed, &root)).await {
            Ok(result) => result,
            Err(_) => Err(anyhow::anyhow!(
                "the soak did not finish within {}s",
                limit.as_secs()
            )),
        }
    });
    runtime.shutdown_timeout(Duration::from_secs(5));
    let (passed, last) = match outcome {
        Ok(verdict) => verdict,
        Err(err) => (false, format!("soak: FAIL (the harness gave up: {err:#})")),
    };
    if args.keep || !passed {
        let kept = dir.keep();
        println!("kept {}", kept.display());
    }
    println!("{last}");
    Ok(passed)
}

// --------------------------------------------------------------------------
// The stack
// --------------------------------------------------------------------------

fn config_text(root: &Path) -> String {
    format!(
        r#"version = 2

[optimizer.schedule]
enabled = false

[optimizer.safety]
rateLimitPerHour = 100000

[orchestrator]
maxConcurrent = 2
adaptiveOptimization = false

[monitor.filesystem]
debounceMs = 100
maxWaitMs = 1000

[dashboard]
bind = "127.0.0.1"
authToken = "{TOKEN}"

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
repositories = ["alpha"]
triggers = ["manual", "commit", "fileChange"]
paths = ["src/**"]
deliver = "branch"

[[pipelines.steps]]
name = "generate"
run = ["sh", "-c", "date +%s.%N > out.txt && cat src/*.txt | wc -l >> out.txt"]

[[pipelines]]
name = "gen-tree"
repositories = ["beta"]
triggers = ["manual", "fileChange"]
paths = ["src/**"]
deliver = "worktree"

[[pipelines.steps]]
name = "generate"
run = ["sh", "-c", "date +%s.%N > out.txt && cat src/*.txt | wc -l >> out.txt"]
"#,
        root = root.display(),
    )
}

/// The running stack.
struct Stack {
    store: Arc<SqliteStore>,
    bus: TelemetryBus,
    writer: Option<PersistenceWriter>,
    health: HealthRegistry,
    monitor: Monitor,
    orchestrator: Orchestrator,
    dashboard: Dashboard,
    port: u16,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    server_stop: Option<tokio::sync::oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Stack {
    async fn start(root: &Path) -> Result<Self> {
        let files: Vec<(String, &str)> = (0..FILES)
            .map(|i| (format!("src/f{i}.txt"), "v0\n"))
            .collect();
        make_repo(root, "alpha", &files)?;
        make_repo(root, "beta", &files)?;
        let config_path = root.join("orchex.toml");
        std::fs::write(&config_path, config_text(root)).context("writing the config")?;
        let loader = Loader::new(&config_path).without_env();
        let config = loader.load().context("loading the config")?.config;
        let storage = config.storage.path.clone();
        std::fs::create_dir_all(&storage).context("creating the storage directory")?;

        // --- storage ---
        let store = Arc::new(
            SqliteStore::open_in_dir(&storage, StoreOptions::default())
                .await
                .context("opening the store")?,
        );

        // --- telemetry ---
        let metrics = orchex_telemetry::install_prometheus().context("the Prometheus recorder")?;
        let mut tasks = Vec::new();
        let upkeep = metrics.spawn_upkeep(orchex_telemetry::DEFAULT_UPKEEP_INTERVAL);
        tasks.push(tokio::spawn(async move {
            let _ = upkeep.await;
        }));
        let health = HealthRegistry::new();
        let (bus, queue) = TelemetryBus::new(BusConfig::default());
        let writer =
            PersistenceWriter::spawn(queue, store.clone(), &health, PersistenceConfig::default());
        let probe_store = store.clone();
        health.register_probe("store", move || probe_store.health());

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
            monitor
                .add_repository(repository.clone())
                .await
                .with_context(|| format!("watching {}", repository.name))?;
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

        // --- dashboard ---
        let handle = ConfigHandle::new(loader, config.clone());
        let services = Services {
            orchestrator: orchestrator.clone(),
            monitor: monitor.clone(),
            store: store.clone() as Arc<dyn Store>,
            bus: bus.clone(),
            health: health.clone(),
            config: handle,
            metrics: Some(metrics),
        };
        let dashboard = Dashboard::new(services, &config, DashboardOptions::default())
            .context("building the dashboard")?;
        ensure!(
            dashboard.policy().tokens.required(),
            "the dashboard does not require the token"
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("listening on 127.0.0.1")?;
        let port = listener
            .local_addr()
            .context("the listener's address")?
            .port();
        let (server_stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(dashboard.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            store,
            bus,
            writer: Some(writer),
            health,
            monitor,
            orchestrator,
            dashboard,
            port,
            server: Some(server),
            server_stop: Some(server_stop),
            tasks,
        })
    }

    /// The health report in one line.
    fn health_line(&self) -> String {
        crate::faults::health_line(&self.health)
    }

    /// Stops the API, the orchestrator and the monitor, in the daemon's
    /// order; the bus and its writer stay up (see [`Stack::drain`]).
    async fn stop_services(&mut self) {
        let bounded = Duration::from_secs(10);
        if let Some(stop) = self.server_stop.take() {
            let _ = stop.send(());
        }
        self.dashboard.shutdown();
        let _ = tokio::time::timeout(
            Duration::from_secs(40),
            self.orchestrator.stop(Duration::from_secs(30)),
        )
        .await;
        let _ = tokio::time::timeout(bounded, self.monitor.shutdown()).await;
        if let Some(mut server) = self.server.take()
            && tokio::time::timeout(bounded, &mut server).await.is_err()
        {
            server.abort();
        }
        for task in &self.tasks {
            task.abort();
        }
    }

    /// Lets the persistence writer write everything queued, then shuts it
    /// down; `Err` when it does not within `limit`.
    async fn drain(&mut self, limit: Duration) -> Result<()> {
        tokio::time::timeout(limit, self.bus.flush())
            .await
            .context("the persistence writer did not drain the queue in time")?;
        if let Some(writer) = self.writer.take() {
            tokio::time::timeout(limit, writer.shutdown())
                .await
                .context("the persistence writer did not shut down in time")?;
        }
        Ok(())
    }
}

// --------------------------------------------------------------------------
// The load
// --------------------------------------------------------------------------

/// Publishes `rate` events a second until `stop` or `length`; returns how
/// many it published.
fn publisher(bus: &TelemetryBus, rate: u64, length: Duration, stop: &AtomicBool) -> u64 {
    let repo = RepoId::new("alpha").ok();
    let started = Instant::now();
    let mut sent = 0u64;
    loop {
        let elapsed = started.elapsed();
        if elapsed >= length || stop.load(Ordering::Relaxed) {
            break;
        }
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let due = (elapsed.as_secs_f64() * rate as f64) as u64;
        while sent < due {
            let mut event = Event::new(
                EventKind::JobProgress,
                format!("soak: step {} of 5", sent % 5 + 1),
            )
            .with_pipeline(SOAK_PIPELINE)
            .with_data(serde_json::json!({ "seq": sent }));
            if let Some(repo) = &repo {
                event = event.with_repo(repo.clone());
            }
            bus.publish(event);
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    sent
}

/// What the file writer did.
#[derive(Debug, Default)]
struct Changes {
    writes: AtomicU64,
    commits: AtomicU64,
    failures: AtomicU64,
}

/// Changes a file under `src/` of `alpha` or `beta` every 100–500 ms, and
/// commits `alpha` every 25th change, until `stop`.
fn file_writer(root: &Path, seed: u64, stop: &AtomicBool, changes: &Changes) {
    let mut rng = fastrand::Rng::with_seed(seed.rotate_left(17));
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(rng.u64(100..=500)));
        n += 1;
        let repo = if rng.bool() { "alpha" } else { "beta" };
        let dir = root.join(repo);
        let file = dir.join(format!("src/f{}.txt", rng.u64(0..FILES)));
        match std::fs::write(&file, format!("change {n}\n")) {
            Ok(()) => changes.writes.fetch_add(1, Ordering::Relaxed),
            Err(_) => changes.failures.fetch_add(1, Ordering::Relaxed),
        };
        if n.is_multiple_of(25) {
            let alpha = root.join("alpha");
            let committed = git(&alpha, &["add", "-A", "src"])
                .and_then(|_| git(&alpha, &["commit", "-q", "-m", &format!("soak change {n}")]));
            match committed {
                Ok(_) => changes.commits.fetch_add(1, Ordering::Relaxed),
                Err(_) => changes.failures.fetch_add(1, Ordering::Relaxed),
            };
        }
    }
}

// --------------------------------------------------------------------------
// Measurements
// --------------------------------------------------------------------------

/// Resident memory of this (the server) process, KiB.
#[derive(Debug, Clone, Copy, Default)]
struct Rss {
    at_secs: u64,
    total: u64,
    anon: u64,
    file: u64,
    /// What SQLite has allocated (page caches, statements...), KiB.
    sqlite: u64,
}

/// The memory SQLite has allocated in this process, in KiB: the store's
/// connections (the library is bundled and linked once, so the harness
/// sees the store's figure).
fn sqlite_kb() -> u64 {
    // SAFETY: `sqlite3_memory_used` takes no argument, only reads SQLite's
    // global memory statistics (thread-safe in SQLite's default serialized
    // mode) and may be called at any time.
    let used = unsafe { rusqlite::ffi::sqlite3_memory_used() };
    u64::try_from(used).unwrap_or(0) / 1024
}

impl Rss {
    fn now(at_secs: u64) -> Self {
        Self {
            at_secs,
            total: load::status_kb("VmRSS:"),
            anon: load::status_kb("RssAnon:"),
            file: load::status_kb("RssFile:"),
            sqlite: sqlite_kb(),
        }
    }

    fn line(&self) -> String {
        format!(
            "{} KiB (anon {} KiB, file {} KiB; SQLite's allocations {} KiB) at {}s",
            self.total, self.anon, self.file, self.sqlite, self.at_secs
        )
    }
}

/// Asks glibc's allocator to give its free memory back to the kernel
/// (`malloc_trim(0)`), so that the resident memory after it tells the
/// memory the allocator held free apart from live data. `false` when
/// nothing was released (or not on glibc).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_allocator() -> bool {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: `malloc_trim` only returns free pages of glibc's heaps to the
    // kernel; it takes the arenas' locks, so it is safe while other threads
    // allocate, and it does not touch memory in use.
    unsafe { malloc_trim(0) != 0 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_allocator() -> bool {
    false
}

/// The soft open-file limit, from `/proc/self/limits`.
fn open_file_limit() -> Option<u64> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|line| line.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// CPUs, model and load average, for the output.
fn machine_notes() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let profile = if cfg!(debug_assertions) {
        "debug build"
    } else {
        "release build"
    };
    format!(
        "machine: {} cpus, {model}, load average {}; {profile}",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

fn ms(us: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let ms = us as f64 / 1000.0;
    format!("{ms:.1} ms")
}

/// Prints a line from the load child.
fn echo_load(line: &str) {
    let fields: Vec<&str> = line.split_whitespace().collect();
    match fields.as_slice() {
        ["PROGRESS", secs, requests, errors, p50, p99, max] => {
            let us = |f: &str| f.parse::<u64>().unwrap_or(0);
            println!(
                "  api  t={secs}s: {requests} requests, {errors} errors in the window; p50 {}, p99 {}, max {}",
                ms(us(p50)),
                ms(us(p99)),
                ms(us(max))
            );
        }
        _ => println!("  load: {line}"),
    }
}

// --------------------------------------------------------------------------
// The run
// --------------------------------------------------------------------------

/// The soak itself; whether every goal was met, and the summary line.
async fn soak(args: &Args, seed: u64, root: &Path) -> Result<(bool, String)> {
    let needed = u64::try_from(args.clients).unwrap_or(u64::MAX) + 256;
    if let Some(limit) = open_file_limit() {
        ensure!(
            limit >= needed,
            "the open-file limit is {limit}; {} clients need at least {needed} \
             (raise it with `ulimit -n`; `just soak` does)",
            args.clients
        );
    }
    let secs = args.secs;
    let warmup = args
        .warmup_secs
        .unwrap_or(if secs >= 60 { 10 } else { secs / 6 });
    ensure!(
        warmup < secs / 2,
        "--warmup-secs must be under half of --secs"
    );
    let report = args.report_secs.unwrap_or((secs / 10).clamp(5, 60));

    let started = Instant::now();
    let mut stack = Stack::start(root).await?;
    println!(
        "stack up in {:.1}s: dashboard on 127.0.0.1:{}; {}; RSS {}",
        started.elapsed().as_secs_f64(),
        stack.port,
        stack.health_line(),
        Rss::now(0).line()
    );

    // --- clients connect ---
    let mut clients = LoadProcess::spawn(
        &ChildOptions {
            port: stack.port,
            clients: args.clients,
            think: Duration::from_millis(args.think_ms),
            seed,
            report: Duration::from_secs(report),
            limit: Duration::from_secs(secs + 60),
            threads: args.load_threads,
        },
        TOKEN,
    )?;
    let ready = loop {
        let Some(line) = clients.next_line(Duration::from_secs(180)).await else {
            bail!("the load child (pid {}) sent no READY line", clients.pid());
        };
        if line.starts_with("READY") {
            break line;
        }
        echo_load(&line);
    };
    let ready: Vec<u64> = ready
        .split_whitespace()
        .skip(1)
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    let (connected, connect_failed) = (
        ready.first().copied().unwrap_or(0),
        ready.get(1).copied().unwrap_or(0),
    );
    println!(
        "clients (pid {}): {connected} connected, {connect_failed} failed, in {} ms",
        clients.pid(),
        ready.get(2).copied().unwrap_or(0)
    );

    // --- the soak ---
    let t0 = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let length = Duration::from_secs(secs);
    let publishing = {
        let (bus, stop) = (stack.bus.clone(), Arc::clone(&stop));
        let rate = args.rate;
        std::thread::Builder::new()
            .name("soak-publisher".to_owned())
            .spawn(move || publisher(&bus, rate, length, &stop))
            .context("starting the publisher")?
    };
    let changes = Arc::new(Changes::default());
    let writing = {
        let (root, stop, changes) = (root.to_path_buf(), Arc::clone(&stop), Arc::clone(&changes));
        let enabled = !args.no_file_changes;
        std::thread::Builder::new()
            .name("soak-files".to_owned())
            .spawn(move || {
                if enabled {
                    file_writer(&root, seed, &stop, &changes);
                }
            })
            .context("starting the file writer")?
    };
    let mut samples: Vec<Rss> = Vec::new();
    let (mut rss_start, mut rss_middle) = (None, None);
    let mut max_queue = 0usize;
    let mut next_report = report;
    let cpu_before = load::cpu_time();
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        while let Some(line) = clients.try_line() {
            echo_load(&line);
        }
        max_queue = max_queue.max(stack.bus.queue_len());
        let at = t0.elapsed().as_secs();
        if at >= secs {
            break;
        }
        if rss_start.is_none() && at >= warmup {
            let rss = Rss::now(at);
            println!("RSS start (after the {warmup}s warm-up): {}", rss.line());
            rss_start = Some(rss);
        }
        if rss_middle.is_none() && at >= secs / 2 {
            let rss = Rss::now(at);
            println!("RSS middle: {}", rss.line());
            rss_middle = Some(rss);
        }
        if at >= next_report {
            next_report += report;
            let rss = Rss::now(at);
            samples.push(rss);
            let stats = stack.bus.stats();
            let jobs = stack.store.count_jobs(JobFilter::new()).await.unwrap_or(0);
            println!(
                "t={at}s: RSS {} KiB (anon {} KiB, SQLite {} KiB); bus published {}, persisted {}, dropped {}, queue {}; jobs {jobs}; file changes {}",
                rss.total,
                rss.anon,
                rss.sqlite,
                stats.published,
                stats.persisted,
                stats.dropped(),
                stack.bus.queue_len(),
                changes.writes.load(Ordering::Relaxed)
            );
        }
    }
    let rss_end = Rss::now(t0.elapsed().as_secs());
    let soak_time = t0.elapsed();
    let server_cpu = load::cpu_time().saturating_sub(cpu_before);
    println!("RSS end: {}", rss_end.line());
    let peak_kb = load::status_kb("VmHWM:");
    let released = trim_allocator();
    let rss_trimmed = Rss::now(t0.elapsed().as_secs());

    // --- stop the load ---
    stop.store(true, Ordering::Relaxed);
    let (published_here, writer_done) = tokio::task::spawn_blocking(move || {
        let published = publishing.join();
        let written = writing.join();
        (published, written)
    })
    .await
    .context("joining the publisher and the file writer")?;
    let published_here =
        published_here.map_err(|_| anyhow::anyhow!("the publisher thread panicked"))?;
    writer_done.map_err(|_| anyhow::anyhow!("the file writer thread panicked"))?;
    let queue_at_stop = stack.bus.queue_len();
    let load = clients.stop(Duration::from_secs(120), echo_load).await?;

    // --- stop the stack and let persistence drain ---
    let health_at_end = stack.health_line();
    stack.stop_services().await;
    let draining = Instant::now();
    let backlog = stack.bus.queue_len();
    stack.drain(Duration::from_secs(300)).await?;
    let drain_time = draining.elapsed();
    let stats = stack.bus.stats();
    let store = stack.store.clone();
    let rows = store
        .count_events(EventFilter::new())
        .await
        .context("counting the stored events")?;
    let rows_here = store
        .count_events(EventFilter::new().pipeline(SOAK_PIPELINE))
        .await
        .context("counting the publisher's stored events")?;
    let mut jobs = Vec::new();
    for state in JobState::ALL {
        let count = store
            .count_jobs(JobFilter::new().state(state))
            .await
            .context("counting jobs")?;
        if count > 0 {
            jobs.push((state, count));
        }
    }
    let mut job_errors = Vec::new();
    for state in [JobState::Failed, JobState::TimedOut] {
        let page = store
            .list_jobs(JobFilter::new().state(state), PageRequest::first().limit(5))
            .await
            .context("listing failed jobs")?;
        for job in page.items {
            job_errors.push(format!(
                "{} {} {:?}: {}",
                job.id,
                job.pipeline,
                job.state(),
                job.error.unwrap_or_default()
            ));
        }
    }
    let mut skipped: std::collections::BTreeMap<String, u64> = std::collections::BTreeMap::new();
    let mut page = PageRequest::first().limit(1000);
    loop {
        let listed = store
            .list_jobs(JobFilter::new().state(JobState::Skipped), page)
            .await
            .context("listing skipped jobs")?;
        for job in &listed.items {
            let code = job.skip_reason.as_ref().map_or_else(
                || "none".to_owned(),
                |reason| {
                    serde_json::to_value(reason)
                        .ok()
                        .and_then(|v| v["code"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| reason.to_string())
                },
            );
            *skipped.entry(code).or_default() += 1;
        }
        match listed.next_cursor {
            Some(cursor) => page = PageRequest::first().limit(1000).after(cursor),
            None => break,
        }
    }
    let warnings = store
        .query_events(
            EventFilter::new().min_severity(Severity::Warn),
            PageRequest::first().limit(10),
        )
        .await
        .context("listing warnings")?;
    let warning_count = store
        .count_events(EventFilter::new().min_severity(Severity::Warn))
        .await
        .context("counting warnings")?;
    let kinds = [
        EventKind::ChangeDetected,
        EventKind::CommitDetected,
        EventKind::JobQueued,
        EventKind::JobSkipped,
    ];
    let mut kind_counts = Vec::new();
    for kind in kinds {
        let count = store
            .count_events(EventFilter::new().kind(kind))
            .await
            .context("counting events")?;
        kind_counts.push(format!("{} {count}", kind.as_str()));
    }
    let closed = store.close().await;

    // --- the report ---
    let report = Report {
        args,
        soak_time,
        server_cpu,
        rss_start: rss_start.unwrap_or_default(),
        rss_middle: rss_middle.unwrap_or_default(),
        rss_end,
        rss_trimmed: released.then_some(rss_trimmed),
        peak_kb,
        samples,
        connected,
        connect_failed,
        load,
        published_here,
        rows_here,
        stats,
        rows,
        max_queue,
        queue_at_stop,
        backlog,
        drain_time,
        jobs,
        job_errors,
        skipped: skipped
            .iter()
            .map(|(code, n)| format!("{code} {n}"))
            .collect(),
        changes: (
            changes.writes.load(Ordering::Relaxed),
            changes.commits.load(Ordering::Relaxed),
            changes.failures.load(Ordering::Relaxed),
        ),
        kind_counts,
        warning_count,
        warnings: warnings
            .items
            .iter()
            .map(|e| {
                format!(
                    "{} [{}] {}: {}",
                    e.ts,
                    e.severity.as_str(),
                    e.kind.as_str(),
                    e.message
                )
            })
            .collect(),
        health_at_end,
    };
    let verdict = report.print();
    if let Err(err) = closed {
        println!("note: closing the store failed: {err}");
    }
    Ok(verdict)
}

/// Everything the summary prints.
struct Report<'a> {
    args: &'a Args,
    soak_time: Duration,
    server_cpu: Duration,
    rss_start: Rss,
    rss_middle: Rss,
    rss_end: Rss,
    /// Right after the end sample and `malloc_trim(0)`, when it released
    /// anything.
    rss_trimmed: Option<Rss>,
    peak_kb: u64,
    samples: Vec<Rss>,
    connected: u64,
    connect_failed: u64,
    load: LoadResult,
    published_here: u64,
    rows_here: u64,
    stats: orchex_telemetry::BusStats,
    rows: u64,
    max_queue: usize,
    queue_at_stop: usize,
    backlog: usize,
    drain_time: Duration,
    jobs: Vec<(JobState, u64)>,
    job_errors: Vec<String>,
    skipped: Vec<String>,
    changes: (u64, u64, u64),
    kind_counts: Vec<String>,
    warning_count: u64,
    warnings: Vec<String>,
    health_at_end: String,
}

impl Report<'_> {
    /// Prints the report; whether every goal was met, and the one-line
    /// summary to print last.
    #[allow(clippy::cast_precision_loss)]
    fn print(&self) -> (bool, String) {
        let secs = self.soak_time.as_secs_f64();
        let mut failed: Vec<&str> = Vec::new();
        println!();
        println!("=== soak summary ===");
        println!(
            "ran {secs:.1}s; server process CPU {:.1}s ({:.2} cores); load child CPU {:.1}s over {:.1}s ({:.2} cores), peak RSS {} KiB",
            self.server_cpu.as_secs_f64(),
            self.server_cpu.as_secs_f64() / secs,
            self.load.cpu_ms as f64 / 1000.0,
            self.load.life_ms as f64 / 1000.0,
            self.load.cpu_ms as f64 / self.load.life_ms.max(1) as f64,
            self.load.peak_rss_kb
        );

        // Memory.
        let start = self.rss_start.total.max(1) as f64;
        let drift = (self.rss_end.total as f64 - start) / start;
        let series: Vec<String> = self
            .samples
            .iter()
            .map(|s| format!("{}s {}", s.at_secs, s.total))
            .collect();
        println!(
            "RSS (KiB): start {}, middle {}, end {}; peak (VmHWM) {}; series {}",
            self.rss_start.line(),
            self.rss_middle.line(),
            self.rss_end.line(),
            self.peak_kb,
            series.join(", ")
        );
        let rss_ok = drift < RSS_DRIFT_GOAL;
        println!(
            "{} RSS drift (end - start) / start = {:+.1} % (goal < {:.0} %)",
            verdict(rss_ok),
            drift * 100.0,
            RSS_DRIFT_GOAL * 100.0
        );
        let less = |r: &Rss| r.total.saturating_sub(r.sqlite);
        let less_start = less(&self.rss_start).max(1) as f64;
        println!(
            "     not counting SQLite's allocations (page caches, bounded by cache_size per connection): start {} KiB, middle {} KiB, end {} KiB, drift {:+.1} % (diagnostic; the goal is on VmRSS)",
            less(&self.rss_start),
            less(&self.rss_middle),
            less(&self.rss_end),
            (less(&self.rss_end) as f64 - less_start) / less_start * 100.0
        );
        let middle = self.rss_middle.total.max(1) as f64;
        println!(
            "     second half only (middle -> end): {:+.1} %",
            (self.rss_end.total as f64 - middle) / middle * 100.0
        );
        if let Some(trimmed) = &self.rss_trimmed {
            println!(
                "     right after the end sample, malloc_trim(0): {} KiB ({:+.1} % against start): {} KiB of the end figure was free memory the allocator held (diagnostic; the goal is on VmRSS as measured)",
                trimmed.total,
                (trimmed.total as f64 - start) / start * 100.0,
                self.rss_end.total.saturating_sub(trimmed.total)
            );
        }
        if !rss_ok {
            failed.push("rss");
        }

        // API.
        let [count, p50, p90, p99, p999, max] = self.load.all;
        println!(
            "API: {count} timed requests ({:.0}/s) from {} clients over {} connections; p50 {}, p90 {}, p99 {}, p99.9 {}, max {}",
            count as f64 / secs,
            self.connected,
            self.load.opened,
            ms(p50),
            ms(p90),
            ms(p99),
            ms(p999),
            ms(max)
        );
        for (path, [count, p50, _, p99, _, max]) in &self.load.endpoints {
            println!(
                "     {path}: {count} requests, p50 {}, p99 {}, max {}",
                ms(*p50),
                ms(*p99),
                ms(*max)
            );
        }
        let errors = self.load.error_count() + self.connect_failed;
        for (count, what) in &self.load.errors {
            println!("     error x{count}: {what}");
        }
        let api_ok = errors == 0 && count > 0;
        println!(
            "{} API errors: {} (non-2xx, transport, timeouts: {}; clients that could not connect: {}) (goal 0); p99 {} (no goal; reported)",
            verdict(api_ok),
            errors,
            self.load.error_count(),
            self.connect_failed,
            ms(p99)
        );
        if !api_ok {
            failed.push("api");
        }

        // Events.
        let s = &self.stats;
        let accounted = self.rows + s.dropped();
        println!(
            "events: published {} (publisher thread {}, the stack {}); persisted rows {} (publisher's {}); bus counters: queued {}, persisted {}, dropped {} (queue full or closed {}, store failure {})",
            s.published,
            self.published_here,
            s.published.saturating_sub(self.published_here),
            self.rows,
            self.rows_here,
            s.queued,
            s.persisted,
            s.dropped(),
            s.dropped_queue_full,
            s.dropped_store_failure
        );
        println!(
            "        queue: max {} seen, {} when publishing stopped, {} when the services had stopped; drained and writer shut down in {:.2}s",
            self.max_queue,
            self.queue_at_stop,
            self.backlog,
            self.drain_time.as_secs_f64()
        );
        let events_ok = accounted == s.published
            && s.persisted == self.rows
            && s.queued == s.persisted + s.dropped_store_failure;
        println!(
            "{} events: persisted {} + dropped {} = {} vs published {} (difference {}); writer's persisted counter {} vs rows {}",
            verdict(events_ok),
            self.rows,
            s.dropped(),
            accounted,
            s.published,
            i128::from(s.published) - i128::from(accounted),
            s.persisted,
            self.rows
        );
        if !events_ok {
            failed.push("events");
        }
        let target = self.args.rate * self.soak_time.as_secs();
        let rate_ok = self.published_here as f64 >= 0.99 * target as f64;
        println!(
            "{} publisher rate: {} events in {secs:.1}s = {:.0}/s (goal {}/s, at least 99 % of {target})",
            verdict(rate_ok),
            self.published_here,
            self.published_here as f64 / secs,
            self.args.rate
        );
        if !rate_ok {
            failed.push("rate");
        }

        // Jobs.
        let (writes, commits, change_failures) = self.changes;
        let count_of = |state: JobState| {
            self.jobs
                .iter()
                .find(|(s, _)| *s == state)
                .map_or(0, |(_, n)| *n)
        };
        let jobs: Vec<String> = self
            .jobs
            .iter()
            .map(|(state, n)| format!("{state} {n}"))
            .collect();
        println!(
            "file changes: {writes} writes, {commits} commits on alpha, {change_failures} failed; stored events: {}",
            self.kind_counts.join(", ")
        );
        let jobs_ok = (count_of(JobState::Succeeded) > 0 || self.args.no_file_changes)
            && count_of(JobState::Failed) == 0
            && count_of(JobState::TimedOut) == 0
            && change_failures == 0;
        println!(
            "{} jobs from the file changes: {} (goal: some succeeded, none failed or timed out)",
            verdict(jobs_ok),
            if jobs.is_empty() {
                "none".to_owned()
            } else {
                jobs.join(", ")
            }
        );
        if !self.skipped.is_empty() {
            println!("     skipped, by reason: {}", self.skipped.join(", "));
        }
        for error in &self.job_errors {
            println!("     {error}");
        }
        if !jobs_ok {
            failed.push("jobs");
        }
        println!("at the end: {}; {}", self.health_at_end, machine_notes());
        println!(
            "warning-or-worse events stored: {} (newest {} below)",
            self.warning_count,
            self.warnings.len()
        );
        for warning in &self.warnings {
            println!("     {warning}");
        }
        if failed.is_empty() {
            (true, "soak: PASS (every goal met)".to_owned())
        } else {
            (false, format!("soak: FAIL ({})", failed.join(", ")))
        }
    }
}

fn verdict(ok: bool) -> &'static str {
    if ok { "PASS" } else { "FAIL" }
}
