//! `serve --role`: ingress and workers scale separately.

mod common;

use common::*;
use connectord::config::Role;
use reqwest::StatusCode;
use std::time::Duration;

#[tokio::test]
async fn an_ingress_process_queues_syncs_but_never_runs_them() {
    let reconciler = ScriptedReconciler::ok();
    let app = spawn_app_with(TestOptions {
        role: Role::Ingress,
        reconciler: Some(reconciler.clone()),
        ..Default::default()
    })
    .await;
    let connector = app.create_connector(41).await;
    let (_, initial) = app
        .create_target(&connector, "octo/docs", Some(410), "main")
        .await;
    let (status, _) = app
        .deliver_json(
            "push",
            "r-1",
            &push_payload(41, 410, "octo/docs", "main", &sha('1'), &sha('2')),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        reconciler.call_count(),
        0,
        "an ingress process must not run jobs"
    );
    assert_eq!(app.sync_event(&initial).await["status"], "superseded");
    app.stop().await;
}

#[tokio::test]
async fn a_worker_process_serves_only_health_and_metrics_and_runs_the_jobs() {
    // The ingress side records the work…
    let ingress = spawn_app_with(TestOptions {
        role: Role::Ingress,
        ..Default::default()
    })
    .await;
    let connector = ingress.create_connector(42).await;
    let (_, initial) = ingress
        .create_target(&connector, "octo/docs", Some(420), "main")
        .await;
    let dir = ingress.dir.clone();
    ingress.stop().await;

    // …and a worker on the same database runs it.
    let reconciler = ScriptedReconciler::ok();
    let worker = spawn_app_with(TestOptions {
        role: Role::Worker,
        reconciler: Some(reconciler.clone()),
        dir: Some(dir),
        ..Default::default()
    })
    .await;
    for path in ["/healthz", "/readyz", "/metrics"] {
        let res = worker
            .client
            .get(format!("{}{path}", worker.base))
            .send()
            .await
            .expect("request");
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
    let res = worker
        .client
        .post(worker.webhook_url())
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(
        res.status(),
        StatusCode::NOT_FOUND,
        "a worker has no webhook"
    );
    let (status, _) = worker.get("/v1/admin/connectors").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a worker has no admin API");

    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let event = worker.store.get_sync_event(&initial).await.expect("event");
        if event.status == connectord::store::states::SyncStatus::Completed {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the worker never ran the job: {event:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reconciler.call_count(), 1);
    worker.stop().await;
}

#[tokio::test]
async fn the_binary_refuses_a_worker_role_without_github_credentials_and_writes_no_secrets() {
    let work = tempfile::tempdir().expect("tempdir");
    let out = common::process::run(
        work.path(),
        &[
            "serve",
            "--role",
            "worker",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "data",
        ],
        &[],
    )
    .await;
    assert!(!out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr.contains("GITHUB_CONNECTOR_APP_ID"),
        "{}",
        out.stderr
    );
    assert!(!work.path().join("data/webhook-secret").exists());
    assert!(!work.path().join("data/admin-token").exists());
}
