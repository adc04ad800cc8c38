//! The domain vocabulary of orchex, shared by every other crate.
//!
//! `orchex-core` holds plain data types and the rules that belong to them:
//! repositories, triggers, pipelines, jobs and their state machine, events,
//! orchestration statistics, analysis reports, health, and the configuration
//! schema with its defaults. It performs no I/O and knows nothing about tokio,
//! SQLite, git or HTTP; those live in the layers above.
//!
//! **Architecture Invariant:** this crate has no async runtime and no I/O
//! dependency. Anything that needs one belongs in a higher layer.
//!
//! # Example
//!
//! A job's state can only move along the legal transitions:
//!
//! ```
//! use orchex_core::{Job, JobState, RepoId, Trigger, TriggerKind};
//!
//! let repo = RepoId::new("api")?;
//! let trigger = Trigger::manual(repo.clone());
//! let mut job = Job::new(repo, "codegen".into(), trigger);
//! assert_eq!(job.state(), JobState::Queued);
//! job.transition_to(JobState::Running)?;
//! job.transition_to(JobState::Succeeded)?;
//! // A finished job cannot run again.
//! assert!(job.transition_to(JobState::Running).is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

pub mod analysis;
pub mod config;
pub mod event;
pub mod health;
pub mod job;
pub mod pipeline;
pub mod repo;
pub mod stats;
pub mod trigger;

pub use analysis::{AnalysisReport, Hotspot, LanguageStats};
pub use config::Config;
pub use event::{Event, EventId, EventKind, Severity, UnknownEventKind};
pub use health::{ComponentHealth, HealthLevel, HealthStatus};
pub use job::{
    DeliveryRecord, DiffSummary, FileImpact, IllegalTransition, Job, JobId, JobState,
    RollbackState, SkipReason, StepResult,
};
pub use pipeline::{CommitSpec, Delivery, Pipeline, Step, StepAction, Strategy};
pub use repo::{InvalidName, RepoId, Repository};
pub use stats::{OrchestrationStats, ParallelExecution};
pub use trigger::{ChangeBatch, Trigger, TriggerKind};

/// The instant type used across orchex: a UTC timestamp with nanosecond
/// precision, serialised as RFC 3339.
pub type Timestamp = jiff::Timestamp;
