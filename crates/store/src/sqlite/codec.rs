//! Conversions between domain values and SQLite columns.
//!
//! Timestamps are stored as signed nanoseconds since the Unix epoch
//! (`INTEGER`), ids as their 16 UUID bytes (`BLOB`), enums by their wire
//! names (`TEXT`), except severity, stored as its rank (0 info … 3 critical)
//! so that "at least warn" is a range.

use orchex_core::{Event, EventId, EventKind, JobId, RepoId, Severity, Timestamp};
use rusqlite::Row;
use uuid::Uuid;

use crate::error::{Result, StoreError};

/// A timestamp as stored.
pub(crate) fn ts_to_sql(ts: Timestamp) -> Result<i64> {
    i64::try_from(ts.as_nanosecond()).map_err(|_| StoreError::Encode {
        what: "timestamp",
        detail: format!("{ts} is outside the years 1678..2262"),
    })
}

/// A stored timestamp.
pub(crate) fn ts_from_sql(nanos: i64) -> Result<Timestamp> {
    Timestamp::from_nanosecond(i128::from(nanos)).map_err(|err| StoreError::Decode {
        what: "timestamp",
        detail: err.to_string(),
    })
}

/// `now + duration`, as stored.
pub(crate) fn add_duration(now: i64, duration: std::time::Duration) -> i64 {
    let nanos = i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX);
    now.saturating_add(nanos)
}

pub(crate) fn uuid_from_sql(bytes: &[u8], what: &'static str) -> Result<Uuid> {
    Uuid::from_slice(bytes).map_err(|err| StoreError::Decode {
        what,
        detail: err.to_string(),
    })
}

pub(crate) fn job_id_from_sql(bytes: &[u8]) -> Result<JobId> {
    uuid_from_sql(bytes, "job id").map(JobId::from)
}

pub(crate) const fn severity_to_sql(severity: Severity) -> i64 {
    match severity {
        Severity::Info => 0,
        Severity::Warn => 1,
        Severity::Error => 2,
        Severity::Critical => 3,
    }
}

pub(crate) fn severity_from_sql(rank: i64) -> Result<Severity> {
    match rank {
        0 => Ok(Severity::Info),
        1 => Ok(Severity::Warn),
        2 => Ok(Severity::Error),
        3 => Ok(Severity::Critical),
        other => Err(StoreError::Decode {
            what: "event severity",
            detail: format!("unknown rank {other}"),
        }),
    }
}

pub(crate) fn repo_from_sql(name: String) -> Result<RepoId> {
    RepoId::new(name).map_err(|err| StoreError::Decode {
        what: "repository name",
        detail: err.to_string(),
    })
}

fn column<T: rusqlite::types::FromSql>(row: &Row<'_>, index: usize) -> Result<T> {
    row.get(index)
        .map_err(|err| StoreError::sqlite("read an event row", err))
}

/// The columns [`event_from_row`] expects, in order, after `seq`.
pub(crate) const EVENT_COLUMNS: &str =
    "seq, id, ts, kind, severity, repo, pipeline, job_id, message, data";

/// Decodes an event row selected with [`EVENT_COLUMNS`]; returns the event
/// and its `(ts, seq)` position.
pub(crate) fn event_from_row(row: &Row<'_>) -> Result<(Event, i64, i64)> {
    let seq: i64 = column(row, 0)?;
    let id: Vec<u8> = column(row, 1)?;
    let ts: i64 = column(row, 2)?;
    let kind: String = column(row, 3)?;
    let severity: i64 = column(row, 4)?;
    let repo: Option<String> = column(row, 5)?;
    let pipeline: Option<String> = column(row, 6)?;
    let job: Option<Vec<u8>> = column(row, 7)?;
    let message: String = column(row, 8)?;
    let data: Option<String> = column(row, 9)?;
    let kind: EventKind = kind.parse().map_err(|_| StoreError::Decode {
        what: "event kind",
        detail: format!("unknown kind {kind:?}"),
    })?;
    let data = match data {
        None => serde_json::Value::Null,
        Some(text) => serde_json::from_str(&text).map_err(|err| StoreError::Decode {
            what: "event data",
            detail: err.to_string(),
        })?,
    };
    let event = Event {
        id: EventId::from(uuid_from_sql(&id, "event id")?),
        ts: ts_from_sql(ts)?,
        kind,
        severity: severity_from_sql(severity)?,
        repo: repo.map(repo_from_sql).transpose()?,
        pipeline,
        job_id: job.as_deref().map(job_id_from_sql).transpose()?,
        message,
        data,
    };
    Ok((event, ts, seq))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_to_the_nanosecond() {
        let now = Timestamp::now();
        assert_eq!(ts_from_sql(ts_to_sql(now).unwrap()).unwrap(), now);
        assert!(ts_to_sql(Timestamp::MAX).is_err());
    }

    #[test]
    fn severities_round_trip() {
        for severity in Severity::ALL {
            assert_eq!(
                severity_from_sql(severity_to_sql(severity)).unwrap(),
                severity
            );
        }
        assert!(severity_from_sql(9).is_err());
    }
}
