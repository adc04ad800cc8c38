//! Process hygiene: many jobs whose steps fork, ignore SIGTERM and never end
//! on their own, ended by every way orchex ends a step (a step's
//! `timeoutSecs`, a validation step's, the job timeout, an operator cancel
//! of a running or a queued job, a batch cancel, an emergency stop); then no
//! process and no workspace may be left.
//!
//! Every step runs `hang.sh`, which ignores SIGTERM, forks a subshell that
//! forks a `sleep`, forks a second `sleep`, writes `<job id> <pid>` for
//! each of the four processes to the pid file, and waits. Pipelines, `K` of
//! each kind (a queued job coalesces the runs of its pipeline, so several
//! pipelines let several jobs of a kind run at once):
//!
//! - `cancel-i`: cancelled by the harness once it runs (at once, or after
//!   its four pids are recorded, or never, when the job timeout ends it);
//! - `step-i`: the step's `timeoutSecs = 1`;
//! - `validate-i`: a quick step, then a validation step with
//!   `timeoutSecs = 1`;
//! - `job-i`: no step timeout; the job timeout (`jobTimeoutSecs = 3`).
//!
//! Checks: every pid recorded by a job is gone within 2 s of the harness
//! seeing the job finished (pids are matched with their job through
//! `ORCHEX_JOB_ID` in the process's environment, so a recycled pid is not
//! mistaken for a survivor); at the end, every job is finished as
//! `cancelled` or `timedOut`, no recorded pid is alive, no process has its
//! working directory or command line in `<storage>/workspaces/`, the
//! directory is empty, and SIGTERM stops the daemon with exit code 0.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use orchex_e2e::{ADMIN, Daemon, READER, repo_fixture};
use serde_json::json;

use crate::api::{self, is_final};
use crate::checks;

/// Pipelines of each kind.
const PER_KIND: usize = 4;
/// Jobs running at once (`orchestrator.maxConcurrent`).
const MAX_CONCURRENT: usize = 8;
/// Jobs kept queued or running by the harness.
const IN_FLIGHT: usize = 12;
/// The job timeout (`optimizer.safety.jobTimeoutSecs`).
const JOB_TIMEOUT_SECS: u64 = 3;
/// How long a recorded pid may outlive its finished job.
const GRACE: Duration = Duration::from_secs(2);

/// Settings of one run.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// Jobs to run.
    pub(crate) jobs: usize,
    /// The RNG seed.
    pub(crate) seed: u64,
    /// The run stops (and fails) when it takes longer.
    pub(crate) time_limit: Duration,
    /// Keep the temporary directory even when everything passed.
    pub(crate) keep: bool,
}

/// The step every pipeline runs (`sh hang.sh <pid file>`).
const HANG: &str = r#"# Ignores SIGTERM, forks (a subshell with its own child, and a sleep),
# records every pid with its job, and never ends on its own.
trap '' TERM
pids="$1"
echo "$ORCHEX_JOB_ID $$" >> "$pids"
(trap '' TERM; sleep 300 & echo "$ORCHEX_JOB_ID $!" >> "$pids"; wait) &
echo "$ORCHEX_JOB_ID $!" >> "$pids"
sleep 300 &
echo "$ORCHEX_JOB_ID $!" >> "$pids"
wait
"#;

