//! Admin reads and writes: connectors, targets, sync events, deliveries.

use super::enqueue::{cancel_pending, enqueue, Enqueued};
use super::ingest::{parse_ids, Ctx, TargetRef, TARGET_REF_SELECT};
use crate::store::models::*;
use crate::store::{Result, StoreError};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

fn opt_time(row: &AnyRow, col: &str) -> Result<Option<String>> {
    Ok(row.try_get::<Option<i64>, _>(col)?.map(rfc3339))
}

fn time(row: &AnyRow, col: &str) -> Result<String> {
    Ok(rfc3339(row.try_get(col)?))
}

/// A state column read into its enum; text no code writes is an internal error.
pub fn state<T>(row: &AnyRow, col: &str) -> Result<T>
where
    T: std::str::FromStr<Err = crate::store::states::UnknownState>,
{
    Ok(row.try_get::<&str, _>(col)?.parse()?)
}

pub fn connector_from_row(r: &AnyRow) -> Result<ConnectorInstance> {
    Ok(ConnectorInstance {
        id: r.try_get("id")?,
        connector_type: r.try_get("connector_type")?,
        installation_id: r.try_get("installation_id")?,
        account_login: r.try_get("account_login")?,
        status: state(r, "status")?,
        repository_selection: r.try_get("repository_selection")?,
        permissions: r
            .try_get::<Option<String>, _>("permissions")?
            .and_then(|p| serde_json::from_str(&p).ok()),
        created_at: time(r, "created_at")?,
        updated_at: time(r, "updated_at")?,
    })
}

pub fn target_from_row(r: &AnyRow) -> Result<Target> {
    Ok(Target {
        id: r.try_get("id")?,
        connector_id: r.try_get("connector_id")?,
        repository_full_name: r.try_get("repository_full_name")?,
        repository_id: r.try_get("repository_id")?,
        branch: r.try_get("branch")?,
        path_prefix: r.try_get("path_prefix")?,
        max_file_bytes: r.try_get("max_file_bytes")?,
        status: state(r, "status")?,
        health: state(r, "health")?,
        archived: super::dialect::flag(r, "archived")?,
        latest_head_sha: r.try_get("latest_head_sha")?,
        last_synced_sha: r.try_get("last_synced_sha")?,
        last_synced_at: opt_time(r, "last_synced_at")?,
        created_at: time(r, "created_at")?,
        updated_at: time(r, "updated_at")?,
    })
}

pub fn sync_event_from_row(r: &AnyRow) -> Result<SyncEvent> {
    Ok(SyncEvent {
        id: r.try_get("id")?,
        connector_target_id: r.try_get("connector_target_id")?,
        delivery_id: r.try_get("delivery_id")?,
        trigger: state(r, "trigger")?,
        git_ref: r.try_get("ref")?,
        head_sha: r.try_get("head_sha")?,
        status: state(r, "status")?,
        counts: SyncCounts {
            created: r.try_get("created_count")?,
            updated: r.try_get("updated_count")?,
            deleted: r.try_get("deleted_count")?,
            skipped: r.try_get("skipped_count")?,
        },
        skipped_reasons: serde_json::from_str(r.try_get::<&str, _>("skipped_reasons")?)
            .unwrap_or_default(),
        failures: serde_json::from_str(r.try_get::<&str, _>("failures")?).unwrap_or_default(),
        attempts: r.try_get("attempts")?,
        last_error: r.try_get("last_error")?,
        next_attempt_at: opt_time(r, "next_attempt_at")?,
        created_at: time(r, "created_at")?,
        started_at: opt_time(r, "started_at")?,
        completed_at: opt_time(r, "completed_at")?,
    })
}

pub fn delivery_from_row(r: &AnyRow) -> Result<Delivery> {
    Ok(Delivery {
        id: r.try_get("delivery_id")?,
        event: r.try_get("event")?,
        action: r.try_get("action")?,
        installation_id: r.try_get("installation_id")?,
        repository_id: r.try_get("repository_id")?,
        repository_full_name: r.try_get("repository_full_name")?,
        git_ref: r.try_get("ref")?,
        head_sha: r.try_get("head_sha")?,
        hook_id: r.try_get("hook_id")?,
        hook_installation_target_id: r.try_get("hook_installation_target_id")?,
        outcome: state(r, "outcome")?,
        reason: r.try_get("reason")?,
        sync_event_ids: parse_ids(r, "sync_event_ids"),
        body_retained: super::dialect::flag(r, "body_retained")?,
        replay_of: r.try_get("replay_of")?,
        received_at: time(r, "received_at")?,
    })
}

pub const DELIVERY_COLUMNS: &str = "seq, delivery_id, event, action, installation_id, repository_id, \
    repository_full_name, ref, head_sha, hook_id, hook_installation_target_id, outcome, reason, sync_event_ids, \
    body IS NOT NULL AS body_retained, replay_of, received_at";

