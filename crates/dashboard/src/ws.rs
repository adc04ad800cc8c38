//! The live stream (`GET /api/ws`): events as they happen, a snapshot of
//! the dashboard every second, ping/pong, and a bounded send buffer per
//! client.
//!
//! The session is written over any `Sink`/`Stream` pair of WebSocket
//! messages ([`run_session`]), so it is tested with channels, the way
//! axum's `testing-websockets` example does, and served over a real socket
//! by the handler.
//!
//! A client that reads too slowly never slows anyone else: events reach
//! each session through its own broadcast receiver and snapshots are
//! shared, already serialised frames. Between the session and the socket
//! sits a queue of [`WsOptions::send_buffer`] messages. When it is full,
//! events are dropped and counted; once there is room again the client gets
//! `{"type": "lagged", "missed": N}` and a fresh snapshot. A client whose
//! queue stays full, or whose socket accepts nothing, for
//! [`WsOptions::stuck_after`] is disconnected.

use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures::future::{BoxFuture, Either};
use futures::{Sink, SinkExt as _, Stream, StreamExt as _};
use orchex_telemetry::{Received, Subscription};
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// The WebSocket's buffers and timers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsOptions {
    /// Messages queued for one client before events are dropped for it.
    pub send_buffer: usize,
    /// How long a full queue, or a socket that takes nothing, is tolerated
    /// before the client is disconnected.
    pub stuck_after: Duration,
    /// The snapshot cadence.
    pub snapshot_every: Duration,
    /// How often the server pings; a client silent for two periods is
    /// disconnected.
    pub ping_every: Duration,
}

impl Default for WsOptions {
    fn default() -> Self {
        Self {
            send_buffer: 256,
            stuck_after: Duration::from_secs(10),
            snapshot_every: Duration::from_secs(1),
            ping_every: Duration::from_secs(20),
        }
    }
}

/// Serialised snapshot messages, one per role (the read-only one says
/// `"role": "readOnly"` so the page hides its controls).
#[derive(Debug, Clone)]
pub(crate) struct Frames {
    pub(crate) admin: Arc<str>,
    pub(crate) read_only: Arc<str>,
}

/// Produces the current snapshot message (`{"type": "snapshot", ...}`),
/// already serialised; `None` when it cannot be built right now.
pub type SnapshotSource = Arc<dyn Fn() -> BoxFuture<'static, Option<Arc<str>>> + Send + Sync>;

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Ending {
    /// The client closed the socket (or it broke).
    ClientClosed,
    /// The server is shutting down.
    Shutdown,
    /// The client's queue stayed full, or its socket took nothing, for
    /// [`WsOptions::stuck_after`].
    Stuck,
    /// The client answered no ping for two ping periods.
    Unresponsive,
    /// Writing to the socket failed.
    SendFailed,
    /// The event bus is gone.
    BusClosed,
}

