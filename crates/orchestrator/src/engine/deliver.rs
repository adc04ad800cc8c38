//! Delivery of a job's result, its rollback, and the undo of a delivery a
//! crash cut short.
//!
//! Every delivery first makes its intent durable: the delivery record (with
//! the branch value it replaces, or the hash of every file it will write)
//! and backups of what it replaces. Only then does it write. Rollback and
//! crash recovery compare the repository with that record, so they restore
//! exactly what the job replaced and refuse where someone changed it since.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use orchex_core::{Delivery, DeliveryRecord, Job, JobId, JobState, RollbackState, SkipReason};
use orchex_git::{GitError, GitRepo, Oid};
use orchex_store::{Backup, JobFilter, JobPatch, PageRequest, Store};

use super::workspace::file_hash;
use super::{Diffed, Engine, JobRequest, Outcome, Prepared, blocking};

/// The newest succeeded delivery of a pipeline to a branch.
#[derive(Debug)]
struct LastDelivery {
    job: JobId,
    created_at: orchex_core::Timestamp,
    commit: Option<String>,
    /// The branch value that delivery replaced.
    previous: Option<String>,
    /// Its rollback was started and not recorded as finished.
    rollback_in_progress: bool,
}

/// Where a pipeline's branch was last left by orchex: its newest succeeded
/// delivery there (whose commit the branch holds), `None` when there is
/// none (orchex never delivered there, or every delivery was rolled back).
///
/// Rolled-back jobs do not count. A rollback only moves the branch while it
/// is at the job's commit, so it always undoes the newest delivery still in
/// place and restores the one below it; after any run of rollbacks the
/// branch is at the newest delivery still `succeeded`, or absent (the first
/// delivery to a branch always creates it). Taking the rollback's restored
/// value instead was wrong as soon as two deliveries were rolled back in a
/// row: the newest rolled-back job's `previous` is then not where the
/// branch is, and the pipeline's own rollback looked like a human edit.
async fn last_orchex_value(
    store: &dyn Store,
    job: &Job,
    branch: &str,
) -> Result<Option<LastDelivery>, String> {
    let filter = JobFilter::new()
        .repo(job.repo.clone())
        .pipeline(job.pipeline.clone())
        .state(JobState::Succeeded);
    let mut page = PageRequest::first().limit(200);
    loop {
        let jobs = store
            .list_jobs(filter.clone(), page.clone())
            .await
            .map_err(|e| format!("cannot read the job history: {e}"))?;
        for earlier in &jobs.items {
            let Some(record) = &earlier.delivery else {
                continue;
            };
            if record.kind == Delivery::Branch
                && record.branch.as_deref() == Some(branch)
                && earlier.state() == JobState::Succeeded
            {
                return Ok(Some(LastDelivery {
                    job: earlier.id,
                    created_at: earlier.created_at,
                    commit: record.commit.clone(),
                    previous: record.previous.clone(),
                    rollback_in_progress: earlier.rollback == Some(RollbackState::InProgress),
                }));
            }
        }
        match jobs.next_cursor {
            Some(cursor) => page = PageRequest::first().limit(200).after(cursor),
            None => return Ok(None),
        }
    }
}

/// Records the rollback of job `id` as done (see [`deliver_branch`]).
async fn finish_cut_short_rollback(engine: &Engine, id: JobId) -> Result<(), String> {
    let job = engine
        .store
        .transition(
            id,
            JobState::RolledBack,
            JobPatch::new().rollback(RollbackState::RolledBack),
        )
        .await
        .map_err(|e| format!("cannot record the rollback of job {id} that was cut short: {e}"))?;
    tracing::warn!(job = %id, "recorded a rollback cut short after it had moved the branch back");
    engine.events.publish(
        orchex_core::Event::new(
            orchex_core::EventKind::JobRolledBack,
            format!(
                "job {id} rolled back (its rollback had been cut short after moving the branch)"
            ),
        )
        .with_repo(job.repo.clone())
        .with_pipeline(job.pipeline.clone())
        .with_job(job.id),
    );
    Ok(())
}

