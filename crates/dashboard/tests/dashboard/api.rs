//! The REST API over a real server: the auth matrix, error shapes, the
//! webhook, the OpenAPI document against the router, exports, control.

use hmac::{KeyInit as _, Mac as _};
use orchex_core::JobState;
use orchex_store::JobStore as _;

use crate::support::{ADMIN, Harness, READER, Setup, WEBHOOK_SECRET, git};

/// Every route of the router with a request that exercises it. `{job}` is
/// replaced with a real job id.
const ROUTES: &[(&str, &str, Option<&str>)] = &[
    ("GET", "/api/health/detailed", None),
    ("GET", "/api/dashboard", None),
    ("GET", "/api/metrics", None),
    ("GET", "/api/events", None),
    ("GET", "/api/events?format=csv", None),
    ("GET", "/api/repositories", None),
    (
        "POST",
        "/api/repositories",
        Some(r#"{"name": "ghost", "path": "/nonexistent/ghost"}"#),
    ),
    ("DELETE", "/api/repositories/ghost", None),
    ("GET", "/api/repositories/api/analysis", None),
    ("GET", "/api/jobs", None),
    ("GET", "/api/jobs/{job}", None),
    (
        "POST",
        "/api/jobs",
        Some(r#"{"repo": "api", "pipeline": "codegen", "dryRun": true}"#),
    ),
    ("POST", "/api/jobs/{job}/cancel", None),
    (
        "POST",
        "/api/jobs/cancel",
        Some(r#"{"pipeline": "nothing-matches"}"#),
    ),
    ("POST", "/api/jobs/{job}/rollback", None),
    ("POST", "/api/control/pause", None),
    ("POST", "/api/control/resume", None),
    ("POST", "/api/control/emergency-stop", None),
    ("GET", "/api/config", None),
    (
        "PATCH",
        "/api/config",
        Some(r#"{"optimizer": {"safety": {"rateLimitPerHour": 999}}}"#),
    ),
    ("POST", "/api/config/reload", None),
    ("GET", "/api/orchestrator/config", None),
    ("GET", "/api/openapi.json", None),
    ("GET", "/api/ws", None),
];

/// Routes open without a token.
const OPEN: &[(&str, &str)] = &[
    ("GET", "/api/health"),
    ("GET", "/metrics"),
    ("GET", "/"),
    ("GET", "/assets/app.js"),
    ("GET", "/assets/app.css"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_matrix_every_route_by_every_kind_of_caller() {
    let h = Harness::start().await;
    let job = h.run("codegen").await;
    h.wait_final(job).await;
    let job = job.to_string();
    for &(method, path, body) in ROUTES {
        let path = path.replace("{job}", &job);
        let body = body.map(|b| b.as_bytes().to_vec());
        let mutating = method != "GET";

        let (status, _, bytes) = h.send(method, &path, None, body.clone(), &[]).await;
        assert_eq!(status, 401, "{method} {path} without a token");
        let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(error["error"]["code"], "unauthorized", "{method} {path}");

        let (status, _, _) = h
            .send(method, &path, Some("wrong"), body.clone(), &[])
            .await;
        assert_eq!(status, 401, "{method} {path} with a wrong token");

        let (status, _, bytes) = h.send(method, &path, Some(READER), body.clone(), &[]).await;
        if mutating {
            assert_eq!(status, 403, "{method} {path} read-only");
            let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
            assert_eq!(error["error"]["code"], "forbidden");
        } else {
            assert!(
                ![401, 403].contains(&status) && status < 500,
                "{method} {path} read-only: {status} {}",
                String::from_utf8_lossy(&bytes)
            );
        }

        let (status, _, bytes) = h.send(method, &path, Some(ADMIN), body, &[]).await;
        assert!(
            ![401, 403].contains(&status) && status < 500,
            "{method} {path} admin: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    for &(method, path) in OPEN {
        let (status, _, _) = h.send(method, path, None, None, &[]).await;
        assert_eq!(status, 200, "{method} {path} is open");
    }
    // The scheme is case-insensitive.
    let (status, _, _) = h
        .send(
            "GET",
            "/api/jobs",
            None,
            None,
            &[("authorization", &format!("bEaReR {READER}"))],
        )
        .await;
    assert_eq!(status, 200);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_json_errors_naming_the_field() {
    let h = Harness::start().await;
    let admin = Some(ADMIN);
    let cases: &[(&str, &str, &str, u16, &str)] = &[
        ("POST", "/api/jobs", r#"{"repo": 3}"#, 400, "repo"),
        (
            "POST",
            "/api/jobs",
            r#"{"pipeline": "codegen"}"#,
            400,
            "repo",
        ),
        (
            "POST",
            "/api/jobs",
            r#"{"repo": "api", "surprise": 1}"#,
            400,
            "surprise",
        ),
        ("POST", "/api/jobs", r#"{"repo": "nope"}"#, 404, ""),
        (
            "POST",
            "/api/jobs",
            r#"{"repo": "api", "pipeline": "nope"}"#,
            404,
            "",
        ),
        ("POST", "/api/jobs", "not json", 400, "body"),
        (
            "POST",
            "/api/jobs/cancel",
            r#"{"state": "succeeded"}"#,
            400,
            "state",
        ),
        (
            "POST",
            "/api/repositories",
            r#"{"name": "x", "path": "relative/dir"}"#,
            400,
            "path",
        ),
        (
            "POST",
            "/api/repositories",
            r#"{"name": "bad name", "path": "/tmp"}"#,
            400,
            "name",
        ),
        (
            "POST",
            "/api/repositories",
            r#"{"name": "tmp", "path": "/tmp"}"#,
            400,
            "path",
        ),
        (
            "PATCH",
            "/api/config",
            r#"{"optimizer": {"safety": {"rateLimitPerHour": 0}}}"#,
            400,
            "rateLimitPerHour",
        ),
        (
            "PATCH",
            "/api/config",
            r#"{"pipelines": []}"#,
            403,
            "pipelines",
        ),
        (
            "PATCH",
            "/api/config",
            r#"{"optimizer": {"nonsense": 1}}"#,
            400,
            "nonsense",
        ),
        ("PATCH", "/api/config", "[1, 2]", 400, "object"),
    ];
    for &(method, path, body, expected, field) in cases {
        let (status, headers, bytes) = h
            .send(method, path, admin, Some(body.as_bytes().to_vec()), &[])
            .await;
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(status, expected, "{method} {path} {body}: {text}");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{method} {path}"
        );
        let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert!(error["error"]["code"].is_string(), "{text}");
        assert!(
            error["error"]["message"].as_str().unwrap().contains(field),
            "{method} {path} {body}: {text} should name {field}"
        );
    }
    let gets: &[(&str, u16, &str)] = &[
        ("/api/jobs?state=bogus", 400, "state"),
        ("/api/jobs?limit=0", 400, "limit"),
        ("/api/jobs?limit=abc", 400, "limit"),
        ("/api/jobs?cursor=garbage", 400, "cursor"),
        ("/api/events?since=yesterday", 400, "since"),
        ("/api/events?kind=no_such_kind", 400, "kind"),
        ("/api/events?format=xml", 400, "format"),
        ("/api/events?bogus=1", 400, "bogus"),
        ("/api/jobs/not-a-uuid", 404, "job"),
        ("/api/jobs/0190c0de-0000-7000-8000-000000000000", 404, "job"),
        ("/api/repositories/nope/analysis", 404, "nope"),
        ("/api/no/such/route", 404, "route"),
        ("/api/ws?kinds=nope", 400, "kinds"),
    ];
    for &(path, expected, field) in gets {
        let (status, _, bytes) = h.send("GET", path, admin, None, &[]).await;
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(status, expected, "GET {path}: {text}");
        let error: serde_json::Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("GET {path}: not JSON: {text}"));
        assert!(
            error["error"]["message"].as_str().unwrap().contains(field),
            "GET {path}: {text} should name {field}"
        );
    }
    // A method the route does not serve is JSON too.
    let (status, _, bytes) = h.send("PUT", "/api/jobs", admin, None, &[]).await;
    assert_eq!(status, 405);
    let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(error["error"]["code"], "method_not_allowed");
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_413() {
    let mut setup = Setup::default();
    setup.options.body_limit = 4096;
    let h = Harness::with(setup).await;
    let big = format!(r#"{{"repo": "{}"}}"#, "a".repeat(10_000));
    for path in ["/api/jobs", "/api/jobs/cancel", "/api/repositories"] {
        let (status, _, bytes) = h
            .send(
                "POST",
                path,
                Some(ADMIN),
                Some(big.clone().into_bytes()),
                &[],
            )
            .await;
        assert_eq!(status, 413, "{path}");
        let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(error["error"]["code"], "payload_too_large");
    }
    let (status, _, _) = h
        .send(
            "PATCH",
            "/api/config",
            Some(ADMIN),
            Some(big.into_bytes()),
            &[],
        )
        .await;
    assert_eq!(status, 413);
    h.stop().await;
}

fn sign(body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn github_webhooks_are_verified_deduplicated_and_become_push_jobs() {
    let h = Harness::start().await;
    let head = git(&h.repo, &["rev-parse", "HEAD"]);
    let payload = serde_json::json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": head,
        "repository": {"name": "api", "full_name": "org/api"}
    })
    .to_string();
    let body = payload.as_bytes().to_vec();
    let signature = sign(&body);

    // A bad signature is refused, whatever the token.
    let (status, _, bytes) = h
        .send(
            "POST",
            "/api/webhooks/github",
            None,
            Some(body.clone()),
            &[
                ("x-hub-signature-256", "sha256=00"),
                ("x-github-event", "push"),
                ("x-github-delivery", "d-1"),
            ],
        )
        .await;
    assert_eq!(status, 401, "{}", String::from_utf8_lossy(&bytes));
    let (status, _, _) = h
        .send(
            "POST",
            "/api/webhooks/github",
            None,
            Some(body.clone()),
            &[("x-github-event", "push"), ("x-github-delivery", "d-1")],
        )
        .await;
    assert_eq!(status, 401, "a missing signature");

    // A good one queues a push job.
    let headers = [
        ("x-hub-signature-256", signature.as_str()),
        ("x-github-event", "push"),
        ("x-github-delivery", "d-1"),
    ];
    let (status, _, bytes) = h
        .send(
            "POST",
            "/api/webhooks/github",
            None,
            Some(body.clone()),
            &headers,
        )
        .await;
    assert_eq!(status, 202, "{}", String::from_utf8_lossy(&bytes));
    let outcome: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(outcome["accepted"], true);
    let id: orchex_core::JobId = outcome["jobs"][0].as_str().unwrap().parse().unwrap();
    let job = h.wait_final(id).await;
    assert_eq!(job.trigger.kind, orchex_core::TriggerKind::Push);
    assert_eq!(job.trigger.commit.as_deref(), Some(head.as_str()));

    // The same delivery again is acknowledged and ignored.
    let (status, _, bytes) = h
        .send(
            "POST",
            "/api/webhooks/github",
            None,
            Some(body.clone()),
            &headers,
        )
        .await;
    assert_eq!(status, 200);
    let outcome: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(outcome["accepted"], false);
    assert!(outcome["reason"].as_str().unwrap().contains("already"));
    let pushes = h
        .store
        .count_jobs(orchex_store::JobFilter::new())
        .await
        .unwrap();
    assert_eq!(pushes, 1, "the replay queued nothing");

    // Other events and other branches are acknowledged and ignored.
    let ping = br#"{"zen": "Keep it logically awesome."}"#.to_vec();
    let ping_signature = sign(&ping);
    let (status, _, bytes) = h
        .send(
            "POST",
            "/api/webhooks/github",
            None,
            Some(ping),
            &[
                ("x-hub-signature-256", ping_signature.as_str()),
                ("x-github-event", "ping"),
                ("x-github-delivery", "d-2"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["accepted"],
        false
    );
    let other = payload
        .replace("refs/heads/main", "refs/heads/feature")
        .into_bytes();
    let other_signature = sign(&other);
    let (status, _, bytes) = h
        .send(
            "POST",
            "/api/webhooks/github",
            None,
            Some(other),
            &[
                ("x-hub-signature-256", other_signature.as_str()),
                ("x-github-event", "push"),
                ("x-github-delivery", "d-3"),
            ],
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        serde_json::from_slice::<serde_json::Value>(&bytes).unwrap()["reason"]
            .as_str()
            .unwrap()
            .contains("watched branch")
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_lists_exactly_the_routes_the_router_serves() {
    let h = Harness::start().await;
    let (status, doc) = h.get("/api/openapi.json", Some(ADMIN)).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = Vec::new();
    for (path, item) in paths {
        for method in ["get", "post", "patch", "delete", "put"] {
            if item.get(method).is_some() {
                documented.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    // Every route of PRODUCT.md §8 is documented...
    let spec: &[(&str, &str)] = &[
        ("GET", "/"),
        ("GET", "/api/health"),
        ("GET", "/api/health/detailed"),
        ("GET", "/api/dashboard"),
        ("GET", "/api/metrics"),
        ("GET", "/metrics"),
        ("GET", "/api/events"),
        ("GET", "/api/repositories"),
        ("POST", "/api/repositories"),
        ("DELETE", "/api/repositories/{name}"),
        ("GET", "/api/repositories/{name}/analysis"),
        ("GET", "/api/jobs"),
        ("GET", "/api/jobs/{id}"),
        ("POST", "/api/jobs"),
        ("POST", "/api/jobs/{id}/cancel"),
        ("POST", "/api/jobs/cancel"),
        ("POST", "/api/jobs/{id}/rollback"),
        ("POST", "/api/control/pause"),
        ("POST", "/api/control/resume"),
        ("POST", "/api/control/emergency-stop"),
        ("GET", "/api/config"),
        ("PATCH", "/api/config"),
        ("POST", "/api/config/reload"),
        ("GET", "/api/orchestrator/config"),
        ("POST", "/api/webhooks/github"),
        ("GET", "/api/openapi.json"),
        ("GET", "/api/ws"),
    ];
    for (method, path) in spec {
        assert!(
            documented.iter().any(|(m, p)| m == method && p == path),
            "{method} {path} is not in the OpenAPI document"
        );
    }
    // ...and every documented operation is served (never a 404 or 405
    // from the router itself).
    let job = h.run("codegen").await;
    h.wait_final(job).await;
    for (method, path) in &documented {
        let concrete = path
            .replace("{id}", &job.to_string())
            .replace("{name}", "api")
            .replace("{file}", "app.js");
        if method == "DELETE" || concrete.contains("emergency-stop") {
            continue; // served, but destructive; covered by the auth matrix
        }
        let body = (method != "GET").then(|| b"{}".to_vec());
        let (status, _, bytes) = h.send(method, &concrete, Some(ADMIN), body, &[]).await;
        let text = String::from_utf8_lossy(&bytes);
        assert_ne!(status, 405, "{method} {concrete}: {text}");
        if status == 404 {
            assert!(
                !text.contains("no such route"),
                "{method} {concrete}: {text}"
            );
        }
    }
    // The library builds the same document.
    let built = orchex_dashboard::openapi_document();
    assert_eq!(built.paths.paths.len(), paths.len());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_page_by_cursor_and_stream_as_csv() {
    let h = Harness::start().await;
    for _ in 0..3 {
        let job = h.run("codegen").await;
        h.wait_final(job).await;
    }
    h.services.bus.flush().await;
    let (status, first) = h.get("/api/events?limit=2", Some(READER)).await;
    assert_eq!(status, 200);
    assert_eq!(first["items"].as_array().unwrap().len(), 2);
    let cursor = first["nextCursor"].as_str().unwrap();
    let (status, second) = h
        .get(
            &format!("/api/events?limit=2&cursor={cursor}"),
            Some(READER),
        )
        .await;
    assert_eq!(status, 200);
    assert_ne!(first["items"][0]["id"], second["items"][0]["id"]);

    let (status, headers, bytes) = h
        .send(
            "GET",
            "/api/events?format=csv&kind=job_succeeded",
            Some(READER),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let mut reader = csv::Reader::from_reader(bytes.as_ref());
    let kinds: Vec<String> = reader
        .records()
        .map(|r| r.unwrap().get(2).unwrap().to_owned())
        .collect();
    assert_eq!(kinds.len(), 3, "{kinds:?}");
    assert!(kinds.iter().all(|k| k == "job_succeeded"));

    let (status, jobs) = h
        .get("/api/jobs?state=succeeded&repo=api&limit=1", Some(READER))
        .await;
    assert_eq!(status, 200);
    assert_eq!(jobs["items"].as_array().unwrap().len(), 1);
    assert!(jobs["nextCursor"].is_string());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_routes_steer_the_orchestrator() {
    let h = Harness::start().await;
    let (status, body) = h
        .post("/api/control/pause", Some(ADMIN), serde_json::json!({}))
        .await;
    assert_eq!((status, body["state"].as_str()), (200, Some("paused")));
    let (_, dashboard) = h.get("/api/dashboard", Some(ADMIN)).await;
    assert_eq!(dashboard["orchestrator"]["state"], "paused");
    assert_eq!(dashboard["access"]["role"], "admin");
    let (_, dashboard) = h.get("/api/dashboard", Some(READER)).await;
    assert_eq!(dashboard["access"]["role"], "readOnly");
    let (status, body) = h
        .post("/api/control/resume", Some(ADMIN), serde_json::json!({}))
        .await;
    assert_eq!((status, body["state"].as_str()), (200, Some("running")));

    let slow = h.run("slow").await;
    h.wait_for(slow, |job| job.state() == JobState::Running)
        .await;
    let (status, body) = h
        .post(
            "/api/control/emergency-stop",
            Some(ADMIN),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "emergencyStopped");
    assert_eq!(body["cancelled"][0], slow.to_string());
    let job = h.wait_final(slow).await;
    assert_eq!(job.state(), JobState::Cancelled);
    let (status, _) = h
        .post("/api/control/resume", Some(ADMIN), serde_json::json!({}))
        .await;
    assert_eq!(status, 200);

    // Cancel by id, then a rollback refused with 409.
    let slow = h.run("slow").await;
    h.wait_for(slow, |job| job.state() == JobState::Running)
        .await;
    let (status, body) = h
        .post(
            &format!("/api/jobs/{slow}/cancel"),
            Some(ADMIN),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(h.wait_final(slow).await.state(), JobState::Cancelled);
    let (status, body) = h
        .post(
            &format!("/api/jobs/{slow}/rollback"),
            Some(ADMIN),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");

    // A delivered job rolls back once, then refuses.
    let job = h.run("codegen").await;
    let done = h.wait_final(job).await;
    assert_eq!(done.state(), JobState::Succeeded, "{done:?}");
    let (status, body) = h
        .post(
            &format!("/api/jobs/{job}/rollback"),
            Some(ADMIN),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "rolledBack");
    let (status, _) = h
        .post(
            &format!("/api/jobs/{job}/rollback"),
            Some(ADMIN),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 409);
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repositories_are_added_checked_and_removed_through_the_config() {
    let h = Harness::start().await;
    let other = crate::support::repo_fixture(&h.root, "web");
    let (status, body) = h
        .post(
            "/api/repositories",
            Some(ADMIN),
            serde_json::json!({"name": "web", "path": other.join("schema/..").display().to_string()}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["name"], "web");
    assert_eq!(
        body["path"],
        std::fs::canonicalize(&other).unwrap().display().to_string(),
        "the path is canonicalised"
    );
    let (status, body) = h
        .post(
            "/api/repositories",
            Some(ADMIN),
            serde_json::json!({"name": "web2", "path": other.display().to_string()}),
        )
        .await;
    assert_eq!(status, 409, "the same path twice: {body}");
    let (status, body) = h
        .post(
            "/api/repositories",
            Some(ADMIN),
            serde_json::json!({"name": "sub", "path": other.join("schema").display().to_string()}),
        )
        .await;
    assert_eq!(
        status, 400,
        "a subdirectory is not a repository root: {body}"
    );
    let (_, list) = h.get("/api/repositories", Some(READER)).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["api", "web"]);
    // Persisted in the overrides file beside the config.
    let overrides =
        std::fs::read_to_string(orchex_config::overrides_path(&h.root.join("orchex.toml")))
            .unwrap();
    assert!(overrides.contains("web"), "{overrides}");
    assert!(
        !overrides.contains("name = \"api\""),
        "only the API's change is in the overrides, not the file's list: {overrides}"
    );

    // Two adds at once: neither is lost.
    let (one, two) = (
        crate::support::repo_fixture(&h.root, "one"),
        crate::support::repo_fixture(&h.root, "two"),
    );
    let add = |name: &'static str, path: &std::path::Path| {
        let body = serde_json::json!({"name": name, "path": path.display().to_string()});
        let h = &h;
        async move { h.post("/api/repositories", Some(ADMIN), body).await.0 }
    };
    let (first, second) = tokio::join!(add("one", &one), add("two", &two));
    assert_eq!((first, second), (201, 201));
    let (_, list) = h.get("/api/repositories", Some(READER)).await;
    let mut names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["api", "one", "two", "web"]);
    for name in ["one", "two"] {
        let (status, _, _) = h
            .send(
                "DELETE",
                &format!("/api/repositories/{name}"),
                Some(ADMIN),
                None,
                &[],
            )
            .await;
        assert_eq!(status, 200);
    }

    let (status, _, _) = h
        .send("DELETE", "/api/repositories/web", Some(ADMIN), None, &[])
        .await;
    assert_eq!(status, 200);
    assert!(other.join(".git").exists(), "nothing on disk is touched");
    let (status, _, _) = h
        .send("DELETE", "/api/repositories/web", Some(ADMIN), None, &[])
        .await;
    assert_eq!(status, 404);

    let (_, config) = h.get("/api/config", Some(READER)).await;
    assert_eq!(config["dashboard"]["authToken"], "<redacted>");
    assert_eq!(config["dashboard"]["webhookSecret"], "<redacted>");
    assert!(!config.to_string().contains(ADMIN));
    let (_, routes) = h.get("/api/orchestrator/config", Some(READER)).await;
    assert!(
        routes["routes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["pipeline"] == "codegen" && r["trigger"] == "push")
    );
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_metrics_are_open_and_cors_allows_only_configured_origins() {
    let h = Harness::start().await;
    let (status, health) = h.get("/api/health", None).await;
    assert_eq!(status, 200);
    assert!(health["checks"]["store"].is_object(), "{health}");
    let (status, _, bytes) = h.send("GET", "/metrics", None, None, &[]).await;
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&bytes);
    assert!(text.contains("orchex_queue_depth"), "{text}");

    let (status, detailed) = h.get("/api/health/detailed", Some(READER)).await;
    assert_eq!(status, 200);
    assert!(detailed["memory"]["rssBytes"].as_u64().unwrap() > 0);
    assert_eq!(detailed["watchers"][0]["repo"], "api");

    let preflight = |origin: &'static str| {
        let h = &h;
        async move {
            h.send(
                "OPTIONS",
                "/api/jobs",
                None,
                None,
                &[
                    ("origin", origin),
                    ("access-control-request-method", "POST"),
                    ("access-control-request-headers", "authorization"),
                ],
            )
            .await
        }
    };
    let (_, headers, _) = preflight("https://ops.example.invalid").await;
    assert_eq!(
        headers["access-control-allow-origin"],
        "https://ops.example.invalid"
    );
    let (_, headers, _) = preflight("https://evil.example.invalid").await;
    assert!(headers.get("access-control-allow-origin").is_none());
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_follow_a_config_reload() {
    let h = Harness::start().await;
    let mut config = (*h.services.config.current()).clone();
    config.dashboard.auth_token = Some(orchex_core::config::Secret::new("rotated-admin"));
    h.dashboard.apply_config(&config).unwrap();
    let (status, _) = h.get("/api/jobs", Some(ADMIN)).await;
    assert_eq!(status, 401, "the old token no longer works");
    let (status, _) = h.get("/api/jobs", Some("rotated-admin")).await;
    assert_eq!(status, 200);
    h.stop().await;
}

#[test]
fn docs_api_md_documents_exactly_the_operations_of_the_openapi_document() {
    let text =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/api.md")).unwrap();
    let mut documented: Vec<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("### "))
        .filter(|heading| {
            ["GET ", "POST ", "PATCH ", "DELETE ", "PUT "]
                .iter()
                .any(|m| heading.starts_with(m))
        })
        .map(|heading| heading.trim().to_owned())
        .collect();
    documented.sort();
    let doc = orchex_dashboard::openapi_document();
    let value = serde_json::to_value(&doc).unwrap();
    let mut operations: Vec<String> = Vec::new();
    for (path, item) in value["paths"].as_object().unwrap() {
        for method in ["get", "post", "patch", "delete", "put"] {
            if item.get(method).is_some() {
                operations.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    operations.sort();
    assert_eq!(
        documented, operations,
        "docs/api.md headings (`### METHOD /path`) must match the OpenAPI operations"
    );
}

// === regressions found by `just fuzz-api` (schemathesis, benches/fuzz-api) ===

/// The statuses the OpenAPI document declares for `method path`.
fn declared_statuses(doc: &serde_json::Value, method: &str, path: &str) -> Vec<String> {
    doc["paths"][path][method.to_lowercase()]["responses"]
        .as_object()
        .unwrap_or_else(|| panic!("{method} {path} is not in the document"))
        .keys()
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_times_outside_the_stores_years_answer_200_not_500() {
    // The store holds times as i64 nanoseconds (years 1678..2262); a
    // filter time outside failed the query with a 500, and the CSV export
    // with a connection cut after the 200.
    let h = Harness::start().await;
    let job = h.run("codegen").await;
    h.wait_final(job).await;
    h.services.bus.flush().await;
    let (status, all) = h.get("/api/events?limit=1000", Some(READER)).await;
    assert_eq!(status, 200, "{all}");
    let total = all["items"].as_array().unwrap().len();
    assert!(total > 0);
    for (query, expected) in [
        ("since=0122-08-04T06:16:54.0199Z", total),
        ("since=0122-08-03T23:12:54.0199-07:04", total),
        ("until=9000-12-31T23:59:59Z", total),
        (
            "since=1000-01-01T00:00:00Z&until=9999-01-01T00:00:00Z",
            total,
        ),
        ("until=1291-09-20T18:08:02.455468Z", 0),
        ("since=5525-01-06T07:56:32.9Z", 0),
    ] {
        let (status, body) = h
            .get(&format!("/api/events?limit=1000&{query}"), Some(READER))
            .await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(body["items"].as_array().unwrap().len(), expected, "{query}");
    }
    let (status, headers, bytes) = h
        .send(
            "GET",
            "/api/events?format=csv&since=1291-09-20T18%3A08%3A02.455468Z&repo=api",
            Some(READER),
            None,
            &[],
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let rows = csv::Reader::from_reader(bytes.as_ref())
        .records()
        .map(Result::unwrap)
        .count();
    assert!(rows > 0, "{}", String::from_utf8_lossy(&bytes));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_and_content_types_the_routes_answer_are_declared() {
    let h = Harness::start().await;
    let (status, doc) = h.get("/api/openapi.json", Some(ADMIN)).await;
    assert_eq!(status, 200);

    // A body-taking route called without `Content-Type: application/json`
    // answers 415, and any of them 413 above the body limit.
    for (method, path) in [
        ("POST", "/api/jobs"),
        ("POST", "/api/jobs/cancel"),
        ("POST", "/api/repositories"),
        ("PATCH", "/api/config"),
    ] {
        let (status, _, bytes) = h.send(method, path, Some(ADMIN), None, &[]).await;
        assert_eq!(
            status,
            415,
            "{method} {path}: {}",
            String::from_utf8_lossy(&bytes)
        );
        let declared = declared_statuses(&doc, method, path);
        assert!(
            declared.contains(&"415".to_owned()),
            "{method} {path}: {declared:?}"
        );
        assert!(
            declared.contains(&"413".to_owned()),
            "{method} {path}: {declared:?}"
        );
        let error = &doc["paths"][path][method.to_lowercase()]["responses"]["415"];
        assert_eq!(
            error["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/ErrorBody"
        );
    }
    assert!(declared_statuses(&doc, "POST", "/api/webhooks/github").contains(&"413".to_owned()));

    // Removing a repository that pipelines name is refused with 400.
    let (status, _, bytes) = h
        .send("DELETE", "/api/repositories/api", Some(ADMIN), None, &[])
        .await;
    let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(
        (status, error["error"]["code"].as_str()),
        (400, Some("config_rejected"))
    );
    assert!(
        declared_statuses(&doc, "DELETE", "/api/repositories/{name}").contains(&"400".to_owned())
    );

    // A manual run during an emergency stop answers 503.
    let (status, _) = h
        .post(
            "/api/control/emergency-stop",
            Some(ADMIN),
            serde_json::json!({}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, body) = h
        .post(
            "/api/jobs",
            Some(ADMIN),
            serde_json::json!({"repo": "api", "pipeline": "codegen"}),
        )
        .await;
    assert_eq!(status, 503, "{body}");
    assert!(declared_statuses(&doc, "POST", "/api/jobs").contains(&"503".to_owned()));
    let (status, _) = h
        .post("/api/control/resume", Some(ADMIN), serde_json::json!({}))
        .await;
    assert_eq!(status, 200);
    // Resume answers 503 (not 409) when the orchestrator is not started;
    // a disabled repository's manual run answers 409.
    let resume = declared_statuses(&doc, "POST", "/api/control/resume");
    assert!(
        resume.contains(&"503".to_owned()) && !resume.contains(&"409".to_owned()),
        "{resume:?}"
    );
    assert!(declared_statuses(&doc, "POST", "/api/jobs").contains(&"409".to_owned()));

    // `format=csv` answers text/csv, which the 200 declares beside JSON.
    let (status, headers, _) = h
        .send("GET", "/api/events?format=csv", Some(ADMIN), None, &[])
        .await;
    assert_eq!(status, 200);
    assert!(
        headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/csv")
    );
    let content = doc["paths"]["/api/events"]["get"]["responses"]["200"]["content"]
        .as_object()
        .unwrap();
    assert!(
        content.contains_key("text/csv") && content.contains_key("application/json"),
        "{content:?}"
    );
    let format = doc["paths"]["/api/events"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "format")
        .unwrap();
    assert_eq!(format["schema"]["enum"], serde_json::json!(["json", "csv"]));

    // The page's assets are JavaScript and CSS, as declared.
    let declared = doc["paths"]["/assets/{file}"]["get"]["responses"]["200"]["content"]
        .as_object()
        .unwrap();
    for (file, kind) in [("app.js", "text/javascript"), ("app.css", "text/css")] {
        let (status, headers, _) = h
            .send("GET", &format!("/assets/{file}"), None, None, &[])
            .await;
        assert_eq!(status, 200);
        assert!(
            headers["content-type"].to_str().unwrap().starts_with(kind),
            "{file}"
        );
        assert!(declared.contains_key(kind), "{file}: {declared:?}");
    }

    // Only the signature header of a webhook delivery is required.
    for parameter in doc["paths"]["/api/webhooks/github"]["post"]["parameters"]
        .as_array()
        .unwrap()
    {
        let required = parameter["required"].as_bool().unwrap_or(false);
        assert_eq!(
            required,
            parameter["name"] == "X-Hub-Signature-256",
            "{parameter}"
        );
    }
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_array_body_is_refused_not_read_as_fields() {
    // serde reads a JSON array as a struct's fields in order: `[null, null]`
    // was a batch cancel of every job, `["api"]` a manual run.
    let h = Harness::start().await;
    for (method, path, body) in [
        ("POST", "/api/jobs/cancel", "[null, null]"),
        ("POST", "/api/jobs/cancel", "[]"),
        ("POST", "/api/jobs", r#"["api"]"#),
        ("POST", "/api/repositories", r#"["web", "/tmp"]"#),
        ("PATCH", "/api/config", "[1, 2]"),
        ("POST", "/api/jobs", "null"),
    ] {
        let (status, _, bytes) = h
            .send(
                method,
                path,
                Some(ADMIN),
                Some(body.as_bytes().to_vec()),
                &[],
            )
            .await;
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(status, 400, "{method} {path} {body}: {text}");
        let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            error["error"]["message"], "body: expected a JSON object",
            "{text}"
        );
    }
    let (_, jobs) = h.get("/api/jobs", Some(ADMIN)).await;
    assert_eq!(jobs["items"].as_array().unwrap().len(), 0, "{jobs}");
    // A push payload too.
    let body = br#"["refs/heads/main", null, null, false, {"name": "api"}]"#.to_vec();
    let signature = sign(&body);
    let (status, _, bytes) = h
        .send(
            "POST",
            "/api/webhooks/github",
            None,
            Some(body),
            &[
                ("x-hub-signature-256", &signature),
                ("x-github-event", "push"),
            ],
        )
        .await;
    assert_eq!(status, 400, "{}", String::from_utf8_lossy(&bytes));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_webhook_delivery_id_is_not_taken_for_a_replay() {
    let h = Harness::start().await;
    let body = br#"{"zen": "Keep it logically awesome."}"#.to_vec();
    let signature = sign(&body);
    for _ in 0..2 {
        let (status, _, bytes) = h
            .send(
                "POST",
                "/api/webhooks/github",
                None,
                Some(body.clone()),
                &[
                    ("x-hub-signature-256", &signature),
                    ("x-github-event", "ping"),
                    ("x-github-delivery", ""),
                ],
            )
            .await;
        let outcome: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(status, 200, "{outcome}");
        assert!(
            outcome["reason"].as_str().unwrap().contains("not acted on"),
            "{outcome}"
        );
    }
    h.stop().await;
}

/// Sends a correctly signed webhook delivery; the status and the answer.
async fn deliver(h: &Harness, body: Vec<u8>, event: &str, delivery: &str) -> (u16, String) {
    let signature = sign(&body);
    let headers = [
        ("x-hub-signature-256", signature.as_str()),
        ("x-github-event", event),
        ("x-github-delivery", delivery),
    ];
    let (status, _, bytes) = h
        .send("POST", "/api/webhooks/github", None, Some(body), &headers)
        .await;
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// A delivery that failed (here a malformed push payload, 400) is not
/// remembered: GitHub's redelivery of the same id is processed, not taken
/// for a replay, so the push is not lost. One that succeeded is remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_webhook_delivery_can_be_redelivered() {
    let h = Harness::start().await;
    let head = git(&h.repo, &["rev-parse", "HEAD"]);
    let id = "d-redelivered";
    let (status, answer) = deliver(&h, br#"{"ref": 7}"#.to_vec(), "push", id).await;
    assert_eq!(status, 400, "{answer}");
    let good = serde_json::json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": head,
        "repository": {"name": "api", "full_name": "org/api"}
    })
    .to_string()
    .into_bytes();
    let (status, answer) = deliver(&h, good.clone(), "push", id).await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = deliver(&h, good, "push", id).await;
    assert_eq!(status, 200, "{answer}");
    assert!(answer.contains("already received"), "{answer}");
    h.stop().await;
}
