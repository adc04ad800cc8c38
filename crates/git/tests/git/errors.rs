//! Broken repositories give clear errors, never panics.

use orchex_git::{GitError, GitRepo, Oid, Signature};

use crate::fixture::Fixture;

const DATE: &str = "2024-01-01T12:00:00Z";

#[test]
fn a_corrupt_branch_ref_is_reported_as_corrupt() {
    let fx = Fixture::new();
    let commit = fx.commit_file("a.txt", "a\n", "one", DATE);
    std::fs::write(
        fx.repo.join(".git/refs/heads/broken"),
        "this is not an object id\n",
    )
    .unwrap();
    let repo = GitRepo::open(&fx.repo).unwrap();

    let err = repo.branch_tip("broken").unwrap_err();
    assert!(
        matches!(err, GitError::CorruptRef { ref name, .. } if name == "refs/heads/broken"),
        "{err:?}"
    );
    assert!(err.to_string().contains("refs/heads/broken"), "{err}");
    assert!(err.to_string().contains("corrupt"), "{err}");

    // Writing to it is refused with the same clear error, and nothing is written.
    let err = repo
        .update_branch("broken", Some(commit), commit, "deliver")
        .unwrap_err();
    assert!(matches!(err, GitError::CorruptRef { .. }), "{err:?}");
    let err = repo
        .rollback_branch("broken", commit, None, "rollback")
        .unwrap_err();
    assert!(matches!(err, GitError::CorruptRef { .. }), "{err:?}");
    assert_eq!(
        std::fs::read_to_string(fx.repo.join(".git/refs/heads/broken")).unwrap(),
        "this is not an object id\n"
    );

    // Other branches still work.
    assert_eq!(repo.branch_tip("main").unwrap(), Some(commit));
}

#[test]
fn head_on_a_corrupt_branch_is_a_clear_error() {
    let fx = Fixture::new();
    fx.commit_file("a.txt", "a\n", "one", DATE);
    std::fs::write(fx.repo.join(".git/refs/heads/main"), "garbage").unwrap();
    let repo = GitRepo::open(&fx.repo).unwrap();
    let err = repo.head().unwrap_err();
    assert!(matches!(err, GitError::CorruptRef { .. }), "{err:?}");
    assert!(err.to_string().contains("corrupt"), "{err}");
}

#[test]
fn missing_objects_are_reported_by_id() {
    let fx = Fixture::new();
    let commit = fx.commit_file("a.txt", "a\n", "one", DATE);
    let repo = GitRepo::open(&fx.repo).unwrap();
    let missing: Oid = "3333333333333333333333333333333333333333".parse().unwrap();

    let err = repo.checkout_commit(missing, &fx.path("ws")).unwrap_err();
    assert!(
        matches!(err, GitError::ObjectNotFound { oid } if oid == missing),
        "{err:?}"
    );
    assert!(err.to_string().contains(&missing.to_string()), "{err}");
    assert!(
        !fx.path("ws").exists(),
        "nothing created for a missing commit"
    );

    let err = repo.commits_between(Some(missing), commit, 10).unwrap_err();
    assert!(matches!(err, GitError::ObjectNotFound { .. }), "{err:?}");
    let err = repo
        .change_history(missing, orchex_git::Timestamp::UNIX_EPOCH)
        .unwrap_err();
    assert!(matches!(err, GitError::ObjectNotFound { .. }), "{err:?}");
    let err = repo
        .write_dir_as_commit(&fx.repo, missing, "m", &Signature::new("o", "o@x"))
        .unwrap_err();
    assert!(matches!(err, GitError::ObjectNotFound { .. }), "{err:?}");
}

#[test]
fn a_missing_blob_in_a_tree_fails_the_checkout_cleanly() {
    let fx = Fixture::new();
    let commit = fx.commit_file("a.txt", "content that will vanish\n", "one", DATE);
    let blob = fx.git(&["rev-parse", &format!("{commit}:a.txt")]);
    let blob = blob.trim();
    std::fs::remove_file(
        fx.repo
            .join(".git/objects")
            .join(&blob[..2])
            .join(&blob[2..]),
    )
    .unwrap();
    let repo = GitRepo::open(&fx.repo).unwrap();
    let err = repo.checkout_commit(commit, &fx.path("ws")).unwrap_err();
    assert!(err.to_string().contains("checking out"), "{err}");
}

#[test]
fn oids_parse_display_and_serialize_as_hex() {
    let hex = "4b825dc642cb6eb9a060e54bf8d69288fbee4904";
    let oid: Oid = hex.parse().unwrap();
    assert_eq!(oid, Oid::empty_tree());
    assert_eq!(oid.to_string(), hex);
    assert_eq!(serde_json::to_string(&oid).unwrap(), format!("\"{hex}\""));
    assert_eq!(
        serde_json::from_str::<Oid>(&format!("\"{hex}\"")).unwrap(),
        oid
    );
    for bad in [
        "",
        "4b825dc",
        "zz825dc642cb6eb9a060e54bf8d69288fbee4904",
        &format!("{hex}00"),
    ] {
        assert!(bad.parse::<Oid>().is_err(), "{bad}");
    }
    assert!(serde_json::from_str::<Oid>("\"nope\"").is_err());
}
