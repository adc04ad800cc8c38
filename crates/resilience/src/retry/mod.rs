//! [`Retry`]: run an operation again after a backoff, while a predicate
//! says the error is transient, within a maximum number of attempts and an
//! optional shared [`RetryBudget`].

mod backoff;
mod budget;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, RwLock};

pub use backoff::{Backoff, Jitter};
pub use budget::{RetryBudget, RetryBudgetConfig};

use crate::error::{ConfigError, at_least};
use crate::instrument::{self, Counter};
use crate::util::{read, write};

/// The settings of a [`Retry`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryConfig {
    max_attempts: u32,
    backoff: Backoff,
}

impl RetryConfig {
    /// At most `max_attempts` attempts in all (the first call included),
    /// with the default [`Backoff`].
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts,
            backoff: Backoff::default(),
        }
    }

    /// The delays between attempts.
    #[must_use]
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The most attempts.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The backoff.
    pub fn backoff_policy(&self) -> Backoff {
        self.backoff
    }

    /// Checks the settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        at_least("retry.max_attempts", self.max_attempts, 1)?;
        self.backoff.validate()
    }
}

impl Default for RetryConfig {
    /// Three attempts, 100 ms doubling up to 10 s, full jitter.
    fn default() -> Self {
        Self::new(3)
    }
}

/// The last error of an operation that [`Retry`] gave up on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RetryError<E> {
    /// Every attempt failed.
    #[error("gave up after {attempts} attempts: {error}")]
    Exhausted {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        error: E,
    },
    /// The predicate said this error is not worth retrying.
    #[error("not retryable (attempt {attempts}): {error}")]
    NotRetryable {
        /// Attempts made.
        attempts: u32,
        /// The error.
        error: E,
    },
    /// The retry budget is spent.
    #[error("retry budget exhausted after {attempts} attempts: {error}")]
    BudgetExhausted {
        /// Attempts made.
        attempts: u32,
        /// The last error.
        error: E,
    },
}

impl<E> RetryError<E> {
    /// The last error.
    pub fn into_inner(self) -> E {
        match self {
            Self::Exhausted { error, .. }
            | Self::NotRetryable { error, .. }
            | Self::BudgetExhausted { error, .. } => error,
        }
    }

    /// The last error, borrowed.
    pub fn inner(&self) -> &E {
        match self {
            Self::Exhausted { error, .. }
            | Self::NotRetryable { error, .. }
            | Self::BudgetExhausted { error, .. } => error,
        }
    }

    /// Attempts made.
    pub fn attempts(&self) -> u32 {
        match self {
            Self::Exhausted { attempts, .. }
            | Self::NotRetryable { attempts, .. }
            | Self::BudgetExhausted { attempts, .. } => *attempts,
        }
    }
}

/// A retry policy; clones share configuration, budget and metrics.
///
/// Delays are slept with tokio's timer (exact under `tokio::time::pause`).
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use orchex_resilience::{Backoff, Retry, RetryConfig};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), orchex_resilience::ConfigError> {
/// let retry = Retry::new(RetryConfig::new(3).backoff(Backoff::constant(Duration::from_millis(1))))?;
/// let calls = AtomicU32::new(0);
/// let result = retry
///     .call_if(
///         || async {
///             let n = calls.fetch_add(1, Ordering::SeqCst) + 1;
///             if n < 3 { Err("transient") } else { Ok(n) }
///         },
///         |e: &&str| *e == "transient",
///     )
///     .await;
/// assert_eq!(result, Ok(3));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Retry {
    inner: Arc<Inner>,
}

struct Inner {
    config: RwLock<RetryConfig>,
    budget: Option<RetryBudget>,
    name: Option<Arc<str>>,
    metrics: Option<Metrics>,
}

struct Metrics {
    success_without_retry: Counter,
    success_with_retry: Counter,
    failed_without_retry: Counter,
    failed_with_retry: Counter,
    budget_exhausted: Counter,
}

/// Builds a [`Retry`].
#[derive(Debug)]
#[must_use]
pub struct RetryBuilder {
    config: RetryConfig,
    budget: Option<RetryBudget>,
    name: Option<Arc<str>>,
}

