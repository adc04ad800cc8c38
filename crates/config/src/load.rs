//! Reading a config file, migrating it, layering the overrides file and the
//! environment on top, and validating the result.

use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Json, Serialized, Toml};
use orchex_core::Config;
use orchex_core::config::CURRENT_VERSION;
use serde_json::Value;

use crate::error::{ConfigError, Issue, Issues};
use crate::{schema, validate};

/// The prefix of environment variables that override keys.
pub const ENV_PREFIX: &str = "ORCHEX_";

/// A configuration that loaded and validated, with where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective configuration (file, then overrides, then environment).
    pub config: Config,
    /// The version the file declared (1 when it declared none).
    pub source_version: u32,
    /// The file it was read from.
    pub path: PathBuf,
}

impl Loaded {
    /// Whether the file was in an older format and was migrated in memory.
    pub fn migrated(&self) -> bool {
        self.source_version < CURRENT_VERSION
    }

    /// A one-paragraph human summary, as printed by `orchexd --check-config`.
    pub fn summary(&self) -> String {
        let config = &self.config;
        let migrated = if self.migrated() {
            format!(" (migrated from version {})", self.source_version)
        } else {
            String::new()
        };
        let auth = if config.dashboard.auth_token.is_some()
            || config.dashboard.auth_token_file.is_some()
        {
            "token required"
        } else {
            "no token"
        };
        format!(
            "file: {}\nversion: {}{migrated}\nrepositories: {} ({})\npipelines: {} ({})\nmax concurrent jobs: {}\ndashboard: http://{}:{} ({auth})\nstorage: {}",
            self.path.display(),
            config.version,
            config.repositories.len(),
            join_or_none(config.repositories.iter().map(|r| r.name.as_str())),
            config.pipelines.len(),
            join_or_none(config.pipelines.iter().map(|p| p.name.as_str())),
            config.orchestrator.effective_max_concurrent(),
            config.dashboard.bind,
            config.dashboard.port,
            config.storage.path.display(),
        )
    }
}

fn join_or_none<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none".to_owned()
    } else {
        names.join(", ")
    }
}

/// Loads configuration from a file, its overrides file and the environment.
///
/// # Example
///
/// ```
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("orchex.toml");
/// std::fs::write(&path, "version = 2\n[dashboard]\nport = 9090\n")?;
/// let loaded = orchex_config::Loader::new(&path).without_env().load()?;
/// assert_eq!(loaded.config.dashboard.port, 9090);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Loader {
    path: PathBuf,
    overrides: PathBuf,
    use_env: bool,
    demo: Option<Value>,
}

