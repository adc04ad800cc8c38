//! [`RetryLayer`] and the [`ShouldRetry`] predicate.

use tower_layer::Layer;

use super::RetryService;
use crate::retry::Retry;

/// Decides whether an error of the inner service is worth retrying.
/// Closures `Fn(&E) -> bool` implement it.
pub trait ShouldRetry<E> {
    /// Whether to retry after `error`.
    fn should_retry(&self, error: &E) -> bool;
}

impl<E, F: Fn(&E) -> bool> ShouldRetry<E> for F {
    fn should_retry(&self, error: &E) -> bool {
        self(error)
    }
}

/// Retries every error.
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryAll;

impl<E> ShouldRetry<E> for RetryAll {
    fn should_retry(&self, _: &E) -> bool {
        true
    }
}

/// Wraps services with a shared [`Retry`] policy (and its budget).
///
/// ```
/// use orchex_resilience::{Retry, RetryConfig};
/// use orchex_resilience::tower::RetryLayer;
///
/// let layer = RetryLayer::new(Retry::new(RetryConfig::new(3))?);
/// let service = tower::ServiceBuilder::new().layer(layer).service(tower::service_fn(|x: u32| async move {
///     Ok::<_, std::io::Error>(x)
/// }));
/// # drop(service);
/// # Ok::<(), orchex_resilience::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RetryLayer<P = RetryAll> {
    retry: Retry,
    predicate: P,
}

impl RetryLayer {
    /// Retries every error.
    pub fn new(retry: Retry) -> Self {
        Self {
            retry,
            predicate: RetryAll,
        }
    }
}

impl<P> RetryLayer<P> {
    /// Retries the errors `predicate` accepts.
    pub fn with_predicate(retry: Retry, predicate: P) -> Self {
        Self { retry, predicate }
    }
}

impl<S, P: Clone> Layer<S> for RetryLayer<P> {
    type Service = RetryService<S, P>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryService::new(inner, self.retry.clone(), self.predicate.clone())
    }
}
