//! [`BulkheadLayer`].

use tower_layer::Layer;

use super::BulkheadService;
use crate::bulkhead::Bulkhead;

/// Wraps services with a shared [`Bulkhead`].
///
/// ```
/// use orchex_resilience::{Bulkhead, BulkheadConfig};
/// use orchex_resilience::tower::BulkheadLayer;
///
/// let layer = BulkheadLayer::new(Bulkhead::new(BulkheadConfig::new(8))?);
/// let service = tower::ServiceBuilder::new().layer(layer).service(tower::service_fn(|x: u32| async move {
///     Ok::<_, std::io::Error>(x)
/// }));
/// # drop(service);
/// # Ok::<(), orchex_resilience::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct BulkheadLayer {
    bulkhead: Bulkhead,
}

impl BulkheadLayer {
    /// Every service built shares `bulkhead`.
    pub fn new(bulkhead: Bulkhead) -> Self {
        Self { bulkhead }
    }
}

impl<S> Layer<S> for BulkheadLayer {
    type Service = BulkheadService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        BulkheadService::new(inner, self.bulkhead.clone())
    }
}
