//! [`Backoff`]: exponential delays with a cap and full or equal jitter.

use std::time::Duration;

use crate::error::ConfigError;
use crate::util::random_up_to;

/// How a delay is randomised (see the AWS architecture blog's "Exponential
/// Backoff and Jitter").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Jitter {
    /// Exactly the computed delay.
    None,
    /// Uniform in `[0, delay]`: spreads retries the most.
    #[default]
    Full,
    /// `delay / 2` plus uniform in `[0, delay / 2]`: never shorter than half.
    Equal,
}

/// Exponential backoff: retry `n` (from 1) waits
/// `min(max, initial · multiplier^(n-1))`, then jittered.
///
/// ```
/// use std::time::Duration;
/// use orchex_resilience::{Backoff, Jitter};
///
/// let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1)).jitter(Jitter::None);
/// let delays: Vec<_> = (1..=5).map(|n| backoff.delay(n)).collect();
/// assert_eq!(delays, [100, 200, 400, 800, 1000].map(Duration::from_millis));
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    multiplier: f64,
    jitter: Jitter,
}

impl Backoff {
    /// Doubling from `initial` up to `max`, with full jitter.
    pub const fn exponential(initial: Duration, max: Duration) -> Self {
        Self {
            initial,
            max,
            multiplier: 2.0,
            jitter: Jitter::Full,
        }
    }

    /// Always `delay`, without jitter.
    pub const fn constant(delay: Duration) -> Self {
        Self {
            initial: delay,
            max: delay,
            multiplier: 1.0,
            jitter: Jitter::None,
        }
    }

    /// The growth factor per retry (at least 1).
    #[must_use]
    pub const fn multiplier(mut self, multiplier: f64) -> Self {
        self.multiplier = multiplier;
        self
    }

    /// The jitter.
    #[must_use]
    pub const fn jitter(mut self, jitter: Jitter) -> Self {
        self.jitter = jitter;
        self
    }

    /// The delay before retry `retry` (1 for the first retry), before jitter.
    pub fn base_delay(&self, retry: u32) -> Duration {
        let exponent = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
        let secs = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        if !secs.is_finite() || secs >= self.max.as_secs_f64() {
            return self.max;
        }
        Duration::from_secs_f64(secs).min(self.max)
    }

    /// The delay before retry `retry` (1 for the first retry), jittered.
    pub fn delay(&self, retry: u32) -> Duration {
        let base = self.base_delay(retry);
        match self.jitter {
            Jitter::None => base,
            Jitter::Full => random_up_to(base),
            Jitter::Equal => base / 2 + random_up_to(base / 2),
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            return Err(ConfigError::invalid(
                "backoff.multiplier",
                format!("must be at least 1, got {}", self.multiplier),
            ));
        }
        if self.max < self.initial {
            return Err(ConfigError::invalid(
                "backoff.max",
                format!(
                    "must be at least the initial delay ({:?}), got {:?}",
                    self.initial, self.max
                ),
            ));
        }
        Ok(())
    }
}

impl Default for Backoff {
    /// 100 ms doubling up to 10 s, full jitter.
    fn default() -> Self {
        Self::exponential(Duration::from_millis(100), Duration::from_secs(10))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_bounds() {
        let full = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(8));
        let equal = full.jitter(Jitter::Equal);
        for retry in 1..10 {
            let base = full.base_delay(retry);
            for _ in 0..50 {
                assert!(full.delay(retry) <= base);
                let d = equal.delay(retry);
                assert!(d >= base / 2 && d <= base, "{d:?} vs {base:?}");
            }
        }
        assert_eq!(full.base_delay(100), Duration::from_secs(8));
        assert_eq!(full.base_delay(u32::MAX), Duration::from_secs(8));
    }

    #[test]
    fn constant_and_validation() {
        let c = Backoff::constant(Duration::from_millis(5));
        assert_eq!(c.delay(7), Duration::from_millis(5));
        assert!(
            Backoff::exponential(Duration::from_secs(2), Duration::from_secs(1))
                .validate()
                .is_err()
        );
        assert!(Backoff::default().multiplier(0.5).validate().is_err());
        assert!(Backoff::default().validate().is_ok());
    }
}
