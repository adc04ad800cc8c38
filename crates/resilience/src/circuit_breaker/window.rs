//! The sliding windows that count outcomes while a breaker is closed.
//!
//! Both kinds keep running totals, so recording and evaluating cost O(1)
//! (a time window clears the buckets it slides past, at most its bucket
//! count per call). The window lives behind the breaker's mutex and is only
//! touched when a rate or count policy is configured.

use std::collections::VecDeque;
use std::time::Duration;

use super::TransitionReason;
use super::config::{CircuitBreakerConfig, SlidingWindow};
use crate::util::{as_f64, nanos};

const FAILURE: u8 = 1;
const SLOW: u8 = 2;
const MAX_BUCKETS: u64 = 60;

/// Running totals over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
    pub(crate) slow_failures: u64,
}

impl Counts {
    fn add(&mut self, outcome: u8) {
        self.calls += 1;
        self.failures += u64::from(outcome & FAILURE != 0);
        self.slow += u64::from(outcome & SLOW != 0);
        self.slow_failures += u64::from(outcome == FAILURE | SLOW);
    }

    fn remove(&mut self, outcome: u8) {
        self.calls -= 1;
        self.failures -= u64::from(outcome & FAILURE != 0);
        self.slow -= u64::from(outcome & SLOW != 0);
        self.slow_failures -= u64::from(outcome == FAILURE | SLOW);
    }

    fn merge(&mut self, other: &Counts) {
        self.calls += other.calls;
        self.failures += other.failures;
        self.slow += other.slow;
        self.slow_failures += other.slow_failures;
    }

    fn subtract(&mut self, other: &Counts) {
        self.calls -= other.calls;
        self.failures -= other.failures;
        self.slow -= other.slow;
        self.slow_failures -= other.slow_failures;
    }
}

/// The thresholds evaluated against the window.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Policy {
    failure_rate: Option<f64>,
    slow_call_rate: Option<f64>,
    failure_count: Option<u32>,
    minimum_calls: u32,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    counts: Counts,
}

#[derive(Debug)]
enum Kind {
    Count {
        outcomes: VecDeque<u8>,
        capacity: usize,
    },
    Time {
        buckets: Vec<Bucket>,
        width: u64,
        latest: u64,
    },
}

/// A sliding window tagged with the generation of the closed period it
/// counts, so that calls begun in an earlier period are not counted.
#[derive(Debug)]
pub(crate) struct Window {
    pub(crate) generation: u64,
    kind: Kind,
    policy: Policy,
    totals: Counts,
}

impl Window {
    pub(crate) fn new(config: &CircuitBreakerConfig, generation: u64) -> Self {
        Self {
            generation,
            kind: Kind::empty(config.window),
            policy: Policy::from(config),
            totals: Counts::default(),
        }
    }

    /// Forgets every call and starts counting for `generation`.
    pub(crate) fn reset(&mut self, generation: u64) {
        self.generation = generation;
        self.totals = Counts::default();
        match &mut self.kind {
            Kind::Count { outcomes, .. } => outcomes.clear(),
            Kind::Time {
                buckets, latest, ..
            } => {
                for bucket in buckets.iter_mut() {
                    *bucket = Bucket::default();
                }
                *latest = 0;
            }
        }
    }

    /// Records one call at `now` (nanoseconds; only time windows read it).
    /// Returns whether a policy could newly be tripped: false only for a
    /// plain success in a count window that was already full (the rates
    /// and counts can only stay or fall then).
    pub(crate) fn record(&mut self, now: u64, failure: bool, slow: bool) -> bool {
        let outcome = if failure { FAILURE } else { 0 } | if slow { SLOW } else { 0 };
        let may_trip = match &mut self.kind {
            Kind::Count { outcomes, capacity } => {
                let full = outcomes.len() == *capacity;
                if full && let Some(oldest) = outcomes.pop_front() {
                    self.totals.remove(oldest);
                }
                outcomes.push_back(outcome);
                outcome != 0 || !full
            }
            Kind::Time { .. } => {
                let bucket = self.slide(now);
                if let Kind::Time { buckets, .. } = &mut self.kind {
                    buckets[bucket].counts.add(outcome);
                }
                true
            }
        };
        self.totals.add(outcome);
        may_trip
    }

