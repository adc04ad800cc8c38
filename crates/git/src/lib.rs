//! Every git operation orchex performs, through [`gix`]: no `git`
//! executable is needed at run time.
//!
//! - **Reading** for the monitor: [`GitRepo::head`], branch and
//!   remote-tracking tips, upstream configuration, commit ranges,
//!   ancestry, and [`GitRepo::change_history`] (which files each commit of
//!   a time window touched, by tree diff only).
//! - **Workspaces** for the engine: [`GitRepo::checkout_commit`] writes a
//!   commit into a fresh directory and [`GitRepo::snapshot_worktree`]
//!   copies the user's working tree (minus ignored files), both without
//!   touching the user's working tree, index or `HEAD`.
//! - **Delivery** and **rollback**: [`GitRepo::write_dir_as_commit`]
//!   turns a directory into a commit without moving any reference;
//!   [`GitRepo::update_branch`] publishes it with a compare-and-swap and a
//!   reflog entry; [`GitRepo::rollback_branch`] undoes it only while the
//!   branch still points at what orchex wrote.
//! - **Diffs**: [`GitRepo::diff_summary`] between commits or trees,
//!   [`diff_directories`] and [`GitRepo::diff_dirs`] between directories,
//!   with line counts as `git diff --numstat` gives them.
//!
//! All functions are synchronous and may block on disk I/O; async callers
//! use `spawn_blocking`. [`GitRepo`] is cheap to clone and `Send + Sync`.
//!
//! **Architecture Invariant:** this crate knows nothing about tokio, HTTP,
//! jobs, pipelines or the orchestrator. It speaks git (objects, refs,
//! trees, working trees) and reports situations such as
//! [`GitError::RefMoved`] or [`GitError::Superseded`]; callers decide what
//! they mean.
//!
//! # Example
//!
//! Build a commit from a directory, publish it on a branch, check it out
//! elsewhere, and roll the branch back:
//!
//! ```
//! use orchex_git::{GitRepo, Signature};
//!
//! let tmp = tempfile::tempdir()?;
//! let repo_dir = tmp.path().join("repo");
//! gix::init(&repo_dir)?; // any existing repository works the same
//! let repo = GitRepo::open(&repo_dir)?;
//!
//! // The result of a job: a directory of files.
//! let result = tmp.path().join("result");
//! std::fs::create_dir_all(result.join("src"))?;
//! std::fs::write(result.join("src/lib.rs"), "pub fn answer() -> u32 { 42 }\n")?;
//!
//! let orchex = Signature::new("orchex", "orchex@localhost");
//! let commit = repo.write_dir_as_commit_with_parents(&result, &[], "orchex: generate", &orchex)?;
//! // Nothing moved yet; publish with a compare-and-swap (must not exist).
//! repo.update_branch("orchex/codegen", None, commit, "orchex: deliver")?;
//! assert_eq!(repo.branch_tip("orchex/codegen")?, Some(commit));
//!
//! // An isolated checkout of the commit.
//! let workspace = tmp.path().join("workspace");
//! repo.checkout_commit(commit, &workspace)?;
//! assert!(workspace.join("src/lib.rs").is_file());
//!
//! // What the commit added, compared with the empty tree.
//! let diff = repo.diff_summary(orchex_git::Oid::empty_tree(), commit)?;
//! assert_eq!(diff.added, ["src/lib.rs"]);
//! assert_eq!(diff.lines_added, 1);
//!
//! // Undo: the branch still points at what we wrote, so it is deleted.
//! repo.rollback_branch("orchex/codegen", commit, None, "orchex: rollback")?;
//! assert_eq!(repo.branch_tip("orchex/codegen")?, None);
//! # Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
//! ```

mod checkout;
mod commit;
mod diff;
mod error;
mod history;
mod init;
mod oid;
mod read;
mod refs;
mod repo;
mod worktree;

pub use commit::Signature;
pub use diff::{ChangeKind, DirDiff, FileChange, diff_directories};
pub use error::{GitError, ParseOidError};
pub use history::{ChangeHistory, CommitChanges};
pub use oid::Oid;
pub use repo::{CommitInfo, GitRepo, Head};
pub use worktree::{FileFingerprint, FileMode, Snapshot};

/// The instant type used across orchex (`jiff::Timestamp`).
pub use orchex_core::Timestamp;
