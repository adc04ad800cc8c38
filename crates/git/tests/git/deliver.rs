//! Branch delivery: directory → commit, compare-and-swap, rollback.

use std::path::Path;

use orchex_git::{GitError, GitRepo, Oid, Signature};

use crate::fixture::{Fixture, git_try, set_executable, write};

const DATE: &str = "2024-01-01T12:00:00Z";

fn orchex() -> Signature {
    Signature::new("orchex", "orchex@example.com")
}

/// A repository with a source commit, and a workspace checked out from it.
fn source(fx: &Fixture) -> (GitRepo, Oid) {
    fx.write(".gitignore", "target/\n");
    fx.write("schema/api.json", "{}\n");
    fx.write("generated/api.rs", "// old\n");
    fx.write("generated/stale.rs", "// to delete\n");
    fx.write("tools/run.sh", "#!/bin/sh\n");
    set_executable(&fx.repo.join("tools/run.sh"), true);
    let commit = fx.commit_all("source", DATE);
    (GitRepo::open(&fx.repo).unwrap(), commit)
}

/// What a pipeline's steps do to a workspace.
fn run_steps(workspace: &Path) {
    write(
        &workspace.join("generated/api.rs"),
        "// new\npub struct Api;\n",
    );
    write(&workspace.join("generated/extra.rs"), "// added\n");
    std::fs::remove_file(workspace.join("generated/stale.rs")).unwrap();
    write(
        &workspace.join("target/debug/build.o"),
        "build output, ignored\n",
    );
    std::os::unix::fs::symlink("api.rs", workspace.join("generated/alias.rs")).unwrap();
}

/// Every object file under `.git/objects` (loose objects and packs).
fn object_files(repo: &Path) -> Vec<std::path::PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo.join(".git/objects"), &mut out);
    out.sort();
    out
}

/// A result that is not delivered (`deliver = "none"`, a dry run) is
/// diffed without writing one object: the same summary as writing the
/// commit and diffing it, and `.git/objects` as it was.
#[test]
fn a_directory_is_diffed_against_a_commit_without_writing_objects() {
    let fx = Fixture::new();
    let (repo, source) = source(&fx);
    let workspace = fx.path("ws");
    repo.checkout_commit(source, &workspace).unwrap();
    run_steps(&workspace);
    let objects = object_files(&fx.repo);

    let summary = repo.diff_dir_against(&workspace, source).unwrap();
    assert_eq!(object_files(&fx.repo), objects, "no object was written");
    let (ok, fsck) = git_try(&fx.repo, &["fsck", "--strict"]);
    assert!(ok, "git fsck --strict: {fsck}");

    let commit = repo
        .write_dir_as_commit(&workspace, source, "regenerate", &orchex())
        .unwrap();
    assert_ne!(object_files(&fx.repo), objects, "writing the commit does");
    assert_eq!(summary, repo.diff_summary(source, commit).unwrap());
    assert_eq!(
        summary.added,
        ["generated/alias.rs", "generated/extra.rs"],
        "{summary:?}"
    );
    assert_eq!(summary.modified, ["generated/api.rs"]);
    assert_eq!(summary.deleted, ["generated/stale.rs"]);
}

