//! The job engine: one job from an isolated workspace to a delivered,
//! recorded result.
//!
//! Per job, in order: open the repository, prepare the workspace (a checkout
//! of the source commit, or a snapshot of the working tree for `worktree`
//! delivery), compute the input hash and skip `unchanged` work, run the
//! steps, run the validation steps, compute the diff, refuse protected
//! paths, record the impact, and deliver. The workspace is removed after
//! every outcome. Nothing is delivered once the job is cancelled (operator
//! cancel, timeout, emergency stop): the cancellation is checked right
//! before the delivery's first write.
//!
//! Before a delivery writes anything, what it is about to do is made
//! durable (the delivery record with the hashes it will write, and backups
//! of what it replaces); crash recovery uses that to undo a delivery that
//! was cut short, so the user's repository never keeps a half-applied
//! result.

mod deliver;
pub(crate) mod workspace;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use orchex_core::{
    Delivery, DeliveryRecord, DiffSummary, Event, EventKind, FileImpact, Job, Pipeline, Repository,
    SkipReason, Step, StepAction, StepResult,
};
use orchex_git::{GitRepo, Oid, Signature};
use orchex_store::Store;
use tokio_util::sync::CancellationToken;

use crate::actions::{ActionContext, ActionRegistry};
use crate::events::Events;
use crate::impact;
use crate::process::{ProcessSpec, Termination, run_process_recorded};
use workspace::Workspace;

pub(crate) use deliver::{RollbackError, rollback, undo_interrupted_delivery};

/// Bytes of output kept per step.
pub(crate) const STEP_OUTPUT_LIMIT: usize = 64 * 1024;

/// What the engine needs, shared by every job.
#[derive(Debug, Clone)]
pub(crate) struct Engine {
    pub(crate) storage: PathBuf,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) events: Events,
    pub(crate) actions: ActionRegistry,
    pub(crate) signature: Signature,
    pub(crate) writers: RepoWriters,
}

/// One writer per repository: deliveries, rollbacks and recovery of one
/// repository never interleave, while steps of several jobs still run in
/// parallel in their own workspaces.
///
/// A delivery holds the lock from its first look at the repository (the
/// branch tip, the working-tree files) until its job's outcome is recorded
/// ([`RunResult::writer`]): the next writer decides from the records where
/// orchex left the branch, so it must not see a branch moved by a job whose
/// success is not recorded yet, nor move the branch under a delivery that
/// has read it.
#[derive(Debug, Clone, Default)]
pub(crate) struct RepoWriters {
    locks: Arc<
        std::sync::Mutex<
            std::collections::HashMap<orchex_core::RepoId, Arc<tokio::sync::Mutex<()>>>,
        >,
    >,
}

impl RepoWriters {
    /// Waits for the write lock of `repo`.
    pub(crate) async fn lock(&self, repo: &orchex_core::RepoId) -> WriterGuard {
        let lock = {
            let mut locks = self
                .locks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            Arc::clone(locks.entry(repo.clone()).or_default())
        };
        lock.lock_owned().await
    }
}

/// One job to run.
pub(crate) struct JobRequest<'a> {
    pub(crate) job: &'a Job,
    pub(crate) pipeline: &'a Pipeline,
    pub(crate) repo: &'a Repository,
    pub(crate) protected_paths: &'a [String],
    pub(crate) job_timeout: Duration,
    pub(crate) cancel: CancellationToken,
    /// Called after each step or validation, for progress displays.
    pub(crate) on_step: Arc<dyn Fn() + Send + Sync>,
}

impl std::fmt::Debug for JobRequest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobRequest")
            .field("job", &self.job.id)
            .field("pipeline", &self.pipeline.name)
            .field("repo", &self.repo.name)
            .field("job_timeout", &self.job_timeout)
            .finish_non_exhaustive()
    }
}

/// How a job ended, with what the store needs to record.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // one per job; boxing buys nothing
pub(crate) enum Outcome {
    Succeeded {
        changed: bool,
        diff: Option<DiffSummary>,
        delivery: Option<DeliveryRecord>,
        impact: Vec<FileImpact>,
    },
    Failed {
        error: String,
    },
    TimedOut {
        error: String,
    },
    Cancelled {
        reason: String,
    },
    Skipped(SkipReason),
}

