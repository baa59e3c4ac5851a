//! Worker-side queue statements. Every change to a claimed job is fenced on
//! `(id, attempt, state = 'running')`: a worker whose lease was taken over can
//! never complete, retry or fail the job (zero rows updated tells it so).

use crate::store::models::*;
use crate::store::Result;
use sqlx::{Row, SqliteConnection};

const FENCE: &str = "id = ? AND attempt = ? AND state = 'running'";

pub async fn claim(
    conn: &mut SqliteConnection,
    owner: &str,
    now: Millis,
    lease_ms: i64,
) -> Result<Option<ClaimedJob>> {
    // Runnable: due, its installation active, its target tracked, and no other
    // job of the same target running (the unique index backs this up).
    let row = sqlx::query(
        "UPDATE sync_job SET state = 'running', attempt = attempt + 1, lease_owner = ?1, lease_expires_at = ?2 + ?3 \
         WHERE id = (SELECT j.id FROM sync_job j \
                     JOIN connector_target t ON t.id = j.target_id \
                     JOIN connector_instance c ON c.id = t.connector_id \
                     WHERE j.state IN ('available', 'retryable') AND j.run_at <= ?2 \
                       AND c.status = 'active' AND t.status = 'active' \
                       AND NOT EXISTS (SELECT 1 FROM sync_job r WHERE r.target_id = j.target_id AND r.state = 'running') \
                     ORDER BY j.run_at, j.id LIMIT 1) \
         RETURNING id, attempt, max_attempts, payload, sync_event_id, target_id",
    )
    .bind(owner)
    .bind(now)
    .bind(lease_ms)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let job_id: String = row.try_get("id")?;
    let attempt: i64 = row.try_get("attempt")?;
    let event_id: String = row.try_get("sync_event_id")?;
    let target_id: String = row.try_get("target_id")?;
    let mut job: GithubConnectorSyncJob =
        serde_json::from_str(row.try_get::<&str, _>("payload")?).map_err(anyhow::Error::from)?;
    // The repository may have been renamed (or its id learned) since enqueue.
    let target = sqlx::query("SELECT repository_id, repository_full_name, path_prefix, max_file_bytes FROM connector_target WHERE id = ?")
        .bind(&target_id)
        .fetch_one(&mut *conn)
        .await?;
    job.repository_id = target.try_get("repository_id")?;
    job.repository_full_name = target.try_get("repository_full_name")?;
    sqlx::query(
        "UPDATE connector_sync_event SET status = 'running', attempts = ?, started_at = coalesce(started_at, ?), \
         next_attempt_at = NULL WHERE id = ?",
    )
    .bind(attempt)
    .bind(now)
    .bind(&event_id)
    .execute(&mut *conn)
    .await?;
    Ok(Some(ClaimedJob {
        job_id,
        attempt,
        max_attempts: row.try_get("max_attempts")?,
        job,
        path_prefix: target.try_get("path_prefix")?,
        max_file_bytes: target.try_get("max_file_bytes")?,
    }))
}

