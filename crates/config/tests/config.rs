//! Loading, validation, migration, environment overrides, partial updates
//! and hot reload, against real files in temporary directories.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::result_large_err)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use orchex_config::{ConfigError, ConfigHandle, DEFAULT_TOML, Loader, ReloadOutcome};
use orchex_core::{Config, Delivery, TriggerKind};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn load_str(text: &str) -> Result<orchex_config::Loaded, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "orchex.toml", text);
    Loader::new(path).without_env().load()
}

const REPO: &str = r#"
[[repositories]]
name = "api"
path = "/srv/repos/api"
branch = "main"
"#;

fn pipeline(extra: &str) -> String {
    format!(
        "{REPO}\n[[pipelines]]\nname = \"codegen\"\nrepositories = [\"api\"]\n{extra}\n[[pipelines.steps]]\nname = \"gen\"\nrun = [\"true\"]\n"
    )
}

/// Each case is a file and the key its error must name.
fn invalid_cases() -> Vec<(String, &'static str)> {
    let mut cases: Vec<(String, &'static str)> = vec![
        (
            "[optimizer.safety]\nrateLimitPerHour = 0".into(),
            "optimizer.safety.rateLimitPerHour",
        ),
        (
            "[optimizer.safety]\ncircuitBreakerThreshold = 0".into(),
            "optimizer.safety.circuitBreakerThreshold",
        ),
        (
            "[optimizer.safety]\ncircuitBreakerCooldownSecs = 0".into(),
            "optimizer.safety.circuitBreakerCooldownSecs",
        ),
        (
            "[optimizer.safety]\njobTimeoutSecs = 0".into(),
            "optimizer.safety.jobTimeoutSecs",
        ),
        (
            "[optimizer.safety]\nrateLimitPerHour = \"ten\"".into(),
            "optimizer.safety.rateLimitPerHour",
        ),
        (
            "[optimizer.safety]\nrateLimitPerHour = -1".into(),
            "optimizer.safety.rateLimitPerHour",
        ),
        (
            "[optimizer.schedule]\nintervalMinutes = 0".into(),
            "optimizer.schedule.intervalMinutes",
        ),
        (
            "[optimizer.thresholds]\nchaosThreshold = 1.5".into(),
            "optimizer.thresholds.chaosThreshold",
        ),
        (
            "[optimizer.thresholds]\ncomplexityThreshold = -0.1".into(),
            "optimizer.thresholds.complexityThreshold",
        ),
        (
            "[orchestrator]\nmaxConcurrent = 5000".into(),
            "orchestrator.maxConcurrent",
        ),
        (
            "[orchestrator]\nqueueCapacity = 0".into(),
            "orchestrator.queueCapacity",
        ),
        (
            "[orchestrator]\nhealthCheckIntervalSecs = 0".into(),
            "orchestrator.healthCheckIntervalSecs",
        ),
        (
            "[orchestrator]\nautonomous = \"yes\"".into(),
            "orchestrator.autonomous",
        ),
        (
            "[monitor.filesystem]\ndebounceMs = 5000\nmaxWaitMs = 1000".into(),
            "monitor.filesystem.debounceMs",
        ),
        (
            "[monitor.filesystem]\nignore = [\"a[\"]".into(),
            "monitor.filesystem.ignore[0]",
        ),
        (
            "[monitor.triggers]\nminChangesThreshold = 0".into(),
            "monitor.triggers.minChangesThreshold",
        ),
        (
            "[monitor.analysis]\nhistoryDays = 0".into(),
            "monitor.analysis.historyDays",
        ),
        ("[dashboard]\nport = 0".into(), "dashboard.port"),
        ("[dashboard]\nport = 70000".into(), "dashboard.port"),
        (
            "[dashboard]\nbind = \"localhost:80\"".into(),
            "dashboard.bind",
        ),
        ("[dashboard]\nbind = \"0.0.0.0\"".into(), "dashboard.bind"),
        (
            "[dashboard]\nauthToken = \"\"".into(),
            "dashboard.authToken",
        ),
        (
            "[dashboard]\nauthToken = \"a\"\nauthTokenFile = \"/t\"".into(),
            "dashboard.authToken",
        ),
        (
            "[dashboard]\nauthToken = \"same\"\nreadOnlyToken = \"same\"".into(),
            "dashboard.readOnlyToken",
        ),
        (
            "[dashboard]\ncorsOrigins = [\"https://x.example/path\"]".into(),
            "dashboard.corsOrigins[0]",
        ),
        (
            "[dashboard.telemetry]\nretentionPeriodDays = 0".into(),
            "dashboard.telemetry.retentionPeriodDays",
        ),
        ("protectedPaths = [\"\"]".into(), "protectedPaths[0]"),
        ("[storage]\npath = \"\"".into(), "storage.path"),
        (
            "[[repositories]]\nname = \"bad name\"\npath = \"/x\"".into(),
            "repositories[0].name",
        ),
        (
            "[[repositories]]\nname = \"api\"\npath = \"relative/dir\"".into(),
            "repositories[0].path",
        ),
        (
            format!("{REPO}\n[[repositories]]\nname = \"api\"\npath = \"/other\""),
            "repositories[1].name",
        ),
        (
            "[[repositories]]\nname = \"api\"\npath = \"/x\"\nbranch = \"a..b\"".into(),
            "repositories[0].branch",
        ),
        ("[[repositories]]\npath = \"/x\"".into(), "repositories[0]"),
        (pipeline("triggers = []"), "pipelines[0].triggers"),
        (
            pipeline("triggers = [\"onSave\"]"),
            "pipelines[0].triggers[0]",
        ),
        (pipeline("paths = [\"{a\"]"), "pipelines[0].paths[0]"),
        (pipeline("rateCost = 0"), "pipelines[0].rateCost"),
        (pipeline("rateCost = 11"), "pipelines[0].rateCost"),
        (pipeline("deliver = \"email\""), "pipelines[0].deliver"),
        (
            pipeline("commit = { branch = \"main\" }"),
            "pipelines[0].commit.branch",
        ),
        (
            pipeline("commit = { branch = \"bad branch\" }"),
            "pipelines[0].commit.branch",
        ),
        (
            format!(
                "{REPO}\n[[pipelines]]\nname = \"p\"\nrepositories = [\"apx\"]\n[[pipelines.steps]]\nname = \"s\"\nrun = [\"true\"]"
            ),
            "pipelines[0].repositories[0]",
        ),
        (
            format!("{REPO}\n[[pipelines]]\nname = \"p\"\nsteps = []"),
            "pipelines[0].steps",
        ),
        (
            format!("{REPO}\n[[pipelines]]\nname = \"p\"\n[[pipelines.steps]]\nname = \"s\""),
            "pipelines[0].steps[0]",
        ),
        (
            format!(
                "{REPO}\n[[pipelines]]\nname = \"p\"\n[[pipelines.steps]]\nname = \"s\"\nrun = []"
            ),
            "pipelines[0].steps[0].run",
        ),
        (
            format!(
                "{REPO}\n[[pipelines]]\nname = \"p\"\n[[pipelines.steps]]\nname = \"s\"\nrun = [\"true\"]\ntimeoutSecs = 0"
            ),
            "pipelines[0].steps[0].timeoutSecs",
        ),
        (
            format!(
                "{REPO}\n[[pipelines]]\nname = \"p\"\n[[pipelines.steps]]\nname = \"s\"\nwebhook = \"ftp://x\""
            ),
            "pipelines[0].steps[0].webhook",
        ),
        (
            format!(
                "{REPO}\n[[pipelines]]\nname = \"p\"\n[[pipelines.steps]]\nname = \"s\"\nrun = [\"true\"]\n[[pipelines.validate]]\nname = \"\"\nrun = [\"true\"]"
            ),
            "pipelines[0].validate[0].name",
        ),
        (
            format!(
                "{}\n[[pipelines]]\nname = \"codegen\"\n[[pipelines.steps]]\nname = \"s\"\nrun = [\"true\"]",
                pipeline("")
            ),
            "pipelines[1].name",
        ),
        (
            "[[notifications]]\nurl = \"not a url\"\non = [\"job_failed\"]".into(),
            "notifications[0].url",
        ),
        (
            "[[notifications]]\nurl = \"https://x.example\"\non = []".into(),
            "notifications[0].on",
        ),
        (
            "[[notifications]]\nurl = \"https://x.example\"\non = [\"job_exploded\"]".into(),
            "notifications[0].on[0]",
        ),
        ("[dashbord]\nport = 1".into(), "dashbord"),
        (
            "[optimizer.safety]\nrateLimitPerHuor = 1".into(),
            "optimizer.safety.rateLimitPerHuor",
        ),
    ];
    cases.push(("version = \"two\"".into(), "version"));
    cases
}

