//! The embedded default store: SQLite in WAL mode, `synchronous=FULL` (an
//! acknowledged delivery survives power loss), one writer task with group
//! commit, and a pool of read connections.

mod admin;
mod content;
mod enqueue;
mod ingest;
mod lifecycle;
mod queue;
mod writer;

/// Units per group-commit transaction by default.
pub use writer::MAX_BATCH as DEFAULT_WRITE_BATCH;

use super::models::*;
use super::{Result, Store, StoreError, StoredBody};
use crate::ingress::dispatch::Plan;
use admin::*;
use async_trait::async_trait;
use futures::FutureExt;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Row, SqliteConnection};
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use writer::Writer;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    writer: Writer,
    read: SqlitePool,
    jobs_ready: Arc<Notify>,
    max_attempts: i64,
}

fn options(url: &str) -> Result<SqliteConnectOptions> {
    let opts = SqliteConnectOptions::from_str(url)
        .map_err(|e| StoreError::Internal(anyhow::anyhow!("invalid SQLite URL: {e}")))?;
    Ok(opts
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(5))
        .foreign_keys(true)
        .log_statements(tracing::log::LevelFilter::Trace))
}

/// Creates the file's directory, so `sqlite://data/x.db` works on a fresh machine.
fn ensure_parent_dir(opts: &SqliteConnectOptions) -> Result<()> {
    let path = opts.get_filename();
    if path != Path::new(":memory:") {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
    }
    Ok(())
}

/// Applies the embedded migrations.
pub async fn migrate(url: &str) -> Result<()> {
    let opts = options(url)?.create_if_missing(true);
    ensure_parent_dir(&opts)?;
    let mut conn = SqliteConnection::connect_with(&opts).await?;
    MIGRATOR
        .run(&mut conn)
        .await
        .map_err(|e| StoreError::Internal(e.into()))?;
    conn.close().await?;
    Ok(())
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database at `url`.
    pub async fn connect(url: &str, max_attempts: i64) -> Result<Self> {
        Self::connect_with_batch(url, max_attempts, writer::MAX_BATCH).await
    }

    /// As [`connect`](Self::connect), with the group-commit batch size chosen
    /// (the ingress benchmark compares 1 against the default).
    pub async fn connect_with_batch(
        url: &str,
        max_attempts: i64,
        max_batch: usize,
    ) -> Result<Self> {
        migrate(url).await?;
        let opts = options(url)?;
        let write_conn = SqliteConnection::connect_with(&opts).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(opts.read_only(true))
            .await?;
        Ok(Self {
            writer: Writer::spawn(write_conn, max_batch),
            read,
            jobs_ready: Arc::new(Notify::new()),
            max_attempts,
        })
    }

    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut SqliteConnection) -> futures::future::BoxFuture<'c, Result<T>>
            + Send
            + 'static,
    {
        self.writer.write(f).await
    }

    /// Runs `sql` (which touches at most a batch of rows older than `before`)
    /// until it touches none, one write unit per batch, so a large backlog
    /// never holds the writer for long.
    async fn prune_in_batches(&self, sql: &'static str, before: Millis) -> Result<u64> {
        let mut total = 0;
        loop {
            let n = self
                .write(move |c| {
                    async move {
                        Ok(sqlx::query(sql)
                            .bind(before)
                            .execute(c)
                            .await?
                            .rows_affected())
                    }
                    .boxed()
                })
                .await?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }

    async fn read_conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Sqlite>> {
        Ok(self.read.acquire().await?)
    }
}

