//! Running one step as a child process: its own process group, a timeout,
//! cancellation, and bounded output capture.
//!
//! A step's program may fork. Killing only the direct child would leave its
//! descendants running, so every step starts a new process group and every
//! way a step can end (exit, timeout, cancellation) ends with `SIGKILL` to
//! the whole group: no process outlives its step. The group id is reported
//! as soon as the child is spawned so the caller can persist it and kill a
//! group that survives a daemon crash ([`kill_process_group`]).
//!
//! Reporting after the spawn leaves a window: a daemon killed between the
//! spawn and the moment the caller's record is durable leaves a step
//! running that no record names. [`run_process_recorded`] narrows it to
//! nothing a restart cannot find: it creates the step's group file before
//! the spawn and writes the group id into it as soon as the spawn returns
//! ([`recorded_group`] reads it back). A file left empty means the daemon
//! died inside that window; recovery then finds the step by its
//! environment instead ([`kill_job_processes`]: every step, and every
//! descendant that keeps its environment, carries `ORCHEX_JOB_ID`).
//!
//! The spawn has no hook between fork and exec, so the standard library
//! starts the child with `posix_spawn` (a `vfork`-style clone that shares
//! the daemon's memory until the exec) instead of `fork`, which copies the
//! page tables of the whole daemon for every step: on a 2-core VM, the fork
//! and its TLB shoot-downs were the largest cost of a cheap job.
//!
//! Output (stdout and stderr, interleaved as read) is captured into a tail
//! buffer that keeps only the last `output_limit` bytes, so a step printing
//! gigabytes costs a bounded amount of memory.

use std::collections::VecDeque;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio_util::sync::CancellationToken;

/// How long to keep reading output after the process group was killed; a
/// descendant that escaped the group (`setsid`) may still hold the pipes.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// What to run, where, and within which limits.
#[derive(Debug, Clone)]
pub struct ProcessSpec<'a> {
    /// Program and arguments; `argv[0]` is looked up in `PATH`.
    pub argv: &'a [String],
    /// Working directory.
    pub cwd: &'a Path,
    /// Variables added to the inherited environment.
    pub env: Vec<(String, String)>,
    /// Wall-time limit.
    pub timeout: Duration,
    /// Bytes of output kept (the tail).
    pub output_limit: usize,
}

/// How a step's process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Termination {
    /// It exited with this code.
    Exited(i32),
    /// It was killed by this signal, not by us.
    Signalled(i32),
    /// It exceeded its timeout and its group was killed.
    TimedOut,
    /// It was cancelled and its group was killed.
    Cancelled,
}

/// The result of running a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessOutcome {
    /// How it ended.
    pub termination: Termination,
    /// Wall time from spawn to end.
    pub duration: Duration,
    /// The last `output_limit` bytes of output, as text.
    pub output_tail: String,
    /// Total bytes of output produced (kept or not).
    pub output_bytes: u64,
}

impl ProcessOutcome {
    /// Whether the process exited with code 0.
    pub fn success(&self) -> bool {
        self.termination == Termination::Exited(0)
    }

    /// The exit code, when the process exited on its own.
    pub fn exit_code(&self) -> Option<i32> {
        match self.termination {
            Termination::Exited(code) => Some(code),
            _ => None,
        }
    }
}

