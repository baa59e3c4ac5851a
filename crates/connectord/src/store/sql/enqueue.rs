//! Enqueueing, superseding and cancelling sync jobs: the queue writes that
//! happen inside ingress and admin transactions.

use super::dialect::lock_target;
use super::ingest::{Ctx, TargetRef};
use crate::store::models::*;
use crate::store::Result;
use sqlx::AnyConnection;

pub enum Enqueued {
    /// A new job and sync event.
    New(String),
    /// An unfinished job for the same target and head already exists: its event.
    Existing(String),
}

/// Queues a sync of `target` at `head` (None: resolve the branch head when the
/// job runs). Dedupe is the partial unique index `sync_job_dedupe` with
/// `ON CONFLICT DO NOTHING`; a new job supersedes the target's jobs that have
/// not started.
pub async fn enqueue(
    conn: &mut AnyConnection,
    ctx: &Ctx<'_>,
    target: &TargetRef,
    head: Option<&str>,
    trigger: SyncTrigger,
) -> Result<Enqueued> {
    lock_target(conn, &target.id).await?;
    // Supersede first: a not-started job for another head is older than this
    // request, so after it only this head (or the running job) remains. Doing it
    // before the dedupe keeps A(running) -> B(queued) -> A ending at A.
    finish_pending(
        conn,
        &target.id,
        Some(head),
        SyncStatus::Superseded,
        ctx.now,
    )
    .await?;
    if head.is_none() {
        // Head-less syncs resolve the branch at run time: one queued is enough.
        let queued: Option<String> = sqlx::query_scalar(
            "SELECT sync_event_id FROM sync_job WHERE target_id = $1 AND head_sha IS NULL \
             AND state IN ('available', 'retryable')",
        )
        .bind(&target.id)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(existing) = queued {
            return Ok(Enqueued::Existing(existing));
        }
    }
    let event_id = new_id("sev");
    let job_id = new_id("job");
    let git_ref = format!("refs/heads/{}", target.branch);
    let delivery_id = matches!(trigger, SyncTrigger::Push).then(|| ctx.delivery_id.to_owned());
    sqlx::query(
        "INSERT INTO connector_sync_event (id, connector_target_id, delivery_id, trigger, ref, head_sha, status, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7)",
    )
    .bind(&event_id)
    .bind(&target.id)
    .bind(&delivery_id)
    .bind(trigger.as_str())
    .bind(&git_ref)
    .bind(head)
    .bind(ctx.now)
    .execute(&mut *conn)
    .await?;
    let job = GithubConnectorSyncJob {
        connector_type: "github".into(),
        connector_instance_id: target.connector_id.clone(),
        connector_target_id: target.id.clone(),
        connector_sync_event_id: event_id.clone(),
        delivery_id,
        installation_id: target.installation_id,
        repository_id: target.repository_id,
        repository_full_name: target.repository_full_name.clone(),
        git_ref,
        head_sha: head.map(str::to_owned),
    };
    let payload = serde_json::to_string(&job).map_err(anyhow::Error::from)?;
    let inserted = sqlx::query(
        "INSERT INTO sync_job (id, sync_event_id, target_id, head_sha, payload, state, max_attempts, run_at, created_at, \
         connector_id) VALUES ($1, $2, $3, $4, $5, 'available', $6, $7, $8, $9) \
         ON CONFLICT (target_id, head_sha) WHERE head_sha IS NOT NULL AND state IN ('available', 'running', 'retryable') \
         DO NOTHING",
    )
    .bind(&job_id)
    .bind(&event_id)
    .bind(&target.id)
    .bind(head)
    .bind(&payload)
    .bind(ctx.max_attempts)
    .bind(ctx.now)
    .bind(ctx.now)
    .bind(&target.connector_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Enqueued::New(event_id));
    }
    sqlx::query("DELETE FROM connector_sync_event WHERE id = $1")
        .bind(&event_id)
        .execute(&mut *conn)
        .await?;
    let existing: String = sqlx::query_scalar(
        "SELECT sync_event_id FROM sync_job WHERE target_id = $1 AND head_sha = $2 \
         AND state IN ('available', 'running', 'retryable')",
    )
    .bind(&target.id)
    .bind(head)
    .fetch_one(&mut *conn)
    .await?;
    Ok(Enqueued::Existing(existing))
}

/// Cancels the target's jobs that have not started (running ones finish).
pub async fn cancel_pending(
    conn: &mut AnyConnection,
    target_id: &str,
    status: SyncStatus,
    now: Millis,
) -> Result<()> {
    finish_pending(conn, target_id, None, status, now).await
}

/// Finishes the target's not-started jobs with `status`. With `keep_head`,
/// jobs for that head (`Some(None)`: head-less jobs) are kept.
async fn finish_pending(
    conn: &mut AnyConnection,
    target_id: &str,
    keep_head: Option<Option<&str>>,
    status: SyncStatus,
    now: Millis,
) -> Result<()> {
    let head_filter = if keep_head.is_some() {
        "AND head_sha IS DISTINCT FROM $3"
    } else {
        "AND $3 IS NULL"
    };
    let sql = format!(
        "UPDATE sync_job SET state = 'finished', finished_at = $1, lease_owner = NULL \
         WHERE target_id = $2 AND state IN ('available', 'retryable') {head_filter} RETURNING sync_event_id"
    );
    let events: Vec<String> = sqlx::query_scalar(&sql)
        .bind(now)
        .bind(target_id)
        .bind(keep_head.flatten())
        .fetch_all(&mut *conn)
        .await?;
    for event in events {
        sqlx::query("UPDATE connector_sync_event SET status = $1, completed_at = $2, next_attempt_at = NULL WHERE id = $3")
            .bind(status.as_str())
            .bind(now)
            .bind(&event)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}
