//! What SQLite's writer alone sustains: signed-push ingests straight into
//! the store (no HTTP), `IN_FLIGHT` at a time, each an 8 KB body for one of
//! 20 targets (a chain per target, so each push supersedes the last). It
//! prints deliveries/s, and what the writer thread spent per delivery: CPU
//! (utime+stime of the `sqlite-writer` thread) and bytes written (its
//! `wchar`: WAL frames), read from /proc. Those two are the figures to
//! compare between versions; throughput drifts with whatever else the
//! machine runs.
//!
//! `cargo run --release -p connectord-bench --bin store-ingest -- [deliveries] [in_flight] [body_bytes]`

use connectord::domain::{BranchName, PathPrefix, RepoFullName, Sha};
use connectord::ingress::dispatch::{Plan, PushPlan};
use connectord::store::models::{NewDelivery, NewTarget};
use connectord::store::sql::sqlite;
use connectord::store::{Store, StoreOptions};
use futures::StreamExt;
use std::sync::Arc;
use std::time::Instant;

const TARGETS: usize = 20;

/// (utime+stime in seconds, bytes written) of this process's thread `name`.
fn thread_use(name: &str) -> (f64, u64) {
    let tick = 100.0; // USER_HZ on Linux
    let mut out = (0.0, 0);
    for task in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let dir = task.path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != name {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the parenthesised command: utime is the 12th, stime the 13th.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: f64 = fields
            .get(11)
            .and_then(|u| u.parse::<f64>().ok())
            .unwrap_or(0.0)
            + fields
                .get(12)
                .and_then(|s| s.parse::<f64>().ok())
                .unwrap_or(0.0);
        let io = std::fs::read_to_string(dir.join("io")).unwrap_or_default();
        let wchar = io
            .lines()
            .find_map(|l| l.strip_prefix("wchar: "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        out = (out.0 + ticks / tick, out.1 + wchar);
    }
    out
}

fn body(bytes: usize, i: usize) -> bytes::Bytes {
    // Something like a push payload: JSON text, mostly unique per delivery.
    let mut s = format!("{{\"ref\":\"refs/heads/main\",\"n\":{i},\"commits\":[");
    let mut k = 0;
    while s.len() < bytes {
        s.push_str(&format!(
            "{{\"id\":\"{:040x}\",\"message\":\"change {k} of push {i}\",\"author\":{{\"name\":\"Octocat\",\"email\":\"octo@example.com\"}}}},",
            i * 1000 + k
        ));
        k += 1;
    }
    s.push_str("{}]}");
    s.into_bytes().into()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let deliveries: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(20_000);
    let in_flight: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(64);
    let body_bytes: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(8_000);
    let dir = tempfile::tempdir()?;
    let url = format!("sqlite://{}", dir.path().join("bench.db").display());
    let store = Arc::new(
        sqlite::connect(
            &url,
            StoreOptions::default(),
            connectord::store::sql::DEFAULT_WRITE_BATCH,
        )
        .await?,
    );
    let (connector, _) = store.create_connector(7).await?;
    for t in 0..TARGETS {
        store
            .create_target(
                &connector.id,
                NewTarget {
                    repository_full_name: RepoFullName::parse(&format!("org/repo{t}"))?,
                    repository_id: Some(1000 + t as i64),
                    branch: BranchName::parse("main")?,
                    path_prefix: PathPrefix::parse("")?,
                    max_file_bytes: 1 << 20,
                },
            )
            .await?;
    }
    let work: Vec<(NewDelivery, Plan)> = (0..deliveries)
        .map(|i| {
            let t = i % TARGETS;
            let step = i / TARGETS;
            let sha = |n: usize| Sha::parse(&format!("{n:040x}")).expect("sha");
            let plan = Plan::Push(PushPlan {
                installation_id: Some(7),
                repository_id: 1000 + t as i64,
                repository_full_name: format!("org/repo{t}"),
                git_ref: "refs/heads/main".into(),
                branch: "main".into(),
                before: sha(step),
                after: sha(step + 1),
                deleted: false,
            });
            let delivery = NewDelivery {
                id: uuid::Uuid::new_v4().to_string(),
                event: "push".into(),
                action: None,
                installation_id: Some(7),
                repository_id: Some(1000 + t as i64),
                repository_full_name: Some(format!("org/repo{t}")),
                git_ref: Some("refs/heads/main".into()),
                head_sha: Some(format!("{:040x}", step + 1)),
                hook_id: None,
                hook_installation_target_id: None,
                content_type: "application/json".into(),
                body: body(body_bytes, i),
                replay_of: None,
            };
            (delivery, plan)
        })
        .collect();
    let (cpu0, written0) = thread_use("sqlite-writer");
    let started = Instant::now();
    let accepted = futures::stream::iter(work)
        .map(|(d, p)| {
            let store = store.clone();
            async move { store.ingest(d, p).await }
        })
        .buffer_unordered(in_flight)
        .filter(|r| futures::future::ready(r.is_ok()))
        .count()
        .await;
    let elapsed = started.elapsed();
    let (cpu1, written1) = thread_use("sqlite-writer");
    let n = deliveries as f64;
    println!(
        "{deliveries} ingests of {body_bytes}-byte pushes over {TARGETS} targets, {in_flight} in flight: \
         {:.0}/s, {accepted} ok; writer thread: {:.1} us CPU and {:.1} KiB written per delivery",
        n / elapsed.as_secs_f64(),
        (cpu1 - cpu0) * 1e6 / n,
        (written1 - written0) as f64 / 1024.0 / n,
    );
    Ok(())
}
