//! Durable storage for orchex: jobs, events and delivery backups.
//!
//! This crate will hold the `JobStore`, `EventStore` and `BackupStore` traits
//! and their embedded SQLite implementation (WAL, one batching writer thread,
//! versioned migrations). It knows nothing about git, HTTP or the
//! orchestrator's scheduling; it only persists `orchex-core` types.
