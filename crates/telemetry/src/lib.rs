//! Telemetry for orchex: the event bus, the persistence writer, Prometheus
//! metrics and health aggregation.
//!
//! - [`TelemetryBus`]: `publish(event)` never blocks. Each event goes to a
//!   bounded queue (drained by the [`PersistenceWriter`] into an
//!   [`orchex_store::EventStore`] in batches) and to live subscribers
//!   ([`TelemetryBus::subscribe`], filtered by kind, repository or
//!   severity, told how many events they missed when they lag). A full
//!   queue drops the event and counts it (`orchex_telemetry_events_dropped_total`
//!   and [`TelemetryBus::dropped`]); nothing is lost silently.
//! - [`metrics`]: the names, descriptions, units and histogram buckets of
//!   every metric of PRODUCT.md §10, and typed functions that record them.
//! - [`install_prometheus`]: installs the `metrics-exporter-prometheus`
//!   recorder once and returns a [`MetricsHandle`] whose
//!   [`render`](MetricsHandle::render) the dashboard serves at `/metrics`
//!   (process metrics included); run its upkeep on a timer.
//! - [`HealthRegistry`]: components report `ok` / `degraded` / `unhealthy`
//!   (or register a probe); the snapshot is `orchex-core`'s `HealthStatus`.
//!
//! **Architecture Invariant:** this crate knows nothing about HTTP or
//! WebSockets (the dashboard serves what it renders and streams), nor about
//! SQL (it writes through the `EventStore` trait).
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use orchex_core::{Event, EventKind, HealthLevel};
//! use orchex_store::{EventFilter, EventStore, SqliteStore, StoreHealth, StoreOptions};
//! use orchex_telemetry::{
//!     BusConfig, HealthRegistry, LiveFilter, PersistenceConfig, PersistenceWriter, Received,
//!     TelemetryBus,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! # runtime.block_on(async {
//! let dir = tempfile::tempdir()?;
//! let store = SqliteStore::open_in_dir(dir.path(), StoreOptions::default()).await?;
//! let health = HealthRegistry::new();
//! let probe = store.clone();
//! health.register_probe("store", move || probe.health());
//!
//! let (bus, queue) = TelemetryBus::new(BusConfig::default());
//! let writer = PersistenceWriter::spawn(
//!     queue,
//!     Arc::new(store.clone()),
//!     &health,
//!     PersistenceConfig::default(),
//! );
//! let mut failures = bus.subscribe(LiveFilter::all().kind(EventKind::JobFailed));
//!
//! bus.publish(Event::new(EventKind::JobQueued, "queued"));
//! bus.publish(Event::new(EventKind::JobFailed, "step generate exited with 1"));
//!
//! // Live subscribers see matching events at once...
//! let Some(Received::Event(event)) = failures.recv().await else { panic!() };
//! assert_eq!(event.kind, EventKind::JobFailed);
//! // ...and the writer persists everything.
//! bus.flush().await;
//! assert_eq!(store.count_events(EventFilter::new()).await?, 2);
//! assert_eq!(bus.dropped(), 0);
//! assert_eq!(health.snapshot().status, HealthLevel::Ok);
//!
//! writer.shutdown().await;
//! store.close().await?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # })
//! # }
//! ```

mod bus;
mod error;
mod health;
pub mod metrics;
mod persist;
mod prometheus;

pub use bus::{BusConfig, BusStats, EventQueue, LiveFilter, Received, Subscription, TelemetryBus};
pub use error::TelemetryError;
pub use health::{HealthRegistry, HealthReporter};
pub use persist::{PERSISTENCE_COMPONENT, PersistenceConfig, PersistenceWriter};
pub use prometheus::{DEFAULT_UPKEEP_INTERVAL, MetricsHandle, install_prometheus};
