//! The single writer thread: every write goes through it, batched into
//! transactions.
//!
//! Callers send a write operation over a bounded channel together with a
//! oneshot reply. The thread takes the first waiting operation, opens a
//! transaction, then keeps taking operations that are already waiting (up to
//! a batch limit), each inside its own `SAVEPOINT` so that one refused
//! operation (an illegal transition, say) does not undo the others. It then
//! commits once and answers every caller: a caller learns that its write is
//! durable only after the commit succeeded.
//!
//! Some SQLite errors (`SQLITE_FULL`, `SQLITE_IOERR`...) roll back the whole
//! transaction by themselves; the thread notices (the connection is back in
//! autocommit mode), answers every operation of the batch with that error
//! and starts a new transaction for the rest.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use orchex_core::ComponentHealth;
use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use crate::error::{Result, StoreError};

/// What the writer does with the answer of one operation once the batch is
/// committed (or failed): called with the commit error, if any.
type Completion = Box<dyn FnOnce(Option<&StoreError>) + Send>;

/// A completion waiting for the end of its batch, with the error that undid
/// its work if SQLite rolled the transaction back under it.
type Pending = (Completion, Option<StoreError>);

/// One write operation, type-erased.
pub(crate) trait WriteOp: Send {
    /// Runs the operation inside the current transaction.
    fn run(self: Box<Self>, conn: &Connection) -> Outcome;
    /// Answers the caller without running (the transaction could not start).
    fn fail(self: Box<Self>, err: StoreError);
}

pub(crate) struct Outcome {
    error: Option<StoreError>,
    complete: Completion,
}

struct Op<F, T> {
    work: F,
    reply: oneshot::Sender<Result<T>>,
}

impl<F, T> WriteOp for Op<F, T>
where
    F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    T: Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Outcome {
        let Op { work, reply } = *self;
        let result = work(conn);
        let error = result.as_ref().err().cloned();
        Outcome {
            error,
            complete: Box::new(move |commit_error| {
                let result = match (result, commit_error) {
                    (Ok(_), Some(err)) => Err(err.clone()),
                    (result, _) => result,
                };
                // The caller may have stopped waiting; nothing to do then.
                let _ = reply.send(result);
            }),
        }
    }

    fn fail(self: Box<Self>, err: StoreError) {
        let _ = self.reply.send(Err(err));
    }
}

pub(crate) enum Command {
    Write(Box<dyn WriteOp>),
    Shutdown(oneshot::Sender<Result<()>>),
}

/// State shared between the writer thread and the store handles.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    closed: AtomicBool,
    failures: AtomicU64,
    /// Transactions committed since open (the checkpointer's cue).
    pub(crate) commits: AtomicU64,
    last_failure: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn health(&self) -> ComponentHealth {
        if self.closed.load(Ordering::Acquire) {
            return ComponentHealth::unhealthy("the store is closed");
        }
        let last = self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match &*last {
            None => ComponentHealth::ok(),
            Some(reason) => ComponentHealth::degraded(format!("write failed: {reason}")),
        }
    }

    /// How many write batches or operations failed for storage reasons since
    /// open.
    pub(crate) fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    fn record(&self, failure: Option<&StoreError>) {
        let mut last = self
            .last_failure
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match failure {
            Some(err) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                if last.is_none() {
                    tracing::error!(error = %err, "store write failed; reporting degraded");
                }
                *last = Some(err.to_string());
            }
            None => {
                if last.take().is_some() {
                    tracing::info!("store writes succeed again");
                }
            }
        }
    }
}

/// The sending side, held by every store handle.
#[derive(Debug, Clone)]
pub(crate) struct WriterHandle {
    tx: mpsc::Sender<Command>,
    pub(crate) shared: Arc<Shared>,
}

impl WriterHandle {
    /// Runs `work` in the writer's next transaction and waits until it is
    /// committed.
    pub(crate) async fn write<T, F>(&self, work: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Write(Box::new(Op { work, reply })))
            .await
            .map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| StoreError::Closed)?
    }

    /// Asks the writer to finish what is queued, mark the database cleanly
    /// shut down, checkpoint, and stop. Waits for it.
    pub(crate) async fn shutdown(&self) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Command::Shutdown(reply)).await.is_err() {
            return Ok(()); // already stopped
        }
        answer.await.unwrap_or(Ok(()))
    }
}

pub(crate) struct Writer {
    conn: Connection,
    rx: mpsc::Receiver<Command>,
    shared: Arc<Shared>,
    max_batch: usize,
    path: PathBuf,
}

