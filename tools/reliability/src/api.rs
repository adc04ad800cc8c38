//! The few API calls the harnesses make, over [`orchex_e2e::Daemon`]'s HTTP
//! helpers (loopback only), with the admin token.

use anyhow::{Result, bail};
use orchex_e2e::{ADMIN, Daemon};
use serde_json::{Value, json};

/// Every job state the API may answer.
pub(crate) const STATES: [&str; 9] = [
    "queued",
    "running",
    "succeeded",
    "failed",
    "cancelled",
    "timedOut",
    "skipped",
    "interrupted",
    "rolledBack",
];

/// Whether `state` is final (neither queued, running nor interrupted).
pub(crate) fn is_final(state: &str) -> bool {
    !matches!(state, "queued" | "running" | "interrupted")
}

/// A job's id and state.
pub(crate) fn id_state(job: &Value) -> Option<(String, String)> {
    Some((
        job["id"].as_str()?.to_owned(),
        job["state"].as_str()?.to_owned(),
    ))
}

/// `GET /api/jobs?<query>`, every page, newest first.
pub(crate) fn all_jobs(daemon: &Daemon, query: &str) -> Result<Vec<Value>> {
    let mut jobs = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut path = format!("/api/jobs?limit=1000{query}");
        if let Some(cursor) = &cursor {
            path.push_str("&cursor=");
            path.push_str(cursor);
        }
        let (status, body) = daemon.get(&path, Some(ADMIN));
        if status != 200 {
            bail!("GET {path} answered {status}: {body}");
        }
        if let Some(items) = body["items"].as_array() {
            jobs.extend(items.iter().cloned());
        }
        match body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return Ok(jobs),
        }
    }
}

/// `POST path` with `body` (`{}` when `None`).
pub(crate) fn post(daemon: &Daemon, path: &str, body: Option<&Value>) -> (u16, Value) {
    daemon.request("POST", path, Some(ADMIN), body)
}

/// `POST /api/jobs` for one pipeline of repository `api`; the jobs answered.
pub(crate) fn submit(daemon: &Daemon, pipeline: &str, force: bool, dry_run: bool) -> Vec<Value> {
    let body = json!({"repo": "api", "pipeline": pipeline, "force": force, "dryRun": dry_run});
    let (status, answer) = post(daemon, "/api/jobs", Some(&body));
    if status == 202 {
        answer["items"].as_array().cloned().unwrap_or_default()
    } else {
        Vec::new()
    }
}

/// `POST /api/jobs/{id}/cancel`; the job answered, if any.
pub(crate) fn cancel(daemon: &Daemon, id: &str) -> Option<Value> {
    let (status, answer) = post(daemon, &format!("/api/jobs/{id}/cancel"), None);
    (status == 200).then_some(answer)
}