impl Loader {
    /// A loader for the config file at `path`; the overrides file is
    /// `<stem>.overrides.toml` beside it.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let overrides = overrides_path(&path);
        Self {
            path,
            overrides,
            use_env: true,
            demo: None,
        }
    }

    /// A layer used only while the file and its overrides configure no
    /// repository: its top-level keys (the daemon's demo repository and
    /// pipeline) fill in what the file leaves out. Once the file lists a
    /// repository, the layer is ignored, so adding one's own repositories
    /// replaces the demo without a restart.
    #[must_use]
    pub fn with_demo(mut self, layer: Value) -> Self {
        self.demo = Some(layer);
        self
    }

    /// Whether the demo layer is in use for the file as it is now.
    pub fn demo_active(&self) -> bool {
        self.demo.is_some()
            && self
                .read_file()
                .ok()
                .is_some_and(|(file, _)| !configures_repositories(&file))
            && !configures_repositories(&read_overrides(&self.overrides).unwrap_or(Value::Null))
    }

    /// Ignores `ORCHEX_*` environment variables (tests, `config validate`).
    #[must_use]
    pub fn without_env(mut self) -> Self {
        self.use_env = false;
        self
    }

    /// The config file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The overrides file written by `PATCH /api/config`.
    pub fn overrides_path(&self) -> &Path {
        &self.overrides
    }

    /// Reads, migrates, merges and validates.
    pub fn load(&self) -> Result<Loaded, ConfigError> {
        let overrides = read_overrides(&self.overrides)?;
        self.load_with_overrides(&overrides)
    }

    /// Like [`Loader::load`], with `overrides` in place of the overrides file.
    pub(crate) fn load_with_overrides(&self, overrides: &Value) -> Result<Loaded, ConfigError> {
        let (mut file_value, source_version) = self.read_file()?;
        if let (Some(Value::Object(demo)), Value::Object(file)) = (&self.demo, &mut file_value)
            && !configures_repositories(&Value::Object(file.clone()))
            && !configures_repositories(overrides)
        {
            for (key, value) in demo {
                file.entry(key.clone()).or_insert_with(|| value.clone());
            }
        }
        let mut overrides = overrides.clone();
        merge_repositories(&mut file_value, &mut overrides);
        let mut figment = Figment::from(Serialized::defaults(file_value));
        if !is_empty_object(&overrides) {
            figment = figment.merge(Serialized::defaults(&overrides));
        }
        if self.use_env {
            figment = figment.merge(
                Env::prefixed(ENV_PREFIX)
                    .filter(|key| key.as_str().contains("__"))
                    .map(|key| schema::env_key_to_path(key.as_str()).into())
                    // Keys are mapped onto camelCase above; figment's own
                    // lowercasing would undo that. It must come last:
                    // figment 0.10.19's `filter`/`map` reset it to true.
                    .lowercase(false),
            );
        }
        let mut merged: Value = figment.extract().map_err(|err| {
            self.invalid(vec![Issue::new(err.path.join("."), err.kind.to_string())])
        })?;
        // The version is the file's business; the overrides and environment
        // cannot change it.
        if let Value::Object(map) = &mut merged {
            map.insert("version".to_owned(), Value::from(CURRENT_VERSION));
        }
        let mut issues = schema::take_unknown_keys(&mut merged);
        let config = match validate::decode(&merged) {
            Ok(config) => Some(config),
            Err(more) => {
                issues.extend(more);
                None
            }
        };
        if let Some(config) = &config {
            issues.extend(validate::validate(config));
        }
        match config {
            Some(mut config) if issues.is_empty() => {
                self.resolve_paths(&mut config);
                Ok(Loaded {
                    config,
                    source_version,
                    path: self.path.clone(),
                })
            }
            _ => Err(self.invalid(issues)),
        }
    }

    fn invalid(&self, issues: Vec<Issue>) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            issues: Issues(issues),
        }
    }

    /// Reads the file as a JSON value and migrates it to the current version.
    fn read_file(&self) -> Result<(Value, u32), ConfigError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotFound {
                    path: self.path.clone(),
                });
            }
            Err(source) => {
                return Err(ConfigError::Io {
                    action: "read",
                    path: self.path.clone(),
                    source,
                });
            }
        };
        let is_json = self
            .path
            .extension()
            .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
        let (format, parsed) = if is_json {
            (
                "JSON",
                Figment::from(Json::string(&text)).extract::<Value>(),
            )
        } else {
            (
                "TOML",
                Figment::from(Toml::string(&text)).extract::<Value>(),
            )
        };
        let value = parsed.map_err(|err| ConfigError::Syntax {
            path: self.path.clone(),
            format,
            message: if is_json {
                // serde_json's messages name a position, never the text.
                err.kind.to_string()
            } else {
                toml_syntax_message(&text)
            },
        })?;
        let value = match value {
            Value::Object(map) => Value::Object(map),
            Value::Null => Value::Object(serde_json::Map::new()),
            _ => {
                return Err(ConfigError::Syntax {
                    path: self.path.clone(),
                    format,
                    message: "the top level must be a table of sections".to_owned(),
                });
            }
        };
        migrate(value, &self.path)
    }

    /// Resolves a relative storage path against the config file's directory,
    /// so the daemon's working directory does not matter.
    fn resolve_paths(&self, config: &mut Config) {
        if config.storage.path.is_relative()
            && let Some(dir) = self.path.parent()
        {
            let base = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
            config.storage.path = base.join(&config.storage.path);
        }
    }
}

/// The overrides-file key naming the file's repositories that were removed
/// through the API (`DELETE /api/repositories/{name}`).
pub const REMOVED_REPOSITORIES: &str = "removedRepositories";