/// The configuration: repository `api`, the pipelines of the module doc.
fn config(repo: &Path, hang: &Path, pids: &Path) -> String {
    let step = |name: &str, timeout: Option<u64>| {
        let mut text = format!(
            "name = \"{name}\"\nrun = [\"sh\", \"{}\", \"{}\"]\n",
            hang.display(),
            pids.display()
        );
        if let Some(secs) = timeout {
            let _ = writeln!(text, "timeoutSecs = {secs}");
        }
        text
    };
    let mut text = format!(
        r#"version = 2

[optimizer.schedule]
enabled = false

[optimizer.safety]
rateLimitPerHour = 1000000
circuitBreakerThreshold = 1000000
jobTimeoutSecs = {JOB_TIMEOUT_SECS}

[orchestrator]
maxConcurrent = {MAX_CONCURRENT}
adaptiveOptimization = false
healthCheckIntervalSecs = 5

[dashboard]
authToken = "{ADMIN}"
readOnlyToken = "{READER}"

[storage]
path = "data"

[[repositories]]
name = "api"
path = "{repo}"
branch = "main"
"#,
        repo = repo.display()
    );
    for i in 0..PER_KIND {
        for (kind, steps) in [
            (
                "cancel",
                format!("[[pipelines.steps]]\n{}", step("hang", Some(600))),
            ),
            (
                "step",
                format!("[[pipelines.steps]]\n{}", step("hang", Some(1))),
            ),
            (
                "validate",
                format!(
                    "[[pipelines.steps]]\nname = \"quick\"\nrun = [\"true\"]\n\n[[pipelines.validate]]\n{}",
                    step("hang", Some(1))
                ),
            ),
            (
                "job",
                format!("[[pipelines.steps]]\n{}", step("hang", None)),
            ),
        ] {
            let _ = write!(
                text,
                "\n[[pipelines]]\nname = \"{kind}-{i}\"\nrepositories = [\"api\"]\ntriggers = [\"manual\"]\ndeliver = \"none\"\n\n{steps}"
            );
        }
    }
    text
}

/// How the harness ends a `cancel-i` job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    /// As soon as it is seen running (often before its step spawned).
    AtOnce,
    /// Once its four pids are recorded.
    AfterForks,
    /// Never: the job timeout ends it.
    Never,
}

/// What the harness tracks per job.
#[derive(Debug)]
struct Tracked {
    plan: Plan,
    cancelled: bool,
    finished: Option<Instant>,
    state: String,
}

