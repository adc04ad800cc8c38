//! [`CircuitBreakerRegistry`]: one breaker per key (e.g. repository ×
//! pipeline), created on first use from a shared configuration, with one
//! event stream for all of them.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, RwLock};

use tokio::sync::broadcast;

use super::{CircuitBreaker, CircuitBreakerConfig, CircuitBreakerSnapshot, StateTransition};
use crate::clock::SharedClock;
use crate::error::ConfigError;
use crate::util::{read, write};

/// Breakers by key, sharing a default configuration, a clock and one event
/// channel. Clones share the registry.
///
/// Each breaker is named after its key's `Display` (the `name` label of
/// its metrics), so keys should have a bounded set of values.
///
/// ```
/// use orchex_resilience::{CircuitBreakerConfig, CircuitBreakerRegistry, CircuitState};
///
/// let registry = CircuitBreakerRegistry::<String>::new(CircuitBreakerConfig::consecutive(5))?;
/// let events = registry.subscribe();
/// let breaker = registry.get_or_insert("api/codegen".to_owned());
/// assert_eq!(breaker.name(), Some("api/codegen"));
/// assert_eq!(breaker.state(), CircuitState::Closed);
/// assert_eq!(registry.len(), 1);
/// # drop(events);
/// # Ok::<(), orchex_resilience::ConfigError>(())
/// ```
pub struct CircuitBreakerRegistry<K> {
    inner: Arc<Inner<K>>,
}

struct Inner<K> {
    breakers: RwLock<HashMap<K, Entry>>,
    default: RwLock<CircuitBreakerConfig>,
    clock: SharedClock,
    events: broadcast::Sender<StateTransition>,
}

struct Entry {
    breaker: CircuitBreaker,
    /// Whether it follows the registry's default configuration.
    uses_default: bool,
}

impl<K> Clone for CircuitBreakerRegistry<K> {
    fn clone(&self) -> Self {
        Self {
            inner: Arc::clone(&self.inner),
        }
    }
}

impl<K> CircuitBreakerRegistry<K>
where
    K: Hash + Eq + Clone + fmt::Display,
{
    /// A registry with the system clock.
    pub fn new(default: CircuitBreakerConfig) -> Result<Self, ConfigError> {
        Self::with_clock(default, SharedClock::system())
    }

    /// A registry whose breakers use `clock`.
    pub fn with_clock(
        default: CircuitBreakerConfig,
        clock: impl Into<SharedClock>,
    ) -> Result<Self, ConfigError> {
        default.validate()?;
        let (events, _) = broadcast::channel(super::DEFAULT_EVENT_CAPACITY * 4);
        Ok(Self {
            inner: Arc::new(Inner {
                breakers: RwLock::new(HashMap::new()),
                default: RwLock::new(default),
                clock: clock.into(),
                events,
            }),
        })
    }

    /// The breaker for `key`, created with the default configuration if new.
    pub fn get_or_insert(&self, key: K) -> CircuitBreaker {
        if let Some(entry) = read(&self.inner.breakers).get(&key) {
            return entry.breaker.clone();
        }
        let config = read(&self.inner.default).clone();
        let mut breakers = write(&self.inner.breakers);
        breakers
            .entry(key)
            .or_insert_with_key(|key| Entry {
                breaker: self.build(key, config),
                uses_default: true,
            })
            .breaker
            .clone()
    }

    /// The breaker for `key` with its own configuration: created if new,
    /// reconfigured (keeping its state) if it exists. It no longer follows
    /// [`reconfigure_all`](Self::reconfigure_all).
    pub fn insert_with(
        &self,
        key: K,
        config: CircuitBreakerConfig,
    ) -> Result<CircuitBreaker, ConfigError> {
        config.validate()?;
        let mut breakers = write(&self.inner.breakers);
        if let Some(entry) = breakers.get_mut(&key) {
            entry.breaker.reconfigure(config)?;
            entry.uses_default = false;
            return Ok(entry.breaker.clone());
        }
        let breaker = self.build(&key, config);
        breakers.insert(
            key,
            Entry {
                breaker: breaker.clone(),
                uses_default: false,
            },
        );
        Ok(breaker)
    }

    fn build(&self, key: &K, config: CircuitBreakerConfig) -> CircuitBreaker {
        let builder = CircuitBreaker::builder(config)
            .name(key.to_string())
            .clock(self.inner.clock.clone())
            .events(self.inner.events.clone());
        // The configuration was validated when it entered the registry.
        builder.build_validated()
    }

    /// The breaker for `key`, if it exists.
    pub fn get(&self, key: &K) -> Option<CircuitBreaker> {
        read(&self.inner.breakers)
            .get(key)
            .map(|e| e.breaker.clone())
    }

    /// Removes the breaker for `key` (clones held elsewhere keep working).
    pub fn remove(&self, key: &K) -> Option<CircuitBreaker> {
        write(&self.inner.breakers).remove(key).map(|e| e.breaker)
    }

    /// Replaces the default configuration and reconfigures every breaker
    /// that follows it, keeping their states and counts.
    pub fn reconfigure_all(&self, config: CircuitBreakerConfig) -> Result<(), ConfigError> {
        config.validate()?;
        for entry in read(&self.inner.breakers)
            .values()
            .filter(|e| e.uses_default)
        {
            entry.breaker.reconfigure(config.clone())?;
        }
        *write(&self.inner.default) = config;
        Ok(())
    }

    /// Snapshots of every breaker.
    pub fn snapshots(&self) -> Vec<(K, CircuitBreakerSnapshot)> {
        let breakers: Vec<(K, CircuitBreaker)> = read(&self.inner.breakers)
            .iter()
            .map(|(k, e)| (k.clone(), e.breaker.clone()))
            .collect();
        breakers
            .into_iter()
            .map(|(k, b)| (k, b.snapshot()))
            .collect()
    }
}

