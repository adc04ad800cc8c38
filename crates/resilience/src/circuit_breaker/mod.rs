//! [`CircuitBreaker`]: stop calling what keeps failing, probe, recover.
//!
//! # States
//!
//! | state | calls | leaves by |
//! |---|---|---|
//! | closed | permitted, outcomes counted | a trip policy → open |
//! | open | refused at once | the open period elapsing → half-open (checked lazily, on the next call or snapshot) |
//! | half-open | at most N trial calls at a time | N successes → closed; a failed or slow trial, or the max wait → open |
//! | disabled | permitted, nothing counted | an operator |
//! | forced-open | refused | an operator |
//! | metrics-only | permitted, counted, never trips | an operator |
//!
//! # Cost
//!
//! The state, its generation and the consecutive-failure count are atomics;
//! [`try_acquire`](CircuitBreaker::try_acquire) in the closed state is one
//! atomic load, and a success is two more (plus the window's mutex when a
//! rate or count policy is on, plus a clock read on each side when the
//! slow-call policy is on). Transitions take a mutex, which the hot path
//! never touches.
//!
//! # Permits that are dropped
//!
//! A [`Permit`] dropped without a verdict (e.g. the future holding it was
//! cancelled) counts as [`CallOutcome::Ignored`]: neither success nor
//! failure, and in half-open its trial slot is given back. A cancelled call
//! says nothing about the health of what it called.
//!
//! A call that began in an earlier state (e.g. before the breaker opened)
//! is not counted in the new one.

mod config;
mod registry;
mod window;

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::broadcast;

pub use config::{CircuitBreakerConfig, MAX_COUNT_WINDOW, MAX_HALF_OPEN_CALLS, SlidingWindow};
pub use registry::CircuitBreakerRegistry;
use window::Window;

use crate::clock::{SharedClock, Timestamp};
use crate::error::ConfigError;
use crate::instrument::{self, Counter, Gauge};
use crate::util::{CachePadded, jitter_by_fraction, lock, nanos};

// === state word ===
//
// bits 0..3: the state; bits 3..64: the generation, bumped by every
// transition, so a permit can tell whether the state it was issued in is
// still the current one.

const CLOSED: u64 = 0;
const METRICS_ONLY: u64 = 1;
const DISABLED: u64 = 2;
const OPEN: u64 = 3;
const HALF_OPEN: u64 = 4;
const FORCED_OPEN: u64 = 5;
const STATE_MASK: u64 = 0b111;
const STATE_BITS: u32 = 3;

#[inline]
const fn state_bits(word: u64) -> u64 {
    word & STATE_MASK
}

#[inline]
const fn generation(word: u64) -> u64 {
    word >> STATE_BITS
}

// === trial word (half-open) ===
//
// bits 32..64: the low 32 bits of the half-open period's generation;
// bits 16..32: trial calls started (in flight or succeeded); bits 0..16:
// trial calls succeeded.

const TRIAL_STARTED: u64 = 1 << 16;
const TRIAL_SUCCEEDED: u64 = 1;

#[inline]
const fn trial_generation(trial: u64) -> u64 {
    trial >> 32
}

#[inline]
const fn trial_started(trial: u64) -> u32 {
    ((trial >> 16) & 0xFFFF) as u32
}

#[inline]
const fn trial_succeeded(trial: u64) -> u32 {
    (trial & 0xFFFF) as u32
}

#[inline]
const fn trial_word(generation: u64) -> u64 {
    (generation & 0xFFFF_FFFF) << 32
}

// === hot configuration flags ===

const USE_WINDOW: u32 = 1;
const USE_CONSECUTIVE: u32 = 2;
const USE_SLOW: u32 = 4;
const TIME_WINDOW: u32 = 8;

/// "No start time was taken" (the slow-call policy was off at acquire).
const NOT_TIMED: u64 = u64::MAX;

/// The state of a circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CircuitState {
    /// Calls are permitted and counted.
    Closed,
    /// Calls are refused until the open period elapses.
    Open,
    /// A limited number of trial calls decide between closed and open.
    HalfOpen,
    /// Calls are permitted and nothing is counted (set by an operator).
    Disabled,
    /// Calls are refused until an operator says otherwise.
    ForcedOpen,
    /// Calls are permitted and counted, but the breaker never trips.
    MetricsOnly,
}

impl CircuitState {
    /// The value of the `orchex_circuit_breaker_state` gauge: 0 closed,
    /// 1 open, 2 half-open, 3 disabled, 4 forced-open, 5 metrics-only.
    pub const fn as_gauge(self) -> u8 {
        match self {
            Self::Closed => 0,
            Self::Open => 1,
            Self::HalfOpen => 2,
            Self::Disabled => 3,
            Self::ForcedOpen => 4,
            Self::MetricsOnly => 5,
        }
    }

