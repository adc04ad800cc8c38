//! Events: filters, cursors, retention and exports.

use std::collections::HashSet;
use std::sync::Arc;

use futures::StreamExt;
use orchex_core::{Event, EventId, EventKind, JobId, Severity, Timestamp};
use orchex_store::{
    CSV_HEADER, EventFilter, EventStore, ExportFormat, PageRequest, SqliteStore, StoreError,
    StoreOptions,
};

use crate::{ContractStore, open, repo};

fn ago(secs: i64) -> Timestamp {
    Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_secs(secs))
        .unwrap()
}

/// 200 events over 200 seconds: kinds, repos, pipelines, jobs and
/// severities vary with the index.
fn sample(job: JobId) -> Vec<Event> {
    let kinds = [
        EventKind::JobQueued,
        EventKind::JobFailed,
        EventKind::ChangeDetected,
    ];
    (0..200_i64)
        .zip((0..3_usize).cycle())
        .map(|(i, k)| {
            let kind = kinds[k];
            let mut event = Event::new(kind, format!("event {i}"));
            event.ts = ago(200 - i);
            if i % 2 == 0 {
                event = event.with_repo(repo("api"));
            }
            if i % 5 == 0 {
                event = event.with_pipeline("codegen");
            }
            if i % 7 == 0 {
                event = event.with_job(job);
            }
            if i % 11 == 0 {
                event = event.with_severity(Severity::Critical);
            }
            if i % 4 == 0 {
                event = event.with_data(serde_json::json!({"i": i, "nested": {"ok": true}}));
            }
            event
        })
        .collect()
}

async fn append(store: &impl EventStore, events: &[Event]) {
    store
        .append_events(events.iter().cloned().map(Arc::new).collect())
        .await
        .unwrap();
}

async fn all_pages(store: &impl EventStore, filter: &EventFilter, limit: u32) -> Vec<Event> {
    let mut out = Vec::new();
    let mut page = PageRequest::first().limit(limit);
    loop {
        let result = store.query_events(filter.clone(), page).await.unwrap();
        assert!(result.items.len() <= limit as usize);
        out.extend(result.items);
        match result.next_cursor {
            Some(cursor) => page = PageRequest::first().limit(limit).after(cursor),
            None => return out,
        }
    }
}

async fn every_filter_returns_exactly_the_matching_events_newest_first(store: impl ContractStore) {
    let job = JobId::new();
    let events = sample(job);
    append(&store, &events).await;

    let filters = [
        EventFilter::new(),
        EventFilter::new().kind(EventKind::JobFailed),
        EventFilter::new()
            .kind(EventKind::JobFailed)
            .kind(EventKind::ChangeDetected),
        EventFilter::new().repo(repo("api")),
        EventFilter::new().pipeline("codegen"),
        EventFilter::new().job(job),
        EventFilter::new().severity(Severity::Critical),
        EventFilter::new().severity(Severity::Info),
        EventFilter::new().min_severity(Severity::Error),
        EventFilter::new().since(ago(100)),
        EventFilter::new().until(ago(50)),
        EventFilter::new()
            .kind(EventKind::JobQueued)
            .since(ago(150))
            .until(ago(20)),
        EventFilter::new()
            .repo(repo("api"))
            .pipeline("codegen")
            .min_severity(Severity::Warn),
        EventFilter::new().repo(repo("nope")),
    ];
    for filter in filters {
        let mut expected: Vec<&Event> = events.iter().filter(|e| filter.matches(e)).collect();
        expected.reverse();
        let got = all_pages(&store, &filter, 9).await;
        let got_ids: Vec<EventId> = got.iter().map(|e| e.id).collect();
        let expected_ids: Vec<EventId> = expected.iter().map(|e| e.id).collect();
        assert_eq!(got_ids, expected_ids, "filter {filter:?}");
        assert_eq!(
            store.count_events(filter.clone()).await.unwrap(),
            expected.len() as u64
        );
    }
    // Everything survives the round trip.
    let got = all_pages(&store, &EventFilter::new(), 10_000).await;
    let mut expected = events.clone();
    expected.reverse();
    assert_eq!(got, expected);
}

