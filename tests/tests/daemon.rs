//! The real `orchexd` and `orchexctl` end to end: temporary git
//! repositories, free loopback ports, temporary storage. Results are
//! checked with `git` itself and through the API.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

use std::path::Path;
use std::time::Duration;

use orchex_e2e::{
    Daemon, READER, e2e_config, git, process_alive, repo_fixture, run, stderr, stdout,
    workspace_root,
};

fn setup() -> (tempfile::TempDir, Daemon) {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_fixture(dir.path(), "api");
    let daemon = Daemon::start(dir.path(), &e2e_config(&repo, &dir.path().join("pids")));
    (dir, daemon)
}

fn jobs_where(
    daemon: &Daemon,
    what: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let body = daemon.wait_for(
        what,
        60,
        |list| {
            list["items"]
                .as_array()
                .is_some_and(|items| items.iter().any(&done))
        },
        "/api/jobs?limit=100",
    );
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|job| done(job))
        .cloned()
        .unwrap()
}

fn pids(path: &Path) -> Vec<u32> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn wait_pids(path: &Path, n: usize) -> Vec<u32> {
    for _ in 0..600 {
        let found = pids(path);
        if found.len() >= n {
            return found;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the step never wrote {n} pids to {}", path.display());
}

fn wait_dead(pids: &[u32]) {
    for _ in 0..200 {
        if pids.iter().all(|pid| !process_alive(*pid)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let alive: Vec<_> = pids.iter().filter(|p| process_alive(**p)).collect();
    panic!("processes outlived their job: {alive:?}");
}

fn run_json(daemon: &Daemon, args: &[&str]) -> serde_json::Value {
    let output = run(daemon.ctl().args(args).args(["-o", "json"]));
    assert!(
        output.status.success(),
        "orchexctl {args:?}: {}\n{}",
        stdout(&output),
        stderr(&output)
    );
    serde_json::from_str(&stdout(&output)).unwrap_or_else(|e| {
        panic!(
            "orchexctl {args:?} printed no JSON ({e}): {}",
            stdout(&output)
        )
    })
}

fn first_job_id(value: &serde_json::Value) -> String {
    let items = value.get("items").unwrap_or(value);
    let job = items.as_array().map_or(items, |list| &list[0]);
    job["id"].as_str().unwrap().to_owned()
}

#[test]
fn a_file_change_becomes_a_commit_on_the_pipeline_branch_and_the_user_is_untouched() {
    let (dir, daemon) = setup();
    let repo = dir.path().join("api");
    let head = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("schema/api.txt"), "edited by the user\n").unwrap();
    let job = jobs_where(&daemon, "a fileChange job", |job| {
        job["trigger"]["kind"] == "fileChange" && job["state"] == "succeeded"
    });
    assert_eq!(job["pipeline"], "codegen");
    assert_eq!(job["trigger"]["paths"][0], "schema/api.txt");
    // Branch delivery builds from the committed tip, never the user's edit.
    let generated = git(&repo, &["show", "orchex/codegen:generated/out.txt"]);
    assert_eq!(generated, "from v1");
    let parent = git(&repo, &["rev-parse", "orchex/codegen^"]);
    assert_eq!(
        parent, head,
        "the delivered commit's parent is the source commit"
    );
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), head, "HEAD untouched");
    assert_eq!(
        git(&repo, &["status", "--porcelain"]),
        "M schema/api.txt",
        "only the user's own edit in the working tree"
    );
    assert_eq!(git(&repo, &["symbolic-ref", "HEAD"]), "refs/heads/main");
    git(&repo, &["fsck", "--strict"]);
}

#[test]
fn a_commit_triggers_the_pipeline_from_that_commit() {
    let (dir, daemon) = setup();
    let repo = dir.path().join("api");
    std::fs::write(repo.join("schema/api.txt"), "v2\n").unwrap();
    git(&repo, &["commit", "-qam", "v2"]);
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let job = jobs_where(&daemon, "a commit job", |job| {
        job["trigger"]["kind"] == "commit" && job["state"] == "succeeded"
    });
    assert_eq!(job["trigger"]["commit"], head.as_str());
    assert_eq!(
        git(&repo, &["show", "orchex/codegen:generated/out.txt"]),
        "from v2"
    );
    assert_eq!(git(&repo, &["rev-parse", "orchex/codegen^"]), head);
}

#[test]
fn run_wait_exits_with_the_job_outcome() {
    let (_dir, daemon) = setup();
    let output =
        run(daemon
            .ctl()
            .args(["run", "api", "--pipeline", "codegen", "--force", "--wait"]));
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}\n{}",
        stdout(&output),
        stderr(&output)
    );
    let output = run(daemon
        .ctl()
        .args(["run", "api", "--pipeline", "failing", "--wait"]));
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}\n{}",
        stdout(&output),
        stderr(&output)
    );
    let failed = jobs_where(&daemon, "the failed job", |job| {
        job["pipeline"] == "failing"
    });
    assert_eq!(failed["state"], "failed");
    let id = failed["id"].as_str().unwrap();
    let (_, detail) = daemon.get(&format!("/api/jobs/{id}"), Some(READER));
    assert_eq!(detail["steps"][0]["exitCode"], 3);
    assert!(
        detail["steps"][0]["outputTail"]
            .as_str()
            .unwrap()
            .contains("broken")
    );
}

