//! Opening repositories, HEAD, branch and remote-tracking tips, upstreams.

use orchex_git::{GitError, GitRepo, Head};

use crate::fixture::{Fixture, git};

const DATE: &str = "2024-01-01T12:00:00Z";

#[test]
fn open_a_working_tree_or_its_git_dir() {
    let fx = Fixture::new();
    fx.commit_file("a.txt", "a\n", "first", DATE);
    let repo = GitRepo::open(&fx.repo).unwrap();
    let workdir = std::fs::canonicalize(repo.workdir().unwrap()).unwrap();
    assert_eq!(workdir, std::fs::canonicalize(&fx.repo).unwrap());
    assert!(repo.git_dir().join("HEAD").is_file());
    assert!(repo.git_dir().ends_with(".git"));

    let via_git_dir = GitRepo::open(&fx.repo.join(".git")).unwrap();
    assert_eq!(via_git_dir.head().unwrap(), repo.head().unwrap());
}

#[test]
fn a_linked_worktree_has_its_own_git_dir_and_shares_the_common_one() {
    let fx = Fixture::new();
    fx.commit_file("a.txt", "a\n", "first", DATE);
    let main = GitRepo::open(&fx.repo).unwrap();
    assert_eq!(main.common_dir(), main.git_dir());

    let wt = fx.path("wt");
    git(
        &fx.repo,
        &["worktree", "add", "-q", "-b", "side", wt.to_str().unwrap()],
    );
    let linked = GitRepo::open(&wt).unwrap();
    let canonical = |p: &std::path::Path| std::fs::canonicalize(p).unwrap();
    assert_eq!(
        canonical(linked.git_dir()),
        canonical(&fx.repo.join(".git/worktrees/wt"))
    );
    assert_eq!(
        canonical(&linked.common_dir()),
        canonical(&fx.repo.join(".git"))
    );
    assert_eq!(linked.head().unwrap().branch.as_deref(), Some("side"));
}

#[test]
fn open_a_bare_repository_has_no_workdir() {
    let fx = Fixture::new();
    let bare = fx.path("bare.git");
    git(
        fx.tmp.path(),
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    );
    let repo = GitRepo::open(&bare).unwrap();
    assert!(repo.workdir().is_none());
    let err = repo.snapshot_worktree(&fx.path("snap")).unwrap_err();
    assert!(matches!(err, GitError::NoWorkingTree { .. }), "{err}");
}

#[test]
fn open_a_plain_directory_is_not_a_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let err = GitRepo::open(tmp.path()).unwrap_err();
    assert!(matches!(err, GitError::NotARepository { .. }), "{err:?}");
    assert!(err.to_string().contains("not a git repository"), "{err}");

    let missing = tmp.path().join("missing");
    let err = GitRepo::open(&missing).unwrap_err();
    assert!(
        matches!(err, GitError::NotARepository { ref path } if *path == missing),
        "{err:?}"
    );
}

#[test]
fn unborn_head_has_a_branch_but_no_commit() {
    let fx = Fixture::new();
    let repo = GitRepo::open(&fx.repo).unwrap();
    assert_eq!(
        repo.head().unwrap(),
        Head {
            branch: Some("main".to_owned()),
            oid: None
        }
    );
    assert_eq!(repo.branch_tip("main").unwrap(), None);
    let err = repo.head_commit().unwrap_err();
    assert!(
        matches!(err, GitError::UnbornHead { ref branch } if branch == "main"),
        "{err:?}"
    );
    assert!(err.to_string().contains("unborn"), "{err}");
}

#[test]
fn head_and_branch_tips_follow_git() {
    let fx = Fixture::new();
    let first = fx.commit_file("a.txt", "a\n", "first", DATE);
    let repo = GitRepo::open(&fx.repo).unwrap();
    assert_eq!(repo.head().unwrap().oid, Some(first));
    assert_eq!(repo.head_commit().unwrap(), first);

    // The same GitRepo sees later commits.
    let second = fx.commit_file("a.txt", "b\n", "second", DATE);
    assert_eq!(second, fx.rev_parse("HEAD"));
    assert_eq!(repo.head().unwrap().oid, Some(second));
    assert_eq!(repo.branch_tip("main").unwrap(), Some(second));
    assert_eq!(repo.branch_tip("refs/heads/main").unwrap(), Some(second));
    assert_eq!(repo.branch_tip("nope").unwrap(), None);

    fx.git(&["branch", "feature", &first.to_string()]);
    assert_eq!(repo.branch_tip("feature").unwrap(), Some(first));

    // Packed refs are read too.
    fx.git(&["pack-refs", "--all"]);
    assert_eq!(repo.branch_tip("feature").unwrap(), Some(first));

    fx.git(&["checkout", "-q", "--detach", "feature"]);
    assert_eq!(
        repo.head().unwrap(),
        Head {
            branch: None,
            oid: Some(first)
        }
    );
}

