//! The admin API's OpenAPI document, generated from the handlers' annotations.

use crate::startup::AppState;
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

#[derive(OpenApi)]
#[openapi(
    info(title = "connectord admin API", description = "Manage connectors and tracked targets; inspect deliveries and syncs."),
    paths(
        super::connectors::create_connector, super::connectors::list_connectors, super::connectors::get_connector,
        super::targets::create_target, super::targets::list_targets, super::targets::get_target,
        super::targets::delete_target, super::targets::sync_target,
        super::sync_events::list_sync_events, super::sync_events::get_sync_event,
        super::deliveries::list_deliveries, super::deliveries::get_delivery, super::deliveries::replay_delivery,
        super::documents::list_documents, super::documents::get_document, super::documents::list_changes,
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

pub fn router() -> Router<AppState> {
    Router::new().route(
        "/v1/admin/openapi.json",
        get(|| async { Json(ApiDoc::openapi()) }),
    )
}
