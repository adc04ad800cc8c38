//! [`CircuitBreakerLayer`].

use tower_layer::Layer;

use super::CircuitBreakerService;
use crate::circuit_breaker::{CircuitBreaker, DefaultClassifier};

/// Wraps services with a shared [`CircuitBreaker`].
///
/// ```
/// use orchex_resilience::{CircuitBreaker, CircuitBreakerConfig};
/// use orchex_resilience::tower::CircuitBreakerLayer;
///
/// let breaker = CircuitBreaker::new(CircuitBreakerConfig::consecutive(5))?;
/// let layer = CircuitBreakerLayer::new(breaker);
/// let service = tower::ServiceBuilder::new().layer(layer).service(tower::service_fn(|x: u32| async move {
///     Ok::<_, std::io::Error>(x)
/// }));
/// # drop(service);
/// # Ok::<(), orchex_resilience::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct CircuitBreakerLayer<C = DefaultClassifier> {
    breaker: CircuitBreaker,
    classifier: C,
}

impl CircuitBreakerLayer {
    /// `Ok` responses count as successes, errors as failures.
    pub fn new(breaker: CircuitBreaker) -> Self {
        Self {
            breaker,
            classifier: DefaultClassifier,
        }
    }
}

impl<C> CircuitBreakerLayer<C> {
    /// `classifier` decides what each response means
    /// (`Fn(&Result<Response, Error>) -> CallOutcome`).
    pub fn with_classifier(breaker: CircuitBreaker, classifier: C) -> Self {
        Self {
            breaker,
            classifier,
        }
    }

    /// The shared breaker.
    pub fn breaker(&self) -> &CircuitBreaker {
        &self.breaker
    }
}

impl<S, C: Clone> Layer<S> for CircuitBreakerLayer<C> {
    type Service = CircuitBreakerService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        CircuitBreakerService::new(inner, self.breaker.clone(), self.classifier.clone())
    }
}
