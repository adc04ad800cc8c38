//! The REST handlers of PRODUCT.md §8. Each carries its OpenAPI
//! description (`#[utoipa::path]`); the router registers them through
//! `utoipa_axum::routes!`, so the served routes and the document are built
//! from the same list and cannot drift apart.

use std::path::PathBuf;

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt as _;
use orchex_core::{
    AnalysisReport, Event, EventKind, Job, JobId, JobState, RepoId, Repository, Severity, Timestamp,
};
use orchex_orchestrator::{CancelFilter, ManualRun, RouteEntry, RunState};
use orchex_store::{EventFilter, ExportFormat, JobFilter, PageRequest};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::auth::Role;
use crate::error::{ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody};
use crate::state::AppState;
use crate::view::{self, DashboardView, DetailedHealth, PerformanceView, RepositoryView};

/// A page of a list.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct JobList {
    /// The jobs, newest first.
    pub items: Vec<Job>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// A page of events.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct EventList {
    /// The events, newest first.
    pub items: Vec<Event>,
    /// Pass as `cursor` for the next page; `null` on the last one.
    pub next_cursor: Option<String>,
}

/// The repositories (one page: the configuration is the whole list).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RepositoryList {
    /// The repositories, in configuration order.
    pub items: Vec<RepositoryView>,
    /// Always `null`.
    pub next_cursor: Option<String>,
}

/// The jobs a request queued (or found already queued, or skipped).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct JobsAccepted {
    /// The jobs.
    pub items: Vec<Job>,
}

/// The errors every operation that reads a JSON body may answer besides
/// its own: 413 above the body limit, 415 without
/// `Content-Type: application/json` (see [`ApiJson`]).
#[derive(Debug)]
pub(crate) struct JsonBodyErrors;

impl utoipa::IntoResponses for JsonBodyErrors {
    fn responses() -> std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::response::Response>,
    > {
        let error = |description: &str| {
            utoipa::openapi::ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    utoipa::openapi::ContentBuilder::new()
                        .schema(Some(utoipa::openapi::Ref::from_schema_name("ErrorBody")))
                        .build(),
                )
                .build()
                .into()
        };
        [
            (
                "413".to_owned(),
                error("The body is larger than the server accepts (`payload_too_large`)"),
            ),
            (
                "415".to_owned(),
                error("The body is not sent as `Content-Type: application/json` (`unsupported_media_type`)"),
            ),
        ]
        .into()
    }
}

fn parse_list<T: std::str::FromStr>(name: &str, value: Option<&str>) -> Result<Vec<T>, ApiError>
where
    T::Err: std::fmt::Display,
{
    value
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<T>()
                .map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
        })
        .collect()
}

fn parse_repo(name: &str, value: Option<&str>) -> Result<Option<RepoId>, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| RepoId::new(v).map_err(|e| ApiError::bad_request(format!("{name}: {e}"))))
        .transpose()
}

fn parse_time(name: &str, value: Option<&str>) -> Result<Option<Timestamp>, ApiError> {
    value
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<Timestamp>().map(within_store_range).map_err(|e| {
                ApiError::bad_request(format!("{name}: expected an RFC 3339 time: {e}"))
            })
        })
        .transpose()
}

/// `ts` moved into the times the store can hold (nanoseconds since the
/// epoch in an `i64`: the years 1678 to 2262). Every stored event lies in
/// that range, so a `since` or `until` outside it selects the same events
/// once clamped, instead of failing the query.
fn within_store_range(ts: Timestamp) -> Timestamp {
    let nanos = ts.as_nanosecond();
    let clamped = nanos.clamp(i128::from(i64::MIN), i128::from(i64::MAX));
    if clamped == nanos {
        ts
    } else {
        Timestamp::from_nanosecond(clamped).unwrap_or(ts)
    }
}

fn page(limit: Option<u32>, cursor: Option<String>) -> Result<PageRequest, ApiError> {
    let mut page = PageRequest::first();
    if let Some(limit) = limit {
        if !(1..=orchex_store::MAX_PAGE_LIMIT).contains(&limit) {
            return Err(ApiError::bad_request(format!(
                "limit: must be between 1 and {}, got {limit}",
                orchex_store::MAX_PAGE_LIMIT
            )));
        }
        page = page.limit(limit);
    }
    if let Some(cursor) = cursor.filter(|c| !c.is_empty()) {
        page = page.after(cursor);
    }
    Ok(page)
}

// === page ===

/// The web dashboard.
#[utoipa::path(get, path = "/", tag = "page",
    responses((status = 200, description = "The dashboard page", content_type = "text/html", body = String)))]
pub(crate) async fn index() -> Response {
    crate::page::index()
}

/// A static asset of the dashboard page.
#[utoipa::path(get, path = "/assets/{file}", tag = "page",
    params(("file" = String, Path, description = "`app.js` or `app.css`")),
    responses(
        (status = 200, description = "The asset: `app.js` as JavaScript, `app.css` as CSS",
            content((String = "text/javascript"), (String = "text/css"))),
        (status = 404, description = "No such asset", body = ErrorBody)))]
pub(crate) async fn asset(ApiPath(file): ApiPath<String>) -> Response {
    crate::page::asset(&file)
}

// === health and figures ===

/// Overall health; 503 when unhealthy. Open without a token.
#[utoipa::path(get, path = "/api/health", tag = "health",
    responses(
        (status = 200, description = "ok or degraded", body = orchex_core::HealthStatus),
        (status = 503, description = "unhealthy", body = orchex_core::HealthStatus)))]
