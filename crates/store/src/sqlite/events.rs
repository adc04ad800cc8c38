//! Event rows: the SQL behind [`EventStore`](crate::EventStore) for SQLite.
//!
//! Events are ordered newest first by `(ts, seq)`, `seq` being the rowid
//! (insertion order). The kind, repository and severity filters have
//! indexes ending in `ts` (the repository's also carries the severity), the
//! job filter one of its own, and the time range uses `ts`; so a filtered
//! page is an index range scan whose length does not grow with the table.
//! The cursor is the `(ts, seq)` of the last row returned. A pipeline alone
//! is filtered along the time index (pipelines are few and dense).

use std::io::Write;
use std::sync::Arc;

use orchex_core::{Event, Severity, Timestamp};
use rusqlite::types::Value;
use rusqlite::{Connection, params, params_from_iter};

use crate::error::{Result, StoreError};
use crate::export::export_pages;
use crate::model::{Cursor, EventFilter, ExportFormat, Page};
use crate::sqlite::codec::{EVENT_COLUMNS, event_from_row, severity_to_sql, ts_to_sql};

const CURSOR_TAG: char = 'e';

/// The insert statement; the benchmarks' raw loop uses the same one.
pub const INSERT_EVENT_SQL: &str = "INSERT INTO events \
     (id, ts, kind, severity, repo, pipeline, job_id, message, data) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";

fn sql(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |err| StoreError::sqlite(context, err)
}

/// Inserts one event with a prepared statement (the hot path of ingest).
pub(crate) fn insert_one(stmt: &mut rusqlite::CachedStatement<'_>, event: &Event) -> Result<()> {
    let data = if event.data.is_null() {
        None
    } else {
        Some(
            serde_json::to_string(&event.data).map_err(|err| StoreError::Encode {
                what: "event data",
                detail: err.to_string(),
            })?,
        )
    };
    stmt.execute(params![
        &event.id.as_uuid().as_bytes()[..],
        ts_to_sql(event.ts)?,
        event.kind.as_str(),
        severity_to_sql(event.severity),
        event.repo.as_ref().map(orchex_core::RepoId::as_str),
        event.pipeline.as_deref(),
        event
            .job_id
            .as_ref()
            .map(|job| &job.as_uuid().as_bytes()[..]),
        event.message,
        data,
    ])
    .map_err(sql("append an event"))?;
    Ok(())
}

pub(crate) fn append_tx(conn: &Connection, events: &[Arc<Event>]) -> Result<()> {
    let mut stmt = conn
        .prepare_cached(INSERT_EVENT_SQL)
        .map_err(sql("prepare the event insert"))?;
    for event in events {
        insert_one(&mut stmt, event)?;
    }
    Ok(())
}

/// Deletes up to `batch` events older than `cutoff`; returns how many, and
/// gives the freed pages back to the file system.
pub(crate) fn purge_batch_tx(conn: &Connection, cutoff: Timestamp, batch: usize) -> Result<usize> {
    let cutoff = ts_to_sql(cutoff)?;
    let batch = i64::try_from(batch).unwrap_or(i64::MAX);
    let deleted = conn
        .prepare_cached(
            "DELETE FROM events WHERE seq IN \
             (SELECT seq FROM events WHERE ts < ?1 ORDER BY ts LIMIT ?2)",
        )
        .and_then(|mut stmt| stmt.execute(params![cutoff, batch]))
        .map_err(sql("purge old events"))?;
    if deleted > 0 {
        conn.execute_batch("PRAGMA incremental_vacuum")
            .map_err(sql("vacuum freed pages"))?;
    }
    Ok(deleted)
}

