mod common;

use common::*;
use reqwest::StatusCode;

conformance! {
#[tokio::test]
async fn push_to_tracked_branch_queues_a_sync_with_its_head_and_delivery() {
    let app = spawn_app().await;
    let connector = app.create_connector(42).await;
    let (target, _) = app
        .create_target(&connector, "octo/docs", Some(99), "main")
        .await;
    let (status, body) = app
        .deliver_json(
            "push",
            "d-1",
            &push_payload(42, 99, "octo/docs", "main", &sha('a'), &sha('b')),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(body["outcome"], "accepted");
    let event = app
        .sync_event(body["syncEventIds"][0].as_str().unwrap())
        .await;
    assert_eq!(event["status"], "queued");
    assert_eq!(event["headSha"], sha('b'));
    assert_eq!(event["deliveryId"], "d-1");
    assert_eq!(event["connectorTargetId"], target);
    app.stop().await;
}
}