/// Turns `limit + 1` rows into a page: the extra row only says there is more.
pub fn page<T>(mut items: Vec<T>, limit: i64, key: impl Fn(&T) -> String) -> Listing<T> {
    let more = items.len() as i64 > limit;
    items.truncate(limit as usize);
    let next_cursor = if more { items.last().map(key) } else { None };
    Listing { items, next_cursor }
}

pub async fn create_connector(
    conn: &mut AnyConnection,
    installation_id: i64,
) -> Result<(ConnectorInstance, bool)> {
    let now = now_ms();
    let inserted = sqlx::query(
        "INSERT INTO connector_instance (id, installation_id, status, created_at, updated_at) VALUES ($1, $2, 'active', $3, $4) \
         ON CONFLICT (installation_id) DO NOTHING",
    )
    .bind(new_id("con"))
    .bind(installation_id)
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let row = sqlx::query("SELECT * FROM connector_instance WHERE installation_id = $1")
        .bind(installation_id)
        .fetch_one(&mut *conn)
        .await?;
    Ok((connector_from_row(&row)?, inserted == 1))
}

pub async fn create_target(
    conn: &mut AnyConnection,
    connector_id: &str,
    t: NewTarget,
    max_attempts: i64,
) -> Result<(Target, SyncEvent)> {
    let now = now_ms();
    let status: Option<String> =
        sqlx::query_scalar("SELECT status FROM connector_instance WHERE id = $1")
            .bind(connector_id)
            .fetch_optional(&mut *conn)
            .await?;
    match status.as_deref() {
        None => return Err(StoreError::NotFound),
        Some("deleted") => {
            return Err(StoreError::Conflict(
                "the connector's installation was deleted".into(),
            ))
        }
        _ => {}
    }
    let id = new_id("tgt");
    let res = sqlx::query(
        "INSERT INTO connector_target (id, connector_id, repository_full_name, repository_id, branch, path_prefix, \
         max_file_bytes, status, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, 'active', $8, $9)",
    )
    .bind(&id)
    .bind(connector_id)
    .bind(t.repository_full_name.as_str())
    .bind(t.repository_id)
    .bind(t.branch.as_str())
    .bind(t.path_prefix.as_str())
    .bind(t.max_file_bytes)
    .bind(now)
    .bind(now)
    .execute(&mut *conn)
    .await;
    if let Err(sqlx::Error::Database(e)) = &res {
        if e.is_unique_violation() {
            return Err(StoreError::Conflict(
                "this connector already tracks that repository, branch and path prefix".into(),
            ));
        }
    }
    res?;
    let target_ref: TargetRef = sqlx::query_as(&format!("{TARGET_REF_SELECT} WHERE t.id = $1"))
        .bind(&id)
        .fetch_one(&mut *conn)
        .await?;
    let ctx = Ctx {
        delivery_id: "",
        now,
        max_attempts,
    };
    let (Enqueued::New(event_id) | Enqueued::Existing(event_id)) =
        enqueue(conn, &ctx, &target_ref, None, SyncTrigger::Initial).await?;
    Ok((
        get_target(conn, &id).await?,
        get_sync_event(conn, &event_id).await?,
    ))
}

pub async fn get_target(conn: &mut AnyConnection, id: &str) -> Result<Target> {
    let row = sqlx::query("SELECT * FROM connector_target WHERE id = $1 AND status <> 'removed'")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    target_from_row(&row)
}

pub async fn get_sync_event(conn: &mut AnyConnection, id: &str) -> Result<SyncEvent> {
    let row = sqlx::query("SELECT * FROM connector_sync_event WHERE id = $1")
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or(StoreError::NotFound)?;
    sync_event_from_row(&row)
}

pub async fn delete_target(conn: &mut AnyConnection, id: &str) -> Result<()> {
    let now = now_ms();
    let n = sqlx::query("UPDATE connector_target SET status = 'removed', updated_at = $1 WHERE id = $2 AND status <> 'removed'")
        .bind(now)
        .bind(id)
        .execute(&mut *conn)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(StoreError::NotFound);
    }
    cancel_pending(conn, id, SyncStatus::Cancelled, now).await
}

pub async fn request_sync(
    conn: &mut AnyConnection,
    target_id: &str,
    max_attempts: i64,
) -> Result<SyncEvent> {
    let now = now_ms();
    let target: TargetRef = sqlx::query_as(&format!(
        "{TARGET_REF_SELECT} WHERE t.id = $1 AND t.status <> 'removed'"
    ))
    .bind(target_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    let status: String = sqlx::query_scalar("SELECT status FROM connector_target WHERE id = $1")
        .bind(target_id)
        .fetch_one(&mut *conn)
        .await?;
    let status: TargetStatus = status.parse()?;
    if status != TargetStatus::Active {
        return Err(StoreError::Conflict(format!(
            "target is {status}; only active targets can be synced"
        )));
    }
    let ctx = Ctx {
        delivery_id: "",
        now,
        max_attempts,
    };
    let (Enqueued::New(event_id) | Enqueued::Existing(event_id)) =
        enqueue(conn, &ctx, &target, None, SyncTrigger::Manual).await?;
    get_sync_event(conn, &event_id).await
}
