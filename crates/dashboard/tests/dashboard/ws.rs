//! The WebSocket: the session over channels (cadence under paused time,
//! lag, a stuck client beside a healthy one) and over a real socket
//! (origin check, subprotocol token, filters).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::extract::ws::Message;
use futures::{SinkExt as _, StreamExt as _};
use orchex_core::{Event, EventKind, RepoId};
use orchex_dashboard::ws::{
    Ending, LiveFeed, Session, Snapshot, SnapshotSource, WsOptions, run_session,
};
use orchex_telemetry::{BusConfig, LiveFilter, TelemetryBus};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};
use tokio_util::sync::CancellationToken;

use crate::support::{ADMIN, Harness, READER};

fn counting_source(calls: Arc<AtomicUsize>) -> SnapshotSource {
    Arc::new(move || {
        let calls = Arc::clone(&calls);
        Box::pin(async move {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            Some(Snapshot::whole(
                format!(r#"{{"type":"snapshot","n":{n}}}"#).into(),
            ))
        })
    })
}

fn text(message: &Message) -> serde_json::Value {
    match message {
        Message::Text(text) => serde_json::from_str(text.as_str()).unwrap(),
        _ => serde_json::Value::Null,
    }
}

type Incoming = futures::stream::Pending<Result<Message, std::io::Error>>;

fn session(bus: &TelemetryBus, source: SnapshotSource, options: WsOptions) -> Session {
    Session {
        events: LiveFeed::start(bus, &options, CancellationToken::new())
            .subscribe(LiveFilter::all()),
        snapshots: source,
        options,
        shutdown: CancellationToken::new(),
    }
}

#[tokio::test(start_paused = true)]
async fn a_snapshot_arrives_on_connect_and_then_every_second() {
    let bus = TelemetryBus::live_only(BusConfig::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let (tx, mut rx) = futures::channel::mpsc::unbounded::<Message>();
    let session = session(&bus, counting_source(calls), WsOptions::default());
    let task = tokio::spawn(run_session(
        session,
        tx.sink_map_err(|_| std::io::Error::other("closed")),
        futures::stream::pending::<Result<Message, std::io::Error>>(),
    ));
    tokio::time::sleep(Duration::from_millis(3_500)).await;
    let mut snapshots = 0;
    while let Ok(message) = rx.try_recv() {
        if text(&message)["type"] == "snapshot" {
            snapshots += 1;
        }
    }
    assert_eq!(snapshots, 4, "one on connect, then at 1 s, 2 s and 3 s");
    task.abort();
}

/// Sections after the first go out on connect and then only when their
/// version moves; the first goes out every period.
#[tokio::test(start_paused = true)]
async fn snapshot_sections_after_the_first_are_sent_only_when_they_change() {
    use orchex_dashboard::ws::SnapshotSection;
    let bus = TelemetryBus::live_only(BusConfig::default());
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    let source: SnapshotSource = Arc::new(move || {
        let n = counter.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            // The jobs section changes at the third snapshot only.
            let jobs = if n < 2 { 1 } else { 2 };
            let section = |version: u64, text: String| SnapshotSection {
                version,
                message: text.into(),
            };
            Some(Snapshot {
                sections: vec![
                    section(
                        0,
                        format!(r#"{{"type":"snapshot","snapshot":{{"core":{n}}}}}"#),
                    ),
                    section(
                        jobs,
                        format!(r#"{{"type":"snapshot","snapshot":{{"jobs":{jobs}}}}}"#),
                    ),
                    section(
                        7,
                        r#"{"type":"snapshot","snapshot":{"timeline":7}}"#.to_owned(),
                    ),
                ],
            })
        })
    });
    let (tx, mut rx) = futures::channel::mpsc::unbounded::<Message>();
    let task = tokio::spawn(run_session(
        session(&bus, source, WsOptions::default()),
        tx.sink_map_err(|_| std::io::Error::other("closed")),
        futures::stream::pending::<Result<Message, std::io::Error>>(),
    ));
    tokio::time::sleep(Duration::from_millis(4_500)).await;
    let mut sections = Vec::new();
    while let Ok(message) = rx.try_recv() {
        let value = text(&message);
        if value["type"] == "snapshot" {
            let (key, value) = value["snapshot"]
                .as_object()
                .and_then(|o| o.iter().next())
                .map(|(k, v)| (k.clone(), v.clone()))
                .unwrap();
            sections.push(format!("{key}={value}"));
        }
    }
    assert_eq!(
        sections,
        [
            "core=0",
            "jobs=1",
            "timeline=7", // on connect: everything
            "core=1",     // 1 s: nothing else changed
            "core=2",
            "jobs=2", // 2 s: the jobs moved
            "core=3",
            "core=4",
        ]
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_client_is_told_how_many_events_it_missed_then_gets_a_snapshot() {
    let bus = TelemetryBus::live_only(BusConfig::default());
    let calls = Arc::new(AtomicUsize::new(0));
    // A socket that takes nothing until the test reads.
    let (tx, mut rx) = futures::channel::mpsc::channel::<Message>(0);
    let options = WsOptions {
        send_buffer: 4,
        stuck_after: Duration::from_secs(60),
        ..WsOptions::default()
    };
    let session = session(&bus, counting_source(calls), options);
    let task = tokio::spawn(run_session(
        session,
        tx.sink_map_err(|_| std::io::Error::other("closed")),
        futures::stream::pending::<Result<Message, std::io::Error>>() as Incoming,
    ));
    // The first snapshot is in flight; let the session block on the socket.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..50 {
        bus.publish(Event::new(EventKind::JobQueued, format!("event {i}")));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Now read everything; one more event makes the session look again.
    let mut seen_events = 0;
    let mut lagged = None;
    let mut snapshot_after_lag = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline && !snapshot_after_lag {
        if let Ok(Some(message)) = tokio::time::timeout(Duration::from_millis(200), rx.next()).await
        {
            let value = text(&message);
            match value["type"].as_str() {
                Some("event") => seen_events += 1,
                Some("lagged") => lagged = value["missed"].as_u64(),
                Some("snapshot") if lagged.is_some() => snapshot_after_lag = true,
                _ => {}
            }
        } else {
            bus.publish(Event::new(EventKind::JobQueued, "nudge"));
        }
    }
    let missed = lagged.expect("a lagged message");
    assert!(missed > 0);
    assert!(
        snapshot_after_lag,
        "a fresh snapshot follows the lagged message"
    );
    assert!(
        seen_events + usize::try_from(missed).unwrap() >= 50,
        "every event is either delivered or counted as missed ({seen_events} + {missed})"
    );
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_client_is_disconnected_while_a_healthy_one_keeps_receiving() {
    let bus = TelemetryBus::live_only(BusConfig::default());
    let options = WsOptions {
        send_buffer: 4,
        stuck_after: Duration::from_millis(300),
        ..WsOptions::default()
    };
    let (stuck_tx, _stuck_rx) = futures::channel::mpsc::channel::<Message>(0);
    let stuck = tokio::spawn(run_session(
        session(&bus, counting_source(Arc::default()), options.clone()),
        stuck_tx.sink_map_err(|_| std::io::Error::other("closed")),
        futures::stream::pending::<Result<Message, std::io::Error>>() as Incoming,
    ));
    let (healthy_tx, mut healthy_rx) = futures::channel::mpsc::unbounded::<Message>();
    let healthy = tokio::spawn(run_session(
        session(&bus, counting_source(Arc::default()), options),
        healthy_tx.sink_map_err(|_| std::io::Error::other("closed")),
        futures::stream::pending::<Result<Message, std::io::Error>>() as Incoming,
    ));
    let mut published: u64 = 0;
    let ending = loop {
        bus.publish(Event::new(
            EventKind::JobQueued,
            format!("event {published}"),
        ));
        published += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
        if stuck.is_finished() {
            break stuck.await.unwrap();
        }
        assert!(published < 4_000, "the stuck client was never disconnected");
    };
    assert_eq!(ending, Ending::Stuck);
    for i in 0..20 {
        bus.publish(Event::new(EventKind::JobQueued, format!("after {i}")));
    }
    // Every event reaches the healthy client, or is reported to it as
    // missed; it is never disconnected.
    let mut received: u64 = 0;
    let mut missed: u64 = 0;
    while received + missed < published + 20 {
        let message = tokio::time::timeout(Duration::from_secs(10), healthy_rx.next())
            .await
            .expect("the healthy client keeps receiving");
        let Some(message) = message else {
            panic!(
                "the healthy session ended: {:?} after {received} of {} events",
                healthy.await,
                published + 20
            );
        };
        let value = text(&message);
        match value["type"].as_str() {
            Some("event") => received += 1,
            Some("lagged") => missed += value["missed"].as_u64().unwrap(),
            _ => {}
        }
    }
    assert!(!healthy.is_finished());
    healthy.abort();
}

async fn connect(
    h: &Harness,
    query: &str,
    headers: &[(&str, &str)],
) -> Result<
    (
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
        tungstenite::handshake::client::Response,
    ),
    tungstenite::Error,
> {
    let mut request = format!("ws://127.0.0.1:{}/api/ws{query}", h.port)
        .into_client_request()
        .unwrap();
    for (name, value) in headers {
        request.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    tokio_tungstenite::connect_async(request).await
}

fn refused_status(result: Result<impl std::fmt::Debug, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(response)) => response.status().as_u16(),
        other => panic!("expected an HTTP refusal, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_checks_origin_and_takes_the_token_as_a_subprotocol() {
    let h = Harness::start().await;
    let status = refused_status(connect(&h, "", &[]).await);
    assert_eq!(status, 401, "no token");
    let bearer = format!("Bearer {ADMIN}");
    let status = refused_status(
        connect(
            &h,
            "",
            &[
                ("authorization", bearer.as_str()),
                ("origin", "https://evil.example.invalid"),
            ],
        )
        .await,
    );
    assert_eq!(status, 403, "a foreign origin");
    let status =
        refused_status(connect(&h, "", &[("sec-websocket-protocol", "bearer, wrong")]).await);
    assert_eq!(status, 401, "a wrong subprotocol token");

    let same_origin = format!("http://127.0.0.1:{}", h.port);
    let pair = format!("bearer, {READER}");
    let (mut socket, response) = connect(
        &h,
        "",
        &[
            ("sec-websocket-protocol", pair.as_str()),
            ("origin", same_origin.as_str()),
        ],
    )
    .await
    .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "bearer");
    let first = socket.next().await.unwrap().unwrap();
    let value: serde_json::Value = serde_json::from_str(first.to_text().unwrap()).unwrap();
    assert_eq!(value["type"], "snapshot");
    assert_eq!(value["snapshot"]["access"]["role"], "readOnly");
    assert!(value["snapshot"]["orchestrator"]["state"].is_string());
    socket.close(None).await.unwrap();
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_filters_events_by_kind_and_repository() {
    let h = Harness::start().await;
    let bearer = format!("Bearer {ADMIN}");
    let (mut socket, _) = connect(
        &h,
        "?kinds=job_succeeded,job_failed&repo=api",
        &[("authorization", bearer.as_str())],
    )
    .await
    .unwrap();
    // An event of another repository and of another kind.
    h.services.bus.publish(
        Event::new(EventKind::JobSucceeded, "elsewhere").with_repo(RepoId::new("web").unwrap()),
    );
    let job = h.run("codegen").await;
    let mut kinds = Vec::new();
    while kinds.is_empty() {
        let message = tokio::time::timeout(Duration::from_secs(30), socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let value: serde_json::Value = match message {
            tungstenite::Message::Text(text) => serde_json::from_str(text.as_str()).unwrap(),
            _ => continue,
        };
        if value["type"] == "event" {
            assert_eq!(value["event"]["repo"], "api", "{value}");
            assert_eq!(value["event"]["jobId"], job.to_string());
            kinds.push(value["event"]["kind"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(kinds, ["job_succeeded"]);
    socket.close(None).await.unwrap();
    h.stop().await;
}

/// A sink that takes every message and never finishes a flush, like
/// tungstenite over a socket the client stopped reading: it stays "ready"
/// until its own large buffer fills.
struct NeverFlushes(Arc<AtomicUsize>);

impl futures::Sink<Message> for NeverFlushes {
    type Error = std::io::Error;

    fn poll_ready(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn start_send(self: std::pin::Pin<&mut Self>, _: Message) -> Result<(), Self::Error> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Pending
    }

    fn poll_close(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Pending
    }
}

/// Nothing more is fed to a socket whose flush is pending, so a client that
/// stopped reading is disconnected after `stuck_after` even while
/// snapshots keep coming, and the server buffers one batch for it, not
/// everything.
#[tokio::test(start_paused = true)]
async fn a_socket_that_never_flushes_is_stuck_not_fed_forever() {
    let bus = TelemetryBus::live_only(BusConfig::default());
    let options = WsOptions {
        snapshot_every: Duration::from_millis(50),
        stuck_after: Duration::from_millis(500),
        ..WsOptions::default()
    };
    let fed = Arc::new(AtomicUsize::new(0));
    let ending = tokio::time::timeout(
        Duration::from_secs(30),
        run_session(
            session(&bus, counting_source(Arc::default()), options),
            NeverFlushes(Arc::clone(&fed)),
            futures::stream::pending::<Result<Message, std::io::Error>>(),
        ),
    )
    .await
    .expect("the session ends");
    assert_eq!(ending, Ending::Stuck);
    assert_eq!(
        fed.load(Ordering::SeqCst),
        1,
        "only the first snapshot was fed"
    );
}

/// The stuck check does not wait for the next snapshot or ping to look
/// again: with snapshots a minute apart, a socket that never flushes is
/// still disconnected about `stuck_after` after it stopped taking data.
#[tokio::test(start_paused = true)]
async fn a_stuck_socket_is_noticed_without_waiting_for_the_next_tick() {
    let bus = TelemetryBus::live_only(BusConfig::default());
    let options = WsOptions {
        snapshot_every: Duration::from_secs(60),
        ping_every: Duration::from_secs(60),
        stuck_after: Duration::from_millis(500),
        ..WsOptions::default()
    };
    let ending = tokio::time::timeout(
        Duration::from_secs(5),
        run_session(
            session(&bus, counting_source(Arc::default()), options),
            NeverFlushes(Arc::default()),
            futures::stream::pending::<Result<Message, std::io::Error>>(),
        ),
    )
    .await
    .expect("disconnected within a few stuck periods, not at the next snapshot");
    assert_eq!(ending, Ending::Stuck);
}
