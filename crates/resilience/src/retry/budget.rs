//! [`RetryBudget`]: retries as a bounded fraction of calls (Finagle's and
//! tower's retry budget), so that retries cannot multiply load during an
//! outage.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::clock::SharedClock;
use crate::error::{ConfigError, at_least};
use crate::util::{as_f64, lock, nanos};

const SLOTS: u64 = 10;
const SLOT_COUNT: usize = 10;

/// The settings of a [`RetryBudget`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryBudgetConfig {
    window: Duration,
    min_per_second: u32,
    ratio: f64,
}

impl RetryBudgetConfig {
    /// Over the last `window`, allow `min_per_second · window` retries plus
    /// `ratio` retries per call (e.g. 0.2: one retry per five calls).
    pub const fn new(window: Duration, min_per_second: u32, ratio: f64) -> Self {
        Self {
            window,
            min_per_second,
            ratio,
        }
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("retry_budget.window_millis", self.window.as_millis(), 1)?;
        if !(self.ratio.is_finite() && (0.0..=1000.0).contains(&self.ratio)) {
            return Err(ConfigError::invalid(
                "retry_budget.ratio",
                format!("must be between 0 and 1000, got {}", self.ratio),
            ));
        }
        Ok(())
    }

    fn reserve(&self) -> f64 {
        f64::from(self.min_per_second) * self.window.as_secs_f64()
    }
}

impl Default for RetryBudgetConfig {
    /// 10 s window, 10 retries per second minimum, 20 % of calls.
    fn default() -> Self {
        Self::new(Duration::from_secs(10), 10, 0.2)
    }
}

/// A shared retry budget: every call deposits, every retry withdraws, and a
/// retry is allowed only while withdrawals stay within the budget. Clones
/// (and every [`Retry`](crate::Retry) given a clone) share one budget.
///
/// ```
/// use std::time::Duration;
/// use orchex_resilience::{ManualClock, RetryBudget, RetryBudgetConfig};
///
/// let budget = RetryBudget::with_clock(RetryBudgetConfig::new(Duration::from_secs(10), 0, 0.5), ManualClock::new())?;
/// for _ in 0..4 {
///     budget.deposit();
/// }
/// assert!(budget.try_withdraw());
/// assert!(budget.try_withdraw());
/// assert!(!budget.try_withdraw(), "two retries for four calls at 50 %");
/// # Ok::<(), orchex_resilience::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    clock: SharedClock,
}

struct State {
    config: RetryBudgetConfig,
    slot_width: u64,
    latest: u64,
    slots: [Slot; SLOT_COUNT],
    deposits: u64,
    withdrawals: u64,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    deposits: u64,
    withdrawals: u64,
}

impl RetryBudget {
    /// A budget on the system clock.
    pub fn new(config: RetryBudgetConfig) -> Result<Self, ConfigError> {
        Self::with_clock(config, SharedClock::system())
    }

    /// A budget on `clock`.
    pub fn with_clock(
        config: RetryBudgetConfig,
        clock: impl Into<SharedClock>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let state = State {
            config,
            slot_width: (nanos(config.window) / SLOTS).max(1),
            latest: 0,
            slots: [Slot::default(); SLOT_COUNT],
            deposits: 0,
            withdrawals: 0,
        };
        Ok(Self {
            inner: Arc::new(Inner {
                state: Mutex::new(state),
                clock: clock.into(),
            }),
        })
    }

    /// Records a call (not a retry).
    pub fn deposit(&self) {
        let now = self.inner.clock.now().as_nanos();
        let mut state = lock(&self.inner.state);
        let slot = state.slide(now);
        state.slots[slot].deposits += 1;
        state.deposits += 1;
    }

    /// Takes one retry from the budget; false when it is spent.
    pub fn try_withdraw(&self) -> bool {
        let now = self.inner.clock.now().as_nanos();
        let mut state = lock(&self.inner.state);
        let slot = state.slide(now);
        if state.remaining() < 1.0 {
            return false;
        }
        state.slots[slot].withdrawals += 1;
        state.withdrawals += 1;
        true
    }

