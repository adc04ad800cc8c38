//! `POST /api/webhooks/github`: GitHub push deliveries become `push`
//! triggers.
//!
//! A delivery is accepted only with a valid `X-Hub-Signature-256` (HMAC-SHA256
//! of the raw body with the configured secret, compared in constant time).
//! A delivery id seen before (`X-GitHub-Delivery`, which GitHub keeps on
//! redelivery) is acknowledged and ignored. Push events for a configured
//! repository and its watched branch are submitted to the orchestrator;
//! every other event is acknowledged and ignored.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use hmac::{KeyInit as _, Mac as _};
use orchex_core::{JobId, Trigger, TriggerKind};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::{ApiError, ErrorBody};
use crate::state::{AppState, lock};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// Whether `signature` (`sha256=<hex>`) is the HMAC-SHA256 of `body` under
/// `secret`. Constant time in the signature's content.
pub fn verify_signature(secret: &[u8], body: &[u8], signature: &str) -> bool {
    let Some(hex_digest) = signature.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_digest) else {
        return false;
    };
    let Ok(mut mac) = HmacSha256::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

/// The part of a push payload orchex reads (other fields are ignored).
#[derive(Debug, Deserialize, ToSchema)]
pub struct PushPayload {
    /// `refs/heads/<branch>`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The branch's previous commit.
    #[serde(default)]
    pub before: Option<String>,
    /// The branch's new commit.
    #[serde(default)]
    pub after: Option<String>,
    /// Whether the push deleted the branch.
    #[serde(default)]
    pub deleted: bool,
    /// The repository.
    pub repository: PushRepository,
}

/// The repository of a push payload.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PushRepository {
    /// The short name, matched against configured repository names.
    pub name: String,
    /// `owner/name`.
    #[serde(default)]
    pub full_name: Option<String>,
}

/// Parses a push payload, naming the missing or malformed field.
pub fn parse_push(body: &[u8]) -> Result<PushPayload, ApiError> {
    crate::error::decode_json(body)
}

/// The answer to a delivery.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookOutcome {
    /// Whether it queued work.
    pub accepted: bool,
    /// Why not, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The jobs it queued.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub jobs: Vec<JobId>,
}

fn ignored(reason: impl Into<String>) -> Response {
    (
        StatusCode::OK,
        axum::Json(WebhookOutcome {
            accepted: false,
            reason: Some(reason.into()),
            jobs: Vec::new(),
        }),
    )
        .into_response()
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A GitHub webhook delivery.
#[utoipa::path(post, path = "/api/webhooks/github", tag = "webhooks",
    request_body(content = PushPayload, description = "A GitHub event payload. Only push events are acted on, and only the fields shown are read; the body of any other event is not looked at."),
    params(
        ("X-Hub-Signature-256" = String, Header, description = "sha256=<hex HMAC of the body>"),
        ("X-GitHub-Event" = Option<String>, Header, description = "push, ping, ...; only push is acted on"),
        ("X-GitHub-Delivery" = Option<String>, Header, description = "The delivery id; a repeated one is ignored")),
    responses(
        (status = 202, description = "A push that queued jobs", body = WebhookOutcome),
        (status = 200, description = "Acknowledged and ignored (other event, other branch, replay)", body = WebhookOutcome),
        (status = 400, body = ErrorBody),
        (status = 401, description = "Missing or bad signature", body = ErrorBody),
        (status = 413, description = "The body is larger than the server accepts", body = ErrorBody),
        (status = 503, description = "No webhook secret configured", body = ErrorBody)))]
