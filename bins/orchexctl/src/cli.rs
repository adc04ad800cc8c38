//! The command line: every command, flag and argument (PRODUCT.md §11).
//!
//! Values that have a fixed vocabulary (job states, event kinds, job ids,
//! repository names, `KEY=VALUE`) are parsed here, so a typo is a usage
//! error (exit 2) reported by clap rather than a round trip to the daemon.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use orchex_core::{EventKind, JobId, JobState, RepoId, Timestamp};
use serde_json::Value;

use crate::output::Format;

/// Operate an orchex daemon: inspect and steer jobs, repositories and
/// configuration.
#[derive(Parser)]
#[command(name = "orchexctl", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Base URL of the daemon's API.
    #[arg(
        long,
        global = true,
        env = "ORCHEX_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub(crate) url: String,

    /// Bearer token for the API.
    #[arg(long, global = true, env = "ORCHEX_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,

    /// Output format; `table` on a terminal, `json` otherwise (`csv`: events only).
    #[arg(long, short = 'o', global = true, value_enum)]
    pub(crate) output: Option<Format>,

    /// The command.
    #[command(subcommand)]
    pub(crate) command: Command,
}

// By hand, so the token never shows in a `{:?}`.
impl std::fmt::Debug for Cli {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cli")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("output", &self.output)
            .field("command", &self.command)
            .finish()
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// The orchestrator at a glance: state, queue, concurrency, running jobs, stats.
    Status,
    /// The daemon's health; exits 1 when it is unhealthy.
    Health,
    /// List jobs, newest first.
    Jobs(JobsArgs),
    /// One job in detail: steps, output tails, diff, delivery.
    Job {
        /// The job id.
        #[arg(value_parser = parse_job_id)]
        id: JobId,
    },
    /// Start the pipelines of a repository now.
    Run(RunArgs),
    /// Cancel a queued or running job, or every matching one with --all.
    Cancel(CancelArgs),
    /// Undo a delivered job.
    Rollback {
        /// The job id.
        #[arg(value_parser = parse_job_id)]
        id: JobId,
    },
    /// Stop dispatching new jobs (running ones finish).
    Pause,
    /// Resume dispatching.
    Resume,
    /// Cancel every job and stop the orchestrator.
    Stop {
        /// Required: confirms that every queued and running job is cancelled.
        #[arg(long, required = true)]
        emergency: bool,
    },
    /// List, add and remove watched repositories.
    #[command(subcommand)]
    Repos(ReposCommand),
    /// The latest analysis of a repository.
    Analysis {
        /// The repository.
        #[arg(value_parser = parse_repo)]
        repo: RepoId,
    },
    /// Query the event log.
    Events(EventsArgs),
    /// Stream live events from the daemon's WebSocket.
    Watch(WatchArgs),
    /// Create, check and inspect configuration files, and the running config.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script.
    Completions {
        /// The shell to generate for.
        shell: clap_complete::Shell,
    },
}

/// `jobs` filters.
#[derive(Debug, Args)]
pub(crate) struct JobsArgs {
    /// Only jobs in these states (repeat the flag or separate with commas).
    #[arg(long, value_parser = parse_state, value_delimiter = ',')]
    pub(crate) state: Vec<JobState>,
    /// Only jobs of this repository.
    #[arg(long, value_parser = parse_repo)]
    pub(crate) repo: Option<RepoId>,
    /// Only jobs of this pipeline.
    #[arg(long)]
    pub(crate) pipeline: Option<String>,
    /// At most this many jobs (pages are followed up to it).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) limit: u32,
}

/// `run` arguments.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// The repository.
    #[arg(value_parser = parse_repo)]
    pub(crate) repo: RepoId,
    /// Only this pipeline (default: every pipeline a manual run may start).
    #[arg(long)]
    pub(crate) pipeline: Option<String>,
    /// Compute the result but deliver nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Run even if the inputs are unchanged, and ignore the rate limiter.
    #[arg(long)]
    pub(crate) force: bool,
    /// Show live progress until every job ends; the exit code is their outcome.
    #[arg(long)]
    pub(crate) wait: bool,
}

/// `cancel` arguments: one id, or `--all` with filters.
#[derive(Debug, Args)]
pub(crate) struct CancelArgs {
    /// The job id.
    #[arg(
        value_parser = parse_job_id,
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub(crate) id: Option<JobId>,
    /// Cancel every queued or running job matching the filters.
    #[arg(long)]
    pub(crate) all: bool,
    /// With --all: only jobs of this repository.
    #[arg(long, requires = "all", value_parser = parse_repo)]
    pub(crate) repo: Option<RepoId>,
    /// With --all: only jobs of this pipeline.
    #[arg(long, requires = "all")]
    pub(crate) pipeline: Option<String>,
    /// With --all: only jobs in this state (queued or running).
    #[arg(long, requires = "all", value_parser = parse_active_state)]
    pub(crate) state: Option<JobState>,
}

