//! Tests of the tower middleware, under tokio's paused clock.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tower::{Layer, Service, ServiceExt, service_fn};

use super::*;
use crate::{
    AdaptiveLimit, AimdConfig, Backoff, Bulkhead, BulkheadConfig, BulkheadError, CallNotPermitted,
    CallOutcome, CircuitBreaker, CircuitBreakerConfig, CircuitState, KeyedRateLimiter,
    LimitAlgorithm, LimitOutcome, ManualClock, Quota, RateLimitError, RateLimiter, Retry,
    RetryConfig, RetryError, Timeout, TimeoutError,
};

type TestError = &'static str;

fn echo() -> impl Service<
    u32,
    Response = u32,
    Error = TestError,
    Future = impl Future<Output = Result<u32, TestError>> + Send,
> + Clone {
    service_fn(|x: u32| async move { if x == 0 { Err("zero") } else { Ok(x) } })
}

#[tokio::test]
async fn breaker_layer_opens_and_refuses() {
    let breaker = CircuitBreaker::builder(CircuitBreakerConfig::consecutive(2))
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let layer = CircuitBreakerLayer::new(breaker.clone());
    let mut first = layer.layer(echo());
    let mut second = layer.clone().layer(echo());
    assert_eq!(first.ready().await.unwrap().call(5).await.unwrap(), 5);
    assert!(first.ready().await.unwrap().call(0).await.is_err());
    assert!(second.ready().await.unwrap().call(0).await.is_err());
    assert_eq!(
        breaker.state(),
        CircuitState::Open,
        "clones of the layer share the breaker"
    );
    let error = first.ready().await.unwrap().call(5).await.unwrap_err();
    assert!(matches!(
        error.downcast_ref::<CallNotPermitted>(),
        Some(CallNotPermitted::Open { .. })
    ));
}

#[tokio::test]
async fn breaker_layer_uses_the_classifier() {
    let breaker = CircuitBreaker::new(CircuitBreakerConfig::consecutive(1)).unwrap();
    let classify = |r: &Result<u32, TestError>| {
        if r.is_err() {
            CallOutcome::Ignored
        } else {
            CallOutcome::Success
        }
    };
    let mut service = CircuitBreakerLayer::with_classifier(breaker.clone(), classify).layer(echo());
    for _ in 0..3 {
        assert!(service.ready().await.unwrap().call(0).await.is_err());
    }
    assert_eq!(breaker.state(), CircuitState::Closed);
}

