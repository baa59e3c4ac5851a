//! The store's side of the missed-push pass (`sync::head_poll`): which
//! targets to look at, what head each is expected to be at, and queueing a
//! `reconcile` sync when GitHub says otherwise.

use super::dialect::lock_target;
use super::enqueue::{enqueue, Enqueued};
use super::ingest::{Ctx, TargetRef, TARGET_REF_SELECT};
use crate::store::models::*;
use crate::store::Result;
use sqlx::{AnyConnection, Row};

/// Active targets of active connectors after `after` (by id), `limit` at a time.
pub async fn list_ids(
    conn: &mut AnyConnection,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar(
        "SELECT t.id FROM connector_target t JOIN connector_instance c ON c.id = t.connector_id \
         WHERE t.status = 'active' AND c.status = 'active' AND ($1 IS NULL OR t.id > $1) \
         ORDER BY t.id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// What one target is expected to be at, read just before its head is asked for.
pub async fn state(conn: &mut AnyConnection, target_id: &str) -> Result<Option<HeadPollTarget>> {
    let target: Option<TargetRef> = sqlx::query_as(&format!(
        "{TARGET_REF_SELECT} WHERE t.id = $1 AND t.status = 'active' AND c.status = 'active'"
    ))
    .bind(target_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(t) = target else { return Ok(None) };
    // The newest sync that was not replaced by a later one: what the target is
    // at, or is on its way to (queued, running), or last tried (failed).
    let newest = sqlx::query(
        "SELECT head_sha, status FROM connector_sync_event WHERE connector_target_id = $1 \
         AND status NOT IN ('superseded', 'cancelled') ORDER BY id DESC LIMIT 1",
    )
    .bind(target_id)
    .fetch_optional(&mut *conn)
    .await?;
    let newest = match newest {
        Some(row) => {
            let status: String = row.try_get("status")?;
            Some((row.try_get("head_sha")?, status.parse()?))
        }
        None => None,
    };
    Ok(Some(HeadPollTarget {
        id: t.id,
        installation_id: t.installation_id,
        repository_full_name: t.repository_full_name,
        branch: t.branch,
        latest_head_sha: t.latest_head_sha,
        last_synced_sha: t.last_synced_sha,
        newest_sync: newest,
    }))
}

/// Queues a `reconcile` sync of the target at `head` if it still needs one and
/// no push was recorded since `seen` was read (a push seen meanwhile may be
/// newer than `head`: superseding it would move the target back; the next
/// pass looks again). The target's latest head becomes `head`, so the ingest
/// rules treat a late webhook for an older push as stale.
pub async fn enqueue_reconcile(
    conn: &mut AnyConnection,
    seen: &HeadPollTarget,
    head: &str,
    max_attempts: i64,
) -> Result<Option<String>> {
    lock_target(conn, &seen.id).await?;
    let Some(now_state) = state(conn, &seen.id).await? else {
        return Ok(None);
    };
    if now_state.latest_head_sha != seen.latest_head_sha || !now_state.needs_sync(head) {
        return Ok(None);
    }
    let target: TargetRef = sqlx::query_as(&format!("{TARGET_REF_SELECT} WHERE t.id = $1"))
        .bind(&seen.id)
        .fetch_one(&mut *conn)
        .await?;
    let now = now_ms();
    sqlx::query(
        "UPDATE connector_target SET latest_head_sha = $1, updated_at = $2, \
         health = CASE health WHEN 'branch_deleted' THEN 'pending' ELSE health END WHERE id = $3",
    )
    .bind(head)
    .bind(now)
    .bind(&seen.id)
    .execute(&mut *conn)
    .await?;
    let ctx = Ctx {
        delivery_id: "",
        now,
        max_attempts,
    };
    match enqueue(conn, &ctx, &target, Some(head), SyncTrigger::Reconcile).await? {
        Enqueued::New(id) => Ok(Some(id)),
        Enqueued::Existing(_) => Ok(None),
    }
}
