//! Orchestration statistics: the running totals of [`OrchestrationStats`],
//! the p95 over a window of recent cycles, and the per-interval figures the
//! health loop judges.

use std::collections::VecDeque;

use orchex_core::{JobState, OrchestrationStats, ParallelExecution};

/// Cycles kept for the p95 and the recent-cycle list.
pub(crate) const CYCLE_WINDOW: usize = 256;

/// Statistics state, owned by the orchestrator behind a lock.
#[derive(Debug, Default)]
pub(crate) struct StatsRecorder {
    totals: OrchestrationStats,
    recent: VecDeque<ParallelExecution>,
    interval: IntervalFigures,
}

/// What happened since the health loop last looked.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct IntervalFigures {
    /// Cycles completed.
    pub(crate) cycles: u64,
    /// Sum of their durations.
    pub(crate) cycle_ms_total: u64,
    /// Jobs that ran to an outcome (skips excluded).
    pub(crate) finished: u64,
    /// Of which succeeded.
    pub(crate) succeeded: u64,
}

impl IntervalFigures {
    /// Success rate of the jobs that ran, `None` when none ran.
    pub(crate) fn success_rate(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)] // counts stay far below 2^52
        (self.finished > 0).then(|| self.succeeded as f64 / self.finished as f64)
    }

    /// Mean cycle time, `None` without cycles.
    pub(crate) fn average_cycle_ms(&self) -> Option<f64> {
        #[allow(clippy::cast_precision_loss)]
        (self.cycles > 0).then(|| self.cycle_ms_total as f64 / self.cycles as f64)
    }
}

impl StatsRecorder {
    /// Counts a consumed trigger.
    pub(crate) fn trigger_processed(&mut self) {
        self.totals.events_processed += 1;
    }

    /// Counts a job's final state (and a delivery when it delivered).
    pub(crate) fn job_finished(&mut self, state: JobState, delivered: bool) {
        *self
            .totals
            .jobs_by_outcome
            .entry(state.as_str().to_owned())
            .or_insert(0) += 1;
        if matches!(
            state,
            JobState::Succeeded | JobState::Failed | JobState::TimedOut | JobState::Cancelled
        ) {
            self.interval.finished += 1;
            if state == JobState::Succeeded {
                self.totals.regenerations += 1;
                self.interval.succeeded += 1;
            }
        }
        if delivered {
            self.totals.deliveries += 1;
        }
    }

    /// Folds a completed cycle in.
    pub(crate) fn cycle_completed(&mut self, cycle: ParallelExecution) {
        self.interval.cycles += 1;
        self.interval.cycle_ms_total += cycle.duration_ms;
        if self.recent.len() == CYCLE_WINDOW {
            self.recent.pop_front();
        }
        self.recent.push_back(cycle);
        let p95 = percentile(self.recent.iter().map(|c| c.duration_ms), 0.95);
        if let Some(last) = self.recent.back() {
            self.totals.record_cycle(last, p95);
        }
    }

    /// The totals.
    pub(crate) fn totals(&self) -> OrchestrationStats {
        self.totals.clone()
    }

    /// The most recent cycles, newest last.
    pub(crate) fn recent_cycles(&self) -> Vec<ParallelExecution> {
        self.recent.iter().cloned().collect()
    }

    /// Returns and resets the figures of the current health interval.
    pub(crate) fn take_interval(&mut self) -> IntervalFigures {
        std::mem::take(&mut self.interval)
    }
}

/// The `q` quantile (nearest rank) of some durations, 0 when empty.
pub(crate) fn percentile(values: impl Iterator<Item = u64>, q: f64) -> f64 {
    let mut values: Vec<u64> = values.collect();
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable();
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    #[allow(clippy::cast_precision_loss)]
    let value = values[rank - 1] as f64;
    value
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn cycle(duration_ms: u64) -> ParallelExecution {
        ParallelExecution {
            id: uuid::Uuid::now_v7(),
            started_at: Timestamp::UNIX_EPOCH,
            finished_at: Timestamp::UNIX_EPOCH,
            duration_ms,
            executed: 1,
            succeeded: 1,
            failed: 0,
            parallelism: 1,
        }
    }

    #[test]
    fn percentile_is_nearest_rank() {
        assert!((percentile(1..=100_u64, 0.95) - 95.0).abs() < f64::EPSILON);
        assert!((percentile([7].into_iter(), 0.95) - 7.0).abs() < f64::EPSILON);
        assert!(percentile(std::iter::empty(), 0.95).abs() < f64::EPSILON);
    }

    #[test]
    fn totals_and_intervals_add_up() {
        let mut stats = StatsRecorder::default();
        for ms in [10, 20, 30, 40] {
            stats.cycle_completed(cycle(ms));
        }
        stats.job_finished(JobState::Succeeded, true);
        stats.job_finished(JobState::Failed, false);
        stats.job_finished(JobState::Skipped, false);
        stats.trigger_processed();
        let totals = stats.totals();
        assert_eq!(totals.total_cycles, 4);
        assert!((totals.average_cycle_ms - 25.0).abs() < 1e-9);
        assert!((totals.p95_cycle_ms - 40.0).abs() < 1e-9);
        assert_eq!(totals.deliveries, 1);
        assert_eq!(totals.regenerations, 1);
        assert_eq!(totals.events_processed, 1);
        assert_eq!(totals.jobs_by_outcome.get("skipped"), Some(&1));
        let interval = stats.take_interval();
        assert_eq!(interval.success_rate(), Some(0.5));
        assert_eq!(interval.average_cycle_ms(), Some(25.0));
        assert_eq!(stats.take_interval(), IntervalFigures::default());
    }
}
