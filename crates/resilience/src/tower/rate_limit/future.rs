//! [`ResponseFuture`] of the rate limit middleware.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use crate::rate_limit::RateLimitError;
use crate::tower::BoxError;
use crate::tower::either::Either;

pin_project! {
    /// The response of a rate-limited service.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Either<F, RateLimitError>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(future: F) -> Self {
        Self {
            inner: Either::Called { future },
        }
    }

    pub(crate) fn refused(refusal: RateLimitError) -> Self {
        Self {
            inner: Either::Refused {
                error: Some(refusal),
            },
        }
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx)
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
