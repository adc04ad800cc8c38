//! HTTP POSTs of JSON: the built-in `webhook` step kind, and notifications
//! to Slack-compatible incoming webhooks (`[[notifications]]`).

use std::time::Duration;

use orchex_core::Event;

/// Posts `payload` as JSON to `url` and returns the response status.
/// Statuses of 400 and above are errors, with the start of the body.
pub async fn post_json(
    url: &str,
    payload: &serde_json::Value,
    timeout: Duration,
) -> Result<u16, String> {
    let url = url.to_owned();
    let body =
        serde_json::to_vec(payload).map_err(|e| format!("cannot encode the payload: {e}"))?;
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            .user_agent(concat!("orchex/", env!("CARGO_PKG_VERSION")))
            .build()
            .into();
        let mut response = agent
            .post(&url)
            .header("Content-Type", "application/json")
            .send(&body[..])
            .map_err(|e| {
                // The error may quote the URL, whose secrets must not reach
                // job records or logs.
                let shown = orchex_core::config::display_url(&url);
                let detail = e.to_string().replace(url.as_str(), &shown);
                format!("POST {shown} failed: {detail}")
            })?;
        let status = response.status().as_u16();
        if status >= 400 {
            let text = response
                .body_mut()
                .with_config()
                .limit(1024)
                .read_to_string()
                .unwrap_or_default();
            return Err(format!(
                "POST {} answered {status}: {}",
                orchex_core::config::display_url(&url),
                text.trim()
            ));
        }
        Ok(status)
    })
    .await
    .map_err(|e| format!("the webhook task failed: {e}"))?
}

/// The Slack-compatible payload of a notification for `event`: a `text`
/// line for chat tools, plus the whole event for anything else.
pub fn notification_payload(event: &Event) -> serde_json::Value {
    let repo = event
        .repo
        .as_ref()
        .map(|r| format!(" {r}"))
        .unwrap_or_default();
    let pipeline = event
        .pipeline
        .as_ref()
        .map(|p| format!("/{p}"))
        .unwrap_or_default();
    let text = format!(
        "[orchex] {} {}{repo}{pipeline}: {}",
        event.severity, event.kind, event.message
    );
    serde_json::json!({ "text": text, "event": event })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read as _, Write as _};
    use std::net::TcpListener;

    /// A one-shot HTTP server on loopback answering `status`; returns the
    /// URL and a handle yielding the request it received.
    fn serve_once(status: u16) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut request = Vec::new();
            let mut buffer = [0_u8; 4096];
            loop {
                let n = stream.read(&mut buffer).unwrap();
                request.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&request);
                if let Some(head_end) = text.find("\r\n\r\n") {
                    let length = text[..head_end]
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse::<usize>().unwrap())
                        })
                        .unwrap_or(0);
                    if request.len() >= head_end + 4 + length {
                        break;
                    }
                }
                if n == 0 {
                    break;
                }
            }
            let body = "nope";
            write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .unwrap();
            String::from_utf8_lossy(&request).into_owned()
        });
        (url, handle)
    }

    #[tokio::test]
    async fn posts_json_to_a_real_server() {
        let (url, server) = serve_once(200);
        let status = post_json(
            &url,
            &serde_json::json!({"hello": "world"}),
            Duration::from_secs(10),
        )
        .await
        .unwrap();
        assert_eq!(status, 200);
        let request = server.join().unwrap();
        assert!(request.starts_with("POST /hook HTTP/1.1"), "{request}");
        assert!(
            request
                .to_ascii_lowercase()
                .contains("content-type: application/json")
        );
        assert!(request.ends_with(r#"{"hello":"world"}"#), "{request}");
    }

    #[tokio::test]
    async fn error_statuses_and_unreachable_hosts_are_errors() {
        let (url, server) = serve_once(503);
        let err = post_json(&url, &serde_json::json!({}), Duration::from_secs(10))
            .await
            .unwrap_err();
        assert!(err.contains("answered 503: nope"), "{err}");
        server.join().unwrap();
        // Nothing listens on port 9 of loopback.
        // Its path and credentials are secrets, kept out of the error (which
        // becomes the job's error).
        let err = post_json(
            "http://bot:pw@127.0.0.1:9/T0/secret-path",
            &serde_json::json!({}),
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(
            err.contains("POST http://127.0.0.1:9/<redacted> failed"),
            "{err}"
        );
        assert!(!err.contains("secret-path") && !err.contains("pw"), "{err}");
    }

    #[test]
    fn notifications_carry_a_text_line_and_the_event() {
        let event = Event::new(
            orchex_core::EventKind::JobFailed,
            "step generate exited with code 1",
        )
        .with_repo(orchex_core::RepoId::new("api").unwrap())
        .with_pipeline("codegen");
        let payload = notification_payload(&event);
        assert_eq!(
            payload["text"],
            "[orchex] error job_failed api/codegen: step generate exited with code 1"
        );
        assert_eq!(payload["event"]["kind"], "job_failed");
    }
}
