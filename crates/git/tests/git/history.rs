//! Commit ranges, ancestry and change history.

use std::collections::BTreeMap;

use orchex_git::{GitError, GitRepo, Oid, Timestamp};

use crate::fixture::{Fixture, git_at};

/// A linear history c1..c4 with increasing dates, plus a side branch.
fn linear() -> (Fixture, Vec<Oid>, Oid) {
    let fx = Fixture::new();
    let mut commits = Vec::new();
    for (i, date) in [
        "2024-01-01T00:00:00Z",
        "2024-01-02T00:00:00Z",
        "2024-01-03T00:00:00Z",
        "2024-01-04T00:00:00Z",
    ]
    .into_iter()
    .enumerate()
    {
        commits.push(fx.commit_file(
            "a.txt",
            &format!("{i}\n"),
            &format!("commit {i}\n\nbody"),
            date,
        ));
    }
    fx.git(&["checkout", "-q", "-b", "side", &commits[1].to_string()]);
    let side = fx.commit_file("side.txt", "s\n", "side", "2024-01-05T00:00:00Z");
    fx.git(&["checkout", "-q", "main"]);
    (fx, commits, side)
}

#[test]
fn commits_between_lists_new_commits_newest_first() {
    let (fx, c, _) = linear();
    let repo = GitRepo::open(&fx.repo).unwrap();

    let listed = repo.commits_between(Some(c[0]), c[3], 100).unwrap();
    let oids: Vec<Oid> = listed.iter().map(|info| info.oid).collect();
    assert_eq!(oids, [c[3], c[2], c[1]]);
    let git_says: Vec<Oid> = fx
        .git(&["rev-list", &format!("{}..{}", c[0], c[3])])
        .lines()
        .map(|line| line.parse().unwrap())
        .collect();
    assert_eq!(oids, git_says);

    let newest = &listed[0];
    assert_eq!(newest.parents, [c[2]]);
    assert_eq!(newest.summary, "commit 3");
    assert_eq!(newest.author, "Test Author <author@example.com>");
    assert_eq!(
        newest.time,
        "2024-01-04T00:00:00Z".parse::<Timestamp>().unwrap()
    );

    // A limit keeps the newest.
    let limited = repo.commits_between(Some(c[0]), c[3], 2).unwrap();
    assert_eq!(
        limited.iter().map(|i| i.oid).collect::<Vec<_>>(),
        [c[3], c[2]]
    );
    // No old commit: everything, root included.
    assert_eq!(repo.commits_between(None, c[3], 100).unwrap().len(), 4);
    assert!(
        repo.commits_between(None, c[0], 100).unwrap()[0]
            .parents
            .is_empty()
    );
    // Nothing new.
    assert!(
        repo.commits_between(Some(c[3]), c[3], 100)
            .unwrap()
            .is_empty()
    );
    assert!(repo.commits_between(None, c[3], 0).unwrap().is_empty());
}

#[test]
fn is_ancestor_follows_the_graph() {
    let (fx, c, side) = linear();
    let repo = GitRepo::open(&fx.repo).unwrap();
    assert!(repo.is_ancestor(c[0], c[3]).unwrap());
    assert!(repo.is_ancestor(c[3], c[3]).unwrap());
    assert!(!repo.is_ancestor(c[3], c[0]).unwrap());
    assert!(repo.is_ancestor(c[1], side).unwrap());
    assert!(!repo.is_ancestor(side, c[3]).unwrap());
    assert!(!repo.is_ancestor(c[2], side).unwrap());

    let missing: Oid = "0123456789012345678901234567890123456789".parse().unwrap();
    let err = repo.is_ancestor(missing, c[3]).unwrap_err();
    assert!(
        matches!(err, GitError::ObjectNotFound { oid } if oid == missing),
        "{err:?}"
    );
    assert!(err.to_string().contains("not found"), "{err}");
}

/// A history with old commits, recent ones, a merge and a rename.
fn history_fixture() -> (Fixture, BTreeMap<&'static str, Oid>) {
    let fx = Fixture::new();
    let mut ids = BTreeMap::new();
    fx.write("a.txt", "a1\n");
    fx.write("b.txt", "b1\n");
    ids.insert("c1", fx.commit_all("c1", "2020-01-01T00:00:00Z"));
    ids.insert(
        "c2",
        fx.commit_file("a.txt", "a2\n", "c2", "2020-06-01T00:00:00Z"),
    );
    fx.write("a.txt", "a3\n");
    fx.write("dir/c.txt", "c3\n");
    ids.insert("c3", fx.commit_all("c3", "2024-01-01T00:00:00Z"));
    fx.git(&["checkout", "-q", "-b", "feature"]);
    ids.insert(
        "c4",
        fx.commit_file("b.txt", "b4\n", "c4", "2024-02-01T00:00:00Z"),
    );
    fx.git(&["checkout", "-q", "main"]);
    ids.insert(
        "c5",
        fx.commit_file("dir/c.txt", "c5\n", "c5", "2024-03-01T00:00:00Z"),
    );
    git_at(
        &fx.repo,
        "2024-04-01T00:00:00Z",
        &["merge", "-q", "--no-ff", "-m", "merge feature", "feature"],
    );
    ids.insert("merge", fx.rev_parse("HEAD"));
    fx.git(&["mv", "dir/c.txt", "dir/d.txt"]);
    ids.insert("c6", fx.commit_all("c6", "2024-05-01T00:00:00Z"));
    (fx, ids)
}

