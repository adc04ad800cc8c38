//! Triggers: what makes orchex consider running pipelines.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{RepoId, Timestamp};

/// What kind of event produced a trigger.
///
/// The order of the variants is the dispatch priority, highest first:
/// manual > push > commit > fileChange > threshold > schedule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub enum TriggerKind {
    /// An operator asked for a run through the API or CLI.
    Manual,
    /// The remote-tracking ref moved, or a verified webhook arrived.
    Push,
    /// A new commit on the watched branch.
    Commit,
    /// Settled file-system changes in the working tree.
    FileChange,
    /// An analysis score crossed its configured threshold.
    Threshold,
    /// The periodic schedule came due.
    Schedule,
}

impl TriggerKind {
    /// Every kind, highest priority first.
    pub const ALL: [TriggerKind; 6] = [
        TriggerKind::Manual,
        TriggerKind::Push,
        TriggerKind::Commit,
        TriggerKind::FileChange,
        TriggerKind::Threshold,
        TriggerKind::Schedule,
    ];

    /// Dispatch priority: larger runs first.
    ///
    /// ```
    /// use orchex_core::TriggerKind;
    /// assert!(TriggerKind::Manual.priority() > TriggerKind::Schedule.priority());
    /// ```
    pub const fn priority(self) -> u8 {
        match self {
            TriggerKind::Manual => 60,
            TriggerKind::Push => 50,
            TriggerKind::Commit => 40,
            TriggerKind::FileChange => 30,
            TriggerKind::Threshold => 20,
            TriggerKind::Schedule => 10,
        }
    }

    /// The camelCase name used in configs and the API.
    pub const fn as_str(self) -> &'static str {
        match self {
            TriggerKind::Manual => "manual",
            TriggerKind::Push => "push",
            TriggerKind::Commit => "commit",
            TriggerKind::FileChange => "fileChange",
            TriggerKind::Threshold => "threshold",
            TriggerKind::Schedule => "schedule",
        }
    }
}

impl fmt::Display for TriggerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The string did not name a [`TriggerKind`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown trigger {0:?}; expected one of manual, push, commit, fileChange, threshold, schedule"
)]
pub struct UnknownTriggerKind(pub String);

impl FromStr for TriggerKind {
    type Err = UnknownTriggerKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        TriggerKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or_else(|| UnknownTriggerKind(s.to_owned()))
    }
}

/// One reason to consider running pipelines on one repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Trigger {
    /// The repository concerned.
    pub repo: RepoId,
    /// What happened.
    pub kind: TriggerKind,
    /// Repository-relative paths that changed (`/`-separated); empty when the
    /// trigger is not about particular files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    /// The commit that caused the trigger, as a hex object id, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// For `commit` and `push` triggers: the value the ref had before it
    /// moved to [`Trigger::commit`] (`None` when the ref was just created).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_commit: Option<String>,
    /// Run even if the inputs are unchanged and ignore the rate limiter.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub force: bool,
    /// Compute the result but deliver nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub dry_run: bool,
    /// Restrict the trigger to one pipeline (manual runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<String>,
    /// Pipelines still to run after this job, in order (the `sequential`
    /// strategy). Stored with the job, so the sequence survives a daemon
    /// restart.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub then: Vec<String>,
    /// When the trigger was produced.
    pub at: Timestamp,
}

impl Trigger {
    /// A trigger of `kind` on `repo`, now, with no paths or commit.
    pub fn new(repo: RepoId, kind: TriggerKind) -> Self {
        Self {
            repo,
            kind,
            paths: Vec::new(),
            commit: None,
            previous_commit: None,
            force: false,
            dry_run: false,
            pipeline: None,
            then: Vec::new(),
            at: Timestamp::now(),
        }
    }

    /// A manual trigger on `repo`, now.
    pub fn manual(repo: RepoId) -> Self {
        Self::new(repo, TriggerKind::Manual)
    }

    /// A `fileChange` trigger built from a settled batch.
    pub fn from_batch(batch: ChangeBatch) -> Self {
        Self {
            paths: batch.paths,
            at: batch.last_change_at,
            ..Self::new(batch.repo, TriggerKind::FileChange)
        }
    }
}

/// A settled set of distinct changed paths in one repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct ChangeBatch {
    /// The repository the paths belong to.
    pub repo: RepoId,
    /// Distinct repository-relative paths, sorted.
    pub paths: Vec<String>,
    /// When the first change of the batch was seen.
    pub first_change_at: Timestamp,
    /// When the last change of the batch was seen.
    pub last_change_at: Timestamp,
    /// Whether the batch comes from a full rescan (after a queue overflow).
    #[serde(default)]
    pub rescan: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn priorities_are_strictly_ordered() {
        let priorities: Vec<u8> = TriggerKind::ALL.iter().map(|k| k.priority()).collect();
        assert!(priorities.windows(2).all(|w| w[0] > w[1]));
    }

    #[test]
    fn kinds_round_trip_through_strings_and_serde() {
        for kind in TriggerKind::ALL {
            assert_eq!(kind.as_str().parse::<TriggerKind>(), Ok(kind));
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert!("filechange".parse::<TriggerKind>().is_err());
    }
}
