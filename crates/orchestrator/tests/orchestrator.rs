//! The orchestrator end to end, in-process: real git repositories built
//! with the git CLI in temporary directories, a real SQLite store, real
//! child processes. Results are checked with `git` itself.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::too_many_lines)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orchex_core::config::Config;
use orchex_core::{
    Delivery, Event, EventKind, Job, JobId, JobState, Pipeline, RepoId, Repository, RollbackState,
    SkipReason, Step, TriggerKind,
};
use orchex_orchestrator::{
    ControlError, Events, ManualRun, Orchestrator, OrchestratorDeps, RunState,
};
use orchex_resilience::{ManualClock, SharedClock};
use orchex_store::{JobStore, SqliteStore, StoreOptions};

// === fixtures ===

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "Test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A repository with a committed `schema/api.txt` and `README.md`.
fn repo_fixture(root: &Path, name: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("schema")).unwrap();
    git(&dir, &["init", "-q", "-b", "main"]);
    std::fs::write(dir.join("schema/api.txt"), "v1\n").unwrap();
    std::fs::write(dir.join("README.md"), "hello\n").unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-q", "-m", "initial"]);
    dir
}

fn run_step(name: &str, script: &str) -> Step {
    Step {
        name: name.into(),
        run: Some(vec!["sh".into(), "-c".into(), script.into()]),
        ..Step::default()
    }
}

fn pipeline(name: &str, script: &str) -> Pipeline {
    let mut pipeline = Pipeline::new(name, vec![run_step("generate", script)]);
    pipeline.triggers = vec![TriggerKind::Manual];
    pipeline
}

struct Harness {
    _dir: tempfile::TempDir,
    root: PathBuf,
    store: Arc<SqliteStore>,
    orchestrator: Orchestrator,
    events: Arc<Mutex<Vec<Event>>>,
    clock: ManualClock,
}

impl Harness {
    async fn new(configure: impl FnOnce(&mut Config, &Path)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let mut config = Config::default();
        config.orchestrator.max_concurrent = 4;
        config.orchestrator.adaptive_optimization = false;
        config.optimizer.schedule.enabled = false;
        config.optimizer.safety.rate_limit_per_hour = 1000;
        let path = repo_fixture(&root, "api");
        config.repositories.push(Repository {
            name: RepoId::new("api").unwrap(),
            path,
            enabled: true,
            branch: Some("main".into()),
        });
        configure(&mut config, &root);
        let store = Arc::new(
            SqliteStore::open_in_dir(root.join("data"), StoreOptions::default())
                .await
                .unwrap(),
        );
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let clock = ManualClock::new();
        let mut deps = OrchestratorDeps::new(
            store.clone(),
            Events::new(move |event| sink.lock().unwrap().push(event)),
            root.join("data"),
        );
        deps.clock = SharedClock::from(clock.clone());
        let orchestrator = Orchestrator::new(&config, deps).unwrap();
        Self {
            _dir: dir,
            root,
            store,
            orchestrator,
            events,
            clock,
        }
    }

    fn repo(&self) -> PathBuf {
        self.root.join("api")
    }

    fn start(&self) {
        self.orchestrator.start(futures::stream::pending()).unwrap();
    }

    async fn run(&self, pipeline: &str) -> Vec<Job> {
        self.orchestrator
            .trigger(ManualRun {
                repo: "api".into(),
                pipeline: Some(pipeline.into()),
                ..ManualRun::default()
            })
            .await
            .unwrap()
    }

