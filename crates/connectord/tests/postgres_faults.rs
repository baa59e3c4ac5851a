//! PostgreSQL faults through the real binary:
//!
//! - `kill -9` of one of two `ingress` processes sharing one database while
//!   both receive signed pushes: every delivery either process answered 202
//!   must be recorded as accepted with its sync event and its queued job,
//!   none twice;
//! - PostgreSQL unreachable and back, through a TCP proxy in the test (the
//!   shared server cannot be stopped): 503 while it is cut, never 202; 202
//!   again without a restart; and the LISTEN connection back, so a job
//!   enqueued afterwards is picked up at once, not at the next poll.
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

/// A TCP proxy in front of PostgreSQL that the test can cut (every open
/// connection dropped, new ones accepted and closed at once) and restore.
struct Proxy {
    port: u16,
    cut: Arc<std::sync::atomic::AtomicBool>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: String) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let cut = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (cut2, conns2) = (cut.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if cut2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        });
        Proxy {
            port,
            cut,
            conns,
            accept,
        }
    }

    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// `url` with its host and port replaced by 127.0.0.1:`port`.
fn through(url: &str, port: u16) -> (String, String) {
    let rest = url.split_once("://").expect("scheme").1;
    let (auth_host, path) = rest.split_once('/').expect("a database in the URL");
    let (auth, host) = match auth_host.rsplit_once('@') {
        Some((a, h)) => (format!("{a}@"), h),
        None => (String::new(), auth_host),
    };
    let upstream = if host.contains(':') {
        host.to_owned()
    } else {
        format!("{host}:5432")
    };
    (
        format!("postgres://{auth}127.0.0.1:{port}/{path}"),
        upstream,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_cut_off_under_load_is_503_never_202_and_ingress_and_listen_resume_without_restart(
) {
    if common::backend::postgres_url().is_none() {
        return; // the notice was printed by postgres_url()
    }
    use common::process::str_arg;
    let direct = common::backend::fresh_schema().await;
    let (fake, repo) = common::github::fake_with_repo("org/cut", 11, 3000).await;
    repo.write("a.md", b"a1\n");
    let first = repo.commit("first");
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let key_path = work.join("app-key.pem");
    std::fs::write(&key_path, fake_github::TEST_APP_PRIVATE_KEY_PEM).unwrap();
    let (via_proxy, upstream) = through(&direct, 0);
    let proxy = Proxy::start(upstream).await;
    let (via_proxy, _) = through(&via_proxy, proxy.port);
    let app_id = common::github::APP_ID.to_string();
    let api = fake.base_url();
    let env = [
        ("GITHUB_CONNECTOR_APP_WEBHOOK_SECRET", SECRET),
        ("CONNECTORD_ADMIN_TOKEN", TOKEN),
        ("GITHUB_CONNECTOR_APP_ID", app_id.as_str()),
        ("GITHUB_CONNECTOR_APP_PRIVATE_KEY_PATH", str_arg(&key_path)),
        ("GITHUB_API_URL", api.as_str()),
    ];
    let mut server =
        Server::start(work, &work.join("d"), &["--database-url", &via_proxy], &env).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let base = server.base();
    let (status, connector) = admin(
        &client,
        &base,
        "/v1/admin/connectors",
        Some(json!({"type": "github", "installationId": 11})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{connector}");
    let connector = connector["id"].as_str().unwrap().to_owned();
    let (status, target) = admin(
        &client,
        &base,
        &format!("/v1/admin/connectors/{connector}/targets"),
        Some(json!({"repositoryFullName": "org/cut", "repositoryId": 3000, "branch": "main"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{target}");
    let initial = target["initialSyncEvent"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let wait_completed = |event: String| {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let started = Instant::now();
            loop {
                let (_, e) = admin(
                    &client,
                    &base,
                    &format!("/v1/admin/sync-events/{event}"),
                    None,
                )
                .await;
                if e["status"] == "completed" {
                    return started.elapsed();
                }
                assert!(
                    started.elapsed() < Duration::from_secs(10),
                    "never completed: {e}"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    wait_completed(initial).await;

    let webhook_url = server.webhook_url();
    let push = |id: String, before: String, after: String| {
        let (client, url) = (client.clone(), webhook_url.clone());
        async move {
            let body = common::push_payload(11, 3000, "org/cut", "main", &before, &after);
            let body = serde_json::to_vec(&body).unwrap();
            let res = client
                .post(url)
                .header("content-type", "application/json")
                .header("x-github-event", "push")
                .header("x-github-delivery", &id)
                .header("x-hub-signature-256", sign(SECRET.as_bytes(), &body))
                .body(body)
                .send()
                .await
                .expect("an answer");
            let status = res.status();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    // Cut: every delivery sent while PostgreSQL is unreachable is a 503.
    repo.write("a.md", b"a2\n");
    let second = repo.commit("second");
    proxy.cut();
    let during: Vec<_> = (0..16)
        .map(|i| tokio::spawn(push(format!("cut-{i}"), first.clone(), second.clone())))
        .collect();
    for (i, h) in during.into_iter().enumerate() {
        let (status, body) = h.await.unwrap();
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "cut-{i}: {body}");
    }
    server.assert_running();

    // Restore: deliveries are accepted again, and a job enqueued now is
    // picked up at once (a NOTIFY on the LISTEN connection, which must have
    // come back: the workers' fallback poll is 1 s).
    proxy.restore();
    let restored = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    let (event, accepted_after) = loop {
        let (status, body) = push(
            format!("back-{}", deadline.elapsed().as_nanos()),
            first.clone(),
            second.clone(),
        )
        .await;
        if status == StatusCode::ACCEPTED {
            break (
                body["syncEventIds"][0].as_str().expect("event").to_owned(),
                restored.elapsed(),
            );
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(
            Instant::now() < deadline,
            "still 503 10 s after the restore"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    wait_completed(event).await;
    let mut pickups = Vec::new();
    let mut before = second.clone();
    for n in 0..5 {
        repo.write("a.md", format!("a{}\n", n + 3).as_bytes());
        let after = repo.commit("after the restore");
        let (status, body) = push(format!("after-{n}"), before.clone(), after.clone()).await;
        assert_eq!(status, StatusCode::ACCEPTED, "{body}");
        let event = body["syncEventIds"][0].as_str().expect("event").to_owned();
        pickups.push(wait_completed(event).await);
        before = after;
    }
    assert!(
        pickups.iter().all(|d| *d < Duration::from_millis(500)),
        "jobs after the restore waited for the poll, not a wake-up: {pickups:?}"
    );
    for i in 0..16 {
        let (status, d) = admin(
            &client,
            &base,
            &format!("/v1/admin/deliveries/cut-{i}"),
            None,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "a 503'd cut-{i} is not recorded: {d}"
        );
    }
    server.assert_running();
    let log = server.log_text();
    assert!(!log.to_lowercase().contains("panicked"), "{log}");
    assert!(
        log.contains("lost the LISTEN connection"),
        "the cut reached the LISTEN connection too:\n{log}"
    );
    eprintln!(
        "PostgreSQL cut: 16 deliveries answered 503; 202 again {:?} after the restore; \
         jobs completed {pickups:?} after their 202",
        accepted_after
    );
}
