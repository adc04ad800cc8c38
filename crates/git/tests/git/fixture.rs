//! Fixtures for the orchex-git integration tests: real repositories built
//! with the `git` CLI in temporary directories, isolated from the
//! machine's git configuration.

use std::path::{Path, PathBuf};
use std::process::Command;

use orchex_git::Oid;

/// A temporary directory holding one or more repositories.
pub struct Fixture {
    pub tmp: tempfile::TempDir,
    /// The main repository's working tree.
    pub repo: PathBuf,
}

impl Fixture {
    /// An empty repository (unborn `main`).
    pub fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        Fixture { tmp, repo }
    }

    /// A path inside the temporary directory (outside the repository).
    pub fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    /// Write a file in the working tree (creating directories).
    pub fn write(&self, rel: &str, content: &str) {
        write(&self.repo.join(rel), content);
    }

    /// `git add -A && git commit` at a fixed date; returns the commit.
    pub fn commit_all(&self, message: &str, date: &str) -> Oid {
        git(&self.repo, &["add", "-A"]);
        git_at(
            &self.repo,
            date,
            &["commit", "-q", "--allow-empty", "-m", message],
        );
        self.rev_parse("HEAD")
    }

    /// Write one file and commit it.
    pub fn commit_file(&self, rel: &str, content: &str, message: &str, date: &str) -> Oid {
        self.write(rel, content);
        self.commit_all(message, date)
    }

    /// `git rev-parse <rev>` as an [`Oid`].
    pub fn rev_parse(&self, rev: &str) -> Oid {
        git(&self.repo, &["rev-parse", rev]).trim().parse().unwrap()
    }

    /// Run git in the main repository.
    pub fn git(&self, args: &[&str]) -> String {
        git(&self.repo, args)
    }

    /// `git status --porcelain` plus HEAD plus the index bytes: what must
    /// not change when orchex works on the repository.
    pub fn user_state(&self) -> (String, String, Vec<u8>) {
        let status = self.git(&["status", "--porcelain=v1", "--untracked-files=all"]);
        let head = std::fs::read_to_string(self.repo.join(".git/HEAD")).unwrap();
        let index = std::fs::read(self.repo.join(".git/index")).unwrap_or_default();
        (status, head, index)
    }
}

/// Write `content` at `path`, creating parent directories.
pub fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap();
}

/// A git command isolated from system and global configuration.
pub fn command(dir: &Path) -> Command {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Test Author")
        .env("GIT_AUTHOR_EMAIL", "author@example.com")
        .env("GIT_COMMITTER_NAME", "Test Committer")
        .env("GIT_COMMITTER_EMAIL", "committer@example.com")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE");
    cmd
}

/// Run git, panic with its stderr on failure, return stdout.
pub fn git(dir: &Path, args: &[&str]) -> String {
    run(command(dir).args(args), args)
}

/// Run git with author and committer dates set to `date`.
pub fn git_at(dir: &Path, date: &str, args: &[&str]) -> String {
    run(
        command(dir)
            .env("GIT_AUTHOR_DATE", date)
            .env("GIT_COMMITTER_DATE", date)
            .args(args),
        args,
    )
}

/// Run git and return (success, stdout + stderr), never panicking.
pub fn git_try(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = command(dir).args(args).output().unwrap();
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

fn run(cmd: &mut Command, args: &[&str]) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Whether the file at `path` has the owner's execute bit.
#[cfg(unix)]
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o100 != 0
}

/// Set or clear the execute bits.
#[cfg(unix)]
pub fn set_executable(path: &Path, executable: bool) {
    use std::os::unix::fs::PermissionsExt;
    let mode = if executable { 0o755 } else { 0o644 };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
