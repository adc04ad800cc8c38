//! Job rows: the SQL behind [`JobStore`](crate::JobStore) for SQLite.
//!
//! A job is one row of `jobs`: the columns that queries filter and sort on
//! (state, repo, pipeline, priority, times, lease), and `doc`, the job as
//! JSON without its steps. Steps live in `job_steps`, one row per step, with
//! the output tail in its own column so that lists can leave it out.
//! Functions named `*_tx` run inside the writer's transaction.

use orchex_core::{Job, JobId, JobState, RepoId, SkipReason, StepResult, Timestamp};
use rusqlite::types::Value;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params, params_from_iter};

use crate::error::{Result, StoreError};
use crate::model::{
    Cursor, INTERRUPTED_TWICE, JobFilter, JobPatch, Page, PageRequest, RecoveryReport, StepPgid,
};
use crate::sqlite::codec::{add_duration, job_id_from_sql, ts_to_sql};

const CURSOR_TAG: char = 'j';

/// How many finished jobs one purge transaction deletes at most.
pub(crate) const PURGE_BATCH: usize = 1000;

fn sql(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |err| StoreError::sqlite(context, err)
}

fn id_blob(id: JobId) -> [u8; 16] {
    *id.as_uuid().as_bytes()
}

fn encode_doc(job: &mut Job) -> Result<String> {
    let steps = std::mem::take(&mut job.steps);
    let doc = serde_json::to_string(&*job);
    job.steps = steps;
    doc.map_err(|err| StoreError::Encode {
        what: "job",
        detail: err.to_string(),
    })
}

fn decode_doc(doc: &str) -> Result<Job> {
    serde_json::from_str(doc).map_err(|err| StoreError::Decode {
        what: "job",
        detail: err.to_string(),
    })
}

/// Keeps the last `limit` bytes of `text`, cut on a character boundary.
pub(crate) fn truncate_tail(text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let mut start = text.len() - limit;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}

fn finished_at_sql(job: &Job) -> Result<Option<i64>> {
    job.finished_at.map(ts_to_sql).transpose()
}

// === writes ===

pub(crate) fn insert_tx(
    conn: &Connection,
    mut job: Job,
    due_at: Timestamp,
    tail_limit: usize,
) -> Result<()> {
    let doc = encode_doc(&mut job)?;
    let created_at = ts_to_sql(job.created_at)?;
    let due_at = ts_to_sql(due_at)?;
    let finished_at = finished_at_sql(&job)?;
    let inserted = conn
        .prepare_cached(
            "INSERT INTO jobs (id, repo, pipeline, state, priority, created_at, due_at, \
             finished_at, doc) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        )
        .and_then(|mut stmt| {
            stmt.execute(params![
                id_blob(job.id),
                job.repo.as_str(),
                job.pipeline,
                job.state().as_str(),
                job.priority,
                created_at,
                due_at,
                finished_at,
                doc,
            ])
        });
    match inserted {
        Ok(_) => {}
        Err(err) if err.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
            return Err(StoreError::JobExists { job: job.id });
        }
        Err(err) => return Err(StoreError::sqlite("insert a job", err)),
    }
    for (index, step) in std::mem::take(&mut job.steps).into_iter().enumerate() {
        let index = u32::try_from(index).unwrap_or(u32::MAX);
        put_step(conn, job.id, index, step, tail_limit)?;
    }
    Ok(())
}

/// Loads the job row (without steps) inside the writer transaction.
fn load_doc(conn: &Connection, id: JobId) -> Result<Job> {
    let doc: Option<String> = conn
        .prepare_cached("SELECT doc FROM jobs WHERE id = ?1")
        .and_then(|mut stmt| stmt.query_row([id_blob(id)], |row| row.get(0)).optional())
        .map_err(sql("read a job"))?;
    match doc {
        Some(doc) => decode_doc(&doc),
        None => Err(StoreError::JobNotFound { job: id }),
    }
}

