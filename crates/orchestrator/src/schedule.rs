//! The `schedule` trigger: one run per repository per interval, jittered so
//! that repositories do not all start at once, and a window missed while the
//! daemon was down run once, soon after start.
//!
//! [`Scheduler`] is pure: it is driven by the instant passed to its methods
//! and never reads a clock, so its behaviour is tested exactly. The
//! orchestrator persists each repository's last scheduled run and feeds it
//! back at start.
//!
//! Each repository gets a stable phase in [0, 1) derived from its name. Its
//! runs are due at `last + interval + phase × jitter`, where the jitter is a
//! tenth of the interval (at most five minutes). A repository with no
//! recorded run starts at `now + phase × interval`, spreading first runs
//! over one interval. A repository whose window passed while the daemon was
//! down runs at `now + startup delay + phase × min(interval, 1 min)`, once;
//! the windows it missed are not replayed.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use orchex_core::RepoId;

/// Delay before catching up a missed window, so start-up work settles first.
pub const STARTUP_DELAY: Duration = Duration::from_secs(10);
/// The largest jitter added to a regular run.
pub const MAX_JITTER: Duration = Duration::from_secs(300);

/// Per-repository interval schedules.
#[derive(Debug, Clone)]
pub struct Scheduler {
    interval: Duration,
    repos: HashMap<RepoId, Entry>,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    phase: f64,
    last_run: Option<Timestamp>,
    next_due: Timestamp,
}

fn phase_of(repo: &RepoId) -> f64 {
    let mut hasher = DefaultHasher::new();
    repo.as_str().hash(&mut hasher);
    // The top 53 bits make an exact f64 fraction in [0, 1).
    #[allow(clippy::cast_precision_loss)]
    let fraction = (hasher.finish() >> 11) as f64 / (1_u64 << 53) as f64;
    fraction
}

fn scaled(duration: Duration, factor: f64) -> SignedDuration {
    SignedDuration::try_from(duration.mul_f64(factor.clamp(0.0, 1.0)))
        .unwrap_or(SignedDuration::ZERO)
}

fn signed(duration: Duration) -> SignedDuration {
    SignedDuration::try_from(duration).unwrap_or(SignedDuration::MAX)
}

