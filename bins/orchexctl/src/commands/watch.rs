//! `watch [--kind K] [--repo R]`: the live stream of `GET /api/ws`.
//!
//! The token goes in the `Authorization` header (the subprotocol form is
//! for browsers, which cannot set headers). In table mode each event is one
//! line and snapshots are ignored; with `-o json` every message is printed
//! as one JSON line. A `lagged` message (the daemon dropped events for this
//! slow client) is reported on stderr in both modes.

use std::process::ExitCode;

use futures::StreamExt as _;
use orchex_core::Event;
use serde_json::Value;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::{HeaderValue, header::AUTHORIZATION};
use tokio_tungstenite::tungstenite::{self, Message};

use super::Ctx;
use super::events::scope;
use crate::cli::WatchArgs;
use crate::client::{self, Client, ClientError};
use crate::output::{self, Mode, Style};

/// `orchexctl watch`.
pub(crate) fn watch(ctx: &Ctx, args: &WatchArgs) -> anyhow::Result<ExitCode> {
    let mode = ctx.mode("watch")?;
    let client = ctx.client()?;
    let url = ws_url(client.base_url(), args)?;
    // One thread is plenty for one socket, and spares the shared machine.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(stream(&client, &url, mode, ctx.style, ctx.stderr_style))
}

/// The WebSocket URL for the base URL and filters.
pub(crate) fn ws_url(base: &str, args: &WatchArgs) -> Result<String, ClientError> {
    let rest = if let Some(rest) = base.strip_prefix("http://") {
        format!("ws://{rest}")
    } else if let Some(rest) = base.strip_prefix("https://") {
        format!("wss://{rest}")
    } else {
        return Err(ClientError::Usage(format!(
            "invalid --url {base:?}: expected http://HOST:PORT"
        )));
    };
    let mut query = Vec::new();
    if !args.kind.is_empty() {
        let kinds: Vec<&str> = args.kind.iter().map(|k| k.as_str()).collect();
        query.push(("kinds", kinds.join(",")));
    }
    if let Some(repo) = &args.repo {
        query.push(("repo", repo.as_str().to_owned()));
    }
    // The comma separates kinds for the daemon, so it must stay literal.
    let query = client::query_string(&query).replace("%2C", ",");
    Ok(format!("{rest}/api/ws{query}"))
}

/// What one message turns into.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Rendered {
    /// A line for stdout.
    pub(crate) stdout: Option<String>,
    /// A notice for stderr.
    pub(crate) stderr: Option<String>,
}

/// Renders one text frame from the daemon.
pub(crate) fn render_message(
    text: &str,
    mode: Mode,
    style: Style,
    stderr_style: Style,
) -> Rendered {
    let Ok(message) = serde_json::from_str::<Value>(text) else {
        return Rendered {
            stderr: Some(format!(
                "orchexctl: ignoring a message that is not JSON: {}",
                output::truncate(&output::one_line(text), 80)
            )),
            ..Rendered::default()
        };
    };
    let kind = message
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let stderr = (kind == "lagged").then(|| {
        let notice = format!(
            "orchexctl: fell behind the daemon; {} events were missed",
            output::text(message.get("missed"))
        );
        stderr_style.paint(&notice, Some(output::Color::Yellow))
    });
    let stdout = match (mode, kind) {
        // The daemon's own text when it is one line already (keeps its key
        // order), re-serialised otherwise.
        (Mode::Json, _) if !text.trim().contains('\n') => Some(format!("{}\n", text.trim())),
        (Mode::Json, _) => Some(format!("{message}\n")),
        (Mode::Table, "event") => Some(
            message
                .get("event")
                .and_then(|event| serde_json::from_value::<Event>(event.clone()).ok())
                .map_or_else(
                    || format!("{}\n", output::one_line(text)),
                    |event| event_line(&event, style),
                ),
        ),
        (Mode::Table, _) => None,
    };
    Rendered { stdout, stderr }
}

/// One event as one line: time, severity, kind, scope, message.
pub(crate) fn event_line(event: &Event, style: Style) -> String {
    let severity = format!("{:<8}", event.severity.as_str());
    format!(
        "{}  {}  {:<22}  {}  {}\n",
        output::timestamp(event.ts),
        style.paint(&severity, output::severity_color(event.severity)),
        event.kind.as_str(),
        scope(event),
        output::one_line(&event.message)
    )
}