#[test]
fn every_invalid_config_names_its_key() {
    let cases = invalid_cases();
    assert!(cases.len() >= 25);
    for (text, key) in cases {
        let err = load_str(&text).expect_err(&format!("should be rejected:\n{text}"));
        let message = err.to_string();
        let issues = err
            .issues()
            .unwrap_or_else(|| panic!("not a validation error for {key}: {message}"));
        assert!(
            issues.mentions(key),
            "expected an issue for `{key}` in:\n{text}\ngot:\n{message}"
        );
        assert!(message.contains(&format!("{key}: ")), "{message}");
    }
}

#[test]
fn all_errors_are_reported_at_once() {
    let err = load_str(
        "[optimizer.safety]\nrateLimitPerHour = 0\ncircuitBreakerThreshold = 0\n[dashboard]\nport = 0\n[dashbord]\n",
    )
    .unwrap_err();
    let issues = err.issues().unwrap();
    for key in [
        "optimizer.safety.rateLimitPerHour",
        "optimizer.safety.circuitBreakerThreshold",
        "dashboard.port",
        "dashbord",
    ] {
        assert!(issues.mentions(key), "{err}");
    }
    assert!(err.to_string().starts_with("4 errors in"), "{err}");
}

#[test]
fn the_spec_message_format_holds() {
    let err = load_str("[optimizer.safety]\nrateLimitPerHour = 0\n").unwrap_err();
    assert!(
        err.to_string()
            .contains("optimizer.safety.rateLimitPerHour: must be at least 1, got 0"),
        "{err}"
    );
}

