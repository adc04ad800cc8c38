//! The reader pool: a few read-only connections, used on blocking threads.
//!
//! In WAL mode readers never block the writer nor each other. A semaphore
//! bounds how many queries run at once (and so how many connections exist);
//! each query runs on tokio's blocking pool, never on a runtime thread.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use crate::error::{Result, StoreError};
use crate::sqlite::schema;

#[derive(Debug)]
pub(crate) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
    permits: Arc<Semaphore>,
    size: usize,
}

impl Readers {
    pub(crate) fn new(path: &Path, size: usize) -> Self {
        Self {
            path: path.to_owned(),
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size.max(1))),
            size: size.max(1),
        }
    }

    /// Opens a read-only connection to the store's file.
    pub(crate) fn open_connection(path: &Path) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX
                | OpenFlags::SQLITE_OPEN_URI,
        )
        .map_err(|err| StoreError::Open {
            path: path.to_owned(),
            source: Arc::new(err),
        })?;
        schema::configure_common(&conn)?;
        conn.execute_batch("PRAGMA query_only = ON;")
            .map_err(|err| StoreError::sqlite("make a reader read-only", err))?;
        Ok(conn)
    }

    fn take(&self) -> Result<Connection> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        match idle {
            Some(conn) => Ok(conn),
            None => Self::open_connection(&self.path),
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < self.size {
            idle.push(conn);
        }
    }

    /// Runs `query` on a pooled connection on the blocking pool.
    pub(crate) async fn read<T, F>(self: &Arc<Self>, query: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Closed)?;
        let readers = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let conn = readers.take()?;
            let result = query(&conn);
            readers.give_back(conn);
            drop(permit);
            result
        })
        .await
        .map_err(|err| StoreError::Task {
            detail: err.to_string(),
        })?
    }

    /// Runs `query` on a pooled (or, when none is idle, a new) connection on
    /// the current thread, for blocking callers and exports that already run
    /// on a blocking thread. It takes no permit: a long export must not
    /// starve the async queries.
    pub(crate) fn read_blocking<T>(
        self: &Arc<Self>,
        query: impl FnOnce(&Connection) -> Result<T>,
    ) -> Result<T> {
        let conn = self.take()?;
        let result = query(&conn);
        self.give_back(conn);
        result
    }
}
