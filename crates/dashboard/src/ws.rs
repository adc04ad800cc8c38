//! The live stream (`GET /api/ws`): events as they happen, a snapshot of
//! the dashboard every second, ping/pong, and a bounded send buffer per
//! client.
//!
//! The session is written over any `Sink`/`Stream` pair of WebSocket
//! messages ([`run_session`]), so it is tested with channels, the way
//! axum's `testing-websockets` example does, and served over a real socket
//! by the handler.
//!
//! Work per event is shared, not repeated per client: a [`LiveFeed`]
//! encodes each event of the bus once into a ready message and hands the
//! sessions batches of them (events arriving within [`FEED_BATCH_WINDOW`]
//! of each other travel together), and every session forwards the same
//! reference-counted texts; snapshots are shared the same way. Each session
//! is one task that queues and writes itself (no channel, no second task,
//! no lock between the socket's halves); it feeds everything queued (up to
//! [`WRITE_BATCH_BYTES`]) before it flushes, so a batch of events costs one
//! wake-up and one socket write per client rather than one per event.
//!
//! A client that reads too slowly never slows anyone else: between the
//! session and the socket sits a queue of [`WsOptions::send_buffer`]
//! messages. When it is full, events are dropped and counted; once there is
//! room again the client gets `{"type": "lagged", "missed": N}`, and a fresh
//! snapshot unless one went out less than half a snapshot period ago (a
//! client that keeps lagging would otherwise be sent a snapshot after every
//! lag, many times the traffic of the events it cannot keep up with). A
//! client whose queue stays full, or whose socket accepts nothing, for
//! [`WsOptions::stuck_after`] is disconnected.

use std::collections::VecDeque;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use futures::future::BoxFuture;
use futures::{Sink, SinkExt as _, Stream};
use orchex_core::Event;
use orchex_telemetry::{LiveFilter, Received, TelemetryBus};
use tokio::sync::broadcast;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// How many bytes of queued messages a session's writer feeds to the
/// socket before it flushes (a larger message goes alone). Bounds the
/// socket's write buffer, which keeps the capacity of the largest write
/// for as long as the client stays.
pub const WRITE_BATCH_BYTES: usize = 8 * 1024;

/// How many events a session takes from its feed in one go before it looks
/// at its timers and its socket again.
const DRAIN_BATCH: usize = 256;

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
    /// How long the [`LiveFeed`] gathers events into one batch while they
    /// come fast (an event after a quiet spell goes out at once). Every
    /// session wakes and writes once per batch, so a longer window costs
    /// that much latency and saves CPU under load.
    pub feed_window: Duration,
    /// Batches the [`LiveFeed`] keeps for sessions that are behind.
    pub feed_capacity: usize,
}

impl Default for WsOptions {
    fn default() -> Self {
        Self {
            send_buffer: 256,
            stuck_after: Duration::from_secs(10),
            snapshot_every: Duration::from_secs(1),
            ping_every: Duration::from_secs(20),
            feed_window: FEED_BATCH_WINDOW,
            feed_capacity: LiveFeed::DEFAULT_CAPACITY,
        }
    }
}

/// An event and its message (`{"type": "event", "event": ...}`), encoded
/// once for every session.
#[derive(Debug)]
struct EncodedEvent {
    event: Arc<Event>,
    message: Utf8Bytes,
}

#[derive(Debug)]
enum FeedEntry {
    Event(EncodedEvent),
    /// The encoder fell behind the bus and missed this many events.
    Missed(u64),
    /// The bus is gone.
    Closed,
}

/// What the encoder broadcasts: the entries of one batch window.
#[derive(Debug)]
struct Batch {
    entries: Vec<FeedEntry>,
    /// Events (encoded or missed) in every batch before this one: a
    /// session that fell behind the feed counts what it missed from it.
    events_before: u64,
}