/// The process could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// The argv array is empty.
    #[error("the step's command is empty")]
    EmptyArgv,
    /// The OS refused to start it (program not found, not executable...).
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// It started, but its process group could not be recorded (a full
    /// disk...), so it was killed at once.
    #[error("cannot record the process group of {program:?}, so it was stopped: {source}")]
    Record {
        /// The program.
        program: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Sends `SIGKILL` to every process of the group `pgid`. A group that no
/// longer exists is not an error.
pub fn kill_process_group(pgid: u32) -> Result<(), nix::Error> {
    let Ok(raw) = i32::try_from(pgid) else {
        return Err(nix::Error::EINVAL);
    };
    if raw <= 1 {
        // Never signal "every process" (0) or init (1).
        return Err(nix::Error::EINVAL);
    }
    match killpg(Pid::from_raw(raw), Signal::SIGKILL) {
        Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
        Err(err) => Err(err),
    }
}

/// Kills the group `pgid` left by a step of job `job` (crash recovery),
/// only if it is still that step's: some process of the group has
/// `ORCHEX_JOB_ID=<job>` in its environment (every step gets it, and its
/// descendants inherit it). Group ids are recycled, so a group id recorded
/// before a crash (or a reboot) may belong to anyone by now. Returns
/// whether a group was killed.
///
/// Where `/proc` cannot be read the check cannot be made, and the group is
/// killed as recorded.
pub fn kill_job_group(pgid: u32, job: &str) -> Result<bool, nix::Error> {
    match group_runs_job(pgid, job) {
        Some(false) => Ok(false),
        Some(true) | None => kill_process_group(pgid).map(|()| true),
    }
}

/// Whether a process of group `pgid` has `ORCHEX_JOB_ID=<job>` in its
/// environment; `None` when `/proc` cannot be read.
fn group_runs_job(pgid: u32, job: &str) -> Option<bool> {
    // The group first (one small `stat` per process), the environment only
    // of the group's members: recovery runs this per recorded group, and
    // its time is a window in which a crash leaves records to redo.
    let wanted = format!("ORCHEX_JOB_ID={job}");
    for pid in proc_pids()? {
        if process_group(pid) != Some(pgid) {
            continue;
        }
        if has_env(pid, &wanted) {
            return Some(true);
        }
    }
    Some(false)
}

/// The numeric entries of `/proc`; `None` when it cannot be read.
fn proc_pids() -> Option<Vec<u32>> {
    Some(
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
            .collect(),
    )
}

/// The process group of `pid`: field 5 of `stat`, after the parenthesised
/// command (which may itself hold spaces and parentheses).
fn process_group(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(2))
        .and_then(|field| field.parse::<u32>().ok())
}

/// Whether `pid`'s environment holds exactly `wanted` (`KEY=value`).
fn has_env(pid: u32, wanted: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| {
        environ
            .split(|byte| *byte == 0)
            .any(|var| var == wanted.as_bytes())
    })
}

/// A process found in `/proc`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ProcessEntry {
    pid: u32,
    group: u32,
}

/// Every process (other than this one) with `ORCHEX_JOB_ID=<job>` in its
/// environment, with its process group; `None` when `/proc` cannot be read.
fn processes_of_job(job: &str) -> Option<Vec<ProcessEntry>> {
    let wanted = format!("ORCHEX_JOB_ID={job}");
    let own = std::process::id();
    Some(
        proc_pids()?
            .into_iter()
            .filter(|pid| *pid != own && has_env(*pid, &wanted))
            .filter_map(|pid| {
                Some(ProcessEntry {
                    pid,
                    group: process_group(pid)?,
                })
            })
            .collect(),
    )
}

