//! Repository monitoring for orchex: the ignore-aware file-system watcher,
//! commit and push detection from refs, change settling and batching, and
//! repository analysis with caching.
//!
//! The monitor turns what happens in repositories into
//! [`orchex_core::Trigger`]s:
//!
//! - `fileChange`: the working tree is walked with the `ignore` crate
//!   (nested `.gitignore`, `.git/info/exclude`, the global excludes file and
//!   the configured globs); each directory that is not ignored gets a
//!   non-recursive watch, so an ignored `target/` or `node_modules/` costs
//!   nothing. Changes settle per repository ([`settle`]) and coalesce into
//!   one batch of distinct paths; nothing fires while `.git/index.lock`
//!   exists. A kernel queue overflow triggers a rescan against a
//!   size-and-mtime snapshot; the kernel's watch limit makes the repository
//!   fall back to polling, with a message that says how to raise it.
//! - `commit` / `push`: `HEAD`, `packed-refs`, `refs/heads` and
//!   `refs/remotes` are watched; the refs are read again only when they are
//!   touched, and a trigger carries the old and the new commit.
//! - `threshold`: after an analysis ([`analysis`]), when the chaos or the
//!   complexity score crosses its threshold (once per crossing).
//!
//! It also publishes `orchex_core::Event`s (`change_detected`,
//! `commit_detected`, `push_detected`, `analysis_completed`,
//! `watcher_error`) and the metrics `orchex_changes_detected_total{repo}`,
//! `orchex_analysis_duration_seconds`, `orchex_analysis_cache_{hits,misses}_total`
//! and `orchex_repository_{health,chaos,complexity}_score{repo}` through the
//! `metrics` facade (the daemon installs the recorder).
//!
//! **Architecture Invariant:** this crate knows nothing about jobs,
//! pipelines, routing or delivery. It produces triggers and events; what
//! they cause is the orchestrator's business. Git access goes through
//! `orchex-git` only.
//!
//! # Example
//!
//! ```no_run
//! use futures::StreamExt;
//! use orchex_core::config::{MonitorConfig, ThresholdsConfig};
//! use orchex_core::{RepoId, Repository};
//! use orchex_monitor::Monitor;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let (monitor, mut triggers) = Monitor::new(&MonitorConfig::default(), &ThresholdsConfig::default());
//! let mut events = monitor.subscribe_events();
//! monitor
//!     .add_repository(Repository {
//!         name: RepoId::new("api")?,
//!         path: "/srv/repos/api".into(),
//!         enabled: true,
//!         branch: Some("main".into()),
//!     })
//!     .await?;
//! tokio::spawn(async move {
//!     while let Some(event) = events.next().await {
//!         println!("{}: {}", event.kind, event.message);
//!     }
//! });
//! while let Some(trigger) = triggers.next().await {
//!     println!("{} on {}: {:?}", trigger.kind, trigger.repo, trigger.paths);
//! }
//! # Ok(()) }
//! ```
//!
//! The settling rules alone, driven by a manual clock:
//!
//! ```
//! use std::time::{Duration, Instant};
//! use orchex_monitor::settle::{SettleConfig, Settler};
//!
//! let mut settler = Settler::new(SettleConfig {
//!     debounce: Duration::from_millis(200),
//!     max_wait: Duration::from_secs(5),
//!     min_changes: 2,
//! });
//! let t0 = Instant::now();
//! settler.record(["a.rs"], t0);
//! // One path is below the threshold: it waits for max_wait.
//! assert_eq!(settler.deadline(), Some(t0 + Duration::from_secs(5)));
//! settler.record(["b.rs"], t0 + Duration::from_millis(100));
//! assert_eq!(settler.deadline(), Some(t0 + Duration::from_millis(300)));
//! ```

pub mod analysis;
mod error;
mod git;
mod git_triggers;
mod monitor;
pub mod settle;
mod watcher;

pub use analysis::{AnalysisStats, Analyzer, AnalyzerOptions};
pub use error::{AnalysisError, MonitorError};
pub use monitor::{EventStream, Monitor, MonitorOptions, RepoStatus, TriggerStream, WatcherState};
