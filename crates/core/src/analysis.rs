//! Analysis reports: size, complexity, change entropy, hotspots and health
//! of a repository (PRODUCT.md §5, formulas in docs/analysis.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{RepoId, Timestamp};

/// Line counts of one language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LanguageStats {
    /// Files of the language.
    pub files: u64,
    /// Lines of code.
    pub code: u64,
    /// Comment lines.
    pub comments: u64,
    /// Blank lines.
    pub blanks: u64,
}

/// A file ranked by change frequency × complexity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hotspot {
    /// Repository-relative path.
    pub path: String,
    /// Commits touching the file within the history window.
    pub changes: u64,
    /// The file's complexity score in [0, 1].
    pub complexity: f64,
    /// The ranking score.
    pub score: f64,
}

/// The latest analysis of one repository at one commit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisReport {
    /// The repository.
    pub repo: RepoId,
    /// The analysed commit, if the repository has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// When the analysis ran.
    pub computed_at: Timestamp,
    /// Line counts by language name.
    pub loc_by_language: BTreeMap<String, LanguageStats>,
    /// Complexity score in [0, 1].
    pub complexity: f64,
    /// Normalised change entropy in [0, 1].
    pub chaos: f64,
    /// Health score in [0, 1] (1 is best).
    pub health: f64,
    /// Files ranked by change frequency × complexity, highest first.
    pub hotspots: Vec<Hotspot>,
    /// Wall time of the analysis.
    pub duration_ms: u64,
}

impl AnalysisReport {
    /// Total lines of code over every language.
    pub fn total_code_lines(&self) -> u64 {
        self.loc_by_language.values().map(|stats| stats.code).sum()
    }
}
