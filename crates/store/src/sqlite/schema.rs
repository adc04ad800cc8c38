//! The SQLite schema, its versioned migrations, and connection settings.
//!
//! The schema version lives in `PRAGMA user_version`. Migrations run at open,
//! each in its own transaction together with the version bump; a database
//! whose version is newer than [`SCHEMA_VERSION`] is refused.

use std::path::Path;

use rusqlite::Connection;

use crate::error::{Result, StoreError};

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// Migration `i` moves the schema from version `i` to `i + 1`.
const MIGRATIONS: [&str; 1] = [V1];

const V1: &str = r"
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
INSERT INTO meta (key, value) VALUES ('clean_shutdown', '1');

CREATE TABLE jobs (
    seq              INTEGER PRIMARY KEY,
    id               BLOB    NOT NULL UNIQUE,
    repo             TEXT    NOT NULL,
    pipeline         TEXT    NOT NULL,
    state            TEXT    NOT NULL,
    priority         INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    due_at           INTEGER NOT NULL,
    finished_at      INTEGER,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    doc              TEXT    NOT NULL
);
CREATE INDEX jobs_by_created  ON jobs (created_at, seq);
CREATE INDEX jobs_by_state    ON jobs (state, created_at, seq);
CREATE INDEX jobs_by_repo     ON jobs (repo, pipeline, created_at, seq);
CREATE INDEX jobs_queue       ON jobs (priority DESC, created_at, seq) WHERE state = 'queued';
CREATE INDEX jobs_by_finished ON jobs (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE job_steps (
    job_id      BLOB    NOT NULL,
    idx         INTEGER NOT NULL,
    result      TEXT    NOT NULL,
    output_tail TEXT,
    UNIQUE (job_id, idx)
);

CREATE TABLE step_pgids (
    job_id      BLOB    NOT NULL,
    pgid        INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, pgid)
) WITHOUT ROWID;

CREATE TABLE backups (
    job_id     BLOB    NOT NULL,
    kind       TEXT    NOT NULL,
    name       TEXT    NOT NULL,
    previous   BLOB,
    mode       INTEGER,
    created_at INTEGER NOT NULL,
    UNIQUE (job_id, kind, name)
);

CREATE TABLE events (
    seq      INTEGER PRIMARY KEY,
    id       BLOB    NOT NULL,
    ts       INTEGER NOT NULL,
    kind     TEXT    NOT NULL,
    severity INTEGER NOT NULL,
    repo     TEXT,
    pipeline TEXT,
    job_id   BLOB,
    message  TEXT    NOT NULL,
    data     TEXT
);
CREATE INDEX events_by_ts       ON events (ts);
CREATE INDEX events_by_kind     ON events (kind, ts);
CREATE INDEX events_by_repo     ON events (repo, ts, severity) WHERE repo IS NOT NULL;
CREATE INDEX events_by_job      ON events (job_id)             WHERE job_id IS NOT NULL;
CREATE INDEX events_by_severity ON events (severity, ts)       WHERE severity >= 1;
";

fn pragma(conn: &Connection, sql: &str, context: &'static str) -> Result<()> {
    conn.execute_batch(sql)
        .map_err(|err| StoreError::sqlite(context, err))
}

/// Settings every connection gets.
pub(crate) fn configure_common(conn: &Connection) -> Result<()> {
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(|err| StoreError::sqlite("set the busy timeout", err))?;
    conn.set_prepared_statement_cache_capacity(64);
    pragma(
        conn,
        "PRAGMA foreign_keys = OFF; PRAGMA temp_store = MEMORY;",
        "configure the connection",
    )
}

/// Brings a freshly opened writer connection to the current schema.
///
/// Returns `(created, migrated_from)`: whether the file was new, and the
/// version it had when it needed migrating.
pub(crate) fn migrate(conn: &mut Connection, path: &Path) -> Result<(bool, Option<i64>)> {
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(|err| StoreError::sqlite("read the schema version", err))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    let page_count: i64 = conn
        .pragma_query_value(None, "page_count", |row| row.get(0))
        .map_err(|err| StoreError::sqlite("read the page count", err))?;
    let created = version == 0 && page_count == 0;
    if created {
        // Must be set before the first table exists; it cannot change later
        // without a full VACUUM.
        pragma(
            conn,
            "PRAGMA auto_vacuum = INCREMENTAL;",
            "enable incremental vacuum",
        )?;
    }
    pragma(conn, "PRAGMA journal_mode = WAL;", "enable WAL")?;
    let current = usize::try_from(version).unwrap_or(0);
    for (index, migration) in (0_i64..).zip(MIGRATIONS.iter()).skip(current) {
        let tx = conn
            .transaction()
            .map_err(|err| StoreError::sqlite("begin a migration", err))?;
        tx.execute_batch(migration)
            .map_err(|err| StoreError::sqlite("apply a schema migration", err))?;
        tx.pragma_update(None, "user_version", index + 1)
            .map_err(|err| StoreError::sqlite("bump the schema version", err))?;
        tx.commit()
            .map_err(|err| StoreError::sqlite("commit a schema migration", err))?;
    }
    let migrated_from = (version < SCHEMA_VERSION && !created).then_some(version);
    Ok((created, migrated_from))
}

/// Runs `PRAGMA integrity_check` and fails with its report unless it says
/// `ok`.
pub(crate) fn integrity_check(conn: &Connection, path: &Path) -> Result<()> {
    let mut stmt = conn
        .prepare("PRAGMA integrity_check(20)")
        .map_err(|err| StoreError::sqlite("run the integrity check", err))?;
    let lines = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .and_then(Iterator::collect::<rusqlite::Result<Vec<String>>>)
        .map_err(|err| StoreError::sqlite("run the integrity check", err))?;
    if lines.len() == 1 && lines[0] == "ok" {
        Ok(())
    } else {
        Err(StoreError::Corrupt {
            path: path.to_owned(),
            report: lines.join("; "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_create_the_schema_and_refuse_newer_versions() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let mut conn = Connection::open(&path).unwrap();
        let (created, from) = migrate(&mut conn, &path).unwrap();
        assert!(created);
        assert_eq!(from, None);
        let auto_vacuum: i64 = conn
            .pragma_query_value(None, "auto_vacuum", |row| row.get(0))
            .unwrap();
        assert_eq!(auto_vacuum, 2, "incremental");
        integrity_check(&conn, &path).unwrap();

        // Reopening is a no-op.
        let (created, from) = migrate(&mut conn, &path).unwrap();
        assert!(!created);
        assert_eq!(from, None);

        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        let err = migrate(&mut conn, &path).unwrap_err();
        assert!(
            matches!(err, StoreError::NewerSchema { found: 2, .. }),
            "{err}"
        );
        assert!(err.to_string().contains("newer than version 1"));
    }
}
