//! Backup rows: the SQL behind [`BackupStore`](crate::BackupStore) for
//! SQLite. One row per (job, kind, path or branch name).

use orchex_core::{JobId, Timestamp};
use rusqlite::{Connection, params};

use crate::error::{Result, StoreError};
use crate::model::Backup;
use crate::sqlite::codec::ts_to_sql;

fn sql(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |err| StoreError::sqlite(context, err)
}

pub(crate) fn put_tx(
    conn: &Connection,
    job: JobId,
    backups: Vec<Backup>,
    now: Timestamp,
) -> Result<()> {
    let id = *job.as_uuid().as_bytes();
    let exists = conn
        .prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")
        .and_then(|mut stmt| stmt.exists([id]))
        .map_err(sql("look up a job"))?;
    if !exists {
        return Err(StoreError::JobNotFound { job });
    }
    let now = ts_to_sql(now)?;
    let mut stmt = conn
        .prepare_cached(
            "INSERT OR REPLACE INTO backups (job_id, kind, name, previous, mode, created_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .map_err(sql("prepare a backup insert"))?;
    for backup in backups {
        let kind = backup.kind();
        let (name, previous, mode) = match backup {
            Backup::File {
                path,
                previous,
                mode,
            } => (path, previous, mode),
            Backup::Branch { name, previous } => (name, previous.map(String::into_bytes), None),
        };
        stmt.execute(params![id, kind, name, previous, mode, now])
            .map_err(sql("store a backup"))?;
    }
    Ok(())
}

/// A backup row: kind, name, previous contents, mode.
type BackupRow = (String, String, Option<Vec<u8>>, Option<u32>);

pub(crate) fn list(conn: &Connection, job: JobId) -> Result<Vec<Backup>> {
    let rows: Vec<BackupRow> = conn
        .prepare_cached(
            "SELECT kind, name, previous, mode FROM backups WHERE job_id = ?1 \
             ORDER BY kind DESC, name",
        )
        .and_then(|mut stmt| {
            stmt.query_map([job.as_uuid().as_bytes()], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })?
            .collect()
        })
        .map_err(sql("read backups"))?;
    rows.into_iter()
        .map(|(kind, name, previous, mode)| match kind.as_str() {
            "file" => Ok(Backup::File {
                path: name,
                previous,
                mode,
            }),
            "branch" => Ok(Backup::Branch {
                name,
                previous: previous
                    .map(|bytes| {
                        String::from_utf8(bytes).map_err(|err| StoreError::Decode {
                            what: "branch backup",
                            detail: err.to_string(),
                        })
                    })
                    .transpose()?,
            }),
            other => Err(StoreError::Decode {
                what: "backup kind",
                detail: format!("unknown kind {other:?}"),
            }),
        })
        .collect()
}

pub(crate) fn delete_tx(conn: &Connection, job: JobId) -> Result<u64> {
    let deleted = conn
        .prepare_cached("DELETE FROM backups WHERE job_id = ?1")
        .and_then(|mut stmt| stmt.execute([job.as_uuid().as_bytes()]))
        .map_err(sql("delete backups"))?;
    Ok(deleted as u64)
}
