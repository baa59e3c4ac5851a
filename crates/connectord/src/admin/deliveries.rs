use super::{query, PageParams};
use crate::error::{ApiError, ApiResult, ErrorBody, NotFoundExt};
use crate::ingress::handler::{process, respond, IngressError, VerifiedDelivery};
use crate::startup::AppState;
use crate::store::models::{Delivery, IngestOutcome, Listing};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/deliveries", get(list_deliveries))
        .route("/v1/admin/deliveries/{id}", get(get_delivery))
        .route("/v1/admin/deliveries/{id}/replay", post(replay_delivery))
}

#[utoipa::path(get, path = "/v1/admin/deliveries", params(PageParams), tag = "deliveries",
    responses((status = 200, body = DeliveryList)))]
pub async fn list_deliveries(
    State(app): State<AppState>,
    q: Result<Query<PageParams>, QueryRejection>,
) -> ApiResult<Json<Listing<Delivery>>> {
    let page = query(q)?.page()?;
    Ok(Json(app.store.list_deliveries(&page).await?))
}

/// A recorded delivery. Rejected requests (bad signature, bad input) are never
/// recorded, so they answer 404.
#[utoipa::path(get, path = "/v1/admin/deliveries/{id}", tag = "deliveries",
    responses((status = 200, body = Delivery), (status = 404, body = ErrorBody)))]
pub async fn get_delivery(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Delivery>> {
    Ok(Json(
        app.store.get_delivery(&id).await.or_not_found("delivery")?,
    ))
}

/// Dispatches a recorded (accepted, still retained) body again, as a new
/// delivery `<id>:replay:<n>` that points back at the original. The answer is
/// the one ingress would give: 202 accepted, 200 ignored or duplicate.
#[utoipa::path(post, path = "/v1/admin/deliveries/{id}/replay", tag = "deliveries",
    responses((status = 202, body = IngestOutcome), (status = 200, body = IngestOutcome),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
pub async fn replay_delivery(
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let stored = app
        .store
        .delivery_body(&id)
        .await
        .or_not_found("delivery")?;
    let delivery = VerifiedDelivery {
        event: Some(stored.event.as_str()).into(),
        // The store numbers the replay (`<id>:replay:<n>`) inside its write.
        delivery_id: Some(id.as_str()).into(),
        secret: None,
        content_type: Some(&stored.content_type),
        hook_id: stored.hook_id,
        hook_installation_target_id: stored.hook_installation_target_id,
        body: stored.body.into(),
        replay_of: Some(id.clone()),
    };
    match process(&app, delivery).await {
        Ok(outcome) => Ok(respond(outcome)),
        Err(IngressError::BadRequest(m)) => Err(ApiError::BadRequest(m)),
        Err(IngressError::Unavailable(m)) => Err(ApiError::Unavailable(m)),
        Err(IngressError::Internal(m)) => Err(ApiError::Internal(anyhow::anyhow!(m))),
    }
}

/// A page of deliveries (schema only).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct DeliveryList {
    items: Vec<Delivery>,
    #[schema(nullable)]
    next_cursor: Option<String>,
}
