//! [`Bulkhead`]: at most N calls at once, with an optional bounded FIFO
//! queue of waiters.
//!
//! The whole state — permits in use, waiters queued and the limit — is one
//! `AtomicU64`, so taking a permit is one compare-and-swap and giving it
//! back one `fetch_sub`; the queue's mutex is only touched when somebody
//! waits. While anybody waits, new callers do not jump the queue: a freed
//! permit goes to the oldest waiter.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use crate::error::{ConfigError, at_least, within};
use crate::instrument::{self, Counter, Gauge};
use crate::util::{CachePadded, lock, nanos};

const FIELD_BITS: u32 = 21;
const FIELD_MASK: u64 = (1 << FIELD_BITS) - 1;
const ONE_IN_USE: u64 = 1;
const ONE_QUEUED: u64 = 1 << FIELD_BITS;
const MAX_SHIFT: u32 = 2 * FIELD_BITS;

/// The largest `max_concurrent` and `max_queue` (2^21 − 1).
pub const MAX_BULKHEAD_SIZE: u32 = (1 << FIELD_BITS) - 1;

#[inline]
const fn in_use(state: u64) -> u64 {
    state & FIELD_MASK
}

#[inline]
const fn queued(state: u64) -> u64 {
    (state >> FIELD_BITS) & FIELD_MASK
}

#[inline]
const fn limit(state: u64) -> u64 {
    (state >> MAX_SHIFT) & FIELD_MASK
}

/// The settings of a [`Bulkhead`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(clippy::struct_field_names)] // resilience4j's names
pub struct BulkheadConfig {
    max_concurrent: u32,
    max_queue: u32,
    max_wait: Option<Duration>,
}

impl BulkheadConfig {
    /// At most `max_concurrent` calls at once; no waiting.
    pub const fn new(max_concurrent: u32) -> Self {
        Self {
            max_concurrent,
            max_queue: 0,
            max_wait: None,
        }
    }

    /// Lets up to `max_queue` callers of [`Bulkhead::acquire`] wait, in
    /// FIFO order, each for at most `max_wait` (`None`: as long as it takes).
    #[must_use]
    pub const fn queue(mut self, max_queue: u32, max_wait: Option<Duration>) -> Self {
        self.max_queue = max_queue;
        self.max_wait = max_wait;
        self
    }

    /// The most calls at once.
    pub const fn max_concurrent(&self) -> u32 {
        self.max_concurrent
    }

    /// The most waiters.
    pub const fn max_queue(&self) -> u32 {
        self.max_queue
    }

    /// The longest wait.
    pub const fn max_wait(&self) -> Option<Duration> {
        self.max_wait
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        within(
            "bulkhead.max_concurrent",
            self.max_concurrent,
            1,
            MAX_BULKHEAD_SIZE,
        )?;
        within("bulkhead.max_queue", self.max_queue, 0, MAX_BULKHEAD_SIZE)?;
        if let Some(wait) = self.max_wait {
            at_least("bulkhead.max_wait_nanos", nanos(wait), 1)?;
        }
        Ok(())
    }
}

/// A call refused by a bulkhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BulkheadError {
    /// Every permit is taken and the queue (if any) is full.
    #[error("bulkhead is full: {max_concurrent} calls in flight and {queued} waiting")]
    Full {
        /// The limit.
        max_concurrent: u32,
        /// Waiters at the time.
        queued: u32,
    },
    /// Waited the configured maximum without getting a permit.
    #[error("bulkhead: no permit within {waited:?}")]
    Timeout {
        /// How long it waited.
        waited: Duration,
    },
}

/// Limits concurrent calls. Clones share the permits.
///
/// ```
/// use orchex_resilience::{Bulkhead, BulkheadConfig};
///
/// let bulkhead = Bulkhead::new(BulkheadConfig::new(2))?;
/// let a = bulkhead.try_acquire().unwrap();
/// let _b = bulkhead.try_acquire().unwrap();
/// assert!(bulkhead.try_acquire().is_err());
/// drop(a);
/// assert!(bulkhead.try_acquire().is_ok());
///
/// // Raising the limit at run time keeps the permits in use.
/// bulkhead.set_max_concurrent(3)?;
/// assert_eq!(bulkhead.in_flight(), 1);
/// # Ok::<(), orchex_resilience::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

