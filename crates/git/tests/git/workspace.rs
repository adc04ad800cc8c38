//! Isolated checkouts and working-tree snapshots.

use std::collections::BTreeSet;
use std::path::Path;

use orchex_git::{FileMode, GitError, GitRepo, Oid};

use crate::fixture::{Fixture, is_executable, set_executable, write};

const DATE: &str = "2024-01-01T12:00:00Z";

/// A commit with nested directories, an executable and a symlink.
fn rich_commit(fx: &Fixture) -> Oid {
    fx.write("README.md", "hello\n");
    fx.write("src/lib.rs", "pub fn f() {}\n");
    fx.write("src/deep/nested/mod.rs", "// deep\n");
    fx.write("scripts/gen.sh", "#!/bin/sh\necho gen\n");
    set_executable(&fx.repo.join("scripts/gen.sh"), true);
    std::os::unix::fs::symlink("src/lib.rs", fx.repo.join("link-to-lib")).unwrap();
    fx.commit_all("rich", DATE)
}

/// Every file under `root` (relative, `/`-separated), skipping `.git`.
fn files_under(root: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut pending = vec![root.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_name() == ".git" {
                continue;
            }
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                pending.push(entry.path());
            } else {
                let rel = entry
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .to_str()
                    .unwrap()
                    .to_owned();
                out.insert(rel);
            }
        }
    }
    out
}

