//! The one error type of `orchex-git`, and the helpers that turn `gix`
//! errors into it with context.
//!
//! Errors here describe git situations (a path that is no repository, a
//! branch that moved, a corrupt ref); they know nothing about HTTP status
//! codes or jobs. Callers above map them (`RefMoved` and `Superseded` become
//! 409 in the dashboard, for instance).

use std::path::PathBuf;

use crate::Oid;

/// Everything that can go wrong in a git operation.
///
/// Messages are lowercase, carry the path, branch or object involved, and
/// have no trailing period.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GitError {
    /// The path is not a git repository (nor a working tree of one).
    #[error("{}: not a git repository", path.display())]
    NotARepository {
        /// The path that was opened.
        path: PathBuf,
    },
    /// The operation needs a working tree, and the repository is bare.
    #[error("{}: the repository has no working tree", path.display())]
    NoWorkingTree {
        /// The repository's git directory.
        path: PathBuf,
    },
    /// `HEAD` names a branch that has no commit yet.
    #[error("HEAD is unborn: branch {branch} has no commit yet")]
    UnbornHead {
        /// The short name of the branch `HEAD` points to.
        branch: String,
    },
    /// A branch or reference name that git would not accept.
    #[error("invalid branch name {name:?}: {message}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Why it is invalid.
        message: String,
    },
    /// The object is not in the object database.
    #[error("object {oid} not found in the repository")]
    ObjectNotFound {
        /// The missing object.
        oid: Oid,
    },
    /// The object exists, but is not of the kind the operation needs.
    #[error("object {oid} is a {actual}, expected a {expected}")]
    WrongObjectKind {
        /// The object.
        oid: Oid,
        /// What the operation needed (`commit`, `tree`, `commit or tree`).
        expected: &'static str,
        /// What the object is.
        actual: String,
    },
    /// A compare-and-swap branch update found another value than expected.
    #[error(
        "branch {branch} moved: expected {}, found {}",
        show_oid(*expected),
        show_oid(*actual)
    )]
    RefMoved {
        /// The branch's short name.
        branch: String,
        /// The value the caller expected (`None`: the branch must not exist).
        expected: Option<Oid>,
        /// The value found (`None`: the branch does not exist).
        actual: Option<Oid>,
    },
    /// A rollback found that what orchex wrote has been replaced since.
    #[error(
        "branch {branch} changed since orchex wrote {wrote}: it is now {}; nothing was rolled back",
        show_oid(*actual)
    )]
    Superseded {
        /// The branch's short name.
        branch: String,
        /// The commit orchex wrote.
        wrote: Oid,
        /// The branch's current value (`None`: the branch was deleted).
        actual: Option<Oid>,
    },
    /// The branch is checked out in a working tree; moving it would change
    /// what the user sees, so orchex refuses.
    #[error("branch {branch} is checked out in {}; orchex does not move a checked-out branch", worktree.display())]
    BranchCheckedOut {
        /// The branch's short name.
        branch: String,
        /// The working tree (or git directory) where it is checked out.
        worktree: PathBuf,
    },
    /// A commit identity git would store as broken (empty name, or `<`,
    /// `>` or a newline in it).
    #[error(
        "invalid signature {name:?} <{email}>: the name must not be empty and neither may contain '<', '>' or newlines"
    )]
    InvalidSignature {
        /// The name given.
        name: String,
        /// The email given.
        email: String,
    },
    /// A reference exists but cannot be read as a reference.
    #[error("reference {name} is corrupt: {message}")]
    CorruptRef {
        /// The reference's full name.
        name: String,
        /// What is wrong with it.
        message: String,
    },
    /// A destination directory that must be empty is not.
    #[error("{}: destination directory is not empty", path.display())]
    DestinationNotEmpty {
        /// The destination.
        path: PathBuf,
    },
    /// A path that cannot be used: not valid UTF-8, absolute, or escaping
    /// the working tree.
    #[error("{}: invalid path: {message}", path.display())]
    InvalidPath {
        /// The path.
        path: PathBuf,
        /// Why it is rejected.
        message: String,
    },
    /// A file system operation failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Any other failure reported by `gix`.
    #[error("{context}: {message}")]
    Gix {
        /// What orchex was doing.
        context: String,
        /// What `gix` reported, with its causes.
        message: String,
    },
}

/// `Some(oid)` as its hex, `None` as "nothing" (for error messages).
fn show_oid(oid: Option<Oid>) -> String {
    oid.map_or_else(|| "nothing (absent)".to_owned(), |oid| oid.to_string())
}

impl GitError {
    /// An I/O error on `path`.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GitError::Io {
            path: path.into(),
            source,
        }
    }

    /// A `gix` error, with what orchex was doing.
    pub(crate) fn gix(context: impl Into<String>, err: &gix::Error) -> Self {
        GitError::Gix {
            context: context.into(),
            message: gix_message(err),
        }
    }

    /// A failure described only by text.
    pub(crate) fn other(context: impl Into<String>, message: impl Into<String>) -> Self {
        GitError::Gix {
            context: context.into(),
            message: message.into(),
        }
    }
}

/// The full chain of a `gix` error as one line: `outer: cause: root cause`.
pub(crate) fn gix_message(err: &gix::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for part in err.iter_errors() {
        let text = part.to_string();
        if !text.is_empty() && parts.last() != Some(&text) {
            parts.push(text);
        }
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}

/// Attach context to `gix` results.
pub(crate) trait GixResultExt<T> {
    /// Turn an error into [`GitError::Gix`] with `context` computed lazily.
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T, GitError>;
}

impl<T> GixResultExt<T> for Result<T, gix::Error> {
    fn ctx<S: Into<String>>(self, context: impl FnOnce() -> S) -> Result<T, GitError> {
        self.map_err(|err| GitError::gix(context(), &err))
    }
}

/// The error returned when a string is not a valid object id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid object id {input:?}: expected 40 hexadecimal digits")]
pub struct ParseOidError {
    /// The rejected input.
    pub input: String,
}
