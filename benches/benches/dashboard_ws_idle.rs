//! Memory of idle WebSocket clients of orchex-dashboard: the resident set
//! of the server process before and while `ORCHEX_BENCH_CLIENTS` (default
//! 10 000) clients hold `/api/ws` open, reading (the snapshot every second,
//! pings) but sending nothing, with no events published; next to a bare
//! axum WebSocket handler that sends the same snapshot bytes every second
//! (`bare`: axum's default buffers; `bare-read4k`: a 4 KiB read buffer;
//! `bare-read4k-1k`: the same with a 1 KiB message instead of the snapshot).
//!
//! Method. Every variant runs in a server process of its own (this binary
//! with `--server <variant>`), and its clients in a further child process
//! (`--clients`), so the `VmRSS` the server reads from `/proc/self/status`
//! holds the server alone (no client sockets, buffers or tasks) and no
//! variant inherits another's allocator state. In the server process: the
//! stack is started (the bare variants start it too, to capture the
//! snapshot frame its first WebSocket message carries, then stop it); a
//! warm-up of 500 clients connects, holds for 3 s and leaves, so that what
//! the first sessions create once (tokio worker and blocking threads,
//! allocator arenas, the snapshot cache, lazily built statics) is in the
//! baseline, not charged to the clients; the baseline is the median of
//! three readings once the warm-up's sessions have ended; "while idle" is
//! the median of five readings, one a second, starting 5 s after every
//! client has its first snapshot (so every session has sent several).
//! KB per client is the difference divided by the sessions the server
//! counts. `RssAnon` (heap and stacks, no file pages) is shown next to it,
//! and the RSS once the clients have left.
//!
//! Both processes need one descriptor per client (plus ~100); the soft
//! open-file limit is raised to the hard limit, and the client count is
//! reduced (and said so) when the hard limit, or the ephemeral port range,
//! is too small.
//!
//! Run: `cargo bench -p orchex-benches --bench dashboard_ws_idle`
//! (`ORCHEX_BENCH_VARIANTS=orchex` for the orchex figure alone).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![allow(clippy::cast_precision_loss)]

#[path = "dashboard_support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::io::{BufRead as _, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::extract::ws::{Message, Utf8Bytes, WebSocketUpgrade};
use futures::{SinkExt as _, StreamExt as _};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// (VmRSS, RssAnon) in KiB, medians of `n` readings one second apart.
fn rss(n: usize) -> (u64, u64) {
    let mut vm = Vec::new();
    let mut anon = Vec::new();
    for i in 0..n {
        if i > 0 {
            std::thread::sleep(Duration::from_secs(1));
        }
        vm.push(support::proc_status_kb("VmRSS:"));
        anon.push(support::proc_status_kb("RssAnon:"));
    }
    vm.sort_unstable();
    anon.sort_unstable();
    (vm[n / 2], anon[n / 2])
}

fn wait_for(sessions: &dyn Fn() -> usize, want: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let now = sessions();
        if now == want || Instant::now() >= deadline {
            return now;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn ephemeral_ports() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|f| f.parse::<usize>().ok());
            Some(it.next()??.abs_diff(it.next()??) + 1)
        })
        .unwrap_or(28_000)
}

// === the bare reference ===

#[derive(Clone)]
struct Bare {
    frame: Utf8Bytes,
    sessions: Arc<AtomicUsize>,
    read_buffer: Option<usize>,
}

/// What a user would write with axum alone: the same snapshot bytes on
/// connect and every second, the client's messages read and dropped.
async fn bare_ws(State(bare): State<Bare>, upgrade: WebSocketUpgrade) -> axum::response::Response {
    let upgrade = match bare.read_buffer {
        Some(size) => upgrade.read_buffer_size(size),
        None => upgrade,
    };
    upgrade
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| async move {
            bare.sessions.fetch_add(1, Ordering::SeqCst);
            let (mut sink, mut stream) = socket.split();
            if sink.send(Message::Text(bare.frame.clone())).await.is_ok() {
                let period = Duration::from_secs(1);
                let mut ticker =
                    tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {
                            if sink.send(Message::Text(bare.frame.clone())).await.is_err() {
                                break;
                            }
                        }
                        message = stream.next() => match message {
                            Some(Ok(Message::Close(_)) | Err(_)) | None => break,
                            Some(Ok(_)) => {}
                        },
                    }
                }
            }
            bare.sessions.fetch_sub(1, Ordering::SeqCst);
        })
}

