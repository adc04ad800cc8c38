//! Resilience primitives for async Rust: circuit breaker, rate limiter
//! (direct and keyed), bulkhead, retry with budget, timeout and adaptive
//! concurrency limit — resilience4j's breadth, on hot paths that cost a few
//! nanoseconds and never allocate.
//!
//! This crate knows nothing about orchex: any service can embed it. Every
//! primitive
//!
//! * is cheap to clone, and clones share state (an `Arc` inside);
//! * can be reconfigured at run time without losing its state
//!   (`reconfigure`, `set_*`);
//! * reads time through an injectable [`Clock`] ([`SystemClock`] by
//!   default, [`ManualClock`] for exact tests, [`TokioClock`] to follow
//!   `tokio::time::pause`) or sleeps with tokio's timer;
//! * optionally exports metrics through the `metrics` facade (give it a
//!   name) and has a `tower` layer.
//!
//! # Examples
//!
//! ## Circuit breaker
//!
//! Open after 5 failures within 10 minutes; stay open 60 s, doubling on
//! each repeated trip; one trial call in half-open.
//!
//! ```
//! use std::time::Duration;
//! use orchex_resilience::{CircuitBreaker, CircuitBreakerConfig, CircuitBreakerError, CircuitState, SlidingWindow};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = CircuitBreakerConfig::failure_count_in(5, SlidingWindow::Time(Duration::from_secs(600)))
//!     .open_duration(Duration::from_secs(60))
//!     .open_backoff(2.0, Duration::from_secs(3600))
//!     .half_open(1, Some(Duration::from_secs(900)));
//! let breaker = CircuitBreaker::builder(config).name("api/codegen").build()?;
//! let mut transitions = breaker.subscribe();
//!
//! for _ in 0..5 {
//!     let result = breaker.call(|| async { Err::<(), _>("step failed") }).await;
//!     assert!(matches!(result, Err(CircuitBreakerError::Inner("step failed"))));
//! }
//! assert_eq!(breaker.state(), CircuitState::Open);
//! let refused = breaker.call(|| async { Ok::<_, &str>(()) }).await.unwrap_err();
//! assert!(matches!(refused, CircuitBreakerError::NotPermitted(_)));
//! assert_eq!(transitions.try_recv()?.to, CircuitState::Open);
//!
//! // Without a future to wrap: a permit, then a verdict.
//! if let Ok(permit) = breaker.try_acquire() {
//!     permit.success();
//! }
//! # Ok(())
//! # }
//! ```
//!
//! ## Rate limiter
//!
//! ```
//! use orchex_resilience::{KeyedRateLimiter, Quota, RateLimiter};
//!
//! // 10 jobs per hour, bursts of 10, cost 1 per job.
//! let limiter = RateLimiter::new(Quota::per_hour(10))?;
//! limiter.check(1)?;
//! assert_eq!(limiter.snapshot().available, 9);
//!
//! // The same, per repository, for at most 10 000 repositories.
//! let per_repo: KeyedRateLimiter<String> = KeyedRateLimiter::builder(Quota::per_hour(10)).max_keys(10_000).build()?;
//! for _ in 0..10 {
//!     per_repo.check("api", 1)?;
//! }
//! let refused = per_repo.check("api", 1).unwrap_err();
//! println!("retry in {:?}", refused.wait_time());
//! assert!(per_repo.check("web", 1).is_ok());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## Bulkhead
//!
//! ```
//! use std::time::Duration;
//! use orchex_resilience::{Bulkhead, BulkheadConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // 4 at once; up to 100 more wait in FIFO order, each at most 30 s.
//! let bulkhead = Bulkhead::new(BulkheadConfig::new(4).queue(100, Some(Duration::from_secs(30))))?;
//! let answer = bulkhead.call(|| async { 42 }).await?;
//! assert_eq!(answer, 42);
//! let permit = bulkhead.try_acquire()?; // or hold a permit yourself
//! assert_eq!(bulkhead.in_flight(), 1);
//! drop(permit);
//! # Ok(())
//! # }
//! ```
//!
//! ## Retry
//!
//! ```
//! use std::time::Duration;
//! use orchex_resilience::{Backoff, Jitter, Retry, RetryBudget, RetryBudgetConfig, RetryConfig};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let budget = RetryBudget::new(RetryBudgetConfig::default())?; // ≤ 20 % extra load
//! let retry = Retry::builder(
//!     RetryConfig::new(4).backoff(Backoff::exponential(Duration::from_millis(100), Duration::from_secs(5)).jitter(Jitter::Equal)),
//! )
//! .budget(budget)
//! .build()?;
//! let mut attempts = 0;
//! let value = retry
//!     .call_if(
//!         || {
//!             attempts += 1;
//!             let n = attempts;
//!             async move { if n < 3 { Err(std::io::ErrorKind::TimedOut) } else { Ok(n) } }
//!         },
//!         |kind| *kind == std::io::ErrorKind::TimedOut,
//!     )
//!     .await?;
//! assert_eq!(value, 3);
//! # Ok(())
//! # }
//! ```
//!
//! ## Timeout
//!
//! ```
//! use std::time::Duration;
//! use orchex_resilience::{Timeout, TimeoutError};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let timeout = Timeout::new(Duration::from_secs(900))?;
//! // On expiry the job's future is dropped, which cancels it.
//! let outcome = timeout.call(tokio::time::sleep(Duration::from_secs(3600))).await;
//! assert!(matches!(outcome, Err(TimeoutError::Elapsed { .. })));
//! # Ok(())
//! # }
//! ```
//!
//! ## Adaptive concurrency limit
//!
//! ```
//! use orchex_resilience::{AdaptiveLimit, GradientConfig, LimitAlgorithm};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Between 1 and 16 jobs at once, following latency (Gradient2).
//! let limit = AdaptiveLimit::builder(LimitAlgorithm::Gradient(GradientConfig::new(4, 1, 16))).name("jobs").build()?;
//! let mut changes = limit.subscribe();
//! let token = limit.acquire().await; // waits while the limit is reached
//! // ... run the job ...
//! token.success(); // or .dropped() on overload, .ignore() otherwise
//! println!("limit is now {}", *changes.borrow_and_update());
//! # Ok(())
//! # }
//! ```
//!
//! # Feature flags
//!
//! | feature | default | enables |
//! |---|---|---|
//! | `tower` | yes | [`tower`] layers for every primitive |
//! | `metrics` | yes | counters and gauges through the `metrics` facade |
//!
//! Without default features the crate depends on tokio (`sync`, `time`),
//! `quanta`, `fastrand`, `pin-project-lite` and `thiserror` only.
//!
//! # Metrics
//!
//! Only primitives built with a name record metrics. Handles are created
//! once at construction, so the hot path does not allocate.
//!
//! | metric | type | labels | resilience4j equivalent |
//! |---|---|---|---|
//! | `orchex_circuit_breaker_state` | gauge | `name` | `resilience4j_circuitbreaker_state` (one 0/1 series per `state`) |
//! | `orchex_circuit_breaker_calls_total` | counter | `name`, `outcome` = `success`, `failure`, `ignored`, `not_permitted` | `resilience4j_circuitbreaker_calls{kind=successful,failed,ignored}` and `resilience4j_circuitbreaker_not_permitted_calls_total` |
//! | `orchex_circuit_breaker_slow_calls_total` | counter | `name`, `outcome` = `success`, `failure` | `resilience4j_circuitbreaker_slow_calls{kind}` |
//! | `orchex_circuit_breaker_failure_rate` | gauge (percent, −1 below the minimum calls) | `name` | `resilience4j_circuitbreaker_failure_rate` |
//! | `orchex_circuit_breaker_transitions_total` | counter | `name`, `from`, `to` | (events: `CircuitBreakerOnStateTransitionEvent`) |
//! | `orchex_rate_limiter_rejections_total` | counter | `key` (the limiter's name, or each key's label) | (events: `RateLimiterOnFailureEvent`) |
//! | `orchex_rate_limiter_keys` | gauge | `name` | — |
//! | `orchex_bulkhead_in_flight` | gauge | `name` | `resilience4j_bulkhead_available_concurrent_calls` (as max − in flight) |
//! | `orchex_bulkhead_max_concurrent` | gauge | `name` | `resilience4j_bulkhead_max_allowed_concurrent_calls` |
//! | `orchex_bulkhead_queue_depth` | gauge | `name` | `resilience4j_thread_pool_bulkhead_queue_depth` |
//! | `orchex_bulkhead_rejections_total` | counter | `name`, `reason` = `full`, `timeout` | (events: `BulkheadOnCallRejectedEvent`) |
//! | `orchex_retry_calls_total` | counter | `name`, `outcome` = `success_without_retry`, `success_with_retry`, `failed_without_retry`, `failed_with_retry` | `resilience4j_retry_calls{kind}` (same four kinds) |
//! | `orchex_retry_budget_exhausted_total` | counter | `name` | — (Finagle's `retries/budget_exhausted`) |
//! | `orchex_timeout_calls_total` | counter | `name`, `outcome` = `completed`, `timeout` | `resilience4j_timelimiter_calls{kind=successful,timeout}` |
//! | `orchex_concurrency_limit` | gauge | `name` | — (Netflix concurrency-limits `limit`) |
//! | `orchex_adaptive_limit_in_flight` | gauge | `name` | — (concurrency-limits `inflight`) |
//! | `orchex_adaptive_limit_drops_total` | counter | `name` | — (concurrency-limits `dropped`) |
//!
//! The breaker's state gauge reads 0 closed, 1 open, 2 half-open,
//! 3 disabled, 4 forced-open, 5 metrics-only ([`CircuitState::as_gauge`]).
//!
//! # What this crate does not do
//!
//! It does not spawn threads or timers: open → half-open happens on the
//! next call or snapshot after the open period; nothing runs in between.
//! It keeps no history beyond the configured windows.

