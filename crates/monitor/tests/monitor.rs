//! End-to-end tests of `orchex-monitor` on real temporary git repositories
//! (built with the git CLI) and real file writes.
//!
//! Timings are short and never asserted on: a test waits for the trigger or
//! event it expects (with a generous timeout that only guards against a
//! hang). The exact timing rules are unit-tested on the settler with a
//! manual clock (`src/settle.rs`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::case_sensitive_file_extension_comparisons
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use orchex_core::config::{MonitorConfig, ThresholdsConfig};
use orchex_core::{Event, EventKind, RepoId, Repository, Trigger, TriggerKind};
use orchex_monitor::{
    Analyzer, AnalyzerOptions, EventStream, Monitor, MonitorOptions, TriggerStream, WatcherState,
};

/// Guards against a hang only; nothing is asserted about time.
const PATIENCE: Duration = Duration::from_secs(30);

fn git(dir: &Path, args: &[&str]) -> String {
    git_env(dir, args, &[])
}

fn git_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> String {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args([
            "-c",
            "init.defaultBranch=main",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.invalid")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.invalid")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .envs(env.iter().copied())
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A repository with one commit; returns (tempdir, canonical root).
fn repo_with_commit() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    git(&root, &["init", "-q"]);
    std::fs::write(root.join("README.md"), "# test\n").unwrap();
    git(&root, &["add", "."]);
    git(&root, &["commit", "-q", "-m", "initial"]);
    (dir, root)
}

fn config(debounce_ms: u64, max_wait_ms: u64, min_changes: u32) -> MonitorConfig {
    let mut config = MonitorConfig::default();
    config.filesystem.debounce_ms = debounce_ms;
    config.filesystem.max_wait_ms = max_wait_ms;
    config.triggers.min_changes_threshold = min_changes;
    config
}

fn quiet_options() -> MonitorOptions {
    MonitorOptions {
        analyse_on_commit: false,
        ..MonitorOptions::default()
    }
}

fn monitor(config: &MonitorConfig) -> (Monitor, TriggerStream) {
    Monitor::with_options(config, &ThresholdsConfig::default(), quiet_options())
}

fn repository(name: &str, path: &Path) -> Repository {
    Repository {
        name: RepoId::new(name).unwrap(),
        path: path.to_path_buf(),
        enabled: true,
        branch: None,
    }
}

async fn next_trigger(triggers: &mut TriggerStream) -> Trigger {
    tokio::time::timeout(PATIENCE, triggers.next())
        .await
        .expect("a trigger within the patience window")
        .expect("the trigger stream is open")
}

/// The next trigger of `kind`, skipping others.
async fn next_of(triggers: &mut TriggerStream, kind: TriggerKind) -> Trigger {
    loop {
        let trigger = next_trigger(triggers).await;
        if trigger.kind == kind {
            return trigger;
        }
    }
}

/// Triggers up to and including the first `fileChange` that lists `path`.
async fn until_file(triggers: &mut TriggerStream, path: &str) -> Vec<Trigger> {
    let mut seen = Vec::new();
    loop {
        let trigger = next_trigger(triggers).await;
        let done =
            trigger.kind == TriggerKind::FileChange && trigger.paths.iter().any(|p| p == path);
        seen.push(trigger);
        if done {
            return seen;
        }
    }
}

async fn next_event(events: &mut EventStream, pred: impl Fn(&Event) -> bool) -> Event {
    tokio::time::timeout(PATIENCE, async {
        loop {
            let event = events.next().await.expect("event stream open");
            if pred(&event) {
                return event;
            }
        }
    })
    .await
    .expect("an event within the patience window")
}

/// The repository's watched directories.
async fn watched_set(monitor: &Monitor, id: &RepoId) -> BTreeSet<PathBuf> {
    monitor
        .watched_dirs(id)
        .await
        .unwrap()
        .into_iter()
        .collect()
}

fn write(root: &Path, rel: &str, content: &str) {
    let path = root.join(rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, content).unwrap();
}

mod watcher {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn nested_gitignore_and_info_exclude_are_honoured_and_ignored_dirs_unwatched() {
        let (_dir, root) = repo_with_commit();
        write(&root, ".gitignore", "target/\nnode_modules/\n");
        write(&root, "sub/.gitignore", "*.gen\n!keep.gen\nlocal/\n");
        write(&root, ".git/info/exclude", "secret/\n");
        for dir in [
            "src/deep",
            "target/debug/deps",
            "node_modules/pkg/lib",
            "sub/local/x",
            "secret/inner",
            "gen/out",
        ] {
            std::fs::create_dir_all(root.join(dir)).unwrap();
        }
        let mut config = config(100, 10_000, 1);
        config.filesystem.ignore = vec!["gen/".into()];
        let (monitor, mut triggers) = monitor(&config);
        let id = RepoId::new("ign").unwrap();
        let status = monitor
            .add_repository(repository("ign", &root))
            .await
            .unwrap();
        assert_eq!(status.state, WatcherState::Watching);

        let watched = watched_set(&monitor, &id).await;
        let expected: BTreeSet<PathBuf> = ["", "src", "src/deep", "sub"]
            .iter()
            .map(|rel| {
                if rel.is_empty() {
                    root.clone()
                } else {
                    root.join(rel)
                }
            })
            .collect();
        assert_eq!(watched, expected);

        // Writes under ignored directories, and ignored files in watched ones.
        write(&root, "target/debug/deps/a.o", "x");
        write(&root, "node_modules/pkg/lib/index.js", "x");
        write(&root, "secret/inner/key", "x");
        write(&root, "gen/out/file.rs", "x");
        write(&root, "sub/local/x/y", "x");
        write(&root, "sub/thing.gen", "x");
        // Visible ones.
        write(&root, "sub/keep.gen", "x");
        write(&root, "src/deep/ok.rs", "x");
        let trigger = until_file(&mut triggers, "src/deep/ok.rs").await;
        let paths: BTreeSet<String> = trigger
            .iter()
            .flat_map(|t| t.paths.iter().cloned())
            .collect();
        let expected: BTreeSet<String> = ["src/deep/ok.rs", "sub/keep.gen"]
            .into_iter()
            .map(String::from)
            .collect();
        // The batch that lists ok.rs may or may not include keep.gen (it
        // was written first); nothing ignored is ever listed.
        assert!(paths.is_subset(&expected), "{paths:?}");
        assert_eq!(monitor.status(&id).unwrap().watched_dirs, watched.len() + 3);
        monitor.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_of_1000_writes_becomes_one_batch() {
        let (_dir, root) = repo_with_commit();
        // The batch can only fire once all 1000 distinct paths are in (or
        // after maxWaitMs, a minute away).
        let (monitor, mut triggers) = monitor(&config(200, 60_000, 1000));
        monitor
            .add_repository(repository("burst", &root))
            .await
            .unwrap();
        for dir in 0..10 {
            std::fs::create_dir(root.join(format!("d{dir}"))).unwrap();
        }
        let mut expected = BTreeSet::new();
        for i in 0..1000 {
            let rel = format!("d{}/f{i}.txt", i % 10);
            std::fs::write(root.join(&rel), format!("{i}")).unwrap();
            expected.insert(rel);
        }
        for dir in 0..10 {
            expected.insert(format!("d{dir}"));
        }
        let first = next_trigger(&mut triggers).await;
        assert_eq!(first.kind, TriggerKind::FileChange);
        let got: BTreeSet<String> = first.paths.iter().cloned().collect();
        assert_eq!(got, expected);
        assert_eq!(first.paths.len(), 1010, "paths are distinct");
        monitor.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_rename_reports_both_paths() {
        let (_dir, root) = repo_with_commit();
        write(&root, "old.txt", "content");
        let (monitor, mut triggers) = monitor(&config(100, 10_000, 2));
        monitor
            .add_repository(repository("ren", &root))
            .await
            .unwrap();
        std::fs::rename(root.join("old.txt"), root.join("new.txt")).unwrap();
        let trigger = next_of(&mut triggers, TriggerKind::FileChange).await;
        assert_eq!(trigger.paths, ["new.txt", "old.txt"]);
        monitor.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_new_subdirectory_is_watched_and_its_early_files_reported() {
        let (_dir, root) = repo_with_commit();
        let (monitor, mut triggers) = monitor(&config(100, 10_000, 1));
        let id = RepoId::new("newdir").unwrap();
        monitor
            .add_repository(repository("newdir", &root))
            .await
            .unwrap();
        // Created in one go: the deeper levels exist before any watch on
        // them can, so the scan after the watch must find them.
        std::fs::create_dir_all(root.join("a/b/c")).unwrap();
        std::fs::write(root.join("a/b/c/early.txt"), "x").unwrap();
        let seen = until_file(&mut triggers, "a/b/c/early.txt").await;
        let paths: BTreeSet<&str> = seen
            .iter()
            .flat_map(|t| t.paths.iter().map(String::as_str))
            .collect();
        for expected in ["a", "a/b", "a/b/c", "a/b/c/early.txt"] {
            assert!(paths.contains(expected), "{expected} in {paths:?}");
        }
        let watched = monitor.watched_dirs(&id).await.unwrap();
        for dir in ["a", "a/b", "a/b/c"] {
            assert!(watched.contains(&root.join(dir)), "{dir} watched");
        }
        // And the new watch works.
        std::fs::write(root.join("a/b/c/late.txt"), "x").unwrap();
        until_file(&mut triggers, "a/b/c/late.txt").await;
        // A removed directory loses its watches.
        std::fs::remove_dir_all(root.join("a")).unwrap();
        let seen = until_file(&mut triggers, "a/b/c/late.txt").await;
        assert_eq!(seen.last().unwrap().kind, TriggerKind::FileChange);
        let watched = monitor.watched_dirs(&id).await.unwrap();
        assert_eq!(watched, std::slice::from_ref(&root));
        monitor.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn index_lock_defers_firing_until_it_disappears() {
        let (_dir, root) = repo_with_commit();
        let (monitor, mut triggers) = monitor(&config(50, 100, 1));
        monitor
            .add_repository(repository("lock", &root))
            .await
            .unwrap();
        std::fs::write(root.join(".git/index.lock"), "").unwrap();
        write(&root, "during.txt", "x");
        // maxWaitMs is 100 ms: without the lock this would have fired long
        // before the end of this window.
        let early = tokio::time::timeout(Duration::from_millis(700), triggers.next()).await;
        assert!(
            early.is_err(),
            "nothing fires while index.lock exists: {early:?}"
        );
        std::fs::remove_file(root.join(".git/index.lock")).unwrap();
        let trigger = next_of(&mut triggers, TriggerKind::FileChange).await;
        assert_eq!(trigger.paths, ["during.txt"]);
        monitor.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_small_batch_waits_for_max_wait_and_a_full_one_does_not() {
        let (_dir, root) = repo_with_commit();
        // min 3 paths; a smaller batch fires only at maxWaitMs (1 s).
        let (monitor, mut triggers) = monitor(&config(50, 1000, 3));
        let mut events = monitor.subscribe_events();
        monitor
            .add_repository(repository("min", &root))
            .await
            .unwrap();
        write(&root, "one.txt", "1");
        let trigger = next_of(&mut triggers, TriggerKind::FileChange).await;
        assert_eq!(trigger.paths, ["one.txt"]);
        let event = next_event(&mut events, |e| e.kind == EventKind::ChangeDetected).await;
        assert_eq!(event.data["count"], 1);
        // Three paths reach the threshold: one batch of three.
        write(&root, "a.txt", "1");
        write(&root, "b.txt", "1");
        write(&root, "c.txt", "1");
        let trigger = next_of(&mut triggers, TriggerKind::FileChange).await;
        assert_eq!(trigger.paths, ["a.txt", "b.txt", "c.txt"]);
        monitor.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_forced_rescan_finds_changes_made_while_overflowed() {
        let (_dir, root) = repo_with_commit();
        write(&root, "src/keep.rs", "fn a() {}\n");
        write(&root, "src/gone.rs", "fn b() {}\n");
        let (monitor, _triggers) = monitor(&config(50, 10_000, 1));
        let mut events = monitor.subscribe_events();
        let id = RepoId::new("ovf").unwrap();
        monitor
            .add_repository(repository("ovf", &root))
            .await
            .unwrap();
        // The repository's task answers commands only once its rescan
        // snapshot exists; changes made before that are in the snapshot and
        // reach the task as events, which the simulated overflow would drop.
        monitor.watched_dirs(&id).await.unwrap();
        monitor.simulate_overflow(&id).unwrap();
        write(&root, "src/keep.rs", "fn a() { changed(); }\n");
        std::fs::remove_file(root.join("src/gone.rs")).unwrap();
        write(&root, "fresh/new.rs", "x");
        monitor.force_rescan(&id).await.unwrap();
        let event = next_event(&mut events, |e| {
            e.kind == EventKind::ChangeDetected && e.data["rescan"] == true
        })
        .await;
        let paths: BTreeSet<&str> = event.data["paths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap())
            .collect();
        for expected in ["src/keep.rs", "src/gone.rs", "fresh", "fresh/new.rs"] {
            assert!(paths.contains(expected), "{expected} in {paths:?}");
        }
        monitor.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deleted_repository_reports_watcher_error_and_others_keep_working() {
        let (dir_a, root_a) = repo_with_commit();
        let (_dir_b, root_b) = repo_with_commit();
        let (monitor, mut triggers) = monitor(&config(50, 10_000, 1));
        let mut events = monitor.subscribe_events();
        let a = RepoId::new("doomed").unwrap();
        let b = RepoId::new("survivor").unwrap();
        monitor
            .add_repository(repository("doomed", &root_a))
            .await
            .unwrap();
        monitor
            .add_repository(repository("survivor", &root_b))
            .await
            .unwrap();
        std::fs::remove_dir_all(&root_a).unwrap();
        drop(dir_a);
        let event = next_event(&mut events, |e| {
            e.kind == EventKind::WatcherError
                && e.repo.as_ref() == Some(&a)
                && e.data["fatal"] == true
        })
        .await;
        assert!(
            event.message.contains("no longer exists"),
            "{}",
            event.message
        );
        assert!(matches!(
            monitor.status(&a).unwrap().state,
            WatcherState::Error { .. }
        ));
        assert_eq!(monitor.status(&b).unwrap().state, WatcherState::Watching);
        write(&root_b, "still.txt", "alive");
        let seen = until_file(&mut triggers, "still.txt").await;
        assert_eq!(seen.last().unwrap().repo, b);
        // The dead repository can be removed like any other.
        monitor.remove_repository(&a).await.unwrap();
        assert!(monitor.status(&a).is_none());
        monitor.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_corrupt_ref_is_reported_in_the_status_until_it_reads_again() {
        let (_dir, root) = repo_with_commit();
        let branch = git(&root, &["symbolic-ref", "--short", "HEAD"]);
        let head = git(&root, &["rev-parse", "HEAD"]);
        let (monitor, _triggers) = monitor(&config(50, 10_000, 1));
        let mut events = monitor.subscribe_events();
        let id = RepoId::new("corrupt").unwrap();
        monitor
            .add_repository(repository("corrupt", &root))
            .await
            .unwrap();
        monitor.watched_dirs(&id).await.unwrap();
        let ref_path = root.join(".git/refs/heads").join(&branch);
        std::fs::write(&ref_path, "not an object id\n").unwrap();
        let event = next_event(&mut events, |e| {
            e.kind == EventKind::WatcherError && e.repo.as_ref() == Some(&id)
        })
        .await;
        assert!(event.message.contains("corrupt"), "{}", event.message);
        let status = monitor.status(&id).unwrap();
        assert_eq!(status.state, WatcherState::Watching);
        assert!(
            status
                .ref_error
                .as_deref()
                .is_some_and(|e| e.contains("corrupt")),
            "{status:?}"
        );
        // Repaired: the next look at the refs clears it.
        std::fs::write(&ref_path, format!("{head}\n")).unwrap();
        let deadline = std::time::Instant::now() + PATIENCE;
        while monitor.status(&id).unwrap().ref_error.is_some() {
            assert!(
                std::time::Instant::now() < deadline,
                "ref_error never cleared"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        monitor.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_path_that_is_not_a_repository_is_refused_with_an_event() {
        let dir = tempfile::tempdir().unwrap();
        let (monitor, _triggers) = monitor(&config(50, 10_000, 1));
        let mut events = monitor.subscribe_events();
        let result = monitor.add_repository(repository("nope", dir.path())).await;
        assert!(result.is_err());
        next_event(&mut events, |e| e.kind == EventKind::WatcherError).await;
        assert!(monitor.statuses().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_watch_budget_falls_back_to_polling_and_still_sees_changes() {
        let (_dir, root) = repo_with_commit();
        std::fs::create_dir_all(root.join("src/a")).unwrap();
        let options = MonitorOptions {
            watch_limit: Some(2),
            poll_interval: Duration::from_millis(100),
            ..quiet_options()
        };
        let (monitor, mut triggers) = Monitor::with_options(
            &config(50, 10_000, 1),
            &ThresholdsConfig::default(),
            options,
        );
        let status = monitor
            .add_repository(repository("poll", &root))
            .await
            .unwrap();
        let WatcherState::Polling { reason } = &status.state else {
            panic!("expected polling, got {:?}", status.state);
        };
        assert!(reason.contains("needs"), "{reason}");
        write(&root, "src/a/polled.txt", "x");
        until_file(&mut triggers, "src/a/polled.txt").await;
        monitor.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn new_ignore_globs_apply_at_run_time() {
        let (_dir, root) = repo_with_commit();
        std::fs::create_dir_all(root.join("build/out")).unwrap();
        let config_before = config(50, 10_000, 1);
        let (monitor, mut triggers) = monitor(&config_before);
        let id = RepoId::new("reconf").unwrap();
        monitor
            .add_repository(repository("reconf", &root))
            .await
            .unwrap();
        assert!(
            monitor
                .watched_dirs(&id)
                .await
                .unwrap()
                .contains(&root.join("build/out"))
        );
        let mut config_after = config_before.clone();
        config_after.filesystem.ignore = vec!["build/".into(), "*.tmp".into()];
        monitor.apply_config(&config_after, &ThresholdsConfig::default());
        // Commands are handled in order: once this answers, the globs apply.
        let watched = monitor.watched_dirs(&id).await.unwrap();
        assert_eq!(watched, std::slice::from_ref(&root));
        write(&root, "build/out/x.o", "x");
        write(&root, "scratch.tmp", "x");
        write(&root, "real.txt", "x");
        let seen = until_file(&mut triggers, "real.txt").await;
        for trigger in &seen {
            assert!(
                trigger
                    .paths
                    .iter()
                    .all(|p| !p.starts_with("build") && !p.to_ascii_lowercase().ends_with(".tmp")),
                "{:?}",
                trigger.paths
            );
        }
        monitor.shutdown().await;
    }
}

mod git_triggers {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_commit_and_a_moved_remote_tracking_ref_each_give_exactly_one_trigger() {
        let (_dir, root) = repo_with_commit();
        let remote = tempfile::tempdir().unwrap();
        git(remote.path(), &["init", "-q", "--bare"]);
        git(
            &root,
            &["remote", "add", "origin", remote.path().to_str().unwrap()],
        );
        git(&root, &["push", "-q", "-u", "origin", "main"]);
        let first = git(&root, &["rev-parse", "HEAD"]);

        let (monitor, mut triggers) = monitor(&config(50, 10_000, 1));
        monitor
            .add_repository(repository("refs", &root))
            .await
            .unwrap();

        write(&root, "file.txt", "1");
        git(&root, &["add", "file.txt"]);
        git(&root, &["commit", "-q", "-m", "second"]);
        let second = git(&root, &["rev-parse", "HEAD"]);
        git(&root, &["push", "-q", "origin", "main"]);
        write(&root, "sentinel.txt", "end");

        let seen = until_file(&mut triggers, "sentinel.txt").await;
        let refs: Vec<&Trigger> = seen
            .iter()
            .filter(|t| t.kind != TriggerKind::FileChange)
            .collect();
        assert_eq!(refs.len(), 2, "{refs:#?}");
        let commit = refs
            .iter()
            .find(|t| t.kind == TriggerKind::Commit)
            .expect("commit trigger");
        assert_eq!(commit.commit.as_deref(), Some(second.as_str()));
        assert_eq!(commit.previous_commit.as_deref(), Some(first.as_str()));
        let push = refs
            .iter()
            .find(|t| t.kind == TriggerKind::Push)
            .expect("push trigger");
        assert_eq!(push.commit.as_deref(), Some(second.as_str()));
        assert_eq!(push.previous_commit.as_deref(), Some(first.as_str()));
        monitor.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_linked_worktree_takes_the_shared_exclude_and_its_commits_trigger() {
        let (_dir, root) = repo_with_commit();
        // git reads info/exclude from the common directory, not from
        // .git/worktrees/<name>.
        write(&root, ".git/info/exclude", "venv/\n");
        let parent = tempfile::tempdir().unwrap();
        let wt = std::fs::canonicalize(parent.path()).unwrap().join("wt");
        git(
            &root,
            &["worktree", "add", "-q", "-b", "side", wt.to_str().unwrap()],
        );
        std::fs::create_dir_all(wt.join("venv/lib")).unwrap();
        std::fs::create_dir_all(wt.join("src")).unwrap();
        let untracked = git(&wt, &["status", "--porcelain", "--untracked-files=all"]);
        assert!(!untracked.contains("venv"), "git itself: {untracked}");

        let (monitor, mut triggers) = monitor(&config(50, 10_000, 1));
        let id = RepoId::new("wt").unwrap();
        monitor.add_repository(repository("wt", &wt)).await.unwrap();
        let watched = watched_set(&monitor, &id).await;
        assert_eq!(watched, BTreeSet::from([wt.clone(), wt.join("src")]));

        // The branch ref a commit moves lives in the main .git.
        let first = git(&wt, &["rev-parse", "HEAD"]);
        write(&wt, "venv/lib/x.py", "x");
        write(&wt, "file.txt", "1");
        git(&wt, &["add", "file.txt"]);
        git(&wt, &["commit", "-q", "-m", "second"]);
        let second = git(&wt, &["rev-parse", "HEAD"]);
        write(&wt, "sentinel.txt", "end");
        let seen = until_file(&mut triggers, "sentinel.txt").await;
        let commits: Vec<&Trigger> = seen
            .iter()
            .filter(|t| t.kind == TriggerKind::Commit)
            .collect();
        assert_eq!(commits.len(), 1, "{seen:#?}");
        assert_eq!(commits[0].commit.as_deref(), Some(second.as_str()));
        assert_eq!(commits[0].previous_commit.as_deref(), Some(first.as_str()));
        assert!(
            seen.iter()
                .flat_map(|t| t.paths.iter())
                .all(|path| !path.starts_with("venv")),
            "{seen:#?}"
        );
        monitor.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reset_to_an_ancestor_is_not_a_commit() {
        let (_dir, root) = repo_with_commit();
        write(&root, "a.txt", "1");
        git(&root, &["add", "."]);
        git(&root, &["commit", "-q", "-m", "two"]);
        let (monitor, mut triggers) = monitor(&config(50, 10_000, 1));
        monitor
            .add_repository(repository("reset", &root))
            .await
            .unwrap();
        git(&root, &["reset", "-q", "--soft", "HEAD~1"]);
        write(&root, "sentinel.txt", "end");
        let seen = until_file(&mut triggers, "sentinel.txt").await;
        assert!(
            seen.iter().all(|t| t.kind == TriggerKind::FileChange),
            "{seen:#?}"
        );
        monitor.shutdown().await;
    }
}

mod analysis {
    use super::*;

    const NESTED_V1: &str = "def f():\n    return 1\n";
    const NESTED: &str = "def f(x):\n    if x:\n        return 1\n    return 2\n";
    const FLAT: &str = "a = 1\nb = 2\nc = 3\n";

    /// History (committer dates): notes.txt added 200 days ago (outside the
    /// 90-day window); then, recently: one commit adding flat.py, nested.py
    /// (first version), README.md and changing notes.txt; two commits
    /// changing nested.py.
    fn crafted_repo() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        git(&root, &["init", "-q"]);
        let old = jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24 * 200);
        let old = format!("{} +0000", old.as_second());
        write(&root, "notes.txt", "old\n");
        git(&root, &["add", "."]);
        git_env(
            &root,
            &["commit", "-q", "-m", "old"],
            &[("GIT_COMMITTER_DATE", &old), ("GIT_AUTHOR_DATE", &old)],
        );
        write(&root, "notes.txt", "new\n");
        write(&root, "flat.py", FLAT);
        write(&root, "nested.py", NESTED_V1);
        write(&root, "README.md", "# crafted\n");
        git(&root, &["add", "."]);
        git(&root, &["commit", "-q", "-m", "c1"]);
        write(&root, "nested.py", "def f(x):\n    return x\n");
        git(&root, &["commit", "-q", "-am", "c2"]);
        write(&root, "nested.py", NESTED);
        git(&root, &["commit", "-q", "-am", "c3"]);
        (dir, root)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_formulas_hold_on_a_crafted_history() {
        let (_dir, root) = crafted_repo();
        let analyzer = Analyzer::new(AnalyzerOptions::default());
        let repo = RepoId::new("crafted").unwrap();
        let report = analyzer.analyse(&repo, &root).await.unwrap();

        // Counts in the window: nested.py 3, flat.py 1, README.md 1,
        // notes.txt 1 (its old commit is outside). 4 files in the tree.
        let p = [0.5, 1.0 / 6.0, 1.0 / 6.0, 1.0 / 6.0];
        let h: f64 = p.iter().map(|p: &f64| -p * p.log2()).sum();
        let chaos = h / 4f64.log2();
        assert!(
            close(report.chaos, chaos),
            "chaos {} != {chaos}",
            report.chaos
        );

        // nested.py: indents 0, 1, 2, 1 → mean 1 → 0.5; flat.py: 0.
        // Markdown and plain text are not code. Weighted by lines: 4 and 3.
        let complexity = (4.0 * 0.5 + 3.0 * 0.0) / 7.0;
        assert!(
            close(report.complexity, complexity),
            "complexity {}",
            report.complexity
        );

        assert_eq!(report.hotspots.len(), 2);
        assert_eq!(report.hotspots[0].path, "nested.py");
        assert_eq!(report.hotspots[0].changes, 3);
        assert!(close(report.hotspots[0].score, 1.0));
        assert!(close(report.hotspots[0].complexity, 0.5));
        assert_eq!(report.hotspots[1].path, "flat.py");
        assert!(close(report.hotspots[1].score, 0.0));

        let concentration = (3.0 * 0.5) / 6.0;
        let health = 1.0 - (0.5 * complexity + 0.3 * chaos + 0.2 * concentration);
        assert!(
            close(report.health, health),
            "health {} != {health}",
            report.health
        );

        let python = &report.loc_by_language["Python"];
        assert_eq!((python.files, python.code), (2, 7));
        assert_eq!(
            report.commit.as_deref(),
            Some(git(&root, &["rev-parse", "HEAD"]).as_str())
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_cache_answers_without_recomputing_and_concurrent_callers_compute_once() {
        let (_dir, root) = crafted_repo();
        let analyzer = Analyzer::new(AnalyzerOptions::default());
        let repo = RepoId::new("cached").unwrap();
        let calls = (0..8).map(|_| {
            let analyzer = analyzer.clone();
            let repo = repo.clone();
            let root = root.clone();
            tokio::spawn(async move { analyzer.analyse(&repo, &root).await.unwrap() })
        });
        let reports: Vec<_> = futures::future::join_all(calls)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(analyzer.stats().computations, 1);
        assert!(reports.iter().all(|r| Arc::ptr_eq(r, &reports[0])));

        let again = analyzer.analyse(&repo, &root).await.unwrap();
        assert!(Arc::ptr_eq(&again, &reports[0]));
        let stats = analyzer.stats();
        assert_eq!((stats.computations, stats.misses, stats.hits), (1, 1, 8));

        // A new head is a new key.
        write(&root, "flat.py", "a = 2\n");
        git(&root, &["commit", "-q", "-am", "c4"]);
        let fresh = analyzer.analyse(&repo, &root).await.unwrap();
        assert!(!Arc::ptr_eq(&fresh, &reports[0]));
        assert_eq!(analyzer.stats().computations, 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_threshold_crossing_fires_once() {
        let (_dir, root) = crafted_repo();
        let thresholds = ThresholdsConfig {
            chaos_threshold: 0.5,
            complexity_threshold: 0.99,
        };
        let (monitor, mut triggers) =
            Monitor::with_options(&config(50, 10_000, 1), &thresholds, quiet_options());
        let mut events = monitor.subscribe_events();
        let id = RepoId::new("thr").unwrap();
        monitor
            .add_repository(repository("thr", &root))
            .await
            .unwrap();
        let report = monitor.analysis(&id).await.unwrap();
        assert!(report.chaos > 0.5);
        next_event(&mut events, |e| e.kind == EventKind::AnalysisCompleted).await;
        let trigger = next_of(&mut triggers, TriggerKind::Threshold).await;
        assert_eq!(trigger.commit, report.commit);
        // Computed again, still above: no second trigger.
        monitor.analyzer().invalidate_all();
        monitor.analysis(&id).await.unwrap();
        assert_eq!(monitor.analyzer().stats().computations, 2);
        write(&root, "sentinel.txt", "x");
        let seen = until_file(&mut triggers, "sentinel.txt").await;
        assert!(
            seen.iter().all(|t| t.kind == TriggerKind::FileChange),
            "{seen:#?}"
        );
        monitor.shutdown().await;
    }
}
