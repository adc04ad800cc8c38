//! Benchmarks of orchex-orchestrator, each next to its reference in the same
//! run. Every orchestrator figure goes through the public API with a real
//! `SqliteStore`, real git repositories (built with the git CLI) and real
//! child processes, the way `crates/orchestrator/tests/orchestrator.rs` does.
//!
//! - `cycle_overhead`: `JOBS_OVERHEAD` no-op jobs (step `["true"]`,
//!   `deliver = "none"`) routed, queued, claimed and run (in as many cycles
//!   as slots free up) at
//!   `K_OVERHEAD`, next to a bare `buffer_unordered(K)` spawning `true`, and
//!   next to `buffer_unordered(K)` doing the same git work (open, checkout
//!   of the tiny repo into a fresh directory, `true` in it, removal) without
//!   SQLite and bookkeeping.
//! - `storage_excluded`: the closest path without SQLite and git that the
//!   public API allows — `run_process("true")`, and routing + rate limiter +
//!   circuit breaker + bulkhead + adaptive limit around `run_process("true")`
//!   — next to `buffer_unordered(K)` spawning `true` with `tokio::process`.
//! - `safety_chain_noop`: the same chain around a no-op future, next to a
//!   bare `buffer_unordered(K)` over the same no-op futures (the per-job
//!   bookkeeping cost in isolation).
//! - `scaling_*`: jobs sleeping 10 ms at K = 32 next to the same jobs at
//!   K = 1 (sequential): the full path (step `["sleep", "0.01"]`),
//!   `run_process("sleep 0.01")` next to the same processes spawned with a
//!   bare `tokio::process::Command` (the reference: how far processes
//!   scale on the machine at all), and the chain around
//!   `tokio::time::sleep`.
//! - `e2e_10k_files`: one job (a one-line step, `deliver = "branch"`, forced)
//!   on a 10 000-file repository, from `trigger` to its final event, next to
//!   the same work scripted with the git CLI (`git worktree add --detach`,
//!   the step, `git add -A`, `git commit`, `git update-ref`,
//!   `git worktree remove`); the phases seen in the job's events are printed.
//! - `git_10k_files`: the engine's git primitives on that repository
//!   (`GitRepo::checkout_commit`, `write_dir_as_commit`, removal of the
//!   workspace) next to `git worktree add --detach`, `git add -A && git
//!   commit` in that worktree, and `git worktree remove --force`.
//! - `emergency_stop_32`: `Orchestrator::emergency_stop` with 32 running
//!   `sleep 1000` steps (max_concurrent 32), call to return, next to killing
//!   and reaping 32 `sleep 1000` children with `tokio::process::Child::kill`.
//! - `rollback_10k_files`: `Orchestrator::rollback` of a delivered branch
//!   job on the 10 000-file repository, next to `git update-ref` moving the
//!   same kind of branch back.
//!
//! Set `ORCHEX_BENCH_SCALE` (e.g. `0.1`) to scale the job counts down for a
//! quick run. Memory for large queues is measured by the `orchestrator_size`
//! harness.
//!
//! Run: `cargo bench -p orchex-benches --bench orchestrator`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, measurement::WallTime};
use futures::StreamExt as _;
use orchex_core::config::Config;
use orchex_core::{
    Delivery, Event, EventKind, JobId, JobState, Pipeline, RepoId, Repository, Step, Trigger,
    TriggerKind,
};
use orchex_git::{GitRepo, Oid, Signature};
use orchex_orchestrator::{
    Events, ManualRun, Orchestrator, OrchestratorDeps, ProcessSpec, RoutingTable, run_process,
};
use orchex_resilience::{
    AdaptiveLimit, AimdConfig, Bulkhead, BulkheadConfig, CircuitBreakerConfig,
    CircuitBreakerRegistry, KeyedRateLimiter, LimitAlgorithm, LimitOutcome, Quota, SlidingWindow,
};
use orchex_store::{JobStore, MemoryStore, SqliteStore, StoreOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Jobs per iteration of the full-path overhead bench (the issue asks for
/// 10 000; a real job costs several SQLite writes, a checkout and a
/// process, about 5 ms on this machine, so 10 000 would take close to a
/// minute per iteration).
const JOBS_OVERHEAD: usize = 1000;
/// Processes per iteration of the storage-excluded benches.
const JOBS_PROCESS: usize = 1000;
/// No-op futures per iteration of the safety-chain bench.
const JOBS_NOOP: usize = 10_000;
/// Jobs of the full-path scaling bench.
const JOBS_SCALING_FULL: usize = 160;
/// Processes of the `run_process("sleep 0.01")` scaling bench.
const JOBS_SCALING_PROCESS: usize = 320;
/// Futures of the in-process scaling bench (the figure).
const JOBS_SCALING_CHAIN: usize = 1000;
const K_OVERHEAD: usize = 8;
const K_SCALING: usize = 32;
const FILES: usize = 10_000;
const RUNNING: usize = 32;
const PIPELINES_PER_REPO: usize = 10;

fn scaled(n: usize) -> usize {
    let scale: f64 = std::env::var("ORCHEX_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    ((n as f64 * scale).round() as usize).max(PIPELINES_PER_REPO)
}

/// Whether criterion's name filter (the first positional argument) can
/// match a benchmark of `group`: the setup of a skipped group (repositories,
/// stores) is skipped too.
fn wanted(group: &str) -> bool {
    const WITH_VALUE: &[&str] = &[
        "--save-baseline",
        "--baseline",
        "--baseline-lenient",
        "--load-baseline",
        "--color",
        "--format",
        "--plotting-backend",
        "--output-format",
        "--profile-time",
        "--warm-up-time",
        "--measurement-time",
        "--sample-size",
        "--nresamples",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter = args.iter().enumerate().find_map(|(i, arg)| {
        let after_option = i > 0 && WITH_VALUE.contains(&args[i - 1].as_str());
        (!arg.starts_with('-') && !after_option).then_some(arg)
    });
    filter.is_none_or(|filter| {
        let first = filter.split('/').next().unwrap_or_default();
        group.contains(first) || first.contains(group)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn heavy(group: &mut BenchmarkGroup<'_, WallTime>) {
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
}

// === fixtures ===

fn git(dir: &Path, args: &[&str]) -> String {
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
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A repository with two committed files.
fn tiny_repo(root: &Path) -> PathBuf {
    let dir = root.join("tiny");
    std::fs::create_dir_all(dir.join("schema")).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("schema/api.txt"), "v1\n").unwrap();
    std::fs::write(dir.join("README.md"), "hello\n").unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "initial"]);
    dir
}

/// A repository with `files` files of about 90 bytes in 100 directories,
/// one commit (written with `git fast-import`), checked out.
fn big_repo(root: &Path, files: usize) -> PathBuf {
    use std::io::Write as _;
    let dir = root.join("big");
    std::fs::create_dir_all(&dir).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    let mut stream = Vec::new();
    writeln!(stream, "commit refs/heads/main").unwrap();
    writeln!(
        stream,
        "committer Bench <bench@example.com> 1700000000 +0000"
    )
    .unwrap();
    writeln!(stream, "data 7\ninitial").unwrap();
    for i in 0..files {
        let content = format!("file {i}\n{}\n", "x".repeat(80));
        writeln!(
            stream,
            "M 100644 inline src/d{:03}/f{i:05}.txt\ndata {}\n{content}",
            i % 100,
            content.len()
        )
        .unwrap();
    }
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(&stream).unwrap();
    assert!(child.wait().unwrap().success());
    git(&dir, &["reset", "-q", "--hard", "main"]);
    dir
}

fn step(argv: &[&str]) -> Step {
    Step {
        name: "step".into(),
        run: Some(argv.iter().map(|s| (*s).to_owned()).collect()),
        ..Step::default()
    }
}

fn pipeline(name: &str, argv: &[&str], deliver: Delivery) -> Pipeline {
    let mut pipeline = Pipeline::new(name, vec![step(argv)]);
    pipeline.triggers = vec![TriggerKind::Manual];
    pipeline.deliver = deliver;
    pipeline
}

fn config(max_concurrent: usize) -> Config {
    let mut config = Config::default();
    config.orchestrator.max_concurrent = max_concurrent;
    config.orchestrator.adaptive_optimization = false;
    config.orchestrator.queue_capacity = 1_000_000;
    config.optimizer.schedule.enabled = false;
    config.optimizer.safety.rate_limit_per_hour = 1_000_000;
    config
}

fn repo_name(i: usize) -> RepoId {
    RepoId::new(format!("r{i:04}")).unwrap()
}

/// `jobs / PIPELINES_PER_REPO` repositories (all at `path`) ×
/// `PIPELINES_PER_REPO` pipelines running `argv`; returns the config and
/// one trigger per job.
fn fleet(path: &Path, jobs: usize, max_concurrent: usize, argv: &[&str]) -> (Config, Vec<Trigger>) {
    let mut config = config(max_concurrent);
    let repos = jobs.div_ceil(PIPELINES_PER_REPO);
    for r in 0..repos {
        config.repositories.push(Repository {
            name: repo_name(r),
            path: path.to_path_buf(),
            enabled: true,
            branch: Some("main".into()),
        });
    }
    for p in 0..PIPELINES_PER_REPO {
        config
            .pipelines
            .push(pipeline(&format!("p{p}"), argv, Delivery::None));
    }
    let triggers = (0..jobs)
        .map(|i| {
            let mut trigger = Trigger::manual(repo_name(i / PIPELINES_PER_REPO));
            trigger.pipeline = Some(format!("p{}", i % PIPELINES_PER_REPO));
            trigger
        })
        .collect();
    (config, triggers)
}

// === the event sink ===

/// Counts finished jobs and cycles; keeps the events of jobs when asked.
struct Sink {
    finished: watch::Sender<u64>,
    cycles: watch::Sender<u64>,
    succeeded: AtomicU64,
    keep: bool,
    kept: Mutex<Vec<Event>>,
}

impl Sink {
    fn new(keep: bool) -> Arc<Self> {
        Arc::new(Self {
            finished: watch::Sender::new(0),
            cycles: watch::Sender::new(0),
            succeeded: AtomicU64::new(0),
            keep,
            kept: Mutex::new(Vec::new()),
        })
    }

    fn on(&self, event: Event) {
        let kind = event.kind;
        // Kept before it is counted: a waiter woken by the count finds it.
        if self.keep && event.job_id.is_some() {
            self.kept.lock().unwrap().push(event);
        }
        match kind {
            EventKind::JobSucceeded => {
                self.succeeded.fetch_add(1, Ordering::Relaxed);
                self.finished.send_modify(|n| *n += 1);
            }
            EventKind::JobFailed
            | EventKind::JobSkipped
            | EventKind::JobCancelled
            | EventKind::JobTimedOut => self.finished.send_modify(|n| *n += 1),
            EventKind::CycleCompleted => self.cycles.send_modify(|n| *n += 1),
            _ => {}
        }
    }
}

fn events_of(sink: &Arc<Sink>) -> Events {
    let sink = Arc::clone(sink);
    Events::new(move |event| sink.on(event))
}

static DATA_DIRS: AtomicU64 = AtomicU64::new(0);

/// A store in a fresh directory under `root` and an orchestrator on it.
async fn open(root: &Path, config: &Config, sink: &Arc<Sink>) -> (Arc<SqliteStore>, Orchestrator) {
    let data = root.join(format!(
        "data-{}",
        DATA_DIRS.fetch_add(1, Ordering::Relaxed)
    ));
    let store = Arc::new(
        SqliteStore::open_in_dir(&data, StoreOptions::default())
            .await
            .unwrap(),
    );
    let deps = OrchestratorDeps::new(store.clone(), events_of(sink), &data);
    (store, Orchestrator::new(config, deps).unwrap())
}

async fn close(store: &SqliteStore) {
    let path = store.path().parent().unwrap().to_path_buf();
    store.close().await.unwrap();
    let _ = std::fs::remove_dir_all(path);
}

/// One full-path iteration on a fresh store: submits `triggers` (routing and
/// queue), starts, and waits until every job has finished (cycles start on
/// the free slots as jobs end, so there are many). Timed from the first
/// submit to the last job's final event; returns that and the time spent
/// submitting.
async fn full_cycle(root: &Path, config: &Config, triggers: &[Trigger]) -> (Duration, Duration) {
    let sink = Sink::new(false);
    let (store, orchestrator) = open(root, config, &sink).await;
    let mut finished = sink.finished.subscribe();
    let started = Instant::now();
    for trigger in triggers {
        let jobs = orchestrator.submit(trigger.clone()).await.unwrap();
        assert_eq!(jobs.len(), 1);
    }
    let submitted = started.elapsed();
    orchestrator.start(futures::stream::pending()).unwrap();
    finished
        .wait_for(|n| *n >= triggers.len() as u64)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        sink.succeeded.load(Ordering::Relaxed),
        triggers.len() as u64,
        "every job must run its step and succeed"
    );
    orchestrator.stop(Duration::from_secs(5)).await;
    close(&store).await;
    (elapsed, submitted)
}

// === references and the chain without storage ===

/// What a user would write: `tokio::process` with the output captured.
async fn spawn_bare(argv: &[&str], cwd: &Path) {
    let output = tokio::process::Command::new(argv[0])
        .args(&argv[1..])
        .current_dir(cwd)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
}

async fn spawn_orchex(argv: &[String], cwd: &Path) {
    let token = CancellationToken::new();
    let spec = ProcessSpec {
        argv,
        cwd,
        env: Vec::new(),
        timeout: Duration::from_secs(60),
        output_limit: 64 * 1024,
    };
    let outcome = run_process(&spec, &token, |_| {}).await.unwrap();
    assert!(outcome.success());
}

/// Routing, rate limiter, circuit breaker, bulkhead and adaptive limit,
/// built as `Orchestrator::new` builds them, used as `guarded_run` uses
/// them — without the store, the engine or the events.
struct Chain {
    routing: RoutingTable,
    limiter: KeyedRateLimiter<RepoId>,
    breakers: CircuitBreakerRegistry<String>,
    bulkhead: Bulkhead,
    adaptive: AdaptiveLimit,
    in_flight: std::sync::atomic::AtomicU32,
}

impl Chain {
    fn new(config: &Config) -> Self {
        let max = u32::try_from(config.orchestrator.max_concurrent).unwrap();
        let safety = &config.optimizer.safety;
        let breaker = CircuitBreakerConfig::failure_count_in(
            safety.circuit_breaker_threshold,
            SlidingWindow::Time(Duration::from_secs(3600)),
        )
        .half_open(1, None)
        .open_duration(Duration::from_secs(safety.circuit_breaker_cooldown_secs))
        .open_backoff(
            2.0,
            Duration::from_secs(safety.circuit_breaker_cooldown_secs * 32),
        )
        .open_jitter(0.1);
        Self {
            routing: RoutingTable::build(config).unwrap(),
            limiter: KeyedRateLimiter::builder(Quota::per_hour(safety.rate_limit_per_hour))
                .name("repository")
                .label_keys(|repo: &RepoId| repo.to_string())
                .max_keys(10_000)
                .build()
                .unwrap(),
            breakers: CircuitBreakerRegistry::new(breaker).unwrap(),
            bulkhead: Bulkhead::builder(BulkheadConfig::new(max))
                .name("jobs")
                .build()
                .unwrap(),
            adaptive: AdaptiveLimit::builder(LimitAlgorithm::Aimd(
                AimdConfig::new(max, 1, max)
                    .backoff_ratio(0.5)
                    .timeout(Duration::from_secs(safety.job_timeout_secs)),
            ))
            .name("jobs")
            .build()
            .unwrap(),
            in_flight: std::sync::atomic::AtomicU32::new(0),
        }
    }

    async fn guarded<F: Future>(&self, trigger: &Trigger, work: F) -> F::Output {
        let (name, cost) = {
            let matched = self.routing.route(trigger);
            let pipeline = matched.pipelines.first().expect("routed");
            (pipeline.name.clone(), pipeline.rate_cost)
        };
        self.limiter.check(&trigger.repo, cost).unwrap();
        let breaker = self
            .breakers
            .get_or_insert(format!("{}/{}", trigger.repo, name));
        let permit = breaker.try_acquire_owned().unwrap();
        let _slot = self.bulkhead.acquire().await.unwrap();
        let load = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        let started = Instant::now();
        let output = work.await;
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
        permit.success();
        self.adaptive
            .record(started.elapsed(), load, LimitOutcome::Success);
        output
    }
}

async fn unordered<F: Future>(futures: impl Iterator<Item = F>, k: usize) -> usize {
    futures::stream::iter(futures)
        .buffer_unordered(k)
        .fold(0, |n, _| async move { n + 1 })
        .await
}

fn timed<T>(rt: &tokio::runtime::Runtime, iters: u64, mut run: impl FnMut() -> T) -> Duration
where
    T: Future<Output = ()>,
{
    rt.block_on(async {
        let started = Instant::now();
        for _ in 0..iters {
            run().await;
        }
        started.elapsed()
    })
}

// === 1. cycle overhead ===

fn cycle_overhead(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let repo = tiny_repo(&root);
    let jobs = scaled(JOBS_OVERHEAD);
    let (config, triggers) = fleet(&repo, jobs, K_OVERHEAD, &["true"]);
    let head: Oid = git(&repo, &["rev-parse", "HEAD"]).parse().unwrap();
    let work_root = root.join("plain");
    std::fs::create_dir_all(&work_root).unwrap();

    let mut group = c.benchmark_group("cycle_overhead");
    heavy(&mut group);
    group.throughput(Throughput::Elements(jobs as u64));
    let mut submit_share = (Duration::ZERO, Duration::ZERO);
    group.bench_function(format!("orchex_full_path_{jobs}_jobs"), |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (elapsed, submitted) = rt.block_on(full_cycle(&root, &config, &triggers));
                total += elapsed;
                submit_share.0 += submitted;
                submit_share.1 += elapsed;
            }
            total
        });
    });
    eprintln!(
        "cycle_overhead: submitting (routing + queue insert) took {:.1} % of the full path",
        100.0 * submit_share.0.as_secs_f64() / submit_share.1.as_secs_f64()
    );
    group.bench_function(format!("bare_buffer_unordered_spawn_true_{jobs}"), |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
                let n =
                    unordered((0..jobs).map(|_| spawn_bare(&["true"], &root)), K_OVERHEAD).await;
                assert_eq!(n, jobs);
            })
        });
    });
    let counter = AtomicU64::new(0);
    group.bench_function(
        format!("bare_buffer_unordered_checkout_true_cleanup_{jobs}"),
        |b| {
            b.iter_custom(|iters| {
                timed(&rt, iters, || async {
                    let one = || async {
                        let dest =
                            work_root.join(counter.fetch_add(1, Ordering::Relaxed).to_string());
                        let (path, to) = (repo.clone(), dest.clone());
                        tokio::task::spawn_blocking(move || {
                            GitRepo::open(&path)
                                .unwrap()
                                .checkout_commit(head, &to)
                                .unwrap();
                        })
                        .await
                        .unwrap();
                        spawn_bare(&["true"], &dest).await;
                        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(dest).unwrap())
                            .await
                            .unwrap();
                    };
                    let n = unordered((0..jobs).map(|_| one()), K_OVERHEAD).await;
                    assert_eq!(n, jobs);
                })
            });
        },
    );
    group.finish();
}

