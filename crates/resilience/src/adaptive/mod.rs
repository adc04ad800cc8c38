//! [`AdaptiveLimit`]: a concurrency limit that adapts, within
//! `[min, max]`, to the latency and the drops of the calls it admits.
//!
//! Use it as: take a [`LimitToken`], run the call, report the outcome
//! (the token measures the latency itself). Every change of the limit is
//! published on a `watch` channel (the latest value) and a `broadcast`
//! channel (each change).

mod algorithm;

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, broadcast, watch};

use algorithm::State;
pub use algorithm::{AimdConfig, GradientConfig, LimitAlgorithm};

use crate::clock::{SharedClock, Timestamp};
use crate::error::ConfigError;
use crate::instrument::{self, Counter, Gauge};
use crate::util::{CachePadded, lock};

/// What a call admitted by an [`AdaptiveLimit`] tells about load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitOutcome {
    /// It completed; its latency is a sample.
    Success,
    /// It failed because of overload (timed out, was shed, got a 429/503):
    /// the limit should shrink.
    Dropped,
    /// It says nothing about load (e.g. a validation error); no sample.
    Ignored,
}

/// Decides what a call's result says about load. Closures
/// `Fn(&Result<T, E>) -> LimitOutcome` implement it.
pub trait ClassifyLoad<T, E> {
    /// The outcome of `result`.
    fn classify(&self, result: &Result<T, E>) -> LimitOutcome;
}

impl<T, E, F> ClassifyLoad<T, E> for F
where
    F: Fn(&Result<T, E>) -> LimitOutcome,
{
    fn classify(&self, result: &Result<T, E>) -> LimitOutcome {
        self(result)
    }
}

/// `Ok` is a latency sample; an error says nothing about load (ignored).
/// Classify timeouts and overload errors as [`LimitOutcome::Dropped`] with
/// your own classifier.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultLoadClassifier;

impl<T, E> ClassifyLoad<T, E> for DefaultLoadClassifier {
    fn classify(&self, result: &Result<T, E>) -> LimitOutcome {
        if result.is_ok() {
            LimitOutcome::Success
        } else {
            LimitOutcome::Ignored
        }
    }
}

/// A change of the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitChange {
    /// The limit's name.
    pub name: Option<Arc<str>>,
    /// The limit before.
    pub from: u32,
    /// The limit after.
    pub to: u32,
    /// When, on the limit's clock.
    pub at: Timestamp,
}

/// A call refused because the limit is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitError {
    /// As many calls as the limit allows are in flight.
    #[error("concurrency limit of {limit} reached")]
    LimitReached {
        /// The limit at the time.
        limit: u32,
    },
}

/// A point-in-time view of an [`AdaptiveLimit`].
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub struct AdaptiveLimitSnapshot {
    /// The current limit.
    pub limit: u32,
    /// The algorithm's exact estimate (the limit is its integer part).
    pub estimate: f64,
    /// Calls in flight.
    pub in_flight: u32,
    /// The algorithm and its settings.
    pub algorithm: LimitAlgorithm,
}

/// An adaptive concurrency limit; clones share it.
///
/// ```
/// use std::time::Duration;
/// use orchex_resilience::{AdaptiveLimit, AimdConfig, LimitAlgorithm, ManualClock};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), orchex_resilience::ConfigError> {
/// let clock = ManualClock::new();
/// let limit = AdaptiveLimit::builder(LimitAlgorithm::Aimd(AimdConfig::new(2, 1, 8))).clock(clock.clone()).build()?;
/// let mut changes = limit.subscribe();
///
/// let a = limit.acquire().await; // waits while the limit is reached
/// let b = limit.try_acquire().unwrap();
/// assert!(limit.try_acquire().is_err());
/// clock.advance(Duration::from_millis(20));
/// a.success(); // latency 20 ms, 2 in flight: the limit grows
/// assert_eq!(limit.current(), 3);
/// b.dropped(); // overload: it shrinks
/// assert_eq!(limit.current(), 2);
/// assert!(changes.has_changed().unwrap());
/// assert_eq!(*changes.borrow_and_update(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct AdaptiveLimit {
    inner: Arc<Inner>,
}

struct Inner {
    limit: CachePadded<AtomicU32>,
    in_flight: CachePadded<AtomicU32>,
    state: Mutex<State>,
    notify: Notify,
    watch: watch::Sender<u32>,
    changes: broadcast::Sender<LimitChange>,
    clock: SharedClock,
    name: Option<Arc<str>>,
    metrics: Option<Metrics>,
}