/// Merges the overrides' repositories into the file's by name: an entry
/// replaces the file's entry of the same name or is added, and the names
/// under [`REMOVED_REPOSITORIES`] drop the file's entries. The overrides
/// hold only what the API changed, so the file's own list stays the
/// operator's: an entry edited, added or removed there later still counts.
fn merge_repositories(file: &mut Value, overrides: &mut Value) {
    let Value::Object(changes) = overrides else {
        return;
    };
    let removed = changes.remove(REMOVED_REPOSITORIES);
    let added = match changes.remove("repositories") {
        Some(Value::Array(entries)) => entries,
        // Not a list: left for validation to name.
        Some(other) => {
            changes.insert("repositories".to_owned(), other);
            Vec::new()
        }
        None => Vec::new(),
    };
    if removed.is_none() && added.is_empty() {
        return;
    }
    let Value::Object(file) = file else {
        return;
    };
    let name_of = |entry: &Value| entry.get("name").and_then(Value::as_str).map(str::to_owned);
    let mut list: Vec<Value> = file
        .get("repositories")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if let Some(Value::Array(names)) = &removed {
        list.retain(|entry| {
            name_of(entry).is_none_or(|name| !names.iter().any(|n| n.as_str() == Some(&name)))
        });
    }
    for entry in added {
        let name = name_of(&entry);
        match list
            .iter_mut()
            .find(|existing| name.is_some() && name_of(existing) == name)
        {
            Some(slot) => *slot = entry,
            None => list.push(entry),
        }
    }
    file.insert("repositories".to_owned(), Value::Array(list));
}

fn configures_repositories(value: &Value) -> bool {
    value
        .get("repositories")
        .and_then(Value::as_array)
        .is_some_and(|list| !list.is_empty())
}

fn is_empty_object(value: &Value) -> bool {
    matches!(value, Value::Object(map) if map.is_empty()) || value.is_null()
}

/// What is wrong with the TOML `text`, with its line and column, and
/// without quoting the text: the line may hold a secret (`authToken =
/// "..."`), and the toml crate's own message prints the line.
fn toml_syntax_message(text: &str) -> String {
    let Err(err) = text.parse::<toml::Table>() else {
        return "the file could not be read as TOML".to_owned();
    };
    let message = err.message().trim_end().replace('\n', "; ");
    match err.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

/// `<dir>/<stem>.overrides.toml` for `<dir>/<stem>.<ext>`.
pub fn overrides_path(config_path: &Path) -> PathBuf {
    let stem = config_path
        .file_stem()
        .map_or_else(|| "orchex".into(), |s| s.to_string_lossy().into_owned());
    config_path.with_file_name(format!("{stem}.overrides.toml"))
}

pub(crate) fn read_overrides(path: &Path) -> Result<Value, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Figment::from(Toml::string(&text))
            .extract::<Value>()
            .map_err(|_| ConfigError::Syntax {
                path: path.to_path_buf(),
                format: "TOML",
                message: toml_syntax_message(&text),
            }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            Ok(Value::Object(serde_json::Map::new()))
        }
        Err(source) => Err(ConfigError::Io {
            action: "read",
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Brings a parsed file to the current format version.
///
/// Version 1 (the original design, no `version` key) is a subset of version
/// 2 with the same key names, so migrating it only stamps the version; keys
/// added by version 2 take their defaults.
fn migrate(mut value: Value, path: &Path) -> Result<(Value, u32), ConfigError> {
    let Value::Object(map) = &mut value else {
        return Ok((value, CURRENT_VERSION));
    };
    let version = match map.get("version") {
        None => 1,
        Some(Value::Number(n)) => match n.as_u64() {
            Some(0) | None => {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    issues: Issues(vec![Issue::new(
                        "version",
                        format!("must be a positive integer, got {n}"),
                    )]),
                });
            }
            Some(v) if v > u64::from(CURRENT_VERSION) => {
                return Err(ConfigError::UnsupportedVersion {
                    path: path.to_path_buf(),
                    found: v,
                    supported: CURRENT_VERSION,
                });
            }
            Some(v) => u32::try_from(v).unwrap_or(CURRENT_VERSION),
        },
        Some(other) => {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                issues: Issues(vec![Issue::new(
                    "version",
                    format!("must be a positive integer, got {other}"),
                )]),
            });
        }
    };
    map.insert("version".to_owned(), Value::from(CURRENT_VERSION));
    Ok((value, version))
}