// === 1b. storage excluded ===

fn storage_excluded(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path().to_path_buf();
    let jobs = scaled(JOBS_PROCESS);
    let (config, triggers) = fleet(&cwd, jobs, K_OVERHEAD, &["true"]);
    let argv = vec!["true".to_owned()];

    let mut group = c.benchmark_group("storage_excluded");
    heavy(&mut group);
    group.throughput(Throughput::Elements(jobs as u64));
    group.bench_function(format!("bare_buffer_unordered_spawn_true_{jobs}"), |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
                unordered((0..jobs).map(|_| spawn_bare(&["true"], &cwd)), K_OVERHEAD).await;
            })
        });
    });
    group.bench_function(format!("run_process_true_{jobs}"), |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
                unordered((0..jobs).map(|_| spawn_orchex(&argv, &cwd)), K_OVERHEAD).await;
            })
        });
    });
    group.bench_function(format!("chain_run_process_true_{jobs}"), |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
                let chain = Chain::new(&config);
                let chain = &chain;
                unordered(
                    triggers
                        .iter()
                        .map(|t| chain.guarded(t, spawn_orchex(&argv, &cwd))),
                    K_OVERHEAD,
                )
                .await;
            })
        });
    });
    group.finish();

    let jobs = scaled(JOBS_NOOP);
    let (config, triggers) = fleet(&cwd, jobs, K_OVERHEAD, &["true"]);
    let mut group = c.benchmark_group("safety_chain_noop");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(jobs as u64));
    group.bench_function(format!("bare_buffer_unordered_{jobs}"), |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
                unordered(
                    (0..jobs).map(|i| async move { std::hint::black_box(i) }),
                    K_OVERHEAD,
                )
                .await;
            })
        });
    });
    group.bench_function(format!("chain_{jobs}"), |b| {
        b.iter_custom(|iters| {
            timed(&rt, iters, || async {
                let chain = Chain::new(&config);
                let chain = &chain;
                unordered(
                    triggers
                        .iter()
                        .enumerate()
                        .map(|(i, t)| chain.guarded(t, async move { std::hint::black_box(i) })),
                    K_OVERHEAD,
                )
                .await;
            })
        });
    });
    group.finish();
}

