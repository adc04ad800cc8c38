//! Routing: which pipelines a trigger runs.
//!
//! Routing is configuration, not code. Each pipeline names the trigger
//! kinds, the repositories (names or globs) and the paths (globs) it reacts
//! to; [`RoutingTable::build`] compiles those into matchers once per
//! configuration, and [`RoutingTable::route`] answers for one trigger.
//!
//! Rules:
//! - the trigger's kind must be one of the pipeline's `triggers`, except for
//!   a manual trigger that names the pipeline: an operator may always run a
//!   pipeline by hand on a repository it applies to;
//! - the repository must match one of the pipeline's `repositories`;
//! - a trigger that carries changed paths (file changes, commits with their
//!   paths) needs at least one of them to match the pipeline's `paths`; a
//!   trigger without paths (manual, schedule, threshold, push) is not
//!   filtered by path.
//!
//! When several pipelines match, they run in the order written, and the
//! route is sequential if any matching pipeline asks for `sequential`.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use orchex_core::{Config, Pipeline, Strategy, Trigger, TriggerKind};
use serde::Serialize;

/// A pipeline glob could not be compiled.
#[derive(Debug, thiserror::Error)]
#[error("pipelines[{index}] ({pipeline}): invalid glob {pattern:?}: {source}")]
#[non_exhaustive]
pub struct RoutingError {
    /// Index of the pipeline in the configuration.
    pub index: usize,
    /// The pipeline's name.
    pub pipeline: String,
    /// The offending pattern.
    pub pattern: String,
    /// The glob error.
    #[source]
    pub source: globset::Error,
}

#[derive(Debug, Clone)]
struct Route {
    pipeline: Pipeline,
    repositories: GlobSet,
    paths: GlobSet,
}

/// The compiled routing of one configuration.
#[derive(Debug, Clone, Default)]
pub struct RoutingTable {
    routes: Vec<Route>,
}

/// The pipelines one trigger runs, and how.
#[derive(Debug, Clone, PartialEq)]
pub struct RouteMatch<'a> {
    /// Matching pipelines, in configuration order.
    pub pipelines: Vec<&'a Pipeline>,
    /// Sequential when any matching pipeline asks for it.
    pub strategy: Strategy,
}

/// One row of the routing table as shown by `GET /api/orchestrator/config`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct RouteEntry {
    /// The trigger kind.
    pub trigger: TriggerKind,
    /// Repository names or globs.
    pub repositories: Vec<String>,
    /// Path globs.
    pub paths: Vec<String>,
    /// The pipeline this row runs.
    pub pipeline: String,
    /// The pipeline's strategy.
    pub strategy: Strategy,
}

fn glob_set<'a>(
    patterns: impl IntoIterator<Item = &'a String>,
    paths: bool,
    index: usize,
    pipeline: &str,
) -> Result<GlobSet, RoutingError> {
    let mut builder = GlobSetBuilder::new();
    for pattern in patterns {
        let glob = if paths {
            // `*` stays within a directory; `**` crosses them.
            GlobBuilder::new(pattern).literal_separator(true).build()
        } else {
            Glob::new(pattern)
        };
        let glob = glob.map_err(|source| RoutingError {
            index,
            pipeline: pipeline.to_owned(),
            pattern: pattern.clone(),
            source,
        })?;
        builder.add(glob);
    }
    builder.build().map_err(|source| RoutingError {
        index,
        pipeline: pipeline.to_owned(),
        pattern: String::new(),
        source,
    })
}

impl RoutingTable {
    /// Compiles the routing of `config`.
    pub fn build(config: &Config) -> Result<Self, RoutingError> {
        let routes = config
            .pipelines
            .iter()
            .enumerate()
            .map(|(index, pipeline)| {
                Ok(Route {
                    repositories: glob_set(&pipeline.repositories, false, index, &pipeline.name)?,
                    paths: glob_set(&pipeline.paths, true, index, &pipeline.name)?,
                    pipeline: pipeline.clone(),
                })
            })
            .collect::<Result<_, RoutingError>>()?;
        Ok(Self { routes })
    }

    /// The pipelines `trigger` runs.
    pub fn route(&self, trigger: &Trigger) -> RouteMatch<'_> {
        let pipelines: Vec<&Pipeline> = self
            .routes
            .iter()
            .filter(|route| route.matches(trigger))
            .map(|route| &route.pipeline)
            .collect();
        let strategy = if pipelines.iter().any(|p| p.strategy == Strategy::Sequential) {
            Strategy::Sequential
        } else {
            Strategy::Parallel
        };
        RouteMatch {
            pipelines,
            strategy,
        }
    }

    /// The pipeline named `name`, if configured.
    pub fn pipeline(&self, name: &str) -> Option<&Pipeline> {
        self.routes
            .iter()
            .map(|route| &route.pipeline)
            .find(|pipeline| pipeline.name == name)
    }

    /// Whether `pipeline` applies to the repository `repo` at all.
    pub fn applies_to(&self, pipeline: &str, repo: &str) -> bool {
        self.routes
            .iter()
            .any(|route| route.pipeline.name == pipeline && route.repositories.is_match(repo))
    }

    /// The table as rows of trigger × repositories × paths → pipeline.
    pub fn entries(&self) -> Vec<RouteEntry> {
        let mut entries = Vec::new();
        for kind in TriggerKind::ALL {
            for route in &self.routes {
                if route.pipeline.triggers.contains(&kind) {
                    entries.push(RouteEntry {
                        trigger: kind,
                        repositories: route.pipeline.repositories.clone(),
                        paths: route.pipeline.paths.clone(),
                        pipeline: route.pipeline.name.clone(),
                        strategy: route.pipeline.strategy,
                    });
                }
            }
        }
        entries
    }

    /// Whether any pipeline is configured.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