/// A repository's write lock, held (see [`RepoWriters`]).
pub(crate) type WriterGuard = tokio::sync::OwnedMutexGuard<()>;

/// The engine's answer: the outcome and the job's input hash, if computed.
#[derive(Debug)]
pub(crate) struct RunResult {
    pub(crate) outcome: Outcome,
    pub(crate) input_hash: Option<String>,
    /// The repository's write lock when the job reached its delivery: the
    /// caller drops it once the outcome is recorded, not before.
    pub(crate) writer: Option<WriterGuard>,
}

impl RunResult {
    fn from(outcome: Outcome) -> Self {
        Self {
            outcome,
            input_hash: None,
            writer: None,
        }
    }
}

/// Runs blocking git or file-system work off the async runtime.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, String> + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| format!("a background task failed: {err}"))?
}

fn failed(error: impl Into<String>) -> RunResult {
    RunResult::from(Outcome::Failed {
        error: error.into(),
    })
}

impl Engine {
    /// Runs `request` to an outcome, within its job timeout.
    pub(crate) async fn run(&self, request: JobRequest<'_>) -> RunResult {
        let timed_out = Arc::new(AtomicBool::new(false));
        let run = self.run_inner(&request);
        tokio::pin!(run);
        let result = tokio::select! {
            result = &mut run => result,
            () = tokio::time::sleep(request.job_timeout) => {
                timed_out.store(true, Ordering::SeqCst);
                request.cancel.cancel();
                run.await
            }
        };
        if timed_out.load(Ordering::SeqCst) && matches!(result.outcome, Outcome::Cancelled { .. }) {
            return RunResult {
                outcome: Outcome::TimedOut {
                    error: format!(
                        "the job exceeded its timeout of {}s",
                        request.job_timeout.as_secs()
                    ),
                },
                input_hash: result.input_hash,
                writer: result.writer,
            };
        }
        result
    }

    async fn run_inner(&self, request: &JobRequest<'_>) -> RunResult {
        let job = request.job;
        let repo_path = request.repo.path.clone();
        let repo =
            match blocking(move || GitRepo::open(&repo_path).map_err(|e| e.to_string())).await {
                Ok(repo) => repo,
                Err(err) => return failed(format!("cannot open the repository: {err}")),
            };
        let storage = self.storage.clone();
        let job_id = job.id;
        let workspace = match blocking(move || {
            Workspace::create(&storage, job_id)
                .map_err(|e| format!("cannot create the workspace: {e}"))
        })
        .await
        {
            Ok(workspace) => workspace,
            Err(err) => return failed(err),
        };
        let delivery = if job.trigger.dry_run {
            Delivery::None
        } else {
            request.pipeline.deliver
        };
        let prepared = match self.prepare(request, &repo, &workspace, delivery).await {
            Ok(prepared) => prepared,
            Err(err) => return failed(err),
        };

        // The `unchanged` skip.
        let pipeline = request.pipeline.clone();
        let work = workspace.work_dir();
        let input_hash = match blocking(move || {
            workspace::input_hash(&pipeline, &work)
                .map_err(|e| format!("cannot hash the inputs: {e}"))
        })
        .await
        {
            Ok(hash) => hash,
            Err(err) => return failed(err),
        };
        if !job.trigger.force
            && self.last_successful_input_hash(job).await.as_deref() == Some(input_hash.as_str())
        {
            return RunResult {
                outcome: Outcome::Skipped(SkipReason::Unchanged),
                input_hash: Some(input_hash),
                writer: None,
            };
        }
        let with_hash = |outcome| RunResult {
            outcome,
            input_hash: Some(input_hash.clone()),
            writer: None,
        };

        let changed_paths = job.trigger.paths.join("\n");
        let source_text = prepared
            .source
            .map(|oid| oid.to_string())
            .unwrap_or_default();
        let env = vec![
            ("ORCHEX_REPO".to_owned(), job.repo.to_string()),
            ("ORCHEX_PIPELINE".to_owned(), job.pipeline.clone()),
            ("ORCHEX_JOB_ID".to_owned(), job.id.to_string()),
            ("ORCHEX_TRIGGER".to_owned(), job.trigger.kind.to_string()),
            ("ORCHEX_CHANGED_PATHS".to_owned(), changed_paths),
            ("ORCHEX_SOURCE_COMMIT".to_owned(), source_text),
        ];
        let steps = request.pipeline.steps.iter().map(|s| (s, false));
        let validations = request.pipeline.validate.iter().map(|s| (s, true));
        for (index, (step, validation)) in steps.chain(validations).enumerate() {
            if request.cancel.is_cancelled() {
                return with_hash(Outcome::Cancelled {
                    reason: "cancelled before the step ran".to_owned(),
                });
            }
            let index = u32::try_from(index).unwrap_or(u32::MAX);
            if let Some(outcome) = self
                .run_step(
                    request,
                    &workspace.work_dir(),
                    &env,
                    index,
                    step,
                    validation,
                )
                .await
            {
                return with_hash(outcome);
            }
        }
        if request.cancel.is_cancelled() {
            return with_hash(Outcome::Cancelled {
                reason: "cancelled before delivery; nothing was delivered".to_owned(),
            });
        }
        let (outcome, writer) = self
            .finish(request, &repo, &workspace, delivery, prepared)
            .await;
        RunResult {
            writer,
            ..with_hash(outcome)
        }
    }

