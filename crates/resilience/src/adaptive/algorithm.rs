//! The two limit algorithms: AIMD and Gradient2 (after Netflix's
//! concurrency-limits).

use std::time::Duration;

use crate::error::{ConfigError, at_least, within};
use crate::util::{as_f64, nanos};

/// Additive increase, multiplicative decrease (Netflix's `AIMDLimit`).
///
/// On a drop, or a latency above `timeout`, the limit is multiplied by
/// `backoff_ratio`; on a success while at least half the limit is in use,
/// it grows by one.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AimdConfig {
    pub(crate) initial: u32,
    pub(crate) min: u32,
    pub(crate) max: u32,
    pub(crate) backoff_ratio: f64,
    pub(crate) timeout: Duration,
}

impl AimdConfig {
    /// Between `min` and `max`, starting at `initial`; backoff 0.9, latency
    /// timeout 5 s.
    pub const fn new(initial: u32, min: u32, max: u32) -> Self {
        Self {
            initial,
            min,
            max,
            backoff_ratio: 0.9,
            timeout: Duration::from_secs(5),
        }
    }

    /// The factor applied on a drop (in `[0.5, 1)`).
    #[must_use]
    pub const fn backoff_ratio(mut self, ratio: f64) -> Self {
        self.backoff_ratio = ratio;
        self
    }

    /// Latencies above this count as drops.
    #[must_use]
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }
}

/// Netflix's `Gradient2Limit`: compares a short-term latency average with a
/// long-term one and shrinks the limit when latency grows (queueing), grows
/// it by `queue_size` when it does not.
///
/// Each sample updates `short = EWMA(short_window)` (1: the last sample) and
/// `long = EWMA(long_window)` (plain average over the first `warmup`
/// samples); then, unless fewer than half the limit are in flight,
/// `gradient = clamp(tolerance · long / short, 0.5, 1)` and
/// `limit = (1 − s)·limit + s·(limit · gradient + queue_size)`, with `s` the
/// smoothing. When `long / short > 2` the long average is decayed by 5 %
/// so the limit recovers after a long overload. A drop (a sample that
/// failed from overload) counts with the smallest gradient, 0.5; Netflix's
/// Gradient2 ignores drops.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GradientConfig {
    pub(crate) initial: u32,
    pub(crate) min: u32,
    pub(crate) max: u32,
    pub(crate) smoothing: f64,
    pub(crate) rtt_tolerance: f64,
    pub(crate) long_window: u32,
    pub(crate) short_window: u32,
    pub(crate) warmup: u32,
    pub(crate) queue_size: u32,
}

impl GradientConfig {
    /// Between `min` and `max`, starting at `initial`, with Netflix's
    /// defaults: smoothing 0.2, tolerance 1.5, long window 600 (warm-up
    /// 10), short window 1, queue size 4.
    pub const fn new(initial: u32, min: u32, max: u32) -> Self {
        Self {
            initial,
            min,
            max,
            smoothing: 0.2,
            rtt_tolerance: 1.5,
            long_window: 600,
            short_window: 1,
            warmup: 10,
            queue_size: 4,
        }
    }

    /// How far each sample moves the limit (0 to 1).
    #[must_use]
    pub const fn smoothing(mut self, smoothing: f64) -> Self {
        self.smoothing = smoothing;
        self
    }

    /// How much slower than the long-term latency the short-term one may
    /// get before the limit shrinks (at least 1).
    #[must_use]
    pub const fn rtt_tolerance(mut self, tolerance: f64) -> Self {
        self.rtt_tolerance = tolerance;
        self
    }

    /// The sample windows of the long and short averages.
    #[must_use]
    pub const fn windows(mut self, long: u32, short: u32) -> Self {
        self.long_window = long;
        self.short_window = short;
        self
    }

    /// The growth allowance per sample.
    #[must_use]
    pub const fn queue_size(mut self, queue_size: u32) -> Self {
        self.queue_size = queue_size;
        self
    }
}

/// Which algorithm an [`AdaptiveLimit`](crate::AdaptiveLimit) runs.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum LimitAlgorithm {
    /// Additive increase, multiplicative decrease.
    Aimd(AimdConfig),
    /// Netflix's Gradient2.
    Gradient(GradientConfig),
}

