//! PostgreSQL: many ingress and worker processes on one database.
//!
//! Each write is one transaction from a pool; the row locks that make
//! concurrent transactions safe are taken in the shared SQL (see
//! [`super::dialect`]). Workers in every process are woken by
//! `LISTEN/NOTIFY` on [`CHANNEL`]; they also poll, so a notification lost
//! while the listener reconnects delays a job by at most the poll interval.

use super::{Backend, SqlStore};
use crate::store::{Result, StoreError, StoreOptions};
use futures::future::BoxFuture;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::postgres::PgListener;
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, PgConnection};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The notification channel workers listen on.
pub const CHANNEL: &str = "connectord_jobs";

pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Applies the embedded migrations. sqlx's migrator holds a PostgreSQL
/// advisory lock while it runs, so processes starting at once take turns:
/// the first applies, the others find nothing left to do.
pub async fn migrate(url: &str) -> Result<()> {
    let mut conn = PgConnection::connect(url).await?;
    MIGRATOR
        .run(&mut conn)
        .await
        .map_err(|e| StoreError::Internal(e.into()))?;
    conn.close().await?;
    Ok(())
}

pub async fn connect(url: &str, options: StoreOptions) -> Result<SqlStore> {
    sqlx::any::install_default_drivers();
    migrate(url).await?;
    let opts = AnyConnectOptions::from_str(url)
        .map_err(|e| StoreError::Internal(anyhow::anyhow!("invalid PostgreSQL URL: {e}")))?
        .log_statements(tracing::log::LevelFilter::Trace);
    let pool = AnyPoolOptions::new()
        .max_connections(options.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(opts)
        .await?;
    let jobs_ready = Arc::new(Notify::new());
    let listener = listen(url, jobs_ready.clone()).await?;
    Ok(SqlStore {
        backend: Backend::Postgres(Pg {
            pool: pool.clone(),
            listener,
        }),
        read: pool,
        jobs_ready,
        options,
    })
}

/// Subscribes before returning, so no enqueue after `connect` goes unheard.
async fn listen(url: &str, jobs_ready: Arc<Notify>) -> Result<JoinHandle<()>> {
    let mut listener = PgListener::connect(url).await?;
    listener.listen(CHANNEL).await?;
    Ok(tokio::spawn(async move {
        loop {
            match listener.recv().await {
                Ok(_) => jobs_ready.notify_one(),
                Err(e) => {
                    // recv() reconnects on its next call; meanwhile workers poll.
                    // Not `crate::retry`: this never gives up (a lost LISTEN
                    // only slows wake-ups to the poll), so a fixed pause does.
                    tracing::warn!(error = %e, "lost the LISTEN connection; reconnecting");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    jobs_ready.notify_waiters();
                }
            }
        }
    }))
}

pub(super) struct Pg {
    pool: AnyPool,
    listener: JoinHandle<()>,
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.listener.abort();
    }
}

impl Pg {
    pub(super) async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection) -> BoxFuture<'c, Result<T>> + Send + 'static,
    {
        let mut tx = self.pool.begin().await?;
        let value = f(&mut tx).await?;
        tx.commit().await?;
        Ok(value)
    }

    /// Wakes the workers of every process. Best effort: they poll anyway.
    pub(super) async fn notify(&self) {
        if let Err(e) = sqlx::query("SELECT pg_notify($1, '')")
            .bind(CHANNEL)
            .execute(&self.pool)
            .await
        {
            tracing::warn!(error = %e, "cannot NOTIFY workers; they will poll");
        }
    }
}

/// Wakes the workers of every process when the transaction on `conn`
/// commits (PostgreSQL holds notifications until then, and folds equal
/// ones of one transaction into one).
pub(super) async fn notify_in(conn: &mut AnyConnection) -> Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}