    async fn prepare(
        &self,
        request: &JobRequest<'_>,
        repo: &GitRepo,
        workspace: &Workspace,
        delivery: Delivery,
    ) -> Result<Prepared, String> {
        let repo = repo.clone();
        let work = workspace.work_dir();
        let base = workspace.base_dir();
        let commit = request.job.trigger.commit.clone();
        let branch = request.repo.branch.clone();
        blocking(move || match delivery {
            Delivery::Worktree => {
                let snapshot = repo
                    .snapshot_worktree(&base)
                    .map_err(|e| format!("cannot snapshot the working tree: {e}"))?;
                workspace::copy_tree(&base, &work)
                    .map_err(|e| format!("cannot copy the snapshot into the workspace: {e}"))?;
                let source = repo.head().ok().and_then(|head| head.oid);
                Ok(Prepared {
                    source,
                    snapshot: Some(snapshot),
                })
            }
            Delivery::Branch | Delivery::None => {
                let source = resolve_source(&repo, commit.as_deref(), branch.as_deref())?;
                std::fs::create_dir_all(&work)
                    .map_err(|e| format!("cannot create the workspace: {e}"))?;
                repo.checkout_commit(source, &work)
                    .map_err(|e| format!("cannot check out {source}: {e}"))?;
                Ok(Prepared {
                    source: Some(source),
                    snapshot: None,
                })
            }
        })
        .await
    }