fn exec(conn: &Connection, sql: &str, context: &'static str) -> Result<()> {
    conn.execute_batch(sql)
        .map_err(|err| StoreError::sqlite(context, err))
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub(crate) fn spawn(
        conn: Connection,
        path: PathBuf,
        capacity: usize,
        max_batch: usize,
    ) -> std::io::Result<(WriterHandle, std::thread::JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let shared = Arc::new(Shared::default());
        let writer = Writer {
            conn,
            rx,
            shared: Arc::clone(&shared),
            max_batch: max_batch.max(1),
            path,
        };
        let thread = std::thread::Builder::new()
            .name("orchex-store-writer".into())
            .spawn(move || writer.run())?;
        Ok((WriterHandle { tx, shared }, thread))
    }

    fn run(mut self) {
        let mut completions: Vec<Pending> = Vec::with_capacity(self.max_batch);
        while let Some(first) = self.rx.blocking_recv() {
            let shutdown = self.run_batch(first, &mut completions);
            if let Some(reply) = shutdown {
                let result = self.close();
                let _ = reply.send(result);
                return;
            }
        }
        // Every handle is gone: close cleanly.
        if let Err(err) = self.close() {
            tracing::warn!(error = %err, "store writer did not close cleanly");
        }
    }

    /// Runs one transaction starting with `first`; returns a shutdown request
    /// met on the way.
    fn run_batch(
        &mut self,
        first: Command,
        completions: &mut Vec<Pending>,
    ) -> Option<oneshot::Sender<Result<()>>> {
        let mut next = Some(first);
        let mut shutdown = None;
        let mut storage_failure: Option<StoreError> = None;
        let mut ops = 0;
        while ops < self.max_batch {
            let command = match next.take() {
                Some(command) => command,
                None => match self.rx.try_recv() {
                    Ok(command) => command,
                    Err(_) => break,
                },
            };
            let op = match command {
                Command::Shutdown(reply) => {
                    shutdown = Some(reply);
                    break;
                }
                Command::Write(op) => op,
            };
            ops += 1;
            if self.conn.is_autocommit()
                && let Err(err) = exec(&self.conn, "BEGIN IMMEDIATE", "begin a write transaction")
            {
                storage_failure = Some(err.clone());
                op.fail(err);
                continue;
            }
            if let Err(err) = exec(&self.conn, "SAVEPOINT op", "open a savepoint") {
                storage_failure = Some(err.clone());
                op.fail(err);
                continue;
            }
            let outcome = op.run(&self.conn);
            match &outcome.error {
                None => {
                    if let Err(err) = exec(&self.conn, "RELEASE op", "release a savepoint") {
                        storage_failure = Some(err);
                    }
                    completions.push((outcome.complete, None));
                }
                Some(err) if self.conn.is_autocommit() => {
                    // SQLite rolled the whole transaction back: everything
                    // this batch did so far is lost. The callers are
                    // answered at the end of the batch, after the health
                    // is recorded.
                    storage_failure = Some(err.clone());
                    for pending in completions.iter_mut() {
                        pending.1.get_or_insert_with(|| err.clone());
                    }
                    completions.push((outcome.complete, None));
                }
                Some(err) => {
                    if err.is_storage_failure() {
                        storage_failure = Some(err.clone());
                    }
                    if let Err(rollback) = exec(
                        &self.conn,
                        "ROLLBACK TO op; RELEASE op",
                        "roll back a savepoint",
                    ) {
                        storage_failure = Some(rollback);
                    }
                    completions.push((outcome.complete, None));
                }
            }
        }
        let commit_error = if self.conn.is_autocommit() {
            None
        } else {
            match exec(&self.conn, "COMMIT", "commit a write transaction") {
                Ok(()) => {
                    self.shared.commits.fetch_add(1, Ordering::Relaxed);
                    None
                }
                Err(err) => {
                    if !self.conn.is_autocommit() {
                        let _ = self.conn.execute_batch("ROLLBACK");
                    }
                    Some(err)
                }
            }
        };
        if commit_error.is_some() {
            storage_failure.clone_from(&commit_error);
        }
        self.shared.record(storage_failure.as_ref());
        for (complete, undone) in completions.drain(..) {
            complete(undone.as_ref().or(commit_error.as_ref()));
        }
        shutdown
    }

    /// Marks the database cleanly shut down, optimises and checkpoints it.
    fn close(&mut self) -> Result<()> {
        self.shared.closed.store(true, Ordering::Release);
        self.rx.close();
        // Operations queued behind the shutdown request are refused.
        while let Ok(command) = self.rx.try_recv() {
            match command {
                Command::Write(op) => op.fail(StoreError::Closed),
                Command::Shutdown(reply) => {
                    let _ = reply.send(Ok(()));
                }
            }
        }
        exec(
            &self.conn,
            "UPDATE meta SET value = '1' WHERE key = 'clean_shutdown'",
            "mark a clean shutdown",
        )?;
        exec(&self.conn, "PRAGMA optimize", "optimise the database")?;
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(|err| StoreError::sqlite("checkpoint the WAL", err))?;
        tracing::debug!(path = %self.path.display(), "store closed cleanly");
        Ok(())
    }
}
