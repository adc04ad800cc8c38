//! Diff summaries, checked against `git diff --numstat`.

use std::collections::BTreeMap;

use orchex_git::{ChangeKind, GitError, GitRepo, Oid, diff_directories};

use crate::fixture::{Fixture, set_executable, write};

const DATE: &str = "2024-01-01T12:00:00Z";

/// `path -> (added, removed)` from `git diff --numstat`; binary files as `None`.
fn numstat(fx: &Fixture, old: Oid, new: Oid) -> BTreeMap<String, Option<(u64, u64)>> {
    fx.git(&[
        "diff",
        "--numstat",
        "--no-renames",
        &old.to_string(),
        &new.to_string(),
    ])
    .lines()
    .map(|line| {
        let mut parts = line.splitn(3, '\t');
        let added = parts.next().unwrap();
        let removed = parts.next().unwrap();
        let path = parts.next().unwrap().to_owned();
        let counts = (added != "-").then(|| (added.parse().unwrap(), removed.parse().unwrap()));
        (path, counts)
    })
    .collect()
}

#[test]
fn diff_summary_matches_git_numstat() {
    let fx = Fixture::new();
    fx.write("keep.txt", "same\n");
    fx.write("edit.txt", "one\ntwo\nthree\nfour\n");
    fx.write("gone.txt", "bye\nbye\n");
    fx.write("dir/sub/deep.txt", "deep\n");
    fx.write("no-newline.txt", "last line");
    fx.write("mode.sh", "echo\n");
    std::fs::write(fx.repo.join("blob.bin"), b"\0\x01\x02binary").unwrap();
    let old = fx.commit_all("old", DATE);

    fx.write("edit.txt", "one\n2\nthree\nfour\nfive\n");
    std::fs::remove_file(fx.repo.join("gone.txt")).unwrap();
    std::fs::remove_dir_all(fx.repo.join("dir")).unwrap();
    fx.write("new/file.txt", "a\nb\nc\n");
    fx.write("no-newline.txt", "last line\n");
    set_executable(&fx.repo.join("mode.sh"), true);
    std::fs::write(fx.repo.join("blob.bin"), b"\0\x01\x03binary").unwrap();
    let new = fx.commit_all("new", DATE);

    let repo = GitRepo::open(&fx.repo).unwrap();
    let summary = repo.diff_summary(old, new).unwrap();
    assert_eq!(summary.added, ["new/file.txt"]);
    assert_eq!(
        summary.modified,
        ["blob.bin", "edit.txt", "mode.sh", "no-newline.txt"]
    );
    assert_eq!(summary.deleted, ["dir/sub/deep.txt", "gone.txt"]);

    let git = numstat(&fx, old, new);
    let ours: BTreeMap<String, Option<(u64, u64)>> = repo
        .diff_changes(old, new)
        .unwrap()
        .into_iter()
        .map(|change| {
            let counts = (!change.binary).then_some((change.lines_added, change.lines_removed));
            (change.path, counts)
        })
        .collect();
    assert_eq!(ours, git);
    let (added, removed) = git
        .values()
        .flatten()
        .fold((0, 0), |(a, r), (x, y)| (a + x, r + y));
    assert_eq!(
        (summary.lines_added, summary.lines_removed),
        (added, removed)
    );

    // Trees work as well as commits; the reverse diff swaps everything.
    let old_tree: Oid = fx
        .git(&["rev-parse", &format!("{old}^{{tree}}")])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(repo.diff_summary(old_tree, new).unwrap(), summary);
    let reverse = repo.diff_summary(new, old).unwrap();
    assert_eq!(reverse.added, summary.deleted);
    assert_eq!(reverse.lines_added, summary.lines_removed);
}

