//! Shared by the dashboard benches (`dashboard_rest`, `dashboard_ws_fanout`,
//! `dashboard_ws_idle`): a real orchex stack composed like the daemon (and
//! like `crates/dashboard/tests/dashboard/support.rs`) and served on a free
//! 127.0.0.1 port, the open-file limit, `/proc/self/status`, a monotonic
//! clock comparable across processes, and a line protocol with the client
//! child process the WebSocket benches run their clients in.
//!
//! Included by each bench with `#[path = "dashboard_support/mod.rs"]`; not a
//! bench target of its own (Cargo only discovers `benches/*/main.rs`).

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use orchex_config::{ConfigHandle, Loader};
use orchex_core::config::Config;
use orchex_core::{Event, JobId, JobState};
use orchex_dashboard::{Dashboard, DashboardOptions, Services};
use orchex_monitor::Monitor;
use orchex_orchestrator::{Events, ManualRun, Orchestrator, OrchestratorDeps};
use orchex_store::{SqliteStore, Store, StoreHealth as _, StoreOptions};
use orchex_telemetry::{
    BusConfig, HealthRegistry, PersistenceConfig, PersistenceWriter, TelemetryBus,
};

/// Jobs run before measuring, so the snapshot lists 20 real recent jobs
/// and their events (the dashboard shows the 20 newest jobs and 50 newest
/// events).
pub(crate) const SEED_JOBS: usize = 20;

fn git(dir: &Path, args: &[&str]) {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn config_text(repo: &Path) -> String {
    // The shipped defaults for the dashboard: 127.0.0.1, no token.
    format!(
        r#"version = 2

[optimizer.schedule]
enabled = false

[optimizer.safety]
rateLimitPerHour = 100000

[orchestrator]
maxConcurrent = 2
adaptiveOptimization = false

[dashboard]
bind = "127.0.0.1"

[storage]
path = "data"

[[repositories]]
name = "api"
path = "{repo}"
branch = "main"

[[pipelines]]
name = "codegen"
repositories = ["api"]
triggers = ["manual"]
deliver = "none"

[[pipelines.steps]]
name = "generate"
run = ["sh", "-c", "echo generated"]
"#,
        repo = repo.display()
    )
}

/// The orchex stack, its dashboard served on `port`.
pub(crate) struct Stack {
    _dir: tempfile::TempDir,
    pub(crate) port: u16,
    pub(crate) services: Services,
    pub(crate) dashboard: Dashboard,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    writer: Option<PersistenceWriter>,
}

impl Stack {
    /// Composes the services like the daemon does: a SQLite store in a
    /// temporary directory, the bus with its persistence writer, health
    /// probes, the monitor watching a small git repository, the
    /// orchestrator running real steps, the Prometheus recorder, and the
    /// dashboard with its default options, served with `Dashboard::serve`.
    pub(crate) async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let repo = root.join("api");
        std::fs::create_dir_all(repo.join("schema")).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("schema/api.txt"), "v1\n").unwrap();
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-q", "-m", "initial"]);
        let config_path = root.join("orchex.toml");
        std::fs::write(&config_path, config_text(&repo)).unwrap();
        let loader = Loader::new(&config_path).without_env();
        let config: Config = loader.load().unwrap().config;
        let handle = ConfigHandle::new(loader, config.clone());

        let store = Arc::new(
            SqliteStore::open_in_dir(&config.storage.path, StoreOptions::default())
                .await
                .unwrap(),
        );
        let metrics = orchex_telemetry::install_prometheus().ok();
        let health = HealthRegistry::new();
        let (bus, queue) = TelemetryBus::new(BusConfig::default());
        let writer =
            PersistenceWriter::spawn(queue, store.clone(), &health, PersistenceConfig::default());
        let probe_store = store.clone();
        health.register_probe("store", move || probe_store.health());

        let (monitor, triggers) = Monitor::new(&config.monitor, &config.optimizer.thresholds);
        let mut monitor_events = monitor.subscribe_events();
        let forward = bus.clone();
        tokio::spawn(async move {
            while let Some(event) = monitor_events.next().await {
                forward.publish(event);
            }
        });
        for repository in &config.repositories {
            monitor.add_repository(repository.clone()).await.unwrap();
        }
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
        .unwrap();
        orchestrator.recover().await.unwrap();
        orchestrator.start(triggers).unwrap();
        let probe = orchestrator.clone();
        health.register_probe("orchestrator", move || probe.health());

        let services = Services {
            orchestrator,
            monitor,
            store: store.clone() as Arc<dyn Store>,
            bus,
            health,
            config: handle,
            metrics,
        };
        let dashboard = Dashboard::new(services.clone(), &config, dashboard_options()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(dashboard.clone().serve(listener, async move {
            let _ = stopped.await;
        }));
        let stack = Self {
            _dir: dir,
            port,
            services,
            dashboard,
            stop: Some(stop),
            server: Some(server),
            writer: Some(writer),
        };
        stack.seed().await;
        stack
    }

    /// Runs [`SEED_JOBS`] real jobs to completion, one after the other (a
    /// manual run of a pipeline that is already queued is coalesced into
    /// the queued job), then waits until their events are stored.
    async fn seed(&self) {
        let orchestrator = &self.services.orchestrator;
        let deadline = Instant::now() + Duration::from_secs(300);
        for _ in 0..SEED_JOBS {
            let jobs = orchestrator
                .trigger(ManualRun {
                    repo: "api".to_owned(),
                    pipeline: Some("codegen".to_owned()),
                    force: true,
                    dry_run: false,
                })
                .await
                .unwrap();
            for id in jobs.iter().map(|job| job.id) {
                loop {
                    let job = self.services.store.get_job(id).await.unwrap().unwrap();
                    if !matches!(job.state(), JobState::Queued | JobState::Running) {
                        assert_eq!(job.state(), JobState::Succeeded, "{job:?}");
                        break;
                    }
                    assert!(Instant::now() < deadline, "seed job {id} did not finish");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.services.bus.flush().await;
    }

    /// Stops the server, the orchestrator, the monitor and the writer.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
        self.services
            .orchestrator
            .stop(Duration::from_secs(1))
            .await;
        self.services.monitor.shutdown().await;
        if let Some(writer) = self.writer.take() {
            writer.shutdown().await;
        }
    }
}

/// Raises the soft open-file limit to the hard one; returns the new soft
/// limit.
pub(crate) fn raise_fd_limit() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    }
    getrlimit(Resource::RLIMIT_NOFILE).unwrap().0
}

