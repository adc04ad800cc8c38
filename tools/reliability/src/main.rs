//! `orchex-reliability`: harnesses that run the real `orchexd` (built on
//! first use through the `orchex-e2e` helpers) against temporary git
//! repositories and storage, on 127.0.0.1 only, and check what PRODUCT.md §2
//! and §4 promise.
//!
//! - `crash-loop --trials N [--seed S]`: kill -9 at random moments and
//!   restart; no job lost, no half-delivered result, the database whole,
//!   no step outliving the crash ([`crash_loop`]).
//! - `hygiene --jobs N [--seed S]`: jobs whose forking, SIGTERM-ignoring
//!   steps time out or are cancelled; no process and no workspace left
//!   ([`hygiene`]).
//!
//! - `faults [--only a,b]`: injected faults (watcher overflow, a deleted
//!   repository, a corrupt ref, a full database, read-only storage, a step
//!   printing 1 GB, a step that never exits), each reported and survived
//!   ([`faults`]).
//! - `soak [--secs 600] [--clients 1000] [--rate 10000] [--seed S]`: the
//!   in-process stack for 10 minutes under 1000 concurrent API clients (in a
//!   child process), 10k events/s on the bus and a stream of file changes;
//!   resident memory drift, API latency and errors, and persisted against
//!   published events ([`soak`]).
//!
//! Each run is bounded in time (`--time-limit-secs`), prints one summary
//! line last, and exits 1 on any violation (0 otherwise). Results and the
//! commands are recorded in `docs/reliability.md`.

/// The daemon's allocator (see `orchexd`), so that the in-process stacks
/// of `soak` and `faults` measure what the daemon does. mimalloc instead
/// of glibc's malloc: a daemon serving many connections
/// from several threads kept growing under glibc (memory freed into
/// per-thread arenas and not returned: +35–54 % RSS over a 10-minute soak
/// with a flat live heap, docs/reliability.md "Soak").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod api;
mod checks;
mod crash_loop;
mod faults;
mod hygiene;
mod load;
mod soak;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// Reliability harnesses for orchex: a kill -9 crash loop, process
/// hygiene, fault injection and a soak.
#[derive(Debug, Parser)]
#[command(name = "orchex-reliability", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start orchexd, kill -9 it at a random moment, restart, check; N times.
    CrashLoop {
        /// Kill / restart trials.
        #[arg(long, default_value_t = 20)]
        trials: u32,
        /// RNG seed (random when absent; always printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Give up (and fail) after this many seconds; default 60 + 20 per trial.
        #[arg(long)]
        time_limit_secs: Option<u64>,
        /// Keep the temporary directory (config, storage, repository, logs).
        #[arg(long)]
        keep: bool,
    },
    /// Run N jobs whose steps fork, ignore SIGTERM and are cancelled or time out.
    Hygiene {
        /// Jobs to run.
        #[arg(long, default_value_t = 100)]
        jobs: usize,
        /// RNG seed (random when absent; always printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Give up (and fail) after this many seconds; default 120 + 1 per job.
        #[arg(long)]
        time_limit_secs: Option<u64>,
        /// Keep the temporary directory (config, storage, repository, logs).
        #[arg(long)]
        keep: bool,
    },
    /// Inject faults into an in-process stack; each must be reported and survived.
    Faults(faults::Args),
    /// Soak the in-process stack: API clients, bus events and file changes
    /// for a while; memory drift, API latency and errors, events accounted.
    Soak(soak::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::CrashLoop {
            trials,
            seed,
            time_limit_secs,
            keep,
        } => crash_loop::run(&crash_loop::Options {
            trials,
            seed: seed.unwrap_or_else(random_seed),
            time_limit: Duration::from_secs(time_limit_secs.unwrap_or(60 + 20 * u64::from(trials))),
            keep,
        }),
        Command::Hygiene {
            jobs,
            seed,
            time_limit_secs,
            keep,
        } => hygiene::run(&hygiene::Options {
            jobs,
            seed: seed.unwrap_or_else(random_seed),
            time_limit: Duration::from_secs(
                time_limit_secs.unwrap_or(120 + u64::try_from(jobs).unwrap_or(u64::MAX)),
            ),
            keep,
        }),
        Command::Faults(args) => faults::run(&args),
        Command::Soak(args) => soak::run(&args),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("orchex-reliability: the harness failed: {err:#}");
            ExitCode::from(2)
        }
    }
}

/// A seed from the clock and the pid, for runs that name none.
fn random_seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    #[allow(clippy::cast_possible_truncation)] // only the low bits matter
    let low = nanos as u64;
    low ^ u64::from(std::process::id()).rotate_left(32)
}
