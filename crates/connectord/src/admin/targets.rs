use super::{json, query, PageParams};
use crate::domain::{BranchName, PathPrefix, RepoFullName};
use crate::error::{ApiError, ApiResult, ErrorBody, NotFoundExt};
use crate::startup::AppState;
use crate::store::models::{Listing, NewTarget, SyncEvent, Target};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub const DEFAULT_MAX_FILE_BYTES: i64 = 1024 * 1024;
const MAX_FILE_BYTES_LIMIT: i64 = 100 * 1024 * 1024;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/admin/connectors/{id}/targets",
            get(list_targets).post(create_target),
        )
        .route(
            "/v1/admin/targets/{id}",
            get(get_target).delete(delete_target),
        )
        .route("/v1/admin/targets/{id}/sync", post(sync_target))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateTarget {
    /// `owner/name`.
    pub repository_full_name: String,
    /// GitHub's stable repository id; learned from the first push if omitted.
    pub repository_id: Option<i64>,
    /// Branch name, e.g. `main` (not `refs/heads/main`).
    pub branch: String,
    /// Only sync below this directory, e.g. `docs/`.
    pub path_prefix: Option<String>,
    /// Files larger than this are skipped, not fetched (default 1 MiB, at most 100 MiB).
    pub max_file_bytes: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedTarget {
    #[serde(flatten)]
    pub target: Target,
    /// The initial sync queued with the target.
    pub initial_sync_event: SyncEvent,
}

impl TryFrom<CreateTarget> for NewTarget {
    type Error = ApiError;
    fn try_from(b: CreateTarget) -> Result<Self, ApiError> {
        let bad = |e: crate::domain::ParseError| ApiError::BadRequest(e.0);
        if b.max_file_bytes
            .is_some_and(|m| !(1..=MAX_FILE_BYTES_LIMIT).contains(&m))
        {
            return Err(ApiError::BadRequest(format!(
                "maxFileBytes must be between 1 and {MAX_FILE_BYTES_LIMIT} (GitHub serves blobs up to 100 MiB)"
            )));
        }
        if b.repository_id.is_some_and(|id| id <= 0) {
            return Err(ApiError::BadRequest(
                "repositoryId must be a positive integer".into(),
            ));
        }
        Ok(NewTarget {
            repository_full_name: RepoFullName::parse(&b.repository_full_name).map_err(bad)?,
            repository_id: b.repository_id,
            branch: BranchName::parse(&b.branch).map_err(bad)?,
            path_prefix: PathPrefix::parse(b.path_prefix.as_deref().unwrap_or("")).map_err(bad)?,
            max_file_bytes: b.max_file_bytes.unwrap_or(DEFAULT_MAX_FILE_BYTES),
        })
    }
}

/// Tracks a branch of a repository and queues its initial sync.
#[utoipa::path(post, path = "/v1/admin/connectors/{id}/targets", request_body = CreateTarget, tag = "targets",
    responses((status = 201, body = CreatedTarget), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
pub async fn create_target(
    State(app): State<AppState>,
    Path(connector_id): Path<String>,
    body: Result<Json<CreateTarget>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<CreatedTarget>)> {
    let new = NewTarget::try_from(json(body)?)?;
    let (target, initial_sync_event) = app
        .store
        .create_target(&connector_id, new)
        .await
        .or_not_found("connector")?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedTarget {
            target,
            initial_sync_event,
        }),
    ))
}

#[utoipa::path(get, path = "/v1/admin/connectors/{id}/targets", params(PageParams), tag = "targets",
    responses((status = 200, body = TargetList), (status = 404, body = ErrorBody)))]
pub async fn list_targets(
    State(app): State<AppState>,
    Path(connector_id): Path<String>,
    q: Result<Query<PageParams>, QueryRejection>,
) -> ApiResult<Json<Listing<Target>>> {
    let page = query(q)?.page()?;
    Ok(Json(
        app.store
            .list_targets(&connector_id, &page)
            .await
            .or_not_found("connector")?,
    ))
}

#[utoipa::path(get, path = "/v1/admin/targets/{id}", tag = "targets",
    responses((status = 200, body = Target), (status = 404, body = ErrorBody)))]
pub async fn get_target(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Target>> {
    Ok(Json(
        app.store.get_target(&id).await.or_not_found("target")?,
    ))
}

/// Stops tracking the target and cancels its queued syncs (its history stays).
#[utoipa::path(delete, path = "/v1/admin/targets/{id}", tag = "targets",
    responses((status = 204), (status = 404, body = ErrorBody)))]
pub async fn delete_target(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    app.store.delete_target(&id).await.or_not_found("target")?;
    Ok(StatusCode::NO_CONTENT)
}

/// Queues a manual resync; the worker resolves the branch head when it runs.
#[utoipa::path(post, path = "/v1/admin/targets/{id}/sync", tag = "targets",
    responses((status = 202, body = SyncEvent), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn sync_target(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<(StatusCode, Json<SyncEvent>)> {
    let event = app.store.request_sync(&id).await.or_not_found("target")?;
    Ok((StatusCode::ACCEPTED, Json(event)))
}

/// A page of targets (schema only).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct TargetList {
    items: Vec<Target>,
    #[schema(nullable)]
    next_cursor: Option<String>,
}
