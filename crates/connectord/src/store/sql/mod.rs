//! The SQL store: one implementation of [`Store`] for both backends.
//!
//! Statements go through sqlx's `Any` driver and are written once, in the
//! SQL both SQLite and PostgreSQL accept (`$n` parameters, `RETURNING`,
//! `ON CONFLICT` on partial indexes); the few differences live in
//! [`dialect`]. What differs in how writes are run lives in the backends:
//!
//! - [`sqlite`]: the embedded default. One writer task with group commit,
//!   a pool of read connections, in-process wake-ups.
//! - [`postgres`]: many processes on one database. A transaction per write,
//!   row locks where SQLite relied on its single writer, `SKIP LOCKED`
//!   claims, and `LISTEN/NOTIFY` wake-ups across processes.

mod admin;
mod blobs;
mod claim;
mod content;
mod dialect;
mod enqueue;
mod head_poll;
mod ingest;
mod lifecycle;
mod native;
pub mod postgres;
mod queue;
mod reads;
mod redelivery;
mod retention;
pub(crate) mod snapshot;
pub mod sqlite;
mod writer;

/// Units per group-commit transaction by default (SQLite).
pub use writer::MAX_BATCH as DEFAULT_WRITE_BATCH;

use super::models::*;
use super::{Result, Store, StoreError, StoreOptions, StoredBody};
use crate::ingress::dispatch::Plan;
use crate::retry::{retry, Backoff};
use admin::*;
use async_trait::async_trait;
use dialect::Dialect;
use futures::FutureExt;
use sqlx::{AnyConnection, AnyPool, Row};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;
use writer::Writer;

enum Backend {
    Sqlite {
        /// Claims, completions, admin writes, lifecycle deliveries.
        writer: Writer,
        /// Pushes and ignored deliveries: the hot path.
        native: native::writer::NativeWriter,
    },
    Postgres(postgres::Pg),
}

pub struct SqlStore {
    backend: Backend,
    /// Reads: SQLite's read-only pool, or PostgreSQL's one pool.
    read: AnyPool,
    jobs_ready: Arc<Notify>,
    options: StoreOptions,
}

impl SqlStore {
    /// Opens (and migrates) the database at `url`: `sqlite://…` or `postgres://…`.
    pub async fn connect(url: &str, options: StoreOptions) -> Result<Self> {
        if postgres::is_postgres_url(url) {
            postgres::connect(url, options).await
        } else {
            sqlite::connect(url, options, DEFAULT_WRITE_BATCH).await
        }
    }

    fn dialect(&self) -> Dialect {
        match self.backend {
            Backend::Sqlite { .. } => Dialect::Sqlite,
            Backend::Postgres(_) => Dialect::Postgres,
        }
    }

    /// Runs `f` as one transaction and returns once it has committed.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: for<'c> FnOnce(&'c mut AnyConnection) -> futures::future::BoxFuture<'c, Result<T>>
            + Send
            + 'static,
    {
        match &self.backend {
            Backend::Sqlite { writer, .. } => writer.write(f).await,
            Backend::Postgres(pg) => pg.write(f).await,
        }
    }

    /// Tells workers (in every process) that a job may have become runnable.
    async fn wake(&self) {
        // One idle slot per process: waking them all would have every one
        // run a claim that only one can win. A slot that finishes a job
        // claims again by itself, so a backlog still spreads.
        self.jobs_ready.notify_one();
        if let Backend::Postgres(pg) = &self.backend {
            pg.notify().await;
        }
    }

    async fn read_conn(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        Ok(self.read.acquire().await?)
    }
}

/// A PostgreSQL ingest whose NOTIFY goes out with its COMMIT (PostgreSQL
/// delivers it then), saving a round trip of its own after it.
fn ingest_notifying(
    c: &mut AnyConnection,
    d: NewDelivery,
    p: Plan,
    max: i64,
) -> futures::future::BoxFuture<'_, Result<(IngestOutcome, bool)>> {
    async move {
        let (outcome, enqueued) = ingest::ingest(c, d, p, max).await?;
        if enqueued || outcome.outcome == Outcome::Accepted {
            postgres::notify_in(c).await?;
        }
        Ok((outcome, enqueued))
    }
    .boxed()
}

/// Times one delivery's transaction is run when PostgreSQL aborts it for a concurrent one.
const INGEST_TRIES: u32 = 3;
/// 1 to 20 ms between ingest tries: the concurrent transaction is short.
const CONTENTION_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(20),
    cap: Duration::from_millis(20),
    jitter: 0.95,
};

/// Claim transactions one `claim_job` runs while other claims hold its candidates.
const CLAIM_TRIES: u32 = 10;
/// 1 to 5 ms between contended claims: long enough for the other claims to commit.
const CLAIM_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(5),
    cap: Duration::from_millis(5),
    jitter: 0.8,
};

