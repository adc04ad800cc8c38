//! The HTTP client for the daemon's API, and the mapping of every failure to
//! an exit code (PRODUCT.md §11).
//!
//! ureq is configured with `http_status_as_error(false)` so that a 4xx/5xx
//! answer is read like any other: its JSON error body
//! (`{"error": {"code", "message"}}`) becomes [`ClientError::Api`], printed
//! as `orchexctl: <code>: <message>`. Failures to connect at all become
//! [`ClientError::Unreachable`] (exit 3), with a hint on starting the daemon.

use std::fmt::{self, Write as _};
use std::io::{ErrorKind, Write};
use std::time::Duration;

use serde_json::Value;
use ureq::http::{self, Method};

/// Exit code for a failure reported by the daemon, or a failed job.
pub(crate) const EXIT_FAILURE: u8 = 1;
/// Exit code for a usage error (clap uses it too).
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit code when the daemon cannot be reached.
pub(crate) const EXIT_UNREACHABLE: u8 = 3;

/// How long to wait for a connection; a local daemon answers at once, so a
/// longer wait would only delay the "unreachable" message.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for the response head. Bodies have no timeout because
/// the CSV export streams for as long as it has rows.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(30);
/// The largest JSON body read (the whole running config or a long job list
/// fit easily; the limit only protects against a runaway answer).
const MAX_JSON_BODY: u64 = 64 * 1024 * 1024;

/// Why a command failed; each variant has its exit code.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// The daemon could not be reached (refused, DNS, timeout).
    #[error(
        "cannot reach orchexd at {url}: {reason}\n\
         is orchexd running? start it with: cargo run --release -p orchexd\n\
         (or point --url or ORCHEX_URL at the daemon)"
    )]
    Unreachable {
        /// The base URL tried.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The daemon answered with an error status.
    #[error("{}", render_api_error(code, message, hint.as_deref()))]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error code from the body (`not_found`, `conflict`...).
        code: String,
        /// The error message from the body.
        message: String,
        /// Advice printed on the next line, if any.
        hint: Option<String>,
    },
    /// The command line was wrong in a way clap cannot check.
    #[error("{0}")]
    Usage(String),
    /// The request failed after connecting (protocol error, bad body...).
    #[error("{0}")]
    Transport(String),
    /// The daemon answered 2xx with a body this CLI does not understand.
    #[error("unexpected response from {path}: {reason}")]
    InvalidResponse {
        /// The API path.
        path: String,
        /// What did not fit.
        reason: String,
    },
}

fn render_api_error(code: &str, message: &str, hint: Option<&str>) -> String {
    match hint {
        Some(hint) => format!("{code}: {message}\n{hint}"),
        None => format!("{code}: {message}"),
    }
}

impl ClientError {
    /// The process exit code for this error.
    pub(crate) const fn exit_code(&self) -> u8 {
        match self {
            ClientError::Unreachable { .. } => EXIT_UNREACHABLE,
            ClientError::Usage(_) => EXIT_USAGE,
            ClientError::Api { .. }
            | ClientError::Transport(_)
            | ClientError::InvalidResponse { .. } => EXIT_FAILURE,
        }
    }

    /// Whether the daemon could not be reached.
    pub(crate) const fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. })
    }

    /// A response body that did not have the expected shape.
    pub(crate) fn invalid(path: &str, reason: impl fmt::Display) -> Self {
        ClientError::InvalidResponse {
            path: path.to_owned(),
            reason: reason.to_string(),
        }
    }
}

/// The exit code for any error `run` returns: the first [`ClientError`] in
/// the chain decides, anything else is a plain failure.
pub(crate) fn exit_code(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|cause| cause.downcast_ref::<ClientError>())
        .map_or(EXIT_FAILURE, ClientError::exit_code)
}

/// Whether the error is stdout being closed under us (`| head`), which is
/// not worth a message.
pub(crate) fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == ErrorKind::BrokenPipe)
    })
}

