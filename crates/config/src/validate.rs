//! Typed decoding and cross-field validation of a merged configuration.
//!
//! Both passes collect every issue instead of stopping at the first, so one
//! run of `orchexd --check-config` shows everything that needs fixing.

use std::collections::HashMap;
use std::net::IpAddr;

use globset::Glob;
use orchex_core::config::Notification;
use orchex_core::{Config, Pipeline, Repository, Step};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Issue;
use crate::schema::suggest;

/// Decodes `value` into a [`Config`], reporting a type error per section and
/// per list entry rather than only the first one.
pub(crate) fn decode(value: &Value) -> Result<Config, Vec<Issue>> {
    let mut issues = Vec::new();
    if let Value::Object(map) = value {
        for (key, section) in map {
            match key.as_str() {
                "repositories" => decode_list::<Repository>(section, key, &mut issues),
                "pipelines" => decode_list::<Pipeline>(section, key, &mut issues),
                "notifications" => decode_list::<Notification>(section, key, &mut issues),
                _ => {
                    let wrapped =
                        Value::Object(serde_json::Map::from_iter([(key.clone(), section.clone())]));
                    decode_part::<Config>(&wrapped, "", &mut issues);
                }
            }
        }
    } else {
        issues.push(Issue::new(
            "",
            "the configuration must be a table of sections",
        ));
    }
    if !issues.is_empty() {
        return Err(issues);
    }
    serde_json::from_value(value.clone()).map_err(|err| vec![Issue::new("", err.to_string())])
}

fn decode_list<T: DeserializeOwned>(value: &Value, key: &str, issues: &mut Vec<Issue>) {
    match value {
        Value::Array(items) => {
            for (index, item) in items.iter().enumerate() {
                decode_part::<T>(item, &format!("{key}[{index}]"), issues);
            }
        }
        _ => issues.push(Issue::new(key, "must be a list of tables")),
    }
}

fn decode_part<T: DeserializeOwned>(value: &Value, prefix: &str, issues: &mut Vec<Issue>) {
    if let Err(err) = serde_path_to_error::deserialize::<_, T>(value.clone()) {
        let message = err.inner().to_string();
        // Unknown keys were already reported, with a suggestion.
        if message.starts_with("unknown field") {
            return;
        }
        let inner = err.path().to_string();
        let key = match (prefix.is_empty(), inner.as_str()) {
            (_, ".") => prefix.to_owned(),
            (true, _) => inner,
            (false, _) if inner.starts_with('[') => format!("{prefix}{inner}"),
            (false, _) => format!("{prefix}.{inner}"),
        };
        let message = if holds_secret(&key) {
            redact_quoted(&message)
        } else {
            message
        };
        issues.push(Issue::new(key, message));
    }
}

/// Whether the value at `key` may be a secret: the tokens and the webhook
/// secret, a step's `env` and `with` values, and notification URLs (which
/// often carry a token), the values `GET /api/config` redacts too.
fn holds_secret(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    let last = last.split('[').next().unwrap_or(last);
    matches!(last, "authToken" | "readOnlyToken" | "webhookSecret")
        || key.starts_with("notifications")
        || key.contains(".env")
        || key.contains(".with")
}

/// `message` with every quoted part (serde quotes the value it refused in
/// backticks or double quotes) replaced by `<redacted>`.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut rest = message;
    while let Some(start) = rest.find(['`', '"']) {
        let quote = rest[start..].chars().next().unwrap_or('`');
        let Some(len) = rest[start + 1..].find(quote) else {
            break;
        };
        out.push_str(&rest[..=start]);
        out.push_str("<redacted>");
        out.push(quote);
        rest = &rest[start + 1 + len + 1..];
    }
    out.push_str(rest);
    out
}

