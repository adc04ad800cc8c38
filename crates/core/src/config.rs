//! The configuration schema (version 2) and its defaults (PRODUCT.md §7).
//!
//! These are plain data types. Loading, environment overrides, migration
//! from version 1, validation and hot reload live in `orchex-config`; the
//! documentation of every key is `docs/config.md`.

use std::fmt;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{EventKind, Pipeline, Repository};

/// The configuration format version this build writes and understands.
pub const CURRENT_VERSION: u32 = 2;

pub(crate) const fn default_true() -> bool {
    true
}

/// A secret value (token, webhook secret). Its `Debug` output is redacted so
/// it never reaches a log by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret string.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; handle with care.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// A URL as it may be shown or logged: its scheme and host (with the port)
/// only. Credentials in the user-info part, and secrets that incoming
/// webhooks carry in their path or query (Slack's do), are left out.
///
/// ```
/// use orchex_core::config::display_url;
///
/// assert_eq!(
///     display_url("https://user:pass@hooks.example.com:8443/T0/B1/xyz?k=v"),
///     "https://hooks.example.com:8443/<redacted>"
/// );
/// assert_eq!(display_url("not a url"), "<redacted>");
/// ```
pub fn display_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<redacted>".to_owned();
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host = authority.rsplit('@').next().unwrap_or_default();
    format!("{scheme}://{host}/<redacted>")
}

/// The whole configuration of a daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Config {
    /// Format version; files without one are version 1 and are migrated.
    pub version: u32,
    /// Schedules, thresholds and safety limits.
    pub optimizer: OptimizerConfig,
    /// The orchestrator's cycles, concurrency and health loop.
    pub orchestrator: OrchestratorConfig,
    /// File-system watching, triggers and analysis.
    pub monitor: MonitorConfig,
    /// The HTTP API, dashboard and telemetry retention.
    pub dashboard: DashboardConfig,
    /// Globs of paths orchex never writes.
    pub protected_paths: Vec<String>,
    /// Where orchex keeps its state.
    pub storage: StorageConfig,
    /// The watched repositories.
    pub repositories: Vec<Repository>,
    /// The pipelines and their routing.
    pub pipelines: Vec<Pipeline>,
    /// Webhooks notified of chosen event kinds.
    pub notifications: Vec<Notification>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            version: CURRENT_VERSION,
            optimizer: OptimizerConfig::default(),
            orchestrator: OrchestratorConfig::default(),
            monitor: MonitorConfig::default(),
            dashboard: DashboardConfig::default(),
            protected_paths: vec![".github/workflows/**".to_owned()],
            storage: StorageConfig::default(),
            repositories: Vec::new(),
            pipelines: Vec::new(),
            notifications: Vec::new(),
        }
    }
}

impl Config {
    /// A copy with every secret replaced by `"<redacted>"`, for display.
    #[must_use]
    pub fn redacted(&self) -> Self {
        let mut copy = self.clone();
        let dashboard = &mut copy.dashboard;
        for secret in [
            &mut dashboard.auth_token,
            &mut dashboard.read_only_token,
            &mut dashboard.webhook_secret,
        ]
        .into_iter()
        .flatten()
        {
            *secret = Secret::new("<redacted>");
        }
        copy
    }
}

/// `[optimizer]`: schedules, thresholds and safety limits.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OptimizerConfig {
    /// The periodic `schedule` trigger.
    pub schedule: ScheduleConfig,
    /// Analysis thresholds for the `threshold` trigger.
    pub thresholds: ThresholdsConfig,
    /// Rate limits, circuit breakers and timeouts.
    pub safety: SafetyConfig,
}

/// `[optimizer.schedule]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ScheduleConfig {
    /// Whether the schedule trigger fires.
    pub enabled: bool,
    /// Interval between scheduled runs of a repository.
    pub interval_minutes: u64,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_minutes: 60,
        }
    }
}

