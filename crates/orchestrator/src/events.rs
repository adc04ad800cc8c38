//! Where the orchestrator's events go.
//!
//! The orchestrator publishes through [`Events`], a cheap-to-clone sink
//! that must never block. The daemon connects it to the telemetry bus;
//! an embedder can connect it to anything (a channel, a log).

use std::fmt;
use std::sync::Arc;

use orchex_core::Event;

/// A non-blocking event sink.
#[derive(Clone)]
pub struct Events {
    sink: Arc<dyn Fn(Event) + Send + Sync>,
}

impl Events {
    /// A sink calling `publish` for every event; `publish` must not block.
    pub fn new(publish: impl Fn(Event) + Send + Sync + 'static) -> Self {
        Self {
            sink: Arc::new(publish),
        }
    }

    /// A sink that drops every event.
    pub fn discard() -> Self {
        Self::new(|_| {})
    }

    /// Publishes one event.
    pub fn publish(&self, event: Event) {
        (self.sink)(event);
    }
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Events")
    }
}