    async fn wait_final(&self, id: JobId) -> Job {
        for _ in 0..3000 {
            let job = self.store.get_job(id).await.unwrap().unwrap();
            if !matches!(job.state(), JobState::Queued | JobState::Running) {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("job {id} did not finish");
    }

    fn kinds(&self) -> Vec<EventKind> {
        self.events.lock().unwrap().iter().map(|e| e.kind).collect()
    }
}

/// Commits a change on main, so that the next job's inputs differ.
fn bump(repo: &Path) {
    let n = git(repo, &["rev-list", "--count", "HEAD"]);
    std::fs::write(repo.join("schema/api.txt"), format!("bumped {n}\n")).unwrap();
    git(repo, &["commit", "-q", "-am", "bump"]);
}

/// A started harness with one pipeline, `codegen`, that writes a fresh
/// stamp on every run (so each run delivers a new commit).
async fn codegen_harness() -> Harness {
    let h = Harness::new(|config, _| {
        config
            .pipelines
            .push(pipeline("codegen", "date +%N > stamp"));
    })
    .await;
    h.start();
    h
}

/// Bumps main and runs `codegen` once; asserts that it delivered.
async fn deliver_codegen(h: &Harness) -> Job {
    bump(&h.repo());
    let job = h.wait_final(h.run("codegen").await.remove(0).id).await;
    assert_eq!(
        job.state(),
        JobState::Succeeded,
        "{:?} {:?}",
        job.skip_reason,
        job.error
    );
    job
}

fn status(repo: &Path) -> (String, String, String) {
    (
        git(repo, &["status", "--porcelain"]),
        git(repo, &["rev-parse", "HEAD"]),
        git(repo, &["symbolic-ref", "HEAD"]),
    )
}

// === lifecycle ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_refuses_twice_and_stop_cancels_jobs_after_the_grace_period() {
    let h = Harness::new(|config, _| {
        config.pipelines.push(pipeline("slow", "sleep 1000"));
    })
    .await;
    h.start();
    assert!(h.orchestrator.start(futures::stream::pending()).is_err());
    let job = h.run("slow").await.remove(0);
    for _ in 0..500 {
        if h.store.get_job(job.id).await.unwrap().unwrap().state() == JobState::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    h.orchestrator.stop(Duration::from_millis(200)).await;
    assert!(!h.orchestrator.is_started());
    let job = h.store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(job.state(), JobState::Cancelled);
    assert_eq!(h.orchestrator.state(), RunState::Stopped);
    assert!(h.kinds().contains(&EventKind::OrchestratorStopped));
}

/// Found while writing the benches: a cycle took only the jobs queued when
/// it started, and the next cycle started only when it ended, so one long
/// job kept every other slot idle while work waited. Cycles now start on
/// the free slots whenever work is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_job_does_not_keep_the_other_slots_idle() {
    let h = Harness::new(|config, _| {
        config.orchestrator.max_concurrent = 2;
        config.pipelines.push(pipeline("slow", "sleep 1000"));
        config.pipelines.push(pipeline("quick", "true"));
        for p in &mut config.pipelines {
            p.deliver = Delivery::None;
        }
    })
    .await;
    h.start();
    let slow = h.run("slow").await.remove(0);
    for _ in 0..500 {
        if h.store.get_job(slow.id).await.unwrap().unwrap().state() == JobState::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Queued after the slow job's cycle began; three in a row, so a freed
    // slot is filled again too.
    for _ in 0..3 {
        let quick = h
            .orchestrator
            .trigger(ManualRun {
                repo: "api".into(),
                pipeline: Some("quick".into()),
                // Not skipped as `unchanged` after the first.
                force: true,
                ..ManualRun::default()
            })
            .await
            .unwrap()
            .remove(0);
        let done = h.wait_final(quick.id).await;
        assert_eq!(
            done.state(),
            JobState::Succeeded,
            "{:?} {:?}",
            done.error,
            done.skip_reason
        );
    }
    let slow_now = h.store.get_job(slow.id).await.unwrap().unwrap();
    assert_eq!(slow_now.state(), JobState::Running);
    let running = h.orchestrator.snapshot().await.running;
    assert_eq!(running.len(), 1, "only the slow job is running");
    h.orchestrator.stop(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failure_leaves_the_cycle_complete_with_the_right_counts() {
    let h = Harness::new(|config, _| {
        for n in 0..4 {
            config.pipelines.push(pipeline(&format!("ok{n}"), "true"));
        }
        config
            .pipelines
            .push(pipeline("broken", "echo boom >&2; exit 7"));
        for p in &mut config.pipelines {
            p.deliver = Delivery::None;
        }
    })
    .await;
    let jobs = h
        .orchestrator
        .trigger(ManualRun {
            repo: "api".into(),
            ..ManualRun::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 5);
    // Run one cycle directly, with the loops not started.
    h.orchestrator.start(futures::stream::pending()).unwrap();
    h.orchestrator.pause().unwrap();
    h.orchestrator.resume().unwrap();
    let mut finals = Vec::new();
    for job in &jobs {
        finals.push(h.wait_final(job.id).await);
    }
    let failed: Vec<&Job> = finals
        .iter()
        .filter(|j| j.state() == JobState::Failed)
        .collect();
    assert_eq!(failed.len(), 1);
    assert!(
        failed[0]
            .error
            .as_deref()
            .unwrap()
            .contains("exited with code 7")
    );
    assert_eq!(failed[0].steps[0].exit_code, Some(7));
    assert!(
        failed[0].steps[0]
            .output_tail
            .as_deref()
            .unwrap()
            .contains("boom")
    );
    assert_eq!(
        finals
            .iter()
            .filter(|j| j.state() == JobState::Succeeded)
            .count(),
        4
    );
    // The cycle records its statistics after its last job's final write,
    // which `wait_final` may see first.
    let mut stats = h.orchestrator.stats();
    for _ in 0..500 {
        if stats.total_cycles >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        stats = h.orchestrator.stats();
    }
    assert!(stats.total_cycles >= 1);
    assert_eq!(stats.jobs_by_outcome.get("succeeded"), Some(&4));
    assert_eq!(stats.jobs_by_outcome.get("failed"), Some(&1));
    h.orchestrator.stop(Duration::from_secs(5)).await;
    assert!(h.kinds().contains(&EventKind::CycleCompleted));
}

// === delivery ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn branch_delivery_commits_on_the_branch_and_leaves_the_user_untouched() {
    let h = Harness::new(|config, _| {
        config.pipelines.push(pipeline(
            "codegen",
            "mkdir -p generated && cat schema/api.txt > generated/api.rs && echo \"$ORCHEX_TRIGGER\" > generated/trigger",
        ));
    })
    .await;
    // The user has uncommitted work in progress.
    std::fs::write(h.repo().join("README.md"), "work in progress\n").unwrap();
    let before = status(&h.repo());
    h.start();
    let job = h.run("codegen").await.remove(0);
    let job = h.wait_final(job.id).await;
    assert_eq!(job.state(), JobState::Succeeded, "{:?}", job.error);
    assert_eq!(job.changed, Some(true));
    let delivery = job.delivery.clone().unwrap();
    assert_eq!(delivery.branch.as_deref(), Some("orchex/codegen"));
    assert_eq!(delivery.previous, None);
    let diff = job.diff.clone().unwrap();
    assert_eq!(diff.added, vec!["generated/api.rs", "generated/trigger"]);
    assert_eq!(
        status(&h.repo()),
        before,
        "the user's tree, HEAD or branch changed"
    );
    let repo = h.repo();
    assert_eq!(
        git(&repo, &["rev-parse", "orchex/codegen"]),
        delivery.commit.clone().unwrap()
    );
    assert_eq!(
        git(&repo, &["rev-parse", "orchex/codegen^"]),
        git(&repo, &["rev-parse", "main"])
    );
    assert_eq!(
        git(&repo, &["show", "orchex/codegen:generated/api.rs"]),
        "v1"
    );
    assert_eq!(
        git(&repo, &["show", "orchex/codegen:generated/trigger"]),
        "manual"
    );
    git(&repo, &["fsck", "--strict"]);
    // The impact of the new file is recorded.
    assert!(
        job.impact
            .as_ref()
            .is_some_and(|i| i.iter().any(|f| f.path == "generated/api.rs"))
    );

    // Same inputs again: skipped as unchanged, unless forced.
    let again = h.run("codegen").await.remove(0);
    let again = h.wait_final(again.id).await;
    assert_eq!(again.state(), JobState::Skipped);
    assert_eq!(again.skip_reason, Some(SkipReason::Unchanged));
    let forced = h
        .orchestrator
        .trigger(ManualRun {
            repo: "api".into(),
            pipeline: Some("codegen".into()),
            force: true,
            ..ManualRun::default()
        })
        .await
        .unwrap()
        .remove(0);
    let forced = h.wait_final(forced.id).await;
    assert_eq!(forced.state(), JobState::Succeeded);
    // The result equals the branch content, yet it is a new commit on top of main.
    assert_eq!(forced.delivery.unwrap().previous, delivery.commit);

    // Rollback of the older job is refused: a later job wrote the branch since.
    let refused = h.orchestrator.rollback(job.id).await.unwrap_err();
    assert!(matches!(refused, ControlError::Conflict(_)), "{refused:?}");
    // Rolling back the newest one restores exactly what it replaced.
    h.orchestrator.rollback(forced.id).await.unwrap();
    assert_eq!(
        git(&repo, &["rev-parse", "orchex/codegen"]),
        delivery.commit.clone().unwrap()
    );
    let rolled = h.store.get_job(forced.id).await.unwrap().unwrap();
    assert_eq!(rolled.state(), JobState::RolledBack);
    assert!(h.kinds().contains(&EventKind::JobRolledBack));
    h.orchestrator.stop(Duration::from_secs(5)).await;
}

/// "`none` / dry run: nothing is written to the repository": no ref, no
/// file, and no object either (a dry run used to leave its blobs, trees
/// and an unreachable commit in `.git/objects`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_leaves_the_repository_byte_for_byte_as_it_was() {
    let h = Harness::new(|config, _| {
        config.pipelines.push(pipeline(
            "codegen",
            "mkdir -p generated && date +%N > generated/api.rs",
        ));
    })
    .await;
    h.start();
    let repo = h.repo();
    let objects = || git(&repo, &["count-objects", "-v"]);
    let refs = || git(&repo, &["for-each-ref"]);
    let (objects_before, refs_before) = (objects(), refs());
    let status_before = git(&repo, &["status", "--porcelain"]);

    let job = h
        .orchestrator
        .trigger(ManualRun {
            repo: "api".into(),
            pipeline: Some("codegen".into()),
            dry_run: true,
            ..ManualRun::default()
        })
        .await
        .unwrap()
        .remove(0);
    let job = h.wait_final(job.id).await;
    assert_eq!(job.state(), JobState::Succeeded, "{:?}", job.error);
    let diff = job.diff.clone().unwrap();
    assert_eq!(diff.added, ["generated/api.rs"], "{diff:?}");
    let delivery = job.delivery.unwrap();
    assert_eq!(delivery.kind, Delivery::None);
    assert_eq!(delivery.commit, None, "no commit was written");
    assert_eq!(objects(), objects_before);
    assert_eq!(refs(), refs_before);
    assert_eq!(git(&repo, &["status", "--porcelain"]), status_before);
    h.orchestrator.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hand_edited_delivery_branch_is_left_alone() {
    let h = codegen_harness().await;
    let first = h.wait_final(h.run("codegen").await.remove(0).id).await;
    assert_eq!(first.state(), JobState::Succeeded);
    // A human commits on orchex/codegen.
    let repo = h.repo();
    git(&repo, &["checkout", "-q", "orchex/codegen"]);
    std::fs::write(repo.join("human.txt"), "mine\n").unwrap();
    git(&repo, &["add", "human.txt"]);
    git(&repo, &["commit", "-q", "-m", "human edit"]);
    git(&repo, &["checkout", "-q", "main"]);
    let human_tip = git(&repo, &["rev-parse", "orchex/codegen"]);
    bump(&repo);
    let second = h.wait_final(h.run("codegen").await.remove(0).id).await;
    assert_eq!(second.state(), JobState::Skipped);
    assert_eq!(
        second.skip_reason,
        Some(SkipReason::ManuallyEdited {
            branch: "orchex/codegen".into()
        })
    );
    assert_eq!(git(&repo, &["rev-parse", "orchex/codegen"]), human_tip);
    // Rollback refuses too: the branch holds the human's commit.
    assert!(matches!(
        h.orchestrator.rollback(first.id).await,
        Err(ControlError::Conflict(_))
    ));
    assert_eq!(git(&repo, &["rev-parse", "orchex/codegen"]), human_tip);
    h.orchestrator.stop(Duration::from_secs(5)).await;
}

/// Found by the crash loop (`orchex-reliability crash-loop`): after two
/// rollbacks in a row the branch was where orchex had put it, yet the next
/// job was skipped as `manuallyEdited`, and every one after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollbacks_in_a_row_are_not_mistaken_for_a_human_edit() {
    let h = codegen_harness().await;
    let repo = h.repo();
    let deliver = || deliver_codegen(&h);
    let tip = || git(&repo, &["rev-parse", "--verify", "-q", "orchex/codegen"]);
    let first = deliver().await;
    let second = deliver().await;
    let third = deliver().await;
    // Undo the two newest deliveries, newest first.
    h.orchestrator.rollback(third.id).await.unwrap();
    h.orchestrator.rollback(second.id).await.unwrap();
    let first_commit = first.delivery.clone().unwrap().commit.unwrap();
    assert_eq!(tip(), first_commit);
    // The branch is where orchex left it: the next job delivers on top.
    let fourth = deliver().await;
    assert_eq!(
        fourth.delivery.clone().unwrap().previous.as_deref(),
        Some(first_commit.as_str())
    );
    // Rolling back every delivery deletes the branch; deliveries go on.
    h.orchestrator.rollback(fourth.id).await.unwrap();
    h.orchestrator.rollback(first.id).await.unwrap();
    assert!(
        !Command::new("git")
            .args(["rev-parse", "--verify", "-q", "refs/heads/orchex/codegen"])
            .current_dir(&repo)
            .status()
            .unwrap()
            .success()
    );
    let fifth = deliver().await;
    assert_eq!(fifth.delivery.clone().unwrap().previous, None);
    // Deleting the branch (an operator's reset) resumes deliveries too.
    git(&repo, &["branch", "-D", "orchex/codegen"]);
    let sixth = deliver().await;
    assert_eq!(sixth.delivery.clone().unwrap().previous, None);
    assert_eq!(tip(), sixth.delivery.unwrap().commit.unwrap());
    h.orchestrator.stop(Duration::from_secs(5)).await;
}

/// Found by the crash loop: a rollback moved the branch back and the daemon
/// died before the job was marked `rolledBack`. The job stayed `succeeded`
/// with its commit gone from the branch, so every later delivery was
/// skipped as `manuallyEdited`. The rollback's intent is durable now, and
/// recovery finishes it whether or not the branch had moved yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_cut_short_is_finished_by_recovery() {
    let h = Harness::new(|config, _| {
        config
            .pipelines
            .push(pipeline("codegen", "date +%N > stamp"));
    })
    .await;
    let repo = h.repo();
    let deliver = || async {
        bump(&repo);
        let job = h.wait_final(h.run("codegen").await.remove(0).id).await;
        assert_eq!(job.state(), JobState::Succeeded, "{:?}", job.skip_reason);
        job
    };
    let tip = || git(&repo, &["rev-parse", "orchex/codegen"]);
    let commit_of = |job: &Job| job.delivery.clone().unwrap().commit.unwrap();
    let store = &h.store;
    let cut_short = |job: &Job| {
        let id = job.id;
        async move {
            store
                .update_job(
                    id,
                    orchex_store::JobPatch::new().rollback(RollbackState::InProgress),
                )
                .await
                .unwrap();
        }
    };
    h.start();
    let first = deliver().await;
    let second = deliver().await;
    h.orchestrator.stop(Duration::from_secs(5)).await;

    // Killed before the branch moved: recovery moves it.
    cut_short(&second).await;
    let summary = h.orchestrator.recover().await.unwrap();
    assert_eq!(summary.finished_rollbacks, vec![second.id]);
    assert_eq!(tip(), commit_of(&first));
    let second = h.store.get_job(second.id).await.unwrap().unwrap();
    assert_eq!(second.state(), JobState::RolledBack);
    assert_eq!(second.rollback, Some(RollbackState::RolledBack));

    // Killed after the branch moved: recovery records it.
    h.start();
    let third = deliver().await;
    h.orchestrator.stop(Duration::from_secs(5)).await;
    cut_short(&third).await;
    git(
        &repo,
        &[
            "update-ref",
            "refs/heads/orchex/codegen",
            &commit_of(&first),
        ],
    );
    let summary = h.orchestrator.recover().await.unwrap();
    assert_eq!(summary.finished_rollbacks, vec![third.id]);
    assert_eq!(
        h.store.get_job(third.id).await.unwrap().unwrap().state(),
        JobState::RolledBack
    );
    assert!(h.kinds().contains(&EventKind::JobRolledBack));

    // The branch is where the records say: the next job delivers on top.
    h.start();
    let fourth = deliver().await;
    assert_eq!(
        fourth.delivery.clone().unwrap().previous,
        Some(commit_of(&first))
    );
    h.orchestrator.stop(Duration::from_secs(5)).await;
    assert!(
        h.orchestrator
            .recover()
            .await
            .unwrap()
            .finished_rollbacks
            .is_empty()
    );
}

/// A worktree rollback that restored some files and not the others when
/// the daemon died: recovery restores the rest, and what was restored
/// already is not taken for a change made since.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worktree_rollback_cut_short_is_finished_by_recovery() {
    let h = worktree_harness("fix", "echo v2 > schema/api.txt; echo new > added.txt").await;
    let repo = h.repo();
    h.start();
    let job = h.wait_final(h.run("fix").await.remove(0).id).await;
    assert_eq!(job.state(), JobState::Succeeded, "{:?}", job.error);
    h.orchestrator.stop(Duration::from_secs(5)).await;
    h.store
        .update_job(
            job.id,
            orchex_store::JobPatch::new().rollback(RollbackState::InProgress),
        )
        .await
        .unwrap();
    std::fs::write(repo.join("schema/api.txt"), "v1\n").unwrap();

    let summary = h.orchestrator.recover().await.unwrap();
    assert_eq!(summary.finished_rollbacks, vec![job.id]);
    assert!(!repo.join("added.txt").exists());
    assert_eq!(
        std::fs::read_to_string(repo.join("schema/api.txt")).unwrap(),
        "v1\n"
    );
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
    assert_eq!(
        h.store.get_job(job.id).await.unwrap().unwrap().state(),
        JobState::RolledBack
    );
}

/// A job of `pipeline` on `api` that a daemon, now dead, had claimed: it is
/// `running` in the store with nobody running it.
async fn running_job_of_a_dead_daemon(h: &Harness, pipeline: &str) -> Job {
    let repo_id = RepoId::new("api").unwrap();
    let job = Job::new(
        repo_id.clone(),
        pipeline.into(),
        orchex_core::Trigger::manual(repo_id),
    );
    h.store.insert_job(job.clone()).await.unwrap();
    let claimed = h
        .store
        .claim_next("crashed", Duration::from_secs(60))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(claimed.id, job.id);
    claimed
}

/// A harness with one worktree-delivery pipeline `name` running `script`.
async fn worktree_harness(name: &str, script: &str) -> Harness {
    let (name, script) = (name.to_owned(), script.to_owned());
    Harness::new(move |config, _| {
        let mut p = pipeline(&name, &script);
        p.deliver = Delivery::Worktree;
        config.pipelines.push(p);
    })
    .await
}

/// Runs `pipeline` once to success on a started harness, then stops it.
async fn deliver_once(h: &Harness, pipeline: &str) -> Job {
    h.start();
    let delivered = h.wait_final(h.run(pipeline).await.remove(0).id).await;
    assert_eq!(
        delivered.state(),
        JobState::Succeeded,
        "{:?}",
        delivered.error
    );
    h.orchestrator.stop(Duration::from_secs(5)).await;
    delivered
}

/// A job of `delivered`'s pipeline caught by a crash in the middle of the
/// same delivery: running, with its intent (record and backups) stored.
async fn cut_short_like(h: &Harness, delivered: &Job) -> (Job, Vec<orchex_store::Backup>) {
    use orchex_store::BackupStore as _;
    let job = running_job_of_a_dead_daemon(h, &delivered.pipeline).await;
    let backups = h.store.backups(delivered.id).await.unwrap();
    h.store.put_backups(job.id, backups.clone()).await.unwrap();
    h.store
        .update_job(
            job.id,
            orchex_store::JobPatch::new().delivery(delivered.delivery.clone().unwrap()),
        )
        .await
        .unwrap();
    (job, backups)
}

/// A worktree delivery that only made a file executable, cut short by a
/// crash: recovery takes the mode back too (the content alone says nothing
/// changed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_mode_only_delivery_is_undone() {
    use std::os::unix::fs::PermissionsExt as _;
    let h = worktree_harness("chmod", "chmod +x schema/api.txt").await;
    let repo = h.repo();
    let mode = |repo: &Path| {
        std::fs::metadata(repo.join("schema/api.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    let before = mode(&repo);
    let delivered = deliver_once(&h, "chmod").await;
    assert_ne!(mode(&repo), before, "the job made the file executable");

    cut_short_like(&h, &delivered).await;
    let summary = h.orchestrator.recover().await.unwrap();
    assert_eq!(summary.undone_deliveries, 1, "{summary:?}");
    assert_eq!(mode(&repo), before);
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
}

/// A worktree delivery cut short by a crash, whose undo cannot write one of
/// the files back: what can be put back is, and the job is failed with the
/// file named instead of being run again (a re-run would snapshot the
/// half-applied tree as the user's and replace the backups of what the
/// user had).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_interrupted_worktree_delivery_that_cannot_be_undone_fails_and_keeps_its_backups() {
    use orchex_store::BackupStore as _;
    let h = worktree_harness(
        "fix",
        "echo v2 > schema/api.txt; mkdir -p gen; echo new > gen/out.txt",
    )
    .await;
    let repo = h.repo();
    let delivered = deliver_once(&h, "fix").await;

    // The same delivery, as a job that was running it when the daemon died.
    let (job, backups) = cut_short_like(&h, &delivered).await;
    // Before the restart, `gen` became a file: gen/out.txt can be neither
    // read nor written back.
    std::fs::remove_dir_all(repo.join("gen")).unwrap();
    std::fs::write(repo.join("gen"), "a file now\n").unwrap();

    let summary = h.orchestrator.recover().await.unwrap();
    assert_eq!(summary.failed, vec![job.id], "{summary:?}");
    assert!(summary.requeued.is_empty(), "{summary:?}");
    assert_eq!(summary.undone_deliveries, 1, "{summary:?}");
    assert_eq!(
        std::fs::read_to_string(repo.join("schema/api.txt")).unwrap(),
        "v1\n"
    );
    let after = h.store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(after.state(), JobState::Failed);
    let error = after.error.unwrap_or_default();
    assert!(error.contains("gen/out.txt"), "{error}");
    assert_eq!(h.store.backups(job.id).await.unwrap(), backups);
}

/// Two operators roll back the same job at once: one rolls it back, the
/// other is told it is rolled back already, and the job's record is not
/// turned into `superseded` by the loser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_rollbacks_of_one_job_roll_it_back_once() {
    let h = codegen_harness().await;
    bump(&h.repo());
    let job = h.wait_final(h.run("codegen").await.remove(0).id).await;
    assert_eq!(job.state(), JobState::Succeeded, "{:?}", job.skip_reason);
    let (a, b) = tokio::join!(
        h.orchestrator.rollback(job.id),
        h.orchestrator.rollback(job.id)
    );
    assert_eq!(
        usize::from(a.is_ok()) + usize::from(b.is_ok()),
        1,
        "{a:?} {b:?}"
    );
    let loser = a.err().or(b.err()).unwrap();
    assert!(
        matches!(loser, ControlError::Conflict(ref m) if m.contains("rolledBack")),
        "{loser:?}"
    );
    let job = h.store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(job.state(), JobState::RolledBack);
    assert_eq!(job.rollback, Some(RollbackState::RolledBack));
    h.orchestrator.stop(Duration::from_secs(5)).await;
}

/// A rollback refused before it restored anything (the delivery branch is
/// checked out in the user's working tree) is a conflict the operator can
/// fix, and it leaves no rollback in progress behind: recovery did retry
/// it at every start. Once the branch is no longer checked out, the same
/// rollback succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollback_refused_before_it_started_leaves_nothing_in_progress() {
    let h = codegen_harness().await;
    bump(&h.repo());
    let job = h.wait_final(h.run("codegen").await.remove(0).id).await;
    assert_eq!(job.state(), JobState::Succeeded, "{:?}", job.skip_reason);
    let repo = h.repo();
    git(&repo, &["checkout", "-q", "orchex/codegen"]);

