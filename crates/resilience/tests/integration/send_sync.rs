//! Compile-time checks: handles are `Send + Sync + Clone`, and the futures
//! they return are `Send` (so they can run on a multi-thread runtime).

use std::time::Duration;

use orchex_resilience::{
    AdaptiveLimit, AimdConfig, Bulkhead, BulkheadConfig, CircuitBreaker, CircuitBreakerConfig,
    CircuitBreakerRegistry, KeyedRateLimiter, LimitAlgorithm, LimitToken, OwnedBulkheadPermit,
    OwnedPermit, Quota, RateLimiter, Retry, RetryBudget, RetryConfig, Timeout,
};

fn handle<T: Send + Sync + Clone + 'static>() {}
fn owned<T: Send + 'static>() {}
fn sendable<T: Send>(_: &T) {}

#[test]
fn handles_are_send_sync_and_clone() {
    handle::<CircuitBreaker>();
    handle::<CircuitBreakerRegistry<String>>();
    handle::<RateLimiter>();
    handle::<KeyedRateLimiter<String>>();
    handle::<Bulkhead>();
    handle::<Retry>();
    handle::<RetryBudget>();
    handle::<Timeout>();
    handle::<AdaptiveLimit>();
    owned::<OwnedPermit>();
    owned::<OwnedBulkheadPermit>();
    owned::<LimitToken>();
}

#[test]
fn futures_are_send() {
    let breaker = CircuitBreaker::new(CircuitBreakerConfig::consecutive(3)).unwrap();
    sendable(&breaker.call(|| async { Ok::<_, std::io::Error>(()) }));
    let limiter = RateLimiter::new(Quota::per_second(1)).unwrap();
    sendable(&limiter.until_ready(1, Some(Duration::from_secs(1))));
    let bulkhead = Bulkhead::new(BulkheadConfig::new(1)).unwrap();
    sendable(&bulkhead.acquire());
    sendable(&bulkhead.call(|| async {}));
    let retry = Retry::new(RetryConfig::new(2)).unwrap();
    sendable(&retry.call(|| async { Ok::<_, std::io::Error>(()) }));
    let timeout = Timeout::new(Duration::from_secs(1)).unwrap();
    sendable(&timeout.call(async {}));
    let limit = AdaptiveLimit::new(LimitAlgorithm::Aimd(AimdConfig::new(1, 1, 2))).unwrap();
    sendable(&limit.acquire());
}
