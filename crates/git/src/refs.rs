//! Moving branches safely: compare-and-swap updates with a reflog entry,
//! and the rollback of a delivery.
//!
//! Every write is conditional on the value the caller last saw, checked
//! under git's own ref lock, so a branch that a human (or another job)
//! moved in the meantime is never overwritten. A branch checked out in a
//! working tree is never moved, because that would change what the user
//! sees. This module knows nothing about jobs or the `manuallyEdited`
//! state; it reports [`GitError::RefMoved`] and [`GitError::Superseded`]
//! and the orchestrator decides.

use std::path::PathBuf;

use gix::refs::Target;
use gix::refs::transaction::{Change, LogChange, PreviousValue, RefEdit, RefLog};

use crate::error::GitError;
use crate::repo::{BranchName, read_ref, require_commit};
use crate::{GitRepo, Oid, Signature};

/// The reflog identity when git has none configured.
const FALLBACK_NAME: &str = "orchex";
/// The reflog email when git has none configured.
const FALLBACK_EMAIL: &str = "orchex@localhost";

impl GitRepo {
    /// Set `branch` to `new` if and only if it currently is `expected`
    /// (`None`: the branch must not exist yet), writing `reflog_message`
    /// to its reflog. Otherwise nothing changes and the error is
    /// [`GitError::RefMoved`] with the value found.
    ///
    /// `new` must be a commit in this repository. A branch checked out in
    /// a working tree is refused with [`GitError::BranchCheckedOut`].
    pub fn update_branch(
        &self,
        branch: &str,
        expected: Option<Oid>,
        new: Oid,
        reflog_message: &str,
    ) -> Result<(), GitError> {
        let name = BranchName::parse(branch)?;
        let repo = self.local();
        require_commit(&repo, new)?;
        self.refuse_if_checked_out(&repo, &name)?;
        let actual = read_ref(&repo, &name.full)?;
        let moved = || GitError::RefMoved {
            branch: name.short.clone(),
            expected,
            actual,
        };
        if actual != expected {
            return Err(moved());
        }
        let constraint = match expected {
            None => PreviousValue::MustNotExist,
            Some(old) => PreviousValue::MustExistAndMatch(Target::Object(old.to_gix())),
        };
        let edit = RefEdit::new(
            full_name(&name)?,
            Change::Update {
                log: log_change(reflog_message),
                expected: constraint,
                new: Target::Object(new.to_gix()),
            },
        );
        apply(&repo, edit, &name, |actual| {
            (actual != expected).then(|| GitError::RefMoved {
                branch: name.short.clone(),
                expected,
                actual,
            })
        })
    }

    /// Undo a delivery: if `branch` still points at `wrote`, set it back to
    /// `previous`, or delete it when `previous` is `None` (the delivery
    /// created it). If anything else moved the branch since, nothing
    /// changes and the error is [`GitError::Superseded`].
    pub fn rollback_branch(
        &self,
        branch: &str,
        wrote: Oid,
        previous: Option<Oid>,
        reflog_message: &str,
    ) -> Result<(), GitError> {
        let name = BranchName::parse(branch)?;
        let repo = self.local();
        if let Some(previous) = previous {
            require_commit(&repo, previous)?;
        }
        self.refuse_if_checked_out(&repo, &name)?;
        let superseded = |actual: Option<Oid>| {
            (actual != Some(wrote)).then(|| GitError::Superseded {
                branch: name.short.clone(),
                wrote,
                actual,
            })
        };
        if let Some(err) = superseded(read_ref(&repo, &name.full)?) {
            return Err(err);
        }
        let expected = PreviousValue::MustExistAndMatch(Target::Object(wrote.to_gix()));
        let change = match previous {
            Some(previous) => Change::Update {
                log: log_change(reflog_message),
                expected,
                new: Target::Object(previous.to_gix()),
            },
            None => Change::Delete {
                expected,
                log: RefLog::AndReference,
            },
        };
        let edit = RefEdit::new(full_name(&name)?, change);
        apply(&repo, edit, &name, superseded)
    }

