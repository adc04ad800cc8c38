//! WebSocket fan-out of orchex-dashboard: `ORCHEX_BENCH_CLIENTS` (default
//! 1000) tokio-tungstenite clients connected to `/api/ws` of the real
//! dashboard (`Dashboard::serve` on 127.0.0.1, default `WsOptions`: 256
//! messages of send buffer, a snapshot every second), while the bench
//! publishes `ORCHEX_BENCH_RATE` (default 1000) events a second on the
//! telemetry bus for `ORCHEX_BENCH_SECS` (default 10) seconds. Each event
//! carries its send time (`CLOCK_MONOTONIC`, taken just before `publish`)
//! in `data.sentNs`; each client takes the clock again when its task reads
//! the message and records the difference.
//!
//! The clients run in a child process (this binary with `--clients`, its
//! own 2-worker runtime), so the server process holds only the server; the
//! clock is machine-wide, so the two processes' readings compare. The
//! publisher is a plain thread of the server process, paced by elapsed
//! time. The reference a user would otherwise pick does not apply here
//! (nothing else serves this stream); the figure is the goal p99 < 50 ms.
//!
//! The open-file limit is raised to the hard limit first (setrlimit; the
//! `just bench-dashboard` recipe also runs `ulimit -n`).
//!
//! Run: `cargo bench -p orchex-benches --bench dashboard_ws_fanout`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![allow(clippy::cast_precision_loss)]

#[path = "dashboard_support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::time::{Duration, Instant};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What `ws::event_message` did for every client and event before the
/// shared `LiveFeed` (`serde_json::to_string(&json!({"type": "event",
/// "event": event}))`), replicated here: (µs per message, bytes).
fn per_client_encoding() -> (f64, usize) {
    let job = orchex_core::JobId::new();
    let events: Vec<orchex_core::Event> =
        (0..20_000).map(|i| support::timed_event(i, job)).collect();
    let mut bytes = 0;
    let started = Instant::now();
    for event in &events {
        bytes = serde_json::to_string(&serde_json::json!({"type": "event", "event": event}))
            .unwrap()
            .len();
    }
    (
        started.elapsed().as_secs_f64() * 1e6 / events.len() as f64,
        bytes,
    )
}

