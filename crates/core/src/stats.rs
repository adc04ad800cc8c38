//! Orchestration statistics: per-cycle records and running totals.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Timestamp;

/// The record of one cycle: what ran, how it went, how parallel it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ParallelExecution {
    /// Unique id of the cycle (UUID v7).
    pub id: Uuid,
    /// When the cycle started.
    pub started_at: Timestamp,
    /// When the cycle ended.
    pub finished_at: Timestamp,
    /// Wall time of the cycle.
    pub duration_ms: u64,
    /// Jobs the cycle ran.
    pub executed: u32,
    /// Jobs that succeeded.
    pub succeeded: u32,
    /// Jobs that did not succeed (failed, timed out, cancelled).
    pub failed: u32,
    /// The largest number of jobs that ran at once during the cycle.
    pub parallelism: u32,
}

/// Running totals over every cycle since the orchestrator started.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OrchestrationStats {
    /// Cycles completed.
    pub total_cycles: u64,
    /// Mean cycle wall time.
    pub average_cycle_ms: f64,
    /// 95th percentile of cycle wall time (over a recent window).
    pub p95_cycle_ms: f64,
    /// Triggers consumed.
    pub events_processed: u64,
    /// Jobs that ran to completion (regenerations).
    pub regenerations: u64,
    /// Jobs whose result was delivered.
    pub deliveries: u64,
    /// Jobs per final state name.
    pub jobs_by_outcome: BTreeMap<String, u64>,
}

impl OrchestrationStats {
    /// Folds one cycle into the totals. `p95_cycle_ms` is computed by the
    /// caller over its window of recent cycles and passed in.
    pub fn record_cycle(&mut self, cycle: &ParallelExecution, p95_cycle_ms: f64) {
        self.total_cycles += 1;
        #[allow(clippy::cast_precision_loss)] // cycle counts stay far below 2^52
        let n = self.total_cycles as f64;
        #[allow(clippy::cast_precision_loss)]
        let duration = cycle.duration_ms as f64;
        self.average_cycle_ms += (duration - self.average_cycle_ms) / n;
        self.p95_cycle_ms = p95_cycle_ms;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn average_is_a_running_mean() {
        let mut stats = OrchestrationStats::default();
        for duration_ms in [10, 20, 30] {
            let cycle = ParallelExecution {
                id: Uuid::now_v7(),
                started_at: Timestamp::UNIX_EPOCH,
                finished_at: Timestamp::UNIX_EPOCH,
                duration_ms,
                executed: 1,
                succeeded: 1,
                failed: 0,
                parallelism: 1,
            };
            stats.record_cycle(&cycle, 30.0);
        }
        assert_eq!(stats.total_cycles, 3);
        assert!((stats.average_cycle_ms - 20.0).abs() < 1e-9);
    }
}