struct Inner {
    state: CachePadded<AtomicU64>,
    queue: Mutex<VecDeque<Arc<Waiter>>>,
    max_queue: AtomicU32,
    max_wait: AtomicU64,
    name: Option<Arc<str>>,
    metrics: Option<Metrics>,
}

struct Metrics {
    in_flight: Gauge,
    queued: Gauge,
    max_concurrent: Gauge,
    full: Counter,
    timeout: Counter,
}

#[derive(Default)]
struct Waiter {
    granted: AtomicBool,
    waker: Mutex<Option<Waker>>,
}

impl Waiter {
    fn grant(&self) {
        self.granted.store(true, Ordering::Release);
        if let Some(waker) = lock(&self.waker).take() {
            waker.wake();
        }
    }
}

/// Builds a [`Bulkhead`].
#[derive(Debug)]
#[must_use]
pub struct BulkheadBuilder {
    config: BulkheadConfig,
    name: Option<Arc<str>>,
}

impl BulkheadBuilder {
    /// A name: the `name` label of the `orchex_bulkhead_*` metrics. Without
    /// a name no metrics are recorded.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Checks the configuration and builds the bulkhead.
    pub fn build(self) -> Result<Bulkhead, ConfigError> {
        self.config.validate()?;
        let metrics = instrument::wanted(self.name.as_deref()).then(|| {
            let label = || [("name", self.name.as_deref().unwrap_or_default().to_owned())];
            let rejected = |reason: &str| {
                Counter::new(
                    "orchex_bulkhead_rejections_total",
                    &[
                        ("name", self.name.as_deref().unwrap_or_default().to_owned()),
                        ("reason", reason.to_owned()),
                    ],
                )
            };
            Metrics {
                in_flight: Gauge::new("orchex_bulkhead_in_flight", &label()),
                queued: Gauge::new("orchex_bulkhead_queue_depth", &label()),
                max_concurrent: Gauge::new("orchex_bulkhead_max_concurrent", &label()),
                full: rejected("full"),
                timeout: rejected("timeout"),
            }
        });
        if let Some(metrics) = &metrics {
            metrics
                .max_concurrent
                .set(f64::from(self.config.max_concurrent));
        }
        Ok(Bulkhead {
            inner: Arc::new(Inner {
                state: CachePadded(AtomicU64::new(
                    u64::from(self.config.max_concurrent) << MAX_SHIFT,
                )),
                queue: Mutex::new(VecDeque::new()),
                max_queue: AtomicU32::new(self.config.max_queue),
                max_wait: AtomicU64::new(self.config.max_wait.map_or(u64::MAX, nanos)),
                name: self.name,
                metrics,
            }),
        })
    }
}

/// A point-in-time view of a [`Bulkhead`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct BulkheadSnapshot {
    /// Permits in use.
    pub in_flight: u32,
    /// Callers waiting.
    pub queued: u32,
    /// The limit.
    pub max_concurrent: u32,
}

impl Bulkhead {
    /// A bulkhead without a name.
    pub fn new(config: BulkheadConfig) -> Result<Self, ConfigError> {
        Self::builder(config).build()
    }

    /// A builder, to give the bulkhead a name.
    pub fn builder(config: BulkheadConfig) -> BulkheadBuilder {
        BulkheadBuilder { config, name: None }
    }