impl Batch {
    fn events(&self) -> u64 {
        self.entries
            .iter()
            .map(|entry| match entry {
                FeedEntry::Event(_) => 1,
                FeedEntry::Missed(missed) => *missed,
                FeedEntry::Closed => 0,
            })
            .sum()
    }
}

type FeedBatch = Arc<Batch>;

/// The default [`WsOptions::feed_window`]: how long the feed gathers events
/// into one batch while they come fast. Every session wakes once per batch,
/// not once per event.
pub const FEED_BATCH_WINDOW: Duration = Duration::from_millis(5);

/// Entries in one batch at most.
const FEED_BATCH_MAX: usize = 1024;

/// The bus's events, each encoded once into its WebSocket message and
/// shared by every session ([`LiveFeed::subscribe`]).
///
/// One task follows the bus, encodes, and hands the sessions batches: an
/// event that arrives after a quiet spell goes out at once, and events that
/// follow within [`WsOptions::feed_window`] of the last batch are gathered
/// into the next, so a session wakes (and writes to its socket) at most once per
/// window however fast events come, and latency grows by at most the
/// window. The encoding is skipped while nobody is subscribed. Cheap to
/// clone.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use orchex_dashboard::ws::{LiveFeed, WsOptions};
/// use orchex_telemetry::{BusConfig, LiveFilter, TelemetryBus};
/// use tokio_util::sync::CancellationToken;
///
/// let bus = TelemetryBus::live_only(BusConfig::default());
/// let feed = LiveFeed::start(&bus, &WsOptions::default(), CancellationToken::new());
/// let mut events = feed.subscribe(LiveFilter::all());
/// bus.publish(orchex_core::Event::new(orchex_core::EventKind::JobQueued, "queued"));
/// let text = events.recv().await.expect("an event").expect("not lagged");
/// assert!(text.as_str().starts_with(r#"{"type":"event","event":{"#));
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct LiveFeed {
    tx: broadcast::Sender<FeedBatch>,
    /// Where the next batch starts ([`Batch::events_before`]): a session
    /// subscribing now knows where it starts, and so what it missed even
    /// before its first batch.
    next_batch_starts: Arc<AtomicU64>,
}

impl LiveFeed {
    /// Batches kept for sessions that are behind, by default. Sessions move
    /// each batch into their own send buffer at once, so the feed only
    /// covers a session task waiting for a worker thread; at the
    /// default [`WsOptions::feed_window`] this is at least 640 ms of events. The
    /// channel keeps its last batches even once read, so this is also
    /// memory held for good.
    pub const DEFAULT_CAPACITY: usize = 128;

    /// Starts encoding the events of `bus`, in batches of
    /// [`WsOptions::feed_window`], keeping the last
    /// [`WsOptions::feed_capacity`] batches for sessions that are behind;
    /// the encoder stops when the bus closes or `shutdown` is cancelled.
    /// Must be called within a tokio runtime.
    pub fn start(bus: &TelemetryBus, options: &WsOptions, shutdown: CancellationToken) -> Self {
        let (tx, _) = broadcast::channel(options.feed_capacity.max(1));
        let events = bus.subscribe(LiveFilter::all());
        let next_batch_starts = Arc::new(AtomicU64::new(0));
        tokio::spawn(encode_feed(
            events,
            tx.clone(),
            Arc::clone(&next_batch_starts),
            options.feed_window,
            shutdown,
        ));
        Self {
            tx,
            next_batch_starts,
        }
    }

    /// The encoded events matching `filter`, from now on.
    pub fn subscribe(&self, filter: LiveFilter) -> LiveEvents {
        // Subscribed first: a batch sent before the position is read is not
        // received, and then the position is already past it.
        let rx = self.tx.subscribe();
        LiveEvents {
            rx,
            filter,
            batch: None,
            next_events_before: self.next_batch_starts.load(Ordering::SeqCst),
        }
    }

    /// Sessions subscribed now.
    pub fn subscribers(&self) -> usize {
        self.tx.receiver_count()
    }
}

