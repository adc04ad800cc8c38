//! Benchmarks of orchex-store (and the bus in front of it), each next to the
//! reference a user would otherwise pick, in the same run:
//!
//! - `ingest`: events through `TelemetryBus::publish` → persistence writer →
//!   SQLite writer thread, in events per second, next to a raw rusqlite loop
//!   inserting the same rows with the same statement in one transaction
//!   (the practical ceiling), and next to `EventStore::append_events`
//!   called directly.
//! - `query_1m`: a filtered query (kind + time range, limit 100) over one
//!   million stored events, through the store's async API and as the same
//!   SQL on a raw connection; p50/p95/p99 over 1000 random queries are
//!   printed as well.
//! - `export_1m`: a CSV export of one million events through the streamed
//!   export (chunks discarded), with the growth of the peak resident memory
//!   printed.
//!
//! Before the criterion groups, `ingest side by side` alternates raw-loop
//! and bus batches (8 rounds of 50 000) and prints the median rates and
//! their ratio: on a shared machine this ratio is steadier than the one
//! between two criterion runs taken a minute apart.
//!
//! Run: `cargo bench -p orchex-benches --bench store -- --warm-up-time 1 --measurement-time 3`

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    // Benchmark arithmetic on small counts and durations.
    clippy::cast_possible_truncation,
    clippy::cast_possible_wrap,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)]

use std::hint::black_box;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use futures::StreamExt;
use orchex_core::{Event, EventKind, JobId, RepoId, Severity, Timestamp};
use orchex_store::{
    EventFilter, EventStore, ExportFormat, INSERT_EVENT_SQL, PageRequest, SqliteStore,
    StoreOptions, raw_connection_for_benchmarks,
};
use orchex_telemetry::{
    BusConfig, HealthRegistry, PersistenceConfig, PersistenceWriter, TelemetryBus,
};
use rusqlite::params;

const KINDS: [EventKind; 8] = [
    EventKind::JobQueued,
    EventKind::JobStarted,
    EventKind::JobProgress,
    EventKind::JobSucceeded,
    EventKind::JobFailed,
    EventKind::ChangeDetected,
    EventKind::HealthCheck,
    EventKind::CycleCompleted,
];

fn repos() -> &'static [RepoId] {
    static REPOS: OnceLock<Vec<RepoId>> = OnceLock::new();
    REPOS.get_or_init(|| {
        (0..16)
            .map(|i| RepoId::new(format!("repo-{i}")).unwrap())
            .collect()
    })
}

/// A realistic event: most have a repo and pipeline, some a job and data.
fn event(i: u64, ts: Timestamp) -> Event {
    let kind = KINDS[(i % KINDS.len() as u64) as usize];
    let mut event = Event::new(
        kind,
        format!("event {i}: pipeline step finished in {} ms", i % 997),
    )
    .with_repo(repos()[(i % 16) as usize].clone())
    .with_pipeline(if i.is_multiple_of(3) {
        "codegen"
    } else {
        "fmt"
    });
    event.ts = ts;
    if i.is_multiple_of(4) {
        event = event.with_job(JobId::new());
    }
    if i.is_multiple_of(5) {
        event = event.with_data(serde_json::json!({"step": i % 7, "exitCode": 0}));
    }
    if i.is_multiple_of(50) {
        event = event.with_severity(Severity::Error);
    }
    event
}

fn events(n: u64) -> Vec<Event> {
    let now = Timestamp::now();
    (0..n).map(|i| event(i, now)).collect()
}