pub(crate) async fn github(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let policy = state.policy();
    let Some(secret) = policy.webhook_secret.as_deref() else {
        return Err(ApiError::unavailable(
            "no webhook secret is configured (dashboard.webhookSecret)",
        ));
    };
    let Some(signature) = header(&headers, "x-hub-signature-256") else {
        return Err(ApiError::unauthorized(
            "X-Hub-Signature-256: the header is required",
        ));
    };
    if !verify_signature(secret, &body, signature) {
        return Err(ApiError::unauthorized(
            "X-Hub-Signature-256: the signature does not match the body",
        ));
    }
    let event = header(&headers, "x-github-event").unwrap_or_default();
    // An empty id is no id: it would make every later delivery without
    // one look like a replay.
    let delivery = header(&headers, "x-github-delivery").filter(|d| !d.trim().is_empty());
    // Claimed before the work, so a redelivery racing this one is ignored;
    // given back if the work fails, so GitHub's redelivery after an error
    // is not taken for a replay and the push is not lost.
    if let Some(delivery) = delivery
        && !lock(&state.inner.deliveries).first_time(delivery)
    {
        return Ok(ignored(format!("delivery {delivery} was already received")));
    }
    let outcome = act_on(&state, event, &body).await;
    if outcome.is_err()
        && let Some(delivery) = delivery
    {
        lock(&state.inner.deliveries).forget(delivery);
    }
    outcome
}

/// What a verified, first-time delivery does.
async fn act_on(state: &AppState, event: &str, body: &[u8]) -> Result<Response, ApiError> {
    if event != "push" {
        return Ok(ignored(format!("{event:?} events are not acted on")));
    }
    let push = parse_push(body)?;
    if push.deleted {
        return Ok(ignored("the push deleted the branch"));
    }
    let Some(branch) = push.git_ref.strip_prefix("refs/heads/") else {
        return Ok(ignored(format!("{} is not a branch", push.git_ref)));
    };
    let config = state.config();
    let Some(repository) = config.repositories.iter().find(|r| {
        r.enabled
            && (r.name.as_str() == push.repository.name
                || push.repository.full_name.as_deref() == Some(r.name.as_str()))
    }) else {
        return Ok(ignored(format!(
            "repository {} is not configured",
            push.repository.name
        )));
    };
    if let Some(watched) = &repository.branch
        && watched != branch
    {
        return Ok(ignored(format!(
            "branch {branch} is not the watched branch {watched}"
        )));
    }
    if !config.monitor.triggers.on_push {
        return Ok(ignored(
            "push triggers are disabled (monitor.triggers.onPush)",
        ));
    }
    let mut trigger = Trigger::new(repository.name.clone(), TriggerKind::Push);
    trigger.commit = push.after.filter(|c| !c.is_empty());
    trigger.previous_commit = push.before.filter(|c| !c.is_empty());
    let jobs = state.services().orchestrator.submit(trigger).await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(WebhookOutcome {
            accepted: !jobs.is_empty(),
            reason: jobs
                .is_empty()
                .then(|| "no pipeline reacts to a push on this repository".to_owned()),
            jobs: jobs.iter().map(|j| j.id).collect(),
        }),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// GitHub's documented test vector ("Validating webhook deliveries").
    #[test]
    fn githubs_test_vector_verifies() {
        let secret = b"It's a Secret to Everybody";
        let body = b"Hello, World!";
        let signature = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";
        assert!(verify_signature(secret, body, signature));
        assert!(!verify_signature(secret, b"Hello, World?", signature));
        assert!(!verify_signature(b"another secret", body, signature));
        assert!(!verify_signature(secret, body, "sha1=757107ea"));
        assert!(!verify_signature(secret, body, "sha256=zz"));
        assert!(!verify_signature(secret, body, ""));
    }

    #[test]
    fn push_payloads_parse_and_name_missing_fields() {
        let push = parse_push(
            br#"{"ref": "refs/heads/main", "before": "a", "after": "b", "repository": {"name": "api", "full_name": "org/api"}}"#,
        )
        .unwrap();
        assert_eq!(push.git_ref, "refs/heads/main");
        assert_eq!(push.repository.name, "api");
        let err = parse_push(br#"{"ref": "refs/heads/main"}"#).unwrap_err();
        assert!(err.message.contains("repository"), "{}", err.message);
        let err = parse_push(br#"{"ref": 3, "repository": {"name": "x"}}"#).unwrap_err();
        assert!(err.message.starts_with("ref:"), "{}", err.message);
    }
}