#[test]
fn write_dir_as_commit_then_update_branch() {
    let fx = Fixture::new();
    let (repo, source) = source(&fx);
    fx.write("wip.txt", "the user's work in progress\n");
    let before = fx.user_state();

    let workspace = fx.path("ws");
    repo.checkout_commit(source, &workspace).unwrap();
    run_steps(&workspace);
    let commit = repo
        .write_dir_as_commit(
            &workspace,
            source,
            "orchex: regenerate\n\nfrom schema",
            &orchex(),
        )
        .unwrap();

    // No ref moved yet.
    assert_eq!(repo.branch_tip("orchex/codegen").unwrap(), None);
    assert_eq!(repo.head_commit().unwrap(), source);

    // The commit is sound and has the right parent, content and author.
    let (ok, fsck) = git_try(&fx.repo, &["fsck", "--strict", "--no-dangling"]);
    assert!(ok, "git fsck --strict: {fsck}");
    assert_eq!(
        fx.git(&["rev-parse", &format!("{commit}^")]).trim(),
        source.to_string()
    );
    assert_eq!(
        fx.git(&["log", "-1", "--format=%an <%ae>|%s", &commit.to_string()])
            .trim(),
        "orchex <orchex@example.com>|orchex: regenerate"
    );
    let tree = fx.git(&["ls-tree", "-r", &commit.to_string()]);
    let entries: Vec<(String, String)> = tree
        .lines()
        .map(|line| {
            let (meta, path) = line.split_once('\t').unwrap();
            (path.to_owned(), meta.split(' ').next().unwrap().to_owned())
        })
        .collect();
    let paths: Vec<&str> = entries.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(
        paths,
        [
            ".gitignore",
            "generated/alias.rs",
            "generated/api.rs",
            "generated/extra.rs",
            "schema/api.json",
            "tools/run.sh"
        ]
    );
    let mode = |path: &str| entries.iter().find(|(p, _)| p == path).unwrap().1.clone();
    assert_eq!(mode("tools/run.sh"), "100755");
    assert_eq!(mode("generated/alias.rs"), "120000");
    assert_eq!(mode("generated/api.rs"), "100644");
    assert_eq!(
        fx.git(&["show", &format!("{commit}:generated/api.rs")]),
        "// new\npub struct Api;\n"
    );

    // Publish: the branch must not exist yet.
    repo.update_branch("orchex/codegen", None, commit, "orchex: deliver job 42")
        .unwrap();
    assert_eq!(
        fx.git(&["log", "-1", "--format=%H", "orchex/codegen"])
            .trim(),
        commit.to_string()
    );
    let reflog = fx.git(&["reflog", "show", "--format=%H %gs", "orchex/codegen"]);
    assert!(
        reflog.contains(&format!("{commit} orchex: deliver job 42")),
        "{reflog}"
    );
    assert_eq!(repo.branch_tip("orchex/codegen").unwrap(), Some(commit));

    // The user's HEAD, index and working tree are untouched.
    assert_eq!(fx.user_state(), before);
    let (ok, fsck) = git_try(&fx.repo, &["fsck", "--strict"]);
    assert!(ok, "git fsck --strict: {fsck}");
}

#[test]
fn update_branch_is_a_compare_and_swap() {
    let fx = Fixture::new();
    let (repo, source) = source(&fx);
    let ws = fx.path("ws");
    repo.checkout_commit(source, &ws).unwrap();
    run_steps(&ws);
    let first = repo
        .write_dir_as_commit(&ws, source, "first", &orchex())
        .unwrap();
    write(&ws.join("generated/api.rs"), "// second\n");
    let second = repo
        .write_dir_as_commit(&ws, first, "second", &orchex())
        .unwrap();

    repo.update_branch("orchex/x", None, first, "deliver 1")
        .unwrap();
    // Must-not-exist refuses an existing branch.
    let err = repo
        .update_branch("orchex/x", None, second, "deliver 2")
        .unwrap_err();
    assert!(
        matches!(err, GitError::RefMoved { ref branch, expected: None, actual: Some(a) } if branch == "orchex/x" && a == first),
        "{err:?}"
    );
    // Expected value right: moves.
    repo.update_branch("refs/heads/orchex/x", Some(first), second, "deliver 2")
        .unwrap();
    assert_eq!(fx.rev_parse("orchex/x"), second);

    // A human moves the branch; the stale expectation is refused, nothing changes.
    fx.git(&["branch", "-f", "orchex/x", &source.to_string()]);
    let err = repo
        .update_branch("orchex/x", Some(second), first, "deliver 3")
        .unwrap_err();
    assert!(
        matches!(err, GitError::RefMoved { expected: Some(e), actual: Some(a), .. } if e == second && a == source),
        "{err:?}"
    );
    assert!(err.to_string().contains("moved"), "{err}");
    assert_eq!(fx.rev_parse("orchex/x"), source);

    // Expecting a branch that was deleted.
    fx.git(&["branch", "-D", "orchex/x"]);
    let err = repo
        .update_branch("orchex/x", Some(source), first, "deliver 4")
        .unwrap_err();
    assert!(
        matches!(err, GitError::RefMoved { actual: None, .. }),
        "{err:?}"
    );
}

