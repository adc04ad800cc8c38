//! The orchex orchestrator: routing, the durable priority queue, the
//! scheduler, parallel cycles, the safe job engine (rate limit, circuit
//! breaker, bulkhead, isolated workspace, validation, delivery, backup),
//! rollback, operator overrides, adaptive concurrency and the health loop.
//!
//! It consumes a stream of `orchex-core` `Trigger`s and never depends on the
//! monitor crate itself.