// === 1c. the full path with storage excluded, interleaved with its reference ===

/// Jobs per side of `overhead_ab` (the 10 000), run in rounds of
/// `BATCH_AB`.
const JOBS_AB: usize = 10_000;
/// Jobs per side and round of `overhead_ab`: short rounds, so that the
/// machine's drift hits every side alike.
const BATCH_AB: usize = 250;

/// Which store a full-path side of `overhead_ab` runs on.
#[derive(Clone, Copy, Debug)]
enum StoreKind {
    Memory,
    Sqlite,
}

/// Where `overhead_ab` keeps things: the SQLite files on disk, the
/// repository and the workspaces in memory (`/dev/shm`) when there is one.
/// On this VM's ext4, creating and deleting a workspace per job spends
/// most of the job's time in inode allocation (`find_inode_bit`,
/// `recently_deleted` at the top of `perf`), which varies by ±15 % from one
/// round to the next: more noise than the effect measured.
struct AbRoot {
    disk: PathBuf,
    work: PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl AbRoot {
    /// SQLite in a temporary directory on disk; the repository and the
    /// workspaces in /dev/shm when there is one.
    fn new() -> Self {
        let disk = tempfile::tempdir().unwrap();
        let shm = Path::new("/dev/shm");
        let memory = if shm.is_dir() {
            tempfile::tempdir_in(shm).unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        Self {
            disk: disk.path().to_path_buf(),
            work: memory.path().to_path_buf(),
            _dirs: (disk, memory),
        }
    }
}

/// An orchestrator for `config` on a fresh store of `kind` with its own
/// workspace directory, and the store.
async fn orchestrator_on(
    kind: StoreKind,
    root: &AbRoot,
    config: &Config,
    sink: &Arc<Sink>,
) -> (Arc<dyn orchex_store::Store>, Orchestrator) {
    let data = format!("data-{}", DATA_DIRS.fetch_add(1, Ordering::Relaxed));
    let store: Arc<dyn orchex_store::Store> = match kind {
        StoreKind::Memory => Arc::new(MemoryStore::new()),
        StoreKind::Sqlite => Arc::new(
            SqliteStore::open_in_dir(&root.disk.join(&data), StoreOptions::default())
                .await
                .unwrap(),
        ),
    };
    let deps = OrchestratorDeps::new(Arc::clone(&store), events_of(sink), root.work.join(&data));
    (store, Orchestrator::new(config, deps).unwrap())
}

/// Time spent submitting in `full_path_on`, summed over its calls.
static SUBMIT_NANOS: AtomicU64 = AtomicU64::new(0);

/// The full path: submit every trigger (routing, coalescing lookup, bounded
/// insert), start, and wait until every job has finished (claims, the
/// safety chain, the engine, the outcome's record, stats, events). Timed
/// from the first submit to the last job's final event.
async fn full_path_on(
    kind: StoreKind,
    root: &AbRoot,
    config: &Config,
    triggers: &[Trigger],
) -> Duration {
    let sink = Sink::new(false);
    let (store, orchestrator) = orchestrator_on(kind, root, config, &sink).await;
    let mut finished = sink.finished.subscribe();
    let started = Instant::now();
    for trigger in triggers {
        assert_eq!(orchestrator.submit(trigger.clone()).await.unwrap().len(), 1);
    }
    SUBMIT_NANOS.fetch_add(
        u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    orchestrator.start(futures::stream::pending()).unwrap();
    finished
        .wait_for(|n| *n >= triggers.len() as u64)
        .await
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(
        sink.succeeded.load(Ordering::Relaxed),
        triggers.len() as u64,
        "every job must run its step and succeed"
    );
    orchestrator.stop(Duration::from_secs(5)).await;
    drop(orchestrator);
    drop(store);
    elapsed
}

/// How the reference drives the engine futures.
#[derive(Clone, Copy, Debug)]
enum Driver {
    /// `buffer_unordered(K)` over the futures themselves: all of them are
    /// polled by the one task that awaits the stream (the issue's
    /// reference).
    Inline,
    /// `buffer_unordered(K)` over `tokio::spawn` of each future: the jobs
    /// run on every worker thread, as the orchestrator runs them.
    Spawned,
}

/// The reference: the same jobs, already stored, each run through the
/// engine alone (the future the cycle awaits), by a bare
/// `buffer_unordered(K)`.
async fn engine_alone(
    root: &AbRoot,
    config: &Config,
    triggers: &[Trigger],
    driver: Driver,
    k: usize,
) -> Duration {
    let sink = Sink::new(false);
    let (store, orchestrator) = orchestrator_on(StoreKind::Memory, root, config, &sink).await;
    let mut jobs = Vec::with_capacity(triggers.len());
    for trigger in triggers {
        let repo = trigger.repo.clone();
        let pipeline = trigger.pipeline.clone().unwrap();
        let job = orchex_core::Job::new(repo, pipeline, trigger.clone());
        store.insert_job(job.clone()).await.unwrap();
        jobs.push(job);
    }
    let started = Instant::now();
    let states: Vec<JobState> = match driver {
        Driver::Inline => {
            let orchestrator = &orchestrator;
            futures::stream::iter(jobs.iter())
                .map(|job| orchestrator.run_engine_alone_for_benchmarks(job))
                .buffer_unordered(k)
                .collect()
                .await
        }
        Driver::Spawned => {
            futures::stream::iter(jobs)
                .map(|job| {
                    let orchestrator = orchestrator.clone();
                    tokio::spawn(
                        async move { orchestrator.run_engine_alone_for_benchmarks(&job).await },
                    )
                })
                .buffer_unordered(k)
                .map(Result::unwrap)
                .collect()
                .await
        }
    };
    let elapsed = started.elapsed();
    let succeeded = states
        .iter()
        .filter(|state| **state == JobState::Succeeded)
        .count();
    assert_eq!(succeeded, triggers.len(), "every engine run must succeed");
    elapsed
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        f64::midpoint(values[mid - 1], values[mid])
    }
}

/// The sides of `overhead_ab`, in the order of its table.
const SIDES: [&str; 4] = [
    "full path, memory store",
    "engine alone, inline",
    "engine alone, spawned",
    "full path, SQLite",
];

/// Not a criterion group: the two sides of the ≤ 1.03× goal drift by more
/// than 3 % from one minute to the next on a shared machine, so each round
/// runs the full path on the memory store, the engine alone, and the full
/// path on SQLite back to back (the order turning each round), and the
/// figure is the median of the per-round ratios.
fn overhead_ab() {
    let rt = runtime();
    let root = AbRoot::new();
    eprintln!(
        "overhead_ab: SQLite in {}, repository and workspaces in {}",
        root.disk.display(),
        root.work.display()
    );
    let repo = tiny_repo(&root.work);
    let jobs = BATCH_AB;
    let rounds = scaled(JOBS_AB).div_ceil(BATCH_AB);
    let (config, triggers) = fleet(&repo, jobs, K_OVERHEAD, &["true"]);
    // Warm-up: page cache, the first process spawns, allocator growth.
    rt.block_on(engine_alone(
        &root,
        &config,
        &triggers[..jobs.min(200)],
        Driver::Spawned,
        K_OVERHEAD,
    ));

    // `ORCHEX_AB_ONLY=<side>` runs one side alone, for `perf`.
    let only: Option<usize> = std::env::var("ORCHEX_AB_ONLY")
        .ok()
        .and_then(|s| s.parse().ok());
    let mut times: Vec<[f64; 4]> = Vec::new();
    eprintln!(
        "overhead_ab: {rounds} rounds of {jobs} jobs per side (step [\"true\"], deliver none) at K = {K_OVERHEAD}"
    );
    eprintln!("round | {} (s)", SIDES.join(" | "));
    for round in 0..rounds {
        let mut seconds = [0.0; 4];
        // The order turns each round, so no side always runs first.
        for offset in 0..SIDES.len() {
            let side = (round + offset) % SIDES.len();
            if only.is_some_and(|only| only != side) {
                continue;
            }
            let elapsed = rt.block_on(async {
                match side {
                    0 => full_path_on(StoreKind::Memory, &root, &config, &triggers).await,
                    1 => engine_alone(&root, &config, &triggers, Driver::Inline, K_OVERHEAD).await,
                    2 => engine_alone(&root, &config, &triggers, Driver::Spawned, K_OVERHEAD).await,
                    _ => full_path_on(StoreKind::Sqlite, &root, &config, &triggers).await,
                }
            });
            seconds[side] = elapsed.as_secs_f64();
        }
        eprintln!(
            "{round:5} | {}",
            seconds.map(|s| format!("{s:.3}")).join(" | ")
        );
        times.push(seconds);
    }
    eprintln!(
        "overhead_ab: submitting (routing, coalescing lookup, bounded insert, queued event) took {:.1} µs per job, both stores together",
        SUBMIT_NANOS.load(Ordering::Relaxed) as f64 / 1e3 / (2 * rounds * jobs) as f64
    );
    if only.is_some() {
        return;
    }
    let total = |side: usize| times.iter().map(|t| t[side]).sum::<f64>();
    eprintln!(
        "overhead_ab: totals over {} jobs per side: {}",
        rounds * jobs,
        (0..SIDES.len())
            .map(|side| format!("{} {:.2} s", SIDES[side], total(side)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let ratio = |side: usize, reference: usize| {
        let ratios: Vec<f64> = times.iter().map(|t| t[side] / t[reference]).collect();
        let mut sorted = ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let quartile = |q: usize| sorted[(sorted.len() - 1) * q / 4];
        let min = ratios.iter().copied().fold(f64::INFINITY, f64::min);
        let max = ratios.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let per_job: Vec<f64> = times
            .iter()
            .map(|t| (t[side] - t[reference]) * 1e6 / jobs as f64)
            .collect();
        eprintln!(
            "overhead_ab: {} / {}: ratio of totals {:.4}×; per round median {:.4}×, quartiles {:.4}–{:.4}, range {min:.4}–{max:.4}; median difference {:+.1} µs per job",
            SIDES[side],
            SIDES[reference],
            total(side) / total(reference),
            median(ratios),
            quartile(1),
            quartile(3),
            median(per_job)
        );
    };
    ratio(0, 1);
    ratio(0, 2);
    ratio(3, 1);
    ratio(3, 2);
}

// === 2. scaling ===

fn scaling(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let repo = tiny_repo(&root);
    let sleep = ["sleep", "0.01"];

    let jobs = scaled(JOBS_SCALING_FULL);
    let mut group = c.benchmark_group("scaling_full_path");
    heavy(&mut group);
    group.throughput(Throughput::Elements(jobs as u64));
    for k in [K_SCALING, 1] {
        let (config, triggers) = fleet(&repo, jobs, k, &sleep);
        group.bench_function(format!("orchex_{jobs}_jobs_sleep_10ms_k{k}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| rt.block_on(full_cycle(&root, &config, &triggers)).0)
                    .sum()
            });
        });
    }
    group.finish();

    // The full path next to its reference, the engine alone under a bare
    // `buffer_unordered(K)`, both on the memory store with the repository
    // and the workspaces in /dev/shm (as `overhead_ab`): how far the jobs'
    // own work (checkout, step, diff, removal) lets them scale here.
    let shm_root = AbRoot::new();
    let shm_repo = tiny_repo(&shm_root.work);
    let jobs = scaled(JOBS_SCALING_FULL);
    let mut group = c.benchmark_group("scaling_full_path_shm");
    heavy(&mut group);
    group.throughput(Throughput::Elements(jobs as u64));
    for k in [K_SCALING, 1] {
        let (config, triggers) = fleet(&shm_repo, jobs, k, &sleep);
        group.bench_function(format!("orchex_memory_{jobs}_jobs_sleep_10ms_k{k}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        rt.block_on(full_path_on(
                            StoreKind::Memory,
                            &shm_root,
                            &config,
                            &triggers,
                        ))
                    })
                    .sum()
            });
        });
        group.bench_function(format!("engine_alone_{jobs}_jobs_sleep_10ms_k{k}"), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        rt.block_on(engine_alone(
                            &shm_root,
                            &config,
                            &triggers,
                            Driver::Inline,
                            k,
                        ))
                    })
                    .sum()
            });
        });
    }
    group.finish();

    let jobs = scaled(JOBS_SCALING_PROCESS);
    let argv: Vec<String> = sleep.iter().map(|s| (*s).to_owned()).collect();
    // Next to the reference: what the same processes scale to when a user
    // spawns them with `tokio::process` under a bare `buffer_unordered`.
    for (name, bare) in [
        ("scaling_run_process", false),
        ("scaling_bare_process", true),
    ] {
        let mut group = c.benchmark_group(name);
        heavy(&mut group);
        group.throughput(Throughput::Elements(jobs as u64));
        let side = if bare { "tokio_process" } else { "run_process" };
        for k in [K_SCALING, 1] {
            group.bench_function(format!("{side}_{jobs}_sleep_10ms_k{k}"), |b| {
                b.iter_custom(|iters| {
                    timed(&rt, iters, || async {
                        if bare {
                            unordered((0..jobs).map(|_| spawn_bare(&sleep, &root)), k).await;
                        } else {
                            unordered((0..jobs).map(|_| spawn_orchex(&argv, &root)), k).await;
                        }
                    })
                });
            });
        }
        group.finish();
    }

    let jobs = scaled(JOBS_SCALING_CHAIN);
    let mut group = c.benchmark_group("scaling_chain");
    heavy(&mut group);
    group.throughput(Throughput::Elements(jobs as u64));
    for k in [K_SCALING, 1] {
        let (config, triggers) = fleet(&repo, jobs, k, &sleep);
        group.bench_function(format!("chain_{jobs}_tokio_sleep_10ms_k{k}"), |b| {
            b.iter_custom(|iters| {
                timed(&rt, iters, || async {
                    let chain = Chain::new(&config);
                    let chain = &chain;
                    unordered(
                        triggers.iter().map(|t| {
                            chain.guarded(t, tokio::time::sleep(Duration::from_millis(10)))
                        }),
                        k,
                    )
                    .await;
                })
            });
        });
    }
    group.finish();
}

