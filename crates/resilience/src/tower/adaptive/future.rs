//! [`ResponseFuture`] of the adaptive limit middleware.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;

use crate::adaptive::{ClassifyLoad, LimitToken};
use crate::tower::BoxError;

pin_project! {
    /// The response of an [`AdaptiveLimitService`](super::AdaptiveLimitService);
    /// reports the call's latency and outcome when it completes.
    pub struct ResponseFuture<F, C> {
        #[pin]
        future: F,
        token: Option<LimitToken>,
        classifier: C,
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn new(future: F, token: Option<LimitToken>, classifier: C) -> Self {
        Self {
            future,
            token,
            classifier,
        }
    }
}

impl<F, C, T, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
    C: ClassifyLoad<T, E>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.future.poll(cx));
        if let Some(token) = this.token.take() {
            token.finish(this.classifier.classify(&result));
        }
        Poll::Ready(result.map_err(Into::into))
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}
