//! Analysis reports: size, complexity, change entropy, hotspots and health
//! of a repository (PRODUCT.md §5, formulas in docs/analysis.md).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{RepoId, Timestamp};

/// Line counts of one language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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

/// Spaces that make one logical indentation level (a tab is one level).
pub const SPACES_PER_LEVEL: f64 = 4.0;

/// Mean indentation at which a file's complexity score is 0.5.
pub const HALF_COMPLEXITY_INDENT: f64 = 1.0;

/// Indentation of one source file: the language-agnostic complexity measure
/// (after Adam Tornhill's indentation complexity) behind the complexity
/// scores of docs/analysis.md.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Indentation {
    /// Non-blank lines.
    pub lines: u64,
    /// Sum of the logical indentation levels of the non-blank lines.
    pub total: f64,
    /// Deepest logical indentation level.
    pub max: f64,
}

impl Indentation {
    /// Measures `text`: for each non-blank line, leading tabs count one
    /// level each and leading spaces one level per [`SPACES_PER_LEVEL`].
    ///
    /// ```
    /// use orchex_core::analysis::Indentation;
    /// let m = Indentation::measure(b"fn f() {\n    if x {\n\t\ty();\n    }\n\n}\n");
    /// assert_eq!(m.lines, 5);
    /// assert_eq!(m.total, 0.0 + 1.0 + 2.0 + 1.0 + 0.0);
    /// assert_eq!(m.max, 2.0);
    /// ```
    pub fn measure(text: &[u8]) -> Self {
        let mut measure = Self::default();
        for line in text.split(|&byte| byte == b'\n') {
            let mut spaces = 0u32;
            let mut tabs = 0u32;
            let mut blank = true;
            for &byte in line {
                match byte {
                    b' ' => spaces += 1,
                    b'\t' => tabs += 1,
                    b'\r' | b'\x0c' => {}
                    _ => {
                        blank = false;
                        break;
                    }
                }
            }
            if blank {
                continue;
            }
            let level = f64::from(tabs) + f64::from(spaces) / SPACES_PER_LEVEL;
            measure.lines += 1;
            measure.total += level;
            measure.max = measure.max.max(level);
        }
        measure
    }

    /// Mean indentation level of the non-blank lines (0 for an empty file).
    pub fn mean(&self) -> f64 {
        if self.lines == 0 {
            0.0
        } else {
            // Precision loss above 2^53 lines is irrelevant here.
            #[allow(clippy::cast_precision_loss)]
            let lines = self.lines as f64;
            self.total / lines
        }
    }

    /// The file's complexity score in [0, 1): `μ / (μ + 1)` where `μ` is
    /// the mean indentation level.
    pub fn complexity(&self) -> f64 {
        let mean = self.mean();
        mean / (mean + HALF_COMPLEXITY_INDENT)
    }
}
