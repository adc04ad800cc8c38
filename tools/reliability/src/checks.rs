//! Checks shared by both harnesses: the state of the user's git repository,
//! the SQLite database while the daemon is down, processes found under
//! `/proc`, the pid files the steps write, and leftover workspaces.
//!
//! Every check returns the violations it found as sentences; an empty list
//! means the check passed. Errors (`anyhow`) are reserved for the harness
//! itself failing (a `git` that cannot be started, an unreadable file).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context as _, Result, bail};

// === set-up ===

/// Builds `orchexd` and `orchexctl` (through the `orchex-e2e` helpers, with
/// cargo, on first use) before a run's clock starts.
pub(crate) fn build_binaries() -> Result<()> {
    let started = std::time::Instant::now();
    println!("building orchexd and orchexctl (cargo build, if not fresh)...");
    let built = std::panic::catch_unwind(|| {
        orchex_e2e::binary("orchexd");
    });
    if built.is_err() {
        bail!("cannot build orchexd and orchexctl (the cargo output is above)");
    }
    println!("binaries ready in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

// === git ===

/// Runs `git` in `dir` with a fixed identity and no user configuration.
pub(crate) fn git(dir: &Path, args: &[&str]) -> Result<Output> {
    Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_AUTHOR_NAME", "Reliability")
        .env("GIT_AUTHOR_EMAIL", "reliability@example.com")
        .env("GIT_COMMITTER_NAME", "Reliability")
        .env("GIT_COMMITTER_EMAIL", "reliability@example.com")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .with_context(|| format!("cannot run git {args:?}"))
}

/// Runs `git` and returns its trimmed stdout; an error when it fails.
pub(crate) fn git_ok(dir: &Path, args: &[&str]) -> Result<String> {
    let output = git(dir, args)?;
    if !output.status.success() {
        bail!(
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// The commit `refs/heads/<branch>` points at, `None` when it does not exist.
pub(crate) fn branch_value(repo: &Path, branch: &str) -> Result<Option<String>> {
    let reference = format!("refs/heads/{branch}");
    let output = git(repo, &["rev-parse", "--verify", "--quiet", &reference])?;
    if output.status.success() {
        Ok(Some(
            String::from_utf8_lossy(&output.stdout).trim().to_owned(),
        ))
    } else {
        Ok(None)
    }
}

/// The user's repository is whole and untouched: `git fsck --strict`
/// passes, the working tree and index are clean, `HEAD` is still on
/// `main`, `main` is `expected_main` (the harness's last commit), and no
/// stale `*.lock` file is left in `.git` (one would block every later ref
/// update). Call it while nothing writes to the repository.
pub(crate) fn repo_checks(repo: &Path, expected_main: &str) -> Result<Vec<String>> {
    let mut violations = Vec::new();
    let fsck = git(
        repo,
        &["fsck", "--strict", "--no-dangling", "--no-progress"],
    )?;
    if !fsck.status.success() {
        violations.push(format!(
            "git fsck --strict failed: {}{}",
            String::from_utf8_lossy(&fsck.stdout).trim(),
            String::from_utf8_lossy(&fsck.stderr).trim()
        ));
    }
    let status = git_ok(repo, &["status", "--porcelain", "--untracked-files=all"])?;
    if !status.is_empty() {
        violations.push(format!(
            "the working tree is not clean (git status --porcelain): {status}"
        ));
    }
    let head = git_ok(repo, &["symbolic-ref", "HEAD"])?;
    if head != "refs/heads/main" {
        violations.push(format!("HEAD moved to {head}"));
    }
    let main = branch_value(repo, "main")?;
    if main.as_deref() != Some(expected_main) {
        violations.push(format!(
            "main is {main:?}, expected the harness's last commit {expected_main}"
        ));
    }
    let mut locks = Vec::new();
    find_locks(&repo.join(".git"), &mut locks);
    if !locks.is_empty() {
        violations.push(format!("stale lock files in .git: {locks:?}"));
    }
    Ok(violations)
}

fn find_locks(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            // Objects are written as temporary files and renamed; only the
            // ref and index locks matter here.
            Ok(kind) if kind.is_dir() && path.file_name().is_none_or(|name| name != "objects") => {
                find_locks(&path, found);
            }
            Ok(_) if path.extension().is_some_and(|ext| ext == "lock") => found.push(path),
            _ => {}
        }
    }
}

// === SQLite ===

/// What the database holds, read while the daemon is down.
#[derive(Debug, Default)]
pub(crate) struct DbReport {
    /// Violations: integrity check, the queued counter.
    pub(crate) violations: Vec<String>,
    /// Recorded step process groups, with the state of their job.
    pub(crate) pgids: Vec<(i64, String)>,
}

/// `PRAGMA integrity_check` (and `foreign_key_check`) on the database at
/// `path`, opened read-only so that the check changes nothing the next
/// start would see; the `queued_jobs` counter (schema version 2) against
/// the queued rows; and the recorded step process groups.
pub(crate) fn db_checks(path: &Path) -> Result<DbReport> {
    use rusqlite::{Connection, OpenFlags};
    let mut report = DbReport::default();
    if !path.exists() {
        report
            .violations
            .push(format!("the database {} does not exist", path.display()));
        return Ok(report);
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("cannot open {}", path.display()))?;
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |row| row.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    if rows != ["ok"] {
        report
            .violations
            .push(format!("PRAGMA integrity_check: {}", rows.join("; ")));
    }
    let broken: i64 = conn
        .prepare("PRAGMA foreign_key_check")?
        .query_map([], |_| Ok(()))?
        .count()
        .try_into()
        .unwrap_or(i64::MAX);
    if broken > 0 {
        report
            .violations
            .push(format!("PRAGMA foreign_key_check: {broken} rows"));
    }
    let has_counters: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'counters'",
        [],
        |row| row.get(0),
    )?;
    if has_counters {
        let (counter, actual): (Option<i64>, i64) = conn.query_row(
            "SELECT (SELECT value FROM counters WHERE name = 'queued_jobs'), \
                    (SELECT count(*) FROM jobs WHERE state = 'queued')",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )?;
        if counter.is_some_and(|counter| counter != actual) {
            report.violations.push(format!(
                "the queued_jobs counter says {counter:?}, {actual} jobs are queued"
            ));
        }
    }
    report.pgids = conn
        .prepare(
            "SELECT p.pgid, coalesce(j.state, '<no job>') FROM step_pgids p \
             LEFT JOIN jobs j ON j.id = p.job_id ORDER BY p.pgid",
        )?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(report)
}

// === processes ===

/// A process found under `/proc`.
#[derive(Debug, Clone)]
pub(crate) struct ProcInfo {
    /// Its pid.
    pub(crate) pid: u32,
    /// Its working directory (` (deleted)` removed).
    pub(crate) cwd: Option<PathBuf>,
    /// Its command line, arguments joined by spaces.
    pub(crate) cmdline: String,
    /// When it started, in clock ticks since boot.
    pub(crate) start_ticks: Option<u64>,
}

impl std::fmt::Display for ProcInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "pid {} ({}) in {}",
            self.pid,
            self.cmdline,
            self.cwd
                .as_deref()
                .map_or_else(|| "?".to_owned(), |cwd| cwd.display().to_string())
        )
    }
}