/// Writes the job's state, priority, finish time and document. Leaving
/// `running` clears the lease.
fn store_doc(conn: &Connection, job: &mut Job) -> Result<()> {
    let doc = encode_doc(job)?;
    let finished_at = finished_at_sql(job)?;
    conn.prepare_cached(
        "UPDATE jobs SET state = ?2, priority = ?3, finished_at = ?4, doc = ?5, \
         lease_owner = CASE WHEN ?2 = 'running' THEN lease_owner END, \
         lease_expires_at = CASE WHEN ?2 = 'running' THEN lease_expires_at END \
         WHERE id = ?1",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            id_blob(job.id),
            job.state().as_str(),
            job.priority,
            finished_at,
            doc
        ])
    })
    .map_err(sql("update a job"))?;
    Ok(())
}

fn delete_steps(conn: &Connection, id: JobId) -> Result<()> {
    conn.prepare_cached("DELETE FROM job_steps WHERE job_id = ?1")
        .and_then(|mut stmt| stmt.execute([id_blob(id)]))
        .map_err(sql("delete job steps"))?;
    Ok(())
}

fn move_job(conn: &Connection, job: &mut Job, to: JobState, now: Timestamp) -> Result<()> {
    job.transition_at(to, now)
        .map_err(|source| StoreError::IllegalTransition {
            job: job.id,
            source,
        })?;
    if to == JobState::Queued {
        delete_steps(conn, job.id)?;
    }
    Ok(())
}

pub(crate) fn transition_tx(
    conn: &Connection,
    id: JobId,
    to: JobState,
    patch: JobPatch,
    now: Timestamp,
) -> Result<Job> {
    let mut job = load_doc(conn, id)?;
    move_job(conn, &mut job, to, now)?;
    patch.apply(&mut job);
    store_doc(conn, &mut job)?;
    job.steps = load_steps(conn, id, false)?;
    Ok(job)
}

pub(crate) fn update_tx(conn: &Connection, id: JobId, patch: JobPatch) -> Result<Job> {
    let mut job = load_doc(conn, id)?;
    patch.apply(&mut job);
    store_doc(conn, &mut job)?;
    job.steps = load_steps(conn, id, false)?;
    Ok(job)
}

fn put_step(
    conn: &Connection,
    id: JobId,
    index: u32,
    mut step: StepResult,
    tail_limit: usize,
) -> Result<()> {
    let tail = step
        .output_tail
        .take()
        .map(|tail| truncate_tail(tail, tail_limit));
    let result = serde_json::to_string(&step).map_err(|err| StoreError::Encode {
        what: "step result",
        detail: err.to_string(),
    })?;
    conn.prepare_cached(
        "INSERT INTO job_steps (job_id, idx, result, output_tail) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (job_id, idx) DO UPDATE SET result = excluded.result, \
         output_tail = excluded.output_tail",
    )
    .and_then(|mut stmt| stmt.execute(params![id_blob(id), index, result, tail]))
    .map_err(sql("record a step"))?;
    Ok(())
}

fn ensure_exists(conn: &Connection, id: JobId) -> Result<()> {
    let found = conn
        .prepare_cached("SELECT 1 FROM jobs WHERE id = ?1")
        .and_then(|mut stmt| stmt.exists([id_blob(id)]))
        .map_err(sql("look up a job"))?;
    if found {
        Ok(())
    } else {
        Err(StoreError::JobNotFound { job: id })
    }
}

pub(crate) fn record_step_tx(
    conn: &Connection,
    id: JobId,
    index: u32,
    step: StepResult,
    tail_limit: usize,
) -> Result<()> {
    ensure_exists(conn, id)?;
    put_step(conn, id, index, step, tail_limit)
}

/// The next job to claim: due, highest priority first, then oldest. A seek
/// into `jobs_claim` (schema version 2) that stops at the first due entry;
/// a Postgres backend adds `FOR UPDATE SKIP LOCKED` to the same query.
pub(crate) const CLAIM_SQL: &str = "SELECT id FROM jobs WHERE state = 'queued' AND due_at <= ?1 \
     ORDER BY priority DESC, created_at, seq LIMIT 1";