    /// The snake_case name (`half_open`, `forced_open`, ...).
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
            Self::Disabled => "disabled",
            Self::ForcedOpen => "forced_open",
            Self::MetricsOnly => "metrics_only",
        }
    }

    /// Whether calls are refused (open or forced-open).
    pub const fn is_open(self) -> bool {
        matches!(self, Self::Open | Self::ForcedOpen)
    }

    const fn from_bits(bits: u64) -> Self {
        match bits {
            CLOSED => Self::Closed,
            METRICS_ONLY => Self::MetricsOnly,
            DISABLED => Self::Disabled,
            OPEN => Self::Open,
            HALF_OPEN => Self::HalfOpen,
            _ => Self::ForcedOpen,
        }
    }

    #[cfg(test)]
    const fn bits(self) -> u64 {
        match self {
            Self::Closed => CLOSED,
            Self::MetricsOnly => METRICS_ONLY,
            Self::Disabled => DISABLED,
            Self::Open => OPEN,
            Self::HalfOpen => HALF_OPEN,
            Self::ForcedOpen => FORCED_OPEN,
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a call's result means to the breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallOutcome {
    /// The call worked.
    Success,
    /// The call failed in a way that says the callee is unhealthy.
    Failure,
    /// The call says nothing about the callee (e.g. a validation error, or
    /// a cancellation); not counted.
    Ignored,
}

/// Why a breaker changed state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransitionReason {
    /// The failure rate in the window reached its threshold.
    FailureRate,
    /// The slow-call rate in the window reached its threshold.
    SlowCallRate,
    /// The window holds the configured number of failures.
    FailureCount,
    /// The configured number of failures in a row.
    ConsecutiveFailures,
    /// The open period elapsed.
    OpenElapsed,
    /// Enough trial calls succeeded.
    TrialsSucceeded,
    /// A trial call failed or was slow.
    TrialFailed,
    /// The breaker stayed half-open longer than its maximum wait.
    HalfOpenTimeout,
    /// An operator asked for it.
    Manual,
}

/// A state change, as sent to [`CircuitBreaker::subscribe`]rs.
#[derive(Debug, Clone, PartialEq)]
pub struct StateTransition {
    /// The breaker's name, if it has one.
    pub name: Option<Arc<str>>,
    /// The state before.
    pub from: CircuitState,
    /// The state after.
    pub to: CircuitState,
    /// Why.
    pub reason: TransitionReason,
    /// When, on the breaker's clock.
    pub at: Timestamp,
    /// For a transition to open: how long it stays open.
    pub open_for: Option<Duration>,
}

/// A call refused by an open breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallNotPermitted {
    /// The breaker is open; it half-opens in `retry_after`.
    #[error("circuit breaker is open: calls are refused for another {retry_after:?}")]
    Open {
        /// Time left in the open period.
        retry_after: Duration,
    },
    /// The breaker is half-open and all its trial calls are taken.
    #[error("circuit breaker is half-open and its trial calls are all in flight")]
    HalfOpenFull,
    /// The breaker was forced open by an operator.
    #[error("circuit breaker is forced open")]
    ForcedOpen,
}

impl CallNotPermitted {
    /// The state that refused the call.
    pub fn state(&self) -> CircuitState {
        match self {
            Self::Open { .. } => CircuitState::Open,
            Self::HalfOpenFull => CircuitState::HalfOpen,
            Self::ForcedOpen => CircuitState::ForcedOpen,
        }
    }

    /// When retrying may help, if known.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Open { retry_after } => Some(*retry_after),
            Self::HalfOpenFull | Self::ForcedOpen => None,
        }
    }
}

/// The error of [`CircuitBreaker::call`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CircuitBreakerError<E> {
    /// The breaker refused the call; it did not run.
    #[error(transparent)]
    NotPermitted(#[from] CallNotPermitted),
    /// The call ran and failed.
    #[error("{0}")]
    Inner(E),
}

impl<E> CircuitBreakerError<E> {
    /// The inner error, if the call ran.
    pub fn into_inner(self) -> Option<E> {
        match self {
            Self::Inner(e) => Some(e),
            Self::NotPermitted(_) => None,
        }
    }
}

/// Decides what a call's result means: success, failure or ignored.
///
/// Closures `Fn(&Result<T, E>) -> CallOutcome` implement it.
pub trait Classify<T, E> {
    /// The outcome of `result`.
    fn classify(&self, result: &Result<T, E>) -> CallOutcome;
}