impl RetryBuilder {
    /// Spends retries from `budget` (share one budget between the retries
    /// that call the same service).
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// A name: the `name` label of `orchex_retry_calls_total`. Without a
    /// name no metrics are recorded.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Checks the configuration and builds the policy.
    pub fn build(self) -> Result<Retry, ConfigError> {
        self.config.validate()?;
        let metrics = instrument::wanted(self.name.as_deref()).then(|| {
            let name = self.name.as_deref().unwrap_or_default();
            let calls = |outcome: &str| {
                Counter::new(
                    "orchex_retry_calls_total",
                    &[("name", name.to_owned()), ("outcome", outcome.to_owned())],
                )
            };
            Metrics {
                success_without_retry: calls("success_without_retry"),
                success_with_retry: calls("success_with_retry"),
                failed_without_retry: calls("failed_without_retry"),
                failed_with_retry: calls("failed_with_retry"),
                budget_exhausted: Counter::new(
                    "orchex_retry_budget_exhausted_total",
                    &[("name", name.to_owned())],
                ),
            }
        });
        Ok(Retry {
            inner: Arc::new(Inner {
                config: RwLock::new(self.config),
                budget: self.budget,
                name: self.name,
                metrics,
            }),
        })
    }
}

impl Retry {
    /// A policy without budget or name.
    pub fn new(config: RetryConfig) -> Result<Self, ConfigError> {
        Self::builder(config).build()
    }

    /// A builder, for a budget or a name.
    pub fn builder(config: RetryConfig) -> RetryBuilder {
        RetryBuilder {
            config,
            budget: None,
            name: None,
        }
    }

    /// Runs `op`, retrying every error.
    pub async fn call<F, Fut, T, E>(&self, op: F) -> Result<T, RetryError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_if(op, |_: &E| true).await
    }

    /// Runs `op`, retrying the errors for which `retryable` is true.
    pub async fn call_if<F, Fut, T, E, P>(
        &self,
        mut op: F,
        mut retryable: P,
    ) -> Result<T, RetryError<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        P: FnMut(&E) -> bool,
    {
        let config = self.config();
        if let Some(budget) = &self.inner.budget {
            budget.deposit();
        }
        let mut attempts = 1;
        loop {
            let error = match op().await {
                Ok(value) => {
                    self.record(true, attempts);
                    return Ok(value);
                }
                Err(error) => error,
            };
            match self.next_delay(&config, attempts, &error, &mut retryable) {
                Ok(delay) => {
                    tokio::time::sleep(delay).await;
                    attempts += 1;
                }
                Err(reason) => {
                    self.record(false, attempts);
                    return Err(reason.into_error(attempts, error));
                }
            }
        }
    }

    /// Whether and how long to wait before the next attempt.
    pub(crate) fn next_delay<E>(
        &self,
        config: &RetryConfig,
        attempts: u32,
        error: &E,
        retryable: &mut impl FnMut(&E) -> bool,
    ) -> Result<std::time::Duration, GiveUp> {
        if !retryable(error) {
            return Err(GiveUp::NotRetryable);
        }
        if attempts >= config.max_attempts {
            return Err(GiveUp::Exhausted);
        }
        if let Some(budget) = &self.inner.budget
            && !budget.try_withdraw()
        {
            if let Some(metrics) = &self.inner.metrics {
                metrics.budget_exhausted.increment(1);
            }
            return Err(GiveUp::Budget);
        }
        Ok(config.backoff.delay(attempts))
    }

    pub(crate) fn record(&self, success: bool, attempts: u32) {
        if let Some(metrics) = &self.inner.metrics {
            let counter = match (success, attempts > 1) {
                (true, false) => &metrics.success_without_retry,
                (true, true) => &metrics.success_with_retry,
                (false, false) => &metrics.failed_without_retry,
                (false, true) => &metrics.failed_with_retry,
            };
            counter.increment(1);
        }
    }

    /// Records a call for the budget (the tower layer does this itself).
    #[cfg(feature = "tower")]
    pub(crate) fn deposit(&self) {
        if let Some(budget) = &self.inner.budget {
            budget.deposit();
        }
    }

    /// The current configuration.
    pub fn config(&self) -> RetryConfig {
        *read(&self.inner.config)
    }

    /// Replaces the configuration (calls under way keep the one they began
    /// with); the budget keeps its history.
    pub fn reconfigure(&self, config: RetryConfig) -> Result<(), ConfigError> {
        config.validate()?;
        *write(&self.inner.config) = config;
        Ok(())
    }

    /// The budget, if any.
    pub fn budget(&self) -> Option<&RetryBudget> {
        self.inner.budget.as_ref()
    }

    /// The policy's name.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }
}

