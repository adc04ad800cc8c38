//! [`RateLimitService`] and [`KeyedRateLimitService`].

use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::task::{Context, Poll};

use tower_service::Service;

use super::ResponseFuture;
use crate::rate_limit::{KeyedRateLimiter, RateLimiter};
use crate::tower::BoxError;
use crate::util::FastBuildHasher;

/// A service behind a rate limiter.
#[derive(Debug, Clone)]
pub struct RateLimitService<S> {
    inner: S,
    limiter: RateLimiter,
    cost: u32,
}

impl<S> RateLimitService<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, limiter: RateLimiter, cost: u32) -> Self {
        Self {
            inner,
            limiter,
            cost,
        }
    }
}

impl<S, Req> Service<Req> for RateLimitService<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match self.limiter.check(self.cost) {
            Ok(()) => ResponseFuture::called(self.inner.call(request)),
            Err(refusal) => ResponseFuture::refused(refusal),
        }
    }
}

/// A service behind a keyed rate limiter.
pub struct KeyedRateLimitService<S, K, F, H = FastBuildHasher> {
    inner: S,
    limiter: KeyedRateLimiter<K, H>,
    key_of: F,
}

impl<S, K, F, H> KeyedRateLimitService<S, K, F, H> {
    /// Wraps `inner`.
    pub fn new(inner: S, limiter: KeyedRateLimiter<K, H>, key_of: F) -> Self {
        Self {
            inner,
            limiter,
            key_of,
        }
    }
}

impl<S: Clone, K, F: Clone, H> Clone for KeyedRateLimitService<S, K, F, H> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            limiter: self.limiter.clone(),
            key_of: self.key_of.clone(),
        }
    }
}

impl<S: fmt::Debug, K, F, H> fmt::Debug for KeyedRateLimitService<S, K, F, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyedRateLimitService")
            .field("inner", &self.inner)
            .field("limiter", &self.limiter)
            .finish_non_exhaustive()
    }
}

impl<S, K, F, H, Req> Service<Req> for KeyedRateLimitService<S, K, F, H>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone,
    H: BuildHasher,
    F: Fn(&Req) -> K,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        let key = (self.key_of)(&request);
        match self.limiter.check(&key, 1) {
            Ok(()) => ResponseFuture::called(self.inner.call(request)),
            Err(refusal) => ResponseFuture::refused(refusal),
        }
    }
}
