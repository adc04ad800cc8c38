//! [`CircuitBreakerConfig`]: windows, trip policies, half-open probing and
//! the open period's backoff.

use std::time::Duration;

use crate::error::{ConfigError, at_least, within};

/// The window over which a breaker counts outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlidingWindow {
    /// The last `n` calls.
    Count(u32),
    /// The calls of the last period, counted in up to 60 buckets (a period
    /// of a minute slides by the second, ten minutes by ten seconds).
    Time(Duration),
}

/// The largest count window.
pub const MAX_COUNT_WINDOW: u32 = 1 << 20;
/// The most trial calls in half-open.
pub const MAX_HALF_OPEN_CALLS: u32 = u16::MAX as u32;

/// How a [`CircuitBreaker`](crate::CircuitBreaker) counts, trips and
/// recovers.
///
/// The default mirrors resilience4j: a count window of 100 calls, opening
/// at a 50 % failure rate once 100 calls were seen; ten trial calls in
/// half-open; an open period of 60 s. Unlike resilience4j, the open period
/// doubles on each consecutive trip (up to 30 min) with ±10 % jitter.
///
/// Policies combine: the breaker opens when any enabled one trips.
///
/// ```
/// use std::time::Duration;
/// use orchex_resilience::{CircuitBreakerConfig, SlidingWindow};
///
/// // orchex: open after 5 failures within 10 minutes, cool down 60 s, doubling.
/// let config = CircuitBreakerConfig::failure_count_in(5, SlidingWindow::Time(Duration::from_secs(600)))
///     .open_duration(Duration::from_secs(60))
///     .open_backoff(2.0, Duration::from_secs(3600))
///     .half_open(1, Some(Duration::from_secs(900)));
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CircuitBreakerConfig {
    pub(crate) window: SlidingWindow,
    pub(crate) failure_rate: Option<f64>,
    pub(crate) minimum_calls: u32,
    pub(crate) slow_call_rate: Option<f64>,
    pub(crate) slow_call_duration: Duration,
    pub(crate) failure_count: Option<u32>,
    pub(crate) consecutive_failures: Option<u32>,
    pub(crate) half_open_calls: u32,
    pub(crate) half_open_max_wait: Option<Duration>,
    pub(crate) open_duration: Duration,
    pub(crate) backoff_multiplier: f64,
    pub(crate) max_open_duration: Duration,
    pub(crate) open_jitter: f64,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            window: SlidingWindow::Count(100),
            failure_rate: Some(50.0),
            minimum_calls: 100,
            slow_call_rate: None,
            slow_call_duration: Duration::from_secs(60),
            failure_count: None,
            consecutive_failures: None,
            half_open_calls: 10,
            half_open_max_wait: None,
            open_duration: Duration::from_secs(60),
            backoff_multiplier: 2.0,
            max_open_duration: Duration::from_secs(30 * 60),
            open_jitter: 0.1,
        }
    }
}

impl CircuitBreakerConfig {
    /// The default configuration.
    pub fn new() -> Self {
        Self::default()
    }

    /// Only an absolute failure count: open after `failures` failures within
    /// `window` (no failure-rate policy).
    pub fn failure_count_in(failures: u32, window: SlidingWindow) -> Self {
        Self::default()
            .no_failure_rate()
            .failure_count(failures)
            .sliding_window(window)
    }

    /// Only consecutive failures: open after `failures` failures in a row.
    /// The cheapest policy: a success costs two atomic loads.
    pub fn consecutive(failures: u32) -> Self {
        Self::default()
            .no_failure_rate()
            .consecutive_failures(failures)
    }

    /// The window of the rate and count policies.
    #[must_use]
    pub fn sliding_window(mut self, window: SlidingWindow) -> Self {
        self.window = window;
        self
    }

    /// Open when at least `threshold_percent` % of the calls in the window
    /// failed, once the window holds at least `minimum_calls` calls (for a
    /// count window, at most its size).
    #[must_use]
    pub fn failure_rate(mut self, threshold_percent: f64, minimum_calls: u32) -> Self {
        self.failure_rate = Some(threshold_percent);
        self.minimum_calls = minimum_calls;
        self
    }

