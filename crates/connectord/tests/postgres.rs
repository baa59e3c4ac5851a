//! What only PostgreSQL has to prove: several processes on one database. Each
//! `SqlStore` here has its own pool and LISTEN connection, as a separate
//! connectord process would. (The shared behaviour runs on both backends in
//! the conformance suite; the real-binary scale-out test is tests/scale_out.rs.)

mod common;

use common::backend;
use connectord::domain::{BranchName, PathPrefix, RepoFullName};
use connectord::store::models::{now_ms, ClaimedJob, NewTarget};
use connectord::store::sql::SqlStore;
use connectord::store::{Store, StoreOptions};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// A fresh schema, or `None` (skipped, with the notice) without PostgreSQL.
async fn fresh() -> Option<String> {
    backend::postgres_url()?;
    Some(backend::fresh_schema().await)
}

async fn open(url: &str, cap: i64) -> Arc<SqlStore> {
    let options = StoreOptions {
        max_jobs_per_installation: cap,
        max_connections: 4,
        ..StoreOptions::default()
    };
    Arc::new(SqlStore::connect(url, options).await.expect("connect"))
}

fn target(name: &str, id: i64) -> NewTarget {
    NewTarget {
        repository_full_name: RepoFullName::parse(name).unwrap(),
        repository_id: Some(id),
        branch: BranchName::parse("main").unwrap(),
        path_prefix: PathPrefix::parse("").unwrap(),
        max_file_bytes: 1 << 20,
    }
}

