//! The configuration commands of both binaries, run as real processes:
//! `orchexd --check-config` and `orchexctl config init|validate`, their
//! output and their exit codes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use orchex_e2e::{command, run, stderr, stdout, workspace_root};

#[test]
fn check_config_accepts_the_shipped_config() {
    let output = run(command("orchexd")
        .arg("--check-config")
        .arg("--config")
        .arg(workspace_root().join("config/orchex.toml")));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.starts_with("config ok\n"), "{text}");
    assert!(text.contains("version: 2"), "{text}");
    assert!(text.contains("repositories: 0 (none)"), "{text}");
}

#[test]
fn check_config_migrates_the_version_one_json() {
    let output = run(command("orchexd")
        .arg("--check-config")
        .arg("-c")
        .arg(workspace_root().join("config/examples/v1-original.json")));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("version: 2 (migrated from version 1)"));
}

#[test]
fn check_config_lists_every_error_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[optimizer.safety]\nrateLimitPerHour = 0\n[dashboard]\nport = 0\n[dashbord]\n",
    )
    .unwrap();
    let output = run(command("orchexd")
        .arg("--check-config")
        .arg("-c")
        .arg(&path));
    assert_eq!(output.status.code(), Some(2));
    let text = stderr(&output);
    assert!(text.contains("3 errors in"), "{text}");
    assert!(
        text.contains("optimizer.safety.rateLimitPerHour: must be at least 1, got 0"),
        "{text}"
    );
    assert!(
        text.contains("dashboard.port: must be between 1 and 65535, got 0"),
        "{text}"
    );
    assert!(
        text.contains("dashbord: unknown key, did you mean `dashboard`?"),
        "{text}"
    );
    assert!(stdout(&output).is_empty());
}

#[test]
fn check_config_applies_environment_overrides() {
    let output = run(command("orchexd")
        .arg("--check-config")
        .arg("-c")
        .arg(workspace_root().join("config/orchex.toml"))
        .env("ORCHEX_DASHBOARD__PORT", "9191"));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains("127.0.0.1:9191"));

    let output = run(command("orchexd")
        .arg("--check-config")
        .arg("-c")
        .arg(workspace_root().join("config/orchex.toml"))
        .env("ORCHEX_DASHBOARD__PORT", "zero"));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("dashboard.port"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn check_config_on_a_missing_file_exits_2_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let output = run(command("orchexd")
        .arg("--check-config")
        .arg("-c")
        .arg(&path));
    assert_eq!(output.status.code(), Some(2));
    assert!(stderr(&output).contains("not found"), "{}", stderr(&output));
    assert!(!path.exists());
}

#[test]
fn config_init_writes_the_default_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("orchex.toml");
    let output = run(command("orchexctl").args(["config", "init"]).arg(&path));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("version = 2")
    );

    std::fs::write(&path, "# mine\n").unwrap();
    let output = run(command("orchexctl").args(["config", "init"]).arg(&path));
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("--force"), "{}", stderr(&output));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "# mine\n");

    let output = run(command("orchexctl")
        .args(["config", "init", "--force"])
        .arg(&path));
    assert_eq!(output.status.code(), Some(0));
    assert!(
        std::fs::read_to_string(&path)
            .unwrap()
            .contains("version = 2")
    );

    // The written file validates.
    let output = run(command("orchexctl").args(["config", "validate"]).arg(&path));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

#[test]
fn config_validate_reports_in_table_and_json() {
    let examples = workspace_root().join("config/examples");
    let output = run(command("orchexctl")
        .args(["config", "validate", "-o", "table"])
        .arg(examples.join("full.toml")));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(stdout(&output).contains(": ok"));
    assert!(
        stdout(&output)
            .contains("pipelines: 3 (format-on-change, codegen-on-commit, weekly-cleanup)")
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.json");
    std::fs::write(
        &path,
        r#"{"dashboard": {"port": 0}, "monitor": {"triggers": {"onCommitt": true}}}"#,
    )
    .unwrap();
    // Piped output defaults to JSON.
    let output = run(command("orchexctl").args(["config", "validate"]).arg(&path));
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(report["valid"], false);
    let keys: Vec<&str> = report["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].as_str().unwrap())
        .collect();
    assert_eq!(keys, vec!["monitor.triggers.onCommitt", "dashboard.port"]);
    assert!(
        report["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean `onCommit`?")
    );
}

#[test]
fn usage_errors_exit_2() {
    let output = run(command("orchexctl").arg("no-such-command"));
    assert_eq!(output.status.code(), Some(2));
    let output = run(command("orchexd").arg("--no-such-flag"));
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn completions_are_generated() {
    let output = run(command("orchexctl").args(["completions", "bash"]));
    assert_eq!(output.status.code(), Some(0));
    assert!(stdout(&output).contains("orchexctl"));
}

/// A local port with nothing listening on it: bound once by the OS, then
/// released.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

#[test]
fn orchexctl_without_a_daemon_exits_3_with_a_hint() {
    let url = format!("http://127.0.0.1:{}", closed_port());
    let output =
        run(command("orchexctl").args(["status", "--url", &url, "--token", "do-not-print-me"]));
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(text.contains(&url), "{text}");
    assert!(text.contains("is orchexd running?"), "{text}");
    assert!(text.contains("cargo run --release -p orchexd"), "{text}");
    assert!(text.contains("ORCHEX_URL"), "{text}");
    assert!(!text.contains("do-not-print-me"), "{text}");
    assert!(stdout(&output).is_empty());

    // The URL also comes from the environment.
    let output = run(command("orchexctl").arg("health").env("ORCHEX_URL", &url));
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
}

#[test]
fn orchexctl_stop_needs_emergency() {
    let output = run(command("orchexctl").arg("stop"));
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("--emergency"),
        "{}",
        stderr(&output)
    );
}
