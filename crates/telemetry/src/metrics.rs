//! Every orchex metric (PRODUCT.md §10) in one place: names, descriptions
//! with units, histogram buckets, and a small typed API to record them.
//!
//! The functions go through the `metrics` facade, so they cost nothing but
//! a no-op until a recorder is installed ([`crate::install_prometheus`]).
//! Label values are bounded: repository, pipeline, breaker and limiter-key
//! names, outcomes and event kinds; never job ids or paths.

use std::time::Duration;

use ::metrics::{
    Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
};
use orchex_core::{EventKind, JobState, RepoId};

/// The metric names, so that no other crate spells them.
pub mod names {
    /// Counter `{repo, pipeline, outcome}`: jobs that reached a final state.
    pub const JOBS_TOTAL: &str = "orchex_jobs_total";
    /// Histogram `{pipeline}`, seconds: wall time of finished jobs.
    pub const JOB_DURATION_SECONDS: &str = "orchex_job_duration_seconds";
    /// Gauge: jobs running now.
    pub const JOBS_RUNNING: &str = "orchex_jobs_running";
    /// Gauge: jobs waiting in the queue.
    pub const QUEUE_DEPTH: &str = "orchex_queue_depth";
    /// Counter: orchestration cycles completed.
    pub const CYCLES_TOTAL: &str = "orchex_cycles_total";
    /// Histogram, seconds: wall time of a cycle.
    pub const CYCLE_DURATION_SECONDS: &str = "orchex_cycle_duration_seconds";
    /// Gauge: the current (adaptive) concurrency limit.
    pub const CONCURRENCY_LIMIT: &str = "orchex_concurrency_limit";
    /// Counter `{repo}`: changed paths detected (settled batches' paths).
    pub const CHANGES_DETECTED_TOTAL: &str = "orchex_changes_detected_total";
    /// Histogram, seconds: wall time of a repository analysis.
    pub const ANALYSIS_DURATION_SECONDS: &str = "orchex_analysis_duration_seconds";
    /// Counter: analyses answered from the cache.
    pub const ANALYSIS_CACHE_HITS_TOTAL: &str = "orchex_analysis_cache_hits_total";
    /// Counter: analyses computed.
    pub const ANALYSIS_CACHE_MISSES_TOTAL: &str = "orchex_analysis_cache_misses_total";
    /// Gauge `{repo}`: health score in [0, 1].
    pub const REPOSITORY_HEALTH_SCORE: &str = "orchex_repository_health_score";
    /// Gauge `{repo}`: chaos score in [0, 1].
    pub const REPOSITORY_CHAOS_SCORE: &str = "orchex_repository_chaos_score";
    /// Gauge `{repo}`: complexity score in [0, 1].
    pub const REPOSITORY_COMPLEXITY_SCORE: &str = "orchex_repository_complexity_score";
    /// Gauge `{name}`: 0 closed, 1 open, 2 half-open.
    pub const CIRCUIT_BREAKER_STATE: &str = "orchex_circuit_breaker_state";
    /// Counter `{name, outcome}`: calls through a circuit breaker.
    pub const CIRCUIT_BREAKER_CALLS_TOTAL: &str = "orchex_circuit_breaker_calls_total";
    /// Counter `{key}`: calls refused by a rate limiter.
    pub const RATE_LIMITER_REJECTIONS_TOTAL: &str = "orchex_rate_limiter_rejections_total";
    /// Counter `{kind}`: events published on the bus.
    pub const EVENTS_TOTAL: &str = "orchex_events_total";
    /// Counter: events dropped (bus queue full, or the store refused them
    /// after every retry).
    pub const TELEMETRY_EVENTS_DROPPED_TOTAL: &str = "orchex_telemetry_events_dropped_total";
    /// Counter: events written to the event store.
    pub const TELEMETRY_EVENTS_PERSISTED_TOTAL: &str = "orchex_telemetry_events_persisted_total";
    /// Counter: failed attempts to write a batch of events to the store.
    pub const TELEMETRY_STORE_ERRORS_TOTAL: &str = "orchex_telemetry_store_errors_total";
    /// Gauge: events waiting in the bus queue for the persistence writer.
    pub const TELEMETRY_QUEUE_LENGTH: &str = "orchex_telemetry_queue_length";
    /// Counter: jobs queued (coalesced submissions are not counted).
    pub const JOBS_QUEUED_TOTAL: &str = "orchex_jobs_queued_total";
}

