//! [`GitRepo`]: opening a repository and reading what the monitor needs from
//! it — `HEAD`, branch tips, remote-tracking tips, upstream configuration and
//! commit ranges.
//!
//! Everything here is synchronous and read-only. This module knows nothing
//! about watching files (the monitor watches [`GitRepo::git_dir`]) or about
//! jobs; the writing operations live in `commit.rs`, `refs.rs` and
//! `checkout.rs`.

use std::path::{Path, PathBuf};

use gix::refs::TargetRef;
use gix::revision::walk::Sorting;
use gix::traverse::commit::simple::CommitTimeOrder;
use serde::Serialize;

use crate::error::{GitError, GixResultExt};
use crate::{Oid, Timestamp};

/// An open git repository. Cheap to clone, and safe to share between
/// threads: each operation works on its own thread-local view.
///
/// Configuration is read when the repository is opened, except by
/// [`GitRepo::upstream_of`], which reads it afresh. References and objects
/// are always read as they are on disk at the time of the call.
#[derive(Clone)]
pub struct GitRepo {
    inner: gix::ThreadSafeRepository,
}

impl std::fmt::Debug for GitRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitRepo")
            .field("git_dir", &self.inner.git_dir())
            .field("workdir", &self.inner.work_dir())
            .finish()
    }
}

/// Where `HEAD` points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Head {
    /// The short name of the branch `HEAD` points to; `None` when detached.
    pub branch: Option<String>,
    /// The commit `HEAD` resolves to; `None` when the branch is unborn
    /// (a new repository without commits).
    pub oid: Option<Oid>,
}

/// One commit, as listed by [`GitRepo::commits_between`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CommitInfo {
    /// The commit.
    pub oid: Oid,
    /// Its parents, first parent first.
    pub parents: Vec<Oid>,
    /// The author as git prints it: `Name <email>`.
    pub author: String,
    /// The committer time (the time the commit entered history).
    pub time: Timestamp,
    /// The first line of the message (the subject), trimmed.
    pub summary: String,
}

impl GitRepo {
    /// Open the repository at `path`: a working tree (containing `.git`),
    /// or a git directory (bare repository or `.git` itself). Parent
    /// directories are not searched.
    pub fn open(path: &Path) -> Result<GitRepo, GitError> {
        if !path.is_dir() {
            return Err(GitError::NotARepository {
                path: path.to_owned(),
            });
        }
        match gix::ThreadSafeRepository::open(path) {
            Ok(inner) => Ok(GitRepo { inner }),
            Err(err) if err.is_not_found() => Err(GitError::NotARepository {
                path: path.to_owned(),
            }),
            Err(err) => Err(GitError::gix(
                format!("opening repository at {}", path.display()),
                &err,
            )),
        }
    }

    /// The working tree, or `None` for a bare repository.
    pub fn workdir(&self) -> Option<&Path> {
        self.inner.work_dir()
    }

    /// The git directory (`<repo>/.git` for a normal repository). Watch
    /// `HEAD`, `refs/`, `packed-refs` and `index.lock` in it.
    pub fn git_dir(&self) -> &Path {
        self.inner.git_dir()
    }

    /// The directory shared by every worktree of the repository: the main
    /// `.git` for a linked worktree (whose own git directory is
    /// `.git/worktrees/<name>`), otherwise [`GitRepo::git_dir`]. Branches,
    /// remote-tracking refs, `packed-refs` and `info/exclude` live here;
    /// `HEAD` and the index live in the git directory.
    pub fn common_dir(&self) -> PathBuf {
        self.local().common_dir().to_path_buf()
    }

    /// A thread-local view for one operation.
    pub(crate) fn local(&self) -> gix::Repository {
        self.inner.to_thread_local()
    }

    /// The working tree, or [`GitError::NoWorkingTree`].
    pub(crate) fn require_workdir(&self) -> Result<&Path, GitError> {
        self.workdir().ok_or_else(|| GitError::NoWorkingTree {
            path: self.git_dir().to_owned(),
        })
    }

    /// Where `HEAD` points: branch and commit. An unborn branch gives
    /// `oid: None`; a detached `HEAD` gives `branch: None`.
    pub fn head(&self) -> Result<Head, GitError> {
        let repo = self.local();
        let head = repo.head().map_err(|err| corrupt_or_gix("HEAD", &err))?;
        let branch = head.referent_name().map(|name| name.shorten().to_string());
        let oid = head.id().map(Oid::from);
        Ok(Head { branch, oid })
    }

    /// The commit `HEAD` resolves to, or [`GitError::UnbornHead`] when the
    /// current branch has no commit yet.
    pub fn head_commit(&self) -> Result<Oid, GitError> {
        let head = self.head()?;
        head.oid.ok_or_else(|| GitError::UnbornHead {
            branch: head.branch.unwrap_or_else(|| "HEAD".to_owned()),
        })
    }

    /// The tip of a local branch, given as `main` or `refs/heads/main`;
    /// `None` when the branch does not exist.
    pub fn branch_tip(&self, branch: &str) -> Result<Option<Oid>, GitError> {
        let name = BranchName::parse(branch)?;
        read_ref(&self.local(), &name.full)
    }

