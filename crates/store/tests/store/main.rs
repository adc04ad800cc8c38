//! Integration tests of `orchex-store` against real SQLite files in
//! temporary directories, grouped by area in one test binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backups;
mod crash;
mod events;
mod full_disk;
mod jobs;
mod open;

use std::path::Path;

use orchex_core::{Job, RepoId, Timestamp, Trigger, TriggerKind};
use orchex_store::{SqliteStore, StoreOptions};

/// Opens a store in `dir` with default options.
async fn open(dir: &Path) -> SqliteStore {
    SqliteStore::open_in_dir(dir, StoreOptions::default())
        .await
        .unwrap()
}

fn repo(name: &str) -> RepoId {
    RepoId::new(name).unwrap()
}

/// A queued job of `kind`, created `age_secs` seconds ago.
fn job(repo_name: &str, pipeline: &str, kind: TriggerKind, age_secs: i64) -> Job {
    let repo = repo(repo_name);
    let mut job = Job::new(repo.clone(), pipeline.into(), Trigger::new(repo, kind));
    job.created_at = Timestamp::now()
        .checked_sub(jiff::SignedDuration::from_secs(age_secs))
        .unwrap();
    job
}
