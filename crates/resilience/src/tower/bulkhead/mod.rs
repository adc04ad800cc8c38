//! Bulkhead middleware: holds a permit for each call in flight. Readiness
//! waits in the bulkhead's queue (when it has one); a full bulkhead makes
//! the next call fail with [`BulkheadError`](crate::BulkheadError) instead
//! of blocking.

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::BulkheadLayer;
pub use service::BulkheadService;
