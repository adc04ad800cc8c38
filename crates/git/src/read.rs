//! Reading a file's content as it is in a commit, without a checkout.

use crate::error::GitError;
use crate::repo::{commit_tree, find_object};
use crate::{GitRepo, Oid};

impl GitRepo {
    /// The content of `path` (relative, `/`-separated) in `commit`: the
    /// bytes of a file, or the target of a symlink. `None` when the commit
    /// has no file at that path (or a directory or submodule there).
    pub fn read_file_at(&self, commit: Oid, path: &str) -> Result<Option<Vec<u8>>, GitError> {
        let repo = self.local();
        let tree_id = commit_tree(&repo, commit)?;
        let tree = find_object(&repo, Oid::from(tree_id))?.into_tree();
        let entry = tree.lookup_entry_by_path(path).map_err(|err| {
            GitError::other(format!("looking up {path} in {commit}"), err.to_string())
        })?;
        let Some(entry) = entry else {
            return Ok(None);
        };
        if !(entry.mode().is_blob() || entry.mode().is_link()) {
            return Ok(None);
        }
        let blob = find_object(&repo, Oid::from(entry.object_id()))?;
        Ok(Some(blob.detach().data))
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn git(dir: &std::path::Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@e")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@e")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    #[test]
    fn reads_files_and_links_at_a_commit() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(root, &["init", "-q", "-b", "main"]);
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(root.join("d/a.txt"), "first\n").unwrap();
        std::os::unix::fs::symlink("d/a.txt", root.join("link")).unwrap();
        git(root, &["add", "-A"]);
        git(root, &["commit", "-q", "-m", "one"]);
        let first: Oid = git(root, &["rev-parse", "HEAD"]).parse().unwrap();
        std::fs::write(root.join("d/a.txt"), "second\n").unwrap();
        git(root, &["commit", "-q", "-am", "two"]);

        let repo = GitRepo::open(root).unwrap();
        assert_eq!(
            repo.read_file_at(first, "d/a.txt").unwrap().unwrap(),
            b"first\n"
        );
        assert_eq!(
            repo.read_file_at(first, "link").unwrap().unwrap(),
            b"d/a.txt"
        );
        assert_eq!(repo.read_file_at(first, "missing").unwrap(), None);
        assert_eq!(repo.read_file_at(first, "d").unwrap(), None);
        let head = repo.head_commit().unwrap();
        assert_eq!(
            repo.read_file_at(head, "d/a.txt").unwrap().unwrap(),
            b"second\n"
        );
    }
}
