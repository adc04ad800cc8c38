//! `events [--kind K] [--repo R] [--since T] [--limit N] [-o table|json|csv]`.
//!
//! Table and JSON follow `nextCursor` up to the limit (100 unless given).
//! CSV asks the daemon for `format=csv`, with no limit unless one is given,
//! and copies the body to stdout as it arrives: an export of a long history
//! is never held in memory.

use std::process::ExitCode;

use orchex_core::Event;
use serde_json::Value;

use super::{Ctx, print_json};
use crate::cli::EventsArgs;
use crate::client::ClientError;
use crate::output::{self, Cell, Format, Style, Table};

/// How many events a table or JSON listing shows without `--limit`.
const DEFAULT_LIMIT: u32 = 100;

/// `orchexctl events`.
pub(crate) fn events(ctx: &Ctx, args: &EventsArgs) -> anyhow::Result<ExitCode> {
    let client = ctx.client()?;
    let mut query = Vec::new();
    if !args.kind.is_empty() {
        let kinds: Vec<&str> = args.kind.iter().map(|kind| kind.as_str()).collect();
        query.push(("kind", kinds.join(",")));
    }
    if let Some(repo) = &args.repo {
        query.push(("repo", repo.as_str().to_owned()));
    }
    if let Some(since) = args.since {
        query.push(("since", since.to_string()));
    }
    if ctx.format == Format::Csv {
        query.push(("format", "csv".to_owned()));
        // Without a limit the daemon streams every matching event.
        if let Some(limit) = args.limit {
            query.push(("limit", limit.to_string()));
        }
        let mut stdout = std::io::stdout().lock();
        client.stream_to("/api/events", &query, &mut stdout)?;
        return Ok(ExitCode::SUCCESS);
    }
    let limit = usize::try_from(args.limit.unwrap_or(DEFAULT_LIMIT)).unwrap_or(usize::MAX);
    let items = client.list("/api/events", &query, limit)?;
    if ctx.format == Format::Json {
        return print_json(&Value::Array(items));
    }
    let events = items
        .into_iter()
        .map(|item| {
            serde_json::from_value(item).map_err(|err| ClientError::invalid("/api/events", err))
        })
        .collect::<Result<Vec<Event>, _>>()?;
    if events.is_empty() {
        output::print("no events\n")?;
    } else {
        output::print(&events_table(&events, ctx.style))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `repo/pipeline`, `repo`, or `-`.
pub(crate) fn scope(event: &Event) -> String {
    match (&event.repo, &event.pipeline) {
        (Some(repo), Some(pipeline)) => format!("{repo}/{pipeline}"),
        (Some(repo), None) => repo.to_string(),
        (None, Some(pipeline)) => pipeline.clone(),
        (None, None) => "-".to_owned(),
    }
}

/// Events as a table, in the order the daemon sent them.
pub(crate) fn events_table(events: &[Event], style: Style) -> String {
    let mut table = Table::new(&["TIME", "SEVERITY", "KIND", "SCOPE", "MESSAGE"]);
    for event in events {
        table.row(vec![
            output::timestamp(event.ts).into(),
            Cell::colored(
                event.severity.as_str(),
                output::severity_color(event.severity),
            ),
            event.kind.as_str().into(),
            scope(event).into(),
            event.message.as_str().into(),
        ]);
    }
    table.render(style)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    #[test]
    fn events_render_one_line_each() {
        let events: Vec<Event> = serde_json::from_value(json!([
            {"id": "01900000-0000-7000-8000-000000000001", "ts": "2025-01-31T12:00:00.5Z",
             "kind": "job_failed", "severity": "error", "repo": "api", "pipeline": "gen",
             "message": "step generate exited with 2", "data": null},
            {"id": "01900000-0000-7000-8000-000000000002", "ts": "2025-01-31T12:00:01Z",
             "kind": "paused", "severity": "warn", "message": "paused by\nan operator"}
        ]))
        .unwrap();
        assert_eq!(
            events_table(&events, Style { color: false }),
            "TIME                  SEVERITY  KIND        SCOPE    MESSAGE\n\
             2025-01-31T12:00:00Z  error     job_failed  api/gen  step generate exited with 2\n\
             2025-01-31T12:00:01Z  warn      paused      -        paused by an operator\n"
        );
    }
}
