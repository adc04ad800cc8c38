//! Unit tests of the circuit breaker, all under a manual clock.

use super::*;
use crate::clock::ManualClock;

fn breaker(config: CircuitBreakerConfig) -> (CircuitBreaker, ManualClock) {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder(config.open_jitter(0.0))
        .clock(clock.clone())
        .build()
        .unwrap();
    (breaker, clock)
}

fn fail(breaker: &CircuitBreaker, n: usize) {
    for _ in 0..n {
        breaker.try_acquire().unwrap().failure();
    }
}

fn succeed(breaker: &CircuitBreaker, n: usize) {
    for _ in 0..n {
        breaker.try_acquire().unwrap().success();
    }
}

const SECS_30: Duration = Duration::from_secs(30);

#[test]
fn consecutive_failures_trip_and_success_resets_the_run() {
    let (breaker, _clock) = breaker(CircuitBreakerConfig::consecutive(3));
    fail(&breaker, 2);
    succeed(&breaker, 1);
    fail(&breaker, 2);
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.snapshot().consecutive_failures, 2);
    fail(&breaker, 1);
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[test]
fn open_refuses_then_half_opens_after_the_open_period() {
    let (breaker, clock) = breaker(
        CircuitBreakerConfig::consecutive(1)
            .open_duration(SECS_30)
            .half_open(2, None),
    );
    fail(&breaker, 1);
    let refused = breaker.try_acquire().unwrap_err();
    assert_eq!(
        refused,
        CallNotPermitted::Open {
            retry_after: SECS_30
        }
    );
    assert_eq!(refused.state(), CircuitState::Open);
    clock.advance(Duration::from_secs(29));
    assert_eq!(
        breaker.try_acquire().unwrap_err().retry_after(),
        Some(Duration::from_secs(1))
    );
    clock.advance(Duration::from_secs(1));
    assert_eq!(breaker.state(), CircuitState::HalfOpen);
    succeed(&breaker, 1);
    assert_eq!(
        breaker.state(),
        CircuitState::HalfOpen,
        "one of two trials done"
    );
    succeed(&breaker, 1);
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.snapshot().not_permitted, 2);
}

#[test]
fn half_open_admits_at_most_the_permitted_trials() {
    let (breaker, clock) = breaker(
        CircuitBreakerConfig::consecutive(1)
            .open_duration(SECS_30)
            .half_open(2, None),
    );
    fail(&breaker, 1);
    clock.advance(SECS_30);
    let first = breaker.try_acquire().unwrap();
    let second = breaker.try_acquire().unwrap();
    assert_eq!(
        breaker.try_acquire().unwrap_err(),
        CallNotPermitted::HalfOpenFull
    );
    assert_eq!(breaker.snapshot().trial_calls, 2);
    // An ignored trial gives its slot back.
    first.ignore();
    let third = breaker.try_acquire().unwrap();
    second.success();
    third.success();
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[test]
fn a_failed_trial_reopens_with_a_longer_period() {
    let config = CircuitBreakerConfig::consecutive(1)
        .open_duration(SECS_30)
        .open_backoff(2.0, Duration::from_secs(100))
        .half_open(1, None);
    let (breaker, clock) = breaker(config);
    fail(&breaker, 1);
    clock.advance(SECS_30);
    breaker.try_acquire().unwrap().failure();
    assert_eq!(
        breaker.try_acquire().unwrap_err().retry_after(),
        Some(Duration::from_secs(60))
    );
    assert_eq!(breaker.snapshot().trips, 2);
    clock.advance(Duration::from_secs(60));
    breaker.try_acquire().unwrap().failure();
    assert_eq!(
        breaker.try_acquire().unwrap_err().retry_after(),
        Some(Duration::from_secs(100)),
        "capped"
    );
    clock.advance(Duration::from_secs(100));
    succeed(&breaker, 1);
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.snapshot().trips, 0, "a close forgets the backoff");
    fail(&breaker, 1);
    assert_eq!(
        breaker.try_acquire().unwrap_err().retry_after(),
        Some(SECS_30)
    );
}

