//! Integration tests of the bus and the persistence writer against a real
//! SQLite store in a temporary directory (and a store that never answers).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use orchex_core::{Event, EventKind, HealthLevel, RepoId, Severity, Timestamp};
use orchex_store::{
    EventFilter, EventStore, ExportFormat, ExportStream, Page, PageRequest, SqliteStore,
    StoreFuture, StoreHealth, StoreOptions,
};
use orchex_telemetry::{
    BusConfig, HealthRegistry, LiveFilter, PERSISTENCE_COMPONENT, PersistenceConfig,
    PersistenceWriter, Received, TelemetryBus,
};

fn event(i: usize) -> Event {
    Event::new(EventKind::JobProgress, format!("step {i} done"))
        .with_repo(RepoId::new(if i.is_multiple_of(2) { "api" } else { "web" }).unwrap())
        .with_pipeline("codegen")
        .with_data(serde_json::json!({"step": i}))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_are_persisted_in_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_dir(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let health = HealthRegistry::new();
    let (bus, queue) = TelemetryBus::new(BusConfig::default());
    let writer = PersistenceWriter::spawn(
        queue,
        Arc::new(store.clone()),
        &health,
        PersistenceConfig::default(),
    );
    let sent: Vec<Event> = (0..10_000).map(event).collect();
    for event in &sent {
        assert!(bus.publish(event.clone()));
    }
    bus.flush().await;
    let stats = bus.stats();
    assert_eq!(stats.published, 10_000);
    assert_eq!(stats.persisted, 10_000);
    assert_eq!(bus.dropped(), 0);
    assert_eq!(
        store.count_events(EventFilter::new()).await.unwrap(),
        10_000
    );
    let page = store
        .query_events(EventFilter::new(), PageRequest::first().limit(10_000))
        .await
        .unwrap();
    let mut expected = sent;
    expected.reverse();
    assert_eq!(page.items, expected);
    assert_eq!(
        health.get(PERSISTENCE_COMPONENT).unwrap().status,
        HealthLevel::Ok
    );

    // After shutdown, publishing still returns at once; events are counted
    // as dropped.
    writer.shutdown().await;
    assert!(!bus.publish(event(0)));
    assert_eq!(bus.dropped(), 1);
    bus.flush().await; // returns: the writer is gone
    store.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_event_is_persisted_within_the_linger_time() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_dir(dir.path(), StoreOptions::default())
        .await
        .unwrap();
    let (bus, queue) = TelemetryBus::new(BusConfig::default());
    let _writer = PersistenceWriter::spawn(
        queue,
        Arc::new(store.clone()),
        &HealthRegistry::new(),
        PersistenceConfig::default().linger(Duration::from_millis(20)),
    );
    bus.publish(event(1));
    let deadline = Instant::now() + Duration::from_secs(5);
    while store.count_events(EventFilter::new()).await.unwrap() == 0 {
        assert!(Instant::now() < deadline, "never persisted");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_degrades_health_and_publishing_goes_on_with_drops_counted() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_dir(dir.path(), StoreOptions::default().max_page_count(80))
        .await
        .unwrap();
    let health = HealthRegistry::new();
    let probe = store.clone();
    health.register_probe("store", move || probe.health());
    let (bus, queue) = TelemetryBus::new(BusConfig::default().queue_capacity(500));
    let writer = PersistenceWriter::spawn(
        queue,
        Arc::new(store.clone()),
        &health,
        PersistenceConfig::default()
            .max_batch(100)
            .linger(Duration::ZERO)
            .retry(Duration::from_millis(5), Duration::from_millis(20), 3),
    );

    let started = Instant::now();
    let mut published = 0u64;
    let mut degraded = None;
    while started.elapsed() < Duration::from_secs(20) {
        for i in 0..200 {
            bus.publish(
                Event::new(
                    EventKind::JobProgress,
                    format!("{i} {}", "padding ".repeat(30)),
                )
                .with_severity(Severity::Info),
            );
            published += 1;
        }
        // The writer's health follows its latest batch: a small batch may
        // still fit in the pages a failed one freed and mark it ok again,
        // so the degraded state is observed here, when it holds.
        let snapshot = health.snapshot();
        if bus.stats().dropped_store_failure > 0
            && snapshot.checks["store"].status == HealthLevel::Degraded
            && snapshot.checks[PERSISTENCE_COMPONENT].status == HealthLevel::Degraded
        {
            degraded = Some(snapshot);
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let snapshot = degraded.expect("the store and the writer never reported degraded together");
    assert_eq!(snapshot.status, HealthLevel::Degraded, "{snapshot:?}");
    let store_health = &snapshot.checks["store"];
    assert_eq!(store_health.status, HealthLevel::Degraded);
    assert!(
        store_health.reason.as_deref().unwrap().contains("full"),
        "{store_health:?}"
    );
    let writer_health = &snapshot.checks[PERSISTENCE_COMPONENT];
    assert_eq!(writer_health.status, HealthLevel::Degraded);
    assert!(
        writer_health.reason.as_deref().unwrap().contains("full"),
        "{writer_health:?}"
    );
    assert!(bus.stats().dropped_store_failure > 0);

    // Every event is accounted for: persisted or counted as dropped.
    bus.flush().await;
    let stats = bus.stats();
    assert_eq!(stats.published, published);
    assert_eq!(stats.persisted + stats.dropped(), published, "{stats:?}");
    assert_eq!(
        store.count_events(EventFilter::new()).await.unwrap(),
        stats.persisted
    );

    // Space comes back: the writer recovers and reports ok.
    store
        .purge_events_before(Timestamp::now() + jiff::SignedDuration::from_secs(60))
        .await
        .unwrap();
    bus.publish(event(1));
    bus.flush().await;
    assert_eq!(
        health.get(PERSISTENCE_COMPONENT).unwrap().status,
        HealthLevel::Ok
    );
    assert_eq!(health.snapshot().status, HealthLevel::Ok);
    writer.shutdown().await;
}

/// A store whose appends never complete: the writer is stuck forever.
#[derive(Debug)]
struct StuckStore;

impl EventStore for StuckStore {
    fn append_events(&self, _events: Vec<Arc<Event>>) -> StoreFuture<'_, ()> {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_never_waits_for_a_stuck_writer() {
    let (bus, queue) = TelemetryBus::new(BusConfig::default().queue_capacity(1000));
    let _writer = PersistenceWriter::spawn(
        queue,
        Arc::new(StuckStore),
        &HealthRegistry::new(),
        PersistenceConfig::default()
            .linger(Duration::ZERO)
            .max_batch(1000)
            .max_in_flight(4),
    );
    let mut live = bus.subscribe(LiveFilter::all().kind(EventKind::Error));
    for i in 0..100_000 {
        bus.publish(event(i));
    }
    // Reaching this line is the point: no publish waited for the writer.
    bus.publish(Event::new(EventKind::Error, "still delivered live"));
    let stats = bus.stats();
    assert_eq!(stats.published, 100_001);
    // At most four batches are stuck in the store and the queue is full;
    // everything else was dropped and counted.
    assert!(stats.queued <= 1000 + 4 * 1000, "{stats:?}");
    assert_eq!(
        stats.dropped_queue_full,
        stats.published - stats.queued,
        "{stats:?}"
    );
    assert_eq!(bus.dropped(), stats.dropped_queue_full);
    // The subscriber fell behind by far: it is told so, then gets the
    // matching event.
    match live.recv().await {
        Some(Received::Lagged(missed)) => assert!(missed > 90_000, "{missed}"),
        other => panic!("{other:?}"),
    }
    match live.recv().await {
        Some(Received::Event(event)) => assert_eq!(event.message, "still delivered live"),
        other => panic!("{other:?}"),
    }
    // A flush with a stuck writer does not return; give up after a moment.
    let flushed = tokio::time::timeout(Duration::from_millis(100), bus.flush()).await;
    assert!(flushed.is_err());
}

#[tokio::test]
async fn subscriptions_are_streams() {
    use futures::StreamExt;
    let bus = TelemetryBus::live_only(BusConfig::default());
    let api = RepoId::new("api").unwrap();
    let stream = bus
        .subscribe(LiveFilter::all().repo(api.clone()))
        .into_stream();
    bus.publish(event(0)); // api
    bus.publish(event(1)); // web
    bus.publish(event(2)); // api
    drop(bus);
    let received: Vec<Received> = stream.collect().await;
    assert_eq!(received.len(), 2);
    for item in received {
        let Received::Event(event) = item else {
            panic!("lagged")
        };
        assert_eq!(event.repo.as_ref(), Some(&api));
    }
}

// Object safety: the orchestrator and the dashboard hold the store this way.
#[allow(dead_code)]
fn object_safe(store: SqliteStore) -> Arc<dyn orchex_store::Store> {
    Arc::new(store)
}

#[allow(dead_code)]
fn assert_send<T: Send + Sync>() {}

#[allow(dead_code)]
fn handles_are_send_and_sync() {
    assert_send::<TelemetryBus>();
    assert_send::<HealthRegistry>();
    assert_send::<orchex_telemetry::MetricsHandle>();
    let _: Option<Pin<Box<dyn Future<Output = ()> + Send>>> = None;
}