#[test]
fn unknown_keys_get_suggestions() {
    let err = load_str(
        "[optimizer.safety]\nrate_limit_per_hour = 3\n[monitor.filesystem]\ndebounce = 10\n[[repositories]]\nname = \"a\"\npath = \"/a\"\nbrnch = \"main\"\n",
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains(
            "optimizer.safety.rate_limit_per_hour: unknown key, did you mean `rateLimitPerHour`?"
        ),
        "{err}"
    );
    assert!(
        err.contains("monitor.filesystem.debounce: unknown key, did you mean `debounceMs`?"),
        "{err}"
    );
    assert!(
        err.contains("repositories[0].brnch: unknown key, did you mean `branch`?"),
        "{err}"
    );
    let far = load_str("[zzz]\n").unwrap_err().to_string();
    assert!(far.contains("zzz: unknown key; expected one of:"), "{far}");
}

#[test]
fn version_one_json_loads_unchanged_and_migrates() {
    let path = workspace_root().join("config/examples/v1-original.json");
    let loaded = Loader::new(&path).without_env().load().unwrap();
    assert_eq!(loaded.source_version, 1);
    assert!(loaded.migrated());
    let config = loaded.config;
    assert_eq!(config.version, 2);
    assert_eq!(config.optimizer.schedule.interval_minutes, 60);
    assert_eq!(config.monitor.triggers.min_changes_threshold, 5);
    assert_eq!(config.monitor.filesystem.debounce_ms, 2000);
    assert_eq!(config.dashboard.telemetry.retention_period_days, 30);
    // Version-2 keys take their defaults.
    assert_eq!(config.optimizer.safety.circuit_breaker_cooldown_secs, 60);
    assert_eq!(config.orchestrator.queue_capacity, 10_000);
    assert!(loaded.path.ends_with("v1-original.json"));
}

