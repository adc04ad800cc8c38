//! Rate limit middleware: refuses (does not delay) calls over the quota,
//! with a [`RateLimitError`](crate::RateLimitError) that says when to retry.

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::{KeyedRateLimitLayer, RateLimitLayer};
pub use service::{KeyedRateLimitService, RateLimitService};
