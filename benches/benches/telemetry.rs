//! Benchmarks of orchex-telemetry: the cost of `TelemetryBus::publish` to
//! its caller, next to a bare `tokio::sync::mpsc::try_send` of the same
//! `Arc<Event>` (what a hand-rolled bus would do):
//!
//! - `accepted`: the queue has room; the persistence writer drains into
//!   SQLite between timed chunks;
//! - `saturated_sqlite`: publishing as fast as possible while the writer
//!   persists into SQLite on the other core: the queue fills, and most
//!   publishes take the drop-and-count path while the writer works;
//! - `stuck_writer`: the store never answers; every publish is a drop;
//! - `live_subscriber`: as `accepted`, with a WebSocket-like subscriber
//!   draining the broadcast in a task.
//!
//! Events are built outside the timed sections, in chunks of 10 000.
//!
//! Run: `cargo bench -p orchex-benches --bench telemetry -- --warm-up-time 1 --measurement-time 3`

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use orchex_core::{Event, EventKind, RepoId, Timestamp};
use orchex_store::{
    EventFilter, EventStore, ExportFormat, ExportStream, Page, PageRequest, SqliteStore,
    StoreFuture, StoreOptions,
};
use orchex_telemetry::{
    BusConfig, HealthRegistry, LiveFilter, PersistenceConfig, PersistenceWriter, Received,
    TelemetryBus,
};

const CHUNK: u64 = 10_000;

fn events(n: u64) -> Vec<Event> {
    let repo = RepoId::new("api").unwrap();
    (0..n)
        .map(|i| {
            Event::new(EventKind::JobProgress, format!("step {i} finished"))
                .with_repo(repo.clone())
                .with_pipeline("codegen")
        })
        .collect()
}

/// Times `publish` over `iters` events, chunk by chunk; `between` runs
/// untimed after each chunk.
fn timed_publishes(
    iters: u64,
    mut publish: impl FnMut(Event),
    mut between: impl FnMut(),
) -> Duration {
    let mut total = Duration::ZERO;
    let mut left = iters;
    while left > 0 {
        let n = left.min(CHUNK);
        let chunk = events(n);
        let started = Instant::now();
        for event in chunk {
            publish(event);
        }
        total += started.elapsed();
        left -= n;
        between();
    }
    total
}

/// A store whose appends never complete.
#[derive(Debug)]
struct StuckStore;

impl EventStore for StuckStore {
    fn append_events(&self, _: Vec<Arc<Event>>) -> StoreFuture<'_, ()> {
        Box::pin(std::future::pending())
    }
    fn query_events(&self, _: EventFilter, _: PageRequest) -> StoreFuture<'_, Page<Event>> {
        Box::pin(std::future::pending())
    }
    fn count_events(&self, _: EventFilter) -> StoreFuture<'_, u64> {
        Box::pin(std::future::pending())
    }
    fn purge_events_before(&self, _: Timestamp) -> StoreFuture<'_, u64> {
        Box::pin(std::future::pending())
    }
    fn export_events(&self, _: EventFilter, _: ExportFormat, _: Option<u64>) -> ExportStream {
        ExportStream::failed(orchex_store::StoreError::Closed)
    }
}

fn publish(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("publish");

    // Reference: a bare bounded tokio channel of Arc<Event>, drained by a task.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<Event>>(1 << 20);
    rt.spawn(async move {
        let mut buf = Vec::with_capacity(1000);
        while rx.recv_many(&mut buf, 1000).await > 0 {
            buf.clear();
        }
    });
    group.bench_function("reference_tokio_mpsc_try_send", |b| {
        b.iter_custom(|iters| {
            timed_publishes(
                iters,
                |event| {
                    let _ = black_box(tx.try_send(Arc::new(event)));
                },
                || {},
            )
        });
    });
    drop(tx);

    // The bus, queue with room, real SQLite writer.
    let dir = tempfile::tempdir().unwrap();
    let store = rt
        .block_on(SqliteStore::open_in_dir(
            dir.path(),
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
    group.bench_function("accepted", |b| {
        b.iter_custom(|iters| {
            timed_publishes(
                iters,
                |event| {
                    black_box(bus.publish(event));
                },
                || rt.block_on(bus.flush()),
            )
        });
    });

    // With a live subscriber draining the broadcast.
    let subscription = bus.subscribe(LiveFilter::all());
    let drain = rt.spawn(async move {
        let mut subscription = subscription;
        let mut seen = 0u64;
        while let Some(item) = subscription.recv().await {
            if let Received::Event(_) = item {
                seen += 1;
            }
        }
        seen
    });
    group.bench_function("live_subscriber", |b| {
        b.iter_custom(|iters| {
            timed_publishes(
                iters,
                |event| {
                    black_box(bus.publish(event));
                },
                || rt.block_on(bus.flush()),
            )
        });
    });
    drain.abort();
    rt.block_on(async {
        writer.shutdown().await;
    });

    // Saturated: a 65 536-event queue and a real SQLite writer busy on the
    // other core; publishing never pauses, so the queue stays full.
    let (bus, writer) = rt.block_on(async {
        let (bus, queue) = TelemetryBus::new(BusConfig::default());
        let writer = PersistenceWriter::spawn(
            queue,
            Arc::new(store.clone()),
            &HealthRegistry::new(),
            PersistenceConfig::default(),
        );
        (bus, writer)
    });
    group.bench_function("saturated_sqlite", |b| {
        b.iter_custom(|iters| {
            timed_publishes(
                iters,
                |event| {
                    black_box(bus.publish(event));
                },
                || {},
            )
        });
    });
    let stats = bus.stats();
    eprintln!(
        "saturated_sqlite: {} published, {} queued, {} dropped, {} persisted during the run",
        stats.published,
        stats.queued,
        stats.dropped(),
        stats.persisted
    );
    rt.block_on(async {
        writer.shutdown().await;
        store.close().await.unwrap();
    });

    // Stuck: every publish takes the drop path.
    let (bus, _writer) = rt.block_on(async {
        let (bus, queue) = TelemetryBus::new(BusConfig::default().queue_capacity(1024));
        let writer = PersistenceWriter::spawn(
            queue,
            Arc::new(StuckStore),
            &HealthRegistry::new(),
            PersistenceConfig::default(),
        );
        (bus, writer)
    });
    group.bench_function("stuck_writer", |b| {
        b.iter_custom(|iters| {
            timed_publishes(
                iters,
                |event| {
                    black_box(bus.publish(event));
                },
                || {},
            )
        });
    });
    group.finish();
}

criterion_group!(benches, publish);
criterion_main!(benches);
