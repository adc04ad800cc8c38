//! The run state an operator holds (`paused`, `emergencyStopped`), kept in
//! a file of the storage directory so that it survives a restart.
//!
//! An operator who stopped everything expects it to stay stopped until
//! they resume, whether the daemon was restarted by them, by a supervisor
//! after a crash, or by the machine. The file is written atomically (a
//! temporary file, `fsync`, a rename) when the hold starts and removed on
//! `resume`; [`Orchestrator::start`](crate::Orchestrator::start) starts in
//! the held state when the file is there.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::control::RunState;

/// The file's name in the storage directory.
pub(crate) const FILE_NAME: &str = "held-state.json";

fn path(storage: &Path) -> PathBuf {
    storage.join(FILE_NAME)
}

/// Records that `state` is held. Only `Paused` and `EmergencyStopped` are
/// holds; any other state clears the record.
pub(crate) fn save(storage: &Path, state: RunState) -> std::io::Result<()> {
    if !matches!(state, RunState::Paused | RunState::EmergencyStopped) {
        return clear(storage);
    }
    std::fs::create_dir_all(storage)?;
    let target = path(storage);
    let temporary = storage.join(format!(".{FILE_NAME}.tmp"));
    let text = serde_json::json!({
        "state": state.as_str(),
        "since": orchex_core::Timestamp::now(),
    })
    .to_string();
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    std::fs::rename(&temporary, &target)?;
    // The rename itself must survive a power loss too.
    std::fs::File::open(storage)?.sync_all()
}

/// Forgets the hold (after `resume`).
pub(crate) fn clear(storage: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path(storage)) {
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// The held state, if any. A file that cannot be read or understood still
/// says that someone held dispatching: it counts as `Paused`, and the
/// reason is returned for the log.
pub(crate) fn load(storage: &Path) -> (Option<RunState>, Option<String>) {
    let file = path(storage);
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return (None, None),
        Err(err) => {
            return (
                Some(RunState::Paused),
                Some(format!("cannot read {}: {err}", file.display())),
            );
        }
    };
    let state = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|value| value["state"].as_str().map(str::to_owned));
    match state.as_deref() {
        Some("paused") => (Some(RunState::Paused), None),
        Some("emergencyStopped") => (Some(RunState::EmergencyStopped), None),
        _ => (
            Some(RunState::Paused),
            Some(format!(
                "{} does not name a held state; dispatching stays paused",
                file.display()
            )),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hold_is_saved_loaded_and_cleared() {
        let dir = tempfile::tempdir().unwrap();
        let storage = dir.path().join("data");
        assert_eq!(load(&storage), (None, None));
        save(&storage, RunState::EmergencyStopped).unwrap();
        assert_eq!(load(&storage), (Some(RunState::EmergencyStopped), None));
        save(&storage, RunState::Paused).unwrap();
        assert_eq!(load(&storage), (Some(RunState::Paused), None));
        save(&storage, RunState::Running).unwrap();
        assert_eq!(load(&storage), (None, None));
        save(&storage, RunState::Paused).unwrap();
        clear(&storage).unwrap();
        clear(&storage).unwrap();
        assert_eq!(load(&storage), (None, None));
        let names: Vec<_> = std::fs::read_dir(&storage)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert!(names.is_empty(), "no temporary file is left: {names:?}");
    }

    #[test]
    fn a_garbled_file_still_holds_dispatching() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE_NAME), "{not json").unwrap();
        let (state, reason) = load(dir.path());
        assert_eq!(state, Some(RunState::Paused));
        assert!(reason.unwrap().contains(FILE_NAME));
    }
}