use names::{
    ANALYSIS_CACHE_HITS_TOTAL, ANALYSIS_CACHE_MISSES_TOTAL, ANALYSIS_DURATION_SECONDS,
    CHANGES_DETECTED_TOTAL, CIRCUIT_BREAKER_CALLS_TOTAL, CIRCUIT_BREAKER_STATE, CONCURRENCY_LIMIT,
    CYCLE_DURATION_SECONDS, CYCLES_TOTAL, EVENTS_TOTAL, JOB_DURATION_SECONDS, JOBS_QUEUED_TOTAL,
    JOBS_RUNNING, JOBS_TOTAL, QUEUE_DEPTH, RATE_LIMITER_REJECTIONS_TOTAL, REPOSITORY_CHAOS_SCORE,
    REPOSITORY_COMPLEXITY_SCORE, REPOSITORY_HEALTH_SCORE, TELEMETRY_EVENTS_DROPPED_TOTAL,
    TELEMETRY_EVENTS_PERSISTED_TOTAL, TELEMETRY_QUEUE_LENGTH, TELEMETRY_STORE_ERRORS_TOTAL,
};

/// Buckets of `orchex_job_duration_seconds`: jobs take seconds to an hour.
pub const JOB_DURATION_BUCKETS: &[f64] = &[
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
];
/// Buckets of `orchex_cycle_duration_seconds`.
pub const CYCLE_DURATION_BUCKETS: &[f64] = &[
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0,
];
/// Buckets of `orchex_analysis_duration_seconds`.
pub const ANALYSIS_DURATION_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets of any other `*_duration_seconds` histogram.
pub const DEFAULT_DURATION_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0,
];

/// Describes every metric (help text and unit) to the installed recorder.
/// [`crate::install_prometheus`] calls it; other recorders may call it too.
pub fn describe_all() {
    describe_counter!(
        JOBS_TOTAL,
        Unit::Count,
        "Jobs that reached a final state, by repository, pipeline and outcome (final state)."
    );
    describe_histogram!(
        JOB_DURATION_SECONDS,
        Unit::Seconds,
        "Wall time of finished jobs, by pipeline."
    );
    describe_gauge!(JOBS_RUNNING, Unit::Count, "Jobs running now.");
    describe_gauge!(QUEUE_DEPTH, Unit::Count, "Jobs waiting in the queue.");
    describe_counter!(CYCLES_TOTAL, Unit::Count, "Orchestration cycles completed.");
    describe_histogram!(
        CYCLE_DURATION_SECONDS,
        Unit::Seconds,
        "Wall time of orchestration cycles."
    );
    describe_gauge!(
        CONCURRENCY_LIMIT,
        Unit::Count,
        "The current concurrency limit (adaptive within [1, maxConcurrent])."
    );
    describe_counter!(
        CHANGES_DETECTED_TOTAL,
        Unit::Count,
        "Changed paths detected in settled batches, by repository."
    );
    describe_histogram!(
        ANALYSIS_DURATION_SECONDS,
        Unit::Seconds,
        "Wall time of repository analyses."
    );
    describe_counter!(
        ANALYSIS_CACHE_HITS_TOTAL,
        Unit::Count,
        "Analyses answered from the cache."
    );
    describe_counter!(
        ANALYSIS_CACHE_MISSES_TOTAL,
        Unit::Count,
        "Analyses that had to be computed."
    );
    describe_gauge!(
        REPOSITORY_HEALTH_SCORE,
        "Repository health score in [0, 1], by repository."
    );
    describe_gauge!(
        REPOSITORY_CHAOS_SCORE,
        "Repository chaos score (normalised change entropy) in [0, 1], by repository."
    );
    describe_gauge!(
        REPOSITORY_COMPLEXITY_SCORE,
        "Repository complexity score in [0, 1], by repository."
    );
    describe_gauge!(
        CIRCUIT_BREAKER_STATE,
        "Circuit breaker state: 0 closed, 1 open, 2 half-open."
    );
    describe_counter!(
        CIRCUIT_BREAKER_CALLS_TOTAL,
        Unit::Count,
        "Calls through circuit breakers, by breaker and outcome."
    );
    describe_counter!(
        RATE_LIMITER_REJECTIONS_TOTAL,
        Unit::Count,
        "Calls refused by rate limiters, by key."
    );
    describe_counter!(
        EVENTS_TOTAL,
        Unit::Count,
        "Events published on the telemetry bus, by kind."
    );
    describe_counter!(
        TELEMETRY_EVENTS_DROPPED_TOTAL,
        Unit::Count,
        "Events dropped: the bus queue was full, or the event store refused them after every retry."
    );
    describe_counter!(
        TELEMETRY_EVENTS_PERSISTED_TOTAL,
        Unit::Count,
        "Events written to the event store."
    );
    describe_counter!(
        TELEMETRY_STORE_ERRORS_TOTAL,
        Unit::Count,
        "Failed attempts to write a batch of events to the event store."
    );
    describe_gauge!(
        TELEMETRY_QUEUE_LENGTH,
        Unit::Count,
        "Events waiting in the bus queue for the persistence writer."
    );
    describe_counter!(
        JOBS_QUEUED_TOTAL,
        Unit::Count,
        "Jobs queued (coalesced submissions are not counted)."
    );
    describe_resilience();
}