#[test]
fn cancel_and_emergency_stop_kill_the_running_steps() {
    let (dir, daemon) = setup();
    let pid_file = dir.path().join("pids");
    let queued = run_json(&daemon, &["run", "api", "--pipeline", "slow"]);
    let id = first_job_id(&queued);
    let first = wait_pids(&pid_file, 2);
    let output = run(daemon.ctl().args(["cancel", &id]));
    assert!(output.status.success(), "{}", stderr(&output));
    let job = daemon.wait_final(&id);
    assert_eq!(job["state"], "cancelled");
    wait_dead(&first);

    std::fs::remove_file(&pid_file).unwrap();
    let queued = run_json(&daemon, &["run", "api", "--pipeline", "slow"]);
    let id = first_job_id(&queued);
    let second = wait_pids(&pid_file, 2);
    let output = run(daemon.ctl().args(["stop", "--emergency"]));
    assert!(output.status.success(), "{}", stderr(&output));
    wait_dead(&second);
    assert_eq!(daemon.wait_final(&id)["state"], "cancelled");
    let (_, dashboard) = daemon.get("/api/dashboard", Some(READER));
    assert_eq!(dashboard["orchestrator"]["state"], "emergencyStopped");
    let output = run(daemon.ctl().arg("resume"));
    assert!(output.status.success(), "{}", stderr(&output));
    let (_, dashboard) = daemon.get("/api/dashboard", Some(READER));
    assert_eq!(dashboard["orchestrator"]["state"], "running");
}