/// Connects and prints until the daemon closes the stream.
async fn stream(
    client: &Client,
    url: &str,
    mode: Mode,
    style: Style,
    stderr_style: Style,
) -> anyhow::Result<ExitCode> {
    let mut request = url
        .into_client_request()
        .map_err(|err| ClientError::Usage(format!("invalid WebSocket URL {url}: {err}")))?;
    if let Some(token) = client.token() {
        let value = HeaderValue::from_str(&token.header()).map_err(|_| {
            ClientError::Usage("the token contains characters not allowed in an HTTP header".into())
        })?;
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .map_err(|err| map_ws_error(client, err))?;
    while let Some(message) = socket.next().await {
        match message {
            Ok(Message::Text(text)) => {
                let rendered = render_message(text.as_str(), mode, style, stderr_style);
                if let Some(notice) = rendered.stderr {
                    eprintln!("{notice}");
                }
                if let Some(line) = rendered.stdout {
                    output::print(&line)?;
                }
            }
            Ok(Message::Close(frame)) => {
                let reason = frame
                    .map(|f| f.reason.to_string())
                    .filter(|r| !r.is_empty())
                    .map_or_else(String::new, |r| format!(": {r}"));
                eprintln!("orchexctl: the daemon closed the stream{reason}");
                return Ok(ExitCode::SUCCESS);
            }
            // Pings are answered by tungstenite; nothing else is expected.
            Ok(_) => {}
            Err(err) => return Err(map_ws_error(client, err).into()),
        }
    }
    eprintln!("orchexctl: the connection to the daemon ended");
    Ok(ExitCode::SUCCESS)
}

/// Maps a WebSocket failure like an HTTP one: refused connections are
/// "unreachable", an HTTP answer to the upgrade is an API error.
fn map_ws_error(client: &Client, err: tungstenite::Error) -> ClientError {
    let base = client.base_url();
    match err {
        tungstenite::Error::Io(io) if client::is_connect_failure(io.kind()) => {
            ClientError::Unreachable {
                url: base.to_owned(),
                reason: io.to_string(),
            }
        }
        tungstenite::Error::Io(io) if client::is_lookup_failure(&io) => ClientError::Unreachable {
            url: base.to_owned(),
            reason: "host not found".to_owned(),
        },
        tungstenite::Error::Http(response) => {
            let status = response.status().as_u16();
            let body = response
                .body()
                .as_deref()
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            let (code, message) = client::parse_error_body(status, &body);
            let hint = (status == 401 && client.token().is_none())
                .then(|| "pass --token or set ORCHEX_TOKEN".to_owned());
            ClientError::Api {
                status,
                code,
                message,
                hint,
            }
        }
        tungstenite::Error::Url(url) => {
            ClientError::Transport(format!("cannot open a WebSocket to {base}: {url}"))
        }
        other => ClientError::Transport(format!("WebSocket to {base} failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use orchex_core::{EventKind, RepoId};

    const PLAIN: Style = Style { color: false };

    fn args(kind: Vec<EventKind>, repo: Option<&str>) -> WatchArgs {
        WatchArgs {
            kind,
            repo: repo.map(|r| RepoId::new(r).unwrap()),
        }
    }

    #[test]
    fn the_ws_url_carries_the_filters() {
        assert_eq!(
            ws_url("http://127.0.0.1:8080", &args(vec![], None)).unwrap(),
            "ws://127.0.0.1:8080/api/ws"
        );
        assert_eq!(
            ws_url(
                "https://orchex.example/x",
                &args(vec![EventKind::JobFailed, EventKind::Paused], Some("api"))
            )
            .unwrap(),
            "wss://orchex.example/x/api/ws?kinds=job_failed,paused&repo=api"
        );
    }

    const EVENT: &str = r#"{"type": "event", "event": {
        "id": "01900000-0000-7000-8000-000000000001", "ts": "2025-01-31T12:00:00Z",
        "kind": "job_started", "severity": "info", "repo": "api", "pipeline": "gen",
        "message": "started", "data": null}}"#;

    #[test]
    fn events_become_one_line_in_table_mode() {
        let rendered = render_message(EVENT, Mode::Table, PLAIN, PLAIN);
        assert_eq!(
            rendered.stdout.as_deref(),
            Some("2025-01-31T12:00:00Z  info      job_started             api/gen  started\n")
        );
        assert_eq!(rendered.stderr, None);
    }

    #[test]
    fn snapshots_are_ignored_unless_json() {
        let snapshot = r#"{"type": "snapshot", "snapshot": {"orchestrator": {}}}"#;
        assert_eq!(
            render_message(snapshot, Mode::Table, PLAIN, PLAIN),
            Rendered::default()
        );
        let json = render_message(snapshot, Mode::Json, PLAIN, PLAIN);
        let line = json.stdout.unwrap();
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        let back: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["type"], "snapshot");
        // Events are JSON lines too.
        let line = render_message(EVENT, Mode::Json, PLAIN, PLAIN)
            .stdout
            .unwrap();
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn lagged_is_a_notice_on_stderr() {
        let lagged = r#"{"type": "lagged", "missed": 12}"#;
        let table = render_message(lagged, Mode::Table, PLAIN, PLAIN);
        assert_eq!(table.stdout, None);
        assert_eq!(
            table.stderr.as_deref(),
            Some("orchexctl: fell behind the daemon; 12 events were missed")
        );
        let json = render_message(lagged, Mode::Json, PLAIN, PLAIN);
        assert!(json.stdout.is_some() && json.stderr.is_some());
    }

    #[test]
    fn garbage_is_reported_not_fatal() {
        let rendered = render_message("not json", Mode::Table, PLAIN, PLAIN);
        assert_eq!(rendered.stdout, None);
        assert!(rendered.stderr.unwrap().contains("not JSON"));
    }
}
