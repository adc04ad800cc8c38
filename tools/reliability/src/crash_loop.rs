//! The crash loop: start `orchexd` on a repository with long-running and
//! fast jobs, `kill -9` it at a random moment (seeded), restart it, and
//! check after every restart that the crash cost nothing.
//!
//! Per trial:
//!
//! 1. Start the daemon on the same config, storage and repository. In about
//!    one trial in seven it is killed during start-up (0 to 700 ms after the
//!    spawn, often inside crash recovery) and the trial ends there.
//! 2. After `/api/health` answers (recovery is done by then): pause
//!    dispatching and check, in a view of the jobs that did not change
//!    while the branch was read:
//!    - **no job is lost**: every job id the API ever returned (answers to
//!      runs, cancels, rollbacks and lists, across all trials) is listed by
//!      `GET /api/jobs` with a valid state; none is still `interrupted`;
//!      one last seen finished is still in that state (or `rolledBack`
//!      after `succeeded`, when a rollback raced the kill);
//!    - **the delivery branch agrees with the job records**: see
//!      [`expected_branch`] and [`chain_breaks`]; and no `codegen` job
//!      ended in a way nothing in the run explains
//!      ([`unexplained_outcomes`]: a `manuallyEdited` skip, a failure);
//!    - **no half-delivered result**: `git fsck --strict` passes, `git
//!      status --porcelain` is empty, `HEAD` is on `main` at the harness's
//!      last commit, and no stale `*.lock` file is left in `.git`;
//!    - **no step outlived the crash**: every pid a step recorded before
//!      the restart is gone, and no process older than the new daemon works
//!      in `<storage>/workspaces/`; every workspace left belongs to a job
//!      that is running now.
//! 3. Resume, then, in one trial in seven, run `slow` and kill the daemon
//!    the moment its step writes its first pid ([`kill_at_spawn`]);
//!    otherwise drive load from a second thread (runs of the fast
//!    `codegen`, `failing` and `brief` pipelines and the long `slow` one,
//!    commits to `main`, dry runs, cancels, rollbacks) for a random 200 to
//!    3000 ms, then `kill -9`.
//! 4. With the daemon down: `PRAGMA integrity_check` on `orchex.sqlite3`,
//!    the queued-jobs counter, and no step process group recorded for a job
//!    that is not running (recovery would otherwise SIGKILL a pgid that may
//!    belong to anyone by the next start).
//!
//! After the last trial the daemon is started once more and checked, then
//! emergency-stopped and sent SIGTERM: it must exit 0 and leave no step
//! process and no workspace behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use orchex_e2e::{Daemon, e2e_config, free_port, repo_fixture};
use serde_json::{Value, json};

use crate::api::{self, STATES, is_final};
use crate::checks::{self, ProcInfo};

/// The delivery branch of the `codegen` pipeline of [`e2e_config`].
const BRANCH: &str = "orchex/codegen";

/// Settings of one run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Number of kill -9 / restart trials.
    pub(crate) trials: u32,
    /// The RNG seed (printed, to replay a run's schedule).
    pub(crate) seed: u64,
    /// The run stops (and fails) when it takes longer.
    pub(crate) time_limit: Duration,
    /// Keep the temporary directory even when everything passed.
    pub(crate) keep: bool,
}

/// The files of the run.
struct World {
    root: PathBuf,
    repo: PathBuf,
    storage: PathBuf,
    pids: PathBuf,
}

impl World {
    fn workspaces(&self) -> PathBuf {
        self.storage.join("workspaces")
    }

    fn database(&self) -> PathBuf {
        self.storage.join("orchex.sqlite3")
    }
}

/// What the harness knows, shared with the load thread.
#[derive(Debug, Default)]
struct Known {
    /// Every job id the API returned, with the last state it showed.
    jobs: BTreeMap<String, String>,
    /// `main`'s tip after the harness's last commit.
    main: String,
    /// Commits made to `main`.
    commits: u32,
    /// Load actions taken, by name.
    actions: BTreeMap<&'static str, u32>,
    /// Jobs already reported by [`unexplained_outcomes`].
    reported: std::collections::BTreeSet<String>,
    /// Outcomes of the codegen jobs in the last view, by state and skip
    /// reason.
    codegen: BTreeMap<String, u32>,
}

