//! [`Timeout`]: bound how long a future may run. On expiry the inner future
//! is dropped, which cancels it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;

use crate::error::{ConfigError, at_least};
use crate::instrument::{self, Counter};
use crate::util::nanos;

/// A future that ran out of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TimeoutError {
    /// The deadline passed; the future was dropped.
    #[error("timed out after {after:?}")]
    Elapsed {
        /// The timeout that applied.
        after: Duration,
    },
}

/// A timeout; clones share the (reconfigurable) duration.
///
/// It runs on tokio's timer, so it is exact under `tokio::time::pause`.
///
/// ```
/// use std::time::Duration;
/// use orchex_resilience::{Timeout, TimeoutError};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), orchex_resilience::ConfigError> {
/// let timeout = Timeout::new(Duration::from_secs(1))?;
/// let result = timeout.call(tokio::time::sleep(Duration::from_secs(5))).await;
/// assert_eq!(result, Err(TimeoutError::Elapsed { after: Duration::from_secs(1) }));
/// assert_eq!(timeout.call(async { 7 }).await, Ok(7));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Timeout {
    inner: Arc<Inner>,
}

struct Inner {
    nanos: AtomicU64,
    name: Option<Arc<str>>,
    metrics: Option<Metrics>,
}

struct Metrics {
    success: Counter,
    timeout: Counter,
}

impl Timeout {
    /// A timeout of `duration` (at least 1 ns).
    pub fn new(duration: Duration) -> Result<Self, ConfigError> {
        Self::build(duration, None)
    }

    /// A named timeout: the `name` label of `orchex_timeout_calls_total`.
    pub fn named(duration: Duration, name: impl Into<Arc<str>>) -> Result<Self, ConfigError> {
        Self::build(duration, Some(name.into()))
    }

    fn build(duration: Duration, name: Option<Arc<str>>) -> Result<Self, ConfigError> {
        at_least("timeout_nanos", nanos(duration), 1)?;
        let metrics = instrument::wanted(name.as_deref()).then(|| {
            let name = name.as_deref().unwrap_or_default();
            let calls = |outcome: &str| {
                Counter::new(
                    "orchex_timeout_calls_total",
                    &[("name", name.to_owned()), ("outcome", outcome.to_owned())],
                )
            };
            Metrics {
                success: calls("completed"),
                timeout: calls("timeout"),
            }
        });
        Ok(Self {
            inner: Arc::new(Inner {
                nanos: AtomicU64::new(nanos(duration)),
                name,
                metrics,
            }),
        })
    }

    /// Runs `future` for at most the current duration, counted from this
    /// call. The timer is armed on the first poll, so the future can be
    /// created outside a tokio runtime (it must be polled inside one).
    pub fn call<F: Future>(&self, future: F) -> TimeoutFuture<F> {
        let after = self.duration();
        let deadline = Deadline::Unarmed {
            at: tokio::time::Instant::now() + after,
        };
        TimeoutFuture {
            inner: future,
            deadline,
            after,
            timeout: self.clone(),
        }
    }

    /// The current duration.
    pub fn duration(&self) -> Duration {
        Duration::from_nanos(self.inner.nanos.load(Ordering::Relaxed))
    }

    /// Changes the duration for calls that start from now on.
    pub fn set_duration(&self, duration: Duration) -> Result<(), ConfigError> {
        at_least("timeout_nanos", nanos(duration), 1)?;
        self.inner.nanos.store(nanos(duration), Ordering::Relaxed);
        Ok(())
    }

    /// The timeout's name.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    fn record(&self, timed_out: bool) {
        if let Some(metrics) = &self.inner.metrics {
            if timed_out {
                metrics.timeout.increment(1);
            } else {
                metrics.success.increment(1);
            }
        }
    }
}

impl fmt::Debug for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeout")
            .field("name", &self.inner.name)
            .field("duration", &self.duration())
            .finish()
    }
}

pin_project! {
    /// The future of [`Timeout::call`].
    #[must_use = "futures do nothing unless polled"]
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: F,
        #[pin]
        deadline: Deadline,
        after: Duration,
        timeout: Timeout,
    }
}

pin_project! {
    /// The timer, armed on the first poll.
    #[project = DeadlineProj]
    enum Deadline {
        Unarmed { at: tokio::time::Instant },
        Armed { #[pin] sleep: Sleep },
    }
}

impl<F: Future> Future for TimeoutFuture<F> {
    type Output = Result<F::Output, TimeoutError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.inner.poll(cx) {
            this.timeout.record(false);
            return Poll::Ready(Ok(output));
        }
        let mut deadline = this.deadline;
        if let DeadlineProj::Unarmed { at } = deadline.as_mut().project() {
            let sleep = tokio::time::sleep_until(*at);
            deadline.set(Deadline::Armed { sleep });
        }
        let elapsed = match deadline.project() {
            DeadlineProj::Armed { sleep } => sleep.poll(cx).is_ready(),
            DeadlineProj::Unarmed { .. } => false,
        };
        if elapsed {
            this.timeout.record(true);
            return Poll::Ready(Err(TimeoutError::Elapsed { after: *this.after }));
        }
        Poll::Pending
    }
}

impl<F> fmt::Debug for TimeoutFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimeoutFuture")
            .field("after", &self.after)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct DropFlag(Arc<std::sync::atomic::AtomicBool>);
    impl Drop for DropFlag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn expiry_drops_the_inner_future() {
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = DropFlag(Arc::clone(&dropped));
        let timeout = Timeout::new(Duration::from_secs(2)).unwrap();
        let start = tokio::time::Instant::now();
        let result = timeout
            .call(async move {
                let _flag = flag;
                std::future::pending::<()>().await;
            })
            .await;
        assert_eq!(
            result,
            Err(TimeoutError::Elapsed {
                after: Duration::from_secs(2)
            })
        );
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert!(dropped.load(Ordering::SeqCst));
    }

    #[test]
    fn a_call_can_be_created_outside_a_runtime() {
        let timeout = Timeout::new(Duration::from_millis(1)).unwrap();
        let future = timeout.call(async { 1 });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        assert_eq!(runtime.block_on(future), Ok(1));
    }

    #[tokio::test(start_paused = true)]
    async fn reconfigured_duration_applies_to_new_calls() {
        let timeout = Timeout::named(Duration::from_secs(1), "t").unwrap();
        let clone = timeout.clone();
        clone.set_duration(Duration::from_secs(10)).unwrap();
        let ok = timeout
            .call(tokio::time::sleep(Duration::from_secs(5)))
            .await;
        assert!(ok.is_ok());
        assert!(timeout.set_duration(Duration::ZERO).is_err());
        assert_eq!(timeout.duration(), Duration::from_secs(10));
        assert_eq!(timeout.name(), Some("t"));
    }
}
