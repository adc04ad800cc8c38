//! Isolated checkout: write the files of a commit into a fresh directory,
//! the workspace of a `branch` delivery job.
//!
//! The checkout goes through an in-memory index built from the commit's
//! tree; the user's working tree, index and `HEAD` are never touched, and
//! no `.git` is created in the destination. This module knows nothing about
//! workspaces' life cycle (creation, clean-up), which the orchestrator owns.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use crate::error::{GitError, GixResultExt};
use crate::repo::commit_tree;
use crate::worktree::prepare_empty_dir;
use crate::{GitRepo, Oid};

impl GitRepo {
    /// Write every file of `commit` into `dest` (created if missing; it
    /// must be empty). Symlinks stay symlinks and the executable bit is
    /// kept; `.gitattributes` filters (such as end-of-line conversion) are
    /// applied as `git checkout` would. Submodules become empty
    /// directories. Nothing else in the repository changes.
    ///
    /// On error (a missing object, a full disk) `dest` may hold a partial
    /// checkout; the caller discards it.
    pub fn checkout_commit(&self, commit: Oid, dest: &Path) -> Result<(), GitError> {
        let repo = self.local();
        let tree = commit_tree(&repo, commit)?;
        prepare_empty_dir(dest)?;
        let context = || format!("checking out {commit} into {}", dest.display());
        // In memory only: this index is never written.
        let mut index = repo.index_from_tree(&tree).ctx(context)?;
        let mut options = repo
            .checkout_options(gix::worktree::stack::state::attributes::Source::IdMapping)
            .ctx(context)?;
        options.destination_is_initially_empty = true;
        options.overwrite_existing = false;
        options.keep_going = false;
        let objects = repo
            .objects
            .clone()
            .into_arc()
            .map_err(|err| GitError::io(repo.objects.store_ref().path(), err))?;
        let interrupt = AtomicBool::new(false);
        let outcome = gix::worktree::state::checkout(
            &mut index,
            dest,
            objects,
            &gix::progress::Discard,
            &gix::progress::Discard,
            &interrupt,
            options,
        )
        .ctx(context)?;
        if let Some(collision) = outcome.collisions.first() {
            return Err(GitError::other(
                context(),
                format!(
                    "{} path(s) collided, first {} ({:?})",
                    outcome.collisions.len(),
                    collision.path,
                    collision.error_kind
                ),
            ));
        }
        if let Some(record) = outcome.errors.first() {
            return Err(GitError::other(
                context(),
                format!(
                    "{} path(s) failed, first {}: {}",
                    outcome.errors.len(),
                    record.path,
                    crate::error::gix_message(&record.error)
                ),
            ));
        }
        Ok(())
    }
}
