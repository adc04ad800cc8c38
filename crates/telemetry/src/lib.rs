//! Telemetry for orchex: the event bus, the persistence writer, Prometheus
//! metrics and health aggregation.
//!
//! This crate will hold `TelemetryBus` (non-blocking publish, bounded queue to
//! the store, broadcast to live subscribers), the metric descriptions of
//! PRODUCT.md §10 and the Prometheus recorder installation.