#[test]
fn a_newer_version_is_refused() {
    let err = load_str("version = 3\n").unwrap_err();
    assert!(matches!(
        err,
        ConfigError::UnsupportedVersion { found: 3, .. }
    ));
    assert!(
        err.to_string().contains("understands versions 1 to 2"),
        "{err}"
    );
}

#[test]
fn syntax_errors_name_the_file_and_position() {
    let err = load_str("[dashboard\nport = 1\n").unwrap_err();
    assert!(matches!(err, ConfigError::Syntax { .. }));
    assert!(err.to_string().contains("is not valid TOML"), "{err}");
    assert!(err.to_string().contains("line 1, column"), "{err}");
}

/// The toml crate's own message prints the offending line, which may hold
/// an inline secret; and serde's type errors quote the refused value.
#[test]
fn errors_never_print_an_inline_secret() {
    let secret = "s3cr3t-token-value";
    let err = load_str(&format!("[dashboard]\nauthToken = \"{secret}\" x\n")).unwrap_err();
    let shown = err.to_string();
    assert!(matches!(err, ConfigError::Syntax { .. }), "{shown}");
    assert!(shown.contains("line 2, column 34"), "{shown}");
    assert!(!shown.contains(secret), "{shown}");

    for text in [
        "[dashboard]\nauthToken = 12345678\n".to_owned(),
        "[dashboard]\nwebhookSecret = 12345678\n".to_owned(),
        pipeline("").replace(
            "run = [\"true\"]",
            "run = [\"true\"]\nenv = { TOKEN = 12345678 }",
        ),
    ] {
        let err = load_str(&text).unwrap_err();
        let shown = err.to_string();
        assert!(!shown.contains("12345678"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }
    // Other keys keep the value, which helps.
    let err = load_str("[orchestrator]\nmaxConcurrent = \"ten\"\n").unwrap_err();
    assert!(err.to_string().contains("ten"), "{err}");
}

#[test]
fn a_missing_file_says_how_to_create_one() {
    let err = Loader::new("/nonexistent/orchex.toml").load().unwrap_err();
    assert!(err.to_string().contains("orchexctl config init"), "{err}");
}

#[test]
fn the_spec_v2_example_loads_with_every_kind_of_entry() {
    let path = workspace_root().join("config/examples/spec-v2.toml");
    let config = Loader::new(&path).without_env().load().unwrap().config;
    assert_eq!(config.repositories.len(), 1);
    let pipeline = &config.pipelines[0];
    assert_eq!(
        pipeline.triggers,
        vec![
            TriggerKind::FileChange,
            TriggerKind::Commit,
            TriggerKind::Manual
        ]
    );
    assert_eq!(pipeline.deliver, Delivery::Branch);
    assert_eq!(pipeline.delivery_branch(), "orchex/codegen");
    assert_eq!(pipeline.steps[0].timeout_secs, Some(300));
    assert_eq!(pipeline.validate.len(), 1);
    assert_eq!(config.notifications[0].on.len(), 2);
    assert_eq!(
        config
            .dashboard
            .auth_token
            .as_ref()
            .map(orchex_core::config::Secret::expose),
        Some("change-me")
    );
    // A relative storage path is resolved against the file's directory.
    assert!(config.storage.path.is_absolute());
    assert!(config.storage.path.ends_with("config/examples/orchex-data"));
}

#[test]
fn the_full_example_loads() {
    let path = workspace_root().join("config/examples/full.toml");
    let config = Loader::new(&path).without_env().load().unwrap().config;
    assert_eq!(config.repositories.len(), 2);
    assert_eq!(config.pipelines.len(), 3);
}

#[test]
fn the_default_toml_is_the_shipped_config_and_means_the_defaults() {
    let shipped = std::fs::read_to_string(workspace_root().join("config/orchex.toml")).unwrap();
    assert_eq!(
        shipped, DEFAULT_TOML,
        "config/orchex.toml drifted from crates/config/src/default.toml"
    );
    let mut loaded = load_str(DEFAULT_TOML).unwrap().config;
    loaded.storage.path = Config::default().storage.path;
    assert_eq!(loaded, Config::default());
}

#[test]
fn write_default_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/orchex.toml");
    orchex_config::write_default(&path, false).unwrap();
    assert!(orchex_config::write_default(&path, false).is_err());
    orchex_config::write_default(&path, true).unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), DEFAULT_TOML);
}