    let refused = h.orchestrator.rollback(job.id).await.unwrap_err();
    assert!(
        matches!(refused, ControlError::Conflict(ref m) if m.contains("checked out")),
        "{refused:?}"
    );
    let after = h.store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(after.state(), JobState::Succeeded);
    assert_eq!(after.rollback, Some(RollbackState::Available));
    let summary = h.orchestrator.recover().await.unwrap();
    assert!(summary.finished_rollbacks.is_empty(), "{summary:?}");

    git(&repo, &["checkout", "-q", "main"]);
    let rolled = h.orchestrator.rollback(job.id).await.unwrap();
    assert_eq!(rolled.state(), JobState::RolledBack);
    h.orchestrator.stop(Duration::from_secs(5)).await;
}

/// A rollback cut short after it moved the branch back (its job's record
/// failed, or the daemon died before the next start's recovery) leaves the
/// job `succeeded` with its rollback `inProgress`. The next delivery took
/// that job's commit for where orchex left the branch and was skipped as
/// `manuallyEdited`; it now records the rollback as done and delivers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delivery_finishes_the_record_of_a_rollback_cut_short_after_its_swap() {
    let h = codegen_harness().await;
    let repo = h.repo();
    let delivered = [deliver_codegen(&h).await, deliver_codegen(&h).await];
    let (first, second) = (&delivered[0], &delivered[1]);
    let first_commit = first.delivery.as_ref().unwrap().commit.clone().unwrap();
    assert_eq!(
        second.delivery.as_ref().unwrap().previous.as_deref(),
        Some(first_commit.as_str())
    );
    // The cut-short rollback of `second`: intent recorded, branch swapped
    // back, nothing recorded after.
    h.store
        .update_job(
            second.id,
            orchex_store::JobPatch::new().rollback(RollbackState::InProgress),
        )
        .await
        .unwrap();
    git(
        &repo,
        &["update-ref", "refs/heads/orchex/codegen", &first_commit],
    );

    let third = deliver_codegen(&h).await;
    let record = third.delivery.unwrap();
    assert_eq!(record.previous.as_deref(), Some(first_commit.as_str()));
    assert_eq!(
        git(&repo, &["rev-parse", "orchex/codegen"]),
        record.commit.unwrap()
    );
    let second = h.store.get_job(second.id).await.unwrap().unwrap();
    assert_eq!(second.state(), JobState::RolledBack);
    assert_eq!(second.rollback, Some(RollbackState::RolledBack));
    // Nothing is left for recovery to finish.
    let summary = h.orchestrator.recover().await.unwrap();
    assert!(summary.finished_rollbacks.is_empty(), "{summary:?}");
    h.orchestrator.stop(Duration::from_secs(5)).await;
}