impl<T, E, F> Classify<T, E> for F
where
    F: Fn(&Result<T, E>) -> CallOutcome,
{
    fn classify(&self, result: &Result<T, E>) -> CallOutcome {
        self(result)
    }
}

/// `Ok` is a success, `Err` a failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultClassifier;

impl<T, E> Classify<T, E> for DefaultClassifier {
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> CallOutcome {
        if result.is_ok() {
            CallOutcome::Success
        } else {
            CallOutcome::Failure
        }
    }
}

/// A point-in-time view of a breaker.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct CircuitBreakerSnapshot {
    /// The breaker's name.
    pub name: Option<Arc<str>>,
    /// The state.
    pub state: CircuitState,
    /// Calls in the window (zero when no rate or count policy is on).
    pub calls: u64,
    /// Failed calls in the window.
    pub failures: u64,
    /// Successful calls in the window.
    pub successes: u64,
    /// Slow calls in the window (failed or not).
    pub slow_calls: u64,
    /// The failure rate in percent, once the window holds the minimum
    /// number of calls.
    pub failure_rate: Option<f64>,
    /// The slow-call rate in percent, likewise.
    pub slow_call_rate: Option<f64>,
    /// Failures in a row.
    pub consecutive_failures: u32,
    /// Calls refused since the breaker was built.
    pub not_permitted: u64,
    /// Consecutive trips without a successful close (the backoff level).
    pub trips: u32,
    /// When open: time left in the open period.
    pub retry_after: Option<Duration>,
    /// When half-open: trial calls started (in flight or succeeded).
    pub trial_calls: u32,
    /// When half-open: trial calls that succeeded.
    pub trial_successes: u32,
    /// When the snapshot was taken, on the breaker's clock.
    pub at: Timestamp,
}

/// A circuit breaker; clones share one state.
///
/// ```
/// use std::time::Duration;
/// use orchex_resilience::{CircuitBreaker, CircuitBreakerConfig, CircuitState, ManualClock};
///
/// let clock = ManualClock::new();
/// let breaker = CircuitBreaker::builder(
///     CircuitBreakerConfig::consecutive(2).open_duration(Duration::from_secs(30)).open_jitter(0.0).half_open(1, None),
/// )
/// .clock(clock.clone())
/// .build()?;
///
/// // Callers that cannot wrap a future take a permit and report.
/// breaker.try_acquire().unwrap().failure();
/// breaker.try_acquire().unwrap().failure();
/// assert_eq!(breaker.state(), CircuitState::Open);
/// assert!(breaker.try_acquire().is_err());
///
/// clock.advance(Duration::from_secs(30));
/// let trial = breaker.try_acquire().unwrap(); // half-open: one trial call
/// assert!(breaker.try_acquire().is_err());
/// trial.success();
/// assert_eq!(breaker.state(), CircuitState::Closed);
/// # Ok::<(), orchex_resilience::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    inner: Arc<Inner>,
}

struct Inner {
    /// The state word, read by every call and written only by transitions.
    state: CachePadded<AtomicU64>,
    /// Written by failures and refusals.
    counters: CachePadded<Counters>,
    /// Half-open bookkeeping.
    trial: CachePadded<AtomicU64>,
    hot: Hot,
    open_until: AtomicU64,
    half_open_deadline: AtomicU64,
    window: Mutex<Window>,
    control: Mutex<Control>,
    events: broadcast::Sender<StateTransition>,
    clock: SharedClock,
    name: Option<Arc<str>>,
    metrics: Option<Metrics>,
}

#[derive(Default)]
struct Counters {
    consecutive: AtomicU32,
    not_permitted: AtomicU64,
}

/// Configuration the hot path reads, as atomics.
struct Hot {
    flags: AtomicU32,
    consecutive_threshold: AtomicU32,
    slow_nanos: AtomicU64,
    half_open_calls: AtomicU32,
}

struct Control {
    config: CircuitBreakerConfig,
    trips: u32,
}

struct Metrics {
    name: String,
    state: Gauge,
    success: Counter,
    failure: Counter,
    ignored: Counter,
    not_permitted: Counter,
    slow_success: Counter,
    slow_failure: Counter,
    failure_rate: Gauge,
}