/// What `git log --no-merges --name-only --no-renames --since` counts.
fn git_counts(fx: &Fixture, since: &str) -> (u64, BTreeMap<String, u64>) {
    let out = fx.git(&[
        "log",
        "--no-merges",
        "--no-renames",
        "--name-only",
        "--format=commit %H",
        &format!("--since={since}"),
    ]);
    let mut commits = 0;
    let mut per_file = BTreeMap::new();
    for line in out.lines() {
        if line.starts_with("commit ") {
            commits += 1;
        } else if !line.is_empty() {
            *per_file.entry(line.to_owned()).or_insert(0) += 1;
        }
    }
    (commits, per_file)
}

#[test]
fn change_history_counts_files_in_the_window() {
    let (fx, ids) = history_fixture();
    let repo = GitRepo::open(&fx.repo).unwrap();
    let tip = ids["c6"];
    let since: Timestamp = "2023-01-01T00:00:00Z".parse().unwrap();

    let history = repo.change_history(tip, since).unwrap();
    assert_eq!(history.commits, 4);
    let expected: BTreeMap<String, u64> = [
        ("a.txt", 1),
        ("b.txt", 1),
        ("dir/c.txt", 3),
        ("dir/d.txt", 1),
    ]
    .into_iter()
    .map(|(path, n)| (path.to_owned(), n))
    .collect();
    assert_eq!(history.per_file, expected);
    assert_eq!(
        (history.commits, history.per_file.clone()),
        git_counts(&fx, "2023-01-01T00:00:00Z")
    );

    let order: Vec<Oid> = history.per_commit.iter().map(|c| c.oid).collect();
    assert_eq!(order, [ids["c6"], ids["c5"], ids["c4"], ids["c3"]]);
    let c6 = &history.per_commit[0];
    assert_eq!(c6.paths, ["dir/c.txt", "dir/d.txt"]);
    assert_eq!(
        c6.time,
        "2024-05-01T00:00:00Z".parse::<Timestamp>().unwrap()
    );
    let c3 = &history.per_commit[3];
    assert_eq!(c3.paths, ["a.txt", "dir/c.txt"]);
}

#[test]
fn change_history_includes_the_root_commit_when_the_window_allows() {
    let (fx, ids) = history_fixture();
    let repo = GitRepo::open(&fx.repo).unwrap();
    let since: Timestamp = "2019-01-01T00:00:00Z".parse().unwrap();
    let history = repo.change_history(ids["c6"], since).unwrap();
    assert_eq!(history.commits, 6);
    assert_eq!(history.per_file["a.txt"], 3);
    assert_eq!(history.per_file["b.txt"], 2);
    assert_eq!(
        (history.commits, history.per_file),
        git_counts(&fx, "2019-01-01T00:00:00Z")
    );

    // A window after every commit is empty.
    let future: Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    let empty = repo.change_history(ids["c6"], future).unwrap();
    assert_eq!(empty.commits, 0);
    assert!(empty.per_file.is_empty() && empty.per_commit.is_empty());
}

/// A linear history of `n` commits written with `git fast-import`, each
/// touching one to three of 60 files in nested directories.
fn long_history(n: usize) -> Fixture {
    use std::fmt::Write as _;
    let fx = Fixture::new();
    let mut stream = String::new();
    let mut seed: usize = 42;
    let mut next = move |bound: usize| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % bound
    };
    for commit in 0..n {
        let time = 1_700_000_000 + commit * 60;
        let mark = commit + 1;
        write!(
            stream,
            "commit refs/heads/main\nmark :{mark}\ncommitter T <t@x> {time} +0000\ndata 4\nmsg\n"
        )
        .unwrap();
        if commit > 0 {
            writeln!(stream, "from :{commit}").unwrap();
        }
        for _ in 0..=next(3) {
            let file = next(60);
            let body = format!("{commit} {}\n", next(1000)).repeat(1 + next(5));
            let (dir, sub, len) = (file % 6, file % 4, body.len());
            write!(
                stream,
                "M 100644 inline d{dir}/s{sub}/f{file}.txt\ndata {len}\n{body}\n"
            )
            .unwrap();
        }
    }
    let mut child = crate::fixture::command(&fx.repo)
        .args(["fast-import", "--quiet"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), stream.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    fx
}

#[test]
fn change_history_of_a_long_history_matches_git_in_any_pack_layout() {
    let fx = long_history(700);
    let repo = GitRepo::open(&fx.repo).unwrap();
    let tip = fx.rev_parse("main");
    let since: Timestamp = "2023-11-14T22:20:00Z".parse().unwrap(); // 1_700_000_400
    let since_arg = "--since=@1700000400";
    let expected_order: Vec<Oid> = fx
        .git(&["log", "--format=%H", since_arg, "main"])
        .lines()
        .map(|line| line.parse().unwrap())
        .collect();
    let (commits, per_file) = {
        let out = fx.git(&[
            "log",
            "--no-renames",
            "--name-only",
            "--format=commit %H",
            since_arg,
            "main",
        ]);
        let mut commits = 0;
        let mut per_file = BTreeMap::new();
        for line in out.lines() {
            if line.starts_with("commit ") {
                commits += 1;
            } else if !line.is_empty() {
                *per_file.entry(line.to_owned()).or_insert(0_u64) += 1;
            }
        }
        (commits, per_file)
    };
    assert!(commits > 600, "{commits}");

    // As fast-import wrote it (older versions are delta bases), then as
    // `git repack -f` rewrites it (newer versions are bases).
    for layout in ["fast-import", "repacked"] {
        if layout == "repacked" {
            fx.git(&["repack", "-a", "-d", "-f", "-q"]);
        }
        let history = repo.change_history(tip, since).unwrap();
        assert_eq!(history.commits, commits, "{layout}");
        assert_eq!(history.per_file, per_file, "{layout}");
        let order: Vec<Oid> = history.per_commit.iter().map(|c| c.oid).collect();
        assert_eq!(order, expected_order, "{layout}");
    }
}
