//! Retention: delivery bodies and push history are pruned, and what depends
//! on them says so instead of misbehaving.

mod common;

use common::*;
use connectord::store::models::now_ms;
use reqwest::StatusCode;
use serde_json::json;

conformance! {
#[tokio::test]
async fn a_pruned_delivery_body_can_no_longer_be_replayed() {
    let app = spawn_app().await;
    let connector = app.create_connector(31).await;
    app.create_target(&connector, "octo/docs", Some(310), "main")
        .await;
    let (status, _) = app
        .deliver_json(
            "push",
            "d-keep",
            &push_payload(31, 310, "octo/docs", "main", &sha('1'), &sha('2')),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (_, d) = app.get("/v1/admin/deliveries/d-keep").await;
    assert_eq!(d["bodyRetained"], true, "{d}");

    // Everything received before a moment from now is past retention.
    let pruned = app
        .store
        .prune_delivery_bodies(now_ms() + 1)
        .await
        .expect("prune");
    assert_eq!(pruned, 1);
    let (_, d) = app.get("/v1/admin/deliveries/d-keep").await;
    assert_eq!(d["bodyRetained"], false, "{d}");
    assert_eq!(d["outcome"], "accepted", "the record itself stays: {d}");
    let (status, body) = app
        .post("/v1/admin/deliveries/d-keep/replay", json!({}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(
        app.store
            .prune_delivery_bodies(now_ms() + 1)
            .await
            .expect("prune"),
        0
    );
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn pruned_push_history_no_longer_marks_an_old_push_stale() {
    let app = spawn_app().await;
    let connector = app.create_connector(32).await;
    app.create_target(&connector, "octo/docs", Some(320), "main")
        .await;
    let push = |d: &'static str, before: char, after: char| {
        let app = &app;
        async move {
            app.deliver_json(
                "push",
                d,
                &push_payload(32, 320, "octo/docs", "main", &sha(before), &sha(after)),
            )
            .await
        }
    };
    // B->C arrives before A->B: A->B is stale while the history remembers B->C.
    assert_eq!(push("p2", 'b', 'c').await.0, StatusCode::ACCEPTED);
    let (status, body) = push("p1", 'a', 'b').await;
    assert_eq!(
        (status, body["reason"].as_str()),
        (StatusCode::OK, Some("stale")),
        "{body}"
    );

    assert!(
        app.store
            .prune_push_history(now_ms() + 1)
            .await
            .expect("prune")
            >= 1
    );
    // Forgotten: the same late push (a new delivery) is no longer recognised as stale.
    let (status, body) = push("p1-again", 'a', 'b').await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn history_past_retention_is_pruned_but_pending_work_and_document_sources_stay() {
    // The first push's sync completes and writes a document; the second is
    // superseded by the third, which stays queued behind nothing (no worker runs it).
    let blob = connectord::github::tarball::git_blob_sha(b"doc");
    let named = blob.clone();
    let reconciler = ScriptedReconciler::new(move |job, n| {
        if n == 1 {
            let path = "a.md".to_owned();
            Ok(connectord::store::models::SyncResult {
                head_sha: job.job.head_sha.clone(),
                changes: vec![connectord::store::models::DocumentChange::Upsert {
                    path,
                    blob_sha: named.clone(),
                    size: 3,
                    is_binary: false,
                }],
                ..Default::default()
            })
        } else {
            Err(connectord::sync::ReconcileError::Permanent("stop".into()))
        }
    });
    let app = spawn_app_with(TestOptions {
        reconciler: Some(reconciler),
        ..Default::default()
    })
    .await;
    app.store.put_blob(&blob, b"doc").await.expect("put blob");
    let connector = app.create_connector(33).await;
    let (target, initial) = app
        .create_target(&connector, "octo/docs", Some(330), "main")
        .await;
    let written = app.wait_for_status(&initial, "completed").await;
    let (status, body) = app
        .deliver_json(
            "push",
            "h-1",
            &push_payload(33, 330, "octo/docs", "main", &sha('f'), &sha('2')),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let failed = body["syncEventIds"][0].as_str().expect("event").to_owned();
    app.wait_for_status(&failed, "failed").await;

    let pruned = app.store.prune_history(now_ms() + 1).await.expect("prune");
    assert!(
        pruned >= 2,
        "the failed sync, its job and the delivery: {pruned}"
    );
    let (status, _) = app.get(&format!("/v1/admin/sync-events/{failed}")).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a finished sync past retention is gone"
    );
    let (status, _) = app.get("/v1/admin/deliveries/h-1").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a delivery past retention is gone"
    );
    // The sync that wrote the stored document stays, so the document's source resolves.
    let (status, e) = app
        .get(&format!(
            "/v1/admin/sync-events/{}",
            written["id"].as_str().unwrap()
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{e}");
    let (_, docs) = app
        .get(&format!("/v1/admin/targets/{target}/documents"))
        .await;
    assert_eq!(docs["items"][0]["syncEventId"], written["id"], "{docs}");
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn queued_syncs_are_never_pruned() {
    let app = spawn_app().await;
    let connector = app.create_connector(34).await;
    let (_, initial) = app
        .create_target(&connector, "octo/docs", Some(340), "main")
        .await;
    app.store.prune_history(now_ms() + 1).await.expect("prune");
    assert_eq!(app.sync_event(&initial).await["status"], "queued");
    app.stop().await;
}
}
