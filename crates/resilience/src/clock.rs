//! Time sources.
//!
//! Every primitive reads time through a [`SharedClock`], so tests can drive
//! it by hand with a [`ManualClock`] (exact, never sleeps) or follow tokio's
//! paused clock with a [`TokioClock`]. In production the default
//! [`SystemClock`] reads the CPU's time-stamp counter (through `quanta`,
//! calibrated against the OS monotonic clock, falling back to it where the
//! counter is not reliable): about 10 ns per read on x86_64, where
//! `std::time::Instant::now` costs 25–30 ns.
//!
//! Time is a [`Timestamp`]: nanoseconds since an arbitrary origin chosen by
//! the clock. Timestamps of different clocks must not be compared.

use std::fmt;
use std::ops::{Add, Sub};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::util::nanos;

/// A point in time, in nanoseconds since the origin of the clock that
/// produced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The clock's origin.
    pub const ZERO: Self = Self(0);

    /// A timestamp `nanos` nanoseconds after the origin.
    #[inline]
    pub const fn from_nanos(nanos: u64) -> Self {
        Self(nanos)
    }

    /// Nanoseconds since the origin.
    #[inline]
    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// The time from `earlier` to `self`, or zero if `earlier` is later.
    #[inline]
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Timestamp {
    type Output = Self;

    /// Saturates at the largest representable timestamp.
    #[inline]
    fn add(self, rhs: Duration) -> Self {
        Self(self.0.saturating_add(nanos(rhs)))
    }
}

impl Sub<Duration> for Timestamp {
    type Output = Self;

    /// Saturates at the origin.
    #[inline]
    fn sub(self, rhs: Duration) -> Self {
        Self(self.0.saturating_sub(nanos(rhs)))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", Duration::from_nanos(self.0))
    }
}

/// A monotonic source of [`Timestamp`]s.
///
/// Implement it to plug in your own time source and wrap it with
/// [`SharedClock::custom`]. The readings must never go backwards.
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// The production clock: the CPU time-stamp counter through `quanta`, or
/// the OS monotonic clock where that counter is unreliable.
///
/// The first `SystemClock` in a process calibrates the counter against the
/// OS clock, which takes up to a few hundred milliseconds once; later ones
/// are free. All system clocks of a process share one origin.
#[derive(Clone)]
pub struct SystemClock {
    clock: quanta::Clock,
}

impl SystemClock {
    /// The system clock.
    pub fn new() -> Self {
        Self {
            clock: quanta::Clock::new(),
        }
    }

    /// The current time.
    #[inline]
    pub fn now(&self) -> Timestamp {
        Timestamp(self.clock.delta_as_nanos(0, self.clock.raw()))
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for SystemClock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SystemClock").finish_non_exhaustive()
    }
}

impl Clock for SystemClock {
    #[inline]
    fn now(&self) -> Timestamp {
        SystemClock::now(self)
    }
}

/// A clock that moves only when told to. Clones share the same time.
///
/// ```
/// use std::time::Duration;
/// use orchex_resilience::{ManualClock, Timestamp};
///
/// let clock = ManualClock::new();
/// clock.advance(Duration::from_secs(2));
/// assert_eq!(clock.now(), Timestamp::from_nanos(2_000_000_000));
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    nanos: Arc<AtomicU64>,
}

impl ManualClock {
    /// A clock standing at [`Timestamp::ZERO`].
    pub fn new() -> Self {
        Self::default()
    }

    /// A clock standing at `start`.
    pub fn starting_at(start: Timestamp) -> Self {
        Self {
            nanos: Arc::new(AtomicU64::new(start.0)),
        }
    }

    /// The current time.
    #[inline]
    pub fn now(&self) -> Timestamp {
        Timestamp(self.nanos.load(Ordering::Acquire))
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = nanos(by);
        // fetch_update never fails with a closure that always returns Some.
        let _ = self
            .nanos
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |now| {
                Some(now.saturating_add(by))
            });
    }

    /// Moves the clock to `to`; a time in the past is ignored, so the clock
    /// stays monotonic.
    pub fn set(&self, to: Timestamp) {
        self.nanos.fetch_max(to.0, Ordering::AcqRel);
    }
}

impl Clock for ManualClock {
    #[inline]
    fn now(&self) -> Timestamp {
        ManualClock::now(self)
    }
}