    /// Takes a permit now if one is free and nobody is waiting.
    #[inline]
    pub fn try_acquire(&self) -> Result<BulkheadPermit<'_>, BulkheadError> {
        self.inner.try_take()?;
        Ok(BulkheadPermit { inner: &self.inner })
    }

    /// Like [`try_acquire`](Self::try_acquire), with a permit that owns a
    /// handle to the bulkhead.
    pub fn try_acquire_owned(&self) -> Result<OwnedBulkheadPermit, BulkheadError> {
        self.inner.try_take()?;
        Ok(OwnedBulkheadPermit {
            bulkhead: self.clone(),
        })
    }

    /// Takes a permit, waiting in the queue (FIFO) if there is one. Fails
    /// at once when the queue is full, and after the configured maximum
    /// wait. Dropping the future leaves the queue.
    pub fn acquire(&self) -> Acquire {
        Acquire {
            bulkhead: self.clone(),
            waiter: None,
            sleep: None,
            started: None,
        }
    }

    /// Runs `f` under a permit (waiting for one as [`acquire`](Self::acquire)
    /// does).
    pub async fn call<F, Fut>(&self, f: F) -> Result<Fut::Output, BulkheadError>
    where
        F: FnOnce() -> Fut,
        Fut: Future,
    {
        let _permit = self.acquire().await?;
        Ok(f().await)
    }

    /// Changes the limit. Permits in use stay valid: lowering the limit
    /// below them only stops new calls until enough finish; raising it
    /// hands the new permits to waiters first.
    pub fn set_max_concurrent(&self, max_concurrent: u32) -> Result<(), ConfigError> {
        within(
            "bulkhead.max_concurrent",
            max_concurrent,
            1,
            MAX_BULKHEAD_SIZE,
        )?;
        let inner = &*self.inner;
        let new_limit = u64::from(max_concurrent) << MAX_SHIFT;
        // fetch_update cannot fail: the closure always returns Some.
        let _ = inner
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                Some((s & !(FIELD_MASK << MAX_SHIFT)) | new_limit)
            });
        if let Some(metrics) = &inner.metrics {
            metrics.max_concurrent.set(f64::from(max_concurrent));
        }
        inner.drain();
        Ok(())
    }

    /// Applies a new configuration, keeping permits and waiters (waiters
    /// beyond a smaller queue keep waiting; new ones are refused).
    pub fn reconfigure(&self, config: BulkheadConfig) -> Result<(), ConfigError> {
        config.validate()?;
        self.inner
            .max_queue
            .store(config.max_queue, Ordering::Relaxed);
        self.inner
            .max_wait
            .store(config.max_wait.map_or(u64::MAX, nanos), Ordering::Relaxed);
        self.set_max_concurrent(config.max_concurrent)
    }

    /// Permits in use.
    pub fn in_flight(&self) -> u32 {
        self.snapshot().in_flight
    }

    /// Permits free now (zero while anybody waits).
    pub fn available(&self) -> u32 {
        let s = self.snapshot();
        if s.queued > 0 {
            0
        } else {
            s.max_concurrent.saturating_sub(s.in_flight)
        }
    }

    /// Callers waiting.
    pub fn queued(&self) -> u32 {
        self.snapshot().queued
    }

    /// The limit.
    pub fn max_concurrent(&self) -> u32 {
        self.snapshot().max_concurrent
    }

    /// The current configuration.
    pub fn config(&self) -> BulkheadConfig {
        let max_wait = self.inner.max_wait.load(Ordering::Relaxed);
        BulkheadConfig {
            max_concurrent: self.max_concurrent(),
            max_queue: self.inner.max_queue.load(Ordering::Relaxed),
            max_wait: (max_wait != u64::MAX).then(|| Duration::from_nanos(max_wait)),
        }
    }

    /// The current counts.
    pub fn snapshot(&self) -> BulkheadSnapshot {
        let s = self.inner.state.load(Ordering::Acquire);
        // Each field has 21 bits.
        #[allow(clippy::cast_possible_truncation)]
        BulkheadSnapshot {
            in_flight: in_use(s) as u32,
            queued: queued(s) as u32,
            max_concurrent: limit(s) as u32,
        }
    }

    /// The bulkhead's name.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }
}

impl fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bulkhead")
            .field("name", &self.inner.name)
            .field("state", &self.snapshot())
            .finish()
    }
}

// === impl Inner ===

impl Inner {
    #[inline]
    fn try_take(&self) -> Result<(), BulkheadError> {
        self.try_take_quietly().map_err(|s| self.full(s))
    }

