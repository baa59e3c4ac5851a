//! Worker-side queue statements after the claim (`claim.rs`). Every change
//! to a claimed job is fenced on `(id, attempt, state = 'running')`: a worker
//! whose lease was taken over can never complete, retry or fail the job (zero
//! rows updated tells it so).

use super::dialect::{exists, lock_target};
use crate::retry::Backoff;
use crate::store::models::*;
use crate::store::Result;
use sqlx::{AnyConnection, Row};

/// The fence, its two parameters numbered from `first`: the job id, then the attempt.
fn fence(first: usize) -> String {
    format!(
        "id = ${first} AND attempt = ${} AND state = 'running'",
        first + 1
    )
}

pub async fn heartbeat(
    conn: &mut AnyConnection,
    job: &ClaimedJob,
    now: Millis,
    lease_ms: i64,
) -> Result<bool> {
    let n = sqlx::query(&format!(
        "UPDATE sync_job SET lease_expires_at = $1 WHERE {}",
        fence(2)
    ))
    .bind(now + lease_ms)
    .bind(&job.job_id)
    .bind(job.attempt)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// A job some worker holds (or held), as the fenced statements name it.
#[derive(Clone, Copy)]
struct Held<'a> {
    job_id: &'a str,
    attempt: i64,
    event_id: &'a str,
    target_id: &'a str,
}

impl<'a> From<&'a ClaimedJob> for Held<'a> {
    fn from(job: &'a ClaimedJob) -> Self {
        Held {
            job_id: &job.job_id,
            attempt: job.attempt,
            event_id: &job.job.connector_sync_event_id,
            target_id: &job.job.connector_target_id,
        }
    }
}