#[test]
fn open_period_is_jittered_within_bounds() {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder(
        CircuitBreakerConfig::consecutive(1)
            .open_duration(Duration::from_secs(100))
            .open_jitter(0.1),
    )
    .clock(clock)
    .build()
    .unwrap();
    fail(&breaker, 1);
    let wait = breaker.try_acquire().unwrap_err().retry_after().unwrap();
    assert!(
        wait >= Duration::from_secs(90) && wait <= Duration::from_secs(110),
        "{wait:?}"
    );
}

#[test]
fn half_open_max_wait_reopens() {
    let (breaker, clock) = breaker(
        CircuitBreakerConfig::consecutive(1)
            .open_duration(SECS_30)
            .half_open(1, Some(Duration::from_secs(10))),
    );
    fail(&breaker, 1);
    clock.advance(SECS_30);
    let stuck = breaker.try_acquire().unwrap();
    clock.advance(Duration::from_secs(10));
    assert_eq!(breaker.state(), CircuitState::Open);
    // The stuck trial finishing later changes nothing.
    stuck.success();
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[test]
fn failure_rate_needs_minimum_calls() {
    let (breaker, _clock) = breaker(
        CircuitBreakerConfig::default()
            .sliding_window(SlidingWindow::Count(10))
            .failure_rate(50.0, 4),
    );
    fail(&breaker, 3);
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.snapshot().failure_rate, None);
    succeed(&breaker, 1);
    // 4 calls, 75 % failed: a success completes the minimum and trips.
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[test]
fn failure_rate_below_threshold_stays_closed() {
    let (breaker, _clock) = breaker(
        CircuitBreakerConfig::default()
            .sliding_window(SlidingWindow::Count(4))
            .failure_rate(50.0, 4),
    );
    for _ in 0..10 {
        succeed(&breaker, 3);
        fail(&breaker, 1);
    }
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.state, CircuitState::Closed);
    assert_eq!(snapshot.calls, 4);
    assert_eq!(snapshot.failure_rate, Some(25.0));
}

#[test]
fn orchex_five_failures_in_a_time_window() {
    let (breaker, clock) = breaker(CircuitBreakerConfig::failure_count_in(
        5,
        SlidingWindow::Time(Duration::from_secs(600)),
    ));
    fail(&breaker, 4);
    clock.advance(Duration::from_secs(601));
    // The first four have left the window.
    fail(&breaker, 4);
    succeed(&breaker, 10);
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.snapshot().failures, 4);
    fail(&breaker, 1);
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[test]
fn slow_calls_trip_and_fail_trials() {
    let config = CircuitBreakerConfig::default()
        .no_failure_rate()
        .sliding_window(SlidingWindow::Count(4))
        .slow_call_rate(50.0, Duration::from_secs(2))
        .minimum_calls(4)
        .open_duration(SECS_30)
        .half_open(1, None);
    let (breaker, clock) = breaker(config);
    for slow in [true, false, true] {
        let permit = breaker.try_acquire().unwrap();
        clock.advance(if slow {
            Duration::from_secs(2)
        } else {
            Duration::from_secs(1)
        });
        permit.success();
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    succeed(&breaker, 1);
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.state, CircuitState::Open);
    clock.advance(SECS_30);
    let trial = breaker.try_acquire().unwrap();
    clock.advance(Duration::from_secs(5));
    trial.success();
    assert_eq!(
        breaker.state(),
        CircuitState::Open,
        "a slow trial counts as failed"
    );
}

