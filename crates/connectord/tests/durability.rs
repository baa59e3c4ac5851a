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
    let body = common::push_payload(
        7,
        1000 + t as i64,
        &format!("org/repo{t}"),
        "main",
        &format!("{:040x}", step),
        &format!("{:040x}", step + 1),
    );
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

/// The WAL stays bounded under continuous writes. Checkpoints run beside the
/// writer, and one that runs beside a busy writer never quite catches up; the
/// checkpointer then completes one under the writers' gate so the WAL starts
/// over (at 4,096 frames, 16 MiB). Without that the WAL grows by every byte
/// written for as long as the load lasts: here about 10,000 × 26 KiB (seen:
/// 236 MiB before the fix, 28 MiB after).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_starts_over_under_continuous_writes() {
    use connectord::domain::{BranchName, PathPrefix, RepoFullName, Sha};
    use connectord::ingress::dispatch::{Plan, PushPlan};
    use connectord::store::models::{NewDelivery, NewTarget};
    use connectord::store::{Store, StoreOptions};
    use futures::StreamExt;
    let tmp = tempfile::tempdir().unwrap();
    let db = tmp.path().join("wal.db");
    let url = format!("sqlite://{}", db.display());
    let store = Arc::new(
        connectord::store::sql::sqlite::connect(
            &url,
            StoreOptions::default(),
            connectord::store::sql::DEFAULT_WRITE_BATCH,
        )
        .await
        .unwrap(),
    );
    let (connector, _) = store.create_connector(7).await.unwrap();
    for t in 0..TARGETS as i64 {
        let target = NewTarget {
            repository_full_name: RepoFullName::parse(&format!("org/repo{t}")).unwrap(),
            repository_id: Some(1000 + t),
            branch: BranchName::parse("main").unwrap(),
            path_prefix: PathPrefix::parse("").unwrap(),
            max_file_bytes: 1 << 20,
        };
        store.create_target(&connector.id, target).await.unwrap();
    }
    let deliveries = 10000;
    let body: bytes::Bytes = vec![b'x'; 8000].into();
    let wal = db.with_extension("db-wal");
    let largest = Arc::new(AtomicUsize::new(0));
    let written = futures::stream::iter(0..deliveries)
        .map(|i| {
            let (store, body, wal, largest) =
                (store.clone(), body.clone(), wal.clone(), largest.clone());
            async move {
                let t = (i % TARGETS) as i64;
                let step = i / TARGETS;
                let sha = |n: usize| Sha::parse(&format!("{n:040x}")).unwrap();
                let plan = Plan::Push(PushPlan {
                    installation_id: Some(7),
                    repository_id: 1000 + t,
                    repository_full_name: format!("org/repo{t}"),
                    git_ref: "refs/heads/main".into(),
                    branch: "main".into(),
                    before: sha(step),
                    after: sha(step + 1),
                    deleted: false,
                });
                let delivery = NewDelivery {
                    id: format!("wal-{i}"),
                    event: "push".into(),
                    action: None,
                    installation_id: Some(7),
                    repository_id: Some(1000 + t),
                    repository_full_name: Some(format!("org/repo{t}")),
                    git_ref: Some("refs/heads/main".into()),
                    head_sha: Some(format!("{:040x}", step + 1)),
                    hook_id: None,
                    hook_installation_target_id: None,
                    content_type: "application/json".into(),
                    body,
                    replay_of: None,
                };
                store.ingest(delivery, plan).await.expect("ingest");
                let size = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) as usize;
                largest.fetch_max(size, Ordering::SeqCst);
            }
        })
        .buffer_unordered(IN_FLIGHT)
        .count()
        .await;
    assert_eq!(written, deliveries);
    let largest = largest.load(Ordering::SeqCst);
    eprintln!(
        "durability: WAL at most {} KiB over {deliveries} pushes",
        largest / 1024
    );
    assert!(
        largest < 48 << 20,
        "the WAL grew to {} MiB: it never started over",
        largest >> 20
    );
}