struct Metrics {
    limit: Gauge,
    in_flight: Gauge,
    drops: Counter,
}

/// Builds an [`AdaptiveLimit`].
#[derive(Debug)]
#[must_use]
pub struct AdaptiveLimitBuilder {
    algorithm: LimitAlgorithm,
    clock: Option<SharedClock>,
    name: Option<Arc<str>>,
}

impl AdaptiveLimitBuilder {
    /// The clock that times calls (default: [`SystemClock`](crate::SystemClock)).
    pub fn clock(mut self, clock: impl Into<SharedClock>) -> Self {
        self.clock = Some(clock.into());
        self
    }

    /// A name: the `name` label of `orchex_concurrency_limit` and the other
    /// `orchex_adaptive_limit_*` metrics. Without a name no metrics are
    /// recorded.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Checks the configuration and builds the limit at its initial value.
    pub fn build(self) -> Result<AdaptiveLimit, ConfigError> {
        self.algorithm.validate()?;
        let (initial, _, _) = self.algorithm.bounds();
        let metrics = instrument::wanted(self.name.as_deref()).then(|| {
            let label = || [("name", self.name.as_deref().unwrap_or_default().to_owned())];
            Metrics {
                limit: Gauge::new("orchex_concurrency_limit", &label()),
                in_flight: Gauge::new("orchex_adaptive_limit_in_flight", &label()),
                drops: Counter::new("orchex_adaptive_limit_drops_total", &label()),
            }
        });
        if let Some(metrics) = &metrics {
            metrics.limit.set(f64::from(initial));
        }
        Ok(AdaptiveLimit {
            inner: Arc::new(Inner {
                limit: CachePadded(AtomicU32::new(initial)),
                in_flight: CachePadded(AtomicU32::new(0)),
                state: Mutex::new(State::new(self.algorithm, f64::from(initial))),
                notify: Notify::new(),
                watch: watch::channel(initial).0,
                changes: broadcast::channel(64).0,
                clock: self.clock.unwrap_or_default(),
                name: self.name,
                metrics,
            }),
        })
    }
}

impl AdaptiveLimit {
    /// A limit with the system clock and no name.
    pub fn new(algorithm: LimitAlgorithm) -> Result<Self, ConfigError> {
        Self::builder(algorithm).build()
    }

    /// A builder, for a clock or a name.
    pub fn builder(algorithm: LimitAlgorithm) -> AdaptiveLimitBuilder {
        AdaptiveLimitBuilder {
            algorithm,
            clock: None,
            name: None,
        }
    }