/// The feed's encoder: bus events in, batches out (see [`LiveFeed`]).
async fn encode_feed(
    mut events: orchex_telemetry::Subscription,
    tx: broadcast::Sender<FeedBatch>,
    next_batch_starts: Arc<AtomicU64>,
    window: Duration,
    shutdown: CancellationToken,
) {
    let mut batch: Vec<FeedEntry> = Vec::new();
    let mut last_sent: Option<Instant> = None;
    let mut events_before = 0;
    loop {
        let received = tokio::select! {
            () = shutdown.cancelled() => return,
            received = events.recv() => received,
        };
        let mut open = gather(&mut batch, received, &tx);
        while open && batch.len() < FEED_BATCH_MAX {
            let Some(received) = events.try_recv() else {
                break;
            };
            open = gather(&mut batch, Some(received), &tx);
        }
        // Events came fast: fill the rest of the window.
        if let Some(due) = last_sent.map(|sent| sent + window)
            && open
            && Instant::now() < due
        {
            let sleep = tokio::time::sleep_until(due);
            tokio::pin!(sleep);
            while open && batch.len() < FEED_BATCH_MAX {
                tokio::select! {
                    () = &mut sleep => break,
                    () = shutdown.cancelled() => return,
                    received = events.recv() => open = gather(&mut batch, received, &tx),
                }
            }
        }
        if !batch.is_empty() {
            let batch = Batch {
                entries: std::mem::take(&mut batch),
                events_before,
            };
            events_before += batch.events();
            // Before the send: see `LiveFeed::subscribe`.
            next_batch_starts.store(events_before, Ordering::SeqCst);
            // Err only means nobody listens right now.
            let _ = tx.send(Arc::new(batch));
            last_sent = Some(Instant::now());
        }
        if !open {
            return;
        }
    }
}

/// Adds what the bus gave to `batch`; `false` once the bus is gone.
fn gather(
    batch: &mut Vec<FeedEntry>,
    received: Option<Received>,
    tx: &broadcast::Sender<FeedBatch>,
) -> bool {
    match received {
        Some(Received::Event(event)) => {
            if tx.receiver_count() > 0
                && let Some(message) = encode_event(&event)
            {
                batch.push(FeedEntry::Event(EncodedEvent { event, message }));
            }
            true
        }
        Some(Received::Lagged(missed)) => {
            batch.push(FeedEntry::Missed(missed));
            true
        }
        None => {
            batch.push(FeedEntry::Closed);
            false
        }
    }
}

fn encode_event(event: &Event) -> Option<Utf8Bytes> {
    #[derive(serde::Serialize)]
    struct EventMessage<'a> {
        #[serde(rename = "type")]
        kind: &'static str,
        event: &'a Event,
    }
    match serde_json::to_string(&EventMessage {
        kind: "event",
        event,
    }) {
        Ok(text) => Some(text.into()),
        Err(err) => {
            tracing::warn!(%err, "cannot encode an event for the live stream");
            None
        }
    }
}

/// One session's view of a [`LiveFeed`]: the messages of the events that
/// match its filter.
#[derive(Debug)]
pub struct LiveEvents {
    rx: broadcast::Receiver<FeedBatch>,
    filter: LiveFilter,
    /// The batch being read, and the next entry's index.
    batch: Option<(FeedBatch, usize)>,
    /// Where the next batch starts if none was missed.
    next_events_before: u64,
}

/// What [`LiveEvents`] yields when it is not an event's message: the
/// session fell behind the feed, or the bus is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeedGap {
    /// This many events (of any kind, so at most this many matching ones)
    /// were missed.
    Missed(u64),
    /// The bus is gone; nothing more will come.
    Closed,
}