/// `[optimizer.thresholds]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct ThresholdsConfig {
    /// Chaos score in [0, 1] above which `threshold` fires.
    pub chaos_threshold: f64,
    /// Complexity score in [0, 1] above which `threshold` fires.
    pub complexity_threshold: f64,
}

impl Default for ThresholdsConfig {
    fn default() -> Self {
        Self {
            chaos_threshold: 0.7,
            complexity_threshold: 0.8,
        }
    }
}

/// `[optimizer.safety]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct SafetyConfig {
    /// Jobs per repository per hour (token bucket, burst = this value).
    pub rate_limit_per_hour: u32,
    /// Failures within the window that open a repository × pipeline breaker.
    pub circuit_breaker_threshold: u32,
    /// Seconds an open breaker waits before a trial (grows on repeated trips).
    pub circuit_breaker_cooldown_secs: u64,
    /// Whole-job timeout in seconds; also the default step timeout.
    pub job_timeout_secs: u64,
}

impl Default for SafetyConfig {
    fn default() -> Self {
        Self {
            rate_limit_per_hour: 10,
            circuit_breaker_threshold: 5,
            circuit_breaker_cooldown_secs: 60,
            job_timeout_secs: 900,
        }
    }
}

/// `[orchestrator]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct OrchestratorConfig {
    /// Run cycles on its own; otherwise only manual jobs run.
    pub autonomous: bool,
    /// Most jobs at once; 0 means the number of CPUs.
    pub max_concurrent: usize,
    /// Cycle time above which the health loop warns.
    pub target_cycle_ms: u64,
    /// Adapt the concurrency limit to latency and failures.
    pub adaptive_optimization: bool,
    /// Interval of the health loop.
    pub health_check_interval_secs: u64,
    /// Most queued jobs; beyond it jobs are skipped with `queueFull`.
    pub queue_capacity: usize,
}

impl Default for OrchestratorConfig {
    fn default() -> Self {
        Self {
            autonomous: true,
            max_concurrent: 0,
            target_cycle_ms: 30_000,
            adaptive_optimization: true,
            health_check_interval_secs: 60,
            queue_capacity: 10_000,
        }
    }
}

impl OrchestratorConfig {
    /// `max_concurrent`, with 0 resolved to the number of CPUs this process
    /// may use (at least 1).
    ///
    /// ```
    /// # use orchex_core::config::OrchestratorConfig;
    /// let config = OrchestratorConfig { max_concurrent: 3, ..Default::default() };
    /// assert_eq!(config.effective_max_concurrent().get(), 3);
    /// let auto = OrchestratorConfig::default();
    /// assert!(auto.effective_max_concurrent().get() >= 1);
    /// ```
    pub fn effective_max_concurrent(&self) -> NonZeroUsize {
        NonZeroUsize::new(self.max_concurrent)
            .unwrap_or_else(|| std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN))
    }
}

/// `[monitor]`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct MonitorConfig {
    /// The file-system watcher.
    pub filesystem: FilesystemConfig,
    /// Which triggers fire.
    pub triggers: TriggersConfig,
    /// Repository analysis.
    pub analysis: AnalysisConfig,
}

/// `[monitor.filesystem]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct FilesystemConfig {
    /// Watch working trees for changes.
    pub watch_enabled: bool,
    /// Quiet period after the last change before a batch fires.
    pub debounce_ms: u64,
    /// Longest a batch waits, however busy the tree.
    pub max_wait_ms: u64,
    /// Extra gitignore-style globs never watched nor reported.
    pub ignore: Vec<String>,
}

impl Default for FilesystemConfig {
    fn default() -> Self {
        Self {
            watch_enabled: true,
            debounce_ms: 2000,
            max_wait_ms: 30_000,
            ignore: Vec::new(),
        }
    }
}