/// Two jobs of one pipeline queued side by side (as a restart leaves an
/// interrupted job re-queued next to a newer one): when the newer one
/// delivers first, the older one's result is stale. Putting it on top left
/// the branch at a commit the records did not point to, and every later
/// job was skipped as `manuallyEdited`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_job_never_delivers_over_a_newer_one() {
    let h = Harness::new(|config, root| {
        let mut p = pipeline(
            "codegen",
            "if [ -e \"$SLOW/$ORCHEX_JOB_ID\" ]; then sleep 1; fi; date +%N > stamp",
        );
        p.steps[0]
            .env
            .insert("SLOW".into(), root.display().to_string());
        config.pipelines.push(p);
    })
    .await;
    let repo_id = RepoId::new("api").unwrap();
    let queued = |trigger| Job::new(repo_id.clone(), "codegen".into(), trigger);
    let mut trigger = orchex_core::Trigger::manual(repo_id.clone());
    trigger.force = true;
    let older = queued(trigger.clone());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let newer = queued(trigger);
    h.store.insert_job(older.clone()).await.unwrap();
    h.store.insert_job(newer.clone()).await.unwrap();
    std::fs::write(h.root.join(older.id.to_string()), "").unwrap();
    h.start();
    let newer = h.wait_final(newer.id).await;
    let older = h.wait_final(older.id).await;
    assert_eq!(newer.state(), JobState::Succeeded, "{:?}", newer.error);
    assert_eq!(older.state(), JobState::Skipped, "{:?}", older.error);
    assert_eq!(
        older.skip_reason,
        Some(SkipReason::Coalesced { into: newer.id })
    );
    let repo = h.repo();
    let newer_commit = newer.delivery.unwrap().commit.unwrap();
    assert_eq!(git(&repo, &["rev-parse", "orchex/codegen"]), newer_commit);
    // The branch is where the records say: the next job delivers on top.
    bump(&repo);
    let next = h.wait_final(h.run("codegen").await.remove(0).id).await;
    assert_eq!(
        next.state(),
        JobState::Succeeded,
        "{:?} {:?}",
        next.skip_reason,
        next.error
    );
    assert_eq!(next.delivery.unwrap().previous, Some(newer_commit));
    h.orchestrator.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_paths_are_never_written() {
    let h = Harness::new(|config, _| {
        config.pipelines.push(pipeline(
            "sneaky",
            "mkdir -p .github/workflows && echo x > .github/workflows/ci.yml",
        ));
    })
    .await;
    h.start();
    let job = h.wait_final(h.run("sneaky").await.remove(0).id).await;
    assert_eq!(job.state(), JobState::Failed);
    assert!(
        job.error
            .as_deref()
            .unwrap()
            .contains("protected path .github/workflows/ci.yml")
    );
    assert!(job.delivery.is_none());
    let branches = git(&h.repo(), &["branch", "--list", "orchex/*"]);
    assert!(branches.is_empty(), "{branches}");
    h.orchestrator.stop(Duration::from_secs(5)).await;
}