    /// Clears the buckets a time window slid past; returns the current one.
    fn slide(&mut self, now: u64) -> usize {
        let Kind::Time {
            buckets,
            width,
            latest,
        } = &mut self.kind
        else {
            return 0;
        };
        let len = buckets.len() as u64;
        let epoch = now / *width;
        if epoch > *latest {
            let first = (*latest + 1).max(epoch.saturating_sub(len - 1));
            for e in first..=epoch {
                #[allow(clippy::cast_possible_truncation)] // e % len < 60
                let bucket = &mut buckets[(e % len) as usize];
                self.totals.subtract(&bucket.counts);
                *bucket = Bucket {
                    epoch: e,
                    counts: Counts::default(),
                };
            }
            *latest = epoch;
        }
        #[allow(clippy::cast_possible_truncation)]
        let index = (epoch % len) as usize;
        index
    }

    /// The totals as of `now`.
    pub(crate) fn counts(&mut self, now: u64) -> Counts {
        self.slide(now);
        self.totals
    }

    /// The minimum number of calls before rates apply, capped at the size
    /// of a count window.
    fn minimum_calls(&self) -> u64 {
        let minimum = u64::from(self.policy.minimum_calls);
        match &self.kind {
            Kind::Count { capacity, .. } => minimum.min(*capacity as u64),
            Kind::Time { .. } => minimum,
        }
    }

    /// The failure rate in percent, once enough calls were seen.
    pub(crate) fn failure_rate(&self) -> Option<f64> {
        self.rate(self.totals.failures)
    }

    /// The slow-call rate in percent, once enough calls were seen.
    pub(crate) fn slow_call_rate(&self) -> Option<f64> {
        self.rate(self.totals.slow)
    }

    fn rate(&self, count: u64) -> Option<f64> {
        let calls = self.totals.calls;
        (calls > 0 && calls >= self.minimum_calls()).then(|| as_f64(count) * 100.0 / as_f64(calls))
    }

    /// Which policy, if any, says the breaker should open. Call right after
    /// [`record`](Self::record), which has slid the window to now.
    pub(crate) fn verdict(&self) -> Option<TransitionReason> {
        if let Some(limit) = self.policy.failure_count
            && self.totals.failures >= u64::from(limit)
        {
            return Some(TransitionReason::FailureCount);
        }
        if let (Some(limit), Some(rate)) = (self.policy.failure_rate, self.failure_rate())
            && rate >= limit
        {
            return Some(TransitionReason::FailureRate);
        }
        if let (Some(limit), Some(rate)) = (self.policy.slow_call_rate, self.slow_call_rate())
            && rate >= limit
        {
            return Some(TransitionReason::SlowCallRate);
        }
        None
    }