pub(super) async fn deliver_branch(
    engine: &Engine,
    request: &JobRequest<'_>,
    repo: &GitRepo,
    diffed: &Diffed,
) -> Result<Option<DeliveryRecord>, Outcome> {
    let job = request.job;
    let branch = request.pipeline.delivery_branch();
    let Some(commit) = diffed.commit else {
        return Err(Outcome::Failed {
            error: "no result commit to deliver".to_owned(),
        });
    };
    let tip = {
        let repo = repo.clone();
        let branch = branch.clone();
        blocking(move || {
            repo.branch_tip(&branch)
                .map_err(|e| format!("cannot read branch {branch}: {e}"))
        })
        .await
        .map_err(|error| Outcome::Failed { error })?
    };
    let tip_value = tip.map(|oid| oid.to_string());
    let mut last = last_orchex_value(engine.store.as_ref(), job, &branch)
        .await
        .map_err(|error| Outcome::Failed { error })?;
    // A rollback of the last delivery cut short after its compare-and-swap
    // (its job's record failed, or the daemon died before recovery) left the
    // branch at the value that delivery replaced while the job still reads
    // `succeeded`. A branch rollback is that one swap, so the branch being
    // there means it happened: record it as done, and the delivery below it
    // is where orchex left the branch. (Counting the job as in place made
    // every later delivery a `manuallyEdited` skip until the next start.)
    while let Some(cut_short) = last.as_ref().filter(|last| {
        last.rollback_in_progress && tip_value != last.commit && tip_value == last.previous
    }) {
        finish_cut_short_rollback(engine, cut_short.job)
            .await
            .map_err(|error| Outcome::Failed { error })?;
        last = last_orchex_value(engine.store.as_ref(), job, &branch)
            .await
            .map_err(|error| Outcome::Failed { error })?;
    }
    // Deliveries stack in creation order: a job whose newer sibling has
    // already delivered (they ran side by side, after a restart for
    // instance) holds an older result, and putting it on top would also
    // leave the branch at a commit the records do not point to.
    if let Some(last) = &last
        && (last.created_at, last.job) > (job.created_at, job.id)
    {
        return Err(Outcome::Skipped(SkipReason::Coalesced { into: last.job }));
    }
    let expected = last.and_then(|last| last.commit);
    // Human edits win: orchex only moves a branch that is where it left it,
    // or that was deleted (an operator's reset).
    if tip.is_some() && tip_value != expected {
        return Err(Outcome::Skipped(SkipReason::ManuallyEdited { branch }));
    }
    if request.cancel.is_cancelled() {
        return Err(Outcome::Cancelled {
            reason: "cancelled before delivery; nothing was delivered".to_owned(),
        });
    }
    let record = DeliveryRecord {
        kind: Delivery::Branch,
        branch: Some(branch.clone()),
        commit: Some(commit.to_string()),
        previous: tip.map(|oid| oid.to_string()),
        files: diffed.changes.clone(),
        conflicts: Vec::new(),
        written: BTreeMap::new(),
    };
    record_intent(
        engine.store.as_ref(),
        job,
        &record,
        vec![Backup::Branch {
            name: branch.clone(),
            previous: record.previous.clone(),
        }],
    )
    .await
    .map_err(|error| Outcome::Failed { error })?;
    let repo = repo.clone();
    let message = format!("orchex: deliver {} (job {})", request.pipeline.name, job.id);
    let moved = blocking(move || {
        repo.update_branch(&branch, tip, commit, &message)
            .map_err(|e| match e {
                GitError::RefMoved { .. } => format!("{e}; nothing was delivered"),
                other => format!("cannot update the branch: {other}"),
            })
    })
    .await;
    match moved {
        Ok(()) => Ok(Some(record)),
        Err(error) => Err(Outcome::Failed { error }),
    }
}

pub(super) async fn deliver_worktree(
    engine: &Engine,
    request: &JobRequest<'_>,
    repo: &GitRepo,
    workspace: &super::Workspace,
    prepared: &Prepared,
    diffed: &Diffed,
) -> Result<Option<DeliveryRecord>, Outcome> {
    let job = request.job;
    let Some(snapshot) = prepared.snapshot.clone() else {
        return Err(Outcome::Failed {
            error: "no working-tree snapshot to deliver against".to_owned(),
        });
    };
    let Some(workdir) = repo.workdir().map(Path::to_path_buf) else {
        return Err(Outcome::Failed {
            error: "the repository has no working tree".to_owned(),
        });
    };
    let work = workspace.work_dir();
    let changes = diffed.changes.clone();
    let plan_repo = repo.clone();
    let plan_snapshot = snapshot.clone();
    let planned =
        blocking(move || plan_worktree(&plan_repo, &plan_snapshot, &workdir, &work, &changes))
            .await
            .map_err(|error| Outcome::Failed { error })?;
    if request.cancel.is_cancelled() {
        return Err(Outcome::Cancelled {
            reason: "cancelled before delivery; nothing was delivered".to_owned(),
        });
    }
    let mut record = DeliveryRecord {
        kind: Delivery::Worktree,
        branch: None,
        commit: None,
        previous: None,
        files: planned.writes.iter().map(|w| w.path.clone()).collect(),
        conflicts: planned.conflicts.clone(),
        written: planned
            .writes
            .iter()
            .map(|w| (w.path.clone(), w.new_hash.clone()))
            .collect(),
    };
    if planned.writes.is_empty() {
        return Ok(Some(record));
    }
    let backups = planned.backups.clone();
    record_intent(engine.store.as_ref(), job, &record, planned.backups)
        .await
        .map_err(|error| Outcome::Failed { error })?;
    let workdir = planned.workdir;
    let writes = planned.writes;
    let apply_repo = repo.clone();
    let late_conflicts =
        blocking(move || apply_writes(&apply_repo, &snapshot, &workdir, &writes, &backups))
            .await
            .map_err(|error| Outcome::Failed { error })?;
    if !late_conflicts.is_empty() {
        // The job's final record (written with its outcome) says what was
        // really written; a rollback then checks only those files.
        record.files.retain(|path| !late_conflicts.contains(path));
        record
            .written
            .retain(|path, _| !late_conflicts.contains(path));
        record.conflicts.extend(late_conflicts);
        record.conflicts.sort();
    }
    Ok(Some(record))
}