#![cfg_attr(docsrs, feature(doc_cfg))]

mod adaptive;
mod bulkhead;
mod circuit_breaker;
mod clock;
mod error;
mod instrument;
mod rate_limit;
mod retry;
mod timeout;
mod util;

#[cfg(feature = "tower")]
#[cfg_attr(docsrs, doc(cfg(feature = "tower")))]
pub mod tower;

pub use adaptive::{
    AdaptiveLimit, AdaptiveLimitBuilder, AdaptiveLimitSnapshot, AimdConfig, ClassifyLoad,
    DefaultLoadClassifier, GradientConfig, LimitAlgorithm, LimitChange, LimitError, LimitOutcome,
    LimitToken,
};
pub use bulkhead::{
    Acquire, Bulkhead, BulkheadBuilder, BulkheadConfig, BulkheadError, BulkheadPermit,
    BulkheadSnapshot, MAX_BULKHEAD_SIZE, OwnedBulkheadPermit,
};
pub use circuit_breaker::{
    CallNotPermitted, CallOutcome, CircuitBreaker, CircuitBreakerBuilder, CircuitBreakerConfig,
    CircuitBreakerError, CircuitBreakerRegistry, CircuitBreakerSnapshot, CircuitState, Classify,
    DEFAULT_EVENT_CAPACITY, DefaultClassifier, MAX_COUNT_WINDOW, MAX_HALF_OPEN_CALLS, OwnedPermit,
    Permit, SlidingWindow, StateTransition, TransitionReason,
};
pub use clock::{Clock, ManualClock, SharedClock, SystemClock, Timestamp, TokioClock};
pub use error::ConfigError;
pub use rate_limit::{
    DEFAULT_MAX_KEYS, KeyOverflow, KeyedRateLimiter, KeyedRateLimiterBuilder, NotUntil, Quota,
    RateLimitError, RateLimiter, RateLimiterBuilder, RateLimiterSnapshot,
};
pub use retry::{
    Backoff, Jitter, Retry, RetryBudget, RetryBudgetConfig, RetryBuilder, RetryConfig, RetryError,
};
pub use timeout::{Timeout, TimeoutError, TimeoutFuture};
pub use util::{FastBuildHasher, FastHasher};