#[test]
fn environment_overrides_win_over_the_file() {
    figment::Jail::expect_with(|jail| {
        jail.create_file(
            "orchex.toml",
            "[dashboard]\nport = 8080\n[optimizer.safety]\nrateLimitPerHour = 10\n",
        )?;
        jail.set_env("ORCHEX_DASHBOARD__PORT", "9090");
        jail.set_env("ORCHEX_OPTIMIZER__SAFETY__RATE_LIMIT_PER_HOUR", "20");
        jail.set_env("ORCHEX_MONITOR__FILESYSTEM__IGNORE", "[\"*.tmp\"]");
        // Not a config key (no `__`): the CLI's variables must not break the daemon.
        jail.set_env("ORCHEX_URL", "http://127.0.0.1:1");
        let config = Loader::new("orchex.toml")
            .load()
            .map_err(|e| e.to_string())?
            .config;
        assert_eq!(config.dashboard.port, 9090);
        assert_eq!(config.optimizer.safety.rate_limit_per_hour, 20);
        assert_eq!(config.monitor.filesystem.ignore, vec!["*.tmp"]);
        Ok(())
    });
}

#[test]
fn environment_typos_are_reported_too() {
    figment::Jail::expect_with(|jail| {
        jail.create_file("orchex.toml", "")?;
        jail.set_env("ORCHEX_DASHBOARD__PROT", "9090");
        jail.set_env("ORCHEX_DASHBOARD__PORT", "0");
        let err = Loader::new("orchex.toml").load().unwrap_err().to_string();
        assert!(
            err.contains("dashboard.prot: unknown key, did you mean `port`?"),
            "{err}"
        );
        assert!(
            err.contains("dashboard.port: must be between 1 and 65535, got 0"),
            "{err}"
        );
        Ok(())
    });
}

/// A config file with `rateLimitPerHour = 10`, its loader (without the
/// environment) and a handle on it.
fn rate_limited_at_ten() -> (tempfile::TempDir, Loader, ConfigHandle) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(
        dir.path(),
        "orchex.toml",
        "[optimizer.safety]\nrateLimitPerHour = 10\n",
    );
    let loader = Loader::new(&path).without_env();
    let handle = ConfigHandle::new(loader.clone(), loader.load().unwrap().config);
    (dir, loader, handle)
}

/// `rateLimitPerHour` as the loader reads it from the files now.
fn stored_rate_limit(loader: &Loader) -> u32 {
    loader
        .load()
        .unwrap()
        .config
        .optimizer
        .safety
        .rate_limit_per_hour
}

/// Two read-modify-write updates at once (as two repositories added
/// through the API): each is built from the other's result, so neither is
/// lost. The first holds its build open while the second starts.
#[test]
fn concurrent_patches_built_from_the_current_config_lose_nothing() {
    let (dir, loader, handle) = rate_limited_at_ten();
    let increment =
        |overrides: &mut serde_json::Value, current: &Config| -> Result<(), ConfigError> {
            let next = current.optimizer.safety.rate_limit_per_hour + 1;
            overrides["optimizer"] = serde_json::json!({"safety": {"rateLimitPerHour": next}});
            Ok(())
        };
    let mut second = None;
    handle
        .edit_overrides(|overrides, current| {
            let other = handle.clone();
            second = Some(std::thread::spawn(move || other.edit_overrides(increment)));
            // Room for the second update to overtake this one, were the
            // edit not under the update lock.
            std::thread::sleep(Duration::from_millis(100));
            increment(overrides, current)
        })
        .unwrap();
    second.unwrap().join().unwrap().unwrap();
    assert_eq!(handle.current().optimizer.safety.rate_limit_per_hour, 12);
    assert_eq!(stored_rate_limit(&loader), 12);
    // The overrides file is private and whole.
    let overrides = dir.path().join("orchex.overrides.toml");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&overrides).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert!(!dir.path().join("orchex.overrides.toml.tmp").exists());
}