// === 4. end to end and 6. rollback on a 10 000-file repository ===

struct BigRepo {
    _dir: tempfile::TempDir,
    root: PathBuf,
    repo: PathBuf,
    head: Oid,
}

fn big() -> BigRepo {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let started = Instant::now();
    let repo = big_repo(&root, FILES);
    eprintln!(
        "fixture: {FILES}-file repository built in {:?}",
        started.elapsed()
    );
    let head = git(&repo, &["rev-parse", "HEAD"]).parse().unwrap();
    BigRepo {
        _dir: dir,
        root,
        repo,
        head,
    }
}

const STAMP: &[&str] = &["sh", "-c", "date +%s%N > stamp.txt"];

/// Phases of one job seen in its events, in milliseconds.
#[derive(Debug, Default, Clone, Copy)]
struct Phases {
    queued: f64,
    before_step: f64,
    step: f64,
    after_step: f64,
}

fn millis(from: jiff::Timestamp, to: jiff::Timestamp) -> f64 {
    (to.as_nanosecond() - from.as_nanosecond()) as f64 / 1e6
}

fn phases(sink: &Sink, id: JobId, triggered: jiff::Timestamp) -> Phases {
    let events = sink.kept.lock().unwrap();
    let of = |kind: EventKind| {
        events
            .iter()
            .find(|e| e.job_id == Some(id) && e.kind == kind)
            .unwrap_or_else(|| panic!("no {kind:?} event for {id}"))
    };
    let started = of(EventKind::JobStarted);
    let progress = of(EventKind::JobProgress);
    let done = of(EventKind::JobSucceeded);
    let step = progress.data["durationMs"].as_f64().unwrap_or(0.0);
    Phases {
        queued: millis(triggered, started.ts),
        before_step: millis(started.ts, progress.ts) - step,
        step,
        after_step: millis(progress.ts, done.ts),
    }
}