    /// Turns the failure-rate policy off.
    #[must_use]
    pub fn no_failure_rate(mut self) -> Self {
        self.failure_rate = None;
        self
    }

    /// Open when at least `threshold_percent` % of the calls in the window
    /// took `slow_call_duration` or longer (same minimum number of calls as
    /// the failure rate). A slow call in half-open counts as a failed trial.
    #[must_use]
    pub fn slow_call_rate(mut self, threshold_percent: f64, slow_call_duration: Duration) -> Self {
        self.slow_call_rate = Some(threshold_percent);
        self.slow_call_duration = slow_call_duration;
        self
    }

    /// Open when the window holds `failures` failures, whatever the rate.
    #[must_use]
    pub fn failure_count(mut self, failures: u32) -> Self {
        self.failure_count = Some(failures);
        self
    }

    /// Open after `failures` failures in a row (ignored calls don't break
    /// the run, a success does).
    #[must_use]
    pub fn consecutive_failures(mut self, failures: u32) -> Self {
        self.consecutive_failures = Some(failures);
        self
    }

    /// Sets the minimum number of calls before the rate policies apply.
    #[must_use]
    pub fn minimum_calls(mut self, minimum_calls: u32) -> Self {
        self.minimum_calls = minimum_calls;
        self
    }

    /// Half-open admits at most `permitted_calls` trial calls at a time and
    /// closes once that many succeeded; any failed (or slow) trial opens the
    /// breaker again. With `max_wait`, a breaker still half-open after that
    /// long opens again (trial calls that never finish cannot wedge it).
    #[must_use]
    pub fn half_open(mut self, permitted_calls: u32, max_wait: Option<Duration>) -> Self {
        self.half_open_calls = permitted_calls;
        self.half_open_max_wait = max_wait;
        self
    }

    /// How long the breaker stays open after its first trip.
    #[must_use]
    pub fn open_duration(mut self, duration: Duration) -> Self {
        self.open_duration = duration;
        self
    }

    /// Each consecutive trip (without a successful close in between)
    /// multiplies the open period by `multiplier`, up to `max`. A multiplier
    /// of 1 keeps it constant.
    #[must_use]
    pub fn open_backoff(mut self, multiplier: f64, max: Duration) -> Self {
        self.backoff_multiplier = multiplier;
        self.max_open_duration = max;
        self
    }

    /// Spreads each open period by a random ±`fraction` (0 to 1), so that
    /// breakers tripped together do not probe together.
    #[must_use]
    pub fn open_jitter(mut self, fraction: f64) -> Self {
        self.open_jitter = fraction;
        self
    }

    /// The sliding window.
    pub fn window(&self) -> SlidingWindow {
        self.window
    }

    /// The failure-rate threshold in percent, if that policy is on.
    pub fn failure_rate_threshold(&self) -> Option<f64> {
        self.failure_rate
    }

    /// The absolute failure count threshold, if that policy is on.
    pub fn failure_count_threshold(&self) -> Option<u32> {
        self.failure_count
    }

    /// The consecutive-failure threshold, if that policy is on.
    pub fn consecutive_failures_threshold(&self) -> Option<u32> {
        self.consecutive_failures
    }

    /// The number of trial calls in half-open.
    pub fn half_open_calls(&self) -> u32 {
        self.half_open_calls
    }

    /// The open period after `trips` consecutive trips, before jitter.
    pub fn open_duration_for(&self, trips: u32) -> Duration {
        let exponent = i32::try_from(trips.saturating_sub(1)).unwrap_or(i32::MAX);
        let factor = self.backoff_multiplier.powi(exponent);
        let secs = self.open_duration.as_secs_f64() * factor;
        if !secs.is_finite() || secs >= self.max_open_duration.as_secs_f64() {
            return self.max_open_duration;
        }
        Duration::from_secs_f64(secs).min(self.max_open_duration)
    }

    pub(crate) fn uses_window(&self) -> bool {
        self.failure_rate.is_some() || self.slow_call_rate.is_some() || self.failure_count.is_some()
    }

