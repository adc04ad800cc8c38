//! One daemon per storage directory.
//!
//! A second `orchexd` started on the same `storage.path` would run crash
//! recovery against work that is not interrupted at all: it would kill the
//! first daemon's step process groups, re-queue its running jobs, undo its
//! half-finished deliveries and remove its workspaces. So the daemon takes an
//! exclusive advisory lock on `<storage.path>/orchexd.lock` before it opens
//! anything else there, and holds it until it exits.
//!
//! The lock is `flock(2)` (through `File::try_lock`), not the mere existence
//! of a pid file: the kernel drops it when the process dies, however it dies,
//! so a daemon killed with SIGKILL never leaves a stale lock behind. The file
//! holds the owner's pid only so that the refusal can name it.
//!
//! Several daemons sharing one queue need a store that can arbitrate between
//! them (claims with leases; see `docs/ARCHITECTURE.md`); the SQLite store
//! is for one daemon.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::path::{Path, PathBuf};

/// The lock file's name inside the storage directory.
pub(crate) const LOCK_FILE: &str = "orchexd.lock";

/// Why the storage directory could not be claimed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InstanceError {
    /// Another live process holds the lock.
    #[error(
        "storage.path: {dir} is in use by another orchexd ({holder}); stop that daemon, \
         or give this one a storage.path of its own"
    )]
    InUse {
        /// The storage directory.
        dir: PathBuf,
        /// `pid N`, or a description when the pid could not be read.
        holder: String,
    },
    /// The lock file could not be opened, locked or written.
    #[error("storage.path: cannot lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

/// The claim on a storage directory; released when dropped (or when the
/// process ends).
#[derive(Debug)]
pub(crate) struct InstanceLock {
    // Held for its open file description: closing it releases the lock.
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// Claims `dir` for this process, or says which process has it.
    pub(crate) fn acquire(dir: &Path) -> Result<Self, InstanceError> {
        let path = dir.join(LOCK_FILE);
        let io = |source| InstanceError::Io {
            path: path.clone(),
            source,
        };
        // Not truncated on open: until the lock is ours, the pid in it is
        // the holder's, and the refusal reads it.
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(InstanceError::InUse {
                    dir: dir.to_path_buf(),
                    holder: holder(&mut file),
                });
            }
            Err(TryLockError::Error(err)) => return Err(io(err)),
        }
        file.set_len(0).map_err(io)?;
        file.seek(SeekFrom::Start(0)).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        file.flush().map_err(io)?;
        Ok(Self { _file: file, path })
    }

    /// The lock file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

fn holder(file: &mut File) -> String {
    let mut text = String::new();
    match file.read_to_string(&mut text) {
        Ok(_) => match text.trim().parse::<u32>() {
            Ok(pid) => format!("pid {pid}"),
            // The holder locks before it writes its pid: it may be between
            // the two.
            Err(_) => "a process that is still starting".to_owned(),
        },
        Err(err) => format!("a process whose pid could not be read: {err}"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn a_second_claim_is_refused_with_the_holders_pid_until_the_first_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let first = InstanceLock::acquire(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(first.path()).unwrap(),
            format!("{}\n", std::process::id())
        );
        // flock locks belong to the open file description, so a second open
        // in the same process conflicts like another process would.
        let refused = InstanceLock::acquire(dir.path()).unwrap_err();
        let message = refused.to_string();
        assert!(matches!(refused, InstanceError::InUse { .. }), "{message}");
        assert!(message.contains("storage.path"), "{message}");
        assert!(
            message.contains(&format!("pid {}", std::process::id())),
            "{message}"
        );
        drop(first);
        let again = InstanceLock::acquire(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(again.path()).unwrap(),
            format!("{}\n", std::process::id())
        );
    }

    #[test]
    fn a_stale_pid_in_an_unlocked_file_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(LOCK_FILE), "999999999\n").unwrap();
        let lock = InstanceLock::acquire(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(lock.path()).unwrap(),
            format!("{}\n", std::process::id())
        );
    }

    #[test]
    fn an_unwritable_directory_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("not-there");
        let err = InstanceLock::acquire(&missing).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, InstanceError::Io { .. }), "{message}");
        assert!(message.contains(LOCK_FILE), "{message}");
    }
}