/// Checks the rules that types alone cannot express: ranges, cross
/// references, uniqueness, paths and globs. Returns every issue found.
pub(crate) fn validate(config: &Config) -> Vec<Issue> {
    let mut check = Checker::default();
    check.optimizer(config);
    check.orchestrator(config);
    check.monitor(config);
    check.dashboard(config);
    for (index, glob) in config.protected_paths.iter().enumerate() {
        check.glob(&format!("protectedPaths[{index}]"), glob);
    }
    if config.storage.path.as_os_str().is_empty() {
        check.issue("storage.path", "must not be empty");
    }
    check.repositories(&config.repositories);
    check.pipelines(config);
    check.notifications(&config.notifications);
    check.issues
}

#[derive(Default)]
struct Checker {
    issues: Vec<Issue>,
}

impl Checker {
    fn issue(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.issues.push(Issue::new(key, message));
    }

    fn at_least(&mut self, key: &str, value: u64, min: u64) {
        if value < min {
            self.issue(key, format!("must be at least {min}, got {value}"));
        }
    }

    fn unit_interval(&mut self, key: &str, value: f64) {
        if !(0.0..=1.0).contains(&value) {
            self.issue(key, format!("must be between 0 and 1, got {value}"));
        }
    }

    fn glob(&mut self, key: &str, pattern: &str) {
        if pattern.is_empty() {
            self.issue(key, "glob must not be empty");
        } else if let Err(err) = Glob::new(pattern) {
            self.issue(key, format!("invalid glob {pattern:?}: {}", err.kind()));
        }
    }

    fn http_url(&mut self, key: &str, url: &str) {
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"));
        match rest {
            Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {}
            _ => self.issue(
                key,
                format!("must be an http:// or https:// URL, got {url:?}"),
            ),
        }
    }

    fn branch_name(&mut self, key: &str, name: &str) {
        if let Some(reason) = bad_ref_name(name) {
            self.issue(
                key,
                format!("{name:?} is not a valid branch name: {reason}"),
            );
        }
    }

    fn optimizer(&mut self, config: &Config) {
        let optimizer = &config.optimizer;
        self.at_least(
            "optimizer.schedule.intervalMinutes",
            optimizer.schedule.interval_minutes,
            1,
        );
        self.unit_interval(
            "optimizer.thresholds.chaosThreshold",
            optimizer.thresholds.chaos_threshold,
        );
        self.unit_interval(
            "optimizer.thresholds.complexityThreshold",
            optimizer.thresholds.complexity_threshold,
        );
        let safety = &optimizer.safety;
        self.at_least(
            "optimizer.safety.rateLimitPerHour",
            safety.rate_limit_per_hour.into(),
            1,
        );
        self.at_least(
            "optimizer.safety.circuitBreakerThreshold",
            safety.circuit_breaker_threshold.into(),
            1,
        );
        self.at_least(
            "optimizer.safety.circuitBreakerCooldownSecs",
            safety.circuit_breaker_cooldown_secs,
            1,
        );
        self.at_least(
            "optimizer.safety.jobTimeoutSecs",
            safety.job_timeout_secs,
            1,
        );
    }

    fn orchestrator(&mut self, config: &Config) {
        let orchestrator = &config.orchestrator;
        if orchestrator.max_concurrent > 1024 {
            self.issue(
                "orchestrator.maxConcurrent",
                format!(
                    "must be at most 1024 (0 means the number of CPUs), got {}",
                    orchestrator.max_concurrent
                ),
            );
        }
        self.at_least(
            "orchestrator.targetCycleMs",
            orchestrator.target_cycle_ms,
            1,
        );
        self.at_least(
            "orchestrator.healthCheckIntervalSecs",
            orchestrator.health_check_interval_secs,
            1,
        );
        self.at_least(
            "orchestrator.queueCapacity",
            orchestrator.queue_capacity as u64,
            1,
        );
    }

    fn monitor(&mut self, config: &Config) {
        let filesystem = &config.monitor.filesystem;
        self.at_least("monitor.filesystem.maxWaitMs", filesystem.max_wait_ms, 1);
        if filesystem.debounce_ms > filesystem.max_wait_ms {
            self.issue(
                "monitor.filesystem.debounceMs",
                format!(
                    "must not exceed monitor.filesystem.maxWaitMs ({}), got {}",
                    filesystem.max_wait_ms, filesystem.debounce_ms
                ),
            );
        }
        for (index, glob) in filesystem.ignore.iter().enumerate() {
            self.glob(&format!("monitor.filesystem.ignore[{index}]"), glob);
        }
        self.at_least(
            "monitor.triggers.minChangesThreshold",
            config.monitor.triggers.min_changes_threshold.into(),
            1,
        );
        self.at_least(
            "monitor.analysis.historyDays",
            config.monitor.analysis.history_days.into(),
            1,
        );
    }

