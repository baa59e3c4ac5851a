//! SQLite's hot write path, on rusqlite: one OS thread owns a write
//! connection and runs whole units of work (one delivery each) with prepared,
//! cached statements, so a delivery costs one hand-off between threads rather
//! than one per statement (sqlx's SQLite driver sends every statement to its
//! worker thread and back: measured as half of all CPU samples under load,
//! docs/benchmarks.md).
//!
//! - [`writer`]: the thread and its group commit.
//! - [`ingest`]: push and ignored deliveries, the same rules as
//!   `sql::ingest` (which PostgreSQL and the rarer deliveries still use); the
//!   conformance suite runs the same tests against both.
//! - [`checkpoint`]: WAL checkpoints on a thread of their own, off the
//!   writer's path.
//!
//! Every other write (claims, completions, admin, lifecycle deliveries) stays
//! on the sqlx writer. The two writers take turns through one [`WriteGate`]
//! held from `BEGIN IMMEDIATE` to `COMMIT`, so neither ever meets SQLite's busy
//! handler (which sleeps) because of the other.

pub mod checkpoint;
pub mod ingest;
pub mod writer;

use crate::store::StoreError;
use std::sync::Arc;

/// Held by whichever SQLite writer is inside a write transaction. A tokio
/// mutex is fair (first come, first served), so a steady stream of
/// deliveries cannot starve the workers' claims, nor the other way round.
pub type WriteGate = Arc<tokio::sync::Mutex<()>>;

pub fn gate() -> WriteGate {
    Arc::new(tokio::sync::Mutex::new(()))
}

/// Pragmas of every rusqlite connection: durable commits (`synchronous=FULL`:
/// a 202 survives power loss); no automatic checkpoints, which the
/// checkpointer thread runs instead; and savepoint journals in memory: each
/// unit of a group transaction is a SAVEPOINT, whose journal otherwise spills
/// into a temporary file created and deleted per batch (seen in a profile as
/// file creation and truncation on the writer thread).
pub(super) const PRAGMAS: &str = "PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; \
     PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0; PRAGMA temp_store = MEMORY;";

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::*;
        match &e {
            rusqlite::Error::QueryReturnedNoRows => StoreError::NotFound,
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    DatabaseBusy
                        | DatabaseLocked
                        | SystemIoFailure
                        | DiskFull
                        | CannotOpen
                        | ReadOnly
                        | OutOfMemory
                ) =>
            {
                StoreError::Unavailable(e.to_string())
            }
            _ => StoreError::Internal(e.into()),
        }
    }
}