/// The `code` and `message` of an error answer.
///
/// The daemon always sends `{"error": {"code", "message"}}`; anything else
/// (a proxy's HTML page, an empty body) falls back to a code derived from
/// the status and the body's first line.
pub(crate) fn parse_error_body(status: u16, body: &str) -> (String, String) {
    let parsed: Option<(String, String)> =
        serde_json::from_str::<Value>(body).ok().and_then(|value| {
            let error = value.get("error")?;
            let code = error.get("code")?.as_str()?.to_owned();
            let message = error
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned();
            Some((code, message))
        });
    if let Some(parsed) = parsed {
        return parsed;
    }
    let code = match status {
        400 => "bad_request".to_owned(),
        401 => "unauthorized".to_owned(),
        403 => "forbidden".to_owned(),
        404 => "not_found".to_owned(),
        405 => "method_not_allowed".to_owned(),
        408 => "timeout".to_owned(),
        409 => "conflict".to_owned(),
        413 => "payload_too_large".to_owned(),
        500 => "internal".to_owned(),
        503 => "unavailable".to_owned(),
        other => format!("http_{other}"),
    };
    let first_line = body.lines().map(str::trim).find(|line| !line.is_empty());
    let message = match first_line {
        Some(line) if !line.starts_with('<') => crate::output::truncate(line, 200),
        _ => format!("HTTP {status} without an error body"),
    };
    (code, message)
}

/// Percent-encodes `text` for a URL path segment or query value: everything
/// but the RFC 3986 unreserved characters (so the `+` of an RFC 3339 offset
/// survives).
pub(crate) fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{byte:02X}");
        }
    }
    out
}

/// A query string (`?a=1&b=2`, or empty), with the pairs encoded.
pub(crate) fn query_string(query: &[(&str, String)]) -> String {
    let pairs: Vec<String> = query
        .iter()
        .map(|(key, value)| format!("{}={}", encode(key), encode(value)))
        .collect();
    if pairs.is_empty() {
        String::new()
    } else {
        format!("?{}", pairs.join("&"))
    }
}

/// The body of a request.
#[derive(Debug, Clone, Copy)]
enum Payload<'a> {
    /// No body (GET, DELETE).
    None,
    /// An empty body (a POST that carries no data).
    Empty,
    /// A JSON document.
    Json(&'a Value),
}