impl LiveEvents {
    /// The next matching event's message, or the gap before it; `None`
    /// once the feed is gone.
    pub async fn recv(&mut self) -> Option<Result<Utf8Bytes, FeedGap>> {
        loop {
            if let Some(found) = self.next_in_batch() {
                return Some(found);
            }
            match self.rx.recv().await {
                Ok(batch) => {
                    if let Some(gap) = self.start_batch(batch) {
                        return Some(Err(gap));
                    }
                }
                // The next batch tells how many events were missed.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Like [`LiveEvents::recv`] without waiting: `None` when nothing
    /// matching is buffered.
    pub fn try_recv(&mut self) -> Option<Result<Utf8Bytes, FeedGap>> {
        loop {
            if let Some(found) = self.next_in_batch() {
                return Some(found);
            }
            match self.rx.try_recv() {
                Ok(batch) => {
                    if let Some(gap) = self.start_batch(batch) {
                        return Some(Err(gap));
                    }
                }
                Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => return None,
            }
        }
    }

    /// Starts reading `batch`; the events missed before it, if any.
    fn start_batch(&mut self, batch: FeedBatch) -> Option<FeedGap> {
        let expected = self.next_events_before;
        let starts = batch.events_before;
        self.next_events_before = starts + batch.events();
        self.batch = Some((batch, 0));
        (starts > expected).then(|| FeedGap::Missed(starts - expected))
    }

    fn next_in_batch(&mut self) -> Option<Result<Utf8Bytes, FeedGap>> {
        let (batch, next) = self.batch.as_mut()?;
        while let Some(entry) = batch.entries.get(*next) {
            *next += 1;
            match entry {
                FeedEntry::Event(encoded) if self.filter.matches(&encoded.event) => {
                    return Some(Ok(encoded.message.clone()));
                }
                FeedEntry::Event(_) => {}
                FeedEntry::Missed(missed) => return Some(Err(FeedGap::Missed(*missed))),
                FeedEntry::Closed => return Some(Err(FeedGap::Closed)),
            }
        }
        self.batch = None;
        None
    }
}

/// A snapshot, in sections: each is a complete `{"type": "snapshot",
/// "snapshot": {...}}` message carrying some of the snapshot's fields, and
/// a client merges each into what it has.
///
/// Sections keep every message small, and a socket's write buffer keeps
/// the capacity of the largest message it sent for as long as the client
/// stays. The first section goes out every snapshot period; each of the
/// others only when its [`SnapshotSection::version`] moved since this
/// client last got it (and all of them on connect and after a lag).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// The sections, in a fixed order.
    pub sections: Vec<SnapshotSection>,
}

/// One section of a [`Snapshot`].
#[derive(Debug, Clone)]
pub struct SnapshotSection {
    /// Changes whenever the section's content does.
    pub version: u64,
    /// The message, already serialised and shared.
    pub message: Utf8Bytes,
}

impl Snapshot {
    /// A snapshot of one section: `message`, sent every period.
    pub fn whole(message: Utf8Bytes) -> Self {
        Self {
            sections: vec![SnapshotSection {
                version: 0,
                message,
            }],
        }
    }
}

/// Produces the current snapshot; `None` when it cannot be built right
/// now.
pub type SnapshotSource = Arc<dyn Fn() -> BoxFuture<'static, Option<Snapshot>> + Send + Sync>;

/// What a session last sent of each snapshot section.
#[derive(Debug, Default)]
struct SentSections {
    versions: Vec<Option<u64>>,
}

impl SentSections {
    /// Queues the sections this client needs: the first always, the others
    /// when they changed, or every one when `all`.
    async fn offer<S, E>(
        &mut self,
        outbox: &mut Conn<S>,
        snapshot: &Snapshot,
        all: bool,
    ) -> Result<(), Ending>
    where
        S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
    {
        self.versions.resize(snapshot.sections.len(), None);
        for (index, section) in snapshot.sections.iter().enumerate() {
            let sent = &mut self.versions[index];
            if all || index == 0 || *sent != Some(section.version) {
                let queued = outbox
                    .offer(Message::Text(section.message.clone()), false)
                    .await?;
                // A dropped section goes again with the next snapshot.
                *sent = queued.then_some(section.version);
            }
        }
        Ok(())
    }
}

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
    /// The client's live events (already filtered and encoded).
    pub events: LiveEvents,
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

fn lagged_message(missed: u64) -> Message {
    Message::Text(format!(r#"{{"type":"lagged","missed":{missed}}}"#).into())
}

fn message_len(message: &Message) -> usize {
    match message {
        Message::Text(text) => text.len(),
        Message::Binary(bytes) | Message::Ping(bytes) | Message::Pong(bytes) => bytes.len(),
        Message::Close(_) => 2,
    }
}

/// The client's socket and what is queued for it: at most `capacity`
/// messages, written by the session's own task (no second queue, no
/// second task, no lock between the socket's halves), so a batch of events
/// costs one wake-up and one write.
struct Conn<S> {
    socket: S,
    queue: VecDeque<Message>,
    capacity: usize,
    /// Messages were fed to the socket and not flushed yet.
    unflushed: bool,
    /// Events dropped from a full queue, not reported yet.
    missed: u64,
    full_since: Option<Instant>,
    /// Since when the socket has taken nothing while there was something
    /// to write.
    blocked_since: Option<Instant>,
    stuck_after: Duration,
}

/// What the socket did while the session waited on it.
enum Io<E> {
    /// Everything queued was written and flushed.
    Written,
    /// Writing failed.
    WriteFailed,
    /// The client sent something (`None`: the stream ended).
    Incoming(Option<Result<Message, E>>),
}

impl<S, E> Conn<S>
where
    S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin,
{
    fn new(socket: S, capacity: usize, stuck_after: Duration) -> Self {
        Self {
            socket,
            queue: VecDeque::new(),
            capacity,
            unflushed: false,
            missed: 0,
            full_since: None,
            blocked_since: None,
            stuck_after,
        }
    }

    fn wants_to_write(&self) -> bool {
        self.unflushed || !self.queue.is_empty()
    }

    /// Writes the queue to the socket; `Ready(Ok)` once all of it is
    /// written and flushed. Tracks since when the socket took nothing.
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        let before = (self.queue.len(), self.unflushed);
        let outcome = self.poll_write_queue(cx);
        if outcome.is_pending() && (self.queue.len(), self.unflushed) == before {
            self.blocked_since.get_or_insert_with(Instant::now);
        } else {
            self.blocked_since = None;
        }
        outcome
    }

    /// Feeds the queue to the socket, [`WRITE_BATCH_BYTES`] at most between
    /// flushes (a larger message goes alone).
    fn poll_write_queue(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        loop {
            // What was fed is flushed before anything more is: a sink whose
            // flush is pending may still say it is ready (tungstenite does
            // until its own 128 KiB buffer is full), and feeding on would
            // both grow that buffer and look like progress to the stuck
            // check.
            if self.unflushed {
                match Pin::new(&mut self.socket).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.unflushed = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                    Poll::Pending => return Poll::Pending,
                }
            }
            if self.queue.is_empty() {
                return Poll::Ready(Ok(()));
            }
            let mut fed = 0;
            while let Some(len) = self.queue.front().map(message_len) {
                if fed > 0 && fed + len > WRITE_BATCH_BYTES {
                    break;
                }
                match Pin::new(&mut self.socket).poll_ready(cx) {
                    Poll::Ready(Ok(())) => {}
                    Poll::Ready(Err(_)) => return Poll::Ready(Err(())),
                    Poll::Pending if self.unflushed => break,
                    Poll::Pending => return Poll::Pending,
                }
                let Some(message) = self.queue.pop_front() else {
                    break;
                };
                if Pin::new(&mut self.socket).start_send(message).is_err() {
                    return Poll::Ready(Err(()));
                }
                fed += len;
                self.unflushed = true;
            }
        }
    }

    /// Writes what is queued, then looks at what the client sent.
    fn poll_io(&mut self, cx: &mut Context<'_>) -> Poll<Io<E>> {
        if self.wants_to_write() {
            match self.poll_write(cx) {
                Poll::Ready(Ok(())) => return Poll::Ready(Io::Written),
                Poll::Ready(Err(())) => return Poll::Ready(Io::WriteFailed),
                Poll::Pending => {}
            }
        }
        Pin::new(&mut self.socket).poll_next(cx).map(Io::Incoming)
    }

    /// Queues `message`: `Ok(false)` when the queue was full and it was
    /// dropped, `Err` when the client has been stuck too long.
    ///
    /// A full queue is first written to the socket: a burst of events must
    /// go into a socket that is keeping up before anything is counted as
    /// missed.
    async fn offer(&mut self, message: Message, counts_as_missed: bool) -> Result<bool, Ending> {
        if self.queue.len() >= self.capacity {
            let written = std::future::poll_fn(|cx| Poll::Ready(self.poll_write(cx))).await;
            if matches!(written, Poll::Ready(Err(()))) {
                return Err(Ending::SendFailed);
            }
        }
        if self.queue.len() < self.capacity {
            self.queue.push_back(message);
            self.full_since = None;
            return Ok(true);
        }
        if counts_as_missed {
            self.missed += 1;
        }
        let since = *self.full_since.get_or_insert_with(Instant::now);
        if since.elapsed() >= self.stuck_after {
            Err(Ending::Stuck)
        } else {
            Ok(false)
        }
    }

    /// Forwards what the feed yielded.
    async fn forward(&mut self, item: Result<Utf8Bytes, FeedGap>) -> Result<(), Ending> {
        match item {
            Ok(text) => self.offer(Message::Text(text), true).await.map(drop),
            Err(FeedGap::Missed(missed)) => {
                self.missed += missed;
                Ok(())
            }
            Err(FeedGap::Closed) => Err(Ending::BusClosed),
        }
    }

    /// Whether a `lagged` notice and a snapshot fit now.
    fn can_report_lag(&self) -> bool {
        self.missed > 0 && self.capacity.saturating_sub(self.queue.len()) >= 2
    }

    /// Writes what is left (the close frame among it) and closes the
    /// socket, a second at most for each.
    async fn close(&mut self) {
        let drained = std::future::poll_fn(|cx| self.poll_write(cx));
        if matches!(
            tokio::time::timeout(Duration::from_secs(1), drained).await,
            Ok(Ok(()))
        ) {
            let _ = tokio::time::timeout(Duration::from_secs(1), self.socket.close()).await;
        }
    }
}

/// A sink and a stream as one socket, for [`run_session`].
struct Duplex<Tx, Rx> {
    sink: Tx,
    stream: Rx,
}

impl<Tx: Sink<Message> + Unpin, Rx: Unpin> Sink<Message> for Duplex<Tx, Rx> {
    type Error = Tx::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.sink).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        Pin::new(&mut self.sink).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.sink).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.sink).poll_close(cx)
    }
}