/// A `kB` field of `/proc/self/status` (`VmRSS:`, `RssAnon:`, ...).
pub(crate) fn proc_status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|line| {
            line.strip_prefix(field)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// User + system CPU time of this process so far.
pub(crate) fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    let usage = getrusage(UsageWho::RUSAGE_SELF).unwrap();
    let micros = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(u64::try_from(t.tv_sec()).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec()).unwrap_or(0))
    };
    micros(usage.user_time()) + micros(usage.system_time())
}

/// `CLOCK_MONOTONIC` in nanoseconds: one clock for the whole machine, so a
/// timestamp taken in the server process can be compared in the client
/// process.
pub(crate) fn monotonic_ns() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    u64::try_from(now.tv_sec()).unwrap_or(0) * 1_000_000_000
        + u64::try_from(now.tv_nsec()).unwrap_or(0)
}

/// Load average and CPU model, for the output.
pub(crate) fn machine_notes() -> String {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    format!(
        "cpus {}, {model}, load average {}",
        std::thread::available_parallelism().map_or(0, std::num::NonZero::get),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}

/// The client child process of the WebSocket benches: the same bench
/// binary started with `--clients <mode> <port> <count>`. It prints
/// `READY ...` once every client is connected and has its first snapshot,
/// waits for `STOP` on stdin, then prints `RESULT ...` lines and exits.
pub(crate) struct ClientProcess {
    child: Child,
    stdin: ChildStdin,
    lines: std_mpsc::Receiver<String>,
}

impl ClientProcess {
    pub(crate) fn spawn(mode: &str, port: u16, count: usize) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--clients", mode, &port.to_string(), &count.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            stdin,
            lines,
        }
    }

    /// The next line starting with `prefix` (others are echoed), within
    /// `timeout`; the child is killed when it does not come.
    pub(crate) fn expect(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(line) => println!("  client: {line}"),
                Err(_) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("the client process sent no {prefix} line within {timeout:?}");
                }
            }
        }
    }

    /// Tells the clients to stop and collects every `RESULT` line.
    pub(crate) fn stop(mut self, timeout: Duration) -> Vec<String> {
        writeln!(self.stdin, "STOP").unwrap();
        self.stdin.flush().unwrap();
        let mut results = Vec::new();
        loop {
            let line = self.expect("RESULT", timeout);
            if line == "RESULT END" {
                break;
            }
            results.push(line);
        }
        let _ = self.child.wait();
        results
    }
}