pub(crate) async fn health(State(state): State<AppState>) -> Response {
    let health = state.services().health.snapshot();
    let status = if health.status == orchex_core::HealthLevel::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    (status, axum::Json(health)).into_response()
}

/// Health with breakers, queue depth, watchers, store and memory.
#[utoipa::path(get, path = "/api/health/detailed", tag = "health",
    responses(
        (status = 200, description = "ok or degraded", body = DetailedHealth),
        (status = 503, description = "unhealthy", body = DetailedHealth),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn health_detailed(State(state): State<AppState>) -> Response {
    let services = state.services();
    let health = services.health.snapshot();
    let queue_depth = services.store.queue_depth().await.unwrap_or(0);
    let watchers = services
        .monitor
        .statuses()
        .into_iter()
        .map(|status| view::WatcherRow {
            repo: status.repo.to_string(),
            watcher: view::watcher_view(Some(status)),
        })
        .collect();
    let status = if health.status == orchex_core::HealthLevel::Unhealthy {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    let detailed = DetailedHealth {
        health,
        breakers: services.orchestrator.breakers(),
        queue_depth,
        watchers,
        store: view::StoreView {
            health: services.store.health(),
            queue_depth,
        },
        memory: view::MemoryView {
            rss_bytes: view::rss_bytes(),
        },
        events_dropped: services.bus.dropped(),
    };
    (status, axum::Json(detailed)).into_response()
}

/// Everything the dashboard shows, in one read.
#[utoipa::path(get, path = "/api/dashboard", tag = "dashboard",
    responses((status = 200, body = DashboardView), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn dashboard(
    State(state): State<AppState>,
    Extension(role): Extension<Role>,
) -> axum::Json<DashboardView> {
    axum::Json(view::dashboard(&state, role, view::RecentEvents::Include).await)
}

/// Performance figures as JSON.
#[utoipa::path(get, path = "/api/metrics", tag = "dashboard",
    responses((status = 200, body = PerformanceView), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn metrics_json(
    State(state): State<AppState>,
) -> Result<axum::Json<PerformanceView>, ApiError> {
    Ok(axum::Json(view::performance(&state).await?))
}

/// Prometheus text exposition. Open without a token.
#[utoipa::path(get, path = "/metrics", tag = "health",
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String),
        (status = 503, description = "No metrics recorder installed", body = ErrorBody)))]
pub(crate) async fn prometheus(State(state): State<AppState>) -> Result<Response, ApiError> {
    let Some(handle) = &state.services().metrics else {
        return Err(ApiError::unavailable(
            "no Prometheus recorder is installed in this process",
        ));
    };
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle.render(),
    )
        .into_response())
}

// === events ===

/// Filters of `GET /api/events`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventQuery {
    /// Event kinds, comma separated (snake_case).
    kind: Option<String>,
    /// Repository name.
    repo: Option<String>,
    /// Pipeline name.
    pipeline: Option<String>,
    /// Job id.
    #[param(format = Uuid)]
    job_id: Option<String>,
    /// `info`, `warn`, `error` or `critical`.
    #[param(value_type = Option<Severity>)]
    severity: Option<String>,
    /// Only events at or after this RFC 3339 time.
    #[param(format = DateTime)]
    since: Option<String>,
    /// Only events before this RFC 3339 time.
    #[param(format = DateTime)]
    until: Option<String>,
    /// Page size, 1 to 10000 (default 100); with `format=csv`, the most rows.
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    cursor: Option<String>,
    /// `json` (default) or `csv` (streamed).
    #[param(schema_with = event_format_schema)]
    format: Option<String>,
}

/// A string schema allowing only `values`.
fn string_enum(values: &[&str]) -> utoipa::openapi::Object {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::String)
        .enum_values(Some(values.iter().copied()))
        .build()
}

/// The `format` of `GET /api/events`: `json` or `csv`.
fn event_format_schema() -> utoipa::openapi::Object {
    string_enum(&["json", "csv"])
}

impl EventQuery {
    fn filter(&self) -> Result<EventFilter, ApiError> {
        let mut filter = EventFilter::new();
        for kind in parse_list::<EventKind>("kind", self.kind.as_deref())? {
            filter = filter.kind(kind);
        }
        if let Some(repo) = parse_repo("repo", self.repo.as_deref())? {
            filter = filter.repo(repo);
        }
        if let Some(pipeline) = self.pipeline.as_deref().filter(|p| !p.is_empty()) {
            filter = filter.pipeline(pipeline);
        }
        if let Some(job) = self.job_id.as_deref().filter(|j| !j.is_empty()) {
            let job: JobId = job
                .parse()
                .map_err(|e| ApiError::bad_request(format!("jobId: {e}")))?;
            filter = filter.job(job);
        }
        if let Some(severity) = self.severity.as_deref().filter(|s| !s.is_empty()) {
            let severity: Severity = severity
                .parse()
                .map_err(|e| ApiError::bad_request(format!("severity: {e}")))?;
            filter = filter.severity(severity);
        }
        if let Some(since) = parse_time("since", self.since.as_deref())? {
            filter = filter.since(since);
        }
        if let Some(until) = parse_time("until", self.until.as_deref())? {
            filter = filter.until(until);
        }
        Ok(filter)
    }
}

