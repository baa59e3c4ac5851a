use super::{json, query, PageParams};
use crate::error::{ApiError, ApiResult, ErrorBody, NotFoundExt};
use crate::startup::AppState;
use crate::store::models::{ConnectorInstance, Listing};
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use utoipa::ToSchema;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/v1/admin/connectors",
            get(list_connectors).post(create_connector),
        )
        .route("/v1/admin/connectors/{id}", get(get_connector))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateConnector {
    /// Must be `github`.
    #[serde(rename = "type")]
    pub connector_type: String,
    pub installation_id: i64,
}

/// Registers a GitHub App installation. Idempotent on the installation id:
/// 201 when created, 200 with the existing connector otherwise.
#[utoipa::path(post, path = "/v1/admin/connectors", request_body = CreateConnector, tag = "connectors",
    responses((status = 201, body = ConnectorInstance), (status = 200, body = ConnectorInstance),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)))]
pub async fn create_connector(
    State(app): State<AppState>,
    body: Result<Json<CreateConnector>, JsonRejection>,
) -> ApiResult<(StatusCode, Json<ConnectorInstance>)> {
    let body = json(body)?;
    if body.connector_type != "github" {
        return Err(ApiError::BadRequest(format!(
            "unsupported connector type `{}`; only `github`",
            body.connector_type
        )));
    }
    if body.installation_id <= 0 {
        return Err(ApiError::BadRequest(
            "installationId must be a positive integer".into(),
        ));
    }
    let (connector, created) = app.store.create_connector(body.installation_id).await?;
    Ok((
        if created {
            StatusCode::CREATED
        } else {
            StatusCode::OK
        },
        Json(connector),
    ))
}

#[utoipa::path(get, path = "/v1/admin/connectors", params(PageParams), tag = "connectors",
    responses((status = 200, body = ConnectorList), (status = 401, body = ErrorBody)))]
pub async fn list_connectors(
    State(app): State<AppState>,
    q: Result<Query<PageParams>, QueryRejection>,
) -> ApiResult<Json<Listing<ConnectorInstance>>> {
    let page = query(q)?.page()?;
    Ok(Json(app.store.list_connectors(&page).await?))
}

#[utoipa::path(get, path = "/v1/admin/connectors/{id}", tag = "connectors",
    responses((status = 200, body = ConnectorInstance), (status = 404, body = ErrorBody)))]
pub async fn get_connector(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<ConnectorInstance>> {
    Ok(Json(
        app.store
            .get_connector(&id)
            .await
            .or_not_found("connector")?,
    ))
}

/// A page of connectors (schema only).
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ConnectorList {
    items: Vec<ConnectorInstance>,
    #[schema(nullable)]
    next_cursor: Option<String>,
}
