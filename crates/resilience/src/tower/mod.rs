//! `tower` middleware for every primitive (feature `tower`).
//!
//! Each middleware follows tower's own layout (`layer.rs`, `service.rs`,
//! `future.rs`). A layer holds a handle to its primitive, so every service
//! it builds, and every clone of the layer, shares one breaker, limiter,
//! bulkhead, retry budget or limit.
//!
//! Errors are boxed ([`BoxError`]), as in tower; refusals are this crate's
//! error types, which callers can `downcast_ref`:
//!
//! | layer | refuses with |
//! |---|---|
//! | [`CircuitBreakerLayer`] | [`CallNotPermitted`](crate::CallNotPermitted) |
//! | [`RateLimitLayer`], [`KeyedRateLimitLayer`] | [`RateLimitError`](crate::RateLimitError) |
//! | [`BulkheadLayer`] | [`BulkheadError`](crate::BulkheadError) |
//! | [`RetryLayer`] | [`RetryError<BoxError>`](crate::RetryError) wrapping the last error |
//! | [`TimeoutLayer`] | [`TimeoutError`](crate::TimeoutError) |
//! | [`AdaptiveLimitLayer`] | (waits for a token; never refuses) |

pub mod adaptive;
pub mod bulkhead;
pub mod circuit_breaker;
pub mod rate_limit;
pub mod retry;
pub mod timeout;

pub use adaptive::{AdaptiveLimitLayer, AdaptiveLimitService};
pub use bulkhead::{BulkheadLayer, BulkheadService};
pub use circuit_breaker::{CircuitBreakerLayer, CircuitBreakerService};
pub use rate_limit::{
    KeyedRateLimitLayer, KeyedRateLimitService, RateLimitLayer, RateLimitService,
};
pub use retry::{RetryAll, RetryLayer, RetryService, ShouldRetry};
pub use timeout::{TimeoutLayer, TimeoutService};

/// The error type of every service here, as in tower.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Either the inner service's future, or an error decided before calling it.
mod either {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use pin_project_lite::pin_project;

    use super::BoxError;

    pin_project! {
        /// The inner future, or a refusal.
        #[project = Proj]
        pub(crate) enum Either<F, R> {
            /// The inner service was called.
            Called { #[pin] future: F },
            /// Refused before calling.
            Refused { error: Option<R> },
        }
    }

    impl<F, T, E, R> Future for Either<F, R>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<BoxError>,
        R: std::error::Error + Send + Sync + 'static,
    {
        type Output = Result<T, BoxError>;

        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match self.project() {
                Proj::Called { future } => future.poll(cx).map_err(Into::into),
                Proj::Refused { error } => match error.take() {
                    Some(error) => Poll::Ready(Err(Box::new(error))),
                    None => Poll::Ready(Err("polled after completion".into())),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests;
