//! `jobs`, `job ID`, `cancel` and `rollback`, and the job renderings that
//! `run` reuses.
//!
//! Jobs are read as `orchex_core::Job`, the type the daemon serialises, so
//! states and skip reasons are typed; JSON output prints what the daemon
//! sent, unchanged.

use std::fmt::Write as _;
use std::process::ExitCode;

use orchex_core::{Job, JobId, JobState, Timestamp};
use serde_json::{Value, json};

use super::{Ctx, print_json};
use crate::cli::{CancelArgs, JobsArgs};
use crate::client::{ClientError, encode};
use crate::output::{self, Cell, Mode, Style, Table, key_values, one_line};

/// A job from the daemon's JSON.
pub(crate) fn parse_job(path: &str, value: &Value) -> Result<Job, ClientError> {
    serde_json::from_value(value.clone()).map_err(|err| ClientError::invalid(path, err))
}

/// `orchexctl jobs`.
pub(crate) fn list(ctx: &Ctx, args: &JobsArgs) -> anyhow::Result<ExitCode> {
    let mode = ctx.mode("jobs")?;
    let mut query = Vec::new();
    if !args.state.is_empty() {
        let states: Vec<&str> = args.state.iter().map(|state| state.as_str()).collect();
        query.push(("state", states.join(",")));
    }
    if let Some(repo) = &args.repo {
        query.push(("repo", repo.as_str().to_owned()));
    }
    if let Some(pipeline) = &args.pipeline {
        query.push(("pipeline", pipeline.clone()));
    }
    let limit = usize::try_from(args.limit).unwrap_or(usize::MAX);
    let items = ctx.client()?.list("/api/jobs", &query, limit)?;
    match mode {
        Mode::Json => print_json(&Value::Array(items)),
        Mode::Table => {
            let jobs = items
                .iter()
                .map(|item| parse_job("/api/jobs", item))
                .collect::<Result<Vec<_>, _>>()?;
            if jobs.is_empty() {
                output::print("no jobs\n")?;
            } else {
                output::print(&jobs_table(&jobs, ctx.style, Timestamp::now()))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `orchexctl job ID`.
pub(crate) fn show(ctx: &Ctx, id: JobId) -> anyhow::Result<ExitCode> {
    let mode = ctx.mode("job")?;
    let path = format!("/api/jobs/{}", encode(&id.to_string()));
    let value = ctx.client()?.get(&path, &[])?;
    match mode {
        Mode::Json => print_json(&value),
        Mode::Table => {
            let job = parse_job(&path, &value)?;
            output::print(&render_job(&job, ctx.style, Timestamp::now()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `orchexctl cancel ID` and `orchexctl cancel --all [filters]`.
pub(crate) fn cancel(ctx: &Ctx, args: &CancelArgs) -> anyhow::Result<ExitCode> {
    let mode = ctx.mode("cancel")?;
    let client = ctx.client()?;
    if let Some(id) = args.id {
        let path = format!("/api/jobs/{}/cancel", encode(&id.to_string()));
        let value = client.post(&path, None)?;
        return match mode {
            Mode::Json => print_json(&value),
            Mode::Table => {
                let job = parse_job(&path, &value)?;
                output::print(&format!("job {} is {}\n", job.id, job.state()))?;
                Ok(ExitCode::SUCCESS)
            }
        };
    }
    let mut filter = serde_json::Map::new();
    if let Some(state) = args.state {
        filter.insert("state".into(), json!(state.as_str()));
    }
    if let Some(repo) = &args.repo {
        filter.insert("repo".into(), json!(repo.as_str()));
    }
    if let Some(pipeline) = &args.pipeline {
        filter.insert("pipeline".into(), json!(pipeline));
    }
    let value = client.post("/api/jobs/cancel", Some(&Value::Object(filter)))?;
    match mode {
        Mode::Json => print_json(&value),
        Mode::Table => {
            output::print(&render_cancelled(&value))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The answer of a batch cancel: how many, then the ids.
pub(crate) fn render_cancelled(value: &Value) -> String {
    let ids: Vec<String> = value
        .get("cancelled")
        .and_then(Value::as_array)
        .map(|ids| ids.iter().map(|id| output::text(Some(id))).collect())
        .unwrap_or_default();
    let mut out = match ids.len() {
        0 => "no job to cancel\n".to_owned(),
        1 => "cancelled 1 job\n".to_owned(),
        n => format!("cancelled {n} jobs\n"),
    };
    for id in ids {
        let _ = writeln!(out, "  {id}");
    }
    out
}

/// `orchexctl rollback ID`.
pub(crate) fn rollback(ctx: &Ctx, id: JobId) -> anyhow::Result<ExitCode> {
    let mode = ctx.mode("rollback")?;
    let path = format!("/api/jobs/{}/rollback", encode(&id.to_string()));
    let value = ctx.client()?.post(&path, None)?;
    match mode {
        Mode::Json => print_json(&value),
        Mode::Table => {
            let job = parse_job(&path, &value)?;
            output::print(&format!("job {} is {}\n", job.id, job.state()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// How long the job ran (until now while it still runs), or `-`.
pub(crate) fn job_duration(job: &Job, now: Timestamp) -> String {
    match (job.started_at, job.finished_at) {
        (Some(start), Some(end)) => output::between(start, end),
        (Some(start), None) if job.state() == JobState::Running => output::between(start, now),
        _ => "-".to_owned(),
    }
}

/// Why the job ended as it did: the error or the skip reason, if any.
pub(crate) fn job_note(job: &Job) -> String {
    if let Some(error) = &job.error {
        return one_line(error);
    }
    if let Some(reason) = &job.skip_reason {
        return reason.to_string();
    }
    match job.changed {
        Some(false) => "no change".to_owned(),
        _ => String::new(),
    }
}

/// The trigger, with its flags: `manual (force, dry run)`.
fn trigger_text(job: &Job) -> String {
    let mut flags = Vec::new();
    if job.trigger.force {
        flags.push("force");
    }
    if job.trigger.dry_run {
        flags.push("dry run");
    }
    if flags.is_empty() {
        job.trigger.kind.to_string()
    } else {
        format!("{} ({})", job.trigger.kind, flags.join(", "))
    }
}

/// A job list as a table.
pub(crate) fn jobs_table(jobs: &[Job], style: Style, now: Timestamp) -> String {
    let mut table = Table::new(&[
        "ID", "REPO", "PIPELINE", "STATE", "TRIGGER", "AGE", "DURATION", "NOTE",
    ]);
    for job in jobs {
        table.row(vec![
            job.id.to_string().into(),
            job.repo.as_str().into(),
            job.pipeline.as_str().into(),
            Cell::colored(job.state().as_str(), output::state_color(job.state())),
            job.trigger.kind.as_str().into(),
            output::age(job.created_at, now).into(),
            job_duration(job, now).into(),
            output::truncate(&job_note(job), 60).into(),
        ]);
    }
    table.render(style)
}

/// One job in detail: the summary, the steps, then each step's output tail.
pub(crate) fn render_job(job: &Job, style: Style, now: Timestamp) -> String {
    let at = |ts: Option<Timestamp>| {
        ts.map_or_else(
            || "-".to_owned(),
            |ts| format!("{} ({} ago)", output::timestamp(ts), output::age(ts, now)),
        )
    };
    let mut pairs = vec![
        ("id", job.id.to_string()),
        ("repo", job.repo.to_string()),
        ("pipeline", job.pipeline.clone()),
        (
            "state",
            style.paint(job.state().as_str(), output::state_color(job.state())),
        ),
        ("trigger", trigger_text(job)),
        ("created", at(Some(job.created_at))),
        ("started", at(job.started_at)),
        ("finished", at(job.finished_at)),
        ("duration", job_duration(job, now)),
    ];
    if let Some(changed) = job.changed {
        pairs.push(("changed", if changed { "yes" } else { "no" }.to_owned()));
    }
    if let Some(reason) = &job.skip_reason {
        pairs.push(("skipped", reason.to_string()));
    }
    if let Some(error) = &job.error {
        pairs.push(("error", error.clone()));
    }
    if let Some(diff) = &job.diff {
        pairs.push((
            "diff",
            format!(
                "{} added, {} modified, {} deleted; +{} -{} lines",
                diff.added.len(),
                diff.modified.len(),
                diff.deleted.len(),
                diff.lines_added,
                diff.lines_removed
            ),
        ));
    }
    if let Some(delivery) = &job.delivery {
        let mut text = delivery.kind.to_string();
        if let Some(branch) = &delivery.branch {
            let _ = write!(text, " {branch}");
        }
        if let Some(commit) = &delivery.commit {
            let _ = write!(text, " @ {}", commit.get(..12).unwrap_or(commit));
        }
        let _ = write!(text, ", {} files", delivery.files.len());
        if !delivery.conflicts.is_empty() {
            let _ = write!(text, ", {} conflicts", delivery.conflicts.len());
        }
        pairs.push(("delivery", text));
    }
    if let Some(rollback) = job.rollback {
        let text = serde_json::to_value(rollback)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        pairs.push(("rollback", text));
    }
    if job.interruptions > 0 {
        pairs.push(("interruptions", job.interruptions.to_string()));
    }
    let mut out = key_values(&pairs);

    if !job.steps.is_empty() {
        let mut table = Table::new(&["#", "STEP", "EXIT", "DURATION", ""]).right_aligned(&[0, 2]);
        for (index, step) in job.steps.iter().enumerate() {
            let exit = step
                .exit_code
                .map_or_else(|| "-".to_owned(), |code| code.to_string());
            let failed = step.timed_out || step.exit_code.is_some_and(|code| code != 0);
            let mut notes = Vec::new();
            if step.validation {
                notes.push("validation");
            }
            if step.timed_out {
                notes.push("timed out");
            }
            table.row(vec![
                (index + 1).to_string().into(),
                step.name.as_str().into(),
                Cell::colored(exit, failed.then_some(output::Color::Red)),
                step.duration_ms
                    .map_or_else(|| "-".to_owned(), output::duration_ms)
                    .into(),
                notes.join(", ").into(),
            ]);
        }
        out.push_str("\nSteps\n");
        out.push_str(&table.render(style));
    }
    for step in &job.steps {
        if let Some(tail) = step.output_tail.as_deref().filter(|t| !t.trim().is_empty()) {
            let _ = writeln!(out, "\nOutput of {} (tail)", step.name);
            for line in tail.trim_end().lines() {
                let _ = writeln!(out, "  {}", strip_escapes(line));
            }
        }
    }
    out
}

/// `line` without terminal control sequences; a tool's colours are kept
/// out so that its output cannot move the cursor or retitle the terminal.
fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // CSI: ESC [ params final-byte (0x40..=0x7e).
            if chars.peek() == Some(&'[') {
                chars.next();
                for next in chars.by_ref() {
                    if ('\x40'..='\x7e').contains(&next) {
                        break;
                    }
                }
            }
        } else if c == '\t' {
            out.push_str("    ");
        } else if !c.is_control() {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const PLAIN: Style = Style { color: false };

    fn job_json() -> Value {
        json!({
            "id": "01900000-0000-7000-8000-000000000001",
            "repo": "api",
            "pipeline": "codegen",
            "state": "failed",
            "trigger": {"repo": "api", "kind": "manual", "force": true, "at": "2025-01-31T11:55:00Z"},
            "priority": 60,
            "createdAt": "2025-01-31T11:55:00Z",
            "startedAt": "2025-01-31T11:55:01Z",
            "finishedAt": "2025-01-31T11:55:05.500Z",
            "error": "step generate exited with 2",
            "steps": [
                {"name": "generate", "exitCode": 2, "durationMs": 4200,
                 "outputTail": "warning\n\x1b[31merror: boom\x1b[0m\n"}
            ],
            "interruptions": 0
        })
    }

    #[test]
    fn jobs_parse_from_the_daemon_json() {
        let job = parse_job("/api/jobs/x", &job_json()).unwrap();
        assert_eq!(job.state(), JobState::Failed);
        assert!(parse_job("/api/jobs/x", &json!({"id": 1})).is_err());
    }

    #[test]
    fn job_tables_show_state_age_duration_and_note() {
        let job = parse_job("/api/jobs", &job_json()).unwrap();
        let now = "2025-01-31T12:00:00Z".parse().unwrap();
        assert_eq!(
            jobs_table(&[job], PLAIN, now),
            "ID                                    REPO  PIPELINE  STATE   TRIGGER  AGE  DURATION  NOTE\n\
             01900000-0000-7000-8000-000000000001  api   codegen   failed  manual   5m   4.5s      step generate exited with 2\n"
        );
    }

    #[test]
    fn job_detail_has_steps_and_clean_output_tails() {
        let job = parse_job("/api/jobs", &job_json()).unwrap();
        let now = "2025-01-31T12:00:00Z".parse().unwrap();
        let text = render_job(&job, PLAIN, now);
        assert!(text.contains("state     failed\n"), "{text}");
        assert!(text.contains("trigger   manual (force)\n"), "{text}");
        assert!(
            text.contains("created   2025-01-31T11:55:00Z (5m ago)\n"),
            "{text}"
        );
        assert!(
            text.contains("error     step generate exited with 2\n"),
            "{text}"
        );
        assert!(text.contains("1  generate     2  4.2s"), "{text}");
        assert!(
            text.contains("Output of generate (tail)\n  warning\n  error: boom\n"),
            "{text}"
        );
        assert!(!text.contains('\x1b'), "{text}");
    }

    #[test]
    fn batch_cancel_lists_the_ids() {
        assert_eq!(
            render_cancelled(&json!({"cancelled": ["a", "b"]})),
            "cancelled 2 jobs\n  a\n  b\n"
        );
        assert_eq!(
            render_cancelled(&json!({"cancelled": []})),
            "no job to cancel\n"
        );
    }
}
