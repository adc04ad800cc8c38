//! Metric names and labels, recorded through a local test recorder.

#![cfg(feature = "metrics")]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use orchex_resilience::{
    Bulkhead, BulkheadConfig, CircuitBreaker, CircuitBreakerConfig, KeyedRateLimiter, ManualClock,
    Quota, RateLimiter,
};

#[derive(Default)]
struct TestRecorder {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    gauges: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn render(key: &Key) -> String {
    let mut labels: Vec<String> = key
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    format!("{}{{{}}}", key.name(), labels.join(","))
}

impl TestRecorder {
    fn counter(&self, key: &str) -> Option<u64> {
        lock(&self.counters)
            .get(key)
            .map(|c| c.load(Ordering::Relaxed))
    }

    fn gauge(&self, key: &str) -> Option<f64> {
        lock(&self.gauges)
            .get(key)
            .map(|g| f64::from_bits(g.load(Ordering::Relaxed)))
    }
}

impl Recorder for TestRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let handle = Arc::clone(lock(&self.counters).entry(render(key)).or_default());
        Counter::from_arc(handle)
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let handle = Arc::clone(lock(&self.gauges).entry(render(key)).or_default());
        Gauge::from_arc(handle)
    }

    fn register_histogram(&self, _: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::noop()
    }
}

#[test]
fn breaker_metrics_follow_the_spec_names() {
    let recorder = TestRecorder::default();
    metrics::with_local_recorder(&recorder, || {
        let clock = ManualClock::new();
        let breaker = CircuitBreaker::builder(
            CircuitBreakerConfig::consecutive(2).open_duration(Duration::from_secs(5)),
        )
        .name("api/codegen")
        .clock(clock.clone())
        .build()
        .unwrap();
        breaker.try_acquire().unwrap().success();
        breaker.try_acquire().unwrap().failure();
        breaker.try_acquire().unwrap().ignore();
        breaker.try_acquire().unwrap().failure();
        assert!(breaker.try_acquire().is_err());
    });
    let name = "name=api/codegen";
    assert_eq!(
        recorder.counter(&format!(
            "orchex_circuit_breaker_calls_total{{{name},outcome=success}}"
        )),
        Some(1)
    );
    assert_eq!(
        recorder.counter(&format!(
            "orchex_circuit_breaker_calls_total{{{name},outcome=failure}}"
        )),
        Some(2)
    );
    assert_eq!(
        recorder.counter(&format!(
            "orchex_circuit_breaker_calls_total{{{name},outcome=ignored}}"
        )),
        Some(1)
    );
    assert_eq!(
        recorder.counter(&format!(
            "orchex_circuit_breaker_calls_total{{{name},outcome=not_permitted}}"
        )),
        Some(1)
    );
    assert_eq!(
        recorder.gauge(&format!("orchex_circuit_breaker_state{{{name}}}")),
        Some(1.0),
        "1 = open"
    );
    assert_eq!(
        recorder.counter(&format!(
            "orchex_circuit_breaker_transitions_total{{from=closed,{name},to=open}}"
        )),
        Some(1)
    );
}

#[test]
fn limiter_and_bulkhead_metrics() {
    let recorder = TestRecorder::default();
    metrics::with_local_recorder(&recorder, || {
        let limiter = RateLimiter::builder(Quota::per_hour(1))
            .name("global")
            .clock(ManualClock::new())
            .build()
            .unwrap();
        limiter.check(1).unwrap();
        let _ = limiter.check(1);
        let keyed: KeyedRateLimiter<String> = KeyedRateLimiter::builder(Quota::per_hour(1))
            .name("per-repo")
            .label_keys(Clone::clone)
            .clock(ManualClock::new())
            .build()
            .unwrap();
        keyed.check("api", 1).unwrap();
        let _ = keyed.check("api", 1);
        let _ = keyed.check("api", 1);
        let bulkhead = Bulkhead::builder(BulkheadConfig::new(1))
            .name("jobs")
            .build()
            .unwrap();
        let _permit = bulkhead.try_acquire().unwrap();
        let _ = bulkhead.try_acquire();
    });
    assert_eq!(
        recorder.counter("orchex_rate_limiter_rejections_total{key=global}"),
        Some(1)
    );
    assert_eq!(
        recorder.counter("orchex_rate_limiter_rejections_total{key=api}"),
        Some(2)
    );
    assert_eq!(
        recorder.gauge("orchex_rate_limiter_keys{name=per-repo}"),
        Some(1.0)
    );
    assert_eq!(
        recorder.gauge("orchex_bulkhead_in_flight{name=jobs}"),
        Some(0.0),
        "the permit was released"
    );
    assert_eq!(
        recorder.gauge("orchex_bulkhead_max_concurrent{name=jobs}"),
        Some(1.0)
    );
    assert_eq!(
        recorder.counter("orchex_bulkhead_rejections_total{name=jobs,reason=full}"),
        Some(1)
    );
}

#[test]
fn unnamed_primitives_record_nothing() {
    let recorder = TestRecorder::default();
    metrics::with_local_recorder(&recorder, || {
        let breaker = CircuitBreaker::new(CircuitBreakerConfig::consecutive(1)).unwrap();
        breaker.try_acquire().unwrap().failure();
        let limiter = RateLimiter::new(Quota::per_hour(1)).unwrap();
        let _ = limiter.check(2);
    });
    assert!(lock(&recorder.counters).is_empty());
    assert!(lock(&recorder.gauges).is_empty());
}