/// The series `orchex-resilience` records (its crate docs list them), so
/// that every series in the exposition has help text.
fn describe_resilience() {
    describe_counter!(
        "orchex_circuit_breaker_slow_calls_total",
        Unit::Count,
        "Calls slower than the breaker's slow-call threshold, by breaker and outcome."
    );
    describe_gauge!(
        "orchex_circuit_breaker_failure_rate",
        "Failure rate in the breaker's window, in percent (-1 below the minimum number of calls)."
    );
    describe_counter!(
        "orchex_circuit_breaker_transitions_total",
        Unit::Count,
        "Circuit breaker state transitions, by breaker, from and to."
    );
    describe_gauge!(
        "orchex_rate_limiter_keys",
        Unit::Count,
        "Keys tracked by a keyed rate limiter."
    );
    describe_gauge!(
        "orchex_bulkhead_in_flight",
        Unit::Count,
        "Calls running inside a bulkhead."
    );
    describe_gauge!(
        "orchex_bulkhead_max_concurrent",
        Unit::Count,
        "A bulkhead's concurrency limit."
    );
    describe_gauge!(
        "orchex_bulkhead_queue_depth",
        Unit::Count,
        "Calls waiting to enter a bulkhead."
    );
    describe_counter!(
        "orchex_bulkhead_rejections_total",
        Unit::Count,
        "Calls a bulkhead refused, by reason (full, timeout)."
    );
    describe_counter!(
        "orchex_retry_calls_total",
        Unit::Count,
        "Calls through a retry policy, by outcome."
    );
    describe_counter!(
        "orchex_retry_budget_exhausted_total",
        Unit::Count,
        "Retries refused because the retry budget was spent."
    );
    describe_counter!(
        "orchex_timeout_calls_total",
        Unit::Count,
        "Calls through a timeout, by outcome (completed, timeout)."
    );
    describe_gauge!(
        "orchex_adaptive_limit_in_flight",
        Unit::Count,
        "Calls in flight under an adaptive concurrency limit."
    );
    describe_counter!(
        "orchex_adaptive_limit_drops_total",
        Unit::Count,
        "Calls an adaptive concurrency limit refused."
    );
}

/// Publishes zero for the metrics without labels, so that they appear in
/// the exposition before their first change.
pub(crate) fn initialise_unlabelled() {
    gauge!(JOBS_RUNNING).set(0.0);
    gauge!(QUEUE_DEPTH).set(0.0);
    counter!(CYCLES_TOTAL).absolute(0);
    counter!(ANALYSIS_CACHE_HITS_TOTAL).absolute(0);
    counter!(ANALYSIS_CACHE_MISSES_TOTAL).absolute(0);
    counter!(TELEMETRY_EVENTS_DROPPED_TOTAL).absolute(0);
    counter!(TELEMETRY_EVENTS_PERSISTED_TOTAL).absolute(0);
    counter!(TELEMETRY_STORE_ERRORS_TOTAL).absolute(0);
    gauge!(TELEMETRY_QUEUE_LENGTH).set(0.0);
}

#[allow(clippy::cast_precision_loss)] // gauges of counts far below 2^52
fn as_f64(n: u64) -> f64 {
    n as f64
}

/// A job reached its final state `outcome` after `duration`.
pub fn job_finished(repo: &RepoId, pipeline: &str, outcome: JobState, duration: Duration) {
    counter!(
        JOBS_TOTAL,
        "repo" => repo.as_str().to_owned(),
        "pipeline" => pipeline.to_owned(),
        "outcome" => outcome.as_str()
    )
    .increment(1);
    histogram!(JOB_DURATION_SECONDS, "pipeline" => pipeline.to_owned())
        .record(duration.as_secs_f64());
}

/// `running` jobs are running now.
pub fn set_jobs_running(running: u64) {
    gauge!(JOBS_RUNNING).set(as_f64(running));
}