async fn wait_for_file(path: &Path) {
    for _ in 0..3000 {
        if path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} never appeared", path.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worktree_delivery_reports_conflicts_and_rollback_restores_or_refuses() {
    let h = Harness::new(|config, root| {
        let mut p = pipeline(
            "fix",
            // Rewrites two files and adds one, then waits until the test
            // has edited README.md in the user's tree.
            "echo v2 > schema/api.txt; echo fixed > README.md; echo new > added.txt; \
             touch \"$STARTED\"; while [ ! -e \"$GO\" ]; do sleep 0.02; done",
        );
        p.deliver = Delivery::Worktree;
        let env = &mut p.steps[0].env;
        env.insert("STARTED".into(), root.join("started").display().to_string());
        env.insert("GO".into(), root.join("go").display().to_string());
        config.pipelines.push(p);
    })
    .await;
    let repo = h.repo();
    h.start();
    let job = h.run("fix").await.remove(0);
    wait_for_file(&h.root.join("started")).await;
    std::fs::write(repo.join("README.md"), "user edit\n").unwrap();
    std::fs::write(h.root.join("go"), "").unwrap();
    let job = h.wait_final(job.id).await;
    assert_eq!(job.state(), JobState::Succeeded, "{:?}", job.error);
    let delivery = job.delivery.clone().unwrap();
    assert_eq!(delivery.conflicts, vec!["README.md"]);
    assert_eq!(delivery.files, vec!["added.txt", "schema/api.txt"]);
    // The user's edit won; the rest was applied.
    assert_eq!(
        std::fs::read_to_string(repo.join("README.md")).unwrap(),
        "user edit\n"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("schema/api.txt")).unwrap(),
        "v2\n"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("added.txt")).unwrap(),
        "new\n"
    );

    // Rollback restores exactly what the job replaced.
    h.orchestrator.rollback(job.id).await.unwrap();
    assert_eq!(
        std::fs::read_to_string(repo.join("schema/api.txt")).unwrap(),
        "v1\n"
    );
    assert!(!repo.join("added.txt").exists());
    assert_eq!(
        std::fs::read_to_string(repo.join("README.md")).unwrap(),
        "user edit\n"
    );

    // Deliver again; this time the user edits a delivered file afterwards.
    std::fs::remove_file(h.root.join("go")).unwrap();
    std::fs::remove_file(h.root.join("started")).unwrap();
    git(&repo, &["checkout", "-q", "--", "README.md"]);
    let again = h
        .orchestrator
        .trigger(ManualRun {
            repo: "api".into(),
            pipeline: Some("fix".into()),
            force: true,
            ..ManualRun::default()
        })
        .await
        .unwrap()
        .remove(0);
    wait_for_file(&h.root.join("started")).await;
    std::fs::write(h.root.join("go"), "").unwrap();
    let again = h.wait_final(again.id).await;
    assert_eq!(again.state(), JobState::Succeeded, "{:?}", again.error);
    std::fs::write(repo.join("schema/api.txt"), "user changed it\n").unwrap();
    let refused = h.orchestrator.rollback(again.id).await.unwrap_err();
    assert!(
        matches!(refused, ControlError::Conflict(ref m) if m.contains("schema/api.txt")),
        "{refused:?}"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("schema/api.txt")).unwrap(),
        "user changed it\n"
    );
    assert_eq!(
        std::fs::read_to_string(repo.join("README.md")).unwrap(),
        "fixed\n"
    );
    h.orchestrator.stop(Duration::from_secs(5)).await;
}

/// An operator's pause or emergency stop holds across a restart (a
/// supervisor restarting a crashed daemon must not resume the work someone
/// stopped); only `resume` ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_or_an_emergency_stop_outlives_a_restart() {
    let h = Harness::new(|_, _| {}).await;
    let config = {
        let mut config = Config::default();
        config.orchestrator.adaptive_optimization = false;
        config.optimizer.schedule.enabled = false;
        config
    };
    let restarted = |store: Arc<SqliteStore>| {
        let root = h.root.clone();
        move || {
            let deps = OrchestratorDeps::new(store.clone(), Events::discard(), root.join("data"));
            let orchestrator = Orchestrator::new(&config, deps).unwrap();
            orchestrator.start(futures::stream::pending()).unwrap();
            orchestrator
        }
    };
    let restart = restarted(h.store.clone());

    h.start();
    h.orchestrator.pause().unwrap();
    h.orchestrator.stop(Duration::from_secs(5)).await;
    let second = restart();
    assert_eq!(second.state(), RunState::Paused);
    second.emergency_stop().await;
    second.stop(Duration::from_secs(5)).await;
    let third = restart();
    assert_eq!(third.state(), RunState::EmergencyStopped);
    third.resume().unwrap();
    third.stop(Duration::from_secs(5)).await;
    let fourth = restart();
    assert_eq!(fourth.state(), RunState::Running);
    fourth.stop(Duration::from_secs(5)).await;
}

