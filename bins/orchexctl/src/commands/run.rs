//! `run REPO [--pipeline P] [--dry-run] [--force] [--wait]`.
//!
//! `POST /api/jobs` answers 202 with the queued jobs. With `--wait` the
//! command polls `GET /api/jobs/{id}` every 300 ms and shows one progress
//! bar per job (indicatif, on stderr) until every job has left `queued` and
//! `running`; the exit code is their outcome. When stderr is not a terminal
//! the bars are replaced by one line per change, which reads well in CI
//! logs.

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use orchex_core::{Job, JobState, Timestamp};
use serde_json::{Value, json};

use super::jobs::{job_duration, job_note, jobs_table, parse_job};
use super::{Ctx, print_json};
use crate::cli::RunArgs;
use crate::client::{Client, ClientError, EXIT_FAILURE, encode};
use crate::output::{self, Mode, Style};

/// How often a waited-for job is polled.
const POLL_INTERVAL: Duration = Duration::from_millis(300);
/// How long the daemon may stay unreachable during `--wait` (a restart)
/// before the command gives up with exit 3.
const UNREACHABLE_GRACE: Duration = Duration::from_secs(10);

/// `orchexctl run`.
pub(crate) fn run(ctx: &Ctx, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let mode = ctx.mode("run")?;
    let client = ctx.client()?;
    let mut body = json!({"repo": args.repo.as_str()});
    if let Some(pipeline) = &args.pipeline {
        body["pipeline"] = json!(pipeline);
    }
    if args.force {
        body["force"] = json!(true);
    }
    if args.dry_run {
        body["dryRun"] = json!(true);
    }
    let answer = client.post("/api/jobs", Some(&body))?;
    let items = answer
        .get("items")
        .and_then(Value::as_array)
        .cloned()
        .ok_or_else(|| ClientError::invalid("/api/jobs", "no `items` array"))?;
    if !args.wait {
        return match mode {
            Mode::Json => print_json(&Value::Array(items)),
            Mode::Table => {
                let jobs = parse_jobs(&items)?;
                if jobs.is_empty() {
                    output::print("no job was queued\n")?;
                } else {
                    output::print(&jobs_table(&jobs, ctx.style, Timestamp::now()))?;
                }
                Ok(ExitCode::SUCCESS)
            }
        };
    }
    let jobs = parse_jobs(&items)?;
    let finished = wait(ctx, &client, jobs)?;
    match mode {
        Mode::Json => {
            // The final state of each job, as the daemon last sent it.
            let values: Vec<Value> = finished.iter().map(|(_, raw)| raw.clone()).collect();
            output::print(&output::json(&Value::Array(values)))?;
        }
        Mode::Table => {
            let jobs: Vec<Job> = finished.iter().map(|(job, _)| job.clone()).collect();
            if jobs.is_empty() {
                output::print("no job was queued\n")?;
            } else {
                output::print(&jobs_table(&jobs, ctx.style, Timestamp::now()))?;
            }
        }
    }
    let states: Vec<JobState> = finished.iter().map(|(job, _)| job.state()).collect();
    Ok(if all_succeeded(&states) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FAILURE)
    })
}

fn parse_jobs(items: &[Value]) -> Result<Vec<Job>, ClientError> {
    items
        .iter()
        .map(|item| parse_job("/api/jobs", item))
        .collect()
}

/// Whether `--wait` succeeds: every job succeeded or was skipped. A job
/// rolled back meanwhile had succeeded, so it counts as success too.
pub(crate) fn all_succeeded(states: &[JobState]) -> bool {
    states.iter().all(|state| {
        matches!(
            state,
            JobState::Succeeded | JobState::Skipped | JobState::RolledBack
        )
    })
}

/// Whether `--wait` stops waiting for a job in `state`. `interrupted` ends
/// the wait too: the daemon stopped under the job, and whether it is
/// re-queued is up to the next daemon start.
pub(crate) const fn is_terminal(state: JobState) -> bool {
    !state.is_active()
}

