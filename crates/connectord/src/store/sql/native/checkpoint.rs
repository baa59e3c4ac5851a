//! WAL checkpoints off the writer's path. With automatic checkpoints, the
//! connection whose COMMIT pushes the WAL past 1,000 pages copies the WAL into
//! the database and fsyncs it inside that COMMIT, while every delivery of the
//! next batch waits. Here a thread of its own runs `PRAGMA
//! wal_checkpoint(PASSIVE)` (which never blocks readers or writers) shortly
//! after writes, at most every [`EVERY`].

use super::writer::open;
use crate::store::Result;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::time::Duration;

/// Writes within this time share one checkpoint.
const EVERY: Duration = Duration::from_millis(100);

/// Held by both SQLite writers; dropping the last one ends the thread.
#[derive(Clone)]
pub struct Checkpointer {
    tx: SyncSender<()>,
}

impl Checkpointer {
    pub fn spawn(path: &Path) -> Result<Self> {
        let conn = open(path)?;
        let (tx, rx) = sync_channel(1);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| crate::store::StoreError::Internal(e.into()))?;
        Ok(Self { tx })
    }

    /// Something was committed: a checkpoint is due soon. Never blocks.
    pub fn wrote(&self) {
        match self.tx.try_send(()) {
            Ok(()) | Err(TrySendError::Full(())) | Err(TrySendError::Disconnected(())) => {}
        }
    }
}

fn run(conn: rusqlite::Connection, rx: Receiver<()>) {
    while rx.recv().is_ok() {
        std::thread::sleep(EVERY);
        // Writes during the pause are covered by this checkpoint.
        while rx.try_recv().is_ok() {}
        let done = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?, r.get::<_, i64>(2)?))
        });
        match done {
            Ok((_, wal, copied)) => tracing::trace!(wal, copied, "checkpoint"),
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
    }
    // The last write's frames: copy them now rather than leave them to the
    // next start.
    let _ = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
}