/// Runs the hygiene harness; `Ok(true)` when no violation was found.
pub(crate) fn run(options: &Options) -> Result<bool> {
    checks::build_binaries()?;
    let started = Instant::now();
    let deadline = started + options.time_limit;
    let mut rng = fastrand::Rng::with_seed(options.seed);
    println!(
        "hygiene: {} jobs, seed {} (replay with --seed {})",
        options.jobs, options.seed, options.seed
    );
    let dir = tempfile::Builder::new()
        .prefix("orchex-hygiene-")
        .tempdir()
        .context("cannot create a temporary directory")?;
    let root = dir
        .path()
        .canonicalize()
        .context("cannot resolve the temporary directory")?;
    let repo = repo_fixture(&root, "api");
    let hang = root.join("hang.sh");
    let pids = root.join("pids");
    let storage = root.join("data");
    let workspaces = storage.join("workspaces");
    std::fs::write(&hang, HANG)?;
    std::fs::write(root.join("orchex.toml"), config(&repo, &hang, &pids))?;
    let mut daemon = Daemon::spawn_existing(&root, orchex_e2e::free_port());
    if !daemon.healthy_within(Duration::from_secs(60)) {
        println!(
            "hygiene: FAILED, orchexd did not answer within 60 s; log {}",
            daemon.log.display()
        );
        let _ = dir.keep();
        return Ok(false);
    }

    let pipelines: Vec<String> = ["cancel", "step", "validate", "job"]
        .iter()
        .flat_map(|kind| (0..PER_KIND).map(move |i| format!("{kind}-{i}")))
        .collect();
    let mut jobs: BTreeMap<String, Tracked> = BTreeMap::new();
    let mut violations: Vec<String> = Vec::new();
    let mut reported: BTreeSet<u32> = BTreeSet::new();
    let mut counts: BTreeMap<&'static str, u32> = BTreeMap::new();
    let mut next_batch = 50 + rng.usize(..50);
    let mut next_emergency = 150 + rng.usize(..100);
    let mut next_progress = options.jobs.div_ceil(10).max(1);

    loop {
        if Instant::now() >= deadline {
            violations.push(format!(
                "time limit of {}s reached with {} of {} jobs created",
                options.time_limit.as_secs(),
                jobs.len(),
                options.jobs
            ));
            break;
        }
        let open = api::all_jobs(&daemon, "&state=queued,running")?;
        let open_ids: BTreeSet<String> = open
            .iter()
            .filter_map(|job| job["id"].as_str().map(str::to_owned))
            .collect();
        let recorded = checks::recorded_pids(&pids);

        // Jobs that finished since the last look: fetch their state.
        let now = Instant::now();
        for (id, tracked) in &mut jobs {
            if tracked.finished.is_none() && !open_ids.contains(id) {
                let (status, job) = daemon.get(&format!("/api/jobs/{id}"), Some(ADMIN));
                let state = job["state"].as_str().unwrap_or("").to_owned();
                if status == 200 && is_final(&state) {
                    tracked.finished = Some(now);
                    tracked.state = state;
                }
            }
        }
        // Their processes must be gone (within GRACE).
        for entry in &recorded {
            let Some(job) = entry.job.as_deref() else {
                continue;
            };
            let Some(finished) = jobs.get(job).and_then(|t| t.finished) else {
                continue;
            };
            if now.duration_since(finished) > GRACE
                && !reported.contains(&entry.pid)
                && checks::step_process_alive(entry.pid, Some(job))
            {
                reported.insert(entry.pid);
                violations.push(format!(
                    "pid {} of job {job} ({}) is alive {}s after the job ended",
                    entry.pid,
                    jobs.get(job).map_or("?", |t| t.state.as_str()),
                    now.duration_since(finished).as_secs()
                ));
                checks::kill(entry.pid);
            }
        }

        // Cancels.
        for job in &open {
            let Some((id, state)) = api::id_state(job) else {
                continue;
            };
            let Some(tracked) = jobs.get_mut(&id) else {
                continue;
            };
            if tracked.cancelled || state != "running" {
                continue;
            }
            let forks = recorded
                .iter()
                .filter(|r| r.job.as_deref() == Some(id.as_str()))
                .count();
            let now_is_the_time = match tracked.plan {
                Plan::AtOnce => true,
                Plan::AfterForks => forks >= 4,
                Plan::Never => false,
            };
            if now_is_the_time {
                tracked.cancelled = true;
                api::cancel(&daemon, &id);
                *counts.entry("cancel running").or_default() += 1;
            }
        }
        if jobs.len() >= next_batch {
            next_batch += 100 + rng.usize(..100);
            let body = json!({"state": "running"});
            let (_, answer) = api::post(&daemon, "/api/jobs/cancel", Some(&body));
            let n = answer["cancelled"].as_array().map_or(0, Vec::len);
            *counts.entry("batch-cancelled").or_default() += u32::try_from(n).unwrap_or(0);
        }
        if jobs.len() >= next_emergency {
            next_emergency += 250 + rng.usize(..150);
            let (_, answer) = api::post(&daemon, "/api/control/emergency-stop", None);
            let n = answer["cancelled"].as_array().map_or(0, Vec::len);
            *counts.entry("emergency-cancelled").or_default() += u32::try_from(n).unwrap_or(0);
            api::post(&daemon, "/api/control/resume", None);
        }

        // New jobs, on pipelines without a queued job (a second run of one
        // would coalesce into it).
        let mut busy: BTreeSet<String> = open
            .iter()
            .filter(|job| job["state"] == "queued")
            .filter_map(|job| job["pipeline"].as_str().map(str::to_owned))
            .collect();
        let mut in_flight = open.len();
        while jobs.len() < options.jobs && in_flight < IN_FLIGHT {
            let free: Vec<&String> = pipelines.iter().filter(|p| !busy.contains(*p)).collect();
            if free.is_empty() {
                break;
            }
            let pipeline = free[rng.usize(..free.len())].clone();
            busy.insert(pipeline.clone());
            in_flight += 1;
            for job in api::submit(&daemon, &pipeline, true, false) {
                let Some((id, state)) = api::id_state(&job) else {
                    continue;
                };
                if jobs.contains_key(&id) {
                    continue;
                }
                let plan = if pipeline.starts_with("cancel") {
                    match rng.u8(0..10) {
                        0..=2 => Plan::AtOnce,
                        3..=8 => Plan::AfterForks,
                        _ => Plan::Never,
                    }
                } else {
                    Plan::Never
                };
                // Now and then a queued job is cancelled before it runs.
                let cancelled = state == "queued" && rng.u8(0..20) == 0;
                if cancelled {
                    api::cancel(&daemon, &id);
                    *counts.entry("cancel queued").or_default() += 1;
                }
                jobs.insert(
                    id,
                    Tracked {
                        plan,
                        cancelled,
                        finished: is_final(&state).then_some(Instant::now()),
                        state,
                    },
                );
            }
        }
        if jobs.len() >= next_progress {
            println!(
                "  {} jobs created, {:.0}s",
                jobs.len(),
                started.elapsed().as_secs_f64()
            );
            next_progress += options.jobs.div_ceil(10).max(1);
        }
        if jobs.len() >= options.jobs && jobs.values().all(|t| t.finished.is_some()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }

    // The last finished jobs get their grace period too.
    std::thread::sleep(GRACE);
    violations.extend(final_checks(&jobs, &pids, &workspaces, &storage));
    daemon.signal("TERM");
    let exit = daemon.wait_exit(60);
    if !exit.success() {
        violations.push(format!("SIGTERM ended orchexd with {exit}"));
    }
    let entries = checks::workspace_entries(&storage);
    if !entries.is_empty() {
        violations.push(format!("workspaces left after the stop: {entries:?}"));
    }
    drop(daemon);
    for info in checks::processes_in(&workspaces) {
        checks::kill(info.pid);
    }

    let mut states: BTreeMap<&str, u32> = BTreeMap::new();
    for tracked in jobs.values() {
        *states.entry(tracked.state.as_str()).or_default() += 1;
    }
    let processes = checks::recorded_pids(&pids).len();
    println!("jobs by state: {states:?}; harness actions: {counts:?}");
    for violation in &violations {
        println!("  violation: {violation}");
    }
    let ok = violations.is_empty();
    if !ok || options.keep {
        let kept = dir.keep();
        println!("kept the run's directory: {}", kept.display());
    }
    println!(
        "hygiene: {} jobs={} processes={processes} seed={} leftover-processes={} leftover-workspaces={} violations={} duration={:.0}s",
        if ok { "ok" } else { "FAILED" },
        jobs.len(),
        options.seed,
        violations
            .iter()
            .filter(|v| v.contains("pid") || v.contains("process"))
            .count(),
        violations
            .iter()
            .filter(|v| v.contains("workspace"))
            .count(),
        violations.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(ok)
}

/// The checks once every job is finished (see the module doc).
fn final_checks(
    jobs: &BTreeMap<String, Tracked>,
    pids: &Path,
    workspaces: &Path,
    storage: &Path,
) -> Vec<String> {
    let mut violations = Vec::new();
    for (id, tracked) in jobs {
        if !matches!(tracked.state.as_str(), "cancelled" | "timedOut") {
            violations.push(format!(
                "job {id} ended {:?}; a step that never ends can only be cancelled or time out",
                tracked.state
            ));
        }
    }
    for recorded in checks::recorded_pids(pids) {
        if checks::step_process_alive(recorded.pid, recorded.job.as_deref()) {
            violations.push(format!(
                "pid {} of job {} outlived it",
                recorded.pid,
                recorded.job.as_deref().unwrap_or("?")
            ));
            checks::kill(recorded.pid);
        }
    }
    for info in checks::processes_in(workspaces) {
        violations.push(format!("a process is left in the workspaces: {info}"));
        checks::kill(info.pid);
    }
    let entries = checks::workspace_entries(storage);
    if !entries.is_empty() {
        violations.push(format!(
            "{} workspace directories are left: {entries:?}",
            entries.len()
        ));
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_has_every_pipeline_kind() {
        let text = config(Path::new("/r"), Path::new("/h.sh"), Path::new("/p"));
        for name in ["cancel-0", "step-3", "validate-1", "job-2"] {
            assert!(text.contains(&format!("name = \"{name}\"")), "{text}");
        }
        assert!(text.contains("[[pipelines.validate]]"));
        assert!(text.contains("timeoutSecs = 1"));
    }
}
