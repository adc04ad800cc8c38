//! [`RetryService`].

use std::task::{Context, Poll};

use tower_service::Service;

use super::{ResponseFuture, ShouldRetry};
use crate::retry::Retry;
use crate::tower::BoxError;

/// A service whose failed calls are retried.
#[derive(Debug, Clone)]
pub struct RetryService<S, P> {
    inner: S,
    retry: Retry,
    predicate: P,
}

impl<S, P> RetryService<S, P> {
    /// Wraps `inner`.
    pub fn new(inner: S, retry: Retry, predicate: P) -> Self {
        Self {
            inner,
            retry,
            predicate,
        }
    }
}

impl<S, P, Req> Service<Req> for RetryService<S, P>
where
    S: Service<Req> + Clone,
    S::Error: Into<BoxError>,
    P: ShouldRetry<S::Error> + Clone,
    Req: Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, Req, P>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, request: Req) -> Self::Future {
        // Use the service that was made ready; keep a fresh clone here.
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);
        self.retry.deposit();
        let future = service.call(request.clone());
        ResponseFuture::new(
            future,
            service,
            request,
            self.retry.clone(),
            self.predicate.clone(),
        )
    }
}