/// Stored events, newest first; `format=csv` streams them.
#[utoipa::path(get, path = "/api/events", tag = "events", params(EventQuery),
    responses(
        (status = 200, description = "A JSON page; with `format=csv` a CSV stream (columns id, ts, kind, severity, repo, pipeline, jobId, message, data)",
            content((EventList = "application/json"), (String = "text/csv"))),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn events(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EventQuery>,
) -> Result<Response, ApiError> {
    let filter = query.filter()?;
    let page = page(query.limit, query.cursor.clone())?;
    match query.format.as_deref().unwrap_or("json") {
        "json" | "" => {
            let page = state.services().store.query_events(filter, page).await?;
            Ok(axum::Json(EventList {
                items: page.items,
                next_cursor: page.next_cursor,
            })
            .into_response())
        }
        "csv" => {
            let stream = state.services().store.export_events(
                filter,
                ExportFormat::Csv,
                query.limit.map(u64::from),
            );
            let body = Body::from_stream(stream.map(|chunk| {
                chunk.map_err(|err| {
                    tracing::error!(%err, "event export failed mid-stream");
                    std::io::Error::other(err.to_string())
                })
            }));
            Ok((
                [
                    (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                    (
                        header::CONTENT_DISPOSITION,
                        "attachment; filename=\"orchex-events.csv\"",
                    ),
                ],
                body,
            )
                .into_response())
        }
        other => Err(ApiError::bad_request(format!(
            "format: expected json or csv, got {other:?}"
        ))),
    }
}

// === repositories ===

/// The configured repositories with their watcher state and latest analysis.
#[utoipa::path(get, path = "/api/repositories", tag = "repositories",
    responses((status = 200, body = RepositoryList), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn repositories(State(state): State<AppState>) -> axum::Json<RepositoryList> {
    axum::Json(RepositoryList {
        items: view::repositories(&state),
        next_cursor: None,
    })
}

/// A repository to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct NewRepository {
    /// Its name (letters, digits, `-`, `_`, `.`).
    name: String,
    /// The path of an existing git repository's working tree.
    path: String,
    /// Watched and run (default true).
    #[serde(default)]
    enabled: Option<bool>,
    /// The watched branch; absent follows whatever `HEAD` points to.
    #[serde(default)]
    branch: Option<String>,
}

fn patch_outcome(outcome: orchex_config::ReloadOutcome) -> Result<ConfigChange, ApiError> {
    match outcome {
        orchex_config::ReloadOutcome::Applied {
            changed,
            needs_restart,
        } => Ok(ConfigChange {
            outcome: "applied".to_owned(),
            changed,
            needs_restart,
        }),
        orchex_config::ReloadOutcome::Unchanged => Ok(ConfigChange {
            outcome: "unchanged".to_owned(),
            changed: Vec::new(),
            needs_restart: Vec::new(),
        }),
        orchex_config::ReloadOutcome::Rejected { error } => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "config_rejected",
            error,
        )),
        _ => Err(ApiError::internal("unexpected reload outcome")),
    }
}

impl From<orchex_config::ConfigError> for ApiError {
    fn from(err: orchex_config::ConfigError) -> Self {
        config_error(&err)
    }
}

fn config_error(err: &orchex_config::ConfigError) -> ApiError {
    match err {
        orchex_config::ConfigError::Invalid { .. } | orchex_config::ConfigError::BadUpdate(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "config_rejected", err.to_string())
        }
        other => ApiError::internal(format!("configuration: {other}")),
    }
}

/// Edits the list under `key` of the overrides object, creating it when
/// absent and removing it when left empty.
fn edit_list(
    overrides: &mut serde_json::Value,
    key: &str,
    edit: impl FnOnce(&mut Vec<serde_json::Value>),
) {
    let Some(map) = overrides.as_object_mut() else {
        return;
    };
    let mut list = match map.remove(key) {
        Some(serde_json::Value::Array(list)) => list,
        _ => Vec::new(),
    };
    edit(&mut list);
    if !list.is_empty() {
        map.insert(key.to_owned(), serde_json::Value::Array(list));
    }
}

/// Adds a repository to watch. The path is canonicalised and must be a git
/// repository; the addition is persisted in the overrides file.
#[utoipa::path(post, path = "/api/repositories", tag = "repositories", request_body = NewRepository,
    responses(
        (status = 201, body = RepositoryView),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 409, body = ErrorBody),
        JsonBodyErrors),
    security(("bearer" = [])))]