#[test]
fn checkout_commit_writes_files_and_leaves_the_user_repo_alone() {
    let fx = Fixture::new();
    let commit = rich_commit(&fx);
    // The user has work in progress.
    fx.write("README.md", "dirty edit\n");
    fx.write("untracked.txt", "mine\n");
    fx.git(&["add", "src/lib.rs"]); // no-op add keeps the index as is
    let before = fx.user_state();

    let repo = GitRepo::open(&fx.repo).unwrap();
    let dest = fx.path("workspace");
    repo.checkout_commit(commit, &dest).unwrap();

    let expected: BTreeSet<String> = [
        "README.md",
        "link-to-lib",
        "scripts/gen.sh",
        "src/deep/nested/mod.rs",
        "src/lib.rs",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(files_under(&dest), expected);
    assert!(!dest.join(".git").exists());
    assert_eq!(
        std::fs::read_to_string(dest.join("README.md")).unwrap(),
        "hello\n"
    );
    assert!(is_executable(&dest.join("scripts/gen.sh")));
    assert!(!is_executable(&dest.join("README.md")));
    let link = std::fs::symlink_metadata(dest.join("link-to-lib")).unwrap();
    assert!(link.file_type().is_symlink());
    assert_eq!(
        std::fs::read_link(dest.join("link-to-lib")).unwrap(),
        Path::new("src/lib.rs")
    );

    // Status, HEAD and the index bytes are untouched; the dirty file stays dirty.
    assert_eq!(fx.user_state(), before);
    assert_eq!(
        std::fs::read_to_string(fx.repo.join("README.md")).unwrap(),
        "dirty edit\n"
    );
    assert!(before.0.contains(" M README.md"), "{}", before.0);
}

#[test]
fn checkout_into_an_existing_empty_dir_works_and_a_full_one_is_refused() {
    let fx = Fixture::new();
    let commit = fx.commit_file("a.txt", "a\n", "one", DATE);
    let repo = GitRepo::open(&fx.repo).unwrap();

    let empty = fx.path("empty");
    std::fs::create_dir(&empty).unwrap();
    repo.checkout_commit(commit, &empty).unwrap();
    assert!(empty.join("a.txt").is_file());

    let err = repo.checkout_commit(commit, &empty).unwrap_err();
    assert!(
        matches!(err, GitError::DestinationNotEmpty { .. }),
        "{err:?}"
    );
}

#[test]
fn snapshot_copies_what_git_sees_and_skips_ignored_files() {
    let fx = Fixture::new();
    fx.write(".gitignore", "*.log\nbuild/\n");
    fx.write("sub/.gitignore", "secret.txt\n");
    fx.write("tracked.txt", "v1\n");
    fx.write("sub/kept.txt", "kept\n");
    fx.write("run.sh", "#!/bin/sh\n");
    set_executable(&fx.repo.join("run.sh"), true);
    std::os::unix::fs::symlink("tracked.txt", fx.repo.join("link")).unwrap();
    fx.commit_all("base", DATE);
    // A tracked file that matches an ignore rule stays in the snapshot.
    fx.write("forced.log", "tracked although ignored\n");
    fx.git(&["add", "-f", "forced.log"]);
    fx.commit_all("force", DATE);

    std::fs::write(fx.repo.join(".git/info/exclude"), "local-only/\n").unwrap();
    fx.write("tracked.txt", "v2 modified\n");
    fx.write("new-untracked.txt", "new\n");
    fx.write("deep/new/dir/file.txt", "deep untracked\n");
    fx.write("debug.log", "ignored by *.log\n");
    fx.write("build/out.o", "ignored dir\n");
    fx.write("sub/secret.txt", "ignored by nested .gitignore\n");
    fx.write("local-only/notes.txt", "ignored by info/exclude\n");
    std::fs::remove_file(fx.repo.join("sub/kept.txt")).unwrap(); // deleted, not committed
    let before = fx.user_state();

    let repo = GitRepo::open(&fx.repo).unwrap();
    let dest = fx.path("snapshot");
    let snapshot = repo.snapshot_worktree(&dest).unwrap();

    let expected: BTreeSet<String> = [
        ".gitignore",
        "deep/new/dir/file.txt",
        "forced.log",
        "link",
        "new-untracked.txt",
        "run.sh",
        "sub/.gitignore",
        "tracked.txt",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(
        snapshot.files.keys().cloned().collect::<BTreeSet<_>>(),
        expected
    );
    assert_eq!(files_under(&dest), expected);
    assert_eq!(
        std::fs::read_to_string(dest.join("tracked.txt")).unwrap(),
        "v2 modified\n"
    );
    assert!(is_executable(&dest.join("run.sh")));
    assert_eq!(
        std::fs::read_link(dest.join("link")).unwrap(),
        Path::new("tracked.txt")
    );
    assert_eq!(snapshot.files["run.sh"].mode, FileMode::Executable);
    assert_eq!(snapshot.files["link"].mode, FileMode::Symlink);
    assert_eq!(snapshot.files["tracked.txt"].mode, FileMode::Regular);
    assert_eq!(snapshot.files["tracked.txt"].size, 12);

    // The fingerprint is git's blob hash.
    let git_hash: Oid = fx
        .git(&["hash-object", "tracked.txt"])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(snapshot.files["tracked.txt"].hash, git_hash);

    assert_eq!(
        fx.user_state(),
        before,
        "the user's repository is untouched"
    );
}

#[test]
fn fingerprints_detect_changes_made_after_the_snapshot() {
    let fx = Fixture::new();
    fx.write("a.txt", "a\n");
    fx.write("b.txt", "b\n");
    fx.write("c.sh", "c\n");
    fx.commit_all("base", DATE);
    let repo = GitRepo::open(&fx.repo).unwrap();
    let snapshot = repo.snapshot_worktree(&fx.path("snap")).unwrap();

    // Unchanged.
    let a = repo.fingerprint_worktree_file("a.txt").unwrap();
    assert_eq!(a.as_ref(), snapshot.files.get("a.txt"));
    assert!(snapshot.is_unchanged("a.txt", a.as_ref()));
    // Content changed.
    fx.write("b.txt", "changed\n");
    let b = repo.fingerprint_worktree_file("b.txt").unwrap();
    assert!(!snapshot.is_unchanged("b.txt", b.as_ref()));
    // Only the mode changed.
    set_executable(&fx.repo.join("c.sh"), true);
    let c = repo.fingerprint_worktree_file("c.sh").unwrap().unwrap();
    assert_eq!(c.hash, snapshot.files["c.sh"].hash);
    assert!(!snapshot.is_unchanged("c.sh", Some(&c)));
    // Deleted, and never existed.
    std::fs::remove_file(fx.repo.join("a.txt")).unwrap();
    assert_eq!(repo.fingerprint_worktree_file("a.txt").unwrap(), None);
    assert!(!snapshot.is_unchanged("a.txt", None));
    assert!(snapshot.is_unchanged("never.txt", None));
    // A directory is not a file.
    write(&fx.repo.join("d/x.txt"), "x\n");
    assert_eq!(repo.fingerprint_worktree_file("d").unwrap(), None);

    for bad in ["../outside", "/etc/passwd", ".git/HEAD", ""] {
        let err = repo.fingerprint_worktree_file(bad).unwrap_err();
        assert!(
            matches!(err, GitError::InvalidPath { .. }),
            "{bad}: {err:?}"
        );
    }
}
