//! `pause`, `resume` and `stop --emergency`: the manual overrides of
//! `POST /api/control/{pause,resume,emergency-stop}`.

use std::fmt::Write as _;
use std::process::ExitCode;

use serde_json::Value;

use super::{Ctx, print_json};
use crate::output::{self, Mode};

/// Posts `/api/control/{action}` and reports the orchestrator's new state.
pub(crate) fn control(ctx: &Ctx, action: &str) -> anyhow::Result<ExitCode> {
    let command = if action == "emergency-stop" {
        "stop"
    } else {
        action
    };
    let mode = ctx.mode(command)?;
    let value = ctx
        .client()?
        .post(&format!("/api/control/{action}"), None)?;
    match mode {
        Mode::Json => print_json(&value),
        Mode::Table => {
            output::print(&render_control(&value))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `orchestrator: paused`, plus the jobs an emergency stop cancelled.
pub(crate) fn render_control(value: &Value) -> String {
    let mut out = format!("orchestrator: {}\n", output::text(value.get("state")));
    if let Some(cancelled) = value.get("cancelled").and_then(Value::as_array) {
        match cancelled.len() {
            1 => out.push_str("cancelled 1 job\n"),
            n => {
                let _ = writeln!(out, "cancelled {n} jobs");
            }
        }
        for id in cancelled {
            let _ = writeln!(out, "  {}", output::text(Some(id)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn control_answers_show_the_state_and_cancelled_jobs() {
        assert_eq!(
            render_control(&json!({"state": "paused"})),
            "orchestrator: paused\n"
        );
        assert_eq!(
            render_control(&json!({"state": "emergencyStopped", "cancelled": ["a"]})),
            "orchestrator: emergencyStopped\ncancelled 1 job\n  a\n"
        );
    }
}