/// Kills every process group that holds a process of job `job` (one with
/// `ORCHEX_JOB_ID=<job>` in its environment), except this daemon's own
/// group: for a step whose group id never reached its record (the daemon
/// died between the spawn and the write). Returns how many groups were
/// signalled; 0 also when `/proc` cannot be read.
pub fn kill_job_processes(job: &str) -> usize {
    let Some(processes) = processes_of_job(job) else {
        return 0;
    };
    let own_group = nix::unistd::getpgrp().as_raw();
    let mut groups: Vec<u32> = processes
        .iter()
        .map(|process| process.group)
        .filter(|group| i32::try_from(*group).is_ok_and(|group| group != own_group))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    let killed = groups
        .iter()
        .filter(|group| kill_process_group(**group).is_ok())
        .count();
    // A process left in the daemon's own group (it never got a group of
    // its own) is killed alone.
    for process in processes {
        if i32::try_from(process.group).is_ok_and(|group| group == own_group)
            && let Ok(pid) = i32::try_from(process.pid)
        {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    killed
}

/// Runs `spec` to completion, timeout or cancellation.
///
/// `on_spawn` receives the process group id right after the spawn, before
/// any output is read.
pub async fn run_process(
    spec: &ProcessSpec<'_>,
    cancel: &CancellationToken,
    on_spawn: impl FnOnce(u32),
) -> Result<ProcessOutcome, SpawnError> {
    run(spec, None, cancel, on_spawn).await
}

/// [`run_process`], with the group id written to `group_file`: the file is
/// created (or truncated) before the spawn and holds the group id as soon
/// as the spawn returned, before `on_spawn` runs. A daemon killed at any
/// moment leaves either the group id (see [`recorded_group`]) or an empty
/// file, which tells recovery to look for the step by its environment
/// ([`kill_job_processes`]). Removing the file after the step is the
/// caller's.
///
/// # Errors
/// As [`run_process`]; and when the group id cannot be written (a full
/// disk), the step's group is killed and the error is returned.
pub async fn run_process_recorded(
    spec: &ProcessSpec<'_>,
    group_file: &Path,
    cancel: &CancellationToken,
    on_spawn: impl FnOnce(u32),
) -> Result<ProcessOutcome, SpawnError> {
    run(spec, Some(group_file), cancel, on_spawn).await
}

/// The process group id a step wrote to `group_file`
/// ([`run_process_recorded`]); `None` when the file is missing, empty (the
/// child never got that far) or not a group id.
pub fn recorded_group(group_file: &Path) -> Option<u32> {
    std::fs::read_to_string(group_file)
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|pgid| *pgid > 1)
}

async fn run(
    spec: &ProcessSpec<'_>,
    group_file: Option<&Path>,
    cancel: &CancellationToken,
    on_spawn: impl FnOnce(u32),
) -> Result<ProcessOutcome, SpawnError> {
    let (program, args) = spec.argv.split_first().ok_or(SpawnError::EmptyArgv)?;
    let mut command = tokio::process::Command::new(program);
    // The daemon's own settings (tokens and secrets may be passed as
    // `ORCHEX_*` variables) are not the step's business: only the variables
    // the job sets for it reach it.
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("ORCHEX_") {
            command.env_remove(key);
        }
    }
    command
        .args(args)
        .current_dir(spec.cwd)
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    // Created before the spawn: an empty file names a step that may have
    // started without its group on record.
    let group_record = match group_file {
        None => None,
        Some(path) => Some(
            std::fs::File::create(path).map_err(|source| SpawnError::Spawn {
                program: program.clone(),
                source,
            })?,
        ),
    };
    let started = Instant::now();
    let mut child = command.spawn().map_err(|source| SpawnError::Spawn {
        program: program.clone(),
        source,
    })?;
    // With `process_group(0)` the group id is the child's pid.
    let pgid = child.id().unwrap_or_default();
    if let Some(mut file) = group_record {
        use std::io::Write as _;
        let written = file.write_all(pgid.to_string().as_bytes());
        if let Err(source) = written {
            // A step nobody could find after a crash must not run.
            let _ = kill_process_group(pgid);
            let _ = child.wait().await;
            return Err(SpawnError::Record {
                program: program.clone(),
                source,
            });
        }
    }
    on_spawn(pgid);

    let tail = Arc::new(Mutex::new(Tail::new(spec.output_limit)));
    let capture = tokio::spawn(capture(
        child.stdout.take(),
        child.stderr.take(),
        Arc::clone(&tail),
    ));

    let termination = tokio::select! {
        status = child.wait() => match status {
            Ok(status) => status_termination(status),
            Err(_) => Termination::Signalled(0),
        },
        () = tokio::time::sleep(spec.timeout) => Termination::TimedOut,
        () = cancel.cancelled() => Termination::Cancelled,
    };
    let duration = started.elapsed();
    // Whatever happened, nothing of the group survives the step.
    if let Err(err) = kill_process_group(pgid) {
        tracing::warn!(pgid, %err, "cannot kill the step's process group");
    }
    let _ = child.wait().await;
    let mut capture = capture;
    if tokio::time::timeout(DRAIN_GRACE, &mut capture)
        .await
        .is_err()
    {
        capture.abort();
    }
    let tail = tail.lock().unwrap_or_else(PoisonError::into_inner);
    Ok(ProcessOutcome {
        termination,
        duration,
        output_tail: tail.text(),
        output_bytes: tail.total,
    })
}