    /// Retries that would be allowed now.
    pub fn remaining(&self) -> u64 {
        let now = self.inner.clock.now().as_nanos();
        let mut state = lock(&self.inner.state);
        state.slide(now);
        // Non-negative and finite: see `State::remaining`.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let remaining = state.remaining().max(0.0).floor() as u64;
        remaining
    }

    /// Replaces the settings, keeping the deposits and withdrawals seen
    /// (re-filed by age when the window length changes).
    pub fn reconfigure(&self, config: RetryBudgetConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let now = self.inner.clock.now().as_nanos();
        let mut state = lock(&self.inner.state);
        state.slide(now);
        state.config = config;
        let width = (nanos(config.window) / SLOTS).max(1);
        if width != state.slot_width {
            // Keep the totals; put them in the current slot of the new layout.
            let (deposits, withdrawals) = (state.deposits, state.withdrawals);
            state.slot_width = width;
            state.slots = [Slot::default(); SLOT_COUNT];
            state.latest = now / width;
            #[allow(clippy::cast_possible_truncation)] // < SLOTS
            let current = (state.latest % SLOTS) as usize;
            state.slots[current] = Slot {
                deposits,
                withdrawals,
            };
        }
        Ok(())
    }

    /// The current settings.
    pub fn config(&self) -> RetryBudgetConfig {
        lock(&self.inner.state).config
    }
}

impl State {
    /// Clears the slots the window slid past; returns the current slot.
    fn slide(&mut self, now: u64) -> usize {
        let epoch = now / self.slot_width;
        if epoch > self.latest {
            let first = (self.latest + 1).max(epoch.saturating_sub(SLOTS - 1));
            for e in first..=epoch {
                #[allow(clippy::cast_possible_truncation)]
                let slot = &mut self.slots[(e % SLOTS) as usize];
                self.deposits -= slot.deposits;
                self.withdrawals -= slot.withdrawals;
                *slot = Slot::default();
            }
            self.latest = epoch;
        }
        #[allow(clippy::cast_possible_truncation)]
        let index = (epoch % SLOTS) as usize;
        index
    }

    fn remaining(&self) -> f64 {
        self.config.reserve() + self.config.ratio * as_f64(self.deposits) - as_f64(self.withdrawals)
    }
}

impl fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = lock(&self.inner.state);
        f.debug_struct("RetryBudget")
            .field("config", &state.config)
            .field("deposits", &state.deposits)
            .field("withdrawals", &state.withdrawals)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    #[test]
    fn minimum_reserve_without_calls() {
        let budget = RetryBudget::with_clock(
            RetryBudgetConfig::new(Duration::from_secs(2), 1, 0.0),
            ManualClock::new(),
        )
        .unwrap();
        assert_eq!(budget.remaining(), 2);
        assert!(budget.try_withdraw());
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw());
    }

    #[test]
    fn withdrawals_expire_with_the_window() {
        let clock = ManualClock::new();
        let budget = RetryBudget::with_clock(
            RetryBudgetConfig::new(Duration::from_secs(10), 0, 1.0),
            clock.clone(),
        )
        .unwrap();
        budget.deposit();
        assert!(budget.try_withdraw());
        assert!(!budget.try_withdraw());
        clock.advance(Duration::from_secs(10));
        assert_eq!(budget.remaining(), 0, "the deposit expired too");
        budget.deposit();
        assert!(budget.try_withdraw());
    }

    #[test]
    fn reconfigure_keeps_history() {
        let budget = RetryBudget::with_clock(
            RetryBudgetConfig::new(Duration::from_secs(10), 0, 0.5),
            ManualClock::new(),
        )
        .unwrap();
        for _ in 0..10 {
            budget.deposit();
        }
        assert!(budget.try_withdraw());
        budget
            .reconfigure(RetryBudgetConfig::new(Duration::from_secs(20), 0, 0.2))
            .unwrap();
        assert_eq!(budget.remaining(), 1, "10 calls × 0.2 − 1 retry");
        assert!(
            budget
                .reconfigure(RetryBudgetConfig::new(Duration::ZERO, 0, 0.2))
                .is_err()
        );
    }
}
