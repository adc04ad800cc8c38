//! Memory harness for orchex-orchestrator (not criterion: one measured run
//! in a process of its own, so that no other benchmark's peak pollutes the
//! figures).
//!
//! Queues `ORCHEX_BENCH_SIZE_JOBS` jobs (default 100 000) through
//! `Orchestrator::submit` — routing, coalescing lookup, and the insert that
//! checks the capacity (`insert_job_bounded`) into a real `SqliteStore` — as
//! `REPOS` repositories × pipelines, then starts the orchestrator and waits
//! for the single cycle that takes them all. With `rateLimitPerHour = 1` only the first job of each
//! repository runs (checkout of a tiny repository and `true`); every other
//! job is claimed, refused by the rate limiter and recorded as `skipped`
//! without a checkout. Prints the resident memory (VmRSS) and its peak
//! (VmHWM) before queueing, after queueing and over the cycle, and the
//! queueing and cycle times, and with the queue full the mean time of
//! `queue_depth()` (the store's counter) next to a `COUNT` of the queued jobs
//! (`count_jobs`). Events go to a sink that counts and drops them (the
//! daemon's telemetry bus and its persistence are not included).
//!
//! Run: `cargo bench -p orchex-benches --bench orchestrator_size`
//! (`ORCHEX_BENCH_SIZE_JOBS=10000` for a quicker run).

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
#![allow(clippy::cast_precision_loss)]

use std::io::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use orchex_core::config::Config;
use orchex_core::{
    Delivery, EventKind, JobState, Pipeline, RepoId, Repository, Step, Trigger, TriggerKind,
};
use orchex_orchestrator::{Events, Orchestrator, OrchestratorDeps};
use orchex_store::{JobFilter, JobStore, SqliteStore, StoreOptions};
use tokio::sync::watch;

const REPOS: usize = 100;
/// Concurrent `submit` calls while queueing.
const SUBMITTERS: usize = 8;
/// Calls averaged for each queue-depth figure.
const DEPTH_CALLS: u32 = 100;

fn git(dir: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Bench")
        .env("GIT_AUTHOR_EMAIL", "bench@example.com")
        .env("GIT_COMMITTER_NAME", "Bench")
        .env("GIT_COMMITTER_EMAIL", "bench@example.com")
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?} failed");
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .unwrap_or(0)
}

