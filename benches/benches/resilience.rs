//! orchex-resilience against the crates a user would otherwise pick, in the
//! same run and with the same quotas:
//!
//! * rate limiter: governor 0.10 (direct, and keyed with 10 000 keys);
//! * circuit breaker: failsafe 1.3 (`CircuitBreaker::call` on the `Ok`
//!   path, consecutive-failures policy) against our guarded call
//!   (`try_acquire` + `success`, consecutive-failures policy);
//! * bulkhead: a bare `tokio::sync::Semaphore` (`try_acquire` + drop).
//!
//! Single-thread groups report ns per operation; `contended_2t` groups run
//! two std threads on one shared limiter, breaker or bulkhead and report
//! total operations per second (criterion's elements/s).
//!
//! Run: `cargo bench -p orchex-benches --bench resilience -- --warm-up-time 1 --measurement-time 3`.

#![allow(missing_docs)] // criterion_group! generates undocumented items
#![allow(clippy::unwrap_used, clippy::expect_used)] // a benchmark may panic on setup errors

use std::hint::black_box;
use std::num::NonZeroU32;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{
    BenchmarkGroup, Criterion, Throughput, criterion_group, criterion_main, measurement::WallTime,
};
use failsafe::CircuitBreaker as _;
use orchex_resilience as ours;

/// The admitting quota: one unit per nanosecond, a burst of 10^9 — the
/// limiter always admits, so the admit path is what is measured.
const HUGE: u32 = 1_000_000_000;
const KEYS: u64 = 10_000;
const THREADS: usize = 2;

// Each thread of the contended keyed benchmark walks all keys, starting
// from its own offset.
static NEXT_OFFSET: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
thread_local! {
    static KEY: std::cell::Cell<u64> = std::cell::Cell::new(
        NEXT_OFFSET.fetch_add(KEYS / THREADS as u64, std::sync::atomic::Ordering::Relaxed) % KEYS,
    );
}

fn ours_limiter(quota: ours::Quota) -> ours::RateLimiter {
    ours::RateLimiter::new(quota).unwrap()
}

fn governor_direct(quota: governor::Quota) -> governor::DefaultDirectRateLimiter {
    governor::RateLimiter::direct(quota)
}

fn governor_huge() -> governor::Quota {
    governor::Quota::per_second(NonZeroU32::new(HUGE).unwrap())
}

fn governor_hourly_one() -> governor::Quota {
    governor::Quota::per_hour(NonZeroU32::new(1).unwrap())
}

fn ours_breaker() -> ours::CircuitBreaker {
    ours::CircuitBreaker::new(ours::CircuitBreakerConfig::consecutive(5)).unwrap()
}

fn failsafe_breaker() -> impl failsafe::CircuitBreaker + Sync {
    let backoff = failsafe::backoff::constant(Duration::from_secs(30));
    let policy = failsafe::failure_policy::consecutive_failures(5, backoff);
    failsafe::Config::new().failure_policy(policy).build()
}

fn limiter_direct(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter_direct_admit");
    group.throughput(Throughput::Elements(1));
    let ours = ours_limiter(ours::Quota::per_second(HUGE));
    group.bench_function("orchex", |b| b.iter(|| black_box(ours.check(1)).is_ok()));
    let governor = governor_direct(governor_huge());
    group.bench_function("governor", |b| {
        b.iter(|| black_box(governor.check()).is_ok());
    });
    group.finish();

    let mut group = c.benchmark_group("limiter_direct_reject");
    group.throughput(Throughput::Elements(1));
    let ours = ours_limiter(ours::Quota::per_hour(1));
    ours.check(1).unwrap();
    group.bench_function("orchex", |b| b.iter(|| black_box(ours.check(1)).is_ok()));
    let governor = governor_direct(governor_hourly_one());
    governor.check().unwrap();
    group.bench_function("governor", |b| {
        b.iter(|| black_box(governor.check()).is_ok());
    });
    group.finish();
}

fn limiter_keyed(c: &mut Criterion) {
    let mut group = c.benchmark_group("limiter_keyed_10k_admit");
    group.throughput(Throughput::Elements(1));
    let ours: ours::KeyedRateLimiter<u64> =
        ours::KeyedRateLimiter::builder(ours::Quota::per_second(HUGE))
            .max_keys(100_000)
            .build()
            .unwrap();
    let sip: ours::KeyedRateLimiter<u64, std::collections::hash_map::RandomState> =
        ours::KeyedRateLimiter::<u64>::builder(ours::Quota::per_second(HUGE))
            .max_keys(100_000)
            .hasher(std::collections::hash_map::RandomState::new())
            .build()
            .unwrap();
    let governor = governor::RateLimiter::keyed(governor_huge());
    for key in 0..KEYS {
        ours.check(&key, 1).unwrap();
        sip.check(&key, 1).unwrap();
        governor.check_key(&key).unwrap();
    }
    let mut key = 0;
    group.bench_function("orchex", |b| {
        b.iter(|| {
            key = (key + 1) % KEYS;
            black_box(ours.check(&key, 1)).is_ok()
        });
    });
    group.bench_function("orchex_siphash", |b| {
        b.iter(|| {
            key = (key + 1) % KEYS;
            black_box(sip.check(&key, 1)).is_ok()
        });
    });
    group.bench_function("governor", |b| {
        b.iter(|| {
            key = (key + 1) % KEYS;
            black_box(governor.check_key(&key)).is_ok()
        });
    });
    group.finish();
}

