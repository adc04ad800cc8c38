//! The operator surface of orchex: the axum REST API, the WebSocket live
//! stream, the embedded web dashboard, authentication and the OpenAPI
//! description (PRODUCT.md §8).
//!
//! It reads and steers the daemon's services ([`Services`]): the
//! orchestrator's handle for control, the store for listings and exports,
//! the telemetry bus for live events, the health registry, the monitor for
//! watcher states and analysis, and the configuration handle for
//! `GET/PATCH /api/config`. It does not know how the daemon composes them,
//! and it holds no state of its own beyond caches (the chart timeline, the
//! latest analysis figures, webhook delivery ids).
//!
//! # Layers of a request
//! tracing span → panic to JSON 500 → every error made JSON → CORS (only
//! the configured origins) → timeout → body limit → bearer authentication
//! (two roles, constant-time) → the handler.
//!
//! # Example
//! ```no_run
//! # async fn demo(services: orchex_dashboard::Services, config: orchex_core::config::Config) -> Result<(), Box<dyn std::error::Error>> {
//! use orchex_dashboard::{Dashboard, DashboardOptions};
//!
//! let dashboard = Dashboard::new(services, &config, DashboardOptions::default())?;
//! let address = orchex_dashboard::check_bind(&config.dashboard, dashboard.policy().as_ref())?;
//! let listener = tokio::net::TcpListener::bind(address).await?;
//! dashboard.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```

mod api;
pub mod auth;
mod error;
mod page;
mod state;
pub mod timeline;
pub mod view;
pub mod webhook;
pub mod ws;

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, RwLock};

use axum::Router;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use orchex_core::config::{Config, DashboardConfig};
use orchex_core::{EventKind, RepoId};
use orchex_telemetry::LiveFilter;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::trace::TraceLayer;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{IntoParams, Modify, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{Role, Tokens};
pub use error::{ApiError, ErrorBody, ErrorDetail};
pub use state::{AccessPolicy, AnalysisSummary, DashboardOptions, Services};
pub use view::{AccessView, DashboardView, RepositoryView, WatcherView};
pub use ws::WsOptions;

use crate::error::ApiQuery;
use crate::state::{AppState, Inner, SeenDeliveries, lock};
use crate::timeline::Timeline;

/// Why the dashboard cannot start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DashboardError {
    /// A token or secret file cannot be read.
    #[error("{key}: cannot read {}: {source}", path.display())]
    SecretFile {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A token or secret file is empty (or starts with an empty line): an
    /// empty token would switch authentication off.
    #[error("{key}: {} is empty; its first line must hold the secret", path.display())]
    EmptySecretFile {
        /// The configuration key naming the file.
        key: &'static str,
        /// The file.
        path: std::path::PathBuf,
    },
    /// A non-loopback bind without a token.
    #[error(
        "dashboard.bind: {bind} is not a loopback address, so a token is required; set dashboard.authToken (or authTokenFile), or bind to 127.0.0.1"
    )]
    InsecureBind {
        /// The configured bind address.
        bind: String,
    },
    /// The bind address is not an IP address.
    #[error("dashboard.bind: {bind:?} is not an IP address: {reason}")]
    BadBind {
        /// The configured bind address.
        bind: String,
        /// Why.
        reason: String,
    },
}