    /// Applies a new configuration, keeping the counts: the thresholds are
    /// replaced, a resized window keeps its most recent calls, and a change
    /// of kind carries the totals over.
    pub(crate) fn reconfigure(&mut self, config: &CircuitBreakerConfig, now: u64) {
        self.policy = Policy::from(config);
        match (&mut self.kind, config.window) {
            (Kind::Count { outcomes, capacity }, SlidingWindow::Count(n)) => {
                let n = n as usize;
                while outcomes.len() > n {
                    if let Some(oldest) = outcomes.pop_front() {
                        self.totals.remove(oldest);
                    }
                }
                *capacity = n;
            }
            (Kind::Time { .. }, SlidingWindow::Time(period)) => {
                self.slide(now);
                let old =
                    std::mem::replace(&mut self.kind, Kind::empty(SlidingWindow::Time(period)));
                self.totals = Counts::default();
                if let Kind::Time { buckets, width, .. } = old {
                    let current = self.slide(now);
                    for bucket in buckets.iter().filter(|b| b.counts.calls > 0) {
                        // Re-file each old bucket by its start time, if still inside.
                        let start = bucket.epoch * width;
                        let index = self.index_for(start, now).unwrap_or(current);
                        self.add_to_bucket(index, &bucket.counts);
                    }
                }
            }
            (Kind::Count { .. }, SlidingWindow::Time(period)) => {
                let totals = self.totals;
                self.kind = Kind::empty(SlidingWindow::Time(period));
                self.totals = Counts::default();
                let current = self.slide(now);
                self.add_to_bucket(current, &totals);
            }
            (Kind::Time { .. }, SlidingWindow::Count(n)) => {
                let totals = self.counts(now);
                let mut outcomes = VecDeque::with_capacity(n as usize);
                // Order is lost across kinds: successes first, failures last.
                let mut push = |count: u64, outcome: u8| {
                    for _ in 0..count {
                        outcomes.push_back(outcome);
                    }
                };
                push(
                    totals.calls - totals.failures - totals.slow + totals.slow_failures,
                    0,
                );
                push(totals.slow - totals.slow_failures, SLOW);
                push(totals.failures - totals.slow_failures, FAILURE);
                push(totals.slow_failures, FAILURE | SLOW);
                self.kind = Kind::Count {
                    outcomes,
                    capacity: n as usize,
                };
                self.totals = totals;
                if let Kind::Count { outcomes, capacity } = &mut self.kind {
                    while outcomes.len() > *capacity {
                        if let Some(oldest) = outcomes.pop_front() {
                            self.totals.remove(oldest);
                        }
                    }
                }
            }
        }
    }

    /// The bucket for time `at`, if `at` is still inside the window at `now`.
    fn index_for(&self, at: u64, now: u64) -> Option<usize> {
        let Kind::Time { buckets, width, .. } = &self.kind else {
            return None;
        };
        let len = buckets.len() as u64;
        let epoch = at / width;
        let current = now / width;
        #[allow(clippy::cast_possible_truncation)]
        (epoch + len > current && epoch <= current).then_some((epoch % len) as usize)
    }

    fn add_to_bucket(&mut self, index: usize, counts: &Counts) {
        if let Kind::Time { buckets, .. } = &mut self.kind {
            buckets[index].counts.merge(counts);
        }
        self.totals.merge(counts);
    }
}

impl Kind {
    fn empty(window: SlidingWindow) -> Self {
        match window {
            SlidingWindow::Count(n) => Kind::Count {
                outcomes: VecDeque::with_capacity(n as usize),
                capacity: n as usize,
            },
            SlidingWindow::Time(period) => {
                let period = nanos(period).max(1);
                let count = MAX_BUCKETS
                    .min(period / nanos(Duration::from_millis(1)))
                    .max(1);
                let width = period.div_ceil(count);
                #[allow(clippy::cast_possible_truncation)] // at most 60
                let buckets = vec![Bucket::default(); count as usize];
                Kind::Time {
                    buckets,
                    width,
                    latest: 0,
                }
            }
        }
    }
}

