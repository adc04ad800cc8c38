//! `status` (`GET /api/dashboard`) and `health` (`GET /api/health`).
//!
//! Both read untyped JSON: the dashboard view is the server's own shape
//! (no orchex-core type), and a health check's level is read from `level`
//! or `status`, whichever the daemon sends.

use std::process::ExitCode;

use orchex_core::Timestamp;
use serde_json::Value;

use super::{Ctx, print_json};
use crate::client::EXIT_FAILURE;
use crate::output::{self, Cell, Mode, Style, Table, key_values, text};

/// `orchexctl status`.
pub(crate) fn status(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mode = ctx.mode("status")?;
    let view = ctx.client()?.get("/api/dashboard", &[])?;
    match mode {
        Mode::Json => print_json(&view),
        Mode::Table => {
            output::print(&render_dashboard(&view, ctx.style, Timestamp::now()))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `orchexctl health`: exit 1 when the daemon says 503 or `unhealthy`.
pub(crate) fn health(ctx: &Ctx) -> anyhow::Result<ExitCode> {
    let mode = ctx.mode("health")?;
    let (status, body) = ctx.client()?.get_health("/api/health")?;
    match mode {
        Mode::Json => output::print(&output::json(&body))?,
        Mode::Table => output::print(&render_health(&body, ctx.style))?,
    }
    Ok(if is_unhealthy(status, &body) {
        ExitCode::from(EXIT_FAILURE)
    } else {
        ExitCode::SUCCESS
    })
}

/// Whether a health answer means "unhealthy" (a degraded daemon still
/// serves, so it is not a failure).
pub(crate) fn is_unhealthy(status: u16, body: &Value) -> bool {
    status == 503 || body.get("status").and_then(Value::as_str) == Some("unhealthy")
}

/// The level of one health check: `{"level": ..}` per the API contract, or
/// `{"status": ..}` as `orchex_core::ComponentHealth` serialises it.
fn check_level(check: &Value) -> String {
    match check {
        Value::String(level) => level.clone(),
        _ => text(check.get("level").or_else(|| check.get("status"))),
    }
}

/// The health answer as text: the overall status, then one line per check.
pub(crate) fn render_health(body: &Value, style: Style) -> String {
    let overall = text(body.get("status"));
    let mut out = format!(
        "status  {}\n",
        style.paint(&overall, output::health_color(&overall))
    );
    if let Some(checks) = body.get("checks").and_then(Value::as_object)
        && !checks.is_empty()
    {
        let mut table = Table::new(&["COMPONENT", "LEVEL", "REASON"]);
        let mut checks: Vec<_> = checks.iter().collect();
        checks.sort_by_key(|(name, _)| *name);
        for (name, check) in checks {
            let level = check_level(check);
            let color = output::health_color(&level);
            table.row(vec![
                name.as_str().into(),
                Cell::colored(level, color),
                check
                    .get("reason")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .into(),
            ]);
        }
        out.push('\n');
        out.push_str(&table.render(style));
    }
    out
}

/// `name n, name n` for an object of counts, or `-`.
fn counts(value: Option<&Value>) -> String {
    let Some(map) = value.and_then(Value::as_object) else {
        return "-".to_owned();
    };
    // Sorted, like every map rendered: serde_json's own order depends on a
    // cargo feature other crates may switch on.
    let mut entries: Vec<_> = map.iter().collect();
    entries.sort_by_key(|(name, _)| *name);
    let parts: Vec<String> = entries
        .into_iter()
        .filter(|(_, n)| n.as_u64() != Some(0))
        .map(|(name, n)| format!("{name} {}", text(Some(n))))
        .collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The dashboard view as text: a summary block, then the running jobs and
/// any breaker that is not closed.
pub(crate) fn render_dashboard(view: &Value, style: Style, now: Timestamp) -> String {
    let orchestrator = view.get("orchestrator").unwrap_or(&Value::Null);
    let stats = orchestrator.get("stats").unwrap_or(&Value::Null);
    let state = text(orchestrator.get("state"));
    let state_color = match state.as_str() {
        "running" => Some(output::Color::Green),
        "paused" => Some(output::Color::Yellow),
        "emergencyStopped" | "stopped" => Some(output::Color::Red),
        _ => None,
    };
    let health = text(view.pointer("/health/status"));
    let running = orchestrator
        .get("running")
        .and_then(Value::as_array)
        .map_or(&[][..], Vec::as_slice);
    let repositories = view
        .get("repositories")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    let breakers: Vec<&Value> = orchestrator
        .get("breakers")
        .and_then(Value::as_array)
        .map(|all| {
            all.iter()
                .filter(|b| b.get("state").and_then(Value::as_str) != Some("closed"))
                .collect()
        })
        .unwrap_or_default();

    let mut out = key_values(&[
        ("state", style.paint(&state, state_color)),
        (
            "health",
            style.paint(&health, output::health_color(&health)),
        ),
        ("queue depth", text(orchestrator.get("queueDepth"))),
        (
            "concurrency",
            format!(
                "{} running, limit {} of max {}",
                running.len(),
                text(orchestrator.get("concurrencyLimit")),
                text(orchestrator.get("maxConcurrent"))
            ),
        ),
        (
            "cycles",
            format!(
                "{} (avg {}, p95 {})",
                text(stats.get("totalCycles")),
                output::ms_value(stats.get("averageCycleMs")),
                output::ms_value(stats.get("p95CycleMs"))
            ),
        ),
        (
            "work",
            format!(
                "{} events processed, {} regenerations, {} deliveries",
                text(stats.get("eventsProcessed")),
                text(stats.get("regenerations")),
                text(stats.get("deliveries"))
            ),
        ),
        ("jobs by outcome", counts(stats.get("jobsByOutcome"))),
        ("repositories", repositories.to_string()),
    ]);

    if !running.is_empty() {
        let mut table = Table::new(&["ID", "REPO", "PIPELINE", "STEPS", "AGE"]);
        for job in running {
            let age = job
                .get("startedAt")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<Timestamp>().ok())
                .map_or_else(|| "-".to_owned(), |at| output::age(at, now));
            table.row(vec![
                text(job.get("id")).into(),
                text(job.get("repo")).into(),
                text(job.get("pipeline")).into(),
                format!(
                    "{}/{}",
                    text(job.get("stepsDone")),
                    text(job.get("stepsTotal"))
                )
                .into(),
                age.into(),
            ]);
        }
        out.push_str("\nRunning jobs\n");
        out.push_str(&table.render(style));
    }

    if !breakers.is_empty() {
        let mut table = Table::new(&["BREAKER", "STATE", "FAILURES", "REJECTIONS"]);
        for breaker in breakers {
            let state = text(breaker.get("state"));
            let color = if state == "open" {
                Some(output::Color::Red)
            } else {
                Some(output::Color::Yellow)
            };
            table.row(vec![
                text(breaker.get("name")).into(),
                Cell::colored(state, color),
                text(breaker.get("failures")).into(),
                text(breaker.get("rejections")).into(),
            ]);
        }
        out.push_str("\nCircuit breakers not closed\n");
        out.push_str(&table.render(style));
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    const PLAIN: Style = Style { color: false };

    #[test]
    fn unhealthy_means_503_or_the_status() {
        assert!(is_unhealthy(503, &json!({})));
        assert!(is_unhealthy(200, &json!({"status": "unhealthy"})));
        assert!(!is_unhealthy(200, &json!({"status": "degraded"})));
        assert!(!is_unhealthy(200, &json!({"status": "ok"})));
    }

    #[test]
    fn health_lists_checks_by_level_or_status() {
        let body = json!({
            "status": "degraded",
            "checks": {
                "store": {"level": "degraded", "reason": "disk full"},
                "watcher": {"status": "ok"}
            }
        });
        assert_eq!(
            render_health(&body, PLAIN),
            "status  degraded\n\nCOMPONENT  LEVEL     REASON\nstore      degraded  disk full\nwatcher    ok\n"
        );
    }

    #[test]
    fn dashboard_summarises_state_queue_and_running_jobs() {
        let view = json!({
            "orchestrator": {
                "state": "running",
                "queueDepth": 3,
                "concurrencyLimit": 4,
                "maxConcurrent": 8,
                "stats": {
                    "totalCycles": 120, "averageCycleMs": 35.2, "p95CycleMs": 80,
                    "eventsProcessed": 1000, "regenerations": 12, "deliveries": 10,
                    "jobsByOutcome": {"succeeded": 10, "failed": 2, "cancelled": 0}
                },
                "running": [{"id": "j1", "repo": "api", "pipeline": "fmt",
                             "startedAt": "2025-01-31T11:59:00Z", "stepsDone": 1, "stepsTotal": 3}],
                "breakers": [{"name": "api/fmt", "state": "open", "failures": 5, "rejections": 2},
                             {"name": "web/fmt", "state": "closed", "failures": 0, "rejections": 0}]
            },
            "health": {"status": "ok", "checks": {}},
            "repositories": [{"name": "api"}, {"name": "web"}]
        });
        let now = "2025-01-31T12:00:00Z".parse().unwrap();
        let text = render_dashboard(&view, PLAIN, now);
        assert!(text.contains("state            running\n"), "{text}");
        assert!(text.contains("queue depth      3\n"), "{text}");
        assert!(
            text.contains("concurrency      1 running, limit 4 of max 8\n"),
            "{text}"
        );
        assert!(
            text.contains("cycles           120 (avg 35ms, p95 80ms)\n"),
            "{text}"
        );
        assert!(
            text.contains("jobs by outcome  failed 2, succeeded 10\n"),
            "{text}"
        );
        assert!(text.contains("repositories     2\n"), "{text}");
        assert!(text.contains("j1  api   fmt       1/3    1m\n"), "{text}");
        assert!(text.contains("api/fmt  open"), "{text}");
        assert!(!text.contains("web/fmt"), "{text}");
    }

    #[test]
    fn dashboard_tolerates_missing_fields() {
        let text = render_dashboard(&json!({}), PLAIN, Timestamp::now());
        assert!(text.starts_with("state            -\n"), "{text}");
    }
}