impl fmt::Debug for Retry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Retry")
            .field("name", &self.inner.name)
            .field("config", &self.config())
            .field("budget", &self.inner.budget)
            .finish()
    }
}

/// Why [`Retry`] stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GiveUp {
    NotRetryable,
    Exhausted,
    Budget,
}

impl GiveUp {
    pub(crate) fn into_error<E>(self, attempts: u32, error: E) -> RetryError<E> {
        match self {
            Self::NotRetryable => RetryError::NotRetryable { attempts, error },
            Self::Exhausted => RetryError::Exhausted { attempts, error },
            Self::Budget => RetryError::BudgetExhausted { attempts, error },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    #[allow(clippy::unused_async)] // an operation to retry must be async
    async fn failing(calls: &AtomicU32) -> Result<(), u32> {
        Err(calls.fetch_add(1, Ordering::SeqCst) + 1)
    }

    #[tokio::test(start_paused = true)]
    async fn retries_with_exponential_delays() {
        let backoff = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(3))
            .jitter(Jitter::None);
        let retry = Retry::new(RetryConfig::new(4).backoff(backoff)).unwrap();
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let err = retry.call(|| failing(&calls)).await.unwrap_err();
        assert_eq!(
            err,
            RetryError::Exhausted {
                attempts: 4,
                error: 4
            }
        );
        // 1 + 2 + 3 (capped) seconds.
        assert_eq!(start.elapsed(), Duration::from_secs(6));
        assert_eq!(err.attempts(), 4);
        assert_eq!(err.into_inner(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn full_jitter_never_waits_longer_than_the_cap() {
        let backoff = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(2));
        let retry = Retry::new(RetryConfig::new(3).backoff(backoff)).unwrap();
        let calls = AtomicU32::new(0);
        let start = tokio::time::Instant::now();
        let _ = retry.call(|| failing(&calls)).await;
        assert!(start.elapsed() <= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn predicate_stops_retrying() {
        let retry = Retry::new(RetryConfig::new(5)).unwrap();
        let calls = AtomicU32::new(0);
        let err = retry
            .call_if(|| failing(&calls), |e| *e < 2)
            .await
            .unwrap_err();
        assert_eq!(
            err,
            RetryError::NotRetryable {
                attempts: 2,
                error: 2
            }
        );
        assert!(err.to_string().starts_with("not retryable"));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_caps_retries_across_calls() {
        let budget = RetryBudget::with_clock(
            RetryBudgetConfig::new(Duration::from_secs(10), 0, 0.5),
            ManualClock::new(),
        )
        .unwrap();
        let retry = Retry::builder(
            RetryConfig::new(10).backoff(Backoff::constant(Duration::from_millis(1))),
        )
        .budget(budget.clone())
        .build()
        .unwrap();
        let calls = AtomicU32::new(0);
        // Each call deposits 0.5 retries: the first call can't retry at all.
        let err = retry.call(|| failing(&calls)).await.unwrap_err();
        assert!(matches!(
            err,
            RetryError::BudgetExhausted { attempts: 1, .. }
        ));
        // The second call has 1.0 in the budget: one retry.
        let err = retry.call(|| failing(&calls)).await.unwrap_err();
        assert!(matches!(
            err,
            RetryError::BudgetExhausted { attempts: 2, .. }
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert_eq!(budget.remaining(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn success_after_retries() {
        let retry =
            Retry::new(RetryConfig::new(3).backoff(Backoff::constant(Duration::from_millis(5))))
                .unwrap();
        let calls = AtomicU32::new(0);
        let value = retry
            .call(|| async {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                if n == 0 { Err("once") } else { Ok(n) }
            })
            .await
            .unwrap();
        assert_eq!(value, 1);
    }

    #[test]
    fn reconfigure_validates() {
        let retry = Retry::new(RetryConfig::default()).unwrap();
        assert!(retry.reconfigure(RetryConfig::new(0)).is_err());
        retry.reconfigure(RetryConfig::new(7)).unwrap();
        assert_eq!(retry.clone().config().max_attempts(), 7);
    }
}
