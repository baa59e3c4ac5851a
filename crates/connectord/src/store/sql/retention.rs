//! Retention: old bodies, pushes, finished syncs and deliveries are deleted in
//! batches, one short transaction each, so a large backlog never holds the
//! SQLite writer or many PostgreSQL row locks for long.

use super::SqlStore;
use crate::store::models::Millis;
use crate::store::Result;
use futures::FutureExt;
use std::sync::Arc;

/// Rows per pruning transaction.
const PRUNE_BATCH: i64 = 500;

impl SqlStore {
    /// Runs `sql` (which touches at most a batch of rows older than `before`)
    /// until it touches none, one transaction per batch, so a large backlog
    /// never holds the writer (or many row locks) for long.
    async fn prune_in_batches(&self, sql: String, before: Millis) -> Result<u64> {
        let sql: Arc<str> = sql.into();
        let mut total = 0;
        loop {
            let sql = sql.clone();
            let n = self
                .write(move |c| {
                    async move {
                        Ok(sqlx::query(&sql)
                            .bind(before)
                            .execute(c)
                            .await?
                            .rows_affected())
                    }
                    .boxed()
                })
                .await?;
            total += n;
            if n == 0 {
                return Ok(total);
            }
        }
    }

    pub(super) async fn prune_delivery_bodies_before(&self, before: Millis) -> Result<u64> {
        self.prune_in_batches(
            format!(
                "UPDATE webhook_delivery SET body = NULL WHERE seq IN (SELECT seq FROM webhook_delivery \
                 WHERE body IS NOT NULL AND received_at < $1 LIMIT {PRUNE_BATCH})"
            ),
            before,
        )
        .await
    }

    pub(super) async fn prune_push_history_before(&self, before: Millis) -> Result<u64> {
        let key = self.dialect().push_key();
        self.prune_in_batches(
            format!(
                "DELETE FROM target_push WHERE {key} IN \
                 (SELECT {key} FROM target_push WHERE received_at < $1 LIMIT {PRUNE_BATCH})"
            ),
            before,
        )
        .await
    }

    pub(super) async fn prune_history_before(&self, before: Millis) -> Result<u64> {
        // Jobs first: a sync event is referenced by its job.
        let jobs = self
            .prune_in_batches(
                format!(
                    "DELETE FROM sync_job WHERE id IN (SELECT id FROM sync_job \
                     WHERE state = 'finished' AND finished_at < $1 LIMIT {PRUNE_BATCH})"
                ),
                before,
            )
            .await?;
        let events = self
            .prune_in_batches(
                format!(
                    "DELETE FROM connector_sync_event WHERE id IN (SELECT e.id FROM connector_sync_event e \
                     WHERE e.status IN ('completed', 'partial', 'failed', 'superseded', 'cancelled') \
                     AND e.completed_at < $1 \
                     AND NOT EXISTS (SELECT 1 FROM sync_job j WHERE j.sync_event_id = e.id) \
                     AND NOT EXISTS (SELECT 1 FROM document d WHERE d.sync_event_id = e.id) \
                     LIMIT {PRUNE_BATCH})"
                ),
                before,
            )
            .await?;
        let deliveries = self
            .prune_in_batches(
                format!(
                    "DELETE FROM webhook_delivery WHERE seq IN (SELECT seq FROM webhook_delivery \
                     WHERE received_at < $1 LIMIT {PRUNE_BATCH})"
                ),
                before,
            )
            .await?;
        Ok(jobs + events + deliveries)
    }
}