fn push_filter(
    filter: &EventFilter,
    cursor: Option<Cursor>,
    clauses: &mut Vec<String>,
    values: &mut Vec<Value>,
) -> Result<()> {
    match filter.kinds.as_slice() {
        [] => {}
        [kind] => {
            clauses.push("kind = ?".into());
            values.push(Value::Text(kind.as_str().to_owned()));
        }
        kinds => {
            let marks = vec!["?"; kinds.len()].join(", ");
            clauses.push(format!("kind IN ({marks})"));
            values.extend(
                kinds
                    .iter()
                    .map(|kind| Value::Text(kind.as_str().to_owned())),
            );
        }
    }
    if let Some(repo) = &filter.repo {
        clauses.push("repo = ?".into());
        values.push(Value::Text(repo.as_str().to_owned()));
    }
    if let Some(pipeline) = &filter.pipeline {
        clauses.push("pipeline = ?".into());
        values.push(Value::Text(pipeline.clone()));
    }
    if let Some(job) = filter.job_id {
        clauses.push("job_id = ?".into());
        values.push(Value::Blob(job.as_uuid().as_bytes().to_vec()));
    }
    let mut warn_or_worse = false;
    if let Some(severity) = filter.severity {
        clauses.push("severity = ?".into());
        values.push(Value::Integer(severity_to_sql(severity)));
        warn_or_worse |= severity >= Severity::Warn;
    }
    if let Some(min) = filter.min_severity {
        clauses.push("severity >= ?".into());
        values.push(Value::Integer(severity_to_sql(min)));
        warn_or_worse |= min >= Severity::Warn;
    }
    if warn_or_worse {
        // The literal lets SQLite use the partial index events_by_severity.
        clauses.push("severity >= 1".into());
    }
    if let Some(since) = filter.since {
        clauses.push("ts >= ?".into());
        values.push(Value::Integer(ts_to_sql(since)?));
    }
    // One upper bound on `ts`, the tighter of `until` and the cursor, so
    // that SQLite starts the index scan right at the cursor (a deep page
    // costs as much as the first); the row value breaks ties on `seq`.
    let until = filter.until.map(ts_to_sql).transpose()?;
    match (until, cursor) {
        (Some(until), Some(cursor)) if until <= cursor.time => {
            clauses.push("ts < ?".into());
            values.push(Value::Integer(until));
        }
        (_, Some(cursor)) => {
            clauses.push("ts <= ?".into());
            values.push(Value::Integer(cursor.time));
            clauses.push("(ts, seq) < (?, ?)".into());
            values.push(Value::Integer(cursor.time));
            values.push(Value::Integer(cursor.seq));
        }
        (Some(until), None) => {
            clauses.push("ts < ?".into());
            values.push(Value::Integer(until));
        }
        (None, None) => {}
    }
    Ok(())
}

fn where_sql(clauses: &[String]) -> String {
    if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    }
}

/// One page of events after `cursor`; calls `each` per event and returns the
/// position of the last one when more rows follow.
fn page_with(
    conn: &Connection,
    filter: &EventFilter,
    cursor: Option<Cursor>,
    limit: u32,
    mut each: impl FnMut(Event) -> Result<()>,
) -> Result<(usize, Option<Cursor>)> {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    push_filter(filter, cursor, &mut clauses, &mut values)?;
    values.push(Value::Integer(i64::from(limit) + 1));
    let query = format!(
        "SELECT {EVENT_COLUMNS} FROM events{} ORDER BY ts DESC, seq DESC LIMIT ?",
        where_sql(&clauses)
    );
    let mut stmt = conn.prepare_cached(&query).map_err(sql("query events"))?;
    let mut rows = stmt
        .query(params_from_iter(values))
        .map_err(sql("query events"))?;
    let mut seen = 0usize;
    let mut last = None;
    while let Some(row) = rows.next().map_err(sql("query events"))? {
        if seen == limit as usize {
            return Ok((seen, last));
        }
        let (event, ts, seq) = event_from_row(row)?;
        each(event)?;
        seen += 1;
        last = Some(Cursor { time: ts, seq });
    }
    Ok((seen, None))
}

pub(crate) fn query(
    conn: &Connection,
    filter: &EventFilter,
    cursor: Option<&str>,
    limit: u32,
) -> Result<Page<Event>> {
    let cursor = cursor
        .map(|text| Cursor::decode(CURSOR_TAG, text))
        .transpose()?;
    let mut items = Vec::with_capacity(limit.min(1024) as usize);
    let (_, next) = page_with(conn, filter, cursor, limit, |event| {
        items.push(event);
        Ok(())
    })?;
    Ok(Page {
        items,
        next_cursor: next.map(|cursor| cursor.encode(CURSOR_TAG)),
    })
}

pub(crate) fn count(conn: &Connection, filter: &EventFilter) -> Result<u64> {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    push_filter(filter, None, &mut clauses, &mut values)?;
    let query = format!("SELECT count(*) FROM events{}", where_sql(&clauses));
    let count: i64 = conn
        .prepare_cached(&query)
        .and_then(|mut stmt| stmt.query_row(params_from_iter(values), |row| row.get(0)))
        .map_err(sql("count events"))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

/// Writes every matching event (newest first, at most `limit`) to `out`,
/// one keyset page at a time: memory use does not grow with the row count.
/// Returns how many events were written.
pub(crate) fn export(
    conn: &Connection,
    filter: &EventFilter,
    format: ExportFormat,
    limit: Option<u64>,
    out: &mut dyn Write,
) -> Result<u64> {
    export_pages(format, limit, out, |cursor, page, encoder| {
        page_with(conn, filter, cursor, page, |event| encoder.write(&event)).map(|(_, next)| next)
    })
}
