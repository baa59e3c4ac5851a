//! The admin API, black-box: authentication, the public endpoints, connectors,
//! targets, pagination, deliveries and replay, the OpenAPI document and the
//! separate admin listener.

mod common;

use common::*;
use connectord::ingress::signature::sign;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::HashSet;

/// Every authenticated admin route, with a method it answers.
const ADMIN_ROUTES: [(&str, &str); 13] = [
    ("GET", "/v1/admin/connectors"),
    ("POST", "/v1/admin/connectors"),
    ("GET", "/v1/admin/connectors/con_x"),
    ("GET", "/v1/admin/connectors/con_x/targets"),
    ("POST", "/v1/admin/connectors/con_x/targets"),
    ("GET", "/v1/admin/targets/tgt_x"),
    ("DELETE", "/v1/admin/targets/tgt_x"),
    ("POST", "/v1/admin/targets/tgt_x/sync"),
    ("GET", "/v1/admin/sync-events"),
    ("GET", "/v1/admin/sync-events/sev_x"),
    ("GET", "/v1/admin/deliveries"),
    ("GET", "/v1/admin/deliveries/d-x"),
    ("POST", "/v1/admin/deliveries/d-x/replay"),
];

/// A request to `base + path` with exactly this `Authorization` header (or
/// none) and this raw body (with its content type, if any).
async fn request(
    app: &TestApp,
    base: &str,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<(&str, &[u8])>,
) -> (StatusCode, Value) {
    let method = Method::from_bytes(method.as_bytes()).expect("method");
    let mut req = app.client.request(method, format!("{base}{path}"));
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    if let Some((content_type, bytes)) = body {
        if !content_type.is_empty() {
            req = req.header("content-type", content_type);
        }
        req = req.body(bytes.to_vec());
    }
    let res = req.send().await.expect("request");
    let status = res.status();
    let text = res.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// An authenticated admin request with a raw body.
async fn admin_raw(
    app: &TestApp,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (StatusCode, Value) {
    let auth = format!("Bearer {ADMIN_TOKEN}");
    request(
        app,
        &app.admin_base,
        method,
        path,
        Some(&auth),
        Some((content_type, body)),
    )
    .await
}

async fn public_get(app: &TestApp, base: &str, path: &str) -> (StatusCode, String) {
    let res = app
        .client
        .get(format!("{base}{path}"))
        .send()
        .await
        .expect("request");
    (res.status(), res.text().await.expect("body"))
}

/// Asserts the API's error shape: `{"error": {"code", "message"}}` with `status`.
#[track_caller]
fn assert_error(got: (StatusCode, Value), status: StatusCode, code: &str) {
    let (s, body) = got;
    assert_eq!(s, status, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error without a message: {body}"
    );
}

/// Follows `nextCursor` from the first page to the last; returns the pages.
async fn collect_pages(app: &TestApp, path: &str, limit: i64) -> Vec<Vec<Value>> {
    let sep = if path.contains('?') { '&' } else { '?' };
    let mut pages = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(c) => format!("{path}{sep}limit={limit}&cursor={c}"),
            None => format!("{path}{sep}limit={limit}"),
        };
        let (status, body) = app.get(&url).await;
        assert_eq!(status, StatusCode::OK, "{url}: {body}");
        pages.push(body["items"].as_array().expect("items").clone());
        match &body["nextCursor"] {
            Value::Null => break,
            Value::String(c) => {
                assert!(!c.is_empty(), "empty cursor: {body}");
                cursor = Some(c.clone());
            }
            other => panic!("nextCursor must be a string or null, got {other}"),
        }
        assert!(pages.len() < 50, "pagination does not end");
    }
    pages
}

fn ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|i| i["id"].as_str().expect("string id").to_owned())
        .collect()
}

fn page_sizes(pages: &[Vec<Value>]) -> Vec<usize> {
    pages.iter().map(Vec::len).collect()
}

fn assert_unique(ids: &[String]) {
    let set: HashSet<&String> = ids.iter().collect();
    assert_eq!(set.len(), ids.len(), "duplicates across pages: {ids:?}");
}

// ---------------------------------------------------------------------------
// 1. Authentication and the public endpoints
// ---------------------------------------------------------------------------