impl LimitAlgorithm {
    pub(crate) fn bounds(&self) -> (u32, u32, u32) {
        match self {
            Self::Aimd(c) => (c.initial, c.min, c.max),
            Self::Gradient(c) => (c.initial, c.min, c.max),
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (initial, min, max) = self.bounds();
        at_least("adaptive.min", min, 1)?;
        at_least("adaptive.max", max, min)?;
        within("adaptive.initial", initial, min, max)?;
        match self {
            Self::Aimd(c) => {
                within("adaptive.aimd.backoff_ratio", c.backoff_ratio, 0.5, 0.999)?;
                at_least("adaptive.aimd.timeout_nanos", nanos(c.timeout), 1)?;
            }
            Self::Gradient(c) => {
                within("adaptive.gradient.smoothing", c.smoothing, 0.0, 1.0)?;
                at_least("adaptive.gradient.rtt_tolerance", c.rtt_tolerance, 1.0)?;
                at_least("adaptive.gradient.long_window", c.long_window, 1)?;
                at_least("adaptive.gradient.short_window", c.short_window, 1)?;
            }
        }
        Ok(())
    }
}

/// An exponentially weighted moving average with a plain-average warm-up.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Ewma {
    window: u32,
    warmup: u32,
    count: u32,
    sum: f64,
    value: f64,
}

impl Ewma {
    pub(crate) fn new(window: u32, warmup: u32) -> Self {
        Self {
            window,
            warmup,
            count: 0,
            sum: 0.0,
            value: 0.0,
        }
    }

    pub(crate) fn add(&mut self, sample: f64) -> f64 {
        if self.count < self.warmup {
            self.count += 1;
            self.sum += sample;
            self.value = self.sum / f64::from(self.count);
        } else {
            let factor = 2.0 / (f64::from(self.window) + 1.0);
            self.value = self.value * (1.0 - factor) + sample * factor;
        }
        self.value
    }

    pub(crate) fn scale(&mut self, factor: f64) {
        self.value *= factor;
    }
}

/// The running state of an algorithm.
#[derive(Debug)]
pub(crate) enum State {
    Aimd {
        config: AimdConfig,
        limit: f64,
    },
    Gradient {
        config: GradientConfig,
        limit: f64,
        long: Ewma,
        short: Ewma,
    },
}

impl State {
    pub(crate) fn new(algorithm: LimitAlgorithm, limit: f64) -> Self {
        match algorithm {
            LimitAlgorithm::Aimd(config) => Self::Aimd { config, limit },
            LimitAlgorithm::Gradient(config) => Self::Gradient {
                config,
                limit,
                long: Ewma::new(config.long_window, config.warmup),
                short: Ewma::new(config.short_window, 0),
            },
        }
    }

    pub(crate) fn limit(&self) -> f64 {
        match self {
            Self::Aimd { limit, .. } | Self::Gradient { limit, .. } => *limit,
        }
    }

    pub(crate) fn algorithm(&self) -> LimitAlgorithm {
        match self {
            Self::Aimd { config, .. } => LimitAlgorithm::Aimd(*config),
            Self::Gradient { config, .. } => LimitAlgorithm::Gradient(*config),
        }
    }

    /// Applies a new configuration of the same or another algorithm,
    /// keeping the limit (clamped to the new bounds) and, for the same
    /// algorithm, the latency averages.
    pub(crate) fn reconfigure(&mut self, algorithm: LimitAlgorithm) {
        let (_, min, max) = algorithm.bounds();
        let limit = self.limit().clamp(f64::from(min), f64::from(max));
        match (self, algorithm) {
            (Self::Aimd { config, limit: l }, LimitAlgorithm::Aimd(new)) => {
                *config = new;
                *l = limit;
            }
            (
                Self::Gradient {
                    config,
                    limit: l,
                    long,
                    short,
                },
                LimitAlgorithm::Gradient(new),
            ) => {
                long.window = new.long_window;
                long.warmup = new.warmup;
                short.window = new.short_window;
                *config = new;
                *l = limit;
            }
            (this, other) => *this = Self::new(other, limit),
        }
    }

