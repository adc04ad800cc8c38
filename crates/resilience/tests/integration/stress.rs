//! Multi-thread stress: bounded (a few thousand operations per thread), on
//! std threads, with a manual clock that only the test moves.

use std::sync::Barrier;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::thread;
use std::time::Duration;

use orchex_resilience::{
    CallNotPermitted, CircuitBreaker, CircuitBreakerConfig, CircuitState, KeyedRateLimiter,
    ManualClock, Quota, RateLimiter,
};

const THREADS: usize = 4;

#[test]
fn half_open_never_admits_more_than_its_trials_under_contention() {
    const PERMITTED: u32 = 3;
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder(
        CircuitBreakerConfig::consecutive(1)
            .open_duration(Duration::from_secs(1))
            .open_backoff(1.0, Duration::from_secs(1))
            .open_jitter(0.0)
            .half_open(PERMITTED, None),
    )
    .clock(clock.clone())
    .build()
    .unwrap();
    for round in 0..50_u32 {
        // Trip (or re-trip), then let the open period pass.
        if breaker.state() != CircuitState::Open {
            breaker.reset();
            breaker.try_acquire().unwrap().failure();
        }
        clock.advance(Duration::from_secs(1));
        assert_eq!(breaker.state(), CircuitState::HalfOpen);
        let in_flight = AtomicU32::new(0);
        let peak = AtomicU32::new(0);
        let barrier = Barrier::new(THREADS);
        thread::scope(|scope| {
            for thread_index in 0..THREADS {
                let (breaker, in_flight, peak, barrier) = (&breaker, &in_flight, &peak, &barrier);
                scope.spawn(move || {
                    barrier.wait();
                    for i in 0..500_u32 {
                        let Ok(permit) = breaker.try_acquire() else {
                            continue;
                        };
                        if permit.state() != CircuitState::HalfOpen {
                            permit.ignore();
                            continue;
                        }
                        let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::hint::spin_loop();
                        in_flight.fetch_sub(1, Ordering::SeqCst);
                        // Mostly give the slot back, sometimes decide.
                        match (i + round + u32::try_from(thread_index).unwrap()) % 17 {
                            0 => permit.success(),
                            1 if round % 2 == 0 => permit.failure(),
                            _ => permit.ignore(),
                        }
                    }
                });
            }
        });
        assert!(
            peak.load(Ordering::SeqCst) <= PERMITTED,
            "round {round}: {} trials at once",
            peak.load(Ordering::SeqCst)
        );
        let state = breaker.state();
        assert!(
            matches!(
                state,
                CircuitState::Open | CircuitState::Closed | CircuitState::HalfOpen
            ),
            "{state:?}"
        );
    }
}

#[test]
fn half_open_hands_out_exactly_the_permitted_trials() {
    let clock = ManualClock::new();
    let breaker = CircuitBreaker::builder(
        CircuitBreakerConfig::consecutive(1)
            .open_duration(Duration::from_secs(1))
            .open_jitter(0.0)
            .half_open(5, None),
    )
    .clock(clock.clone())
    .build()
    .unwrap();
    breaker.try_acquire().unwrap().failure();
    clock.advance(Duration::from_secs(1));
    let granted = AtomicU32::new(0);
    let refused_full = AtomicU32::new(0);
    let barrier = Barrier::new(THREADS);
    let held = std::sync::Mutex::new(Vec::new());
    thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                barrier.wait();
                for _ in 0..1000 {
                    match breaker.try_acquire_owned() {
                        Ok(permit) => {
                            granted.fetch_add(1, Ordering::SeqCst);
                            held.lock().unwrap().push(permit);
                        }
                        Err(CallNotPermitted::HalfOpenFull) => {
                            refused_full.fetch_add(1, Ordering::SeqCst);
                        }
                        Err(other) => panic!("unexpected {other}"),
                    }
                }
            });
        }
    });
    assert_eq!(granted.load(Ordering::SeqCst), 5);
    assert_eq!(refused_full.load(Ordering::SeqCst), 4000 - 5);
    for permit in held.into_inner().unwrap() {
        permit.success();
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[test]
fn concurrent_failures_trip_once() {
    let breaker = CircuitBreaker::builder(CircuitBreakerConfig::consecutive(10).open_jitter(0.0))
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let mut events = breaker.subscribe();
    thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                for _ in 0..1000 {
                    if let Ok(permit) = breaker.try_acquire() {
                        permit.failure();
                    }
                }
            });
        }
    });
    assert_eq!(breaker.state(), CircuitState::Open);
    let transitions: Vec<_> = std::iter::from_fn(|| events.try_recv().ok()).collect();
    assert_eq!(transitions.len(), 1, "{transitions:?}");
}

