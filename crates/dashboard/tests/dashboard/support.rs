//! A real orchex stack for the dashboard's tests: a git repository built
//! with the git CLI, a SQLite store, the telemetry bus with its persistence
//! writer, the monitor, the orchestrator running real steps, and the
//! dashboard served on a free loopback port.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt as _;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use orchex_config::{ConfigHandle, Loader};
use orchex_core::{Job, JobId, JobState};
use orchex_dashboard::{Dashboard, DashboardOptions, Services};
use orchex_monitor::Monitor;
use orchex_orchestrator::{Events, Orchestrator, OrchestratorDeps};
use orchex_store::{JobStore as _, SqliteStore, Store, StoreHealth as _, StoreOptions};
use orchex_telemetry::{
    BusConfig, HealthRegistry, PersistenceConfig, PersistenceWriter, TelemetryBus,
};

pub(crate) const ADMIN: &str = "admin-token-0123456789";
pub(crate) const READER: &str = "read-only-token-abcdef";
pub(crate) const WEBHOOK_SECRET: &str = "It's a Secret to Everybody";

pub(crate) fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

pub(crate) fn repo_fixture(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("schema")).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("schema/api.txt"), "v1\n").unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "initial"]);
    dir
}

/// How the harness is set up.
#[derive(Debug, Clone)]
pub(crate) struct Setup {
    pub(crate) tokens: bool,
    pub(crate) options: DashboardOptions,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            tokens: true,
            options: DashboardOptions::default(),
        }
    }
}

pub(crate) struct Harness {
    _dir: tempfile::TempDir,
    pub(crate) root: PathBuf,
    pub(crate) repo: PathBuf,
    pub(crate) base: String,
    pub(crate) port: u16,
    pub(crate) services: Services,
    pub(crate) dashboard: Dashboard,
    pub(crate) store: Arc<SqliteStore>,
    client: Client<HttpConnector, Full<Bytes>>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

fn config_text(repo: &Path, tokens: bool) -> String {
    let auth = if tokens {
        format!("authToken = \"{ADMIN}\"\nreadOnlyToken = \"{READER}\"\n")
    } else {
        String::new()
    };
    format!(
        r#"version = 2

[optimizer.schedule]
enabled = false

[optimizer.safety]
rateLimitPerHour = 1000

[orchestrator]
maxConcurrent = 2
adaptiveOptimization = false

[monitor.filesystem]
debounceMs = 50
maxWaitMs = 500

[dashboard]
{auth}webhookSecret = "{WEBHOOK_SECRET}"
corsOrigins = ["https://ops.example.invalid"]

[storage]
path = "data"

[[repositories]]
name = "api"
path = "{repo}"
branch = "main"

[[pipelines]]
name = "codegen"
repositories = ["api"]
triggers = ["manual", "push"]
deliver = "branch"

[[pipelines.steps]]
name = "generate"
run = ["sh", "-c", "mkdir -p generated && date +%s%N > generated/out.txt && echo generated"]

[[pipelines]]
name = "slow"
repositories = ["api"]
triggers = ["manual"]
deliver = "none"

[[pipelines.steps]]
name = "sleep"
run = ["sh", "-c", "sleep 60"]
"#,
        repo = repo.display()
    )
}

impl Harness {
    pub(crate) async fn start() -> Self {
        Self::with(Setup::default()).await
    }

    pub(crate) async fn with(setup: Setup) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let repo = repo_fixture(&root, "api");
        let config_path = root.join("orchex.toml");
        std::fs::write(&config_path, config_text(&repo, setup.tokens)).unwrap();
        let loader = Loader::new(&config_path).without_env();
        let config = loader.load().unwrap().config;
        let handle = ConfigHandle::new(loader, config.clone());

