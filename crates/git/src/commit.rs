//! Writing a directory back as a commit: the result of a `branch` delivery
//! job becomes a tree and a commit object, and no reference moves (that is
//! [`GitRepo::update_branch`]'s job, a separate compare-and-swap step).
//!
//! The directory is read the way `git add -A` would see it with the parent
//! commit as the index: files tracked in the parent are always taken,
//! other files only when no ignore rule matches them, `.git` never. This
//! module knows nothing about pipelines, protected paths or messages'
//! templates: the orchestrator decides those.

use std::path::Path;

use serde::{Deserialize, Serialize};

use orchex_core::DiffSummary;

use crate::diff::{diff_changes_in, summarize};
use crate::error::{GitError, GixResultExt};
use crate::repo::{commit_tree, require_commit};
use crate::worktree::{read_file, walk_files};
use crate::{GitRepo, Oid};

/// Who made a commit: name and email. The time is the time of writing.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Signature {
    /// The name, e.g. `orchex`.
    pub name: String,
    /// The email address, e.g. `orchex@localhost`.
    pub email: String,
}

impl Signature {
    /// A signature from a name and an email.
    pub fn new(name: impl Into<String>, email: impl Into<String>) -> Signature {
        Signature {
            name: name.into(),
            email: email.into(),
        }
    }

    /// Reject what git would store as a broken identity.
    fn validate(&self) -> Result<(), GitError> {
        let bad = |text: &str| text.contains(['<', '>', '\n', '\0']);
        if self.name.trim().is_empty() || bad(&self.name) || bad(&self.email) {
            return Err(GitError::InvalidSignature {
                name: self.name.clone(),
                email: self.email.clone(),
            });
        }
        Ok(())
    }

    /// As a `gix` signature with the current time.
    pub(crate) fn to_gix_now(&self) -> gix::actor::Signature {
        gix::actor::Signature {
            name: self.name.as_str().into(),
            email: self.email.as_str().into(),
            time: gix::date::Time::now_local_or_utc(),
        }
    }
}

impl GitRepo {
    /// Write the contents of `dir` as a tree, and a commit of that tree
    /// with `parent` as its only parent, `author` as author and committer,
    /// and `message`. No reference moves: publish the commit with
    /// [`GitRepo::update_branch`].
    ///
    /// Which files are taken: see [`GitRepo::write_dir_as_commit_with_parents`].
    pub fn write_dir_as_commit(
        &self,
        dir: &Path,
        parent: Oid,
        message: &str,
        author: &Signature,
    ) -> Result<Oid, GitError> {
        self.write_dir_as_commit_with_parents(dir, &[parent], message, author)
    }

    /// Like [`GitRepo::write_dir_as_commit`] with any number of parents
    /// (none: a root commit).
    ///
    /// Files taken from `dir`: every file that is tracked in the first
    /// parent's tree, and every other file that the ignore rules do not
    /// exclude — `.gitignore` files inside `dir`, this repository's
    /// `.git/info/exclude` and `core.excludesFile` — just as `git add -A`
    /// would with the first parent as the index. `.git` and nested
    /// repositories are never taken, nor are empty directories or special
    /// files. Symlinks are stored as links, the executable bit is kept.
    /// Only blobs the repository lacks are written.
    pub fn write_dir_as_commit_with_parents(
        &self,
        dir: &Path,
        parents: &[Oid],
        message: &str,
        author: &Signature,
    ) -> Result<Oid, GitError> {
        author.validate()?;
        let mut repo = self.local();
        for parent in parents {
            require_commit(&repo, *parent)?;
        }
        let tree = write_dir_tree(&mut repo, dir, parents.first().copied())?;
        let context = || format!("writing {} as a commit", dir.display());
        let signature = author.to_gix_now();
        let mut time = gix::date::parse::TimeBuf::default();
        let signature = signature.to_ref(&mut time);
        let commit = repo
            .new_commit_as(
                signature,
                signature,
                normalize_message(message),
                tree,
                parents.iter().map(|parent| parent.to_gix()),
            )
            .ctx(context)?;
        Ok(commit.id.into())
    }

    /// What [`GitRepo::write_dir_as_commit`] with `parent` would change,
    /// without writing anything to the repository: the tree of `dir` is
    /// built with every new object kept in memory, diffed against `parent`,
    /// and dropped. For results that are not delivered (`deliver = "none"`,
    /// dry runs).
    pub fn diff_dir_against(&self, dir: &Path, parent: Oid) -> Result<DiffSummary, GitError> {
        let mut repo = self.local().with_object_memory();
        require_commit(&repo, parent)?;
        let tree = write_dir_tree(&mut repo, dir, Some(parent))?;
        Ok(summarize(&diff_changes_in(&repo, parent, tree.into())?))
    }
}

/// Writes the files of `dir` as a tree into `repo`'s object database (or
/// its object memory): files tracked in `first_parent`'s tree, and every
/// other file the ignore rules do not exclude, as `git add -A` with that
/// tree as the index would take them. Only blobs the repository lacks are
/// written.
fn write_dir_tree(
    repo: &mut gix::Repository,
    dir: &Path,
    first_parent: Option<Oid>,
) -> Result<gix::ObjectId, GitError> {
    let context = || format!("writing {} as a commit", dir.display());
    let index = match first_parent {
        Some(first) => {
            let tree = commit_tree(repo, first)?;
            repo.index_from_tree(&tree).ctx(context)?
        }
        // Never written: the path only satisfies the type.
        None => gix::index::File::from_state(
            gix::index::State::new(repo.object_hash()),
            repo.index_path(),
        ),
    };
    // In memory only: the walk below sees `dir` as the working tree.
    repo.set_workdir(dir.to_owned())
        .map_err(|err| GitError::gix(format!("using {} as a working tree", dir.display()), &err))?;
    let paths = walk_files(repo, &index)?;

    let mut editor = repo
        .edit_tree(gix::ObjectId::empty_tree(repo.object_hash()))
        .ctx(context)?;
    for rel in paths {
        let rel_path = gix::path::from_bstr(&rel).map_err(|_| GitError::InvalidPath {
            path: dir.join(rel.to_string()),
            message: "not representable as a path on this system".to_owned(),
        })?;
        let full = dir.join(rel_path);
        let Some(file) = read_file(&full)? else {
            continue;
        };
        let id = file.blob_id()?;
        if !repo.has_object(id) {
            repo.write_blob(&file.data)
                .ctx(|| format!("writing blob for {}", full.display()))?;
        }
        editor
            .upsert(&rel, file.mode.entry_kind(), id)
            .ctx(|| format!("adding {rel} to the tree"))?;
    }
    Ok(editor.write().ctx(context)?.detach())
}

/// A commit message as git writes it: ending with one newline.
fn normalize_message(message: &str) -> String {
    let trimmed = message.trim_end_matches(['\n', '\r', ' ', '\t']);
    let mut out = trimmed.to_owned();
    if !out.is_empty() {
        out.push('\n');
    }
    out
}
