//! [`RateLimitLayer`] and [`KeyedRateLimitLayer`].

use std::fmt;

use tower_layer::Layer;

use super::{KeyedRateLimitService, RateLimitService};
use crate::rate_limit::{KeyedRateLimiter, RateLimiter};
use crate::util::FastBuildHasher;

/// Limits the rate of calls through a shared [`RateLimiter`].
///
/// ```
/// use orchex_resilience::{Quota, RateLimiter};
/// use orchex_resilience::tower::RateLimitLayer;
///
/// let layer = RateLimitLayer::new(RateLimiter::new(Quota::per_second(100))?);
/// let service = tower::ServiceBuilder::new().layer(layer).service(tower::service_fn(|x: u32| async move {
///     Ok::<_, std::io::Error>(x)
/// }));
/// # drop(service);
/// # Ok::<(), orchex_resilience::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct RateLimitLayer {
    limiter: RateLimiter,
    cost: u32,
}

impl RateLimitLayer {
    /// Each call costs one unit.
    pub fn new(limiter: RateLimiter) -> Self {
        Self { limiter, cost: 1 }
    }

    /// Each call costs `cost` units.
    #[must_use]
    pub fn cost(mut self, cost: u32) -> Self {
        self.cost = cost;
        self
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimitService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimitService::new(inner, self.limiter.clone(), self.cost)
    }
}

/// Limits the rate of calls per key, through a shared
/// [`KeyedRateLimiter`]; `key_of` extracts the key from each request.
pub struct KeyedRateLimitLayer<K, F, H = FastBuildHasher> {
    limiter: KeyedRateLimiter<K, H>,
    key_of: F,
}

impl<K, F, H> KeyedRateLimitLayer<K, F, H> {
    /// Each call costs one unit of the quota of `key_of(&request)`.
    pub fn new(limiter: KeyedRateLimiter<K, H>, key_of: F) -> Self {
        Self { limiter, key_of }
    }
}

impl<K, F: Clone, H> Clone for KeyedRateLimitLayer<K, F, H> {
    fn clone(&self) -> Self {
        Self {
            limiter: self.limiter.clone(),
            key_of: self.key_of.clone(),
        }
    }
}

impl<K, F, H> fmt::Debug for KeyedRateLimitLayer<K, F, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitLayer")
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, K, F: Clone, H> Layer<S> for KeyedRateLimitLayer<K, F, H> {
    type Service = KeyedRateLimitService<S, K, F, H>;

    fn layer(&self, inner: S) -> Self::Service {
        KeyedRateLimitService::new(inner, self.limiter.clone(), self.key_of.clone())
    }
}
