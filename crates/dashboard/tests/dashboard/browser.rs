//! The web page in a real headless Chromium (Debian's `chromium` and
//! `chromium-driver`, driven over WebDriver with fantoccini): it asks for
//! the token, shows live events, and its pause button pauses the
//! orchestrator. A screenshot is kept as a test artifact.
//!
//! Without chromedriver the test fails under CI (`CI` set, where `.ci/run`
//! installs it) and is reported as skipped elsewhere, with the install
//! command.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use fantoccini::{ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::support::{ADMIN, Harness};

fn chromedriver() -> Option<PathBuf> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

struct Driver(tokio::process::Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

async fn wait_text(client: &fantoccini::Client, css: &str, expected: &str) {
    for _ in 0..300 {
        if let Ok(element) = client.find(Locator::Css(css)).await
            && element.text().await.is_ok_and(|t| t.trim() == expected)
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} never showed {expected:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_signs_in_shows_live_events_and_pauses() {
    let Some(driver_path) = chromedriver() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "chromedriver is missing; .ci/run installs it (apt-get install chromium chromium-driver)"
        );
        eprintln!(
            "SKIPPED the_page_signs_in_shows_live_events_and_pauses: install chromium and chromium-driver to run it"
        );
        return;
    };
    let h = Harness::start().await;
    let driver_port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let _driver = Driver(
        tokio::process::Command::new(driver_path)
            .arg(format!("--port={driver_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap(),
    );
    let profile = tempfile::tempdir().unwrap();
    let capabilities: serde_json::Map<String, serde_json::Value> =
        serde_json::from_value(serde_json::json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--window-size=1400,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }
        }))
        .unwrap();
    let mut client = None;
    for _ in 0..100 {
        match ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities.clone())
            .connect(&format!("http://127.0.0.1:{driver_port}"))
            .await
        {
            Ok(connected) => {
                client = Some(connected);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let client = client.expect("chromedriver did not start");

    client.goto(&format!("{}/", h.base)).await.unwrap();
    // The API needs a token: the page asks for it.
    let input = client
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Id("token-input"))
        .await
        .unwrap();
    input.send_keys(ADMIN).await.unwrap();
    client
        .find(Locator::Id("token-submit"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_text(&client, "#orch-state", "running").await;
    wait_text(&client, "#conn-state", "live").await;

    // A job's events appear in the live feed.
    let job = h.run("codegen").await;
    h.wait_final(job).await;
    client
        .wait()
        .at_most(Duration::from_secs(30))
        .for_element(Locator::Css(
            "#event-feed .event[data-kind=\"job_succeeded\"]",
        ))
        .await
        .unwrap();

    // Pause from the page; the API then reports paused.
    client
        .find(Locator::Id("btn-pause"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let mut paused = false;
    for _ in 0..300 {
        let (_, dashboard) = h.get("/api/dashboard", Some(ADMIN)).await;
        if dashboard["orchestrator"]["state"] == "paused" {
            paused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(paused, "the pause button paused the orchestrator");
    wait_text(&client, "#orch-state", "paused").await;
    assert_eq!(
        h.services.orchestrator.state(),
        orchex_orchestrator::RunState::Paused
    );

    let screenshot = client.screenshot().await.unwrap();
    let artifacts = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("dashboard.png");
    std::fs::write(&shot, &screenshot).unwrap();
    assert!(screenshot.starts_with(b"\x89PNG"), "a PNG screenshot");
    eprintln!("screenshot: {}", shot.display());
    client.close().await.unwrap();
    h.stop().await;
}