/// What the API does to repositories lives in the overrides file as
/// changes by name, so the file's own list stays the operator's: an entry
/// edited or added there later still counts.
#[test]
fn repositories_in_the_overrides_merge_with_the_files_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let repo = |name: &str, branch: &str| {
        format!(
            "[[repositories]]\nname = \"{name}\"\npath = \"{}\"\nbranch = \"{branch}\"\n",
            dir.path().join(name).display()
        )
    };
    let path = write(
        dir.path(),
        "orchex.toml",
        &format!("{}{}", repo("a", "main"), repo("b", "main")),
    );
    write(
        dir.path(),
        "orchex.overrides.toml",
        &format!("removedRepositories = [\"b\"]\n{}", repo("c", "main")),
    );
    let loader = Loader::new(&path).without_env();
    let names = |config: &Config| -> Vec<(String, Option<String>)> {
        config
            .repositories
            .iter()
            .map(|r| (r.name.as_str().to_owned(), r.branch.clone()))
            .collect()
    };
    let main = Some("main".to_owned());
    assert_eq!(
        names(&loader.load().unwrap().config),
        [
            ("a".to_owned(), main.clone()),
            ("c".to_owned(), main.clone())
        ]
    );
    // The operator edits `a` and adds `d` in the file afterwards.
    std::fs::write(
        &path,
        format!(
            "{}{}{}",
            repo("a", "dev"),
            repo("b", "main"),
            repo("d", "main")
        ),
    )
    .unwrap();
    assert_eq!(
        names(&loader.load().unwrap().config),
        [
            ("a".to_owned(), Some("dev".to_owned())),
            ("d".to_owned(), main.clone()),
            ("c".to_owned(), main)
        ]
    );
}

#[test]
fn patch_validates_merges_and_persists() {
    let (dir, loader, handle) = rate_limited_at_ten();
    let mut rx = handle.subscribe();

    let outcome = handle
        .patch(&serde_json::json!({"optimizer": {"safety": {"rateLimitPerHour": 20}}}))
        .unwrap();
    assert_eq!(
        outcome,
        ReloadOutcome::Applied {
            changed: vec!["optimizer.safety.rateLimitPerHour".into()],
            needs_restart: vec![]
        }
    );
    assert!(rx.has_changed().unwrap());
    assert_eq!(
        rx.borrow_and_update().optimizer.safety.rate_limit_per_hour,
        20
    );
    // Persisted beside the config, and the config file itself is untouched.
    let overrides = std::fs::read_to_string(dir.path().join("orchex.overrides.toml")).unwrap();
    assert!(overrides.contains("rateLimitPerHour = 20"), "{overrides}");
    assert_eq!(stored_rate_limit(&loader), 20);

    // A second patch merges with the first.
    let outcome = handle
        .patch(&serde_json::json!({"dashboard": {"port": 9000}}))
        .unwrap();
    assert!(
        matches!(outcome, ReloadOutcome::Applied { ref needs_restart, .. } if needs_restart == &vec!["dashboard.port".to_string()])
    );
    let reloaded = loader.load().unwrap().config;
    assert_eq!(
        (
            reloaded.dashboard.port,
            reloaded.optimizer.safety.rate_limit_per_hour
        ),
        (9000, 20)
    );

    // An invalid patch changes nothing, on disk or in memory.
    let err = handle
        .patch(&serde_json::json!({"optimizer": {"safety": {"rateLimitPerHour": 0}}}))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("optimizer.safety.rateLimitPerHour"),
        "{err}"
    );
    assert_eq!(handle.current().optimizer.safety.rate_limit_per_hour, 20);
    assert!(
        !std::fs::read_to_string(dir.path().join("orchex.overrides.toml"))
            .unwrap()
            .contains("= 0")
    );
    assert!(handle.patch(&serde_json::json!([1])).is_err());
    assert!(handle.patch(&serde_json::json!({"version": 3})).is_err());
    assert!(
        handle
            .patch(&serde_json::json!({"dashboard": {"port": null}}))
            .is_err()
    );
}

