//! [`Analyzer`]: analyses with a moka cache keyed by repository and head
//! commit, shared computation for concurrent requests of one key, and a
//! bound on how many repositories are analysed at once.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use moka::future::Cache;
use orchex_core::config::AnalysisConfig;
use orchex_core::{AnalysisReport, RepoId};
use tokio::sync::Semaphore;

use super::{AnalysisInput, analyse};
use crate::error::{AnalysisError, MonitorError};
use crate::git::GitHandle;

type Key = (RepoId, Option<String>);

/// How the [`Analyzer`] works.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyzerOptions {
    /// How long a result is reused (`cacheTtlSecs`).
    pub cache_ttl: Duration,
    /// History window in days (`historyDays`).
    pub history_days: u32,
    /// Hotspots kept in a report.
    pub top_n: usize,
    /// Repositories analysed at once; further requests wait.
    pub max_parallel: usize,
    /// Walker threads of one analysis.
    pub threads: usize,
    /// Reports kept at most.
    pub max_cached: u64,
}

impl AnalyzerOptions {
    /// The options of `[monitor.analysis]`, with defaults for the rest.
    pub fn from_config(config: &AnalysisConfig) -> Self {
        Self {
            cache_ttl: Duration::from_secs(config.cache_ttl_secs),
            history_days: config.history_days,
            ..Self::default()
        }
    }
}

impl Default for AnalyzerOptions {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self {
            cache_ttl: Duration::from_secs(600),
            history_days: 90,
            top_n: 10,
            max_parallel: cpus.div_ceil(2).max(1),
            threads: cpus.min(4),
            max_cached: 1024,
        }
    }
}

/// Counters of an [`Analyzer`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AnalysisStats {
    /// Analyses actually computed.
    pub computations: u64,
    /// Requests answered from the cache, or by joining a computation that
    /// another request had started.
    pub hits: u64,
    /// Requests that started a computation.
    pub misses: u64,
}

/// Analyses repositories, caching each report per repository and head
/// commit for the configured TTL.
///
/// Concurrent requests for one key compute once: the first starts the
/// analysis and the others wait for its result (moka's `try_get_with`). At
/// most [`AnalyzerOptions::max_parallel`] analyses run at once. Cheap to
/// clone; clones share the cache.
///
/// # Example
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use orchex_monitor::analysis::{Analyzer, AnalyzerOptions};
/// let analyzer = Analyzer::new(AnalyzerOptions::default());
/// let repo = orchex_core::RepoId::new("api")?;
/// let report = analyzer.analyse(&repo, std::path::Path::new("/srv/repos/api")).await?;
/// println!("chaos {:.2}, health {:.2}", report.chaos, report.health);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct Analyzer {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cache: RwLock<Cache<Key, Arc<AnalysisReport>>>,
    options: RwLock<AnalyzerOptions>,
    permits: Arc<Semaphore>,
    computations: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
}

fn build_cache(options: &AnalyzerOptions) -> Cache<Key, Arc<AnalysisReport>> {
    Cache::builder()
        .max_capacity(options.max_cached)
        .time_to_live(options.cache_ttl)
        .support_invalidation_closures()
        .build()
}

impl Analyzer {
    /// An analyzer with an empty cache.
    pub fn new(options: AnalyzerOptions) -> Self {
        Self {
            inner: Arc::new(Inner {
                cache: RwLock::new(build_cache(&options)),
                permits: Arc::new(Semaphore::new(options.max_parallel.max(1))),
                options: RwLock::new(options),
                computations: AtomicU64::new(0),
                hits: AtomicU64::new(0),
                misses: AtomicU64::new(0),
            }),
        }
    }

