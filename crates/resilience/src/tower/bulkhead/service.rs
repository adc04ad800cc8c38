//! [`BulkheadService`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tower_service::Service;

use super::ResponseFuture;
use crate::bulkhead::{Acquire, Bulkhead, BulkheadError, OwnedBulkheadPermit};
use crate::tower::BoxError;

/// A service behind a bulkhead. Each clone waits for its own permit.
pub struct BulkheadService<S> {
    inner: S,
    bulkhead: Bulkhead,
    state: State,
}

enum State {
    Idle,
    Acquiring(Acquire),
    Ready(OwnedBulkheadPermit),
    Refused(BulkheadError),
}

impl<S> BulkheadService<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, bulkhead: Bulkhead) -> Self {
        Self {
            inner,
            bulkhead,
            state: State::Idle,
        }
    }
}

impl<S: Clone> Clone for BulkheadService<S> {
    /// The clone shares the bulkhead but not a permit this one holds.
    fn clone(&self) -> Self {
        Self::new(self.inner.clone(), self.bulkhead.clone())
    }
}

impl<S: fmt::Debug> fmt::Debug for BulkheadService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BulkheadService")
            .field("inner", &self.inner)
            .field("bulkhead", &self.bulkhead)
            .finish_non_exhaustive()
    }
}

impl<S, Req> Service<Req> for BulkheadService<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        loop {
            match &mut self.state {
                State::Idle => self.state = State::Acquiring(self.bulkhead.acquire()),
                State::Acquiring(acquire) => {
                    self.state = match Pin::new(acquire).poll(cx) {
                        Poll::Pending => return Poll::Pending,
                        Poll::Ready(Ok(permit)) => State::Ready(permit),
                        Poll::Ready(Err(refusal)) => State::Refused(refusal),
                    };
                }
                // Ready to fail the next call without bothering the inner service.
                State::Refused(_) => return Poll::Ready(Ok(())),
                State::Ready(_) => return self.inner.poll_ready(cx).map_err(Into::into),
            }
        }
    }

    fn call(&mut self, request: Req) -> Self::Future {
        match std::mem::replace(&mut self.state, State::Idle) {
            State::Ready(permit) => ResponseFuture::called(self.inner.call(request), permit),
            State::Refused(refusal) => ResponseFuture::refused(refusal),
            // Called without readiness: take a permit now or refuse.
            State::Idle | State::Acquiring(_) => match self.bulkhead.try_acquire_owned() {
                Ok(permit) => ResponseFuture::called(self.inner.call(request), permit),
                Err(refusal) => ResponseFuture::refused(refusal),
            },
        }
    }
}
