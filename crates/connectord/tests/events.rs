//! Lifecycle events through the signed webhook, checked through the admin
//! API's view afterwards: push, installation, installation_repositories and
//! repository.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Delivers `payload` as `event` under a fresh delivery id.
async fn send(app: &TestApp, event: &str, payload: &Value) -> (StatusCode, Value) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let id = format!("ev-{}", N.fetch_add(1, Ordering::SeqCst));
    let (status, body) = app.deliver_json(event, &id, payload).await;
    assert!(
        status == StatusCode::OK || status == StatusCode::ACCEPTED,
        "{event} answered {status}: {body}"
    );
    assert_eq!(body["deliveryId"], id.as_str(), "{body}");
    (status, body)
}

#[track_caller]
fn assert_ignored(got: &(StatusCode, Value), reason: Option<&str>) {
    let (status, body) = got;
    assert_eq!(*status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "ignored", "{body}");
    if let Some(r) = reason {
        assert_eq!(body["reason"], r, "{body}");
    }
    assert!(
        body.get("syncEventIds")
            .is_none_or(|v| v.as_array().is_some_and(Vec::is_empty)),
        "an ignored delivery caused syncs: {body}"
    );
}

#[track_caller]
fn assert_accepted(got: &(StatusCode, Value)) {
    let (status, body) = got;
    assert_eq!(*status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["outcome"], "accepted", "{body}");
}

