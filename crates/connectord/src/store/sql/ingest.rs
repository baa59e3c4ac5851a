//! Applying a delivery's plan. Runs inside one write unit (one SAVEPOINT of a
//! group transaction): the delivery record, the target changes and the jobs
//! commit together or not at all.

use super::dialect::{exists, Dialect};
use super::enqueue::{cancel_pending, enqueue, Enqueued};
use super::lifecycle;
use crate::domain::ZERO_SHA;
use crate::ingress::dispatch::*;
use crate::store::models::*;
use crate::store::Result;
use sqlx::{AnyConnection, Row};

/// What applying a plan did, before it is written back onto the delivery row.
pub(super) struct Applied {
    pub outcome: Outcome,
    pub reason: Option<String>,
    pub sync_event_ids: Vec<String>,
}

impl Applied {
    pub(super) fn ignored(reason: &str) -> Self {
        Self {
            outcome: Outcome::Ignored,
            reason: Some(reason.into()),
            sync_event_ids: vec![],
        }
    }
    pub(super) fn accepted(sync_event_ids: Vec<String>) -> Self {
        Self {
            outcome: Outcome::Accepted,
            reason: None,
            sync_event_ids,
        }
    }
    /// Every matched target already had an unfinished job for this head.
    pub(super) fn duplicate(reason: &str, sync_event_ids: Vec<String>) -> Self {
        Self {
            outcome: Outcome::Duplicate,
            reason: Some(reason.into()),
            sync_event_ids,
        }
    }
    pub(super) fn accepted_if(changed: bool, sync_event_ids: Vec<String>) -> Self {
        if changed {
            Self::accepted(sync_event_ids)
        } else {
            Self::ignored("no_matching_targets")
        }
    }
}

/// The target columns the ingest rules and the job payload need.
#[derive(sqlx::FromRow, Debug, Clone)]
pub(super) struct TargetRef {
    pub id: String,
    pub connector_id: String,
    pub installation_id: i64,
    pub repository_id: Option<i64>,
    pub repository_full_name: String,
    pub branch: String,
    pub latest_head_sha: Option<String>,
    pub last_synced_sha: Option<String>,
}

pub(super) const TARGET_REF_SELECT: &str =
    "SELECT t.id, t.connector_id, c.installation_id, t.repository_id, \
     t.repository_full_name, t.branch, t.latest_head_sha, t.last_synced_sha \
     FROM connector_target t JOIN connector_instance c ON c.id = t.connector_id";

pub async fn ingest(
    conn: &mut AnyConnection,
    mut d: NewDelivery,
    plan: Plan,
    max_attempts: i64,
) -> Result<(IngestOutcome, bool)> {
    let now = now_ms();
    if let Some(original) = &d.replay_of {
        // Numbered here, inside the write, so concurrent replays never share an
        // id: on PostgreSQL the original's row lock queues them up.
        sqlx::query(&format!(
            "SELECT seq FROM webhook_delivery WHERE delivery_id = $1{}",
            Dialect::of(conn).for_update()
        ))
        .bind(original)
        .fetch_optional(&mut *conn)
        .await?;
        let n: i64 =
            sqlx::query_scalar("SELECT count(*) FROM webhook_delivery WHERE replay_of = $1")
                .bind(original)
                .fetch_one(&mut *conn)
                .await?;
        d.id = format!("{original}:replay:{}", n + 1);
    }
    let inserted = sqlx::query(
        "INSERT INTO webhook_delivery (delivery_id, event, action, installation_id, repository_id, \
         repository_full_name, ref, head_sha, hook_id, hook_installation_target_id, outcome, \
         content_type, replay_of, received_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'ignored', $11, $12, $13) \
         ON CONFLICT (delivery_id) DO NOTHING RETURNING seq",
    )
    .bind(&d.id)
    .bind(&d.event)
    .bind(&d.action)
    .bind(d.installation_id)
    .bind(d.repository_id)
    .bind(&d.repository_full_name)
    .bind(&d.git_ref)
    .bind(&d.head_sha)
    .bind(&d.hook_id)
    .bind(&d.hook_installation_target_id)
    .bind(&d.content_type)
    .bind(&d.replay_of)
    .bind(now)
    .fetch_optional(&mut *conn)
    .await?;
    if inserted.is_none() {
        let ids: String = sqlx::query_scalar(
            "SELECT sync_event_ids FROM webhook_delivery WHERE delivery_id = $1",
        )
        .bind(&d.id)
        .fetch_one(&mut *conn)
        .await?;
        let outcome = IngestOutcome {
            delivery_id: d.id,
            outcome: Outcome::Duplicate,
            reason: Some("delivery_already_processed".into()),
            sync_event_ids: serde_json::from_str(&ids).unwrap_or_default(),
        };
        return Ok((outcome, false));
    }

    let ctx = Ctx {
        delivery_id: &d.id,
        now,
        max_attempts,
    };
    let applied = match plan {
        Plan::Ignore(reason) => Applied::ignored(&reason),
        Plan::Push(p) => apply_push(conn, &ctx, &p).await?,
        Plan::Installation(p) => lifecycle::apply_installation(conn, &ctx, &p).await?,
        Plan::InstallationRepositories(p) => {
            lifecycle::apply_installation_repositories(conn, &ctx, &p).await?
        }
        Plan::Repository(p) => lifecycle::apply_repository(conn, &p, now).await?,
    };
    let enqueued = applied.outcome == Outcome::Accepted && !applied.sync_event_ids.is_empty();
    // Only accepted deliveries keep their body (for inspection and replay).
    let body = (applied.outcome == Outcome::Accepted).then(|| d.body.to_vec());
    sqlx::query(
        "UPDATE webhook_delivery SET outcome = $1, reason = $2, sync_event_ids = $3, body = $4 WHERE delivery_id = $5",
    )
    .bind(applied.outcome.as_str())
    .bind(&applied.reason)
    .bind(serde_json::to_string(&applied.sync_event_ids).unwrap_or_else(|_| "[]".into()))
    .bind(body)
    .bind(&d.id)
    .execute(&mut *conn)
    .await?;
    let outcome = IngestOutcome {
        delivery_id: d.id,
        outcome: applied.outcome,
        reason: applied.reason,
        sync_event_ids: applied.sync_event_ids,
    };
    Ok((outcome, enqueued))
}