#[async_trait]
impl Store for SqlStore {
    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.read).await?;
        Ok(())
    }

    fn jobs_ready(&self) -> Arc<Notify> {
        self.jobs_ready.clone()
    }

    async fn ingest(&self, delivery: NewDelivery, plan: Plan) -> Result<IngestOutcome> {
        let max = self.options.max_attempts;
        let (outcome, enqueued): (IngestOutcome, bool) = if let Backend::Sqlite {
            native: fast,
            ..
        } = &self.backend
        {
            if native::ingest::handles(&delivery, &plan) {
                fast.write(move |c| native::ingest::ingest(c, delivery, plan, max))
                    .await?
            } else {
                self.write(move |c| ingest::ingest(c, delivery, plan, max).boxed())
                    .await?
            }
        } else {
            // GitHub does not redeliver a failed delivery by itself, so a
            // transaction PostgreSQL aborted for a concurrent one (two
            // installation events locking the same targets in another order)
            // is run again here rather than answered 503.
            retry(
                INGEST_TRIES,
                CONTENTION_BACKOFF,
                |_| {
                    let (d, p) = (delivery.clone(), plan.clone());
                    self.write(move |c| ingest_notifying(c, d, p, max))
                },
                |e| {
                    let again = matches!(e, StoreError::Contention(_));
                    if again {
                        tracing::warn!(error = %e, "ingest lost to a concurrent transaction; running it again");
                    }
                    again
                },
            )
            .await?
        };
        // Enqueues wake workers; so does an unsuspend, whose held jobs become
        // runnable. PostgreSQL's other processes heard it with the commit.
        if enqueued || outcome.outcome == Outcome::Accepted {
            self.jobs_ready.notify_one();
        }
        Ok(outcome)
    }

    async fn delivery_body(&self, delivery_id: &str) -> Result<StoredBody> {
        reads::delivery_body(&self.read, delivery_id).await
    }

    async fn prune_delivery_bodies(&self, before: Millis) -> Result<u64> {
        self.prune_delivery_bodies_before(before).await
    }

    async fn prune_push_history(&self, before: Millis) -> Result<u64> {
        self.prune_push_history_before(before).await
    }

    async fn prune_history(&self, before: Millis) -> Result<u64> {
        self.prune_history_before(before).await
    }

    async fn prune_content(&self, retention: ContentRetention) -> Result<u64> {
        self.prune_content_with(retention).await
    }

    async fn claim_job(
        &self,
        owner: &str,
        now: Millis,
        lease_ms: i64,
    ) -> Result<Option<ClaimedJob>> {
        let cap = self.options.max_jobs_per_installation;
        // `Contended` (PostgreSQL: other claims held every candidate) is worth
        // another try almost at once, not a sleep until the next poll.
        enum Try {
            Store(StoreError),
            Contended,
        }
        let claimed = retry(
            CLAIM_TRIES,
            CLAIM_BACKOFF,
            |_| {
                let owner = owner.to_owned();
                async move {
                    let claim = self
                        .write(move |c| {
                            async move { claim::claim(c, &owner, now, lease_ms, cap).await }.boxed()
                        })
                        .await
                        .map_err(Try::Store)?;
                    match claim {
                        claim::Claim::Claimed(job) => Ok(Some(*job)),
                        claim::Claim::Nothing => Ok(None),
                        claim::Claim::Contended => Err(Try::Contended),
                    }
                }
            },
            |e| matches!(e, Try::Contended),
        )
        .await;
        match claimed {
            Ok(job) => Ok(job),
            Err(Try::Contended) => Ok(None),
            Err(Try::Store(e)) => Err(e),
        }
    }

    async fn heartbeat(&self, job: &ClaimedJob, now: Millis, lease_ms: i64) -> Result<bool> {
        let job = job.clone();
        self.write(move |c| async move { queue::heartbeat(c, &job, now, lease_ms).await }.boxed())
            .await
    }

    async fn finish_job(&self, job: &ClaimedJob, result: &SyncResult, now: Millis) -> Result<bool> {
        let (job, result) = (job.clone(), result.clone());
        let ok = self
            .write(move |c| async move { queue::complete(c, &job, &result, now).await }.boxed())
            .await?;
        // A job queued behind this one (same target, or its installation at
        // the cap) may run now, in any process.
        self.wake().await;
        Ok(ok)
    }

    async fn retry_job(
        &self,
        job: &ClaimedJob,
        run_at: Millis,
        error: &str,
        consume_attempt: bool,
        now: Millis,
    ) -> Result<bool> {
        let (job, error) = (job.clone(), error.to_owned());
        let ok = self
            .write(move |c| {
                async move { queue::retry(c, &job, run_at, &error, consume_attempt, now).await }
                    .boxed()
            })
            .await?;
        // The target is free again; a job queued behind it may now run.
        self.wake().await;
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
        self.wake().await;
        Ok(ok)
    }

    async fn release_job(&self, job: &ClaimedJob) -> Result<bool> {
        let job = job.clone();
        self.write(move |c| async move { queue::release(c, &job, now_ms()).await }.boxed())
            .await
    }

    async fn rescue_expired_leases(&self, now: Millis, backoff: Backoff) -> Result<u64> {
        let n = self
            .write(move |c| async move { queue::rescue(c, now, backoff).await }.boxed())
            .await?;
        if n > 0 {
            self.wake().await;
        }
        Ok(n)
    }

    async fn sync_event_counts(&self) -> Result<Vec<(SyncStatus, i64)>> {
        let rows =
            sqlx::query("SELECT status, count(*) AS n FROM connector_sync_event GROUP BY status")
                .fetch_all(&self.read)
                .await?;
        rows.iter()
            .map(|r| Ok((admin::state(r, "status")?, r.try_get("n")?)))
            .collect()
    }

    async fn create_connector(&self, installation_id: i64) -> Result<(ConnectorInstance, bool)> {
        self.write(move |c| create_connector(c, installation_id).boxed())
            .await
    }

    async fn list_connectors(&self, p: &Page) -> Result<Listing<ConnectorInstance>> {
        reads::list_connectors(&self.read, p).await
    }

    async fn get_connector(&self, id: &str) -> Result<ConnectorInstance> {
        reads::get_connector(&self.read, id).await
    }

    async fn create_target(
        &self,
        connector_id: &str,
        target: NewTarget,
    ) -> Result<(Target, SyncEvent)> {
        let (connector_id, max) = (connector_id.to_owned(), self.options.max_attempts);
        let created = self
            .write(move |c| {
                async move { create_target(c, &connector_id, target, max).await }.boxed()
            })
            .await?;
        self.wake().await;
        Ok(created)
    }

    async fn list_targets(&self, connector_id: &str, p: &Page) -> Result<Listing<Target>> {
        reads::list_targets(&self.read, connector_id, p).await
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
        let (id, max) = (target_id.to_owned(), self.options.max_attempts);
        let event = self
            .write(move |c| async move { request_sync(c, &id, max).await }.boxed())
            .await?;
        self.wake().await;
        Ok(event)
    }

    async fn head_poll_ids(&self, after: Option<&str>, limit: i64) -> Result<Vec<String>> {
        head_poll::list_ids(&mut *self.read_conn().await?, after, limit).await
    }

    async fn head_poll_target(&self, target_id: &str) -> Result<Option<HeadPollTarget>> {
        head_poll::state(&mut *self.read_conn().await?, target_id).await
    }

    async fn enqueue_reconcile(&self, seen: &HeadPollTarget, head: &str) -> Result<Option<String>> {
        let (seen, head, max) = (seen.clone(), head.to_owned(), self.options.max_attempts);
        let event = self
            .write(move |c| {
                async move { head_poll::enqueue_reconcile(c, &seen, &head, max).await }.boxed()
            })
            .await?;
        if event.is_some() {
            self.wake().await;
        }
        Ok(event)
    }

    async fn list_sync_events(&self, f: &SyncEventFilter, p: &Page) -> Result<Listing<SyncEvent>> {
        reads::list_sync_events(&self.read, f, p).await
    }

    async fn get_sync_event(&self, id: &str) -> Result<SyncEvent> {
        get_sync_event(&mut *self.read_conn().await?, id).await
    }

    async fn list_deliveries(&self, p: &Page) -> Result<Listing<Delivery>> {
        reads::list_deliveries(&self.read, p).await
    }

    async fn put_blobs(&self, blobs: Vec<(String, Vec<u8>)>) -> Result<()> {
        self.put_blob_bytes(blobs).await
    }

    async fn document_manifest(&self, target_id: &str) -> Result<HashMap<String, String>> {
        content::manifest(&mut *self.read_conn().await?, target_id).await
    }

    async fn list_documents(
        &self,
        target_id: &str,
        prefix: Option<&str>,
        revision: Option<&str>,
        page: &Page,
    ) -> Result<DocumentListing> {
        let mut conn = self.read_conn().await?;
        get_target(&mut conn, target_id).await?;
        snapshot::list_documents(&mut conn, target_id, prefix, revision, page).await
    }

    async fn get_document(
        &self,
        target_id: &str,
        path: &str,
        revision: Option<&str>,
    ) -> Result<(Document, Vec<u8>)> {
        snapshot::get_document(&mut *self.read_conn().await?, target_id, path, revision).await
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
        reads::get_delivery(&self.read, id).await
    }

    async fn delivery_recorded(&self, guid: &str) -> Result<bool> {
        self.delivery_is_recorded(guid).await
    }

    async fn claim_redelivery(
        &self,
        guid: &str,
        hook_delivery_id: i64,
        now: Millis,
    ) -> Result<bool> {
        self.claim_redelivery_of(guid, hook_delivery_id, now).await
    }

    async fn release_redelivery(&self, guid: &str) -> Result<()> {
        self.release_redelivery_of(guid).await
    }

    async fn prune_redelivery_claims(&self, before: Millis) -> Result<u64> {
        self.prune_redelivery_claims_before(before).await
    }
}