    /// The tip of `refs/remotes/<remote>/<branch>`; `None` when it does not
    /// exist (never fetched).
    pub fn remote_tracking_tip(&self, remote: &str, branch: &str) -> Result<Option<Oid>, GitError> {
        let full = format!("refs/remotes/{remote}/{branch}");
        validate_full_name(&full, &format!("{remote}/{branch}"))?;
        read_ref(&self.local(), &full)
    }

    /// The upstream of a local branch as `(remote, branch on the remote)`,
    /// from `branch.<b>.remote` and `branch.<b>.merge`. Without that
    /// configuration, `("origin", <b>)` when a remote named `origin` exists,
    /// else `None`.
    ///
    /// The configuration is read afresh on every call, so a `git branch
    /// --set-upstream-to` made after [`GitRepo::open`] is seen.
    pub fn upstream_of(&self, branch: &str) -> Result<Option<(String, String)>, GitError> {
        let name = BranchName::parse(branch)?;
        // Re-open to see the configuration as it is now; opening is cheap
        // next to what callers do with the answer.
        let repo = gix::open(self.git_dir())
            .ctx(|| format!("re-reading configuration of {}", self.git_dir().display()))?;
        let remote = repo
            .branch_remote_name(name.short.as_str(), gix::remote::Direction::Fetch)
            .map(|remote| remote.as_bstr().to_string());
        let full = gix::refs::FullName::try_from(name.full.as_str()).map_err(|err| {
            GitError::InvalidName {
                name: branch.to_owned(),
                message: err.to_string(),
            }
        })?;
        let merge = match repo.branch_remote_ref_name(full.as_ref(), gix::remote::Direction::Fetch)
        {
            None => None,
            Some(Ok(merge)) => Some(merge.as_ref().shorten().to_string()),
            Some(Err(err)) => {
                return Err(GitError::gix(
                    format!("reading branch.{}.merge", name.short),
                    &err,
                ));
            }
        };
        Ok(match (remote, merge) {
            (Some(remote), Some(merge)) => Some((remote, merge)),
            (Some(remote), None) => Some((remote, name.short)),
            (None, _) => {
                let has_origin = repo
                    .remote_names()
                    .iter()
                    .any(|remote| remote.as_slice() == b"origin");
                has_origin.then(|| ("origin".to_owned(), name.short))
            }
        })
    }

    /// The commits reachable from `new` but not from `old` (all of
    /// history when `old` is `None`), newest first by committer time, at
    /// most `limit` of them. `old` itself is never listed.
    pub fn commits_between(
        &self,
        old: Option<Oid>,
        new: Oid,
        limit: usize,
    ) -> Result<Vec<CommitInfo>, GitError> {
        let repo = self.local();
        require_commit(&repo, new)?;
        if let Some(old) = old {
            require_commit(&repo, old)?;
        }
        if limit == 0 {
            return Ok(Vec::new());
        }
        let walk = repo
            .rev_walk([new.to_gix()])
            .with_hidden(old.map(Oid::to_gix))
            .sorting(Sorting::ByCommitTime(CommitTimeOrder::NewestFirst))
            .all()
            .ctx(|| format!("walking history from {new}"))?;
        let mut out = Vec::new();
        for info in walk.take(limit) {
            let info = info.ctx(|| format!("walking history from {new}"))?;
            let commit = repo
                .find_commit(info.id)
                .ctx(|| format!("reading commit {}", info.id))?;
            out.push(commit_info(&commit)?);
        }
        Ok(out)
    }

    /// Whether `ancestor` is reachable from `descendant` (a commit is its
    /// own ancestor).
    pub fn is_ancestor(&self, ancestor: Oid, descendant: Oid) -> Result<bool, GitError> {
        let repo = self.local();
        require_commit(&repo, ancestor)?;
        require_commit(&repo, descendant)?;
        if ancestor == descendant {
            return Ok(true);
        }
        match repo.merge_base(ancestor.to_gix(), descendant.to_gix()) {
            Ok(base) => Ok(base.is_some_and(|base| base.detach() == ancestor.to_gix())),
            Err(err) if err.is_not_found() => Ok(false),
            Err(err) => Err(GitError::gix(
                format!("finding the merge base of {ancestor} and {descendant}"),
                &err,
            )),
        }
    }
}

/// A branch name in its two spellings.
#[derive(Debug, Clone)]
pub(crate) struct BranchName {
    /// `refs/heads/<short>`.
    pub(crate) full: String,
    /// `<short>`.
    pub(crate) short: String,
}

impl BranchName {
    /// Accept `main` or `refs/heads/main`; reject anything git would not
    /// take as a branch name.
    pub(crate) fn parse(branch: &str) -> Result<BranchName, GitError> {
        let short = branch.strip_prefix("refs/heads/").unwrap_or(branch);
        let invalid = |message: &str| GitError::InvalidName {
            name: branch.to_owned(),
            message: message.to_owned(),
        };
        if short.is_empty() {
            return Err(invalid("empty branch name"));
        }
        if short == "HEAD" {
            return Err(invalid("HEAD is not a branch name"));
        }
        if short.starts_with("refs/") {
            return Err(invalid("only local branches (refs/heads/...) are accepted"));
        }
        let full = format!("refs/heads/{short}");
        validate_full_name(&full, branch)?;
        Ok(BranchName {
            full,
            short: short.to_owned(),
        })
    }
}