/// The address to listen on, refusing a non-loopback address when no token
/// is configured.
pub fn check_bind(
    config: &DashboardConfig,
    policy: &AccessPolicy,
) -> Result<SocketAddr, DashboardError> {
    let ip: IpAddr = config
        .bind
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|e: std::net::AddrParseError| DashboardError::BadBind {
            bind: config.bind.clone(),
            reason: e.to_string(),
        })?;
    if !ip.is_loopback() && !policy.tokens.required() {
        return Err(DashboardError::InsecureBind {
            bind: config.bind.clone(),
        });
    }
    Ok(SocketAddr::new(ip, config.port))
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "orchex",
        description = "The orchex daemon's API: jobs, events, repositories, control, configuration, live stream (PRODUCT.md §8)."
    ),
    modifiers(&BearerScheme),
    tags(
        (name = "health", description = "Health and Prometheus metrics (open without a token)"),
        (name = "dashboard", description = "Snapshots and performance figures"),
        (name = "jobs", description = "Jobs: list, detail, run, cancel, rollback"),
        (name = "events", description = "Stored events, as JSON pages or a CSV stream"),
        (name = "repositories", description = "Watched repositories and their analysis"),
        (name = "control", description = "Pause, resume, emergency stop"),
        (name = "config", description = "The running configuration and the routing table"),
        (name = "webhooks", description = "GitHub push deliveries"),
        (name = "live", description = "The WebSocket stream"),
        (name = "page", description = "The web dashboard"),
        (name = "meta", description = "This document"),
    )
)]
struct ApiDoc;

struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

fn api_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(api::index))
        .routes(routes!(api::asset))
        .routes(routes!(api::health))
        .routes(routes!(api::health_detailed))
        .routes(routes!(api::dashboard))
        .routes(routes!(api::metrics_json))
        .routes(routes!(api::prometheus))
        .routes(routes!(api::events))
        .routes(routes!(api::repositories, api::add_repository))
        .routes(routes!(api::remove_repository))
        .routes(routes!(api::analysis))
        .routes(routes!(api::jobs, api::run))
        .routes(routes!(api::job))
        .routes(routes!(api::cancel))
        .routes(routes!(api::cancel_matching))
        .routes(routes!(api::rollback))
        .routes(routes!(api::pause))
        .routes(routes!(api::resume))
        .routes(routes!(api::emergency_stop))
        .routes(routes!(api::config, api::patch_config))
        .routes(routes!(api::reload_config))
        .routes(routes!(api::routing))
        .routes(routes!(webhook::github))
        .routes(routes!(api::openapi))
        .routes(routes!(live))
}

/// The OpenAPI document of every route the router serves, built from the
/// same list as the router.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    api_router().split_for_parts().1
}

/// The dashboard: build it from the services, then [`Dashboard::router`]
/// or [`Dashboard::serve`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Dashboard {
    state: AppState,
}