conformance! {
#[tokio::test]
async fn every_admin_route_requires_the_bearer_token() {
    let app = spawn_app().await;
    let basic_with_token = format!("Basic {ADMIN_TOKEN}");
    let bearer_wrong_case = format!("Bearer {}", ADMIN_TOKEN.to_uppercase());
    let bearer_prefix = format!("Bearer {}", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]);
    let bad_headers: [Option<&str>; 8] = [
        None,
        Some(""),
        Some("Bearer "),
        Some("Bearer wrong-token"),
        Some(&bearer_wrong_case),
        Some(&bearer_prefix),
        Some("Basic dGVzdDp0ZXN0"),
        Some(&basic_with_token),
    ];
    let body = json!({"type": "github", "installationId": 1}).to_string();
    for (method, path) in ADMIN_ROUTES {
        for auth in bad_headers {
            let got = request(
                &app,
                &app.admin_base,
                method,
                path,
                auth,
                Some(("application/json", body.as_bytes())),
            )
            .await;
            assert_eq!(
                got.0,
                StatusCode::UNAUTHORIZED,
                "{method} {path} with {auth:?}: {}",
                got.1
            );
            assert_error(got, StatusCode::UNAUTHORIZED, "unauthorized");
        }
    }
    // Nothing got through: no connector was created by the unauthenticated POSTs.
    let (status, list) = app.get("/v1/admin/connectors").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["items"], json!([]));
    // And the token itself works on the same routes (here: a read).
    let auth = format!("Bearer {ADMIN_TOKEN}");
    let (status, _) = request(
        &app,
        &app.admin_base,
        "GET",
        "/v1/admin/sync-events",
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn webhook_health_readiness_metrics_and_openapi_need_no_admin_token() {
    let app = spawn_app().await;
    // The webhook authenticates by signature, not by the admin token.
    let (status, body) = app
        .deliver_json("ping", "d-ping", &json!({"zen": "hi"}))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "ignored");

    let (status, text) = public_get(&app, &app.base, "/healthz").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, text) = public_get(&app, &app.base, "/readyz").await;
    assert_eq!((status, text.trim()), (StatusCode::OK, "ready"));
    let (status, text) = public_get(&app, &app.base, "/metrics").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, text) = public_get(&app, &app.admin_base, "/v1/admin/openapi.json").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn metrics_expose_deliveries_signature_failures_queue_depth_and_latency() {
    let app = spawn_app().await;
    let connector = app.create_connector(31).await;
    app.create_target(&connector, "octo/metrics", Some(3100), "main")
        .await;
    let (status, body) = app
        .deliver_json(
            "push",
            "m-1",
            &push_payload(31, 3100, "octo/metrics", "main", &sha('1'), &sha('2')),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, _) = app
        .post_raw(
            &[
                ("content-type", "application/json".into()),
                ("x-github-event", "push".into()),
                ("x-github-delivery", "m-bad".into()),
                ("x-hub-signature-256", sign(b"not the secret", b"{}")),
            ],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, text) = public_get(&app, &app.base, "/metrics").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let has_line = |name: &str, labels: &[&str]| {
        text.lines().any(|l| {
            !l.starts_with('#') && l.starts_with(name) && labels.iter().all(|x| l.contains(x))
        })
    };
    assert!(
        has_line(
            "connectord_webhook_deliveries_total",
            &["event=\"push\"", "outcome=\"accepted\""]
        ),
        "{text}"
    );
    assert!(
        has_line("connectord_webhook_signature_failures_total", &[]),
        "{text}"
    );
    assert!(
        has_line("connectord_sync_events", &["status=\"queued\""]),
        "{text}"
    );
    assert!(
        has_line("connectord_http_request_duration_seconds", &[]),
        "{text}"
    );
    app.stop().await;
}
}

// ---------------------------------------------------------------------------
// 2. Connectors
// ---------------------------------------------------------------------------

