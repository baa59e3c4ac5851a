//! Claiming a job: fair across installations, capped per installation, one
//! running job per target, and on PostgreSQL safe for many workers at once.

use super::dialect::lock_row;
use crate::store::models::*;
use crate::store::Result;
use sqlx::{AnyConnection, Row};

/// Installations, and jobs per installation, one claim looks at before
/// giving up: enough to get past targets and installations other workers
/// are claiming at the same moment.
const CLAIM_INSTALLATIONS: i64 = 8;
const CLAIM_JOBS: i64 = 4;

/// Claims a runnable job, fairly across installations.
///
/// Runnable: due, its installation active and under `per_installation`
/// running jobs, its target tracked and idle. The installation goes first
/// that has the fewest running jobs, then the one whose oldest due job is
/// oldest; then that installation's oldest runnable job. One installation
/// with thousands of queued syncs gets at most its cap while every other
/// installation's next job goes ahead of its backlog. Both steps are index
/// seeks per installation (`sync_job_ready_by_connector`,
/// `sync_job_running_by_connector`), so a claim does not slow down as the
/// backlog grows.
///
/// On PostgreSQL many workers claim at once: the installation row and the
/// target row are locked with `SKIP LOCKED` (held by another transaction:
/// try the next candidate), and the counts are checked again under those
/// locks, which makes the cap exact. A claim that found work but skipped all
/// of it answers [`Claim::Contended`] and is simply tried again. The partial
/// unique index `sync_job_one_running` backs up "one running job per
/// target" whatever happens here.
pub enum Claim {
    Claimed(Box<ClaimedJob>),
    Nothing,
    /// Runnable jobs exist but other transactions held all of them.
    Contended,
}

/// Ready jobs, oldest first, the quick pick looks through for an idle installation.
const QUICK_PICK_WINDOW: i64 = 256;

/// The installations to claim from, best first.
///
/// The quick pick covers the common case: among the oldest due jobs, those
/// of installations with nothing running (the best there can be). It reads
/// a bounded window of the ready index, so it costs the same however many
/// installations or jobs there are. Only when that window holds nothing of
/// an idle installation (a large backlog of busy ones at the front, or
/// nothing idle at all) does the full pick run: every installation with
/// queued jobs, found by a loose index scan (one seek each), ordered by
/// running jobs, then by its oldest due job.
async fn pick_installations(
    conn: &mut AnyConnection,
    now: Millis,
    per_installation: i64,
) -> Result<Vec<String>> {
    let quick: Vec<String> = sqlx::query_scalar(
        "SELECT j.connector_id FROM (SELECT connector_id, run_at, id FROM sync_job \
             WHERE state IN ('available', 'retryable') AND run_at <= $1 ORDER BY run_at, id LIMIT $2) j \
         JOIN connector_instance c ON c.id = j.connector_id AND c.status = 'active' \
         WHERE NOT EXISTS (SELECT 1 FROM sync_job r WHERE r.connector_id = j.connector_id AND r.state = 'running') \
         ORDER BY j.run_at, j.id",
    )
    .bind(now)
    .bind(QUICK_PICK_WINDOW)
    .fetch_all(&mut *conn)
    .await?;
    let mut picked: Vec<String> = Vec::new();
    for id in quick {
        if !picked.contains(&id) {
            picked.push(id);
            if picked.len() as i64 == CLAIM_INSTALLATIONS {
                break;
            }
        }
    }
    if !picked.is_empty() {
        return Ok(picked);
    }
    Ok(sqlx::query_scalar(
        "WITH RECURSIVE waiting(cid) AS ( \
             SELECT min(connector_id) FROM sync_job WHERE state IN ('available', 'retryable') \
             UNION ALL \
             SELECT (SELECT min(connector_id) FROM sync_job \
                     WHERE state IN ('available', 'retryable') AND connector_id > waiting.cid) \
             FROM waiting WHERE waiting.cid IS NOT NULL) \
         SELECT id FROM (SELECT c.id, \
             (SELECT count(*) FROM sync_job r WHERE r.connector_id = c.id AND r.state = 'running') AS running, \
             (SELECT min(j.run_at) FROM sync_job j WHERE j.connector_id = c.id \
                AND j.state IN ('available', 'retryable') AND j.run_at <= $1) AS oldest \
           FROM waiting JOIN connector_instance c ON c.id = waiting.cid WHERE c.status = 'active') i \
         WHERE oldest IS NOT NULL AND running < $2 ORDER BY running, oldest, id LIMIT $3",
    )
    .bind(now)
    .bind(per_installation)
    .bind(CLAIM_INSTALLATIONS)
    .fetch_all(&mut *conn)
    .await?)
}