    /// Takes a permit if one is free and nobody waits; else the state seen.
    #[inline]
    fn try_take_quietly(&self) -> Result<(), u64> {
        let mut s = self.state.load(Ordering::Relaxed);
        loop {
            if queued(s) != 0 || in_use(s) >= limit(s) {
                return Err(s);
            }
            match self.state.compare_exchange_weak(
                s,
                s + ONE_IN_USE,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.taken();
                    return Ok(());
                }
                Err(actual) => s = actual,
            }
        }
    }

    #[inline]
    fn taken(&self) {
        if let Some(metrics) = &self.metrics {
            metrics.in_flight.increment(1.0);
        }
    }

    #[cold]
    fn full(&self, s: u64) -> BulkheadError {
        if let Some(metrics) = &self.metrics {
            metrics.full.increment(1);
        }
        #[allow(clippy::cast_possible_truncation)]
        BulkheadError::Full {
            max_concurrent: limit(s) as u32,
            queued: queued(s) as u32,
        }
    }

    #[inline]
    fn release(&self) {
        let previous = self.state.fetch_sub(ONE_IN_USE, Ordering::AcqRel);
        if let Some(metrics) = &self.metrics {
            metrics.in_flight.decrement(1.0);
        }
        if queued(previous) != 0 {
            self.drain();
        }
    }

    /// Hands free permits to waiters, oldest first.
    #[cold]
    fn drain(&self) {
        let mut queue = lock(&self.queue);
        loop {
            let s = self.state.load(Ordering::Acquire);
            if queued(s) == 0 || in_use(s) >= limit(s) {
                return;
            }
            // Queue length and the queued count change together under this
            // lock, so a counted waiter is in the queue.
            let Some(front) = queue.front() else { return };
            if self
                .state
                .compare_exchange(
                    s,
                    s + ONE_IN_USE - ONE_QUEUED,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
            {
                front.grant();
                queue.pop_front();
                if let Some(metrics) = &self.metrics {
                    metrics.queued.decrement(1.0);
                    metrics.in_flight.increment(1.0);
                }
            }
        }
    }

    /// Takes a permit (`Ok(true)`) or joins the queue (`Ok(false)`).
    fn take_or_enqueue(&self, waiter: &Arc<Waiter>) -> Result<bool, BulkheadError> {
        let max_queue = u64::from(self.max_queue.load(Ordering::Relaxed));
        let mut queue = lock(&self.queue);
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            let (next, takes) = if queued(s) == 0 && in_use(s) < limit(s) {
                (s + ONE_IN_USE, true)
            } else if queued(s) < max_queue {
                (s + ONE_QUEUED, false)
            } else {
                return Err(self.full(s));
            };
            match self
                .state
                .compare_exchange_weak(s, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if takes {
                        self.taken();
                    } else {
                        queue.push_back(Arc::clone(waiter));
                        if let Some(metrics) = &self.metrics {
                            metrics.queued.increment(1.0);
                        }
                    }
                    return Ok(takes);
                }
                Err(actual) => s = actual,
            }
        }
    }

    /// Leaves the queue. Returns true if the waiter had been granted a
    /// permit meanwhile (the caller then owns it).
    fn leave(&self, waiter: &Arc<Waiter>) -> bool {
        let mut queue = lock(&self.queue);
        if waiter.granted.load(Ordering::Acquire) {
            return true;
        }
        if let Some(index) = queue.iter().position(|w| Arc::ptr_eq(w, waiter)) {
            queue.remove(index);
            self.state.fetch_sub(ONE_QUEUED, Ordering::AcqRel);
            if let Some(metrics) = &self.metrics {
                metrics.queued.decrement(1.0);
            }
        }
        false
    }
}

/// The future of [`Bulkhead::acquire`].
#[must_use = "futures do nothing unless polled"]
pub struct Acquire {
    bulkhead: Bulkhead,
    waiter: Option<Arc<Waiter>>,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    started: Option<tokio::time::Instant>,
}