impl Known {
    fn track(&mut self, job: &Value) {
        if let Some((id, state)) = api::id_state(job) {
            self.jobs.insert(id, state);
        }
    }
}

fn lock(known: &Mutex<Known>) -> std::sync::MutexGuard<'_, Known> {
    known.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Runs the crash loop; `Ok(true)` when no violation was found.
pub(crate) fn run(options: &Options) -> Result<bool> {
    checks::build_binaries()?;
    let started = Instant::now();
    let deadline = started + options.time_limit;
    let mut rng = fastrand::Rng::with_seed(options.seed);
    println!(
        "crash-loop: {} trials, seed {} (replay with --seed {})",
        options.trials, options.seed, options.seed
    );
    let dir = tempfile::Builder::new()
        .prefix("orchex-crash-loop-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let root = dir
        .path()
        .canonicalize()
        .context("cannot resolve the temporary directory")?;
    let repo = repo_fixture(&root, "api");
    let world = World {
        storage: root.join("data"),
        pids: root.join("pids"),
        repo,
        root,
    };
    std::fs::write(
        world.root.join("orchex.toml"),
        e2e_config(&world.repo, &world.pids),
    )?;
    let known = Mutex::new(Known {
        main: checks::git_ok(&world.repo, &["rev-parse", "HEAD"])?,
        ..Known::default()
    });

    let mut violations: Vec<String> = Vec::new();
    let mut trials_done = 0;
    let (mut load_kills, mut startup_kills, mut spawn_kills) = (0_u32, 0_u32, 0_u32);
    for trial in 1..=options.trials {
        if Instant::now() >= deadline {
            violations.push(format!(
                "time limit of {}s reached after {trials_done} of {} trials",
                options.time_limit.as_secs(),
                options.trials
            ));
            break;
        }
        let trial_started = Instant::now();
        let cutoff = checks::recorded_pids(&world.pids).len();
        let mut daemon = Daemon::spawn_existing(&world.root, free_port());
        let mut found = Vec::new();
        let moment;
        let kind = rng.u8(0..7);
        if kind == 0 {
            let delay = Duration::from_millis(rng.u64(0..=700));
            std::thread::sleep(delay);
            moment = format!("start-up +{}ms", delay.as_millis());
            startup_kills += 1;
        } else {
            if !daemon.healthy_within(Duration::from_secs(60)) {
                violations.push(format!(
                    "trial {trial}: orchexd did not answer within 60 s; log {}",
                    daemon.log.display()
                ));
                break;
            }
            found.extend(after_restart(&daemon, &world, &known, cutoff)?);
            if kind == 1 {
                moment = kill_at_spawn(&daemon, &world, &known);
                spawn_kills += 1;
            } else {
                let delay = Duration::from_millis(rng.u64(200..=3000));
                drive_and_kill(&daemon, &world, &known, rng.u64(..), delay);
                moment = format!("load +{}ms", delay.as_millis());
                load_kills += 1;
            }
        }
        kill9(&mut daemon);
        found.extend(while_down(&world)?);
        trials_done += 1;
        let jobs = lock(&known).jobs.len();
        println!(
            "trial {trial}/{}: killed at {moment}, {jobs} jobs known, {:.1}s, {}",
            options.trials,
            trial_started.elapsed().as_secs_f64(),
            if found.is_empty() {
                "ok".to_owned()
            } else {
                format!("{} VIOLATIONS", found.len())
            }
        );
        for violation in &found {
            println!("  violation: {violation}");
        }
        violations.extend(found.into_iter().map(|v| format!("trial {trial}: {v}")));
    }

    // A last start: checked like the others, then stopped cleanly.
    let cutoff = checks::recorded_pids(&world.pids).len();
    let mut daemon = Daemon::spawn_existing(&world.root, free_port());
    if daemon.healthy_within(Duration::from_secs(60)) {
        let found = after_restart(&daemon, &world, &known, cutoff)?;
        let found = [found, final_stop(&mut daemon, &world)?].concat();
        for violation in &found {
            println!("  final: violation: {violation}");
        }
        violations.extend(found.into_iter().map(|v| format!("final start: {v}")));
    } else {
        violations.push("the final start did not answer within 60 s".to_owned());
    }
    drop(daemon);
    cleanup_processes(&world);

    let known = lock(&known);
    let mut states: BTreeMap<&str, u32> = BTreeMap::new();
    for state in known.jobs.values() {
        *states.entry(state.as_str()).or_default() += 1;
    }
    println!("jobs by last state: {states:?}");
    println!("codegen jobs: {:?}", known.codegen);
    println!(
        "load actions: {:?}; commits to main: {}",
        known.actions, known.commits
    );
    let ok = violations.is_empty();
    if !ok || options.keep {
        let kept = dir.keep();
        println!("kept the run's directory: {}", kept.display());
    }
    println!(
        "crash-loop: {} trials={trials_done}/{} seed={} kills={load_kills} during load + {spawn_kills} at a step's spawn + {startup_kills} during start-up, jobs={} violations={} duration={:.0}s",
        if ok { "ok" } else { "FAILED" },
        options.trials,
        options.seed,
        known.jobs.len(),
        violations.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(ok)
}

fn kill9(daemon: &mut Daemon) {
    checks::kill(daemon.pid());
    daemon.wait_exit(30);
}

/// The checks right after a restart (see the module doc); the orchestrator
/// is paused during them and resumed after.
fn after_restart(
    daemon: &Daemon,
    world: &World,
    known: &Mutex<Known>,
    cutoff: usize,
) -> Result<Vec<String>> {
    let mut violations = Vec::new();
    let (status, answer) = api::post(daemon, "/api/control/pause", None);
    if status != 200 {
        violations.push(format!("pause answered {status}: {answer}"));
    }
    violations.extend(survivors(daemon, world, cutoff));

    let Some((jobs, branch)) = stable_view(daemon, &world.repo)? else {
        violations.push(
            "no stable view of the codegen jobs and the branch within 30 s (a codegen job stays running)"
                .to_owned(),
        );
        resume(daemon, &mut violations);
        return Ok(violations);
    };
    let listed: BTreeMap<String, &Value> = jobs
        .iter()
        .filter_map(|job| Some((job["id"].as_str()?.to_owned(), job)))
        .collect();
    {
        let mut known = lock(known);
        for (id, last) in &known.jobs {
            let Some(job) = listed.get(id) else {
                violations.push(format!("job {id} (last seen {last}) is lost"));
                continue;
            };
            let state = job["state"].as_str().unwrap_or("<none>");
            if !STATES.contains(&state) {
                violations.push(format!("job {id} has an invalid state {state:?}"));
            } else if state == "interrupted" {
                violations.push(format!("job {id} is still interrupted after recovery"));
            } else if is_final(last)
                && state != last
                && !(last == "succeeded" && state == "rolledBack")
            {
                violations.push(format!(
                    "job {id} was {last} before the crash and is {state} after it"
                ));
            }
        }
        for job in &jobs {
            known.track(job);
        }
        known.codegen.clear();
        for job in jobs.iter().filter(|job| job["pipeline"] == "codegen") {
            let mut outcome = job["state"].as_str().unwrap_or("?").to_owned();
            if let Some(code) = job["skipReason"]["code"].as_str() {
                outcome = format!("{outcome}/{code}");
            }
            *known.codegen.entry(outcome).or_default() += 1;
        }
    }

    let (expected, reason) = expected_branch(&jobs);
    if branch != expected {
        let recent: Vec<String> = jobs
            .iter()
            .filter(|job| job["pipeline"] == "codegen")
            .take(6)
            .map(|job| {
                format!(
                    "{} {} commit={} previous={}",
                    job["id"].as_str().unwrap_or("?"),
                    job["state"].as_str().unwrap_or("?"),
                    job["delivery"]["commit"].as_str().unwrap_or("-"),
                    job["delivery"]["previous"].as_str().unwrap_or("-"),
                )
            })
            .collect();
        violations.push(format!(
            "{BRANCH} is {branch:?}, the job records say {expected:?} ({reason}); newest codegen jobs: {recent:?}"
        ));
    }

    violations.extend(chain_breaks(&jobs));
    violations.extend(unexplained_outcomes(&jobs, &mut lock(known).reported));

    let main = lock(known).main.clone();
    violations.extend(checks::repo_checks(&world.repo, &main)?);

    let running: Vec<&str> = jobs
        .iter()
        .filter(|job| job["state"] == "running")
        .filter_map(|job| job["id"].as_str())
        .collect();
    for entry in checks::workspace_entries(&world.storage) {
        if !running.contains(&entry.as_str()) {
            violations.push(format!(
                "workspace {entry} is left, and its job is not running"
            ));
        }
    }
    resume(daemon, &mut violations);
    Ok(violations)
}

fn resume(daemon: &Daemon, violations: &mut Vec<String>) {
    let (status, answer) = api::post(daemon, "/api/control/resume", None);
    if status != 200 {
        violations.push(format!("resume answered {status}: {answer}"));
    }
}

/// Step processes that survived the crash: pids recorded before the restart
/// (the first `cutoff` lines of the pid file) still alive 5 s after the new
/// daemon answered, and processes in the workspaces that are older than the
/// new daemon. Survivors are killed after being reported.
fn survivors(daemon: &Daemon, world: &World, cutoff: usize) -> Vec<String> {
    let mut violations = Vec::new();
    let recorded: Vec<u32> = checks::recorded_pids(&world.pids)
        .into_iter()
        .take(cutoff)
        .map(|r| r.pid)
        .collect();
    let until = Instant::now() + Duration::from_secs(5);
    let mut alive: Vec<u32> = recorded.clone();
    loop {
        alive.retain(|pid| checks::step_process_alive(*pid, None));
        if alive.is_empty() || Instant::now() >= until {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    for pid in alive {
        violations.push(format!(
            "step process {pid}, recorded before the crash, survived recovery"
        ));
        checks::kill(pid);
    }
    let born = checks::start_ticks(daemon.pid()).unwrap_or(u64::MAX);
    let older: Vec<ProcInfo> = checks::processes_in(&world.workspaces())
        .into_iter()
        .filter(|info| info.start_ticks.is_some_and(|ticks| ticks < born))
        .collect();
    for info in older {
        violations.push(format!(
            "a process from before the restart still works in a workspace: {info}"
        ));
        checks::kill(info.pid);
    }
    violations
}

/// Every job, and the branch's value, read so that no codegen job changed
/// in between and none is running: the list, the branch, the list again,
/// retried until both lists agree on the codegen jobs.
fn stable_view(daemon: &Daemon, repo: &Path) -> Result<Option<(Vec<Value>, Option<String>)>> {
    fn codegen(jobs: &[Value]) -> Vec<(Value, Value, Value)> {
        jobs.iter()
            .filter(|job| job["pipeline"] == "codegen")
            .map(|job| {
                (
                    job["id"].clone(),
                    job["state"].clone(),
                    job["delivery"].clone(),
                )
            })
            .collect()
    }
    let until = Instant::now() + Duration::from_secs(30);
    while Instant::now() < until {
        let before = api::all_jobs(daemon, "")?;
        let branch = checks::branch_value(repo, BRANCH)?;
        let after = api::all_jobs(daemon, "")?;
        let settled = !after
            .iter()
            .any(|job| job["pipeline"] == "codegen" && job["state"] == "running");
        if settled && codegen(&before) == codegen(&after) {
            return Ok(Some((after, branch)));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(None)
}

/// What the job records say the delivery branch holds, and why.
///
/// "The branch agrees with the job records" means: the branch holds exactly
/// the value the records say orchex last left there, which is also what the
/// daemon compares the branch with before its next delivery (its
/// human-edits-win check). That value is the `delivery.commit` of the
/// newest `succeeded` job of the pipeline whose delivery record is a branch
/// delivery to that branch (newest in creation order, as `GET /api/jobs`
/// lists them), and "absent" when there is none.
///
/// `rolledBack` jobs do not count: a rollback only moves the branch while
/// it is at the job's commit, so it undoes the newest delivery still in
/// place and restores its recorded `previous`, which is the commit of the
/// next older succeeded delivery (or absent, below the first one). Jobs in
/// any other state may carry a delivery record too (the intent written
/// before the branch moves, for an interrupted, failed or cancelled job):
/// none of them may be visible on the branch, since recovery undoes an
/// interrupted delivery and nothing is delivered after a cancel. A branch
/// anywhere else is a half-delivered result, or records that would make
/// orchex take its own delivery for a human edit (see [`chain_breaks`] for
/// the history behind the value).
fn expected_branch(jobs: &[Value]) -> (Option<String>, String) {
    for job in branch_jobs(jobs) {
        if job["state"] == "succeeded" {
            let id = job["id"].as_str().unwrap_or("?");
            return (
                job["delivery"]["commit"].as_str().map(str::to_owned),
                format!("the commit of job {id}, the newest succeeded delivery"),
            );
        }
    }
    (None, "no succeeded delivery".to_owned())
}

/// The codegen jobs with a branch delivery record for [`BRANCH`], newest
/// first.
fn branch_jobs(jobs: &[Value]) -> impl Iterator<Item = &Value> {
    jobs.iter().filter(|job| {
        job["pipeline"] == "codegen"
            && job["delivery"]["kind"] == "branch"
            && job["delivery"]["branch"] == BRANCH
    })
}

/// The history behind the branch value: every succeeded delivery replaced
/// (`delivery.previous`) the commit of the next older succeeded delivery,
/// or an absent branch below the oldest. Deliveries stack in creation
/// order and rollbacks pop them; a delivery that replaced anything else
/// means two deliveries overtook each other, or one moved the branch
/// under another.
fn chain_breaks(jobs: &[Value]) -> Vec<String> {
    let succeeded: Vec<&Value> = branch_jobs(jobs)
        .filter(|job| job["state"] == "succeeded")
        .collect();
    let mut breaks = Vec::new();
    for (i, job) in succeeded.iter().enumerate() {
        let below = succeeded
            .get(i + 1)
            .and_then(|older| older["delivery"]["commit"].as_str());
        let previous = job["delivery"]["previous"].as_str();
        if previous != below {
            breaks.push(format!(
                "succeeded job {} replaced {previous:?} on {BRANCH}, but the next older succeeded delivery left {below:?} there",
                job["id"].as_str().unwrap_or("?")
            ));
        }
    }
    breaks
}

/// Outcomes of `codegen` jobs that nothing in the run explains: nobody edits
/// the delivery branch by hand, so a `manuallyEdited` skip means orchex
/// took its own delivery (or rollback) for a human's; and its step cannot
/// fail, so a failure other than a second interruption means a delivery
/// went wrong (two deliveries racing for the branch, for instance). Each
/// job is reported once.
fn unexplained_outcomes(
    jobs: &[Value],
    reported: &mut std::collections::BTreeSet<String>,
) -> Vec<String> {
    let mut violations = Vec::new();
    for job in jobs.iter().filter(|job| job["pipeline"] == "codegen") {
        let id = job["id"].as_str().unwrap_or("?");
        let error = job["error"].as_str().unwrap_or("");
        let unexplained = match job["state"].as_str() {
            Some("skipped") => job["skipReason"]["code"] == "manuallyEdited",
            Some("failed") => !error.starts_with("interrupted twice"),
            _ => false,
        };
        if unexplained && reported.insert(id.to_owned()) {
            violations.push(format!(
                "codegen job {id} ended {} ({}{error}), which nothing in the run explains",
                job["state"].as_str().unwrap_or("?"),
                job["skipReason"]
            ));
        }
    }
    violations
}

/// Kills the daemon the moment a step starts: `slow` is run (after the
/// running ones are cancelled, to free a slot), and the kill follows the
/// first pid its step writes, the step's very first action. Whatever
/// records the step's process group must be durable by then, or the step
/// survives the crash unknown to recovery.
fn kill_at_spawn(daemon: &Daemon, world: &World, known: &Mutex<Known>) -> String {
    let body = json!({"pipeline": "slow"});
    let _ = api::post(daemon, "/api/jobs/cancel", Some(&body));
    let before = checks::recorded_pids(&world.pids).len();
    let started = Instant::now();
    for job in api::submit(daemon, "slow", false, false) {
        lock(known).track(&job);
    }
    let until = started + Duration::from_secs(10);
    while checks::recorded_pids(&world.pids).len() == before && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(1));
    }
    checks::kill(daemon.pid());
    format!("a step's spawn +{}ms", started.elapsed().as_millis())
}

/// Drives load from a second thread for `delay`, then kills the daemon
/// (`SIGKILL`) while the load is still running.
fn drive_and_kill(
    daemon: &Daemon,
    world: &World,
    known: &Mutex<Known>,
    seed: u64,
    delay: Duration,
) {
    let stop = AtomicBool::new(false);
    let pid = daemon.pid();
    std::thread::scope(|scope| {
        scope.spawn(|| load(daemon, world, known, seed, &stop));
        std::thread::sleep(delay);
        checks::kill(pid);
        stop.store(true, Ordering::SeqCst);
    });
}

/// Random API calls and commits until `stop`; every job the API answers is
/// tracked.
fn load(daemon: &Daemon, world: &World, known: &Mutex<Known>, seed: u64, stop: &AtomicBool) {
    let mut rng = fastrand::Rng::with_seed(seed);
    while !stop.load(Ordering::SeqCst) {
        let (name, answered): (&'static str, Vec<Value>) = match rng.u32(0..100) {
            0..=29 => ("codegen", api::submit(daemon, "codegen", rng.bool(), false)),
            30..=41 => {
                commit(world, known, &mut rng);
                ("commit", Vec::new())
            }
            42..=51 => ("brief", api::submit(daemon, "brief", false, false)),
            52..=57 => ("slow", api::submit(daemon, "slow", false, false)),
            58..=64 => ("failing", api::submit(daemon, "failing", false, false)),
            65..=71 => ("dry-run", api::submit(daemon, "codegen", true, true)),
            72..=80 => {
                let open: Vec<String> = lock(known)
                    .jobs
                    .iter()
                    .filter(|(_, state)| !is_final(state))
                    .map(|(id, _)| id.clone())
                    .collect();
                let answer = if open.is_empty() {
                    None
                } else {
                    api::cancel(daemon, &open[rng.usize(..open.len())])
                };
                ("cancel", answer.into_iter().collect())
            }
            81..=88 => ("rollback", rollback_newest(daemon)),
            89..=93 => {
                let body = json!({"pipeline": "slow"});
                let _ = api::post(daemon, "/api/jobs/cancel", Some(&body));
                ("cancel-slow", Vec::new())
            }
            _ => {
                let (_, body) = daemon.get("/api/jobs?limit=50", Some(orchex_e2e::ADMIN));
                (
                    "list",
                    body["items"].as_array().cloned().unwrap_or_default(),
                )
            }
        };
        {
            let mut known = lock(known);
            *known.actions.entry(name).or_default() += 1;
            for job in &answered {
                known.track(job);
            }
        }
        std::thread::sleep(Duration::from_millis(rng.u64(10..=120)));
    }
}

/// Rolls back the newest succeeded codegen job; the job answered.
fn rollback_newest(daemon: &Daemon) -> Vec<Value> {
    let (_, body) = daemon.get(
        "/api/jobs?pipeline=codegen&state=succeeded&limit=1",
        Some(orchex_e2e::ADMIN),
    );
    let Some(id) = body["items"][0]["id"].as_str() else {
        return Vec::new();
    };
    let (status, answer) = api::post(daemon, &format!("/api/jobs/{id}/rollback"), None);
    if status == 200 {
        vec![answer]
    } else {
        Vec::new()
    }
}

/// Commits a change of `schema/api.txt` to `main` (a commit trigger, and a
/// new input for codegen).
fn commit(world: &World, known: &Mutex<Known>, rng: &mut fastrand::Rng) {
    let n = lock(known).commits + 1;
    let text = format!("v{n} {}\n", rng.u32(..));
    let committed = std::fs::write(world.repo.join("schema/api.txt"), text)
        .map_err(anyhow::Error::from)
        .and_then(|()| checks::git_ok(&world.repo, &["commit", "-qam", &format!("change {n}")]))
        .and_then(|_| checks::git_ok(&world.repo, &["rev-parse", "HEAD"]));
    let mut known = lock(known);
    match committed {
        Ok(head) => {
            known.main = head;
            known.commits = n;
        }
        Err(err) => eprintln!("harness: cannot commit to main: {err:#}"),
    }
}

/// The checks while the daemon is down.
fn while_down(world: &World) -> Result<Vec<String>> {
    let report = checks::db_checks(&world.database())?;
    let mut violations = report.violations;
    for (pgid, state) in report.pgids {
        if state != "running" {
            violations.push(format!(
                "the process group {pgid} of a {state} job is still recorded: the next recovery would SIGKILL whatever group has that id by then"
            ));
        }
    }
    Ok(violations)
}

/// Emergency stop, SIGTERM, exit 0, and nothing left behind.
fn final_stop(daemon: &mut Daemon, world: &World) -> Result<Vec<String>> {
    let mut violations = Vec::new();
    let (status, answer) = api::post(daemon, "/api/control/emergency-stop", None);
    if status != 200 {
        violations.push(format!("emergency stop answered {status}: {answer}"));
    }
    daemon.signal("TERM");
    let exit = daemon.wait_exit(60);
    if !exit.success() {
        violations.push(format!("SIGTERM ended orchexd with {exit}"));
    }
    let leftover: Vec<u32> = checks::recorded_pids(&world.pids)
        .into_iter()
        .map(|r| r.pid)
        .filter(|pid| checks::step_process_alive(*pid, None))
        .collect();
    if !leftover.is_empty() {
        violations.push(format!(
            "step processes outlived the daemon's stop: {leftover:?}"
        ));
    }
    let entries = checks::workspace_entries(&world.storage);
    if !entries.is_empty() {
        violations.push(format!("workspaces left after the stop: {entries:?}"));
    }
    violations.extend(while_down(world)?);
    Ok(violations)
}

/// Kills whatever step process of this run is still alive, so that a
/// failed run leaves nothing behind.
fn cleanup_processes(world: &World) {
    for recorded in checks::recorded_pids(&world.pids) {
        if checks::step_process_alive(recorded.pid, None) {
            checks::kill(recorded.pid);
        }
    }
    for info in checks::processes_in(&world.workspaces()) {
        checks::kill(info.pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: &str, state: &str, commit: &str, previous: Option<&str>) -> Value {
        json!({
            "id": id, "pipeline": "codegen", "state": state,
            "delivery": {"kind": "branch", "branch": BRANCH, "commit": commit, "previous": previous},
        })
    }

    #[test]
    fn the_newest_succeeded_branch_job_decides() {
        let jobs = vec![
            job("d", "queued", "c4", Some("c3")),
            job("c", "failed", "c3", Some("c2")),
            job("b", "succeeded", "c2", Some("c1")),
            job("a", "succeeded", "c1", None),
        ];
        assert_eq!(expected_branch(&jobs).0.as_deref(), Some("c2"));
        assert!(chain_breaks(&jobs).is_empty());
        // Two rollbacks in a row, then a delivery on what is left.
        let jobs = vec![
            job("d", "succeeded", "c4", Some("c1")),
            job("c", "rolledBack", "c3", Some("c2")),
            job("b", "rolledBack", "c2", Some("c1")),
            job("a", "succeeded", "c1", None),
        ];
        assert_eq!(expected_branch(&jobs).0.as_deref(), Some("c4"));
        assert!(chain_breaks(&jobs).is_empty());
        let jobs = vec![job("a", "rolledBack", "c1", None)];
        assert_eq!(expected_branch(&jobs).0, None);
        assert_eq!(expected_branch(&[]).0, None);
    }

    #[test]
    fn deliveries_that_overtook_each_other_break_the_chain() {
        // b (newer) delivered first, then a on top of it.
        let jobs = vec![
            job("b", "succeeded", "c2", Some("c0")),
            job("a", "succeeded", "c1", Some("c2")),
            job("z", "succeeded", "c0", None),
        ];
        assert_eq!(chain_breaks(&jobs).len(), 2);
    }
}
