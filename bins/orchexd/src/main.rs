//! `orchexd`, the orchex daemon.
//!
//! A thin binary: it parses the command line, sets up logging, loads and
//! validates the configuration (creating the commented default when none
//! exists), and composes the library crates. Errors are printed with their
//! whole context chain and mapped to documented exit codes:
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (`--check-config`: the config is valid) |
//! | 1 | a runtime failure |
//! | 2 | usage error, or an invalid / unreadable configuration |
//!
//! Without `--check-config` it runs the daemon (see `daemon`): the
//! services start in dependency order, SIGHUP reloads the configuration,
//! and SIGTERM or SIGINT drains running jobs for up to 30 s, flushes the
//! store and exits 0. With no repository configured it runs the demo.

/// mimalloc instead of glibc's malloc: a daemon serving many connections
/// from several threads kept growing under glibc (memory freed into
/// per-thread arenas and not returned: +35–54 % RSS over a 10-minute soak
/// with a flat live heap, docs/reliability.md "Soak").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod daemon;
mod demo;
mod instance;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use orchex_config::{ConfigError, Loader};

/// Exit code for a usage error or an invalid configuration.
const EXIT_CONFIG: u8 = 2;

/// The orchex daemon: watches repositories and runs regeneration pipelines
/// safely (rate limited, behind circuit breakers, in isolated checkouts,
/// with backups and rollback).
#[derive(Debug, Parser)]
#[command(name = "orchexd", version, about, long_about = None)]
struct Args {
    /// The configuration file (TOML or JSON). Created with commented
    /// defaults when it does not exist.
    #[arg(
        long,
        short = 'c',
        env = "ORCHEX_CONFIG",
        default_value = "config/orchex.toml"
    )]
    config: PathBuf,

    /// Validate the configuration (file, overrides file and ORCHEX_*
    /// environment), print a summary or every error, and exit 0 or 2.
    #[arg(long)]
    check_config: bool,

    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,

    /// Run with the demo repository and pipeline even when the config lists
    /// repositories of its own (without this, the demo runs only when it
    /// lists none).
    #[arg(long)]
    demo: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

fn main() -> ExitCode {
    let args = Args::parse();
    init_logging(args.log_format);
    match run(&args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("orchexd: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    if args.check_config {
        return Ok(check_config(&args.config));
    }
    if !args.config.exists() {
        orchex_config::write_default(&args.config, false)
            .with_context(|| format!("creating the default config at {}", args.config.display()))?;
        tracing::info!(path = %args.config.display(), "created a commented default config");
    }
    // The configuration is validated before anything is bound or opened.
    let options = daemon::Options {
        config: args.config.clone(),
        demo: args.demo,
    };
    let (loader, demo_repo) = match daemon::loader(&options) {
        Ok(found) => found,
        Err(err) => {
            eprintln!("orchexd: {err}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let loaded = match loader.load() {
        Ok(loaded) => loaded,
        Err(err) => {
            eprintln!("orchexd: {err}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    if let Err(err) = orchex_dashboard::AccessPolicy::from_config(&loaded.config.dashboard)
        .map_err(anyhow::Error::from)
        .and_then(|policy| {
            orchex_dashboard::check_bind(&loaded.config.dashboard, &policy)
                .map_err(anyhow::Error::from)
        })
    {
        eprintln!("orchexd: {err:#}");
        return Ok(ExitCode::from(EXIT_CONFIG));
    }
    tracing::info!(
        path = %loaded.path.display(),
        repositories = loaded.config.repositories.len(),
        pipelines = loaded.config.pipelines.len(),
        demo = demo_repo.is_some(),
        "configuration loaded"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("orchexd")
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(serve(loader, loaded.config, demo_repo))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(
    loader: Loader,
    config: orchex_core::config::Config,
    demo_repo: Option<PathBuf>,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hangup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let daemon = daemon::Daemon::start(loader, config, demo_repo).await?;
    let reason = loop {
        tokio::select! {
            _ = terminate.recv() => break daemon::Stop::Signal("SIGTERM"),
            _ = interrupt.recv() => break daemon::Stop::Signal("SIGINT"),
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                daemon.reload();
            }
        }
    };
    daemon.shutdown(reason, daemon::SHUTDOWN_GRACE).await;
    Ok(())
}

fn check_config(path: &std::path::Path) -> ExitCode {
    match Loader::new(path).load() {
        Ok(loaded) => {
            println!("config ok\n{}", loaded.summary());
            ExitCode::SUCCESS
        }
        Err(err @ ConfigError::Invalid { .. }) => {
            eprintln!("config invalid: {err}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(err) => {
            eprintln!("config error: {err}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}
