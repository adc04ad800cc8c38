//! Repository analysis: lines of code by language (tokei), indentation
//! complexity, change entropy ("chaos"), hotspots and health
//! (PRODUCT.md §5; every formula is in docs/analysis.md and
//! [`formulas`]).
//!
//! The working tree is walked once with the monitor's ignore rules; each
//! file is read once and gives both its tokei line counts and its
//! indentation. The history window comes from `orchex-git` (per-file commit
//! counts since `historyDays` ago, from `HEAD`). [`Analyzer`] caches the
//! result per repository and head commit.

mod cache;
pub mod formulas;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

use ignore::WalkState;
use ignore::gitignore::Gitignore;
use orchex_core::{AnalysisReport, LanguageStats, RepoId};
use tokei::LanguageType;

pub use self::cache::{AnalysisStats, Analyzer, AnalyzerOptions};
use self::formulas::Indentation;
use crate::error::AnalysisError;
use crate::git::GitHandle;

/// Files larger than this are counted as files but not read (generated
/// bundles, data dumps).
const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Languages that are data or prose: counted in lines of code, but their
/// indentation says nothing about complexity.
fn is_data_language(language: LanguageType) -> bool {
    matches!(
        language,
        LanguageType::Json
            | LanguageType::Yaml
            | LanguageType::Toml
            | LanguageType::Xml
            | LanguageType::Svg
            | LanguageType::Markdown
            | LanguageType::Text
            | LanguageType::ReStructuredText
            | LanguageType::Ini
            | LanguageType::Hex
    )
}

/// What a walk of the working tree found.
#[derive(Debug, Default)]
struct TreeMeasure {
    files: u64,
    languages: BTreeMap<String, LanguageStats>,
    indentation: BTreeMap<String, Indentation>,
}

impl TreeMeasure {
    fn merge(&mut self, other: TreeMeasure) {
        self.files += other.files;
        for (name, stats) in other.languages {
            let entry = self.languages.entry(name).or_default();
            entry.files += stats.files;
            entry.code += stats.code;
            entry.comments += stats.comments;
            entry.blanks += stats.blanks;
        }
        self.indentation.extend(other.indentation);
    }
}

struct LocalMeasure<'a> {
    measure: TreeMeasure,
    shared: &'a Mutex<TreeMeasure>,
}

impl Drop for LocalMeasure<'_> {
    fn drop(&mut self) {
        if let Ok(mut shared) = self.shared.lock() {
            shared.merge(std::mem::take(&mut self.measure));
        }
    }
}

fn measure_tree(root: &Path, configured: &Gitignore, threads: usize) -> TreeMeasure {
    let shared = Mutex::new(TreeMeasure::default());
    let config = tokei::Config::default();
    crate::watcher::walk_builder(root, configured, threads)
        .build_parallel()
        .run(|| {
            let mut local = LocalMeasure {
                measure: TreeMeasure::default(),
                shared: &shared,
            };
            let config = &config;
            Box::new(move |entry| {
                let Ok(entry) = entry else {
                    return WalkState::Continue;
                };
                if !entry.file_type().is_some_and(|kind| kind.is_file()) {
                    return WalkState::Continue;
                }
                local.measure.files += 1;
                let path = entry.path();
                let Some(language) = LanguageType::from_path(path, config) else {
                    return WalkState::Continue;
                };
                if entry.metadata().is_ok_and(|m| m.len() > MAX_FILE_BYTES) {
                    return WalkState::Continue;
                }
                let Ok(bytes) = std::fs::read(path) else {
                    return WalkState::Continue;
                };
                let stats = language.parse_from_slice(&bytes, config).summarise();
                let entry_stats = local
                    .measure
                    .languages
                    .entry(language.name().to_owned())
                    .or_default();
                entry_stats.files += 1;
                entry_stats.code += stats.code as u64;
                entry_stats.comments += stats.comments as u64;
                entry_stats.blanks += stats.blanks as u64;
                if !is_data_language(language)
                    && let Ok(rel) = path.strip_prefix(root)
                {
                    local.measure.indentation.insert(
                        rel.to_string_lossy().into_owned(),
                        Indentation::measure(&bytes),
                    );
                }
                WalkState::Continue
            })
        });
    shared.into_inner().unwrap_or_default()
}

/// What to analyse and how.
#[derive(Debug, Clone)]
pub(crate) struct AnalysisInput {
    pub(crate) repo: RepoId,
    pub(crate) root: PathBuf,
    pub(crate) git: GitHandle,
    pub(crate) commit: Option<String>,
    pub(crate) globs: Vec<String>,
    pub(crate) history_days: u32,
    pub(crate) top_n: usize,
    pub(crate) threads: usize,
}

/// Runs one analysis (blocking: walks the tree and reads the history).
pub(crate) fn analyse(input: &AnalysisInput) -> Result<AnalysisReport, AnalysisError> {
    let started = Instant::now();
    let computed_at = jiff::Timestamp::now();
    let (rules, _) =
        crate::watcher::rules::IgnoreRules::new(&input.root, input.git.common_dir(), &input.globs);
    let tree = measure_tree(&input.root, rules.configured(), input.threads);

    let history = match &input.commit {
        Some(commit) => {
            let window = jiff::SignedDuration::from_hours(24 * i64::from(input.history_days));
            let since = computed_at
                .checked_sub(window)
                .unwrap_or(jiff::Timestamp::MIN);
            input
                .git
                .history(commit, since)
                .map_err(|source| AnalysisError::History {
                    path: input.root.clone(),
                    source,
                })?
        }
        None => crate::git::History::default(),
    };

    let complexity = formulas::repository_complexity(tree.indentation.values());
    let chaos = formulas::change_entropy(&history.per_file, tree.files);
    let hotspots = formulas::hotspots(&history.per_file, &tree.indentation, input.top_n);
    let concentration = formulas::hotspot_concentration(&history.per_file, &hotspots);
    let health = formulas::health(complexity, chaos, concentration);
    let duration = started.elapsed();
    metrics::histogram!("orchex_analysis_duration_seconds").record(duration.as_secs_f64());
    Ok(AnalysisReport {
        repo: input.repo.clone(),
        commit: input.commit.clone(),
        computed_at,
        loc_by_language: tree.languages,
        complexity,
        chaos,
        health,
        hotspots,
        duration_ms: u64::try_from(duration.as_millis()).unwrap_or(u64::MAX),
    })
}
