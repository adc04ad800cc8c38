//! Rate limiting with the generic cell rate algorithm (GCRA).
//!
//! A limiter keeps one number per key: the *theoretical arrival time* (TAT),
//! the moment at which the bucket would be full again. A call of cost `n` at
//! time `now` is admitted when `max(tat, now) + n·T <= now + burst·T`, where
//! `T` is the emission interval (`period / count`), and moves the TAT to
//! that sum. This is a token bucket of capacity `burst` refilled at
//! `count / period`, stored in a single `AtomicU64` and updated with one
//! compare-and-swap. Over any window of length `w` a limiter admits at most
//! `burst + w / T` units of cost.
//!
//! * [`RateLimiter`]: one bucket.
//! * [`KeyedRateLimiter`]: one bucket per key, with per-key quotas and a
//!   bounded number of keys.

mod direct;
mod gcra;
mod keyed;

use std::time::Duration;

pub use direct::{RateLimiter, RateLimiterBuilder, RateLimiterSnapshot};
pub use keyed::{DEFAULT_MAX_KEYS, KeyOverflow, KeyedRateLimiter, KeyedRateLimiterBuilder};

use crate::clock::Timestamp;
use crate::error::{ConfigError, at_least};
pub(crate) use gcra::Params;

/// How much a limiter admits: `count` units of cost per `period`, with
/// bursts of up to `burst` units (by default `burst = count`).
///
/// Rates faster than one unit per nanosecond are clamped to that.
///
/// ```
/// use std::time::Duration;
/// use orchex_resilience::Quota;
///
/// let quota = Quota::per_hour(10);
/// assert_eq!(quota.burst(), 10);
/// assert_eq!(quota.emission_interval(), Duration::from_secs(360));
/// let custom = Quota::new(3, Duration::from_secs(90)).with_burst(1);
/// assert_eq!(custom.emission_interval(), Duration::from_secs(30));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Quota {
    count: u32,
    period: Duration,
    burst: u32,
}

impl Quota {
    /// `count` units per `period`, burst `count`.
    pub const fn new(count: u32, period: Duration) -> Self {
        Self {
            count,
            period,
            burst: count,
        }
    }

    /// `count` units per second.
    pub const fn per_second(count: u32) -> Self {
        Self::new(count, Duration::from_secs(1))
    }

    /// `count` units per minute.
    pub const fn per_minute(count: u32) -> Self {
        Self::new(count, Duration::from_secs(60))
    }

    /// `count` units per hour.
    pub const fn per_hour(count: u32) -> Self {
        Self::new(count, Duration::from_secs(3600))
    }

    /// `count` units per day.
    pub const fn per_day(count: u32) -> Self {
        Self::new(count, Duration::from_secs(86_400))
    }

    /// The same rate with a different burst capacity.
    #[must_use]
    pub const fn with_burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// Units per period.
    pub const fn count(&self) -> u32 {
        self.count
    }

    /// The period.
    pub const fn period(&self) -> Duration {
        self.period
    }

    /// The most cost admitted at once (the bucket's capacity).
    pub const fn burst(&self) -> u32 {
        self.burst
    }

    /// The time one unit takes to replenish (`period / count`, at least
    /// 1 ns; zero for an invalid quota with `count = 0`).
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.interval_nanos())
    }

    fn interval_nanos(&self) -> u64 {
        if self.count == 0 {
            return 0;
        }
        (crate::util::nanos(self.period) / u64::from(self.count)).max(1)
    }

    /// Checks the quota and computes the GCRA parameters.
    pub(crate) fn params(&self) -> Result<Params, ConfigError> {
        at_least("quota.count", self.count, 1)?;
        at_least("quota.burst", self.burst, 1)?;
        if self.period.is_zero() {
            return Err(ConfigError::invalid(
                "quota.period",
                "must be longer than zero",
            ));
        }
        let interval = self.interval_nanos();
        let limit = interval.checked_mul(u64::from(self.burst)).ok_or_else(|| {
            ConfigError::invalid(
                "quota.burst",
                format!(
                    "burst {} times the interval {interval} ns overflows",
                    self.burst
                ),
            )
        })?;
        Ok(Params {
            interval,
            limit,
            burst: self.burst,
        })
    }
}