pub(crate) async fn add_repository(
    State(state): State<AppState>,
    ApiJson(new): ApiJson<NewRepository>,
) -> Result<Response, ApiError> {
    let name = RepoId::new(&new.name).map_err(|e| ApiError::bad_request(format!("name: {e}")))?;
    let requested = PathBuf::from(&new.path);
    if !requested.is_absolute() {
        return Err(ApiError::bad_request(format!(
            "path: must be absolute, got {:?}",
            new.path
        )));
    }
    let path = tokio::task::spawn_blocking(move || {
        let path = std::fs::canonicalize(&requested)
            .map_err(|e| ApiError::bad_request(format!("path: {}: {e}", requested.display())))?;
        let repo = orchex_git::GitRepo::open(&path).map_err(|e| {
            ApiError::bad_request(format!(
                "path: {} is not a git repository: {e}",
                path.display()
            ))
        })?;
        let is_root = repo
            .workdir()
            .and_then(|w| std::fs::canonicalize(w).ok())
            .is_some_and(|w| w == path);
        if !is_root {
            return Err(ApiError::bad_request(format!(
                "path: {} is not the top of a git working tree",
                path.display()
            )));
        }
        Ok(path)
    })
    .await
    .map_err(|e| ApiError::internal(format!("repository check: {e}")))??;
    let repository = Repository {
        name: name.clone(),
        path,
        enabled: new.enabled.unwrap_or(true),
        branch: new.branch.filter(|b| !b.is_empty()),
    };
    let handle = state.services().config.clone();
    tokio::task::spawn_blocking(move || {
        handle.edit_overrides(|overrides, current| {
            // Checked against the configuration of the moment, under the
            // update lock: a concurrent add or remove is seen, not undone.
            if current
                .repositories
                .iter()
                .any(|r| r.name == repository.name)
            {
                return Err(ApiError::conflict(format!(
                    "name: a repository named {} is already configured",
                    repository.name
                )));
            }
            if let Some(existing) = current
                .repositories
                .iter()
                .find(|r| r.path == repository.path)
            {
                return Err(ApiError::conflict(format!(
                    "path: {} is already configured as {}",
                    repository.path.display(),
                    existing.name
                )));
            }
            let entry = serde_json::to_value(&repository)
                .map_err(|e| ApiError::internal(format!("encoding the repository: {e}")))?;
            let name = repository.name.as_str();
            // Only the new entry goes into the overrides: the file's own
            // list stays the operator's.
            edit_list(overrides, orchex_config::REMOVED_REPOSITORIES, |names| {
                names.retain(|n| n.as_str() != Some(name));
            });
            edit_list(overrides, "repositories", |entries| entries.push(entry));
            Ok(())
        })
    })
    .await
    .map_err(|e| ApiError::internal(format!("configuration update: {e}")))?
    .and_then(patch_outcome)?;
    let view = view::repositories(&state)
        .into_iter()
        .find(|r| r.name == name.as_str())
        .ok_or_else(|| ApiError::internal("the repository was added but is not listed"))?;
    Ok((StatusCode::CREATED, axum::Json(view)).into_response())
}

/// A removed repository.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Removed {
    /// Its name.
    removed: String,
}