impl Dashboard {
    /// Builds the dashboard and starts following the event bus (for the
    /// charts and analysis figures). Must be called within a tokio runtime.
    pub fn new(
        services: Services,
        config: &Config,
        options: DashboardOptions,
    ) -> Result<Self, DashboardError> {
        let policy = AccessPolicy::from_config(&config.dashboard)?;
        let openapi = openapi_document().to_json().unwrap_or_else(|err| {
            tracing::error!(%err, "cannot encode the OpenAPI document");
            "{}".to_owned()
        });
        let shutdown = CancellationToken::new();
        let live = ws::LiveFeed::start(&services.bus, &options.ws, shutdown.clone());
        let state = AppState {
            inner: Arc::new(Inner {
                services,
                live,
                policy: RwLock::new(Arc::new(policy)),
                deliveries: Mutex::new(SeenDeliveries::default()),
                timeline: Mutex::new(Timeline::new()),
                analyses: Mutex::new(std::collections::HashMap::new()),
                shutdown,
                openapi,
                snapshot_cache: Mutex::new(None),
                snapshot_build: Arc::new(tokio::sync::Mutex::new(())),
                bind: config.dashboard.bind.clone(),
                bound_to_loopback: config
                    .dashboard
                    .bind
                    .trim_matches(|c| c == '[' || c == ']')
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback()),
                options,
            }),
        };
        tokio::spawn(state.clone().follow_events());
        Ok(Self { state })
    }

    /// WebSocket sessions open now.
    pub fn live_sessions(&self) -> usize {
        self.state.inner.live.subscribers()
    }

    /// The access policy in force.
    pub fn policy(&self) -> Arc<AccessPolicy> {
        self.state.policy()
    }

    /// Applies the `[dashboard]` section of a reloaded configuration:
    /// tokens, CORS origins and the webhook secret. The bind address and
    /// port need a restart.
    ///
    /// A policy without a token is refused while the server listens on a
    /// non-loopback address (the old policy stays).
    pub fn apply_config(&self, config: &Config) -> Result<(), DashboardError> {
        let policy = AccessPolicy::from_config(&config.dashboard)?;
        if !self.state.inner.bound_to_loopback && !policy.tokens.required() {
            return Err(DashboardError::InsecureBind {
                bind: self.state.inner.bind.clone(),
            });
        }
        self.state.set_policy(policy);
        Ok(())
    }

    /// The router with every layer (tracing, panics, JSON errors, CORS,
    /// timeout, body limit, authentication).
    pub fn router(&self) -> Router {
        let (router, _) = api_router().split_for_parts();
        let state = self.state.clone();
        let options = &state.inner.options;
        let cors_state = state.clone();
        let cors = CorsLayer::new()
            .allow_origin(AllowOrigin::predicate(move |origin: &HeaderValue, _| {
                let origin = origin.to_str().unwrap_or_default();
                cors_state
                    .policy()
                    .allowed_origins
                    .iter()
                    .any(|allowed| allowed == origin)
            }))
            .allow_methods([Method::GET, Method::POST, Method::PATCH, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(std::time::Duration::from_secs(600));
        router
            .fallback(|| async { ApiError::not_found("no such route") })
            .layer(
                ServiceBuilder::new()
                    .layer(TraceLayer::new_for_http())
                    .layer(CatchPanicLayer::custom(panic_response))
                    .layer(axum::middleware::from_fn(json_errors))
                    .layer(cors)
                    .layer(tower_http::timeout::TimeoutLayer::with_status_code(
                        StatusCode::REQUEST_TIMEOUT,
                        options.request_timeout,
                    ))
                    .layer(axum::extract::DefaultBodyLimit::max(options.body_limit))
                    .layer(axum::middleware::from_fn_with_state(
                        state.clone(),
                        authenticate,
                    )),
            )
            .with_state(state)
    }

    /// Ends every WebSocket session and the event follower.
    pub fn shutdown(&self) {
        self.state.inner.shutdown.cancel();
    }

    /// Serves on `listener` until `shutdown` completes, then closes the
    /// WebSocket sessions and waits for in-flight requests.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        use axum::serve::ListenerExt as _;
        let router = self.router();
        let token = self.state.inner.shutdown.clone();
        let listener = listener.tap_io(configure_connection);
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            token.cancel();
        })
        .await
    }
}

/// Sets up an accepted connection: `TCP_NODELAY`, because small writes (a
/// WebSocket event is ~300 bytes) must not wait for the client's delayed
/// ACK. With Nagle's algorithm on, an event written while an earlier one
/// was unacknowledged waited up to 40 ms (the live stream's p99 was
/// 41 ms with 10 clients, docs/performance.md).
fn configure_connection(tcp: &mut tokio::net::TcpStream) {
    if let Err(err) = tcp.set_nodelay(true) {
        tracing::debug!(%err, "cannot set TCP_NODELAY on a connection");
    }
}

// === middleware ===

fn is_open(method: &Method, path: &str) -> bool {
    let read = matches!(*method, Method::GET | Method::HEAD);
    (read && (matches!(path, "/" | "/api/health" | "/metrics") || path.starts_with("/assets/")))
        // GitHub cannot send a bearer token; the body's signature is checked.
        || (*method == Method::POST && path == "/api/webhooks/github")
}

