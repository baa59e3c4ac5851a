//! The content store's writes: a sync's document changes, the change feed
//! and the revision they make, applied inside the job's completion.
//!
//! Bytes are not here: they were written before, one blob at a time
//! (`blobs.rs`), so this transaction's size follows the number of changed
//! paths. Document rows are versioned (`from_seq`/`to_seq`, the feed entries
//! that started and ended them) so a recorded revision stays readable after
//! later syncs (`snapshot.rs`).

use super::dialect::Dialect;
use crate::store::models::*;
use crate::store::{Result, StoreError};
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;

/// Where a completion's changes go, and what they are part of.
pub struct Apply<'a> {
    pub target_id: &'a str,
    pub event_id: &'a str,
    /// The revision (head SHA) the feed entries belong to.
    pub head_sha: Option<&'a str>,
    pub now: Millis,
}

/// Writes the changes and their feed entries. An upsert of identical content
/// (same blob SHA) is a no-op, so applying the same result twice changes
/// nothing. An upsert whose blob is not stored is refused (the whole
/// completion rolls back and the job is retried): a document never points at
/// missing bytes.
pub async fn apply_changes(
    conn: &mut AnyConnection,
    at: &Apply<'_>,
    changes: &[DocumentChange],
) -> Result<()> {
    // Read up front, in a few statements, what each change needs to know:
    // the current blob of every path and the stored size of every blob. Per
    // change that was five statements, and a 10,000-file first sync spent
    // seconds in its completion on them.
    let mut current = manifest(conn, at.target_id).await?;
    let wanted: Vec<(&str, i64)> = changes
        .iter()
        .filter_map(|c| match c {
            DocumentChange::Upsert {
                path,
                blob_sha,
                size,
                ..
            } if current.get(path) != Some(blob_sha) => Some((blob_sha.as_str(), *size)),
            _ => None,
        })
        .collect();
    require_blobs(conn, &wanted).await?;
    for change in changes {
        match change {
            DocumentChange::Upsert {
                path,
                blob_sha,
                size,
                is_binary,
            } => {
                let existing = current.get(path);
                if existing == Some(blob_sha) {
                    continue;
                }
                let op = if existing.is_some() {
                    "updated"
                } else {
                    "created"
                };
                let seq = feed(conn, at, path, op, Some(blob_sha)).await?;
                if existing.is_some() {
                    end_current(conn, at.target_id, path, seq).await?;
                }
                sqlx::query(
                    "INSERT INTO document (target_id, path, from_seq, to_seq, blob_sha, size, is_binary, updated_at, sync_event_id) \
                     VALUES ($1, $2, $3, NULL, $4, $5, $6, $7, $8)",
                )
                .bind(at.target_id)
                .bind(path)
                .bind(seq)
                .bind(blob_sha)
                .bind(*size)
                .bind(*is_binary)
                .bind(at.now)
                .bind(at.event_id)
                .execute(&mut *conn)
                .await?;
                current.insert(path.clone(), blob_sha.clone());
            }
            DocumentChange::Delete { path } => {
                if current.remove(path).is_none() {
                    continue;
                }
                let seq = feed(conn, at, path, "deleted", None).await?;
                end_current(conn, at.target_id, path, seq).await?;
            }
        }
    }
    Ok(())
}

