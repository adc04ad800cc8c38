//! Opening: schema versions, the clean-shutdown marker, closing.

use std::sync::Arc;

use orchex_core::{Event, EventKind, HealthLevel};
use orchex_store::{
    DB_FILE_NAME, EventFilter, EventStore, SqliteStore, StoreError, StoreHealth, StoreOptions,
};

use crate::open;

#[tokio::test]
async fn a_clean_close_skips_the_integrity_check_and_an_unclean_one_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    assert!(store.open_report().created);
    assert!(!store.open_report().unclean_shutdown);
    store
        .append_events(vec![Arc::new(Event::new(
            EventKind::OrchestratorStarted,
            "up",
        ))])
        .await
        .unwrap();
    store.close().await.unwrap();
    store.close().await.unwrap(); // idempotent

    let store = open(dir.path()).await;
    let report = store.open_report().clone();
    assert!(!report.created);
    assert!(!report.unclean_shutdown);
    assert!(!report.integrity_checked);
    // Simulate a crash: the handle (and its writer thread) never closes.
    std::mem::forget(store);

    let store = open(dir.path()).await;
    let report = store.open_report();
    assert!(report.unclean_shutdown);
    assert!(report.integrity_checked);
    assert_eq!(store.count_events(EventFilter::new()).await.unwrap(), 1);
    store.close().await.unwrap();
}

#[tokio::test]
async fn writes_after_close_fail_and_health_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path()).await;
    assert_eq!(store.health().status, HealthLevel::Ok);
    store.close().await.unwrap();
    let err = store
        .append_events(vec![Arc::new(Event::new(EventKind::Error, "late"))])
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Closed), "{err}");
    assert_eq!(store.health().status, HealthLevel::Unhealthy);
}

#[tokio::test]
async fn a_database_from_a_newer_orchex_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    open(dir.path()).await.close().await.unwrap();
    let path = dir.path().join(DB_FILE_NAME);
    let conn = rusqlite::Connection::open(&path).unwrap();
    conn.pragma_update(None, "user_version", 7).unwrap();
    drop(conn);
    let err = SqliteStore::open(&path, StoreOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::NewerSchema {
                found: 7,
                supported: 2,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade orchex"), "{err}");
}

#[tokio::test]
async fn a_corrupt_file_is_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE_NAME);
    std::fs::write(
        &path,
        b"this is not a database, just some text that is long enough",
    )
    .unwrap();
    let err = SqliteStore::open(&path, StoreOptions::default())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(DB_FILE_NAME) || err.to_string().contains("database"),
        "{err}"
    );
}
