//! `orchexctl`, the orchex admin CLI.
//!
//! A thin binary over the daemon's HTTP API and the configuration crate.
//! Exit codes follow PRODUCT.md §11:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | a failure reported by the daemon, a failed job, or an invalid config (`config validate`) |
//! | 2 | usage error |
//! | 3 | the daemon is unreachable |

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser, Subcommand, ValueEnum};
use orchex_config::{ConfigError, Loader};

/// Exit code for a failure reported by the daemon or an invalid config.
const EXIT_FAILURE: u8 = 1;
/// Exit code for a usage error.
const EXIT_USAGE: u8 = 2;

/// Operate an orchex daemon: inspect and steer jobs, repositories and
/// configuration.
#[derive(Debug, Parser)]
#[command(name = "orchexctl", version, about, long_about = None)]
struct Cli {
    /// Base URL of the daemon's API.
    #[arg(
        long,
        global = true,
        env = "ORCHEX_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,

    /// Bearer token for the API.
    #[arg(long, global = true, env = "ORCHEX_TOKEN", hide_env_values = true)]
    token: Option<String>,

    /// Output format; `table` on a terminal, `json` otherwise.
    #[arg(long, short = 'o', global = true, value_enum)]
    output: Option<Output>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// Aligned, human-readable text.
    Table,
    /// JSON, for scripts.
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, check and inspect configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script.
    Completions {
        /// The shell to generate for.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
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
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let usage_error = err.use_stderr();
            let _ = err.print();
            return if usage_error {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match run(&cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("orchexctl: {err:#}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn output_format(cli: &Cli) -> Output {
    cli.output.unwrap_or(if std::io::stdout().is_terminal() {
        Output::Table
    } else {
        Output::Json
    })
}

fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Config(ConfigCommand::Init { path, force }) => {
            match orchex_config::write_default(path, *force) {
                Ok(()) => {
                    println!("wrote {}", path.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(ConfigError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::AlreadyExists =>
                {
                    eprintln!(
                        "orchexctl: {} already exists; pass --force to replace it",
                        path.display()
                    );
                    Ok(ExitCode::from(EXIT_FAILURE))
                }
                Err(err) => Err(err).context("config init"),
            }
        }
        Command::Config(ConfigCommand::Validate { path }) => Ok(validate(path, output_format(cli))),
        Command::Completions { shell } => {
            clap_complete::generate(
                *shell,
                &mut Cli::command(),
                "orchexctl",
                &mut std::io::stdout(),
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn validate(path: &std::path::Path, output: Output) -> ExitCode {
    let result = Loader::new(path).without_env().load();
    match (output, result) {
        (Output::Table, Ok(loaded)) => {
            println!("{}: ok\n{}", path.display(), loaded.summary());
            ExitCode::SUCCESS
        }
        (Output::Json, Ok(loaded)) => {
            let report = serde_json::json!({
                "valid": true,
                "path": path,
                "sourceVersion": loaded.source_version,
                "migrated": loaded.migrated(),
                "repositories": loaded.config.repositories.len(),
                "pipelines": loaded.config.pipelines.len(),
            });
            println!("{report}");
            ExitCode::SUCCESS
        }
        (Output::Table, Err(err)) => {
            eprintln!("{err}");
            ExitCode::from(EXIT_FAILURE)
        }
        (Output::Json, Err(err)) => {
            let errors: Vec<serde_json::Value> = match err.issues() {
                Some(issues) => issues
                    .0
                    .iter()
                    .map(|issue| serde_json::json!({"key": issue.key, "message": issue.message}))
                    .collect(),
                None => vec![serde_json::json!({"key": "", "message": err.to_string()})],
            };
            println!(
                "{}",
                serde_json::json!({"valid": false, "path": path, "errors": errors})
            );
            ExitCode::from(EXIT_FAILURE)
        }
    }
}