#[test]
fn invalid_branch_names_are_refused() {
    let fx = Fixture::new();
    let repo = GitRepo::open(&fx.repo).unwrap();
    for name in ["", "a..b", "refs/tags/v1", "HEAD", "with space", "end."] {
        let err = repo.branch_tip(name).unwrap_err();
        assert!(
            matches!(err, GitError::InvalidName { .. }),
            "{name:?}: {err:?}"
        );
    }
}

#[test]
fn remote_tracking_tip_moves_after_a_fetch() {
    let fx = Fixture::new();
    let first = fx.commit_file("a.txt", "a\n", "first", DATE);
    let remote = fx.path("remote.git");
    git(
        fx.tmp.path(),
        &[
            "init",
            "-q",
            "--bare",
            "-b",
            "main",
            remote.to_str().unwrap(),
        ],
    );
    fx.git(&["remote", "add", "origin", remote.to_str().unwrap()]);
    fx.git(&["push", "-q", "-u", "origin", "main"]);

    let repo = GitRepo::open(&fx.repo).unwrap();
    assert_eq!(
        repo.remote_tracking_tip("origin", "main").unwrap(),
        Some(first)
    );
    assert_eq!(repo.remote_tracking_tip("origin", "other").unwrap(), None);
    assert_eq!(
        repo.upstream_of("main").unwrap(),
        Some(("origin".to_owned(), "main".to_owned()))
    );

    // Someone else pushes; our fetch moves the remote-tracking ref.
    let other = fx.path("other");
    git(
        fx.tmp.path(),
        &[
            "clone",
            "-q",
            "-b",
            "main",
            remote.to_str().unwrap(),
            other.to_str().unwrap(),
        ],
    );
    crate::fixture::write(&other.join("b.txt"), "b\n");
    git(&other, &["add", "-A"]);
    crate::fixture::git_at(&other, DATE, &["commit", "-q", "-m", "from elsewhere"]);
    git(&other, &["push", "-q", "origin", "main"]);
    let pushed: orchex_git::Oid = git(&other, &["rev-parse", "HEAD"]).trim().parse().unwrap();

    assert_eq!(
        repo.remote_tracking_tip("origin", "main").unwrap(),
        Some(first)
    );
    fx.git(&["fetch", "-q", "origin"]);
    assert_eq!(
        repo.remote_tracking_tip("origin", "main").unwrap(),
        Some(pushed)
    );
    assert_eq!(
        fx.rev_parse("refs/remotes/origin/main"),
        pushed,
        "git agrees"
    );
    // The local branch did not move.
    assert_eq!(repo.branch_tip("main").unwrap(), Some(first));
}

#[test]
fn upstream_comes_from_config_then_falls_back_to_origin() {
    let fx = Fixture::new();
    fx.commit_file("a.txt", "a\n", "first", DATE);
    let repo = GitRepo::open(&fx.repo).unwrap();
    // No remote at all.
    assert_eq!(repo.upstream_of("main").unwrap(), None);

    // Configured after open: still seen.
    fx.git(&["config", "branch.main.remote", "upstream"]);
    fx.git(&["config", "branch.main.merge", "refs/heads/trunk"]);
    assert_eq!(
        repo.upstream_of("main").unwrap(),
        Some(("upstream".to_owned(), "trunk".to_owned()))
    );

    // A branch without configuration falls back to origin, when it exists.
    fx.git(&["branch", "feature"]);
    assert_eq!(repo.upstream_of("feature").unwrap(), None);
    fx.git(&[
        "remote",
        "add",
        "origin",
        "https://example.invalid/repo.git",
    ]);
    assert_eq!(
        repo.upstream_of("feature").unwrap(),
        Some(("origin".to_owned(), "feature".to_owned()))
    );
}

#[test]
fn git_repo_is_send_sync_and_clone() {
    fn assert_traits<T: Send + Sync + Clone + std::fmt::Debug + 'static>() {}
    fn assert_error<T: std::error::Error + Send + Sync + 'static>() {}
    assert_traits::<GitRepo>();
    assert_error::<GitError>();
}