pub async fn claim(
    conn: &mut AnyConnection,
    owner: &str,
    now: Millis,
    lease_ms: i64,
    per_installation: i64,
) -> Result<Claim> {
    let installations = pick_installations(conn, now, per_installation).await?;
    let mut contended = false;
    let mut row = None;
    'installations: for connector_id in installations {
        if !lock_row(conn, "connector_instance", &connector_id, true).await? {
            contended = true;
            continue;
        }
        let jobs: Vec<(String, String)> = sqlx::query_as(
            "SELECT j.id, j.target_id FROM sync_job j JOIN connector_target t ON t.id = j.target_id \
             WHERE j.connector_id = $1 AND j.state IN ('available', 'retryable') AND j.run_at <= $2 \
               AND t.status = 'active' \
               AND NOT EXISTS (SELECT 1 FROM sync_job x WHERE x.target_id = j.target_id AND x.state = 'running') \
             ORDER BY j.run_at, j.id LIMIT $3",
        )
        .bind(&connector_id)
        .bind(now)
        .bind(CLAIM_JOBS)
        .fetch_all(&mut *conn)
        .await?;
        for (job_id, target_id) in jobs {
            if !lock_row(conn, "connector_target", &target_id, true).await? {
                contended = true;
                continue;
            }
            row = sqlx::query(
                "UPDATE sync_job SET state = 'running', attempt = attempt + 1, lease_owner = $1, lease_expires_at = $2 + $3 \
                 WHERE id = $4 AND state IN ('available', 'retryable') AND run_at <= $2 \
                   AND NOT EXISTS (SELECT 1 FROM sync_job x WHERE x.target_id = $5 AND x.state = 'running') \
                   AND (SELECT count(*) FROM sync_job r WHERE r.connector_id = $6 AND r.state = 'running') < $7 \
                 RETURNING id, attempt, max_attempts, payload, sync_event_id, target_id",
            )
            .bind(owner)
            .bind(now)
            .bind(lease_ms)
            .bind(&job_id)
            .bind(&target_id)
            .bind(&connector_id)
            .bind(per_installation)
            .fetch_optional(&mut *conn)
            .await?;
            if row.is_some() {
                break 'installations;
            }
        }
    }
    let Some(row) = row else {
        return Ok(if contended {
            Claim::Contended
        } else {
            Claim::Nothing
        });
    };
    let job_id: String = row.try_get("id")?;
    let attempt: i64 = row.try_get("attempt")?;
    let event_id: String = row.try_get("sync_event_id")?;
    let target_id: String = row.try_get("target_id")?;
    let mut job: GithubConnectorSyncJob =
        serde_json::from_str(row.try_get::<&str, _>("payload")?).map_err(anyhow::Error::from)?;
    // The repository may have been renamed (or its id learned) since enqueue.
    let target = sqlx::query("SELECT repository_id, repository_full_name, path_prefix, max_file_bytes FROM connector_target WHERE id = $1")
        .bind(&target_id)
        .fetch_one(&mut *conn)
        .await?;
    job.repository_id = target.try_get("repository_id")?;
    job.repository_full_name = target.try_get("repository_full_name")?;
    sqlx::query(
        "UPDATE connector_sync_event SET status = 'running', attempts = $1, started_at = coalesce(started_at, $2), \
         next_attempt_at = NULL WHERE id = $3",
    )
    .bind(attempt)
    .bind(now)
    .bind(&event_id)
    .execute(&mut *conn)
    .await?;
    Ok(Claim::Claimed(Box::new(ClaimedJob {
        job_id,
        attempt,
        max_attempts: row.try_get("max_attempts")?,
        job,
        path_prefix: target.try_get("path_prefix")?,
        max_file_bytes: target.try_get("max_file_bytes")?,
    })))
}