#[test]
fn ignored_and_dropped_calls_are_not_counted() {
    let (breaker, _clock) = breaker(
        CircuitBreakerConfig::consecutive(2)
            .sliding_window(SlidingWindow::Count(10))
            .failure_count(5),
    );
    fail(&breaker, 1);
    breaker.try_acquire().unwrap().ignore();
    drop(breaker.try_acquire().unwrap());
    assert_eq!(breaker.snapshot().consecutive_failures, 1);
    fail(&breaker, 1);
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[test]
fn calls_from_an_earlier_state_are_not_counted() {
    let (breaker, clock) = breaker(
        CircuitBreakerConfig::consecutive(2)
            .open_duration(SECS_30)
            .half_open(1, None),
    );
    let late = breaker.try_acquire().unwrap();
    fail(&breaker, 2);
    assert_eq!(breaker.state(), CircuitState::Open);
    clock.advance(SECS_30);
    let trial = breaker.try_acquire().unwrap();
    trial.success();
    assert_eq!(breaker.state(), CircuitState::Closed);
    // Began before the trip: neither counted nor able to re-open.
    late.failure();
    assert_eq!(breaker.snapshot().consecutive_failures, 0);
}

#[test]
fn manual_states() {
    let (breaker, _clock) = breaker(CircuitBreakerConfig::consecutive(1));
    breaker.force_open();
    assert_eq!(
        breaker.try_acquire().unwrap_err(),
        CallNotPermitted::ForcedOpen
    );
    assert_eq!(breaker.state(), CircuitState::ForcedOpen);

    breaker.disable();
    fail(&breaker, 10);
    assert_eq!(breaker.state(), CircuitState::Disabled);
    assert_eq!(breaker.snapshot().consecutive_failures, 0);

    breaker.metrics_only();
    fail(&breaker, 10);
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.state, CircuitState::MetricsOnly);
    assert_eq!(snapshot.consecutive_failures, 10, "counted, never trips");

    breaker.reset();
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.snapshot().consecutive_failures, 0);
    fail(&breaker, 1);
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[test]
fn events_report_every_transition() {
    let (breaker, clock) = breaker(
        CircuitBreakerConfig::consecutive(1)
            .open_duration(SECS_30)
            .half_open(1, None),
    );
    let mut events = breaker.subscribe();
    fail(&breaker, 1);
    clock.advance(SECS_30);
    succeed(&breaker, 1);
    breaker.force_open();
    let seen: Vec<(CircuitState, CircuitState, TransitionReason)> =
        std::iter::from_fn(|| events.try_recv().ok())
            .map(|e| (e.from, e.to, e.reason))
            .collect();
    assert_eq!(
        seen,
        vec![
            (
                CircuitState::Closed,
                CircuitState::Open,
                TransitionReason::ConsecutiveFailures
            ),
            (
                CircuitState::Open,
                CircuitState::HalfOpen,
                TransitionReason::OpenElapsed
            ),
            (
                CircuitState::HalfOpen,
                CircuitState::Closed,
                TransitionReason::TrialsSucceeded
            ),
            (
                CircuitState::Closed,
                CircuitState::ForcedOpen,
                TransitionReason::Manual
            ),
        ]
    );
}

#[test]
fn open_event_carries_the_open_period() {
    let (breaker, _clock) = breaker(CircuitBreakerConfig::consecutive(1).open_duration(SECS_30));
    let mut events = breaker.subscribe();
    fail(&breaker, 1);
    assert_eq!(events.try_recv().unwrap().open_for, Some(SECS_30));
}

#[test]
fn reconfigure_keeps_state_and_counts() {
    let (breaker, _clock) = breaker(
        CircuitBreakerConfig::default()
            .sliding_window(SlidingWindow::Count(10))
            .failure_rate(80.0, 10),
    );
    fail(&breaker, 4);
    succeed(&breaker, 4);
    breaker
        .reconfigure(
            CircuitBreakerConfig::default()
                .sliding_window(SlidingWindow::Count(10))
                .failure_rate(50.0, 10),
        )
        .unwrap();
    let snapshot = breaker.snapshot();
    assert_eq!((snapshot.calls, snapshot.failures), (8, 4));
    fail(&breaker, 1);
    succeed(&breaker, 1);
    assert_eq!(
        breaker.state(),
        CircuitState::Open,
        "5 of 10 failed under the new 50 % threshold"
    );
    // Reconfiguring an open breaker keeps it open.
    breaker
        .reconfigure(CircuitBreakerConfig::consecutive(3))
        .unwrap();
    assert_eq!(breaker.state(), CircuitState::Open);
    assert!(
        breaker
            .reconfigure(CircuitBreakerConfig::consecutive(0))
            .is_err()
    );
    assert_eq!(breaker.config().consecutive_failures_threshold(), Some(3));
}

#[test]
fn reconfigure_keeps_consecutive_run() {
    let (breaker, _clock) = breaker(CircuitBreakerConfig::consecutive(5));
    fail(&breaker, 3);
    breaker
        .reconfigure(CircuitBreakerConfig::consecutive(4))
        .unwrap();
    fail(&breaker, 1);
    assert_eq!(breaker.state(), CircuitState::Open);
}

