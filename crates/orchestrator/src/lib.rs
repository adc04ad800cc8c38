//! The orchex orchestrator: routing, the durable priority queue, the
//! scheduler, parallel cycles, the safe job engine (rate limit, circuit
//! breaker, bulkhead, isolated workspace, validation, delivery, backup),
//! rollback, operator overrides, adaptive concurrency and the health loop.
//!
//! It consumes a stream of `orchex-core` `Trigger`s and never depends on the
//! monitor crate itself.
//!
//! Modules available so far:
//! - [`routing`]: configuration → routing table → pipelines per trigger;
//! - [`process`]: a step as a child process in its own process group, with
//!   timeout, cancellation and bounded output capture;
//! - [`schedule`]: jittered per-repository interval schedules with catch-up.

pub mod process;
pub mod routing;
pub mod schedule;

pub use process::{
    ProcessOutcome, ProcessSpec, SpawnError, Termination, kill_process_group, run_process,
};
pub use routing::{RouteEntry, RouteMatch, RoutingError, RoutingTable};
pub use schedule::Scheduler;