/// Waits for `STOP` on stdin (or end of input, or `limit`) on a thread.
pub(crate) fn stop_signal(limit: Duration) -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let (line_tx, line_rx) = std_mpsc::channel::<()>();
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {
            if line.trim() == "STOP" {
                break;
            }
            line.clear();
        }
        let _ = line_tx.send(());
    });
    std::thread::spawn(move || {
        // Bounded: the clients stop by themselves after `limit`.
        let _ = line_rx.recv_timeout(limit);
        let _ = tx.send(true);
    });
    rx
}

/// Connects one WebSocket client to `/api/ws` on 127.0.0.1, retrying a
/// few times when the listen backlog overflows.
///
/// The client's read buffer is 4 KiB instead of tungstenite's 128 KiB:
/// tungstenite zero-fills the free part of its read buffer before every
/// read attempt, and the clients share the machine with the server they
/// measure.
pub(crate) async fn connect(
    port: u16,
) -> Option<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let url = format!("ws://127.0.0.1:{port}/api/ws");
    for attempt in 0..5u64 {
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(4 * 1024);
        match tokio_tungstenite::connect_async_with_config(url.as_str(), Some(config), true).await {
            Ok((socket, _)) => return Some(socket),
            Err(err) => {
                if attempt == 4 {
                    eprintln!("connect failed: {err}");
                }
                tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
            }
        }
    }
    None
}

/// An event of the realistic shape the WebSocket carries, with the send
/// time in its data.
pub(crate) fn timed_event(seq: u64, job: JobId) -> Event {
    Event::new(
        orchex_core::EventKind::JobProgress,
        format!("step generate: {} of 5", seq % 5 + 1),
    )
    .with_repo(orchex_core::RepoId::new("api").unwrap())
    .with_pipeline("codegen")
    .with_job(job)
    .with_data(serde_json::json!({ "seq": seq, "sentNs": monotonic_ns() }))
}

/// Nearest-rank percentile of sorted samples.
pub(crate) fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

// === the client child process ===

/// What one client saw.
#[derive(Debug, Default)]
struct ClientStats {
    /// Publish → receipt, µs, of every event.
    latencies_us: Vec<u32>,
    events: u64,
    /// The sum of the `missed` counts of `lagged` notices.
    missed: u64,
    lagged_notices: u64,
    snapshots: u64,
    snapshot_bytes: usize,
    /// The socket ended before the bench told the client to stop.
    closed_early: bool,
}