/// Check `full` is a valid full reference name.
fn validate_full_name(full: &str, as_given: &str) -> Result<(), GitError> {
    gix::refs::FullName::try_from(full)
        .map(|_| ())
        .map_err(|err| GitError::InvalidName {
            name: as_given.to_owned(),
            message: err.to_string(),
        })
}

/// Read the object a reference points to (following symbolic refs);
/// `None` when it does not exist. A reference that cannot be read is
/// reported as [`GitError::CorruptRef`].
pub(crate) fn read_ref(repo: &gix::Repository, full: &str) -> Result<Option<Oid>, GitError> {
    let reference = repo
        .try_find_reference(full)
        .map_err(|err| corrupt_or_gix(full, &err))?;
    let Some(mut reference) = reference else {
        return Ok(None);
    };
    match reference.target() {
        TargetRef::Object(id) => Ok(Some(id.to_owned().into())),
        TargetRef::Symbolic(_) => match reference.follow_to_object() {
            Ok(id) => Ok(Some(id.into())),
            Err(err) if err.is_not_found() => Ok(None),
            Err(err) => Err(corrupt_or_gix(full, &err)),
        },
    }
}

/// A failure to read reference `name`: [`GitError::CorruptRef`] unless it
/// is plainly an I/O or permission problem.
pub(crate) fn corrupt_or_gix(name: &str, err: &gix::Error) -> GitError {
    let io_problem = err.is_permission_denied() || err.is_resource_exhausted();
    if io_problem {
        GitError::gix(format!("reading reference {name}"), err)
    } else {
        GitError::CorruptRef {
            name: name.to_owned(),
            message: crate::error::gix_message(err),
        }
    }
}

/// Find an object, or [`GitError::ObjectNotFound`].
pub(crate) fn find_object(repo: &gix::Repository, oid: Oid) -> Result<gix::Object<'_>, GitError> {
    match repo.try_find_object(oid.to_gix()) {
        Ok(Some(object)) => Ok(object),
        Ok(None) => Err(GitError::ObjectNotFound { oid }),
        Err(err) => Err(GitError::gix(format!("reading object {oid}"), &err)),
    }
}

/// Check that `oid` names a commit in the repository.
pub(crate) fn require_commit(repo: &gix::Repository, oid: Oid) -> Result<(), GitError> {
    let header = match repo.try_find_header(oid.to_gix()) {
        Ok(Some(header)) => header,
        Ok(None) => return Err(GitError::ObjectNotFound { oid }),
        Err(err) => return Err(GitError::gix(format!("reading object {oid}"), &err)),
    };
    let kind = header.kind();
    if kind == gix::objs::Kind::Commit {
        Ok(())
    } else {
        Err(GitError::WrongObjectKind {
            oid,
            expected: "commit",
            actual: kind.to_string(),
        })
    }
}

/// The tree of a commit, or the tree itself.
pub(crate) fn peel_to_tree(repo: &gix::Repository, oid: Oid) -> Result<gix::ObjectId, GitError> {
    let object = find_object(repo, oid)?;
    match object.kind {
        gix::objs::Kind::Tree => Ok(object.id),
        gix::objs::Kind::Commit => object
            .into_commit()
            .tree_id()
            .map(gix::Id::detach)
            .ctx(|| format!("reading the tree of commit {oid}")),
        other => Err(GitError::WrongObjectKind {
            oid,
            expected: "commit or tree",
            actual: other.to_string(),
        }),
    }
}

/// The tree of a commit (only).
pub(crate) fn commit_tree(repo: &gix::Repository, oid: Oid) -> Result<gix::ObjectId, GitError> {
    require_commit(repo, oid)?;
    peel_to_tree(repo, oid)
}

/// Seconds since the epoch as a [`Timestamp`] (clamped into jiff's range).
pub(crate) fn timestamp(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).unwrap_or(if seconds < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    })
}

/// Describe a commit for [`CommitInfo`].
fn commit_info(commit: &gix::Commit<'_>) -> Result<CommitInfo, GitError> {
    let oid = Oid::from(commit.id);
    let decoded = commit.decode().ctx(|| format!("decoding commit {oid}"))?;
    let author = decoded
        .author()
        .map(|sig| {
            let sig = sig.trim();
            format!("{} <{}>", sig.name, sig.email)
        })
        .unwrap_or_default();
    let seconds = decoded
        .committer()
        .map(|sig| sig.seconds())
        .unwrap_or_default();
    Ok(CommitInfo {
        oid,
        parents: decoded.parents().map(Oid::from).collect(),
        author,
        time: timestamp(seconds),
        summary: decoded.message().summary().to_string(),
    })
}