#[test]
fn rollback_restores_the_branch_and_then_refuses() {
    let (dir, daemon) = setup();
    let repo = dir.path().join("api");
    let output =
        run(daemon
            .ctl()
            .args(["run", "api", "--pipeline", "codegen", "--force", "--wait"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let before = git(&repo, &["rev-parse", "orchex/codegen"]);
    std::fs::write(repo.join("schema/api.txt"), "v2\n").unwrap();
    git(&repo, &["commit", "-qam", "v2"]);
    let job = jobs_where(&daemon, "the commit job", |job| {
        job["trigger"]["kind"] == "commit" && job["state"] == "succeeded"
    });
    let id = job["id"].as_str().unwrap();
    assert_ne!(git(&repo, &["rev-parse", "orchex/codegen"]), before);
    let output = run(daemon.ctl().args(["rollback", id]));
    assert!(
        output.status.success(),
        "{}\n{}",
        stdout(&output),
        stderr(&output)
    );
    assert_eq!(
        git(&repo, &["rev-parse", "orchex/codegen"]),
        before,
        "restored exactly"
    );
    assert_eq!(daemon.wait_final(id)["state"], "rolledBack");
    let output = run(daemon.ctl().args(["rollback", id]));
    assert_eq!(
        output.status.code(),
        Some(1),
        "a second rollback is refused"
    );
    assert!(stderr(&output).contains("conflict"), "{}", stderr(&output));
    git(&repo, &["fsck", "--strict"]);
}

fn wait_watching(daemon: &Daemon, name: &str) {
    daemon.wait_for(
        &format!("repository {name} to be watched"),
        30,
        |list| {
            list["items"].as_array().is_some_and(|items| {
                items
                    .iter()
                    .any(|r| r["name"] == name && r["watcher"]["state"] == "watching")
            })
        },
        "/api/repositories",
    );
}

#[test]
fn hot_reload_adds_a_repository_and_rejects_an_invalid_edit() {
    let (dir, daemon) = setup();
    let web = repo_fixture(dir.path(), "web");
    let mut text = std::fs::read_to_string(&daemon.config).unwrap();
    {
        use std::fmt::Write as _;
        let _ = write!(
            text,
            "\n[[repositories]]\nname = \"web\"\npath = \"{}\"\nbranch = \"main\"\n",
            web.display()
        );
    }
    std::fs::write(&daemon.config, &text).unwrap();
    wait_watching(&daemon, "web");
    let broken = text.replace("rateLimitPerHour = 1000", "rateLimitPerHour = 0");
    std::fs::write(&daemon.config, broken).unwrap();
    let events = daemon.wait_for(
        "a config_rejected event",
        30,
        |list| {
            list["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty())
        },
        "/api/events?kind=config_rejected",
    );
    assert!(
        events["items"][0]["message"]
            .as_str()
            .unwrap()
            .contains("rateLimitPerHour"),
        "{events}"
    );
    let (status, health) = daemon.get("/api/health", None);
    assert_eq!(status, 200, "{health}");
    let (_, config) = daemon.get("/api/config", Some(READER));
    assert_eq!(
        config["optimizer"]["safety"]["rateLimitPerHour"], 1000,
        "the running config stays"
    );
    // SIGHUP reloads too: fix the file and signal.
    std::fs::write(
        &daemon.config,
        text.replace("rateLimitPerHour = 1000", "rateLimitPerHour = 500"),
    )
    .unwrap();
    daemon.signal("HUP");
    daemon.wait_for(
        "the fixed config",
        30,
        |config| config["optimizer"]["safety"]["rateLimitPerHour"] == 500,
        "/api/config",
    );

    // A repository that is not one yet is reported; once it is, a reload
    // that changes nothing in the files watches it.
    let late = dir.path().join("late");
    std::fs::create_dir_all(late.join("schema")).unwrap();
    let text = text.replace("rateLimitPerHour = 1000", "rateLimitPerHour = 500");
    std::fs::write(
        &daemon.config,
        format!(
            "{text}\n[[repositories]]\nname = \"late\"\npath = \"{}\"\n",
            late.display()
        ),
    )
    .unwrap();
    daemon.wait_for(
        "a watcher_error for the directory that is not a repository",
        30,
        |list| {
            list["items"]
                .as_array()
                .is_some_and(|items| items.iter().any(|e| e["repo"] == "late"))
        },
        "/api/events?kind=watcher_error",
    );
    git(&late, &["init", "-q", "-b", "main"]);
    std::fs::write(late.join("schema/api.txt"), "v1\n").unwrap();
    git(&late, &["add", "-A"]);
    git(&late, &["commit", "-q", "-m", "initial"]);
    daemon.signal("HUP");
    wait_watching(&daemon, "late");
}

#[test]
fn the_auth_matrix_holds_through_the_cli() {
    let (_dir, daemon) = setup();
    let mut anonymous = daemon.ctl();
    anonymous.env_remove("ORCHEX_TOKEN");
    let output = run(anonymous.arg("jobs"));
    assert_eq!(output.status.code(), Some(1));
    assert!(
        stderr(&output).contains("unauthorized"),
        "{}",
        stderr(&output)
    );
    let output = run(daemon.ctl().env("ORCHEX_TOKEN", "wrong").arg("status"));
    assert_eq!(output.status.code(), Some(1));
    let output = run(daemon.ctl().env("ORCHEX_TOKEN", READER).arg("jobs"));
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let output = run(daemon.ctl().env("ORCHEX_TOKEN", READER).arg("pause"));
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr(&output).contains("forbidden"), "{}", stderr(&output));
    let mut health = daemon.ctl();
    health.env_remove("ORCHEX_TOKEN");
    let output = run(health.arg("health"));
    assert_eq!(
        output.status.code(),
        Some(0),
        "health is open: {}",
        stderr(&output)
    );
    for args in [
        &["pause"][..],
        &["resume"][..],
        &["status"][..],
        &["repos", "list"][..],
    ] {
        let output = run(daemon.ctl().args(args));
        assert_eq!(
            output.status.code(),
            Some(0),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn a_second_daemon_on_the_same_storage_is_refused_and_the_first_keeps_its_work() {
    let (dir, daemon) = setup();
    let pid_file = dir.path().join("pids");
    let queued = run_json(&daemon, &["run", "api", "--pipeline", "slow"]);
    let id = first_job_id(&queued);
    let step_pids = wait_pids(&pid_file, 2);

    // Same config file, so the same storage.path; another port, so only the
    // storage can make it refuse.
    let mut second = Daemon::spawn_existing(dir.path(), orchex_e2e::free_port());
    let status = second.wait_exit(60);
    let log = second.log_text();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("storage.path"), "{log}");
    assert!(log.contains(&format!("pid {}", daemon.pid())), "{log}");
    assert!(
        !log.contains("recovered from an unclean stop"),
        "the refused daemon ran recovery: {log}"
    );

    // The first daemon's job was neither killed nor re-queued.
    assert!(
        step_pids.iter().all(|pid| process_alive(*pid)),
        "the running job's processes were killed"
    );
    let (_, job) = daemon.get(&format!("/api/jobs/{id}"), Some(READER));
    assert_eq!(job["state"], "running", "{job}");
    assert_eq!(daemon.get("/api/health", None).0, 200);

    let output = run(daemon.ctl().args(["cancel", &id]));
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(daemon.wait_final(&id)["state"], "cancelled");
    wait_dead(&step_pids);
}

#[test]
fn kill_9_mid_job_then_a_restart_requeues_it_and_loses_nothing() {
    let (dir, mut daemon) = setup();
    let repo = dir.path().join("api");
    let head = git(&repo, &["rev-parse", "HEAD"]);
    let output =
        run(daemon
            .ctl()
            .args(["run", "api", "--pipeline", "codegen", "--force", "--wait"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let branch = git(&repo, &["rev-parse", "orchex/codegen"]);
    let queued = run_json(&daemon, &["run", "api", "--pipeline", "slow"]);
    let id = first_job_id(&queued);
    let step_pids = wait_pids(&dir.path().join("pids"), 2);
    // Events already persisted before the kill.
    let persisted = daemon.wait_for(
        "the job_started event to be stored",
        30,
        |list| {
            list["items"].as_array().is_some_and(|items| {
                items
                    .iter()
                    .any(|e| e["kind"] == "job_started" && e["jobId"] == id.as_str())
            })
        },
        "/api/events?limit=1000",
    );
    let before: Vec<String> = persisted["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    daemon.signal("KILL");
    let status = daemon.wait_exit(10);
    assert!(!status.success());
    let port = daemon.port;
    drop(daemon);

    let daemon = Daemon::start_existing(dir.path(), port);
    let job = daemon.wait_for(
        "the job to be re-queued",
        60,
        |job| {
            job["interruptions"] == 1 && matches!(job["state"].as_str(), Some("queued" | "running"))
        },
        &format!("/api/jobs/{id}"),
    );
    assert_eq!(job["interruptions"], 1);
    wait_dead(&step_pids);
    let events = daemon.wait_for(
        "the job_interrupted event",
        30,
        |list| {
            list["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty())
        },
        &format!("/api/events?jobId={id}&kind=job_interrupted"),
    );
    assert_eq!(events["items"].as_array().unwrap().len(), 1, "{events}");
    let (_, after) = daemon.get("/api/events?limit=10000", Some(READER));
    let after: Vec<&str> = after["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    for event in &before {
        assert!(after.contains(&event.as_str()), "event {event} was lost");
    }
    // The user's repository is as it was.
    assert_eq!(git(&repo, &["rev-parse", "HEAD"]), head);
    assert_eq!(git(&repo, &["rev-parse", "orchex/codegen"]), branch);
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
    git(&repo, &["fsck", "--strict"]);
    // Every job is accounted for: none is lost.
    let (_, all) = daemon.get("/api/jobs?limit=1000", Some(READER));
    assert!(
        all["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|j| j["id"] == id.as_str())
    );
    let output = run(daemon.ctl().args(["cancel", &id]));
    assert!(output.status.success(), "{}", stderr(&output));
}

#[test]
fn sigterm_drains_running_jobs_and_exits_0() {
    let (dir, mut daemon) = setup();
    let queued = run_json(&daemon, &["run", "api", "--pipeline", "brief"]);
    let id = first_job_id(&queued);
    daemon.wait_for(
        "the brief job to run",
        30,
        |job| job["state"] == "running",
        &format!("/api/jobs/{id}"),
    );
    daemon.signal("TERM");
    let status = daemon.wait_exit(60);
    assert_eq!(status.code(), Some(0), "log:\n{}", daemon.log_text());
    let port = daemon.port;
    drop(daemon);
    let daemon = Daemon::start_existing(dir.path(), port);
    let (_, job) = daemon.get(&format!("/api/jobs/{id}"), Some(READER));
    assert_eq!(
        job["state"], "succeeded",
        "the running job finished before exit: {job}"
    );
}

#[test]
fn metrics_expose_the_documented_series_and_pass_promtool() {
    let (_dir, daemon) = setup();
    let output =
        run(daemon
            .ctl()
            .args(["run", "api", "--pipeline", "codegen", "--force", "--wait"]));
    assert!(output.status.success(), "{}", stderr(&output));
    let (status, text) = daemon.get_text("/metrics", None);
    assert_eq!(status, 200);
    for series in [
        "orchex_jobs_total",
        "orchex_job_duration_seconds",
        "orchex_jobs_running",
        "orchex_queue_depth",
        "orchex_cycles_total",
        "orchex_cycle_duration_seconds",
        "orchex_concurrency_limit",
        "orchex_events_total",
        "orchex_telemetry_events_dropped_total",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(series), "{series} missing from /metrics");
    }
    let promtool = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(promtool) = promtool else {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is missing; .ci/run installs it"
        );
        eprintln!("SKIPPED promtool check: install the prometheus package");
        return;
    };
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    drop(child.stdin.take());
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "promtool check metrics: {}{}",
        stdout(&output),
        stderr(&output)
    );
}

#[test]
fn events_as_csv_parse() {
    let (_dir, daemon) = setup();
    let output =
        run(daemon
            .ctl()
            .args(["run", "api", "--pipeline", "codegen", "--force", "--wait"]));
    assert!(output.status.success(), "{}", stderr(&output));
    daemon.wait_for(
        "job events to be stored",
        30,
        |list| {
            list["items"]
                .as_array()
                .is_some_and(|items| !items.is_empty())
        },
        "/api/events?kind=job_succeeded",
    );
    // More events than a listing's default page of 100: the export must
    // still hold them all.
    for _ in 0..40 {
        let (_, stored) = daemon.get("/api/events?limit=10000", Some(READER));
        if stored["items"]
            .as_array()
            .is_some_and(|items| items.len() > 120)
        {
            break;
        }
        let output =
            run(daemon
                .ctl()
                .args(["run", "api", "--pipeline", "codegen", "--force", "--wait"]));
        assert!(output.status.success(), "{}", stderr(&output));
    }
    let (_, stored) = daemon.get("/api/events?limit=10000", Some(READER));
    let stored = stored["items"].as_array().unwrap().len();
    assert!(stored > 120, "only {stored} events stored");

    let csv_rows = |args: &[&str]| {
        let output = run(daemon.ctl().args(["events", "-o", "csv"]).args(args));
        assert!(output.status.success(), "{}", stderr(&output));
        let mut reader = csv::Reader::from_reader(output.stdout.as_slice());
        let headers = reader.headers().unwrap().clone();
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        (headers, rows)
    };
    let (headers, rows) = csv_rows(&[]);
    assert!(headers.iter().any(|h| h == "kind"), "{headers:?}");
    assert!(rows.len() >= stored, "{} of {stored} events", rows.len());
    let kind = headers.iter().position(|h| h == "kind").unwrap();
    assert!(rows.iter().any(|r| &r[kind] == "job_succeeded"));
    assert_eq!(csv_rows(&["--limit", "5"]).1.len(), 5);
}

#[test]
fn orchexd_creates_the_default_config_and_runs_the_demo() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(&conf).unwrap();
    let mut daemon = Daemon::start_existing(&conf, orchex_e2e::free_port());
    let written = std::fs::read_to_string(conf.join("orchex.toml")).unwrap();
    assert_eq!(
        written,
        std::fs::read_to_string(workspace_root().join("config/orchex.toml")).unwrap()
    );
    let job = jobs_where(&daemon, "the demo job", |job| job["repo"] == "demo");
    let id = job["id"].as_str().unwrap().to_owned();
    let job = daemon.wait_final(&id);
    assert_eq!(job["state"], "succeeded", "{job}");
    let repo = conf.join("orchex-data/demo/repo");
    let generated = git(&repo, &["show", "orchex/codegen:generated/api.rs"]);
    assert!(generated.contains("pub struct Api"), "{generated}");
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(conf.join("orchex-data"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o700, "the storage dir is private");
    daemon.signal("TERM");
    assert_eq!(daemon.wait_exit(60).code(), Some(0));
}

#[test]
fn watch_streams_live_events_over_the_websocket() {
    use std::io::BufRead as _;
    let (_dir, daemon) = setup();
    let mut watch = daemon
        .ctl()
        .args(["watch", "--kind", "job_succeeded", "-o", "json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watch.stdout.take().unwrap();
    let (lines, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    // The first snapshot says the stream is up.
    let first = received.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(first.contains("snapshot"), "{first}");
    let queued = run_json(&daemon, &["run", "api", "--pipeline", "codegen", "--force"]);
    let id = first_job_id(&queued);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut seen = None;
    while std::time::Instant::now() < deadline && seen.is_none() {
        let Ok(line) = received.recv_timeout(Duration::from_secs(1)) else {
            continue;
        };
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        if value["type"] == "event" {
            assert_eq!(value["event"]["kind"], "job_succeeded", "filtered by kind");
            seen = Some(value["event"]["jobId"].as_str().unwrap().to_owned());
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(seen.as_deref(), Some(id.as_str()));
}
