//! Push and ignored deliveries on the rusqlite writer: the rules of
//! `sql::ingest` (matching, renames, stale pushes, already synced, supersede
//! and dedupe), with fewer statements. The writer is SQLite's only writer
//! while it holds the gate, so a read followed by a write cannot race, and
//! statements the rules do not need are skipped: the delivery row is written
//! once, with its outcome, after the rules ran (no insert-then-update); the
//! target's id and name are written only when they change.
//!
//! `tests/` run every ingest rule on SQLite (this file) and on PostgreSQL
//! (`sql::ingest`): the suite is what keeps the two the same.

use crate::domain::ZERO_SHA;
use crate::ingress::dispatch::{Plan, PushPlan};
use crate::store::models::*;
use crate::store::sql::ingest::{note_gap, Applied, TargetRef};
use crate::store::{Result, StoreError};
use rusqlite::{params, Connection, OptionalExtension};

/// What the native path takes; everything else goes through `sql::ingest`.
pub fn handles(delivery: &NewDelivery, plan: &Plan) -> bool {
    delivery.replay_of.is_none() && matches!(plan, Plan::Push(_) | Plan::Ignore(_))
}

pub fn ingest(
    conn: &Connection,
    d: NewDelivery,
    plan: Plan,
    max_attempts: i64,
) -> Result<(IngestOutcome, bool)> {
    let now = now_ms();
    let recorded: Option<String> = conn
        .prepare_cached("SELECT sync_event_ids FROM webhook_delivery WHERE delivery_id = ?1")?
        .query_row([&d.id], |r| r.get(0))
        .optional()?;
    if let Some(ids) = recorded {
        let outcome = IngestOutcome {
            delivery_id: d.id,
            outcome: Outcome::Duplicate,
            reason: Some("delivery_already_processed".into()),
            sync_event_ids: serde_json::from_str(&ids).unwrap_or_default(),
        };
        return Ok((outcome, false));
    }
    let ctx = Ctx {
        conn,
        delivery_id: &d.id,
        now,
        max_attempts,
    };
    let applied = match &plan {
        Plan::Ignore(reason) => Applied::ignored(reason),
        Plan::Push(p) => ctx.apply_push(p)?,
        _ => {
            return Err(StoreError::Internal(anyhow::anyhow!(
                "the native ingest path takes pushes and ignored deliveries only"
            )))
        }
    };
    let enqueued = applied.outcome == Outcome::Accepted && !applied.sync_event_ids.is_empty();
    // Only accepted deliveries keep their body (for inspection and replay).
    let body = (applied.outcome == Outcome::Accepted).then_some(&d.body[..]);
    let ids = serde_json::to_string(&applied.sync_event_ids).map_err(anyhow::Error::from)?;
    conn.prepare_cached(
        "INSERT INTO webhook_delivery (delivery_id, event, action, installation_id, repository_id, \
         repository_full_name, ref, head_sha, hook_id, hook_installation_target_id, outcome, reason, \
         sync_event_ids, content_type, body, received_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
    )?
    .execute(params![
        d.id,
        d.event,
        d.action,
        d.installation_id,
        d.repository_id,
        d.repository_full_name,
        d.git_ref,
        d.head_sha,
        d.hook_id,
        d.hook_installation_target_id,
        applied.outcome.as_str(),
        applied.reason,
        ids,
        d.content_type,
        body,
        now,
    ])?;
    let outcome = IngestOutcome {
        delivery_id: d.id,
        outcome: applied.outcome,
        reason: applied.reason,
        sync_event_ids: applied.sync_event_ids,
    };
    Ok((outcome, enqueued))
}

struct Ctx<'a> {
    conn: &'a Connection,
    delivery_id: &'a str,
    now: Millis,
    max_attempts: i64,
}

