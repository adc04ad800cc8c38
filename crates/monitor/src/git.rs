//! The monitor's narrow view of git, on top of `orchex-git`.
//!
//! Everything here is synchronous and may block on disk; callers run it on
//! the blocking pool. Object ids cross this boundary as 40-hex strings,
//! which is what [`orchex_core::Trigger::commit`] carries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::BoxError;

/// Where `HEAD` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeadState {
    /// The checked-out branch, `None` when detached.
    pub(crate) branch: Option<String>,
    /// The commit `HEAD` resolves to, `None` in an empty repository.
    pub(crate) oid: Option<String>,
}

/// Changes over a history window.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct History {
    /// Commits in the window.
    pub(crate) commits: u64,
    /// Commits touching each path.
    pub(crate) per_file: BTreeMap<String, u64>,
}

/// An open repository.
#[derive(Debug, Clone)]
pub(crate) struct GitHandle {
    repo: orchex_git::GitRepo,
    workdir: PathBuf,
    git_dir: PathBuf,
    common_dir: PathBuf,
}

impl GitHandle {
    /// Opens the repository whose working tree is `path`.
    pub(crate) fn open(path: &Path) -> Result<Self, BoxError> {
        let repo = orchex_git::GitRepo::open(path)?;
        let workdir = repo
            .workdir()
            .map(Path::to_path_buf)
            .ok_or_else(|| format!("{} is a bare repository", path.display()))?;
        let git_dir = repo.git_dir().to_path_buf();
        let common_dir = repo.common_dir();
        Ok(Self {
            repo,
            workdir,
            git_dir,
            common_dir,
        })
    }

    /// The working tree.
    pub(crate) fn workdir(&self) -> &Path {
        &self.workdir
    }

    /// The `.git` directory (`.git/worktrees/<name>` for a linked
    /// worktree).
    pub(crate) fn git_dir(&self) -> &Path {
        &self.git_dir
    }

    /// The directory every worktree shares (refs, `info/exclude`); the
    /// git directory itself unless this is a linked worktree.
    pub(crate) fn common_dir(&self) -> &Path {
        &self.common_dir
    }

    pub(crate) fn head(&self) -> Result<HeadState, BoxError> {
        let head = self.repo.head()?;
        Ok(HeadState {
            branch: head.branch,
            oid: head.oid.map(|oid| oid.to_string()),
        })
    }

    pub(crate) fn branch_tip(&self, branch: &str) -> Result<Option<String>, BoxError> {
        Ok(self.repo.branch_tip(branch)?.map(|oid| oid.to_string()))
    }

    pub(crate) fn upstream_of(&self, branch: &str) -> Result<Option<(String, String)>, BoxError> {
        Ok(self.repo.upstream_of(branch)?)
    }

    pub(crate) fn remote_tracking_tip(
        &self,
        remote: &str,
        branch: &str,
    ) -> Result<Option<String>, BoxError> {
        Ok(self
            .repo
            .remote_tracking_tip(remote, branch)?
            .map(|oid| oid.to_string()))
    }

    /// Number of commits reachable from `new` and not from `old` (at most
    /// `limit`).
    pub(crate) fn count_new_commits(
        &self,
        old: Option<&str>,
        new: &str,
        limit: usize,
    ) -> Result<usize, BoxError> {
        let old = old.map(str::parse::<orchex_git::Oid>).transpose()?;
        let new = new.parse::<orchex_git::Oid>()?;
        Ok(self.repo.commits_between(old, new, limit)?.len())
    }

    /// Per-file change counts of the commits reachable from `tip` that are
    /// newer than `since`.
    pub(crate) fn history(&self, tip: &str, since: jiff::Timestamp) -> Result<History, BoxError> {
        let tip = tip.parse::<orchex_git::Oid>()?;
        let history = self.repo.change_history(tip, since)?;
        Ok(History {
            commits: history.commits,
            per_file: history.per_file,
        })
    }
}