/// Resets the peak (`VmHWM`) to the current resident size.
fn reset_peak_rss() {
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/self/clear_refs")
        .and_then(|mut file| file.write_all(b"5"));
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() {
    let jobs: usize = std::env::var("ORCHEX_BENCH_SIZE_JOBS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let pipelines = jobs.div_ceil(REPOS);
    let jobs = pipelines * REPOS;
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("tiny");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    std::fs::write(repo.join("README.md"), "hello\n").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "initial"]);

    let mut config = Config::default();
    config.orchestrator.max_concurrent = 8;
    config.orchestrator.adaptive_optimization = false;
    config.orchestrator.queue_capacity = jobs + 1;
    config.optimizer.schedule.enabled = false;
    config.optimizer.safety.rate_limit_per_hour = 1;
    for r in 0..REPOS {
        config.repositories.push(Repository {
            name: RepoId::new(format!("r{r:03}")).unwrap(),
            path: repo.clone(),
            enabled: true,
            branch: Some("main".into()),
        });
    }
    for p in 0..pipelines {
        let mut pipeline = Pipeline::new(
            format!("p{p:04}"),
            vec![Step {
                name: "step".into(),
                run: Some(vec!["true".into()]),
                ..Step::default()
            }],
        );
        pipeline.triggers = vec![TriggerKind::Manual];
        pipeline.deliver = Delivery::None;
        config.pipelines.push(pipeline);
    }

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let cycles = Arc::new(watch::Sender::new(0_u64));
        let counts: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
        let (sink_cycles, sink_counts) = (Arc::clone(&cycles), Arc::clone(&counts));
        let events = Events::new(move |event| match event.kind {
            EventKind::CycleCompleted => sink_cycles.send_modify(|n| *n += 1),
            EventKind::JobSucceeded => {
                sink_counts[0].fetch_add(1, Ordering::Relaxed);
            }
            EventKind::JobSkipped => {
                sink_counts[1].fetch_add(1, Ordering::Relaxed);
            }
            EventKind::JobFailed | EventKind::JobCancelled | EventKind::JobTimedOut => {
                sink_counts[2].fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        });
        let data = dir.path().join("data");
        let store = Arc::new(
            SqliteStore::open_in_dir(&data, StoreOptions::default())
                .await
                .unwrap(),
        );
        let orchestrator =
            Orchestrator::new(&config, OrchestratorDeps::new(store.clone(), events, &data))
                .unwrap();
        let rss_empty = status_kib("VmRSS:");

        // Queue every job through submit (routing, coalescing lookup,
        // capacity count, insert), SUBMITTERS at a time.
        let started = Instant::now();
        let mut last = Instant::now();
        let triggers = (0..jobs).map(|i| {
            let mut trigger = Trigger::manual(RepoId::new(format!("r{:03}", i % REPOS)).unwrap());
            trigger.pipeline = Some(format!("p{:04}", i / REPOS));
            trigger
        });
        let mut submitted = futures::stream::iter(triggers)
            .map(|trigger| {
                let orchestrator = orchestrator.clone();
                async move { orchestrator.submit(trigger).await.unwrap().len() }
            })
            .buffer_unordered(SUBMITTERS);
        let mut queued = 0_usize;
        while let Some(n) = submitted.next().await {
            queued += n;
            if queued.is_multiple_of(10_000) {
                eprintln!(
                    "queued {queued}: last 10 000 in {:?}, RSS {:.1} MiB",
                    last.elapsed(),
                    mib(status_kib("VmRSS:"))
                );
                last = Instant::now();
            }
        }
        drop(submitted);
        let queue_time = started.elapsed();
        assert_eq!(queued, jobs);
        let depth = store_depth(&orchestrator).await;
        let rss_queued = status_kib("VmRSS:");
        let hwm_queueing = status_kib("VmHWM:");
        let started = Instant::now();
        for _ in 0..DEPTH_CALLS {
            assert_eq!(store.queue_depth().await.unwrap(), depth);
        }
        let depth_call = started.elapsed() / DEPTH_CALLS;
        let started = Instant::now();
        for _ in 0..DEPTH_CALLS {
            let counted = store
                .count_jobs(JobFilter::new().state(JobState::Queued))
                .await
                .unwrap();
            assert_eq!(counted, depth);
        }
        let count_call = started.elapsed() / DEPTH_CALLS;

        // One cycle over the whole queue.
        reset_peak_rss();
        let rss_before_cycle = status_kib("VmRSS:");
        let mut cycle = cycles.subscribe();
        let started = Instant::now();
        orchestrator.start(futures::stream::pending()).unwrap();
        cycle.wait_for(|n| *n >= 1).await.unwrap();
        let cycle_time = started.elapsed();
        let hwm_cycle = status_kib("VmHWM:");
        let rss_after = status_kib("VmRSS:");
        let stats = orchestrator.stats();
        orchestrator.stop(Duration::from_secs(5)).await;
        store.close().await.unwrap();

        println!("orchestrator_size: {jobs} jobs = {REPOS} repositories x {pipelines} pipelines");
        println!(
            "  queueing: {queue_time:?} ({:.0} submits/s, {SUBMITTERS} concurrent), queue depth {depth}",
            jobs as f64 / queue_time.as_secs_f64()
        );
        println!(
            "  with {depth} queued: queue_depth() {depth_call:?}, COUNT of the queue {count_call:?} (mean of {DEPTH_CALLS})"
        );
        println!(
            "  cycle: {cycle_time:?} ({:.0} jobs/s); succeeded {}, skipped {}, other {}; cycles {}",
            jobs as f64 / cycle_time.as_secs_f64(),
            counts[0].load(Ordering::Relaxed),
            counts[1].load(Ordering::Relaxed),
            counts[2].load(Ordering::Relaxed),
            stats.total_cycles,
        );
        println!(
            "  RSS: empty queue {:.1} MiB; after queueing {:.1} MiB (peak while queueing {:.1} MiB); \
             before the cycle {:.1} MiB, peak during the cycle {:.1} MiB, after {:.1} MiB",
            mib(rss_empty),
            mib(rss_queued),
            mib(hwm_queueing),
            mib(rss_before_cycle),
            mib(hwm_cycle),
            mib(rss_after),
        );
    });
}

async fn store_depth(orchestrator: &Orchestrator) -> u64 {
    orchestrator.snapshot().await.queue_depth
}