/// Writes the planned files in order. Each file is checked against the
/// snapshot again right before it is replaced, because the user may have
/// saved it since the plan (the backups and the intent record were written
/// in between): such a file is left alone and returned as a conflict. When
/// a write fails, the files written before it are put back from `backups`
/// and the error says whether all of them could be.
fn apply_writes(
    repo: &GitRepo,
    snapshot: &orchex_git::Snapshot,
    workdir: &Path,
    writes: &[PlannedWrite],
    backups: &[Backup],
) -> Result<Vec<String>, String> {
    let mut late_conflicts = Vec::new();
    let mut written: Vec<&str> = Vec::new();
    for write in writes {
        let unchanged = !linked_parent(workdir, &write.path).unwrap_or(true)
            && repo
                .fingerprint_worktree_file(&write.path)
                .is_ok_and(|current| snapshot.is_unchanged(&write.path, current.as_ref()));
        if !unchanged {
            late_conflicts.push(write.path.clone());
            continue;
        }
        if let Err(e) = apply_file(workdir, &write.path, write.source.as_deref()) {
            let error = format!("cannot write {}: {e}", write.path);
            return Err(put_back(workdir, &written, backups, &error));
        }
        written.push(&write.path);
    }
    Ok(late_conflicts)
}

/// Restores `written` (newest first) from `backups` after a delivery failed
/// with `error`; returns the job's error, which says what is left.
fn put_back(workdir: &Path, written: &[&str], backups: &[Backup], error: &str) -> String {
    let mut left = Vec::new();
    for path in written.iter().rev() {
        let backup = backups.iter().find_map(|backup| match backup {
            Backup::File {
                path: backed_up,
                previous,
                mode,
            } if backed_up == path => Some((previous.as_deref(), *mode)),
            _ => None,
        });
        let restored = match backup {
            Some((previous, mode)) => {
                restore_file(workdir, path, previous, mode).map_err(|e| e.to_string())
            }
            None => Err("no backup".to_owned()),
        };
        if let Err(e) = restored {
            left.push(format!("{path} ({e})"));
        }
    }
    if left.is_empty() {
        format!(
            "{error}; the {} file(s) written before it were put back, so nothing was delivered",
            written.len()
        )
    } else {
        format!(
            "{error}; putting back what was written failed for {}: these hold this job's output, \
             and their previous content is kept in the job's backups",
            left.join(", ")
        )
    }
}

/// Whether a directory on the way from `workdir` to `path` is a symbolic
/// link. Nothing is written through one: it may lead out of the tree.
fn linked_parent(workdir: &Path, path: &str) -> std::io::Result<bool> {
    let mut current = workdir.to_path_buf();
    let Some(parent) = Path::new(path).parent() else {
        return Ok(false);
    };
    for component in parent.components() {
        current.push(component);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => return Ok(true),
            Ok(_) => {}
            // What does not exist yet is created as a plain directory.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            Err(err) => return Err(err),
        }
    }
    Ok(false)
}

fn refuse_linked_parent(workdir: &Path, path: &str) -> std::io::Result<()> {
    if linked_parent(workdir, path)? {
        return Err(std::io::Error::other(
            "a directory on its path is a symbolic link, and nothing is written through one",
        ));
    }
    Ok(())
}

#[derive(Debug)]
struct PlannedWrite {
    path: String,
    /// The file in the workspace to copy, `None` to delete.
    source: Option<PathBuf>,
    new_hash: Option<String>,
}

#[derive(Debug)]
struct WorktreePlan {
    workdir: PathBuf,
    writes: Vec<PlannedWrite>,
    backups: Vec<Backup>,
    conflicts: Vec<String>,
}

