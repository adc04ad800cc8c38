//! Timeout middleware: drops (cancels) the inner future when the timeout
//! elapses and fails with [`TimeoutError`](crate::TimeoutError).

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::TimeoutLayer;
pub use service::TimeoutService;
