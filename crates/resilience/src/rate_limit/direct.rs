//! [`RateLimiter`]: a single GCRA bucket.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::gcra::{self, ParamsCell};
use super::{Quota, RateLimitError};
use crate::clock::{SharedClock, Timestamp};
use crate::error::ConfigError;
use crate::instrument::{self, Counter};
use crate::util::{CachePadded, lock, nanos, random_up_to};

/// A rate limiter: one bucket shared by every clone.
///
/// `check` costs one clock read, three loads and one compare-and-swap, and
/// never allocates or blocks.
///
/// ```
/// use std::time::Duration;
/// use orchex_resilience::{ManualClock, Quota, RateLimiter};
///
/// let clock = ManualClock::new();
/// let limiter = RateLimiter::builder(Quota::per_second(2)).clock(clock.clone()).build()?;
/// assert!(limiter.check(1).is_ok());
/// assert!(limiter.check(1).is_ok());
/// let refused = limiter.check(1).unwrap_err();
/// assert_eq!(refused.wait_time(), Some(Duration::from_millis(500)));
/// clock.advance(Duration::from_millis(500));
/// assert!(limiter.check(1).is_ok());
/// # Ok::<(), orchex_resilience::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Inner>,
}

struct Inner {
    /// The theoretical arrival time, alone on its cache line.
    tat: CachePadded<AtomicU64>,
    params: ParamsCell,
    clock: SharedClock,
    /// The quota as configured; its lock also serialises parameter stores.
    quota: Mutex<Quota>,
    jitter: AtomicU64,
    name: Option<Arc<str>>,
    rejections: Option<Counter>,
}

/// Builds a [`RateLimiter`].
#[derive(Debug, Clone)]
#[must_use]
pub struct RateLimiterBuilder {
    quota: Quota,
    clock: Option<SharedClock>,
    name: Option<Arc<str>>,
    jitter: Duration,
}

impl RateLimiterBuilder {
    /// The clock (default: [`SystemClock`](crate::SystemClock)).
    pub fn clock(mut self, clock: impl Into<SharedClock>) -> Self {
        self.clock = Some(clock.into());
        self
    }

    /// A name: the `key` label of `orchex_rate_limiter_rejections_total`.
    /// Without a name no metrics are recorded.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// The most random delay [`RateLimiter::until_ready`] adds to each wait,
    /// so that waiters do not wake all at once (default: none).
    pub fn jitter(mut self, jitter: Duration) -> Self {
        self.jitter = jitter;
        self
    }

    /// Checks the quota and builds the limiter.
    pub fn build(self) -> Result<RateLimiter, ConfigError> {
        let params = self.quota.params()?;
        let rejections = instrument::wanted(self.name.as_deref()).then(|| {
            Counter::new(
                "orchex_rate_limiter_rejections_total",
                &[("key", self.name.as_deref().unwrap_or_default().to_owned())],
            )
        });
        Ok(RateLimiter {
            inner: Arc::new(Inner {
                tat: CachePadded(AtomicU64::new(0)),
                params: ParamsCell::new(params),
                clock: self.clock.unwrap_or_default(),
                quota: Mutex::new(self.quota),
                jitter: AtomicU64::new(nanos(self.jitter)),
                name: self.name,
                rejections,
            }),
        })
    }
}

/// A point-in-time view of a [`RateLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RateLimiterSnapshot {
    /// The configured quota.
    pub quota: Quota,
    /// Whole units of cost that would be admitted now.
    pub available: u32,
    /// When the bucket is full again.
    pub full_at: Timestamp,
    /// The time of the snapshot.
    pub at: Timestamp,
}

impl RateLimiter {
    /// A limiter with the system clock and no name.
    pub fn new(quota: Quota) -> Result<Self, ConfigError> {
        Self::builder(quota).build()
    }

    /// A builder for a limiter with a custom clock, name or jitter.
    pub fn builder(quota: Quota) -> RateLimiterBuilder {
        RateLimiterBuilder {
            quota,
            clock: None,
            name: None,
            jitter: Duration::ZERO,
        }
    }