pub(super) struct Ctx<'a> {
    pub delivery_id: &'a str,
    pub now: Millis,
    pub max_attempts: i64,
}

async fn apply_push(conn: &mut AnyConnection, ctx: &Ctx<'_>, p: &PushPlan) -> Result<Applied> {
    let sql = format!(
        "{TARGET_REF_SELECT} WHERE t.status = 'active' AND ($1 IS NULL OR c.installation_id = $1) \
         AND (t.repository_id = $2 OR (t.repository_id IS NULL AND lower(t.repository_full_name) = lower($3))) \
         ORDER BY t.id{}",
        Dialect::of(conn).for_update_of("t")
    );
    let targets: Vec<TargetRef> = sqlx::query_as(&sql)
        .bind(p.installation_id)
        .bind(p.repository_id)
        .bind(&p.repository_full_name)
        .fetch_all(&mut *conn)
        .await?;
    if targets.is_empty() {
        return Ok(Applied::ignored("untracked_repository"));
    }
    // Learn the stable id of targets added by name, and follow renames we
    // missed; the rows are locked and read, so each statement runs only
    // when it would change something.
    let ids = serde_json::to_string(&targets.iter().map(|t| &t.id).collect::<Vec<_>>())
        .unwrap_or_default();
    if targets.iter().any(|t| t.repository_id.is_none()) {
        sqlx::query(&format!(
            "UPDATE connector_target SET repository_id = $1, updated_at = $2 \
             WHERE id IN ({}) AND repository_id IS NULL",
            Dialect::of(conn).json_strings(3)
        ))
        .bind(p.repository_id)
        .bind(ctx.now)
        .bind(&ids)
        .execute(&mut *conn)
        .await?;
    }
    if targets
        .iter()
        .any(|t| t.repository_full_name != p.repository_full_name)
    {
        lifecycle::rename_targets(conn, &ids, &p.repository_full_name, ctx.now).await?;
    }

    let on_branch: Vec<&TargetRef> = targets.iter().filter(|t| t.branch == p.branch).collect();
    if on_branch.is_empty() {
        return Ok(Applied::ignored("untracked_branch"));
    }
    let (mut new_events, mut existing_events, mut changed) = (vec![], vec![], false);
    let mut reasons = vec![];
    for t in on_branch {
        if p.deleted {
            cancel_pending(conn, &t.id, SyncStatus::Cancelled, ctx.now).await?;
            record_push(conn, ctx, &t.id, p.before.as_str(), ZERO_SHA).await?;
            sqlx::query(
                "UPDATE connector_target SET health = 'branch_deleted', latest_head_sha = $1, updated_at = $2 WHERE id = $3",
            )
            .bind(ZERO_SHA)
            .bind(ctx.now)
            .bind(&t.id)
            .execute(&mut *conn)
            .await?;
            changed = true;
            continue;
        }
        if is_stale(conn, t, p).await? {
            reasons.push("stale");
            continue;
        }
        note_gap(t, p);
        record_push(conn, ctx, &t.id, p.before.as_str(), p.after.as_str()).await?;
        // A push that (re)creates the branch clears the `branch_deleted` flag.
        sqlx::query(
            "UPDATE connector_target SET latest_head_sha = $1, updated_at = $2, \
             health = CASE health WHEN 'branch_deleted' THEN 'pending' ELSE health END WHERE id = $3",
        )
            .bind(p.after.as_str())
            .bind(ctx.now)
            .bind(&t.id)
            .execute(&mut *conn)
            .await?;
        if t.last_synced_sha.as_deref() == Some(p.after.as_str())
            && !has_unfinished_job(conn, &t.id).await?
        {
            reasons.push("already_synced");
            continue;
        }
        let target = TargetRef {
            repository_id: Some(p.repository_id),
            ..t.clone()
        };
        match enqueue(
            conn,
            ctx,
            &target,
            Some(p.after.as_str()),
            SyncTrigger::Push,
        )
        .await?
        {
            Enqueued::New(id) => new_events.push(id),
            Enqueued::Existing(id) => existing_events.push(id),
        }
    }
    if changed || !new_events.is_empty() {
        new_events.extend(existing_events);
        return Ok(Applied::accepted(new_events));
    }
    if !existing_events.is_empty() {
        return Ok(Applied::duplicate("already_queued", existing_events));
    }
    Ok(Applied::ignored(
        reasons.first().copied().unwrap_or("untracked_branch"),
    ))
}

