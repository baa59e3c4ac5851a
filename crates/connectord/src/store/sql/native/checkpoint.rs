//! WAL checkpoints off the writer's path. With automatic checkpoints, the
//! connection whose COMMIT pushes the WAL past 1,000 pages copies the WAL into
//! the database and fsyncs it inside that COMMIT, while every delivery of the
//! next batch waits. Here a thread of its own runs `PRAGMA
//! wal_checkpoint(PASSIVE)` (which never blocks readers or writers) shortly
//! after writes, at most every [`EVERY`].
//!
//! SQLite starts the WAL over only when a writer begins after a checkpoint
//! copied all of it; beside a busy writer, which appends while the checkpoint
//! runs, that never happens, and the file grows for as long as the load lasts
//! (seen in a profile as the kernel zeroing new blocks for the writer's
//! appends, and in `tests/durability.rs`). So once the WAL holds
//! [`RESTART_FRAMES`], the checkpointer takes the writers' gate for a moment
//! and copies the last frames (those written since its unguarded pass, a
//! small part of the WAL); the next write then starts the WAL over.

use super::writer::open;
use super::WriteGate;
use crate::store::Result;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::time::Duration;

/// Writes within this time share one checkpoint.
const EVERY: Duration = Duration::from_millis(100);

/// WAL frames (pages) past which a checkpoint completes under the gate, so
/// the WAL starts over: 16 MiB at SQLite's 4 KiB pages.
const RESTART_FRAMES: i64 = 4096;

/// Held by both SQLite writers; dropping the last one ends the thread.
#[derive(Clone)]
pub struct Checkpointer {
    tx: SyncSender<()>,
}

impl Checkpointer {
    pub fn spawn(path: &Path, gate: WriteGate) -> Result<Self> {
        let conn = open(path)?;
        let (tx, rx) = sync_channel(1);
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(conn, rx, gate))
            .map_err(|e| crate::store::StoreError::Internal(e.into()))?;
        Ok(Self { tx })
    }

    /// Something was committed: a checkpoint is due soon. Never blocks.
    pub fn wrote(&self) {
        // Full: a checkpoint is due already. Disconnected: the thread has ended.
        let _ = self.tx.try_send(());
    }
}

/// `(frames in the WAL, frames copied into the database)`.
fn checkpoint(conn: &rusqlite::Connection) -> rusqlite::Result<(i64, i64)> {
    conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
        Ok((r.get(1)?, r.get(2)?))
    })
}

fn run(conn: rusqlite::Connection, rx: Receiver<()>, gate: WriteGate) {
    while rx.recv().is_ok() {
        std::thread::sleep(EVERY);
        // Writes during the pause are covered by this checkpoint.
        while rx.try_recv().is_ok() {}
        match checkpoint(&conn) {
            // Even a checkpoint that copied every frame it saw leaves the WAL
            // to grow: the writer appended meanwhile, so when it next begins
            // the WAL is not all copied and is not started over. Under the
            // gate nothing is appended, and the next write starts it over.
            Ok((wal, _)) if wal >= RESTART_FRAMES => {
                let _turn = gate.blocking_lock();
                if let Err(e) = checkpoint(&conn) {
                    tracing::warn!(error = %e, "WAL checkpoint failed");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
        }
    }
    // The last writes' frames: copy them now rather than leave them to the
    // next start.
    let _ = checkpoint(&conn);
}