    fn dashboard(&mut self, config: &Config) {
        let dashboard = &config.dashboard;
        if dashboard.port == 0 {
            self.issue("dashboard.port", "must be between 1 and 65535, got 0");
        }
        match dashboard.bind.parse::<IpAddr>() {
            Err(_) => self.issue(
                "dashboard.bind",
                format!(
                    "must be an IP address such as 127.0.0.1 or ::1, got {:?}",
                    dashboard.bind
                ),
            ),
            Ok(ip)
                if !ip.is_loopback()
                    && dashboard.auth_token.is_none()
                    && dashboard.auth_token_file.is_none() =>
            {
                self.issue(
                    "dashboard.bind",
                    format!(
                        "{ip} is not a loopback address; set dashboard.authToken or dashboard.authTokenFile to expose the API"
                    ),
                );
            }
            Ok(_) => {}
        }
        if dashboard.auth_token.is_some() && dashboard.auth_token_file.is_some() {
            self.issue(
                "dashboard.authToken",
                "set either authToken or authTokenFile, not both",
            );
        }
        if dashboard.webhook_secret.is_some() && dashboard.webhook_secret_file.is_some() {
            self.issue(
                "dashboard.webhookSecret",
                "set either webhookSecret or webhookSecretFile, not both",
            );
        }
        for (key, secret) in [
            ("dashboard.authToken", &dashboard.auth_token),
            ("dashboard.readOnlyToken", &dashboard.read_only_token),
            ("dashboard.webhookSecret", &dashboard.webhook_secret),
        ] {
            if secret
                .as_ref()
                .is_some_and(|s| s.expose().trim().is_empty())
            {
                self.issue(key, "must not be empty");
            }
        }
        if dashboard.read_only_token.is_some() && dashboard.read_only_token == dashboard.auth_token
        {
            self.issue(
                "dashboard.readOnlyToken",
                "must differ from dashboard.authToken",
            );
        }
        if dashboard.read_only_token.is_some()
            && dashboard.auth_token.is_none()
            && dashboard.auth_token_file.is_none()
        {
            self.issue(
                "dashboard.readOnlyToken",
                "requires dashboard.authToken or dashboard.authTokenFile (otherwise every request is admin)",
            );
        }
        for (key, path) in [
            ("dashboard.authTokenFile", &dashboard.auth_token_file),
            (
                "dashboard.webhookSecretFile",
                &dashboard.webhook_secret_file,
            ),
        ] {
            if path.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                self.issue(key, "must not be empty");
            }
        }
        for (index, origin) in dashboard.cors_origins.iter().enumerate() {
            let key = format!("dashboard.corsOrigins[{index}]");
            let rest = origin
                .strip_prefix("https://")
                .or_else(|| origin.strip_prefix("http://"));
            match rest {
                Some(host) if !host.is_empty() && !host.contains('/') => {}
                _ => self.issue(
                    key,
                    format!("must be an origin like https://ops.example.com (scheme and host, no path), got {origin:?}"),
                ),
            }
        }
        self.at_least(
            "dashboard.telemetry.retentionPeriodDays",
            dashboard.telemetry.retention_period_days.into(),
            1,
        );
    }

    fn repositories(&mut self, repositories: &[Repository]) {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (index, repo) in repositories.iter().enumerate() {
            let key = format!("repositories[{index}]");
            if let Some(first) = seen.insert(repo.name.as_str(), index) {
                self.issue(
                    format!("{key}.name"),
                    format!(
                        "duplicate repository name {:?} (also repositories[{first}])",
                        repo.name.as_str()
                    ),
                );
            }
            if !repo.path.is_absolute() {
                self.issue(
                    format!("{key}.path"),
                    format!(
                        "must be an absolute path, got {:?}",
                        repo.path.display().to_string()
                    ),
                );
            }
            if let Some(branch) = &repo.branch {
                self.branch_name(&format!("{key}.branch"), branch);
            }
        }
    }

    fn pipelines(&mut self, config: &Config) {
        let repo_names: Vec<&str> = config
            .repositories
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (index, pipeline) in config.pipelines.iter().enumerate() {
            let key = format!("pipelines[{index}]");
            if let Err(err) = orchex_core::repo::validate_name(&pipeline.name) {
                self.issue(format!("{key}.name"), err.to_string());
            }
            if let Some(first) = seen.insert(pipeline.name.as_str(), index) {
                self.issue(
                    format!("{key}.name"),
                    format!(
                        "duplicate pipeline name {:?} (also pipelines[{first}])",
                        pipeline.name
                    ),
                );
            }
            self.pipeline_repositories(&key, pipeline, &repo_names);
            if pipeline.triggers.is_empty() {
                self.issue(format!("{key}.triggers"), "must name at least one trigger");
            }
            if pipeline.paths.is_empty() {
                self.issue(
                    format!("{key}.paths"),
                    "must name at least one path glob (use \"**\" for all)",
                );
            }
            for (n, glob) in pipeline.paths.iter().enumerate() {
                self.glob(&format!("{key}.paths[{n}]"), glob);
            }
            if pipeline.steps.is_empty() {
                self.issue(format!("{key}.steps"), "must contain at least one step");
            }
            for (n, step) in pipeline.steps.iter().enumerate() {
                self.step(&format!("{key}.steps[{n}]"), step);
            }
            for (n, step) in pipeline.validate.iter().enumerate() {
                self.step(&format!("{key}.validate[{n}]"), step);
            }
            self.delivery_branch(config, &key, pipeline);
            if let Some(message) = &pipeline.commit.message
                && message.trim().is_empty()
            {
                self.issue(format!("{key}.commit.message"), "must not be empty");
            }
            let hourly = config.optimizer.safety.rate_limit_per_hour;
            if pipeline.rate_cost == 0 {
                self.issue(format!("{key}.rateCost"), "must be at least 1, got 0");
            } else if pipeline.rate_cost > hourly {
                self.issue(
                    format!("{key}.rateCost"),
                    format!(
                        "must not exceed optimizer.safety.rateLimitPerHour ({hourly}) or the pipeline can never run, got {}",
                        pipeline.rate_cost
                    ),
                );
            }
        }
    }

    fn pipeline_repositories(&mut self, key: &str, pipeline: &Pipeline, repo_names: &[&str]) {
        if pipeline.repositories.is_empty() {
            self.issue(
                format!("{key}.repositories"),
                "must name at least one repository or glob (use \"*\" for all)",
            );
        }
        for (n, pattern) in pipeline.repositories.iter().enumerate() {
            let entry = format!("{key}.repositories[{n}]");
            let is_glob = pattern.contains(['*', '?', '[', '{']);
            if is_glob {
                self.glob(&entry, pattern);
            } else if !repo_names.contains(&pattern.as_str()) {
                let hint = suggest(pattern, repo_names.iter().copied())
                    .map(|s| format!(" (did you mean {s:?}?)"))
                    .unwrap_or_default();
                self.issue(
                    entry,
                    format!("unknown repository {pattern:?}{hint}; add it under [[repositories]]"),
                );
            }
        }
    }

    fn delivery_branch(&mut self, config: &Config, key: &str, pipeline: &Pipeline) {
        let branch = pipeline.delivery_branch();
        let branch_key = format!("{key}.commit.branch");
        self.branch_name(&branch_key, &branch);
        // Delivering onto a watched branch would rewrite the user's work.
        let targets: Vec<&Repository> = config
            .repositories
            .iter()
            .filter(|repo| {
                pipeline.repositories.iter().any(|pattern| {
                    Glob::new(pattern)
                        .is_ok_and(|glob| glob.compile_matcher().is_match(repo.name.as_str()))
                })
            })
            .collect();
        for repo in targets {
            let watched = repo.branch.as_deref().unwrap_or("main");
            if watched == branch {
                self.issue(
                    branch_key.clone(),
                    format!(
                        "must not be the watched branch {branch:?} of repository {}; orchex delivers to its own branch",
                        repo.name
                    ),
                );
            }
        }
    }

    fn step(&mut self, key: &str, step: &Step) {
        if step.name.trim().is_empty() {
            self.issue(format!("{key}.name"), "must not be empty");
        }
        let set = [
            step.run.is_some(),
            step.webhook.is_some(),
            step.uses.is_some(),
        ]
        .into_iter()
        .filter(|set| *set)
        .count();
        if set != 1 {
            self.issue(
                key,
                format!("must set exactly one of `run`, `webhook` or `uses`, found {set}"),
            );
        }
        if let Some(argv) = &step.run
            && argv.first().is_none_or(|program| program.trim().is_empty())
        {
            self.issue(
                format!("{key}.run"),
                "must be a non-empty argv array, e.g. [\"sh\", \"-c\", \"make gen\"]",
            );
        }
        if let Some(url) = &step.webhook {
            self.http_url(&format!("{key}.webhook"), url);
        }
        if let Some(name) = &step.uses
            && name.trim().is_empty()
        {
            self.issue(format!("{key}.uses"), "must name a registered action");
        }
        if step.timeout_secs == Some(0) {
            self.issue(format!("{key}.timeoutSecs"), "must be at least 1, got 0");
        }
    }

    fn notifications(&mut self, notifications: &[Notification]) {
        for (index, notification) in notifications.iter().enumerate() {
            let key = format!("notifications[{index}]");
            self.http_url(&format!("{key}.url"), &notification.url);
            if notification.on.is_empty() {
                self.issue(format!("{key}.on"), "must name at least one event kind");
            }
        }
    }
}