    /// Checks every setting; names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.window {
            SlidingWindow::Count(n) => within("sliding_window.count", n, 1, MAX_COUNT_WINDOW)?,
            SlidingWindow::Time(d) => {
                if d < Duration::from_millis(1) {
                    return Err(ConfigError::invalid(
                        "sliding_window.time",
                        format!("must be at least 1ms, got {d:?}"),
                    ));
                }
            }
        }
        if let Some(rate) = self.failure_rate {
            check_percent("failure_rate", rate)?;
        }
        if let Some(rate) = self.slow_call_rate {
            check_percent("slow_call_rate", rate)?;
            if self.slow_call_duration.is_zero() {
                return Err(ConfigError::invalid(
                    "slow_call_duration",
                    "must be longer than zero",
                ));
            }
        }
        at_least("minimum_calls", self.minimum_calls, 1)?;
        if let Some(n) = self.failure_count {
            at_least("failure_count", n, 1)?;
        }
        if let Some(n) = self.consecutive_failures {
            at_least("consecutive_failures", n, 1)?;
        }
        within(
            "half_open.permitted_calls",
            self.half_open_calls,
            1,
            MAX_HALF_OPEN_CALLS,
        )?;
        if !(self.backoff_multiplier.is_finite() && self.backoff_multiplier >= 1.0) {
            return Err(ConfigError::invalid(
                "open_backoff.multiplier",
                format!("must be at least 1, got {}", self.backoff_multiplier),
            ));
        }
        if self.max_open_duration < self.open_duration {
            return Err(ConfigError::invalid(
                "open_backoff.max",
                format!(
                    "must be at least open_duration ({:?}), got {:?}",
                    self.open_duration, self.max_open_duration
                ),
            ));
        }
        if !self.open_jitter.is_finite() {
            return Err(ConfigError::invalid("open_jitter", "must be a number"));
        }
        within("open_jitter", self.open_jitter, 0.0, 1.0)?;
        Ok(())
    }
}

fn check_percent(field: &'static str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value > 0.0 && value <= 100.0 {
        Ok(())
    } else {
        Err(ConfigError::invalid(
            field,
            format!("must be a percentage in (0, 100], got {value}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        CircuitBreakerConfig::default().validate().unwrap();
        CircuitBreakerConfig::consecutive(5).validate().unwrap();
    }

    #[test]
    fn validation_names_the_setting() {
        let err = CircuitBreakerConfig::default()
            .failure_rate(0.0, 10)
            .validate()
            .unwrap_err();
        assert!(err.to_string().starts_with("failure_rate:"), "{err}");
        let err = CircuitBreakerConfig::consecutive(0).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "consecutive_failures: must be at least 1, got 0"
        );
        let err = CircuitBreakerConfig::default()
            .half_open(0, None)
            .validate()
            .unwrap_err();
        assert!(err.to_string().starts_with("half_open.permitted_calls"));
        let err = CircuitBreakerConfig::default()
            .open_backoff(0.5, Duration::from_secs(600))
            .validate()
            .unwrap_err();
        assert!(err.to_string().starts_with("open_backoff.multiplier"));
        let err = CircuitBreakerConfig::default()
            .open_duration(Duration::from_secs(10))
            .open_backoff(2.0, Duration::from_secs(5))
            .validate()
            .unwrap_err();
        assert!(err.to_string().starts_with("open_backoff.max"));
        assert!(
            CircuitBreakerConfig::default()
                .sliding_window(SlidingWindow::Count(0))
                .validate()
                .is_err()
        );
        assert!(
            CircuitBreakerConfig::default()
                .open_jitter(1.5)
                .validate()
                .is_err()
        );
    }

    #[test]
    fn open_duration_backs_off_and_caps() {
        let config = CircuitBreakerConfig::default()
            .open_duration(Duration::from_secs(60))
            .open_backoff(2.0, Duration::from_secs(300));
        assert_eq!(config.open_duration_for(1), Duration::from_secs(60));
        assert_eq!(config.open_duration_for(2), Duration::from_secs(120));
        assert_eq!(config.open_duration_for(3), Duration::from_secs(240));
        assert_eq!(config.open_duration_for(4), Duration::from_secs(300));
        assert_eq!(config.open_duration_for(u32::MAX), Duration::from_secs(300));
    }
}