    /// Takes a token if fewer calls than the limit are in flight.
    pub fn try_acquire(&self) -> Result<LimitToken, LimitError> {
        let inner = &*self.inner;
        let mut in_flight = inner.in_flight.load(Ordering::Relaxed);
        loop {
            let limit = inner.limit.load(Ordering::Acquire);
            if in_flight >= limit {
                return Err(LimitError::LimitReached { limit });
            }
            match inner.in_flight.compare_exchange_weak(
                in_flight,
                in_flight + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    if let Some(metrics) = &inner.metrics {
                        metrics.in_flight.increment(1.0);
                    }
                    return Ok(LimitToken {
                        limit: self.clone(),
                        start: inner.clock.now(),
                        in_flight: in_flight + 1,
                        done: false,
                    });
                }
                Err(actual) => in_flight = actual,
            }
        }
    }

    /// Takes a token, waiting until a call finishes or the limit grows.
    pub async fn acquire(&self) -> LimitToken {
        loop {
            if let Ok(token) = self.try_acquire() {
                return token;
            }
            let notified = self.inner.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Ok(token) = self.try_acquire() {
                return token;
            }
            notified.await;
        }
    }

    /// The current limit.
    pub fn current(&self) -> u32 {
        self.inner.limit.load(Ordering::Acquire)
    }

    /// Calls in flight.
    pub fn in_flight(&self) -> u32 {
        self.inner.in_flight.load(Ordering::Acquire)
    }

    /// Watches the limit: the receiver always holds the latest value.
    pub fn subscribe(&self) -> watch::Receiver<u32> {
        self.inner.watch.subscribe()
    }

    /// Receives every change of the limit.
    pub fn changes(&self) -> broadcast::Receiver<LimitChange> {
        self.inner.changes.subscribe()
    }

    /// The limit's name.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// The current state.
    pub fn snapshot(&self) -> AdaptiveLimitSnapshot {
        let state = lock(&self.inner.state);
        AdaptiveLimitSnapshot {
            limit: self.current(),
            estimate: state.limit(),
            in_flight: self.in_flight(),
            algorithm: state.algorithm(),
        }
    }

    /// Switches to another algorithm or settings, keeping the current limit
    /// (clamped to the new bounds) and, for the same algorithm, its latency
    /// history. Tokens in flight stay valid.
    pub fn reconfigure(&self, algorithm: LimitAlgorithm) -> Result<(), ConfigError> {
        algorithm.validate()?;
        let mut state = lock(&self.inner.state);
        state.reconfigure(algorithm);
        let estimate = state.limit();
        self.inner.publish(estimate);
        Ok(())
    }

    /// Feeds one sample: `latency` of a call that began with `in_flight`
    /// calls in flight (itself included). Tokens do this for you; call it
    /// directly when you measure calls some other way.
    pub fn record(&self, latency: Duration, in_flight: u32, outcome: LimitOutcome) {
        let inner = &*self.inner;
        if outcome == LimitOutcome::Ignored {
            return;
        }
        if outcome == LimitOutcome::Dropped
            && let Some(metrics) = &inner.metrics
        {
            metrics.drops.increment(1);
        }
        let mut state = lock(&inner.state);
        let estimate = state.update(latency, in_flight, outcome == LimitOutcome::Dropped);
        inner.publish(estimate);
    }

    fn release(&self) {
        let inner = &*self.inner;
        inner.in_flight.fetch_sub(1, Ordering::AcqRel);
        if let Some(metrics) = &inner.metrics {
            metrics.in_flight.decrement(1.0);
        }
        inner.notify.notify_one();
    }
}

impl Inner {
    /// Publishes the integer limit if it changed; the caller holds the
    /// state lock, which orders publications.
    fn publish(&self, estimate: f64) {
        // The estimate is clamped to [min, max], both u32.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let next = estimate.floor().max(1.0) as u32;
        let previous = self.limit.swap(next, Ordering::AcqRel);
        if previous == next {
            return;
        }
        self.watch.send_replace(next);
        if let Some(metrics) = &self.metrics {
            metrics.limit.set(f64::from(next));
        }
        if self.changes.receiver_count() > 0 {
            let change = LimitChange {
                name: self.name.clone(),
                from: previous,
                to: next,
                at: self.clock.now(),
            };
            // An error only means the receivers went away meanwhile.
            let _ = self.changes.send(change);
        }
        if next > previous {
            self.notify.notify_waiters();
        }
    }
}

impl fmt::Debug for AdaptiveLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimit")
            .field("name", &self.inner.name)
            .field("limit", &self.current())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

/// One admitted call. Report how it went with [`success`](Self::success),
/// [`dropped`](Self::dropped) or [`ignore`](Self::ignore) (dropping the
/// token ignores it); the latency is measured from the token's creation.
#[must_use = "a dropped token is counted as ignored"]
pub struct LimitToken {
    limit: AdaptiveLimit,
    start: Timestamp,
    in_flight: u32,
    done: bool,
}

impl LimitToken {
    /// The call completed normally.
    pub fn success(self) {
        self.finish(LimitOutcome::Success);
    }

    /// The call failed from overload.
    pub fn dropped(self) {
        self.finish(LimitOutcome::Dropped);
    }

    /// The call says nothing about load.
    pub fn ignore(self) {
        self.finish(LimitOutcome::Ignored);
    }

    /// Reports `outcome`.
    pub fn finish(mut self, outcome: LimitOutcome) {
        self.done = true;
        let latency = self
            .limit
            .inner
            .clock
            .now()
            .saturating_duration_since(self.start);
        self.limit.release();
        self.limit.record(latency, self.in_flight, outcome);
    }

    /// Calls in flight when this one was admitted (itself included).
    pub fn in_flight_at_start(&self) -> u32 {
        self.in_flight
    }
}

impl Drop for LimitToken {
    fn drop(&mut self) {
        if !self.done {
            self.limit.release();
        }
    }
}

