//! Circuit breaker middleware: refuses calls while the breaker is open,
//! and reports each response through a [`Classify`](crate::Classify)er.

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::CircuitBreakerLayer;
pub use service::CircuitBreakerService;
