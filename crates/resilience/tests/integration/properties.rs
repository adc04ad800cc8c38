//! Properties checked with proptest (256 cases each) under a manual clock.

use std::time::Duration;

use orchex_resilience::{
    CircuitBreaker, CircuitBreakerConfig, CircuitState, KeyedRateLimiter, ManualClock, OwnedPermit,
    Quota, RateLimitError, RateLimiter, SlidingWindow, StateTransition, Timestamp,
};
use proptest::prelude::*;
use tokio::sync::broadcast;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        ..ProptestConfig::default()
    }
}

/// Admitted cost over every window `[t_i, t_j]` of admissions: at most
/// `burst + (t_j − t_i) / T`, i.e. `Σ cost · T ≤ burst · T + (t_j − t_i)`.
fn assert_within_quota(
    admitted: &[(u64, u32)],
    interval: u64,
    burst: u32,
) -> Result<(), TestCaseError> {
    for i in 0..admitted.len() {
        let mut sum: u128 = 0;
        for j in i..admitted.len() {
            sum += u128::from(admitted[j].1);
            let window = u128::from(admitted[j].0 - admitted[i].0);
            let bound = u128::from(burst) * u128::from(interval) + window;
            prop_assert!(
                sum * u128::from(interval) <= bound,
                "admitted {sum} in [{}, {}] with T = {interval} and burst {burst}",
                admitted[i].0,
                admitted[j].0
            );
        }
    }
    Ok(())
}

