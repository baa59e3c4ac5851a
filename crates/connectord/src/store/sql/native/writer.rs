//! The rusqlite writer thread, with group commit: it takes every unit waiting
//! (up to a batch), opens `BEGIN IMMEDIATE`, runs each unit in its own
//! SAVEPOINT (a failing unit rolls back only itself), COMMITs once, and only
//! then answers every caller. One fsync serves the batch, and no caller hears
//! "done" before its write is durable. While one batch commits the next one
//! gathers, so batches grow with the load by themselves.

use super::{checkpoint::Checkpointer, WriteGate, PRAGMAS};
use crate::store::{Result, StoreError};
use rusqlite::Connection;
use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use tokio::sync::{mpsc, oneshot};

type Value = Box<dyn Any + Send>;
type Work = Box<dyn FnOnce(&Connection) -> Result<Value> + Send>;

struct Unit {
    work: Work,
    reply: oneshot::Sender<Result<Value>>,
}

#[derive(Clone)]
pub struct NativeWriter {
    tx: mpsc::Sender<Unit>,
}

impl NativeWriter {
    /// Opens a write connection to the database file at `path` (migrated
    /// already) and starts its thread. `max_batch` 1 turns group commit off.
    pub fn spawn(
        path: &Path,
        max_batch: usize,
        gate: WriteGate,
        checkpointer: Checkpointer,
    ) -> Result<Self> {
        let conn = open(path)?;
        let max_batch = max_batch.max(1);
        let (tx, rx) = mpsc::channel(4 * max_batch);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, rx, max_batch, gate, checkpointer))
            .map_err(|e| StoreError::Internal(e.into()))?;
        Ok(Self { tx })
    }

    /// Runs `f` inside the next group transaction and returns its value once
    /// that transaction has committed.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, done) = oneshot::channel();
        let work: Work = Box::new(move |conn| f(conn).map(|v| Box::new(v) as Value));
        self.tx
            .send(Unit { work, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?;
        let value = done
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer stopped mid-write".into()))??;
        value.downcast::<T>().map(|v| *v).map_err(|_| {
            StoreError::Internal(anyhow::anyhow!("a write unit returned another type"))
        })
    }
}

pub(super) fn open(path: &Path) -> Result<Connection> {
    let conn = Connection::open(path)?;
    conn.execute_batch(PRAGMAS)?;
    // Every statement of the ingest path, with room to spare.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn run(
    conn: Connection,
    mut rx: mpsc::Receiver<Unit>,
    max_batch: usize,
    gate: WriteGate,
    checkpointer: Checkpointer,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(unit) => batch.push(unit),
                Err(_) => break,
            }
        }
        {
            let _turn = gate.blocking_lock();
            commit_batch(&conn, &mut batch);
        }
        checkpointer.wrote();
    }
}

fn exec(conn: &Connection, sql: &str) -> Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

fn commit_batch(conn: &Connection, batch: &mut Vec<Unit>) {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        tracing::error!(error = %e, "cannot begin a write transaction");
        for unit in batch.drain(..) {
            let _ = unit.reply.send(Err(StoreError::Unavailable(format!(
                "cannot begin a write: {e}"
            ))));
        }
        return;
    }
    // Values of units whose work succeeded wait for the COMMIT.
    let mut pending: Vec<(oneshot::Sender<Result<Value>>, Value)> = Vec::with_capacity(batch.len());
    let mut broken: Option<String> = None;
    for unit in batch.drain(..) {
        if let Some(why) = &broken {
            let _ = unit.reply.send(Err(StoreError::Unavailable(why.clone())));
            continue;
        }
        if let Err(e) = exec(conn, "SAVEPOINT unit") {
            broken = Some(e.to_string());
            let _ = unit.reply.send(Err(e));
            continue;
        }
        // A panicking unit must not take the writer (and every later write) down.
        let result = catch_unwind(AssertUnwindSafe(|| (unit.work)(conn))).unwrap_or_else(|_| {
            Err(StoreError::Internal(anyhow::anyhow!(
                "a write unit panicked"
            )))
        });
        match result {
            Ok(value) => match exec(conn, "RELEASE unit") {
                Ok(()) => pending.push((unit.reply, value)),
                Err(e) => {
                    broken = Some(e.to_string());
                    let _ = unit.reply.send(Err(e));
                }
            },
            Err(err) => {
                let undone =
                    exec(conn, "ROLLBACK TO unit").and_then(|()| exec(conn, "RELEASE unit"));
                if let Err(e) = undone {
                    broken = Some(e.to_string());
                }
                let _ = unit.reply.send(Err(err));
            }
        }
    }
    let outcome = match broken {
        Some(why) => Err(why),
        None => exec(conn, "COMMIT").map_err(|e| e.to_string()),
    };
    match outcome {
        Ok(()) => {
            for (reply, value) in pending {
                let _ = reply.send(Ok(value));
            }
        }
        Err(why) => {
            tracing::error!(error = %why, "write transaction failed; nothing in it was acknowledged");
            if !conn.is_autocommit() {
                let _ = exec(conn, "ROLLBACK");
            }
            for (reply, _) in pending {
                let _ = reply.send(Err(StoreError::Unavailable(format!(
                    "commit failed: {why}"
                ))));
            }
        }
    }
}
