//! Storage: one trait, implemented once over SQL for two backends (the
//! embedded SQLite default and PostgreSQL for many processes; see [`sql`]).
//! Everything that must be atomic is one trait method, so a backend can keep
//! its transaction discipline to itself.

pub mod database_url;
pub mod models;
pub mod sql;
pub mod states;

use crate::ingress::dispatch::Plan;
use async_trait::async_trait;
use models::*;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    #[error("{0}")]
    Conflict(String),
    /// The request named something malformed (a cursor, say): callers answer 400.
    #[error("{0}")]
    Invalid(String),
    /// The store could not commit (locked, disk full, gone): callers answer 503.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// PostgreSQL gave up on this transaction in favour of a concurrent one
    /// (deadlock, serialization failure): running it again will do.
    #[error("store busy: {0}")]
    Contention(String),
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::RowNotFound => StoreError::NotFound,
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StoreError::Unavailable(e.to_string())
            }
            sqlx::Error::Database(db) if is_contention(db.as_ref()) => {
                StoreError::Contention(db.message().to_owned())
            }
            sqlx::Error::Database(db) if is_unavailable(db.as_ref()) => {
                StoreError::Unavailable(db.message().to_owned())
            }
            _ => StoreError::Internal(e.into()),
        }
    }
}

fn is_postgres(db: &dyn sqlx::error::DatabaseError) -> bool {
    db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
}

/// PostgreSQL's deadlock_detected (40P01) and serialization_failure (40001).
fn is_contention(db: &dyn sqlx::error::DatabaseError) -> bool {
    is_postgres(db) && matches!(db.code().as_deref(), Some("40P01" | "40001"))
}

/// The store is there but cannot take this write right now: SQLite's
/// BUSY/LOCKED/IOERR/FULL/CANTOPEN/READONLY primary codes; PostgreSQL's
/// connection (08), resources (53), operator intervention (57) and
/// transaction rollback (40: deadlock, serialization) classes.
fn is_unavailable(db: &dyn sqlx::error::DatabaseError) -> bool {
    let Some(code) = db.code() else { return false };
    if is_postgres(db) {
        return matches!(code.get(..2), Some("08" | "53" | "57" | "40"));
    }
    code.parse::<i32>()
        .is_ok_and(|c| matches!(c & 0xff, 5 | 6 | 8 | 10 | 13 | 14))
}

/// Settings the store enforces for every worker that shares it.
#[derive(Debug, Clone, Copy)]
pub struct StoreOptions {
    /// Attempts a newly queued job gets.
    pub max_attempts: i64,
    /// Jobs of one installation that may run at once, across all workers.
    pub max_jobs_per_installation: i64,
    /// PostgreSQL pool size per process.
    pub max_connections: u32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            max_jobs_per_installation: 4,
            max_connections: 10,
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A delivery body kept for inspection and replay.
#[derive(Debug, Clone)]
pub struct StoredBody {
    pub event: String,
    pub content_type: String,
    pub body: Vec<u8>,
    pub hook_id: Option<String>,
    pub hook_installation_target_id: Option<String>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Readiness: the store answers a trivial query.
    async fn ping(&self) -> Result<()>;

    /// Woken whenever a job becomes runnable; workers also poll as a fallback.
    fn jobs_ready(&self) -> Arc<Notify>;

    // --- ingress -----------------------------------------------------------

    /// Records the delivery and applies its plan in one transaction. A delivery
    /// id already recorded yields [`Outcome::Duplicate`] and changes nothing.
    /// A replay (`replay_of` set) is recorded as `<original>:replay:<n>`.
    async fn ingest(&self, delivery: NewDelivery, plan: Plan) -> Result<IngestOutcome>;
    async fn delivery_body(&self, delivery_id: &str) -> Result<StoredBody>;
    /// Drops retained bodies of deliveries received before `before`.
    async fn prune_delivery_bodies(&self, before: Millis) -> Result<u64>;
    /// Deletes finished jobs, final sync events (except those a stored document
    /// was last written by) and deliveries older than `before`. Returns rows deleted.
    async fn prune_history(&self, before: Millis) -> Result<u64>;
    /// Forgets recorded pushes (the stale-push rule's memory) received before `before`.
    async fn prune_push_history(&self, before: Millis) -> Result<u64>;
    /// Drops what no retained revision can show: documents of removed targets,
    /// revisions past `retention`, document versions only they showed, and
    /// unreferenced blobs past the grace period. Returns rows deleted.
    async fn prune_content(&self, retention: ContentRetention) -> Result<u64>;

    // --- queue -------------------------------------------------------------

