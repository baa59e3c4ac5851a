//! Nothing acknowledged is lost: `kill -9` of the real `serve` binary while
//! it answers signed pushes from 64 connections at once, then a restart on the
//! same data directory. Every delivery that got its 202 before the kill must
//! be recorded as accepted, with its sync event; none may be recorded twice.
//! (A 202 is sent only after the group transaction holding it committed with
//! `synchronous=FULL`; this is the test of that promise through the binary.)

mod common;

use common::process::Server;
use connectord::ingress::signature::sign;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SECRET: &str = "durability-test-secret";
const TOKEN: &str = "durability-test-admin-token";
const TARGETS: usize = 20;
const DELIVERIES: usize = 1000;
const IN_FLIGHT: usize = 64;
/// Answers received before the kill: enough that batches were in flight.
const KILL_AFTER: usize = 300;

fn envs() -> [(&'static str, &'static str); 2] {
    [
        ("GITHUB_CONNECTOR_APP_WEBHOOK_SECRET", SECRET),
        ("CONNECTORD_ADMIN_TOKEN", TOKEN),
    ]
}

async fn admin(
    client: &reqwest::Client,
    server: &Server,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let url = format!("{}{path}", server.base());
    let req = match body {
        Some(b) => client.post(url).json(&b),
        None => client.get(url),
    };
    let res = req.bearer_auth(TOKEN).send().await.expect("admin request");
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Push `i`: target `i % TARGETS`, one step further along that target's chain
/// (so none is stale), with its own delivery id.
fn push(i: usize) -> (String, Vec<u8>) {
    let t = i % TARGETS;
    let step = i / TARGETS;
    let body = json!({
        "ref": "refs/heads/main",
        "before": format!("{:040x}", step),
        "after": format!("{:040x}", step + 1),
        "repository": {"id": 1000 + t, "full_name": format!("org/repo{t}")},
        "installation": {"id": 7},
        "commits": [], "head_commit": null, "pusher": {"name": "test"},
    });
    (
        format!("kill9-{i}"),
        serde_json::to_vec(&body).expect("json"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_push_acknowledged_before_a_kill_9_is_recorded_with_its_sync_after_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let data = work.join("data");
    let mut server = Server::start(work, &data, &[], &envs()).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let (status, connector) = admin(
        &client,
        &server,
        "/v1/admin/connectors",
        Some(json!({"type": "github", "installationId": 7})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{connector}");
    let connector = connector["id"].as_str().unwrap().to_owned();
    for t in 0..TARGETS {
        let (status, body) = admin(
            &client,
            &server,
            &format!("/v1/admin/connectors/{connector}/targets"),
            Some(json!({"repositoryFullName": format!("org/repo{t}"),
                "repositoryId": 1000 + t, "branch": "main"})),
        )
        .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
    }

    let url = server.webhook_url();
    let answered = Arc::new(AtomicUsize::new(0));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let gate = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut sends = tokio::task::JoinSet::new();
    for i in 0..DELIVERIES {
        let (id, body) = push(i);
        let (client, url) = (client.clone(), url.clone());
        let (answered, acknowledged, gate) = (answered.clone(), acknowledged.clone(), gate.clone());
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
                if res.status() == StatusCode::ACCEPTED {
                    acknowledged.lock().unwrap().push(id);
                }
                answered.fetch_add(1, Ordering::SeqCst);
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(
            Instant::now() < deadline,
            "{KILL_AFTER} answers within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let status = server.sigkill();
    assert!(!status.success(), "killed, not exited: {status}");
    while sends.join_next().await.is_some() {}
    let acknowledged: Vec<String> = acknowledged.lock().unwrap().clone();
    assert!(
        acknowledged.len() >= KILL_AFTER / 2,
        "most answers before the kill were 202s ({} of {KILL_AFTER})",
        acknowledged.len()
    );
    assert!(
        acknowledged.len() < DELIVERIES,
        "the kill came before the last answer, or this test proves nothing"
    );

    let server = Server::start(work, &data, &[], &envs()).await;
    let mut events = HashSet::new();
    for id in &acknowledged {
        let (status, d) = admin(
            &client,
            &server,
            &format!("/v1/admin/deliveries/{id}"),
            None,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::OK,
            "acknowledged delivery {id} is recorded: {d}"
        );
        assert_eq!(d["outcome"], "accepted", "{d}");
        let ids = d["syncEventIds"].as_array().expect("sync event ids");
        assert_eq!(ids.len(), 1, "one target per push: {d}");
        let event = ids[0].as_str().unwrap().to_owned();
        let (status, e) = admin(
            &client,
            &server,
            &format!("/v1/admin/sync-events/{event}"),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "its sync event {event} exists: {e}");
        assert_eq!(e["deliveryId"], id.as_str(), "{e}");
        assert!(events.insert(event), "no two deliveries share a sync event");
    }
    // Every recorded push delivery is one of the sent ones, recorded once.
    let mut recorded = HashSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/admin/deliveries?limit=200&cursor={c}"),
            None => "/v1/admin/deliveries?limit=200".to_owned(),
        };
        let (status, page) = admin(&client, &server, &path, None).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        for d in page["items"].as_array().unwrap() {
            let id = d["id"].as_str().unwrap().to_owned();
            assert!(id.starts_with("kill9-"), "{d}");
            assert!(recorded.insert(id), "recorded once: {d}");
        }
        match page["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert!(
        acknowledged.iter().all(|id| recorded.contains(id)),
        "every acknowledged delivery is listed"
    );
    eprintln!(
        "durability: {} acknowledged before kill -9 of {DELIVERIES} sent, {} recorded after restart, 0 lost",
        acknowledged.len(),
        recorded.len()
    );
}
