//! The event bus: a non-blocking `publish`, a bounded queue to the
//! persistence writer, and a broadcast to live subscribers.
//!
//! `publish` wraps the event in an `Arc` (its only allocation), bumps
//! `orchex_events_total{kind}`, hands a clone to the live broadcast when
//! anyone subscribes, and `try_send`s it to the bounded queue. It never
//! waits: when the queue is full the event is dropped and counted, both in
//! an atomic readable from the bus and in
//! `orchex_telemetry_events_dropped_total`.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use futures::Stream;
use orchex_core::{Event, EventKind, RepoId, Severity};
use tokio::sync::{Notify, broadcast, mpsc, watch};

use crate::metrics;

/// How big the bus's buffers are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusConfig {
    /// Events that may wait for the persistence writer before `publish`
    /// drops them. Default 65 536.
    pub queue_capacity: usize,
    /// Events a live subscriber may fall behind before it is told it lagged.
    /// Default 1024.
    pub live_capacity: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            queue_capacity: 65_536,
            live_capacity: 1024,
        }
    }
}

impl BusConfig {
    /// Sets the queue capacity.
    #[must_use]
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// Sets the live subscribers' buffer.
    #[must_use]
    pub fn live_capacity(mut self, capacity: usize) -> Self {
        self.live_capacity = capacity.max(1);
        self
    }
}

/// Counters of the bus since it was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BusStats {
    /// Events published.
    pub published: u64,
    /// Events accepted by the queue.
    pub queued: u64,
    /// Events dropped because the queue was full or closed.
    pub dropped_queue_full: u64,
    /// Events dropped by the persistence writer after the store refused them
    /// on every retry.
    pub dropped_store_failure: u64,
    /// Events written to the store.
    pub persisted: u64,
    /// Live subscribers now.
    pub subscribers: usize,
}

impl BusStats {
    /// Every dropped event, whatever the reason.
    pub fn dropped(&self) -> u64 {
        self.dropped_queue_full + self.dropped_store_failure
    }
}

pub(crate) struct Shared {
    queue: Option<mpsc::Sender<Arc<Event>>>,
    live: broadcast::Sender<Arc<Event>>,
    subscribers: Arc<AtomicUsize>,
    published: AtomicU64,
    queued: AtomicU64,
    pub(crate) dropped_queue_full: AtomicU64,
    pub(crate) dropped_store_failure: AtomicU64,
    pub(crate) persisted: AtomicU64,
    /// Events the writer has finished with (persisted or dropped).
    handled: watch::Receiver<u64>,
    /// Wakes a lingering writer so that a flush does not wait for it.
    pub(crate) flush: Notify,
    events_total: Vec<::metrics::Counter>,
    pub(crate) dropped_counter: ::metrics::Counter,
}

/// The publishing side. Cheap to clone; every clone feeds the same queue
/// and broadcast.
#[derive(Clone)]
pub struct TelemetryBus {
    shared: Arc<Shared>,
}

impl fmt::Debug for TelemetryBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TelemetryBus")
            .field("stats", &self.stats())
            .finish()
    }
}

/// The receiving end of the bus's queue, for the
/// [`PersistenceWriter`](crate::PersistenceWriter).
pub struct EventQueue {
    pub(crate) rx: mpsc::Receiver<Arc<Event>>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) handled: watch::Sender<u64>,
}

impl fmt::Debug for EventQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventQueue")
            .field("waiting", &self.rx.len())
            .finish_non_exhaustive()
    }
}

fn kind_index(kind: EventKind) -> Option<usize> {
    EventKind::ALL.iter().position(|known| *known == kind)
}

impl TelemetryBus {
    /// A bus and the queue its events go to; hand the queue to
    /// [`PersistenceWriter::spawn`](crate::PersistenceWriter::spawn).
    ///
    /// Registers its counters with the current metrics recorder: install
    /// the recorder first.
    pub fn new(config: BusConfig) -> (TelemetryBus, EventQueue) {
        let (tx, rx) = mpsc::channel(config.queue_capacity.max(1));
        let (handled_tx, handled_rx) = watch::channel(0);
        let shared = Arc::new(Self::shared(config, Some(tx), handled_rx));
        let queue = EventQueue {
            rx,
            shared: Arc::clone(&shared),
            handled: handled_tx,
        };
        (TelemetryBus { shared }, queue)
    }

    /// A bus without persistence: events only go to live subscribers (and
    /// the event counters). Nothing is dropped for want of a writer.
    pub fn live_only(config: BusConfig) -> TelemetryBus {
        let (_, handled_rx) = watch::channel(0);
        TelemetryBus {
            shared: Arc::new(Self::shared(config, None, handled_rx)),
        }
    }

