//! Helpers for the end-to-end tests in `tests/tests/`, which run the real
//! `orchexd` and `orchexctl` executables as child processes.
//!
//! Cargo only builds a package's executables for that package's own
//! integration tests, so [`binary`] builds the two binaries of the workspace
//! once per test process (`cargo build --bin orchexd --bin orchexctl`, in the
//! same target directory and profile), then returns their paths.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The workspace root.
pub fn workspace_root() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

/// The target profile directory (`<target>/<profile>`) the running
/// executable was built into: a test binary lives in
/// `<target>/<profile>/deps/`, a binary that uses this library (the
/// reliability harness) directly in `<target>/<profile>/`.
fn target_profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent();
    let dir = if dir
        .and_then(Path::file_name)
        .is_some_and(|name| name == "deps")
    {
        dir.and_then(Path::parent)
    } else {
        dir
    };
    dir.map_or_else(|| workspace_root().join("target/debug"), Path::to_path_buf)
}

fn build_binaries() -> Result<PathBuf, String> {
    let profile_dir = target_profile_dir();
    let target_dir = profile_dir
        .parent()
        .ok_or("the test binary is not inside a target directory")?;
    let profile = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("cannot tell the build profile")?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut command = Command::new(cargo);
    command
        .current_dir(workspace_root())
        .args(["build", "--quiet", "--bin", "orchexd", "--bin", "orchexctl"])
        .arg("--target-dir")
        .arg(target_dir);
    if profile != "debug" {
        command.args(["--profile", profile]);
    }
    let output = command
        .output()
        .map_err(|err| format!("cannot run cargo: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "cargo build of the binaries failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(profile_dir)
}

/// The path of a workspace executable (`orchexd` or `orchexctl`), built on
/// first use.
///
/// # Panics
///
/// When the binaries cannot be built; the test cannot run without them.
pub fn binary(name: &str) -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match DIR.get_or_init(build_binaries) {
        Ok(dir) => dir.join(name),
        Err(message) => panic!("{message}"),
    }
}

/// A command for a workspace executable, with `ORCHEX_*` variables of the
/// calling environment removed so that tests are not influenced by them.
pub fn command(name: &str) -> Command {
    let mut command = Command::new(binary(name));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ORCHEX_") {
            command.env_remove(key);
        }
    }
    command.env("NO_COLOR", "1");
    command
}

/// Runs `command` and returns its output; panics if it cannot be started.
pub fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|err| panic!("cannot run {command:?}: {err}"))
}

/// The captured stdout as a string.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The captured stderr as a string.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

// === a running daemon ===

/// The admin token of [`Daemon`] configurations.
pub const ADMIN: &str = "e2e-admin-token";
/// The read-only token of [`Daemon`] configurations.
pub const READER: &str = "e2e-read-only-token";

/// Runs `git` in `dir` with a fixed identity; panics when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .unwrap_or_else(|err| panic!("cannot run git: {err}"));
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A repository `root/name` with a committed `schema/api.txt`.
pub fn repo_fixture(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("schema")).unwrap_or_else(|e| panic!("{e}"));
    git(&dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("schema/api.txt"), "v1\n").unwrap_or_else(|e| panic!("{e}"));
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "initial"]);
    dir
}

/// A free loopback port (bound and released; good enough for tests that
/// start one server right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or_else(|err| panic!("no free port: {err}"), |a| a.port())
}

/// The configuration of an end-to-end daemon: tokens, one repository
/// `api` at `repo`, and pipelines `codegen` (branch delivery of
/// `generated/out.txt`), `failing` (exits 3), `brief` (sleeps 2 s) and
/// `slow` (a step that
/// ignores SIGTERM, forks a child, records both pids in `pids`, and sleeps).
pub fn e2e_config(repo: &Path, pids: &Path) -> String {
    format!(
        r#"version = 2

[optimizer.schedule]
enabled = false

[optimizer.safety]
rateLimitPerHour = 1000

[orchestrator]
maxConcurrent = 4
adaptiveOptimization = false
healthCheckIntervalSecs = 5

[monitor.filesystem]
debounceMs = 100
maxWaitMs = 1000

[dashboard]
authToken = "{ADMIN}"
readOnlyToken = "{READER}"

[storage]
path = "data"

[[repositories]]
name = "api"
path = "{repo}"
branch = "main"

[[pipelines]]
name = "codegen"
repositories = ["api"]
triggers = ["fileChange", "commit", "manual"]
paths = ["schema/**"]
deliver = "branch"

[[pipelines.steps]]
name = "generate"
run = ["sh", "-c", "mkdir -p generated && printf 'from %s\n' \"$(cat schema/api.txt)\" > generated/out.txt"]

[[pipelines]]
name = "failing"
repositories = ["api"]
triggers = ["manual"]

[[pipelines.steps]]
name = "break"
run = ["sh", "-c", "echo broken >&2; exit 3"]

[[pipelines]]
name = "brief"
repositories = ["api"]
triggers = ["manual"]
deliver = "none"

[[pipelines.steps]]
name = "nap"
run = ["sh", "-c", "sleep 2; echo rested"]

[[pipelines]]
name = "slow"
repositories = ["api"]
triggers = ["manual"]
deliver = "none"

[[pipelines.steps]]
name = "sleep"
run = ["sh", "-c", "trap '' TERM; echo $$ >> {pids}; sleep 120 & echo $! >> {pids}; wait"]
timeoutSecs = 600
"#,
        repo = repo.display(),
        pids = pids.display(),
    )
}