/// Marks the job finished (fenced, narrowed by `extra`, whose `$1` is
/// `now`); returns false if the lease was lost.
async fn finish(
    conn: &mut AnyConnection,
    held: Held<'_>,
    error: Option<&str>,
    now: Millis,
    extra: &str,
) -> Result<bool> {
    let n = sqlx::query(&format!(
        "UPDATE sync_job SET state = 'finished', finished_at = $1, lease_owner = NULL, lease_expires_at = NULL, \
         last_error = coalesce($2, last_error) WHERE {}{extra}",
        fence(3)
    ))
    .bind(now)
    .bind(error)
    .bind(held.job_id)
    .bind(held.attempt)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Applies the reconciled content and completes the job in one transaction,
/// so a crash leaves either both or neither (a rerun then finds nothing left
/// to change). `partial` keeps `last_synced_sha` where it was, so the next
/// sync of the same head retries the files that failed.
pub async fn complete(
    conn: &mut AnyConnection,
    job: &ClaimedJob,
    result: &SyncResult,
    now: Millis,
) -> Result<bool> {
    lock_target(conn, &job.job.connector_target_id).await?;
    if !finish(conn, job.into(), None, now, "").await? {
        return Ok(false);
    }
    let event_id = &job.job.connector_sync_event_id;
    let target_id = &job.job.connector_target_id;
    let complete = result.failures.is_empty();
    let head = result.head_sha.clone().or_else(|| job.job.head_sha.clone());
    let at = super::content::Apply {
        target_id,
        event_id,
        head_sha: head.as_deref(),
        now,
    };
    super::content::apply_changes(conn, &at, &result.changes).await?;
    super::content::record_revision(conn, &at, complete).await?;
    sqlx::query(
        "UPDATE connector_sync_event SET status = $1, head_sha = coalesce($2, head_sha), created_count = $3, \
         updated_count = $4, deleted_count = $5, skipped_count = $6, skipped_reasons = $7, failures = $8, \
         completed_at = $9, last_error = NULL WHERE id = $10",
    )
    .bind(if complete { SyncStatus::Completed } else { SyncStatus::Partial }.as_str())
    .bind(&head)
    .bind(result.counts.created)
    .bind(result.counts.updated)
    .bind(result.counts.deleted)
    .bind(result.counts.skipped)
    .bind(serde_json::to_string(&result.skipped_reasons).map_err(anyhow::Error::from)?)
    .bind(serde_json::to_string(&result.failures).map_err(anyhow::Error::from)?)
    .bind(now)
    .bind(event_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE connector_target SET last_synced_sha = CASE WHEN $1 THEN coalesce($2, last_synced_sha) \
         ELSE last_synced_sha END, last_synced_at = $3, health = CASE WHEN $1 THEN 'ok' ELSE 'failing' END, \
         updated_at = $3 WHERE id = $4",
    )
    .bind(complete)
    .bind(&head)
    .bind(now)
    .bind(target_id)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

pub async fn fail(
    conn: &mut AnyConnection,
    job: &ClaimedJob,
    error: &str,
    health: FailureHealth,
    now: Millis,
) -> Result<bool> {
    lock_target(conn, &job.job.connector_target_id).await?;
    finish_failed(conn, job.into(), error, health, now, "").await
}

/// Finishes the job (fenced) and its sync event `failed`, and marks the target.
async fn finish_failed(
    conn: &mut AnyConnection,
    held: Held<'_>,
    error: &str,
    health: FailureHealth,
    now: Millis,
    extra: &str,
) -> Result<bool> {
    if !finish(conn, held, Some(error), now, extra).await? {
        return Ok(false);
    }
    fail_event(conn, held.event_id, held.target_id, error, health, now).await?;
    Ok(true)
}

async fn fail_event(
    conn: &mut AnyConnection,
    event_id: &str,
    target_id: &str,
    error: &str,
    health: FailureHealth,
    now: Millis,
) -> Result<()> {
    sqlx::query(
        "UPDATE connector_sync_event SET status = 'failed', last_error = $1, completed_at = $2, next_attempt_at = NULL \
         WHERE id = $3",
    )
    .bind(error)
    .bind(now)
    .bind(event_id)
    .execute(&mut *conn)
    .await?;
    // Flags that say more than "failing" (deleted branch, lost access) stay.
    let sql = match health {
        FailureHealth::Failing => {
            "UPDATE connector_target SET health = 'failing', updated_at = $1 WHERE id = $2 AND health IN ('pending', 'ok')"
        }
        FailureHealth::Inaccessible => {
            "UPDATE connector_target SET health = 'inaccessible', updated_at = $1 WHERE id = $2 AND health <> 'branch_deleted'"
        }
    };
    sqlx::query(sql)
        .bind(now)
        .bind(target_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A sync of the job's target queued while the job ran came from a later
/// push or request, so it is newer: putting this job back in the queue would
/// apply the older head after it. Such a job is finished `superseded` instead.
/// `None`: nothing newer is queued. `Some(false)`: the fence failed (the lease
/// was lost). `extra` narrows the fence (the rescuer's "still expired").
async fn supersede_if_outdated(
    conn: &mut AnyConnection,
    held: Held<'_>,
    why: &str,
    now: Millis,
    extra: &str,
) -> Result<Option<bool>> {
    let newer = exists(
        conn,
        "SELECT count(*) FROM (SELECT 1 FROM sync_job WHERE target_id = $1 AND id <> $2 \
         AND state IN ('available', 'retryable') LIMIT 1) x",
        &[held.target_id, held.job_id],
    )
    .await?;
    if !newer {
        return Ok(None);
    }
    if !finish(conn, held, Some(why), now, extra).await? {
        return Ok(Some(false));
    }
    sqlx::query(
        "UPDATE connector_sync_event SET status = 'superseded', completed_at = $1, last_error = $2, \
         next_attempt_at = NULL WHERE id = $3",
    )
    .bind(now)
    .bind(why)
    .bind(held.event_id)
    .execute(&mut *conn)
    .await?;
    Ok(Some(true))
}

pub async fn retry(
    conn: &mut AnyConnection,
    job: &ClaimedJob,
    run_at: Millis,
    error: &str,
    consume_attempt: bool,
    now: Millis,
) -> Result<bool> {
    lock_target(conn, &job.job.connector_target_id).await?;
    if let Some(done) = supersede_if_outdated(conn, job.into(), error, now, "").await? {
        return Ok(done);
    }
    let refund = i64::from(!consume_attempt);
    let n = sqlx::query(&format!(
        "UPDATE sync_job SET state = 'retryable', run_at = $1, last_error = $2, lease_owner = NULL, \
         lease_expires_at = NULL, attempt = attempt - $3 WHERE {}",
        fence(4)
    ))
    .bind(run_at)
    .bind(error)
    .bind(refund)
    .bind(&job.job_id)
    .bind(job.attempt)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 0 {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE connector_sync_event SET status = 'queued', last_error = $1, next_attempt_at = $2, attempts = $3 WHERE id = $4",
    )
    .bind(error)
    .bind(run_at)
    .bind(job.attempt - refund)
    .bind(&job.job.connector_sync_event_id)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

pub async fn release(conn: &mut AnyConnection, job: &ClaimedJob, now: Millis) -> Result<bool> {
    lock_target(conn, &job.job.connector_target_id).await?;
    let why = "released at shutdown; a newer sync of the target is queued";
    if let Some(done) = supersede_if_outdated(conn, job.into(), why, now, "").await? {
        return Ok(done);
    }
    let n = sqlx::query(&format!(
        "UPDATE sync_job SET state = 'available', attempt = attempt - 1, lease_owner = NULL, lease_expires_at = NULL \
         WHERE {}",
        fence(1)
    ))
    .bind(&job.job_id)
    .bind(job.attempt)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 1 {
        sqlx::query(
            "UPDATE connector_sync_event SET status = 'queued', attempts = $1 WHERE id = $2",
        )
        .bind(job.attempt - 1)
        .bind(&job.job.connector_sync_event_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(n == 1)
}

/// Expired leases: the worker died or stalled. The attempt it used counts,
/// and the job waits `backoff` like any failed attempt: a job that kills the
/// process it runs in (a crash loop) is retried ever more slowly and fails
/// for good after its maximum attempts instead of running again at once on
/// every restart. Each job is taken back under its target's lock (taken in target order, as
/// ingest takes them, so rescuers in several processes cannot deadlock) and
/// only if its lease is still the expired one (a worker may heartbeat or
/// finish meanwhile).
pub async fn rescue(conn: &mut AnyConnection, now: Millis, backoff: Backoff) -> Result<u64> {
    let expired = sqlx::query(
        "SELECT id, attempt, max_attempts, sync_event_id, target_id FROM sync_job \
         WHERE state = 'running' AND lease_expires_at < $1 ORDER BY target_id",
    )
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let msg = "lease expired: the worker stopped heartbeating (stalled, or its process died)";
    let mut rescued = 0;
    for row in &expired {
        let id: String = row.try_get("id")?;
        let attempt: i64 = row.try_get("attempt")?;
        let event_id: String = row.try_get("sync_event_id")?;
        let target_id: String = row.try_get("target_id")?;
        let out_of_attempts = attempt >= row.try_get::<i64, _>("max_attempts")?;
        lock_target(conn, &target_id).await?;
        let still_expired = " AND lease_expires_at < $1";
        let held = Held {
            job_id: &id,
            attempt,
            event_id: &event_id,
            target_id: &target_id,
        };
        let taken_back = match supersede_if_outdated(conn, held, msg, now, still_expired).await? {
            Some(done) => done,
            None if out_of_attempts => {
                let msg = format!("gave up after {attempt} attempts: {msg}");
                finish_failed(conn, held, &msg, FailureHealth::Failing, now, still_expired).await?
            }
            None => {
                let delay = backoff.delay(attempt, &mut rand::thread_rng());
                let run_at = now + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX / 2);
                requeue_expired(conn, held, msg, now, run_at).await?
            }
        };
        rescued += u64::from(taken_back);
    }
    Ok(rescued)
}

/// Puts a job whose lease expired back in the queue, due at `run_at` (the
/// attempt it used counts); fenced, and only while the lease is still expired.
async fn requeue_expired(
    conn: &mut AnyConnection,
    held: Held<'_>,
    why: &str,
    now: Millis,
    run_at: Millis,
) -> Result<bool> {
    let n = sqlx::query(&format!(
        "UPDATE sync_job SET state = 'retryable', run_at = $5, last_error = $2, lease_owner = NULL, \
         lease_expires_at = NULL WHERE {} AND lease_expires_at < $1",
        fence(3)
    ))
    .bind(now)
    .bind(why)
    .bind(held.job_id)
    .bind(held.attempt)
    .bind(run_at)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 1 {
        sqlx::query(
            "UPDATE connector_sync_event SET status = 'queued', last_error = $1, next_attempt_at = $2 WHERE id = $3",
        )
        .bind(why)
        .bind(run_at)
        .bind(held.event_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(n == 1)
}
