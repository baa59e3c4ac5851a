//! Reads behind the admin API's listings and lookups: each one statement on
//! the read pool (SQLite's read-only connections, or PostgreSQL's pool).

use super::admin::*;
use crate::store::models::*;
use crate::store::{Result, StoreError, StoredBody};
use sqlx::{AnyPool, Row};

fn limit_plus_one(p: &Page) -> i64 {
    p.limit + 1
}

pub async fn delivery_body(pool: &AnyPool, delivery_id: &str) -> Result<StoredBody> {
    let row = sqlx::query(
        "SELECT event, content_type, body, hook_id, hook_installation_target_id FROM webhook_delivery WHERE delivery_id = $1",
    )
    .bind(delivery_id)
    .fetch_optional(pool)
    .await?
    .ok_or(StoreError::NotFound)?;
    let body: Option<Vec<u8>> = row.try_get("body")?;
    let body = body.ok_or_else(|| {
        StoreError::Conflict(
            "the body of this delivery is not retained (ignored, or past retention)".into(),
        )
    })?;
    Ok(StoredBody {
        event: row.try_get("event")?,
        content_type: row
            .try_get::<Option<String>, _>("content_type")?
            .unwrap_or_default(),
        body,
        hook_id: row.try_get("hook_id")?,
        hook_installation_target_id: row.try_get("hook_installation_target_id")?,
    })
}

pub async fn list_connectors(pool: &AnyPool, p: &Page) -> Result<Listing<ConnectorInstance>> {
    let rows = sqlx::query(
        "SELECT * FROM connector_instance WHERE ($1 IS NULL OR id < $1) ORDER BY id DESC LIMIT $2",
    )
    .bind(&p.cursor)
    .bind(limit_plus_one(p))
    .fetch_all(pool)
    .await?;
    let items = rows
        .iter()
        .map(connector_from_row)
        .collect::<Result<Vec<_>>>()?;
    Ok(page(items, p.limit, |c| c.id.clone()))
}

pub async fn get_connector(pool: &AnyPool, id: &str) -> Result<ConnectorInstance> {
    let row = sqlx::query("SELECT * FROM connector_instance WHERE id = $1")
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(StoreError::NotFound)?;
    connector_from_row(&row)
}

pub async fn list_targets(pool: &AnyPool, connector_id: &str, p: &Page) -> Result<Listing<Target>> {
    get_connector(pool, connector_id).await?;
    let rows = sqlx::query(
        "SELECT * FROM connector_target WHERE connector_id = $1 AND status <> 'removed' \
         AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
    )
    .bind(connector_id)
    .bind(&p.cursor)
    .bind(limit_plus_one(p))
    .fetch_all(pool)
    .await?;
    let items = rows
        .iter()
        .map(target_from_row)
        .collect::<Result<Vec<_>>>()?;
    Ok(page(items, p.limit, |t| t.id.clone()))
}

pub async fn list_sync_events(
    pool: &AnyPool,
    f: &SyncEventFilter,
    p: &Page,
) -> Result<Listing<SyncEvent>> {
    let rows = sqlx::query(
        "SELECT * FROM connector_sync_event WHERE ($1 IS NULL OR connector_target_id = $1) \
         AND ($2 IS NULL OR status = $2) AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
    )
    .bind(&f.target_id)
    .bind(f.status.map(SyncStatus::as_str))
    .bind(&p.cursor)
    .bind(limit_plus_one(p))
    .fetch_all(pool)
    .await?;
    let items = rows
        .iter()
        .map(sync_event_from_row)
        .collect::<Result<Vec<_>>>()?;
    Ok(page(items, p.limit, |e| e.id.clone()))
}

pub async fn list_deliveries(pool: &AnyPool, p: &Page) -> Result<Listing<Delivery>> {
    // Deliveries page by arrival order (`seq`); GitHub's GUIDs do not sort by time.
    let cursor = match &p.cursor {
        Some(c) => Some(
            c.parse::<i64>()
                .map_err(|_| StoreError::Invalid("invalid cursor".into()))?,
        ),
        None => None,
    };
    let rows = sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_delivery WHERE ($1 IS NULL OR seq < $1) ORDER BY seq DESC LIMIT $2"
    ))
    .bind(cursor)
    .bind(limit_plus_one(p))
    .fetch_all(pool)
    .await?;
    let pairs = rows
        .iter()
        .map(|r| Ok((r.try_get::<i64, _>("seq")?, delivery_from_row(r)?)))
        .collect::<Result<Vec<_>>>()?;
    let listing = page(pairs, p.limit, |(seq, _)| seq.to_string());
    Ok(Listing {
        items: listing.items.into_iter().map(|(_, d)| d).collect(),
        next_cursor: listing.next_cursor,
    })
}

pub async fn get_delivery(pool: &AnyPool, id: &str) -> Result<Delivery> {
    let row = sqlx::query(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_delivery WHERE delivery_id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or(StoreError::NotFound)?;
    delivery_from_row(&row)
}