impl Metrics {
    fn new(name: &str) -> Self {
        let calls = |outcome: &str| {
            Counter::new(
                "orchex_circuit_breaker_calls_total",
                &[("name", name.to_owned()), ("outcome", outcome.to_owned())],
            )
        };
        let slow = |outcome: &str| {
            Counter::new(
                "orchex_circuit_breaker_slow_calls_total",
                &[("name", name.to_owned()), ("outcome", outcome.to_owned())],
            )
        };
        Self {
            name: name.to_owned(),
            state: Gauge::new("orchex_circuit_breaker_state", &[("name", name.to_owned())]),
            success: calls("success"),
            failure: calls("failure"),
            ignored: calls("ignored"),
            not_permitted: calls("not_permitted"),
            slow_success: slow("success"),
            slow_failure: slow("failure"),
            failure_rate: Gauge::new(
                "orchex_circuit_breaker_failure_rate",
                &[("name", name.to_owned())],
            ),
        }
    }
}

/// Builds a [`CircuitBreaker`].
#[derive(Debug)]
#[must_use]
pub struct CircuitBreakerBuilder {
    config: CircuitBreakerConfig,
    clock: Option<SharedClock>,
    name: Option<Arc<str>>,
    events: Option<broadcast::Sender<StateTransition>>,
}

/// The default capacity of a breaker's event channel.
pub const DEFAULT_EVENT_CAPACITY: usize = 64;

impl CircuitBreakerBuilder {
    /// The clock (default: [`SystemClock`](crate::SystemClock)).
    pub fn clock(mut self, clock: impl Into<SharedClock>) -> Self {
        self.clock = Some(clock.into());
        self
    }

    /// A name, e.g. `api/codegen`: carried by events and snapshots, and the
    /// `name` label of the metrics. Without a name no metrics are recorded.
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Sends state transitions to this channel instead of a private one,
    /// so that many breakers can share one stream.
    pub fn events(mut self, sender: broadcast::Sender<StateTransition>) -> Self {
        self.events = Some(sender);
        self
    }

    /// Checks the configuration and builds the breaker, closed.
    pub fn build(self) -> Result<CircuitBreaker, ConfigError> {
        self.config.validate()?;
        Ok(self.build_validated())
    }

    /// Builds from a configuration already validated.
    pub(crate) fn build_validated(self) -> CircuitBreaker {
        let metrics = instrument::wanted(self.name.as_deref())
            .then(|| Metrics::new(self.name.as_deref().unwrap_or_default()));
        if let Some(metrics) = &metrics {
            metrics.state.set(0.0);
        }
        let inner = Inner {
            state: CachePadded(AtomicU64::new(CLOSED)),
            counters: CachePadded::default(),
            trial: CachePadded(AtomicU64::new(0)),
            hot: Hot::from(&self.config),
            open_until: AtomicU64::new(0),
            half_open_deadline: AtomicU64::new(u64::MAX),
            window: Mutex::new(Window::new(&self.config, 0)),
            control: Mutex::new(Control {
                config: self.config,
                trips: 0,
            }),
            events: self
                .events
                .unwrap_or_else(|| broadcast::channel(DEFAULT_EVENT_CAPACITY).0),
            clock: self.clock.unwrap_or_default(),
            name: self.name,
            metrics,
        };
        CircuitBreaker {
            inner: Arc::new(inner),
        }
    }
}

impl From<&CircuitBreakerConfig> for Hot {
    fn from(config: &CircuitBreakerConfig) -> Self {
        let hot = Hot {
            flags: AtomicU32::new(0),
            consecutive_threshold: AtomicU32::new(0),
            slow_nanos: AtomicU64::new(0),
            half_open_calls: AtomicU32::new(0),
        };
        hot.store(config);
        hot
    }
}

impl Hot {
    fn store(&self, config: &CircuitBreakerConfig) {
        let mut flags = 0;
        if config.uses_window() {
            flags |= USE_WINDOW;
            if matches!(config.window, SlidingWindow::Time(_)) {
                flags |= TIME_WINDOW;
            }
        }
        if config.consecutive_failures.is_some() {
            flags |= USE_CONSECUTIVE;
        }
        if config.slow_call_rate.is_some() {
            flags |= USE_SLOW;
        }
        self.consecutive_threshold.store(
            config.consecutive_failures.unwrap_or(u32::MAX),
            Ordering::Relaxed,
        );
        self.slow_nanos
            .store(nanos(config.slow_call_duration), Ordering::Relaxed);
        self.half_open_calls
            .store(config.half_open_calls, Ordering::Relaxed);
        self.flags.store(flags, Ordering::Release);
    }
}

impl CircuitBreaker {
    /// A closed breaker with the system clock and no name.
    pub fn new(config: CircuitBreakerConfig) -> Result<Self, ConfigError> {
        Self::builder(config).build()
    }

    /// A builder for a breaker with a clock, name or shared event channel.
    pub fn builder(config: CircuitBreakerConfig) -> CircuitBreakerBuilder {
        CircuitBreakerBuilder {
            config,
            clock: None,
            name: None,
            events: None,
        }
    }