fn breaker(c: &mut Criterion) {
    let mut group = c.benchmark_group("breaker_guarded_success");
    group.throughput(Throughput::Elements(1));
    let ours = ours_breaker();
    group.bench_function("orchex", |b| {
        b.iter(|| black_box(&ours).try_acquire().map(ours::Permit::success));
    });
    group.bench_function("orchex_call_sync", |b| {
        b.iter(|| black_box(ours.call_sync(|| Ok::<_, ()>(black_box(1)))));
    });
    let windowed = ours::CircuitBreaker::new(
        ours::CircuitBreakerConfig::default()
            .sliding_window(ours::SlidingWindow::Count(100))
            .failure_rate(50.0, 100),
    )
    .unwrap();
    group.bench_function("orchex_count_window", |b| {
        b.iter(|| {
            black_box(&windowed)
                .try_acquire()
                .map(ours::Permit::success)
        });
    });
    let failsafe = failsafe_breaker();
    group.bench_function("failsafe", |b| {
        b.iter(|| black_box(failsafe.call(|| Ok::<_, ()>(black_box(1)))));
    });
    group.finish();

    let mut group = c.benchmark_group("breaker_open_reject");
    group.throughput(Throughput::Elements(1));
    let ours = ours_breaker();
    for _ in 0..5 {
        ours.try_acquire().unwrap().failure();
    }
    group.bench_function("orchex", |b| {
        b.iter(|| black_box(ours.try_acquire()).is_ok());
    });
    let failsafe = failsafe_breaker();
    for _ in 0..5 {
        let _ = failsafe.call(|| Err::<(), _>(()));
    }
    group.bench_function("failsafe", |b| {
        b.iter(|| black_box(failsafe.call(|| Ok::<_, ()>(1))).is_ok());
    });
    group.finish();
}

fn bulkhead(c: &mut Criterion) {
    let mut group = c.benchmark_group("bulkhead_acquire_release");
    group.throughput(Throughput::Elements(1));
    let ours = ours::Bulkhead::new(ours::BulkheadConfig::new(64)).unwrap();
    group.bench_function("orchex", |b| b.iter(|| drop(black_box(ours.try_acquire()))));
    let semaphore = tokio::sync::Semaphore::new(64);
    group.bench_function("tokio_semaphore", |b| {
        b.iter(|| drop(black_box(semaphore.try_acquire())));
    });
    group.finish();
}

/// Runs `op` `iters` times in total, split over [`THREADS`] threads that
/// start together; returns the wall time from the first thread's start to
/// the last thread's end.
fn contended(iters: u64, op: &(impl Fn() + Sync)) -> Duration {
    let per_thread = iters.div_ceil(THREADS as u64);
    let barrier = Barrier::new(THREADS);
    let spans: Vec<(Instant, Instant)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..THREADS)
            .map(|_| {
                scope.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..per_thread {
                        op();
                    }
                    (start, Instant::now())
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let start = spans.iter().map(|s| s.0).min().unwrap();
    let end = spans.iter().map(|s| s.1).max().unwrap();
    end.duration_since(start).max(Duration::from_nanos(1))
}

fn bench_contended(group: &mut BenchmarkGroup<'_, WallTime>, name: &str, op: &(impl Fn() + Sync)) {
    group.bench_function(name, |b| b.iter_custom(|iters| contended(iters, op)));
}

fn contended_2t(c: &mut Criterion) {
    let mut group = c.benchmark_group("contended_2t_limiter_admit");
    group.throughput(Throughput::Elements(1));
    let ours = ours_limiter(ours::Quota::per_second(HUGE));
    bench_contended(&mut group, "orchex", &|| {
        black_box(ours.check(1)).ok();
    });
    let governor = governor_direct(governor_huge());
    bench_contended(&mut group, "governor", &|| {
        black_box(governor.check()).ok();
    });
    group.finish();

    let mut group = c.benchmark_group("contended_2t_keyed_10k_admit");
    group.throughput(Throughput::Elements(1));
    let ours: ours::KeyedRateLimiter<u64> =
        ours::KeyedRateLimiter::builder(ours::Quota::per_second(HUGE))
            .max_keys(100_000)
            .build()
            .unwrap();
    let governor = governor::RateLimiter::keyed(governor_huge());
    for key in 0..KEYS {
        ours.check(&key, 1).unwrap();
        governor.check_key(&key).unwrap();
    }
    let local_key = || {
        KEY.with(|k| {
            let v = (k.get() + 1) % KEYS;
            k.set(v);
            v
        })
    };
    bench_contended(&mut group, "orchex", &|| {
        black_box(ours.check(&local_key(), 1)).ok();
    });
    bench_contended(&mut group, "governor", &|| {
        black_box(governor.check_key(&local_key())).ok();
    });
    group.finish();

    let mut group = c.benchmark_group("contended_2t_breaker_guarded_success");
    group.throughput(Throughput::Elements(1));
    let ours = ours_breaker();
    bench_contended(&mut group, "orchex", &|| {
        let _ = black_box(&ours).try_acquire().map(ours::Permit::success);
    });
    let failsafe = failsafe_breaker();
    bench_contended(&mut group, "failsafe", &|| {
        let _ = black_box(failsafe.call(|| Ok::<_, ()>(1)));
    });
    group.finish();

    let mut group = c.benchmark_group("contended_2t_bulkhead_acquire_release");
    group.throughput(Throughput::Elements(1));
    let ours = ours::Bulkhead::new(ours::BulkheadConfig::new(64)).unwrap();
    bench_contended(&mut group, "orchex", &|| {
        drop(black_box(ours.try_acquire()));
    });
    let semaphore = tokio::sync::Semaphore::new(64);
    bench_contended(&mut group, "tokio_semaphore", &|| {
        drop(black_box(semaphore.try_acquire()));
    });
    group.finish();
}

criterion_group!(
    benches,
    limiter_direct,
    limiter_keyed,
    breaker,
    bulkhead,
    contended_2t
);
criterion_main!(benches);