#[tokio::test]
async fn rate_limit_layers() {
    let clock = ManualClock::new();
    let limiter = RateLimiter::builder(Quota::per_minute(2))
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut service = RateLimitLayer::new(limiter).layer(echo());
    for _ in 0..2 {
        service.ready().await.unwrap().call(1).await.unwrap();
    }
    let error = service.ready().await.unwrap().call(1).await.unwrap_err();
    let refusal = error.downcast_ref::<RateLimitError>().unwrap();
    assert_eq!(refusal.wait_time(), Some(Duration::from_secs(30)));

    let keyed: KeyedRateLimiter<u32> = KeyedRateLimiter::builder(Quota::per_minute(1))
        .clock(clock)
        .build()
        .unwrap();
    let mut service = KeyedRateLimitLayer::new(keyed.clone(), |x: &u32| *x % 2).layer(echo());
    service.ready().await.unwrap().call(1).await.unwrap();
    service.ready().await.unwrap().call(2).await.unwrap();
    assert!(
        service.ready().await.unwrap().call(3).await.is_err(),
        "key 1 is spent"
    );
    assert_eq!(keyed.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn bulkhead_layer_holds_a_permit_per_call() {
    let bulkhead = Bulkhead::new(BulkheadConfig::new(1)).unwrap();
    let slow = service_fn(|x: u32| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, TestError>(x)
    });
    let layer = BulkheadLayer::new(bulkhead.clone());
    let mut a = layer.layer(slow);
    let mut b = layer.layer(slow);
    let running = a.ready().await.unwrap().call(1);
    assert_eq!(bulkhead.in_flight(), 1);
    let refused = b.ready().await.unwrap().call(2).await.unwrap_err();
    assert!(matches!(
        refused.downcast_ref::<BulkheadError>(),
        Some(BulkheadError::Full { .. })
    ));
    assert_eq!(running.await.unwrap(), 1);
    assert_eq!(bulkhead.in_flight(), 0);
    assert_eq!(b.ready().await.unwrap().call(3).await.unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn bulkhead_layer_queues_when_configured() {
    let bulkhead = Bulkhead::new(BulkheadConfig::new(1).queue(4, None)).unwrap();
    let slow = service_fn(|x: u32| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, TestError>(x)
    });
    let layer = BulkheadLayer::new(bulkhead.clone());
    let start = tokio::time::Instant::now();
    let handles: Vec<_> = (0..3)
        .map(|i| tokio::spawn(layer.layer(slow).oneshot(i)))
        .collect();
    let mut results = Vec::new();
    for handle in handles {
        results.push(handle.await.unwrap().unwrap());
    }
    assert_eq!(results, vec![0, 1, 2]);
    assert_eq!(start.elapsed(), Duration::from_secs(3), "one at a time");
}

#[tokio::test(start_paused = true)]
async fn retry_layer_retries_then_gives_up() {
    let calls = Arc::new(AtomicU32::new(0));
    let flaky = {
        let calls = Arc::clone(&calls);
        service_fn(move |x: u32| {
            let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                if n < 3 || x == 0 {
                    Err::<u32, TestError>("flaky")
                } else {
                    Ok(x)
                }
            }
        })
    };
    let retry =
        Retry::new(RetryConfig::new(3).backoff(Backoff::constant(Duration::from_secs(1)))).unwrap();
    let mut service = RetryLayer::new(retry.clone()).layer(flaky);
    let start = tokio::time::Instant::now();
    assert_eq!(service.ready().await.unwrap().call(7).await.unwrap(), 7);
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    let error = service.ready().await.unwrap().call(0).await.unwrap_err();
    let error = error.downcast_ref::<RetryError<BoxError>>().unwrap();
    assert_eq!(error.attempts(), 3);
    assert_eq!(error.inner().to_string(), "flaky");

    let mut never = RetryLayer::with_predicate(retry, |_: &TestError| false).layer(echo());
    let error = never.ready().await.unwrap().call(0).await.unwrap_err();
    assert!(matches!(
        error.downcast_ref::<RetryError<BoxError>>(),
        Some(RetryError::NotRetryable { attempts: 1, .. })
    ));
}

#[tokio::test(start_paused = true)]
async fn timeout_layer_cancels() {
    let slow = service_fn(|x: u32| async move {
        tokio::time::sleep(Duration::from_secs(10)).await;
        Ok::<_, TestError>(x)
    });
    let timeout = Timeout::new(Duration::from_secs(1)).unwrap();
    let mut service = TimeoutLayer::new(timeout.clone()).layer(slow);
    let error = service.ready().await.unwrap().call(1).await.unwrap_err();
    assert_eq!(
        error.downcast_ref::<TimeoutError>(),
        Some(&TimeoutError::Elapsed {
            after: Duration::from_secs(1)
        })
    );
    timeout.set_duration(Duration::from_secs(20)).unwrap();
    assert_eq!(service.ready().await.unwrap().call(1).await.unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn adaptive_layer_samples_and_limits() {
    let limit = AdaptiveLimit::builder(LimitAlgorithm::Aimd(AimdConfig::new(2, 1, 4)))
        .clock(ManualClock::new())
        .build()
        .unwrap();
    let classify = |r: &Result<u32, TestError>| {
        if r.is_err() {
            LimitOutcome::Dropped
        } else {
            LimitOutcome::Success
        }
    };
    let layer = AdaptiveLimitLayer::with_classifier(limit.clone(), classify);
    let mut service = layer.layer(echo());
    assert!(service.ready().await.unwrap().call(0).await.is_err());
    assert_eq!(limit.current(), 1, "a drop shrinks the limit");
    assert_eq!(limit.in_flight(), 0);

    // At the limit, readiness waits for a token.
    let slow = service_fn(|x: u32| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Ok::<_, TestError>(x)
    });
    let layer = AdaptiveLimitLayer::new(limit.clone());
    let mut a = layer.layer(slow);
    let b = layer.layer(slow);
    let running = a.ready().await.unwrap().call(1);
    let waiting = tokio::spawn(b.oneshot(2));
    tokio::task::yield_now().await;
    assert!(!waiting.is_finished());
    assert_eq!(running.await.unwrap(), 1);
    assert_eq!(waiting.await.unwrap().unwrap(), 2);
    assert_eq!(limit.in_flight(), 0);
}
