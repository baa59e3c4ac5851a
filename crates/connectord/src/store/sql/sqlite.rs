//! The embedded default: SQLite in WAL mode with `synchronous=FULL` (an
//! acknowledged delivery survives power loss), one writer task with group
//! commit, and a pool of read connections.

use super::{native, Backend, SqlStore};
use crate::private_fs;
use crate::store::{Result, StoreError, StoreOptions};
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{AnyConnection, ConnectOptions, Connection, Executor, SqliteConnection};
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Set on every connection: the `Any` driver opens SQLite from the URL alone.
/// Checkpoints are the checkpointer thread's (`native::checkpoint`).
const PRAGMAS: &str = "PRAGMA synchronous = FULL; PRAGMA busy_timeout = 5000; \
     PRAGMA foreign_keys = ON; PRAGMA wal_autocheckpoint = 0; PRAGMA temp_store = MEMORY;";

fn native_options(url: &str) -> Result<SqliteConnectOptions> {
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Internal(anyhow::anyhow!("invalid SQLite URL: {e}")))?;
    Ok(opts
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true))
}

fn any_options(url: &str) -> Result<AnyConnectOptions> {
    let opts = AnyConnectOptions::from_str(url)
        .map_err(|e| StoreError::Internal(anyhow::anyhow!("invalid SQLite URL: {e}")))?;
    Ok(opts.log_statements(tracing::log::LevelFilter::Trace))
}

/// Creates the file's directory, so `sqlite://data/x.db` works on a fresh
/// machine, and the database file itself, both private (see
/// [`crate::private_fs`]): the database holds raw delivery bodies and
/// documents. A database an earlier version left readable by others is
/// narrowed to 0600, with its `-wal` and `-shm`.
fn ensure_private_file(opts: &SqliteConnectOptions) -> Result<()> {
    let path = opts.get_filename();
    if path == Path::new(":memory:") {
        return Ok(());
    }
    let unavailable = |what: &Path, e: std::io::Error| {
        StoreError::Unavailable(format!("cannot create {}: {e}", what.display()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        private_fs::create_dir_all(dir).map_err(|e| unavailable(dir, e))?;
    }
    let mut narrowed = private_fs::ensure_private_file(path).map_err(|e| unavailable(path, e))?;
    for suffix in ["-wal", "-shm"] {
        let mut side = path.as_os_str().to_owned();
        side.push(suffix);
        narrowed |= private_fs::narrow(Path::new(&side)).map_err(|e| unavailable(path, e))?;
    }
    if narrowed {
        tracing::warn!(path = %path.display(), "the database was readable by other users; it is now 0600");
    }
    Ok(())
}

/// Creates the database if missing, switches it to WAL (a property of the
/// file, so every later connection has it) and applies the embedded migrations.
pub async fn migrate(url: &str) -> Result<()> {
    let opts = native_options(url)?.create_if_missing(true);
    ensure_private_file(&opts)?;
    let mut conn = SqliteConnection::connect_with(&opts).await?;
    MIGRATOR
        .run(&mut conn)
        .await
        .map_err(|e| StoreError::Internal(e.into()))?;
    conn.close().await?;
    Ok(())
}

/// Opens the store; `max_batch` is the group-commit size (the ingress
/// benchmark compares 1 against the default).
pub async fn connect(url: &str, options: StoreOptions, max_batch: usize) -> Result<SqlStore> {
    sqlx::any::install_default_drivers();
    let path = native_options(url)?.get_filename().to_path_buf();
    if path == Path::new(":memory:") {
        // The writers and the readers are separate connections: they must share a file.
        return Err(StoreError::Invalid(
            "an in-memory SQLite database is not supported: give a file, sqlite://PATH".into(),
        ));
    }
    migrate(url).await?;
    let gate = native::gate();
    let checkpointer = native::checkpoint::Checkpointer::spawn(&path, gate.clone())?;
    let native =
        native::writer::NativeWriter::spawn(&path, max_batch, gate.clone(), checkpointer.clone())?;
    let opts = any_options(url)?;
    let mut write_conn = AnyConnection::connect_with(&opts).await?;
    write_conn.execute(PRAGMAS).await?;
    let read = AnyPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .after_connect(|conn, _| {
            Box::pin(async move {
                conn.execute(PRAGMAS).await?;
                Ok(())
            })
        })
        .connect_with(opts)
        .await?;
    Ok(SqlStore {
        backend: Backend::Sqlite {
            writer: super::Writer::spawn(
                write_conn,
                max_batch,
                super::writer::Shared { gate, checkpointer },
            ),
            native,
        },
        read,
        jobs_ready: Arc::new(Notify::new()),
        options,
    })
}