    fn shared(
        config: BusConfig,
        queue: Option<mpsc::Sender<Arc<Event>>>,
        handled: watch::Receiver<u64>,
    ) -> Shared {
        let (live, _) = broadcast::channel(config.live_capacity.max(1));
        Shared {
            queue,
            live,
            subscribers: Arc::new(AtomicUsize::new(0)),
            published: AtomicU64::new(0),
            queued: AtomicU64::new(0),
            dropped_queue_full: AtomicU64::new(0),
            dropped_store_failure: AtomicU64::new(0),
            persisted: AtomicU64::new(0),
            handled,
            flush: Notify::new(),
            events_total: metrics::event_counters(),
            dropped_counter: metrics::dropped_counter(),
        }
    }

    /// Publishes `event` without ever waiting. Returns `false` when the
    /// event could not be queued for persistence (queue full or writer
    /// stopped): it was then dropped and counted. Live subscribers get it
    /// either way.
    pub fn publish(&self, event: Event) -> bool {
        let shared = &*self.shared;
        shared.published.fetch_add(1, Ordering::Relaxed);
        if let Some(counter) = kind_index(event.kind).and_then(|i| shared.events_total.get(i)) {
            counter.increment(1);
        }
        let event = Arc::new(event);
        if shared.subscribers.load(Ordering::Relaxed) > 0 {
            // Err only means every subscriber left meanwhile.
            let _ = shared.live.send(Arc::clone(&event));
        }
        let Some(queue) = &shared.queue else {
            return true;
        };
        if queue.try_send(event).is_ok() {
            shared.queued.fetch_add(1, Ordering::Release);
            true
        } else {
            shared.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
            shared.dropped_counter.increment(1);
            false
        }
    }

    /// Every event dropped so far (queue full, writer stopped, or refused by
    /// the store on every retry).
    pub fn dropped(&self) -> u64 {
        self.shared.dropped_queue_full.load(Ordering::Relaxed)
            + self.shared.dropped_store_failure.load(Ordering::Relaxed)
    }

    /// The bus's counters.
    pub fn stats(&self) -> BusStats {
        let shared = &*self.shared;
        BusStats {
            published: shared.published.load(Ordering::Relaxed),
            queued: shared.queued.load(Ordering::Relaxed),
            dropped_queue_full: shared.dropped_queue_full.load(Ordering::Relaxed),
            dropped_store_failure: shared.dropped_store_failure.load(Ordering::Relaxed),
            persisted: shared.persisted.load(Ordering::Relaxed),
            subscribers: shared.subscribers.load(Ordering::Relaxed),
        }
    }

    /// Events waiting in the queue.
    pub fn queue_len(&self) -> usize {
        self.shared
            .queue
            .as_ref()
            .map_or(0, |queue| queue.max_capacity() - queue.capacity())
    }

    /// Waits until every event queued before this call has been handled by
    /// the persistence writer (written, or dropped after its retries).
    /// Returns at once on a live-only bus or once the writer has stopped.
    pub fn flush(&self) -> impl Future<Output = ()> + Send + 'static {
        let target = self.shared.queued.load(Ordering::Acquire);
        let mut handled = self.shared.handled.clone();
        let shared = Arc::clone(&self.shared);
        async move {
            if shared.queue.is_none() {
                return;
            }
            shared.flush.notify_one();
            // Err: the writer is gone, nothing more will be handled.
            let _ = handled.wait_for(|done| *done >= target).await;
        }
    }

    /// A live subscription to events matching `filter`, from now on.
    pub fn subscribe(&self, filter: LiveFilter) -> Subscription {
        let rx = self.shared.live.subscribe();
        self.shared.subscribers.fetch_add(1, Ordering::Relaxed);
        Subscription {
            rx,
            filter,
            subscribers: Arc::clone(&self.shared.subscribers),
        }
    }
}

/// Which live events a subscriber wants. Empty fields match everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct LiveFilter {
    /// Any of these kinds (empty: every kind).
    pub kinds: Vec<EventKind>,
    /// Only events about this repository.
    pub repo: Option<RepoId>,
    /// Only events of at least this severity.
    pub min_severity: Option<Severity>,
}

impl LiveFilter {
    /// Matches every event.
    pub fn all() -> Self {
        Self::default()
    }

    /// Adds a kind to match.
    #[must_use]
    pub fn kind(mut self, kind: EventKind) -> Self {
        self.kinds.push(kind);
        self
    }

