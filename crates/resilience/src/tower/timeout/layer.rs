//! [`TimeoutLayer`].

use tower_layer::Layer;

use super::TimeoutService;
use crate::timeout::Timeout;

/// Wraps services with a shared (reconfigurable) [`Timeout`].
///
/// ```
/// use std::time::Duration;
/// use orchex_resilience::Timeout;
/// use orchex_resilience::tower::TimeoutLayer;
///
/// let layer = TimeoutLayer::new(Timeout::new(Duration::from_secs(30))?);
/// let service = tower::ServiceBuilder::new().layer(layer).service(tower::service_fn(|x: u32| async move {
///     Ok::<_, std::io::Error>(x)
/// }));
/// # drop(service);
/// # Ok::<(), orchex_resilience::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct TimeoutLayer {
    timeout: Timeout,
}

impl TimeoutLayer {
    /// Every service built shares `timeout`.
    pub fn new(timeout: Timeout) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = TimeoutService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        TimeoutService::new(inner, self.timeout.clone())
    }
}
