//! Bearer-token authentication with two roles, compared in constant time.
//!
//! Tokens are never compared directly: both the configured token and the
//! presented one are hashed with SHA-256 and the digests compared with
//! `subtle`, so neither the content nor the length of a token leaks
//! through timing. Both roles are always checked, so the time does not say
//! which one matched either.

use axum::http::{HeaderMap, Method, header};
use serde::Serialize;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;
use utoipa::ToSchema;

use crate::error::ApiError;

/// What a request may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Only `GET` (and `HEAD`).
    ReadOnly,
}

/// A token kept only as its digest.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct TokenDigest([u8; 32]);

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

impl TokenDigest {
    pub(crate) fn of(token: &str) -> Self {
        Self(Sha256::digest(token.as_bytes()).into())
    }

    fn matches(&self, other: &TokenDigest) -> subtle::Choice {
        self.0.ct_eq(&other.0)
    }
}

/// The configured tokens.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    admin: Option<TokenDigest>,
    read_only: Option<TokenDigest>,
}

impl Tokens {
    /// No authentication: every request is an admin request. Only allowed
    /// on a loopback bind (see [`crate::check_bind`]).
    pub fn open() -> Self {
        Self::default()
    }

    /// The admin token and, optionally, the read-only one. Empty strings
    /// count as absent.
    pub fn new(admin: Option<&str>, read_only: Option<&str>) -> Self {
        let digest = |t: Option<&str>| t.filter(|t| !t.is_empty()).map(TokenDigest::of);
        Self {
            admin: digest(admin),
            read_only: digest(read_only),
        }
    }

    /// Whether any token is configured (and so requests must present one).
    pub fn required(&self) -> bool {
        self.admin.is_some() || self.read_only.is_some()
    }

    /// The role a presented token has, if any.
    pub fn role_of(&self, presented: &str) -> Option<Role> {
        let presented = TokenDigest::of(presented);
        let admin = self
            .admin
            .as_ref()
            .map_or(subtle::Choice::from(0), |t| t.matches(&presented));
        let read_only = self
            .read_only
            .as_ref()
            .map_or(subtle::Choice::from(0), |t| t.matches(&presented));
        if bool::from(admin) {
            Some(Role::Admin)
        } else if bool::from(read_only) {
            Some(Role::ReadOnly)
        } else {
            None
        }
    }

    /// Decides a request: the role it has, or the error to answer.
    /// `needs_admin` is whether the route changes anything.
    pub(crate) fn authorize(
        &self,
        presented: Option<&str>,
        needs_admin: bool,
    ) -> Result<Role, ApiError> {
        if !self.required() {
            return Ok(Role::Admin);
        }
        let Some(presented) = presented else {
            return Err(ApiError::unauthorized(
                "a bearer token is required (Authorization: Bearer <token>)",
            ));
        };
        match self.role_of(presented) {
            None => Err(ApiError::unauthorized("the token is not valid")),
            Some(Role::ReadOnly) if needs_admin => Err(ApiError::forbidden(
                "the read-only token may only read; this needs the admin token",
            )),
            Some(role) => Ok(role),
        }
    }
}

/// Whether a method changes state and so needs the admin role.
pub(crate) fn needs_admin(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The token of an `Authorization: Bearer <token>` header; the scheme is
/// case-insensitive (RFC 7235).
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The token of a `Sec-WebSocket-Protocol: bearer, <token>` pair, which
/// browsers use because they cannot set headers on a WebSocket.
pub(crate) fn subprotocol_token(headers: &HeaderMap) -> Option<String> {
    let mut protocols = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|p| !p.is_empty());
    while let Some(protocol) = protocols.next() {
        if protocol.eq_ignore_ascii_case("bearer") {
            return protocols.next().map(str::to_owned);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn roles_and_refusals() {
        let tokens = Tokens::new(Some("admin-secret"), Some("reader"));
        assert_eq!(tokens.role_of("admin-secret"), Some(Role::Admin));
        assert_eq!(tokens.role_of("reader"), Some(Role::ReadOnly));
        assert_eq!(tokens.role_of("admin-secre"), None);
        assert_eq!(tokens.role_of(""), None);
        assert_eq!(tokens.authorize(None, false).unwrap_err().status, 401);
        assert_eq!(
            tokens.authorize(Some("nope"), false).unwrap_err().status,
            401
        );
        assert_eq!(
            tokens.authorize(Some("reader"), true).unwrap_err().status,
            403
        );
        assert_eq!(tokens.authorize(Some("reader"), false), Ok(Role::ReadOnly));
        assert_eq!(
            tokens.authorize(Some("admin-secret"), true),
            Ok(Role::Admin)
        );
        assert_eq!(Tokens::open().authorize(None, true), Ok(Role::Admin));
    }

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER   t0k", "BeArEr t0k "] {
            let mut headers = HeaderMap::new();
            headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer_token(&headers), Some("t0k"), "{value}");
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic abc"));
        assert_eq!(bearer_token(&headers), None);
    }

    #[test]
    fn the_subprotocol_pair_carries_the_token() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("bearer, s3cret"),
        );
        assert_eq!(subprotocol_token(&headers).as_deref(), Some("s3cret"));
        headers.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static("graphql-ws"),
        );
        assert_eq!(subprotocol_token(&headers), None);
    }

    #[test]
    fn digests_are_not_printed() {
        let tokens = Tokens::new(Some("hunter2"), None);
        assert!(!format!("{tokens:?}").contains("hunter2"));
    }
}
