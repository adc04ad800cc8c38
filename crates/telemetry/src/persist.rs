//! The persistence writer: drains the bus's queue into the event store in
//! batches.
//!
//! The writer takes up to `max_batch` events (1000) from the queue; when
//! fewer are waiting and nothing is being written, it lingers up to
//! `linger` (50 ms) for more, unless a flush or shutdown is asked for. It
//! then appends the batch with [`EventStore::append_events`]. Up to
//! `max_in_flight` (4) batches are written at once, so that the store's
//! writer thread always has the next batch at hand (it commits the batches
//! waiting for it in one transaction); batches complete in order.
//!
//! When the store fails (a full disk...), exactly this happens:
//!
//! 1. the `telemetry` health component turns `degraded` with the error, and
//!    `orchex_telemetry_store_errors_total` counts the failed attempt;
//! 2. the same batch is retried after `retry_initial` (100 ms), the delay
//!    doubling up to `retry_max` (5 s), for at most `max_attempts` (5)
//!    attempts in all: about 1.5 s with the defaults;
//! 3. meanwhile `publish` keeps returning at once; once the queue is full,
//!    new events are dropped and counted
//!    (`orchex_telemetry_events_dropped_total`, [`TelemetryBus::dropped`]);
//! 4. after the last failed attempt the batch is dropped, counted the same
//!    way, and logged at `error`; the writer goes on with the next batch;
//! 5. the first successful write reports `telemetry` `ok` again.
//!
//! [`TelemetryBus::dropped`]: crate::TelemetryBus::dropped

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesOrdered;
use orchex_core::Event;
use orchex_store::EventStore;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::bus::EventQueue;
use crate::health::HealthReporter;
use crate::metrics;

/// The health component the writer reports as.
pub const PERSISTENCE_COMPONENT: &str = "telemetry";

/// How the persistence writer batches and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct PersistenceConfig {
    /// Most events per append. Default 1000.
    pub max_batch: usize,
    /// How long to wait for a batch to fill when idle. Default 50 ms.
    pub linger: Duration,
    /// Batches being written at once. Default 4.
    pub max_in_flight: usize,
    /// First retry delay after a store error. Default 100 ms.
    pub retry_initial: Duration,
    /// Longest retry delay. Default 5 s.
    pub retry_max: Duration,
    /// Attempts per batch, the first included, before it is dropped.
    /// Default 5.
    pub max_attempts: u32,
}

impl Default for PersistenceConfig {
    fn default() -> Self {
        Self {
            max_batch: 1000,
            linger: Duration::from_millis(50),
            max_in_flight: 4,
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_secs(5),
            max_attempts: 5,
        }
    }
}

impl PersistenceConfig {
    /// Sets the batch size.
    #[must_use]
    pub fn max_batch(mut self, events: usize) -> Self {
        self.max_batch = events.max(1);
        self
    }

    /// Sets the linger time.
    #[must_use]
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Sets how many batches may be written at once.
    #[must_use]
    pub fn max_in_flight(mut self, batches: usize) -> Self {
        self.max_in_flight = batches.max(1);
        self
    }

    /// Sets the retry schedule.
    #[must_use]
    pub fn retry(mut self, initial: Duration, max: Duration, attempts: u32) -> Self {
        self.retry_initial = initial;
        self.retry_max = max.max(initial);
        self.max_attempts = attempts.max(1);
        self
    }
}

/// The running persistence writer task.
#[derive(Debug)]
pub struct PersistenceWriter {
    task: JoinHandle<()>,
    shutdown: Arc<Notify>,
}

impl PersistenceWriter {
    /// Spawns the writer on the current tokio runtime. It reports its health
    /// through `health` (component [`PERSISTENCE_COMPONENT`], reported `ok`
    /// at once).
    pub fn spawn(
        queue: EventQueue,
        store: Arc<dyn EventStore>,
        health: &crate::HealthRegistry,
        config: PersistenceConfig,
    ) -> PersistenceWriter {
        let shutdown = Arc::new(Notify::new());
        let reporter = health.reporter(PERSISTENCE_COMPONENT);
        reporter.ok();
        let worker = Worker {
            queue,
            writes: Arc::new(Writes {
                store,
                health: reporter,
                config,
                store_errors: metrics::store_errors_counter(),
            }),
            shutdown: Arc::clone(&shutdown),
            in_flight: FuturesOrdered::new(),
            handled: 0,
            degraded: false,
            persisted: metrics::persisted_counter(),
            queue_length: metrics::queue_length_gauge(),
        };
        PersistenceWriter {
            task: tokio::spawn(worker.run()),
            shutdown,
        }
    }

    /// Stops accepting events (later publishes are dropped and counted),
    /// writes everything already queued (with the usual retries), and waits
    /// for the writer to end.
    pub async fn shutdown(self) {
        self.shutdown.notify_one();
        if let Err(err) = self.task.await {
            tracing::error!(error = %err, "the telemetry persistence writer panicked");
        }
    }