/// The bearer token; its `Debug` never shows it.
#[derive(Clone)]
pub(crate) struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl Token {
    /// The `Authorization` header value.
    pub(crate) fn header(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

/// A client for one daemon.
#[derive(Debug)]
pub(crate) struct Client {
    agent: ureq::Agent,
    base: String,
    token: Option<Token>,
}

impl Client {
    /// A client for the daemon at `url` (`http://` or `https://`).
    pub(crate) fn new(url: &str, token: Option<&str>) -> Result<Self, ClientError> {
        let base = url.trim_end_matches('/').to_owned();
        let scheme_ok = base.starts_with("http://") || base.starts_with("https://");
        if !scheme_ok || base.parse::<http::Uri>().is_err() {
            return Err(ClientError::Usage(format!(
                "invalid --url {url:?}: expected http://HOST:PORT"
            )));
        }
        let token = token.filter(|t| !t.is_empty()).map(|t| Token(t.to_owned()));
        if let Some(token) = &token
            && http::HeaderValue::from_str(&token.header()).is_err()
        {
            return Err(ClientError::Usage(
                "the token contains characters not allowed in an HTTP header".to_owned(),
            ));
        }
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_recv_response(Some(RESPONSE_TIMEOUT))
            .user_agent(concat!("orchexctl/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(Self {
            agent: ureq::Agent::new_with_config(config),
            base,
            token,
        })
    }

    /// The base URL, without a trailing slash.
    pub(crate) fn base_url(&self) -> &str {
        &self.base
    }

    /// The token, if one was given.
    pub(crate) fn token(&self) -> Option<&Token> {
        self.token.as_ref()
    }

    /// `GET path?query`, answering the JSON body of a 2xx.
    pub(crate) fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ClientError> {
        let (status, body) = self.request(Method::GET, path, query, Payload::None)?;
        success(path, status, &body)
    }

    /// `GET path`, answering the status and JSON body of a 2xx or a 503
    /// (the health routes answer 503 with a health body, not an error).
    pub(crate) fn get_health(&self, path: &str) -> Result<(u16, Value), ClientError> {
        let (status, body) = self.request_raw(Method::GET, path, &[], Payload::None)?;
        if status == 503
            && let Ok(value) = serde_json::from_str::<Value>(&body)
            && value.get("status").is_some()
        {
            return Ok((status, value));
        }
        if status >= 400 {
            return Err(self.api_error(status, &body));
        }
        success(path, status, &body).map(|value| (status, value))
    }

    /// `POST path` with an optional JSON body.
    pub(crate) fn post(&self, path: &str, body: Option<&Value>) -> Result<Value, ClientError> {
        let payload = body.map_or(Payload::Empty, Payload::Json);
        let (status, text) = self.request(Method::POST, path, &[], payload)?;
        success(path, status, &text)
    }

    /// `PATCH path` with a JSON body.
    pub(crate) fn patch(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        let (status, text) = self.request(Method::PATCH, path, &[], Payload::Json(body))?;
        success(path, status, &text)
    }

    /// `DELETE path`.
    pub(crate) fn delete(&self, path: &str) -> Result<Value, ClientError> {
        let (status, text) = self.request(Method::DELETE, path, &[], Payload::None)?;
        success(path, status, &text)
    }

    /// `GET path?query` with the body copied to `out` as it arrives (never
    /// held whole in memory). Answers the bytes copied.
    pub(crate) fn stream_to(
        &self,
        path: &str,
        query: &[(&str, String)],
        out: &mut dyn Write,
    ) -> anyhow::Result<u64> {
        let response = self.send(Method::GET, path, query, Payload::None)?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        if status >= 400 {
            let text = body
                .with_config()
                .limit(MAX_JSON_BODY)
                .lossy_utf8(true)
                .read_to_string()
                .unwrap_or_default();
            return Err(self.api_error(status, &text).into());
        }
        let mut reader = body.into_reader();
        let copied = std::io::copy(&mut reader, out)?;
        out.flush()?;
        Ok(copied)
    }

    /// Every item of a list route, following `nextCursor` until `limit`
    /// items are collected or the list ends.
    pub(crate) fn list(
        &self,
        path: &str,
        query: &[(&str, String)],
        limit: usize,
    ) -> Result<Vec<Value>, ClientError> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        while items.len() < limit {
            let mut page_query = query.to_vec();
            page_query.push(("limit", (limit - items.len()).to_string()));
            if let Some(cursor) = &cursor {
                page_query.push(("cursor", cursor.clone()));
            }
            let page = self.get(path, &page_query)?;
            let page_items = page
                .get("items")
                .and_then(Value::as_array)
                .ok_or_else(|| ClientError::invalid(path, "no `items` array"))?;
            items.extend(page_items.iter().take(limit - items.len()).cloned());
            cursor = page
                .get("nextCursor")
                .and_then(Value::as_str)
                .map(str::to_owned);
            // An empty page with a cursor would loop for ever; stop instead.
            if cursor.is_none() || page_items.is_empty() {
                break;
            }
        }
        Ok(items)
    }

    /// Sends a request and reads the whole body as text; error statuses
    /// become [`ClientError::Api`].
    fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Payload<'_>,
    ) -> Result<(u16, String), ClientError> {
        let (status, text) = self.request_raw(method, path, query, body)?;
        if status >= 400 {
            return Err(self.api_error(status, &text));
        }
        Ok((status, text))
    }

    /// Sends a request and reads the whole body as text, whatever the
    /// status.
    fn request_raw(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Payload<'_>,
    ) -> Result<(u16, String), ClientError> {
        let response = self.send(method, path, query, body)?;
        let status = response.status().as_u16();
        let text = response
            .into_body()
            .with_config()
            .limit(MAX_JSON_BODY)
            .lossy_utf8(true)
            .read_to_string()
            .map_err(|err| self.transport_error(err))?;
        Ok((status, text))
    }

    /// Sends a request.
    fn send(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, String)],
        body: Payload<'_>,
    ) -> Result<http::Response<ureq::Body>, ClientError> {
        let url = format!("{}{path}{}", self.base, query_string(query));
        let mut builder = http::Request::builder()
            .method(method)
            .uri(&url)
            .header(http::header::ACCEPT, "application/json");
        if let Some(token) = &self.token {
            builder = builder.header(http::header::AUTHORIZATION, token.header());
        }
        let result = match body {
            Payload::Json(value) => builder
                .header(http::header::CONTENT_TYPE, "application/json")
                .body(value.to_string().into_bytes())
                .map(|request| self.agent.run(request)),
            Payload::Empty => builder
                .body(Vec::new())
                .map(|request| self.agent.run(request)),
            Payload::None => builder.body(()).map(|request| self.agent.run(request)),
        };
        let response =
            result.map_err(|err| ClientError::Usage(format!("invalid request: {err}")))?;
        response.map_err(|err| self.transport_error(err))
    }

    /// The [`ClientError::Api`] for an error answer.
    fn api_error(&self, status: u16, body: &str) -> ClientError {
        let (code, message) = parse_error_body(status, body);
        let hint = (status == 401 && self.token.is_none())
            .then(|| "pass --token or set ORCHEX_TOKEN".to_owned());
        ClientError::Api {
            status,
            code,
            message,
            hint,
        }
    }

    /// Maps a ureq failure: connection problems are "unreachable".
    fn transport_error(&self, err: ureq::Error) -> ClientError {
        map_transport_error(&self.base, err)
    }
}

