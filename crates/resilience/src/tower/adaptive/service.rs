//! [`AdaptiveLimitService`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower_service::Service;

use super::ResponseFuture;
use crate::adaptive::{AdaptiveLimit, ClassifyLoad, LimitToken};
use crate::tower::BoxError;

type Waiting = Pin<Box<dyn Future<Output = LimitToken> + Send>>;

/// A service under an adaptive concurrency limit. Each clone waits for its
/// own token.
pub struct AdaptiveLimitService<S, C> {
    inner: S,
    limit: AdaptiveLimit,
    classifier: C,
    token: Option<LimitToken>,
    /// Only allocated while waiting for a token.
    waiting: Option<Waiting>,
}

impl<S, C> AdaptiveLimitService<S, C> {
    /// Wraps `inner`.
    pub fn new(inner: S, limit: AdaptiveLimit, classifier: C) -> Self {
        Self {
            inner,
            limit,
            classifier,
            token: None,
            waiting: None,
        }
    }
}

impl<S: Clone, C: Clone> Clone for AdaptiveLimitService<S, C> {
    /// The clone shares the limit but not a token this one holds.
    fn clone(&self) -> Self {
        Self::new(
            self.inner.clone(),
            self.limit.clone(),
            self.classifier.clone(),
        )
    }
}

impl<S: fmt::Debug, C> fmt::Debug for AdaptiveLimitService<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdaptiveLimitService")
            .field("inner", &self.inner)
            .field("limit", &self.limit)
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

impl<S, C, Req> Service<Req> for AdaptiveLimitService<S, C>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    C: ClassifyLoad<S::Response, S::Error> + Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.token.is_none() {
            if let Some(waiting) = &mut self.waiting {
                match waiting.as_mut().poll(cx) {
                    Poll::Ready(token) => {
                        self.token = Some(token);
                        self.waiting = None;
                    }
                    Poll::Pending => return Poll::Pending,
                }
            } else if let Ok(token) = self.limit.try_acquire() {
                self.token = Some(token);
            } else {
                let limit = self.limit.clone();
                let mut waiting: Waiting = Box::pin(async move { limit.acquire().await });
                match waiting.as_mut().poll(cx) {
                    Poll::Ready(token) => self.token = Some(token),
                    Poll::Pending => {
                        self.waiting = Some(waiting);
                        return Poll::Pending;
                    }
                }
            }
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        // Called without readiness: try for a token now; without one the
        // call still runs, unmeasured.
        let token = self.token.take().or_else(|| self.limit.try_acquire().ok());
        ResponseFuture::new(self.inner.call(request), token, self.classifier.clone())
    }
}