/// The raw loop: the same rows, the same statement, one transaction.
fn raw_insert(conn: &mut rusqlite::Connection, events: &[Event]) {
    let tx = conn.transaction().unwrap();
    {
        let mut stmt = tx.prepare_cached(INSERT_EVENT_SQL).unwrap();
        for event in events {
            let data = (!event.data.is_null()).then(|| serde_json::to_string(&event.data).unwrap());
            stmt.execute(params![
                &event.id.as_uuid().as_bytes()[..],
                i64::try_from(event.ts.as_nanosecond()).unwrap(),
                event.kind.as_str(),
                match event.severity {
                    Severity::Info => 0,
                    Severity::Warn => 1,
                    Severity::Error => 2,
                    Severity::Critical => 3,
                },
                event.repo.as_ref().map(RepoId::as_str),
                event.pipeline.as_deref(),
                event
                    .job_id
                    .as_ref()
                    .map(|job| &job.as_uuid().as_bytes()[..]),
                event.message,
                data,
            ])
            .unwrap();
        }
    }
    tx.commit().unwrap();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

const INGEST_BATCH: u64 = 50_000;

fn ingest(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("ingest");
    group
        .throughput(Throughput::Elements(INGEST_BATCH))
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat);

    // The ceiling: a hand-written rusqlite loop, one transaction, on a
    // connection set up the way a user would (WAL, synchronous = NORMAL,
    // SQLite's defaults otherwise: 2 MiB cache, checkpoint every 1000
    // pages, inline).
    let raw_dir = tempfile::tempdir().unwrap();
    let raw_path = raw_dir.path().join("raw.sqlite3");
    drop(raw_connection_for_benchmarks(&raw_path).unwrap());
    let mut conn = rusqlite::Connection::open(&raw_path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .unwrap();
    group.bench_function("raw_rusqlite_one_transaction", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batch = events(INGEST_BATCH);
                let started = Instant::now();
                raw_insert(&mut conn, &batch);
                total += started.elapsed();
            }
            total
        });
    });
    drop(conn);

    // The same loop on a connection tuned like the store's writer (16 MiB
    // cache, checkpoints left to a background thread): the store's own
    // ceiling on this machine.
    let tuned_dir = tempfile::tempdir().unwrap();
    let mut conn = raw_connection_for_benchmarks(&tuned_dir.path().join("raw.sqlite3")).unwrap();
    group.bench_function("raw_rusqlite_one_transaction_tuned", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batch = events(INGEST_BATCH);
                let started = Instant::now();
                raw_insert(&mut conn, &batch);
                total += started.elapsed();
            }
            total
        });
    });
    drop(conn);
    drop(tuned_dir);

    // The store's own batch API, 1000 events per call, awaited in turn.
    let direct_dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(SqliteStore::open_in_dir(
            direct_dir.path(),
            StoreOptions::default(),
        ))
        .unwrap();
    group.bench_function("store_append_events_1000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batch: Vec<Arc<Event>> =
                    events(INGEST_BATCH).into_iter().map(Arc::new).collect();
                let started = Instant::now();
                rt.block_on(async {
                    for chunk in batch.chunks(1000) {
                        store.append_events(chunk.to_vec()).await.unwrap();
                    }
                });
                total += started.elapsed();
            }
            total
        });
    });
    rt.block_on(store.close()).unwrap();

    // The product path: publish on the bus, the writer batches into SQLite;
    // timed until every event is durable.
    let bus_dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(SqliteStore::open_in_dir(
            bus_dir.path(),
            StoreOptions::default(),
        ))
        .unwrap();
    let (bus, writer) = rt.block_on(async {
        let (bus, queue) = TelemetryBus::new(BusConfig::default().queue_capacity(1 << 20));
        let writer = PersistenceWriter::spawn(
            queue,
            Arc::new(store.clone()),
            &HealthRegistry::new(),
            PersistenceConfig::default(),
        );
        (bus, writer)
    });
    group.bench_function("bus_publish_to_sqlite", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let batch = events(INGEST_BATCH);
                let started = Instant::now();
                rt.block_on(async {
                    for event in batch {
                        bus.publish(event);
                    }
                    bus.flush().await;
                });
                total += started.elapsed();
            }
            total
        });
    });
    assert_eq!(bus.dropped(), 0, "the ingest benchmark dropped events");
    rt.block_on(async {
        writer.shutdown().await;
        store.close().await.unwrap();
    });
    group.finish();
}

