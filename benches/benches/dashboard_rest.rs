//! REST throughput of orchex-dashboard: `GET /api/health` and
//! `GET /api/dashboard` through the real router (every layer: tracing,
//! panic catcher, JSON errors, CORS, timeout, body limit, authentication)
//! served by `Dashboard::serve` on 127.0.0.1, next to a bare
//! `axum::Router` (no layers, no state) answering the same bytes, captured
//! once from the real router, on another 127.0.0.1 port of the same
//! process, in the same run.
//!
//! Load: `ORCHEX_BENCH_CONNECTIONS` (default 8) closed-loop request tasks,
//! each with its own hyper-util legacy client (keep-alive HTTP/1.1),
//! sending its next request when the previous response's body is read. The
//! connections each window opened are printed: one or two per client, all
//! opened before the timed part, show that nothing reconnects.
//! The four variants run in interleaved windows of `ORCHEX_BENCH_SECS`
//! (default 2) seconds, `ORCHEX_BENCH_ROUNDS` (default 5) rounds, the order
//! of orchex and bare swapped every round, so a change of load on the
//! shared machine hits both alike; the summary gives the medians and the
//! median of the per-round ratios. Servers run on one 2-worker tokio
//! runtime, clients on another.
//!
//! CPU µs per request is the process's user + system time over the window
//! divided by the requests: clients included, so the difference between
//! orchex and bare is what the server side costs more.
//!
//! Run: `cargo bench -p orchex-benches --bench dashboard_rest`
//! (`just bench-dashboard` runs the three dashboard benches).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![allow(clippy::cast_precision_loss)]

#[path = "dashboard_support/mod.rs"]
#[allow(dead_code)]
mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http::{HeaderValue, Request, StatusCode, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `HttpConnector`, counting the connections it opens (to show keep-alive).
#[derive(Clone)]
struct Counting {
    inner: HttpConnector,
    opened: Arc<AtomicUsize>,
}

type Connecting = Pin<
    Box<
        dyn Future<
                Output = Result<
                    <HttpConnector as tower::Service<Uri>>::Response,
                    <HttpConnector as tower::Service<Uri>>::Error,
                >,
            > + Send,
    >,
>;

impl tower::Service<Uri> for Counting {
    type Response = <HttpConnector as tower::Service<Uri>>::Response;
    type Error = <HttpConnector as tower::Service<Uri>>::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        self.opened.fetch_add(1, Ordering::Relaxed);
        Box::pin(self.inner.call(uri))
    }
}

type Http = Client<Counting, Empty<Bytes>>;

fn client(opened: &Arc<AtomicUsize>) -> Http {
    let mut inner = HttpConnector::new();
    inner.set_nodelay(true);
    // The pool keeps every idle connection: hyper-util hands a connection
    // back to the pool from its connection task, so a request sent right
    // after the previous body was read can find the pool empty and open a
    // second connection; kept, it is reused instead of reopened.
    Client::builder(TokioExecutor::new()).build(Counting {
        inner,
        opened: Arc::clone(opened),
    })
}

async fn get(client: &Http, url: &str) -> (StatusCode, Option<HeaderValue>, Bytes) {
    let request = Request::get(url).body(Empty::new()).unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status();
    let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, content_type, body)
}

/// One window of closed-loop load.
struct Window {
    requests: u64,
    bytes: u64,
    elapsed: Duration,
    cpu: Duration,
    opened: usize,
    latencies_us: Vec<u32>,
}

impl Window {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    fn cpu_us_per_request(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.requests.max(1) as f64
    }
}