    /// Runs one step; `Some(outcome)` ends the job.
    async fn run_step(
        &self,
        request: &JobRequest<'_>,
        work: &Path,
        env: &[(String, String)],
        index: u32,
        step: &Step,
        validation: bool,
    ) -> Option<Outcome> {
        let job = request.job;
        let timeout = step
            .timeout_secs
            .map_or(request.job_timeout, Duration::from_secs);
        let started = Instant::now();
        let mut result = StepResult {
            name: step.name.clone(),
            validation,
            ..StepResult::default()
        };
        let verdict = match step.action() {
            Some(StepAction::Run(argv)) => {
                let mut step_env = env.to_vec();
                step_env.extend(step.env.iter().map(|(k, v)| (k.clone(), v.clone())));
                let spec = ProcessSpec {
                    argv,
                    cwd: work,
                    env: step_env,
                    timeout,
                    output_limit: STEP_OUTPUT_LIMIT,
                };
                let (pgid_tx, pgid_rx) = tokio::sync::oneshot::channel::<i32>();
                let store = &self.store;
                let job_id = job.id;
                // The group is made durable while the step runs, so that
                // recovery can kill it if the daemon dies meanwhile.
                let record_pgid = async move {
                    let pgid = pgid_rx.await.ok()?;
                    if let Err(err) = store.set_step_pgid(job_id, pgid).await {
                        tracing::warn!(job = %job_id, %err, "cannot record a step's process group");
                    }
                    Some(pgid)
                };
                // ...and in the workspace as soon as the spawn returns, for a
                // crash before that record is durable (a file left empty:
                // recovery looks for the job's processes by ORCHEX_JOB_ID).
                let group_file = workspace::group_file(work, index);
                let (outcome, pgid) = tokio::join!(
                    run_process_recorded(&spec, &group_file, &request.cancel, move |pgid| {
                        if let Ok(pgid) = i32::try_from(pgid) {
                            let _ = pgid_tx.send(pgid);
                        }
                    }),
                    record_pgid
                );
                // The group is dead (killed at the step's end): forget it.
                if let Err(err) = std::fs::remove_file(&group_file)
                    && err.kind() != std::io::ErrorKind::NotFound
                {
                    tracing::warn!(job = %job_id, %err, "cannot remove a step's group record");
                }
                if let Some(pgid) = pgid
                    && let Err(err) = store.clear_step_pgid(job_id, pgid).await
                {
                    tracing::warn!(job = %job_id, %err, "cannot clear a step's process group");
                }
                match outcome {
                    Err(err) => StepVerdict::Failed(err.to_string()),
                    Ok(outcome) => {
                        result.exit_code = outcome.exit_code();
                        result.output_tail = Some(outcome.output_tail.clone());
                        match outcome.termination {
                            Termination::Exited(0) => StepVerdict::Passed,
                            Termination::Exited(code) => {
                                StepVerdict::Failed(format!("exited with code {code}"))
                            }
                            Termination::Signalled(signal) => {
                                StepVerdict::Failed(format!("was killed by signal {signal}"))
                            }
                            Termination::TimedOut => {
                                result.timed_out = true;
                                StepVerdict::TimedOut(timeout)
                            }
                            Termination::Cancelled => StepVerdict::Cancelled,
                        }
                    }
                }
            }
            Some(StepAction::Uses(name, with)) => match self.actions.get(name) {
                None => StepVerdict::Failed(format!(
                    "uses {name:?}, which is not a registered action (registered: {})",
                    self.actions.names().join(", ")
                )),
                Some(action) => {
                    let context = ActionContext {
                        workspace: work,
                        repo: &job.repo,
                        job_id: job.id,
                        pipeline: &job.pipeline,
                        with,
                        cancel: &request.cancel,
                    };
                    let run = action.run(context);
                    tokio::select! {
                        output = run => match output {
                            Ok(text) => {
                                result.exit_code = Some(0);
                                result.output_tail = Some(text);
                                StepVerdict::Passed
                            }
                            Err(message) => {
                                result.output_tail = Some(message.clone());
                                StepVerdict::Failed(message)
                            }
                        },
                        () = tokio::time::sleep(timeout) => {
                            result.timed_out = true;
                            StepVerdict::TimedOut(timeout)
                        },
                        () = request.cancel.cancelled() => StepVerdict::Cancelled,
                    }
                }
            },
            Some(StepAction::Webhook(url)) => {
                let payload = serde_json::json!({
                    "jobId": job.id,
                    "repo": job.repo,
                    "pipeline": job.pipeline,
                    "trigger": job.trigger.kind,
                    "changedPaths": job.trigger.paths,
                    "step": step.name,
                    "with": step.with,
                });
                tokio::select! {
                    posted = crate::webhook::post_json(url, &payload, timeout) => match posted {
                        Ok(status) => {
                            result.exit_code = Some(0);
                            result.output_tail = Some(format!(
                                "POST {}: {status}",
                                orchex_core::config::display_url(url)
                            ));
                            StepVerdict::Passed
                        }
                        Err(message) => {
                            result.output_tail = Some(message.clone());
                            StepVerdict::Failed(message)
                        }
                    },
                    () = request.cancel.cancelled() => StepVerdict::Cancelled,
                }
            }
            None => StepVerdict::Failed(
                "the step sets none or several of run, webhook and uses".to_owned(),
            ),
        };
        result.duration_ms = Some(u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX));
        if let Err(err) = self.store.record_step(job.id, index, result.clone()).await {
            tracing::warn!(job = %job.id, %err, "cannot record a step result");
        }
        let kind_word = if validation { "validation" } else { "step" };
        (request.on_step)();
        self.events.publish(
            Event::new(
                EventKind::JobProgress,
                format!("{kind_word} {} of job {} finished", step.name, job.id),
            )
            .with_repo(job.repo.clone())
            .with_pipeline(job.pipeline.clone())
            .with_job(job.id)
            .with_data(serde_json::json!({
                "step": step.name,
                "index": index,
                "validation": validation,
                "exitCode": result.exit_code,
                "durationMs": result.duration_ms,
                "passed": matches!(verdict, StepVerdict::Passed),
            })),
        );
        match verdict {
            StepVerdict::Passed => None,
            StepVerdict::Failed(reason) => Some(Outcome::Failed {
                error: format!("{kind_word} {:?} {reason}", step.name),
            }),
            StepVerdict::TimedOut(limit) => Some(Outcome::TimedOut {
                error: format!(
                    "{kind_word} {:?} exceeded its timeout of {}s",
                    step.name,
                    limit.as_secs()
                ),
            }),
            StepVerdict::Cancelled => Some(Outcome::Cancelled {
                reason: format!(
                    "cancelled during {kind_word} {:?}; nothing was delivered",
                    step.name
                ),
            }),
        }
    }

    /// Diff, protected paths, impact, delivery; with the repository's write
    /// lock when the job got as far as a delivery that writes.
    async fn finish(
        &self,
        request: &JobRequest<'_>,
        repo: &GitRepo,
        workspace: &Workspace,
        delivery: Delivery,
        prepared: Prepared,
    ) -> (Outcome, Option<WriterGuard>) {
        let diffed = match self
            .diff(request, repo, workspace, delivery, &prepared)
            .await
        {
            Ok(diffed) => diffed,
            Err(err) => return (Outcome::Failed { error: err }, None),
        };
        if diffed.summary.is_empty() {
            return (
                Outcome::Succeeded {
                    changed: false,
                    diff: None,
                    delivery: None,
                    impact: Vec::new(),
                },
                None,
            );
        }
        match workspace::path_globs(request.protected_paths) {
            Ok(protected) => {
                if let Some(path) = diffed.summary.files().find(|path| protected.is_match(path)) {
                    let error = format!(
                        "the result touches the protected path {path}; nothing was delivered"
                    );
                    return (Outcome::Failed { error }, None);
                }
            }
            Err(err) => {
                let error = format!("invalid protectedPaths glob: {err}");
                return (Outcome::Failed { error }, None);
            }
        }
        let impact = self
            .impact(repo, workspace, &prepared, &diffed.summary)
            .await;
        let not_delivered = || Outcome::Cancelled {
            reason: "cancelled before delivery; nothing was delivered".to_owned(),
        };
        if request.cancel.is_cancelled() {
            return (not_delivered(), None);
        }
        let writer = match delivery {
            Delivery::None => None,
            Delivery::Branch | Delivery::Worktree => tokio::select! {
                writer = self.writers.lock(&request.job.repo) => Some(writer),
                () = request.cancel.cancelled() => return (not_delivered(), None),
            },
        };
        let delivered = match delivery {
            Delivery::None => Ok(Some(DeliveryRecord {
                kind: Delivery::None,
                branch: None,
                commit: diffed.commit.map(|oid| oid.to_string()),
                previous: None,
                files: diffed.summary.files().map(str::to_owned).collect(),
                conflicts: Vec::new(),
                written: std::collections::BTreeMap::new(),
            })),
            Delivery::Branch => deliver::deliver_branch(self, request, repo, &diffed).await,
            Delivery::Worktree => {
                deliver::deliver_worktree(self, request, repo, workspace, &prepared, &diffed).await
            }
        };
        let outcome = match delivered {
            Ok(record) => Outcome::Succeeded {
                changed: true,
                diff: Some(diffed.summary),
                delivery: record,
                impact,
            },
            Err(outcome) => outcome,
        };
        (outcome, writer)
    }

    async fn diff(
        &self,
        request: &JobRequest<'_>,
        repo: &GitRepo,
        workspace: &Workspace,
        delivery: Delivery,
        prepared: &Prepared,
    ) -> Result<Diffed, String> {
        let repo = repo.clone();
        let work = workspace.work_dir();
        let base = workspace.base_dir();
        let source = prepared.source;
        let message = format!(
            "{}\n\norchex-job: {}\norchex-pipeline: {}\norchex-trigger: {}",
            request.pipeline.commit_message(),
            request.job.id,
            request.pipeline.name,
            request.job.trigger.kind
        );
        let signature = self.signature.clone();
        blocking(move || match (delivery, source) {
            (Delivery::Worktree, _) => {
                // The repository's ignore rules apply: build output a step
                // leaves behind (`target/`...) is not part of the result.
                let diff = repo
                    .diff_dirs(&base, &work)
                    .map_err(|e| format!("cannot diff the workspace: {e}"))?;
                Ok(Diffed {
                    summary: diff.summary(),
                    changes: diff.changes.iter().map(|c| c.path.clone()).collect(),
                    commit: None,
                })
            }
            // Not delivered: nothing may be written to the repository, not
            // even unreachable objects.
            (Delivery::None, Some(source)) => {
                let summary = repo
                    .diff_dir_against(&work, source)
                    .map_err(|e| format!("cannot diff the result: {e}"))?;
                let changes = summary.files().map(str::to_owned).collect();
                Ok(Diffed {
                    summary,
                    changes,
                    commit: None,
                })
            }
            (Delivery::Branch, Some(source)) => {
                let commit = repo
                    .write_dir_as_commit(&work, source, &message, &signature)
                    .map_err(|e| format!("cannot write the result as a commit: {e}"))?;
                let summary = repo
                    .diff_summary(source, commit)
                    .map_err(|e| format!("cannot diff the result: {e}"))?;
                let changes = summary.files().map(str::to_owned).collect();
                Ok(Diffed {
                    summary,
                    changes,
                    commit: Some(commit),
                })
            }
            (_, None) => Err("no source commit to diff against".to_owned()),
        })
        .await
    }

    async fn impact(
        &self,
        repo: &GitRepo,
        workspace: &Workspace,
        prepared: &Prepared,
        summary: &DiffSummary,
    ) -> Vec<FileImpact> {
        let repo = repo.clone();
        let work = workspace.work_dir();
        let base = workspace.base_dir();
        let source = prepared.source;
        let worktree = prepared.snapshot.is_some();
        let paths: Vec<String> = summary.files().map(str::to_owned).collect();
        blocking(move || {
            Ok(paths
                .into_iter()
                .filter_map(|path| {
                    let before = if worktree {
                        std::fs::read(base.join(&path)).ok()
                    } else {
                        source.and_then(|commit| repo.read_file_at(commit, &path).ok().flatten())
                    };
                    let after = std::fs::read(work.join(&path)).ok();
                    impact::file_impact(&path, before.as_deref(), after.as_deref())
                })
                .collect())
        })
        .await
        .unwrap_or_default()
    }

    /// The input hash of the pipeline's last successful job on the repo.
    async fn last_successful_input_hash(&self, job: &Job) -> Option<String> {
        let filter = orchex_store::JobFilter::new()
            .repo(job.repo.clone())
            .pipeline(job.pipeline.clone())
            .state(orchex_core::JobState::Succeeded);
        let page = self
            .store
            .list_jobs(filter, orchex_store::PageRequest::first().limit(1))
            .await
            .ok()?;
        page.items.into_iter().next().and_then(|job| job.input_hash)
    }
}