#[test]
fn diff_summary_rejects_blobs_and_missing_objects() {
    let fx = Fixture::new();
    let commit = fx.commit_file("a.txt", "a\n", "one", DATE);
    let repo = GitRepo::open(&fx.repo).unwrap();
    let blob: Oid = fx
        .git(&["rev-parse", &format!("{commit}:a.txt")])
        .trim()
        .parse()
        .unwrap();
    let err = repo.diff_summary(blob, commit).unwrap_err();
    assert!(
        matches!(err, GitError::WrongObjectKind { actual: ref a, .. } if a == "blob"),
        "{err:?}"
    );
    let missing: Oid = "2222222222222222222222222222222222222222".parse().unwrap();
    let err = repo.diff_summary(commit, missing).unwrap_err();
    assert!(
        matches!(err, GitError::ObjectNotFound { oid } if oid == missing),
        "{err:?}"
    );
}

#[test]
fn diff_directories_compares_files_and_skips_dot_git() {
    let tmp = tempfile::tempdir().unwrap();
    let before = tmp.path().join("before");
    let after = tmp.path().join("after");
    for root in [&before, &after] {
        write(&root.join("same.txt"), "same\n");
        write(&root.join(".git/HEAD"), "ref: refs/heads/main\n");
        write(&root.join("sub/.git/config"), "nested\n");
    }
    write(&before.join("edit.txt"), "a\nb\n");
    write(&after.join("edit.txt"), "a\nB\nc\n");
    write(&before.join("old/gone.txt"), "1\n2\n3\n");
    write(&after.join("new/added.txt"), "x\n");
    write(&before.join("run.sh"), "echo\n");
    write(&after.join("run.sh"), "echo\n");
    set_executable(&after.join("run.sh"), true);
    write(&after.join(".git/index"), "ignored: inside .git\n");

    let diff = diff_directories(&before, &after).unwrap();
    let listed: Vec<(&str, ChangeKind, u64, u64)> = diff
        .changes
        .iter()
        .map(|c| (c.path.as_str(), c.kind, c.lines_added, c.lines_removed))
        .collect();
    assert_eq!(
        listed,
        [
            ("edit.txt", ChangeKind::Modified, 2, 1),
            ("new/added.txt", ChangeKind::Added, 1, 0),
            ("old/gone.txt", ChangeKind::Deleted, 0, 3),
            ("run.sh", ChangeKind::Modified, 0, 0),
        ]
    );
    let summary: orchex_core::DiffSummary = diff.clone().into();
    assert_eq!(summary.added, ["new/added.txt"]);
    assert_eq!(summary.modified, ["edit.txt", "run.sh"]);
    assert_eq!(summary.deleted, ["old/gone.txt"]);
    assert_eq!((summary.lines_added, summary.lines_removed), (3, 4));
    assert!(diff_directories(&before, &before).unwrap().is_empty());
}

#[test]
fn diff_dirs_leaves_out_what_the_repository_ignores() {
    let fx = Fixture::new();
    fx.write(".gitignore", "target/\n*.tmp\n");
    fx.write("src/main.rs", "fn main() {}\n");
    fx.commit_all("base", DATE);
    let repo = GitRepo::open(&fx.repo).unwrap();
    let before = fx.path("snap");
    repo.snapshot_worktree(&before).unwrap();
    let after = fx.path("ws");
    repo.snapshot_worktree(&after).unwrap();
    write(&after.join("src/main.rs"), "fn main() { println!(); }\n");
    write(&after.join("target/debug/app"), "binary output\n");
    write(&after.join("scratch.tmp"), "temp\n");
    write(&after.join("src/new.rs"), "// new\n");

    let diff = repo.diff_dirs(&before, &after).unwrap();
    let summary = diff.summary();
    assert_eq!(summary.added, ["src/new.rs"]);
    assert_eq!(summary.modified, ["src/main.rs"]);
    assert!(summary.deleted.is_empty());
    // The pure file-system diff sees everything.
    let raw = diff_directories(&before, &after).unwrap().summary();
    assert_eq!(raw.added, ["scratch.tmp", "src/new.rs", "target/debug/app"]);
}
