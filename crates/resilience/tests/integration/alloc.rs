//! The hot paths allocate nothing. A counting global allocator counts the
//! allocations of the current thread only, so tests running in parallel
//! on other threads do not disturb the count.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::time::Duration;

use orchex_resilience::{
    AdaptiveLimit, AimdConfig, Bulkhead, BulkheadConfig, CircuitBreaker, CircuitBreakerConfig,
    KeyedRateLimiter, LimitAlgorithm, Quota, RateLimiter, SlidingWindow,
};

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    let counting = COUNTING.try_with(Cell::get).unwrap_or(false);
    if counting {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: delegates every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs `f` once to warm up, then 1000 times counting allocations.
fn allocations(mut f: impl FnMut()) -> u64 {
    f();
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|c| c.set(true));
    for _ in 0..1000 {
        f();
    }
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn the_counter_sees_allocations() {
    assert_eq!(allocations(|| drop(black_box(vec![1_u8; 16]))), 1000);
}

#[test]
fn rate_limiter_check_does_not_allocate() {
    let admitting = RateLimiter::builder(Quota::per_second(1_000_000_000))
        .name("alloc-admit")
        .build()
        .unwrap();
    assert_eq!(
        allocations(|| {
            let _ = black_box(admitting.check(1));
        }),
        0
    );
    let refusing = RateLimiter::builder(Quota::per_hour(1))
        .name("alloc-refuse")
        .build()
        .unwrap();
    assert_eq!(
        allocations(|| {
            let _ = black_box(refusing.check(1));
        }),
        0
    );
    assert_eq!(
        allocations(|| {
            let _ = black_box(refusing.peek(1));
        }),
        0
    );
}

#[test]
fn keyed_check_on_an_existing_key_does_not_allocate() {
    let limiter: KeyedRateLimiter<String> =
        KeyedRateLimiter::builder(Quota::per_second(1_000_000_000))
            .name("alloc-keyed")
            .build()
            .unwrap();
    for i in 0..100 {
        limiter.check(format!("repo-{i}").as_str(), 1).unwrap();
    }
    assert_eq!(
        allocations(|| {
            let _ = black_box(limiter.check("repo-42", 1));
        }),
        0
    );
    let numbers: KeyedRateLimiter<u64> = KeyedRateLimiter::new(Quota::per_hour(1)).unwrap();
    numbers.check(&7, 1).unwrap();
    assert_eq!(
        allocations(|| {
            let _ = black_box(numbers.check(&7, 1));
        }),
        0,
        "refusals too"
    );
}

#[test]
fn breaker_try_acquire_and_guarded_success_do_not_allocate() {
    let consecutive = CircuitBreaker::builder(CircuitBreakerConfig::consecutive(5))
        .name("alloc-cb")
        .build()
        .unwrap();
    assert_eq!(
        allocations(|| consecutive.try_acquire().unwrap().success()),
        0
    );
    assert_eq!(
        allocations(|| drop(black_box(consecutive.try_acquire()))),
        0,
        "acquire alone, dropped"
    );
    assert_eq!(
        allocations(|| drop(black_box(consecutive.call_sync(|| Ok::<_, ()>(1))))),
        0
    );

    let windowed = CircuitBreaker::builder(
        CircuitBreakerConfig::default()
            .sliding_window(SlidingWindow::Count(100))
            .failure_rate(50.0, 10)
            .slow_call_rate(90.0, Duration::from_secs(1)),
    )
    .name("alloc-cb-window")
    .build()
    .unwrap();
    assert_eq!(allocations(|| windowed.try_acquire().unwrap().success()), 0);

    let timed = CircuitBreaker::new(CircuitBreakerConfig::failure_count_in(
        1_000_000,
        SlidingWindow::Time(Duration::from_secs(60)),
    ))
    .unwrap();
    assert_eq!(allocations(|| timed.try_acquire().unwrap().success()), 0);
    assert_eq!(
        allocations(|| timed.try_acquire().unwrap().failure()),
        0,
        "a failure that does not trip"
    );
}

#[test]
fn open_breaker_refusal_does_not_allocate() {
    let breaker = CircuitBreaker::new(CircuitBreakerConfig::consecutive(1)).unwrap();
    breaker.try_acquire().unwrap().failure();
    assert_eq!(allocations(|| drop(black_box(breaker.try_acquire()))), 0);
}

#[test]
fn bulkhead_and_adaptive_limit_do_not_allocate() {
    let bulkhead = Bulkhead::builder(BulkheadConfig::new(4))
        .name("alloc-bulkhead")
        .build()
        .unwrap();
    assert_eq!(allocations(|| drop(black_box(bulkhead.try_acquire()))), 0);
    let limit = AdaptiveLimit::new(LimitAlgorithm::Aimd(AimdConfig::new(10, 10, 10))).unwrap();
    assert_eq!(allocations(|| limit.try_acquire().unwrap().success()), 0);
}
