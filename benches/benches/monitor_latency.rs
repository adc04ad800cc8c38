//! Latency from a file write to the monitor's `fileChange` trigger (settle
//! set to 0), next to the raw notify event for the same write.
//!
//! A raw notify watcher and an `orchex-monitor` watch the same directory at
//! the same time. For each write the harness records when the raw watcher's
//! thread received the first event naming the file and when the trigger
//! naming it came out of the monitor's stream; the difference is the
//! monitor's overhead (filtering, snapshot update, settling, channels).
//!
//! `cargo bench -p orchex-benches --bench monitor_latency`
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use notify::Watcher;
use orchex_core::TriggerKind;

const WRITES: usize = 500;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("monitor_latency: bench");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let status = std::process::Command::new("git")
        .args(["init", "-q"])
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::create_dir(root.join("w")).unwrap();

    // The raw notify watcher: records the first event per path.
    let raw_seen: Arc<Mutex<HashMap<PathBuf, Instant>>> = Arc::default();
    let raw_sink = Arc::clone(&raw_seen);
    let mut raw = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let now = Instant::now();
        if let Ok(event) = event {
            let mut seen = raw_sink.lock().unwrap();
            for path in event.paths {
                seen.entry(path).or_insert(now);
            }
        }
    })
    .unwrap();
    raw.watch(&root.join("w"), notify::RecursiveMode::NonRecursive)
        .unwrap();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (overheads, totals, raws) = runtime.block_on(async {
        let mut config = orchex_core::config::MonitorConfig::default();
        config.filesystem.debounce_ms = 0;
        config.filesystem.max_wait_ms = 0;
        config.triggers.min_changes_threshold = 1;
        let (monitor, mut triggers) = orchex_monitor::Monitor::with_options(
            &config,
            &orchex_core::config::ThresholdsConfig::default(),
            orchex_monitor::MonitorOptions {
                analyse_on_commit: false,
                ..orchex_monitor::MonitorOptions::default()
            },
        );
        monitor
            .add_repository(orchex_core::Repository {
                name: orchex_core::RepoId::new("latency").unwrap(),
                path: root.clone(),
                enabled: true,
                branch: None,
            })
            .await
            .unwrap();
        let mut overheads = Vec::with_capacity(WRITES);
        let mut totals = Vec::with_capacity(WRITES);
        let mut raws = Vec::with_capacity(WRITES);
        for i in 0..WRITES + 20 {
            let rel = format!("w/f{i}.txt");
            let path = root.join(&rel);
            let written = Instant::now();
            std::fs::write(&path, b"x").unwrap();
            let triggered = loop {
                let trigger = tokio::time::timeout(Duration::from_secs(10), triggers.next())
                    .await
                    .expect("trigger")
                    .expect("stream");
                if trigger.kind == TriggerKind::FileChange && trigger.paths.contains(&rel) {
                    break Instant::now();
                }
            };
            // The raw event arrived before the trigger (same inotify event).
            let raw_at = loop {
                if let Some(at) = raw_seen.lock().unwrap().get(&path).copied() {
                    break at;
                }
                tokio::task::yield_now().await;
            };
            // Let the rest of this write's events (modify, close) drain.
            tokio::time::sleep(Duration::from_millis(2)).await;
            while let Ok(Some(_)) =
                tokio::time::timeout(Duration::from_millis(1), triggers.next()).await
            {}
            if i >= 20 {
                overheads.push(triggered.saturating_duration_since(raw_at));
                totals.push(triggered - written);
                raws.push(raw_at.saturating_duration_since(written));
            }
        }
        monitor.shutdown().await;
        (overheads, totals, raws)
    });
    drop(raw);
    let report = |name: &str, mut samples: Vec<Duration>| {
        samples.sort();
        println!(
            "{name:<32} p50 {:>8.1} µs   p95 {:>8.1} µs   p99 {:>8.1} µs   max {:>8.1} µs",
            micros(percentile(&samples, 0.5)),
            micros(percentile(&samples, 0.95)),
            micros(percentile(&samples, 0.99)),
            micros(*samples.last().unwrap()),
        );
        percentile(&samples, 0.95)
    };
    println!("{WRITES} writes (after 20 warm-up writes), settle 0 ms, one file each");
    report("write -> raw notify event", raws);
    report("write -> orchex trigger", totals);
    let p95 = report("overhead (trigger - raw event)", overheads);
    println!(
        "overhead p95 = {:.3} ms (goal <= 2 ms): {}",
        p95.as_secs_f64() * 1e3,
        if p95 <= Duration::from_millis(2) {
            "met"
        } else {
            "missed"
        }
    );
}
