//! The worker pool: claim a job under a lease, run the reconciler while
//! heartbeating, record the result (fenced), and on failure retry with
//! backoff or fail for good. A rescuer returns jobs whose lease expired.

use super::{ReconcileError, Reconciler};
use crate::store::models::{now_ms, ClaimedJob, FailureHealth};
use crate::store::Store;
use crate::sync::policy::{LeasePolicy, RetryPolicy};
use futures::FutureExt;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
pub struct WorkerSettings {
    pub concurrency: usize,
    /// Enforced by the store at claim time, across every worker process.
    pub max_jobs_per_installation: i64,
    pub retry: RetryPolicy,
    pub lease: LeasePolicy,
    /// Fallback poll when no wake-up arrives.
    pub poll_interval: Duration,
    /// On shutdown, how long a running job may still take before it is
    /// abandoned and released for another worker.
    pub shutdown_grace: Duration,
}

impl Default for WorkerSettings {
    fn default() -> Self {
        Self {
            concurrency: 2,
            max_jobs_per_installation: 4,
            retry: RetryPolicy::default(),
            lease: LeasePolicy::new(Duration::from_secs(30)),
            poll_interval: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(20),
        }
    }
}

pub struct WorkerPool {
    store: Arc<dyn Store>,
    reconciler: Arc<dyn Reconciler>,
    settings: WorkerSettings,
    /// Identifies this process's claims in `lease_owner`.
    owner: String,
}

