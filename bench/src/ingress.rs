//! Ingress throughput on SQLite: group commit (the default) against one COMMIT
//! per delivery, in one run on the same machine, through the real HTTP path.
//!
//! `cargo run --release -p connectord-bench --bin ingress-bench -- [deliveries] [concurrency]`

use connectord::config::Settings;
use connectord::ingress::signature::sign;
use connectord::startup::Application;
use connectord::store::sql::sqlite;
use connectord::store::Store;
use connectord::store::StoreOptions;
use connectord::sync::worker::WorkerSettings;
use futures::StreamExt;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const SECRET: &str = "bench-secret";
const TARGETS: i64 = 50;

struct Run {
    label: &'static str,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    accepted: usize,
}

async fn run(
    label: &'static str,
    max_batch: usize,
    deliveries: usize,
    concurrency: usize,
) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store: Arc<dyn Store> =
        Arc::new(sqlite::connect(&url, StoreOptions::default(), max_batch).await?);
    let settings = Settings {
        role: connectord::config::Role::All,
        listen: "127.0.0.1:0".into(),
        admin_listen: None,
        database_url: url,
        database_max_connections: 10,
        webhook_secret: SECRET.into(),
        webhook_secret_previous: None,
        admin_token: "bench".into(),
        worker: WorkerSettings::default(),
        history_retention: Duration::from_secs(30 * 86_400),
        delivery_body_retention: Duration::from_secs(86_400),
        github: None,
    };
    let app = Application::build_with_store(settings, store.clone(), None).await?;
    let base = format!("http://127.0.0.1:{}", app.port());
    let token = app.shutdown_token();
    let server = tokio::spawn(app.run_until_stopped());

    let client = reqwest::Client::new();
    let (connector, _) = store.create_connector(1).await?;
    for t in 0..TARGETS {
        let target = connectord::store::models::NewTarget {
            repository_full_name: connectord::domain::RepoFullName::parse(&format!("org/repo{t}"))?,
            repository_id: Some(1000 + t),
            branch: connectord::domain::BranchName::parse("main")?,
            path_prefix: connectord::domain::PathPrefix::parse("")?,
            max_file_bytes: 1024 * 1024,
        };
        store.create_target(&connector.id, target).await?;
    }
    // Each target's pushes form a chain, so none is stale and each supersedes the last.
    let bodies: Vec<(String, Vec<u8>)> = (0..deliveries)
        .map(|i| {
            let t = i as i64 % TARGETS;
            let step = i as i64 / TARGETS;
            let payload = json!({
                "ref": "refs/heads/main",
                "before": format!("{:040x}", step),
                "after": format!("{:040x}", step + 1),
                "repository": {"id": 1000 + t, "full_name": format!("org/repo{t}")},
                "installation": {"id": 1},
                "commits": [], "head_commit": null, "pusher": {"name": "bench"},
            });
            (
                format!("bench-{i}"),
                serde_json::to_vec(&payload).expect("json"),
            )
        })
        .collect();

    let started = Instant::now();
    let mut latencies: Vec<(Duration, bool)> = futures::stream::iter(bodies)
        .map(|(id, body)| {
            let client = client.clone();
            let url = format!("{base}/v1/webhooks/connectors/github");
            async move {
                let t0 = Instant::now();
                let res = client
                    .post(url)
                    .header("content-type", "application/json")
                    .header("x-github-event", "push")
                    .header("x-github-delivery", id)
                    .header("x-hub-signature-256", sign(SECRET.as_bytes(), &body))
                    .body(body)
                    .send()
                    .await;
                let ok = matches!(&res, Ok(r) if r.status().as_u16() == 202);
                (t0.elapsed(), ok)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    token.cancel();
    server.await??;
    latencies.sort();
    let pct =
        |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].0;
    Ok(Run {
        label,
        per_sec: deliveries as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p99: pct(0.99),
        accepted: latencies.iter().filter(|(_, ok)| *ok).count(),
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let deliveries: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2000);
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let single = run("one COMMIT per delivery", 1, deliveries, concurrency).await?;
    let group = run(
        "group commit (default)",
        connectord::store::sql::DEFAULT_WRITE_BATCH,
        deliveries,
        concurrency,
    )
    .await?;
    println!("{deliveries} signed pushes over {TARGETS} targets, {concurrency} in flight, SQLite synchronous=FULL");
    println!("| store writer | deliveries/s | p50 | p99 | 202s |");
    println!("|---|---|---|---|---|");
    for r in [&single, &group] {
        println!(
            "| {} | {:.0} | {:.1} ms | {:.1} ms | {} |",
            r.label,
            r.per_sec,
            ms(r.p50),
            ms(r.p99),
            r.accepted
        );
    }
    println!(
        "group commit / one COMMIT per delivery: {:.2}x",
        group.per_sec / single.per_sec
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