    /// Restricts to one repository.
    #[must_use]
    pub fn repo(mut self, repo: RepoId) -> Self {
        self.repo = Some(repo);
        self
    }

    /// Restricts to a minimum severity.
    #[must_use]
    pub fn min_severity(mut self, severity: Severity) -> Self {
        self.min_severity = Some(severity);
        self
    }

    /// Whether `event` passes.
    pub fn matches(&self, event: &Event) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&event.kind))
            && self
                .repo
                .as_ref()
                .is_none_or(|repo| event.repo.as_ref() == Some(repo))
            && self.min_severity.is_none_or(|min| event.severity >= min)
    }
}

/// What a subscription yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Received {
    /// A matching event.
    Event(Arc<Event>),
    /// The subscriber fell behind and missed this many events (of any kind:
    /// at most this many matching ones). The subscription continues with
    /// the oldest event still buffered.
    Lagged(u64),
}

/// A live subscription. Dropping it unsubscribes.
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Event>>,
    filter: LiveFilter,
    subscribers: Arc<AtomicUsize>,
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.subscribers.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Subscription {
    /// The next matching event, or how many were missed; `None` once every
    /// bus handle is gone.
    pub async fn recv(&mut self) -> Option<Received> {
        loop {
            match self.rx.recv().await {
                Ok(event) if self.filter.matches(&event) => return Some(Received::Event(event)),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(missed)) => {
                    return Some(Received::Lagged(missed));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// Like [`Subscription::recv`] without waiting: `None` when nothing
    /// matching is buffered (or the bus is gone).
    pub fn try_recv(&mut self) -> Option<Received> {
        loop {
            match self.rx.try_recv() {
                Ok(event) if self.filter.matches(&event) => return Some(Received::Event(event)),
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(missed)) => {
                    return Some(Received::Lagged(missed));
                }
                Err(_) => return None,
            }
        }
    }

    /// The subscription as a [`Stream`].
    pub fn into_stream(self) -> impl Stream<Item = Received> + Send + 'static {
        futures::stream::unfold(self, |mut subscription| async move {
            let item = subscription.recv().await?;
            Some((item, subscription))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_a_counter_slot() {
        for (i, kind) in EventKind::ALL.iter().enumerate() {
            assert_eq!(kind_index(*kind), Some(i));
        }
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let (bus, _queue) = TelemetryBus::new(BusConfig::default().queue_capacity(2));
        assert!(bus.publish(Event::new(EventKind::JobQueued, "1")));
        assert!(bus.publish(Event::new(EventKind::JobQueued, "2")));
        assert!(!bus.publish(Event::new(EventKind::JobQueued, "3")));
        assert_eq!(bus.dropped(), 1);
        let stats = bus.stats();
        assert_eq!(stats.published, 3);
        assert_eq!(stats.queued, 2);
        assert_eq!(bus.queue_len(), 2);
    }

    #[tokio::test]
    async fn subscribers_filter_and_hear_about_lag() {
        let bus = TelemetryBus::live_only(BusConfig::default().live_capacity(4));
        let repo = RepoId::new("api").unwrap();
        let mut failures = bus.subscribe(LiveFilter::all().kind(EventKind::JobFailed));
        let mut api = bus.subscribe(LiveFilter::all().repo(repo.clone()));
        assert_eq!(bus.stats().subscribers, 2);
        bus.publish(Event::new(EventKind::JobQueued, "queued").with_repo(repo.clone()));
        bus.publish(Event::new(EventKind::JobFailed, "failed"));
        match failures.recv().await {
            Some(Received::Event(event)) => assert_eq!(event.message, "failed"),
            other => panic!("{other:?}"),
        }
        match api.recv().await {
            Some(Received::Event(event)) => assert_eq!(event.message, "queued"),
            other => panic!("{other:?}"),
        }
        assert_eq!(api.try_recv(), None);
        for i in 0..10 {
            bus.publish(Event::new(EventKind::JobFailed, format!("{i}")));
        }
        assert_eq!(failures.recv().await, Some(Received::Lagged(6)));
        match failures.recv().await {
            Some(Received::Event(event)) => assert_eq!(event.message, "6"),
            other => panic!("{other:?}"),
        }
        drop(api);
        assert_eq!(bus.stats().subscribers, 1);
        drop(bus);
        // The buffered events remain, then the stream ends.
        let mut rest = 0;
        while let Some(item) = failures.recv().await {
            assert!(matches!(item, Received::Event(_)));
            rest += 1;
        }
        assert_eq!(rest, 3);
    }
}
