//! Applying lifecycle deliveries (`installation`, `installation_repositories`,
//! `repository`) to connectors and targets, inside the delivery's write unit.

use super::dialect::Dialect;
use super::enqueue::{cancel_pending, enqueue, Enqueued};
use super::ingest::{Applied, Ctx, TargetRef, TARGET_REF_SELECT};
use crate::ingress::dispatch::*;
use crate::store::models::*;
use crate::store::{Result, StoreError};
use sqlx::AnyConnection;

pub(super) async fn apply_installation(
    conn: &mut AnyConnection,
    ctx: &Ctx<'_>,
    p: &InstallationPlan,
) -> Result<Applied> {
    let status = match p.action {
        InstallationAction::Deleted => Some(ConnectorStatus::Deleted),
        InstallationAction::Suspend => Some(ConnectorStatus::Suspended),
        InstallationAction::Created | InstallationAction::Unsuspend => {
            Some(ConnectorStatus::Active)
        }
        InstallationAction::NewPermissionsAccepted => None, // unchanged
    };
    let permissions = p.permissions.as_ref().map(|v| v.to_string());
    let connector_id: String = sqlx::query_scalar(
        "INSERT INTO connector_instance (id, installation_id, account_login, status, repository_selection, \
         permissions, created_at, updated_at) VALUES ($1, $2, $3, coalesce($4, 'active'), $5, $6, $7, $7) \
         ON CONFLICT (installation_id) DO UPDATE SET \
           account_login = coalesce(excluded.account_login, connector_instance.account_login), \
           status = coalesce($4, connector_instance.status), \
           repository_selection = coalesce(excluded.repository_selection, connector_instance.repository_selection), \
           permissions = coalesce(excluded.permissions, connector_instance.permissions), \
           updated_at = excluded.updated_at \
         RETURNING id",
    )
    .bind(new_id("con"))
    .bind(p.installation_id)
    .bind(&p.account_login)
    .bind(status.map(ConnectorStatus::as_str))
    .bind(&p.repository_selection)
    .bind(permissions)
    .bind(ctx.now)
    .fetch_one(&mut *conn)
    .await?;

    let mut events = vec![];
    match p.action {
        InstallationAction::Deleted => {
            let ids = set_target_status(
                conn,
                &connector_id,
                &[TargetStatus::Active, TargetStatus::Inaccessible],
                None,
                TargetStatus::Inactive,
                None,
                ctx.now,
            )
            .await?;
            for id in ids {
                cancel_pending(conn, &id, SyncStatus::Cancelled, ctx.now).await?;
            }
        }
        InstallationAction::Created => {
            // A reinstall resumes tracking what the earlier installation tracked.
            let ids = set_target_status(
                conn,
                &connector_id,
                &[TargetStatus::Inactive],
                None,
                TargetStatus::Active,
                None,
                ctx.now,
            )
            .await?;
            events = resync(conn, ctx, &ids).await?;
        }
        _ => {}
    }
    Ok(Applied::accepted(events))
}