    /// Asks to make a call. On success, report the call's outcome through
    /// the [`Permit`]; dropping it counts as ignored.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, CallNotPermitted> {
        let (word, start) = self.inner.acquire()?;
        Ok(Permit {
            inner: &self.inner,
            word,
            start,
            done: false,
        })
    }

    /// Like [`try_acquire`](Self::try_acquire), with a permit that owns a
    /// handle to the breaker (for futures and tasks that outlive a borrow).
    pub fn try_acquire_owned(&self) -> Result<OwnedPermit, CallNotPermitted> {
        let (word, start) = self.inner.acquire()?;
        Ok(OwnedPermit {
            breaker: self.clone(),
            word,
            start,
            done: false,
        })
    }

    /// Runs `f` if the breaker permits it; `Ok` counts as success and `Err`
    /// as failure. The future is not even created when the call is refused.
    pub async fn call<F, Fut, T, E>(&self, f: F) -> Result<T, CircuitBreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_with(&DefaultClassifier, f).await
    }

    /// Like [`call`](Self::call), with a classifier deciding what counts as
    /// a failure.
    pub async fn call_with<F, Fut, T, E, C>(
        &self,
        classifier: &C,
        f: F,
    ) -> Result<T, CircuitBreakerError<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        C: Classify<T, E> + ?Sized,
    {
        let permit = self.try_acquire()?;
        let result = f().await;
        permit.record(classifier.classify(&result));
        result.map_err(CircuitBreakerError::Inner)
    }

    /// The synchronous form of [`call`](Self::call).
    #[inline]
    pub fn call_sync<T, E>(
        &self,
        f: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, CircuitBreakerError<E>> {
        let permit = self.try_acquire()?;
        let result = f();
        if result.is_ok() {
            permit.success();
        } else {
            permit.failure();
        }
        result.map_err(CircuitBreakerError::Inner)
    }

    /// The current state (moving open to half-open first, if its time has
    /// come).
    pub fn state(&self) -> CircuitState {
        let word = self.inner.settle();
        CircuitState::from_bits(state_bits(word))
    }

    /// The breaker's name.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// A copy of the configuration.
    pub fn config(&self) -> CircuitBreakerConfig {
        lock(&self.inner.control).config.clone()
    }

    /// Receives every state transition from now on. Nothing is sent, and
    /// nothing costs, while nobody subscribes.
    pub fn subscribe(&self) -> broadcast::Receiver<StateTransition> {
        self.inner.events.subscribe()
    }

    /// The current state and counts.
    pub fn snapshot(&self) -> CircuitBreakerSnapshot {
        let inner = &*self.inner;
        let word = inner.settle();
        let now = inner.clock.now();
        let state = CircuitState::from_bits(state_bits(word));
        let (counts, failure_rate, slow_call_rate) = {
            let mut window = lock(&inner.window);
            let counts = window.counts(now.as_nanos());
            (counts, window.failure_rate(), window.slow_call_rate())
        };
        let trial = inner.trial.load(Ordering::Acquire);
        let in_half_open = state == CircuitState::HalfOpen
            && trial_generation(trial) == generation(word) & 0xFFFF_FFFF;
        CircuitBreakerSnapshot {
            name: inner.name.clone(),
            state,
            calls: counts.calls,
            failures: counts.failures,
            successes: counts.calls - counts.failures,
            slow_calls: counts.slow,
            failure_rate,
            slow_call_rate,
            consecutive_failures: inner.counters.consecutive.load(Ordering::Relaxed),
            not_permitted: inner.counters.not_permitted.load(Ordering::Relaxed),
            trips: lock(&inner.control).trips,
            retry_after: (state == CircuitState::Open).then(|| {
                Timestamp::from_nanos(inner.open_until.load(Ordering::Acquire))
                    .saturating_duration_since(now)
            }),
            trial_calls: if in_half_open {
                trial_started(trial)
            } else {
                0
            },
            trial_successes: if in_half_open {
                trial_succeeded(trial)
            } else {
                0
            },
            at: now,
        }
    }

    /// Replaces the configuration, keeping the state and the counts: the
    /// window keeps its calls (resized windows keep the most recent ones),
    /// an open breaker stays open until its current period ends, and the
    /// trip count that drives the backoff is kept.
    pub fn reconfigure(&self, config: CircuitBreakerConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let inner = &*self.inner;
        let mut control = lock(&inner.control);
        let now = inner.clock.now().as_nanos();
        lock(&inner.window).reconfigure(&config, now);
        inner.hot.store(&config);
        control.config = config;
        Ok(())
    }

    /// Refuses every call until [`reset`](Self::reset) or another manual
    /// state.
    pub fn force_open(&self) {
        self.inner.manual(FORCED_OPEN);
    }

    /// Permits every call and counts nothing.
    pub fn disable(&self) {
        self.inner.manual(DISABLED);
    }

    /// Permits and counts every call, but never trips.
    pub fn metrics_only(&self) {
        self.inner.manual(METRICS_ONLY);
    }

    /// Closes the breaker with an empty window and no backoff history.
    pub fn reset(&self) {
        self.inner.manual(CLOSED);
    }
}