/// Stops watching a repository; nothing on disk is touched.
#[utoipa::path(delete, path = "/api/repositories/{name}", tag = "repositories",
    params(("name" = String, Path, description = "Repository name")),
    responses(
        (status = 200, body = Removed),
        (status = 400, description = "`config_rejected`: the remaining configuration does not validate", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn remove_repository(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<axum::Json<Removed>, ApiError> {
    let handle = state.services().config.clone();
    let removed = name.clone();
    tokio::task::spawn_blocking(move || {
        handle.edit_overrides(|overrides, current| {
            if !current
                .repositories
                .iter()
                .any(|r| r.name.as_str() == removed)
            {
                return Err(ApiError::not_found(format!(
                    "repository {removed} not found"
                )));
            }
            edit_list(overrides, "repositories", |entries| {
                entries
                    .retain(|entry| entry.get("name").and_then(|n| n.as_str()) != Some(&removed));
            });
            // One the file itself lists is marked removed (the file is the
            // operator's and is not rewritten).
            if handle
                .load_without_overrides()?
                .repositories
                .iter()
                .any(|r| r.name.as_str() == removed)
            {
                edit_list(overrides, orchex_config::REMOVED_REPOSITORIES, |names| {
                    if !names.iter().any(|n| n.as_str() == Some(&removed)) {
                        names.push(serde_json::Value::from(removed.clone()));
                    }
                });
            }
            Ok(())
        })
    })
    .await
    .map_err(|e| ApiError::internal(format!("configuration update: {e}")))?
    .and_then(patch_outcome)?;
    Ok(axum::Json(Removed { removed: name }))
}

/// The latest analysis of a repository (cached per head commit).
#[utoipa::path(get, path = "/api/repositories/{name}/analysis", tag = "repositories",
    params(("name" = String, Path, description = "Repository name")),
    responses(
        (status = 200, body = AnalysisReport),
        (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 503, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn analysis(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<axum::Json<AnalysisReport>, ApiError> {
    let repo = RepoId::new(&name)
        .map_err(|_| ApiError::not_found(format!("repository {name} not found")))?;
    if !state.config().repositories.iter().any(|r| r.name == repo) {
        return Err(ApiError::not_found(format!("repository {name} not found")));
    }
    match state.services().monitor.analysis(&repo).await {
        Ok(report) => Ok(axum::Json((*report).clone())),
        Err(orchex_monitor::MonitorError::UnknownRepository { .. }) => Err(ApiError::unavailable(
            format!("repository {name} is not being watched yet"),
        )),
        Err(err) => Err(ApiError::unavailable(format!(
            "analysis of {name} failed: {err}"
        ))),
    }
}

// === jobs ===

/// Filters of `GET /api/jobs`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct JobQuery {
    /// Job states, comma separated.
    state: Option<String>,
    /// Repository name.
    repo: Option<String>,
    /// Pipeline name.
    pipeline: Option<String>,
    /// Page size, 1 to 10000 (default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<u32>,
    /// The `nextCursor` of the previous page.
    cursor: Option<String>,
}

/// Jobs, newest first.
#[utoipa::path(get, path = "/api/jobs", tag = "jobs", params(JobQuery),
    responses((status = 200, body = JobList), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn jobs(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<JobQuery>,
) -> Result<axum::Json<JobList>, ApiError> {
    let mut filter = JobFilter::new();
    for job_state in parse_list::<JobState>("state", query.state.as_deref())? {
        filter = filter.state(job_state);
    }
    if let Some(repo) = parse_repo("repo", query.repo.as_deref())? {
        filter = filter.repo(repo);
    }
    if let Some(pipeline) = query.pipeline.filter(|p| !p.is_empty()) {
        filter = filter.pipeline(pipeline);
    }
    let page = page(query.limit, query.cursor)?;
    let page = state.services().store.list_jobs(filter, page).await?;
    Ok(axum::Json(JobList {
        items: page.items,
        next_cursor: page.next_cursor,
    }))
}

fn job_id(id: &str) -> Result<JobId, ApiError> {
    id.parse()
        .map_err(|_| ApiError::not_found(format!("job {id} not found (not a job id)")))
}

/// One job: state, trigger, timestamps, steps with output tails, diff,
/// delivery, rollback state, impact.
#[utoipa::path(get, path = "/api/jobs/{id}", tag = "jobs",
    params(("id" = String, Path, description = "Job id (UUID)")),
    responses((status = 200, body = Job), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<Job>, ApiError> {
    let id = job_id(&id)?;
    state
        .services()
        .store
        .get_job(id)
        .await?
        .map(axum::Json)
        .ok_or_else(|| ApiError::not_found(format!("job {id} not found")))
}

/// A manual run.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RunRequest {
    /// The repository.
    repo: String,
    /// One pipeline; every pipeline that reacts to manual runs when absent.
    #[serde(default)]
    pipeline: Option<String>,
    /// Skip the rate limiter and the `unchanged` skip.
    #[serde(default)]
    force: Option<bool>,
    /// Compute the diff, deliver nothing.
    #[serde(default)]
    dry_run: Option<bool>,
}

/// Queues a manual run; answers 202 with the job(s).
#[utoipa::path(post, path = "/api/jobs", tag = "jobs", request_body = RunRequest,
    responses(
        (status = 202, body = JobsAccepted),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
        (status = 409, description = "The repository is disabled", body = ErrorBody),
        (status = 503, description = "An emergency stop is in effect", body = ErrorBody),
        JsonBodyErrors),
    security(("bearer" = [])))]
pub(crate) async fn run(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<RunRequest>,
) -> Result<Response, ApiError> {
    let jobs = state
        .services()
        .orchestrator
        .trigger(ManualRun {
            repo: request.repo,
            pipeline: request.pipeline.filter(|p| !p.is_empty()),
            force: request.force.unwrap_or(false),
            dry_run: request.dry_run.unwrap_or(false),
        })
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        axum::Json(JobsAccepted { items: jobs }),
    )
        .into_response())
}

/// Cancels a queued or running job.
#[utoipa::path(post, path = "/api/jobs/{id}/cancel", tag = "jobs",
    params(("id" = String, Path, description = "Job id (UUID)")),
    responses(
        (status = 200, body = Job),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<Job>, ApiError> {
    let id = job_id(&id)?;
    Ok(axum::Json(state.services().orchestrator.cancel(id).await?))
}

/// What a batch cancel matches.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CancelRequest {
    /// `queued` or `running`; both when absent.
    #[serde(default)]
    #[schema(schema_with = cancel_state_schema)]
    state: Option<String>,
    /// Only this repository.
    #[serde(default)]
    repo: Option<String>,
    /// Only this pipeline.
    #[serde(default)]
    pipeline: Option<String>,
}

/// The `state` of a batch cancel: `queued` or `running`.
fn cancel_state_schema() -> utoipa::openapi::Object {
    string_enum(&["queued", "running"])
}

/// The jobs a batch cancel cancelled.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Cancelled {
    /// Their ids.
    cancelled: Vec<JobId>,
}

/// Cancels every queued or running job matching the filter.
#[utoipa::path(post, path = "/api/jobs/cancel", tag = "jobs", request_body = CancelRequest,
    responses(
        (status = 200, body = Cancelled),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), JsonBodyErrors),
    security(("bearer" = [])))]
pub(crate) async fn cancel_matching(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CancelRequest>,
) -> Result<axum::Json<Cancelled>, ApiError> {
    let job_state = match request.state.as_deref().filter(|s| !s.is_empty()) {
        None => None,
        Some(text) => {
            let parsed: JobState = text
                .parse()
                .map_err(|e| ApiError::bad_request(format!("state: {e}")))?;
            if !matches!(parsed, JobState::Queued | JobState::Running) {
                return Err(ApiError::bad_request(format!(
                    "state: only queued or running jobs can be cancelled, got {text}"
                )));
            }
            Some(parsed)
        }
    };
    let filter = CancelFilter {
        state: job_state,
        repo: request.repo.filter(|r| !r.is_empty()),
        pipeline: request.pipeline.filter(|p| !p.is_empty()),
    };
    let cancelled = state
        .services()
        .orchestrator
        .cancel_matching(&filter)
        .await?;
    Ok(axum::Json(Cancelled { cancelled }))
}