/// The number after the last `key` in `text` (searched from the end: the
/// fields the bench reads sit at the end of their messages, and the
/// clients share the machine with the server they measure).
fn digits_after(text: &str, key: &str) -> Option<u64> {
    let rest = &text[text.rfind(key)? + key.len()..];
    let end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

impl ClientStats {
    fn take(&mut self, text: &str) -> bool {
        if text.starts_with(r#"{"type":"snapshot""#) {
            self.snapshots += 1;
            self.snapshot_bytes = text.len();
            return true;
        }
        if text.starts_with(r#"{"type":"lagged""#) {
            self.lagged_notices += 1;
            self.missed += digits_after(text, r#""missed":"#).unwrap_or(0);
        } else if (text.starts_with(r#"{"type":"event""#) || text.ends_with(r#""type":"event"}"#))
            && let Some(sent) = digits_after(text, r#""sentNs":"#)
        {
            let latency = monotonic_ns().saturating_sub(sent) / 1000;
            self.latencies_us
                .push(u32::try_from(latency).unwrap_or(u32::MAX));
            self.events += 1;
        }
        false
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn read_client(
    mut socket: Socket,
    stop: tokio_util::sync::CancellationToken,
    first: tokio::sync::oneshot::Sender<()>,
) -> ClientStats {
    use tokio_tungstenite::tungstenite::Message;
    let mut stats = ClientStats::default();
    let mut first = Some(first);
    let stopped = stop.cancelled();
    let mut stopped = std::pin::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => break,
            message = socket.next() => match message {
                Some(Ok(Message::Text(text))) => {
                    if stats.take(text.as_str())
                        && let Some(first) = first.take()
                    {
                        let _ = first.send(());
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => {
                    stats.closed_early = true;
                    break;
                }
            },
        }
    }
    drop(socket);
    stats
}

/// Runs the client child process when the arguments say so
/// (`--clients <mode> <port> <count>`); returns whether it did.
pub(crate) fn client_main() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let Some(i) = args.iter().position(|a| a == "--clients") else {
        return false;
    };
    let mode = args[i + 1].clone();
    let port: u16 = args[i + 2].parse().unwrap();
    let count: usize = args[i + 3].parse().unwrap();
    let limit = raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run_clients(&mode, port, count, limit));
    true
}

async fn run_clients(mode: &str, port: u16, count: usize, limit: u64) {
    let stop = tokio_util::sync::CancellationToken::new();
    let stop_requested = stop_signal(Duration::from_secs(600));
    let started = Instant::now();
    let spawned: Vec<_> = futures::stream::iter(0..count)
        .map(|_| {
            let stop = stop.clone();
            async move {
                let socket = connect(port).await?;
                let (first, got_first) = tokio::sync::oneshot::channel();
                Some((tokio::spawn(read_client(socket, stop, first)), got_first))
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let connect_time = started.elapsed();
    let mut tasks = Vec::new();
    let mut firsts = Vec::new();
    for (task, first) in spawned.into_iter().flatten() {
        tasks.push(task);
        firsts.push(first);
    }
    let failed = count - tasks.len();
    let mut with_snapshot = 0usize;
    let snapshot_deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for first in firsts {
        if tokio::time::timeout_at(snapshot_deadline, first)
            .await
            .is_ok_and(|r| r.is_ok())
        {
            with_snapshot += 1;
        }
    }
    println!(
        "READY {} {failed} {with_snapshot} {} {limit} {mode}",
        tasks.len(),
        connect_time.as_millis()
    );
    let mut stop_requested = stop_requested;
    let _ = stop_requested.wait_for(|stop| *stop).await;
    stop.cancel();
    let mut all = Vec::new();
    let mut per_client_p99 = Vec::new();
    let mut totals = ClientStats::default();
    let mut closed_early = 0u64;
    for task in tasks {
        let Ok(mut stats) = task.await else { continue };
        stats.latencies_us.sort_unstable();
        if !stats.latencies_us.is_empty() {
            per_client_p99.push(percentile(&stats.latencies_us, 0.99));
        }
        all.extend_from_slice(&stats.latencies_us);
        totals.events += stats.events;
        totals.missed += stats.missed;
        totals.lagged_notices += stats.lagged_notices;
        totals.snapshots += stats.snapshots;
        totals.snapshot_bytes = totals.snapshot_bytes.max(stats.snapshot_bytes);
        closed_early += u64::from(stats.closed_early);
    }
    all.sort_unstable();
    per_client_p99.sort_unstable();
    println!(
        "RESULT latency_us {} {} {} {} {} {}",
        all.len(),
        percentile(&all, 0.50),
        percentile(&all, 0.90),
        percentile(&all, 0.99),
        percentile(&all, 0.999),
        all.last().copied().unwrap_or(0)
    );
    println!(
        "RESULT client_p99_us {} {} {}",
        percentile(&per_client_p99, 0.50),
        percentile(&per_client_p99, 0.99),
        per_client_p99.last().copied().unwrap_or(0)
    );
    println!(
        "RESULT counts {} {} {} {} {} {}",
        totals.events,
        totals.missed,
        totals.lagged_notices,
        totals.snapshots,
        totals.snapshot_bytes,
        closed_early
    );
    println!(
        "RESULT client_cpu_ms {} {}",
        cpu_time().as_millis(),
        started.elapsed().as_millis()
    );
    println!(
        "RESULT client_rss_kb {} {}",
        proc_status_kb("VmRSS:"),
        proc_status_kb("VmHWM:")
    );
    println!("RESULT END");
}

/// The fields of a `RESULT <name> ...` line, as numbers.
pub(crate) fn result_fields(results: &[String], name: &str) -> Vec<u64> {
    let prefix = format!("RESULT {name} ");
    results
        .iter()
        .find_map(|l| l.strip_prefix(&prefix))
        .map(|rest| {
            rest.split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect()
        })
        .unwrap_or_default()
}

/// The dashboard's default options, with `ORCHEX_BENCH_FEED_WINDOW_MS` as
/// the WebSocket feed's batch window when set.
fn dashboard_options() -> DashboardOptions {
    let mut options = DashboardOptions::default();
    if let Some(ms) = std::env::var("ORCHEX_BENCH_FEED_WINDOW_MS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        options.ws.feed_window = std::time::Duration::from_millis(ms);
    }
    options
}
