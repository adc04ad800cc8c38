//! The SQLite schema, its versioned migrations, and connection settings.
//!
//! The schema version lives in `PRAGMA user_version`. Migrations run at open,
//! each in its own transaction together with the version bump; a database
//! whose version is newer than [`SCHEMA_VERSION`] is refused.

use std::path::Path;

use rusqlite::Connection;

use crate::error::{Result, StoreError};

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = 2;

/// Migration `i` moves the schema from version `i` to `i + 1`. A released
/// migration is never edited: a change is a new migration.
const MIGRATIONS: [&str; 2] = [V1, V2];

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

/// Version 2: the claim and the coalescing lookup become index seeks, and
/// the queue depth a counter.
///
/// - `jobs_claim` replaces `jobs_queue`. With `state` as its first column the
///   claim (`state = 'queued' ... ORDER BY priority DESC, created_at, seq
///   LIMIT 1`) has an equality on the index prefix, so SQLite's planner
///   prefers it over `jobs_by_state` + a sort of every queued row (which it
///   chose over `jobs_queue` without statistics). `due_at` is in the index so
///   that jobs not yet due are skipped without reading their rows.
/// - `jobs_queued_by_repo` serves `find_queued` (`repo`, `pipeline`,
///   `state = 'queued'`, oldest first) without reading or sorting the
///   finished history of that repository and pipeline.
/// - `counters.queued_jobs` is the number of queued jobs, kept by triggers in
///   the same transaction as every insert, state change and delete of a job
///   (so a rolled-back savepoint rolls it back too).
const V2: &str = r"
DROP INDEX jobs_queue;
CREATE INDEX jobs_claim ON jobs (state, priority DESC, created_at, seq, due_at)
    WHERE state = 'queued';
CREATE INDEX jobs_queued_by_repo ON jobs (state, repo, pipeline, created_at, seq)
    WHERE state = 'queued';

CREATE TABLE counters (
    name  TEXT    PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counters (name, value)
    SELECT 'queued_jobs', count(*) FROM jobs WHERE state = 'queued';

CREATE TRIGGER jobs_queued_on_insert AFTER INSERT ON jobs
WHEN new.state = 'queued'
BEGIN
    UPDATE counters SET value = value + 1 WHERE name = 'queued_jobs';
END;
CREATE TRIGGER jobs_queued_on_delete AFTER DELETE ON jobs
WHEN old.state = 'queued'
BEGIN
    UPDATE counters SET value = value - 1 WHERE name = 'queued_jobs';
END;
CREATE TRIGGER jobs_queued_on_update AFTER UPDATE OF state ON jobs
WHEN (old.state = 'queued') <> (new.state = 'queued')
BEGIN
    UPDATE counters SET value = value + (new.state = 'queued') - (old.state = 'queued')
    WHERE name = 'queued_jobs';
END;
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
            matches!(err, StoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION + 1),
            "{err}"
        );
        assert!(
            err.to_string()
                .contains(&format!("newer than version {SCHEMA_VERSION}"))
        );
    }

    #[test]
    fn version_2_counts_the_queue_of_a_version_1_database() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite3");
        let mut conn = Connection::open(&path).unwrap();
        conn.execute_batch(V1).unwrap();
        conn.pragma_update(None, "user_version", 1).unwrap();
        conn.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 30) \
             INSERT INTO jobs (id, repo, pipeline, state, priority, created_at, due_at, doc) \
             SELECT randomblob(16), 'r', 'p', CASE WHEN i % 3 = 0 THEN 'failed' ELSE 'queued' END, \
             40, i, i, '{}' FROM n;",
        )
        .unwrap();

        let (created, from) = migrate(&mut conn, &path).unwrap();
        assert!(!created);
        assert_eq!(from, Some(1));
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let queued: i64 = conn
            .query_row(
                "SELECT value FROM counters WHERE name = 'queued_jobs'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(queued, 20);
        let indexes: Vec<String> = conn
            .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'jobs'")
            .unwrap()
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            indexes.iter().any(|name| name == "jobs_claim"),
            "{indexes:?}"
        );
        assert!(
            !indexes.iter().any(|name| name == "jobs_queue"),
            "{indexes:?}"
        );
        integrity_check(&conn, &path).unwrap();
    }
}
