//! [`TimeoutService`].

use std::task::{Context, Poll};

use tower_service::Service;

use super::ResponseFuture;
use crate::timeout::Timeout;
use crate::tower::BoxError;

/// A service whose calls time out.
#[derive(Debug, Clone)]
pub struct TimeoutService<S> {
    inner: S,
    timeout: Timeout,
}

impl<S> TimeoutService<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, timeout: Timeout) -> Self {
        Self { inner, timeout }
    }
}

impl<S, Req> Service<Req> for TimeoutService<S>
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
        ResponseFuture::new(self.timeout.call(self.inner.call(request)))
    }
}