fn limit_plus_one(p: &Page) -> i64 {
    p.limit + 1
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    fn jobs_ready(&self) -> Arc<Notify> {
        self.jobs_ready.clone()
    }

    async fn ingest(&self, delivery: NewDelivery, plan: Plan) -> Result<IngestOutcome> {
        let max = self.max_attempts;
        let (outcome, enqueued): (IngestOutcome, bool) = self
            .write(move |c| ingest::ingest(c, delivery, plan, max).boxed())
            .await?;
        // Enqueues wake workers; so does an unsuspend, whose held jobs become runnable.
        if enqueued || outcome.outcome == Outcome::Accepted {
            self.jobs_ready.notify_waiters();
        }
        Ok(outcome)
    }

    async fn delivery_body(&self, delivery_id: &str) -> Result<StoredBody> {
        let row = sqlx::query(
            "SELECT event, content_type, body, hook_id, hook_installation_target_id FROM webhook_delivery WHERE delivery_id = ?",
        )
        .bind(delivery_id)
        .fetch_optional(&self.read)
        .await?
        .ok_or(StoreError::NotFound)?;
        let body: Option<Vec<u8>> = row.try_get("body")?;
        let body = body.ok_or_else(|| {
            StoreError::Conflict(
                "the body of this delivery is not retained (ignored, or past retention)".into(),
            )
        })?;
        Ok(StoredBody {
            event: row.try_get("event")?,
            content_type: row
                .try_get::<Option<String>, _>("content_type")?
                .unwrap_or_default(),
            body,
            hook_id: row.try_get("hook_id")?,
            hook_installation_target_id: row.try_get("hook_installation_target_id")?,
        })
    }

    async fn prune_delivery_bodies(&self, before: Millis) -> Result<u64> {
        self.prune_in_batches(
            "UPDATE webhook_delivery SET body = NULL WHERE seq IN \
             (SELECT seq FROM webhook_delivery WHERE body IS NOT NULL AND received_at < ? LIMIT 500)",
            before,
        )
        .await
    }

    async fn prune_push_history(&self, before: Millis) -> Result<u64> {
        self.prune_in_batches(
            "DELETE FROM target_push WHERE rowid IN \
             (SELECT rowid FROM target_push WHERE received_at < ? LIMIT 500)",
            before,
        )
        .await
    }

    async fn prune_history(&self, before: Millis) -> Result<u64> {
        // Jobs first: a sync event is referenced by its job.
        let jobs = self
            .prune_in_batches(
                "DELETE FROM sync_job WHERE id IN (SELECT id FROM sync_job \
                 WHERE state = 'finished' AND finished_at < ? LIMIT 500)",
                before,
            )
            .await?;
        let events = self
            .prune_in_batches(
                "DELETE FROM connector_sync_event WHERE id IN (SELECT e.id FROM connector_sync_event e \
                 WHERE e.status IN ('completed', 'partial', 'failed', 'superseded', 'cancelled') \
                 AND e.completed_at < ? \
                 AND NOT EXISTS (SELECT 1 FROM sync_job j WHERE j.sync_event_id = e.id) \
                 AND NOT EXISTS (SELECT 1 FROM document d WHERE d.sync_event_id = e.id) LIMIT 500)",
                before,
            )
            .await?;
        let deliveries = self
            .prune_in_batches(
                "DELETE FROM webhook_delivery WHERE seq IN (SELECT seq FROM webhook_delivery \
                 WHERE received_at < ? LIMIT 500)",
                before,
            )
            .await?;
        Ok(jobs + events + deliveries)
    }

    async fn claim_job(
        &self,
        owner: &str,
        now: Millis,
        lease_ms: i64,
    ) -> Result<Option<ClaimedJob>> {
        let owner = owner.to_owned();
        self.write(move |c| async move { queue::claim(c, &owner, now, lease_ms).await }.boxed())
            .await
    }

    async fn heartbeat(&self, job: &ClaimedJob, now: Millis, lease_ms: i64) -> Result<bool> {
        let job = job.clone();
        self.write(move |c| async move { queue::heartbeat(c, &job, now, lease_ms).await }.boxed())
            .await
    }

    async fn finish_job(&self, job: &ClaimedJob, result: &SyncResult, now: Millis) -> Result<bool> {
        let (job, result) = (job.clone(), result.clone());
        self.write(move |c| async move { queue::complete(c, &job, &result, now).await }.boxed())
            .await
    }

    async fn retry_job(
        &self,
        job: &ClaimedJob,
        run_at: Millis,
        error: &str,
        consume_attempt: bool,
        _now: Millis,
    ) -> Result<bool> {
        let (job, error) = (job.clone(), error.to_owned());
        let ok = self
            .write(move |c| {
                async move { queue::retry(c, &job, run_at, &error, consume_attempt).await }.boxed()
            })
            .await?;
        // The target is free again; a job queued behind it may now run.
        self.jobs_ready.notify_waiters();
        Ok(ok)
    }

    async fn fail_job(
        &self,
        job: &ClaimedJob,
        error: &str,
        health: FailureHealth,
        now: Millis,
    ) -> Result<bool> {
        let (job, error) = (job.clone(), error.to_owned());
        let ok = self
            .write(move |c| async move { queue::fail(c, &job, &error, health, now).await }.boxed())
            .await?;
        self.jobs_ready.notify_waiters();
        Ok(ok)
    }

    async fn release_job(&self, job: &ClaimedJob) -> Result<bool> {
        let job = job.clone();
        self.write(move |c| async move { queue::release(c, &job).await }.boxed())
            .await
    }

    async fn rescue_expired_leases(&self, now: Millis) -> Result<u64> {
        let n = self
            .write(move |c| async move { queue::rescue(c, now).await }.boxed())
            .await?;
        if n > 0 {
            self.jobs_ready.notify_waiters();
        }
        Ok(n)
    }

    async fn sync_event_counts(&self) -> Result<Vec<(String, i64)>> {
        let rows =
            sqlx::query("SELECT status, count(*) AS n FROM connector_sync_event GROUP BY status")
                .fetch_all(&self.read)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("status")?, r.try_get("n")?)))
            .collect()
    }

    async fn create_connector(&self, installation_id: i64) -> Result<(ConnectorInstance, bool)> {
        self.write(move |c| create_connector(c, installation_id).boxed())
            .await
    }

    async fn list_connectors(&self, p: &Page) -> Result<Listing<ConnectorInstance>> {
        let rows = sqlx::query("SELECT * FROM connector_instance WHERE (?1 IS NULL OR id < ?1) ORDER BY id DESC LIMIT ?2")
            .bind(&p.cursor)
            .bind(limit_plus_one(p))
            .fetch_all(&self.read)
            .await?;
        let items = rows
            .iter()
            .map(connector_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(page(items, p.limit, |c| c.id.clone()))
    }

    async fn get_connector(&self, id: &str) -> Result<ConnectorInstance> {
        let row = sqlx::query("SELECT * FROM connector_instance WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.read)
            .await?
            .ok_or(StoreError::NotFound)?;
        connector_from_row(&row)
    }

    async fn create_target(
        &self,
        connector_id: &str,
        target: NewTarget,
    ) -> Result<(Target, SyncEvent)> {
        let (connector_id, max) = (connector_id.to_owned(), self.max_attempts);
        let created = self
            .write(move |c| {
                async move { create_target(c, &connector_id, target, max).await }.boxed()
            })
            .await?;
        self.jobs_ready.notify_waiters();
        Ok(created)
    }

    async fn list_targets(&self, connector_id: &str, p: &Page) -> Result<Listing<Target>> {
        self.get_connector(connector_id).await?;
        let rows = sqlx::query(
            "SELECT * FROM connector_target WHERE connector_id = ?1 AND status <> 'removed' \
             AND (?2 IS NULL OR id < ?2) ORDER BY id DESC LIMIT ?3",
        )
        .bind(connector_id)
        .bind(&p.cursor)
        .bind(limit_plus_one(p))
        .fetch_all(&self.read)
        .await?;
        let items = rows
            .iter()
            .map(target_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(page(items, p.limit, |t| t.id.clone()))
    }

    async fn get_target(&self, id: &str) -> Result<Target> {
        get_target(&mut *self.read_conn().await?, id).await
    }

    async fn delete_target(&self, id: &str) -> Result<()> {
        let id = id.to_owned();
        self.write(move |c| async move { delete_target(c, &id).await }.boxed())
            .await
    }

    async fn request_sync(&self, target_id: &str) -> Result<SyncEvent> {
        let (id, max) = (target_id.to_owned(), self.max_attempts);
        let event = self
            .write(move |c| async move { request_sync(c, &id, max).await }.boxed())
            .await?;
        self.jobs_ready.notify_waiters();
        Ok(event)
    }

    async fn list_sync_events(&self, f: &SyncEventFilter, p: &Page) -> Result<Listing<SyncEvent>> {
        let rows = sqlx::query(
            "SELECT * FROM connector_sync_event WHERE (?1 IS NULL OR connector_target_id = ?1) \
             AND (?2 IS NULL OR status = ?2) AND (?3 IS NULL OR id < ?3) ORDER BY id DESC LIMIT ?4",
        )
        .bind(&f.target_id)
        .bind(&f.status)
        .bind(&p.cursor)
        .bind(limit_plus_one(p))
        .fetch_all(&self.read)
        .await?;
        let items = rows
            .iter()
            .map(sync_event_from_row)
            .collect::<Result<Vec<_>>>()?;
        Ok(page(items, p.limit, |e| e.id.clone()))
    }

    async fn get_sync_event(&self, id: &str) -> Result<SyncEvent> {
        get_sync_event(&mut *self.read_conn().await?, id).await
    }

    async fn list_deliveries(&self, p: &Page) -> Result<Listing<Delivery>> {
        // Deliveries page by arrival order (`seq`); GitHub's GUIDs do not sort by time.
        let cursor = match &p.cursor {
            Some(c) => Some(
                c.parse::<i64>()
                    .map_err(|_| StoreError::Invalid("invalid cursor".into()))?,
            ),
            None => None,
        };
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_delivery WHERE (?1 IS NULL OR seq < ?1) ORDER BY seq DESC LIMIT ?2"
        ))
        .bind(cursor)
        .bind(limit_plus_one(p))
        .fetch_all(&self.read)
        .await?;
        let pairs = rows
            .iter()
            .map(|r| Ok((r.try_get::<i64, _>("seq")?, delivery_from_row(r)?)))
            .collect::<Result<Vec<_>>>()?;
        let listing = page(pairs, p.limit, |(seq, _)| seq.to_string());
        Ok(Listing {
            items: listing.items.into_iter().map(|(_, d)| d).collect(),
            next_cursor: listing.next_cursor,
        })
    }

    async fn document_manifest(&self, target_id: &str) -> Result<HashMap<String, String>> {
        content::manifest(&mut *self.read_conn().await?, target_id).await
    }

    async fn list_documents(
        &self,
        target_id: &str,
        prefix: Option<&str>,
        page: &Page,
    ) -> Result<Listing<Document>> {
        let mut conn = self.read_conn().await?;
        get_target(&mut conn, target_id).await?;
        content::list_documents(&mut conn, target_id, prefix, page).await
    }

    async fn get_document(&self, target_id: &str, path: &str) -> Result<(Document, Vec<u8>)> {
        content::get_document(&mut *self.read_conn().await?, target_id, path).await
    }

    async fn list_changes(
        &self,
        target_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Listing<ChangeEntry>> {
        let mut conn = self.read_conn().await?;
        get_target(&mut conn, target_id).await?;
        content::list_changes(&mut conn, target_id, after, limit).await
    }

    async fn get_delivery(&self, id: &str) -> Result<Delivery> {
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_delivery WHERE delivery_id = ?"
        ))
        .bind(id)
        .fetch_optional(&self.read)
        .await?
        .ok_or(StoreError::NotFound)?;
        delivery_from_row(&row)
    }
}
