//! Settling: turning a stream of individual path changes into batches.
//!
//! [`Settler`] is a pure state machine. It never reads a clock: every input
//! carries the instant at which it happened, and [`Settler::poll`] is told
//! what time it is. That makes its behaviour exact under test (a manual
//! clock, or `tokio::time::pause`) and keeps the timing rules in one place.
//!
//! The rules (PRODUCT.md §3):
//!
//! - the quiet period `debounce` restarts on every change;
//! - a batch never waits longer than `max_wait` after its first change;
//! - a batch with fewer than `min_changes` distinct paths waits for more
//!   and fires only once `max_wait` has passed;
//! - nothing fires while the repository is locked (`.git/index.lock`
//!   exists); when the lock goes away the quiet period restarts from that
//!   instant, still bounded by `max_wait` (so an overdue batch fires at once).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// The timing rules of a [`Settler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettleConfig {
    /// Quiet period after the last change before a batch fires.
    pub debounce: Duration,
    /// Longest a batch waits after its first change, however busy the tree.
    pub max_wait: Duration,
    /// Fewest distinct paths for a batch to fire before `max_wait`.
    pub min_changes: usize,
}

impl SettleConfig {
    /// The rules of `[monitor.filesystem]` and `[monitor.triggers]`.
    pub fn from_config(
        filesystem: &orchex_core::config::FilesystemConfig,
        triggers: &orchex_core::config::TriggersConfig,
    ) -> Self {
        Self {
            debounce: Duration::from_millis(filesystem.debounce_ms),
            max_wait: Duration::from_millis(filesystem.max_wait_ms),
            min_changes: usize::try_from(triggers.min_changes_threshold).unwrap_or(usize::MAX),
        }
    }
}

impl Default for SettleConfig {
    fn default() -> Self {
        Self {
            debounce: Duration::from_secs(2),
            max_wait: Duration::from_secs(30),
            min_changes: 1,
        }
    }
}

/// A batch that has settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Distinct repository-relative paths, sorted.
    pub paths: Vec<String>,
    /// When the first change of the batch was recorded.
    pub first_change: Instant,
    /// When the last change of the batch was recorded.
    pub last_change: Instant,
    /// Whether a rescan contributed paths to the batch.
    pub rescan: bool,
}

/// Collects changes of one repository and decides when they have settled.
///
/// # Example
///
/// ```
/// use std::time::{Duration, Instant};
/// use orchex_monitor::settle::{SettleConfig, Settler};
///
/// let config = SettleConfig {
///     debounce: Duration::from_millis(100),
///     max_wait: Duration::from_millis(1000),
///     min_changes: 1,
/// };
/// let mut settler = Settler::new(config);
/// let t0 = Instant::now();
/// settler.record(["src/a.rs"], t0);
/// settler.record(["src/a.rs", "src/b.rs"], t0 + Duration::from_millis(50));
/// // The quiet period restarted at 50 ms.
/// assert!(settler.poll(t0 + Duration::from_millis(120)).is_none());
/// let batch = settler.poll(t0 + Duration::from_millis(150)).unwrap();
/// assert_eq!(batch.paths, ["src/a.rs", "src/b.rs"]);
/// ```
#[derive(Debug, Clone)]
pub struct Settler {
    config: SettleConfig,
    paths: BTreeSet<String>,
    first_change: Option<Instant>,
    last_change: Option<Instant>,
    /// Last activity that restarts the quiet period: a change or an unlock.
    last_activity: Option<Instant>,
    rescan: bool,
    locked: bool,
}

impl Settler {
    /// An empty settler.
    pub fn new(config: SettleConfig) -> Self {
        Self {
            config,
            paths: BTreeSet::new(),
            first_change: None,
            last_change: None,
            last_activity: None,
            rescan: false,
            locked: false,
        }
    }

    /// The rules in force.
    pub fn config(&self) -> SettleConfig {
        self.config
    }

    /// Replaces the rules; pending paths are kept and judged by the new rules.
    pub fn set_config(&mut self, config: SettleConfig) {
        self.config = config;
    }