fn sync_ids(body: &Value) -> Vec<String> {
    body.get("syncEventIds")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().expect("string id").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn statuses(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["status"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The connector of `installation`, as the admin API lists it.
async fn connector_of(app: &TestApp, installation: i64) -> Value {
    let (status, body) = app.get("/v1/admin/connectors?limit=200").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body["items"]
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .find(|c| c["installationId"] == installation)
                .cloned()
        })
        .unwrap_or_else(|| panic!("no connector for installation {installation}: {body}"))
}

fn installation_event(action: &str, installation: i64, login: &str, permissions: Value) -> Value {
    json!({
        "action": action,
        "installation": {
            "id": installation,
            "account": {"login": login, "id": 1, "type": "Organization"},
            "repository_selection": "selected",
            "permissions": permissions,
            "events": ["push", "repository"],
            "app_id": 1,
        },
        "repositories": [],
        "sender": {"login": "octocat"},
    })
}

fn installation_repositories_event(
    action: &str,
    installation: i64,
    added: &[(i64, &str)],
    removed: &[(i64, &str)],
) -> Value {
    let repos = |list: &[(i64, &str)]| -> Vec<Value> {
        list.iter()
            .map(|(id, name)| json!({"id": id, "full_name": name, "name": name.split('/').nth(1), "private": true}))
            .collect()
    };
    json!({
        "action": action,
        "installation": {"id": installation, "account": {"login": "octo"}},
        "repository_selection": "selected",
        "repositories_added": repos(added),
        "repositories_removed": repos(removed),
        "sender": {"login": "octocat"},
    })
}

fn repository_event(action: &str, installation: i64, repo_id: i64, full_name: &str) -> Value {
    json!({
        "action": action,
        "repository": {
            "id": repo_id,
            "full_name": full_name,
            "name": full_name.split('/').nth(1),
            "owner": {"login": full_name.split('/').next()},
            "archived": action == "archived",
        },
        "installation": {"id": installation},
        "sender": {"login": "octocat"},
    })
}

// ---------------------------------------------------------------------------
// push
// ---------------------------------------------------------------------------

conformance! {
#[tokio::test]
async fn tag_pushes_untracked_repositories_and_branches_are_ignored_with_a_reason() {
    let app = spawn_app().await;
    let connector = app.create_connector(10).await;
    let (target, _) = app
        .create_target(&connector, "octo/docs", Some(100), "main")
        .await;

    let mut tag = push_payload(10, 100, "octo/docs", "main", &sha('1'), &sha('2'));
    tag["ref"] = json!("refs/tags/v1.0.0");
    let got = send(&app, "push", &tag).await;
    assert_ignored(&got, Some("tag_push"));
    let (_, d) = app
        .get(&format!(
            "/v1/admin/deliveries/{}",
            got.1["deliveryId"].as_str().unwrap()
        ))
        .await;
    assert_eq!(d["outcome"], "ignored");
    assert_eq!(d["reason"], "tag_push");

    let got = send(
        &app,
        "push",
        &push_payload(10, 999, "octo/other", "main", &sha('1'), &sha('2')),
    )
    .await;
    assert_ignored(&got, Some("untracked_repository"));

    let got = send(
        &app,
        "push",
        &push_payload(10, 100, "octo/docs", "feature", &sha('1'), &sha('2')),
    )
    .await;
    assert_ignored(&got, Some("untracked_branch"));

    // Only the initial sync exists.
    let events = app.events_of(&target).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["trigger"], "initial");
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_target_added_by_name_matches_case_insensitively_and_learns_the_repository_id() {
    let app = spawn_app().await;
    let connector = app.create_connector(11).await;
    let (target, _) = app
        .create_target(&connector, "Octo/Docs", None, "main")
        .await;
    assert!(app.target(&target).await["repositoryId"].is_null());

    let got = send(
        &app,
        "push",
        &push_payload(11, 110, "octo/docs", "main", &sha('1'), &sha('2')),
    )
    .await;
    assert_accepted(&got);
    let ids = sync_ids(&got.1);
    assert_eq!(ids.len(), 1, "{}", got.1);
    let ev = app.sync_event(&ids[0]).await;
    assert_eq!(ev["status"], "queued");
    assert_eq!(ev["headSha"], sha('2'));
    assert_eq!(ev["connectorTargetId"], target.as_str());

    let t = app.target(&target).await;
    assert_eq!(t["repositoryId"], 110, "{t}");
    assert!(
        t["repositoryFullName"]
            .as_str()
            .is_some_and(|n| n.eq_ignore_ascii_case("octo/docs")),
        "{t}"
    );
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_push_under_another_installation_does_not_match() {
    let app = spawn_app().await;
    let connector = app.create_connector(12).await;
    app.create_connector(13).await;
    let (by_id, _) = app
        .create_target(&connector, "octo/docs", Some(120), "main")
        .await;
    let (by_name, _) = app
        .create_target(&connector, "octo/site", None, "main")
        .await;

    // Same repository id, another installation.
    let got = send(
        &app,
        "push",
        &push_payload(13, 120, "octo/docs", "main", &sha('1'), &sha('2')),
    )
    .await;
    assert_ignored(&got, Some("untracked_repository"));
    // Same full name, another installation: no match, and no id learned.
    let got = send(
        &app,
        "push",
        &push_payload(13, 121, "octo/site", "main", &sha('1'), &sha('2')),
    )
    .await;
    assert_ignored(&got, Some("untracked_repository"));
    assert!(app.target(&by_name).await["repositoryId"].is_null());
    assert_eq!(app.events_of(&by_id).await.len(), 1);
    assert_eq!(app.events_of(&by_name).await.len(), 1);

    // The right installation matches.
    let got = send(
        &app,
        "push",
        &push_payload(12, 120, "octo/docs", "main", &sha('1'), &sha('2')),
    )
    .await;
    assert_accepted(&got);
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn branch_deletion_marks_the_target_and_cancels_its_syncs_until_the_branch_returns() {
    let app = spawn_app().await;
    let connector = app.create_connector(14).await;
    let (target, _) = app
        .create_target(&connector, "octo/docs", Some(140), "main")
        .await;
    let got = send(
        &app,
        "push",
        &push_payload(14, 140, "octo/docs", "main", &sha('1'), &sha('a')),
    )
    .await;
    assert_accepted(&got);
    let event_a = sync_ids(&got.1)[0].clone();
    let count = app.events_of(&target).await.len();

    let deletion = push_payload(14, 140, "octo/docs", "main", &sha('a'), &sha('0'));
    assert_eq!(deletion["deleted"], true);
    let got = send(&app, "push", &deletion).await;
    assert_accepted(&got);
    assert!(
        sync_ids(&got.1).is_empty(),
        "a deletion queued a sync: {}",
        got.1
    );

    let t = app.target(&target).await;
    assert_eq!(t["health"], "branch_deleted", "{t}");
    assert_eq!(app.sync_event(&event_a).await["status"], "cancelled");
    let events = app.events_of(&target).await;
    assert_eq!(events.len(), count, "a deletion created a sync event");
    assert!(
        !statuses(&events).iter().any(|s| s == "queued"),
        "pending syncs survived the deletion: {events:?}"
    );

    // The branch comes back: synced again.
    let got = send(
        &app,
        "push",
        &push_payload(14, 140, "octo/docs", "main", &sha('0'), &sha('c')),
    )
    .await;
    assert_accepted(&got);
    let ids = sync_ids(&got.1);
    assert_eq!(ids.len(), 1, "{}", got.1);
    let ev = app.sync_event(&ids[0]).await;
    assert_eq!(ev["status"], "queued");
    assert_eq!(ev["headSha"], sha('c'));
    assert_eq!(app.target(&target).await["latestHeadSha"], sha('c'));
    app.stop().await;
}
}

conformance! {
/// `branch_deleted` says the branch is missing; once a push has created it
/// again (and a sync of it is queued), the target must not keep saying so.
#[tokio::test]
async fn a_recreated_branch_is_no_longer_reported_deleted() {
    let app = spawn_app().await;
    let connector = app.create_connector(15).await;
    let (target, _) = app
        .create_target(&connector, "octo/docs", Some(150), "main")
        .await;
    let got = send(
        &app,
        "push",
        &push_payload(15, 150, "octo/docs", "main", &sha('a'), &sha('0')),
    )
    .await;
    assert_accepted(&got);
    assert_eq!(app.target(&target).await["health"], "branch_deleted");
    let got = send(
        &app,
        "push",
        &push_payload(15, 150, "octo/docs", "main", &sha('0'), &sha('c')),
    )
    .await;
    assert_accepted(&got);
    let t = app.target(&target).await;
    assert_eq!(t["latestHeadSha"], sha('c'));
    assert_ne!(t["health"], "branch_deleted", "{t}");
    app.stop().await;
}
}

// ---------------------------------------------------------------------------
// installation
// ---------------------------------------------------------------------------

conformance! {
#[tokio::test]
async fn installation_lifecycle_drives_the_connector_and_its_targets() {
    let app = spawn_app().await;
    let perms = json!({"contents": "read", "metadata": "read"});
    let got = send(
        &app,
        "installation",
        &installation_event("created", 20, "octo-org", perms.clone()),
    )
    .await;
    assert_accepted(&got);
    let c = connector_of(&app, 20).await;
    let connector = c["id"].as_str().unwrap().to_owned();
    assert_eq!(c["status"], "active");
    assert_eq!(c["accountLogin"], "octo-org");
    assert_eq!(c["permissions"], perms);
    assert_eq!(c["repositorySelection"], "selected");
    // The admin API sees the same connector for that installation.
    let (status, again) = app
        .post(
            "/v1/admin/connectors",
            json!({"type": "github", "installationId": 20}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["id"], connector.as_str());

    let (target, initial) = app
        .create_target(&connector, "octo-org/docs", Some(200), "main")
        .await;

    let new_perms = json!({"contents": "write", "metadata": "read", "pull_requests": "read"});
    let got = send(
        &app,
        "installation",
        &installation_event(
            "new_permissions_accepted",
            20,
            "octo-org",
            new_perms.clone(),
        ),
    )
    .await;
    assert_accepted(&got);
    let c = connector_of(&app, 20).await;
    assert_eq!(c["permissions"], new_perms);
    assert_eq!(c["status"], "active");

    let got = send(
        &app,
        "installation",
        &installation_event("suspend", 20, "octo-org", new_perms.clone()),
    )
    .await;
    assert_accepted(&got);
    assert_eq!(connector_of(&app, 20).await["status"], "suspended");
    // Suspension holds jobs, it does not cancel them.
    assert_eq!(app.sync_event(&initial).await["status"], "queued");

    let got = send(
        &app,
        "installation",
        &installation_event("unsuspend", 20, "octo-org", new_perms.clone()),
    )
    .await;
    assert_accepted(&got);
    assert_eq!(connector_of(&app, 20).await["status"], "active");

    let got = send(
        &app,
        "installation",
        &installation_event("deleted", 20, "octo-org", new_perms.clone()),
    )
    .await;
    assert_accepted(&got);
    assert_eq!(connector_of(&app, 20).await["status"], "deleted");
    assert_eq!(app.target(&target).await["status"], "inactive");
    assert_eq!(app.sync_event(&initial).await["status"], "cancelled");
    // Its targets can be neither synced nor added while it is uninstalled.
    let (status, body) = app
        .post(&format!("/v1/admin/targets/{target}/sync"), json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    let (status, body) = app
        .post(
            &format!("/v1/admin/connectors/{connector}/targets"),
            json!({"repositoryFullName": "octo-org/other", "branch": "main"}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    // Pushes to a deleted installation's targets are not acted on.
    let got = send(
        &app,
        "push",
        &push_payload(20, 200, "octo-org/docs", "main", &sha('1'), &sha('2')),
    )
    .await;
    assert_ignored(&got, None);

    // Reinstalled: active again, targets resume with a resync.
    let got = send(
        &app,
        "installation",
        &installation_event("created", 20, "octo-org", new_perms.clone()),
    )
    .await;
    assert_accepted(&got);
    assert_eq!(connector_of(&app, 20).await["status"], "active");
    assert_eq!(connector_of(&app, 20).await["id"], connector.as_str());
    assert_eq!(app.target(&target).await["status"], "active");
    let ids = sync_ids(&got.1);
    assert_eq!(ids.len(), 1, "{}", got.1);
    let ev = app.sync_event(&ids[0]).await;
    assert_eq!(ev["status"], "queued");
    assert_eq!(ev["trigger"], "resync");
    assert_eq!(ev["connectorTargetId"], target.as_str());
    let queued: Vec<Value> = app
        .events_of(&target)
        .await
        .into_iter()
        .filter(|e| e["status"] == "queued")
        .collect();
    assert_eq!(queued.len(), 1, "{queued:?}");

    // An action connectord does not handle.
    let got = send(
        &app,
        "installation",
        &installation_event("renamed_account", 20, "octo-org", new_perms),
    )
    .await;
    assert_ignored(&got, None);
    assert_eq!(connector_of(&app, 20).await["status"], "active");
    app.stop().await;
}
}

// ---------------------------------------------------------------------------
// installation_repositories
// ---------------------------------------------------------------------------

conformance! {
#[tokio::test]
async fn repositories_removed_from_and_added_to_an_installation() {
    let app = spawn_app().await;
    let connector = app.create_connector(30).await;
    let (target, initial) = app
        .create_target(&connector, "octo/docs", Some(300), "main")
        .await;

    // Removed: the target becomes inaccessible and its pending sync is cancelled.
    let got = send(
        &app,
        "installation_repositories",
        &installation_repositories_event("removed", 30, &[], &[(300, "octo/docs")]),
    )
    .await;
    assert_accepted(&got);
    let t = app.target(&target).await;
    assert_eq!(t["status"], "inaccessible", "{t}");
    assert_eq!(t["health"], "inaccessible", "{t}");
    assert_eq!(app.sync_event(&initial).await["status"], "cancelled");
    // Pushes are no longer acted on.
    let got = send(
        &app,
        "push",
        &push_payload(30, 300, "octo/docs", "main", &sha('1'), &sha('2')),
    )
    .await;
    assert_ignored(&got, None);

    // Removing a repository nobody tracks changes nothing.
    let got = send(
        &app,
        "installation_repositories",
        &installation_repositories_event("removed", 30, &[], &[(301, "octo/other")]),
    )
    .await;
    assert_ignored(&got, None);

    // Added back: active again, with a resync.
    let got = send(
        &app,
        "installation_repositories",
        &installation_repositories_event("added", 30, &[(300, "octo/docs")], &[]),
    )
    .await;
    assert_accepted(&got);
    let t = app.target(&target).await;
    assert_eq!(t["status"], "active", "{t}");
    assert_ne!(t["health"], "inaccessible", "{t}");
    let ids = sync_ids(&got.1);
    assert_eq!(ids.len(), 1, "{}", got.1);
    let ev = app.sync_event(&ids[0]).await;
    assert_eq!(ev["status"], "queued");
    assert_eq!(ev["trigger"], "resync");
    assert_eq!(ev["connectorTargetId"], target.as_str());

    // Adding an untracked repository: nothing to do.
    let got = send(
        &app,
        "installation_repositories",
        &installation_repositories_event("added", 30, &[(302, "octo/new")], &[]),
    )
    .await;
    assert_ignored(&got, None);

    // An installation connectord does not know.
    let got = send(
        &app,
        "installation_repositories",
        &installation_repositories_event("removed", 31, &[], &[(300, "octo/docs")]),
    )
    .await;
    assert_ignored(&got, Some("untracked_installation"));
    assert_eq!(app.target(&target).await["status"], "active");
    app.stop().await;
}

/// Repository names come from the payload and are bound, never spliced into
/// SQL: a NUL (which ends SQL text in SQLite's C API) or a quote is just part
/// of a name that matches nothing, and matching by name still works beside it.
#[tokio::test]
async fn repository_names_with_nul_or_quotes_are_data_not_sql() {
    let app = spawn_app().await;
    let connector = app.create_connector(32).await;
    // Added by name only: matched by (case-insensitive) name until its id is known.
    let (by_name, _) = app
        .create_target(&connector, "octo/handbook", None, "main")
        .await;
    let (by_id, _) = app
        .create_target(&connector, "octo/docs", Some(320), "main")
        .await;
    let hostile = [
        (900, "a\u{0}b"),
        (901, "x'); DELETE FROM connector_target; --"),
        (902, "OCTO/HANDBOOK"),
    ];
    let got = send(
        &app,
        "installation_repositories",
        &installation_repositories_event("removed", 32, &[], &hostile),
    )
    .await;
    assert_accepted(&got);
    assert_eq!(app.target(&by_name).await["status"], "inaccessible");
    assert_eq!(app.target(&by_id).await["status"], "active");
    // Once more with only hostile names: recorded (200), nothing touched.
    let got = send(
        &app,
        "installation_repositories",
        &installation_repositories_event("removed", 32, &[], &hostile[..2]),
    )
    .await;
    assert_ignored(&got, None);
    assert_eq!(app.target(&by_id).await["status"], "active");
    app.stop().await;
}
}

// ---------------------------------------------------------------------------
// repository
// ---------------------------------------------------------------------------

conformance! {
#[tokio::test]
async fn renamed_and_transferred_repositories_keep_their_targets() {
    let app = spawn_app().await;
    let connector = app.create_connector(40).await;
    let (target, _) = app
        .create_target(&connector, "octo/docs", Some(400), "main")
        .await;

    let mut renamed = repository_event("renamed", 40, 400, "octo/handbook");
    renamed["changes"] = json!({"repository": {"name": {"from": "docs"}}});
    let got = send(&app, "repository", &renamed).await;
    assert_accepted(&got);
    assert_eq!(
        app.target(&target).await["repositoryFullName"],
        "octo/handbook"
    );
    let got = send(
        &app,
        "push",
        &push_payload(40, 400, "octo/handbook", "main", &sha('1'), &sha('2')),
    )
    .await;
    assert_accepted(&got);
    let ev = app.sync_event(&sync_ids(&got.1)[0]).await;
    assert_eq!(ev["connectorTargetId"], target.as_str());

    let mut transferred = repository_event("transferred", 40, 400, "acme/handbook");
    transferred["changes"] = json!({"owner": {"from": {"user": {"login": "octo"}}}});
    let got = send(&app, "repository", &transferred).await;
    assert_accepted(&got);
    assert_eq!(
        app.target(&target).await["repositoryFullName"],
        "acme/handbook"
    );
    let got = send(
        &app,
        "push",
        &push_payload(40, 400, "acme/handbook", "main", &sha('2'), &sha('3')),
    )
    .await;
    assert_accepted(&got);
    let ev = app.sync_event(&sync_ids(&got.1)[0]).await;
    assert_eq!(ev["connectorTargetId"], target.as_str());
    assert_eq!(ev["headSha"], sha('3'));

    // An untracked repository id: nothing touched.
    let got = send(
        &app,
        "repository",
        &repository_event("renamed", 40, 401, "octo/elsewhere"),
    )
    .await;
    assert_ignored(&got, None);
    assert_eq!(
        app.target(&target).await["repositoryFullName"],
        "acme/handbook"
    );
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn archived_unarchived_and_deleted_repositories() {
    let app = spawn_app().await;
    let connector = app.create_connector(50).await;
    let (target, initial) = app
        .create_target(&connector, "octo/docs", Some(500), "main")
        .await;
    assert_eq!(app.target(&target).await["archived"], false);

    let got = send(
        &app,
        "repository",
        &repository_event("archived", 50, 500, "octo/docs"),
    )
    .await;
    assert_accepted(&got);
    assert_eq!(app.target(&target).await["archived"], true);

    let got = send(
        &app,
        "repository",
        &repository_event("unarchived", 50, 500, "octo/docs"),
    )
    .await;
    assert_accepted(&got);
    assert_eq!(app.target(&target).await["archived"], false);

    for action in ["archived", "deleted", "renamed"] {
        let got = send(
            &app,
            "repository",
            &repository_event(action, 50, 501, "octo/untracked"),
        )
        .await;
        assert_ignored(&got, None);
    }

    let got = send(
        &app,
        "repository",
        &repository_event("deleted", 50, 500, "octo/docs"),
    )
    .await;
    assert_accepted(&got);
    let t = app.target(&target).await;
    assert_eq!(t["status"], "deleted", "{t}");
    assert_eq!(app.sync_event(&initial).await["status"], "cancelled");
    let got = send(
        &app,
        "push",
        &push_payload(50, 500, "octo/docs", "main", &sha('1'), &sha('2')),
    )
    .await;
    assert_ignored(&got, None);

    // An action connectord does not handle.
    let got = send(
        &app,
        "repository",
        &repository_event("edited", 50, 500, "octo/docs"),
    )
    .await;
    assert_ignored(&got, None);
    app.stop().await;
}
}

conformance! {
/// A rename onto a name that another target of the same connector already
/// tracks (added by name, for the same branch) must still be recorded and
/// answered: never a 5xx, which GitHub would redeliver forever.
#[tokio::test]
async fn a_rename_onto_a_name_another_target_tracks_is_still_recorded() {
    let app = spawn_app().await;
    let connector = app.create_connector(60).await;
    let (by_id, _) = app
        .create_target(&connector, "octo/old", Some(600), "main")
        .await;
    let (by_name, _) = app
        .create_target(&connector, "octo/new", None, "main")
        .await;
    let (status, body) = app
        .deliver_json(
            "repository",
            "rename-collision",
            &repository_event("renamed", 60, 600, "octo/new"),
        )
        .await;
    assert!(
        status == StatusCode::OK || status == StatusCode::ACCEPTED,
        "{status}: {body}"
    );
    let (status, d) = app.get("/v1/admin/deliveries/rename-collision").await;
    assert_eq!(status, StatusCode::OK, "{d}");
    // Both targets are still readable.
    app.target(&by_id).await;
    app.target(&by_name).await;
    app.stop().await;
}
}

conformance! {
/// The same collision reached through a push that follows a missed rename:
/// the push matches the old target by id (and would rename it) and the other
/// target by name.
#[tokio::test]
async fn a_push_under_a_name_another_target_tracks_is_still_recorded() {
    let app = spawn_app().await;
    let connector = app.create_connector(61).await;
    app.create_target(&connector, "octo/old", Some(610), "main")
        .await;
    app.create_target(&connector, "octo/new", None, "main")
        .await;
    let (status, body) = app
        .deliver_json(
            "push",
            "push-collision",
            &push_payload(61, 610, "octo/new", "main", &sha('1'), &sha('2')),
        )
        .await;
    assert!(
        status == StatusCode::OK || status == StatusCode::ACCEPTED,
        "{status}: {body}"
    );
    app.stop().await;
}
}