struct E2e {
    sink: Arc<Sink>,
    store: Arc<SqliteStore>,
    orchestrator: Orchestrator,
}

impl E2e {
    async fn new(big: &BigRepo) -> Self {
        let mut config = config(1);
        config.repositories.push(Repository {
            name: RepoId::new("big").unwrap(),
            path: big.repo.clone(),
            enabled: true,
            branch: Some("main".into()),
        });
        config
            .pipelines
            .push(pipeline("e2e", STAMP, Delivery::Branch));
        let sink = Sink::new(true);
        let (store, orchestrator) = open(&big.root, &config, &sink).await;
        orchestrator.start(futures::stream::pending()).unwrap();
        Self {
            sink,
            store,
            orchestrator,
        }
    }

    /// Runs one forced job to its end; returns it, its wall time from the
    /// `trigger` call, and its phases.
    async fn job(&self) -> (orchex_core::Job, Duration, Phases) {
        let mut finished = self.sink.finished.subscribe();
        let target = *finished.borrow_and_update() + 1;
        let triggered = jiff::Timestamp::now();
        let started = Instant::now();
        let job = self
            .orchestrator
            .trigger(ManualRun {
                repo: "big".into(),
                pipeline: Some("e2e".into()),
                force: true,
                dry_run: false,
            })
            .await
            .unwrap()
            .remove(0);
        finished.wait_for(|n| *n >= target).await.unwrap();
        let elapsed = started.elapsed();
        let job = self.store.get_job(job.id).await.unwrap().unwrap();
        assert_eq!(job.state(), JobState::Succeeded, "{:?}", job.error);
        assert_eq!(job.changed, Some(true));
        let phases = phases(&self.sink, job.id, triggered);
        (job, elapsed, phases)
    }
}