fn plan_worktree(
    repo: &GitRepo,
    snapshot: &orchex_git::Snapshot,
    workdir: &Path,
    work: &Path,
    changes: &[String],
) -> Result<WorktreePlan, String> {
    let mut plan = WorktreePlan {
        workdir: workdir.to_path_buf(),
        writes: Vec::new(),
        backups: Vec::new(),
        conflicts: Vec::new(),
    };
    for path in changes {
        // A directory the user replaced by a link since the snapshot.
        if linked_parent(workdir, path)
            .map_err(|e| format!("cannot read {path} in the working tree: {e}"))?
        {
            plan.conflicts.push(path.clone());
            continue;
        }
        let current = repo
            .fingerprint_worktree_file(path)
            .map_err(|e| format!("cannot read {path} in the working tree: {e}"))?;
        if !snapshot.is_unchanged(path, current.as_ref()) {
            plan.conflicts.push(path.clone());
            continue;
        }
        let user_file = workdir.join(path);
        let previous = match std::fs::symlink_metadata(&user_file) {
            Ok(meta) if meta.file_type().is_symlink() => Some((
                std::fs::read_link(&user_file)
                    .map_err(|e| format!("cannot back up {path}: {e}"))?
                    .into_os_string()
                    .into_encoded_bytes(),
                Some(0o120_000),
            )),
            Ok(meta) => Some((
                std::fs::read(&user_file).map_err(|e| format!("cannot back up {path}: {e}"))?,
                Some(meta.permissions().mode()),
            )),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(err) => return Err(format!("cannot back up {path}: {err}")),
        };
        let (previous, mode) = previous.map_or((None, None), |(bytes, mode)| (Some(bytes), mode));
        plan.backups.push(Backup::File {
            path: path.clone(),
            previous,
            mode,
        });
        let source = work.join(path);
        let new_hash = file_hash(&source).map_err(|e| format!("cannot hash {path}: {e}"))?;
        plan.writes.push(PlannedWrite {
            path: path.clone(),
            source: new_hash.is_some().then_some(source),
            new_hash,
        });
    }
    Ok(plan)
}

/// Makes a delivery's intent durable before anything is written.
async fn record_intent(
    store: &dyn Store,
    job: &Job,
    record: &DeliveryRecord,
    backups: Vec<Backup>,
) -> Result<(), String> {
    store
        .put_backups(job.id, backups)
        .await
        .map_err(|e| format!("cannot store the backups; nothing was delivered: {e}"))?;
    store
        .update_job(
            job.id,
            JobPatch::new()
                .delivery(record.clone())
                .rollback(RollbackState::Available),
        )
        .await
        .map_err(|e| format!("cannot record the delivery; nothing was delivered: {e}"))?;
    Ok(())
}

/// Replaces `workdir/path` with `source` (or deletes it), atomically per
/// file: a temporary file in the same directory, flushed to disk, then a
/// rename.
fn apply_file(workdir: &Path, path: &str, source: Option<&Path>) -> std::io::Result<()> {
    refuse_linked_parent(workdir, path)?;
    let target = workdir.join(path);
    let Some(source) = source else {
        return remove_if_present(&target);
    };
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let meta = std::fs::symlink_metadata(source)?;
    if meta.file_type().is_symlink() {
        let link = std::fs::read_link(source)?;
        return replace_with(&target, |temporary| {
            std::os::unix::fs::symlink(&link, temporary)
        });
    }
    replace_with(&target, |temporary| {
        let mut from = std::fs::File::open(source)?;
        let mut to = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(temporary)?;
        std::io::copy(&mut from, &mut to)?;
        to.set_permissions(std::fs::Permissions::from_mode(
            meta.permissions().mode() & 0o7777,
        ))?;
        to.sync_all()
    })
}

