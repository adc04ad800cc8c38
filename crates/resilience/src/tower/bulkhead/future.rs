//! [`ResponseFuture`] of the bulkhead middleware.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use crate::bulkhead::{BulkheadError, OwnedBulkheadPermit};
use crate::tower::BoxError;
use crate::tower::either::Either;

pin_project! {
    /// The response of a [`BulkheadService`](super::BulkheadService); holds
    /// the permit until the response is ready.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: Either<F, BulkheadError>,
        permit: Option<OwnedBulkheadPermit>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn called(future: F, permit: OwnedBulkheadPermit) -> Self {
        Self {
            inner: Either::Called { future },
            permit: Some(permit),
        }
    }

    pub(crate) fn refused(refusal: BulkheadError) -> Self {
        Self {
            inner: Either::Refused {
                error: Some(refusal),
            },
            permit: None,
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
        let this = self.project();
        let output = ready!(this.inner.poll(cx));
        this.permit.take();
        Poll::Ready(output)
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("permit", &self.permit)
            .finish_non_exhaustive()
    }
}