impl fmt::Debug for LimitToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LimitToken")
            .field("start", &self.start)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn aimd(initial: u32, min: u32, max: u32) -> (AdaptiveLimit, ManualClock) {
        let clock = ManualClock::new();
        let limit =
            AdaptiveLimit::builder(LimitAlgorithm::Aimd(AimdConfig::new(initial, min, max)))
                .clock(clock.clone())
                .build()
                .unwrap();
        (limit, clock)
    }

    #[test]
    fn limit_bounds_admission() {
        let (limit, _clock) = aimd(2, 1, 4);
        let a = limit.try_acquire().unwrap();
        let _b = limit.try_acquire().unwrap();
        assert_eq!(
            limit.try_acquire().unwrap_err(),
            LimitError::LimitReached { limit: 2 }
        );
        a.ignore();
        assert_eq!(limit.in_flight(), 1);
        assert_eq!(limit.current(), 2, "ignored: no change");
    }

    #[test]
    fn every_change_is_published() {
        let (limit, _clock) = aimd(2, 1, 10);
        let mut changes = limit.changes();
        let watch = limit.subscribe();
        for _ in 0..3 {
            let tokens: Vec<_> = (0..limit.current())
                .map(|_| limit.try_acquire().unwrap())
                .collect();
            for token in tokens {
                token.success();
            }
        }
        let seen: Vec<(u32, u32)> = std::iter::from_fn(|| changes.try_recv().ok())
            .map(|c| (c.from, c.to))
            .collect();
        assert!(!seen.is_empty());
        for pair in seen.windows(2) {
            assert_eq!(pair[0].1, pair[1].0, "changes chain: {seen:?}");
        }
        assert_eq!(seen.last().map(|c| c.1), Some(limit.current()));
        assert_eq!(*watch.borrow(), limit.current());
    }

    #[test]
    fn limit_stays_within_bounds() {
        let (limit, _clock) = aimd(5, 3, 6);
        for _ in 0..20 {
            limit.record(Duration::from_millis(1), 6, LimitOutcome::Success);
        }
        assert_eq!(limit.current(), 6);
        for _ in 0..20 {
            limit.record(Duration::from_millis(1), 6, LimitOutcome::Dropped);
        }
        assert_eq!(limit.current(), 3);
    }

    #[test]
    fn token_measures_latency_with_the_clock() {
        let clock = ManualClock::new();
        let limit = AdaptiveLimit::builder(LimitAlgorithm::Aimd(
            AimdConfig::new(4, 1, 8).timeout(Duration::from_secs(1)),
        ))
        .clock(clock.clone())
        .build()
        .unwrap();
        let token = limit.try_acquire().unwrap();
        clock.advance(Duration::from_secs(2));
        token.success(); // slower than the timeout: counts as a drop
        assert_eq!(limit.current(), 3);
    }

    #[test]
    fn reconfigure_keeps_limit_and_tokens() {
        let (limit, _clock) = aimd(8, 1, 10);
        let token = limit.try_acquire().unwrap();
        limit
            .reconfigure(LimitAlgorithm::Gradient(GradientConfig::new(2, 1, 5)))
            .unwrap();
        assert_eq!(limit.current(), 5, "clamped to the new max");
        assert_eq!(limit.in_flight(), 1);
        token.success();
        assert!(matches!(
            limit.snapshot().algorithm,
            LimitAlgorithm::Gradient(_)
        ));
        assert!(
            limit
                .reconfigure(LimitAlgorithm::Aimd(AimdConfig::new(1, 2, 3)))
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_waits_for_a_free_slot() {
        let (limit, _clock) = aimd(1, 1, 1);
        let held = limit.try_acquire().unwrap();
        let waiter = tokio::spawn({
            let limit = limit.clone();
            async move { limit.acquire().await.in_flight_at_start() }
        });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        held.success();
        assert_eq!(waiter.await.unwrap(), 1);
        assert_eq!(limit.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn acquire_wakes_when_the_limit_grows() {
        let (limit, _clock) = aimd(1, 1, 4);
        let held = limit.try_acquire().unwrap();
        let waiter = tokio::spawn({
            let limit = limit.clone();
            async move { limit.acquire().await.ignore() }
        });
        tokio::task::yield_now().await;
        limit
            .reconfigure(LimitAlgorithm::Aimd(AimdConfig::new(2, 2, 4)))
            .unwrap();
        waiter.await.unwrap();
        held.ignore();
    }
}