    /// Removes the lock file that a process killed in the middle of an
    /// update of `branch` left behind (`refs/heads/<branch>.lock` in the
    /// common git directory); `true` when there was one.
    ///
    /// Git never removes such a lock itself and refuses every later update
    /// of the branch while it exists, so a daemon killed at the wrong
    /// moment would never deliver to that branch again. A lock is also what
    /// a live writer holds: call this only when none of yours can be
    /// running (orchex does at start-up, before anything runs, for its own
    /// delivery branches). A git process of the user's caught mid-update
    /// then fails its rename, and nothing is corrupted.
    pub fn remove_stale_branch_lock(&self, branch: &str) -> Result<bool, GitError> {
        let name = BranchName::parse(branch)?;
        let repo = self.local();
        let lock = repo.common_dir().join(format!("{}.lock", name.full));
        match std::fs::remove_file(&lock) {
            Ok(()) => Ok(true),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(GitError::Io { path: lock, source }),
        }
    }

    /// [`GitError::BranchCheckedOut`] when `HEAD` of the main working tree
    /// or of a linked one points at `name`.
    fn refuse_if_checked_out(
        &self,
        repo: &gix::Repository,
        name: &BranchName,
    ) -> Result<(), GitError> {
        let checked_out = |worktree: PathBuf| GitError::BranchCheckedOut {
            branch: name.short.clone(),
            worktree,
        };
        if let Some(workdir) = self.workdir() {
            let head = std::fs::read_to_string(self.git_dir().join("HEAD")).unwrap_or_default();
            if head_points_at(&head, &name.full) {
                return Err(checked_out(workdir.to_owned()));
            }
        }
        // Linked worktrees (`git worktree add`); unreadable ones are skipped.
        if let Ok(worktrees) = repo.worktrees() {
            for proxy in worktrees {
                let head =
                    std::fs::read_to_string(proxy.git_dir().join("HEAD")).unwrap_or_default();
                if head_points_at(&head, &name.full) {
                    let path = proxy.base().unwrap_or_else(|_| proxy.git_dir().to_owned());
                    return Err(checked_out(path));
                }
            }
        }
        Ok(())
    }
}

/// Run one ref edit; when it fails, re-read the branch and let
/// `explain` turn a changed value into the precise error.
fn apply(
    repo: &gix::Repository,
    edit: RefEdit,
    name: &BranchName,
    explain: impl FnOnce(Option<Oid>) -> Option<GitError>,
) -> Result<(), GitError> {
    let committer = reflog_committer(repo);
    let mut time = gix::date::parse::TimeBuf::default();
    match repo.edit_references_as([edit], Some(committer.to_ref(&mut time))) {
        Ok(_) => Ok(()),
        Err(err) => {
            let actual = read_ref(repo, &name.full)?;
            Err(explain(actual)
                .unwrap_or_else(|| GitError::gix(format!("updating branch {}", name.short), &err)))
        }
    }
}

/// Whether the content of a `HEAD` file is `ref: <full>`.
fn head_points_at(head: &str, full: &str) -> bool {
    head.trim()
        .strip_prefix("ref:")
        .is_some_and(|target| target.trim() == full)
}

fn full_name(name: &BranchName) -> Result<gix::refs::FullName, GitError> {
    gix::refs::FullName::try_from(name.full.as_str()).map_err(|err| GitError::InvalidName {
        name: name.short.clone(),
        message: err.to_string(),
    })
}

/// A reflog entry that is always written, on one line.
fn log_change(message: &str) -> LogChange {
    let one_line: String = message
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    LogChange {
        mode: RefLog::AndReference,
        force_create_reflog: true,
        message: one_line.trim().into(),
    }
}

/// The identity for the reflog: git's configured committer, else orchex;
/// always with the current time (a cached one would date every entry at
/// the time the repository was opened).
fn reflog_committer(repo: &gix::Repository) -> gix::actor::Signature {
    let configured = repo
        .committer()
        .and_then(Result::ok)
        .map(|sig| Signature::new(sig.name.to_string(), sig.email.to_string()));
    configured
        .unwrap_or_else(|| Signature::new(FALLBACK_NAME, FALLBACK_EMAIL))
        .to_gix_now()
}