async fn window(url: &str, connections: usize, length: Duration) -> Window {
    let opened = Arc::new(AtomicUsize::new(0));
    let clients: Vec<Http> = (0..connections).map(|_| client(&opened)).collect();
    // Connect every client (untimed).
    for client in &clients {
        let (status, _, _) = get(client, url).await;
        assert_eq!(status, StatusCode::OK, "{url}");
    }
    let cpu_before = support::cpu_time();
    let started = Instant::now();
    let deadline = started + length;
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let url = url.to_owned();
            tokio::spawn(async move {
                let mut requests = 0u64;
                let mut bytes = 0u64;
                let mut latencies = Vec::with_capacity(1 << 16);
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    let (status, _, body) = get(&client, &url).await;
                    assert_eq!(status, StatusCode::OK);
                    latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                    requests += 1;
                    bytes += body.len() as u64;
                }
                (requests, bytes, latencies)
            })
        })
        .collect();
    let mut total = Window {
        requests: 0,
        bytes: 0,
        elapsed: Duration::ZERO,
        cpu: Duration::ZERO,
        opened: 0,
        latencies_us: Vec::new(),
    };
    for task in tasks {
        let (requests, bytes, latencies) = task.await.unwrap();
        total.requests += requests;
        total.bytes += bytes;
        total.latencies_us.extend(latencies);
    }
    total.elapsed = started.elapsed();
    total.cpu = support::cpu_time().saturating_sub(cpu_before);
    total.opened = opened.load(Ordering::Relaxed);
    total.latencies_us.sort_unstable();
    total
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