fn remove_if_present(target: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(target) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Creates the new version of `target` under a fresh temporary name beside
/// it with `create`, then renames it over `target`. The temporary file is
/// removed when anything fails, so a full disk leaves nothing behind.
fn replace_with(
    target: &Path,
    create: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let temporary = temporary_path(target);
    let result = create(&temporary).and_then(|()| std::fs::rename(&temporary, target));
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result
}

/// Whether the file at `target` has other permission bits than the backup's
/// `mode` (a regular file's; a link has none of its own).
fn mode_differs(target: &Path, mode: Option<u32>) -> bool {
    let Some(mode) = mode.filter(|mode| *mode != 0o120_000) else {
        return false;
    };
    std::fs::symlink_metadata(target).is_ok_and(|meta| {
        meta.file_type().is_file() && meta.permissions().mode() & 0o7777 != mode & 0o7777
    })
}

/// Removes the temporary files a crash left beside `workdir/path` (a write
/// or a restore that never reached its rename). Returns how many.
fn remove_temporaries(workdir: &Path, path: &str) -> usize {
    if linked_parent(workdir, path).unwrap_or(true) {
        return 0;
    }
    let target = workdir.join(path);
    let (Some(dir), Some(name)) = (target.parent(), target.file_name()) else {
        return 0;
    };
    let prefix = format!(".{}.orchex-tmp-", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .filter(|entry| entry.file_type().is_ok_and(|kind| !kind.is_dir()))
        .filter(|entry| std::fs::remove_file(entry.path()).is_ok())
        .count()
}

/// A name beside `target` that nothing else uses: the pid alone repeats
/// across restarts (pid 1 in a container), and a leftover of an earlier
/// run must never be written through.
fn temporary_path(target: &Path) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = target
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.subsec_nanos());
    target.with_file_name(format!(
        ".{name}.orchex-tmp-{}-{}-{nanos:x}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

fn restore_file(
    workdir: &Path,
    path: &str,
    previous: Option<&[u8]>,
    mode: Option<u32>,
) -> std::io::Result<()> {
    refuse_linked_parent(workdir, path)?;
    let target = workdir.join(path);
    let Some(bytes) = previous else {
        return remove_if_present(&target);
    };
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if mode == Some(0o120_000) {
        let link = std::ffi::OsStr::from_bytes(bytes);
        return replace_with(&target, |temporary| {
            std::os::unix::fs::symlink(link, temporary)
        });
    }
    replace_with(&target, |temporary| {
        use std::io::Write as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(temporary)?;
        file.write_all(bytes)?;
        if let Some(mode) = mode {
            file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
        }
        file.sync_all()
    })
}

use std::os::unix::ffi::OsStrExt as _;

/// Why a rollback was refused or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum RollbackError {
    /// What the job wrote has changed since (HTTP 409).
    #[error("{0}")]
    Conflict(String),
    /// The job has nothing to roll back (HTTP 409).
    #[error("{0}")]
    NotDelivered(String),
    /// The repository is in a state that forbids the rollback for now (the
    /// branch is checked out in a working tree), and nothing was restored
    /// (HTTP 409): the intent is withdrawn, and a later retry may succeed.
    #[error("{0}")]
    Blocked(String),
    /// A check or a read failed before anything was restored (HTTP 500):
    /// the rollback did not start, so its intent is withdrawn.
    #[error("{0}")]
    Refused(String),
    /// Writing failed part way (HTTP 500): the rollback stays in progress,
    /// for a retry or the next start's recovery to finish.
    #[error("{0}")]
    Failed(String),
}

/// Restores exactly what `job` replaced, refusing where it changed since.
///
/// The intent ([`RollbackState::InProgress`]) is made durable before
/// anything is restored, so that a stop in the middle is finished by the
/// next start's recovery instead of leaving a `succeeded` job whose result
/// is gone. A rollback already in progress resumes: what it has restored
/// already counts as done, not as a change made since.
pub(crate) async fn rollback(
    store: &dyn Store,
    job: &Job,
    repo_path: &Path,
) -> Result<(), RollbackError> {
    if job.state() != JobState::Succeeded {
        return Err(RollbackError::NotDelivered(format!(
            "job {} is {}; only a succeeded job that delivered something can be rolled back",
            job.id,
            job.state()
        )));
    }
    let Some(record) = job.delivery.clone() else {
        return Err(RollbackError::NotDelivered(format!(
            "job {} delivered nothing",
            job.id
        )));
    };
    if record.kind == Delivery::None {
        return Err(RollbackError::NotDelivered(format!(
            "job {} was a dry run; nothing was written",
            job.id
        )));
    }
    let resuming = job.rollback == Some(RollbackState::InProgress);
    if !resuming {
        store
            .update_job(job.id, JobPatch::new().rollback(RollbackState::InProgress))
            .await
            .map_err(|e| {
                RollbackError::Failed(format!(
                    "cannot record the rollback; nothing was rolled back: {e}"
                ))
            })?;
    }
    let repo_path = repo_path.to_path_buf();
    let message = format!("orchex: roll back job {}", job.id);
    if record.kind == Delivery::Branch {
        let (Some(branch), Some(commit)) = (record.branch.clone(), record.commit.clone()) else {
            return Err(RollbackError::Refused(
                "the delivery record has no branch or commit".to_owned(),
            ));
        };
        // The branch moves in one compare-and-swap, so every failure here
        // left it where it was.
        return tokio::task::spawn_blocking(move || {
            let repo =
                GitRepo::open(&repo_path).map_err(|e| RollbackError::Refused(e.to_string()))?;
            let wrote: Oid = commit
                .parse()
                .map_err(|e| RollbackError::Refused(format!("{e}")))?;
            let previous = record
                .previous
                .as_deref()
                .map(str::parse::<Oid>)
                .transpose()
                .map_err(|e| RollbackError::Refused(format!("{e}")))?;
            match repo.rollback_branch(&branch, wrote, previous, &message) {
                Ok(()) => Ok(()),
                // The interrupted rollback had moved the branch already.
                Err(GitError::Superseded { actual, .. }) if resuming && actual == previous => {
                    Ok(())
                }
                Err(e @ GitError::Superseded { .. }) => Err(RollbackError::Conflict(e.to_string())),
                Err(e @ GitError::BranchCheckedOut { .. }) => Err(RollbackError::Blocked(format!(
                    "{e}; nothing was rolled back"
                ))),
                Err(other) => Err(RollbackError::Refused(other.to_string())),
            }
        })
        .await
        .map_err(|e| RollbackError::Failed(e.to_string()))?;
    }
    let backups = store
        .backups(job.id)
        .await
        .map_err(|e| RollbackError::Refused(format!("cannot read the backups: {e}")))?;
    tokio::task::spawn_blocking(move || {
        let repo = GitRepo::open(&repo_path).map_err(|e| RollbackError::Refused(e.to_string()))?;
        let workdir = repo.workdir().map(Path::to_path_buf).ok_or_else(|| {
            RollbackError::Refused("the repository has no working tree".to_owned())
        })?;
        let replaced: BTreeMap<&str, (Option<&[u8]>, Option<u32>)> = backups
            .iter()
            .filter_map(|backup| match backup {
                Backup::File {
                    path,
                    previous,
                    mode,
                } => Some((path.as_str(), (previous.as_deref(), *mode))),
                _ => None,
            })
            .collect();
        // A rollback cut short may have left temporary files behind.
        for path in record.written.keys() {
            remove_temporaries(&workdir, path);
        }
        let mut to_restore = Vec::new();
        let mut changed_since = Vec::new();
        for (path, written) in &record.written {
            if linked_parent(&workdir, path)
                .map_err(|e| RollbackError::Refused(format!("cannot read {path}: {e}")))?
            {
                changed_since.push(path.clone());
                continue;
            }
            let current = file_hash(&workdir.join(path))
                .map_err(|e| RollbackError::Refused(format!("cannot read {path}: {e}")))?;
            let Some(&(previous, mode)) = replaced.get(path.as_str()) else {
                return Err(RollbackError::Refused(format!(
                    "no backup of {path}, so nothing was rolled back"
                )));
            };
            if &current == written {
                to_restore.push((path, written, previous, mode));
            } else if !(resuming && current == previous.map(super::workspace::sha256_hex)) {
                changed_since.push(path.clone());
            }
        }
        if !changed_since.is_empty() {
            return Err(RollbackError::Conflict(format!(
                "these files changed since the job wrote them, so nothing was rolled back: {}",
                changed_since.join(", ")
            )));
        }
        for (path, written, previous, mode) in to_restore {
            // Checked again right before it is replaced: an edit saved
            // since the check above is not overwritten. What is restored
            // already counts as done when the rollback is retried.
            let current = file_hash(&workdir.join(path))
                .map_err(|e| RollbackError::Failed(format!("cannot read {path}: {e}")))?;
            if &current != written {
                return Err(RollbackError::Failed(format!(
                    "{path} changed while the rollback ran, so it was left as it is; \
                     the rollback stays in progress, and a retry reports it"
                )));
            }
            restore_file(&workdir, path, previous, mode)
                .map_err(|e| RollbackError::Failed(format!("cannot restore {path}: {e}")))?;
        }
        Ok(())
    })
    .await
    .map_err(|e| RollbackError::Failed(e.to_string()))?
}

/// What undoing an interrupted delivery did.
#[derive(Debug, Default)]
pub(crate) struct Undone {
    /// Files or branches restored.
    pub(crate) restored: usize,
    /// Why the undo is incomplete, naming what could not be restored.
    pub(crate) incomplete: Option<String>,
}

impl Undone {
    fn complete(restored: usize) -> Self {
        Self {
            restored,
            incomplete: None,
        }
    }
}

/// Undoes the delivery of a job that a crash interrupted: what it wrote is
/// put back where it still holds what the job wrote. Every file is tried,
/// whatever failed before it.
pub(crate) async fn undo_interrupted_delivery(
    store: &dyn Store,
    job: &Job,
    repo_path: &Path,
) -> Undone {
    let incomplete = |message: String| Undone {
        restored: 0,
        incomplete: Some(message),
    };
    let Some(record) = job.delivery.clone() else {
        return Undone::default();
    };
    let repo_path = repo_path.to_path_buf();
    let backups = match store.backups(job.id).await {
        Ok(backups) => backups,
        Err(e) => return incomplete(format!("cannot read the backups: {e}")),
    };
    let job_id = job.id;
    let undone = blocking(move || {
        let repo = GitRepo::open(&repo_path).map_err(|e| e.to_string())?;
        match record.kind {
            Delivery::None => Ok(Undone::complete(0)),
            Delivery::Branch => {
                let (Some(branch), Some(commit)) = (record.branch, record.commit) else {
                    return Ok(Undone::complete(0));
                };
                let wrote: Oid = commit.parse().map_err(|e| format!("{e}"))?;
                let previous = record
                    .previous
                    .as_deref()
                    .map(str::parse::<Oid>)
                    .transpose()
                    .map_err(|e| format!("{e}"))?;
                match repo.branch_tip(&branch).map_err(|e| e.to_string())? {
                    Some(tip) if tip == wrote => {
                        let message = format!("orchex: undo interrupted delivery of job {job_id}");
                        repo.rollback_branch(&branch, wrote, previous, &message)
                            .map_err(|e| e.to_string())?;
                        Ok(Undone::complete(1))
                    }
                    _ => Ok(Undone::complete(0)),
                }
            }
            Delivery::Worktree => {
                let Some(workdir) = repo.workdir().map(Path::to_path_buf) else {
                    return Ok(Undone::complete(0));
                };
                for path in &record.files {
                    remove_temporaries(&workdir, path);
                }
                let mut restored = 0;
                // Every file is tried, whatever failed before it: what can
                // be put back is.
                let mut failures = Vec::new();
                for backup in &backups {
                    let Backup::File {
                        path,
                        previous,
                        mode,
                    } = backup
                    else {
                        continue;
                    };
                    let Some(written) = record.written.get(path) else {
                        continue;
                    };
                    // A directory replaced by a link since: the user's.
                    if linked_parent(&workdir, path).unwrap_or(true) {
                        continue;
                    }
                    let current = match file_hash(&workdir.join(path)) {
                        Ok(current) => current,
                        Err(e) => {
                            failures.push(format!("{path} (cannot read it: {e})"));
                            continue;
                        }
                    };
                    let previous_hash = previous.as_deref().map(super::workspace::sha256_hex);
                    // Only files that hold what the job wrote, and were
                    // actually changed by it (content, or only the mode:
                    // a `chmod +x`), are put back.
                    if &current == written
                        && (current != previous_hash || mode_differs(&workdir.join(path), *mode))
                    {
                        match restore_file(&workdir, path, previous.as_deref(), *mode) {
                            Ok(()) => restored += 1,
                            Err(e) => failures.push(format!("{path} ({e})")),
                        }
                    }
                }
                Ok(Undone {
                    restored,
                    incomplete: (!failures.is_empty()).then(|| {
                        format!(
                            "{restored} file(s) put back; these could not be: {}",
                            failures.join(", ")
                        )
                    }),
                })
            }
        }
    })
    .await;
    undone.unwrap_or_else(incomplete)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::process::Command;

    use super::*;

    fn git(dir: &Path, args: &[&str]) {
        let output = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .output()
            .unwrap();
        assert!(output.status.success(), "git {args:?}: {output:?}");
    }

    /// A repository with `a.txt` and `b.txt` committed, its working-tree
    /// snapshot, and a workspace holding the job's new `a.txt` and `b.txt`.
    struct Setup {
        _tmp: tempfile::TempDir,
        workdir: PathBuf,
        work: PathBuf,
        repo: GitRepo,
        snapshot: orchex_git::Snapshot,
    }

    fn setup() -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(tmp.path()).unwrap();
        let workdir = root.join("repo");
        std::fs::create_dir(&workdir).unwrap();
        git(&workdir, &["init", "-q"]);
        std::fs::write(workdir.join("a.txt"), "a0\n").unwrap();
        std::fs::write(workdir.join("b.txt"), "b0\n").unwrap();
        git(&workdir, &["add", "-A"]);
        git(
            &workdir,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                "init",
            ],
        );
        let repo = GitRepo::open(&workdir).unwrap();
        let snapshot = repo.snapshot_worktree(&root.join("snapshot")).unwrap();
        let work = root.join("work");
        std::fs::create_dir(&work).unwrap();
        std::fs::write(work.join("a.txt"), "a1\n").unwrap();
        std::fs::write(work.join("b.txt"), "b1\n").unwrap();
        Setup {
            _tmp: tmp,
            workdir,
            work,
            repo,
            snapshot,
        }
    }

    fn write_of(s: &Setup, path: &str, source: &str) -> PlannedWrite {
        PlannedWrite {
            path: path.to_owned(),
            source: Some(s.work.join(source)),
            new_hash: None,
        }
    }

    fn backup(path: &str, previous: &str) -> Backup {
        Backup::File {
            path: path.to_owned(),
            previous: Some(previous.as_bytes().to_vec()),
            mode: Some(0o100_644),
        }
    }

    fn read(s: &Setup, path: &str) -> String {
        std::fs::read_to_string(s.workdir.join(path)).unwrap()
    }

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.contains("orchex-tmp"))
            .collect()
    }

    #[test]
    fn a_write_that_fails_part_way_puts_back_what_was_written_before_it() {
        let s = setup();
        // The second source vanished: its copy fails after `a.txt` is in.
        let writes = [
            write_of(&s, "a.txt", "a.txt"),
            write_of(&s, "b.txt", "gone"),
        ];
        let backups = [backup("a.txt", "a0\n"), backup("b.txt", "b0\n")];
        let error = apply_writes(&s.repo, &s.snapshot, &s.workdir, &writes, &backups).unwrap_err();
        assert!(error.contains("cannot write b.txt"), "{error}");
        assert!(error.contains("were put back"), "{error}");
        assert_eq!(read(&s, "a.txt"), "a0\n");
        assert_eq!(read(&s, "b.txt"), "b0\n");
        assert_eq!(leftovers(&s.workdir), Vec::<String>::new());
    }

    #[test]
    fn a_file_saved_after_the_plan_is_not_overwritten() {
        let s = setup();
        // The user's editor saves b.txt between the plan and its write.
        std::fs::write(s.workdir.join("b.txt"), "the user's edit\n").unwrap();
        let writes = [
            write_of(&s, "a.txt", "a.txt"),
            write_of(&s, "b.txt", "b.txt"),
        ];
        let backups = [backup("a.txt", "a0\n"), backup("b.txt", "b0\n")];
        let late = apply_writes(&s.repo, &s.snapshot, &s.workdir, &writes, &backups).unwrap();
        assert_eq!(late, ["b.txt"]);
        assert_eq!(read(&s, "a.txt"), "a1\n");
        assert_eq!(read(&s, "b.txt"), "the user's edit\n");
    }

    #[test]
    fn nothing_is_written_through_a_directory_replaced_by_a_link() {
        let s = setup();
        let outside = s.workdir.parent().unwrap().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, s.workdir.join("gen")).unwrap();
        std::fs::create_dir(s.work.join("gen")).unwrap();
        std::fs::write(s.work.join("gen/api.rs"), "generated\n").unwrap();

        let plan = plan_worktree(
            &s.repo,
            &s.snapshot,
            &s.workdir,
            &s.work,
            &["gen/api.rs".to_owned()],
        )
        .unwrap();
        assert_eq!(plan.conflicts, ["gen/api.rs"]);
        assert!(plan.writes.is_empty());
        // And the last line of defence, should a link appear even later.
        let error = apply_file(&s.workdir, "gen/api.rs", Some(&s.work.join("gen/api.rs")));
        assert!(error.is_err());
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
    }

    #[test]
    fn the_temporary_files_a_crash_left_are_removed_and_nothing_else() {
        let s = setup();
        std::fs::write(s.workdir.join(".a.txt.orchex-tmp-7-0-1f"), "half").unwrap();
        std::os::unix::fs::symlink("/", s.workdir.join(".a.txt.orchex-tmp-7-1-2f")).unwrap();
        std::fs::write(s.workdir.join(".a.txt.swp"), "the user's").unwrap();
        std::fs::write(s.workdir.join(".b.txt.orchex-tmp-7-2-3f"), "another file's").unwrap();
        assert_eq!(remove_temporaries(&s.workdir, "a.txt"), 2);
        assert!(s.workdir.join(".a.txt.swp").exists());
        assert_eq!(leftovers(&s.workdir), [".b.txt.orchex-tmp-7-2-3f"]);
        assert_eq!(read(&s, "a.txt"), "a0\n");
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file_and_names_are_never_reused() {
        let s = setup();
        let target = s.workdir.join("a.txt");
        let first = temporary_path(&target);
        assert_ne!(first, temporary_path(&target));
        let failed = replace_with(&target, |temporary| {
            std::fs::write(temporary, "half")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(failed.is_err());
        assert_eq!(read(&s, "a.txt"), "a0\n");
        assert_eq!(leftovers(&s.workdir), Vec::<String>::new());
    }
}