fn status_termination(status: std::process::ExitStatus) -> Termination {
    use std::os::unix::process::ExitStatusExt as _;
    match (status.code(), status.signal()) {
        (Some(code), _) => Termination::Exited(code),
        (None, Some(signal)) => Termination::Signalled(signal),
        (None, None) => Termination::Signalled(0),
    }
}

async fn capture(
    stdout: Option<tokio::process::ChildStdout>,
    stderr: Option<tokio::process::ChildStderr>,
    tail: Arc<Mutex<Tail>>,
) {
    tokio::join!(pump(stdout, &tail), pump(stderr, &tail));
}

async fn pump(reader: Option<impl AsyncRead + Unpin>, tail: &Mutex<Tail>) {
    let Some(mut reader) = reader else { return };
    let mut buffer = vec![0_u8; 16 * 1024];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => tail
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(&buffer[..n]),
        }
    }
}

/// The last `limit` bytes of a stream, and its total length.
#[derive(Debug)]
struct Tail {
    bytes: VecDeque<u8>,
    limit: usize,
    total: u64,
}

impl Tail {
    fn new(limit: usize) -> Self {
        Self {
            bytes: VecDeque::with_capacity(limit.min(64 * 1024)),
            limit,
            total: 0,
        }
    }

    fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let keep = chunk.len().min(self.limit);
        let chunk = &chunk[chunk.len() - keep..];
        let overflow = (self.bytes.len() + chunk.len()).saturating_sub(self.limit);
        self.bytes.drain(..overflow);
        self.bytes.extend(chunk);
    }

    fn text(&self) -> String {
        let (front, back) = self.bytes.as_slices();
        let mut bytes = Vec::with_capacity(self.bytes.len());
        bytes.extend_from_slice(front);
        bytes.extend_from_slice(back);
        // The cut may fall inside a UTF-8 sequence: drop its continuation bytes.
        let start = if self.total > self.bytes.len() as u64 {
            bytes
                .iter()
                .position(|b| (b & 0xC0) != 0x80)
                .unwrap_or(bytes.len())
        } else {
            0
        };
        String::from_utf8_lossy(&bytes[start..]).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn argv(script: &str) -> Vec<String> {
        vec!["sh".into(), "-c".into(), script.into()]
    }

    fn spec<'a>(argv: &'a [String], cwd: &'a Path, timeout: Duration) -> ProcessSpec<'a> {
        ProcessSpec {
            argv,
            cwd,
            env: vec![("ORCHEX_TEST_VAR".into(), "hello".into())],
            timeout,
            output_limit: 1024,
        }
    }

    /// A group id recorded before a crash may name someone else's group by
    /// the time recovery runs: only a group running the job's step (seen
    /// through `ORCHEX_JOB_ID` in a member's environment) is killed.
    #[test]
    fn recovery_kills_a_group_only_while_it_runs_the_job() {
        use std::os::unix::process::CommandExt as _;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .env("ORCHEX_JOB_ID", "job-a")
            .process_group(0)
            .spawn()
            .unwrap();
        let pgid = child.id();
        // Until `sleep` has exec'd, the environment read is the parent's.
        let deadline = Instant::now() + Duration::from_secs(5);
        while group_runs_job(pgid, "job-a") != Some(true) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(kill_job_group(pgid, "job-b"), Ok(false));
        assert!(
            child.try_wait().unwrap().is_none(),
            "another job's group was killed"
        );
        assert_eq!(kill_job_group(pgid, "job-a"), Ok(true));
        let status = child.wait().unwrap();
        assert!(!status.success());
        // A group that is gone is nobody's.
        assert_eq!(kill_job_group(pgid, "job-a"), Ok(false));
    }

    /// Whether `pid` is gone (or only a zombie waiting to be reaped).
    fn is_dead(pid: i32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().next())
                .is_some_and(|state| state == "Z" || state == "X"),
        }
    }

    async fn wait_dead(pid: i32) -> bool {
        for _ in 0..200 {
            if is_dead(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    #[tokio::test]
    async fn captures_exit_code_environment_and_output() {
        let dir = tempfile::tempdir().unwrap();
        let argv = argv("echo out; echo err >&2; echo $ORCHEX_TEST_VAR; pwd; exit 3");
        let mut seen_pgid = 0;
        let outcome = run_process(
            &spec(&argv, dir.path(), Duration::from_secs(30)),
            &CancellationToken::new(),
            |pgid| seen_pgid = pgid,
        )
        .await
        .unwrap();
        assert!(seen_pgid > 1);
        assert_eq!(outcome.termination, Termination::Exited(3));
        assert_eq!(outcome.exit_code(), Some(3));
        assert!(!outcome.success());
        for expected in ["out", "err", "hello"] {
            assert!(
                outcome.output_tail.contains(expected),
                "{}",
                outcome.output_tail
            );
        }
        let canonical = dir.path().canonicalize().unwrap();
        assert!(outcome.output_tail.contains(canonical.to_str().unwrap()));
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let argv = vec!["/nonexistent/program".to_owned()];
        let err = run_process(
            &spec(&argv, dir.path(), Duration::from_secs(5)),
            &CancellationToken::new(),
            |_| {},
        )
        .await
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("cannot start \"/nonexistent/program\""),
            "{err}"
        );
        let empty: Vec<String> = Vec::new();
        assert!(matches!(
            run_process(
                &spec(&empty, dir.path(), Duration::from_secs(5)),
                &CancellationToken::new(),
                |_| {}
            )
            .await,
            Err(SpawnError::EmptyArgv)
        ));
    }

    #[tokio::test]
    async fn timeout_kills_the_whole_group_even_children_ignoring_sigterm() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let script = format!(
            "trap '' TERM; (trap '' TERM; exec sleep 1000) & echo $! > {}; wait",
            pidfile.display()
        );
        let argv = argv(&script);
        let outcome = run_process(
            &spec(&argv, dir.path(), Duration::from_millis(300)),
            &CancellationToken::new(),
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(outcome.termination, Termination::TimedOut);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            wait_dead(pid).await,
            "grandchild {pid} survived the timeout"
        );
    }

    #[tokio::test]
    async fn cancellation_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        let script = format!("sleep 1000 & echo $! > {}; wait", pidfile.display());
        let argv = argv(&script);
        let cancel = CancellationToken::new();
        let canceller = cancel.clone();
        let pidfile_for_cancel = pidfile.clone();
        tokio::spawn(async move {
            while !pidfile_for_cancel.exists() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            canceller.cancel();
        });
        let outcome = run_process(
            &spec(&argv, dir.path(), Duration::from_secs(60)),
            &cancel,
            |_| {},
        )
        .await
        .unwrap();
        assert_eq!(outcome.termination, Termination::Cancelled);
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            wait_dead(pid).await,
            "background child {pid} survived cancellation"
        );
    }

    #[tokio::test]
    async fn background_leftovers_are_killed_after_a_normal_exit() {
        let dir = tempfile::tempdir().unwrap();
        let pidfile = dir.path().join("child.pid");
        // The step exits at once but leaves a daemon-like child behind,
        // holding the output pipe open.
        let script = format!("sleep 1000 & echo $! > {}; exit 0", pidfile.display());
        let argv = argv(&script);
        let outcome = run_process(
            &spec(&argv, dir.path(), Duration::from_secs(60)),
            &CancellationToken::new(),
            |_| {},
        )
        .await
        .unwrap();
        assert!(outcome.success());
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(wait_dead(pid).await, "leftover {pid} survived its step");
    }

    #[tokio::test]
    async fn huge_output_is_bounded_to_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        // About 10 MB of output; only the last KiB is kept.
        let argv = argv(
            "i=0; while [ $i -lt 100 ]; do head -c 100000 /dev/zero | tr '\\0' a; i=$((i+1)); done; echo END",
        );
        let outcome = run_process(
            &spec(&argv, dir.path(), Duration::from_secs(60)),
            &CancellationToken::new(),
            |_| {},
        )
        .await
        .unwrap();
        assert!(outcome.success());
        assert_eq!(outcome.output_bytes, 100 * 100_000 + 4);
        assert_eq!(outcome.output_tail.len(), 1024);
        assert!(outcome.output_tail.ends_with("aaaaEND\n"));
    }

    /// Found by the crash loop (`orchex-reliability crash-loop`): a daemon
    /// killed right after a step's spawn, before the store had the group,
    /// left the step running unknown to recovery. The group file exists
    /// before the spawn and holds the group once the spawn returned.
    #[tokio::test]
    async fn the_group_is_recorded_as_soon_as_the_step_is_spawned() {
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("step-0.pgid");
        std::fs::write(&record, "stale").unwrap();
        let argv = argv("echo $$");
        let mut seen = 0;
        let mut in_file_at_spawn = None;
        let outcome = run_process_recorded(
            &spec(&argv, dir.path(), Duration::from_secs(30)),
            &record,
            &CancellationToken::new(),
            |pgid| {
                seen = pgid;
                in_file_at_spawn = recorded_group(&record);
            },
        )
        .await
        .unwrap();
        assert!(outcome.success(), "{}", outcome.output_tail);
        assert_eq!(
            outcome.output_tail.trim(),
            seen.to_string(),
            "its own group"
        );
        assert_eq!(in_file_at_spawn, Some(seen), "recorded before `on_spawn`");
        assert_eq!(recorded_group(&record), Some(seen));
        assert_eq!(recorded_group(&dir.path().join("missing")), None);
        std::fs::write(&record, "").unwrap();
        assert_eq!(recorded_group(&record), None);
        std::fs::write(&record, "1").unwrap();
        assert_eq!(recorded_group(&record), None, "never init");
    }

    /// A process with this job's id in its environment.
    fn alive(pid: u32) -> bool {
        // A zombie still has a `/proc` entry; its state is `Z`.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z")
        })
    }

    /// What recovery does with a group file left empty: every group that
    /// holds a process carrying the job's id dies, forked children too, and
    /// nothing else.
    #[tokio::test]
    async fn a_step_whose_group_was_never_recorded_is_found_by_its_job_id() {
        use std::os::unix::process::CommandExt as _;
        let job = format!("test-{}", orchex_core::JobId::new());
        let other = format!("test-{}", orchex_core::JobId::new());
        let spawn = |job: &str| {
            std::process::Command::new("sh")
                .args(["-c", "sleep 1000 & echo $!; wait"])
                .env("ORCHEX_JOB_ID", job)
                .stdout(Stdio::piped())
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let mut step = spawn(&job);
        let mut bystander = spawn(&other);
        let mut grandchild = String::new();
        {
            use std::io::BufRead as _;
            std::io::BufReader::new(step.stdout.take().unwrap())
                .read_line(&mut grandchild)
                .unwrap();
        }
        let grandchild: u32 = grandchild.trim().parse().unwrap();
        assert!(alive(grandchild));

        assert_eq!(kill_job_processes(&job), 1, "one group");
        assert!(step.wait().is_ok());
        for _ in 0..200 {
            if !alive(grandchild) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!alive(grandchild), "the forked child died with its group");
        assert!(
            bystander.try_wait().unwrap().is_none(),
            "another job's step runs on"
        );
        assert_eq!(kill_job_processes(&other), 1);
        bystander.wait().unwrap();
        assert_eq!(kill_job_processes(&job), 0, "nothing left");
    }

    #[test]
    fn kill_process_group_refuses_dangerous_ids() {
        assert!(kill_process_group(0).is_err());
        assert!(kill_process_group(1).is_err());
        // A group that does not exist is fine.
        assert!(kill_process_group(4_000_000).is_ok());
    }

    proptest! {
        /// The tail always holds exactly the last `limit` bytes pushed.
        #[test]
        fn tail_keeps_the_last_bytes(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..20), limit in 1_usize..500) {
            let mut tail = Tail::new(limit);
            let mut all = Vec::new();
            for chunk in &chunks {
                tail.push(chunk);
                all.extend_from_slice(chunk);
            }
            let kept: Vec<u8> = tail.bytes.iter().copied().collect();
            let start = all.len().saturating_sub(limit);
            prop_assert_eq!(&kept[..], &all[start..]);
            prop_assert_eq!(tail.total, all.len() as u64);
        }
    }
}
