//! Integration tests of `orchex-store` against real SQLite files in
//! temporary directories, grouped by area in one test binary.

#![allow(clippy::unwrap_used, clippy::expect_used)]

/// Runs each named contract test, an `async fn name(store: impl
/// ContractStore)`, against both implementations: a SQLite file in a
/// temporary directory and a `MemoryStore`. The tests become
/// `name::sqlite` and `name::memory`.
macro_rules! against_both_stores {
    ($($test:ident),* $(,)?) => {
        $(
            mod $test {
                #[tokio::test]
                async fn sqlite() {
                    let dir = tempfile::tempdir().unwrap();
                    super::$test(crate::open(dir.path()).await).await;
                }

                #[tokio::test]
                async fn memory() {
                    super::$test(orchex_store::MemoryStore::new()).await;
                }
            }
        )*
    };
}

mod backups;
mod crash;
mod equivalence;
mod events;
mod full_disk;
mod jobs;
mod open;

use std::path::Path;

use orchex_core::{Job, RepoId, Timestamp, Trigger, TriggerKind};
use orchex_store::{SqliteStore, Store, StoreOptions};

/// What a contract test needs of a store: every trait, and clones that
/// share the state (for concurrent callers).
trait ContractStore: Store + Clone + 'static {}

impl<T: Store + Clone + 'static> ContractStore for T {}

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
