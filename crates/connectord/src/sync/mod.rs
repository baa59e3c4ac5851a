//! Sync workers and the seam to the content side: a [`Reconciler`] brings a
//! target to a head SHA. The GitHub reconciler comes with the sync issue;
//! until one is configured, workers do not run (jobs stay queued).

pub mod head_poll;
pub mod policy;
pub mod worker;

use crate::store::models::{ClaimedJob, SyncResult};
use async_trait::async_trait;
use std::time::Duration;

/// How a reconciliation failed decides what the queue does next.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReconcileError {
    /// Worth retrying with backoff (5xx, timeouts, connection errors).
    #[error("{0}")]
    Transient(String),
    /// Retrying cannot help (bad request, missing branch, forbidden).
    #[error("{0}")]
    Permanent(String),
    /// The App can no longer read the repository (404, or 401 after a token
    /// refresh): fails at once and marks the target `inaccessible`.
    #[error("{0}")]
    Inaccessible(String),
    /// Told to wait (429, or 403 with `retry-after`): rescheduled after the
    /// wait without using up an attempt.
    #[error("rate limited: {message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
    },
}

#[async_trait]
pub trait Reconciler: Send + Sync + 'static {
    /// Brings the job's target to its head SHA (resolving the branch head
    /// first when the job has none) and reports what changed.
    async fn reconcile(&self, job: &ClaimedJob) -> Result<SyncResult, ReconcileError>;
}