    /// Records changed paths seen at `now`. An empty iterator changes nothing.
    pub fn record<I, S>(&mut self, paths: I, now: Instant)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut any = false;
        for path in paths {
            self.paths.insert(path.into());
            any = true;
        }
        if !any {
            return;
        }
        // A path seen again still restarts the quiet period: the file is
        // still being written.
        self.first_change.get_or_insert(now);
        self.last_change = Some(now);
        self.last_activity = Some(now);
    }

    /// Records paths found by a rescan (after a queue overflow, or forced).
    pub fn record_rescan<I, S>(&mut self, paths: I, now: Instant)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let before = self.last_change;
        self.record(paths, now);
        if self.last_change != before {
            self.rescan = true;
        }
    }

    /// Whether `.git/index.lock` is held; while it is, nothing fires.
    pub fn set_locked(&mut self, locked: bool, now: Instant) {
        if self.locked && !locked && !self.paths.is_empty() {
            // The git operation is over: let the tree settle from here.
            self.last_activity = Some(now);
        }
        self.locked = locked;
    }

    /// Whether the repository is locked.
    pub fn is_locked(&self) -> bool {
        self.locked
    }

    /// Number of distinct paths waiting.
    pub fn pending(&self) -> usize {
        self.paths.len()
    }

    /// When the pending batch is due, if one is pending and the repository is
    /// not locked. The caller wakes up then and calls [`Settler::poll`].
    pub fn deadline(&self) -> Option<Instant> {
        if self.locked {
            return None;
        }
        let first = self.first_change?;
        let last_activity = self.last_activity?;
        let max_deadline = first + self.config.max_wait;
        let due = if self.paths.len() >= self.config.min_changes {
            (last_activity + self.config.debounce).min(max_deadline)
        } else {
            max_deadline
        };
        // Never before the last activity (an unlock after the bound passed
        // fires at the unlock, not in the past).
        Some(due.max(last_activity))
    }

    /// Takes the pending batch if it is due at `now`.
    pub fn poll(&mut self, now: Instant) -> Option<Settled> {
        let deadline = self.deadline()?;
        if now < deadline {
            return None;
        }
        let first_change = self.first_change.take()?;
        let last_change = self.last_change.take().unwrap_or(first_change);
        self.last_activity = None;
        let rescan = std::mem::take(&mut self.rescan);
        Some(Settled {
            paths: std::mem::take(&mut self.paths).into_iter().collect(),
            first_change,
            last_change,
            rescan,
        })
    }

    /// Drops whatever is pending (the repository went away).
    pub fn clear(&mut self) {
        self.paths.clear();
        self.first_change = None;
        self.last_change = None;
        self.last_activity = None;
        self.rescan = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn settler(debounce: u64, max_wait: u64, min_changes: usize) -> Settler {
        Settler::new(SettleConfig {
            debounce: ms(debounce),
            max_wait: ms(max_wait),
            min_changes,
        })
    }

    #[test]
    fn nothing_pending_means_no_deadline() {
        let mut s = settler(100, 1000, 1);
        let t0 = Instant::now();
        assert_eq!(s.deadline(), None);
        assert_eq!(s.poll(t0 + ms(10_000)), None);
        s.record(Vec::<String>::new(), t0);
        assert_eq!(s.deadline(), None);
    }

    #[test]
    fn quiet_period_restarts_on_every_change() {
        let mut s = settler(100, 10_000, 1);
        let t0 = Instant::now();
        for i in 0..10 {
            s.record([format!("f{i}")], t0 + ms(i * 90));
            assert_eq!(s.poll(t0 + ms(i * 90 + 89)), None);
        }
        assert_eq!(s.deadline(), Some(t0 + ms(810 + 100)));
        assert_eq!(s.poll(t0 + ms(909)), None);
        let batch = s.poll(t0 + ms(910)).unwrap();
        assert_eq!(batch.paths.len(), 10);
        assert_eq!(batch.first_change, t0);
        assert_eq!(batch.last_change, t0 + ms(810));
        assert_eq!(s.pending(), 0);
        assert_eq!(s.deadline(), None);
    }

    #[test]
    fn max_wait_bounds_a_busy_tree() {
        let mut s = settler(100, 500, 1);
        let t0 = Instant::now();
        // A change every 50 ms never leaves a quiet period.
        let mut fired = None;
        for i in 0..40 {
            let now = t0 + ms(i * 50);
            if let Some(batch) = s.poll(now) {
                fired = Some((now, batch));
                break;
            }
            s.record(["busy.txt"], now);
        }
        let (at, batch) = fired.unwrap();
        assert_eq!(at, t0 + ms(500));
        assert_eq!(batch.paths, ["busy.txt"]);
    }

    #[test]
    fn paths_are_distinct_and_sorted() {
        let mut s = settler(0, 1000, 1);
        let t0 = Instant::now();
        s.record(["b", "a", "b", "c/d", "a"], t0);
        let batch = s.poll(t0).unwrap();
        assert_eq!(batch.paths, ["a", "b", "c/d"]);
    }

    #[test]
    fn small_batches_wait_for_max_wait() {
        let mut s = settler(100, 1000, 3);
        let t0 = Instant::now();
        s.record(["a", "b"], t0);
        assert_eq!(s.deadline(), Some(t0 + ms(1000)));
        assert_eq!(s.poll(t0 + ms(999)), None);
        let batch = s.poll(t0 + ms(1000)).unwrap();
        assert_eq!(batch.paths, ["a", "b"]);
    }

    #[test]
    fn reaching_the_threshold_fires_after_the_quiet_period() {
        let mut s = settler(100, 1000, 3);
        let t0 = Instant::now();
        s.record(["a", "b"], t0);
        assert_eq!(s.poll(t0 + ms(200)), None);
        s.record(["c"], t0 + ms(300));
        assert_eq!(s.deadline(), Some(t0 + ms(400)));
        assert_eq!(s.poll(t0 + ms(400)).unwrap().paths, ["a", "b", "c"]);
    }

    #[test]
    fn index_lock_defers_then_fires_after_unlock() {
        let mut s = settler(100, 1000, 1);
        let t0 = Instant::now();
        s.set_locked(true, t0);
        s.record(["a"], t0);
        assert_eq!(s.deadline(), None);
        // Even past max_wait nothing fires while locked.
        assert_eq!(s.poll(t0 + ms(5000)), None);
        s.set_locked(false, t0 + ms(5000));
        // Overdue: fires at the unlock.
        assert_eq!(s.deadline(), Some(t0 + ms(5000)));
        assert_eq!(s.poll(t0 + ms(5000)).unwrap().paths, ["a"]);
    }

    #[test]
    fn unlock_restarts_the_quiet_period_when_not_overdue() {
        let mut s = settler(100, 1000, 1);
        let t0 = Instant::now();
        s.record(["a"], t0);
        s.set_locked(true, t0 + ms(10));
        assert_eq!(s.poll(t0 + ms(200)), None);
        s.set_locked(false, t0 + ms(300));
        assert_eq!(s.deadline(), Some(t0 + ms(400)));
        assert_eq!(s.poll(t0 + ms(399)), None);
        assert!(s.poll(t0 + ms(400)).is_some());
    }

    #[test]
    fn rescan_flag_is_carried_and_reset() {
        let mut s = settler(0, 1000, 1);
        let t0 = Instant::now();
        s.record_rescan(["x"], t0);
        assert!(s.poll(t0).unwrap().rescan);
        s.record(["y"], t0);
        assert!(!s.poll(t0).unwrap().rescan);
    }

    #[test]
    fn new_config_applies_to_pending_changes() {
        let mut s = settler(1000, 10_000, 1);
        let t0 = Instant::now();
        s.record(["a"], t0);
        s.set_config(SettleConfig {
            debounce: ms(10),
            max_wait: ms(10_000),
            min_changes: 1,
        });
        assert_eq!(s.deadline(), Some(t0 + ms(10)));
    }

    #[test]
    fn zero_debounce_fires_immediately() {
        let mut s = settler(0, 0, 1);
        let t0 = Instant::now();
        s.record(["a"], t0);
        assert_eq!(s.poll(t0).unwrap().paths, ["a"]);
    }
}