/// A running `orchexd` on a free loopback port with its own temporary
/// directory. Killed when dropped.
#[derive(Debug)]
pub struct Daemon {
    /// The temporary directory (config, storage, repositories).
    pub root: PathBuf,
    /// The config file.
    pub config: PathBuf,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// The port.
    pub port: u16,
    /// The log file (stdout and stderr).
    pub log: PathBuf,
    child: Option<std::process::Child>,
}

impl Daemon {
    /// Starts `orchexd -c <root>/orchex.toml` (written from `config`) and
    /// waits for `/api/health`.
    pub fn start(root: &Path, config: &str) -> Daemon {
        let path = root.join("orchex.toml");
        std::fs::write(&path, config).unwrap_or_else(|e| panic!("{e}"));
        Daemon::start_existing(root, free_port())
    }

    /// Starts on an existing `<root>/orchex.toml`, on `port`.
    pub fn start_existing(root: &Path, port: u16) -> Daemon {
        let daemon = Daemon::spawn_existing(root, port);
        daemon.wait_healthy();
        daemon
    }

    /// Starts on an existing `<root>/orchex.toml`, on `port`, without
    /// waiting for it to answer (to kill it during start-up, for instance);
    /// see [`Daemon::healthy_within`].
    pub fn spawn_existing(root: &Path, port: u16) -> Daemon {
        let config = root.join("orchex.toml");
        let log = root.join(format!("orchexd-{port}-{}.log", unique()));
        let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
        let err = file.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let child = command("orchexd")
            .arg("-c")
            .arg(&config)
            .env("ORCHEX_DASHBOARD__PORT", port.to_string())
            .env("RUST_LOG", "info")
            .stdout(file)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start orchexd: {e}"));
        Daemon {
            root: root.to_path_buf(),
            config,
            url: format!("http://127.0.0.1:{port}"),
            port,
            log,
            child: Some(child),
        }
    }

    fn wait_healthy(&self) {
        assert!(
            self.healthy_within(std::time::Duration::from_secs(30)),
            "orchexd did not answer; its log:\n{}",
            self.log_text()
        );
    }

    /// Waits up to `limit` for `/api/health` to answer; `false` when it
    /// did not (or the daemon exited).
    pub fn healthy_within(&self, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        while std::time::Instant::now() < deadline {
            if self.get("/api/health", None).0 != 0 {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, std::process::Child::id)
    }

    /// A request; `(0, Null)` when nothing answers.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .into();
        let url = format!("{}{path}", self.url);
        let auth = token.map(|t| format!("Bearer {t}"));
        let result = match (method, body) {
            ("GET", _) => {
                let mut request = agent.get(&url);
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request.call()
            }
            (_, body) => {
                let mut request = match method {
                    "PATCH" => agent.patch(&url),
                    "DELETE" => {
                        let mut request = agent.delete(&url);
                        if let Some(auth) = &auth {
                            request = request.header("Authorization", auth);
                        }
                        return finish(request.call());
                    }
                    _ => agent.post(&url),
                };
                if let Some(auth) = &auth {
                    request = request.header("Authorization", auth);
                }
                request = request.header("Content-Type", "application/json");
                let text = body.map_or_else(|| "{}".to_owned(), ToString::to_string);
                request.send(text.as_bytes())
            }
        };
        finish(result)
    }

    /// `GET`, see [`Daemon::request`].
    pub fn get(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        self.request("GET", path, token, None)
    }

    /// The raw body of a `GET`.
    pub fn get_text(&self, path: &str, token: Option<&str>) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut request = agent.get(&format!("{}{path}", self.url));
        if let Some(token) = token {
            request = request.header("Authorization", &format!("Bearer {token}"));
        }
        match request.call() {
            Ok(mut response) => (
                response.status().as_u16(),
                response.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(_) => (0, String::new()),
        }
    }

    /// `orchexctl --url <this daemon>` with the admin token in `ORCHEX_TOKEN`.
    pub fn ctl(&self) -> Command {
        let mut command = command("orchexctl");
        command
            .arg("--url")
            .arg(&self.url)
            .env("ORCHEX_TOKEN", ADMIN);
        command
    }

    /// Waits until `GET path` satisfies `done`, or panics after `secs`.
    pub fn wait_for(
        &self,
        what: &str,
        secs: u64,
        mut done: impl FnMut(&serde_json::Value) -> bool,
        path: &str,
    ) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        let mut last = serde_json::Value::Null;
        while std::time::Instant::now() < deadline {
            let (status, body) = self.get(path, Some(ADMIN));
            if status == 200 && done(&body) {
                return body;
            }
            last = body;
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!(
            "timed out waiting for {what}; last answer {last}\nlog:\n{}",
            self.log_text()
        );
    }

    /// Waits for job `id` to reach a final state and returns it.
    pub fn wait_final(&self, id: &str) -> serde_json::Value {
        self.wait_for(
            &format!("job {id} to finish"),
            120,
            |job| !matches!(job["state"].as_str(), Some("queued" | "running")),
            &format!("/api/jobs/{id}"),
        )
    }

    /// Sends `signal` (`"TERM"`, `"KILL"`, `"HUP"`) to the daemon.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill: {e}"));
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the daemon to exit and returns its exit status.
    pub fn wait_exit(&mut self, secs: u64) -> std::process::ExitStatus {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        let Some(child) = self.child.as_mut() else {
            panic!("the daemon was already reaped");
        };
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "orchexd did not exit; log:\n{}",
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn finish(
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> (u16, serde_json::Value) {
    match result {
        Ok(mut response) => {
            let status = response.status().as_u16();
            let text = response.body_mut().read_to_string().unwrap_or_default();
            (
                status,
                serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
            )
        }
        Err(_) => (0, serde_json::Value::Null),
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Whether process `pid` exists (and is not a zombie).
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