async fn authenticate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    if is_open(request.method(), path) {
        return next.run(request).await;
    }
    let policy = state.policy();
    let headers = request.headers();
    // Other web pages must not steer the daemon through the operator's
    // browser: a cross-site request that changes state is refused, and
    // without a token (loopback only) the Host must be a loopback name, so
    // a DNS-rebound page cannot read the API either.
    if auth::needs_admin(request.method()) && !origin_allowed(headers, &policy) {
        return ApiError::forbidden(
            "Origin: cross-site requests may not change state (dashboard.corsOrigins)",
        )
        .into_response();
    }
    if !policy.tokens.required() && !host_is_loopback(headers) {
        return ApiError::forbidden("Host: without a token only loopback host names are served")
            .into_response();
    }
    let subprotocol;
    let presented = match auth::bearer_token(headers) {
        Some(token) => Some(token),
        None if path == "/api/ws" => {
            subprotocol = auth::subprotocol_token(headers);
            subprotocol.as_deref()
        }
        None => None,
    };
    match policy
        .tokens
        .authorize(presented, auth::needs_admin(request.method()))
    {
        Ok(role) => {
            request.extensions_mut().insert(role);
            next.run(request).await
        }
        Err(err) => {
            let mut response = err.into_response();
            if response.status() == StatusCode::UNAUTHORIZED {
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"orchex\""),
                );
            }
            response
        }
    }
}

fn code_for(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "timeout",
        409 => "conflict",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        426 => "upgrade_required",
        429 => "too_many_requests",
        503 => "unavailable",
        500..=599 => "internal",
        _ => "error",
    }
}

/// Makes every error response JSON, whoever produced it (axum's
/// rejections, the timeout layer, a 405): never an HTML or empty error.
async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 4096)
        .await
        .ok()
        .and_then(|b| String::from_utf8(b.to_vec()).ok())
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| {
            status
                .canonical_reason()
                .unwrap_or("request failed")
                .to_lowercase()
        });
    let mut json = ApiError::new(status, code_for(status), text).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            json.headers_mut().insert(name.clone(), value.clone());
        }
    }
    json
}

#[allow(clippy::needless_pass_by_value)] // the signature CatchPanicLayer::custom expects
fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response<Body> {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    tracing::error!(panic = detail, "a request handler panicked");
    ApiError::internal("the request failed unexpectedly; the cause is in the daemon's log")
        .into_response()
}

// === the WebSocket ===

/// Filters of the WebSocket.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
struct LiveQuery {
    /// Event kinds to receive, comma separated; every kind when absent.
    kinds: Option<String>,
    /// Only events of this repository.
    repo: Option<String>,
}

fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        // HTTP/1.0 without Host: only a local client would send that here.
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _)| name),
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn origin_allowed(headers: &HeaderMap, policy: &AccessPolicy) -> bool {
    let Some(origin) = headers.get(header::ORIGIN) else {
        // Not a browser: the token alone decides.
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let same_origin = !host.is_empty()
        && (origin == format!("http://{host}") || origin == format!("https://{host}"));
    same_origin || policy.allowed_origins.iter().any(|o| o == origin)
}

/// The live stream: `{"type": "event"}` messages for every matching event,
/// `{"type": "snapshot"}` every second, `{"type": "lagged", "missed": N}`
/// after falling behind. Browsers pass the token as the subprotocol pair
/// `bearer, <token>`.
#[utoipa::path(get, path = "/api/ws", tag = "live", params(LiveQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "Origin not allowed", body = ErrorBody)),
    security(("bearer" = [])))]