#[test]
fn contended_limiter_admits_exactly_the_burst_at_one_instant() {
    let limiter = RateLimiter::builder(Quota::per_hour(1000))
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let admitted = AtomicU64::new(0);
    let barrier = Barrier::new(THREADS);
    thread::scope(|scope| {
        for _ in 0..THREADS {
            scope.spawn(|| {
                barrier.wait();
                for _ in 0..2000 {
                    if limiter.check(1).is_ok() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert_eq!(admitted.load(Ordering::Relaxed), 1000);
}

#[test]
fn contended_limiter_stays_within_quota_while_time_moves() {
    // 100 per second, burst 10; a ticker advances the clock 1 ms at a time
    // while the workers make a fixed number of calls each.
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(Quota::per_second(100).with_burst(10))
        .clock(clock.clone())
        .build()
        .unwrap();
    let admitted = AtomicU64::new(0);
    let working = AtomicU32::new(u32::try_from(THREADS - 1).unwrap());
    thread::scope(|scope| {
        for _ in 0..THREADS - 1 {
            scope.spawn(|| {
                for _ in 0..20_000 {
                    if limiter.check(1).is_ok() {
                        admitted.fetch_add(1, Ordering::Relaxed);
                    }
                }
                working.fetch_sub(1, Ordering::Release);
            });
        }
        while working.load(Ordering::Acquire) > 0 {
            clock.advance(Duration::from_millis(1));
            thread::yield_now();
        }
    });
    let elapsed_ms = clock.now().as_nanos() / 1_000_000;
    let admitted = admitted.load(Ordering::Relaxed);
    // At most burst + rate × elapsed, whatever the interleaving.
    assert!(
        admitted <= 10 + elapsed_ms / 10,
        "{admitted} admitted in {elapsed_ms} ms"
    );
}

#[test]
fn keyed_limiter_under_contention_with_eviction() {
    let limiter: KeyedRateLimiter<u32> = KeyedRateLimiter::builder(Quota::per_hour(3))
        .clock(ManualClock::new())
        .max_keys(64)
        .shards(4)
        .build()
        .unwrap();
    let admitted: Vec<AtomicU64> = (0..16).map(|_| AtomicU64::new(0)).collect();
    // Two of each hot key's three tokens are taken first: a churning key
    // takes one, so every hot bucket is then strictly emptier (a later TAT)
    // than any churning one. With a single token taken, a hot key would tie
    // with churning keys, and evicting it on a tie is allowed.
    for key in 0..16_u32 {
        for _ in 0..2 {
            if limiter.check(&key, 1).is_ok() {
                admitted[key as usize].fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    thread::scope(|scope| {
        for t in 0..THREADS {
            let (limiter, admitted) = (&limiter, &admitted);
            scope.spawn(move || {
                for i in 0..4000_u32 {
                    // Keys 0..16 are hot; keys ≥ 1000 churn through eviction.
                    let key = if i % 2 == 0 {
                        (i / 2) % 16
                    } else {
                        1000 + i + u32::try_from(t).unwrap() * 100_000
                    };
                    if limiter.check(&key, 1).is_ok() && key < 16 {
                        admitted[key as usize].fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    assert!(limiter.len() <= 64, "{} keys", limiter.len());
    // A hot key's bucket is emptier than any churning key's (larger TAT),
    // so eviction takes churning keys first and each hot key gets exactly
    // its burst.
    for count in &admitted {
        assert_eq!(count.load(Ordering::Relaxed), 3);
    }
}
