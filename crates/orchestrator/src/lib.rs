//! The orchex orchestrator: routing, the durable priority queue, the
//! scheduler, parallel cycles, the safe job engine (rate limit, circuit
//! breaker, bulkhead, isolated workspace, validation, delivery, backup),
//! rollback, operator overrides, adaptive concurrency and the health loop.
//!
//! It consumes a stream of `orchex-core` [`Trigger`](orchex_core::Trigger)s
//! and never depends on the monitor crate itself; it persists through
//! `orchex-store`'s traits, does git work through `orchex-git`, and
//! publishes events through an [`Events`] sink.
//!
//! # Modules
//! - [`routing`]: configuration → routing table → pipelines per trigger;
//! - [`process`]: a step as a child process in its own process group, with
//!   timeout, cancellation and bounded output capture;
//! - [`schedule`]: jittered per-repository interval schedules with catch-up;
//! - [`Orchestrator`]: the handle: lifecycle, queue, cycles, overrides,
//!   views.

mod actions;
mod control;
mod engine;
mod events;
mod held;
mod impact;
mod orchestrator;
pub mod process;
pub mod routing;
pub mod schedule;
mod stats;
pub mod webhook;

pub use actions::{Action, ActionContext, ActionRegistry};
pub use control::{
    BreakerInfo, CancelFilter, ControlError, LimiterInfo, ManualRun, OrchestratorSnapshot,
    RunState, RunningJob,
};
pub use events::Events;
pub use orchestrator::{Orchestrator, OrchestratorDeps, OrchestratorError, RecoverySummary};
pub use process::{
    ProcessOutcome, ProcessSpec, SpawnError, Termination, kill_job_processes, kill_process_group,
    recorded_group, run_process, run_process_recorded,
};
pub use routing::{RouteEntry, RouteMatch, RoutingError, RoutingTable};
pub use schedule::Scheduler;