/// Raw loop and bus, alternated batch by batch on fresh databases, so that
/// a change in the machine's load hits both alike; prints each one's median
/// rate and the ratio of the medians.
fn ingest_side_by_side() {
    const ROUNDS: usize = 8;
    let rt = runtime();
    let raw_dir = tempfile::tempdir().unwrap();
    let raw_path = raw_dir.path().join("raw.sqlite3");
    drop(raw_connection_for_benchmarks(&raw_path).unwrap());
    let mut conn = rusqlite::Connection::open(&raw_path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;")
        .unwrap();
    let bus_dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(SqliteStore::open_in_dir(
            bus_dir.path(),
            StoreOptions::default(),
        ))
        .unwrap();
    let (bus, writer) = rt.block_on(async {
        let (bus, queue) = TelemetryBus::new(BusConfig::default().queue_capacity(1 << 20));
        let writer = PersistenceWriter::spawn(
            queue,
            Arc::new(store.clone()),
            &HealthRegistry::new(),
            PersistenceConfig::default(),
        );
        (bus, writer)
    });
    let mut raw_rates = Vec::new();
    let mut bus_rates = Vec::new();
    for _ in 0..ROUNDS {
        let batch = events(INGEST_BATCH);
        let started = Instant::now();
        raw_insert(&mut conn, &batch);
        raw_rates.push(INGEST_BATCH as f64 / started.elapsed().as_secs_f64());
        let batch = events(INGEST_BATCH);
        let started = Instant::now();
        rt.block_on(async {
            for event in batch {
                bus.publish(event);
            }
            bus.flush().await;
        });
        bus_rates.push(INGEST_BATCH as f64 / started.elapsed().as_secs_f64());
    }
    assert_eq!(bus.dropped(), 0);
    let median = |rates: &mut Vec<f64>| {
        rates.sort_by(f64::total_cmp);
        f64::midpoint(rates[ROUNDS / 2 - 1], rates[ROUNDS / 2])
    };
    let raw = median(&mut raw_rates);
    let via_bus = median(&mut bus_rates);
    eprintln!(
        "ingest side by side ({ROUNDS} alternating rounds of {INGEST_BATCH}): raw loop median {raw:.0} events/s, \
         bus to SQLite median {via_bus:.0} events/s, ratio {:.2} (raw min {:.0} max {:.0}; bus min {:.0} max {:.0})",
        via_bus / raw,
        raw_rates[0],
        raw_rates[ROUNDS - 1],
        bus_rates[0],
        bus_rates[ROUNDS - 1],
    );
    rt.block_on(async {
        writer.shutdown().await;
        store.close().await.unwrap();
    });
}

const MILLION: u64 = 1_000_000;

/// A database of one million events over the last 10 days, built once per
/// run (about 5 s).
static MILLION_DB: Mutex<Option<(tempfile::TempDir, PathBuf)>> = Mutex::new(None);

fn million_db() -> PathBuf {
    let mut db = MILLION_DB.lock().unwrap();
    if let Some((_, path)) = &*db {
        return path.clone();
    }
    let built = {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(orchex_store::DB_FILE_NAME);
        let started = Instant::now();
        let mut conn = raw_connection_for_benchmarks(&path).unwrap();
        let now = Timestamp::now();
        let span_ns = 10 * 86_400 * 1_000_000_000_i64;
        let step = span_ns / MILLION as i64;
        for chunk in 0..(MILLION / 100_000) {
            let batch: Vec<Event> = (0..100_000)
                .map(|i| {
                    let n = chunk * 100_000 + i;
                    let age = span_ns - step * n as i64;
                    let ts = now
                        .checked_sub(jiff::SignedDuration::from_nanos(age))
                        .unwrap();
                    event(n, ts)
                })
                .collect();
            raw_insert(&mut conn, &batch);
        }
        conn.execute_batch(
            "PRAGMA optimize; UPDATE meta SET value = '1' WHERE key = 'clean_shutdown';",
        )
        .unwrap();
        drop(conn);
        eprintln!("built a 1M-event database in {:?}", started.elapsed());
        (dir, path)
    };
    let path = built.1.clone();
    *db = Some(built);
    path
}

fn random_query(rng: &mut fastrand::Rng) -> EventFilter {
    let now = Timestamp::now();
    let kind = KINDS[rng.usize(..KINDS.len())];
    let end_age_h = rng.i64(0..240);
    let width_h = rng.i64(1..48);
    let until = now
        .checked_sub(jiff::SignedDuration::from_hours(end_age_h))
        .unwrap();
    let since = until
        .checked_sub(jiff::SignedDuration::from_hours(width_h))
        .unwrap();
    EventFilter::new().kind(kind).since(since).until(until)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn query_1m(c: &mut Criterion) {
    let path = million_db();
    let rt = runtime();
    let store = rt
        .block_on(SqliteStore::open(&path, StoreOptions::default()))
        .unwrap();

    // Latency distribution over 1000 random (kind, time range) queries.
    let mut rng = fastrand::Rng::with_seed(7);
    let mut latencies = Vec::with_capacity(1000);
    let mut returned = 0usize;
    for _ in 0..1000 {
        let filter = random_query(&mut rng);
        let started = Instant::now();
        let page = rt
            .block_on(store.query_events(filter, PageRequest::first().limit(100)))
            .unwrap();
        latencies.push(started.elapsed());
        returned += page.items.len();
    }
    latencies.sort();
    eprintln!(
        "query_1m kind+range limit 100 over 1000 random queries: p50 {:?}, p95 {:?}, p99 {:?}, max {:?} (avg {} rows)",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.95),
        percentile(&latencies, 0.99),
        latencies.last().unwrap(),
        returned / 1000
    );

    let mut group = c.benchmark_group("query_1m");
    group.bench_function("store_kind_time_range_limit_100", |b| {
        let mut rng = fastrand::Rng::with_seed(11);
        b.iter(|| {
            let filter = random_query(&mut rng);
            black_box(
                rt.block_on(store.query_events(filter, PageRequest::first().limit(100)))
                    .unwrap(),
            )
        });
    });
    group.bench_function("store_repo_min_severity_limit_100", |b| {
        let mut rng = fastrand::Rng::with_seed(13);
        b.iter(|| {
            let repo = repos()[rng.usize(..16)].clone();
            let filter = EventFilter::new().repo(repo).min_severity(Severity::Warn);
            black_box(
                rt.block_on(store.query_events(filter, PageRequest::first().limit(100)))
                    .unwrap(),
            )
        });
    });
    // The same SQL on a raw connection: the cost of SQLite alone.
    let raw = rusqlite::Connection::open(&path).unwrap();
    group.bench_function("raw_rusqlite_kind_time_range_limit_100", |b| {
        let mut rng = fastrand::Rng::with_seed(11);
        let mut stmt = raw
            .prepare(
                "SELECT seq, id, ts, kind, severity, repo, pipeline, job_id, message, data \
                 FROM events WHERE kind = ?1 AND ts >= ?2 AND ts < ?3 \
                 ORDER BY ts DESC, seq DESC LIMIT 101",
            )
            .unwrap();
        b.iter(|| {
            let filter = random_query(&mut rng);
            let since = i64::try_from(filter.since.unwrap().as_nanosecond()).unwrap();
            let until = i64::try_from(filter.until.unwrap().as_nanosecond()).unwrap();
            let rows: Vec<(i64, Vec<u8>, String)> = stmt
                .query_map(params![filter.kinds[0].as_str(), since, until], |row| {
                    Ok((row.get(0)?, row.get(1)?, row.get(8)?))
                })
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
            black_box(rows)
        });
    });
    group.finish();
    rt.block_on(store.close()).unwrap();
}

/// A field of `/proc/self/status`, in KiB.
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

fn export_1m(c: &mut Criterion) {
    let path = million_db();
    let rt = runtime();
    let store = rt
        .block_on(SqliteStore::open(&path, StoreOptions::default()))
        .unwrap();
    let export = |store: &SqliteStore| {
        rt.block_on(async {
            let mut stream = store.export_events(EventFilter::new(), ExportFormat::Csv, None);
            let mut bytes = 0usize;
            while let Some(chunk) = stream.next().await {
                bytes += chunk.unwrap().len();
            }
            bytes
        })
    };

    // One measured run for memory: growth of the peak RSS over the export.
    let before = status_kib("VmRSS:");
    reset_peak_rss();
    let started = Instant::now();
    let bytes = export(&store);
    let elapsed = started.elapsed();
    let peak = status_kib("VmHWM:");
    eprintln!(
        "export_1m csv: {} bytes in {:?} ({:.0} rows/s); RSS before {} KiB, peak during {} KiB, growth {} KiB",
        bytes,
        elapsed,
        MILLION as f64 / elapsed.as_secs_f64(),
        before,
        peak,
        peak.saturating_sub(before)
    );

    let mut group = c.benchmark_group("export_1m");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .throughput(Throughput::Elements(MILLION));
    group.bench_function("store_csv_stream", |b| {
        b.iter(|| black_box(export(&store)));
    });
    group.finish();
    rt.block_on(store.close()).unwrap();
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    ingest_side_by_side();
    ingest(&mut criterion);
    query_1m(&mut criterion);
    export_1m(&mut criterion);
    criterion.final_summary();
    // Statics are never dropped: remove the 1M-event database ourselves.
    drop(MILLION_DB.lock().unwrap().take());
}