impl Future for Acquire {
    type Output = Result<OwnedBulkheadPermit, BulkheadError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let inner = &*this.bulkhead.inner;
        let waiter = if let Some(waiter) = &this.waiter {
            Arc::clone(waiter)
        } else {
            {
                if inner.try_take_quietly().is_ok() {
                    return Poll::Ready(Ok(OwnedBulkheadPermit {
                        bulkhead: this.bulkhead.clone(),
                    }));
                }
                let waiter = Arc::new(Waiter::default());
                if inner.take_or_enqueue(&waiter)? {
                    return Poll::Ready(Ok(OwnedBulkheadPermit {
                        bulkhead: this.bulkhead.clone(),
                    }));
                }
                let max_wait = inner.max_wait.load(Ordering::Relaxed);
                if max_wait != u64::MAX {
                    this.sleep = Some(Box::pin(tokio::time::sleep(Duration::from_nanos(max_wait))));
                    this.started = Some(tokio::time::Instant::now());
                }
                this.waiter = Some(Arc::clone(&waiter));
                waiter
            }
        };
        if waiter.granted.load(Ordering::Acquire) {
            this.waiter = None;
            return Poll::Ready(Ok(OwnedBulkheadPermit {
                bulkhead: this.bulkhead.clone(),
            }));
        }
        *lock(&waiter.waker) = Some(cx.waker().clone());
        if waiter.granted.load(Ordering::Acquire) {
            this.waiter = None;
            return Poll::Ready(Ok(OwnedBulkheadPermit {
                bulkhead: this.bulkhead.clone(),
            }));
        }
        if let Some(sleep) = &mut this.sleep
            && sleep.as_mut().poll(cx).is_ready()
        {
            this.waiter = None;
            if inner.leave(&waiter) {
                return Poll::Ready(Ok(OwnedBulkheadPermit {
                    bulkhead: this.bulkhead.clone(),
                }));
            }
            if let Some(metrics) = &inner.metrics {
                metrics.timeout.increment(1);
            }
            let waited = this.started.map_or(Duration::ZERO, |s| s.elapsed());
            return Poll::Ready(Err(BulkheadError::Timeout { waited }));
        }
        Poll::Pending
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        if let Some(waiter) = self.waiter.take()
            && self.bulkhead.inner.leave(&waiter)
        {
            // Granted but never handed out: give the permit back.
            self.bulkhead.inner.release();
        }
    }
}

impl fmt::Debug for Acquire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("bulkhead", &self.bulkhead)
            .field("queued", &self.waiter.is_some())
            .finish_non_exhaustive()
    }
}

/// A permit from [`Bulkhead::try_acquire`]; dropping it frees the slot.
#[must_use = "dropping the permit frees it at once"]
pub struct BulkheadPermit<'a> {
    inner: &'a Inner,
}

impl Drop for BulkheadPermit<'_> {
    #[inline]
    fn drop(&mut self) {
        self.inner.release();
    }
}

impl fmt::Debug for BulkheadPermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadPermit").finish_non_exhaustive()
    }
}

/// A permit that owns a handle to its bulkhead; dropping it frees the slot.
#[must_use = "dropping the permit frees it at once"]
pub struct OwnedBulkheadPermit {
    bulkhead: Bulkhead,
}

impl OwnedBulkheadPermit {
    /// The bulkhead this permit belongs to.
    pub fn bulkhead(&self) -> &Bulkhead {
        &self.bulkhead
    }
}

impl Drop for OwnedBulkheadPermit {
    fn drop(&mut self) {
        self.bulkhead.inner.release();
    }
}

