//! Pipelines: named lists of steps run on one repository.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::TriggerKind;

/// Where a job's result goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum Delivery {
    /// A commit on top of the source commit, on the pipeline's branch.
    #[default]
    Branch,
    /// Changes applied back to the user's working tree, skipping files the
    /// user changed meanwhile.
    Worktree,
    /// Dry run: the diff is stored with the job, nothing is written.
    None,
}

impl Delivery {
    /// The camelCase name used in configs and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            Delivery::Branch => "branch",
            Delivery::Worktree => "worktree",
            Delivery::None => "none",
        }
    }
}

impl fmt::Display for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How several pipelines matched by one trigger are run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum Strategy {
    /// Concurrently, within the concurrency limits.
    #[default]
    Parallel,
    /// One after the other, in the order the pipelines are written.
    Sequential,
}

/// The branch and message of a `branch` delivery.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CommitSpec {
    /// Target branch; `orchex/<pipeline>` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// Commit message; `orchex: <pipeline>` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What a step does, decided from which of `run`, `webhook` or `uses` is set.
#[derive(Debug, Clone, PartialEq)]
pub enum StepAction<'a> {
    /// Run a child process; `argv[0]` is the program.
    Run(&'a [String]),
    /// POST a JSON payload to a URL.
    Webhook(&'a str),
    /// Call an action registered by an embedder, with its `with` table.
    Uses(&'a str, &'a BTreeMap<String, serde_json::Value>),
}

/// One step of a pipeline (`[[pipelines.steps]]` or `[[pipelines.validate]]`).
///
/// Exactly one of `run`, `webhook` and `uses` is set; the config validator
/// reports the step's key path otherwise, and [`Step::action`] returns `None`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Step {
    /// Name shown in job details and events.
    pub name: String,
    /// Command as an argv array; no shell unless written as `["sh", "-c", ...]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run: Option<Vec<String>>,
    /// URL receiving an HTTP POST with a JSON payload describing the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// Name of an embedder-registered action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<String>,
    /// Free parameters for a `uses` action (or extra payload for a webhook).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub with: BTreeMap<String, serde_json::Value>,
    /// Extra environment variables for a `run` step.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Step timeout; the job timeout when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_secs: Option<u64>,
}

impl Step {
    /// What the step does, or `None` when not exactly one action is set.
    pub fn action(&self) -> Option<StepAction<'_>> {
        match (&self.run, &self.webhook, &self.uses) {
            (Some(argv), None, None) => Some(StepAction::Run(argv)),
            (None, Some(url), None) => Some(StepAction::Webhook(url)),
            (None, None, Some(name)) => Some(StepAction::Uses(name, &self.with)),
            _ => None,
        }
    }
}

/// A named list of steps, with the triggers, repositories and paths it
/// reacts to and where its result goes (`[[pipelines]]` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pipeline {
    /// Unique pipeline name.
    pub name: String,
    /// Repository name globs; every repository when absent.
    #[serde(default = "default_repositories")]
    pub repositories: Vec<String>,
    /// The trigger kinds the pipeline reacts to.
    #[serde(default = "default_triggers")]
    pub triggers: Vec<TriggerKind>,
    /// Path globs: the changes the pipeline reacts to and the inputs hashed
    /// for the `unchanged` skip.
    #[serde(default = "default_paths")]
    pub paths: Vec<String>,
    /// How this pipeline runs relative to others matched by the same trigger.
    #[serde(default)]
    pub strategy: Strategy,
    /// The steps, run in order in the isolated workspace.
    pub steps: Vec<Step>,
    /// Validation steps, run after the steps; a failure discards the result.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub validate: Vec<Step>,
    /// Where the result goes.
    #[serde(default)]
    pub deliver: Delivery,
    /// Branch and message of a `branch` delivery.
    #[serde(default)]
    pub commit: CommitSpec,
    /// Rate-limit tokens one job of this pipeline costs.
    #[serde(default = "default_rate_cost")]
    pub rate_cost: u32,
}

impl Pipeline {
    /// The branch a `branch` delivery writes to.
    ///
    /// ```
    /// # use orchex_core::{Pipeline, Step};
    /// let pipeline = Pipeline::new("fmt", vec![Step::default()]);
    /// assert_eq!(pipeline.delivery_branch(), "orchex/fmt");
    /// ```
    pub fn delivery_branch(&self) -> String {
        self.commit
            .branch
            .clone()
            .unwrap_or_else(|| format!("orchex/{}", self.name))
    }

    /// The commit message of a `branch` delivery.
    pub fn commit_message(&self) -> String {
        self.commit
            .message
            .clone()
            .unwrap_or_else(|| format!("orchex: {}", self.name))
    }

    /// A pipeline with the given steps and every other field at its default.
    pub fn new(name: impl Into<String>, steps: Vec<Step>) -> Self {
        Self {
            name: name.into(),
            repositories: default_repositories(),
            triggers: default_triggers(),
            paths: default_paths(),
            strategy: Strategy::default(),
            steps,
            validate: Vec::new(),
            deliver: Delivery::default(),
            commit: CommitSpec::default(),
            rate_cost: default_rate_cost(),
        }
    }
}

fn default_repositories() -> Vec<String> {
    vec!["*".to_owned()]
}

fn default_triggers() -> Vec<TriggerKind> {
    vec![
        TriggerKind::Manual,
        TriggerKind::Commit,
        TriggerKind::FileChange,
    ]
}

fn default_paths() -> Vec<String> {
    vec!["**".to_owned()]
}

const fn default_rate_cost() -> u32 {
    1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_action_requires_exactly_one_kind() {
        let mut step = Step {
            name: "s".into(),
            run: Some(vec!["true".into()]),
            ..Step::default()
        };
        assert!(matches!(step.action(), Some(StepAction::Run(_))));
        step.webhook = Some("https://example.invalid".into());
        assert_eq!(step.action(), None);
        step.run = None;
        assert!(matches!(step.action(), Some(StepAction::Webhook(_))));
        step.webhook = None;
        assert_eq!(step.action(), None);
    }

    #[test]
    fn pipeline_defaults_apply() {
        let pipeline: Pipeline =
            serde_json::from_str(r#"{"name":"fmt","steps":[{"name":"a","run":["true"]}]}"#)
                .unwrap();
        assert_eq!(pipeline.repositories, vec!["*"]);
        assert_eq!(pipeline.deliver, Delivery::Branch);
        assert_eq!(pipeline.rate_cost, 1);
        assert_eq!(pipeline.delivery_branch(), "orchex/fmt");
        assert_eq!(pipeline.commit_message(), "orchex: fmt");
    }
}
