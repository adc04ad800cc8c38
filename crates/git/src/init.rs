//! Creating a repository from a directory of files (the daemon's demo
//! repository), without a `git` executable.

use std::path::Path;

use gix::refs::transaction::PreviousValue;

use crate::error::{GitError, GixResultExt as _};
use crate::repo::commit_tree;
use crate::{GitRepo, Oid, Signature};

impl GitRepo {
    /// Turns the directory `path` (which must not be a repository yet) into
    /// a repository whose first commit, on `branch`, holds the files already
    /// there (honouring their `.gitignore`). `HEAD` points at `branch` and
    /// the index matches the commit, so `git status` is clean.
    pub fn init_with_files(
        path: &Path,
        branch: &str,
        message: &str,
        author: &Signature,
    ) -> Result<(GitRepo, Oid), GitError> {
        if path.join(".git").exists() {
            return Err(GitError::other(
                format!("initialising {}", path.display()),
                "it is already a repository",
            ));
        }
        let branch_ref = format!("refs/heads/{branch}");
        gix::init(path).map_err(|err| {
            GitError::other(format!("initialising {}", path.display()), err.to_string())
        })?;
        let head = path.join(".git/HEAD");
        std::fs::write(&head, format!("ref: {branch_ref}\n"))
            .map_err(|e| GitError::io(&head, e))?;
        let repo = GitRepo::open(path)?;
        let commit = repo.write_dir_as_commit_with_parents(path, &[], message, author)?;
        let local = repo.local();
        local
            .reference(
                branch_ref.as_str(),
                commit.to_gix(),
                PreviousValue::MustNotExist,
                "orchex: initial commit",
            )
            .ctx(|| format!("creating {branch_ref}"))?;
        let tree = commit_tree(&local, commit)?;
        let mut index = local
            .index_from_tree(&tree)
            .ctx(|| "building the index of the initial commit")?;
        index
            .write(gix::index::write::Options::default())
            .map_err(|err| GitError::other("writing the index", err.to_string()))?;
        Ok((repo, commit))
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[test]
    fn a_directory_becomes_a_clean_repository() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("demo");
        std::fs::create_dir_all(root.join("schema")).unwrap();
        std::fs::write(root.join("schema/api.txt"), "v1\n").unwrap();
        std::fs::write(root.join(".gitignore"), "out/\n").unwrap();
        std::fs::create_dir_all(root.join("out")).unwrap();
        std::fs::write(root.join("out/ignored"), "x").unwrap();
        let (repo, commit) = GitRepo::init_with_files(
            &root,
            "main",
            "initial",
            &Signature::new("orchex", "orchex@localhost"),
        )
        .unwrap();
        assert_eq!(repo.head().unwrap().branch.as_deref(), Some("main"));
        assert_eq!(repo.head().unwrap().oid, Some(commit));
        assert_eq!(git(&root, &["status", "--porcelain"]), "");
        assert_eq!(git(&root, &["ls-files"]), ".gitignore\nschema/api.txt");
        assert_eq!(git(&root, &["log", "--format=%s"]), "initial");
        git(&root, &["fsck", "--strict"]);
        assert!(
            GitRepo::init_with_files(&root, "main", "again", &Signature::new("o", "o@l")).is_err()
        );
    }
}