impl<Tx: Unpin, Rx: Stream + Unpin> Stream for Duplex<Tx, Rx> {
    type Item = Rx::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.stream).poll_next(cx)
    }
}

/// Runs one client's session over `sink` and `stream` until it ends (for
/// a socket that is one value, [`run_socket_session`] saves splitting it).
pub async fn run_session<Tx, Rx, E>(session: Session, sink: Tx, stream: Rx) -> Ending
where
    Tx: Sink<Message> + Unpin + Send,
    Rx: Stream<Item = Result<Message, E>> + Unpin + Send,
{
    run_socket_session(session, Duplex { sink, stream }).await
}

/// Runs one client's session over `socket` (a `Sink` of messages to the
/// client and a `Stream` of what it sends) until it ends.
///
/// One task does everything: it forwards the feed's events into the
/// client's queue, writes the queue to the socket, sends snapshots and
/// pings, and reads pongs and the close.
pub async fn run_socket_session<S, E>(session: Session, socket: S) -> Ending
where
    S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin + Send,
{
    let Session {
        mut events,
        snapshots,
        options,
        shutdown,
    } = session;
    let mut conn = Conn::new(socket, options.send_buffer.max(2), options.stuck_after);
    let ending = serve(&mut conn, &mut events, &snapshots, &options, &shutdown).await;
    if ending == Ending::Shutdown {
        conn.queue.push_back(Message::Close(Some(CloseFrame {
            code: 1001,
            reason: "server shutting down".into(),
        })));
        conn.close().await;
    }
    ending
}