impl<K> CircuitBreakerRegistry<K> {
    /// Receives the state transitions of every breaker in the registry.
    pub fn subscribe(&self) -> broadcast::Receiver<StateTransition> {
        self.inner.events.subscribe()
    }

    /// The number of breakers.
    pub fn len(&self) -> usize {
        read(&self.inner.breakers).len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The default configuration.
    pub fn default_config(&self) -> CircuitBreakerConfig {
        read(&self.inner.default).clone()
    }
}

impl<K: fmt::Debug> fmt::Debug for CircuitBreakerRegistry<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let breakers = read(&self.inner.breakers);
        f.debug_struct("CircuitBreakerRegistry")
            .field("keys", &breakers.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::circuit_breaker::{CircuitState, TransitionReason};
    use crate::clock::ManualClock;

    #[test]
    fn breakers_are_created_once_and_share_events() {
        let registry = CircuitBreakerRegistry::<String>::with_clock(
            CircuitBreakerConfig::consecutive(1).open_jitter(0.0),
            ManualClock::new(),
        )
        .unwrap();
        let mut events = registry.subscribe();
        let a = registry.get_or_insert("a".to_owned());
        let again = registry.get_or_insert("a".to_owned());
        let b = registry.get_or_insert("b".to_owned());
        a.try_acquire().unwrap().failure();
        assert_eq!(again.state(), CircuitState::Open);
        assert_eq!(b.state(), CircuitState::Closed);
        let event = events.try_recv().unwrap();
        assert_eq!(event.name.as_deref(), Some("a"));
        assert_eq!(event.reason, TransitionReason::ConsecutiveFailures);
        assert_eq!(registry.len(), 2);
        assert_eq!(registry.snapshots().len(), 2);
    }

    #[test]
    fn reconfigure_all_skips_custom_breakers() {
        let registry = CircuitBreakerRegistry::<&str>::with_clock(
            CircuitBreakerConfig::consecutive(3),
            ManualClock::new(),
        )
        .unwrap();
        let shared = registry.get_or_insert("shared");
        let custom = registry
            .insert_with("custom", CircuitBreakerConfig::consecutive(7))
            .unwrap();
        registry
            .reconfigure_all(CircuitBreakerConfig::consecutive(2))
            .unwrap();
        assert_eq!(shared.config().consecutive_failures_threshold(), Some(2));
        assert_eq!(custom.config().consecutive_failures_threshold(), Some(7));
        assert_eq!(
            registry.default_config().consecutive_failures_threshold(),
            Some(2)
        );
        assert!(registry.remove(&"custom").is_some());
        assert!(registry.get(&"custom").is_none());
        assert!(
            registry
                .reconfigure_all(CircuitBreakerConfig::consecutive(0))
                .is_err()
        );
    }
}