    /// Admits a call of `cost` units now, or says when it could be.
    ///
    /// A cost of zero is always admitted and consumes nothing. A cost above
    /// the burst fails with [`RateLimitError::InsufficientCapacity`].
    #[inline]
    pub fn check(&self, cost: u32) -> Result<(), RateLimitError> {
        let inner = &*self.inner;
        let now = inner.clock.now().as_nanos();
        let params = inner.params.load();
        let result = gcra::acquire(&inner.tat, &params, now, cost);
        if result.is_err() {
            inner.rejected();
        }
        result
    }

    /// What [`check`](Self::check) would answer now, without consuming.
    pub fn peek(&self, cost: u32) -> Result<(), RateLimitError> {
        let inner = &*self.inner;
        let now = inner.clock.now().as_nanos();
        gcra::peek(
            inner.tat.load(Ordering::Relaxed),
            &inner.params.load(),
            now,
            cost,
        )
    }

    /// Waits (with tokio's timer) until `cost` is admitted, and consumes it.
    ///
    /// With `max_wait`, gives up at once with
    /// [`RateLimitError::DeadlineExceeded`] when capacity will not be there
    /// within `max_wait` of the call; `None` waits as long as needed. Each
    /// sleep is lengthened by a random delay of up to the configured
    /// [jitter](RateLimiterBuilder::jitter), but never past the deadline.
    ///
    /// The clock must advance with tokio's timer: the system clock, or a
    /// [`TokioClock`](crate::TokioClock) under `tokio::time::pause`. With a
    /// [`ManualClock`](crate::ManualClock) nobody advances, this waits forever.
    pub async fn until_ready(
        &self,
        cost: u32,
        max_wait: Option<Duration>,
    ) -> Result<(), RateLimitError> {
        let deadline = max_wait.map(|wait| self.inner.clock.now() + wait);
        loop {
            match self.check(cost) {
                Ok(()) => return Ok(()),
                Err(RateLimitError::Limited(not_until)) => {
                    let jitter = random_up_to(Duration::from_nanos(
                        self.inner.jitter.load(Ordering::Relaxed),
                    ));
                    let mut sleep = not_until.wait_time() + jitter;
                    if let (Some(deadline), Some(max_wait)) = (deadline, max_wait) {
                        if not_until.ready_at() > deadline {
                            return Err(RateLimitError::DeadlineExceeded {
                                not_until,
                                max_wait,
                            });
                        }
                        sleep =
                            sleep.min(deadline.saturating_duration_since(not_until.decided_at()));
                    }
                    tokio::time::sleep(sleep).await;
                }
                Err(other) => return Err(other),
            }
        }
    }

    /// Replaces the quota, keeping the bucket's state: the units already
    /// used stay used (8 of 10 used becomes 8 of 20 used) and refill at
    /// the new rate.
    pub fn reconfigure(&self, quota: Quota) -> Result<(), ConfigError> {
        let params = quota.params()?;
        let inner = &*self.inner;
        let mut current = lock(&inner.quota);
        let old = inner.params.load();
        inner.params.store(params);
        gcra::rescale(&inner.tat, &old, &params, inner.clock.now().as_nanos());
        *current = quota;
        Ok(())
    }

    /// Changes the jitter of [`until_ready`](Self::until_ready).
    pub fn set_jitter(&self, jitter: Duration) {
        self.inner.jitter.store(nanos(jitter), Ordering::Relaxed);
    }

    /// Refills the bucket completely.
    pub fn reset(&self) {
        self.inner.tat.store(0, Ordering::Relaxed);
    }

    /// The current quota.
    pub fn quota(&self) -> Quota {
        *lock(&self.inner.quota)
    }

    /// The limiter's name, if it has one.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// The current state.
    pub fn snapshot(&self) -> RateLimiterSnapshot {
        let inner = &*self.inner;
        let now = inner.clock.now();
        let params = inner.params.load();
        let tat = inner.tat.load(Ordering::Relaxed);
        RateLimiterSnapshot {
            quota: self.quota(),
            available: gcra::available(tat, &params, now.as_nanos()),
            full_at: Timestamp::from_nanos(tat.max(now.as_nanos())),
            at: now,
        }
    }
}