/// The oldest queued job of a repository and pipeline: a seek into
/// `jobs_queued_by_repo` (schema version 2).
pub(crate) const FIND_QUEUED_SQL: &str = "SELECT id FROM jobs \
     WHERE repo = ?1 AND pipeline = ?2 AND state = 'queued' ORDER BY created_at, seq LIMIT 1";

/// The number of queued jobs, kept by triggers (schema version 2).
const QUEUED_COUNT_SQL: &str = "SELECT value FROM counters WHERE name = 'queued_jobs'";

/// How many jobs are queued: one row of `counters`, O(1) whatever the queue
/// length. Readers and the writer use it alike.
pub(crate) fn queued_count(conn: &Connection) -> Result<u64> {
    let count: Option<i64> = conn
        .prepare_cached(QUEUED_COUNT_SQL)
        .and_then(|mut stmt| stmt.query_row([], |row| row.get(0)).optional())
        .map_err(sql("read the queue depth"))?;
    Ok(count
        .and_then(|count| u64::try_from(count).ok())
        .unwrap_or(0))
}

/// Inserts `job`, due at once, unless `capacity` jobs are already queued:
/// then it is inserted `skipped` with [`SkipReason::QueueFull`]. The count
/// and the insert are in the same write transaction, so concurrent inserts
/// never queue more than `capacity` jobs. Returns the job as stored.
pub(crate) fn insert_bounded_tx(
    conn: &Connection,
    mut job: Job,
    capacity: u64,
    tail_limit: usize,
    now: Timestamp,
) -> Result<Job> {
    if job.state() == JobState::Queued && queued_count(conn)? >= capacity {
        skip_as_queue_full(&mut job, now)?;
    }
    let due_at = job.created_at;
    insert_tx(conn, job.clone(), due_at, tail_limit)?;
    Ok(job)
}

/// Turns a job that found the queue full into a `skipped` one with
/// [`SkipReason::QueueFull`], as a bounded insert stores it.
pub(crate) fn skip_as_queue_full(job: &mut Job, now: Timestamp) -> Result<()> {
    job.transition_at(JobState::Skipped, now)
        .map_err(|source| StoreError::IllegalTransition {
            job: job.id,
            source,
        })?;
    JobPatch::new()
        .skip_reason(SkipReason::QueueFull)
        .apply(job);
    Ok(())
}

pub(crate) fn claim_tx(
    conn: &Connection,
    worker: &str,
    lease: std::time::Duration,
    now: Timestamp,
) -> Result<Option<Job>> {
    let now_sql = ts_to_sql(now)?;
    let next: Option<Vec<u8>> = conn
        .prepare_cached(CLAIM_SQL)
        .and_then(|mut stmt| stmt.query_row([now_sql], |row| row.get(0)).optional())
        .map_err(sql("pick the next job"))?;
    let Some(id) = next else {
        return Ok(None);
    };
    let id = job_id_from_sql(&id)?;
    let job = transition_tx(conn, id, JobState::Running, JobPatch::new(), now)?;
    conn.prepare_cached("UPDATE jobs SET lease_owner = ?2, lease_expires_at = ?3 WHERE id = ?1")
        .and_then(|mut stmt| {
            stmt.execute(params![id_blob(id), worker, add_duration(now_sql, lease)])
        })
        .map_err(sql("lease a job"))?;
    Ok(Some(job))
}

pub(crate) fn renew_lease_tx(
    conn: &Connection,
    id: JobId,
    worker: &str,
    lease: std::time::Duration,
    now: Timestamp,
) -> Result<bool> {
    let expires = add_duration(ts_to_sql(now)?, lease);
    let changed = conn
        .prepare_cached(
            "UPDATE jobs SET lease_expires_at = ?3 \
             WHERE id = ?1 AND state = 'running' AND lease_owner = ?2",
        )
        .and_then(|mut stmt| stmt.execute(params![id_blob(id), worker, expires]))
        .map_err(sql("renew a lease"))?;
    Ok(changed == 1)
}

