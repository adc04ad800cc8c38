//! The last hour of job throughput and cycle time, in one-minute buckets,
//! for the dashboard's two small charts.
//!
//! It is fed by the events themselves (job outcomes and `cycle_completed`),
//! live from the bus and, at start, from the stored events of the last
//! hour, so the charts survive a daemon restart.

use std::collections::VecDeque;

use orchex_core::{Event, EventKind, Timestamp};
use serde::Serialize;
use utoipa::ToSchema;

/// How many one-minute buckets are kept.
pub const MINUTES: usize = 60;

/// [`MINUTES`] as a signed minute count.
const SPAN: i64 = 60;

/// One minute of activity.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TimelineBucket {
    /// The start of the minute.
    #[schema(value_type = String, format = DateTime)]
    pub start: Timestamp,
    /// Jobs that reached a final state other than skipped.
    pub jobs_finished: u64,
    /// Of those, the ones that failed or timed out.
    pub jobs_failed: u64,
    /// Cycles completed.
    pub cycles: u64,
    /// The average duration of those cycles, when there were any.
    pub avg_cycle_ms: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    jobs_finished: u64,
    jobs_failed: u64,
    cycles: u64,
    cycle_ms_total: u64,
}

/// A sliding hour of per-minute counts.
#[derive(Debug, Default)]
pub struct Timeline {
    /// `(minute since the epoch, counts)`, oldest first, no gaps guaranteed.
    minutes: VecDeque<(i64, Counts)>,
}

fn minute_of(ts: Timestamp) -> i64 {
    ts.as_second().div_euclid(60)
}

impl Timeline {
    /// An empty timeline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts `event` if it is a job outcome or a completed cycle.
    pub fn record(&mut self, event: &Event) {
        let minute = minute_of(event.ts);
        let counts = match event.kind {
            EventKind::JobSucceeded
            | EventKind::JobFailed
            | EventKind::JobTimedOut
            | EventKind::JobCancelled
            | EventKind::JobInterrupted
            | EventKind::CycleCompleted => self.bucket(minute),
            _ => return,
        };
        let Some(counts) = counts else { return };
        match event.kind {
            EventKind::CycleCompleted => {
                counts.cycles += 1;
                counts.cycle_ms_total += event
                    .data
                    .get("durationMs")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0);
            }
            EventKind::JobFailed | EventKind::JobTimedOut => {
                counts.jobs_finished += 1;
                counts.jobs_failed += 1;
            }
            _ => counts.jobs_finished += 1,
        }
    }

    fn bucket(&mut self, minute: i64) -> Option<&mut Counts> {
        let newest = self.minutes.back().map_or(minute, |(m, _)| *m);
        if minute > newest || self.minutes.is_empty() {
            self.minutes.push_back((minute, Counts::default()));
            while self
                .minutes
                .front()
                .is_some_and(|(m, _)| *m <= minute - SPAN)
            {
                self.minutes.pop_front();
            }
            return self.minutes.back_mut().map(|(_, c)| c);
        }
        if minute <= newest - SPAN {
            return None;
        }
        // An event of an earlier minute (a backfill, or a clock step):
        // find its bucket, or insert it in order.
        let index = self.minutes.partition_point(|(m, _)| *m < minute);
        if self.minutes.get(index).is_none_or(|(m, _)| *m != minute) {
            self.minutes.insert(index, (minute, Counts::default()));
        }
        self.minutes.get_mut(index).map(|(_, c)| c)
    }

    /// The [`MINUTES`] buckets ending with the minute of `now`, oldest
    /// first, empty minutes included.
    pub fn buckets(&self, now: Timestamp) -> Vec<TimelineBucket> {
        let last = minute_of(now);
        let first = last - SPAN + 1;
        (first..=last)
            .map(|minute| {
                let counts = self
                    .minutes
                    .iter()
                    .find(|(m, _)| *m == minute)
                    .map(|(_, c)| *c)
                    .unwrap_or_default();
                #[allow(clippy::cast_precision_loss)] // counts stay far below 2^52
                let avg_cycle_ms = (counts.cycles > 0)
                    .then(|| counts.cycle_ms_total as f64 / counts.cycles as f64);
                TimelineBucket {
                    start: Timestamp::from_second(minute * 60).unwrap_or(Timestamp::UNIX_EPOCH),
                    jobs_finished: counts.jobs_finished,
                    jobs_failed: counts.jobs_failed,
                    cycles: counts.cycles,
                    avg_cycle_ms,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(kind: EventKind, second: i64) -> Event {
        let mut event = Event::new(kind, "test");
        event.ts = Timestamp::from_second(second).unwrap();
        event
    }

    #[test]
    fn counts_land_in_their_minute_and_age_out() {
        let mut timeline = Timeline::new();
        let base = 1_800_000_000 / 60 * 60;
        timeline.record(&at(EventKind::JobSucceeded, base + 5));
        timeline.record(&at(EventKind::JobFailed, base + 50));
        let mut cycle = at(EventKind::CycleCompleted, base + 61);
        cycle.data = serde_json::json!({"durationMs": 300});
        timeline.record(&cycle);
        let mut cycle = at(EventKind::CycleCompleted, base + 62);
        cycle.data = serde_json::json!({"durationMs": 100});
        timeline.record(&cycle);
        timeline.record(&at(EventKind::JobQueued, base + 63));
        // A late event for the first minute still counts there.
        timeline.record(&at(EventKind::JobTimedOut, base + 10));

        let buckets = timeline.buckets(Timestamp::from_second(base + 70).unwrap());
        assert_eq!(buckets.len(), MINUTES);
        let first = &buckets[MINUTES - 2];
        assert_eq!((first.jobs_finished, first.jobs_failed), (3, 2));
        let second = &buckets[MINUTES - 1];
        assert_eq!(second.cycles, 2);
        assert_eq!(second.avg_cycle_ms, Some(200.0));
        assert_eq!(buckets[0].avg_cycle_ms, None);

        // An hour later both minutes have aged out.
        timeline.record(&at(EventKind::JobSucceeded, base + 3_700));
        let buckets = timeline.buckets(Timestamp::from_second(base + 3_700).unwrap());
        let total: u64 = buckets.iter().map(|b| b.jobs_finished).sum();
        assert_eq!(total, 1);
        assert!(timeline.minutes.len() <= MINUTES);
    }
}