pub async fn heartbeat(
    conn: &mut SqliteConnection,
    job: &ClaimedJob,
    now: Millis,
    lease_ms: i64,
) -> Result<bool> {
    let n = sqlx::query(&format!(
        "UPDATE sync_job SET lease_expires_at = ? WHERE {FENCE}"
    ))
    .bind(now + lease_ms)
    .bind(&job.job_id)
    .bind(job.attempt)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// Marks the job finished (fenced); returns false if the lease was lost.
async fn finish(
    conn: &mut SqliteConnection,
    job: &ClaimedJob,
    error: Option<&str>,
    now: Millis,
) -> Result<bool> {
    let n = sqlx::query(&format!(
        "UPDATE sync_job SET state = 'finished', finished_at = ?, lease_owner = NULL, last_error = coalesce(?, last_error) \
         WHERE {FENCE}"
    ))
    .bind(now)
    .bind(error)
    .bind(&job.job_id)
    .bind(job.attempt)
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
    conn: &mut SqliteConnection,
    job: &ClaimedJob,
    result: &SyncResult,
    now: Millis,
) -> Result<bool> {
    if !finish(conn, job, None, now).await? {
        return Ok(false);
    }
    let event_id = &job.job.connector_sync_event_id;
    let target_id = &job.job.connector_target_id;
    super::content::apply_changes(conn, target_id, event_id, &result.changes, now).await?;
    let complete = result.failures.is_empty();
    let head = result.head_sha.clone().or_else(|| job.job.head_sha.clone());
    sqlx::query(
        "UPDATE connector_sync_event SET status = ?, head_sha = coalesce(?, head_sha), created_count = ?, \
         updated_count = ?, deleted_count = ?, skipped_count = ?, skipped_reasons = ?, failures = ?, \
         completed_at = ?, last_error = NULL WHERE id = ?",
    )
    .bind(if complete { "completed" } else { "partial" })
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
        "UPDATE connector_target SET last_synced_sha = CASE WHEN ?1 THEN coalesce(?2, last_synced_sha) \
         ELSE last_synced_sha END, last_synced_at = ?3, health = CASE WHEN ?1 THEN 'ok' ELSE 'failing' END, \
         updated_at = ?3 WHERE id = ?4",
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
    conn: &mut SqliteConnection,
    job: &ClaimedJob,
    error: &str,
    health: FailureHealth,
    now: Millis,
) -> Result<bool> {
    if !finish(conn, job, Some(error), now).await? {
        return Ok(false);
    }
    fail_event(
        conn,
        &job.job.connector_sync_event_id,
        &job.job.connector_target_id,
        error,
        health,
        now,
    )
    .await?;
    Ok(true)
}

async fn fail_event(
    conn: &mut SqliteConnection,
    event_id: &str,
    target_id: &str,
    error: &str,
    health: FailureHealth,
    now: Millis,
) -> Result<()> {
    sqlx::query(
        "UPDATE connector_sync_event SET status = 'failed', last_error = ?, completed_at = ?, next_attempt_at = NULL \
         WHERE id = ?",
    )
    .bind(error)
    .bind(now)
    .bind(event_id)
    .execute(&mut *conn)
    .await?;
    // Flags that say more than "failing" (deleted branch, lost access) stay.
    let sql = match health {
        FailureHealth::Failing => {
            "UPDATE connector_target SET health = 'failing', updated_at = ? WHERE id = ? AND health IN ('pending', 'ok')"
        }
        FailureHealth::Inaccessible => {
            "UPDATE connector_target SET health = 'inaccessible', updated_at = ? WHERE id = ? AND health <> 'branch_deleted'"
        }
    };
    sqlx::query(sql)
        .bind(now)
        .bind(target_id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn retry(
    conn: &mut SqliteConnection,
    job: &ClaimedJob,
    run_at: Millis,
    error: &str,
    consume_attempt: bool,
) -> Result<bool> {
    let refund = i64::from(!consume_attempt);
    let n = sqlx::query(&format!(
        "UPDATE sync_job SET state = 'retryable', run_at = ?, last_error = ?, lease_owner = NULL, \
         lease_expires_at = NULL, attempt = attempt - ? WHERE {FENCE}"
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
        "UPDATE connector_sync_event SET status = 'queued', last_error = ?, next_attempt_at = ?, attempts = ? WHERE id = ?",
    )
    .bind(error)
    .bind(run_at)
    .bind(job.attempt - refund)
    .bind(&job.job.connector_sync_event_id)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

pub async fn release(conn: &mut SqliteConnection, job: &ClaimedJob) -> Result<bool> {
    let n = sqlx::query(&format!(
        "UPDATE sync_job SET state = 'available', attempt = attempt - 1, lease_owner = NULL, lease_expires_at = NULL \
         WHERE {FENCE}"
    ))
    .bind(&job.job_id)
    .bind(job.attempt)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if n == 1 {
        sqlx::query("UPDATE connector_sync_event SET status = 'queued', attempts = ? WHERE id = ?")
            .bind(job.attempt - 1)
            .bind(&job.job.connector_sync_event_id)
            .execute(&mut *conn)
            .await?;
    }
    Ok(n == 1)
}

/// Expired leases: the worker died or stalled. The attempt it used counts.
pub async fn rescue(conn: &mut SqliteConnection, now: Millis) -> Result<u64> {
    let expired = sqlx::query(
        "SELECT id, attempt, max_attempts, sync_event_id, target_id FROM sync_job \
         WHERE state = 'running' AND lease_expires_at < ?",
    )
    .bind(now)
    .fetch_all(&mut *conn)
    .await?;
    let msg = "lease expired: the worker stopped heartbeating";
    for row in &expired {
        let id: String = row.try_get("id")?;
        let attempt: i64 = row.try_get("attempt")?;
        let event_id: String = row.try_get("sync_event_id")?;
        if attempt >= row.try_get::<i64, _>("max_attempts")? {
            sqlx::query("UPDATE sync_job SET state = 'finished', finished_at = ?, last_error = ?, lease_owner = NULL WHERE id = ?")
                .bind(now)
                .bind(msg)
                .bind(&id)
                .execute(&mut *conn)
                .await?;
            let target_id: String = row.try_get("target_id")?;
            fail_event(
                conn,
                &event_id,
                &target_id,
                msg,
                FailureHealth::Failing,
                now,
            )
            .await?;
        } else {
            sqlx::query(
                "UPDATE sync_job SET state = 'retryable', run_at = ?, last_error = ?, lease_owner = NULL, \
                 lease_expires_at = NULL WHERE id = ?",
            )
            .bind(now)
            .bind(msg)
            .bind(&id)
            .execute(&mut *conn)
            .await?;
            sqlx::query("UPDATE connector_sync_event SET status = 'queued', last_error = ?, next_attempt_at = ? WHERE id = ?")
                .bind(msg)
                .bind(now)
                .bind(&event_id)
                .execute(&mut *conn)
                .await?;
        }
    }
    Ok(expired.len() as u64)
}
