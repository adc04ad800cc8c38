//! The commands, one module per area, and what they share: the [`Ctx`]
//! with the output settings and the connection parameters.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::CommandFactory as _;

use crate::cli::{Cli, Command};
use crate::client::{Client, ClientError};
use crate::output::{self, Format, Mode, Style};

mod config;
mod control;
mod events;
mod jobs;
mod repos;
mod run;
mod status;
mod watch;

/// What every command needs: how to render, and how to reach the daemon.
#[derive(Debug)]
pub(crate) struct Ctx {
    /// The effective `-o` format.
    pub(crate) format: Format,
    /// Colour for stdout.
    pub(crate) style: Style,
    /// Whether stderr is a terminal (live progress draws there).
    pub(crate) stderr_is_terminal: bool,
    /// Colour for stderr.
    pub(crate) stderr_style: Style,
    url: String,
    token: Option<String>,
}

impl Ctx {
    /// The settings for `cli`, from the flags and the terminal.
    fn new(cli: &Cli) -> Self {
        let no_color = std::env::var_os("NO_COLOR");
        let stdout_is_terminal = std::io::stdout().is_terminal();
        let stderr_is_terminal = std::io::stderr().is_terminal();
        Self {
            format: output::select_format(cli.output, stdout_is_terminal),
            style: Style {
                color: output::color_enabled(no_color.as_deref(), stdout_is_terminal),
            },
            stderr_is_terminal,
            stderr_style: Style {
                color: output::color_enabled(no_color.as_deref(), stderr_is_terminal),
            },
            url: cli.url.clone(),
            token: cli.token.clone(),
        }
    }

    /// A client for the daemon; built on demand so that the offline
    /// commands (`config init`, `completions`) never look at `--url`.
    pub(crate) fn client(&self) -> Result<Client, ClientError> {
        Client::new(&self.url, self.token.as_deref())
    }

    /// Table or JSON for `command`; `-o csv` is a usage error.
    pub(crate) fn mode(&self, command: &str) -> Result<Mode, ClientError> {
        output::mode_for(self.format, command)
    }
}

/// Runs the parsed command line.
pub(crate) fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let ctx = Ctx::new(&cli);
    match cli.command {
        Command::Status => status::status(&ctx),
        Command::Health => status::health(&ctx),
        Command::Jobs(args) => jobs::list(&ctx, &args),
        Command::Job { id } => jobs::show(&ctx, id),
        Command::Run(args) => run::run(&ctx, &args),
        Command::Cancel(args) => jobs::cancel(&ctx, &args),
        Command::Rollback { id } => jobs::rollback(&ctx, id),
        Command::Pause => control::control(&ctx, "pause"),
        Command::Resume => control::control(&ctx, "resume"),
        Command::Stop { emergency } => {
            // clap requires the flag; this only guards a future default.
            if !emergency {
                return Err(ClientError::Usage("stop needs --emergency".to_owned()).into());
            }
            control::control(&ctx, "emergency-stop")
        }
        Command::Repos(command) => repos::repos(&ctx, command),
        Command::Analysis { repo } => repos::analysis(&ctx, &repo),
        Command::Events(args) => events::events(&ctx, &args),
        Command::Watch(args) => watch::watch(&ctx, &args),
        Command::Config(command) => config::config(&ctx, command),
        Command::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "orchexctl", &mut script);
            output::print(&String::from_utf8_lossy(&script))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Prints `value` as JSON.
pub(crate) fn print_json(value: &serde_json::Value) -> anyhow::Result<ExitCode> {
    output::print(&output::json(value))?;
    Ok(ExitCode::SUCCESS)
}
