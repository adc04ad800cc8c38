//! The soak's API load: `clients` closed-loop HTTP clients, each a tokio
//! task with its own hyper-util keep-alive HTTP/1.1 connection to the
//! dashboard on 127.0.0.1, sending a mix of `GET /api/health`,
//! `/api/dashboard`, `/api/jobs`, `/api/events?limit=50` and `/metrics` with
//! the admin token, with a random think time between a response and the
//! next request.
//!
//! The clients run in a child process (this binary,
//! `soak --load-child ...`, on a small runtime of its own), so that the
//! resident memory the soak reports is the server's alone; [`LoadProcess`]
//! is the parent's side. The line protocol on the child's stdout:
//!
//! - `READY <connected> <failed> <ms>` once every client has sent one
//!   untimed request (its connection is open);
//! - `PROGRESS <secs> <requests> <errors> <p50 µs> <p99 µs> <max µs>` every
//!   `--report-secs`, for that window;
//! - after `STOP` on its stdin (or end of input, or its own time limit):
//!   `RESULT ...` lines, then `RESULT END`.
//!
//! Every latency (request sent → body read) is kept, in µs, and the
//! percentiles are exact (nearest rank over the sorted samples). A request
//! answered with a status other than 2xx, or failing in transport, or not
//! answered within 30 s, is an error, counted by endpoint and cause.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{BufRead as _, BufReader, Write as _};
use std::pin::Pin;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use axum::http::{Request, Uri, header};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// The environment variable the child reads the admin token from (kept
/// out of its command line).
pub(crate) const TOKEN_ENV: &str = "ORCHEX_SOAK_TOKEN";

/// How long one request may take before it counts as an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The endpoints and their share of the requests (weights out of 100).
pub(crate) const ENDPOINTS: [(&str, u32); 5] = [
    ("/api/health", 30),
    ("/api/dashboard", 15),
    ("/api/jobs", 20),
    ("/api/events?limit=50", 20),
    ("/metrics", 15),
];

/// What the child is asked to do (the hidden `--load-*` options of `soak`).
#[derive(Debug, Clone)]
pub(crate) struct ChildOptions {
    /// The dashboard's port on 127.0.0.1.
    pub(crate) port: u16,
    /// Concurrent clients.
    pub(crate) clients: usize,
    /// Mean think time; each pause is uniform in [0.5, 1.5] × this.
    pub(crate) think: Duration,
    /// RNG seed (each client derives its own).
    pub(crate) seed: u64,
    /// Interval of the `PROGRESS` lines.
    pub(crate) report: Duration,
    /// The child stops by itself after this long, whatever the parent says.
    pub(crate) limit: Duration,
    /// Worker threads of the child's runtime.
    pub(crate) threads: usize,
}

// --------------------------------------------------------------------------
// The child
// --------------------------------------------------------------------------

/// `HttpConnector`, counting the connections it opens (to show that the
/// clients keep theirs alive).
#[derive(Clone)]
struct Counting {
    inner: HttpConnector,
    opened: Arc<AtomicUsize>,
}

type Connecting = Pin<
    Box<
        dyn Future<
                Output = Result<
                    <HttpConnector as tower_service::Service<Uri>>::Response,
                    <HttpConnector as tower_service::Service<Uri>>::Error,
                >,
            > + Send,
    >,
>;

impl tower_service::Service<Uri> for Counting {
    type Response = <HttpConnector as tower_service::Service<Uri>>::Response;
    type Error = <HttpConnector as tower_service::Service<Uri>>::Error;
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

/// Latencies and errors, shared by every client task.
#[derive(Debug, Default)]
struct Record {
    /// The current window's latencies (µs), per endpoint.
    window: Mutex<Vec<Vec<u32>>>,
    /// Errors of the current window.
    window_errors: AtomicU64,
    /// Errors by `endpoint: cause`, for the whole run.
    errors: Mutex<BTreeMap<String, u64>>,
}

impl Record {
    fn new() -> Self {
        Self {
            window: Mutex::new(vec![Vec::new(); ENDPOINTS.len()]),
            ..Self::default()
        }
    }