impl Inner {
    #[inline]
    fn rejected(&self) {
        if let Some(counter) = &self.rejections {
            counter.increment(1);
        }
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("name", &self.inner.name)
            .field("quota", &self.quota())
            .field("tat", &self.inner.tat.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{ManualClock, TokioClock};

    fn limiter(quota: Quota) -> (RateLimiter, ManualClock) {
        let clock = ManualClock::new();
        (
            RateLimiter::builder(quota)
                .clock(clock.clone())
                .build()
                .unwrap(),
            clock,
        )
    }

    #[test]
    fn burst_then_steady_rate() {
        let (limiter, clock) = limiter(Quota::per_second(10).with_burst(3));
        for _ in 0..3 {
            limiter.check(1).unwrap();
        }
        let err = limiter.check(1).unwrap_err();
        assert_eq!(err.wait_time(), Some(Duration::from_millis(100)));
        clock.advance(Duration::from_millis(99));
        assert!(limiter.check(1).is_err());
        clock.advance(Duration::from_millis(1));
        limiter.check(1).unwrap();
    }

    #[test]
    fn hourly_quota_like_orchex() {
        // rateLimitPerHour = 10, burst = 10, cost 1 per job.
        let (limiter, clock) = limiter(Quota::per_hour(10));
        for _ in 0..10 {
            limiter.check(1).unwrap();
        }
        let err = limiter.check(1).unwrap_err();
        assert_eq!(err.wait_time(), Some(Duration::from_secs(360)));
        assert_eq!(err.ready_at(), Some(Timestamp::from_nanos(360_000_000_000)));
        clock.advance(Duration::from_secs(3600));
        assert_eq!(limiter.snapshot().available, 10);
    }

    #[test]
    fn peek_does_not_consume() {
        let (limiter, _clock) = limiter(Quota::per_minute(1));
        for _ in 0..5 {
            limiter.peek(1).unwrap();
        }
        limiter.check(1).unwrap();
        assert!(limiter.peek(1).is_err());
        assert!(matches!(
            limiter.peek(2),
            Err(RateLimitError::InsufficientCapacity { .. })
        ));
    }

    #[test]
    fn reconfigure_keeps_consumed_capacity() {
        let (limiter, clock) = limiter(Quota::per_second(4));
        for _ in 0..4 {
            limiter.check(1).unwrap();
        }
        limiter.reconfigure(Quota::per_second(8)).unwrap();
        // Four units stay used: four of the new eight are left...
        assert_eq!(limiter.snapshot().available, 4);
        for _ in 0..4 {
            limiter.check(1).unwrap();
        }
        assert!(limiter.check(1).is_err());
        // ...and they refill at the new rate.
        clock.advance(Duration::from_millis(125));
        limiter.check(1).unwrap();
        assert_eq!(limiter.quota(), Quota::per_second(8));
        assert!(limiter.reconfigure(Quota::per_second(0)).is_err());
        assert_eq!(limiter.quota(), Quota::per_second(8));
    }

    #[test]
    fn clones_share_state() {
        let (limiter, _clock) = limiter(Quota::per_hour(2));
        let other = limiter.clone();
        limiter.check(1).unwrap();
        other.check(1).unwrap();
        assert!(limiter.check(1).is_err());
        limiter.reset();
        other.check(2).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn until_ready_waits_exactly() {
        let clock = TokioClock::new();
        let limiter = RateLimiter::builder(Quota::per_second(1))
            .clock(clock)
            .build()
            .unwrap();
        limiter.check(1).unwrap();
        let start = tokio::time::Instant::now();
        limiter.until_ready(1, None).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn until_ready_respects_deadline_and_jitter() {
        let clock = TokioClock::new();
        let limiter = RateLimiter::builder(Quota::per_second(1))
            .clock(clock)
            .jitter(Duration::from_millis(200))
            .build()
            .unwrap();
        limiter.check(1).unwrap();
        let err = limiter
            .until_ready(1, Some(Duration::from_millis(500)))
            .await
            .unwrap_err();
        assert!(matches!(err, RateLimitError::DeadlineExceeded { .. }));
        let start = tokio::time::Instant::now();
        limiter
            .until_ready(1, Some(Duration::from_millis(1100)))
            .await
            .unwrap();
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_secs(1) && waited <= Duration::from_millis(1100),
            "{waited:?}"
        );
    }
}
