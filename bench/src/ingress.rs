//! Ingress throughput through the real HTTP path, in one run on the same
//! machine: SQLite with group commit (the default) against one COMMIT per
//! delivery, and, when `CONNECTORD_BENCH_POSTGRES_URL` names a server, the
//! same load on PostgreSQL (in a fresh schema, dropped at the end).
//!
//! `cargo run --release -p connectord-bench --bin ingress-bench -- [deliveries] [concurrency]`

use connectord_bench::common;

use common::{ms, settings, Cpu, CpuUse, SECRET};
use connectord::ingress::signature::sign;
use connectord::startup::Application;
use connectord::store::sql::{sqlite, SqlStore};
use connectord::store::Store;
use connectord::store::StoreOptions;
use futures::StreamExt;
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const TARGETS: i64 = 50;

struct Run {
    label: String,
    per_sec: f64,
    p50: Duration,
    p99: Duration,
    accepted: usize,
    errors: usize,
    cpu: CpuUse,
}

enum Backend {
    /// SQLite with this group-commit batch size.
    Sqlite { max_batch: usize },
    /// PostgreSQL at this URL (a fresh schema), with this pool size.
    Postgres { url: String, pool: u32 },
}

async fn run(
    label: String,
    backend: Backend,
    deliveries: usize,
    concurrency: usize,
) -> anyhow::Result<Run> {
    let dir = tempfile::tempdir()?;
    let (store, url): (Arc<dyn Store>, String) = match backend {
        Backend::Sqlite { max_batch } => {
            let url = format!("sqlite://{}", dir.path().join("bench.db").display());
            let store = sqlite::connect(&url, StoreOptions::default(), max_batch).await?;
            (Arc::new(store), url)
        }
        Backend::Postgres { url, pool } => {
            let options = StoreOptions {
                max_connections: pool,
                ..StoreOptions::default()
            };
            (Arc::new(SqlStore::connect(&url, options).await?), url)
        }
    };
    let settings = settings(&url, connectord::config::Role::All);
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
    let cpu = Cpu::start();
    let latencies: Vec<(Duration, Option<u16>)> = futures::stream::iter(bodies)
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
                (t0.elapsed(), res.ok().map(|r| r.status().as_u16()))
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let elapsed = started.elapsed();
    let cpu = cpu.used();
    token.cancel();
    server.await??;
    let sorted: Vec<Duration> = {
        let mut v: Vec<Duration> = latencies.iter().map(|(d, _)| *d).collect();
        v.sort();
        v
    };
    Ok(Run {
        label,
        per_sec: deliveries as f64 / elapsed.as_secs_f64(),
        p50: common::pct(&sorted, 0.50),
        p99: common::pct(&sorted, 0.99),
        accepted: latencies.iter().filter(|(_, s)| *s == Some(202)).count(),
        // Anything but 202 (accepted) and 200 (ignored as stale): 503s, transport errors.
        errors: latencies
            .iter()
            .filter(|(_, s)| !matches!(s, Some(200 | 202)))
            .count(),
        cpu,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let deliveries: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2000);
    let concurrency: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let mut runs = vec![];
    let load = common::background_load().await;
    runs.push(
        run(
            "SQLite, one COMMIT per delivery".into(),
            Backend::Sqlite { max_batch: 1 },
            deliveries,
            concurrency,
        )
        .await?,
    );
    runs.push(
        run(
            "SQLite, group commit (default)".into(),
            Backend::Sqlite {
                max_batch: connectord::store::sql::DEFAULT_WRITE_BATCH,
            },
            deliveries,
            concurrency,
        )
        .await?,
    );
    let postgres = common::postgres_url();
    let mut server = None;
    if let Some(base) = &postgres {
        server = Some(common::postgres_settings(base).await?);
        let default_pool = StoreOptions::default().max_connections;
        for pool in [default_pool, concurrency as u32] {
            let schema = common::Schema::create(base).await?;
            let label = if pool == default_pool {
                format!("PostgreSQL, pool {pool} (default)")
            } else {
                format!("PostgreSQL, pool {pool}")
            };
            let url = schema.url.clone();
            let result = run(
                label,
                Backend::Postgres { url, pool },
                deliveries,
                concurrency,
            )
            .await;
            schema.drop_now().await?;
            runs.push(result?);
        }
    }

    println!(
        "{deliveries} signed pushes over {TARGETS} targets, {concurrency} in flight; SQLite synchronous=FULL; {load}"
    );
    if let Some(server) = &server {
        println!("PostgreSQL: {server}");
    }
    println!("| store | deliveries/s | p50 | p99 | 202s | errors | CPU cores: machine / PostgreSQL / bench |");
    println!("|---|---|---|---|---|---|---|");
    for r in &runs {
        println!(
            "| {} | {:.0} | {:.1} ms | {:.1} ms | {} | {} | {} |",
            r.label,
            r.per_sec,
            ms(r.p50),
            ms(r.p99),
            r.accepted,
            r.errors,
            r.cpu
        );
    }
    println!(
        "SQLite group commit / one COMMIT per delivery: {:.2}x",
        runs[1].per_sec / runs[0].per_sec
    );
    if postgres.is_some() {
        println!(
            "PostgreSQL (default pool) / SQLite group commit: {:.2}x; with pool {concurrency}: {:.2}x",
            runs[2].per_sec / runs[1].per_sec,
            runs[3].per_sec / runs[1].per_sec
        );
    } else {
        println!(
            "PostgreSQL skipped: set {} (e.g. postgres://postgres@127.0.0.1:5432/test)",
            common::POSTGRES_URL_VAR
        );
    }
    Ok(())
}