    /// Feeds one sample; returns the new limit.
    pub(crate) fn update(&mut self, rtt: Duration, in_flight: u32, dropped: bool) -> f64 {
        match self {
            Self::Aimd { config, limit } => {
                if dropped || rtt > config.timeout {
                    *limit = (*limit * config.backoff_ratio).floor();
                } else if f64::from(in_flight) * 2.0 >= *limit {
                    *limit += 1.0;
                }
                *limit = limit.clamp(f64::from(config.min), f64::from(config.max));
                *limit
            }
            Self::Gradient {
                config,
                limit,
                long,
                short,
            } => {
                let rtt = as_f64(nanos(rtt).max(1));
                let short_rtt = short.add(rtt);
                let long_rtt = long.add(rtt);
                if long_rtt / short_rtt > 2.0 {
                    long.scale(0.95);
                }
                if !dropped && f64::from(in_flight) < *limit / 2.0 {
                    // Application-limited: no evidence either way.
                    return *limit;
                }
                let gradient = if dropped {
                    0.5
                } else {
                    (config.rtt_tolerance * long_rtt / short_rtt).clamp(0.5, 1.0)
                };
                let target = *limit * gradient + f64::from(config.queue_size);
                let next = *limit * (1.0 - config.smoothing) + target * config.smoothing;
                *limit = next.clamp(f64::from(config.min), f64::from(config.max));
                *limit
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::float_cmp)] // the values compared are exact
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn aimd_grows_when_busy_and_backs_off_on_drops() {
        let mut state = State::new(LimitAlgorithm::Aimd(AimdConfig::new(10, 2, 20)), 10.0);
        assert_eq!(state.update(MS, 2, false), 10.0, "not busy: no growth");
        assert_eq!(state.update(MS, 5, false), 11.0);
        assert_eq!(state.update(MS, 6, true), 9.0);
        assert_eq!(
            state.update(Duration::from_secs(6), 6, false),
            8.0,
            "over the timeout"
        );
        for _ in 0..50 {
            state.update(MS, 20, false);
        }
        assert_eq!(state.limit(), 20.0);
        for _ in 0..50 {
            state.update(MS, 20, true);
        }
        assert_eq!(state.limit(), 2.0);
    }

    #[test]
    fn gradient_shrinks_when_latency_rises_and_grows_when_steady() {
        let config = GradientConfig::new(20, 1, 100);
        let mut state = State::new(LimitAlgorithm::Gradient(config), 20.0);
        for _ in 0..20 {
            state.update(10 * MS, 20, false);
        }
        let steady = state.limit();
        assert!(
            steady > 20.0,
            "steady latency lets the limit grow: {steady}"
        );
        for _ in 0..20 {
            state.update(100 * MS, 100, false);
        }
        assert!(
            state.limit() < steady,
            "queueing shrinks it: {} vs {steady}",
            state.limit()
        );
        let before = state.limit();
        assert_eq!(
            state.update(10 * MS, 0, false),
            before,
            "app-limited: unchanged"
        );
        assert!(state.update(10 * MS, 0, true) < before, "drops shrink it");
    }

    #[test]
    fn ewma_warms_up_then_smooths() {
        let mut ewma = Ewma::new(3, 2);
        assert_eq!(ewma.add(10.0), 10.0);
        assert_eq!(ewma.add(20.0), 15.0);
        assert_eq!(ewma.add(15.0), 15.0);
        assert_eq!(ewma.add(25.0), 20.0);
    }

    #[test]
    fn validation() {
        assert!(
            LimitAlgorithm::Aimd(AimdConfig::new(5, 1, 10))
                .validate()
                .is_ok()
        );
        assert!(
            LimitAlgorithm::Aimd(AimdConfig::new(50, 1, 10))
                .validate()
                .is_err()
        );
        assert!(
            LimitAlgorithm::Aimd(AimdConfig::new(5, 0, 10))
                .validate()
                .is_err()
        );
        assert!(
            LimitAlgorithm::Aimd(AimdConfig::new(5, 1, 10).backoff_ratio(1.0))
                .validate()
                .is_err()
        );
        assert!(
            LimitAlgorithm::Gradient(GradientConfig::new(5, 1, 10).rtt_tolerance(0.5))
                .validate()
                .is_err()
        );
    }

    #[test]
    fn reconfigure_keeps_the_limit() {
        let mut state = State::new(LimitAlgorithm::Aimd(AimdConfig::new(10, 1, 20)), 15.0);
        state.reconfigure(LimitAlgorithm::Aimd(AimdConfig::new(5, 1, 12)));
        assert_eq!(state.limit(), 12.0);
        state.reconfigure(LimitAlgorithm::Gradient(GradientConfig::new(5, 1, 30)));
        assert_eq!(state.limit(), 12.0);
        assert!(matches!(state.algorithm(), LimitAlgorithm::Gradient(_)));
    }
}