async fn cursors_are_exact_when_timestamps_collide(store: impl ContractStore) {
    let ts = Timestamp::now();
    let events: Vec<Event> = (0..50)
        .map(|i| {
            let mut event = Event::new(EventKind::JobProgress, format!("{i}"));
            event.ts = ts;
            event
        })
        .collect();
    append(&store, &events).await;
    let got = all_pages(&store, &EventFilter::new(), 7).await;
    let ids: HashSet<EventId> = got.iter().map(|e| e.id).collect();
    assert_eq!(got.len(), 50);
    assert_eq!(ids.len(), 50);
    // Same timestamp: newest insertion first.
    assert_eq!(got[0].message, "49");
    assert_eq!(got[49].message, "0");
}

async fn limits_default_to_100_and_clamp_at_10000(store: impl ContractStore) {
    let events: Vec<Event> = (0..150)
        .map(|i| Event::new(EventKind::JobQueued, format!("{i}")))
        .collect();
    append(&store, &events).await;
    let page = store
        .query_events(EventFilter::new(), PageRequest::first())
        .await
        .unwrap();
    assert_eq!(page.items.len(), 100);
    assert!(page.next_cursor.is_some());
    let page = store
        .query_events(EventFilter::new(), PageRequest::first().limit(1_000_000))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 150);
    assert_eq!(page.next_cursor, None);
    let err = store
        .query_events(EventFilter::new(), PageRequest::first().after("garbage"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidCursor { .. }));
}

#[tokio::test]
async fn retention_purges_only_old_events() {
    let dir = tempfile::tempdir().unwrap();
    // Small batches: the purge takes several transactions.
    let store = SqliteStore::open_in_dir(dir.path(), StoreOptions::default().purge_batch(64))
        .await
        .unwrap();
    let day = 86_400;
    let mut events = Vec::new();
    for i in 0..500_i64 {
        let mut event = Event::new(EventKind::HealthCheck, format!("{i}"));
        // 300 events 31..40 days old, 200 events less than 29 days old.
        event.ts = if i < 300 {
            ago(31 * day + i * 100)
        } else {
            ago(29 * day - i * 100)
        };
        events.push(event);
    }
    append(&store, &events).await;
    let deleted = store
        .purge_older_than(std::time::Duration::from_secs(30 * 86_400))
        .await
        .unwrap();
    assert_eq!(deleted, 300);
    let left = all_pages(&store, &EventFilter::new(), 10_000).await;
    assert_eq!(left.len(), 200);
    assert!(left.iter().all(|e| e.ts > ago(30 * day)));
    // Running it again deletes nothing.
    assert_eq!(
        store
            .purge_older_than(std::time::Duration::from_secs(30 * 86_400))
            .await
            .unwrap(),
        0
    );
    // The one-shot policy helper does the same.
    let report = orchex_store::purge_once(&store, &orchex_store::RetentionPolicy::days(1))
        .await
        .unwrap();
    assert_eq!(report.events, 200);
    assert_eq!(report.jobs, 0);
}