    fn latency(&self, endpoint: usize, elapsed: Duration) {
        let us = u32::try_from(elapsed.as_micros()).unwrap_or(u32::MAX);
        if let Some(samples) = self
            .window
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get_mut(endpoint)
        {
            samples.push(us);
        }
    }

    fn error(&self, endpoint: usize, cause: &str) {
        self.window_errors.fetch_add(1, Ordering::Relaxed);
        let name = ENDPOINTS.get(endpoint).map_or("?", |e| e.0);
        *self
            .errors
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(format!("GET {name}: {cause}"))
            .or_default() += 1;
    }

    /// Takes the window's samples (per endpoint) and error count.
    fn take_window(&self) -> (Vec<Vec<u32>>, u64) {
        let samples = std::mem::replace(
            &mut *self.window.lock().unwrap_or_else(PoisonError::into_inner),
            vec![Vec::new(); ENDPOINTS.len()],
        );
        (samples, self.window_errors.swap(0, Ordering::Relaxed))
    }
}

/// Nearest-rank percentile of sorted samples (0 when empty).
pub(crate) fn percentile(sorted: &[u32], p: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rank = ((sorted.len() as f64) * p).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One request; `Ok(())` for a 2xx answer whose body was read.
async fn get(client: &Http, url: &Uri, auth: &str) -> Result<(), String> {
    let request = Request::get(url.clone())
        .header(header::AUTHORIZATION, auth)
        .body(Empty::new())
        .map_err(|err| format!("request: {err}"))?;
    let response = client
        .request(request)
        .await
        .map_err(|err| format!("transport: {err}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|err| format!("body: {err}"))?;
    if status.is_success() {
        drop(body);
        Ok(())
    } else {
        Err(format!("status {}", status.as_u16()))
    }
}

fn pick(rng: &mut fastrand::Rng) -> usize {
    let total: u32 = ENDPOINTS.iter().map(|e| e.1).sum();
    let mut roll = rng.u32(0..total);
    for (i, (_, weight)) in ENDPOINTS.iter().enumerate() {
        if roll < *weight {
            return i;
        }
        roll -= weight;
    }
    0
}

/// CPU time (user + system) of this process so far, from `/proc/self/stat`
/// (clock ticks of 10 ms).
pub(crate) fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line: 12 and 13 here.
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

/// A `kB` field of `/proc/self/status` (`VmRSS:`...), 0 when absent.
pub(crate) fn status_kb(field: &str) -> u64 {
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

/// Watches stdin for `STOP` (or its end) on a thread.
fn stop_on_stdin() -> tokio::sync::watch::Receiver<bool> {
    let (tx, rx) = tokio::sync::watch::channel(false);
    std::thread::spawn(move || {
        let mut line = String::new();
        while std::io::stdin().read_line(&mut line).unwrap_or(0) > 0 {
            if line.trim() == "STOP" {
                break;
            }
            line.clear();
        }
        let _ = tx.send(true);
    });
    rx
}

/// Sorts `samples` and prints `p50 p90 p99 p99.9 max` of them.
fn summary(samples: &mut [u32]) -> String {
    samples.sort_unstable();
    format!(
        "{} {} {} {} {} {}",
        samples.len(),
        percentile(samples, 0.50),
        percentile(samples, 0.90),
        percentile(samples, 0.99),
        percentile(samples, 0.999),
        samples.last().copied().unwrap_or(0)
    )
}

/// The child process's body; prints its results on stdout.
pub(crate) fn child_main(options: &ChildOptions) -> Result<bool> {
    let token = std::env::var(TOKEN_ENV).with_context(|| format!("{TOKEN_ENV} is not set"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads.max(1))
        .thread_name("soak-load")
        .enable_all()
        .build()
        .context("building the load runtime")?;
    let started = Instant::now();
    let cpu_before = cpu_time();
    let outcome = runtime.block_on(clients(options, format!("Bearer {token}")))?;
    let out = std::io::stdout();
    let mut out = out.lock();
    let mut all: Vec<u32> = Vec::new();
    for (i, mut samples) in outcome.samples.into_iter().enumerate() {
        let name = ENDPOINTS.get(i).map_or("?", |e| e.0);
        all.extend_from_slice(&samples);
        writeln!(out, "RESULT endpoint {name} {}", summary(&mut samples))
            .context("writing to stdout")?;
    }
    writeln!(out, "RESULT all {}", summary(&mut all)).context("writing to stdout")?;
    for (what, count) in &outcome.errors {
        writeln!(out, "RESULT error {count} {what}").context("writing to stdout")?;
    }
    writeln!(
        out,
        "RESULT client {} {} {} {}",
        outcome.opened,
        cpu_time().saturating_sub(cpu_before).as_millis(),
        started.elapsed().as_millis(),
        status_kb("VmHWM:")
    )
    .context("writing to stdout")?;
    writeln!(out, "RESULT END").context("writing to stdout")?;
    out.flush().context("writing to stdout")?;
    drop(out);
    runtime.shutdown_timeout(Duration::from_secs(2));
    Ok(true)
}

/// What the clients came to.
struct Outcome {
    /// Every timed latency (µs), per endpoint.
    samples: Vec<Vec<u32>>,
    /// Errors by `endpoint: cause`.
    errors: BTreeMap<String, u64>,
    /// Connections opened (the untimed first requests included).
    opened: usize,
}

async fn clients(options: &ChildOptions, auth: String) -> Result<Outcome> {
    let urls: Vec<Uri> = ENDPOINTS
        .iter()
        .map(|(path, _)| format!("http://127.0.0.1:{}{path}", options.port).parse())
        .collect::<Result<_, _>>()
        .context("an endpoint URL")?;
    let urls = Arc::new(urls);
    let auth = Arc::new(auth);
    let opened = Arc::new(AtomicUsize::new(0));
    let record = Arc::new(Record::new());
    let (go_tx, go) = tokio::sync::watch::channel(false);
    let mut stop = stop_on_stdin();
    let (ready_tx, mut ready) = tokio::sync::mpsc::unbounded_channel::<bool>();
    let started = Instant::now();

    let mut tasks = Vec::with_capacity(options.clients);
    for index in 0..options.clients {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(None)
            .build(Counting {
                inner: connector,
                opened: Arc::clone(&opened),
            });
        let (urls, auth, record, ready_tx) = (
            Arc::clone(&urls),
            Arc::clone(&auth),
            Arc::clone(&record),
            ready_tx.clone(),
        );
        let (mut go, mut stop) = (go.clone(), stop.clone());
        let think = options.think;
        let mut rng = fastrand::Rng::with_seed(
            options.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        tasks.push(tokio::spawn(async move {
            // Open the connection with one untimed request, retrying while
            // the listen backlog overflows.
            let mut connected = false;
            for attempt in 0..5u64 {
                let first = tokio::time::timeout(REQUEST_TIMEOUT, get(&client, &urls[0], &auth));
                if matches!(first.await, Ok(Ok(()))) {
                    connected = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(100 * (attempt + 1))).await;
            }
            let _ = ready_tx.send(connected);
            if go.wait_for(|go| *go).await.is_err() {
                return;
            }
            // Spread the first requests over one think time.
            let first_pause = think.mul_f64(rng.f64());
            tokio::select! {
                () = tokio::time::sleep(first_pause) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
            loop {
                if *stop.borrow() {
                    return;
                }
                let endpoint = pick(&mut rng);
                let sent = Instant::now();
                match tokio::time::timeout(REQUEST_TIMEOUT, get(&client, &urls[endpoint], &auth))
                    .await
                {
                    Ok(Ok(())) => record.latency(endpoint, sent.elapsed()),
                    Ok(Err(cause)) => {
                        record.latency(endpoint, sent.elapsed());
                        record.error(endpoint, &cause);
                    }
                    Err(_) => {
                        record.latency(endpoint, sent.elapsed());
                        record.error(endpoint, "no answer within 30s");
                    }
                }
                let pause = think.mul_f64(0.5 + rng.f64());
                tokio::select! {
                    () = tokio::time::sleep(pause) => {}
                    _ = stop.wait_for(|stop| *stop) => return,
                }
            }
        }));
    }
    drop(ready_tx);

    // Wait for every client's first answer.
    let (mut connected, mut failed) = (0usize, 0usize);
    let connect_limit = tokio::time::sleep(Duration::from_secs(120));
    tokio::pin!(connect_limit);
    while connected + failed < options.clients {
        tokio::select! {
            answer = ready.recv() => match answer {
                Some(true) => connected += 1,
                Some(false) => failed += 1,
                None => break,
            },
            () = &mut connect_limit => break,
        }
    }
    println!(
        "READY {connected} {failed} {}",
        started.elapsed().as_millis()
    );
    let _ = go_tx.send(true);

    // Report every window until told to stop (or the limit).
    let mut totals: Vec<Vec<u32>> = vec![Vec::new(); ENDPOINTS.len()];
    let load_started = Instant::now();
    let deadline = load_started + options.limit;
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + options.report,
        options.report.max(Duration::from_secs(1)),
    );
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                let (window, errors) = record.take_window();
                let mut merged: Vec<u32> = window.iter().flatten().copied().collect();
                merged.sort_unstable();
                println!(
                    "PROGRESS {} {} {errors} {} {} {}",
                    load_started.elapsed().as_secs(),
                    merged.len(),
                    percentile(&merged, 0.50),
                    percentile(&merged, 0.99),
                    merged.last().copied().unwrap_or(0)
                );
                for (total, samples) in totals.iter_mut().zip(window) {
                    total.extend(samples);
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
            _ = stop.wait_for(|stop| *stop) => break,
        }
    }
    // Let the requests in flight finish (each is bounded by its timeout).
    let drain = async {
        for task in tasks {
            let _ = task.await;
        }
    };
    let _ = tokio::time::timeout(REQUEST_TIMEOUT + Duration::from_secs(5), drain).await;
    let (window, _) = record.take_window();
    for (total, samples) in totals.iter_mut().zip(window) {
        total.extend(samples);
    }
    let errors = std::mem::take(&mut *record.errors.lock().unwrap_or_else(PoisonError::into_inner));
    Ok(Outcome {
        samples: totals,
        errors,
        opened: opened.load(Ordering::Relaxed),
    })
}

// --------------------------------------------------------------------------
// The parent's side
// --------------------------------------------------------------------------

/// What the child reported at the end.
#[derive(Debug, Clone, Default)]
pub(crate) struct LoadResult {
    /// Per endpoint: (path, count, p50, p90, p99, p99.9, max) in µs.
    pub(crate) endpoints: Vec<(String, [u64; 6])>,
    /// Every request: count, p50, p90, p99, p99.9, max (µs).
    pub(crate) all: [u64; 6],
    /// Errors: (count, `endpoint: cause`).
    pub(crate) errors: Vec<(u64, String)>,
    /// Connections the clients opened.
    pub(crate) opened: u64,
    /// The child's CPU time and life, in ms, and its peak RSS in KiB.
    pub(crate) cpu_ms: u64,
    /// The child's life, in ms.
    pub(crate) life_ms: u64,
    /// The child's peak RSS, in KiB.
    pub(crate) peak_rss_kb: u64,
}

impl LoadResult {
    /// Every error.
    pub(crate) fn error_count(&self) -> u64 {
        self.errors.iter().map(|e| e.0).sum()
    }
}

fn six(fields: &[&str]) -> [u64; 6] {
    let mut out = [0; 6];
    for (slot, field) in out.iter_mut().zip(fields) {
        *slot = field.parse().unwrap_or(0);
    }
    out
}

/// The load child, seen from the soak.
pub(crate) struct LoadProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl std::fmt::Debug for LoadProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadProcess")
            .field("pid", &self.child.id())
            .finish_non_exhaustive()
    }
}

impl LoadProcess {
    /// Starts this binary as the load child.
    pub(crate) fn spawn(options: &ChildOptions, token: &str) -> Result<Self> {
        let exe = std::env::current_exe().context("the harness's path")?;
        let mut child = Command::new(exe)
            .args(["soak", "--load-child"])
            .args(["--load-port", &options.port.to_string()])
            .args(["--clients", &options.clients.to_string()])
            .args(["--think-ms", &options.think.as_millis().to_string()])
            .args(["--seed", &options.seed.to_string()])
            .args(["--load-report-ms", &options.report.as_millis().to_string()])
            .args(["--load-limit-secs", &options.limit.as_secs().to_string()])
            .args(["--load-threads", &options.threads.to_string()])
            .env(TOKEN_ENV, token)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the load child")?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().context("the load child's stdout")?;
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            child,
            stdin,
            lines,
        })
    }

    /// The child's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The next line, within `limit`; `None` at the end of its output or
    /// after `limit`.
    pub(crate) async fn next_line(&mut self, limit: Duration) -> Option<String> {
        tokio::time::timeout(limit, self.lines.recv())
            .await
            .ok()
            .flatten()
    }

    /// A line already received, if any.
    pub(crate) fn try_line(&mut self) -> Option<String> {
        self.lines.try_recv().ok()
    }

    /// Tells the clients to stop and collects the results (other lines go
    /// to `other`).
    pub(crate) async fn stop(
        mut self,
        limit: Duration,
        mut other: impl FnMut(&str),
    ) -> Result<LoadResult> {
        if let Some(mut stdin) = self.stdin.take() {
            writeln!(stdin, "STOP").context("telling the load child to stop")?;
            stdin.flush().context("telling the load child to stop")?;
        }
        let deadline = Instant::now() + limit;
        let mut result = LoadResult::default();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(line) = self.next_line(left).await else {
                bail!(
                    "the load child sent no RESULT END within {}s",
                    limit.as_secs()
                );
            };
            let fields: Vec<&str> = line.split_whitespace().collect();
            match fields.as_slice() {
                ["RESULT", "END"] => break,
                ["RESULT", "endpoint", path, rest @ ..] => {
                    result.endpoints.push(((*path).to_owned(), six(rest)));
                }
                ["RESULT", "all", rest @ ..] => result.all = six(rest),
                ["RESULT", "error", count, ..] => {
                    let what = line.splitn(4, ' ').nth(3).unwrap_or_default().to_owned();
                    result.errors.push((count.parse().unwrap_or(0), what));
                }
                ["RESULT", "client", opened, cpu, life, rss] => {
                    result.opened = opened.parse().unwrap_or(0);
                    result.cpu_ms = cpu.parse().unwrap_or(0);
                    result.life_ms = life.parse().unwrap_or(0);
                    result.peak_rss_kb = rss.parse().unwrap_or(0);
                }
                _ => other(&line),
            }
        }
        let status = tokio::task::spawn_blocking(move || {
            let status = self.child.wait();
            (status, self)
        })
        .await
        .context("waiting for the load child")?;
        let (status, _) = status;
        let status = status.context("waiting for the load child")?;
        ensure!(status.success(), "the load child ended {status}");
        Ok(result)
    }
}

impl Drop for LoadProcess {
    fn drop(&mut self) {
        // Never leave the clients running (a no-op once it has exited).
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
