//! Reads of one revision: a listing, and every later page of it, shows the
//! documents exactly as one sync left them, however many syncs commit while a
//! consumer pages.
//!
//! A revision is a position in the target's change feed (`end_seq`); the
//! document versions it shows are those with `from_seq <= end_seq <
//! coalesce(to_seq, ∞)`. Each read runs in one read transaction
//! (SQLite's WAL snapshot; PostgreSQL REPEATABLE READ), so retention pruning
//! between its statements cannot tear a page.

use super::dialect::{flag, Dialect};
use crate::store::models::*;
use crate::store::{Result, StoreError};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Connection, Row};

const DOCUMENT_COLUMNS: &str =
    "d.path, d.blob_sha, d.size, d.is_binary, d.updated_at, d.sync_event_id";

/// Documents visible at revision `$2` of target `$1`.
const VISIBLE: &str =
    "d.target_id = $1 AND d.from_seq <= $2 AND (d.to_seq IS NULL OR d.to_seq > $2)";

const REVISION_COLUMNS: &str = "head_sha, end_seq, complete, sync_event_id, created_at";

fn document_from_row(r: &AnyRow) -> Result<Document> {
    Ok(Document {
        path: r.try_get("path")?,
        blob_sha: r.try_get("blob_sha")?,
        size: r.try_get("size")?,
        is_binary: flag(r, "is_binary")?,
        updated_at: rfc3339(r.try_get("updated_at")?),
        sync_event_id: r.try_get("sync_event_id")?,
    })
}

fn revision_from_row(r: &AnyRow) -> Result<Revision> {
    Ok(Revision {
        head_sha: r.try_get("head_sha")?,
        seq: r.try_get("end_seq")?,
        complete: flag(r, "complete")?,
        sync_event_id: r.try_get("sync_event_id")?,
        created_at: rfc3339(r.try_get("created_at")?),
    })
}

/// Which revision a read asks for.
#[derive(Clone, Copy)]
pub enum Want<'a> {
    /// The latest recorded revision.
    Latest,
    /// The newest revision of this head SHA (`?revision=`).
    Head(&'a str),
    /// The revision ending at this feed position (a paging cursor).
    Seq(i64),
}

/// The revision `want` names. `None` only for [`Want::Latest`] of a target
/// never synced.
async fn resolve(
    conn: &mut AnyConnection,
    target_id: &str,
    want: Want<'_>,
) -> Result<Option<Revision>> {
    let by = match want {
        Want::Latest => "",
        Want::Head(_) => " AND head_sha = $2",
        Want::Seq(_) => " AND end_seq = $2",
    };
    let sql = format!(
        "SELECT {REVISION_COLUMNS} FROM target_revision WHERE target_id = $1{by} ORDER BY id DESC LIMIT 1"
    );
    let q = sqlx::query(&sql).bind(target_id);
    let q = match want {
        Want::Latest => q,
        Want::Head(sha) => q.bind(sha),
        Want::Seq(seq) => q.bind(seq),
    };
    let row = q.fetch_optional(&mut *conn).await?;
    match (row, &want) {
        (Some(r), _) => Ok(Some(revision_from_row(&r)?)),
        (None, Want::Latest) => Ok(None),
        (None, Want::Head(_)) => Err(StoreError::NotFound),
        (None, Want::Seq(_)) => Err(StoreError::Conflict(
            "the revision this cursor pages is no longer retained; list again from the start"
                .into(),
        )),
    }
}

/// Opens the read transaction every snapshot read runs in.
async fn begin(conn: &mut AnyConnection) -> Result<sqlx::Transaction<'_, sqlx::Any>> {
    let postgres = Dialect::of(conn) == Dialect::Postgres;
    let mut tx = conn.begin().await?;
    if postgres {
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
            .execute(&mut *tx)
            .await?;
    }
    Ok(tx)
}

/// A cursor is `<end_seq>:<last path>`: the revision travels with it.
pub fn parse_cursor(cursor: &str) -> Result<(i64, &str)> {
    cursor
        .split_once(':')
        .and_then(|(seq, path)| Some((seq.parse::<i64>().ok().filter(|s| *s >= 0)?, path)))
        .ok_or_else(|| StoreError::Invalid("invalid cursor".into()))
}

/// Documents of one revision in path order: `revision` (a head SHA), else
/// the cursor's revision, else the latest.
pub async fn list_documents(
    conn: &mut AnyConnection,
    target_id: &str,
    prefix: Option<&str>,
    revision: Option<&str>,
    page: &Page,
) -> Result<DocumentListing> {
    let cursor = page.cursor.as_deref().map(parse_cursor).transpose()?;
    let want = match (cursor, revision) {
        (Some((seq, _)), _) => Want::Seq(seq),
        (None, Some(sha)) => Want::Head(sha),
        (None, None) => Want::Latest,
    };
    let mut tx = begin(conn).await?;
    let rev = match (resolve(&mut tx, target_id, want).await, cursor) {
        // A cursor at 0 was handed out before the first sync: still nothing.
        (Err(StoreError::Conflict(_)), Some((0, _))) => None,
        (r, _) => r?,
    };
    let end = rev.as_ref().map_or(0, |r| r.seq);
    // `substr` rather than LIKE: paths may contain `%` and `_`.
    let rows = sqlx::query(&format!(
        "SELECT {DOCUMENT_COLUMNS} FROM document d WHERE {VISIBLE} \
         AND ($3 IS NULL OR substr(d.path, 1, length($3)) = $3) AND ($4 IS NULL OR d.path > $4) \
         ORDER BY d.path LIMIT $5"
    ))
    .bind(target_id)
    .bind(end)
    .bind(prefix)
    .bind(cursor.map(|(_, path)| path))
    .bind(page.limit + 1)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let items = rows
        .iter()
        .map(document_from_row)
        .collect::<Result<Vec<_>>>()?;
    let listing = super::admin::page(items, page.limit, |d| format!("{end}:{}", d.path));
    Ok(DocumentListing {
        items: listing.items,
        next_cursor: listing.next_cursor,
        revision: rev,
    })
}

/// One document and its bytes: as it is now, or as of `revision` (a head SHA).
pub async fn get_document(
    conn: &mut AnyConnection,
    target_id: &str,
    path: &str,
    revision: Option<&str>,
) -> Result<(Document, Vec<u8>)> {
    let mut tx = begin(conn).await?;
    let end = match revision {
        Some(sha) => resolve(&mut tx, target_id, Want::Head(sha))
            .await?
            .map(|r| r.seq),
        None => None,
    };
    let visible = match end {
        Some(_) => VISIBLE,
        None => "d.target_id = $1 AND d.to_seq IS NULL AND $2 IS NULL",
    };
    let row = sqlx::query(&format!(
        "SELECT {DOCUMENT_COLUMNS}, b.content FROM document d JOIN blob b ON b.sha = d.blob_sha \
         WHERE {visible} AND d.path = $3"
    ))
    .bind(target_id)
    .bind(end)
    .bind(path)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(StoreError::NotFound)?;
    tx.commit().await?;
    Ok((document_from_row(&row)?, row.try_get("content")?))
}
