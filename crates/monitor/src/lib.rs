//! Repository monitoring for orchex: the ignore-aware file-system watcher,
//! commit and push detection, change settling and batching, and repository
//! analysis with caching.
//!
//! This crate will turn what happens in repositories into `orchex-core`
//! `Trigger`s. It knows nothing about jobs, pipelines or delivery.