impl fmt::Debug for OwnedBulkheadPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedBulkheadPermit")
            .field("bulkhead", &self.bulkhead)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued_bulkhead(max: u32, queue: u32, wait: Option<Duration>) -> Bulkhead {
        Bulkhead::new(BulkheadConfig::new(max).queue(queue, wait)).unwrap()
    }

    #[test]
    fn limits_concurrency() {
        let bulkhead = Bulkhead::new(BulkheadConfig::new(2)).unwrap();
        let a = bulkhead.try_acquire().unwrap();
        let b = bulkhead.try_acquire_owned().unwrap();
        assert_eq!(
            bulkhead.try_acquire().unwrap_err(),
            BulkheadError::Full {
                max_concurrent: 2,
                queued: 0
            }
        );
        assert_eq!(bulkhead.available(), 0);
        drop(a);
        drop(b);
        assert_eq!(bulkhead.available(), 2);
    }

    #[test]
    fn validation() {
        assert!(Bulkhead::new(BulkheadConfig::new(0)).is_err());
        assert!(Bulkhead::new(BulkheadConfig::new(MAX_BULKHEAD_SIZE + 1)).is_err());
        let err = Bulkhead::new(BulkheadConfig::new(1))
            .unwrap()
            .set_max_concurrent(0)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("bulkhead.max_concurrent: must be between 1 and {MAX_BULKHEAD_SIZE}, got 0")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_are_served_in_order() {
        let bulkhead = queued_bulkhead(1, 10, None);
        let first = bulkhead.try_acquire_owned().unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for i in 0..5 {
            let bulkhead = bulkhead.clone();
            let order = Arc::clone(&order);
            tasks.push(tokio::spawn(async move {
                let _permit = bulkhead.acquire().await.unwrap();
                order.lock().unwrap().push(i);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }));
            // Let each task join the queue before the next one.
            tokio::task::yield_now().await;
        }
        assert_eq!(bulkhead.queued(), 5);
        // No barging while anybody waits.
        drop(first);
        assert!(bulkhead.try_acquire().is_err());
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
        assert_eq!(
            bulkhead.snapshot(),
            BulkheadSnapshot {
                in_flight: 0,
                queued: 0,
                max_concurrent: 1
            }
        );
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_and_timeout() {
        let bulkhead = queued_bulkhead(1, 1, Some(Duration::from_secs(2)));
        let _held = bulkhead.try_acquire_owned().unwrap();
        let waiting = tokio::spawn({
            let bulkhead = bulkhead.clone();
            async move { bulkhead.acquire().await }
        });
        tokio::task::yield_now().await;
        assert!(matches!(
            bulkhead.acquire().await,
            Err(BulkheadError::Full { queued: 1, .. })
        ));
        let result = waiting.await.unwrap();
        assert_eq!(
            result.unwrap_err(),
            BulkheadError::Timeout {
                waited: Duration::from_secs(2)
            }
        );
        assert_eq!(bulkhead.queued(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn cancelled_waiter_leaves_the_queue() {
        let bulkhead = queued_bulkhead(1, 4, None);
        let held = bulkhead.try_acquire_owned().unwrap();
        let waiting = tokio::spawn({
            let bulkhead = bulkhead.clone();
            async move { bulkhead.acquire().await.map(drop) }
        });
        tokio::task::yield_now().await;
        assert_eq!(bulkhead.queued(), 1);
        waiting.abort();
        let _ = waiting.await;
        assert_eq!(bulkhead.queued(), 0);
        drop(held);
        assert_eq!(bulkhead.in_flight(), 0);
        assert_eq!(bulkhead.available(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn raising_the_limit_wakes_waiters_and_keeps_permits() {
        let bulkhead = queued_bulkhead(1, 4, None);
        let held = bulkhead.try_acquire_owned().unwrap();
        let waiting = tokio::spawn({
            let bulkhead = bulkhead.clone();
            async move { bulkhead.acquire().await }
        });
        tokio::task::yield_now().await;
        bulkhead.set_max_concurrent(2).unwrap();
        let permit = waiting.await.unwrap().unwrap();
        assert_eq!(bulkhead.in_flight(), 2);
        // Lowering below the permits in use keeps them.
        bulkhead.set_max_concurrent(1).unwrap();
        assert_eq!(bulkhead.in_flight(), 2);
        drop(held);
        assert!(bulkhead.try_acquire().is_err(), "still at the new limit");
        drop(permit);
        assert!(bulkhead.try_acquire().is_ok());
    }

    #[tokio::test]
    async fn call_runs_under_a_permit() {
        let bulkhead = Bulkhead::new(BulkheadConfig::new(1)).unwrap();
        let inner = bulkhead.clone();
        let value = bulkhead
            .call(|| async move { inner.in_flight() })
            .await
            .unwrap();
        assert_eq!(value, 1);
        assert_eq!(bulkhead.in_flight(), 0);
    }

    #[test]
    fn reconfigure_keeps_permits() {
        let bulkhead = Bulkhead::new(BulkheadConfig::new(3)).unwrap();
        let _a = bulkhead.try_acquire().unwrap();
        bulkhead
            .reconfigure(BulkheadConfig::new(5).queue(2, Some(Duration::from_secs(1))))
            .unwrap();
        assert_eq!(bulkhead.in_flight(), 1);
        assert_eq!(
            bulkhead.config(),
            BulkheadConfig::new(5).queue(2, Some(Duration::from_secs(1)))
        );
    }

    #[test]
    fn threads_never_exceed_the_limit() {
        let bulkhead = Bulkhead::new(BulkheadConfig::new(3)).unwrap();
        let peak = Arc::new(AtomicU64::new(0));
        let current = Arc::new(AtomicU64::new(0));
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| {
                    for _ in 0..2_000 {
                        if let Ok(_permit) = bulkhead.try_acquire() {
                            let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            current.fetch_sub(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert_eq!(bulkhead.in_flight(), 0);
    }
}