conformance! {
#[tokio::test]
async fn connectors_are_created_once_per_installation_and_readable() {
    let app = spawn_app().await;
    let (status, created) = app
        .post(
            "/v1/admin/connectors",
            json!({"type": "github", "installationId": 1001}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().expect("string id").to_owned();
    assert_eq!(created["type"], "github");
    assert_eq!(created["installationId"], 1001);
    assert_eq!(created["status"], "active");
    assert!(created["createdAt"].is_string(), "{created}");

    // Idempotent on the installation id.
    let (status, again) = app
        .post(
            "/v1/admin/connectors",
            json!({"type": "github", "installationId": 1001}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], id.as_str());

    let (status, list) = app.get("/v1/admin/connectors").await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list["items"][0]["id"], id.as_str());
    assert!(list.get("nextCursor").is_some_and(Value::is_null), "{list}");

    let (status, one) = app.get(&format!("/v1/admin/connectors/{id}")).await;
    assert_eq!(status, StatusCode::OK, "{one}");
    assert_eq!(one["id"], id.as_str());
    assert_eq!(one["installationId"], 1001);

    assert_error(
        app.get("/v1/admin/connectors/con_doesnotexist").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn connector_bodies_are_validated() {
    let app = spawn_app().await;
    let bad_json_bodies = [
        json!({"type": "github"}),
        json!({"installationId": 5}),
        json!({"type": "gitlab", "installationId": 5}),
        json!({"type": "github", "installationId": 0}),
        json!({"type": "github", "installationId": -3}),
        json!({"type": "github", "installationId": "5"}),
        json!({"type": "github", "installationId": 5, "unknown": true}),
        json!([1, 2]),
    ];
    for body in bad_json_bodies {
        let got = app.post("/v1/admin/connectors", body.clone()).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{body}: {}", got.1);
        assert_error(got, StatusCode::BAD_REQUEST, "bad_request");
    }
    let raw_bodies: [(&str, &[u8]); 4] = [
        ("application/json", b"not json"),
        ("application/json", b""),
        ("application/json", b"{\"type\": \"github\", "),
        // A JSON body without a JSON content type.
        ("text/plain", br#"{"type":"github","installationId":5}"#),
    ];
    for (content_type, body) in raw_bodies {
        let got = admin_raw(&app, "POST", "/v1/admin/connectors", content_type, body).await;
        assert_eq!(
            got.0,
            StatusCode::BAD_REQUEST,
            "{content_type} {:?}: {}",
            String::from_utf8_lossy(body),
            got.1
        );
        assert_error(got, StatusCode::BAD_REQUEST, "bad_request");
    }
    let (_, list) = app.get("/v1/admin/connectors").await;
    assert_eq!(list["items"], json!([]), "a bad request created something");
    app.stop().await;
}
}

// ---------------------------------------------------------------------------
// 3. Targets
// ---------------------------------------------------------------------------

conformance! {
#[tokio::test]
async fn target_creation_queues_an_initial_sync_and_rejects_duplicates() {
    let app = spawn_app().await;
    let connector = app.create_connector(2001).await;
    let path = format!("/v1/admin/connectors/{connector}/targets");
    let (status, t) = app
        .post(
            &path,
            json!({"repositoryFullName": "octo/docs", "repositoryId": 77, "branch": "main", "pathPrefix": "docs/"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{t}");
    let target = t["id"].as_str().expect("string id").to_owned();
    assert_eq!(t["connectorId"], connector.as_str());
    assert_eq!(t["repositoryFullName"], "octo/docs");
    assert_eq!(t["repositoryId"], 77);
    assert_eq!(t["branch"], "main");
    assert_eq!(t["pathPrefix"], "docs/");
    assert_eq!(t["status"], "active");
    let initial = &t["initialSyncEvent"];
    assert!(initial["id"].is_string(), "{t}");
    assert_eq!(initial["status"], "queued");
    assert_eq!(initial["trigger"], "initial");
    assert!(initial["headSha"].is_null(), "{t}");
    assert_eq!(initial["connectorTargetId"], target.as_str());
    assert_eq!(initial["ref"], "refs/heads/main");
    // The event is readable on its own.
    let ev = app.sync_event(initial["id"].as_str().unwrap()).await;
    assert_eq!(ev["status"], "queued");

    // Same repository (case-insensitively), branch and prefix: conflict.
    for dup in [
        json!({"repositoryFullName": "octo/docs", "repositoryId": 77, "branch": "main", "pathPrefix": "docs/"}),
        json!({"repositoryFullName": "Octo/Docs", "branch": "main", "pathPrefix": "docs"}),
    ] {
        assert_error(app.post(&path, dup).await, StatusCode::CONFLICT, "conflict");
    }
    // Another prefix or another branch is another target.
    let (status, other) = app
        .post(
            &path,
            json!({"repositoryFullName": "octo/docs", "repositoryId": 77, "branch": "main"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{other}");
    let (status, other_branch) = app
        .post(
            &path,
            json!({"repositoryFullName": "octo/docs", "repositoryId": 77, "branch": "release/1.x"}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{other_branch}");

    let (status, list) = app.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    let listed: HashSet<String> = ids(list["items"].as_array().unwrap()).into_iter().collect();
    let expected: HashSet<String> = [
        target.clone(),
        other["id"].as_str().unwrap().to_owned(),
        other_branch["id"].as_str().unwrap().to_owned(),
    ]
    .into();
    assert_eq!(listed, expected);
    assert!(list["nextCursor"].is_null(), "{list}");

    let pages = collect_pages(&app, &path, 2).await;
    assert_eq!(page_sizes(&pages), vec![2, 1]);
    let paged: HashSet<String> = pages.iter().flat_map(|p| ids(p)).collect();
    assert_eq!(paged, listed);
    assert_error(
        app.get(&format!("{path}?limit=0")).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );

    let got = app.target(&target).await;
    assert_eq!(got["id"], target.as_str());
    assert_eq!(got["pathPrefix"], "docs/");
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn target_bodies_are_validated_and_unknown_connectors_are_404() {
    let app = spawn_app().await;
    let connector = app.create_connector(2002).await;
    let path = format!("/v1/admin/connectors/{connector}/targets");
    let bad = [
        json!({"repositoryFullName": "octo", "branch": "main"}),
        json!({"repositoryFullName": "a/b/c", "branch": "main"}),
        json!({"repositoryFullName": "octo/", "branch": "main"}),
        json!({"repositoryFullName": "octo/docs", "branch": "refs/heads/main"}),
        json!({"repositoryFullName": "octo/docs", "branch": ""}),
        json!({"repositoryFullName": "octo/docs", "branch": "a..b"}),
        json!({"repositoryFullName": "octo/docs", "branch": "main", "pathPrefix": "../x"}),
        json!({"repositoryFullName": "octo/docs", "branch": "main", "pathPrefix": "docs/../../etc"}),
        json!({"repositoryFullName": "octo/docs", "branch": "main", "repositoryId": 0}),
        json!({"repositoryFullName": "octo/docs"}),
        json!({"branch": "main"}),
        json!({"repositoryFullName": "octo/docs", "branch": "main", "extra": 1}),
    ];
    for body in bad {
        let got = app.post(&path, body.clone()).await;
        assert_eq!(got.0, StatusCode::BAD_REQUEST, "{body}: {}", got.1);
        assert_error(got, StatusCode::BAD_REQUEST, "bad_request");
    }
    let got = admin_raw(&app, "POST", &path, "application/json", b"{nope").await;
    assert_error(got, StatusCode::BAD_REQUEST, "bad_request");
    let (_, list) = app.get(&path).await;
    assert_eq!(list["items"], json!([]), "a bad request created a target");

    assert_error(
        app.post(
            "/v1/admin/connectors/con_unknown/targets",
            json!({"repositoryFullName": "octo/docs", "branch": "main"}),
        )
        .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        app.get("/v1/admin/connectors/con_unknown/targets").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        app.get("/v1/admin/targets/tgt_unknown").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        app.post("/v1/admin/targets/tgt_unknown/sync", json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        app.get("/v1/admin/sync-events/sev_unknown").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn deleting_a_target_hides_it_cancels_its_syncs_and_frees_its_identity() {
    let app = spawn_app().await;
    let connector = app.create_connector(2003).await;
    let (target, initial) = app
        .create_target(&connector, "octo/docs", Some(5), "main")
        .await;
    let (status, body) = app
        .admin(Method::DELETE, &format!("/v1/admin/targets/{target}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    assert_error(
        app.get(&format!("/v1/admin/targets/{target}")).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        app.admin(Method::DELETE, &format!("/v1/admin/targets/{target}"), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // A manual sync of a deleted target: 404.
    assert_error(
        app.post(&format!("/v1/admin/targets/{target}/sync"), json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // Its queued initial sync will not run; its history stays readable.
    assert_eq!(app.sync_event(&initial).await["status"], "cancelled");
    let (_, list) = app
        .get(&format!("/v1/admin/connectors/{connector}/targets"))
        .await;
    assert_eq!(list["items"], json!([]));
    // Pushes no longer match it.
    let (status, body) = app
        .deliver_json(
            "push",
            "after-delete",
            &push_payload(2003, 5, "octo/docs", "main", &sha('1'), &sha('2')),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "ignored");
    // The same repository, branch and prefix can be tracked again.
    let (again, _) = app
        .create_target(&connector, "octo/docs", Some(5), "main")
        .await;
    assert_ne!(again, target);
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn manual_sync_answers_202_with_a_queued_head_less_event() {
    let app = spawn_app().await;
    let connector = app.create_connector(2004).await;
    let (target, initial) = app
        .create_target(&connector, "octo/docs", Some(5), "main")
        .await;
    // While the initial (head-less) sync is still queued, a manual request
    // adds nothing: the queued one will resolve the same branch head.
    let (status, ev) = app
        .post(&format!("/v1/admin/targets/{target}/sync"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{ev}");
    assert_eq!(ev["status"], "queued");
    assert_eq!(ev["id"], initial.as_str(), "{ev}");

    // A push supersedes the initial sync; a manual sync after it is a new event.
    let (status, push) = app
        .deliver_json(
            "push",
            "p-1",
            &push_payload(2004, 5, "octo/docs", "main", &sha('1'), &sha('2')),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{push}");
    let (status, ev) = app
        .post(&format!("/v1/admin/targets/{target}/sync"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{ev}");
    let manual = ev["id"].as_str().expect("id").to_owned();
    assert_ne!(manual, initial);
    assert_ne!(manual, push["syncEventIds"][0].as_str().unwrap());
    assert_eq!(ev["status"], "queued");
    assert_eq!(ev["trigger"], "manual");
    assert!(ev["headSha"].is_null(), "{ev}");
    assert!(ev["deliveryId"].is_null(), "{ev}");
    assert_eq!(ev["connectorTargetId"], target.as_str());
    assert_eq!(app.sync_event(&manual).await["status"], "queued");
    app.stop().await;
}
}

// ---------------------------------------------------------------------------
// 4. Pagination
// ---------------------------------------------------------------------------

conformance! {
#[tokio::test]
async fn connectors_paginate_with_cursors() {
    let app = spawn_app().await;
    let mut created = vec![];
    for i in 0..7 {
        created.push(app.create_connector(3000 + i).await);
    }
    let pages = collect_pages(&app, "/v1/admin/connectors", 3).await;
    assert_eq!(page_sizes(&pages), vec![3, 3, 1]);
    let listed: Vec<String> = pages.iter().flat_map(|p| ids(p)).collect();
    assert_unique(&listed);
    // Newest first.
    let mut newest_first = created.clone();
    newest_first.reverse();
    assert_eq!(listed, newest_first);

    // Exactly one full page: no next cursor.
    let pages = collect_pages(&app, "/v1/admin/connectors", 7).await;
    assert_eq!(page_sizes(&pages), vec![7]);

    for bad in ["limit=0", "limit=201", "limit=-1", "limit=abc"] {
        assert_error(
            app.get(&format!("/v1/admin/connectors?{bad}")).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        );
    }
    let (status, _) = app.get("/v1/admin/connectors?limit=200").await;
    assert_eq!(status, StatusCode::OK);
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn deliveries_paginate_in_arrival_order() {
    let app = spawn_app().await;
    let mut sent = vec![];
    for i in 0..7 {
        // Ids that do not sort by arrival: the list must still follow arrival.
        let id = format!("{}-delivery", 7 - i);
        let (status, body) = app.deliver_json("ping", &id, &json!({"zen": i})).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        sent.push(id);
    }
    let pages = collect_pages(&app, "/v1/admin/deliveries", 3).await;
    assert_eq!(page_sizes(&pages), vec![3, 3, 1]);
    let listed: Vec<String> = pages.iter().flat_map(|p| ids(p)).collect();
    assert_unique(&listed);
    sent.reverse();
    assert_eq!(listed, sent, "newest first");
    for bad in ["limit=0", "limit=201"] {
        assert_error(
            app.get(&format!("/v1/admin/deliveries?{bad}")).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        );
    }
    app.stop().await;
}
}

conformance! {
/// A cursor that was never issued is a bad request (400), as every other bad
/// query parameter is; not a conflict with the resource's state.
#[tokio::test]
async fn a_malformed_delivery_cursor_is_a_bad_request() {
    let app = spawn_app().await;
    app.deliver_json("ping", "c-1", &json!({})).await;
    assert_error(
        app.get("/v1/admin/deliveries?cursor=not-a-cursor").await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn sync_events_paginate_and_filter_by_target_and_status() {
    let app = spawn_app().await;
    let connector = app.create_connector(4001).await;
    let (t1, t1_initial) = app
        .create_target(&connector, "octo/one", Some(41), "main")
        .await;
    let (t2, t2_initial) = app
        .create_target(&connector, "octo/two", Some(42), "main")
        .await;
    // Five pushes on t1, each superseding the previous queued head.
    let mut before = sha('0');
    let mut t1_events = vec![t1_initial.clone()];
    for (i, c) in ['1', '2', '3', '4', '5'].into_iter().enumerate() {
        let (status, body) = app
            .deliver_json(
                "push",
                &format!("push-{i}"),
                &push_payload(4001, 41, "octo/one", "main", &before, &sha(c)),
            )
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        t1_events.push(body["syncEventIds"][0].as_str().unwrap().to_owned());
        before = sha(c);
    }

    // All of t1's events, 2 a page: 2, 2, 2; newest first.
    let pages = collect_pages(&app, &format!("/v1/admin/sync-events?targetId={t1}"), 2).await;
    assert_eq!(page_sizes(&pages), vec![2, 2, 2]);
    let listed: Vec<String> = pages.iter().flat_map(|p| ids(p)).collect();
    assert_unique(&listed);
    let mut expected = t1_events.clone();
    expected.reverse();
    assert_eq!(listed, expected);
    assert!(pages
        .iter()
        .flatten()
        .all(|e| e["connectorTargetId"] == t1.as_str()));

    // Everything: 7 events, 3 a page.
    let pages = collect_pages(&app, "/v1/admin/sync-events", 3).await;
    assert_eq!(page_sizes(&pages), vec![3, 3, 1]);
    assert_unique(&pages.iter().flat_map(|p| ids(p)).collect::<Vec<_>>());

    // By status.
    let pages = collect_pages(&app, "/v1/admin/sync-events?status=superseded", 2).await;
    assert_eq!(page_sizes(&pages), vec![2, 2, 1]);
    let superseded: HashSet<String> = pages.iter().flat_map(|p| ids(p)).collect();
    let expected: HashSet<String> = t1_events[..5].iter().cloned().collect();
    assert_eq!(superseded, expected);

    let pages = collect_pages(&app, "/v1/admin/sync-events?status=queued", 1).await;
    assert_eq!(page_sizes(&pages), vec![1, 1]);
    let queued: HashSet<String> = pages.iter().flat_map(|p| ids(p)).collect();
    let expected: HashSet<String> = [t1_events[5].clone(), t2_initial.clone()].into();
    assert_eq!(queued, expected);

    // Both filters at once.
    let (status, body) = app
        .get(&format!(
            "/v1/admin/sync-events?targetId={t2}&status=queued"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(body["items"].as_array().unwrap()), vec![t2_initial]);
    assert!(body["nextCursor"].is_null());
    let (_, body) = app
        .get(&format!(
            "/v1/admin/sync-events?targetId={t2}&status=completed"
        ))
        .await;
    assert_eq!(body["items"], json!([]));

    for bad in ["status=bogus", "limit=0", "limit=201"] {
        assert_error(
            app.get(&format!("/v1/admin/sync-events?{bad}")).await,
            StatusCode::BAD_REQUEST,
            "bad_request",
        );
    }
    app.stop().await;
}
}

// ---------------------------------------------------------------------------
// 5. Deliveries and replay
// ---------------------------------------------------------------------------

conformance! {
#[tokio::test]
async fn deliveries_record_what_happened_and_rejected_ones_are_404() {
    let app = spawn_app().await;
    let connector = app.create_connector(5001).await;
    app.create_target(&connector, "octo/docs", Some(51), "main")
        .await;

    let body = push_payload(5001, 51, "octo/docs", "main", &sha('1'), &sha('2')).to_string();
    let (status, text) = app
        .post_raw(
            &[
                ("content-type", "application/json".into()),
                ("x-github-event", "push".into()),
                ("x-github-delivery", "d-push".into()),
                ("x-github-hook-id", "123".into()),
                ("x-github-hook-installation-target-id", "456".into()),
                (
                    "x-hub-signature-256",
                    sign(SECRET.as_bytes(), body.as_bytes()),
                ),
            ],
            body.into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    let answer: Value = serde_json::from_str(&text).unwrap();
    let event_id = answer["syncEventIds"][0].as_str().unwrap().to_owned();

    let (status, d) = app.get("/v1/admin/deliveries/d-push").await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["id"], "d-push");
    assert_eq!(d["event"], "push");
    assert!(d["action"].is_null(), "{d}");
    assert_eq!(d["outcome"], "accepted");
    assert!(d["reason"].is_null(), "{d}");
    assert_eq!(d["syncEventIds"], json!([event_id]));
    assert_eq!(d["hookId"], "123");
    assert_eq!(d["hookInstallationTargetId"], "456");
    assert_eq!(d["bodyRetained"], true);
    assert_eq!(d["ref"], "refs/heads/main");
    assert_eq!(d["headSha"], sha('2'));
    let received = d["receivedAt"].as_str().expect("receivedAt");
    assert!(
        received.len() >= 20 && received.contains('T') && received.ends_with('Z'),
        "receivedAt is not RFC 3339: {received}"
    );

    // An ignored delivery, with its reason and no body kept.
    let (status, _) = app
        .deliver_json(
            "installation",
            "d-inst",
            &json!({"action": "bogus", "installation": {"id": 5001}}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, d) = app.get("/v1/admin/deliveries/d-inst").await;
    assert_eq!(d["event"], "installation");
    assert_eq!(d["action"], "bogus");
    assert_eq!(d["outcome"], "ignored");
    assert!(d["reason"].is_string(), "{d}");
    assert_eq!(d["syncEventIds"], json!([]));
    assert_eq!(d["bodyRetained"], false);

    // A redelivery is answered `duplicate` and leaves the record as it was.
    let (status, dup) = app
        .deliver_json(
            "push",
            "d-push",
            &push_payload(5001, 51, "octo/docs", "main", &sha('1'), &sha('2')),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{dup}");
    assert_eq!(dup["outcome"], "duplicate");
    let (_, d) = app.get("/v1/admin/deliveries/d-push").await;
    assert_eq!(d["outcome"], "accepted");

    // A rejected delivery (bad signature) was never recorded.
    let (status, _) = app
        .post_raw(
            &[
                ("content-type", "application/json".into()),
                ("x-github-event", "ping".into()),
                ("x-github-delivery", "d-rejected".into()),
                ("x-hub-signature-256", format!("sha256={}", "0".repeat(64))),
            ],
            b"{}".to_vec(),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_error(
        app.get("/v1/admin/deliveries/d-rejected").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        app.get("/v1/admin/deliveries/never-seen").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn replay_of_a_still_queued_push_is_a_duplicate() {
    let app = spawn_app().await;
    let connector = app.create_connector(5002).await;
    let (target, _) = app
        .create_target(&connector, "octo/docs", Some(52), "main")
        .await;
    let (status, a) = app
        .deliver_json(
            "push",
            "d-a",
            &push_payload(5002, 52, "octo/docs", "main", &sha('1'), &sha('a')),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{a}");
    let event_a = a["syncEventIds"][0].as_str().unwrap().to_owned();
    let events_before = app.events_of(&target).await.len();

    let (status, r) = app.post("/v1/admin/deliveries/d-a/replay", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["deliveryId"], "d-a:replay:1");
    assert_eq!(r["outcome"], "duplicate");
    assert_eq!(r["syncEventIds"], json!([event_a]));
    assert_eq!(app.events_of(&target).await.len(), events_before);
    assert_eq!(app.sync_event(&event_a).await["status"], "queued");

    let (status, d) = app.get("/v1/admin/deliveries/d-a:replay:1").await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["replayOf"], "d-a");
    assert_eq!(d["event"], "push");
    // The original is untouched.
    let (_, orig) = app.get("/v1/admin/deliveries/d-a").await;
    assert!(orig["replayOf"].is_null(), "{orig}");
    assert_eq!(orig["outcome"], "accepted");

    // A second replay gets the next number.
    let (status, r2) = app.post("/v1/admin/deliveries/d-a/replay", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{r2}");
    assert_eq!(r2["deliveryId"], "d-a:replay:2");
    app.stop().await;
}
}

conformance! {
/// Push A, then push B (A's event superseded). Replaying A is a redelivery of
/// an out-of-order push: its `before` is not the latest head (B) and a recorded
/// push (A→B) moved away from its `after`, so the rules call it stale.
#[tokio::test]
async fn replay_of_a_superseded_push_is_stale() {
    let app = spawn_app().await;
    let connector = app.create_connector(5003).await;
    let (target, _) = app
        .create_target(&connector, "octo/docs", Some(53), "main")
        .await;
    let (_, a) = app
        .deliver_json(
            "push",
            "d-a",
            &push_payload(5003, 53, "octo/docs", "main", &sha('1'), &sha('a')),
        )
        .await;
    let (status, b) = app
        .deliver_json(
            "push",
            "d-b",
            &push_payload(5003, 53, "octo/docs", "main", &sha('a'), &sha('b')),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{b}");
    let event_a = a["syncEventIds"][0].as_str().unwrap().to_owned();
    let event_b = b["syncEventIds"][0].as_str().unwrap().to_owned();
    assert_eq!(app.sync_event(&event_a).await["status"], "superseded");
    let events_before = app.events_of(&target).await.len();

    let (status, r) = app.post("/v1/admin/deliveries/d-a/replay", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["deliveryId"], "d-a:replay:1");
    assert_eq!(r["outcome"], "ignored");
    assert_eq!(r["reason"], "stale");
    // B stays the head to sync; nothing new was queued.
    assert_eq!(app.sync_event(&event_b).await["status"], "queued");
    assert_eq!(app.events_of(&target).await.len(), events_before);
    assert_eq!(app.target(&target).await["latestHeadSha"], sha('b'));
    let (_, d) = app.get("/v1/admin/deliveries/d-a:replay:1").await;
    assert_eq!(d["replayOf"], "d-a");
    assert_eq!(d["reason"], "stale");
    app.stop().await;
}
}

conformance! {
/// The operator's case for replay: a sync failed for good; replaying the
/// delivery that caused it queues the same head again (202).
#[tokio::test]
async fn replay_of_a_push_whose_sync_failed_is_accepted() {
    let reconciler = ScriptedReconciler::new(|_, _| {
        Err(connectord::sync::ReconcileError::Permanent(
            "repository unreachable".into(),
        ))
    });
    let app = spawn_app_with(TestOptions {
        reconciler: Some(reconciler.clone()),
        ..Default::default()
    })
    .await;
    let connector = app.create_connector(5004).await;
    let (target, _) = app
        .create_target(&connector, "octo/docs", Some(54), "main")
        .await;
    let (status, a) = app
        .deliver_json(
            "push",
            "d-a",
            &push_payload(5004, 54, "octo/docs", "main", &sha('1'), &sha('a')),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{a}");
    let event_a = a["syncEventIds"][0].as_str().unwrap().to_owned();
    app.wait_for_status(&event_a, "failed").await;

    let (status, r) = app.post("/v1/admin/deliveries/d-a/replay", json!({})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{r}");
    assert_eq!(r["deliveryId"], "d-a:replay:1");
    assert_eq!(r["outcome"], "accepted");
    let replayed = r["syncEventIds"][0].as_str().expect("a new sync event");
    assert_ne!(replayed, event_a);
    let ev = app.sync_event(replayed).await;
    assert_eq!(ev["headSha"], sha('a'));
    assert_eq!(ev["deliveryId"], "d-a:replay:1");
    assert_eq!(ev["trigger"], "push");
    assert_eq!(ev["connectorTargetId"], target.as_str());

    let (_, d) = app.get("/v1/admin/deliveries/d-a:replay:1").await;
    assert_eq!(d["replayOf"], "d-a");
    assert_eq!(d["outcome"], "accepted");
    assert_eq!(d["syncEventIds"], json!([replayed]));
    app.stop().await;
}
}

conformance! {
/// A form-encoded delivery is replayed as it was received (the recorded body
/// is the raw form, decoded again with its content type).
#[tokio::test]
async fn replay_of_a_form_encoded_delivery() {
    let app = spawn_app().await;
    let connector = app.create_connector(5005).await;
    app.create_target(&connector, "octo/docs", Some(55), "main")
        .await;
    let payload = push_payload(5005, 55, "octo/docs", "main", &sha('1'), &sha('a')).to_string();
    let body: String = form_urlencoded_payload(&payload);
    let (status, text) = app
        .post_raw(
            &[
                ("content-type", "application/x-www-form-urlencoded".into()),
                ("x-github-event", "push".into()),
                ("x-github-delivery", "d-form".into()),
                (
                    "x-hub-signature-256",
                    sign(SECRET.as_bytes(), body.as_bytes()),
                ),
            ],
            body.into_bytes(),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{text}");
    let (status, r) = app
        .post("/v1/admin/deliveries/d-form/replay", json!({}))
        .await;
    assert_eq!(status, StatusCode::OK, "{r}");
    assert_eq!(r["outcome"], "duplicate", "{r}");
    assert_eq!(r["deliveryId"], "d-form:replay:1");
    app.stop().await;
}
}

fn form_urlencoded_payload(json: &str) -> String {
    let mut out = String::from("payload=");
    for b in json.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.*".contains(&b) {
            out.push(b as char);
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

conformance! {
/// Replays requested at the same time are each dispatched, each under its
/// own number; none is answered as a duplicate of another.
#[tokio::test]
async fn concurrent_replays_get_distinct_delivery_ids() {
    let app = spawn_app().await;
    let (status, _) = app
        .deliver_json(
            "installation",
            "d-inst",
            &json!({"action": "created", "installation": {"id": 5006, "account": {"login": "octo"}}}),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let replays = (0..6).map(|_| app.post("/v1/admin/deliveries/d-inst/replay", json!({})));
    let answers = futures::future::join_all(replays).await;
    let mut ids = vec![];
    for (status, r) in &answers {
        assert_eq!(*status, StatusCode::ACCEPTED, "{r}");
        assert_eq!(r["outcome"], "accepted", "{r}");
        ids.push(r["deliveryId"].as_str().unwrap().to_owned());
    }
    ids.sort();
    let expected: Vec<String> = (1..=6).map(|n| format!("d-inst:replay:{n}")).collect();
    assert_eq!(ids, expected);
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn replay_needs_a_recorded_body() {
    let app = spawn_app().await;
    // Ignored deliveries keep no body: nothing to replay.
    let (status, _) = app
        .deliver_json("ping", "d-ping", &json!({"zen": "x"}))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_error(
        app.post("/v1/admin/deliveries/d-ping/replay", json!({}))
            .await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert_error(
        app.post("/v1/admin/deliveries/never-seen/replay", json!({}))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // Neither attempt recorded a replay delivery.
    let (_, list) = app.get("/v1/admin/deliveries").await;
    assert_eq!(ids(list["items"].as_array().unwrap()), vec!["d-ping"]);
    app.stop().await;
}
}

// ---------------------------------------------------------------------------
// 6. OpenAPI
// ---------------------------------------------------------------------------

conformance! {
#[tokio::test]
async fn openapi_document_lists_every_admin_route_and_bearer_auth() {
    let app = spawn_app().await;
    let (status, text) = public_get(&app, &app.admin_base, "/v1/admin/openapi.json").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let doc: Value = serde_json::from_str(&text).expect("valid JSON");
    let version = doc["openapi"].as_str().expect("openapi version");
    assert!(version.starts_with("3."), "{version}");
    let expected: [(&str, &[&str]); 10] = [
        ("/v1/admin/connectors", &["get", "post"]),
        ("/v1/admin/connectors/{id}", &["get"]),
        ("/v1/admin/connectors/{id}/targets", &["get", "post"]),
        ("/v1/admin/targets/{id}", &["get", "delete"]),
        ("/v1/admin/targets/{id}/sync", &["post"]),
        ("/v1/admin/sync-events", &["get"]),
        ("/v1/admin/sync-events/{id}", &["get"]),
        ("/v1/admin/deliveries", &["get"]),
        ("/v1/admin/deliveries/{id}", &["get"]),
        ("/v1/admin/deliveries/{id}/replay", &["post"]),
    ];
    for (path, methods) in expected {
        let item = &doc["paths"][path];
        assert!(item.is_object(), "missing path {path}");
        for m in methods {
            assert!(item[m].is_object(), "missing {m} {path}");
        }
    }
    let schemes = &doc["components"]["securitySchemes"];
    let bearer = schemes
        .as_object()
        .and_then(|s| {
            s.values()
                .find(|v| v["type"] == "http" && v["scheme"].as_str() == Some("bearer"))
        })
        .unwrap_or_else(|| panic!("no bearer security scheme: {schemes}"));
    assert_eq!(bearer["type"], "http");
    assert!(doc["security"].is_array(), "no global security requirement");
    app.stop().await;
}
}

// ---------------------------------------------------------------------------
// 7. --admin-listen
// ---------------------------------------------------------------------------

conformance! {
#[tokio::test]
async fn separate_admin_listener_splits_the_admin_api_from_the_webhook() {
    let app = spawn_app_with(TestOptions {
        separate_admin: true,
        ..Default::default()
    })
    .await;
    assert_ne!(app.base, app.admin_base);
    let auth = format!("Bearer {ADMIN_TOKEN}");

    // The admin API answers on the admin address...
    let (status, body) = app
        .post(
            "/v1/admin/connectors",
            json!({"type": "github", "installationId": 7001}),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _) = request(
        &app,
        &app.admin_base,
        "GET",
        "/v1/admin/connectors",
        Some(&auth),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    // ...and not on the public one, token or not.
    for (method, path) in ADMIN_ROUTES {
        let (status, body) = request(
            &app,
            &app.base,
            method,
            path,
            Some(&auth),
            Some((
                "application/json",
                br#"{"type":"github","installationId":7002}"#,
            )),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{method} {path} on the public listener: {body}"
        );
    }
    let (status, _) = public_get(&app, &app.base, "/v1/admin/openapi.json").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, list) = app.get("/v1/admin/connectors").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");

    // The webhook answers on the public address, and not on the admin one.
    let (status, body) = app.deliver_json("ping", "d-public", &json!({})).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let payload = b"{}".to_vec();
    let res = app
        .client
        .post(format!("{}/v1/webhooks/connectors/github", app.admin_base))
        .header("content-type", "application/json")
        .header("x-github-event", "ping")
        .header("x-github-delivery", "d-admin")
        .header("x-hub-signature-256", sign(SECRET.as_bytes(), &payload))
        .body(payload)
        .send()
        .await
        .expect("request");
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_error(
        app.get("/v1/admin/deliveries/d-admin").await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // Health stays on the public listener.
    let (status, _) = public_get(&app, &app.base, "/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let (status, text) = public_get(&app, &app.base, "/readyz").await;
    assert_eq!((status, text.trim()), (StatusCode::OK, "ready"));
    // Metrics are for operators: with an admin listener they are served there only.
    let (status, _) = public_get(&app, &app.base, "/metrics").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, text) = public_get(&app, &app.admin_base, "/metrics").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains("connectord_http_connections"), "{text}");
    app.stop().await;
}
}
