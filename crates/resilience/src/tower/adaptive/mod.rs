//! Adaptive concurrency limit middleware: readiness waits for a token of
//! the shared [`AdaptiveLimit`](crate::AdaptiveLimit); each response is a
//! latency sample classified by a [`ClassifyLoad`](crate::ClassifyLoad)er.

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::AdaptiveLimitLayer;
pub use service::AdaptiveLimitService;