/// Why `name` is not a valid git branch name (git-check-ref-format rules),
/// or `None` when it is.
#[allow(clippy::case_sensitive_file_extension_comparisons)] // git's rule is case-sensitive
fn bad_ref_name(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("it is empty");
    }
    if name.starts_with('/') || name.ends_with('/') || name.contains("//") {
        return Some("slashes may only separate components");
    }
    if name.contains("..") || name.contains("@{") || name == "@" {
        return Some("it contains `..`, `@{` or is `@`");
    }
    if name.ends_with(".lock") || name.ends_with('.') {
        return Some("it ends with `.lock` or `.`");
    }
    if name.chars().any(|c| {
        c.is_ascii_control() || matches!(c, ' ' | '~' | '^' | ':' | '?' | '*' | '[' | '\\')
    }) {
        return Some("it contains a space, a control character or one of ~^:?*[\\");
    }
    if name.split('/').any(|component| component.starts_with('.')) {
        return Some("a component starts with `.`");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names_follow_git_rules() {
        assert_eq!(bad_ref_name("orchex/codegen"), None);
        assert!(bad_ref_name("a..b").is_some());
        assert!(bad_ref_name("a b").is_some());
        assert!(bad_ref_name("x.lock").is_some());
        assert!(bad_ref_name("a/.b").is_some());
        assert!(bad_ref_name("/a").is_some());
    }

    #[test]
    fn decode_reports_a_type_error_per_section() {
        let value = serde_json::json!({
            "optimizer": {"safety": {"rateLimitPerHour": "ten"}},
            "dashboard": {"port": 70000},
            "repositories": [{"name": "ok", "path": "/x"}, {"name": "bad name", "path": "/y"}]
        });
        let issues = decode(&value).unwrap_err();
        let keys: Vec<&str> = issues.iter().map(|i| i.key.as_str()).collect();
        assert!(
            keys.contains(&"optimizer.safety.rateLimitPerHour"),
            "{keys:?}"
        );
        assert!(keys.contains(&"dashboard.port"), "{keys:?}");
        assert!(keys.contains(&"repositories[1].name"), "{keys:?}");
    }
}