/// The JSON of a successful answer (`null` for an empty body).
fn success(path: &str, status: u16, body: &str) -> Result<Value, ClientError> {
    if body.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_str(body).map_err(|err| {
        ClientError::invalid(path, format!("HTTP {status}, body is not JSON: {err}"))
    })
}

/// Whether an I/O error means nothing answered at the address.
pub(crate) fn is_connect_failure(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::ConnectionRefused
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::NotConnected
            | ErrorKind::AddrNotAvailable
            | ErrorKind::TimedOut
            | ErrorKind::HostUnreachable
            | ErrorKind::NetworkUnreachable
    )
}

/// Whether an I/O error is a failed host name lookup (std and tokio report
/// it with an uncategorised kind, so only the message tells).
pub(crate) fn is_lookup_failure(io: &std::io::Error) -> bool {
    io.to_string().contains("lookup address")
}

/// Maps a ureq failure for the daemon at `base`.
pub(crate) fn map_transport_error(base: &str, err: ureq::Error) -> ClientError {
    let unreachable = |reason: String| ClientError::Unreachable {
        url: base.to_owned(),
        reason,
    };
    match err {
        ureq::Error::HostNotFound => unreachable("host not found".to_owned()),
        ureq::Error::ConnectionFailed => unreachable("connection failed".to_owned()),
        ureq::Error::Timeout(which) => unreachable(format!("timed out ({which})")),
        ureq::Error::Io(io) if is_connect_failure(io.kind()) => unreachable(io.to_string()),
        // The system resolver's failure is an uncategorised I/O error.
        ureq::Error::Io(io) if is_lookup_failure(&io) => unreachable("host not found".to_owned()),
        ureq::Error::BadUri(uri) => ClientError::Usage(format!("invalid --url: {uri}")),
        other => ClientError::Transport(format!("request to {base} failed: {other}")),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn error_bodies_give_code_and_message() {
        let body = r#"{"error": {"code": "not_found", "message": "no job 42"}}"#;
        assert_eq!(
            parse_error_body(404, body),
            ("not_found".to_owned(), "no job 42".to_owned())
        );
        assert_eq!(
            parse_error_body(502, "<html>bad gateway</html>"),
            (
                "http_502".to_owned(),
                "HTTP 502 without an error body".to_owned()
            )
        );
        assert_eq!(
            parse_error_body(503, "draining\n"),
            ("unavailable".to_owned(), "draining".to_owned())
        );
        assert_eq!(
            parse_error_body(409, r#"{"error": {"code": "conflict"}}"#),
            ("conflict".to_owned(), String::new())
        );
        assert_eq!(parse_error_body(401, "").0, "unauthorized");
    }

    #[test]
    fn api_errors_print_code_then_message() {
        let err = ClientError::Api {
            status: 409,
            code: "conflict".into(),
            message: "job is not delivered".into(),
            hint: None,
        };
        assert_eq!(err.to_string(), "conflict: job is not delivered");
        assert_eq!(err.exit_code(), 1);
    }

    #[test]
    fn exit_codes_follow_the_spec() {
        let unreachable = ClientError::Unreachable {
            url: "http://127.0.0.1:1".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(unreachable.exit_code(), 3);
        assert!(
            unreachable
                .to_string()
                .contains("cargo run --release -p orchexd")
        );
        assert!(unreachable.to_string().contains("ORCHEX_URL"));
        assert_eq!(ClientError::Usage("x".into()).exit_code(), 2);
        assert_eq!(ClientError::Transport("x".into()).exit_code(), 1);
        assert_eq!(ClientError::invalid("/api/x", "bad").exit_code(), 1);

        // Through anyhow, with context on top, the client error still decides.
        let err = anyhow::Error::new(unreachable).context("status");
        assert_eq!(exit_code(&err), 3);
        assert_eq!(exit_code(&anyhow::anyhow!("plain")), 1);
    }

    #[test]
    fn connection_failures_are_unreachable() {
        let refused = ureq::Error::Io(std::io::Error::from(ErrorKind::ConnectionRefused));
        assert!(map_transport_error("http://x", refused).is_unreachable());
        assert!(map_transport_error("http://x", ureq::Error::HostNotFound).is_unreachable());
        assert!(map_transport_error("http://x", ureq::Error::ConnectionFailed).is_unreachable());
        let other = ureq::Error::Io(std::io::Error::from(ErrorKind::InvalidData));
        assert_eq!(map_transport_error("http://x", other).exit_code(), 1);
    }

    #[test]
    fn broken_pipes_are_recognised() {
        let err = anyhow::Error::new(std::io::Error::from(ErrorKind::BrokenPipe));
        assert!(is_broken_pipe(&err));
        assert!(!is_broken_pipe(&anyhow::anyhow!("other")));
    }

    #[test]
    fn query_values_are_encoded() {
        assert_eq!(encode("job_failed"), "job_failed");
        assert_eq!(
            encode("2025-01-31T12:00:00+01:00"),
            "2025-01-31T12%3A00%3A00%2B01%3A00"
        );
        assert_eq!(encode("a b/c"), "a%20b%2Fc");
        assert_eq!(
            query_string(&[("state", "failed".into()), ("repo", "api".into())]),
            "?state=failed&repo=api"
        );
        assert_eq!(query_string(&[]), "");
    }

    #[test]
    fn urls_and_tokens_are_checked() {
        assert!(Client::new("http://127.0.0.1:8080/", None).is_ok());
        assert_eq!(
            Client::new("http://127.0.0.1:8080/", None)
                .unwrap()
                .base_url(),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            Client::new("127.0.0.1:8080", None).unwrap_err().exit_code(),
            2
        );
        assert_eq!(
            Client::new("http://x", Some("bad\ntoken"))
                .unwrap_err()
                .exit_code(),
            2
        );
        let client = Client::new("http://x", Some("s3cret")).unwrap();
        assert!(!format!("{client:?}").contains("s3cret"));
        // An empty token means none.
        assert!(Client::new("http://x", Some("")).unwrap().token().is_none());
    }
}