async fn serve<S, E>(
    conn: &mut Conn<S>,
    events: &mut LiveEvents,
    snapshots: &SnapshotSource,
    options: &WsOptions,
    shutdown: &CancellationToken,
) -> Ending
where
    S: Sink<Message> + Stream<Item = Result<Message, E>> + Unpin + Send,
{
    let served = async {
        let start = Instant::now();
        let mut sent = SentSections::default();
        if let Some(snapshot) = snapshots().await {
            sent.offer(conn, &snapshot, true).await?;
        }
        let mut last_snapshot = start;
        let mut snapshot_ticker =
            tokio::time::interval_at(start + options.snapshot_every, options.snapshot_every);
        snapshot_ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut ping_ticker =
            tokio::time::interval_at(start + options.ping_every, options.ping_every);
        ping_ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let stuck = tokio::time::sleep(options.stuck_after);
        let mut stuck = pin!(stuck);
        let mut last_heard = Instant::now();
        let cancelled = shutdown.cancelled();
        let mut cancelled = pin!(cancelled);
        loop {
            if conn.can_report_lag() {
                let missed = std::mem::take(&mut conn.missed);
                conn.offer(lagged_message(missed), false).await?;
                // Sections dropped from a full queue: all of them again.
                sent = SentSections::default();
                if last_snapshot.elapsed() >= options.snapshot_every / 2
                    && let Some(snapshot) = snapshots().await
                {
                    sent.offer(conn, &snapshot, true).await?;
                    last_snapshot = Instant::now();
                }
            }
            // The stuck timer always runs, at most `stuck_after` ahead: the
            // socket may first refuse to take anything inside the poll
            // below, after this point, and must still be looked at again
            // by then.
            if let Some(since) = conn.blocked_since {
                if since.elapsed() >= options.stuck_after {
                    return Err(Ending::Stuck);
                }
                let due = since + options.stuck_after;
                if stuck.deadline() != due {
                    stuck.as_mut().reset(due);
                }
            } else if stuck.is_elapsed() {
                stuck.as_mut().reset(Instant::now() + options.stuck_after);
            }
            tokio::select! {
                biased;
                () = &mut cancelled => return Err::<(), Ending>(Ending::Shutdown),
                received = events.recv() => {
                    let Some(item) = received else {
                        return Err(Ending::BusClosed);
                    };
                    conn.forward(item).await?;
                    // Take what else is buffered before writing and
                    // polling the timers and the socket again.
                    for _ in 0..DRAIN_BATCH {
                        let Some(item) = events.try_recv() else { break };
                        conn.forward(item).await?;
                    }
                }
                io = std::future::poll_fn(|cx| conn.poll_io(cx)) => match io {
                    Io::Written => {}
                    Io::WriteFailed => return Err(Ending::SendFailed),
                    Io::Incoming(None | Some(Err(_) | Ok(Message::Close(_)))) => {
                        return Err(Ending::ClientClosed);
                    }
                    Io::Incoming(Some(Ok(_))) => last_heard = Instant::now(),
                },
                _ = snapshot_ticker.tick() => {
                    if let Some(snapshot) = snapshots().await {
                        sent.offer(conn, &snapshot, false).await?;
                        last_snapshot = Instant::now();
                    }
                }
                _ = ping_ticker.tick() => {
                    if last_heard.elapsed() >= options.ping_every * 2 {
                        return Err(Ending::Unresponsive);
                    }
                    conn.offer(Message::Ping(bytes::Bytes::from_static(b"orchex")), false).await?;
                }
                () = &mut stuck, if !stuck.is_elapsed() => {}
            }
        }
    };
    match served.await {
        Ok(()) => Ending::Shutdown,
        Err(ending) => ending,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use orchex_core::{EventKind, RepoId};
    use orchex_telemetry::BusConfig;

    use super::*;

    fn feed_options(capacity: usize) -> WsOptions {
        WsOptions {
            feed_capacity: capacity,
            ..WsOptions::default()
        }
    }

    fn event(i: usize) -> Event {
        Event::new(EventKind::JobQueued, format!("event {i}"))
    }

    fn message_of(item: Option<Result<Utf8Bytes, FeedGap>>) -> String {
        let text = item.unwrap().unwrap();
        let value: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
        value["event"]["message"].as_str().unwrap().to_owned()
    }

    #[tokio::test(start_paused = true)]
    async fn events_that_come_fast_share_a_batch_and_every_one_arrives_in_order() {
        let bus = orchex_telemetry::TelemetryBus::live_only(BusConfig::default());
        let feed = LiveFeed::start(&bus, &feed_options(16), CancellationToken::new());
        let mut events = feed.subscribe(LiveFilter::all());
        bus.publish(event(0));
        tokio::time::sleep(Duration::from_millis(1)).await;
        // Within the window of the first batch: gathered into one more.
        for i in 1..=5 {
            bus.publish(event(i));
        }
        tokio::time::sleep(FEED_BATCH_WINDOW * 2).await;
        let mut batches = Vec::new();
        while let Ok(batch) = events.rx.try_recv() {
            batches.push(batch.entries.len());
        }
        assert_eq!(batches, vec![1, 5]);

        let mut events = feed.subscribe(LiveFilter::all());
        for i in 0..40 {
            bus.publish(event(i));
            if i % 7 == 0 {
                tokio::task::yield_now().await;
            }
        }
        for i in 0..40 {
            assert_eq!(message_of(events.recv().await), format!("event {i}"));
        }
        assert!(events.try_recv().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_behind_the_feed_learns_exactly_how_many_events_it_missed() {
        let bus = orchex_telemetry::TelemetryBus::live_only(BusConfig::default());
        let feed = LiveFeed::start(&bus, &feed_options(2), CancellationToken::new());
        let mut events = feed.subscribe(LiveFilter::all());
        // Ten batches of one event each; the feed keeps the last two.
        for i in 0..10 {
            bus.publish(event(i));
            tokio::time::sleep(FEED_BATCH_WINDOW * 2).await;
        }
        assert_eq!(events.recv().await, Some(Err(FeedGap::Missed(8))));
        assert_eq!(message_of(events.recv().await), "event 8");
        assert_eq!(message_of(events.try_recv()), "event 9");
        assert!(events.try_recv().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_session_sees_only_what_its_filter_matches() {
        let bus = orchex_telemetry::TelemetryBus::live_only(BusConfig::default());
        let feed = LiveFeed::start(&bus, &feed_options(16), CancellationToken::new());
        let api = RepoId::new("api").unwrap();
        let mut only_api = feed.subscribe(LiveFilter::all().repo(api.clone()));
        let mut failures = feed.subscribe(LiveFilter::all().kind(EventKind::JobFailed));
        bus.publish(event(0).with_repo(api.clone()));
        bus.publish(Event::new(EventKind::JobFailed, "failed"));
        bus.publish(event(1));
        assert_eq!(message_of(only_api.recv().await), "event 0");
        assert_eq!(message_of(failures.recv().await), "failed");
        tokio::time::sleep(FEED_BATCH_WINDOW * 2).await;
        assert!(only_api.try_recv().is_none());
        assert!(failures.try_recv().is_none());
        assert_eq!(feed.subscribers(), 2);
        drop(only_api);
        assert_eq!(feed.subscribers(), 1);
    }
}