/// `installations` × `per` targets, each with its initial sync queued.
async fn seed(store: &SqlStore, installations: i64, per: i64) {
    for i in 1..=installations {
        let (connector, _) = store.create_connector(i).await.expect("connector");
        for t in 0..per {
            store
                .create_target(
                    &connector.id,
                    target(&format!("org{i}/repo{t}"), i * 1000 + t),
                )
                .await
                .expect("target");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_starts_migrate_once_under_the_advisory_lock() {
    let Some(url) = fresh().await else { return };
    // Interleaved on one task: each start awaits the server, so all four
    // reach the migrator while the others are in it.
    let starts = (0..4).map(|_| SqlStore::connect(&url, StoreOptions::default()));
    for start in futures::future::join_all(starts).await {
        start.expect("every concurrent start succeeds");
    }
    let store = open(&url, 4).await;
    store.ping().await.expect("usable");
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations ORDER BY version")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    // Every file in migrations/postgres, once each.
    let mut shipped: Vec<i64> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres"))
            .expect("the migrations directory")
            .map(|e| {
                let name = e.expect("entry").file_name().into_string().expect("UTF-8");
                name.split('_')
                    .next()
                    .and_then(|v| v.parse().ok())
                    .expect("NNNN_name.sql")
            })
            .collect();
    shipped.sort();
    assert!(shipped.len() >= 3, "{shipped:?}");
    assert_eq!(applied, shipped, "each migration applied exactly once");
}

/// Eight claimers on two "processes" race for 3 installations × 6 targets
/// with a cap of 4: exactly 4 claims per installation, never a target twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_claims_across_processes_keep_the_cap_exact_and_targets_single() {
    let Some(url) = fresh().await else { return };
    let (a, b) = (open(&url, 4).await, open(&url, 4).await);
    seed(&a, 3, 6).await;
    let at = now_ms() + 60_000;
    let claimers = (0..8).map(|i| {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move {
            let mut mine: Vec<ClaimedJob> = vec![];
            // Keep trying until a claim finds nothing twice in a row.
            let mut empty = 0;
            while empty < 2 {
                match store
                    .claim_job(&format!("w{i}"), at, 60_000)
                    .await
                    .expect("claim")
                {
                    Some(job) => {
                        mine.push(job);
                        empty = 0;
                    }
                    None => {
                        empty += 1;
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            mine
        })
    });
    let claimed: Vec<ClaimedJob> = futures::future::join_all(claimers)
        .await
        .into_iter()
        .flat_map(|r| r.expect("join"))
        .collect();
    let mut per_installation: HashMap<i64, usize> = HashMap::new();
    let mut targets = HashSet::new();
    for job in &claimed {
        *per_installation.entry(job.job.installation_id).or_default() += 1;
        assert!(
            targets.insert(job.job.connector_target_id.clone()),
            "target {} claimed twice",
            job.job.connector_target_id
        );
    }
    assert_eq!(
        per_installation,
        HashMap::from([(1, 4), (2, 4), (3, 4)]),
        "the cap holds exactly across processes"
    );
}

/// A job enqueued through one process wakes a worker waiting in another,
/// with no polling involved: only LISTEN/NOTIFY can deliver this.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_in_one_process_wakes_the_workers_of_another() {
    let Some(url) = fresh().await else { return };
    let (ingress, worker) = (open(&url, 4).await, open(&url, 4).await);
    let (connector, _) = ingress.create_connector(7).await.expect("connector");
    let woken = worker.jobs_ready();
    let waiting = woken.notified();
    tokio::pin!(waiting);
    waiting.as_mut().enable();
    ingress
        .create_target(&connector.id, target("org/notify", 77))
        .await
        .expect("target");
    tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .expect("the other process's workers were woken");
    let job = worker
        .claim_job("w", now_ms(), 60_000)
        .await
        .expect("claim")
        .expect("the job is there to claim");
    assert_eq!(job.job.installation_id, 7);
}

/// The binary's `migrate` command works on PostgreSQL, twice, and a bad
/// password never shows in its error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_migrate_command_applies_and_reapplies_and_hides_passwords() {
    let Some(url) = fresh().await else { return };
    let bin = env!("CARGO_BIN_EXE_connectord");
    for _ in 0..2 {
        let out = tokio::process::Command::new(bin)
            .args(["migrate", "--database-url", &url])
            .output()
            .await
            .expect("run connectord migrate");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{stderr}");
        assert!(stderr.contains("migrations applied"), "{stderr}");
    }
    let out = tokio::process::Command::new(bin)
        .args([
            "migrate",
            "--database-url",
            "postgres://someone:hunter2-secret@127.0.0.1:1/nowhere",
        ])
        .output()
        .await
        .expect("run connectord migrate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot open the store"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
}

/// A delivery PostgreSQL aborts as a deadlock victim is run again, not
/// answered 503 (GitHub would not redeliver it by itself). Another session
/// holds the second of the push's two targets and then asks for the first,
/// which the ingest holds: a real deadlock. That session waits 30 s before
/// checking for deadlocks, so the ingest's (1 s, the default) is the victim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ingest_chosen_as_deadlock_victim_is_retried_and_acknowledged() {
    use common::*;
    use sqlx::Connection;
    if !backend::select(backend::Backend::Postgres) {
        return;
    }
    let app = spawn_app().await;
    let connector = app.create_connector(9).await;
    let mut targets = vec![];
    for prefix in ["a/", "b/"] {
        let (status, body) = app
            .post(
                &format!("/v1/admin/connectors/{connector}/targets"),
                serde_json::json!({"repositoryFullName": "org/two", "repositoryId": 90,
                    "branch": "main", "pathPrefix": prefix}),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
        targets.push(body["id"].as_str().unwrap().to_owned());
    }
    targets.sort(); // ingest locks in id order
    let (first, second) = (targets[0].clone(), targets[1].clone());

    let mut other = sqlx::PgConnection::connect(&app.db_url).await.unwrap();
    let blocker = async {
        sqlx::query("SET deadlock_timeout = '30s'")
            .execute(&mut other)
            .await
            .unwrap();
        sqlx::query("BEGIN").execute(&mut other).await.unwrap();
        sqlx::query("SELECT id FROM connector_target WHERE id = $1 FOR UPDATE")
            .bind(&second)
            .fetch_one(&mut other)
            .await
            .unwrap();
        // Let the ingest lock the first target and queue behind the second.
        tokio::time::sleep(Duration::from_millis(300)).await;
        sqlx::query("SELECT id FROM connector_target WHERE id = $1 FOR UPDATE")
            .bind(&first)
            .fetch_one(&mut other)
            .await
            .expect("granted once the ingest was aborted");
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    };
    let payload = push_payload(9, 90, "org/two", "main", &sha('1'), &sha('2'));
    let delivery = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        app.deliver_json("push", "deadlock-1", &payload).await
    };
    let ((), (status, body)) = tokio::join!(blocker, delivery);
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        body["syncEventIds"].as_array().map(Vec::len),
        Some(2),
        "{body}"
    );
    let (status, d) = app.get("/v1/admin/deliveries/deadlock-1").await;
    assert_eq!(status, reqwest::StatusCode::OK, "{d}");
    assert_eq!(d["outcome"], "accepted");
    app.stop().await;
}

/// Pushes of two repositories that carry one `full_name` (a repository
/// deleted and re-created under its name, say) each rename their target to
/// it. On PostgreSQL both transactions can see no collision; the later one
/// then meets `connector_target_identity`. It must keep its target's old name
/// and be acknowledged, as a collision seen in time is, never answer 5xx
/// (GitHub would not redeliver it). Another session plays the first rename
/// and holds it uncommitted, so the interleaving is certain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rename_racing_another_onto_the_same_name_keeps_the_old_name_and_is_acknowledged() {
    use common::*;
    use sqlx::Connection;
    if !backend::select(backend::Backend::Postgres) {
        return;
    }
    let app = spawn_app().await;
    let connector = app.create_connector(9).await;
    let mut ids = vec![];
    for (name, id) in [("org/one", 1), ("org/two", 2)] {
        let (status, body) = app
            .post(
                &format!("/v1/admin/connectors/{connector}/targets"),
                serde_json::json!({"repositoryFullName": name, "repositoryId": id, "branch": "main"}),
            )
            .await;
        assert_eq!(status, reqwest::StatusCode::CREATED, "{body}");
        ids.push(body["id"].as_str().unwrap().to_owned());
    }
    let mut other = sqlx::PgConnection::connect(&app.db_url).await.unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("UPDATE connector_target SET repository_full_name = 'org/same' WHERE id = $1")
        .bind(&ids[0])
        .execute(&mut other)
        .await
        .unwrap();
    let payload = push_payload(9, 2, "org/same", "main", &sha('1'), &sha('2'));
    let delivery = app.deliver_json("push", "rename-race-1", &payload);
    let committer = async {
        // Let the delivery reach the rename and wait on the other's index entry.
        tokio::time::sleep(Duration::from_millis(500)).await;
        sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    };
    let ((status, body), ()) = tokio::join!(delivery, committer);
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{body}");
    assert_eq!(app.target(&ids[0]).await["repositoryFullName"], "org/same");
    assert_eq!(app.target(&ids[1]).await["repositoryFullName"], "org/two");
    let event = body["syncEventIds"][0].as_str().unwrap().to_owned();
    assert_eq!(app.sync_event(&event).await["headSha"], sha('2'));
}