/// `depth` jobs are queued now.
pub fn set_queue_depth(depth: u64) {
    gauge!(QUEUE_DEPTH).set(as_f64(depth));
}

/// An orchestration cycle completed after `duration`.
pub fn cycle_completed(duration: Duration) {
    counter!(CYCLES_TOTAL).increment(1);
    histogram!(CYCLE_DURATION_SECONDS).record(duration.as_secs_f64());
}

/// The concurrency limit is now `limit`.
pub fn set_concurrency_limit(limit: u64) {
    gauge!(CONCURRENCY_LIMIT).set(as_f64(limit));
}

/// `paths` changed paths were detected in `repo`.
pub fn changes_detected(repo: &RepoId, paths: u64) {
    counter!(CHANGES_DETECTED_TOTAL, "repo" => repo.as_str().to_owned()).increment(paths);
}

/// A repository analysis took `duration`.
pub fn analysis_completed(duration: Duration) {
    histogram!(ANALYSIS_DURATION_SECONDS).record(duration.as_secs_f64());
}

/// An analysis was answered from the cache.
pub fn analysis_cache_hit() {
    counter!(ANALYSIS_CACHE_HITS_TOTAL).increment(1);
}

/// An analysis had to be computed.
pub fn analysis_cache_miss() {
    counter!(ANALYSIS_CACHE_MISSES_TOTAL).increment(1);
}

/// The latest scores of `repo`, each in [0, 1].
pub fn set_repository_scores(repo: &RepoId, health: f64, chaos: f64, complexity: f64) {
    let name = repo.as_str().to_owned();
    gauge!(REPOSITORY_HEALTH_SCORE, "repo" => name.clone()).set(health);
    gauge!(REPOSITORY_CHAOS_SCORE, "repo" => name.clone()).set(chaos);
    gauge!(REPOSITORY_COMPLEXITY_SCORE, "repo" => name).set(complexity);
}

/// A circuit breaker's state, as the gauge encodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Calls pass (0).
    Closed,
    /// Calls are rejected at once (1).
    Open,
    /// Trial calls pass (2).
    HalfOpen,
}

impl BreakerState {
    /// The gauge value: 0 closed, 1 open, 2 half-open.
    pub const fn value(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }
}

/// The breaker `name` is now in `state`.
pub fn set_circuit_breaker_state(name: &str, state: BreakerState) {
    gauge!(CIRCUIT_BREAKER_STATE, "name" => name.to_owned()).set(state.value());
}

/// How a call through a circuit breaker went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum CallOutcome {
    /// The call succeeded.
    Success,
    /// The call failed (counted by the breaker).
    Failure,
    /// The breaker refused the call.
    Rejected,
    /// The call failed in a way the breaker ignores.
    Ignored,
}

impl CallOutcome {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            CallOutcome::Success => "success",
            CallOutcome::Failure => "failure",
            CallOutcome::Rejected => "rejected",
            CallOutcome::Ignored => "ignored",
        }
    }
}

/// A call went through the breaker `name` with `outcome`.
pub fn circuit_breaker_call(name: &str, outcome: CallOutcome) {
    counter!(
        CIRCUIT_BREAKER_CALLS_TOTAL,
        "name" => name.to_owned(),
        "outcome" => outcome.as_str()
    )
    .increment(1);
}

/// The rate limiter refused a call for `key` (a repository name, or
/// `repo/pipeline`).
pub fn rate_limiter_rejection(key: &str) {
    counter!(RATE_LIMITER_REJECTIONS_TOTAL, "key" => key.to_owned()).increment(1);
}

/// The `orchex_events_total` counter of each kind, in the order of
/// [`EventKind::ALL`], registered with the current recorder.
pub(crate) fn event_counters() -> Vec<::metrics::Counter> {
    EventKind::ALL
        .iter()
        .map(|kind| counter!(EVENTS_TOTAL, "kind" => kind.as_str()))
        .collect()
}

/// The dropped-events counter, registered with the current recorder.
pub(crate) fn dropped_counter() -> ::metrics::Counter {
    counter!(TELEMETRY_EVENTS_DROPPED_TOTAL)
}

/// Persistence writer counters and gauge.
pub(crate) fn persisted_counter() -> ::metrics::Counter {
    counter!(TELEMETRY_EVENTS_PERSISTED_TOTAL)
}

pub(crate) fn store_errors_counter() -> ::metrics::Counter {
    counter!(TELEMETRY_STORE_ERRORS_TOTAL)
}

pub(crate) fn queue_length_gauge() -> ::metrics::Gauge {
    gauge!(TELEMETRY_QUEUE_LENGTH)
}
