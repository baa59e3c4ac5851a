//! Content-addressed blobs: written one by one as a sync fetches them, each
//! in its own short write, and collected by retention once nothing refers to
//! them.
//!
//! Why collection is safe beside running syncs: a sync writes its blobs
//! first and points documents at them only in its completion. So only blobs
//! written before a grace period (`ContentRetention::blobs_before`, a day in
//! `serve`, far longer than a sync runs) are collected. A blob written
//! earlier that a sync reuses (already stored, so not written again) can
//! still be collected before that sync completes; the completion then finds
//! it missing and is refused (`content::require_blob`), the job is retried,
//! and the retry writes the blob again. On PostgreSQL the completion holds a
//! share lock on each blob it points at, and the `document → blob` foreign
//! key refuses a delete that lost the race. A document never points at
//! missing bytes.

use super::SqlStore;
use crate::store::models::ContentRetention;
use crate::store::{Result, StoreError};
use futures::FutureExt;

/// Rows per retention transaction.
const BATCH: i64 = 500;

impl SqlStore {
    /// One write for a batch: a sync's files are many and each write is a
    /// commit (an fsync on SQLite), so one per file made a 10,000-file first
    /// sync spend most of its time committing.
    pub(super) async fn put_blob_bytes(&self, blobs: Vec<(String, Vec<u8>)>) -> Result<()> {
        for (sha, bytes) in &blobs {
            let actual = crate::github::tarball::git_blob_sha(bytes);
            if actual != *sha {
                return Err(StoreError::Invalid(format!(
                    "blob {sha}: the bytes hash to {actual}"
                )));
            }
        }
        // Already stored (another branch, target or commit has the file):
        // nothing to send through the writer.
        let shas: Vec<&str> = blobs.iter().map(|(s, _)| s.as_str()).collect();
        let json = serde_json::to_string(&shas).map_err(|e| StoreError::Internal(e.into()))?;
        let stored: Vec<String> = sqlx::query_scalar(&format!(
            "SELECT sha FROM blob WHERE sha IN ({})",
            self.dialect().json_strings(1)
        ))
        .bind(json)
        .fetch_all(&self.read)
        .await?;
        let stored: std::collections::HashSet<String> = stored.into_iter().collect();
        let mut missing: Vec<(String, Vec<u8>)> = blobs
            .into_iter()
            .filter(|(sha, _)| !stored.contains(sha))
            .collect();
        missing.sort_by(|a, b| a.0.cmp(&b.0));
        missing.dedup_by(|a, b| a.0 == b.0);
        if missing.is_empty() {
            return Ok(());
        }
        let now = crate::store::models::now_ms();
        self.write(move |c| {
            async move {
                for (sha, bytes) in missing {
                    sqlx::query(
                        "INSERT INTO blob (sha, size, content, created_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT (sha) DO NOTHING",
                    )
                    .bind(sha)
                    .bind(bytes.len() as i64)
                    .bind(bytes)
                    .bind(now)
                    .execute(&mut *c)
                    .await?;
                }
                Ok(())
            }
            .boxed()
        })
        .await
    }

    /// Runs `sql` (binding `binds` as `$1…`, touching at most a batch of rows)
    /// until it touches none, one short transaction per batch.
    async fn in_batches(&self, sql: String, binds: Vec<i64>) -> Result<u64> {
        let sql: std::sync::Arc<str> = sql.into();
        let mut total = 0;
        loop {
            let (sql, binds) = (sql.clone(), binds.clone());
            let n = self
                .write(move |c| {
                    async move {
                        let mut q = sqlx::query(&sql);
                        for b in binds {
                            q = q.bind(b);
                        }
                        Ok(q.execute(c).await?.rows_affected())
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

    /// Content retention, in this order, each step in batches:
    /// 1. documents and revisions of removed targets (an admin delete);
    /// 2. revisions beyond the newest `keep_revisions` of each target that are
    ///    also older than `revisions_before`;
    /// 3. document versions no remaining revision can see (ended at or before
    ///    the target's oldest remaining revision);
    /// 4. blobs no document row refers to, written before `blobs_before`.
    pub(super) async fn prune_content_with(&self, r: ContentRetention) -> Result<u64> {
        let key = "(target_id, path, from_seq)";
        let removed = self
            .in_batches(
                format!(
                    "DELETE FROM document WHERE {key} IN (SELECT d.target_id, d.path, d.from_seq \
                     FROM document d JOIN connector_target t ON t.id = d.target_id \
                     WHERE t.status = 'removed' LIMIT {BATCH})"
                ),
                vec![],
            )
            .await?
            + self
                .in_batches(
                    format!(
                        "DELETE FROM target_revision WHERE id IN (SELECT r.id FROM target_revision r \
                         JOIN connector_target t ON t.id = r.target_id WHERE t.status = 'removed' LIMIT {BATCH})"
                    ),
                    vec![],
                )
                .await?;
        let revisions = self
            .in_batches(
                format!(
                    "DELETE FROM target_revision WHERE id IN (SELECT r.id FROM target_revision r \
                     WHERE r.created_at < $1 AND (SELECT count(*) FROM target_revision n \
                     WHERE n.target_id = r.target_id AND n.id > r.id) >= $2 LIMIT {BATCH})"
                ),
                vec![r.revisions_before, r.keep_revisions.max(1)],
            )
            .await?;
        let versions = self
            .in_batches(
                format!(
                    "DELETE FROM document WHERE {key} IN (SELECT d.target_id, d.path, d.from_seq \
                     FROM document d WHERE d.to_seq IS NOT NULL AND d.to_seq <= coalesce(\
                     (SELECT min(v.end_seq) FROM target_revision v WHERE v.target_id = d.target_id), d.to_seq) \
                     LIMIT {BATCH})"
                ),
                vec![],
            )
            .await?;
        let blobs = self
            .in_batches(
                format!(
                    "DELETE FROM blob WHERE sha IN (SELECT b.sha FROM blob b WHERE b.created_at < $1 \
                     AND NOT EXISTS (SELECT 1 FROM document d WHERE d.blob_sha = b.sha) LIMIT {BATCH})"
                ),
                vec![r.blobs_before],
            )
            .await?;
        if blobs > 0 {
            tracing::info!(blobs, "collected unreferenced blobs");
        }
        Ok(removed + revisions + versions + blobs)
    }
}