fn quota_strategy() -> impl Strategy<Value = Quota> {
    (1_u32..50, 1_u64..10_000, 1_u32..20).prop_map(|(count, period_ms, burst)| {
        Quota::new(count, Duration::from_millis(period_ms)).with_burst(burst)
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn limiter_admits_at_most_burst_plus_rate_times_window(
        quota in quota_strategy(),
        ops in prop::collection::vec((0_u64..2_000_000_000, 0_u32..6), 1..120),
    ) {
        let clock = ManualClock::new();
        let limiter = RateLimiter::builder(quota).clock(clock.clone()).build().unwrap();
        let interval = u64::try_from(quota.emission_interval().as_nanos()).unwrap();
        let mut admitted = Vec::new();
        for (advance, cost) in ops {
            // Many calls at the same instant, some after long pauses.
            clock.advance(Duration::from_nanos(if advance % 3 == 0 { 0 } else { advance / 7 }));
            let peeked = limiter.peek(cost);
            let result = limiter.check(cost);
            prop_assert_eq!(peeked.is_ok(), result.is_ok(), "peek agrees with check");
            match result {
                Ok(()) => admitted.push((clock.now().as_nanos(), cost)),
                Err(RateLimitError::Limited(not_until)) => {
                    prop_assert!(not_until.ready_at() > clock.now());
                }
                Err(RateLimitError::InsufficientCapacity { cost: c, burst }) => prop_assert!(c > burst),
                Err(other) => prop_assert!(false, "unexpected {other}"),
            }
        }
        assert_within_quota(&admitted, interval, quota.burst())?;
    }

    #[test]
    fn a_refused_call_succeeds_at_ready_at(quota in quota_strategy(), burst_first in 0_u32..30) {
        let clock = ManualClock::new();
        let limiter = RateLimiter::builder(quota).clock(clock.clone()).build().unwrap();
        for _ in 0..burst_first {
            let _ = limiter.check(1);
        }
        if let Err(error) = limiter.check(1) {
            let ready_at = error.ready_at().unwrap();
            clock.set(Timestamp::from_nanos(ready_at.as_nanos() - 1));
            prop_assert!(limiter.check(1).is_err());
            clock.set(ready_at);
            prop_assert!(limiter.check(1).is_ok());
        }
    }

    #[test]
    fn keyed_limiter_keeps_each_key_within_its_quota(
        quota in quota_strategy(),
        ops in prop::collection::vec((0_u8..5, 0_u64..500_000_000, 1_u32..4), 1..150),
    ) {
        let clock = ManualClock::new();
        let limiter: KeyedRateLimiter<u8> = KeyedRateLimiter::builder(quota).clock(clock.clone()).build().unwrap();
        let big = Quota::new(quota.count() * 2, quota.period()).with_burst(quota.burst() + 1);
        limiter.set_quota_for(4, big).unwrap();
        let mut admitted: Vec<Vec<(u64, u32)>> = vec![Vec::new(); 5];
        for (key, advance, cost) in ops {
            clock.advance(Duration::from_nanos(advance));
            if limiter.check(&key, cost).is_ok() {
                admitted[usize::from(key)].push((clock.now().as_nanos(), cost));
            }
        }
        let interval = |q: Quota| u64::try_from(q.emission_interval().as_nanos()).unwrap();
        for (key, events) in admitted.iter().enumerate() {
            let q = if key == 4 { big } else { quota };
            assert_within_quota(events, interval(q), q.burst())?;
        }
        prop_assert!(limiter.len() <= 5);
    }

    #[test]
    fn limiter_reconfiguration_keeps_the_units_used(
        before in quota_strategy(),
        after in quota_strategy(),
        used in 0_u32..20,
    ) {
        let clock = ManualClock::new();
        let limiter = RateLimiter::builder(before).clock(clock).build().unwrap();
        let mut taken = 0;
        for _ in 0..used {
            if limiter.check(1).is_ok() {
                taken += 1;
            }
        }
        prop_assert_eq!(limiter.snapshot().available, before.burst() - taken);
        limiter.reconfigure(after).unwrap();
        prop_assert_eq!(limiter.snapshot().available, after.burst().saturating_sub(taken));
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Take a permit and hold it.
    Acquire,
    /// Finish the held permit at this index (modulo) with this outcome.
    Finish(usize, u8),
    /// Call and succeed or fail at once.
    Call(bool),
    Advance(u64),
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Acquire),
        4 => (any::<usize>(), 0_u8..4).prop_map(|(i, o)| Op::Finish(i, o)),
        4 => any::<bool>().prop_map(Op::Call),
        2 => (0_u64..40_000).prop_map(Op::Advance),
    ]
}

fn breaker_config_strategy() -> impl Strategy<Value = CircuitBreakerConfig> {
    let half_open = (1_u32..4, prop::option::of(1_u64..30));
    prop_oneof![
        (1_u32..5).prop_map(CircuitBreakerConfig::consecutive),
        (1_u32..6, 2_u32..10)
            .prop_map(|(n, w)| CircuitBreakerConfig::failure_count_in(n, SlidingWindow::Count(w))),
        (1_u32..6, 1_u64..60).prop_map(|(n, s)| {
            CircuitBreakerConfig::failure_count_in(n, SlidingWindow::Time(Duration::from_secs(s)))
        }),
        (10.0_f64..100.0, 1_u32..8, 2_u32..12).prop_map(|(rate, min, w)| {
            CircuitBreakerConfig::default()
                .sliding_window(SlidingWindow::Count(w))
                .failure_rate(rate, min)
        }),
    ]
    .prop_flat_map(move |config| {
        half_open.clone().prop_map(move |(n, wait)| {
            config
                .clone()
                .half_open(n, wait.map(Duration::from_secs))
                .open_duration(Duration::from_secs(10))
                .open_backoff(2.0, Duration::from_secs(60))
                .open_jitter(0.0)
        })
    })
}

fn legal(transition: &StateTransition) -> bool {
    use CircuitState::{Closed, HalfOpen, Open};
    matches!(
        (transition.from, transition.to),
        (Closed, Open) | (Open, HalfOpen) | (HalfOpen, Open | Closed)
    )
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn breaker_makes_only_legal_transitions_and_caps_trials(
        config in breaker_config_strategy(),
        ops in prop::collection::vec(op_strategy(), 1..200),
    ) {
        let clock = ManualClock::new();
        let (events, mut received) = broadcast::channel(4096);
        let permitted = config.half_open_calls();
        let breaker = CircuitBreaker::builder(config).clock(clock.clone()).events(events).build().unwrap();
        let mut held: Vec<(OwnedPermit, Option<u32>)> = Vec::new();
        let mut episode = 0_u32;
        let mut last_to = CircuitState::Closed;
        for op in ops {
            match op {
                Op::Acquire => {
                    if let Ok(permit) = breaker.try_acquire_owned() {
                        let state = breaker.state();
                        let tag = (state == CircuitState::HalfOpen).then_some(episode);
                        held.push((permit, tag));
                    }
                }
                Op::Finish(index, outcome) => {
                    if !held.is_empty() {
                        let (permit, _) = held.swap_remove(index % held.len());
                        match outcome {
                            0 => permit.success(),
                            1 => permit.failure(),
                            2 => permit.ignore(),
                            _ => drop(permit),
                        }
                    }
                }
                Op::Call(ok) => {
                    let _ = breaker.call_sync(|| if ok { Ok(()) } else { Err(()) });
                }
                Op::Advance(ms) => clock.advance(Duration::from_millis(ms)),
            }
            let _ = breaker.snapshot(); // lets open → half-open happen lazily too
            while let Ok(transition) = received.try_recv() {
                prop_assert!(legal(&transition), "illegal {:?} → {:?}", transition.from, transition.to);
                prop_assert_eq!(transition.from, last_to, "transitions chain");
                last_to = transition.to;
                if transition.to == CircuitState::HalfOpen {
                    episode += 1;
                    // Permits tagged with the old episode are stale now.
                    for (_, tag) in &mut held {
                        if tag.is_some() {
                            *tag = None;
                        }
                    }
                }
            }
            let current = breaker.snapshot();
            prop_assert_eq!(current.state, last_to);
            if current.state == CircuitState::HalfOpen {
                let in_flight = u32::try_from(held.iter().filter(|(_, tag)| *tag == Some(episode)).count()).unwrap();
                prop_assert!(in_flight <= permitted, "{in_flight} trials in flight, {permitted} permitted");
                prop_assert!(current.trial_calls <= permitted);
            }
        }
    }

    #[test]
    fn breaker_reconfiguration_keeps_counts(
        outcomes in prop::collection::vec(any::<bool>(), 0..30),
        window in 5_u32..40,
        new_threshold in 1_u32..100,
    ) {
        let clock = ManualClock::new();
        // Thresholds too high to trip: only counting is under test.
        let config = CircuitBreakerConfig::failure_count_in(1000, SlidingWindow::Count(window)).consecutive_failures(1000);
        let breaker = CircuitBreaker::builder(config.clone()).clock(clock).build().unwrap();
        for ok in &outcomes {
            let _ = breaker.call_sync(|| if *ok { Ok(()) } else { Err(()) });
        }
        let before = breaker.snapshot();
        breaker.reconfigure(config.failure_count(new_threshold.max(before.failures.try_into().unwrap_or(u32::MAX) + 1))
            .consecutive_failures(before.consecutive_failures + 1)).unwrap();
        let after = breaker.snapshot();
        prop_assert_eq!(before.state, after.state);
        prop_assert_eq!((before.calls, before.failures), (after.calls, after.failures));
        prop_assert_eq!(before.consecutive_failures, after.consecutive_failures);
        // Shrinking the window keeps the most recent calls.
        let smaller = window / 2;
        breaker.reconfigure(CircuitBreakerConfig::failure_count_in(1000, SlidingWindow::Count(smaller))).unwrap();
        let recent: Vec<bool> = outcomes.iter().rev().take(smaller as usize).copied().collect();
        let shrunk = breaker.snapshot();
        prop_assert_eq!(shrunk.calls, recent.len() as u64);
        prop_assert_eq!(shrunk.failures, recent.iter().filter(|ok| !**ok).count() as u64);
    }
}