/// When a refused call may succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotUntil {
    ready_at: Timestamp,
    now: Timestamp,
}

impl NotUntil {
    /// The earliest time (on the limiter's clock) at which the same call
    /// can be admitted, if nothing else consumes capacity meanwhile.
    pub fn ready_at(&self) -> Timestamp {
        self.ready_at
    }

    /// The time of the decision.
    pub fn decided_at(&self) -> Timestamp {
        self.now
    }

    /// How long to wait from the decision until [`ready_at`](Self::ready_at).
    pub fn wait_time(&self) -> Duration {
        self.ready_at.saturating_duration_since(self.now)
    }
}

/// A call refused by a rate limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RateLimitError {
    /// Not enough capacity now; retry after [`NotUntil::wait_time`].
    #[error("rate limited: capacity available in {:?}", .0.wait_time())]
    Limited(NotUntil),
    /// The cost exceeds the burst capacity: this call can never be admitted.
    #[error("cost {cost} exceeds the burst capacity {burst} and can never be admitted")]
    InsufficientCapacity {
        /// The requested cost.
        cost: u32,
        /// The quota's burst.
        burst: u32,
    },
    /// [`until_ready`](RateLimiter::until_ready) would have to wait past
    /// its deadline.
    #[error("rate limited: capacity available in {:?}, beyond the allowed wait {max_wait:?}", .not_until.wait_time())]
    DeadlineExceeded {
        /// When capacity is available.
        not_until: NotUntil,
        /// The wait that was allowed.
        max_wait: Duration,
    },
    /// A keyed limiter is full of active keys and its overflow policy is
    /// [`KeyOverflow::Reject`].
    #[error("rate limiter holds the maximum of {max_keys} active keys")]
    TooManyKeys {
        /// The configured maximum.
        max_keys: usize,
    },
}

impl RateLimitError {
    /// How long until the call could be admitted, when that is known.
    pub fn wait_time(&self) -> Option<Duration> {
        self.not_until().map(|n| n.wait_time())
    }

    /// When the call could be admitted, on the limiter's clock.
    pub fn ready_at(&self) -> Option<Timestamp> {
        self.not_until().map(|n| n.ready_at())
    }

    fn not_until(&self) -> Option<NotUntil> {
        match self {
            Self::Limited(n) | Self::DeadlineExceeded { not_until: n, .. } => Some(*n),
            Self::InsufficientCapacity { .. } | Self::TooManyKeys { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_validation_names_the_field() {
        let err = Quota::per_second(0).params().unwrap_err();
        assert_eq!(err.to_string(), "quota.count: must be at least 1, got 0");
        let err = Quota::per_second(5).with_burst(0).params().unwrap_err();
        assert_eq!(err.to_string(), "quota.burst: must be at least 1, got 0");
        assert!(Quota::new(1, Duration::ZERO).params().is_err());
        assert!(Quota::per_day(1).with_burst(u32::MAX).params().is_err());
    }

    #[test]
    fn quota_params() {
        let p = Quota::per_second(10).params().unwrap();
        assert_eq!(p.interval, 100_000_000);
        assert_eq!(p.limit, 1_000_000_000);
        // Faster than 1/ns clamps to 1 ns.
        assert_eq!(Quota::per_second(u32::MAX).params().unwrap().interval, 1);
    }

    #[test]
    fn error_accessors() {
        let n = NotUntil {
            ready_at: Timestamp::from_nanos(30),
            now: Timestamp::from_nanos(10),
        };
        let e = RateLimitError::Limited(n);
        assert_eq!(e.wait_time(), Some(Duration::from_nanos(20)));
        assert_eq!(e.ready_at(), Some(Timestamp::from_nanos(30)));
        assert!(e.to_string().starts_with("rate limited"));
        assert_eq!(
            RateLimitError::TooManyKeys { max_keys: 3 }.wait_time(),
            None
        );
    }
}
