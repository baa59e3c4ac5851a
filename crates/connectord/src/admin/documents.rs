//! The content store's read API: a target's documents, one document's bytes,
//! and the change feed downstream consumers follow.

use super::query;
use crate::error::{ApiError, ApiResult, ErrorBody, NotFoundExt};
use crate::startup::AppState;
use crate::store::models::{ChangeEntry, DocumentListing, Listing, Page};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/targets/{id}/documents", get(list_documents))
        .route(
            "/v1/admin/targets/{id}/documents/{*path}",
            get(get_document),
        )
        .route("/v1/admin/targets/{id}/changes", get(list_changes))
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DocumentParams {
    /// Only paths starting with this.
    pub prefix: Option<String>,
    /// 1 to 1000, default 100.
    pub limit: Option<i64>,
    /// The previous page's `nextCursor`; it carries that page's revision, so
    /// every page of one listing shows the same revision.
    pub cursor: Option<String>,
    /// A head SHA: the documents as the sync of that commit left them (the
    /// latest revisions of each target are kept; see `revision` in the
    /// answer). Default: the latest revision.
    pub revision: Option<String>,
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RawDocumentParams {
    /// A head SHA: the bytes as of that revision. Default: as stored now.
    pub revision: Option<String>,
}

fn limit(l: Option<i64>) -> ApiResult<i64> {
    let l = l.unwrap_or(100);
    if (1..=1000).contains(&l) {
        Ok(l)
    } else {
        Err(ApiError::BadRequest(
            "limit must be between 1 and 1000".into(),
        ))
    }
}

/// The target's documents (metadata) in path order, all from one revision
/// (named in the answer), however many syncs commit while the pages are read.
#[utoipa::path(get, path = "/v1/admin/targets/{id}/documents", params(DocumentParams), tag = "documents",
    responses((status = 200, body = DocumentListing),
        (status = 404, body = ErrorBody, description = "no such target, or the revision is not retained"),
        (status = 409, body = ErrorBody, description = "the cursor's revision is no longer retained")))]
pub async fn list_documents(
    State(app): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<DocumentParams>, QueryRejection>,
) -> ApiResult<Json<DocumentListing>> {
    let q = query(q)?;
    let page = Page {
        limit: limit(q.limit)?,
        cursor: q.cursor.filter(|c| !c.is_empty()),
    };
    let prefix = q.prefix.filter(|p| !p.is_empty());
    let revision = q.revision.filter(|r| !r.is_empty());
    let what = if revision.is_some() {
        "target or revision"
    } else {
        "target"
    };
    Ok(Json(
        app.store
            .list_documents(&id, prefix.as_deref(), revision.as_deref(), &page)
            .await
            .or_not_found(what)?,
    ))
}

/// A document's bytes, with its git blob SHA as the `ETag` (`If-None-Match` answers 304).
#[utoipa::path(get, path = "/v1/admin/targets/{id}/documents/{path}", params(RawDocumentParams), tag = "documents",
    responses((status = 200, description = "the raw bytes"), (status = 304), (status = 404, body = ErrorBody)))]
pub async fn get_document(
    State(app): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    q: Result<Query<RawDocumentParams>, QueryRejection>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let q = query(q)?;
    let revision = q.revision.filter(|r| !r.is_empty());
    let (doc, content) = app
        .store
        .get_document(&id, &path, revision.as_deref())
        .await
        .or_not_found("document")?;
    let etag = format!("\"{}\"", doc.blob_sha);
    let etag_value = HeaderValue::from_str(&etag).map_err(|e| ApiError::Internal(e.into()))?;
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    if matches {
        return Ok((
            StatusCode::NOT_MODIFIED,
            [(header::ETAG, etag_value)],
            untrusted_content_headers(),
        )
            .into_response());
    }
    let content_type = if doc.is_binary {
        "application/octet-stream"
    } else {
        text_type(&doc.path)
    };
    Ok((
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::ETAG, etag_value),
        ],
        untrusted_content_headers(),
        content,
    )
        .into_response())
}

/// Document bytes come from repositories, so anyone who can push to one
/// chooses them: a browser opening a document URL must never run it as a
/// page of this origin (where the admin token lives). No sniffing, no
/// scripts or subresources even if something renders it.
fn untrusted_content_headers() -> [(header::HeaderName, HeaderValue); 2] {
    [
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; sandbox"),
        ),
    ]
}

/// The type a text document is served as. Only types no browser renders as
/// a page: HTML, SVG, XML, JavaScript, CSS and anything unknown are served
/// as plain text (their bytes unchanged; `isBinary` and the path tell a
/// consumer what they are).
fn text_type(path: &str) -> &'static str {
    match path
        .rsplit_once('.')
        .map(|(_, ext)| ext.to_ascii_lowercase())
        .as_deref()
    {
        Some("md" | "markdown") => "text/markdown; charset=utf-8",
        Some("json") => "application/json",
        Some("yaml" | "yml") => "application/yaml",
        _ => "text/plain; charset=utf-8",
    }
}

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChangeParams {
    /// Return changes with `seq` greater than this (0 for the whole feed).
    pub after: Option<i64>,
    /// 1 to 1000, default 100.
    pub limit: Option<i64>,
}

/// The target's change feed, oldest first: follow it with `after` = the last `seq` seen.
#[utoipa::path(get, path = "/v1/admin/targets/{id}/changes", params(ChangeParams), tag = "documents",
    responses((status = 200, body = ChangeList), (status = 404, body = ErrorBody)))]
pub async fn list_changes(
    State(app): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<ChangeParams>, QueryRejection>,
) -> ApiResult<Json<Listing<ChangeEntry>>> {
    let q = query(q)?;
    let after = q.after.unwrap_or(0);
    if after < 0 {
        return Err(ApiError::BadRequest(
            "after must be 0 or a seq from the feed".into(),
        ));
    }
    Ok(Json(
        app.store
            .list_changes(&id, after, limit(q.limit)?)
            .await
            .or_not_found("target")?,
    ))
}

/// A page of the change feed (schema only).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ChangeList {
    items: Vec<ChangeEntry>,
    #[schema(nullable)]
    next_cursor: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::text_type;

    #[test]
    fn nothing_a_browser_renders_is_served_as_such() {
        for path in [
            "a.html", "b.HTM", "c.svg", "d.xml", "e.xhtml", "f.js", "g.mjs", "h.css", "noext",
        ] {
            assert_eq!(text_type(path), "text/plain; charset=utf-8", "{path}");
        }
        assert_eq!(text_type("README.md"), "text/markdown; charset=utf-8");
        assert_eq!(text_type("x.json"), "application/json");
    }
}
