//! The checkpointer thread: copies the WAL back into the database file in
//! the background, so that the writer thread never stops to do it.
//!
//! The writer's automatic checkpoint is raised to a backstop
//! ([`WRITER_AUTOCHECKPOINT_PAGES`]); this thread runs a `PASSIVE`
//! checkpoint (which never blocks the writer) on its own connection after
//! every interval in which something was committed. Should the WAL grow past
//! [`RESTART_AFTER_FRAMES`] anyway (a writer faster than the disk), it runs
//! a `RESTART` checkpoint, which briefly holds the writer back, so that the
//! WAL cannot grow without bound.

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use crate::sqlite::readers::Readers;
use crate::sqlite::writer::Shared;

/// The writer connection's `wal_autocheckpoint`: only if the background
/// checkpointer falls far behind does the writer checkpoint by itself.
pub(crate) const WRITER_AUTOCHECKPOINT_PAGES: u32 = 16_384;

/// WAL frames after which the checkpointer insists (`RESTART`).
const RESTART_AFTER_FRAMES: i64 = 65_536;

/// How often the checkpointer looks for new commits.
const INTERVAL: Duration = Duration::from_millis(250);

/// Stops the checkpointer thread when dropped.
#[derive(Debug)]
pub(crate) struct Checkpointer {
    stop: Arc<(Mutex<bool>, Condvar)>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        let (flag, signal) = &*self.stop;
        *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
        signal.notify_all();
    }
}

impl Checkpointer {
    pub(crate) fn spawn(path: PathBuf, shared: Arc<Shared>) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread_stop = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("orchex-store-checkpoint".into())
            .spawn(move || run(&path, &shared, &thread_stop))?;
        Ok(Self { stop })
    }
}

fn run(path: &std::path::Path, shared: &Shared, stop: &(Mutex<bool>, Condvar)) {
    let conn = match Readers::open_connection(path) {
        Ok(conn) => conn,
        Err(err) => {
            tracing::warn!(error = %err, "no background checkpoints; the writer will checkpoint");
            return;
        }
    };
    // A checkpoint writes the database file: this connection is not a reader.
    if let Err(err) = conn.execute_batch("PRAGMA query_only = OFF;") {
        tracing::warn!(error = %err, "no background checkpoints; the writer will checkpoint");
        return;
    }
    let mut seen = shared.commits.load(Ordering::Relaxed);
    let (flag, signal) = stop;
    loop {
        {
            let guard = flag.lock().unwrap_or_else(PoisonError::into_inner);
            let (guard, _) = signal
                .wait_timeout_while(guard, INTERVAL, |stopped| !*stopped)
                .unwrap_or_else(PoisonError::into_inner);
            if *guard {
                return;
            }
        }
        let commits = shared.commits.load(Ordering::Relaxed);
        if commits == seen {
            continue;
        }
        seen = commits;
        let frames = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| {
            row.get::<_, i64>(1)
        });
        match frames {
            Ok(frames) if frames > RESTART_AFTER_FRAMES => {
                if let Err(err) = conn.query_row("PRAGMA wal_checkpoint(RESTART)", [], |_| Ok(())) {
                    tracing::warn!(error = %err, frames, "WAL restart checkpoint failed");
                }
            }
            Ok(_) => {}
            Err(err) => tracing::warn!(error = %err, "background WAL checkpoint failed"),
        }
    }
}
