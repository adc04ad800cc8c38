//! Repositories and their identifiers.

use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Longest accepted repository or pipeline name, in bytes.
pub const MAX_NAME_LEN: usize = 64;

/// A name was rejected because it cannot serve as an identifier.
///
/// Names appear in metric labels, URLs and branch names, so they are kept to
/// a small, safe alphabet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidName {
    /// The name is empty.
    #[error("must not be empty")]
    Empty,
    /// The name is longer than [`MAX_NAME_LEN`].
    #[error("must be at most {MAX_NAME_LEN} characters, got {0}")]
    TooLong(usize),
    /// The name contains a character outside `[A-Za-z0-9._-]`.
    #[error("may only contain letters, digits, '.', '_' and '-', found {0:?}")]
    BadCharacter(char),
    /// The name starts with a character that git or URLs treat specially.
    #[error("must not start with '.' or '-'")]
    BadStart,
}

/// Checks that `name` is usable as a repository or pipeline name.
///
/// # Example
///
/// ```
/// assert!(orchex_core::repo::validate_name("api-server").is_ok());
/// assert!(orchex_core::repo::validate_name("a/b").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<(), InvalidName> {
    if name.is_empty() {
        return Err(InvalidName::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidName::TooLong(name.len()));
    }
    if name.starts_with(['.', '-']) {
        return Err(InvalidName::BadStart);
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(InvalidName::BadCharacter(bad));
    }
    Ok(())
}

/// The configured name of a watched repository; unique within a daemon.
///
/// Construct it with [`RepoId::new`], which validates the name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(try_from = "String", into = "String")]
pub struct RepoId(String);

impl RepoId {
    /// Validates `name` and wraps it.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidName> {
        let name = name.into();
        validate_name(&name)?;
        Ok(Self(name))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RepoId {
    type Error = InvalidName;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl From<RepoId> for String {
    fn from(value: RepoId) -> Self {
        value.0
    }
}

impl AsRef<str> for RepoId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RepoId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A repository orchex watches (`[[repositories]]` in the config).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Repository {
    /// Unique name, used in routing globs, metrics and the API.
    pub name: RepoId,
    /// Absolute path of the repository's working tree.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub path: PathBuf,
    /// A disabled repository is kept in the config but not watched.
    #[serde(default = "crate::config::default_true")]
    pub enabled: bool,
    /// The watched branch; `None` follows whatever `HEAD` points to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(RepoId::new("api").is_ok());
        assert!(RepoId::new("my_repo.v2").is_ok());
        assert_eq!(RepoId::new(""), Err(InvalidName::Empty));
        assert_eq!(RepoId::new(".hidden"), Err(InvalidName::BadStart));
        assert_eq!(RepoId::new("a b"), Err(InvalidName::BadCharacter(' ')));
        assert_eq!(RepoId::new("x".repeat(65)), Err(InvalidName::TooLong(65)));
    }

    #[test]
    fn repo_id_deserialisation_validates() {
        let ok: Result<RepoId, _> = serde_json::from_str("\"api\"");
        assert!(ok.is_ok());
        let bad: Result<RepoId, _> = serde_json::from_str("\"a/b\"");
        assert!(bad.is_err());
    }
}