/// The number of steps each pipeline runs (steps plus validation steps),
/// from the running config, so the bars can show `2/5`. Best effort: a
/// config the CLI cannot read only means bars without a total.
fn step_totals(client: &Client) -> HashMap<String, u64> {
    let Ok(config) = client.get("/api/config", &[]) else {
        return HashMap::new();
    };
    step_totals_of(&config)
}

/// [`step_totals`] for a config value.
pub(crate) fn step_totals_of(config: &Value) -> HashMap<String, u64> {
    let count = |pipeline: &Value, key: &str| {
        pipeline
            .get(key)
            .and_then(Value::as_array)
            .map_or(0, |steps| steps.len() as u64)
    };
    config
        .get("pipelines")
        .and_then(Value::as_array)
        .map(|pipelines| {
            pipelines
                .iter()
                .filter_map(|pipeline| {
                    let name = pipeline.get("name")?.as_str()?.to_owned();
                    Some((name, count(pipeline, "steps") + count(pipeline, "validate")))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The progress display: indicatif bars, or plain lines.
enum Display {
    /// Bars on a terminal.
    Bars(Vec<ProgressBar>),
    /// One stderr line per change: per job, its step total (0 when unknown)
    /// and what was last printed.
    Lines(Vec<(u64, Option<(JobState, usize)>)>),
}

/// The bar template: with a bar when the number of steps is known, and
/// without colour when colour is off.
const fn bar_template(total_known: bool, color: bool) -> &'static str {
    match (total_known, color) {
        (true, true) => "{spinner:.cyan} {prefix:.bold} [{bar:24.cyan/blue}] {pos}/{len} {msg}",
        (true, false) => "{spinner} {prefix} [{bar:24}] {pos}/{len} {msg}",
        (false, true) => "{spinner:.cyan} {prefix:.bold} {pos} steps {msg}",
        (false, false) => "{spinner} {prefix} {pos} steps {msg}",
    }
}

/// The bar style for [`bar_template`].
fn bar_style(total_known: bool, style: Style) -> ProgressStyle {
    ProgressStyle::with_template(bar_template(total_known, style.color))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

/// What the bar says about a job: its state and the last step done.
fn progress_message(job: &Job) -> String {
    let last = job.steps.last().map(|step| step.name.as_str());
    match (job.state(), last) {
        (JobState::Running, Some(step)) => format!("running, after {step}"),
        (state, _) => state.to_string(),
    }
}

/// The final line of a job: state, duration and why.
fn final_message(job: &Job, style: Style) -> String {
    let state = style.paint(job.state().as_str(), output::state_color(job.state()));
    let note = job_note(job);
    let duration = job_duration(job, Timestamp::now());
    match (duration.as_str(), note.is_empty()) {
        ("-", true) => state,
        ("-", false) => format!("{state}: {note}"),
        (_, true) => format!("{state} in {duration}"),
        (_, false) => format!("{state} in {duration}: {note}"),
    }
}

/// Polls every job until each is terminal; answers the final jobs with
/// their raw JSON, in the order the daemon queued them.
fn wait(ctx: &Ctx, client: &Client, jobs: Vec<Job>) -> anyhow::Result<Vec<(Job, Value)>> {
    let totals = step_totals(client);
    let style = ctx.stderr_style;
    let mut display = if ctx.stderr_is_terminal {
        let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let bars = jobs
            .iter()
            .map(|job| {
                let total = totals.get(&job.pipeline).copied().unwrap_or(0);
                let bar = multi.add(ProgressBar::new(total));
                bar.set_style(bar_style(total > 0, style));
                bar.set_prefix(format!("{}/{}", job.repo, job.pipeline));
                bar.set_message(progress_message(job));
                bar.enable_steady_tick(Duration::from_millis(120));
                bar
            })
            .collect();
        Display::Bars(bars)
    } else {
        Display::Lines(
            jobs.iter()
                .map(|job| (totals.get(&job.pipeline).copied().unwrap_or(0), None))
                .collect(),
        )
    };

    let mut current: Vec<(Job, Value)> = jobs
        .into_iter()
        .map(|job| {
            let raw = serde_json::to_value(&job).unwrap_or(Value::Null);
            (job, raw)
        })
        .collect();
    let mut unreachable_since: Option<Instant> = None;
    loop {
        for (index, (job, raw)) in current.iter_mut().enumerate() {
            if !is_terminal(job.state()) {
                let path = format!("/api/jobs/{}", encode(&job.id.to_string()));
                match client.get(&path, &[]) {
                    Ok(value) => {
                        *job = parse_job(&path, &value)?;
                        *raw = value;
                        unreachable_since = None;
                    }
                    // A daemon restart is survivable; a long outage is not.
                    Err(err) if err.is_unreachable() => {
                        let since = *unreachable_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > UNREACHABLE_GRACE {
                            return Err(err.into());
                        }
                    }
                    Err(err) => return Err(err.into()),
                }
            }
            show(&mut display, index, job, style);
        }
        if current.iter().all(|(job, _)| is_terminal(job.state())) {
            break;
        }
        std::thread::sleep(POLL_INTERVAL);
    }
    if let Display::Bars(bars) = &display {
        for bar in bars {
            bar.finish();
        }
    }
    Ok(current)
}

/// Updates the display for job `index`.
fn show(display: &mut Display, index: usize, job: &Job, style: Style) {
    let steps = job.steps.len();
    match display {
        Display::Bars(bars) => {
            let Some(bar) = bars.get(index) else {
                return;
            };
            if bar.is_finished() {
                return;
            }
            bar.set_position(steps as u64);
            if is_terminal(job.state()) {
                if let Some(len) = bar.length()
                    && len > 0
                    && job.state() == JobState::Succeeded
                {
                    bar.set_position(len);
                }
                bar.finish_with_message(final_message(job, style));
            } else {
                bar.set_message(progress_message(job));
            }
        }
        Display::Lines(last) => {
            let Some((total, seen)) = last.get_mut(index) else {
                return;
            };
            if *seen != Some((job.state(), steps)) {
                *seen = Some((job.state(), steps));
                let message = if is_terminal(job.state()) {
                    final_message(job, style)
                } else {
                    progress_message(job)
                };
                let done = if *total > 0 {
                    format!("{steps}/{total} steps")
                } else {
                    format!("{steps} steps")
                };
                eprintln!(
                    "{} {}/{}: {message} ({done})",
                    job.id, job.repo, job.pipeline
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_wait_succeeds_only_if_every_job_did() {
        assert!(all_succeeded(&[JobState::Succeeded, JobState::Skipped]));
        assert!(all_succeeded(&[]));
        for bad in [
            JobState::Failed,
            JobState::TimedOut,
            JobState::Cancelled,
            JobState::Interrupted,
        ] {
            assert!(!all_succeeded(&[JobState::Succeeded, bad]), "{bad}");
        }
    }

    #[test]
    fn waiting_ends_when_no_job_is_queued_or_running() {
        assert!(!is_terminal(JobState::Queued));
        assert!(!is_terminal(JobState::Running));
        assert!(is_terminal(JobState::Interrupted));
        assert!(is_terminal(JobState::Skipped));
    }

    #[test]
    fn step_totals_count_steps_and_validation() {
        let config = json!({"pipelines": [
            {"name": "fmt", "steps": [{}, {}], "validate": [{}]},
            {"name": "gen", "steps": [{}]},
            {"steps": []}
        ]});
        let totals = step_totals_of(&config);
        assert_eq!(totals.get("fmt"), Some(&3));
        assert_eq!(totals.get("gen"), Some(&1));
        assert_eq!(totals.len(), 2);
        assert!(step_totals_of(&json!({})).is_empty());
    }

    #[test]
    fn bar_templates_parse() {
        for known in [true, false] {
            for color in [true, false] {
                assert!(ProgressStyle::with_template(bar_template(known, color)).is_ok());
            }
        }
    }
}