/// Restores exactly what a delivered job replaced; 409 when it changed since.
#[utoipa::path(post, path = "/api/jobs/{id}/rollback", tag = "jobs",
    params(("id" = String, Path, description = "Job id (UUID)")),
    responses(
        (status = 200, body = Job),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
        (status = 500, description = "The restore failed", body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn rollback(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<axum::Json<Job>, ApiError> {
    let id = job_id(&id)?;
    Ok(axum::Json(
        state.services().orchestrator.rollback(id).await?,
    ))
}

// === control ===

/// The orchestrator's state after an override.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ControlOutcome {
    /// The run state now.
    state: RunState,
    /// Jobs an emergency stop cancelled.
    #[serde(skip_serializing_if = "Option::is_none")]
    cancelled: Option<Vec<JobId>>,
}

/// Stops dispatching new jobs; running ones finish.
#[utoipa::path(post, path = "/api/control/pause", tag = "control",
    responses(
        (status = 200, body = ControlOutcome),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 409, description = "Stopped or emergency-stopped: resume first", body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn pause(
    State(state): State<AppState>,
) -> Result<axum::Json<ControlOutcome>, ApiError> {
    let run_state = state.services().orchestrator.pause()?;
    Ok(axum::Json(ControlOutcome {
        state: run_state,
        cancelled: None,
    }))
}

/// Resumes dispatching (after a pause or an emergency stop).
#[utoipa::path(post, path = "/api/control/resume", tag = "control",
    responses(
        (status = 200, body = ControlOutcome),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
        (status = 503, description = "The orchestrator is not started", body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn resume(
    State(state): State<AppState>,
) -> Result<axum::Json<ControlOutcome>, ApiError> {
    let run_state = state.services().orchestrator.resume()?;
    Ok(axum::Json(ControlOutcome {
        state: run_state,
        cancelled: None,
    }))
}

/// Stops dispatching and cancels every running job (process groups killed,
/// nothing delivered); stays stopped until resume.
#[utoipa::path(post, path = "/api/control/emergency-stop", tag = "control",
    responses(
        (status = 200, body = ControlOutcome),
        (status = 401, body = ErrorBody), (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn emergency_stop(State(state): State<AppState>) -> axum::Json<ControlOutcome> {
    let orchestrator = &state.services().orchestrator;
    let cancelled = orchestrator.emergency_stop().await;
    axum::Json(ControlOutcome {
        state: orchestrator.state(),
        cancelled: Some(cancelled),
    })
}

// === configuration ===

/// The running configuration, secrets redacted.
#[utoipa::path(get, path = "/api/config", tag = "config",
    responses(
        (status = 200, description = "The configuration (PRODUCT.md §7 keys)", body = Object),
        (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn config(
    State(state): State<AppState>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let config = state.config().redacted();
    let mut value = serde_json::to_value(&config)
        .map_err(|e| ApiError::internal(format!("encoding the configuration: {e}")))?;
    redact_notification_urls(&mut value);
    redact_step_secrets(&mut value);
    Ok(axum::Json(value))
}

/// Incoming-webhook URLs carry their secret in the path (Slack's do), so
/// only their scheme and host are shown.
fn redact_notification_urls(config: &mut serde_json::Value) {
    let Some(list) = config
        .get_mut("notifications")
        .and_then(serde_json::Value::as_array_mut)
    else {
        return;
    };
    for entry in list {
        if let Some(url) = entry.get_mut("url")
            && let Some(text) = url.as_str()
        {
            *url = serde_json::Value::String(orchex_core::config::display_url(text));
        }
    }
}

/// Steps are where API keys go (`env`, an action's `with`) and webhook
/// steps' URLs carry secrets like notification URLs do: the values are
/// replaced, the keys kept, so an operator still sees what is set. The
/// read-only token may read the configuration.
fn redact_step_secrets(config: &mut serde_json::Value) {
    let redacted = || serde_json::Value::String("<redacted>".to_owned());
    let Some(pipelines) = config
        .get_mut("pipelines")
        .and_then(serde_json::Value::as_array_mut)
    else {
        return;
    };
    for pipeline in pipelines {
        for list in ["steps", "validate"] {
            let Some(steps) = pipeline
                .get_mut(list)
                .and_then(serde_json::Value::as_array_mut)
            else {
                continue;
            };
            for step in steps {
                for map in ["env", "with"] {
                    if let Some(values) =
                        step.get_mut(map).and_then(serde_json::Value::as_object_mut)
                    {
                        for value in values.values_mut() {
                            *value = redacted();
                        }
                    }
                }
                if let Some(url) = step.get_mut("webhook")
                    && let Some(text) = url.as_str()
                {
                    *url = serde_json::Value::String(orchex_core::config::display_url(text));
                }
            }
        }
    }
}

/// What a configuration change did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConfigChange {
    /// `applied` or `unchanged`.
    outcome: String,
    /// Dotted keys whose value changed.
    changed: Vec<String>,
    /// Changed keys that take effect only after a restart.
    needs_restart: Vec<String>,
}

/// Keys an API update may not touch: commands, notification targets and
/// credentials come only from the file (docs/security.md).
const FILE_ONLY_KEYS: &[&str] = &[
    "pipelines",
    "notifications",
    "repositories",
    "version",
    "protectedPaths",
    "storage",
];
const FILE_ONLY_DASHBOARD_KEYS: &[&str] = &[
    "authToken",
    "authTokenFile",
    "readOnlyToken",
    "webhookSecret",
    "webhookSecretFile",
    "corsOrigins",
    "bind",
];

fn check_patch_keys(update: &serde_json::Value) -> Result<(), ApiError> {
    let Some(fields) = update.as_object() else {
        return Err(ApiError::bad_request(
            "body: the update must be a JSON object of configuration keys",
        ));
    };
    for key in fields.keys() {
        if FILE_ONLY_KEYS.contains(&key.as_str()) {
            let hint = if key == "repositories" {
                "; use POST /api/repositories and DELETE /api/repositories/{name}"
            } else {
                ""
            };
            return Err(ApiError::forbidden(format!(
                "{key}: can only be changed in the configuration file{hint}"
            )));
        }
    }
    if let Some(dashboard) = fields
        .get("dashboard")
        .and_then(serde_json::Value::as_object)
    {
        for key in dashboard.keys() {
            if FILE_ONLY_DASHBOARD_KEYS.contains(&key.as_str()) {
                return Err(ApiError::forbidden(format!(
                    "dashboard.{key}: can only be changed in the configuration file"
                )));
            }
        }
    }
    Ok(())
}

/// Applies a validated partial update and persists it in the overrides
/// file. Pipelines, notifications, repositories and credentials cannot be
/// changed this way.
#[utoipa::path(patch, path = "/api/config", tag = "config",
    request_body(content = Object, description = "A partial configuration, e.g. {\"optimizer\": {\"safety\": {\"rateLimitPerHour\": 20}}}"),
    responses(
        (status = 200, body = ConfigChange),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody), JsonBodyErrors),
    security(("bearer" = [])))]
pub(crate) async fn patch_config(
    State(state): State<AppState>,
    ApiJson(update): ApiJson<serde_json::Value>,
) -> Result<axum::Json<ConfigChange>, ApiError> {
    check_patch_keys(&update)?;
    let handle = state.services().config.clone();
    let outcome = tokio::task::spawn_blocking(move || handle.patch(&update))
        .await
        .map_err(|e| ApiError::internal(format!("configuration update: {e}")))?
        .map_err(|e| config_error(&e))?;
    patch_outcome(outcome).map(axum::Json)
}

/// Reloads the configuration file; an invalid file is rejected and the
/// running configuration stays.
#[utoipa::path(post, path = "/api/config/reload", tag = "config",
    responses(
        (status = 200, body = ConfigChange),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn reload_config(
    State(state): State<AppState>,
) -> Result<axum::Json<ConfigChange>, ApiError> {
    let handle = state.services().config.clone();
    let outcome = tokio::task::spawn_blocking(move || handle.reload())
        .await
        .map_err(|e| ApiError::internal(format!("configuration reload: {e}")))?;
    patch_outcome(outcome).map(axum::Json)
}

/// The routing table.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Routes {
    /// Trigger × repositories × paths → pipeline, strategy.
    routes: Vec<RouteEntry>,
}

/// The routing table: trigger × repository globs × path globs → pipeline.
#[utoipa::path(get, path = "/api/orchestrator/config", tag = "config",
    responses((status = 200, body = Routes), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn routing(State(state): State<AppState>) -> axum::Json<Routes> {
    axum::Json(Routes {
        routes: state.services().orchestrator.routing_table(),
    })
}

/// This document.
#[utoipa::path(get, path = "/api/openapi.json", tag = "meta",
    responses((status = 200, description = "OpenAPI 3.1", body = Object), (status = 401, body = ErrorBody)),
    security(("bearer" = [])))]
pub(crate) async fn openapi(State(state): State<AppState>, _headers: HeaderMap) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        state.inner.openapi.clone(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_only_keys_are_refused() {
        for update in [
            serde_json::json!({"pipelines": []}),
            serde_json::json!({"notifications": []}),
            serde_json::json!({"repositories": []}),
            serde_json::json!({"dashboard": {"authToken": "x"}}),
        ] {
            let err = check_patch_keys(&update).unwrap_err();
            assert_eq!(err.status, StatusCode::FORBIDDEN, "{update}");
        }
        assert!(check_patch_keys(&serde_json::json!({"optimizer": {}})).is_ok());
        assert_eq!(
            check_patch_keys(&serde_json::json!([1]))
                .unwrap_err()
                .status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn notification_urls_keep_only_their_host() {
        let mut config = serde_json::json!({"notifications": [{"url": "https://hooks.example.invalid/T0/B0/secret", "on": []}]});
        redact_notification_urls(&mut config);
        assert_eq!(
            config["notifications"][0]["url"],
            "https://hooks.example.invalid/<redacted>"
        );
    }

    #[test]
    fn step_env_with_and_webhook_values_are_redacted_keys_kept() {
        let mut config = serde_json::json!({"pipelines": [{
            "name": "codegen",
            "steps": [
                {"name": "gen", "run": ["gen"], "env": {"API_KEY": "sk-live-123"}},
                {"name": "notify", "webhook": "https://bot:pw@hooks.example.invalid/T0/secret?t=1"},
                {"name": "custom", "uses": "upload", "with": {"token": "abc", "nested": {"k": "v"}}}
            ],
            "validate": [{"name": "check", "run": ["check"], "env": {"PASSWORD": "hunter2"}}]
        }]});
        redact_step_secrets(&mut config);
        let steps = &config["pipelines"][0]["steps"];
        assert_eq!(
            steps[0]["env"],
            serde_json::json!({"API_KEY": "<redacted>"})
        );
        assert_eq!(steps[0]["run"], serde_json::json!(["gen"]));
        assert_eq!(
            steps[1]["webhook"],
            "https://hooks.example.invalid/<redacted>"
        );
        assert_eq!(
            steps[2]["with"],
            serde_json::json!({"token": "<redacted>", "nested": "<redacted>"})
        );
        assert_eq!(
            config["pipelines"][0]["validate"][0]["env"],
            serde_json::json!({"PASSWORD": "<redacted>"})
        );
        let shown = config.to_string();
        for secret in ["sk-live-123", "pw@", "secret", "abc", "hunter2"] {
            assert!(!shown.contains(secret), "{secret} shown in {shown}");
        }
    }

    #[test]
    fn list_parameters_name_the_bad_value() {
        let err = parse_list::<JobState>("state", Some("queued,nope")).unwrap_err();
        assert!(err.message.starts_with("state:"), "{}", err.message);
        assert_eq!(
            parse_list::<JobState>("state", Some("queued, running")).unwrap(),
            vec![JobState::Queued, JobState::Running]
        );
        assert!(page(Some(0), None).is_err());
        let ancient = parse_time("since", Some("0122-08-04T06:16:54Z"))
            .unwrap()
            .unwrap();
        assert_eq!(ancient.as_nanosecond(), i128::from(i64::MIN));
        let far = parse_time("until", Some("9000-12-31T23:59:59Z"))
            .unwrap()
            .unwrap();
        assert_eq!(far.as_nanosecond(), i128::from(i64::MAX));
        let now = Timestamp::now();
        assert_eq!(within_store_range(now), now);
        assert!(page(Some(10_001), None).is_err());
    }
}

/// Property-driven fuzzing of the event query parameters (`GET
/// /api/events`) and of the webhook payload parser: arbitrary query
/// strings and bodies never panic; they parse or are refused with a 400.
/// `just fuzz` runs them for `ORCHEX_FUZZ_SECS` seconds each.
#[cfg(test)]
mod fuzz {
    use std::time::{Duration, Instant};

    use proptest::prelude::*;
    use proptest::test_runner::{Config as RunnerConfig, RngAlgorithm, TestRng, TestRunner};

    use super::*;

    /// Runs `test` over `strategy` for the fuzz budget, or a bounded number
    /// of cases without one.
    pub(crate) fn fuzz<S: Strategy>(strategy: &S, test: impl Fn(S::Value)) -> u64
    where
        S::Value: std::fmt::Debug,
    {
        let budget = std::env::var("ORCHEX_FUZZ_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs);
        let deadline = budget.map(|b| Instant::now() + b);
        let mut cases = 0;
        for round in 0_u64.. {
            let mut runner = TestRunner::new_with_rng(
                RunnerConfig {
                    cases: if deadline.is_some() { 5_000 } else { 1_000 },
                    failure_persistence: None,
                    ..RunnerConfig::default()
                },
                TestRng::from_seed(RngAlgorithm::ChaCha, &round.to_le_bytes().repeat(4)),
            );
            runner
                .run(strategy, |value| {
                    test(value);
                    Ok(())
                })
                .unwrap();
            cases += u64::from(runner.config().cases);
            if deadline.is_none_or(|d| Instant::now() >= d) {
                break;
            }
        }
        cases
    }

    fn query_part() -> impl Strategy<Value = String> {
        let key = prop_oneof![
            Just("kind"),
            Just("repo"),
            Just("pipeline"),
            Just("jobId"),
            Just("severity"),
            Just("since"),
            Just("until"),
            Just("limit"),
            Just("cursor"),
            Just("format"),
            Just("bogus"),
        ];
        let value = prop_oneof![
            ".{0,24}",
            Just("job_failed,job_succeeded".to_owned()),
            Just("2026-12-01T00:00:00Z".to_owned()),
            Just("-1".to_owned()),
            Just("99999999999".to_owned()),
            Just("e1_2".to_owned()),
            Just("%ZZ".to_owned()),
            Just("csv".to_owned()),
        ];
        (key, value).prop_map(|(k, v)| format!("{k}={v}"))
    }

    #[test]
    fn event_query_parameters_never_panic() {
        let strategy = prop_oneof![
            prop::collection::vec(query_part(), 0..6).prop_map(|parts| parts.join("&")),
            ".{0,80}",
        ];
        let cases = fuzz(&strategy, |query| {
            let Ok(uri) =
                format!("/api/events?{}", query.replace(' ', "%20")).parse::<axum::http::Uri>()
            else {
                return;
            };
            if let Ok(axum::extract::Query(parsed)) =
                axum::extract::Query::<EventQuery>::try_from_uri(&uri)
            {
                match parsed.filter() {
                    Ok(_) => {}
                    Err(err) => assert_eq!(err.status, StatusCode::BAD_REQUEST),
                }
                if let Err(err) = page(parsed.limit, parsed.cursor.clone()) {
                    assert_eq!(err.status, StatusCode::BAD_REQUEST);
                }
            }
        });
        eprintln!("event queries: {cases} cases without a panic");
    }

    #[test]
    fn webhook_payloads_never_panic() {
        let push_like = (
            ".{0,30}",
            proptest::option::of(".{0,40}"),
            proptest::option::of(".{0,40}"),
            ".{0,20}",
            any::<bool>(),
        )
            .prop_map(|(git_ref, before, after, name, deleted)| {
                serde_json::json!({
                    "ref": git_ref, "before": before, "after": after,
                    "deleted": deleted, "repository": {"name": name},
                })
                .to_string()
                .into_bytes()
            });
        let strategy = prop_oneof![
            prop::collection::vec(any::<u8>(), 0..256),
            push_like,
            ".{0,200}".prop_map(String::into_bytes),
        ];
        let cases = fuzz(&strategy, |body| {
            if let Err(err) = crate::webhook::parse_push(&body) {
                assert_eq!(err.status, StatusCode::BAD_REQUEST);
            }
            let _ = crate::webhook::verify_signature(b"secret", &body, "sha256=00");
            if let Ok(text) = std::str::from_utf8(&body) {
                let _ = crate::webhook::verify_signature(b"secret", b"{}", text);
            }
        });
        eprintln!("webhook payloads: {cases} cases without a panic");
    }
}