/// `repos` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ReposCommand {
    /// List the repositories with their watcher state and latest scores.
    List,
    /// Start watching a git repository.
    Add {
        /// Its name in orchex.
        #[arg(value_parser = parse_repo)]
        name: RepoId,
        /// Its working tree (sent as an absolute, canonical path).
        path: PathBuf,
        /// The branch to watch (default: the checked-out one).
        #[arg(long)]
        branch: Option<String>,
    },
    /// Stop watching a repository (nothing on disk is touched).
    Remove {
        /// The repository.
        #[arg(value_parser = parse_repo)]
        name: RepoId,
    },
}

/// `events` filters.
#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    /// Only events of these kinds, e.g. job_failed (repeat the flag or
    /// separate with commas).
    #[arg(long, value_parser = parse_kind, value_delimiter = ',')]
    pub(crate) kind: Vec<EventKind>,
    /// Only events of this repository.
    #[arg(long, value_parser = parse_repo)]
    pub(crate) repo: Option<RepoId>,
    /// Only events since this time: RFC 3339, or an age such as 30s, 15m, 2h, 7d.
    #[arg(long, value_parser = parse_since)]
    pub(crate) since: Option<Timestamp>,
    /// At most this many events (pages are followed up to it). Default: 100
    /// for a table or JSON; every matching event for `-o csv`, which the
    /// daemon streams.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) limit: Option<u32>,
}

/// `watch` filters.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// Only events of these kinds (repeat the flag or separate with commas).
    #[arg(long, value_parser = parse_kind, value_delimiter = ',')]
    pub(crate) kind: Vec<EventKind>,
    /// Only events of this repository.
    #[arg(long, value_parser = parse_repo)]
    pub(crate) repo: Option<RepoId>,
}

/// `config` subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum ConfigCommand {
    /// Write the commented default configuration.
    Init {
        /// Where to write it.
        #[arg(default_value = "config/orchex.toml")]
        path: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
    },
    /// Check a configuration file and its overrides file (ORCHEX_*
    /// environment variables are not applied; `orchexd --check-config`
    /// applies them).
    Validate {
        /// The file to check (TOML or JSON).
        path: PathBuf,
    },
    /// Print the daemon's running configuration (secrets redacted).
    Show,
    /// Change the running configuration: `a.b.c=VALUE`, VALUE as JSON if it
    /// parses (`20`, `true`, `"x"`, `[1, 2]`) and as a string otherwise.
    Set {
        /// One or more KEY=VALUE assignments, applied together.
        #[arg(required = true, value_parser = parse_assignment, value_name = "KEY=VALUE")]
        assignments: Vec<Assignment>,
    },
    /// Make the daemon reload its configuration file.
    Reload,
}

/// One `KEY=VALUE` of `config set`: the key's dotted path and the value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Assignment {
    /// The key's segments (`optimizer.safety.rateLimitPerHour` → three).
    pub(crate) path: Vec<String>,
    /// The value: JSON if it parses, else the text as a string.
    pub(crate) value: Value,
}

/// Parses `a.b.c=VALUE`.
pub(crate) fn parse_assignment(text: &str) -> Result<Assignment, String> {
    let (key, raw) = text
        .split_once('=')
        .ok_or_else(|| format!("expected KEY=VALUE, got {text:?}"))?;
    let path: Vec<String> = key.trim().split('.').map(str::to_owned).collect();
    if path.iter().any(String::is_empty) {
        return Err(format!(
            "invalid key {key:?}: expected dotted names such as optimizer.safety.rateLimitPerHour"
        ));
    }
    // JSON first so numbers, booleans, arrays and objects keep their type;
    // anything else (a bare word, a path) is meant as a string.
    let value = serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
    Ok(Assignment { path, value })
}

fn parse_job_id(text: &str) -> Result<JobId, String> {
    text.parse()
        .map_err(|_| format!("{text:?} is not a job id (a UUID)"))
}

fn parse_repo(text: &str) -> Result<RepoId, String> {
    RepoId::new(text).map_err(|err| err.to_string())
}

fn parse_state(text: &str) -> Result<JobState, String> {
    text.parse().map_err(|_| {
        let names: Vec<&str> = JobState::ALL.iter().map(|s| s.as_str()).collect();
        format!(
            "unknown job state {text:?}; expected one of {}",
            names.join(", ")
        )
    })
}

fn parse_active_state(text: &str) -> Result<JobState, String> {
    match parse_state(text)? {
        state if state.is_active() => Ok(state),
        _ => Err(format!(
            "only queued or running jobs can be cancelled, not {text:?}"
        )),
    }
}

