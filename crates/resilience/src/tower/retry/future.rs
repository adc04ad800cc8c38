//! [`ResponseFuture`] of the retry middleware.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use super::ShouldRetry;
use crate::retry::{Retry, RetryConfig};
use crate::tower::BoxError;

pin_project! {
    /// The response of a [`RetryService`](super::RetryService).
    pub struct ResponseFuture<S, Req, P>
    where
        S: Service<Req>,
    {
        #[pin]
        state: State<S::Future>,
        service: S,
        request: Req,
        retry: Retry,
        config: RetryConfig,
        predicate: P,
        attempts: u32,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] future: F },
        Sleeping { #[pin] sleep: Sleep },
        Readying,
    }
}

impl<S, Req, P> ResponseFuture<S, Req, P>
where
    S: Service<Req>,
{
    pub(crate) fn new(
        future: S::Future,
        service: S,
        request: Req,
        retry: Retry,
        predicate: P,
    ) -> Self {
        let config = retry.config();
        Self {
            state: State::Calling { future },
            service,
            request,
            retry,
            config,
            predicate,
            attempts: 1,
        }
    }
}

impl<S, Req, P> Future for ResponseFuture<S, Req, P>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    P: ShouldRetry<S::Error>,
    Req: Clone,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let error = match ready!(future.poll(cx)) {
                        Ok(response) => {
                            this.retry.record(true, *this.attempts);
                            return Poll::Ready(Ok(response));
                        }
                        Err(error) => error,
                    };
                    let predicate = &*this.predicate;
                    let mut retryable = |e: &S::Error| predicate.should_retry(e);
                    match this
                        .retry
                        .next_delay(this.config, *this.attempts, &error, &mut retryable)
                    {
                        Ok(delay) => this.state.set(State::Sleeping {
                            sleep: tokio::time::sleep(delay),
                        }),
                        Err(give_up) => {
                            this.retry.record(false, *this.attempts);
                            let error = give_up.into_error(*this.attempts, error.into());
                            return Poll::Ready(Err(Box::new(error)));
                        }
                    }
                }
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Readying);
                }
                StateProj::Readying => {
                    ready!(this.service.poll_ready(cx)).map_err(Into::into)?;
                    *this.attempts += 1;
                    let future = this.service.call(this.request.clone());
                    this.state.set(State::Calling { future });
                }
            }
        }
    }
}

impl<S, Req, P> fmt::Debug for ResponseFuture<S, Req, P>
where
    S: Service<Req>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}