async fn csv_export_round_trips_quotes_commas_and_newlines(store: impl ContractStore) {
    let job = JobId::new();
    let messages = [
        "plain",
        "with, commas, everywhere",
        "with \"double quotes\" and 'single'",
        "multi\nline\r\nmessage",
        "",
        "unicode: é ü 日本 🚀",
        "trailing comma,",
    ];
    let events: Vec<Event> = messages
        .iter()
        .enumerate()
        .map(|(i, message)| {
            let mut event = Event::new(EventKind::Error, *message);
            event.ts = ago(100 - i64::try_from(i).unwrap());
            if i % 2 == 0 {
                event = event
                    .with_repo(repo("api"))
                    .with_pipeline("codegen")
                    .with_job(job)
                    .with_data(serde_json::json!({"msg": message, "list": [1, 2]}));
            }
            event
        })
        .collect();
    append(&store, &events).await;

    let bytes = store
        .export_events(EventFilter::new(), ExportFormat::Csv, None)
        .collect_bytes()
        .await
        .unwrap();
    let mut reader = csv::Reader::from_reader(bytes.as_slice());
    let header: Vec<String> = reader.headers().unwrap().iter().map(String::from).collect();
    assert_eq!(header, CSV_HEADER);
    let mut parsed = Vec::new();
    for record in reader.records() {
        let record = record.unwrap();
        let optional = |i: usize| (!record[i].is_empty()).then(|| record[i].to_owned());
        parsed.push(Event {
            id: EventId::from(uuid::Uuid::parse_str(&record[0]).unwrap()),
            ts: record[1].parse().unwrap(),
            kind: record[2].parse().unwrap(),
            severity: record[3].parse().unwrap(),
            repo: optional(4).map(|name| repo(&name)),
            pipeline: optional(5),
            job_id: optional(6).map(|id| id.parse().unwrap()),
            message: record[7].to_owned(),
            data: optional(8).map_or(serde_json::Value::Null, |text| {
                serde_json::from_str(&text).unwrap()
            }),
        });
    }
    let mut expected = events;
    expected.reverse();
    assert_eq!(parsed, expected);
}

async fn json_exports_stream_in_chunks_and_honour_filters_and_limits(store: impl ContractStore) {
    let events: Vec<Event> = (0..3000)
        .map(|i| {
            Event::new(
                EventKind::JobProgress,
                format!("progress {i} {}", "x".repeat(64)),
            )
            .with_repo(repo(if i % 2 == 0 { "api" } else { "web" }))
        })
        .collect();
    append(&store, &events).await;

    // NDJSON, streamed: several chunks.
    let mut stream = store.export_events(
        EventFilter::new().repo(repo("api")),
        ExportFormat::NdJson,
        None,
    );
    let mut chunks = 0;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        chunks += 1;
        bytes.extend(chunk.unwrap());
    }
    assert!(chunks >= 2, "{chunks} chunk(s)");
    let lines: Vec<Event> = String::from_utf8(bytes)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1500);
    assert!(lines.iter().all(|e| e.repo == Some(repo("api"))));

    // A JSON array with a limit.
    let bytes = store
        .export_events(EventFilter::new(), ExportFormat::JsonArray, Some(1234))
        .collect_bytes()
        .await
        .unwrap();
    let array: Vec<Event> = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(array.len(), 1234);
    assert_eq!(array[0], *events.last().unwrap());

    // A consumer that stops early does not hang the export.
    let mut stream = store.export_events(EventFilter::new(), ExportFormat::Csv, None);
    let first = stream.next().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(stream);
    // The store still works afterwards.
    assert_eq!(store.count_events(EventFilter::new()).await.unwrap(), 3000);
}

#[tokio::test]
async fn the_retention_loop_purges_on_its_timer() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()).await);
    let mut old = Event::new(EventKind::HealthCheck, "old");
    old.ts = ago(3 * 86_400);
    let fresh = Event::new(EventKind::HealthCheck, "fresh");
    append(store.as_ref(), &[old, fresh]).await;
    let policy = orchex_store::RetentionPolicy::days(1).interval(std::time::Duration::from_secs(1));
    let task = tokio::spawn(orchex_store::run_retention(Arc::clone(&store), policy));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while store.count_events(EventFilter::new()).await.unwrap() != 1 {
        assert!(
            std::time::Instant::now() < deadline,
            "the loop never purged"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    task.abort();
    let left = all_pages(store.as_ref(), &EventFilter::new(), 10).await;
    assert_eq!(left[0].message, "fresh");
}

against_both_stores!(
    every_filter_returns_exactly_the_matching_events_newest_first,
    cursors_are_exact_when_timestamps_collide,
    limits_default_to_100_and_clamp_at_10000,
    csv_export_round_trips_quotes_commas_and_newlines,
    json_exports_stream_in_chunks_and_honour_filters_and_limits,
);
