//! A full disk (simulated with `PRAGMA max_page_count`): writes fail
//! cleanly, health turns degraded, and recovers once space is freed.

use std::sync::Arc;

use orchex_core::{Event, EventKind, HealthLevel, JobState, Timestamp, TriggerKind};
use orchex_store::{
    EventFilter, EventStore, JobPatch, JobStore, SqliteStore, StoreHealth, StoreOptions,
};

fn batch(n: usize) -> Vec<Arc<Event>> {
    (0..n)
        .map(|i| {
            Arc::new(Event::new(
                EventKind::JobProgress,
                format!("event {i} {}", "padding ".repeat(20)),
            ))
        })
        .collect()
}

#[tokio::test]
async fn writes_fail_cleanly_when_the_disk_is_full_and_health_degrades() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_in_dir(dir.path(), StoreOptions::default().max_page_count(80))
        .await
        .unwrap();
    let job = crate::job("api", "codegen", TriggerKind::Manual, 0);
    store.insert_job(job.clone()).await.unwrap();

    let mut committed = 0u64;
    let err = loop {
        match store.append_events(batch(50)).await {
            Ok(()) => committed += 50,
            Err(err) => break err,
        }
        assert!(committed < 100_000, "the page cap never hit");
    };
    assert!(err.is_full(), "{err}");
    assert!(err.is_storage_failure());
    let health = store.health();
    assert_eq!(health.status, HealthLevel::Degraded);
    assert!(
        health
            .reason
            .as_deref()
            .unwrap_or_default()
            .contains("full"),
        "{health:?}"
    );
    assert!(store.write_failures() >= 1);

    // Reads still work and hold every committed event.
    assert_eq!(
        store.count_events(EventFilter::new()).await.unwrap(),
        committed
    );
    // Small writes may still fit, or fail cleanly: never a panic.
    let _ = store
        .transition(job.id, JobState::Running, JobPatch::new())
        .await;

    // Free space: purge everything, then writes succeed again.
    let future = Timestamp::now() + jiff::SignedDuration::from_secs(60);
    store.purge_events_before(future).await.unwrap();
    store.append_events(batch(10)).await.unwrap();
    assert_eq!(store.health().status, HealthLevel::Ok);
    store.close().await.unwrap();

    // And the file is sound.
    let store = SqliteStore::open_in_dir(
        dir.path(),
        StoreOptions::default().integrity_check(orchex_store::IntegrityCheck::Always),
    )
    .await
    .unwrap();
    assert_eq!(store.count_events(EventFilter::new()).await.unwrap(), 10);
}