struct Variant {
    name: &'static str,
    url: String,
    windows: Vec<Window>,
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("dashboard_rest: bench");
        return;
    }
    let connections: usize = env_or("ORCHEX_BENCH_CONNECTIONS", 8);
    let seconds: f64 = env_or("ORCHEX_BENCH_SECS", 2.0);
    let rounds: usize = env_or("ORCHEX_BENCH_ROUNDS", 5);
    let length = Duration::from_secs_f64(seconds);

    let servers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("server")
        .enable_all()
        .build()
        .unwrap();
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("client")
        .enable_all()
        .build()
        .unwrap();

    let setup = Instant::now();
    let stack = servers.block_on(support::Stack::start());
    let orchex = format!("http://127.0.0.1:{}", stack.port);

    // Capture the real responses once.
    let opened = Arc::new(AtomicUsize::new(0));
    let probe = clients.block_on(async { client(&opened) });
    let (health_status, health_type, health_body) =
        clients.block_on(get(&probe, &format!("{orchex}/api/health")));
    let (dashboard_status, dashboard_type, dashboard_body) =
        clients.block_on(get(&probe, &format!("{orchex}/api/dashboard")));
    assert_eq!(health_status, StatusCode::OK);
    assert_eq!(dashboard_status, StatusCode::OK);
    let recent: serde_json::Value = serde_json::from_slice(&dashboard_body).unwrap();
    println!(
        "setup {:.1}s; /api/health body {} bytes, /api/dashboard body {} bytes \
         ({} recent jobs, {} recent events); {connections} connections, {rounds} rounds of \
         {seconds}s per variant; {}",
        setup.elapsed().as_secs_f64(),
        health_body.len(),
        dashboard_body.len(),
        recent["recentJobs"].as_array().map_or(0, Vec::len),
        recent["recentEvents"].as_array().map_or(0, Vec::len),
        support::machine_notes()
    );

    // The bare handler: a plain Router, no layers, the captured bytes.
    let bare_listener = servers
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let bare_port = bare_listener.local_addr().unwrap().port();
    let json = |value: Option<HeaderValue>| {
        value.unwrap_or_else(|| HeaderValue::from_static("application/json"))
    };
    let (health_type, dashboard_type) = (json(health_type), json(dashboard_type));
    let app = axum::Router::new()
        .route(
            "/api/health",
            axum::routing::get(move || {
                let body = health_body.clone();
                let content_type = health_type.clone();
                async move { ([(header::CONTENT_TYPE, content_type)], body) }
            }),
        )
        .route(
            "/api/dashboard",
            axum::routing::get(move || {
                let body = dashboard_body.clone();
                let content_type = dashboard_type.clone();
                async move { ([(header::CONTENT_TYPE, content_type)], body) }
            }),
        );
    let bare_server = servers.spawn(async move { axum::serve(bare_listener, app).await });
    let bare = format!("http://127.0.0.1:{bare_port}");

    let mut variants = vec![
        Variant {
            name: "orchex GET /api/health",
            url: format!("{orchex}/api/health"),
            windows: Vec::new(),
        },
        Variant {
            name: "bare   GET /api/health",
            url: format!("{bare}/api/health"),
            windows: Vec::new(),
        },
        Variant {
            name: "orchex GET /api/dashboard",
            url: format!("{orchex}/api/dashboard"),
            windows: Vec::new(),
        },
        Variant {
            name: "bare   GET /api/dashboard",
            url: format!("{bare}/api/dashboard"),
            windows: Vec::new(),
        },
    ];

    // Warm-up: one second of each.
    for variant in &variants {
        clients.block_on(window(&variant.url, connections, Duration::from_secs(1)));
    }
    for round in 0..rounds {
        let order: [usize; 4] = if round % 2 == 0 {
            [0, 1, 2, 3]
        } else {
            [1, 0, 3, 2]
        };
        for i in order {
            let measured = clients.block_on(window(&variants[i].url, connections, length));
            println!(
                "round {round} {:<26} {:>9.0} req/s  {:>6.1} CPU µs/req  p50 {:>5} µs  p99 {:>6} µs  \
                 {} connections opened",
                variants[i].name,
                measured.per_second(),
                measured.cpu_us_per_request(),
                support::percentile(&measured.latencies_us, 0.50),
                support::percentile(&measured.latencies_us, 0.99),
                measured.opened,
            );
            variants[i].windows.push(measured);
        }
    }

    println!();
    println!(
        "{:<26} {:>14} {:>10} {:>10} {:>14} {:>12} {:>12}",
        "variant", "median req/s", "min", "max", "CPU µs/req", "p50 µs", "p99 µs"
    );
    for variant in &variants {
        let rates: Vec<f64> = variant.windows.iter().map(Window::per_second).collect();
        let cpu: Vec<f64> = variant
            .windows
            .iter()
            .map(Window::cpu_us_per_request)
            .collect();
        let p50: Vec<f64> = variant
            .windows
            .iter()
            .map(|w| f64::from(support::percentile(&w.latencies_us, 0.50)))
            .collect();
        let p99: Vec<f64> = variant
            .windows
            .iter()
            .map(|w| f64::from(support::percentile(&w.latencies_us, 0.99)))
            .collect();
        println!(
            "{:<26} {:>14.0} {:>10.0} {:>10.0} {:>14.1} {:>12.0} {:>12.0}",
            variant.name,
            median(rates.clone()),
            rates.iter().copied().fold(f64::INFINITY, f64::min),
            rates.iter().copied().fold(0.0, f64::max),
            median(cpu),
            median(p50),
            median(p99),
        );
    }
    for (label, ours, reference, goal) in [
        ("health", 0, 1, Some(0.8)),
        ("dashboard", 2, 3, None::<f64>),
    ] {
        let rate =
            |i: usize| -> Vec<f64> { variants[i].windows.iter().map(Window::per_second).collect() };
        let of_medians = median(rate(ours)) / median(rate(reference));
        let per_round: Vec<f64> = rate(ours)
            .iter()
            .zip(rate(reference))
            .map(|(a, b)| a / b)
            .collect();
        let verdict = match goal {
            Some(goal) if of_medians >= goal => format!(" (goal >= {goal}x: met)"),
            Some(goal) => format!(" (goal >= {goal}x: NOT met)"),
            None => String::new(),
        };
        println!(
            "{label}: orchex / bare = {of_medians:.3}x (ratio of medians); per round: median \
             {:.3}x, min {:.3}x, max {:.3}x{verdict}",
            median(per_round.clone()),
            per_round.iter().copied().fold(f64::INFINITY, f64::min),
            per_round.iter().copied().fold(0.0, f64::max),
        );
    }
    println!("{}", support::machine_notes());

    bare_server.abort();
    servers.block_on(stack.stop());
    drop(clients);
}