pub(super) async fn apply_installation_repositories(
    conn: &mut AnyConnection,
    ctx: &Ctx<'_>,
    p: &InstallationRepositoriesPlan,
) -> Result<Applied> {
    let connector_id: Option<String> =
        sqlx::query_scalar("SELECT id FROM connector_instance WHERE installation_id = $1")
            .bind(p.installation_id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(connector_id) = connector_id else {
        return Ok(Applied::ignored("untracked_installation"));
    };
    let mut changed = false;
    if !p.removed.is_empty() {
        let ids = set_target_status(
            conn,
            &connector_id,
            &[TargetStatus::Active],
            Some(p.removed.as_slice()),
            TargetStatus::Inaccessible,
            Some(TargetHealth::Inaccessible),
            ctx.now,
        )
        .await?;
        for id in &ids {
            cancel_pending(conn, id, SyncStatus::Cancelled, ctx.now).await?;
        }
        changed |= !ids.is_empty();
    }
    let mut events = vec![];
    if !p.added.is_empty() {
        let ids = set_target_status(
            conn,
            &connector_id,
            &[TargetStatus::Inaccessible],
            Some(p.added.as_slice()),
            TargetStatus::Active,
            Some(TargetHealth::Pending),
            ctx.now,
        )
        .await?;
        changed |= !ids.is_empty();
        events = resync(conn, ctx, &ids).await?;
    }
    Ok(Applied::accepted_if(changed, events))
}

/// Moves the connector's targets that are in one of the `from` states (and,
/// with `repos`, are one of those repositories: by id, or by name for targets
/// added before their id was known) to `status` (and optionally `health`),
/// returning their ids. Every value is bound: repository names come from the
/// payload and may hold anything, NUL included.
async fn set_target_status(
    conn: &mut AnyConnection,
    connector_id: &str,
    from: &[TargetStatus],
    repos: Option<&[RepoRef]>,
    status: TargetStatus,
    health: Option<TargetHealth>,
    now: Millis,
) -> Result<Vec<String>> {
    let d = Dialect::of(conn);
    let repos = repos.unwrap_or_default();
    let ids: Vec<i64> = repos.iter().map(|r| r.id).collect();
    let names: Vec<String> = repos
        .iter()
        .filter_map(|r| r.full_name.as_ref())
        // No stored name holds a NUL (PostgreSQL text cannot, and target
        // names are validated), and PostgreSQL refuses to turn a JSON `\u0000`
        // into text: such a name matches nothing, so it is not sent.
        .filter(|n| !n.contains('\0'))
        .map(|n| n.to_lowercase())
        .collect();
    let sql = format!(
        "UPDATE connector_target SET status = $1, health = coalesce($2, health), updated_at = $3 \
         WHERE connector_id = $4 AND status IN ({from}) \
         AND ($5 = 0 OR repository_id IN ({ids}) \
              OR (repository_id IS NULL AND lower(repository_full_name) IN ({names}))) RETURNING id",
        from = d.json_strings(6),
        ids = d.json_ints(7),
        names = d.json_strings(8),
    );
    Ok(sqlx::query_scalar(&sql)
        .bind(status.as_str())
        .bind(health.map(TargetHealth::as_str))
        .bind(now)
        .bind(connector_id)
        .bind(i64::from(!repos.is_empty()))
        .bind(json_list(from)?)
        .bind(json_list(&ids)?)
        .bind(json_list(&names)?)
        .fetch_all(&mut *conn)
        .await?)
}

/// A list bound as one JSON array parameter (see [`Dialect::json_strings`]).
fn json_list<T: serde::Serialize>(items: &[T]) -> Result<String> {
    serde_json::to_string(items).map_err(|e| StoreError::Internal(e.into()))
}

async fn resync(
    conn: &mut AnyConnection,
    ctx: &Ctx<'_>,
    target_ids: &[String],
) -> Result<Vec<String>> {
    let mut events = vec![];
    for id in target_ids {
        let t: TargetRef = sqlx::query_as(&format!("{TARGET_REF_SELECT} WHERE t.id = $1"))
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
        let (Enqueued::New(e) | Enqueued::Existing(e)) =
            enqueue(conn, ctx, &t, None, SyncTrigger::Resync).await?;
        events.push(e);
    }
    Ok(events)
}

pub(super) async fn apply_repository(
    conn: &mut AnyConnection,
    p: &RepositoryPlan,
    now: Millis,
) -> Result<Applied> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM connector_target WHERE repository_id = $1 AND status NOT IN ('removed', 'deleted') \
         AND ($2 IS NULL OR connector_id IN (SELECT id FROM connector_instance WHERE installation_id = $2))",
    )
    .bind(p.repository_id)
    .bind(p.installation_id)
    .fetch_all(&mut *conn)
    .await?;
    if ids.is_empty() {
        return Ok(Applied::ignored("no_matching_targets"));
    }
    let ids_json = serde_json::to_string(&ids).unwrap_or_default();
    match &p.action {
        RepositoryAction::Moved { full_name } => {
            rename_targets(conn, &ids_json, full_name, now).await?;
        }
        RepositoryAction::Archived(archived) => {
            sqlx::query(&format!(
                "UPDATE connector_target SET archived = $1, updated_at = $2 WHERE id IN ({})",
                Dialect::of(conn).json_strings(3)
            ))
            .bind(archived)
            .bind(now)
            .bind(&ids_json)
            .execute(&mut *conn)
            .await?;
        }
        RepositoryAction::Deleted => {
            sqlx::query(&format!(
                "UPDATE connector_target SET status = 'deleted', updated_at = $1 WHERE id IN ({})",
                Dialect::of(conn).json_strings(2)
            ))
            .bind(now)
            .bind(&ids_json)
            .execute(&mut *conn)
            .await?;
            for id in &ids {
                cancel_pending(conn, id, SyncStatus::Cancelled, now).await?;
            }
        }
    }
    Ok(Applied::accepted(vec![]))
}

/// Gives the targets (a JSON array of ids) the repository's current name.
/// A target whose new name would collide with another target of the same
/// connector, branch and prefix (one added by that name) keeps its old name:
/// it is matched by repository id anyway, and the delivery must still commit.
///
/// On PostgreSQL two transactions can each see no collision and rename two
/// targets to one name (pushes of two repositories that carry the same
/// `full_name`, say a deleted and re-created repository): the later one then
/// fails on `connector_target_identity`. That is the same collision, seen
/// late, so it gets the same answer: this rename is undone (a savepoint) and
/// the delivery commits.
pub(super) async fn rename_targets(
    conn: &mut AnyConnection,
    ids_json: &str,
    full_name: &str,
    now: Millis,
) -> Result<()> {
    let d = Dialect::of(conn);
    let sql = format!(
        "UPDATE connector_target AS t SET repository_full_name = $1, updated_at = $2 \
         WHERE t.id IN ({}) AND t.repository_full_name <> $1 \
         AND NOT EXISTS (SELECT 1 FROM connector_target o WHERE o.id <> t.id AND o.status <> 'removed' \
             AND o.connector_id = t.connector_id AND lower(o.repository_full_name) = lower($1) \
             AND o.branch = t.branch AND o.path_prefix = t.path_prefix)",
        d.json_strings(3)
    );
    let update = sqlx::query(&sql).bind(full_name).bind(now).bind(ids_json);
    if d == Dialect::Sqlite {
        // One writer: the NOT EXISTS above sees every committed name.
        update.execute(&mut *conn).await?;
        return Ok(());
    }
    sqlx::query("SAVEPOINT rename").execute(&mut *conn).await?;
    match update.execute(&mut *conn).await {
        Ok(_) => {}
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("23505") => {
            tracing::info!(
                repository = full_name,
                "a concurrent delivery gave another target this name; keeping the old one"
            );
            sqlx::query("ROLLBACK TO SAVEPOINT rename")
                .execute(&mut *conn)
                .await?;
        }
        Err(e) => return Err(e.into()),
    }
    sqlx::query("RELEASE SAVEPOINT rename")
        .execute(&mut *conn)
        .await?;
    Ok(())
}