/// Every blob must be stored, with the size the change claims. On PostgreSQL
/// the rows are share-locked until commit, so a concurrent collection of
/// unreferenced blobs waits for this transaction (and then finds them
/// referenced).
async fn require_blobs(conn: &mut AnyConnection, wanted: &[(&str, i64)]) -> Result<()> {
    let d = Dialect::of(conn);
    let lock = match d {
        Dialect::Postgres => " FOR KEY SHARE",
        Dialect::Sqlite => "",
    };
    let sql = format!(
        "SELECT sha, size FROM blob WHERE sha IN ({}){lock}",
        d.json_strings(1)
    );
    for chunk in wanted.chunks(500) {
        let shas: Vec<&str> = chunk.iter().map(|(s, _)| *s).collect();
        let json = serde_json::to_string(&shas).map_err(|e| StoreError::Internal(e.into()))?;
        let rows = sqlx::query(&sql).bind(json).fetch_all(&mut *conn).await?;
        let mut stored: HashMap<String, i64> = HashMap::with_capacity(rows.len());
        for r in &rows {
            stored.insert(r.try_get("sha")?, r.try_get("size")?);
        }
        for (sha, size) in chunk {
            match stored.get(*sha) {
                Some(s) if s == size => {}
                Some(s) => {
                    return Err(StoreError::Conflict(format!(
                        "blob {sha} is {s} bytes, the change says {size}"
                    )))
                }
                None => {
                    return Err(StoreError::Conflict(format!(
                    "blob {sha} is not stored; it must be written before the documents that use it"
                )))
                }
            }
        }
    }
    Ok(())
}

/// Appends a feed entry and returns its `seq`.
async fn feed(
    conn: &mut AnyConnection,
    at: &Apply<'_>,
    path: &str,
    op: &str,
    blob: Option<&str>,
) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "INSERT INTO document_change (target_id, path, op, blob_sha, sync_event_id, head_sha) \
         VALUES ($1, $2, $3, $4, $5, $6) RETURNING seq",
    )
    .bind(at.target_id)
    .bind(path)
    .bind(op)
    .bind(blob)
    .bind(at.event_id)
    .bind(at.head_sha)
    .fetch_one(&mut *conn)
    .await?)
}

/// Ends the current version of `path` at feed entry `seq` (kept for older revisions).
async fn end_current(
    conn: &mut AnyConnection,
    target_id: &str,
    path: &str,
    seq: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE document SET to_seq = $1 WHERE target_id = $2 AND path = $3 AND to_seq IS NULL",
    )
    .bind(seq)
    .bind(target_id)
    .bind(path)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Records the revision this completion leaves: the target's feed position
/// after it. The target's row lock (PostgreSQL) or the one writer (SQLite)
/// orders a target's completions, so a later revision always ends later.
pub async fn record_revision(
    conn: &mut AnyConnection,
    at: &Apply<'_>,
    complete: bool,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO target_revision (target_id, head_sha, end_seq, complete, sync_event_id, created_at) \
         VALUES ($1, $2, (SELECT coalesce(max(seq), 0) FROM document_change WHERE target_id = $1), $3, $4, $5)",
    )
    .bind(at.target_id)
    .bind(at.head_sha)
    .bind(complete)
    .bind(at.event_id)
    .bind(at.now)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// What the store holds of a target now: path → git blob SHA.
pub async fn manifest(
    conn: &mut AnyConnection,
    target_id: &str,
) -> Result<HashMap<String, String>> {
    let rows =
        sqlx::query("SELECT path, blob_sha FROM document WHERE target_id = $1 AND to_seq IS NULL")
            .bind(target_id)
            .fetch_all(&mut *conn)
            .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("path")?, r.try_get("blob_sha")?)))
        .collect()
}

pub async fn list_changes(
    conn: &mut AnyConnection,
    target_id: &str,
    after: i64,
    limit: i64,
) -> Result<Listing<ChangeEntry>> {
    let rows = sqlx::query(
        "SELECT seq, target_id, path, op, blob_sha, sync_event_id, head_sha FROM document_change \
         WHERE target_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
    )
    .bind(target_id)
    .bind(after)
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let items = rows
        .iter()
        .map(|r| {
            Ok(ChangeEntry {
                seq: r.try_get("seq")?,
                target_id: r.try_get("target_id")?,
                path: r.try_get("path")?,
                op: r.try_get("op")?,
                blob_sha: r.try_get("blob_sha")?,
                sync_event_id: r.try_get("sync_event_id")?,
                head_sha: r.try_get("head_sha")?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(super::admin::page(items, limit, |c| c.seq.to_string()))
}