#[test]
fn reload_keeps_the_running_config_when_the_file_is_invalid() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "orchex.toml", "[dashboard]\nport = 8080\n");
    let loader = Loader::new(&path).without_env();
    let handle = ConfigHandle::new(loader.clone(), loader.load().unwrap().config);
    assert_eq!(handle.reload(), ReloadOutcome::Unchanged);
    std::fs::write(&path, "[dashboard]\nport = 0\n").unwrap();
    match handle.reload() {
        ReloadOutcome::Rejected { error } => assert!(error.contains("dashboard.port"), "{error}"),
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(handle.current().dashboard.port, 8080);
}

async fn next_outcome(rx: &mut tokio::sync::broadcast::Receiver<ReloadOutcome>) -> ReloadOutcome {
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .expect("no reload outcome within 20 s")
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_publishes_valid_changes_and_reports_invalid_ones() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "orchex.toml", "[dashboard]\nport = 8080\n");
    let loader = Loader::new(&path).without_env();
    let handle = ConfigHandle::new(loader.clone(), loader.load().unwrap().config);
    let mut configs = handle.subscribe();
    let mut outcomes = handle.outcomes();
    let _guard = handle.watch_file(Duration::from_millis(50)).unwrap();

    // A valid change is applied and published.
    std::fs::write(
        &path,
        "[dashboard]\nport = 8080\n[optimizer.safety]\nrateLimitPerHour = 3\n",
    )
    .unwrap();
    let outcome = next_outcome(&mut outcomes).await;
    assert!(
        matches!(outcome, ReloadOutcome::Applied { .. }),
        "{outcome:?}"
    );
    tokio::time::timeout(Duration::from_secs(5), configs.changed())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        configs
            .borrow_and_update()
            .optimizer
            .safety
            .rate_limit_per_hour,
        3
    );

    // An invalid change is reported and the running config stays.
    std::fs::write(&path, "[optimizer.safety]\nrateLimitPerHour = 0\n").unwrap();
    let outcome = next_outcome(&mut outcomes).await;
    match outcome {
        ReloadOutcome::Rejected { error } => {
            assert!(
                error.contains("optimizer.safety.rateLimitPerHour: must be at least 1, got 0"),
                "{error}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    assert_eq!(handle.current().optimizer.safety.rate_limit_per_hour, 3);
    assert!(!configs.has_changed().unwrap());
}

#[test]
fn the_demo_layer_applies_only_while_the_file_configures_no_repository() {
    let dir = tempfile::tempdir().unwrap();
    let demo = serde_json::json!({
        "repositories": [{"name": "demo", "path": "/srv/demo", "branch": "main"}],
        "pipelines": [{
            "name": "demo-codegen",
            "repositories": ["demo"],
            "steps": [{"name": "gen", "run": ["true"]}]
        }]
    });
    let path = write(dir.path(), "orchex.toml", "version = 2\n");
    let loader = Loader::new(&path).without_env().with_demo(demo.clone());
    let config = loader.load().unwrap().config;
    assert!(loader.demo_active());
    assert_eq!(config.repositories[0].name.as_str(), "demo");
    assert_eq!(config.pipelines[0].name, "demo-codegen");

    let repo = dir.path().join("mine");
    std::fs::create_dir_all(&repo).unwrap();
    let path = write(
        dir.path(),
        "orchex.toml",
        &format!(
            "version = 2\n[[repositories]]\nname = \"mine\"\npath = \"{}\"\n",
            repo.display()
        ),
    );
    let loader = Loader::new(&path).without_env().with_demo(demo);
    let config = loader.load().unwrap().config;
    assert!(!loader.demo_active());
    assert_eq!(config.repositories.len(), 1);
    assert_eq!(config.repositories[0].name.as_str(), "mine");
    assert!(
        config.pipelines.is_empty(),
        "the demo pipeline goes with it"
    );
}
