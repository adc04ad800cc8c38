//! The state every handler shares: the daemon's services, the access
//! policy (hot-reloadable), the webhook replay guard, the chart timeline
//! and the per-repository analysis summaries.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use orchex_config::ConfigHandle;
use orchex_core::config::{Config, DashboardConfig};
use orchex_core::{Event, EventKind, RepoId, Timestamp};
use orchex_monitor::Monitor;
use orchex_orchestrator::Orchestrator;
use orchex_store::{EventFilter, PageRequest, Store};
use orchex_telemetry::{HealthRegistry, LiveFilter, MetricsHandle, Received, TelemetryBus};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use utoipa::ToSchema;

use crate::DashboardError;
use crate::auth::Tokens;
use crate::timeline::Timeline;
use crate::ws::WsOptions;

/// The running services the API reads and steers. Every field is a cheap
/// handle shared with the daemon.
#[derive(Debug, Clone)]
pub struct Services {
    /// Jobs, overrides, stats, routing.
    pub orchestrator: Orchestrator,
    /// Watchers and analysis.
    pub monitor: Monitor,
    /// Jobs and events, for listings and exports.
    pub store: Arc<dyn Store>,
    /// Live events.
    pub bus: TelemetryBus,
    /// Component health.
    pub health: HealthRegistry,
    /// The running configuration.
    pub config: ConfigHandle,
    /// The Prometheus recorder; `/metrics` answers 503 without one.
    pub metrics: Option<MetricsHandle>,
}

/// Who may do what, from `[dashboard]`: tokens, CORS origins and the
/// webhook secret. Replaced as a whole on config reload.
#[derive(Clone, Default)]
pub struct AccessPolicy {
    /// The bearer tokens.
    pub tokens: Tokens,
    /// Origins allowed by CORS and the WebSocket origin check.
    pub allowed_origins: Vec<String>,
    /// The GitHub webhook secret; webhooks are refused without one.
    pub webhook_secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for AccessPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessPolicy")
            .field("tokens", &self.tokens)
            .field("allowed_origins", &self.allowed_origins)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

fn first_line_of(path: &std::path::Path, key: &'static str) -> Result<String, DashboardError> {
    let text = std::fs::read_to_string(path).map_err(|source| DashboardError::SecretFile {
        key,
        path: path.to_path_buf(),
        source,
    })?;
    let secret = text.lines().next().unwrap_or_default().trim();
    if secret.is_empty() {
        // A secret mount not populated yet, say: refused, never "no token".
        return Err(DashboardError::EmptySecretFile {
            key,
            path: path.to_path_buf(),
        });
    }
    Ok(secret.to_owned())
}

impl AccessPolicy {
    /// The policy of a `[dashboard]` section, reading `authTokenFile` and
    /// `webhookSecretFile` when set.
    pub fn from_config(config: &DashboardConfig) -> Result<Self, DashboardError> {
        let admin = match (&config.auth_token, &config.auth_token_file) {
            (Some(token), _) => Some(token.expose().to_owned()),
            (None, Some(path)) => Some(first_line_of(path, "dashboard.authTokenFile")?),
            (None, None) => None,
        };
        let secret = match (&config.webhook_secret, &config.webhook_secret_file) {
            (Some(secret), _) => Some(secret.expose().as_bytes().to_vec()),
            (None, Some(path)) => {
                Some(first_line_of(path, "dashboard.webhookSecretFile")?.into_bytes())
            }
            (None, None) => None,
        };
        Ok(Self {
            tokens: Tokens::new(
                admin.as_deref(),
                config
                    .read_only_token
                    .as_ref()
                    .map(orchex_core::config::Secret::expose),
            ),
            allowed_origins: config
                .cors_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect(),
            webhook_secret: secret.filter(|s| !s.is_empty()),
        })
    }
}

/// The latest analysis figures of a repository, as the dashboard lists
/// them (from `analysis_completed` events).
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisSummary {
    /// Complexity score between 0 and 1.
    pub complexity: f64,
    /// Chaos (change entropy) score between 0 and 1.
    pub chaos: f64,
    /// Health score between 0 and 1.
    pub health: f64,
    /// When it was computed.
    #[schema(value_type = String, format = DateTime)]
    pub computed_at: Timestamp,
    /// The analysed commit.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

impl AnalysisSummary {
    fn from_event(event: &Event) -> Option<Self> {
        let number = |key: &str| event.data.get(key).and_then(serde_json::Value::as_f64);
        Some(Self {
            complexity: number("complexity")?,
            chaos: number("chaos")?,
            health: number("health")?,
            computed_at: event.ts,
            commit: event
                .data
                .get("commit")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned),
        })
    }
}

/// Remembers webhook delivery ids so a redelivered one is ignored.
#[derive(Debug, Default)]
pub(crate) struct SeenDeliveries {
    order: VecDeque<String>,
    ids: HashSet<String>,
}

impl SeenDeliveries {
    const CAPACITY: usize = 10_000;

