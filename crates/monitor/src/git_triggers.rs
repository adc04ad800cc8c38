//! Commit and push detection from refs.
//!
//! The watcher reports when `HEAD`, `packed-refs` or anything under
//! `refs/heads` / `refs/remotes` was touched; only then are the few refs
//! that matter read again (no history is polled). [`RefTracker`] compares
//! them with what it saw last:
//!
//! - the watched branch's tip moved to a commit that is not an ancestor of
//!   the old tip → one `commit` trigger (a reset backwards is not a commit);
//! - the branch's remote-tracking ref (its upstream, or `origin/<branch>`
//!   when none is configured) moved → one `push` trigger.
//!
//! Several events for one ref update (lock file, rename, reflog) collapse
//! into one trigger because a trigger fires only when the value differs from
//! the last one seen, which is then updated.

use crate::error::BoxError;
use crate::git::GitHandle;

/// The refs that matter, read at one instant.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RefState {
    /// The watched branch (configured, or the one `HEAD` points to).
    pub(crate) branch: Option<String>,
    /// Its tip, or `HEAD`'s commit when detached and no branch is configured.
    pub(crate) tip: Option<String>,
    /// `(remote, branch)` whose remote-tracking ref is watched for pushes.
    pub(crate) upstream: Option<(String, String)>,
    /// The remote-tracking ref's value.
    pub(crate) remote_tip: Option<String>,
}

impl RefState {
    /// Reads the refs of `git`; `configured_branch` pins the watched branch.
    pub(crate) fn read(git: &GitHandle, configured_branch: Option<&str>) -> Result<Self, BoxError> {
        let (branch, tip) = if let Some(branch) = configured_branch {
            (Some(branch.to_owned()), git.branch_tip(branch)?)
        } else {
            let head = git.head()?;
            (head.branch, head.oid)
        };
        let (upstream, remote_tip) = match &branch {
            Some(branch) => {
                let upstream = git
                    .upstream_of(branch)?
                    .unwrap_or_else(|| ("origin".to_owned(), branch.clone()));
                let remote_tip = git.remote_tracking_tip(&upstream.0, &upstream.1)?;
                (Some(upstream), remote_tip)
            }
            None => (None, None),
        };
        Ok(Self {
            branch,
            tip,
            upstream,
            remote_tip,
        })
    }
}

/// A ref moved in a way that makes a trigger.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RefChange {
    /// The watched branch has a new commit.
    Commit {
        branch: Option<String>,
        previous: Option<String>,
        commit: String,
    },
    /// The remote-tracking ref of the branch moved.
    Push {
        remote: String,
        branch: String,
        previous: Option<String>,
        commit: String,
    },
}

/// Remembers the refs last seen and reports how they moved.
#[derive(Debug, Clone)]
pub(crate) struct RefTracker {
    configured_branch: Option<String>,
    last: RefState,
}

impl RefTracker {
    /// A tracker whose baseline is `initial`.
    pub(crate) fn new(configured_branch: Option<String>, initial: RefState) -> Self {
        Self {
            configured_branch,
            last: initial,
        }
    }

    /// Compares `now` with the last state, remembers `now`, and returns the
    /// candidate triggers (pure: no git access).
    pub(crate) fn observe(&mut self, now: RefState) -> Vec<RefChange> {
        let mut changes = Vec::new();
        let last = std::mem::replace(&mut self.last, now.clone());
        let same_branch = last.branch == now.branch || self.configured_branch.is_some();
        if same_branch
            && now.tip != last.tip
            && let Some(commit) = now.tip.clone()
        {
            changes.push(RefChange::Commit {
                branch: now.branch.clone(),
                previous: last.tip.clone(),
                commit,
            });
        }
        if same_branch
            && now.upstream == last.upstream
            && now.remote_tip != last.remote_tip
            && let (Some((remote, branch)), Some(commit)) = (now.upstream, now.remote_tip)
        {
            changes.push(RefChange::Push {
                remote,
                branch,
                previous: last.remote_tip,
                commit,
            });
        }
        changes
    }

    /// Reads the refs, compares them with the last state, and drops commit
    /// candidates that brought no new commit (a reset to an ancestor).
    pub(crate) fn check(&mut self, git: &GitHandle) -> Result<Vec<RefChange>, BoxError> {
        let now = RefState::read(git, self.configured_branch.as_deref())?;
        let mut changes = self.observe(now);
        let mut kept = Vec::with_capacity(changes.len());
        for change in changes.drain(..) {
            if let RefChange::Commit {
                previous: Some(previous),
                commit,
                ..
            } = &change
            {
                // An old tip that no longer exists (rewritten and pruned)
                // cannot be compared: the move counts as new commits.
                if git.count_new_commits(Some(previous), commit, 1).ok() == Some(0) {
                    continue;
                }
            }
            kept.push(change);
        }
        Ok(kept)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(branch: &str, tip: &str, remote_tip: Option<&str>) -> RefState {
        RefState {
            branch: Some(branch.into()),
            tip: Some(tip.into()),
            upstream: Some(("origin".into(), branch.into())),
            remote_tip: remote_tip.map(Into::into),
        }
    }

    #[test]
    fn a_moved_tip_is_one_commit() {
        let mut tracker = RefTracker::new(None, state("main", "a", None));
        let changes = tracker.observe(state("main", "b", None));
        assert_eq!(
            changes,
            [RefChange::Commit {
                branch: Some("main".into()),
                previous: Some("a".into()),
                commit: "b".into()
            }]
        );
        // The same state again: nothing.
        assert!(tracker.observe(state("main", "b", None)).is_empty());
    }

    #[test]
    fn a_moved_remote_tracking_ref_is_one_push() {
        let mut tracker = RefTracker::new(None, state("main", "a", Some("a")));
        let changes = tracker.observe(state("main", "a", Some("c")));
        assert_eq!(
            changes,
            [RefChange::Push {
                remote: "origin".into(),
                branch: "main".into(),
                previous: Some("a".into()),
                commit: "c".into()
            }]
        );
        assert!(tracker.observe(state("main", "a", Some("c"))).is_empty());
    }

    #[test]
    fn switching_branches_is_not_a_commit() {
        let mut tracker = RefTracker::new(None, state("main", "a", Some("a")));
        assert!(tracker.observe(state("topic", "t", None)).is_empty());
        assert_eq!(tracker.observe(state("topic", "u", None)).len(), 1);
    }

    #[test]
    fn a_configured_branch_is_followed_whatever_head_says() {
        let mut tracker = RefTracker::new(Some("main".into()), state("main", "a", None));
        assert_eq!(tracker.observe(state("main", "b", None)).len(), 1);
    }

    #[test]
    fn the_first_commit_has_no_previous() {
        let mut tracker = RefTracker::new(
            None,
            RefState {
                branch: Some("main".into()),
                ..RefState::default()
            },
        );
        let changes = tracker.observe(state("main", "a", None));
        assert!(matches!(
            &changes[..],
            [RefChange::Commit { previous: None, .. }]
        ));
    }
}