impl Scheduler {
    /// A scheduler running every repository once per `interval`.
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            repos: HashMap::new(),
        }
    }

    /// The configured interval.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    fn jitter(&self) -> Duration {
        (self.interval / 10).min(MAX_JITTER)
    }

    fn regular_due(&self, phase: f64, last_run: Timestamp) -> Timestamp {
        last_run
            .saturating_add(signed(self.interval))
            .and_then(|t| t.saturating_add(scaled(self.jitter(), phase)))
            .unwrap_or(Timestamp::MAX)
    }

    fn initial_due(&self, phase: f64, last_run: Option<Timestamp>, now: Timestamp) -> Timestamp {
        match last_run {
            None => now
                .saturating_add(scaled(self.interval, phase))
                .unwrap_or(Timestamp::MAX),
            Some(last) => {
                let due = self.regular_due(phase, last);
                if due > now {
                    due
                } else {
                    // Missed while down: once, soon.
                    let spread = scaled(self.interval.min(Duration::from_secs(60)), phase);
                    now.saturating_add(signed(STARTUP_DELAY))
                        .and_then(|t| t.saturating_add(spread))
                        .unwrap_or(Timestamp::MAX)
                }
            }
        }
    }

    /// Starts scheduling `repo`, whose last scheduled run (if any) was
    /// `last_run`. Re-adding a repository keeps its state.
    pub fn add_repo(&mut self, repo: RepoId, last_run: Option<Timestamp>, now: Timestamp) {
        if self.repos.contains_key(&repo) {
            return;
        }
        let phase = phase_of(&repo);
        let next_due = self.initial_due(phase, last_run, now);
        self.repos.insert(
            repo,
            Entry {
                phase,
                last_run,
                next_due,
            },
        );
    }

    /// Keeps only the repositories for which `keep` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&RepoId) -> bool) {
        self.repos.retain(|repo, _| keep(repo));
    }

    /// Stops scheduling `repo`.
    pub fn remove_repo(&mut self, repo: &RepoId) {
        self.repos.remove(repo);
    }

    /// Changes the interval; each repository's next run is recomputed from
    /// its last run, so no state is lost and nothing fires twice.
    pub fn set_interval(&mut self, interval: Duration, now: Timestamp) {
        if interval == self.interval {
            return;
        }
        self.interval = interval;
        let entries: Vec<(RepoId, Entry)> = self.repos.drain().collect();
        for (repo, entry) in entries {
            let next_due = self.initial_due(entry.phase, entry.last_run, now);
            self.repos.insert(repo, Entry { next_due, ..entry });
        }
    }

    /// The repositories due at `now`, each rescheduled one interval later.
    /// The caller records `now` as their last run.
    pub fn take_due(&mut self, now: Timestamp) -> Vec<RepoId> {
        let mut due: Vec<RepoId> = Vec::new();
        let interval_due: Vec<(RepoId, f64)> = self
            .repos
            .iter()
            .filter(|(_, entry)| entry.next_due <= now)
            .map(|(repo, entry)| (repo.clone(), entry.phase))
            .collect();
        for (repo, phase) in interval_due {
            let next_due = self.regular_due(phase, now);
            if let Some(entry) = self.repos.get_mut(&repo) {
                entry.last_run = Some(now);
                entry.next_due = next_due;
            }
            due.push(repo);
        }
        due.sort();
        due
    }

    /// When the next repository is due, if any is scheduled.
    pub fn next_due(&self) -> Option<Timestamp> {
        self.repos.values().map(|entry| entry.next_due).min()
    }

    /// When `repo` is next due.
    pub fn next_due_of(&self, repo: &RepoId) -> Option<Timestamp> {
        self.repos.get(repo).map(|entry| entry.next_due)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn repo(name: &str) -> RepoId {
        RepoId::new(name).unwrap()
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    #[test]
    fn first_runs_are_spread_over_one_interval() {
        let mut scheduler = Scheduler::new(HOUR);
        let names: Vec<String> = (0..50).map(|i| format!("repo-{i}")).collect();
        for name in &names {
            scheduler.add_repo(repo(name), None, at(0));
        }
        let dues: Vec<Timestamp> = names
            .iter()
            .map(|n| scheduler.next_due_of(&repo(n)).unwrap())
            .collect();
        assert!(dues.iter().all(|d| *d >= at(0) && *d < at(3600)));
        let distinct: std::collections::HashSet<_> = dues.iter().collect();
        assert!(
            distinct.len() > 40,
            "first runs are not spread: {distinct:?}"
        );
    }

    #[test]
    fn runs_repeat_every_interval_plus_a_bounded_jitter() {
        let mut scheduler = Scheduler::new(HOUR);
        scheduler.add_repo(repo("api"), Some(at(0)), at(10));
        let due = scheduler.next_due_of(&repo("api")).unwrap();
        assert!(due >= at(3600) && due <= at(3600 + 360), "{due}");
        assert!(scheduler.take_due(at(3599)).is_empty());
        assert_eq!(scheduler.take_due(due), vec![repo("api")]);
        // Fires once per window.
        assert!(scheduler.take_due(due).is_empty());
        let next = scheduler.next_due_of(&repo("api")).unwrap();
        assert!(next >= due.saturating_add(signed(HOUR)).unwrap());
    }

    #[test]
    fn a_missed_window_runs_once_soon_after_start() {
        let mut scheduler = Scheduler::new(HOUR);
        // Last ran ten hours ago: nine windows were missed.
        scheduler.add_repo(repo("api"), Some(at(0)), at(36_000));
        let due = scheduler.next_due_of(&repo("api")).unwrap();
        assert!(due >= at(36_010) && due <= at(36_070), "{due}");
        assert_eq!(scheduler.take_due(at(36_070)), vec![repo("api")]);
        // Then back to the regular interval, not a replay of the missed ones.
        assert!(scheduler.take_due(at(36_071)).is_empty());
        assert!(scheduler.next_due_of(&repo("api")).unwrap() >= at(36_070 + 3600));
    }

    #[test]
    fn changing_the_interval_keeps_the_last_run() {
        let mut scheduler = Scheduler::new(HOUR);
        scheduler.add_repo(repo("api"), Some(at(0)), at(60));
        scheduler.set_interval(Duration::from_secs(600), at(60));
        let due = scheduler.next_due_of(&repo("api")).unwrap();
        assert!(due >= at(600) && due <= at(660), "{due}");
        scheduler.remove_repo(&repo("api"));
        assert_eq!(scheduler.next_due(), None);
    }

    #[test]
    fn phases_are_stable_and_in_range() {
        for name in ["a", "api", "web-frontend"] {
            let phase = phase_of(&repo(name));
            assert!((0.0..1.0).contains(&phase));
            assert!((phase - phase_of(&repo(name))).abs() < f64::EPSILON);
        }
    }
}
