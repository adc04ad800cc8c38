//! The `/metrics` exposition of a real recorder, with every metric recorded
//! at least once, passes `promtool check metrics`.
//!
//! This file installs the process-wide recorder, so it is its own test
//! binary. It needs `promtool` (Debian package `prometheus`); without it the
//! test fails and says so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use orchex_core::{Event, EventKind, JobState, RepoId};
use orchex_store::{SqliteStore, StoreOptions};
use orchex_telemetry::metrics::{self, BreakerState, CallOutcome, names};
use orchex_telemetry::{
    BusConfig, HealthRegistry, PersistenceConfig, PersistenceWriter, TelemetryBus,
    install_prometheus,
};

const ALL_METRICS: &[&str] = &[
    names::JOBS_TOTAL,
    names::JOB_DURATION_SECONDS,
    names::JOBS_RUNNING,
    names::QUEUE_DEPTH,
    names::CYCLES_TOTAL,
    names::CYCLE_DURATION_SECONDS,
    names::CONCURRENCY_LIMIT,
    names::CHANGES_DETECTED_TOTAL,
    names::ANALYSIS_DURATION_SECONDS,
    names::ANALYSIS_CACHE_HITS_TOTAL,
    names::ANALYSIS_CACHE_MISSES_TOTAL,
    names::REPOSITORY_HEALTH_SCORE,
    names::REPOSITORY_CHAOS_SCORE,
    names::REPOSITORY_COMPLEXITY_SCORE,
    names::CIRCUIT_BREAKER_STATE,
    names::CIRCUIT_BREAKER_CALLS_TOTAL,
    names::RATE_LIMITER_REJECTIONS_TOTAL,
    names::EVENTS_TOTAL,
    names::TELEMETRY_EVENTS_DROPPED_TOTAL,
    names::TELEMETRY_EVENTS_PERSISTED_TOTAL,
    names::TELEMETRY_STORE_ERRORS_TOTAL,
    names::TELEMETRY_QUEUE_LENGTH,
    "process_resident_memory_bytes",
    "process_cpu_seconds_total",
    "process_open_fds",
];

fn promtool_check(exposition: &str) -> (bool, String) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => panic!(
            "promtool is not installed: install Debian's `prometheus` package \
             (`apt-get install prometheus`) to run this test"
        ),
        Err(err) => panic!("cannot run promtool: {err}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_exposition_holds_every_metric_and_passes_promtool() {
    let handle = install_prometheus().unwrap();
    // Installing again returns the same recorder.
    let again = install_prometheus().unwrap();
    let upkeep = handle.spawn_upkeep(Duration::from_millis(100));

    // Record every metric of PRODUCT.md §10 at least once.
    let repo = RepoId::new("api").unwrap();
    metrics::job_finished(
        &repo,
        "codegen",
        JobState::Succeeded,
        Duration::from_secs(3),
    );
    metrics::job_finished(
        &repo,
        "codegen",
        JobState::TimedOut,
        Duration::from_secs(900),
    );
    metrics::set_jobs_running(2);
    metrics::set_queue_depth(5);
    metrics::cycle_completed(Duration::from_millis(250));
    metrics::set_concurrency_limit(4);
    metrics::changes_detected(&repo, 12);
    metrics::analysis_completed(Duration::from_millis(40));
    metrics::analysis_cache_hit();
    metrics::analysis_cache_miss();
    metrics::set_repository_scores(&repo, 0.8, 0.3, 0.45);
    metrics::set_circuit_breaker_state("api/codegen", BreakerState::HalfOpen);
    metrics::circuit_breaker_call("api/codegen", CallOutcome::Success);
    metrics::circuit_breaker_call("api/codegen", CallOutcome::Rejected);
    metrics::rate_limiter_rejection("api");

    // The bus counts events and drops; the writer counts what it persists.
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_dir(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let (bus, queue) = TelemetryBus::new(BusConfig::default().queue_capacity(10));
    for i in 0..20 {
        bus.publish(Event::new(EventKind::JobQueued, format!("{i}")));
    }
    assert_eq!(bus.dropped(), 10);
    let writer = PersistenceWriter::spawn(
        queue,
        Arc::new(store.clone()),
        &HealthRegistry::new(),
        PersistenceConfig::default(),
    );
    // The writer drains the 10 queued events; then there is room again.
    bus.flush().await;
    assert!(bus.publish(Event::new(EventKind::CircuitStateChanged, "half-open")));
    bus.flush().await;

    handle.run_upkeep();
    let text = again.render();
    for name in ALL_METRICS {
        assert!(
            text.lines().any(|line| line.starts_with(name)),
            "{name} missing from:\n{text}"
        );
        assert!(
            text.contains(&format!("# HELP {name} ")) || name.starts_with("process_"),
            "{name} has no help text"
        );
    }
    assert!(
        text.contains("orchex_telemetry_events_dropped_total 10"),
        "{text}"
    );
    assert!(
        text.contains(r#"orchex_events_total{kind="job_queued"} 20"#),
        "{text}"
    );
    assert!(
        text.contains(r#"orchex_jobs_total{repo="api",pipeline="codegen",outcome="succeeded"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"orchex_circuit_breaker_state{name="api/codegen"} 2"#),
        "{text}"
    );
    // Explicit buckets: a real histogram, not a summary.
    assert!(
        text.contains("# TYPE orchex_job_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains(r#"orchex_job_duration_seconds_bucket{pipeline="codegen",le="3600"} 2"#),
        "{text}"
    );
    assert!(
        text.contains("# TYPE orchex_cycle_duration_seconds histogram"),
        "{text}"
    );
    assert!(
        text.contains("# TYPE orchex_analysis_duration_seconds histogram"),
        "{text}"
    );

    let (ok, report) = promtool_check(&text);
    assert!(
        ok,
        "promtool check metrics failed:\n{report}\n--- exposition ---\n{text}"
    );
    assert!(report.trim().is_empty(), "promtool has remarks:\n{report}");

    writer.shutdown().await;
    upkeep.abort();
    store.close().await.unwrap();
}