/// A clock that follows `tokio::time::Instant`, so it moves with tokio's
/// paused, auto-advancing test clock (`tokio::time::pause`,
/// `#[tokio::test(start_paused = true)]`). Use it when a test also sleeps
/// through tokio, e.g. with [`RateLimiter::until_ready`](crate::RateLimiter::until_ready).
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    origin: tokio::time::Instant,
}

impl TokioClock {
    /// A clock whose origin is now.
    pub fn new() -> Self {
        Self {
            origin: tokio::time::Instant::now(),
        }
    }

    /// The current time.
    #[inline]
    pub fn now(&self) -> Timestamp {
        Timestamp(nanos(
            tokio::time::Instant::now().saturating_duration_since(self.origin),
        ))
    }
}

impl Default for TokioClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for TokioClock {
    #[inline]
    fn now(&self) -> Timestamp {
        TokioClock::now(self)
    }
}

/// The clock a primitive holds: one of the built-in clocks, dispatched
/// without a virtual call, or any [`Clock`] behind an `Arc`.
///
/// Every builder's `clock(...)` takes `impl Into<SharedClock>`, so pass a
/// [`SystemClock`], [`ManualClock`] or [`TokioClock`] directly.
#[derive(Debug, Clone)]
pub struct SharedClock(Source);

#[derive(Debug, Clone)]
enum Source {
    System(SystemClock),
    Manual(ManualClock),
    Tokio(TokioClock),
    Custom(Arc<dyn Clock>),
}

impl SharedClock {
    /// The default [`SystemClock`].
    pub fn system() -> Self {
        Self(Source::System(SystemClock::new()))
    }

    /// Wraps a custom clock.
    pub fn custom(clock: impl Clock) -> Self {
        Self(Source::Custom(Arc::new(clock)))
    }

    /// The current time.
    #[inline]
    pub fn now(&self) -> Timestamp {
        match &self.0 {
            Source::System(clock) => clock.now(),
            Source::Manual(clock) => clock.now(),
            Source::Tokio(clock) => clock.now(),
            Source::Custom(clock) => clock.now(),
        }
    }
}

impl Default for SharedClock {
    fn default() -> Self {
        Self::system()
    }
}

impl Clock for SharedClock {
    #[inline]
    fn now(&self) -> Timestamp {
        SharedClock::now(self)
    }
}

impl From<SystemClock> for SharedClock {
    fn from(clock: SystemClock) -> Self {
        Self(Source::System(clock))
    }
}

impl From<ManualClock> for SharedClock {
    fn from(clock: ManualClock) -> Self {
        Self(Source::Manual(clock))
    }
}

impl From<TokioClock> for SharedClock {
    fn from(clock: TokioClock) -> Self {
        Self(Source::Tokio(clock))
    }
}

impl From<Arc<dyn Clock>> for SharedClock {
    fn from(clock: Arc<dyn Clock>) -> Self {
        Self(Source::Custom(clock))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_is_shared_and_monotonic() {
        let clock = ManualClock::new();
        let shared = SharedClock::from(clock.clone());
        clock.advance(Duration::from_millis(5));
        assert_eq!(shared.now(), Timestamp::from_nanos(5_000_000));
        clock.set(Timestamp::from_nanos(1));
        assert_eq!(shared.now(), Timestamp::from_nanos(5_000_000));
    }

    #[test]
    fn system_clock_moves_forward() {
        let clock = SharedClock::system();
        let a = clock.now();
        let b = clock.now();
        assert!(b >= a);
    }

    #[test]
    fn timestamp_arithmetic_saturates() {
        let t = Timestamp::from_nanos(10);
        assert_eq!(t - Duration::from_secs(1), Timestamp::ZERO);
        assert_eq!(
            Timestamp::from_nanos(u64::MAX) + Duration::from_secs(1),
            Timestamp::from_nanos(u64::MAX)
        );
        assert_eq!(
            Timestamp::from_nanos(30).saturating_duration_since(t),
            Duration::from_nanos(20)
        );
    }

    #[derive(Debug)]
    struct Fixed;
    impl Clock for Fixed {
        fn now(&self) -> Timestamp {
            Timestamp::from_nanos(42)
        }
    }

    #[test]
    fn custom_clock_is_used() {
        assert_eq!(SharedClock::custom(Fixed).now(), Timestamp::from_nanos(42));
    }

    #[tokio::test(start_paused = true)]
    async fn tokio_clock_follows_paused_time() {
        let clock = TokioClock::new();
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert_eq!(clock.now(), Timestamp::from_nanos(3_000_000_000));
    }
}