    /// Claims a runnable job under a lease, or `None`: fair across
    /// installations, at most [`StoreOptions::max_jobs_per_installation`]
    /// running per installation, one per target.
    async fn claim_job(
        &self,
        owner: &str,
        now: Millis,
        lease_ms: i64,
    ) -> Result<Option<ClaimedJob>>;
    /// Extends the lease; `false` means it was lost and the worker must stop.
    async fn heartbeat(&self, job: &ClaimedJob, now: Millis, lease_ms: i64) -> Result<bool>;
    /// Records the result (`completed`, or `partial` with failures). Fenced.
    async fn finish_job(&self, job: &ClaimedJob, result: &SyncResult, now: Millis) -> Result<bool>;
    /// Puts the job back for another try at `run_at`. A rate-limit wait does
    /// not consume the attempt. Fenced.
    async fn retry_job(
        &self,
        job: &ClaimedJob,
        run_at: Millis,
        error: &str,
        consume_attempt: bool,
        now: Millis,
    ) -> Result<bool>;
    /// Ends the job and its sync event `failed`, and marks the target. Fenced.
    async fn fail_job(
        &self,
        job: &ClaimedJob,
        error: &str,
        health: FailureHealth,
        now: Millis,
    ) -> Result<bool>;
    /// Returns a claimed job untouched (shutdown before it ran). Fenced.
    async fn release_job(&self, job: &ClaimedJob) -> Result<bool>;
    /// Jobs whose lease expired go back to the queue after `backoff` (the
    /// attempt counts), or fail when out of attempts.
    async fn rescue_expired_leases(
        &self,
        now: Millis,
        backoff: crate::retry::Backoff,
    ) -> Result<u64>;
    /// Sync events by status, for /metrics.
    async fn sync_event_counts(&self) -> Result<Vec<(SyncStatus, i64)>>;

    // --- admin -------------------------------------------------------------

    /// Creates the connector for an installation, or returns the existing one (`false`).
    async fn create_connector(&self, installation_id: i64) -> Result<(ConnectorInstance, bool)>;
    async fn list_connectors(&self, page: &Page) -> Result<Listing<ConnectorInstance>>;
    async fn get_connector(&self, id: &str) -> Result<ConnectorInstance>;
    /// Creates the target and queues its initial sync in one transaction.
    async fn create_target(
        &self,
        connector_id: &str,
        target: NewTarget,
    ) -> Result<(Target, SyncEvent)>;
    async fn list_targets(&self, connector_id: &str, page: &Page) -> Result<Listing<Target>>;
    async fn get_target(&self, id: &str) -> Result<Target>;
    /// Removes the target from tracking and cancels its pending jobs.
    async fn delete_target(&self, id: &str) -> Result<()>;
    /// Queues a manual sync (head resolved when it runs).
    async fn request_sync(&self, target_id: &str) -> Result<SyncEvent>;
    /// Targets the missed-push pass looks at (active, of active connectors),
    /// by id after `after`.
    async fn head_poll_ids(&self, after: Option<&str>, limit: i64) -> Result<Vec<String>>;
    /// One target as the missed-push pass compares it; `None` if no longer active.
    async fn head_poll_target(&self, target_id: &str) -> Result<Option<HeadPollTarget>>;
    /// Queues a `reconcile` sync at `head` if `seen` still holds and the target
    /// needs it; the new sync event's id.
    async fn enqueue_reconcile(&self, seen: &HeadPollTarget, head: &str) -> Result<Option<String>>;
    async fn list_sync_events(
        &self,
        filter: &SyncEventFilter,
        page: &Page,
    ) -> Result<Listing<SyncEvent>>;
    async fn get_sync_event(&self, id: &str) -> Result<SyncEvent>;
    async fn list_deliveries(&self, page: &Page) -> Result<Listing<Delivery>>;
    async fn get_delivery(&self, id: &str) -> Result<Delivery>;

    // --- content -------------------------------------------------------------

    /// Stores files' bytes once under their git blob ids, in one short write
    /// of their own, before any document points at them. Each `sha` must be
    /// its bytes' git blob id (else [`StoreError::Invalid`] and nothing is
    /// written); an already stored blob is left as it is.
    async fn put_blobs(&self, blobs: Vec<(String, Vec<u8>)>) -> Result<()>;

    /// [`Store::put_blobs`] for one file.
    async fn put_blob(&self, sha: &str, bytes: &[u8]) -> Result<()> {
        self.put_blobs(vec![(sha.to_owned(), bytes.to_vec())]).await
    }
    /// What the store holds of a target: path → git blob SHA.
    async fn document_manifest(&self, target_id: &str) -> Result<HashMap<String, String>>;
    /// One revision's documents: `revision` (a head SHA), else the cursor's
    /// revision, else the latest. A head no longer retained is `NotFound`; a
    /// cursor whose revision is gone is `Conflict`.
    async fn list_documents(
        &self,
        target_id: &str,
        prefix: Option<&str>,
        revision: Option<&str>,
        page: &Page,
    ) -> Result<DocumentListing>;
    /// A document and its bytes, now or as of `revision` (a head SHA).
    async fn get_document(
        &self,
        target_id: &str,
        path: &str,
        revision: Option<&str>,
    ) -> Result<(Document, Vec<u8>)>;
    /// The target's change feed after `after` (a `seq`), oldest first.
    async fn list_changes(
        &self,
        target_id: &str,
        after: i64,
        limit: i64,
    ) -> Result<Listing<ChangeEntry>>;

    // --- failed-delivery redelivery ----------------------------------------

    /// Whether a delivery with this `X-GitHub-Delivery` is recorded.
    async fn delivery_recorded(&self, guid: &str) -> Result<bool>;
    /// Claims asking GitHub to redeliver `guid`, once ever: `false` if it
    /// was claimed before (by any process).
    async fn claim_redelivery(
        &self,
        guid: &str,
        hook_delivery_id: i64,
        now: Millis,
    ) -> Result<bool>;
    /// Gives a claim back (GitHub refused the request; nothing was redelivered).
    async fn release_redelivery(&self, guid: &str) -> Result<()>;
    /// Drops claims made before `before`.
    async fn prune_redelivery_claims(&self, before: Millis) -> Result<u64>;
}