enum StepVerdict {
    Passed,
    Failed(String),
    TimedOut(Duration),
    Cancelled,
}

/// What `prepare` found.
#[derive(Debug)]
struct Prepared {
    /// The source commit (branch / none), or HEAD at snapshot time.
    source: Option<Oid>,
    /// The working-tree snapshot (worktree delivery).
    snapshot: Option<orchex_git::Snapshot>,
}

/// The result compared with its source.
#[derive(Debug)]
struct Diffed {
    summary: DiffSummary,
    /// Every changed path.
    changes: Vec<String>,
    /// The result commit (branch / none).
    commit: Option<Oid>,
}

/// The commit a branch or dry-run job starts from: the triggering commit,
/// or the watched branch's tip (HEAD's branch when none is configured).
fn resolve_source(
    repo: &GitRepo,
    commit: Option<&str>,
    branch: Option<&str>,
) -> Result<Oid, String> {
    if let Some(commit) = commit {
        return commit
            .parse::<Oid>()
            .map_err(|e| format!("the trigger's commit {commit:?} is not an object id: {e}"));
    }
    match branch {
        Some(branch) => repo
            .branch_tip(branch)
            .map_err(|e| format!("cannot read branch {branch}: {e}"))?
            .ok_or_else(|| format!("the watched branch {branch} does not exist")),
        None => repo
            .head()
            .map_err(|e| format!("cannot read HEAD: {e}"))?
            .oid
            .ok_or_else(|| "HEAD has no commit yet".to_owned()),
    }
}
