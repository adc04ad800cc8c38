//! The API's one error shape, `{"error": {"code", "message"}}`, and the
//! extractors that turn malformed requests into it.
//!
//! axum's own extractors answer bad input with plain-text bodies; the
//! wrappers here ([`ApiJson`], [`ApiQuery`], [`ApiPath`]) answer with the
//! JSON shape instead and name the offending field, using
//! `serde_path_to_error` for request bodies.

use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use orchex_orchestrator::ControlError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;

/// An error answered by the API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The machine-readable code (`bad_request`, `not_found`, ...).
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
}

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    /// Machine-readable code, e.g. `bad_request`, `unauthorized`,
    /// `forbidden`, `not_found`, `conflict`, `payload_too_large`,
    /// `unavailable`, `internal`.
    pub code: String,
    /// Human-readable explanation; for bad input it names the field.
    pub message: String,
}

impl ApiError {
    /// An error with any status and code.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400: the request is malformed; the message names the field.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 401: no valid token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    /// 403: the token may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 409: the request contradicts the current state.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// 503: a service the request needs is not available.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }

    /// 500; the cause is logged, and the client sees `message`.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code.to_owned(),
                message: self.message.clone(),
            },
        }
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.code, self.status, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, message = %self.message, "request failed");
        }
        let body = serde_json::to_vec(&self.body()).unwrap_or_else(|_| {
            br#"{"error":{"code":"internal","message":"error body could not be encoded"}}"#.to_vec()
        });
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

impl From<ControlError> for ApiError {
    fn from(err: ControlError) -> Self {
        let status = match err {
            ControlError::NotFound(_) => StatusCode::NOT_FOUND,
            ControlError::Conflict(_) => StatusCode::CONFLICT,
            ControlError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ControlError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        Self::new(status, err.code(), err.to_string())
    }
}

impl From<orchex_store::StoreError> for ApiError {
    fn from(err: orchex_store::StoreError) -> Self {
        match err {
            orchex_store::StoreError::InvalidCursor { cursor } => {
                Self::bad_request(format!("cursor: not a cursor this server issued: {cursor}"))
            }
            other => Self::internal(format!("storage: {other}")),
        }
    }
}

fn body_rejection(rejection: &BytesRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than the server accepts",
        )
    } else {
        ApiError::bad_request(format!("body: {}", rejection.body_text()))
    }
}

/// Decodes a JSON object body, naming the path of the first bad field.
///
/// Every body the API reads is an object, and anything else is refused:
/// serde would otherwise read a JSON array as a struct's fields in order
/// (`["api"]` as `{"repo": "api"}`, `[]` as a batch cancel of everything).
pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::bad_request("body: expected a JSON object"));
    }
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    match serde_path_to_error::deserialize(&mut deserializer) {
        Ok(value) => Ok(value),
        Err(err) => {
            let path = err.path().to_string();
            let inner = err.into_inner();
            if path.is_empty() || path == "." {
                Err(ApiError::bad_request(format!("body: {inner}")))
            } else {
                Err(ApiError::bad_request(format!("{path}: {inner}")))
            }
        }
    }
}

/// A JSON request body; malformed bodies answer 400 naming the field,
/// oversized ones 413, and a body without `Content-Type: application/json`
/// 415 (which also keeps other web pages from posting "simple" requests).
#[derive(Debug, Clone)]
pub(crate) struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(';')
                    .next()
                    .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"))
            });
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| body_rejection(&r))?;
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "content-type: expected application/json",
            ));
        }
        decode_json(&bytes).map(ApiJson)
    }
}

/// Query parameters; bad ones answer 400 naming the parameter.
#[derive(Debug, Clone)]
pub(crate) struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::try_from_uri(&parts.uri)
            .map(|q| ApiQuery(q.0))
            .map_err(|r: QueryRejection| ApiError::bad_request(format!("query: {}", r.body_text())))
    }
}

/// Path parameters; bad ones answer 400 (or 404 for a path that cannot
/// name anything).
#[derive(Debug, Clone)]
pub(crate) struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| ApiPath(p.0))
            .map_err(|r: PathRejection| ApiError::bad_request(format!("path: {}", r.body_text())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase", deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        repo: String,
        dry_run: Option<bool>,
    }

    #[test]
    fn a_bad_field_is_named() {
        let err = decode_json::<Body>(br#"{"repo": "a", "dryRun": 3}"#).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.starts_with("dryRun:"), "{}", err.message);
        let err = decode_json::<Body>(br#"{"dryRun": true}"#).unwrap_err();
        assert!(err.message.contains("repo"), "{}", err.message);
    }

    #[test]
    fn only_a_json_object_is_a_body() {
        // serde reads a sequence as a struct's fields in order.
        for body in [&br#"["a", true]"#[..], b"[]", b"null", b"3", b" ", b""] {
            let err = decode_json::<Body>(body).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST);
            assert_eq!(err.message, "body: expected a JSON object");
        }
        let body: Body = decode_json(b" \n{\"repo\": \"a\"}").unwrap();
        assert_eq!(body.repo, "a");
    }

    #[test]
    fn control_errors_map_to_statuses() {
        let err = ApiError::from(ControlError::Conflict("changed since".into()));
        assert_eq!(err.status, StatusCode::CONFLICT);
        assert_eq!(err.code, "conflict");
    }
}
