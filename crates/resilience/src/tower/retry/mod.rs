//! Retry middleware: calls the inner service again, after the policy's
//! backoff, while the predicate says the error is transient and the
//! attempts and the budget allow. Requests must be `Clone`.

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::{RetryAll, RetryLayer, ShouldRetry};
pub use service::RetryService;
