//! Integration tests of orchex-resilience, in one binary: hot paths that
//! must not allocate, properties (proptest), multi-thread stress, the
//! metric names, and `Send`/`Sync` of handles and futures.

mod alloc;
mod metrics;
mod properties;
mod send_sync;
mod stress;
