//! `orchexctl`, the orchex admin CLI.
//!
//! A thin binary over the daemon's HTTP API (`client`), the WebSocket (for
//! `watch`) and the configuration crate. Exit codes follow PRODUCT.md §11:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | a failure reported by the daemon, a failed job, or an invalid config (`config validate`) |
//! | 2 | usage error |
//! | 3 | the daemon is unreachable |

use std::process::ExitCode;

use clap::Parser as _;

mod cli;
mod client;
mod commands;
mod output;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // `--help` and `--version` come here too, and are not errors.
            let usage_error = err.use_stderr();
            let _ = err.print();
            return if usage_error {
                ExitCode::from(client::EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        // The reader went away (`orchexctl events -o csv | head`): nothing
        // left to say to anyone.
        Err(err) if client::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("orchexctl: {err:#}");
            ExitCode::from(client::exit_code(&err))
        }
    }
}

/// Runs the command; errors carry their exit code (see `client::exit_code`).
fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    commands::run(cli)
}