fn e2e_and_rollback(c: &mut Criterion) {
    let rt = runtime();
    let big = big();
    let e2e = rt.block_on(E2e::new(&big));
    // A first delivery, kept: every later job replaces the branch value of
    // the job before it, and its rollback restores that value.
    let (first, elapsed, _) = rt.block_on(e2e.job());
    eprintln!("e2e: first job (cold) took {elapsed:?}");
    let base_commit = first.delivery.unwrap().commit.unwrap();

    let mut group = c.benchmark_group("e2e_10k_files");
    heavy(&mut group);
    let mut seen = Vec::new();
    group.bench_function("orchex_job_trigger_to_final", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (_, elapsed, phases) = rt.block_on(e2e.job());
                total += elapsed;
                seen.push((elapsed, phases));
            }
            total
        });
    });
    print_phases(&seen);
    let worktree = big.root.join("cli-worktree");
    group.bench_function("git_cli_worktree_step_commit_update_ref_remove", |b| {
        b.iter(|| {
            let w = worktree.to_str().unwrap();
            git(&big.repo, &["worktree", "add", "-q", "--detach", w, "main"]);
            let status = Command::new(STAMP[0])
                .args(&STAMP[1..])
                .current_dir(&worktree)
                .status()
                .unwrap();
            assert!(status.success());
            git(&worktree, &["add", "-A"]);
            git(&worktree, &["commit", "-q", "-m", "bench"]);
            let commit = git(&worktree, &["rev-parse", "HEAD"]);
            git(&big.repo, &["update-ref", "refs/heads/cli/e2e", &commit]);
            git(&big.repo, &["worktree", "remove", "--force", w]);
        });
    });
    group.finish();

    git_primitives(c, &big);

    // === 6. rollback ===
    let mut group = c.benchmark_group("rollback_10k_files");
    heavy(&mut group);
    group.bench_function("orchex_rollback_branch_job", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (job, _, _) = e2e.job().await;
                    let started = Instant::now();
                    let rolled = e2e.orchestrator.rollback(job.id).await.unwrap();
                    total += started.elapsed();
                    assert_eq!(rolled.state(), JobState::RolledBack);
                    let previous = job.delivery.and_then(|d| d.previous).unwrap();
                    assert_eq!(git(&big.repo, &["rev-parse", "orchex/e2e"]), previous);
                }
                total
            })
        });
    });
    let head = big.head.to_string();
    group.bench_function("git_update_ref_back", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                git(
                    &big.repo,
                    &["update-ref", "refs/heads/cli/rollback", &base_commit],
                );
                let started = Instant::now();
                git(
                    &big.repo,
                    &["update-ref", "refs/heads/cli/rollback", &head, &base_commit],
                );
                total += started.elapsed();
            }
            total
        });
    });
    group.finish();
    rt.block_on(async {
        e2e.orchestrator.stop(Duration::from_secs(5)).await;
        close(&e2e.store).await;
    });
}