async fn live(
    State(state): State<AppState>,
    axum::Extension(role): axum::Extension<Role>,
    headers: HeaderMap,
    ApiQuery(query): ApiQuery<LiveQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    if !origin_allowed(&headers, &state.policy()) {
        return Err(ApiError::forbidden(
            "Origin: not allowed to open the live stream (dashboard.corsOrigins)",
        ));
    }
    let mut filter = LiveFilter::all();
    for kind in query
        .kinds
        .as_deref()
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
    {
        let kind: EventKind = kind
            .parse()
            .map_err(|e| ApiError::bad_request(format!("kinds: {e}")))?;
        filter = filter.kind(kind);
    }
    if let Some(repo) = query.repo.as_deref().filter(|r| !r.is_empty()) {
        let repo = RepoId::new(repo).map_err(|e| ApiError::bad_request(format!("repo: {e}")))?;
        filter = filter.repo(repo);
    }
    // Checked after the filters, so a bad filter is reported as such.
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::new(
            rejection.status(),
            "upgrade_required",
            rejection.body_text(),
        )
    })?;
    let offered_bearer = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim().eq_ignore_ascii_case("bearer"));
    let upgrade = if offered_bearer {
        upgrade.protocols(["bearer"])
    } else {
        upgrade
    };
    let events = state.inner.live.subscribe(filter);
    let snapshot_state = state.clone();
    let snapshots: ws::SnapshotSource = Arc::new(move || {
        let state = snapshot_state.clone();
        Box::pin(async move { state.snapshot_frame(role).await })
    });
    let session = ws::Session {
        events,
        snapshots,
        options: state.inner.options.ws.clone(),
        shutdown: state.inner.shutdown.clone(),
    };
    // Clients send almost nothing (pongs, a close): a small read buffer
    // instead of tungstenite's 128 KiB, which is zero-filled before every
    // read and stays resident per idle client (docs/performance.md).
    Ok(upgrade
        .read_buffer_size(4 * 1024)
        .max_message_size(64 * 1024)
        .on_upgrade(move |socket| async move {
            let ending = ws::run_socket_session(session, socket).await;
            tracing::debug!(?ending, "websocket session ended");
        }))
}

impl AppState {
    /// The current snapshot for `role`.
    ///
    /// Built at most about twice per snapshot period for every client
    /// together, and never waited for once there is one: a stale snapshot
    /// is answered at once while a fresh one is built in the background, so
    /// a thousand sessions whose ticks fall during a build (store queries,
    /// JSON encoding) do not stall their live events behind it. Only the
    /// very first snapshot is waited for.
    async fn snapshot_frame(&self, role: Role) -> Option<ws::Snapshot> {
        let fresh_for = self.inner.options.ws.snapshot_every / 2;
        let stale = {
            let cache = lock(&self.inner.snapshot_cache);
            cache
                .as_ref()
                .map(|(built, frames)| (built.elapsed() >= fresh_for, frames.pick(role)))
        };
        match stale {
            Some((false, frame)) => Some(frame),
            Some((true, frame)) => {
                if let Ok(building) = Arc::clone(&self.inner.snapshot_build).try_lock_owned() {
                    let state = self.clone();
                    tokio::spawn(async move {
                        let _building = building;
                        state.build_snapshot().await;
                    });
                }
                Some(frame)
            }
            None => {
                let _building = self.inner.snapshot_build.lock().await;
                // Another session may have built it meanwhile.
                if let Some((_, frames)) = lock(&self.inner.snapshot_cache).as_ref() {
                    return Some(frames.pick(role));
                }
                self.build_snapshot().await.map(|frames| frames.pick(role))
            }
        }
    }

    /// Builds the snapshot for both roles and caches it; `None` when it
    /// cannot be encoded.
    async fn build_snapshot(&self) -> Option<SnapshotFrames> {
        let mut view = view::dashboard(self, Role::Admin, view::RecentEvents::Omit).await;
        let messages = view::SnapshotMessages::new(&view).ok()?;
        view.access.role = Role::ReadOnly;
        let core_read_only = view::SnapshotMessages::core(&view).ok()?;
        let previous = lock(&self.inner.snapshot_cache)
            .as_ref()
            .map(|(_, frames)| frames.clone());
        let section = |message: String, index: usize| {
            let version = match previous.as_ref().and_then(|p| p.admin.sections.get(index)) {
                Some(before) if before.message.as_str() == message => before.version,
                Some(before) => before.version + 1,
                None => 1,
            };
            ws::SnapshotSection {
                version,
                message: message.into(),
            }
        };
        let jobs = section(messages.jobs, 1);
        let timeline = section(messages.timeline, 2);
        let core = |message: String| ws::SnapshotSection {
            version: 0,
            message: message.into(),
        };
        let frames = SnapshotFrames {
            admin: ws::Snapshot {
                sections: vec![core(messages.core), jobs.clone(), timeline.clone()],
            },
            read_only: ws::Snapshot {
                sections: vec![core(core_read_only), jobs, timeline],
            },
        };
        *lock(&self.inner.snapshot_cache) = Some((tokio::time::Instant::now(), frames.clone()));
        Some(frames)
    }
}