pub(crate) fn set_pgid_tx(conn: &Connection, id: JobId, pgid: i32, now: Timestamp) -> Result<()> {
    ensure_exists(conn, id)?;
    conn.prepare_cached(
        "INSERT OR REPLACE INTO step_pgids (job_id, pgid, recorded_at) VALUES (?1, ?2, ?3)",
    )
    .and_then(|mut stmt| stmt.execute(params![id_blob(id), pgid, ts_to_sql(now).ok()]))
    .map_err(sql("record a process group"))?;
    Ok(())
}

pub(crate) fn clear_pgid_tx(conn: &Connection, id: JobId, pgid: i32) -> Result<()> {
    conn.prepare_cached("DELETE FROM step_pgids WHERE job_id = ?1 AND pgid = ?2")
        .and_then(|mut stmt| stmt.execute(params![id_blob(id), pgid]))
        .map_err(sql("forget a process group"))?;
    Ok(())
}

pub(crate) fn recover_tx(conn: &Connection, now: Timestamp) -> Result<RecoveryReport> {
    let ids: Vec<Vec<u8>> = conn
        .prepare_cached(
            "SELECT id FROM jobs WHERE state IN ('running', 'interrupted') ORDER BY seq",
        )
        .and_then(|mut stmt| {
            stmt.query_map([], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(sql("find interrupted jobs"))?;
    let mut report = RecoveryReport::default();
    for id in ids {
        let id = job_id_from_sql(&id)?;
        let mut job = load_doc(conn, id)?;
        if job.state() == JobState::Running {
            move_job(conn, &mut job, JobState::Interrupted, now)?;
        }
        if job.interruptions <= 1 {
            move_job(conn, &mut job, JobState::Queued, now)?;
            report.requeued.push(id);
        } else {
            move_job(conn, &mut job, JobState::Failed, now)?;
            job.error = Some(INTERRUPTED_TWICE.to_owned());
            report.failed.push(id);
        }
        store_doc(conn, &mut job)?;
    }
    report.pgids = conn
        .prepare_cached("SELECT job_id, pgid FROM step_pgids ORDER BY recorded_at, pgid")
        .and_then(|mut stmt| {
            stmt.query_map([], |row| Ok((row.get::<_, Vec<u8>>(0)?, row.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(sql("read process groups"))?
        .into_iter()
        .map(|(job, pgid)| {
            Ok(StepPgid {
                job: job_id_from_sql(&job)?,
                pgid,
            })
        })
        .collect::<Result<_>>()?;
    Ok(report)
}

/// Deletes up to [`PURGE_BATCH`] finished jobs (and what hangs off them)
/// that finished before `cutoff`; returns how many.
pub(crate) fn purge_finished_batch_tx(conn: &Connection, cutoff: Timestamp) -> Result<usize> {
    let cutoff = ts_to_sql(cutoff)?;
    let batch = i64::try_from(PURGE_BATCH).unwrap_or(i64::MAX);
    let ids: Vec<Vec<u8>> = conn
        .prepare_cached(
            "SELECT id FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?1 \
             AND state NOT IN ('queued', 'running', 'interrupted') LIMIT ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_map(params![cutoff, batch], |row| row.get(0))?
                .collect::<rusqlite::Result<_>>()
        })
        .map_err(sql("find finished jobs"))?;
    for id in &ids {
        for statement in [
            "DELETE FROM job_steps WHERE job_id = ?1",
            "DELETE FROM step_pgids WHERE job_id = ?1",
            "DELETE FROM backups WHERE job_id = ?1",
            "DELETE FROM jobs WHERE id = ?1",
        ] {
            conn.prepare_cached(statement)
                .and_then(|mut stmt| stmt.execute([id]))
                .map_err(sql("purge a job"))?;
        }
    }
    Ok(ids.len())
}

// === reads ===

fn load_steps(conn: &Connection, id: JobId, with_tails: bool) -> Result<Vec<StepResult>> {
    let rows: Vec<(String, Option<String>)> = conn
        .prepare_cached(if with_tails {
            "SELECT result, output_tail FROM job_steps WHERE job_id = ?1 ORDER BY idx"
        } else {
            "SELECT result, NULL FROM job_steps WHERE job_id = ?1 ORDER BY idx"
        })
        .and_then(|mut stmt| {
            stmt.query_map([id_blob(id)], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect()
        })
        .map_err(sql("read job steps"))?;
    rows.into_iter()
        .map(|(result, tail)| {
            let mut step: StepResult =
                serde_json::from_str(&result).map_err(|err| StoreError::Decode {
                    what: "step result",
                    detail: err.to_string(),
                })?;
            step.output_tail = tail;
            Ok(step)
        })
        .collect()
}

/// The steps (without their output tails) of every job in `ids`, by job:
/// one query per chunk of jobs instead of one per job, which was most of
/// the cost of listing a page.
fn load_steps_of(
    conn: &Connection,
    ids: &[[u8; 16]],
) -> Result<std::collections::HashMap<[u8; 16], Vec<StepResult>>> {
    /// Jobs per query, well under SQLite's limit on bound parameters.
    const CHUNK: usize = 500;
    let mut steps: std::collections::HashMap<[u8; 16], Vec<StepResult>> =
        std::collections::HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(CHUNK) {
        let marks = vec!["?"; chunk.len()].join(", ");
        let query = format!(
            "SELECT job_id, result FROM job_steps WHERE job_id IN ({marks}) ORDER BY job_id, idx"
        );
        let rows: Vec<(Vec<u8>, String)> = conn
            .prepare_cached(&query)
            .and_then(|mut stmt| {
                stmt.query_map(params_from_iter(chunk.iter()), |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })?
                .collect()
            })
            .map_err(sql("read job steps"))?;
        for (job, result) in rows {
            let Ok(job) = <[u8; 16]>::try_from(job.as_slice()) else {
                continue;
            };
            let step: StepResult =
                serde_json::from_str(&result).map_err(|err| StoreError::Decode {
                    what: "step result",
                    detail: err.to_string(),
                })?;
            steps.entry(job).or_default().push(step);
        }
    }
    Ok(steps)
}

pub(crate) fn get(conn: &Connection, id: JobId) -> Result<Option<Job>> {
    match load_doc(conn, id) {
        Ok(mut job) => {
            job.steps = load_steps(conn, id, true)?;
            Ok(Some(job))
        }
        Err(StoreError::JobNotFound { .. }) => Ok(None),
        Err(err) => Err(err),
    }
}

fn filter_sql(filter: &JobFilter, clauses: &mut Vec<String>, values: &mut Vec<Value>) {
    if !filter.states.is_empty() {
        let marks = vec!["?"; filter.states.len()].join(", ");
        clauses.push(format!("state IN ({marks})"));
        values.extend(
            filter
                .states
                .iter()
                .map(|state| Value::Text(state.as_str().to_owned())),
        );
    }
    if let Some(repo) = &filter.repo {
        clauses.push("repo = ?".into());
        values.push(Value::Text(repo.as_str().to_owned()));
    }
    if let Some(pipeline) = &filter.pipeline {
        clauses.push("pipeline = ?".into());
        values.push(Value::Text(pipeline.clone()));
    }
    if let Some(rollback) = filter.rollback {
        // The rollback state lives only in the document; a filter on it is
        // rare (start-up recovery) and may scan.
        clauses.push("json_extract(doc, '$.rollback') = ?".into());
        values.push(Value::Text(rollback.as_str().to_owned()));
    }
}

fn where_sql(clauses: &[String]) -> String {
    if clauses.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", clauses.join(" AND "))
    }
}

pub(crate) fn list(conn: &Connection, filter: &JobFilter, page: &PageRequest) -> Result<Page<Job>> {
    let limit = page.effective_limit();
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    filter_sql(filter, &mut clauses, &mut values);
    if let Some(cursor) = &page.cursor {
        let cursor = Cursor::decode(CURSOR_TAG, cursor)?;
        clauses.push("(created_at, seq) < (?, ?)".into());
        values.push(Value::Integer(cursor.time));
        values.push(Value::Integer(cursor.seq));
    }
    values.push(Value::Integer(i64::from(limit) + 1));
    let query = format!(
        "SELECT seq, created_at, doc FROM jobs{} ORDER BY created_at DESC, seq DESC LIMIT ?",
        where_sql(&clauses)
    );
    let rows: Vec<(i64, i64, String)> = conn
        .prepare_cached(&query)
        .and_then(|mut stmt| {
            stmt.query_map(params_from_iter(values), |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
            })?
            .collect()
        })
        .map_err(sql("list jobs"))?;
    let more = rows.len() > limit as usize;
    let mut jobs = Vec::with_capacity(rows.len().min(limit as usize));
    for (seq, created_at, doc) in rows.into_iter().take(limit as usize) {
        jobs.push((seq, created_at, decode_doc(&doc)?));
    }
    let ids: Vec<[u8; 16]> = jobs.iter().map(|(_, _, job)| id_blob(job.id)).collect();
    let mut steps = load_steps_of(conn, &ids)?;
    let mut items = Vec::with_capacity(jobs.len());
    let mut last = None;
    for (seq, created_at, mut job) in jobs {
        job.steps = steps.remove(&id_blob(job.id)).unwrap_or_default();
        items.push(job);
        last = Some(Cursor {
            time: created_at,
            seq,
        });
    }
    let next_cursor = if more {
        last.map(|cursor| cursor.encode(CURSOR_TAG))
    } else {
        None
    };
    Ok(Page { items, next_cursor })
}

pub(crate) fn count(conn: &Connection, filter: &JobFilter) -> Result<u64> {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    filter_sql(filter, &mut clauses, &mut values);
    let query = format!("SELECT count(*) FROM jobs{}", where_sql(&clauses));
    let count: i64 = conn
        .prepare_cached(&query)
        .and_then(|mut stmt| stmt.query_row(params_from_iter(values), |row| row.get(0)))
        .map_err(sql("count jobs"))?;
    Ok(u64::try_from(count).unwrap_or(0))
}

pub(crate) fn find_queued(
    conn: &Connection,
    repo: &RepoId,
    pipeline: &str,
) -> Result<Option<JobId>> {
    let id: Option<Vec<u8>> = conn
        .prepare_cached(FIND_QUEUED_SQL)
        .and_then(|mut stmt| {
            stmt.query_row(params![repo.as_str(), pipeline], |row| row.get(0))
                .optional()
        })
        .map_err(sql("find a queued job"))?;
    id.as_deref().map(job_id_from_sql).transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store schema with `queued` queued jobs (of every priority, some due
    /// later) and `finished` succeeded ones, spread over 20 repositories and
    /// 5 pipelines.
    fn database(dir: &std::path::Path, queued: i64, finished: i64) -> Connection {
        let path = dir.join("plan.sqlite3");
        let mut conn = Connection::open(&path).unwrap();
        crate::sqlite::schema::migrate(&mut conn, &path).unwrap();
        insert_rows(&conn, 0, queued, "queued");
        insert_rows(&conn, queued, finished, "succeeded");
        conn
    }

    fn insert_rows(conn: &Connection, from: i64, count: i64, state: &str) {
        if count == 0 {
            return;
        }
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT ?1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1 + ?2 - 1) \
             INSERT INTO jobs (id, repo, pipeline, state, priority, created_at, due_at, doc) \
             SELECT randomblob(16), 'r' || (i % 20), 'p' || (i % 5), ?3, 10 * (1 + i % 6), i, \
             CASE WHEN i % 7 = 0 THEN i + 1000000 ELSE i END, '{}' FROM n",
            params![from, count, state],
        )
        .unwrap();
    }

    /// The `detail` column of `EXPLAIN QUERY PLAN` for `query`.
    fn plan(conn: &Connection, query: &str, values: impl rusqlite::Params) -> Vec<String> {
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {query}"))
            .unwrap();
        stmt.query_map(values, |row| row.get::<_, String>(3))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap()
    }

    fn assert_seek(conn: &Connection, query: &str, values: impl rusqlite::Params, index: &str) {
        let plan = plan(conn, query, values);
        assert!(
            plan.iter().any(|line| line.starts_with("SEARCH jobs USING")
                && line.contains(&format!("INDEX {index} (state=?"))),
            "{query}: expected a seek into {index}, got {plan:?}"
        );
        assert!(
            plan.iter().all(|line| !line.contains("TEMP B-TREE")),
            "{query}: no sort expected, got {plan:?}"
        );
    }

    fn assert_claim_and_lookup_are_seeks(conn: &Connection) {
        assert_seek(conn, CLAIM_SQL, [i64::MAX], "jobs_claim");
        assert_seek(conn, FIND_QUEUED_SQL, ["r1", "p1"], "jobs_queued_by_repo");
    }

    #[test]
    fn the_claim_and_the_coalescing_lookup_are_index_seeks() {
        // Without statistics (a new database), with statistics gathered on a
        // long queue, and with statistics gathered while the queue was empty
        // (`PRAGMA optimize` at close may run `ANALYZE` at any time).
        let dir = tempfile::tempdir().unwrap();
        let conn = database(dir.path(), 5000, 5000);
        assert_claim_and_lookup_are_seeks(&conn);
        conn.execute_batch("ANALYZE").unwrap();
        assert_claim_and_lookup_are_seeks(&conn);

        let dir = tempfile::tempdir().unwrap();
        let conn = database(dir.path(), 0, 20_000);
        conn.execute_batch("ANALYZE").unwrap();
        insert_rows(&conn, 20_000, 5000, "queued");
        assert_claim_and_lookup_are_seeks(&conn);
    }

    #[test]
    fn the_queue_counter_follows_inserts_state_changes_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let conn = database(dir.path(), 300, 200);
        let count = |conn: &Connection| -> u64 {
            let counted: i64 = conn
                .query_row(
                    "SELECT count(*) FROM jobs WHERE state = 'queued'",
                    [],
                    |row| row.get(0),
                )
                .unwrap();
            assert_eq!(queued_count(conn).unwrap(), u64::try_from(counted).unwrap());
            u64::try_from(counted).unwrap()
        };
        assert_eq!(count(&conn), 300);
        conn.execute("UPDATE jobs SET state = 'running' WHERE seq <= 10", [])
            .unwrap();
        assert_eq!(count(&conn), 290);
        // Rewriting the same state (what `store_doc` does) changes nothing.
        conn.execute("UPDATE jobs SET state = state, doc = doc", [])
            .unwrap();
        assert_eq!(count(&conn), 290);
        conn.execute("UPDATE jobs SET state = 'queued' WHERE seq <= 5", [])
            .unwrap();
        assert_eq!(count(&conn), 295);
        conn.execute("DELETE FROM jobs WHERE seq > 290", [])
            .unwrap();
        assert_eq!(count(&conn), 285);
        // A rolled-back savepoint takes its count changes with it.
        conn.execute_batch(
            "BEGIN; SAVEPOINT op; DELETE FROM jobs WHERE state = 'queued'; \
             ROLLBACK TO op; RELEASE op; COMMIT;",
        )
        .unwrap();
        assert_eq!(count(&conn), 285);
    }

    #[test]
    fn tails_keep_the_last_bytes_on_a_char_boundary() {
        assert_eq!(truncate_tail("hello".into(), 10), "hello");
        assert_eq!(truncate_tail("hello".into(), 3), "llo");
        // 'é' is two bytes: cutting inside it moves forward.
        assert_eq!(truncate_tail("aé".into(), 1), "");
        assert_eq!(truncate_tail("aéb".into(), 2), "b");
        assert_eq!(truncate_tail("aéb".into(), 3), "éb");
    }
}