fn print_phases(seen: &[(Duration, Phases)]) {
    if seen.is_empty() {
        return;
    }
    let n = seen.len() as f64;
    let mean = |f: fn(&Phases) -> f64| seen.iter().map(|(_, p)| f(p)).sum::<f64>() / n;
    let total = seen.iter().map(|(d, _)| d.as_secs_f64() * 1e3).sum::<f64>() / n;
    eprintln!(
        "e2e phases over {} jobs (mean ms): total {total:.1} = trigger→started {:.1} + \
         before the step (open, workspace, checkout, input hash, unchanged lookup) {:.1} + \
         step {:.1} + after the step (commit, diff, impact, deliver, workspace removal, \
         store) {:.1}",
        seen.len(),
        mean(|p| p.queued),
        mean(|p| p.before_step),
        mean(|p| p.step),
        mean(|p| p.after_step),
    );
}

fn git_primitives(c: &mut Criterion, big: &BigRepo) {
    let repo = GitRepo::open(&big.repo).unwrap();
    let signature = Signature::new("bench", "bench@example.com");
    let scratch = big.root.join("scratch");
    let counter = AtomicU64::new(0);
    let fresh = || scratch.join(counter.fetch_add(1, Ordering::Relaxed).to_string());

    let mut group = c.benchmark_group("git_10k_files");
    heavy(&mut group);
    group.bench_function("orchex_checkout_commit", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dest = fresh();
                let started = Instant::now();
                repo.checkout_commit(big.head, &dest).unwrap();
                total += started.elapsed();
                std::fs::remove_dir_all(dest).unwrap();
            }
            total
        });
    });
    group.bench_function("git_worktree_add_detach", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dest = fresh();
                let d = dest.to_str().unwrap();
                let started = Instant::now();
                git(&big.repo, &["worktree", "add", "-q", "--detach", d, "main"]);
                total += started.elapsed();
                git(&big.repo, &["worktree", "remove", "--force", d]);
            }
            total
        });
    });
    // One checkout with one changed file, committed again and again.
    let work = fresh();
    repo.checkout_commit(big.head, &work).unwrap();
    group.bench_function("orchex_write_dir_as_commit_one_changed_file", |b| {
        b.iter(|| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            std::fs::write(work.join("stamp.txt"), n.to_string()).unwrap();
            repo.write_dir_as_commit(&work, big.head, "bench", &signature)
                .unwrap()
        });
    });
    let tree = fresh();
    let t = tree.to_str().unwrap().to_owned();
    git(
        &big.repo,
        &["worktree", "add", "-q", "--detach", &t, "main"],
    );
    group.bench_function("git_add_all_commit_one_changed_file", |b| {
        b.iter(|| {
            let n = counter.fetch_add(1, Ordering::Relaxed);
            std::fs::write(tree.join("stamp.txt"), n.to_string()).unwrap();
            git(&tree, &["add", "-A"]);
            git(&tree, &["commit", "-q", "-m", "bench"]);
        });
    });
    group.bench_function("orchex_workspace_removal", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dest = fresh();
                repo.checkout_commit(big.head, &dest).unwrap();
                let started = Instant::now();
                std::fs::remove_dir_all(dest).unwrap();
                total += started.elapsed();
            }
            total
        });
    });
    group.bench_function("git_worktree_remove_force", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dest = fresh();
                let d = dest.to_str().unwrap();
                git(&big.repo, &["worktree", "add", "-q", "--detach", d, "main"]);
                let started = Instant::now();
                git(&big.repo, &["worktree", "remove", "--force", d]);
                total += started.elapsed();
            }
            total
        });
    });
    group.finish();
    git(&big.repo, &["worktree", "remove", "--force", &t]);
    let _ = std::fs::remove_dir_all(&scratch);
}