#[test]
fn owned_permits_work_like_borrowed_ones() {
    let (breaker, _clock) = breaker(CircuitBreakerConfig::consecutive(2));
    let permit = breaker.try_acquire_owned().unwrap();
    let handle = std::thread::spawn(move || permit.failure());
    handle.join().unwrap();
    breaker.try_acquire_owned().unwrap().failure();
    assert_eq!(breaker.state(), CircuitState::Open);
    assert!(breaker.try_acquire_owned().is_err());
}

#[tokio::test]
async fn call_classifies_results() {
    let (breaker, _clock) = breaker(CircuitBreakerConfig::consecutive(2));
    let ok: Result<u32, CircuitBreakerError<&str>> = breaker.call(|| async { Ok(7) }).await;
    assert_eq!(ok.unwrap(), 7);
    // A classifier that ignores "not found".
    let classify = |r: &Result<u32, &str>| match r {
        Err(e) if *e == "not found" => CallOutcome::Ignored,
        Err(_) => CallOutcome::Failure,
        Ok(_) => CallOutcome::Success,
    };
    for _ in 0..5 {
        let err = breaker
            .call_with(&classify, || async { Err::<u32, _>("not found") })
            .await
            .unwrap_err();
        assert_eq!(err.into_inner(), Some("not found"));
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
    for _ in 0..2 {
        let _ = breaker.call(|| async { Err::<u32, _>("boom") }).await;
    }
    let refused = breaker
        .call(|| async { Ok::<u32, &str>(1) })
        .await
        .unwrap_err();
    assert!(matches!(
        refused,
        CircuitBreakerError::NotPermitted(CallNotPermitted::Open { .. })
    ));
    assert!(refused.to_string().starts_with("circuit breaker is open"));
}

#[test]
fn call_sync_counts() {
    let (breaker, _clock) = breaker(CircuitBreakerConfig::consecutive(1));
    assert_eq!(breaker.call_sync(|| Ok::<_, ()>(3)).unwrap(), 3);
    assert!(matches!(
        breaker.call_sync(|| Err::<(), _>("x")),
        Err(CircuitBreakerError::Inner("x"))
    ));
    assert!(matches!(
        breaker.call_sync(|| Ok::<_, ()>(3)),
        Err(CircuitBreakerError::NotPermitted(_))
    ));
}

#[tokio::test]
async fn a_cancelled_call_is_ignored() {
    let (breaker, _clock) = breaker(CircuitBreakerConfig::consecutive(1));
    let call = breaker.call(std::future::pending::<Result<(), ()>>);
    // Poll once, then drop: the permit inside is dropped.
    let _ = tokio::time::timeout(Duration::from_millis(0), call).await;
    assert_eq!(breaker.state(), CircuitState::Closed);
    assert_eq!(breaker.snapshot().consecutive_failures, 0);
}

#[test]
fn state_gauge_values() {
    let values: Vec<u8> = [
        CircuitState::Closed,
        CircuitState::Open,
        CircuitState::HalfOpen,
        CircuitState::Disabled,
        CircuitState::ForcedOpen,
        CircuitState::MetricsOnly,
    ]
    .iter()
    .map(|s| s.as_gauge())
    .collect();
    assert_eq!(values, vec![0, 1, 2, 3, 4, 5]);
    assert_eq!(CircuitState::HalfOpen.to_string(), "half_open");
    for bits in 0..6 {
        assert_eq!(CircuitState::from_bits(bits).bits(), bits);
    }
}

#[test]
fn snapshot_reports_retry_after_and_name() {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder(
        CircuitBreakerConfig::consecutive(1)
            .open_duration(SECS_30)
            .open_jitter(0.0),
    )
    .clock(clock.clone())
    .name("api/codegen")
    .build()
    .unwrap();
    fail(&breaker, 1);
    clock.advance(Duration::from_secs(10));
    let snapshot = breaker.snapshot();
    assert_eq!(snapshot.name.as_deref(), Some("api/codegen"));
    assert_eq!(snapshot.retry_after, Some(Duration::from_secs(20)));
    assert!(format!("{breaker:?}").contains("api/codegen"));
}