impl From<&CircuitBreakerConfig> for Policy {
    fn from(config: &CircuitBreakerConfig) -> Self {
        Self {
            failure_rate: config.failure_rate,
            slow_call_rate: config.slow_call_rate,
            failure_count: config.failure_count,
            minimum_calls: config.minimum_calls,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    fn window(config: &CircuitBreakerConfig) -> Window {
        Window::new(config, 0)
    }

    #[test]
    fn count_window_slides() {
        let config = CircuitBreakerConfig::default()
            .sliding_window(SlidingWindow::Count(3))
            .failure_rate(50.0, 3);
        let mut w = window(&config);
        w.record(0, true, false);
        w.record(0, false, false);
        assert_eq!(w.failure_rate(), None, "below minimum calls");
        w.record(0, false, false);
        assert_eq!(
            w.counts(0),
            Counts {
                calls: 3,
                failures: 1,
                slow: 0,
                slow_failures: 0
            }
        );
        assert!(w.verdict().is_none());
        w.record(0, true, false); // the first failure slides out
        assert_eq!(w.counts(0).failures, 1);
        w.record(0, true, true);
        assert_eq!(
            w.counts(0),
            Counts {
                calls: 3,
                failures: 2,
                slow: 1,
                slow_failures: 1
            }
        );
        assert_eq!(w.verdict(), Some(TransitionReason::FailureRate));
    }

    #[test]
    fn minimum_calls_is_capped_by_count_window() {
        let config = CircuitBreakerConfig::default()
            .sliding_window(SlidingWindow::Count(2))
            .failure_rate(50.0, 100);
        let mut w = window(&config);
        w.record(0, true, false);
        w.record(0, true, false);
        assert_eq!(w.verdict(), Some(TransitionReason::FailureRate));
    }

    #[test]
    fn time_window_forgets_old_calls() {
        let config =
            CircuitBreakerConfig::failure_count_in(3, SlidingWindow::Time(Duration::from_secs(60)));
        let mut w = window(&config);
        w.record(10 * SEC, true, false);
        w.record(30 * SEC, true, false);
        assert_eq!(w.counts(69 * SEC).failures, 2);
        assert_eq!(
            w.counts(70 * SEC).failures,
            1,
            "the call at 10 s left the window"
        );
        w.record(71 * SEC, true, false);
        assert!(w.verdict().is_none());
        w.record(72 * SEC, true, false);
        assert_eq!(w.verdict(), Some(TransitionReason::FailureCount));
        assert_eq!(w.counts(1000 * SEC), Counts::default());
    }

    #[test]
    fn slow_call_rate_trips() {
        let config = CircuitBreakerConfig::default()
            .no_failure_rate()
            .slow_call_rate(50.0, Duration::from_secs(1))
            .minimum_calls(2);
        let mut w = window(&config);
        w.record(0, false, true);
        w.record(0, false, false);
        assert_eq!(w.slow_call_rate(), Some(50.0));
        assert_eq!(w.verdict(), Some(TransitionReason::SlowCallRate));
    }

    #[test]
    fn reconfigure_keeps_counts() {
        let config = CircuitBreakerConfig::default().sliding_window(SlidingWindow::Count(10));
        let mut w = window(&config);
        for i in 0..10 {
            w.record(0, i % 2 == 0, false);
        }
        // New thresholds: same counts.
        w.reconfigure(&config.clone().failure_rate(90.0, 5), 0);
        assert_eq!(w.counts(0).calls, 10);
        // Shrink: keeps the last four calls.
        w.reconfigure(&config.clone().sliding_window(SlidingWindow::Count(4)), 0);
        assert_eq!(
            w.counts(0),
            Counts {
                calls: 4,
                failures: 2,
                slow: 0,
                slow_failures: 0
            }
        );
        // To a time window and back: totals carried over.
        w.reconfigure(
            &config
                .clone()
                .sliding_window(SlidingWindow::Time(Duration::from_secs(60))),
            5 * SEC,
        );
        assert_eq!(w.counts(5 * SEC).failures, 2);
        w.reconfigure(
            &config
                .clone()
                .sliding_window(SlidingWindow::Time(Duration::from_secs(120))),
            6 * SEC,
        );
        assert_eq!(w.counts(6 * SEC).calls, 4);
        w.reconfigure(&config.sliding_window(SlidingWindow::Count(3)), 7 * SEC);
        assert_eq!(
            w.counts(7 * SEC),
            Counts {
                calls: 3,
                failures: 2,
                slow: 0,
                slow_failures: 0
            }
        );
    }

    #[test]
    fn reset_clears_and_retags() {
        let config = CircuitBreakerConfig::default();
        let mut w = window(&config);
        w.record(0, true, false);
        w.reset(7);
        assert_eq!(w.generation, 7);
        assert_eq!(w.counts(0), Counts::default());
    }
}
