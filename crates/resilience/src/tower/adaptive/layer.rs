//! [`AdaptiveLimitLayer`].

use tower_layer::Layer;

use super::AdaptiveLimitService;
use crate::adaptive::{AdaptiveLimit, DefaultLoadClassifier};

/// Wraps services with a shared [`AdaptiveLimit`].
///
/// ```
/// use orchex_resilience::{AdaptiveLimit, GradientConfig, LimitAlgorithm};
/// use orchex_resilience::tower::AdaptiveLimitLayer;
///
/// let limit = AdaptiveLimit::new(LimitAlgorithm::Gradient(GradientConfig::new(10, 1, 100)))?;
/// let layer = AdaptiveLimitLayer::new(limit);
/// let service = tower::ServiceBuilder::new().layer(layer).service(tower::service_fn(|x: u32| async move {
///     Ok::<_, std::io::Error>(x)
/// }));
/// # drop(service);
/// # Ok::<(), orchex_resilience::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct AdaptiveLimitLayer<C = DefaultLoadClassifier> {
    limit: AdaptiveLimit,
    classifier: C,
}

impl AdaptiveLimitLayer {
    /// Successes are samples; errors are ignored.
    pub fn new(limit: AdaptiveLimit) -> Self {
        Self {
            limit,
            classifier: DefaultLoadClassifier,
        }
    }
}

impl<C> AdaptiveLimitLayer<C> {
    /// `classifier` decides which responses are samples, drops or ignored.
    pub fn with_classifier(limit: AdaptiveLimit, classifier: C) -> Self {
        Self { limit, classifier }
    }
}

impl<S, C: Clone> Layer<S> for AdaptiveLimitLayer<C> {
    type Service = AdaptiveLimitService<S, C>;

    fn layer(&self, inner: S) -> Self::Service {
        AdaptiveLimitService::new(inner, self.limit.clone(), self.classifier.clone())
    }
}