// === 5. emergency stop ===

/// Children of this process named `sleep` that are not zombies.
fn sleeping_children() -> usize {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .bytes()
                .all(|b| b.is_ascii_digit())
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let Some((head, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let mut fields = rest.split_whitespace();
            let state = fields.next().unwrap_or("");
            let ppid = fields.next().unwrap_or("");
            head.ends_with("(sleep") && ppid == me && state != "Z"
        })
        .count()
}

fn emergency_stop(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let repo = tiny_repo(&root);
    let mut config = config(RUNNING);
    config.repositories.push(Repository {
        name: RepoId::new("tiny").unwrap(),
        path: repo,
        enabled: true,
        branch: Some("main".into()),
    });
    for n in 0..RUNNING {
        config.pipelines.push(pipeline(
            &format!("hold{n}"),
            &["sleep", "1000"],
            Delivery::None,
        ));
    }
    let sink = Sink::new(false);
    let (store, orchestrator) = rt.block_on(open(&root, &config, &sink));
    {
        let _runtime = rt.enter();
        orchestrator.start(futures::stream::pending()).unwrap();
    }

    let mut group = c.benchmark_group("emergency_stop_32");
    heavy(&mut group);
    group.bench_function("orchex_emergency_stop_call_to_return", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    // Queued while paused, so that one cycle takes all 32: a
                    // cycle started by the 1 s tick in the middle of the
                    // submit would take only part of them, and the rest
                    // would wait for that cycle (of `sleep 1000` jobs) to end.
                    orchestrator.pause().unwrap();
                    let jobs = orchestrator
                        .trigger(ManualRun {
                            repo: "tiny".into(),
                            ..ManualRun::default()
                        })
                        .await
                        .unwrap();
                    assert_eq!(jobs.len(), RUNNING);
                    orchestrator.resume().unwrap();
                    let deadline = Instant::now() + Duration::from_secs(60);
                    while sleeping_children() < RUNNING {
                        if Instant::now() > deadline {
                            let snapshot = orchestrator.snapshot().await;
                            let first = store.get_job(jobs[0].id).await.unwrap().unwrap();
                            panic!(
                                "the 32 steps did not start: {} sleeping, {} running, state {:?}, first job {:?} {:?}",
                                sleeping_children(),
                                snapshot.running.len(),
                                snapshot.state,
                                first.state(),
                                first.error
                            );
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    let started = Instant::now();
                    let cancelled = orchestrator.emergency_stop().await;
                    total += started.elapsed();
                    assert_eq!(cancelled.len(), RUNNING);
                    assert_eq!(sleeping_children(), 0);
                    orchestrator.resume().unwrap();
                }
                total
            })
        });
    });
    group.bench_function("tokio_kill_and_reap_32_children", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let mut children: Vec<tokio::process::Child> = (0..RUNNING)
                        .map(|_| {
                            tokio::process::Command::new("sleep")
                                .arg("1000")
                                .stdin(Stdio::null())
                                .stdout(Stdio::piped())
                                .stderr(Stdio::piped())
                                .process_group(0)
                                .kill_on_drop(true)
                                .spawn()
                                .unwrap()
                        })
                        .collect();
                    let started = Instant::now();
                    futures::future::join_all(children.iter_mut().map(tokio::process::Child::kill))
                        .await;
                    total += started.elapsed();
                    assert_eq!(sleeping_children(), 0);
                }
                total
            })
        });
    });
    group.finish();
    rt.block_on(async {
        orchestrator.stop(Duration::from_secs(5)).await;
        close(&store).await;
    });
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    if wanted("cycle_overhead") {
        cycle_overhead(&mut criterion);
    }
    if wanted("overhead_ab") {
        overhead_ab();
    }
    if wanted("storage_excluded") || wanted("safety_chain_noop") {
        storage_excluded(&mut criterion);
    }
    if wanted("scaling_full_path")
        || wanted("scaling_full_path_shm")
        || wanted("scaling_run_process")
        || wanted("scaling_bare_process")
        || wanted("scaling_chain")
    {
        scaling(&mut criterion);
    }
    if wanted("emergency_stop_32") {
        emergency_stop(&mut criterion);
    }
    if wanted("e2e_10k_files") || wanted("git_10k_files") || wanted("rollback_10k_files") {
        e2e_and_rollback(&mut criterion);
    }
    criterion.final_summary();
}