impl Route {
    fn matches(&self, trigger: &Trigger) -> bool {
        let named = trigger.pipeline.as_deref();
        if let Some(name) = named
            && name != self.pipeline.name
        {
            return false;
        }
        let explicit_manual = trigger.kind == TriggerKind::Manual && named.is_some();
        if !explicit_manual && !self.pipeline.triggers.contains(&trigger.kind) {
            return false;
        }
        if !self.repositories.is_match(trigger.repo.as_str()) {
            return false;
        }
        trigger.paths.is_empty() || trigger.paths.iter().any(|path| self.paths.is_match(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orchex_core::{RepoId, Step};

    fn pipeline(name: &str, repos: &[&str], triggers: &[TriggerKind], paths: &[&str]) -> Pipeline {
        let mut pipeline = Pipeline::new(
            name,
            vec![Step {
                name: "s".into(),
                run: Some(vec!["true".into()]),
                ..Step::default()
            }],
        );
        pipeline.repositories = repos.iter().map(|s| (*s).to_owned()).collect();
        pipeline.triggers = triggers.to_vec();
        pipeline.paths = paths.iter().map(|s| (*s).to_owned()).collect();
        pipeline
    }

    fn table() -> RoutingTable {
        let mut config = Config {
            pipelines: vec![
                pipeline(
                    "codegen",
                    &["api"],
                    &[TriggerKind::FileChange, TriggerKind::Commit],
                    &["schema/**"],
                ),
                pipeline(
                    "fmt",
                    &["*"],
                    &[TriggerKind::FileChange, TriggerKind::Manual],
                    &["**/*.rs", "*.rs"],
                ),
                pipeline("weekly", &["web-*"], &[TriggerKind::Schedule], &["**"]),
            ],
            ..Config::default()
        };
        config.pipelines[2].strategy = Strategy::Sequential;
        RoutingTable::build(&config).unwrap()
    }

    fn trigger(repo: &str, kind: TriggerKind, paths: &[&str]) -> Trigger {
        let mut trigger = Trigger::new(RepoId::new(repo).unwrap(), kind);
        trigger.paths = paths.iter().map(|s| (*s).to_owned()).collect();
        trigger
    }

    fn names<'a>(m: &RouteMatch<'a>) -> Vec<&'a str> {
        m.pipelines.iter().map(|p| p.name.as_str()).collect()
    }

    #[test]
    fn paths_select_pipelines() {
        let table = table();
        let m = table.route(&trigger("api", TriggerKind::FileChange, &["schema/a.json"]));
        assert_eq!(names(&m), vec!["codegen"]);
        let m = table.route(&trigger(
            "api",
            TriggerKind::FileChange,
            &["src/main.rs", "schema/x"],
        ));
        assert_eq!(names(&m), vec!["codegen", "fmt"]);
        let m = table.route(&trigger("api", TriggerKind::FileChange, &["README.md"]));
        assert!(m.pipelines.is_empty());
    }

    #[test]
    fn single_star_does_not_cross_directories() {
        let table = table();
        // `*.rs` matches only top-level files; `**/*.rs` the rest.
        let m = table.route(&trigger("other", TriggerKind::FileChange, &["build.rs"]));
        assert_eq!(names(&m), vec!["fmt"]);
    }

    #[test]
    fn repositories_and_kinds_filter() {
        let table = table();
        assert!(
            table
                .route(&trigger("web", TriggerKind::Commit, &["schema/a"]))
                .pipelines
                .is_empty()
        );
        let m = table.route(&trigger("web-app", TriggerKind::Schedule, &[]));
        assert_eq!(names(&m), vec!["weekly"]);
        assert_eq!(m.strategy, Strategy::Sequential);
        assert!(
            table
                .route(&trigger("api", TriggerKind::Schedule, &[]))
                .pipelines
                .is_empty()
        );
    }

    #[test]
    fn manual_runs_every_manual_pipeline_or_the_named_one() {
        let table = table();
        let m = table.route(&trigger("api", TriggerKind::Manual, &[]));
        assert_eq!(names(&m), vec!["fmt"]);
        // Naming a pipeline runs it even if `manual` is not among its triggers...
        let mut named = trigger("api", TriggerKind::Manual, &[]);
        named.pipeline = Some("codegen".into());
        assert_eq!(names(&table.route(&named)), vec!["codegen"]);
        // ...but only on a repository it applies to.
        let mut elsewhere = trigger("web", TriggerKind::Manual, &[]);
        elsewhere.pipeline = Some("codegen".into());
        assert!(table.route(&elsewhere).pipelines.is_empty());
    }

    #[test]
    fn entries_list_every_trigger_pipeline_pair() {
        let entries = table().entries();
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[0].trigger, TriggerKind::Manual);
        assert_eq!(entries[0].pipeline, "fmt");
        let json = serde_json::to_value(&entries[0]).unwrap();
        assert_eq!(json["trigger"], "manual");
    }
}
