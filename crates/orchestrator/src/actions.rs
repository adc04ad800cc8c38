//! Custom step kinds: embedders implement [`Action`] and register it by
//! name; a pipeline step refers to it as `uses = "name"` with a free `with`
//! table.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use orchex_core::{JobId, RepoId};
use tokio_util::sync::CancellationToken;

/// What an action gets to work with.
#[derive(Debug)]
#[non_exhaustive]
pub struct ActionContext<'a> {
    /// The job's isolated workspace; changes made here are the job's result.
    pub workspace: &'a Path,
    /// The repository.
    pub repo: &'a RepoId,
    /// The job.
    pub job_id: JobId,
    /// The pipeline's name.
    pub pipeline: &'a str,
    /// The step's `with` table.
    pub with: &'a BTreeMap<String, serde_json::Value>,
    /// Cancelled on timeout, cancel and emergency stop; actions should stop
    /// promptly when it fires.
    pub cancel: &'a CancellationToken,
}

/// A step kind provided by an embedder.
///
/// # Example
///
/// ```
/// use orchex_orchestrator::{Action, ActionContext, ActionRegistry};
///
/// struct WriteVersion;
///
/// #[async_trait::async_trait]
/// impl Action for WriteVersion {
///     async fn run(&self, ctx: ActionContext<'_>) -> Result<String, String> {
///         let version = ctx.with.get("version").and_then(|v| v.as_str()).unwrap_or("0.0.0");
///         std::fs::write(ctx.workspace.join("VERSION"), version).map_err(|e| e.to_string())?;
///         Ok(format!("wrote {version}"))
///     }
/// }
///
/// let mut actions = ActionRegistry::default();
/// actions.register("write-version", WriteVersion);
/// assert!(actions.get("write-version").is_some());
/// ```
#[async_trait::async_trait]
pub trait Action: Send + Sync {
    /// Runs the action. `Ok` carries output text for the job's step record;
    /// `Err` fails the step with that message.
    async fn run(&self, ctx: ActionContext<'_>) -> Result<String, String>;
}

/// Actions by name.
#[derive(Clone, Default)]
pub struct ActionRegistry {
    actions: HashMap<String, Arc<dyn Action>>,
}

impl ActionRegistry {
    /// Registers `action` as `name`, replacing any previous one.
    pub fn register(&mut self, name: impl Into<String>, action: impl Action + 'static) {
        self.actions.insert(name.into(), Arc::new(action));
    }

    /// The action registered as `name`.
    pub fn get(&self, name: &str) -> Option<Arc<dyn Action>> {
        self.actions.get(name).cloned()
    }

    /// The registered names, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.actions.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

impl fmt::Debug for ActionRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ActionRegistry")
            .field("actions", &self.names())
            .finish()
    }
}
