//! Retention: purging old events (and, optionally, old finished jobs) on a
//! timer.

use std::sync::Arc;
use std::time::Duration;

use crate::error::Result;
use crate::traits::{EventStore, JobStore, cutoff_before_now};

/// How long records are kept, and how often the purge runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetentionPolicy {
    /// Events older than this are deleted (`retentionPeriodDays`).
    pub events_max_age: Duration,
    /// Finished jobs (with their steps and backups) older than this are
    /// deleted; `None` keeps jobs forever.
    pub jobs_max_age: Option<Duration>,
    /// How often the purge runs. The first run is at once.
    pub interval: Duration,
}

impl RetentionPolicy {
    /// Keeps events for `days` days, jobs forever, purging hourly.
    pub fn days(days: u32) -> Self {
        Self {
            events_max_age: Duration::from_secs(u64::from(days) * 86_400),
            jobs_max_age: None,
            interval: Duration::from_secs(3600),
        }
    }

    /// Also purges finished jobs older than `max_age`.
    #[must_use]
    pub fn jobs_max_age(mut self, max_age: Duration) -> Self {
        self.jobs_max_age = Some(max_age);
        self
    }

    /// Sets how often the purge runs.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }
}

/// What one retention pass deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PurgeReport {
    /// Events deleted.
    pub events: u64,
    /// Finished jobs deleted.
    pub jobs: u64,
}

/// Runs one retention pass now.
pub async fn purge_once<S>(store: &S, policy: &RetentionPolicy) -> Result<PurgeReport>
where
    S: EventStore + JobStore + ?Sized,
{
    let events = store.purge_older_than(policy.events_max_age).await?;
    let jobs = match policy.jobs_max_age {
        Some(max_age) => {
            store
                .purge_jobs_finished_before(cutoff_before_now(max_age)?)
                .await?
        }
        None => 0,
    };
    Ok(PurgeReport { events, jobs })
}

/// Purges on `policy.interval` forever; spawn it and abort the task to stop.
/// A failed pass is logged and retried at the next tick.
pub async fn run_retention<S>(store: Arc<S>, policy: RetentionPolicy)
where
    S: EventStore + JobStore + ?Sized,
{
    let mut ticker = tokio::time::interval(policy.interval.max(Duration::from_secs(1)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        match purge_once(&*store, &policy).await {
            Ok(report) if report.events > 0 || report.jobs > 0 => {
                tracing::info!(
                    events = report.events,
                    jobs = report.jobs,
                    "retention purged old records"
                );
            }
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(error = %err, "retention pass failed; retrying at the next tick");
            }
        }
    }
}
