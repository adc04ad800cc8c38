//! Errors of loading, validating and persisting configuration.

use std::fmt;
use std::path::PathBuf;

/// One problem found in a configuration, tied to the key it concerns.
///
/// Displayed as `key.path: reason`, for example
/// `optimizer.safety.rateLimitPerHour: must be at least 1, got 0`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Dotted key path with array indices, e.g. `pipelines[0].steps[1].run`.
    pub key: String,
    /// What is wrong, lowercase, without a trailing period.
    pub message: String,
}

impl Issue {
    /// An issue about `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}

/// Every issue found in one configuration, reported together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issues(pub Vec<Issue>);

impl Issues {
    /// Whether `key` is mentioned by any issue.
    pub fn mentions(&self, key: &str) -> bool {
        self.0.iter().any(|issue| issue.key == key)
    }
}

impl fmt::Display for Issues {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, issue) in self.0.iter().enumerate() {
            if n > 0 {
                f.write_str("\n")?;
            }
            write!(f, "  - {issue}")?;
        }
        Ok(())
    }
}

/// Why a configuration could not be loaded, applied or saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file does not exist.
    #[error("config file {} not found (create one with `orchexctl config init {}`)", path.display(), path.display())]
    NotFound {
        /// The path that was looked up.
        path: PathBuf,
    },
    /// A file could not be read or written.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done (`read`, `write`, `watch`...).
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or JSON.
    #[error("{} is not valid {format}: {message}", path.display())]
    Syntax {
        /// The file concerned.
        path: PathBuf,
        /// `TOML` or `JSON`.
        format: &'static str,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The file was written by a newer orchex.
    #[error("version: {} is format version {found}, but this orchex understands versions 1 to {supported}; upgrade orchex or rewrite the file", path.display())]
    UnsupportedVersion {
        /// The file concerned.
        path: PathBuf,
        /// The version the file declares.
        found: u64,
        /// The newest version this build knows.
        supported: u32,
    },
    /// The configuration parsed but is not valid; every issue is listed.
    #[error("{} in {}:\n{issues}", plural(issues.0.len()), path.display())]
    Invalid {
        /// The file concerned.
        path: PathBuf,
        /// Every problem found.
        issues: Issues,
    },
    /// A partial update was not an object of keys.
    #[error("invalid update: {0}")]
    BadUpdate(String),
    /// The file watcher could not be installed.
    #[error("cannot watch {}: {source}", path.display())]
    Watch {
        /// The watched path.
        path: PathBuf,
        /// The watcher's error.
        #[source]
        source: notify::Error,
    },
}

fn plural(n: usize) -> String {
    if n == 1 {
        "1 error".to_owned()
    } else {
        format!("{n} errors")
    }
}

impl ConfigError {
    /// The individual issues, when the error is a validation failure.
    pub fn issues(&self) -> Option<&Issues> {
        match self {
            ConfigError::Invalid { issues, .. } => Some(issues),
            _ => None,
        }
    }
}
