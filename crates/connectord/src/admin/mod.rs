//! The authenticated admin API: connectors, targets, sync events, deliveries.
//! Bearer token, JSON in and out, errors as `{"error": {"code", "message"}}`,
//! lists as `{"items", "nextCursor"}`.

pub mod connectors;
pub mod deliveries;
pub mod documents;
pub mod openapi;
pub mod sync_events;
pub mod targets;

use crate::error::{ApiError, ApiResult};
use crate::startup::AppState;
use crate::store::models::Page;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

pub fn router(state: AppState) -> Router<AppState> {
    let protected = Router::new()
        .merge(connectors::router())
        .merge(targets::router())
        .merge(sync_events::router())
        .merge(deliveries::router())
        .merge(documents::router())
        .route_layer(middleware::from_fn_with_state(state, require_admin_token));
    // The OpenAPI document describes the API; it holds no data, so it is public.
    protected.merge(openapi::router())
}

async fn require_admin_token(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    // Compare digests so neither the value nor its length leaks through timing.
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(app.admin_token.as_bytes());
    if presented.is_empty() || !bool::from(a.ct_eq(&b)) {
        return Err(ApiError::Unauthorized);
    }
    Ok(next.run(req).await)
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// 1 to 200, default 50.
    pub limit: Option<i64>,
    /// `nextCursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageParams {
    pub fn page(&self) -> ApiResult<Page> {
        let limit = self.limit.unwrap_or(50);
        if !(1..=200).contains(&limit) {
            return Err(ApiError::BadRequest(
                "limit must be between 1 and 200".into(),
            ));
        }
        Ok(Page {
            limit,
            cursor: self.cursor.clone().filter(|c| !c.is_empty()),
        })
    }
}

/// Query strings and JSON bodies that don't parse answer 400 in the API's error shape.
pub fn query<T: DeserializeOwned>(q: Result<Query<T>, QueryRejection>) -> ApiResult<T> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

pub fn json<T: DeserializeOwned>(j: Result<Json<T>, JsonRejection>) -> ApiResult<T> {
    j.map(|Json(v)| v)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}