fn main() {
    if support::client_main() {
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        println!("dashboard_ws_fanout: bench");
        return;
    }
    let limit = support::raise_fd_limit();
    let mut clients: usize = env_or("ORCHEX_BENCH_CLIENTS", 1000);
    let rate: u64 = env_or("ORCHEX_BENCH_RATE", 1000);
    let seconds: f64 = env_or("ORCHEX_BENCH_SECS", 10.0);
    let headroom = 256;
    let allowed = usize::try_from(limit)
        .unwrap_or(usize::MAX)
        .saturating_sub(headroom);
    if clients > allowed {
        println!("note: open-file limit {limit}; {clients} clients reduced to {allowed}");
        clients = allowed;
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("server")
        .enable_all()
        .build()
        .unwrap();
    let setup = Instant::now();
    let stack = runtime.block_on(support::Stack::start());
    let bus = stack.services.bus.clone();
    println!(
        "stack up in {:.1}s on port {}; open-file limit {limit}; {}",
        setup.elapsed().as_secs_f64(),
        stack.port,
        support::machine_notes()
    );

    let mut child = support::ClientProcess::spawn("fanout", stack.port, clients);
    let ready = child.expect("READY", Duration::from_secs(300));
    let fields: Vec<&str> = ready.split_whitespace().collect();
    println!(
        "clients: {} connected, {} failed, {} with their first snapshot, in {} ms (child's \
         open-file limit {}); server sessions: {}",
        fields[1],
        fields[2],
        fields[3],
        fields[4],
        fields[5],
        stack.dashboard.live_sessions()
    );
    std::thread::sleep(Duration::from_secs(1));

    let cpu_before = support::cpu_time();
    let publisher = {
        let bus = bus.clone();
        std::thread::spawn(move || {
            let job = orchex_core::JobId::new();
            let length = Duration::from_secs_f64(seconds);
            let started = Instant::now();
            let mut sent = 0u64;
            loop {
                let elapsed = started.elapsed();
                if elapsed >= length {
                    break;
                }
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let due = (elapsed.as_secs_f64() * rate as f64) as u64;
                while sent < due {
                    bus.publish(support::timed_event(sent, job));
                    sent += 1;
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            (sent, started.elapsed())
        })
    };
    let (published, publish_time) = publisher.join().unwrap();
    let cpu_publishing = support::cpu_time().saturating_sub(cpu_before);
    // Let the last events drain.
    std::thread::sleep(Duration::from_secs(3));
    let results = child.stop(Duration::from_secs(120));
    let stats = bus.stats();

    let latency = support::result_fields(&results, "latency_us");
    let per_client = support::result_fields(&results, "client_p99_us");
    let counts = support::result_fields(&results, "counts");
    let client_rss = support::result_fields(&results, "client_rss_kb");
    let client_cpu = support::result_fields(&results, "client_cpu_ms");
    let connected: u64 = fields[1].parse().unwrap();
    let expected = published * connected;
    let ms = |us: u64| us as f64 / 1000.0;
    println!(
        "published {published} events in {:.2}s ({:.0}/s) to {connected} clients; bus: {} \
         published in total, {} dropped",
        publish_time.as_secs_f64(),
        published as f64 / publish_time.as_secs_f64(),
        stats.published,
        stats.dropped()
    );
    println!(
        "delivered {} of {expected} ({:.2} %); missed and reported through `lagged`: {} in {} \
         notices; snapshots received {} (largest {} bytes); clients closed by the server: {}",
        counts[0],
        counts[0] as f64 * 100.0 / expected.max(1) as f64,
        counts[1],
        counts[2],
        counts[3],
        counts[4],
        counts[5]
    );
    println!(
        "delivery latency over {} deliveries: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, \
         p99.9 {:.2} ms, max {:.2} ms",
        latency[0],
        ms(latency[1]),
        ms(latency[2]),
        ms(latency[3]),
        ms(latency[4]),
        ms(latency[5])
    );
    println!(
        "per-client p99: median client {:.2} ms, 99th-percentile client {:.2} ms, worst client \
         {:.2} ms",
        ms(per_client[0]),
        ms(per_client[1]),
        ms(per_client[2])
    );
    println!(
        "server process CPU while publishing: {:.2} s over {:.2} s ({:.2} cores); client \
         process RSS {} KiB",
        cpu_publishing.as_secs_f64(),
        publish_time.as_secs_f64(),
        cpu_publishing.as_secs_f64() / publish_time.as_secs_f64(),
        client_rss.first().copied().unwrap_or(0)
    );
    println!(
        "client process: CPU {:.2} s over its {:.1} s life ({:.2} cores on average)",
        client_cpu[0] as f64 / 1000.0,
        client_cpu[1] as f64 / 1000.0,
        client_cpu[0] as f64 / client_cpu[1].max(1) as f64
    );
    let (encode_us, encoded) = per_client_encoding();
    println!(
        "per-client event encoding as ws.rs did it before the shared LiveFeed (json! + \
         to_string), replicated: {encode_us:.2} µs per message ({encoded} bytes); for \
         {connected} clients at {rate}/s that would be {:.2} cores of encoding alone",
        encode_us * connected as f64 * rate as f64 / 1e6
    );
    let p99_ms = ms(latency[3]);
    let verdict = if p99_ms < 50.0 && counts[1] == 0 {
        "met"
    } else if p99_ms < 50.0 {
        "met for the delivered events, but some were dropped (see lagged)"
    } else {
        "NOT met"
    };
    println!("goal p99 < 50 ms: {verdict} (p99 {p99_ms:.2} ms)");
    println!("{}", support::machine_notes());
    runtime.block_on(stack.stop());
}