// === safety ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rate_limiter_skips_with_a_retry_time_and_force_bypasses_it() {
    let h = Harness::new(|config, _| {
        config.optimizer.safety.rate_limit_per_hour = 2;
        let mut p = pipeline("dry", "date +%N > stamp");
        p.deliver = Delivery::None;
        config.pipelines.push(p);
    })
    .await;
    h.start();
    for _ in 0..2 {
        bump(&h.repo());
        let job = h.wait_final(h.run("dry").await.remove(0).id).await;
        assert_eq!(job.state(), JobState::Succeeded, "{:?}", job.error);
    }
    bump(&h.repo());
    let limited = h.wait_final(h.run("dry").await.remove(0).id).await;
    assert_eq!(limited.state(), JobState::Skipped);
    match limited.skip_reason {
        Some(SkipReason::RateLimited { retry_at }) => assert!(retry_at > jiff::Timestamp::now()),
        other => panic!("expected a rate limit, got {other:?}"),
    }
    assert!(h.kinds().contains(&EventKind::RateLimited));
    let forced = h
        .orchestrator
        .trigger(ManualRun {
            repo: "api".into(),
            pipeline: Some("dry".into()),
            force: true,
            ..ManualRun::default()
        })
        .await
        .unwrap()
        .remove(0);
    assert_eq!(h.wait_final(forced.id).await.state(), JobState::Succeeded);
    // The manual clock moves a token's worth of time: admitted again.
    h.clock.advance(Duration::from_secs(1800));
    bump(&h.repo());
    let later = h.wait_final(h.run("dry").await.remove(0).id).await;
    assert_eq!(
        later.state(),
        JobState::Succeeded,
        "{:?}",
        later.skip_reason
    );
    h.orchestrator.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_after_n_failures_half_opens_after_the_cooldown_and_closes_on_success() {
    let h = Harness::new(|config, root| {
        config.optimizer.safety.circuit_breaker_threshold = 3;
        config.optimizer.safety.circuit_breaker_cooldown_secs = 60;
        let mut p = pipeline("flaky", "test -e \"$HEALED\"");
        p.deliver = Delivery::None;
        p.steps[0]
            .env
            .insert("HEALED".into(), root.join("healed").display().to_string());
        config.pipelines.push(p);
    })
    .await;
    h.start();
    for _ in 0..3 {
        let job = h.wait_final(h.run("flaky").await.remove(0).id).await;
        assert_eq!(job.state(), JobState::Failed);
    }
    let rejected = h.wait_final(h.run("flaky").await.remove(0).id).await;
    assert_eq!(rejected.state(), JobState::Skipped);
    assert!(
        matches!(rejected.skip_reason, Some(SkipReason::CircuitOpen { .. })),
        "{:?}",
        rejected.skip_reason
    );
    let breakers = h.orchestrator.breakers();
    assert_eq!(breakers[0].name, "api/flaky");
    assert_eq!(breakers[0].state, "open");
    // The cooldown passes (plus its jitter) and the cause is fixed.
    std::fs::write(h.root.join("healed"), "").unwrap();
    h.clock.advance(Duration::from_secs(70));
    let trial = h.wait_final(h.run("flaky").await.remove(0).id).await;
    assert_eq!(
        trial.state(),
        JobState::Succeeded,
        "{:?}",
        trial.skip_reason
    );
    assert_eq!(h.orchestrator.breakers()[0].state, "closed");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let transitions = h
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.kind == EventKind::CircuitStateChanged)
        .map(|e| e.data["to"].as_str().unwrap_or_default().to_owned())
        .collect::<Vec<_>>();
    assert_eq!(transitions, vec!["open", "halfOpen", "closed"]);
    h.orchestrator.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emergency_stop_kills_every_running_job_and_delivers_nothing() {
    let h = Harness::new(|config, root| {
        config.orchestrator.max_concurrent = 8;
        for n in 0..6 {
            let mut p = pipeline(
                &format!("long{n}"),
                "echo result > out.txt; sleep 1000 & echo $! >> \"$PIDS\"; wait",
            );
            p.steps[0]
                .env
                .insert("PIDS".into(), root.join("pids").display().to_string());
            config.pipelines.push(p);
        }
    })
    .await;
    h.start();
    let jobs = h
        .orchestrator
        .trigger(ManualRun {
            repo: "api".into(),
            ..ManualRun::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 6);
    for _ in 0..3000 {
        let pids = std::fs::read_to_string(h.root.join("pids")).unwrap_or_default();
        if pids.lines().count() == 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let cancelled = h.orchestrator.emergency_stop().await;
    assert_eq!(cancelled.len(), 6);
    assert_eq!(h.orchestrator.state(), RunState::EmergencyStopped);
    for job in &jobs {
        let job = h.store.get_job(job.id).await.unwrap().unwrap();
        assert_eq!(job.state(), JobState::Cancelled);
        assert!(job.delivery.is_none());
    }
    let pids = std::fs::read_to_string(h.root.join("pids")).unwrap();
    for pid in pids.lines() {
        let alive = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            !stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        });
        assert!(!alive, "process {pid} survived the emergency stop");
    }
    assert!(git(&h.repo(), &["branch", "--list", "orchex/*"]).is_empty());
    assert!(h.kinds().contains(&EventKind::EmergencyStop));
    // Manual runs are refused until resume.
    assert!(matches!(
        h.orchestrator
            .trigger(ManualRun {
                repo: "api".into(),
                ..ManualRun::default()
            })
            .await,
        Err(ControlError::Unavailable(_))
    ));
    h.orchestrator.resume().unwrap();
    h.orchestrator.stop(Duration::from_millis(100)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_a_queued_and_a_running_job() {
    let h = Harness::new(|config, _| {
        config.orchestrator.max_concurrent = 1;
        config.pipelines.push(pipeline("long", "sleep 1000"));
        config.pipelines.push(pipeline("next", "true"));
    })
    .await;
    h.start();
    let running = h.run("long").await.remove(0);
    for _ in 0..500 {
        if h.store.get_job(running.id).await.unwrap().unwrap().state() == JobState::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let queued = h.run("next").await.remove(0);
    h.orchestrator.cancel(queued.id).await.unwrap();
    assert_eq!(
        h.store.get_job(queued.id).await.unwrap().unwrap().state(),
        JobState::Cancelled
    );
    h.orchestrator.cancel(running.id).await.unwrap();
    assert_eq!(h.wait_final(running.id).await.state(), JobState::Cancelled);
    // A finished job cannot be cancelled.
    assert!(matches!(
        h.orchestrator.cancel(running.id).await,
        Err(ControlError::Conflict(_))
    ));
    assert!(matches!(
        h.orchestrator.cancel(JobId::new()).await,
        Err(ControlError::NotFound(_))
    ));
    h.orchestrator.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_requests_are_validated() {
    let h = Harness::new(|config, _| {
        config.pipelines.push(pipeline("codegen", "true"));
    })
    .await;
    h.start();
    let unknown_repo = h
        .orchestrator
        .trigger(ManualRun {
            repo: "nope".into(),
            ..ManualRun::default()
        })
        .await;
    assert!(matches!(unknown_repo, Err(ControlError::NotFound(_))));
    let unknown_pipeline = h
        .orchestrator
        .trigger(ManualRun {
            repo: "api".into(),
            pipeline: Some("nope".into()),
            ..ManualRun::default()
        })
        .await;
    assert!(matches!(unknown_pipeline, Err(ControlError::NotFound(_))));
    assert_eq!(h.orchestrator.routing_table().len(), 1);
    h.orchestrator.stop(Duration::from_secs(5)).await;
}

// === adaptive concurrency ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adaptive_limit_lowers_parallelism_under_failures_and_raises_it_again() {
    let h = Harness::new(|config, _| {
        config.orchestrator.max_concurrent = 4;
        config.orchestrator.adaptive_optimization = true;
        config.optimizer.safety.circuit_breaker_threshold = 1000;
        for n in 0..4 {
            let mut p = pipeline(&format!("bad{n}"), "exit 1");
            p.deliver = Delivery::None;
            config.pipelines.push(p);
        }
        for n in 0..4 {
            let mut p = pipeline(&format!("good{n}"), "sleep 0.3");
            p.deliver = Delivery::None;
            config.pipelines.push(p);
        }
    })
    .await;
    assert_eq!(h.orchestrator.concurrency_limit(), 4);
    h.start();
    h.orchestrator.pause().unwrap();
    let mut bad = Vec::new();
    for n in 0..4 {
        bad.push(h.run(&format!("bad{n}")).await.remove(0));
    }
    h.orchestrator.resume().unwrap();
    for job in &bad {
        assert_eq!(h.wait_final(job.id).await.state(), JobState::Failed);
    }
    let lowered = h.orchestrator.concurrency_limit();
    assert!(
        lowered < 4,
        "the limit stayed at {lowered} after 4 failures"
    );

    // The next cycle really runs at the lowered limit.
    h.orchestrator.pause().unwrap();
    let mut good = Vec::new();
    for n in 0..4 {
        good.push(h.run(&format!("good{n}")).await.remove(0));
    }
    h.orchestrator.resume().unwrap();
    for job in &good {
        assert_eq!(h.wait_final(job.id).await.state(), JobState::Succeeded);
    }
    let cycles: Vec<u64> = h
        .events
        .lock()
        .unwrap()
        .iter()
        .filter(|e| e.kind == EventKind::CycleCompleted)
        .map(|e| e.data["parallelism"].as_u64().unwrap())
        .collect();
    assert!(cycles.iter().all(|p| *p <= 4));
    assert!(
        cycles.last().copied().unwrap() <= u64::from(lowered.max(1)) + 1,
        "parallelism {cycles:?} with limit {lowered}"
    );
    assert!(h.kinds().contains(&EventKind::ConcurrencyChanged));
    // Successes at full use raise it again.
    for round in 0..3 {
        let _ = round;
        h.orchestrator.pause().unwrap();
        let mut jobs = Vec::new();
        for n in 0..4 {
            let job = h
                .orchestrator
                .trigger(ManualRun {
                    repo: "api".into(),
                    pipeline: Some(format!("good{n}")),
                    force: true,
                    ..ManualRun::default()
                })
                .await
                .unwrap()
                .remove(0);
            jobs.push(job);
        }
        h.orchestrator.resume().unwrap();
        for job in &jobs {
            h.wait_final(job.id).await;
        }
    }
    assert!(
        h.orchestrator.concurrency_limit() > lowered,
        "the limit did not recover from {lowered}"
    );
    h.orchestrator.stop(Duration::from_secs(5)).await;
}

// === queue ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_coalesces_and_applies_backpressure() {
    let h = Harness::new(|config, _| {
        config.orchestrator.queue_capacity = 2;
        config.pipelines.push(pipeline("a", "true"));
        config.pipelines.push(pipeline("b", "true"));
        config.pipelines.push(pipeline("c", "true"));
    })
    .await;
    // Not started: jobs stay queued.
    let first = h.run("a").await.remove(0);
    let again = h.run("a").await.remove(0);
    assert_eq!(first.id, again.id, "the same repo × pipeline coalesces");
    let second = h.run("b").await.remove(0);
    assert_eq!(second.state(), JobState::Queued);
    let third = h.run("c").await.remove(0);
    assert_eq!(third.state(), JobState::Skipped);
    assert_eq!(third.skip_reason, Some(SkipReason::QueueFull));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submits_never_queue_beyond_the_capacity() {
    let h = Harness::new(|config, _| {
        config.orchestrator.queue_capacity = 5;
        for i in 0..30 {
            config.pipelines.push(pipeline(&format!("p{i}"), "true"));
        }
    })
    .await;
    // Not started: jobs stay queued. 30 distinct pipelines submitted at once.
    let harness = &h;
    let runs = futures::future::join_all(
        (0..30).map(|i| async move { harness.run(&format!("p{i}")).await }),
    )
    .await;
    let jobs: Vec<Job> = runs.into_iter().flatten().collect();
    assert_eq!(jobs.len(), 30);
    let queued = jobs
        .iter()
        .filter(|job| job.state() == JobState::Queued)
        .count();
    assert_eq!(queued, 5);
    assert!(
        jobs.iter()
            .filter(|job| job.state() != JobState::Queued)
            .all(|job| job.state() == JobState::Skipped
                && job.skip_reason == Some(SkipReason::QueueFull))
    );
    assert_eq!(h.store.queue_depth().await.unwrap(), 5);
    let skipped_events = h
        .kinds()
        .into_iter()
        .filter(|kind| *kind == EventKind::JobSkipped)
        .count();
    assert_eq!(skipped_events, 25);
}

// === crash recovery ===

/// Runs in a child process (see `crash_recovery_...`): starts an
/// orchestrator on the given directory and a long worktree job, then waits
/// to be killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_child() {
    let Ok(dir) = std::env::var("ORCHEX_CRASH_CHILD_DIR") else {
        return;
    };
    let root = PathBuf::from(dir);
    let config = crash_config(&root);
    let store = Arc::new(
        SqliteStore::open_in_dir(root.join("data"), StoreOptions::default())
            .await
            .unwrap(),
    );
    let orchestrator = Orchestrator::new(
        &config,
        OrchestratorDeps::new(store, Events::discard(), root.join("data")),
    )
    .unwrap();
    orchestrator.start(futures::stream::pending()).unwrap();
    orchestrator
        .trigger(ManualRun {
            repo: "api".into(),
            pipeline: Some("long".into()),
            ..ManualRun::default()
        })
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
}

fn crash_config(root: &Path) -> Config {
    let mut config = Config::default();
    config.optimizer.schedule.enabled = false;
    config.repositories.push(Repository {
        name: RepoId::new("api").unwrap(),
        path: root.join("api"),
        enabled: true,
        branch: Some("main".into()),
    });
    let mut p = pipeline(
        "long",
        "echo changed > README.md; sleep 1000 & echo $! > \"$PID\"; wait",
    );
    p.deliver = Delivery::Worktree;
    p.steps[0]
        .env
        .insert("PID".into(), root.join("step.pid").display().to_string());
    config.pipelines.push(p);
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_recovery_kills_survivors_requeues_the_job_and_leaves_the_repo_clean() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    repo_fixture(&root, "api");
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["crash_child", "--exact", "--nocapture"])
        .env("ORCHEX_CRASH_CHILD_DIR", &root)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    wait_for_file(&root.join("step.pid")).await;
    // Give the pid file its content.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let step_pid: i32 = std::fs::read_to_string(root.join("step.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The step's group outlived the daemon...
    assert!(Path::new(&format!("/proc/{step_pid}")).exists());

    let config = crash_config(&root);
    let store = Arc::new(
        SqliteStore::open_in_dir(root.join("data"), StoreOptions::default())
            .await
            .unwrap(),
    );
    let events = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&events);
    let orchestrator = Orchestrator::new(
        &config,
        OrchestratorDeps::new(
            store.clone(),
            Events::new(move |e| sink.lock().unwrap().push(e)),
            root.join("data"),
        ),
    )
    .unwrap();
    let summary = orchestrator.recover().await.unwrap();
    assert_eq!(summary.requeued.len(), 1);
    assert!(summary.killed_groups >= 1);
    assert!(summary.removed_workspaces >= 1);
    // ...until recovery killed it.
    let mut dead = false;
    for _ in 0..200 {
        let stat = std::fs::read_to_string(format!("/proc/{step_pid}/stat")).unwrap_or_default();
        if stat.is_empty()
            || stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        {
            dead = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(dead, "step process {step_pid} survived recovery");
    let job = store.get_job(summary.requeued[0]).await.unwrap().unwrap();
    assert_eq!(job.state(), JobState::Queued);
    assert_eq!(job.interruptions, 1);
    // Nothing half-applied in the user's repository.
    assert_eq!(git(&root.join("api"), &["status", "--porcelain"]), "");
    assert!(
        !root
            .join("data/workspaces")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some())
    );
    assert!(
        events
            .lock()
            .unwrap()
            .iter()
            .any(|e| e.kind == EventKind::JobInterrupted)
    );
}

/// Found by the crash loop (`orchex-reliability crash-loop`): recovery
/// killed the recorded process groups but kept their records, so every
/// later recovery sent SIGKILL to those ids again, whoever had them by then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_forgets_the_process_groups_it_killed() {
    use std::os::unix::process::CommandExt as _;
    let h = Harness::new(|config, _| config.pipelines.push(pipeline("noop", "true"))).await;
    let job = h.run("noop").await.remove(0);
    let mut survivor = Command::new("sleep")
        .arg("1000")
        // What every step of the job has: recovery kills only its groups.
        .env("ORCHEX_JOB_ID", job.id.to_string())
        .process_group(0)
        .spawn()
        .unwrap();
    let pgid = i32::try_from(survivor.id()).unwrap();
    h.store.set_step_pgid(job.id, pgid).await.unwrap();

    let summary = h.orchestrator.recover().await.unwrap();
    assert_eq!(summary.killed_groups, 1);
    let status = survivor.wait().unwrap();
    assert!(!status.success(), "the recorded group was not killed");
    // A second recovery has nothing left to kill.
    let again = h.store.recover().await.unwrap();
    assert!(again.pgids.is_empty(), "{:?}", again.pgids);
    assert_eq!(h.orchestrator.recover().await.unwrap().killed_groups, 0);
}