/// The first WebSocket message of the real dashboard (its snapshot).
async fn capture_snapshot(port: u16) -> String {
    use tokio_tungstenite::tungstenite::Message as ClientMessage;
    let mut socket = support::connect(port).await.unwrap();
    loop {
        if let Some(Ok(ClientMessage::Text(text))) = socket.next().await {
            let _ = socket.close(None).await;
            return text.as_str().to_owned();
        }
    }
}

// === one variant, in its own process ===

fn server_main(variant: &str, clients: usize) {
    let limit = support::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("server")
        .enable_all()
        .build()
        .unwrap();
    let stack = runtime.block_on(support::Stack::start());
    let (port, sessions, stack): (u16, Box<dyn Fn() -> usize>, Option<support::Stack>) =
        if variant == "orchex" {
            let dashboard = stack.dashboard.clone();
            (
                stack.port,
                Box::new(move || dashboard.live_sessions()),
                Some(stack),
            )
        } else {
            let mut frame = runtime.block_on(capture_snapshot(stack.port));
            if variant == "bare-read4k-1k" {
                // A 1 KiB message instead of the snapshot: what remains is
                // the per-connection floor of axum, hyper and tungstenite.
                frame = format!(r#"{{"type":"snapshot","pad":"{}"}}"#, "x".repeat(1000));
            }
            runtime.block_on(stack.stop());
            let counter = Arc::new(AtomicUsize::new(0));
            let bare = Bare {
                frame: frame.into(),
                sessions: Arc::clone(&counter),
                read_buffer: variant.starts_with("bare-read4k").then_some(4096),
            };
            let app = axum::Router::new()
                .route("/api/ws", axum::routing::get(bare_ws))
                .with_state(bare);
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
                .unwrap();
            let port = listener.local_addr().unwrap().port();
            runtime.spawn(async move { axum::serve(listener, app).await });
            (port, Box::new(move || counter.load(Ordering::SeqCst)), None)
        };
    println!(
        "{variant}: server up on port {port}; open-file limit {limit}; VmRSS {} KiB",
        support::proc_status_kb("VmRSS:")
    );

    // Warm-up.
    let warm = clients.min(500);
    let mut child = support::ClientProcess::spawn("idle", port, warm);
    child.expect("READY", Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(3));
    child.stop(Duration::from_secs(60));
    let left = wait_for(&*sessions, 0, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let (before_vm, before_anon) = rss(3);
    println!(
        "{variant}: after a warm-up of {warm} clients ({left} sessions left): VmRSS \
         {before_vm} KiB, RssAnon {before_anon} KiB"
    );

    // The idle clients.
    let started = Instant::now();
    let mut child = support::ClientProcess::spawn("idle", port, clients);
    let ready = child.expect("READY", Duration::from_secs(600));
    let fields: Vec<&str> = ready.split_whitespace().collect();
    let counted = wait_for(&*sessions, clients, Duration::from_secs(10));
    println!(
        "{variant}: clients {} connected, {} failed, {} with their first snapshot, in {:.1}s \
         (client process's open-file limit {}); server sessions {counted}",
        fields[1],
        fields[2],
        fields[3],
        started.elapsed().as_secs_f64(),
        fields[5],
    );
    std::thread::sleep(Duration::from_secs(5));
    let cpu_before = support::cpu_time();
    let hold = Instant::now();
    let (during_vm, during_anon) = rss(5);
    let cores =
        support::cpu_time().saturating_sub(cpu_before).as_secs_f64() / hold.elapsed().as_secs_f64();
    let idle_sessions = sessions();
    let peak = support::proc_status_kb("VmHWM:");
    let results = child.stop(Duration::from_secs(120));
    let counts = support::result_fields(&results, "counts");
    let gone = wait_for(&*sessions, 0, Duration::from_secs(30));
    std::thread::sleep(Duration::from_secs(2));
    let (after_vm, after_anon) = rss(3);
    println!(
        "{variant}: while {idle_sessions} sessions are idle: VmRSS {during_vm} KiB (+{} KiB), \
         RssAnon {during_anon} KiB (+{} KiB); peak VmHWM {peak} KiB; server CPU {cores:.2} \
         cores",
        during_vm.saturating_sub(before_vm),
        during_anon.saturating_sub(before_anon)
    );
    println!(
        "{variant}: clients received {} snapshots (largest {} bytes), {} `lagged` notices; {} \
         closed by the server; after they left ({gone} sessions still open): VmRSS {after_vm} \
         KiB, RssAnon {after_anon} KiB",
        counts.get(3).copied().unwrap_or(0),
        counts.get(4).copied().unwrap_or(0),
        counts.get(2).copied().unwrap_or(0),
        counts.get(5).copied().unwrap_or(0),
    );
    println!(
        "MEASURE {variant} {idle_sessions} {before_vm} {during_vm} {before_anon} {during_anon} \
         {after_vm} {}",
        counts.get(4).copied().unwrap_or(0)
    );
    if let Some(stack) = stack {
        runtime.block_on(stack.stop());
    }
}

fn main() {
    if support::client_main() {
        return;
    }
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--server") {
        server_main(&args[i + 1], args[i + 2].parse().unwrap());
        return;
    }
    if args.iter().any(|a| a == "--list") {
        println!("dashboard_ws_idle: bench");
        return;
    }
    let limit = support::raise_fd_limit();
    let wanted: usize = env_or("ORCHEX_BENCH_CLIENTS", 10_000);
    let headroom = 300;
    let by_fds = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(headroom);
    let by_ports = ephemeral_ports().saturating_sub(2_000);
    let clients = wanted.min(by_fds).min(by_ports);
    if clients < wanted {
        println!(
            "note: {wanted} clients wanted; open-file hard limit {limit}, {} ephemeral ports: \
             running {clients}",
            ephemeral_ports()
        );
    }
    println!(
        "{clients} idle clients per variant; open-file limit {limit}; {}",
        support::machine_notes()
    );
    let variants: String = env_or(
        "ORCHEX_BENCH_VARIANTS",
        "orchex,bare,bare-read4k,bare-read4k-1k".to_owned(),
    );
    let mut measured: Vec<(String, f64, f64, u64)> = Vec::new();
    for variant in variants.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        let mut server = Command::new(std::env::current_exe().unwrap())
            .args(["--server", variant, &clients.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = server.stdout.take().unwrap();
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("MEASURE ") {
                let f: Vec<&str> = rest.split_whitespace().collect();
                let n: f64 = f[1].parse::<f64>().unwrap().max(1.0);
                let num = |i: usize| f[i].parse::<u64>().unwrap();
                let vm = num(3).saturating_sub(num(2)) as f64 / n;
                let anon = num(5).saturating_sub(num(4)) as f64 / n;
                measured.push((variant.to_owned(), vm, anon, num(7)));
            } else {
                println!("{line}");
            }
        }
        assert!(server.wait().unwrap().success(), "{variant} failed");
    }
    println!();
    println!(
        "{:<14} {:>22} {:>24} {:>16}",
        "variant", "KiB per client (RSS)", "KiB per client (anon)", "snapshot bytes"
    );
    for (variant, vm, anon, frame) in &measured {
        println!("{variant:<14} {vm:>22.1} {anon:>24.1} {frame:>16}");
    }
    if let Some((_, orchex, _, _)) = measured.iter().find(|m| m.0 == "orchex") {
        for (variant, vm, _, _) in measured.iter().filter(|m| m.0 != "orchex") {
            println!("orchex / {variant} = {:.2}x", orchex / vm);
        }
        println!(
            "orchex: {orchex:.1} KiB per idle client; goal < 20 KB: {}",
            if *orchex < 20.0 { "met" } else { "NOT met" }
        );
    }
    println!("{}", support::machine_notes());
}
