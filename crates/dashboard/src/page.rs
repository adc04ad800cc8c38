//! The web dashboard's files, embedded in the binary so the page works
//! offline and needs nothing beside the executable.
//!
//! The page loads without a token (it holds no data) and asks for one when
//! the API answers 401. It is served with a strict Content-Security-Policy:
//! scripts, styles and connections only from this origin.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const APP_CSS: &str = include_str!("../assets/app.css");

/// The policy of the page: nothing from elsewhere, no inline code.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; connect-src 'self' ws: wss:; \
     style-src 'self'; img-src 'self' data:; script-src 'self'; frame-ancestors 'none'; \
     base-uri 'none'; form-action 'self'";

fn file(content_type: &'static str, body: &'static str) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    // The files change only with the binary; a short cache keeps upgrades
    // visible within a minute.
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=60"),
    );
    response
}

/// `GET /`.
pub(crate) fn index() -> Response {
    file("text/html; charset=utf-8", INDEX_HTML)
}

/// `GET /assets/{file}`.
pub(crate) fn asset(name: &str) -> Response {
    match name {
        "app.js" => file("text/javascript; charset=utf-8", APP_JS),
        "app.css" => file("text/css; charset=utf-8", APP_CSS),
        _ => ApiError::not_found(format!("no asset named {name}")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_only_its_own_files() {
        assert!(INDEX_HTML.contains("/assets/app.js"));
        assert!(INDEX_HTML.contains("/assets/app.css"));
        for text in [INDEX_HTML, APP_JS, APP_CSS] {
            assert!(!text.contains("://cdn"), "no CDN");
            assert!(!text.contains("https://fonts."), "no web fonts");
        }
    }
}
