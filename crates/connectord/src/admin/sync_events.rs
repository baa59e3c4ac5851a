use super::{query, PageParams};
use crate::error::{ApiResult, ErrorBody, NotFoundExt};
use crate::startup::AppState;
use crate::store::models::{Listing, SyncEvent, SyncEventFilter, SyncStatus};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/sync-events", get(list_sync_events))
        .route("/v1/admin/sync-events/{id}", get(get_sync_event))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct SyncEventParams {
    pub target_id: Option<String>,
    pub status: Option<SyncStatus>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
}

#[utoipa::path(get, path = "/v1/admin/sync-events", params(SyncEventParams), tag = "sync-events",
    responses((status = 200, body = SyncEventList), (status = 400, body = ErrorBody)))]
pub async fn list_sync_events(
    State(app): State<AppState>,
    q: Result<Query<SyncEventParams>, QueryRejection>,
) -> ApiResult<Json<Listing<SyncEvent>>> {
    let q = query(q)?;
    let page = PageParams {
        limit: q.limit,
        cursor: q.cursor,
    }
    .page()?;
    let filter = SyncEventFilter {
        target_id: q.target_id,
        status: q.status,
    };
    Ok(Json(app.store.list_sync_events(&filter, &page).await?))
}

#[utoipa::path(get, path = "/v1/admin/sync-events/{id}", tag = "sync-events",
    responses((status = 200, body = SyncEvent), (status = 404, body = ErrorBody)))]
pub async fn get_sync_event(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SyncEvent>> {
    Ok(Json(
        app.store
            .get_sync_event(&id)
            .await
            .or_not_found("sync event")?,
    ))
}

/// A page of sync events (schema only).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct SyncEventList {
    items: Vec<SyncEvent>,
    #[schema(nullable)]
    next_cursor: Option<String>,
}