        let store = Arc::new(
            SqliteStore::open_in_dir(&config.storage.path, StoreOptions::default())
                .await
                .unwrap(),
        );
        let metrics = orchex_telemetry::install_prometheus().ok();
        let health = HealthRegistry::new();
        let (bus, queue) = TelemetryBus::new(BusConfig::default());
        // The writer lives as long as the test process; the store's own
        // drop flushes it.
        std::mem::forget(PersistenceWriter::spawn(
            queue,
            store.clone(),
            &health,
            PersistenceConfig::default(),
        ));
        let probe_store = store.clone();
        health.register_probe("store", move || probe_store.health());

        let (monitor, triggers) = Monitor::new(&config.monitor, &config.optimizer.thresholds);
        let mut monitor_events = monitor.subscribe_events();
        let forward = bus.clone();
        tokio::spawn(async move {
            while let Some(event) = monitor_events.next().await {
                forward.publish(event);
            }
        });
        for repository in &config.repositories {
            monitor.add_repository(repository.clone()).await.unwrap();
        }
        let publish = bus.clone();
        let orchestrator = Orchestrator::new(
            &config,
            OrchestratorDeps::new(
                store.clone(),
                Events::new(move |event| {
                    publish.publish(event);
                }),
                config.storage.path.clone(),
            ),
        )
        .unwrap();
        orchestrator.recover().await.unwrap();
        orchestrator.start(triggers).unwrap();
        let probe = orchestrator.clone();
        health.register_probe("orchestrator", move || probe.health());

        let services = Services {
            orchestrator,
            monitor,
            store: store.clone() as Arc<dyn Store>,
            bus,
            health,
            config: handle,
            metrics,
        };
        let dashboard = Dashboard::new(services.clone(), &config, setup.options).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (shutdown, stop) = tokio::sync::oneshot::channel();
        let server = tokio::spawn(dashboard.clone().serve(listener, async move {
            let _ = stop.await;
        }));
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self {
            _dir: dir,
            root,
            repo,
            base: format!("http://127.0.0.1:{port}"),
            port,
            services,
            dashboard,
            store,
            client,
            shutdown: Some(shutdown),
            server: Some(server),
        }
    }

    /// A request; returns the status, the headers and the body.
    pub(crate) async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> (u16, axum::http::HeaderMap, Bytes) {
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if body.is_some() {
            request = request.header("content-type", "application/json");
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let request = request
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .unwrap();
        let response = self.client.request(request).await.unwrap();
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, headers, body)
    }

    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
        let (status, _, body) = self.send("GET", path, token, None, &[]).await;
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    pub(crate) async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let (status, _, body) = self
            .send(
                "POST",
                path,
                token,
                Some(body.to_string().into_bytes()),
                &[],
            )
            .await;
        (
            status,
            serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null),
        )
    }

    /// Runs `pipeline` through the API and returns the queued job's id.
    pub(crate) async fn run(&self, pipeline: &str) -> JobId {
        let (status, body) = self
            .post(
                "/api/jobs",
                Some(ADMIN),
                // Forced: the tests run the same inputs again and again, which
                // the `unchanged` skip would otherwise skip.
                serde_json::json!({"repo": "api", "pipeline": pipeline, "force": true}),
            )
            .await;
        assert_eq!(status, 202, "{body}");
        body["items"][0]["id"].as_str().unwrap().parse().unwrap()
    }

    pub(crate) async fn wait_for(&self, id: JobId, done: impl Fn(&Job) -> bool) -> Job {
        for _ in 0..2000 {
            let job = self.store.get_job(id).await.unwrap().unwrap();
            if done(&job) {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("job {id} did not reach the expected state");
    }

    pub(crate) async fn wait_final(&self, id: JobId) -> Job {
        self.wait_for(id, |job| {
            !matches!(job.state(), JobState::Queued | JobState::Running)
        })
        .await
    }

    pub(crate) async fn stop(mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
        }
        self.services
            .orchestrator
            .stop(Duration::from_secs(1))
            .await;
        self.services.monitor.shutdown().await;
    }
}