/// `[monitor.triggers]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TriggersConfig {
    /// Fire `fileChange` triggers.
    pub on_file_change: bool,
    /// Fewest distinct changed paths for a batch to fire before `maxWaitMs`.
    pub min_changes_threshold: u32,
    /// Fire `commit` triggers.
    pub on_commit: bool,
    /// Fire `push` triggers.
    pub on_push: bool,
}

impl Default for TriggersConfig {
    fn default() -> Self {
        Self {
            on_file_change: true,
            min_changes_threshold: 1,
            on_commit: true,
            on_push: true,
        }
    }
}

/// `[monitor.analysis]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct AnalysisConfig {
    /// How long an analysis result is reused.
    pub cache_ttl_secs: u64,
    /// History window for change entropy and hotspots.
    pub history_days: u32,
}

impl Default for AnalysisConfig {
    fn default() -> Self {
        Self {
            cache_ttl_secs: 600,
            history_days: 90,
        }
    }
}

/// `[dashboard]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// TCP port of the API and dashboard.
    pub port: u16,
    /// Address to bind; a non-loopback address requires a token.
    pub bind: String,
    /// Admin bearer token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token: Option<Secret>,
    /// File holding the admin token (first line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auth_token_file: Option<PathBuf>,
    /// Bearer token allowed only `GET` requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_only_token: Option<Secret>,
    /// Secret verifying GitHub webhook signatures.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<Secret>,
    /// File holding the webhook secret (first line).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Origins allowed by CORS and the WebSocket origin check.
    pub cors_origins: Vec<String>,
    /// Event retention.
    pub telemetry: TelemetryConfig,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self {
            port: 8080,
            bind: "127.0.0.1".to_owned(),
            auth_token: None,
            auth_token_file: None,
            read_only_token: None,
            webhook_secret: None,
            webhook_secret_file: None,
            cors_origins: Vec::new(),
            telemetry: TelemetryConfig::default(),
        }
    }
}

/// `[dashboard.telemetry]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Days events are kept before being purged.
    pub retention_period_days: u32,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            retention_period_days: 30,
        }
    }
}

/// `[storage]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct StorageConfig {
    /// Directory of the database, workspaces and backups; relative paths are
    /// resolved against the config file's directory.
    pub path: PathBuf,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("orchex-data"),
        }
    }
}

/// `[[notifications]]`: a webhook receiving chosen event kinds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Notification {
    /// `http(s)` URL receiving a Slack-compatible JSON POST.
    pub url: String,
    /// The event kinds sent.
    pub on: Vec<EventKind>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_spec() {
        let config = Config::default();
        assert_eq!(config.version, 2);
        assert_eq!(config.optimizer.safety.circuit_breaker_cooldown_secs, 60);
        assert_eq!(config.optimizer.safety.job_timeout_secs, 900);
        assert_eq!(config.orchestrator.queue_capacity, 10_000);
        assert_eq!(config.monitor.filesystem.max_wait_ms, 30_000);
        assert_eq!(config.monitor.analysis.history_days, 90);
        assert_eq!(config.dashboard.bind, "127.0.0.1");
        assert_eq!(config.protected_paths, vec![".github/workflows/**"]);
        assert_eq!(config.storage.path, PathBuf::from("orchex-data"));
    }

    #[test]
    fn secrets_are_redacted_in_debug_and_on_request() {
        let mut config = Config::default();
        config.dashboard.auth_token = Some(Secret::new("hunter2"));
        assert!(!format!("{config:?}").contains("hunter2"));
        let shown = serde_json::to_string(&config.redacted()).unwrap();
        assert!(!shown.contains("hunter2"));
        assert!(shown.contains("<redacted>"));
    }

    #[test]
    fn serialised_keys_are_camel_case() {
        let value = serde_json::to_value(Config::default()).unwrap();
        assert!(
            value["optimizer"]["safety"]
                .get("rateLimitPerHour")
                .is_some()
        );
        assert!(value.get("protectedPaths").is_some());
    }
}