impl Ctx<'_> {
    fn apply_push(&self, p: &PushPlan) -> Result<Applied> {
        let targets = self.matching_targets(p)?;
        if targets.is_empty() {
            return Ok(Applied::ignored("untracked_repository"));
        }
        for t in &targets {
            // Learn the stable id of a target added by name.
            if t.repository_id.is_none() {
                self.conn
                    .prepare_cached(
                        "UPDATE connector_target SET repository_id = ?1, updated_at = ?2 WHERE id = ?3",
                    )?
                    .execute(params![p.repository_id, self.now, t.id])?;
            }
            // Follow a rename we missed.
            if t.repository_full_name != p.repository_full_name {
                self.rename(&t.id, &p.repository_full_name)?;
            }
        }
        let on_branch: Vec<&TargetRef> = targets.iter().filter(|t| t.branch == p.branch).collect();
        if on_branch.is_empty() {
            return Ok(Applied::ignored("untracked_branch"));
        }
        let (mut new_events, mut existing_events, mut changed) = (vec![], vec![], false);
        let mut reasons = vec![];
        for t in on_branch {
            if p.deleted {
                self.finish_pending(&t.id, None, SyncStatus::Cancelled)?;
                self.record_push(&t.id, p.before.as_str(), ZERO_SHA)?;
                self.conn
                    .prepare_cached(
                        "UPDATE connector_target SET health = 'branch_deleted', latest_head_sha = ?1, \
                         updated_at = ?2 WHERE id = ?3",
                    )?
                    .execute(params![ZERO_SHA, self.now, t.id])?;
                changed = true;
                continue;
            }
            if self.is_stale(t, p)? {
                reasons.push("stale");
                continue;
            }
            note_gap(t, p);
            self.record_push(&t.id, p.before.as_str(), p.after.as_str())?;
            // A push that (re)creates the branch clears the `branch_deleted` flag.
            self.conn
                .prepare_cached(
                    "UPDATE connector_target SET latest_head_sha = ?1, updated_at = ?2, \
                     health = CASE health WHEN 'branch_deleted' THEN 'pending' ELSE health END WHERE id = ?3",
                )?
                .execute(params![p.after.as_str(), self.now, t.id])?;
            if t.last_synced_sha.as_deref() == Some(p.after.as_str())
                && !self.has_unfinished_job(&t.id)?
            {
                reasons.push("already_synced");
                continue;
            }
            let target = TargetRef {
                repository_id: Some(p.repository_id),
                ..t.clone()
            };
            match self.enqueue_push(&target, p.after.as_str())? {
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

    fn matching_targets(&self, p: &PushPlan) -> Result<Vec<TargetRef>> {
        let mut stmt = self.conn.prepare_cached(
            "SELECT t.id, t.connector_id, c.installation_id, t.repository_id, t.repository_full_name, \
             t.branch, t.latest_head_sha, t.last_synced_sha \
             FROM connector_target t JOIN connector_instance c ON c.id = t.connector_id \
             WHERE t.status = 'active' AND (?1 IS NULL OR c.installation_id = ?1) \
             AND (t.repository_id = ?2 OR (t.repository_id IS NULL AND lower(t.repository_full_name) = lower(?3))) \
             ORDER BY t.id",
        )?;
        let rows = stmt.query_map(
            params![p.installation_id, p.repository_id, p.repository_full_name],
            |r| {
                Ok(TargetRef {
                    id: r.get(0)?,
                    connector_id: r.get(1)?,
                    installation_id: r.get(2)?,
                    repository_id: r.get(3)?,
                    repository_full_name: r.get(4)?,
                    branch: r.get(5)?,
                    latest_head_sha: r.get(6)?,
                    last_synced_sha: r.get(7)?,
                })
            },
        )?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// As `lifecycle::rename_targets`: a target whose new name would collide
    /// with another target of the same connector, branch and prefix keeps
    /// its old name (it is matched by repository id anyway).
    fn rename(&self, target_id: &str, full_name: &str) -> Result<()> {
        self.conn
            .prepare_cached(
                "UPDATE connector_target AS t SET repository_full_name = ?1, updated_at = ?2 \
                 WHERE t.id = ?3 AND t.repository_full_name <> ?1 \
                 AND NOT EXISTS (SELECT 1 FROM connector_target o WHERE o.id <> t.id AND o.status <> 'removed' \
                     AND o.connector_id = t.connector_id AND lower(o.repository_full_name) = lower(?1) \
                     AND o.branch = t.branch AND o.path_prefix = t.path_prefix)",
            )?
            .execute(params![full_name, self.now, target_id])?;
        Ok(())
    }

    /// Out-of-order delivery: this push's `before` is not the head we last
    /// recorded, and a recorded push already moved the branch away from this
    /// push's `after`.
    fn is_stale(&self, t: &TargetRef, p: &PushPlan) -> Result<bool> {
        if t.latest_head_sha.as_deref() == Some(p.before.as_str()) {
            return Ok(false);
        }
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 FROM target_push WHERE target_id = ?1 AND before_sha = ?2 LIMIT 1",
            )?
            .exists(params![t.id, p.after.as_str()])?)
    }

    fn has_unfinished_job(&self, target_id: &str) -> Result<bool> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT 1 FROM sync_job WHERE target_id = ?1 \
                 AND state IN ('available', 'running', 'retryable') LIMIT 1",
            )?
            .exists([target_id])?)
    }

    fn record_push(&self, target_id: &str, before: &str, after: &str) -> Result<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO target_push (target_id, before_sha, after_sha, delivery_id, received_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![target_id, before, after, self.delivery_id, self.now])?;
        Ok(())
    }

    /// As `enqueue::enqueue` for a push (a known head): supersede the
    /// target's unstarted jobs for other heads, then queue this head unless
    /// an unfinished job for it exists (the partial unique index
    /// `sync_job_dedupe` decides, with `ON CONFLICT DO NOTHING`).
    fn enqueue_push(&self, target: &TargetRef, head: &str) -> Result<Enqueued> {
        self.finish_pending(&target.id, Some(head), SyncStatus::Superseded)?;
        let event_id = new_id("sev");
        let job_id = new_id("job");
        let git_ref = format!("refs/heads/{}", target.branch);
        self.conn
            .prepare_cached(
                "INSERT INTO connector_sync_event (id, connector_target_id, delivery_id, trigger, ref, \
                 head_sha, status, created_at) VALUES (?1, ?2, ?3, 'push', ?4, ?5, 'queued', ?6)",
            )?
            .execute(params![event_id, target.id, self.delivery_id, git_ref, head, self.now])?;
        let job = GithubConnectorSyncJob {
            connector_type: "github".into(),
            connector_instance_id: target.connector_id.clone(),
            connector_target_id: target.id.clone(),
            connector_sync_event_id: event_id.clone(),
            delivery_id: Some(self.delivery_id.to_owned()),
            installation_id: target.installation_id,
            repository_id: target.repository_id,
            repository_full_name: target.repository_full_name.clone(),
            git_ref,
            head_sha: Some(head.to_owned()),
        };
        let payload = serde_json::to_string(&job).map_err(anyhow::Error::from)?;
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO sync_job (id, sync_event_id, target_id, head_sha, payload, state, max_attempts, \
                 run_at, created_at, connector_id) VALUES (?1, ?2, ?3, ?4, ?5, 'available', ?6, ?7, ?7, ?8) \
                 ON CONFLICT (target_id, head_sha) \
                 WHERE head_sha IS NOT NULL AND state IN ('available', 'running', 'retryable') DO NOTHING",
            )?
            .execute(params![
                job_id,
                event_id,
                target.id,
                head,
                payload,
                self.max_attempts,
                self.now,
                target.connector_id
            ])?;
        if inserted == 1 {
            return Ok(Enqueued::New(event_id));
        }
        self.conn
            .prepare_cached("DELETE FROM connector_sync_event WHERE id = ?1")?
            .execute([&event_id])?;
        let existing: String = self
            .conn
            .prepare_cached(
                "SELECT sync_event_id FROM sync_job WHERE target_id = ?1 AND head_sha = ?2 \
                 AND state IN ('available', 'running', 'retryable')",
            )?
            .query_row(params![target.id, head], |r| r.get(0))?;
        Ok(Enqueued::Existing(existing))
    }

    /// As `enqueue::finish_pending`: finishes the target's not-started jobs
    /// with `status`, except (with `keep_head`) those for that head.
    fn finish_pending(
        &self,
        target_id: &str,
        keep_head: Option<&str>,
        status: SyncStatus,
    ) -> Result<()> {
        let mut stmt = self.conn.prepare_cached(
            "UPDATE sync_job SET state = 'finished', finished_at = ?1, lease_owner = NULL \
             WHERE target_id = ?2 AND state IN ('available', 'retryable') \
             AND (?3 IS NULL OR head_sha IS DISTINCT FROM ?3) RETURNING sync_event_id",
        )?;
        let events = stmt
            .query_map(params![self.now, target_id, keep_head], |r| {
                r.get::<_, String>(0)
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        for event in events {
            self.conn
                .prepare_cached(
                    "UPDATE connector_sync_event SET status = ?1, completed_at = ?2, \
                     next_attempt_at = NULL WHERE id = ?3",
                )?
                .execute(params![status.as_str(), self.now, event])?;
        }
        Ok(())
    }
}

enum Enqueued {
    New(String),
    Existing(String),
}