    /// Records `id`; false when it was seen before.
    pub(crate) fn first_time(&mut self, id: &str) -> bool {
        if self.ids.contains(id) {
            return false;
        }
        if self.order.len() >= Self::CAPACITY
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        self.order.push_back(id.to_owned());
        self.ids.insert(id.to_owned());
        true
    }

    /// Forgets `id`, so that a redelivery of a delivery that failed is
    /// processed.
    pub(crate) fn forget(&mut self, id: &str) {
        if self.ids.remove(id) {
            self.order.retain(|seen| seen != id);
        }
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Shared by every handler; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct AppState {
    pub(crate) inner: Arc<Inner>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) services: Services,
    /// The bus's events, encoded once for every WebSocket session.
    pub(crate) live: crate::ws::LiveFeed,
    pub(crate) policy: RwLock<Arc<AccessPolicy>>,
    pub(crate) deliveries: Mutex<SeenDeliveries>,
    pub(crate) timeline: Mutex<Timeline>,
    pub(crate) analyses: Mutex<HashMap<RepoId, AnalysisSummary>>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) options: DashboardOptions,
    pub(crate) openapi: String,
    pub(crate) bind: String,
    pub(crate) bound_to_loopback: bool,
    /// The last snapshot messages built, and when.
    pub(crate) snapshot_cache: Mutex<Option<(tokio::time::Instant, crate::SnapshotFrames)>>,
    /// Held while a snapshot is being built: one build at a time.
    pub(crate) snapshot_build: Arc<tokio::sync::Mutex<()>>,
}

impl AppState {
    pub(crate) fn services(&self) -> &Services {
        &self.inner.services
    }

    pub(crate) fn policy(&self) -> Arc<AccessPolicy> {
        self.inner
            .policy
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_policy(&self, policy: AccessPolicy) {
        *self
            .inner
            .policy
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(policy);
    }

    pub(crate) fn config(&self) -> Arc<Config> {
        self.inner.services.config.current()
    }

    fn observe(&self, event: &Event) {
        lock(&self.inner.timeline).record(event);
        if event.kind == EventKind::AnalysisCompleted
            && let (Some(repo), Some(summary)) = (&event.repo, AnalysisSummary::from_event(event))
        {
            lock(&self.inner.analyses).insert(repo.clone(), summary);
        }
    }

    /// Fills the timeline and the analysis summaries from the stored events
    /// of the last hour, then follows the bus until shutdown.
    pub(crate) async fn follow_events(self) {
        // Subscribe first so nothing published during the backfill is missed;
        // an event seen twice only double-counts a chart bar, never a job.
        let mut live = self.inner.services.bus.subscribe(LiveFilter::all());
        let since = Timestamp::now()
            .checked_sub(jiff::SignedDuration::from_secs(3_600))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        for kinds in [
            vec![
                EventKind::JobSucceeded,
                EventKind::JobFailed,
                EventKind::JobTimedOut,
                EventKind::JobCancelled,
                EventKind::JobInterrupted,
                EventKind::CycleCompleted,
            ],
            vec![EventKind::AnalysisCompleted],
        ] {
            let mut filter = EventFilter::new();
            for kind in kinds {
                filter = filter.kind(kind);
            }
            if let Ok(page) = self
                .inner
                .services
                .store
                .query_events(filter.since(since), PageRequest::first().limit(10_000))
                .await
            {
                // Newest first from the store: replay oldest first so the
                // newest analysis wins.
                for event in page.items.iter().rev() {
                    self.observe(event);
                }
            }
        }
        loop {
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return,
                received = live.recv() => match received {
                    Some(Received::Event(event)) => self.observe(&event),
                    Some(Received::Lagged(_)) => {}
                    None => return,
                },
            }
        }
    }
}

/// Tunables that are not part of the configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DashboardOptions {
    /// Largest accepted request body.
    pub body_limit: usize,
    /// Time a request may take to produce its response head.
    pub request_timeout: Duration,
    /// The WebSocket's buffers and timers.
    pub ws: WsOptions,
}

impl Default for DashboardOptions {
    fn default() -> Self {
        Self {
            body_limit: 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            ws: WsOptions::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn with_token_file(text: &str) -> (tempfile::TempDir, DashboardConfig) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        std::fs::write(&path, text).unwrap();
        let config = DashboardConfig {
            auth_token_file: Some(path),
            ..DashboardConfig::default()
        };
        (dir, config)
    }

    #[test]
    fn an_empty_token_file_is_refused_naming_the_key_rather_than_disabling_auth() {
        for empty in ["", "\n", "   \nsecond line\n"] {
            let (_dir, config) = with_token_file(empty);
            let err = AccessPolicy::from_config(&config).unwrap_err();
            assert!(
                matches!(
                    err,
                    DashboardError::EmptySecretFile {
                        key: "dashboard.authTokenFile",
                        ..
                    }
                ),
                "{err}"
            );
            assert!(err.to_string().contains("dashboard.authTokenFile"), "{err}");
        }
        let (_dir, config) = with_token_file("s3cret\n");
        assert!(AccessPolicy::from_config(&config).is_ok());
    }
}