    /// Whether the writer task has ended.
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// What one batch's write came to.
struct Written {
    events: u64,
    persisted: bool,
    failed_attempts: u32,
}

/// What every batch write needs; shared by the writes in flight.
struct Writes {
    store: Arc<dyn EventStore>,
    health: HealthReporter,
    config: PersistenceConfig,
    store_errors: ::metrics::Counter,
}

impl Writes {
    /// Appends `batch`, retrying as the module documentation says.
    async fn write(self: Arc<Self>, batch: Vec<Arc<Event>>) -> Written {
        let events = batch.len() as u64;
        let attempts = self.config.max_attempts.max(1);
        let mut delay = self.config.retry_initial;
        let mut failed_attempts = 0;
        let mut batch = Some(batch);
        for attempt in 1..=attempts {
            // The last attempt hands the batch over; earlier ones a copy
            // (of the `Arc`s, not of the events).
            let events_now = if attempt == attempts {
                batch.take().unwrap_or_default()
            } else {
                batch.clone().unwrap_or_default()
            };
            let result = self.store.append_events(events_now).await;
            let err = match result {
                Ok(()) => {
                    return Written {
                        events,
                        persisted: true,
                        failed_attempts,
                    };
                }
                Err(err) => err,
            };
            failed_attempts += 1;
            self.store_errors.increment(1);
            if attempt == attempts {
                self.health.degraded(format!(
                    "dropped {events} events after {attempts} failed attempts: {err}"
                ));
                tracing::error!(
                    error = %err,
                    dropped = events,
                    "cannot persist telemetry events; dropping the batch"
                );
                break;
            }
            self.health.degraded(format!(
                "cannot persist events (attempt {attempt} of {attempts}): {err}"
            ));
            tracing::warn!(error = %err, attempt, "cannot persist telemetry events; retrying");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(self.config.retry_max);
        }
        Written {
            events,
            persisted: false,
            failed_attempts,
        }
    }
}

type InFlight = FuturesOrdered<Pin<Box<dyn Future<Output = Written> + Send>>>;

struct Worker {
    queue: EventQueue,
    writes: Arc<Writes>,
    shutdown: Arc<Notify>,
    in_flight: InFlight,
    handled: u64,
    degraded: bool,
    persisted: ::metrics::Counter,
    queue_length: ::metrics::Gauge,
}

impl Worker {
    async fn run(mut self) {
        let config = self.writes.config;
        let max = config.max_batch.max(1);
        let max_in_flight = config.max_in_flight.max(1);
        let mut batch: Vec<Arc<Event>> = Vec::with_capacity(max);
        loop {
            let room = self.in_flight.len() < max_in_flight;
            tokio::select! {
                biased;
                () = self.shutdown.notified() => break,
                Some(written) = self.in_flight.next(), if !self.in_flight.is_empty() => {
                    self.finished(&written);
                }
                received = self.queue.rx.recv_many(&mut batch, max), if room => {
                    if received == 0 {
                        break;
                    }
                    if self.in_flight.is_empty()
                        && batch.len() < max
                        && !config.linger.is_zero()
                        && self.linger(&mut batch, max).await
                    {
                        self.submit(&mut batch, max);
                        break;
                    }
                    self.submit(&mut batch, max);
                }
            }
        }
        // Refuse new events (publish counts them as dropped), then write
        // what is already queued.
        self.queue.rx.close();
        loop {
            while self.in_flight.len() < max_in_flight
                && let Ok(event) = self.queue.rx.try_recv()
            {
                batch.push(event);
                if batch.len() == max {
                    self.submit(&mut batch, max);
                }
            }
            if self.in_flight.len() < max_in_flight && !batch.is_empty() {
                self.submit(&mut batch, max);
            }
            match self.in_flight.next().await {
                Some(written) => self.finished(&written),
                None if self.queue.rx.is_empty() => break,
                None => {}
            }
        }
        self.queue_length.set(0.0);
    }

    /// Waits up to the linger time for the batch to fill; `true` when a
    /// shutdown was asked for meanwhile.
    async fn linger(&mut self, batch: &mut Vec<Arc<Event>>, max: usize) -> bool {
        let deadline = Instant::now() + self.writes.config.linger;
        while batch.len() < max {
            let room = max - batch.len();
            tokio::select! {
                biased;
                () = self.shutdown.notified() => return true,
                () = self.queue.shared.flush.notified() => return false,
                received = self.queue.rx.recv_many(batch, room) => {
                    if received == 0 {
                        return false;
                    }
                }
                () = tokio::time::sleep_until(deadline) => return false,
            }
        }
        false
    }

    fn submit(&mut self, batch: &mut Vec<Arc<Event>>, max: usize) {
        if batch.is_empty() {
            return;
        }
        let full = std::mem::replace(batch, Vec::with_capacity(max));
        let writes = Arc::clone(&self.writes);
        self.in_flight.push_back(Box::pin(writes.write(full)));
    }

    fn finished(&mut self, written: &Written) {
        let shared = &self.queue.shared;
        if written.persisted {
            shared
                .persisted
                .fetch_add(written.events, Ordering::Relaxed);
            self.persisted.increment(written.events);
            if self.degraded || written.failed_attempts > 0 {
                self.degraded = false;
                self.writes.health.ok();
                tracing::info!("telemetry events are persisted again");
            }
        } else {
            self.degraded = true;
            shared
                .dropped_store_failure
                .fetch_add(written.events, Ordering::Relaxed);
            shared.dropped_counter.increment(written.events);
        }
        self.handled += written.events;
        self.queue.handled.send_replace(self.handled);
        #[allow(clippy::cast_precision_loss)] // bounded by the queue capacity
        self.queue_length.set(self.queue.rx.len() as f64);
    }
}