/// One client's session.
pub struct Session {
    /// The client's live events (already filtered).
    pub events: Subscription,
    /// The snapshot source.
    pub snapshots: SnapshotSource,
    /// Buffers and timers.
    pub options: WsOptions,
    /// Cancelled when the server shuts down.
    pub shutdown: CancellationToken,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("events", &self.events)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

fn event_message(event: &orchex_core::Event) -> Option<Message> {
    let text = serde_json::to_string(&serde_json::json!({"type": "event", "event": event})).ok()?;
    Some(Message::Text(text.into()))
}

fn lagged_message(missed: u64) -> Message {
    Message::Text(format!(r#"{{"type":"lagged","missed":{missed}}}"#).into())
}

struct Outbox {
    queue: mpsc::Sender<Message>,
    missed: u64,
    full_since: Option<Instant>,
    stuck_after: Duration,
}

impl Outbox {
    /// Queues `message`; `Err` when the client has been stuck too long.
    ///
    /// A full queue first yields once: the writer shares this task, so a
    /// burst of events must let it drain the queue into a socket that is
    /// keeping up before anything is counted as missed.
    async fn offer(&mut self, message: Message, counts_as_missed: bool) -> Result<(), Ending> {
        let message = match self.queue.try_send(message) {
            Ok(()) => {
                self.full_since = None;
                return Ok(());
            }
            Err(mpsc::error::TrySendError::Full(message)) => message,
            Err(mpsc::error::TrySendError::Closed(_)) => return Err(Ending::SendFailed),
        };
        tokio::task::yield_now().await;
        match self.queue.try_send(message) {
            Ok(()) => {
                self.full_since = None;
                Ok(())
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                if counts_as_missed {
                    self.missed += 1;
                }
                let since = *self.full_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= self.stuck_after {
                    Err(Ending::Stuck)
                } else {
                    Ok(())
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Ending::SendFailed),
        }
    }

    /// Whether a `lagged` notice and a snapshot fit now.
    fn can_report_lag(&self) -> bool {
        self.missed > 0 && self.queue.capacity() >= 2
    }
}

/// Runs one client's session over `sink` and `stream` until it ends.
pub async fn run_session<Tx, Rx, E>(session: Session, mut sink: Tx, mut stream: Rx) -> Ending
where
    Tx: Sink<Message> + Unpin + Send,
    Rx: Stream<Item = Result<Message, E>> + Unpin + Send,
{
    let Session {
        mut events,
        snapshots,
        options,
        shutdown,
    } = session;
    let (queue, mut queued) = mpsc::channel::<Message>(options.send_buffer.max(2));
    let stuck_after = options.stuck_after;

    let writer = async move {
        while let Some(message) = queued.recv().await {
            match tokio::time::timeout(stuck_after, sink.send(message)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Ending::SendFailed,
                Err(_) => return Ending::Stuck,
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
        Ending::Shutdown
    };

    let producer = async move {
        let mut outbox = Outbox {
            queue,
            missed: 0,
            full_since: None,
            stuck_after,
        };
        if let Some(frame) = snapshots().await {
            outbox
                .offer(Message::Text(Utf8Bytes::from(&*frame)), false)
                .await?;
        }
        let start = Instant::now();
        let mut snapshot_ticker =
            tokio::time::interval_at(start + options.snapshot_every, options.snapshot_every);
        snapshot_ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ping_ticker =
            tokio::time::interval_at(start + options.ping_every, options.ping_every);
        ping_ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        loop {
            if outbox.can_report_lag() {
                let missed = std::mem::take(&mut outbox.missed);
                outbox.offer(lagged_message(missed), false).await?;
                if let Some(frame) = snapshots().await {
                    outbox
                        .offer(Message::Text(Utf8Bytes::from(&*frame)), false)
                        .await?;
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => {
                    let _ = outbox.queue.try_send(Message::Close(Some(CloseFrame {
                        code: 1001,
                        reason: "server shutting down".into(),
                    })));
                    return Err::<(), Ending>(Ending::Shutdown);
                }
                received = events.recv() => match received {
                    Some(Received::Event(event)) => {
                        if let Some(message) = event_message(&event) {
                            outbox.offer(message, true).await?;
                        }
                    }
                    Some(Received::Lagged(missed)) => outbox.missed += missed,
                    None => return Err(Ending::BusClosed),
                },
                _ = snapshot_ticker.tick() => {
                    if let Some(frame) = snapshots().await {
                        outbox.offer(Message::Text(Utf8Bytes::from(&*frame)), false).await?;
                    }
                }
                _ = ping_ticker.tick() => {
                    if last_heard.elapsed() >= options.ping_every * 2 {
                        return Err(Ending::Unresponsive);
                    }
                    outbox.offer(Message::Ping(bytes::Bytes::from_static(b"orchex")), false).await?;
                }
                incoming = stream.next() => match incoming {
                    None | Some(Err(_) | Ok(Message::Close(_))) => {
                        return Err(Ending::ClientClosed);
                    }
                    Some(Ok(_)) => last_heard = Instant::now(),
                },
            }
        }
    };

    let producer = pin!(producer);
    let writer = pin!(writer);
    match futures::future::select(producer, writer).await {
        Either::Left((result, writer)) => {
            let ending = result.err().unwrap_or(Ending::Shutdown);
            if ending == Ending::Shutdown {
                // Let the close frame reach the client.
                let _ = tokio::time::timeout(Duration::from_secs(1), writer).await;
            }
            ending
        }
        Either::Right((ending, _)) => ending,
    }
}