    /// The options in force.
    pub fn options(&self) -> AnalyzerOptions {
        match self.inner.options.read() {
            Ok(options) => options.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Replaces the options. A new TTL or history window empties the cache
    /// (reports computed under the old rules are not reused). The bound on
    /// parallel analyses is fixed at construction.
    pub fn set_options(&self, options: AnalyzerOptions) {
        let old = self.options();
        if old == options {
            return;
        }
        if (old.cache_ttl != options.cache_ttl
            || old.history_days != options.history_days
            || old.top_n != options.top_n
            || old.max_cached != options.max_cached)
            && let Ok(mut cache) = self.inner.cache.write()
        {
            *cache = build_cache(&options);
        }
        if let Ok(mut current) = self.inner.options.write() {
            *current = options;
        }
    }

    /// Forgets every cached report of `repo`.
    pub fn invalidate(&self, repo: &RepoId) {
        let repo = repo.clone();
        let cache = self.cache();
        // Only fails when invalidation closures are not enabled, which
        // `build_cache` does not need: fall back to dropping everything.
        if cache
            .invalidate_entries_if(move |key, _| key.0 == repo)
            .is_err()
        {
            cache.invalidate_all();
        }
    }

    /// Forgets every cached report.
    pub fn invalidate_all(&self) {
        self.cache().invalidate_all();
    }

    /// Counters since construction.
    pub fn stats(&self) -> AnalysisStats {
        AnalysisStats {
            computations: self.inner.computations.load(Ordering::Relaxed),
            hits: self.inner.hits.load(Ordering::Relaxed),
            misses: self.inner.misses.load(Ordering::Relaxed),
        }
    }

    fn cache(&self) -> Cache<Key, Arc<AnalysisReport>> {
        match self.inner.cache.read() {
            Ok(cache) => cache.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The analysis of the repository `repo` whose working tree is `path`,
    /// at its current `HEAD`: from the cache when it holds one for that
    /// commit, computed otherwise.
    pub async fn analyse(
        &self,
        repo: &RepoId,
        path: &Path,
    ) -> Result<Arc<AnalysisReport>, MonitorError> {
        let owned_path = path.to_path_buf();
        let git = tokio::task::spawn_blocking(move || GitHandle::open(&owned_path))
            .await
            .map_err(|error| MonitorError::Analysis {
                repo: repo.clone(),
                source: Arc::new(AnalysisError::Task(error.to_string())),
            })?
            .map_err(|source| MonitorError::NotARepository {
                repo: repo.clone(),
                path: path.to_path_buf(),
                source,
            })?;
        self.analyse_with(repo, git, Vec::new())
            .await
            .map(|(report, _)| report)
    }

    /// Like [`Analyzer::analyse`] with an open repository and the
    /// configured ignore globs; also says whether this call computed the
    /// report.
    pub(crate) async fn analyse_with(
        &self,
        repo: &RepoId,
        git: GitHandle,
        globs: Vec<String>,
    ) -> Result<(Arc<AnalysisReport>, bool), MonitorError> {
        let head_git = git.clone();
        let commit = tokio::task::spawn_blocking(move || head_git.head())
            .await
            .map_err(|error| MonitorError::Analysis {
                repo: repo.clone(),
                source: Arc::new(AnalysisError::Task(error.to_string())),
            })?
            .map_err(|source| MonitorError::Analysis {
                repo: repo.clone(),
                source: Arc::new(AnalysisError::Head {
                    path: git.workdir().to_path_buf(),
                    source,
                }),
            })?
            .oid;
        let options = self.options();
        let input = AnalysisInput {
            repo: repo.clone(),
            root: git.workdir().to_path_buf(),
            git,
            commit: commit.clone(),
            globs,
            history_days: options.history_days,
            top_n: options.top_n,
            threads: options.threads.max(1),
        };
        let computed = Arc::new(AtomicBool::new(false));
        let init = {
            let computed = Arc::clone(&computed);
            let inner = Arc::clone(&self.inner);
            async move {
                computed.store(true, Ordering::Relaxed);
                let _permit = inner
                    .permits
                    .acquire()
                    .await
                    .map_err(|error| AnalysisError::Task(error.to_string()))?;
                inner.computations.fetch_add(1, Ordering::Relaxed);
                let report = tokio::task::spawn_blocking(move || analyse(&input))
                    .await
                    .map_err(|error| AnalysisError::Task(error.to_string()))??;
                Ok::<_, AnalysisError>(Arc::new(report))
            }
        };
        let result = self
            .cache()
            .try_get_with((repo.clone(), commit), init)
            .await;
        let fresh = computed.load(Ordering::Relaxed);
        if fresh {
            self.inner.misses.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("orchex_analysis_cache_misses_total").increment(1);
        } else {
            self.inner.hits.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("orchex_analysis_cache_hits_total").increment(1);
        }
        let report = result.map_err(|source| MonitorError::Analysis {
            repo: repo.clone(),
            source,
        })?;
        Ok((report, fresh))
    }
}