/// Recovery used to re-queue interrupted jobs first and undo their
/// deliveries after: a crash in between (the crash loop kills the daemon
/// during start-up too) left a re-queued job whose commit stayed on the
/// branch, which no later recovery took back, and every later delivery was
/// skipped as `manuallyEdited`. Recovery now undoes first, and takes back
/// a re-queued job's commit still on the branch (the state such a crash
/// left behind).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_during_recovery_cannot_leave_a_delivery_on_the_branch() {
    use orchex_store::BackupStore as _;
    let h = Harness::new(|config, _| {
        config
            .pipelines
            .push(pipeline("codegen", "date +%N > stamp"));
    })
    .await;
    let repo = h.repo();
    // One delivery in place (the orchestrator is not started; recovery runs
    // before the start, as in the daemon).
    h.start();
    bump(&repo);
    let first = h.wait_final(h.run("codegen").await.remove(0).id).await;
    h.orchestrator.stop(Duration::from_secs(5)).await;
    let first_commit = first.delivery.clone().unwrap().commit.unwrap();

    // A second job was delivering when the daemon died: its intent is
    // recorded and the branch moved to its commit.
    let job = running_job_of_a_dead_daemon(&h, "codegen").await;
    let tree = git(&repo, &["rev-parse", "main^{tree}"]);
    let commit = git(
        &repo,
        &[
            "commit-tree",
            &tree,
            "-p",
            &first_commit,
            "-m",
            "half-delivered",
        ],
    );
    h.store
        .put_backups(
            job.id,
            vec![orchex_store::Backup::Branch {
                name: "orchex/codegen".into(),
                previous: Some(first_commit.clone()),
            }],
        )
        .await
        .unwrap();
    h.store
        .update_job(
            job.id,
            orchex_store::JobPatch::new().delivery(orchex_core::DeliveryRecord {
                kind: Delivery::Branch,
                branch: Some("orchex/codegen".into()),
                commit: Some(commit.clone()),
                previous: Some(first_commit.clone()),
                files: vec!["stamp".into()],
                conflicts: Vec::new(),
                written: std::collections::BTreeMap::new(),
            }),
        )
        .await
        .unwrap();
    git(&repo, &["update-ref", "refs/heads/orchex/codegen", &commit]);

    // The first recovery re-queued the job and died before undoing.
    let report = h.store.recover().await.unwrap();
    assert_eq!(report.requeued, vec![job.id]);
    // The next one takes the half-delivered commit back.
    let summary = h.orchestrator.recover().await.unwrap();
    assert_eq!(summary.undone_deliveries, 1);
    assert_eq!(git(&repo, &["rev-parse", "orchex/codegen"]), first_commit);
    assert_eq!(git(&repo, &["status", "--porcelain"]), "");
}

/// Found by the crash loop (`orchex-reliability crash-loop`): a daemon
/// killed right after a step's spawn, before the store had recorded the
/// step's process group, left the step running, and recovery did not know
/// it. The step records its group in its workspace as soon as it is spawned;
/// recovery kills what it finds there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_kills_a_step_only_its_workspace_knows() {
    use std::os::unix::process::CommandExt as _;
    let h = Harness::new(|config, _| config.pipelines.push(pipeline("noop", "true"))).await;
    let job = JobId::new();
    let mut survivor = Command::new("sleep")
        .arg("1000")
        .env("ORCHEX_JOB_ID", job.to_string())
        .process_group(0)
        .spawn()
        .unwrap();
    let workspace = h.root.join("data/workspaces").join(job.to_string());
    std::fs::create_dir_all(workspace.join("work")).unwrap();
    std::fs::write(workspace.join("step-0.pgid"), survivor.id().to_string()).unwrap();

    let summary = h.orchestrator.recover().await.unwrap();
    assert_eq!(summary.killed_groups, 1);
    assert_eq!(summary.removed_workspaces, 1);
    let status = survivor.wait().unwrap();
    assert!(
        !status.success(),
        "the step recorded in its workspace survived"
    );
}

/// A daemon killed between a step's spawn and the write of its group id
/// leaves the group file empty: recovery then finds the step, and what it
/// forked, by the job id in their environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_kills_a_step_whose_group_file_is_empty() {
    use std::os::unix::process::CommandExt as _;
    let h = Harness::new(|config, _| config.pipelines.push(pipeline("noop", "true"))).await;
    let job = JobId::new();
    let mut survivor = Command::new("sh")
        .args(["-c", "sleep 1000 & wait"])
        .env("ORCHEX_JOB_ID", job.to_string())
        .process_group(0)
        .spawn()
        .unwrap();
    let workspace = h.root.join("data/workspaces").join(job.to_string());
    std::fs::create_dir_all(workspace.join("work")).unwrap();
    std::fs::write(workspace.join("step-0.pgid"), "").unwrap();

    let summary = h.orchestrator.recover().await.unwrap();
    assert_eq!(summary.killed_groups, 1);
    assert_eq!(summary.removed_workspaces, 1);
    let status = survivor.wait().unwrap();
    assert!(!status.success(), "the unrecorded step survived");
}

/// Found by the crash loop (`orchex-reliability crash-loop`): killed while
/// gix held the delivery branch's lock, the daemon left
/// `refs/heads/orchex/codegen.lock` behind, and every later delivery to the
/// branch failed. Recovery removes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_removes_a_delivery_branch_lock_left_by_a_crash() {
    let h = Harness::new(|config, _| {
        config
            .pipelines
            .push(pipeline("codegen", "date +%N > stamp"));
    })
    .await;
    let lock = h.repo().join(".git/refs/heads/orchex/codegen.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    std::fs::write(&lock, "").unwrap();
    let summary = h.orchestrator.recover().await.unwrap();
    assert_eq!(summary.removed_locks, 1);
    assert!(!lock.exists());
    h.start();
    let job = h.wait_final(h.run("codegen").await.remove(0).id).await;
    assert_eq!(job.state(), JobState::Succeeded, "{:?}", job.error);
    h.orchestrator.stop(Duration::from_secs(5)).await;
}

// === step kinds and strategies ===

