//! The single SQLite writer with group commit.
//!
//! SQLite allows one writer at a time, and with `synchronous=FULL` every
//! COMMIT costs an fsync. So all writes go through one task that owns the one
//! write connection: it opens `BEGIN IMMEDIATE`, runs each queued unit of work
//! in its own SAVEPOINT (a failing unit rolls back only itself), COMMITs once,
//! and only then answers every caller. One fsync serves the whole batch, and no
//! caller hears "done" before its write is durable.

use super::super::{Result, StoreError};
use super::native::{checkpoint::Checkpointer, WriteGate};
use futures::{future::BoxFuture, FutureExt};
use sqlx::{AnyConnection, Connection};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Default upper bound on units per transaction, so one COMMIT never waits on
/// an unbounded backlog.
pub const MAX_BATCH: usize = 256;

type Work = Box<dyn for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<()>> + Send>;
type Reply = Box<dyn FnOnce(Result<()>) + Send>;

struct Unit {
    work: Work,
    reply: Reply,
}

#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Unit>,
}

/// What the sqlx writer shares with the rusqlite one (`native`): the turn to
/// write, and the checkpointer to tell after a commit.
pub struct Shared {
    pub gate: WriteGate,
    pub checkpointer: Checkpointer,
}

impl Writer {
    /// `max_batch` 1 turns group commit off (one COMMIT per unit): only the
    /// ingress benchmark does that, to measure what group commit buys.
    pub fn spawn(conn: AnyConnection, max_batch: usize, shared: Shared) -> Self {
        let max_batch = max_batch.max(1);
        let (tx, rx) = mpsc::channel(4 * max_batch);
        tokio::spawn(run(conn, rx, max_batch, shared));
        Self { tx }
    }

    /// Runs `f` inside the next group transaction and returns its value once
    /// that transaction has committed.
    pub async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let slot: Arc<Mutex<Option<T>>> = Arc::new(Mutex::new(None));
        let (done_tx, done_rx) = oneshot::channel::<Result<()>>();
        let work_slot = slot.clone();
        let work: Work = Box::new(move |conn| {
            Box::pin(async move {
                let value = f(conn).await?;
                *work_slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
                Ok(())
            })
        });
        let reply: Reply = Box::new(move |r| {
            let _ = done_tx.send(r);
        });
        self.tx
            .send(Unit { work, reply })
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer has stopped".into()))?;
        done_rx
            .await
            .map_err(|_| StoreError::Unavailable("the SQLite writer stopped mid-write".into()))??;
        let value = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        value
            .ok_or_else(|| StoreError::Internal(anyhow::anyhow!("write committed without a value")))
    }
}

async fn run(
    mut conn: AnyConnection,
    mut rx: mpsc::Receiver<Unit>,
    max_batch: usize,
    shared: Shared,
) {
    let mut batch = Vec::with_capacity(max_batch);
    while rx.recv_many(&mut batch, max_batch).await > 0 {
        {
            let _turn = shared.gate.lock().await;
            commit_batch(&mut conn, &mut batch).await;
        }
        shared.checkpointer.wrote();
    }
    let _ = conn.close().await;
}

// Boxed with an explicit lifetime: a plain `async fn` here trips the compiler's
// higher-ranked `Send` inference when the writer future is spawned.
fn exec<'c>(conn: &'c mut AnyConnection, sql: &'static str) -> BoxFuture<'c, Result<()>> {
    Box::pin(async move {
        sqlx::Executor::execute(conn, sql).await?;
        Ok(())
    })
}

async fn commit_batch(conn: &mut AnyConnection, batch: &mut Vec<Unit>) {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE").await {
        tracing::error!(error = %e, "cannot begin a write transaction");
        for unit in batch.drain(..) {
            (unit.reply)(Err(StoreError::Unavailable(format!(
                "cannot begin a write: {e}"
            ))));
        }
        return;
    }
    // Replies for units whose work succeeded wait for the COMMIT.
    let mut pending: Vec<Reply> = Vec::with_capacity(batch.len());
    let mut broken: Option<String> = None;
    for unit in batch.drain(..) {
        if let Some(why) = &broken {
            (unit.reply)(Err(StoreError::Unavailable(why.clone())));
            continue;
        }
        if let Err(e) = exec(conn, "SAVEPOINT unit").await {
            broken = Some(e.to_string());
            (unit.reply)(Err(e));
            continue;
        }
        // A panicking unit must not take the writer (and every later write) down.
        let result = AssertUnwindSafe((unit.work)(conn))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                Err(StoreError::Internal(anyhow::anyhow!(
                    "a write unit panicked"
                )))
            });
        match result {
            Ok(()) => match exec(conn, "RELEASE unit").await {
                Ok(()) => pending.push(unit.reply),
                Err(e) => {
                    broken = Some(e.to_string());
                    (unit.reply)(Err(e));
                }
            },
            Err(err) => {
                if let Err(e) = exec(conn, "ROLLBACK TO unit; RELEASE unit").await {
                    broken = Some(e.to_string());
                }
                (unit.reply)(Err(err));
            }
        }
    }
    let outcome = match broken {
        Some(why) => Err(why),
        None => exec(conn, "COMMIT").await.map_err(|e| e.to_string()),
    };
    match outcome {
        Ok(()) => pending.into_iter().for_each(|reply| reply(Ok(()))),
        Err(why) => {
            tracing::error!(error = %why, "write transaction failed; nothing in it was acknowledged");
            let _ = exec(conn, "ROLLBACK").await;
            for reply in pending {
                reply(Err(StoreError::Unavailable(format!(
                    "commit failed: {why}"
                ))));
            }
        }
    }
}
