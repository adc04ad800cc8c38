//! `config init|validate` (local files, through orchex-config) and
//! `config show|set|reload` (the daemon's running configuration).

use std::fmt::Write as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use orchex_config::{ConfigError, Loader};
use serde_json::{Map, Value};

use super::{Ctx, print_json};
use crate::cli::{Assignment, ConfigCommand};
use crate::client::{ClientError, EXIT_FAILURE};
use crate::output::{self, Mode};

/// `orchexctl config ...`.
pub(crate) fn config(ctx: &Ctx, command: ConfigCommand) -> anyhow::Result<ExitCode> {
    match command {
        ConfigCommand::Init { path, force } => init(&path, force),
        ConfigCommand::Validate { path } => Ok(validate(&path, ctx.mode("config validate")?)),
        ConfigCommand::Show => {
            let mode = ctx.mode("config show")?;
            let value = ctx.client()?.get("/api/config", &[])?;
            match mode {
                Mode::Json => print_json(&value),
                Mode::Table => {
                    output::print(&flatten(&value))?;
                    Ok(ExitCode::SUCCESS)
                }
            }
        }
        ConfigCommand::Set { assignments } => {
            let mode = ctx.mode("config set")?;
            let patch = nest(&assignments)?;
            let value = ctx.client()?.patch("/api/config", &patch)?;
            print_outcome(mode, &value)
        }
        ConfigCommand::Reload => {
            let mode = ctx.mode("config reload")?;
            let value = ctx.client()?.post("/api/config/reload", None)?;
            print_outcome(mode, &value)
        }
    }
}