#[test]
fn update_branch_refuses_a_checked_out_branch_and_non_commits() {
    let fx = Fixture::new();
    let (repo, source) = source(&fx);
    let ws = fx.path("ws");
    repo.checkout_commit(source, &ws).unwrap();
    run_steps(&ws);
    let commit = repo
        .write_dir_as_commit(&ws, source, "x", &orchex())
        .unwrap();

    let err = repo
        .update_branch("main", Some(source), commit, "nope")
        .unwrap_err();
    assert!(
        matches!(err, GitError::BranchCheckedOut { ref branch, .. } if branch == "main"),
        "{err:?}"
    );
    assert_eq!(fx.rev_parse("main"), source);

    // Checked out in a linked worktree.
    fx.git(&["branch", "orchex/linked", &source.to_string()]);
    let linked = fx.path("linked");
    fx.git(&[
        "worktree",
        "add",
        "-q",
        linked.to_str().unwrap(),
        "orchex/linked",
    ]);
    let err = repo
        .update_branch("orchex/linked", Some(source), commit, "nope")
        .unwrap_err();
    assert!(matches!(err, GitError::BranchCheckedOut { .. }), "{err:?}");

    // A tree is not a commit; a missing object is reported as such.
    let tree: Oid = fx
        .git(&["rev-parse", &format!("{commit}^{{tree}}")])
        .trim()
        .parse()
        .unwrap();
    let err = repo
        .update_branch("orchex/y", None, tree, "nope")
        .unwrap_err();
    assert!(matches!(err, GitError::WrongObjectKind { .. }), "{err:?}");
    let missing: Oid = "1111111111111111111111111111111111111111".parse().unwrap();
    let err = repo
        .update_branch("orchex/y", None, missing, "nope")
        .unwrap_err();
    assert!(matches!(err, GitError::ObjectNotFound { .. }), "{err:?}");
}

#[test]
fn rollback_restores_deletes_or_refuses() {
    let fx = Fixture::new();
    let (repo, source) = source(&fx);
    let ws = fx.path("ws");
    repo.checkout_commit(source, &ws).unwrap();
    run_steps(&ws);
    let first = repo
        .write_dir_as_commit(&ws, source, "first", &orchex())
        .unwrap();
    write(&ws.join("generated/api.rs"), "// second\n");
    let second = repo
        .write_dir_as_commit(&ws, first, "second", &orchex())
        .unwrap();
    write(&ws.join("generated/api.rs"), "// third\n");
    let third = repo
        .write_dir_as_commit(&ws, second, "third", &orchex())
        .unwrap();

    // Created by a delivery: rollback deletes the branch.
    repo.update_branch("orchex/new", None, first, "deliver")
        .unwrap();
    repo.rollback_branch("orchex/new", first, None, "orchex: rollback job 1")
        .unwrap();
    assert_eq!(repo.branch_tip("orchex/new").unwrap(), None);
    let (exists, _) = git_try(
        &fx.repo,
        &["rev-parse", "--verify", "-q", "refs/heads/orchex/new"],
    );
    assert!(!exists);

    // Moved by a delivery: rollback restores the previous value, with a reflog entry.
    repo.update_branch("orchex/x", None, first, "deliver 1")
        .unwrap();
    repo.update_branch("orchex/x", Some(first), second, "deliver 2")
        .unwrap();
    repo.rollback_branch("orchex/x", second, Some(first), "orchex: rollback job 2")
        .unwrap();
    assert_eq!(fx.rev_parse("orchex/x"), first);
    let reflog = fx.git(&["reflog", "show", "--format=%gs", "orchex/x"]);
    assert!(
        reflog
            .lines()
            .next()
            .unwrap()
            .contains("orchex: rollback job 2"),
        "{reflog}"
    );

    // A later delivery moved it: rolling back the earlier one is refused.
    repo.update_branch("orchex/x", Some(first), second, "deliver 3")
        .unwrap();
    repo.update_branch("orchex/x", Some(second), third, "deliver 4")
        .unwrap();
    let err = repo
        .rollback_branch("orchex/x", second, Some(first), "rollback 3")
        .unwrap_err();
    assert!(
        matches!(err, GitError::Superseded { wrote, actual: Some(a), .. } if wrote == second && a == third),
        "{err:?}"
    );
    assert!(
        err.to_string().contains("changed since orchex wrote"),
        "{err}"
    );
    assert_eq!(fx.rev_parse("orchex/x"), third);

    // Deleted by a human: superseded too.
    fx.git(&["branch", "-D", "orchex/x"]);
    let err = repo
        .rollback_branch("orchex/x", third, Some(second), "rollback 4")
        .unwrap_err();
    assert!(
        matches!(err, GitError::Superseded { actual: None, .. }),
        "{err:?}"
    );

    let (ok, fsck) = git_try(&fx.repo, &["fsck", "--strict"]);
    assert!(ok, "{fsck}");
}