/// The live snapshot for each role; the sections after the first are the
/// same for both.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotFrames {
    admin: ws::Snapshot,
    read_only: ws::Snapshot,
}

impl SnapshotFrames {
    fn pick(&self, role: Role) -> ws::Snapshot {
        match role {
            Role::Admin => self.admin.clone(),
            Role::ReadOnly => self.read_only.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_send_small_writes_at_once() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let client = tokio::net::TcpStream::connect(address).await.unwrap();
        let (mut accepted, _) = listener.accept().await.unwrap();
        assert!(
            !accepted.nodelay().unwrap(),
            "the kernel default is Nagle on"
        );
        configure_connection(&mut accepted);
        assert!(accepted.nodelay().unwrap());
        drop(client);
    }

    #[test]
    fn open_routes_are_exactly_health_metrics_page_and_webhook() {
        assert!(is_open(&Method::GET, "/api/health"));
        assert!(is_open(&Method::GET, "/metrics"));
        assert!(is_open(&Method::GET, "/"));
        assert!(is_open(&Method::GET, "/assets/app.js"));
        assert!(is_open(&Method::POST, "/api/webhooks/github"));
        assert!(!is_open(&Method::GET, "/api/health/detailed"));
        assert!(!is_open(&Method::POST, "/api/health"));
        assert!(!is_open(&Method::GET, "/api/jobs"));
        assert!(!is_open(&Method::GET, "/api/ws"));
    }

    #[test]
    fn a_non_loopback_bind_needs_a_token() {
        let mut config = DashboardConfig {
            bind: "0.0.0.0".to_owned(),
            ..DashboardConfig::default()
        };
        let open = AccessPolicy::default();
        let err = check_bind(&config, &open).unwrap_err();
        assert!(err.to_string().contains("dashboard.bind"), "{err}");
        assert!(err.to_string().contains("authToken"), "{err}");
        let guarded = AccessPolicy {
            tokens: Tokens::new(Some("t"), None),
            ..AccessPolicy::default()
        };
        assert!(check_bind(&config, &guarded).is_ok());
        config.bind = "::1".to_owned();
        assert!(check_bind(&config, &open).is_ok());
        config.bind = "localhost".to_owned();
        assert!(matches!(
            check_bind(&config, &open),
            Err(DashboardError::BadBind { .. })
        ));
    }

    #[test]
    fn only_loopback_host_names_pass_without_a_token() {
        for (host, ok) in [
            ("127.0.0.1:8080", true),
            ("localhost:8080", true),
            ("LOCALHOST", true),
            ("[::1]:8080", true),
            ("evil.example.invalid:8080", false),
            ("10.0.0.1:8080", false),
        ] {
            let mut headers = HeaderMap::new();
            headers.insert(header::HOST, HeaderValue::from_str(host).unwrap());
            assert_eq!(host_is_loopback(&headers), ok, "{host}");
        }
    }

    #[test]
    fn the_websocket_origin_must_be_this_server_or_configured() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
        let policy = AccessPolicy {
            allowed_origins: vec!["https://ops.example.invalid".to_owned()],
            ..AccessPolicy::default()
        };
        assert!(origin_allowed(&headers, &policy));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:8080"),
        );
        assert!(origin_allowed(&headers, &policy));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://ops.example.invalid"),
        );
        assert!(origin_allowed(&headers, &policy));
        headers.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://evil.example.invalid"),
        );
        assert!(!origin_allowed(&headers, &policy));
    }
}