fn parse_kind(text: &str) -> Result<EventKind, String> {
    text.parse()
        .map_err(|_| format!("unknown event kind {text:?} (kinds are snake_case, e.g. job_failed)"))
}

/// Parses an RFC 3339 time or an age (`30s`, `15m`, `2h`, `7d`, `1w`) back
/// from now.
pub(crate) fn parse_since(text: &str) -> Result<Timestamp, String> {
    parse_since_at(text, Timestamp::now())
}

fn parse_since_at(text: &str, now: Timestamp) -> Result<Timestamp, String> {
    if let Ok(ts) = text.parse::<Timestamp>() {
        return Ok(ts);
    }
    let invalid = || format!("{text:?} is neither an RFC 3339 time nor an age such as 15m");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(invalid)?;
    let (number, unit) = text.split_at(split);
    let number: i64 = number.parse().map_err(|_| invalid())?;
    let unit_seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 604_800,
        _ => return Err(invalid()),
    };
    let seconds = number.checked_mul(unit_seconds).ok_or_else(invalid)?;
    now.as_second()
        .checked_sub(seconds)
        .and_then(|second| Timestamp::from_second(second).ok())
        .ok_or_else(invalid)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use clap::CommandFactory as _;
    use serde_json::json;

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn the_token_never_shows_in_debug() {
        use clap::Parser as _;
        let cli = Cli::try_parse_from(["orchexctl", "--token", "s3cr3t-token", "status"]).unwrap();
        let shown = format!("{cli:?}");
        assert!(!shown.contains("s3cr3t-token"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
    }

    #[test]
    fn assignments_parse_json_or_take_a_string() {
        let set = parse_assignment("optimizer.safety.rateLimitPerHour=20").unwrap();
        assert_eq!(set.path, ["optimizer", "safety", "rateLimitPerHour"]);
        assert_eq!(set.value, json!(20));
        assert_eq!(parse_assignment("a.b=true").unwrap().value, json!(true));
        assert_eq!(parse_assignment("a=[1, 2]").unwrap().value, json!([1, 2]));
        assert_eq!(parse_assignment("a=\"x\"").unwrap().value, json!("x"));
        assert_eq!(parse_assignment("a=info").unwrap().value, json!("info"));
        assert_eq!(parse_assignment("a=").unwrap().value, json!(""));
        // Only the first `=` separates.
        assert_eq!(parse_assignment("a=x=y").unwrap().value, json!("x=y"));
        assert!(parse_assignment("novalue").is_err());
        assert!(parse_assignment("a..b=1").is_err());
        assert!(parse_assignment("=1").is_err());
    }

    #[test]
    fn since_takes_rfc3339_or_an_age() {
        let now: Timestamp = "2025-01-31T12:00:00Z".parse().unwrap();
        assert_eq!(
            parse_since_at("2025-01-01T00:00:00+01:00", now).unwrap(),
            "2024-12-31T23:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            parse_since_at("15m", now).unwrap(),
            "2025-01-31T11:45:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            parse_since_at("2d", now).unwrap(),
            "2025-01-29T12:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert!(parse_since_at("yesterday", now).is_err());
        assert!(parse_since_at("15", now).is_err());
        assert!(parse_since_at("5y", now).is_err());
    }

    #[test]
    fn stop_needs_emergency_and_cancel_needs_an_id_or_all() {
        let err = Cli::try_parse_from(["orchexctl", "stop"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(Cli::try_parse_from(["orchexctl", "stop", "--emergency"]).is_ok());
        assert!(Cli::try_parse_from(["orchexctl", "cancel"]).is_err());
        assert!(Cli::try_parse_from(["orchexctl", "cancel", "--repo", "api"]).is_err());
        assert!(Cli::try_parse_from(["orchexctl", "cancel", "--all", "--repo", "api"]).is_ok());
        assert!(
            Cli::try_parse_from(["orchexctl", "cancel", "--all", "--state", "failed"]).is_err()
        );
        assert!(Cli::try_parse_from(["orchexctl", "job", "not-a-uuid"]).is_err());
        assert!(Cli::try_parse_from(["orchexctl", "jobs", "--state", "done"]).is_err());
        assert!(Cli::try_parse_from(["orchexctl", "jobs", "--state", "timedOut,failed"]).is_ok());
    }

    #[test]
    fn watch_kinds_may_be_repeated_or_comma_separated() {
        let cli = Cli::try_parse_from([
            "orchexctl",
            "watch",
            "--kind",
            "job_failed,job_succeeded",
            "--kind",
            "paused",
        ])
        .unwrap();
        let Command::Watch(args) = cli.command else {
            panic!("not watch");
        };
        assert_eq!(
            args.kind,
            [
                EventKind::JobFailed,
                EventKind::JobSucceeded,
                EventKind::Paused
            ]
        );
    }
}
