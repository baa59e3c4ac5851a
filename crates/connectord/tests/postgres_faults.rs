//! PostgreSQL process faults through the real binary: `kill -9` of one of two
//! `ingress` processes sharing one database while both receive signed pushes.
//! Every delivery either process answered 202 must be recorded as accepted
//! with its sync event and its queued job, none twice.
//!
//! Needs `CONNECTORD_TEST_POSTGRES_URL`; without it the test says it is
//! skipped and passes (under `CI=true` it fails instead).

mod common;

use common::process::Server;
use connectord::ingress::signature::sign;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "pg-faults-webhook-secret";
const TOKEN: &str = "pg-faults-admin-token";
const TARGETS: usize = 10;
const DELIVERIES: usize = 600;
const IN_FLIGHT: usize = 32;
/// Answers from the process to be killed before its kill.
const KILL_AFTER: usize = 100;

async fn admin(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let url = format!("{base}{path}");
    let req = match body {
        Some(b) => client.post(url).json(&b),
        None => client.get(url),
    };
    let res = req.bearer_auth(TOKEN).send().await.expect("admin request");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_of_one_of_two_ingress_processes_loses_and_duplicates_no_acknowledged_delivery() {
    if common::backend::postgres_url().is_none() {
        return; // the notice was printed by postgres_url()
    }
    let db_url = common::backend::fresh_schema().await;
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let args = ["--role", "ingress", "--database-url", &db_url];
    let env = [
        ("GITHUB_CONNECTOR_APP_WEBHOOK_SECRET", SECRET),
        ("CONNECTORD_ADMIN_TOKEN", TOKEN),
    ];
    let mut doomed = Server::start(work, &work.join("a"), &args, &env).await;
    let survivor = Server::start(work, &work.join("b"), &args, &env).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = survivor.base();
    let (status, connector) = admin(
        &client,
        &base,
        "/v1/admin/connectors",
        Some(json!({"type": "github", "installationId": 9})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{connector}");
    let connector = connector["id"].as_str().unwrap().to_owned();
    for t in 0..TARGETS {
        let (status, body) = admin(
            &client,
            &base,
            &format!("/v1/admin/connectors/{connector}/targets"),
            Some(json!({"repositoryFullName": format!("org/repo{t}"),
                "repositoryId": 2000 + t, "branch": "main"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    // Even deliveries to the doomed process, odd ones to the survivor.
    let urls = [doomed.webhook_url(), survivor.webhook_url()];
    let answered_by_doomed = Arc::new(AtomicUsize::new(0));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..DELIVERIES {
        let t = i % TARGETS;
        let step = i / TARGETS;
        let body = common::push_payload(
            9,
            2000 + t as i64,
            &format!("org/repo{t}"),
            "main",
            &format!("{:040x}", step),
            &format!("{:040x}", step + 1),
        );
        let body = serde_json::to_vec(&body).unwrap();
        let id = format!("pgkill-{i}");
        let url = urls[i % 2].clone();
        let (client, answered, acknowledged, gate) = (
            client.clone(),
            answered_by_doomed.clone(),
            acknowledged.clone(),
            gate.clone(),
        );
        sends.spawn(async move {
            let _slot = gate.acquire_owned().await.expect("semaphore");
            let res = client
                .post(url)
                .header("content-type", "application/json")
                .header("x-github-event", "push")
                .header("x-github-delivery", &id)
                .header("x-hub-signature-256", sign(SECRET.as_bytes(), &body))
                .body(body)
                .send()
                .await;
            // A connection the kill cut is no answer: GitHub would count it failed.
            if let Ok(res) = res {
                let status = res.status();
                assert!(
                    status == StatusCode::ACCEPTED || status == StatusCode::OK,
                    "{id}: {status}"
                );
                let body: Value = res.json().await.unwrap_or(Value::Null);
                if status == StatusCode::ACCEPTED && body["outcome"] == "accepted" {
                    acknowledged.lock().unwrap().push(id);
                }
                if i % 2 == 0 {
                    answered.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while answered_by_doomed.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(
            Instant::now() < deadline,
            "{KILL_AFTER} answers within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let status = doomed.sigkill();
    assert!(!status.success(), "killed, not exited: {status}");
    while let Some(r) = sends.join_next().await {
        r.expect("a send task");
    }
    let acknowledged: Vec<String> = acknowledged.lock().unwrap().clone();
    let by_doomed = acknowledged
        .iter()
        .filter(|id| id.trim_start_matches("pgkill-").parse::<usize>().unwrap() % 2 == 0)
        .count();
    assert!(
        by_doomed >= KILL_AFTER / 2,
        "the doomed process acknowledged {by_doomed}"
    );
    assert!(
        by_doomed < DELIVERIES / 2,
        "the kill came before the doomed process's last answer, or this test proves nothing"
    );

    // Every acknowledged delivery, recorded with its own sync event and job.
    let mut events = HashSet::new();
    for id in &acknowledged {
        let (status, d) = admin(&client, &base, &format!("/v1/admin/deliveries/{id}"), None).await;
        assert_eq!(status, StatusCode::OK, "acknowledged {id} is recorded: {d}");
        assert_eq!(d["outcome"], "accepted", "{d}");
        let ids = d["syncEventIds"].as_array().expect("sync event ids");
        assert_eq!(ids.len(), 1, "one target per push: {d}");
        let event = ids[0].as_str().unwrap().to_owned();
        let (status, e) = admin(
            &client,
            &base,
            &format!("/v1/admin/sync-events/{event}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "its sync event {event} exists: {e}");
        assert_eq!(e["deliveryId"], id.as_str(), "{e}");
        assert!(events.insert(event), "no two deliveries share a sync event");
    }
    // Every recorded delivery was sent and is recorded once; every sync
    // event has exactly one job.
    let db = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db_url)
        .await
        .expect("connect to the test schema");
    let (deliveries, distinct): (i64, i64) =
        sqlx::query_as("SELECT count(*), count(DISTINCT delivery_id) FROM webhook_delivery")
            .fetch_one(&db)
            .await
            .expect("count deliveries");
    assert_eq!(deliveries, distinct, "no delivery recorded twice");
    assert!(deliveries as usize >= acknowledged.len() && deliveries as usize <= DELIVERIES);
    let orphans: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM connector_sync_event e \
         WHERE (SELECT count(*) FROM sync_job j WHERE j.sync_event_id = e.id) <> 1",
    )
    .fetch_one(&db)
    .await
    .expect("count events without exactly one job");
    assert_eq!(orphans, 0, "every sync event has exactly one job");
    eprintln!(
        "ingress kill -9 on PostgreSQL: {} acknowledged ({by_doomed} by the killed process), \
         {deliveries} recorded, 0 lost, 0 duplicated",
        acknowledged.len()
    );
}