/// `config init`: writes the commented default config.
fn init(path: &Path, force: bool) -> anyhow::Result<ExitCode> {
    match orchex_config::write_default(path, force) {
        Ok(()) => {
            output::print(&format!("wrote {}\n", path.display()))?;
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

/// `config validate`: loads the file without the environment and reports.
fn validate(path: &Path, mode: Mode) -> ExitCode {
    let result = Loader::new(path).without_env().load();
    let (text, code) = match (mode, result) {
        (Mode::Table, Ok(loaded)) => (
            Some(format!("{}: ok\n{}\n", path.display(), loaded.summary())),
            ExitCode::SUCCESS,
        ),
        (Mode::Json, Ok(loaded)) => {
            let report = serde_json::json!({
                "valid": true,
                "path": path,
                "sourceVersion": loaded.source_version,
                "migrated": loaded.migrated(),
                "repositories": loaded.config.repositories.len(),
                "pipelines": loaded.config.pipelines.len(),
            });
            (Some(format!("{report}\n")), ExitCode::SUCCESS)
        }
        (Mode::Table, Err(err)) => {
            eprintln!("{err}");
            (None, ExitCode::from(EXIT_FAILURE))
        }
        (Mode::Json, Err(err)) => {
            let errors: Vec<Value> = match err.issues() {
                Some(issues) => issues
                    .0
                    .iter()
                    .map(|issue| serde_json::json!({"key": issue.key, "message": issue.message}))
                    .collect(),
                None => vec![serde_json::json!({"key": "", "message": err.to_string()})],
            };
            let report = serde_json::json!({"valid": false, "path": path, "errors": errors});
            (Some(format!("{report}\n")), ExitCode::from(EXIT_FAILURE))
        }
    };
    if let Some(text) = text
        && output::print(&text).is_err()
    {
        // stdout is gone (a closed pipe); the exit code still tells.
        return code;
    }
    code
}

/// The nested object that `PATCH /api/config` takes for the assignments:
/// `a.b.c=1` becomes `{"a": {"b": {"c": 1}}}`; several merge into one.
pub(crate) fn nest(assignments: &[Assignment]) -> Result<Value, ClientError> {
    let mut root = Map::new();
    for assignment in assignments {
        let key = assignment.path.join(".");
        let Some((last, parents)) = assignment.path.split_last() else {
            return Err(ClientError::Usage("empty key in config set".to_owned()));
        };
        let mut object = &mut root;
        for parent in parents {
            let entry = object
                .entry(parent.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            object = entry.as_object_mut().ok_or_else(|| {
                ClientError::Usage(format!("{key}: {parent} is set to a value, not a section"))
            })?;
        }
        if object.contains_key(last) {
            return Err(ClientError::Usage(format!("{key} is set twice")));
        }
        object.insert(last.clone(), assignment.value.clone());
    }
    Ok(Value::Object(root))
}

/// Prints the outcome of `PATCH /api/config` or a reload.
fn print_outcome(mode: Mode, value: &Value) -> anyhow::Result<ExitCode> {
    match mode {
        Mode::Json => print_json(value),
        Mode::Table => {
            output::print(&render_outcome(value))?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `applied`/`unchanged`, the changed keys and those needing a restart.
pub(crate) fn render_outcome(value: &Value) -> String {
    let keys = |name: &str| -> Vec<String> {
        value
            .get(name)
            .and_then(Value::as_array)
            .map(|keys| keys.iter().map(|k| output::text(Some(k))).collect())
            .unwrap_or_default()
    };
    let mut out = format!("config {}\n", output::text(value.get("outcome")));
    for key in keys("changed") {
        let _ = writeln!(out, "  changed       {key}");
    }
    for key in keys("needsRestart") {
        let _ = writeln!(out, "  needs restart {key}");
    }
    out
}

/// The config as `dotted.key = value` lines, one per leaf, sorted: the
/// same keys `config set` takes.
pub(crate) fn flatten(value: &Value) -> String {
    fn walk(prefix: &str, value: &Value, out: &mut String) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                // Sorted: serde_json's map order depends on a cargo feature
                // that other crates of the workspace may switch on.
                let mut entries: Vec<_> = map.iter().collect();
                entries.sort_by_key(|(key, _)| *key);
                for (key, child) in entries {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, child, out);
                }
            }
            Value::Array(items) if !items.is_empty() => {
                for (index, child) in items.iter().enumerate() {
                    walk(&format!("{prefix}[{index}]"), child, out);
                }
            }
            leaf => {
                let _ = writeln!(out, "{prefix} = {leaf}");
            }
        }
    }
    let mut out = String::new();
    walk("", value, &mut out);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::cli::parse_assignment;
    use serde_json::json;

    fn assignments(texts: &[&str]) -> Vec<Assignment> {
        texts.iter().map(|t| parse_assignment(t).unwrap()).collect()
    }

    #[test]
    fn set_builds_the_nested_object() {
        assert_eq!(
            nest(&assignments(&["optimizer.safety.rateLimitPerHour=20"])).unwrap(),
            json!({"optimizer": {"safety": {"rateLimitPerHour": 20}}})
        );
        assert_eq!(
            nest(&assignments(&[
                "optimizer.safety.rateLimitPerHour=20",
                "optimizer.safety.dryRun=true",
                "logging.level=debug",
            ]))
            .unwrap(),
            json!({
                "optimizer": {"safety": {"rateLimitPerHour": 20, "dryRun": true}},
                "logging": {"level": "debug"}
            })
        );
        assert_eq!(nest(&assignments(&["top=1"])).unwrap(), json!({"top": 1}));
    }

    #[test]
    fn set_refuses_contradictions() {
        let err = nest(&assignments(&["a.b=1", "a.b.c=2"])).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("not a section"), "{err}");
        let err = nest(&assignments(&["a.b=1", "a.b=2"])).unwrap_err();
        assert!(err.to_string().contains("set twice"), "{err}");
    }

    #[test]
    fn outcomes_list_changed_and_restart_keys() {
        let value =
            json!({"outcome": "applied", "changed": ["a.b"], "needsRestart": ["dashboard.port"]});
        assert_eq!(
            render_outcome(&value),
            "config applied\n  changed       a.b\n  needs restart dashboard.port\n"
        );
        assert_eq!(
            render_outcome(&json!({"outcome": "unchanged", "changed": [], "needsRestart": []})),
            "config unchanged\n"
        );
    }

    #[test]
    fn show_flattens_to_settable_keys() {
        let value = json!({
            "version": 2,
            "dashboard": {"port": 8080, "token": "***"},
            "repositories": [{"name": "api"}],
            "pipelines": [],
            "extra": {}
        });
        assert_eq!(
            flatten(&value),
            "dashboard.port = 8080\ndashboard.token = \"***\"\nextra = {}\npipelines = []\n\
             repositories[0].name = \"api\"\nversion = 2\n"
        );
    }
}