/// Whether `pid` is a live process (not a zombie).
pub(crate) fn alive(pid: u32) -> bool {
    orchex_e2e::process_alive(pid)
}

/// When `pid` started, in clock ticks since boot (field 22 of `stat`).
pub(crate) fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold
    // spaces: the first of them is field 3 (the state).
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

fn proc_info(pid: u32) -> Option<ProcInfo> {
    if !alive(pid) {
        return None;
    }
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd"))
        .ok()
        .map(|cwd| {
            let text = cwd.to_string_lossy();
            PathBuf::from(text.strip_suffix(" (deleted)").unwrap_or(&text))
        });
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|bytes| {
            bytes
                .split(|b| *b == 0)
                .filter(|part| !part.is_empty())
                .map(|part| String::from_utf8_lossy(part).into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    Some(ProcInfo {
        pid,
        cwd,
        cmdline,
        start_ticks: start_ticks(pid),
    })
}

/// Every live process whose working directory is inside `dir` or whose
/// command line mentions it (the harness itself excluded).
pub(crate) fn processes_in(dir: &Path) -> Vec<ProcInfo> {
    let me = std::process::id();
    let needle = dir.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<ProcInfo> = entries
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(proc_info)
        .filter(|info| {
            info.cwd.as_deref().is_some_and(|cwd| cwd.starts_with(dir))
                || info.cmdline.contains(&needle)
        })
        .collect();
    found.sort_by_key(|info| info.pid);
    found
}

/// Whether `pid` is alive and is a step process: its environment carries
/// `ORCHEX_JOB_ID` (of `job`, when given). A recycled pid (pid_max may be
/// small) then does not count as a survivor.
pub(crate) fn step_process_alive(pid: u32, job: Option<&str>) -> bool {
    if !alive(pid) {
        return false;
    }
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
        // Exists but unreadable: count it, to be safe.
        return true;
    };
    environ.split(|b| *b == 0).any(|var| {
        let var = String::from_utf8_lossy(var);
        match job {
            Some(job) => var == format!("ORCHEX_JOB_ID={job}"),
            None => var.starts_with("ORCHEX_JOB_ID="),
        }
    })
}

/// A line of a pid file: `<pid>` or `<job id> <pid>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Recorded {
    /// The job, when the step wrote it.
    pub(crate) job: Option<String>,
    /// The pid.
    pub(crate) pid: u32,
}

/// The pids recorded in `file`, in order; a missing file records none.
pub(crate) fn recorded_pids(file: &Path) -> Vec<Recorded> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let first = words.next()?;
            match words.next() {
                Some(pid) => Some(Recorded {
                    job: Some(first.to_owned()),
                    pid: pid.parse().ok()?,
                }),
                None => Some(Recorded {
                    job: None,
                    pid: first.parse().ok()?,
                }),
            }
        })
        .collect()
}

/// Sends `SIGKILL` to `pid` (cleaning up after a violation).
pub(crate) fn kill(pid: u32) {
    if let Ok(raw) = i32::try_from(pid)
        && raw > 1
    {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(raw),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// The entries of `<storage>/workspaces/`.
pub(crate) fn workspace_entries(storage: &Path) -> Vec<String> {
    std::fs::read_dir(storage.join("workspaces"))
        .map(|entries| {
            entries
                .flatten()
                .map(|entry| entry.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn pid_files_with_and_without_job_ids_parse() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pids");
        std::fs::write(&file, "12\njob-a 13\n\nnot-a-pid\njob-b x\n").unwrap();
        assert_eq!(
            recorded_pids(&file),
            vec![
                Recorded { job: None, pid: 12 },
                Recorded {
                    job: Some("job-a".into()),
                    pid: 13
                },
            ]
        );
        assert!(recorded_pids(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn this_process_has_a_start_time_and_no_step_environment() {
        let me = std::process::id();
        assert!(start_ticks(me).is_some());
        assert!(alive(me));
        assert!(!step_process_alive(me, None));
    }
}