impl WorkerPool {
    pub fn new(
        store: Arc<dyn Store>,
        reconciler: Arc<dyn Reconciler>,
        settings: WorkerSettings,
    ) -> Self {
        let owner = format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple());
        Self {
            store,
            reconciler,
            settings,
            owner,
        }
    }

    /// Runs the workers and the lease rescuer until `shutdown` is cancelled and
    /// in-flight jobs have finished or been released.
    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..this.settings.concurrency.max(1) {
            let (w, s) = (this.clone(), shutdown.clone());
            tasks.spawn(async move { w.supervise(i, s).await });
        }
        let (w, s) = (this.clone(), shutdown.clone());
        tasks.spawn(async move { w.rescue(s).await });
        while tasks.join_next().await.is_some() {}
        tracing::info!("workers stopped");
    }

    async fn rescue(&self, shutdown: CancellationToken) {
        let every = (self.settings.lease.ttl / 2).max(Duration::from_millis(50));
        let retry = &self.settings.retry;
        let backoff = crate::retry::Backoff::new(retry.base, retry.cap);
        loop {
            match self.store.rescue_expired_leases(now_ms(), backoff).await {
                Ok(0) => {}
                Ok(n) => {
                    metrics::counter!("connectord_lease_expirations_total").increment(n);
                    tracing::warn!(jobs = n, "returned jobs whose lease expired to the queue");
                }
                Err(e) => tracing::warn!(error = %e, "lease rescue failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Keeps slot `slot` working: a panic outside a job (a job's own panic
    /// is caught in [`Self::run_job`]) would otherwise take the slot away for
    /// the life of the process, one fewer worker each time.
    async fn supervise(self: Arc<Self>, slot: usize, shutdown: CancellationToken) {
        loop {
            let (w, s) = (self.clone(), shutdown.clone());
            match tokio::spawn(async move { w.work(slot, s).await }).await {
                Ok(()) => return,
                Err(e) if e.is_panic() && !shutdown.is_cancelled() => {
                    metrics::counter!("connectord_worker_restarts_total").increment(1);
                    tracing::error!(slot, "a worker slot panicked; starting it again");
                    // Not in a tight loop if it panics at once again.
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(self.settings.poll_interval) => {}
                    }
                }
                Err(_) => return,
            }
        }
    }

    async fn work(&self, slot: usize, shutdown: CancellationToken) {
        let ready = self.store.jobs_ready();
        let owner = format!("{}/{slot}", self.owner);
        let lease_ms = self.settings.lease.ttl.as_millis() as i64;
        while !shutdown.is_cancelled() {
            // Register for the wake-up before looking, so an enqueue between
            // an empty claim and the wait is not missed.
            let notified = ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            match self.store.claim_job(&owner, now_ms(), lease_ms).await {
                Ok(Some(job)) => {
                    // Wake-ups wake one idle slot; the winner passes it on,
                    // so a batch of jobs spreads over the idle slots one
                    // claim at a time and an empty queue stops the chain.
                    ready.notify_one();
                    self.run_job(job, &shutdown).await
                }
                Ok(None) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = &mut notified => {}
                        _ = tokio::time::sleep(self.settings.poll_interval) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming a job failed");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(self.settings.poll_interval) => {}
                    }
                }
            }
        }
    }

    #[tracing::instrument(name = "sync_job", skip_all, fields(
        job = %job.job_id, attempt = job.attempt, target = %job.job.connector_target_id,
        event = %job.job.connector_sync_event_id, head = ?job.job.head_sha))]
    async fn run_job(&self, job: ClaimedJob, shutdown: &CancellationToken) {
        let started = Instant::now();
        let outcome = {
            // A panic in a sync is that job's failure (retried with backoff
            // like any transient error, and final after the last attempt),
            // never the worker's: it is caught here and recorded.
            let reconcile = AssertUnwindSafe(self.reconciler.reconcile(&job))
                .catch_unwind()
                .map(|r| {
                    r.unwrap_or_else(|panic| {
                        let what = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "no message".into());
                        tracing::error!(panic = %what, "the sync panicked");
                        Err(ReconcileError::Transient(format!(
                            "the sync stopped on an internal error (a panic: {what})"
                        )))
                    })
                });
            tokio::pin!(reconcile);
            let heartbeat = self.heartbeat(&job);
            tokio::pin!(heartbeat);
            let grace = async {
                shutdown.cancelled().await;
                tokio::time::sleep(self.settings.shutdown_grace).await;
            };
            tokio::select! {
                r = &mut reconcile => Some(r),
                () = &mut heartbeat => {
                    tracing::warn!("lease lost; abandoning the job to its new owner");
                    return;
                }
                () = grace => None,
            }
        };
        let Some(result) = outcome else {
            match self.store.release_job(&job).await {
                Ok(_) => tracing::info!("shutdown: released the unfinished job"),
                Err(e) => {
                    tracing::warn!(error = %e, "shutdown: could not release the job; its lease will expire")
                }
            }
            return;
        };
        let label = match &result {
            Ok(r) if r.failures.is_empty() => "completed",
            Ok(_) => "partial",
            Err(ReconcileError::Transient(_)) => "transient_error",
            Err(ReconcileError::Permanent(_) | ReconcileError::Inaccessible(_)) => "failed",
            Err(ReconcileError::RateLimited { .. }) => "rate_limited",
        };
        metrics::histogram!("connectord_job_duration_seconds", "outcome" => label)
            .record(started.elapsed().as_secs_f64());
        if let Err(e) = self.record(&job, result).await {
            tracing::error!(error = %e, "could not record the job's result; its lease will expire and it will run again");
        }
    }

    /// Renews the lease until it is lost (returns) or the caller stops polling.
    async fn heartbeat(&self, job: &ClaimedJob) {
        let lease_ms = self.settings.lease.ttl.as_millis() as i64;
        loop {
            tokio::time::sleep(self.settings.lease.heartbeat).await;
            match self.store.heartbeat(job, now_ms(), lease_ms).await {
                Ok(true) => {}
                Ok(false) => return,
                // A failed heartbeat is not a lost lease; try again next beat.
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
        }
    }

    async fn record(
        &self,
        job: &ClaimedJob,
        result: Result<crate::store::models::SyncResult, ReconcileError>,
    ) -> crate::store::Result<()> {
        let now = now_ms();
        let kept = match result {
            Ok(r) => match self.store.finish_job(job, &r, now).await {
                // The completion was refused (a blob it names is gone, say):
                // nothing was applied, so the sync runs again like any transient failure.
                Err(crate::store::StoreError::Conflict(msg)) => {
                    return Box::pin(self.record(job, Err(ReconcileError::Transient(msg)))).await
                }
                other => other?,
            },
            Err(ReconcileError::Permanent(msg)) => {
                self.store
                    .fail_job(job, &msg, FailureHealth::Failing, now)
                    .await?
            }
            Err(ReconcileError::Inaccessible(msg)) => {
                self.store
                    .fail_job(job, &msg, FailureHealth::Inaccessible, now)
                    .await?
            }
            Err(ReconcileError::RateLimited {
                message,
                retry_after,
            }) => {
                let run_at = now + retry_after.as_millis() as i64;
                self.store
                    .retry_job(job, run_at, &format!("rate limited: {message}"), false, now)
                    .await?
            }
            Err(ReconcileError::Transient(msg)) => {
                if self.settings.retry.exhausted(job.attempt, job.max_attempts) {
                    let msg = format!("gave up after {} attempts: {msg}", job.attempt);
                    self.store
                        .fail_job(job, &msg, FailureHealth::Failing, now)
                        .await?
                } else {
                    let delay = self
                        .settings
                        .retry
                        .backoff(job.attempt, &mut rand::thread_rng());
                    metrics::counter!("connectord_job_retries_total").increment(1);
                    self.store
                        .retry_job(job, now + delay.as_millis() as i64, &msg, true, now)
                        .await?
                }
            }
        };
        if !kept {
            metrics::counter!("connectord_fencing_rejections_total").increment(1);
            tracing::warn!("the job's lease was taken over; this worker's result was discarded");
        }
        Ok(())
    }
}