impl fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let word = self.inner.state.load(Ordering::Relaxed);
        f.debug_struct("CircuitBreaker")
            .field("name", &self.inner.name)
            .field("state", &CircuitState::from_bits(state_bits(word)))
            .finish_non_exhaustive()
    }
}

// === impl Inner ===

impl Inner {
    /// The permit's state word and start time, or a refusal.
    #[inline]
    fn acquire(&self) -> Result<(u64, u64), CallNotPermitted> {
        let word = self.state.load(Ordering::Acquire);
        if state_bits(word) <= DISABLED {
            return Ok((word, self.start_time()));
        }
        self.acquire_slow(word)
    }

    #[inline]
    fn start_time(&self) -> u64 {
        if self.hot.flags.load(Ordering::Relaxed) & USE_SLOW != 0 {
            self.clock.now().as_nanos()
        } else {
            NOT_TIMED
        }
    }

    #[cold]
    fn acquire_slow(&self, mut word: u64) -> Result<(u64, u64), CallNotPermitted> {
        loop {
            match state_bits(word) {
                CLOSED | METRICS_ONLY | DISABLED => return Ok((word, self.start_time())),
                OPEN => {
                    let now = self.clock.now().as_nanos();
                    let until = self.open_until.load(Ordering::Acquire);
                    if now < until {
                        return Err(self.refuse(CallNotPermitted::Open {
                            retry_after: Duration::from_nanos(until - now),
                        }));
                    }
                    self.transition(word, HALF_OPEN, TransitionReason::OpenElapsed);
                }
                HALF_OPEN => {
                    let deadline = self.half_open_deadline.load(Ordering::Acquire);
                    if deadline != u64::MAX && self.clock.now().as_nanos() >= deadline {
                        self.transition(word, OPEN, TransitionReason::HalfOpenTimeout);
                    } else if let Some(result) = self.take_trial(word) {
                        return result;
                    }
                }
                _ => return Err(self.refuse(CallNotPermitted::ForcedOpen)),
            }
            word = self.state.load(Ordering::Acquire);
        }
    }

    /// Takes a trial slot; `None` when the half-open period is over.
    fn take_trial(&self, word: u64) -> Option<Result<(u64, u64), CallNotPermitted>> {
        let permitted = self.hot.half_open_calls.load(Ordering::Relaxed);
        let mut trial = self.trial.load(Ordering::Acquire);
        loop {
            if trial_generation(trial) != generation(word) & 0xFFFF_FFFF {
                return None;
            }
            if trial_started(trial) >= permitted {
                return Some(Err(self.refuse(CallNotPermitted::HalfOpenFull)));
            }
            match self.trial.compare_exchange_weak(
                trial,
                trial + TRIAL_STARTED,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return Some(Ok((word, self.start_time()))),
                Err(actual) => trial = actual,
            }
        }
    }

    #[cold]
    fn refuse(&self, refusal: CallNotPermitted) -> CallNotPermitted {
        self.counters.not_permitted.fetch_add(1, Ordering::Relaxed);
        if let Some(metrics) = &self.metrics {
            metrics.not_permitted.increment(1);
        }
        refusal
    }

    /// Moves open → half-open or half-open → open if their time has come;
    /// returns the current state word.
    fn settle(&self) -> u64 {
        loop {
            let word = self.state.load(Ordering::Acquire);
            let due = match state_bits(word) {
                OPEN => (self.clock.now().as_nanos() >= self.open_until.load(Ordering::Acquire))
                    .then_some((HALF_OPEN, TransitionReason::OpenElapsed)),
                HALF_OPEN => {
                    let deadline = self.half_open_deadline.load(Ordering::Acquire);
                    (deadline != u64::MAX && self.clock.now().as_nanos() >= deadline)
                        .then_some((OPEN, TransitionReason::HalfOpenTimeout))
                }
                _ => None,
            };
            match due {
                Some((to, reason)) => {
                    self.transition(word, to, reason);
                }
                None => return word,
            }
        }
    }