struct WriteFile;

#[async_trait::async_trait]
impl orchex_orchestrator::Action for WriteFile {
    async fn run(&self, ctx: orchex_orchestrator::ActionContext<'_>) -> Result<String, String> {
        let name = ctx
            .with
            .get("file")
            .and_then(|v| v.as_str())
            .ok_or("`with.file` is required")?;
        std::fs::write(ctx.workspace.join(name), ctx.job_id.to_string())
            .map_err(|e| e.to_string())?;
        Ok(format!("wrote {name}"))
    }
}

/// An embedder's action that never returns and ignores its cancellation.
struct Stuck(Arc<tokio::sync::Notify>);

#[async_trait::async_trait]
impl orchex_orchestrator::Action for Stuck {
    async fn run(&self, _ctx: orchex_orchestrator::ActionContext<'_>) -> Result<String, String> {
        self.0.notify_one();
        std::future::pending().await
    }
}

/// A job whose step does not end when it is cancelled (an embedder's
/// action that ignores its token) cannot keep the daemon from stopping: the
/// engine stops awaiting the action once the job is cancelled, and the job
/// ends `cancelled`. (`stop` also gives up on a job still running 10 s
/// after its cancellation; no job here gets that far.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_ignores_its_cancellation_does_not_hang_the_stop() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let mut config = Config::default();
    config.optimizer.schedule.enabled = false;
    config.repositories.push(Repository {
        name: RepoId::new("api").unwrap(),
        path: repo_fixture(&root, "api"),
        enabled: true,
        branch: Some("main".into()),
    });
    let mut stuck = Pipeline::new(
        "stuck",
        vec![Step {
            name: "stuck".into(),
            uses: Some("stuck".into()),
            ..Step::default()
        }],
    );
    stuck.triggers = vec![TriggerKind::Manual];
    stuck.deliver = Delivery::None;
    config.pipelines = vec![stuck];
    let store = Arc::new(
        SqliteStore::open_in_dir(root.join("data"), StoreOptions::default())
            .await
            .unwrap(),
    );
    let started = Arc::new(tokio::sync::Notify::new());
    let mut deps = OrchestratorDeps::new(store.clone(), Events::discard(), root.join("data"));
    deps.actions.register("stuck", Stuck(Arc::clone(&started)));
    let orchestrator = Orchestrator::new(&config, deps).unwrap();
    orchestrator.start(futures::stream::pending()).unwrap();
    let job = orchestrator
        .trigger(ManualRun {
            repo: "api".into(),
            ..ManualRun::default()
        })
        .await
        .unwrap()
        .remove(0);
    tokio::time::timeout(Duration::from_secs(30), started.notified())
        .await
        .expect("the stuck step never started");

    let stopped = tokio::time::timeout(
        Duration::from_secs(60),
        orchestrator.stop(Duration::from_millis(100)),
    )
    .await;
    assert!(
        stopped.is_ok(),
        "stop hung on a job that ignores its cancellation"
    );
    let job = store.get_job(job.id).await.unwrap().unwrap();
    assert_eq!(job.state(), JobState::Cancelled, "{:?}", job.error);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uses_and_webhook_steps_run_and_sequential_pipelines_run_in_order() {
    use std::io::{Read as _, Write as _};
    // A loopback server that records one POST.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    let server = std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let mut request = Vec::new();
        let mut buffer = [0_u8; 4096];
        while !String::from_utf8_lossy(&request).contains("\"step\"") {
            let n = stream.read(&mut buffer).unwrap();
            if n == 0 {
                break;
            }
            request.extend_from_slice(&buffer[..n]);
        }
        stream
            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .unwrap();
        String::from_utf8_lossy(&request).into_owned()
    });

    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let repo_path = repo_fixture(&root, "api");
    let mut config = Config::default();
    config.optimizer.schedule.enabled = false;
    config.repositories.push(Repository {
        name: RepoId::new("api").unwrap(),
        path: repo_path.clone(),
        enabled: true,
        branch: Some("main".into()),
    });
    let mut first = Pipeline::new(
        "first",
        vec![Step {
            name: "custom".into(),
            uses: Some("write-file".into()),
            with: [("file".to_owned(), serde_json::json!("custom.txt"))].into(),
            ..Step::default()
        }],
    );
    first.triggers = vec![TriggerKind::Manual];
    first.strategy = orchex_core::Strategy::Sequential;
    let mut second = Pipeline::new(
        "second",
        vec![Step {
            name: "notify".into(),
            webhook: Some(hook),
            ..Step::default()
        }],
    );
    second.triggers = vec![TriggerKind::Manual];
    config.pipelines = vec![first, second];
    let store = Arc::new(
        SqliteStore::open_in_dir(root.join("data"), StoreOptions::default())
            .await
            .unwrap(),
    );
    let mut deps = OrchestratorDeps::new(store.clone(), Events::discard(), root.join("data"));
    deps.actions.register("write-file", WriteFile);
    let orchestrator = Orchestrator::new(&config, deps).unwrap();
    let jobs = orchestrator
        .trigger(ManualRun {
            repo: "api".into(),
            ..ManualRun::default()
        })
        .await
        .unwrap();
    // Sequential: only the first is queued; the second follows it.
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].pipeline, "first");
    orchestrator.start(futures::stream::pending()).unwrap();
    let mut first_done = None;
    for _ in 0..3000 {
        let job = store.get_job(jobs[0].id).await.unwrap().unwrap();
        if job.state() == JobState::Succeeded {
            first_done = Some(job);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first_done = first_done.expect("the first pipeline did not succeed");
    assert_eq!(
        first_done.steps[0].output_tail.as_deref(),
        Some("wrote custom.txt")
    );
    assert_eq!(
        git(&repo_path, &["show", "orchex/first:custom.txt"]),
        first_done.id.to_string()
    );
    let request = server.join().unwrap();
    assert!(request.starts_with("POST /hook"), "{request}");
    assert!(request.contains("\"pipeline\":\"second\""), "{request}");
    orchestrator.stop(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sequential_route_survives_a_restart_before_its_first_job_ran() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let mut config = Config::default();
    config.optimizer.schedule.enabled = false;
    config.optimizer.safety.rate_limit_per_hour = 1000;
    config.repositories.push(Repository {
        name: RepoId::new("api").unwrap(),
        path: repo_fixture(&root, "api"),
        enabled: true,
        branch: Some("main".into()),
    });
    let mut first = pipeline("first", "echo one > one.txt");
    first.strategy = orchex_core::Strategy::Sequential;
    first.deliver = Delivery::None;
    let mut second = pipeline("second", "echo two > two.txt");
    second.deliver = Delivery::None;
    config.pipelines = vec![first, second];
    let open = || async {
        Arc::new(
            SqliteStore::open_in_dir(root.join("data"), StoreOptions::default())
                .await
                .unwrap(),
        )
    };
    let store = open().await;
    let before = Orchestrator::new(
        &config,
        OrchestratorDeps::new(store.clone(), Events::discard(), root.join("data")),
    )
    .unwrap();
    // Queued while stopped: nothing runs, then this orchestrator goes away.
    let jobs = before
        .trigger(ManualRun {
            repo: "api".into(),
            ..ManualRun::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].trigger.then, ["second"]);
    drop(before);
    store.close().await.unwrap();
    drop(store);

    let store = open().await;
    let after = Orchestrator::new(
        &config,
        OrchestratorDeps::new(store.clone(), Events::discard(), root.join("data")),
    )
    .unwrap();
    after.recover().await.unwrap();
    after.start(futures::stream::pending()).unwrap();
    let mut second_done = false;
    for _ in 0..3000 {
        let all = store
            .list_jobs(
                orchex_store::JobFilter::new(),
                orchex_store::PageRequest::first(),
            )
            .await
            .unwrap();
        if all
            .items
            .iter()
            .any(|j| j.pipeline == "second" && j.state() == JobState::Succeeded)
        {
            second_done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(second_done, "the second pipeline ran after the restart");
    after.stop(Duration::from_secs(1)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coalesced_file_change_adds_its_paths_to_the_queued_job() {
    let h = Harness::new(|config, _| {
        let mut p = pipeline("gen", "true");
        p.triggers = vec![TriggerKind::FileChange];
        config.pipelines.push(p);
    })
    .await;
    // Not started: the first job stays queued and the second coalesces.
    let mut first = orchex_core::Trigger::new(RepoId::new("api").unwrap(), TriggerKind::FileChange);
    first.paths = vec!["schema/a.txt".into()];
    let mut second = first.clone();
    second.paths = vec!["schema/b.txt".into(), "schema/a.txt".into()];
    let queued = h.orchestrator.submit(first).await.unwrap();
    let coalesced = h.orchestrator.submit(second).await.unwrap();
    assert_eq!(queued[0].id, coalesced[0].id);
    let stored = h.store.get_job(queued[0].id).await.unwrap().unwrap();
    assert_eq!(stored.trigger.paths, ["schema/a.txt", "schema/b.txt"]);
}