/// A push that does not start where the last known one ended (and is not
/// stale, and is not the branch's creation) means a delivery in between was
/// lost. Counted and logged only: every sync lists the whole tree at its head
/// and compares it with what is stored, so the lost push costs nothing in
/// correctness. Counted when applied: a write that is rolled back and
/// redelivered counts twice.
pub(super) fn note_gap(t: &TargetRef, p: &PushPlan) {
    let Some(latest) = t.latest_head_sha.as_deref() else {
        return;
    };
    let gap = latest != ZERO_SHA
        && p.before.as_str() != ZERO_SHA
        && p.before.as_str() != latest
        // The missed-push pass got there first and recorded this head.
        && p.after.as_str() != latest;
    if gap {
        metrics::counter!("connectord_push_gaps_total").increment(1);
        tracing::info!(
            target_id = %t.id, before = %p.before.as_str(), latest_known = latest,
            "a push starts from a head no recorded push ended at: a delivery was lost"
        );
    }
}

/// Out-of-order delivery: this push's `before` is not the head we last recorded,
/// and some recorded push already moved the branch away from this push's `after`.
/// A reset to an earlier commit (whose `before` is our latest head) is not stale.
async fn is_stale(conn: &mut AnyConnection, t: &TargetRef, p: &PushPlan) -> Result<bool> {
    if t.latest_head_sha.as_deref() == Some(p.before.as_str()) {
        return Ok(false);
    }
    exists(
        conn,
        "SELECT count(*) FROM (SELECT 1 FROM target_push WHERE target_id = $1 AND before_sha = $2 LIMIT 1) x",
        &[&t.id, p.after.as_str()],
    )
    .await
}

async fn has_unfinished_job(conn: &mut AnyConnection, target_id: &str) -> Result<bool> {
    exists(
        conn,
        "SELECT count(*) FROM (SELECT 1 FROM sync_job WHERE target_id = $1 \
         AND state IN ('available', 'running', 'retryable') LIMIT 1) x",
        &[target_id],
    )
    .await
}

async fn record_push(
    conn: &mut AnyConnection,
    ctx: &Ctx<'_>,
    target_id: &str,
    before: &str,
    after: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO target_push (target_id, before_sha, after_sha, delivery_id, received_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(target_id)
        .bind(before)
        .bind(after)
        .bind(ctx.delivery_id)
        .bind(ctx.now)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The sync events a delivery caused, for the admin API.
pub(super) fn parse_ids(row: &sqlx::any::AnyRow, col: &str) -> Vec<String> {
    row.try_get::<String, _>(col)
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default()
}
