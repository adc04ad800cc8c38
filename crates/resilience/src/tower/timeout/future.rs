//! [`ResponseFuture`] of the timeout middleware.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use crate::timeout::TimeoutFuture;
use crate::tower::BoxError;

pin_project! {
    /// The response of a [`TimeoutService`](super::TimeoutService).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: TimeoutFuture<F>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: TimeoutFuture<F>) -> Self {
        Self { inner }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Poll::Ready(match ready!(self.project().inner.poll(cx)) {
            Ok(result) => result.map_err(Into::into),
            Err(elapsed) => Err(Box::new(elapsed)),
        })
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("inner", &self.inner)
            .finish()
    }
}