    /// Records the outcome of a permitted call.
    #[inline]
    fn complete(&self, word: u64, start: u64, outcome: CallOutcome) {
        let state = state_bits(word);
        let flags = self.hot.flags.load(Ordering::Relaxed);
        let mut now = None;
        let slow =
            outcome != CallOutcome::Ignored && start != NOT_TIMED && flags & USE_SLOW != 0 && {
                let t = self.clock.now().as_nanos();
                now = Some(t);
                t.saturating_sub(start) >= self.hot.slow_nanos.load(Ordering::Relaxed)
            };
        if let Some(metrics) = &self.metrics {
            metrics.count(outcome, slow);
        }
        if state == DISABLED {
            return;
        }
        if state == HALF_OPEN {
            self.complete_trial(word, outcome, slow);
            return;
        }
        if outcome == CallOutcome::Ignored {
            return;
        }
        // Closed or metrics-only. A call from an earlier state is not counted.
        if self.state.load(Ordering::Acquire) != word {
            return;
        }
        let failure = outcome == CallOutcome::Failure;
        if flags & USE_CONSECUTIVE != 0 {
            let consecutive = &self.counters.consecutive;
            if failure {
                let run = consecutive
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_add(1);
                if state == CLOSED && run >= self.hot.consecutive_threshold.load(Ordering::Relaxed)
                {
                    self.transition(word, OPEN, TransitionReason::ConsecutiveFailures);
                    return;
                }
            } else if consecutive.load(Ordering::Relaxed) != 0 {
                consecutive.store(0, Ordering::Relaxed);
            }
        }
        if flags & USE_WINDOW != 0 {
            let now = match now {
                Some(t) => t,
                None if flags & TIME_WINDOW != 0 => self.clock.now().as_nanos(),
                None => 0,
            };
            self.record_in_window(word, now, failure, slow);
        }
    }

    fn record_in_window(&self, word: u64, now: u64, failure: bool, slow: bool) {
        let (verdict, rate) = {
            let mut window = lock(&self.window);
            if window.generation != generation(word) {
                return;
            }
            // `record` says whether the rates could have risen; a plain
            // success in a full count window cannot trip anything.
            let may_trip = window.record(now, failure, slow);
            let verdict = if may_trip && state_bits(word) == CLOSED {
                window.verdict()
            } else {
                None
            };
            let rate = self.metrics.as_ref().map(|_| window.failure_rate());
            (verdict, rate)
        };
        if let (Some(metrics), Some(rate)) = (&self.metrics, rate) {
            metrics.failure_rate.set(rate.unwrap_or(-1.0));
        }
        if let Some(reason) = verdict {
            self.transition(word, OPEN, reason);
        }
    }

    fn complete_trial(&self, word: u64, outcome: CallOutcome, slow: bool) {
        if outcome == CallOutcome::Failure || slow {
            self.transition(word, OPEN, TransitionReason::TrialFailed);
            return;
        }
        let mut trial = self.trial.load(Ordering::Acquire);
        loop {
            if trial_generation(trial) != generation(word) & 0xFFFF_FFFF {
                return;
            }
            let next = if outcome == CallOutcome::Success {
                trial + TRIAL_SUCCEEDED
            } else {
                // Ignored: give the trial slot back.
                trial.saturating_sub(TRIAL_STARTED)
            };
            match self
                .trial
                .compare_exchange_weak(trial, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if outcome == CallOutcome::Success
                        && trial_succeeded(next) >= self.hot.half_open_calls.load(Ordering::Relaxed)
                    {
                        self.transition(word, CLOSED, TransitionReason::TrialsSucceeded);
                    }
                    return;
                }
                Err(actual) => trial = actual,
            }
        }
    }

    /// Moves from the state word `expected` to `to`, unless another thread
    /// moved first. Returns whether this call made the transition.
    fn transition(&self, expected: u64, to: u64, reason: TransitionReason) -> bool {
        let mut control = lock(&self.control);
        let current = self.state.load(Ordering::Acquire);
        if current != expected {
            return false;
        }
        self.apply(&mut control, current, to, reason);
        true
    }

    /// An operator's transition: always applies (re-entering the same
    /// manual state is a no-op; `reset` always resets).
    fn manual(&self, to: u64) {
        let mut control = lock(&self.control);
        let current = self.state.load(Ordering::Acquire);
        if state_bits(current) == to && to != CLOSED {
            return;
        }
        self.apply(&mut control, current, to, TransitionReason::Manual);
    }

    /// Performs a transition; the caller holds the control lock.
    fn apply(&self, control: &mut Control, current: u64, to: u64, reason: TransitionReason) {
        let now = self.clock.now();
        let next_generation = generation(current).wrapping_add(1);
        let mut open_for = None;
        match to {
            OPEN => {
                control.trips = control.trips.saturating_add(1);
                let period = jitter_by_fraction(
                    control.config.open_duration_for(control.trips),
                    control.config.open_jitter,
                );
                self.open_until
                    .store((now + period).as_nanos(), Ordering::Release);
                open_for = Some(period);
            }
            HALF_OPEN => {
                self.trial
                    .store(trial_word(next_generation), Ordering::Release);
                let deadline = control
                    .config
                    .half_open_max_wait
                    .map_or(u64::MAX, |wait| (now + wait).as_nanos());
                self.half_open_deadline.store(deadline, Ordering::Release);
            }
            CLOSED | METRICS_ONLY => {
                if to == CLOSED {
                    control.trips = 0;
                }
                self.counters.consecutive.store(0, Ordering::Relaxed);
                lock(&self.window).reset(next_generation);
            }
            _ => {}
        }
        self.state
            .store((next_generation << STATE_BITS) | to, Ordering::Release);
        let from = CircuitState::from_bits(state_bits(current));
        let to = CircuitState::from_bits(to);
        if let Some(metrics) = &self.metrics {
            metrics.state.set(f64::from(to.as_gauge()));
            Counter::new(
                "orchex_circuit_breaker_transitions_total",
                &[
                    ("name", metrics.name.clone()),
                    ("from", from.as_str().to_owned()),
                    ("to", to.as_str().to_owned()),
                ],
            )
            .increment(1);
        }
        if self.events.receiver_count() > 0 {
            // An error only means every receiver went away meanwhile.
            let _ = self.events.send(StateTransition {
                name: self.name.clone(),
                from,
                to,
                reason,
                at: now,
                open_for,
            });
        }
    }
}

