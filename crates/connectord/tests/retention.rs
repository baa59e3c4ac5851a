//! Retention: delivery bodies and push history are pruned, and what depends
//! on them says so instead of misbehaving.

mod common;

use common::*;
use connectord::store::models::now_ms;
use reqwest::StatusCode;
use serde_json::json;

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