/// Found by the crash loop (`orchex-reliability crash-loop`): a daemon
/// killed while gix held the branch's lock left `<branch>.lock` behind, and
/// every later delivery to the branch failed ("the lock ... could not be
/// obtained"). Recovery removes the stale lock.
#[test]
fn a_stale_branch_lock_blocks_updates_until_removed() {
    let fx = Fixture::new();
    let (repo, source) = source(&fx);
    let ws = fx.path("ws");
    repo.checkout_commit(source, &ws).unwrap();
    run_steps(&ws);
    let result = repo
        .write_dir_as_commit(&ws, source, "result", &orchex())
        .unwrap();
    assert!(!repo.remove_stale_branch_lock("orchex/x").unwrap());
    // What a killed writer leaves: the lock, and no branch.
    write(&fx.repo.join(".git/refs/heads/orchex/x.lock"), "");
    assert!(
        repo.update_branch("orchex/x", None, result, "deliver")
            .is_err()
    );
    assert!(
        repo.remove_stale_branch_lock("refs/heads/orchex/x")
            .unwrap()
    );
    assert!(!fx.repo.join(".git/refs/heads/orchex/x.lock").exists());
    repo.update_branch("orchex/x", None, result, "deliver")
        .unwrap();
    assert_eq!(fx.rev_parse("orchex/x"), result);
    assert!(repo.remove_stale_branch_lock("../../etc").is_err());
}

#[test]
fn write_dir_without_changes_reuses_the_parent_tree() {
    let fx = Fixture::new();
    let (repo, source) = source(&fx);
    let ws = fx.path("ws");
    repo.checkout_commit(source, &ws).unwrap();
    let commit = repo
        .write_dir_as_commit(&ws, source, "no change", &orchex())
        .unwrap();
    assert_eq!(
        fx.git(&["rev-parse", &format!("{commit}^{{tree}}")]),
        fx.git(&["rev-parse", &format!("{source}^{{tree}}")])
    );
    assert!(repo.diff_summary(source, commit).unwrap().is_empty());
}

#[test]
fn invalid_signatures_are_refused() {
    let fx = Fixture::new();
    let (repo, source) = source(&fx);
    let ws = fx.path("ws");
    repo.checkout_commit(source, &ws).unwrap();
    for bad in [
        Signature::new("", "a@b"),
        Signature::new("x <y>", "a@b"),
        Signature::new("x", "a>b"),
    ] {
        let err = repo
            .write_dir_as_commit(&ws, source, "m", &bad)
            .unwrap_err();
        assert!(matches!(err, GitError::InvalidSignature { .. }), "{err:?}");
    }
}