impl Metrics {
    #[inline]
    fn count(&self, outcome: CallOutcome, slow: bool) {
        match outcome {
            CallOutcome::Success => {
                self.success.increment(1);
                if slow {
                    self.slow_success.increment(1);
                }
            }
            CallOutcome::Failure => {
                self.failure.increment(1);
                if slow {
                    self.slow_failure.increment(1);
                }
            }
            CallOutcome::Ignored => self.ignored.increment(1),
        }
    }
}

/// Permission to make one call, from [`CircuitBreaker::try_acquire`].
/// Report the outcome with [`success`](Self::success),
/// [`failure`](Self::failure), [`ignore`](Self::ignore) or
/// [`record`](Self::record); dropping it counts as ignored.
#[must_use = "a dropped permit counts as an ignored call"]
pub struct Permit<'a> {
    inner: &'a Inner,
    word: u64,
    start: u64,
    done: bool,
}

impl Permit<'_> {
    /// The call succeeded.
    #[inline]
    pub fn success(self) {
        self.record(CallOutcome::Success);
    }

    /// The call failed.
    #[inline]
    pub fn failure(self) {
        self.record(CallOutcome::Failure);
    }

    /// The call says nothing about the callee's health.
    pub fn ignore(self) {
        self.record(CallOutcome::Ignored);
    }

    /// Reports `outcome`.
    #[inline]
    pub fn record(mut self, outcome: CallOutcome) {
        self.done = true;
        self.inner.complete(self.word, self.start, outcome);
    }

    /// The state the call was permitted in.
    pub fn state(&self) -> CircuitState {
        CircuitState::from_bits(state_bits(self.word))
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        if !self.done {
            self.inner
                .complete(self.word, self.start, CallOutcome::Ignored);
        }
    }
}

impl fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("state", &self.state())
            .finish_non_exhaustive()
    }
}

/// A [`Permit`] that owns a handle to its breaker.
#[must_use = "a dropped permit counts as an ignored call"]
pub struct OwnedPermit {
    breaker: CircuitBreaker,
    word: u64,
    start: u64,
    done: bool,
}

impl OwnedPermit {
    /// The call succeeded.
    pub fn success(self) {
        self.record(CallOutcome::Success);
    }

    /// The call failed.
    pub fn failure(self) {
        self.record(CallOutcome::Failure);
    }

    /// The call says nothing about the callee's health.
    pub fn ignore(self) {
        self.record(CallOutcome::Ignored);
    }

    /// Reports `outcome`.
    pub fn record(mut self, outcome: CallOutcome) {
        self.done = true;
        self.breaker.inner.complete(self.word, self.start, outcome);
    }

    /// The breaker this permit belongs to.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

impl Drop for OwnedPermit {
    fn drop(&mut self) {
        if !self.done {
            self.breaker
                .inner
                .complete(self.word, self.start, CallOutcome::Ignored);
        }
    }
}

impl fmt::Debug for OwnedPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("breaker", &self.breaker)
            .field("state", &CircuitState::from_bits(state_bits(self.word)))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
