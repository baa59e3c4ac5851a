//! The content store: documents per target and the append-only change feed.

use crate::store::models::*;
use crate::store::{Result, StoreError};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};
use std::collections::HashMap;

/// Writes the changes and their feed entries. An upsert of identical content
/// (same blob SHA) is a no-op, so applying the same result twice changes nothing.
pub async fn apply_changes(
    conn: &mut AnyConnection,
    target_id: &str,
    event_id: &str,
    changes: &[DocumentChange],
    now: Millis,
) -> Result<()> {
    for change in changes {
        let (path, op, blob) = match change {
            DocumentChange::Upsert {
                path,
                blob_sha,
                is_binary,
                content,
            } => {
                let existing: Option<String> = sqlx::query_scalar(
                    "SELECT blob_sha FROM document WHERE target_id = $1 AND path = $2",
                )
                .bind(target_id)
                .bind(path)
                .fetch_optional(&mut *conn)
                .await?;
                if existing.as_deref() == Some(blob_sha.as_str()) {
                    continue;
                }
                sqlx::query(
                    "INSERT INTO document (target_id, path, blob_sha, size, is_binary, content, updated_at, sync_event_id) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (target_id, path) DO UPDATE SET \
                     blob_sha = excluded.blob_sha, size = excluded.size, is_binary = excluded.is_binary, \
                     content = excluded.content, updated_at = excluded.updated_at, sync_event_id = excluded.sync_event_id",
                )
                .bind(target_id)
                .bind(path)
                .bind(blob_sha)
                .bind(content.len() as i64)
                .bind(is_binary)
                .bind(content)
                .bind(now)
                .bind(event_id)
                .execute(&mut *conn)
                .await?;
                let op = if existing.is_some() {
                    "updated"
                } else {
                    "created"
                };
                (path, op, Some(blob_sha.as_str()))
            }
            DocumentChange::Delete { path } => {
                let n = sqlx::query("DELETE FROM document WHERE target_id = $1 AND path = $2")
                    .bind(target_id)
                    .bind(path)
                    .execute(&mut *conn)
                    .await?
                    .rows_affected();
                if n == 0 {
                    continue;
                }
                (path, "deleted", None)
            }
        };
        sqlx::query(
            "INSERT INTO document_change (target_id, path, op, blob_sha, sync_event_id) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(target_id)
        .bind(path)
        .bind(op)
        .bind(blob)
        .bind(event_id)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

pub async fn manifest(
    conn: &mut AnyConnection,
    target_id: &str,
) -> Result<HashMap<String, String>> {
    let rows = sqlx::query("SELECT path, blob_sha FROM document WHERE target_id = $1")
        .bind(target_id)
        .fetch_all(&mut *conn)
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("path")?, r.try_get("blob_sha")?)))
        .collect()
}

fn document_from_row(r: &AnyRow) -> Result<Document> {
    Ok(Document {
        path: r.try_get("path")?,
        blob_sha: r.try_get("blob_sha")?,
        size: r.try_get("size")?,
        is_binary: super::dialect::flag(r, "is_binary")?,
        updated_at: rfc3339(r.try_get("updated_at")?),
        sync_event_id: r.try_get("sync_event_id")?,
    })
}

const DOCUMENT_COLUMNS: &str = "path, blob_sha, size, is_binary, updated_at, sync_event_id";

/// Documents in path order; the cursor is the last path of the previous page.
pub async fn list_documents(
    conn: &mut AnyConnection,
    target_id: &str,
    prefix: Option<&str>,
    page: &Page,
) -> Result<Listing<Document>> {
    // `substr` rather than LIKE: paths may contain `%` and `_`.
    let rows = sqlx::query(&format!(
        "SELECT {DOCUMENT_COLUMNS} FROM document WHERE target_id = $1 \
         AND ($2 IS NULL OR substr(path, 1, length($2)) = $2) AND ($3 IS NULL OR path > $3) \
         ORDER BY path LIMIT $4"
    ))
    .bind(target_id)
    .bind(prefix)
    .bind(&page.cursor)
    .bind(page.limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let items = rows
        .iter()
        .map(document_from_row)
        .collect::<Result<Vec<_>>>()?;
    Ok(super::admin::page(items, page.limit, |d| d.path.clone()))
}

pub async fn get_document(
    conn: &mut AnyConnection,
    target_id: &str,
    path: &str,
) -> Result<(Document, Vec<u8>)> {
    let row = sqlx::query(&format!(
        "SELECT {DOCUMENT_COLUMNS}, content FROM document WHERE target_id = $1 AND path = $2"
    ))
    .bind(target_id)
    .bind(path)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(StoreError::NotFound)?;
    Ok((document_from_row(&row)?, row.try_get("content")?))
}

pub async fn list_changes(
    conn: &mut AnyConnection,
    target_id: &str,
    after: i64,
    limit: i64,
) -> Result<Listing<ChangeEntry>> {
    let rows = sqlx::query(
        "SELECT seq, target_id, path, op, blob_sha, sync_event_id FROM document_change \
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
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(super::admin::page(items, limit, |c| c.seq.to_string()))
}
