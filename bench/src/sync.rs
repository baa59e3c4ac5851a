//! GitHub API calls and wall time of the sync worker against the fake GitHub
//! (real git underneath), for a large repository:
//! (i) first sync, (ii) a push changing 3 files, (iii) a no-op resync; and the
//! first sync with per-blob fetching forced, as the peer for the tarball path.
//!
//! `cargo run --release -p connectord-bench --bin sync-bench -- [files] [latency_ms]`
//! `latency_ms` is added to every fake REST answer, to stand in for the network.

use connectord_bench::common;

use connectord::domain::{BranchName, PathPrefix, RepoFullName};
use connectord::github::{FetchMode, FetchSettings};
use connectord::startup::Application;
use connectord::store::models::NewTarget;
use connectord::store::Store;
use fake_github::{Endpoint, FakeGitHub, GitRepo, TEST_APP_PUBLIC_KEY_PEM};
use std::sync::Arc;
use std::time::{Duration, Instant};

const APP_ID: i64 = 4242;
const INSTALLATION: i64 = 7;
const REPO_ID: i64 = 1001;

struct Measured {
    label: String,
    calls: usize,
    detail: String,
    wall: Duration,
    counts: String,
}

fn detail(gh: &FakeGitHub) -> String {
    format!(
        "ref {} · tree {} · blob {} · tarball {}",
        gh.calls(Endpoint::Ref),
        gh.calls(Endpoint::Tree),
        gh.calls(Endpoint::Blob),
        gh.calls(Endpoint::Tarball)
    )
}

async fn wait_final(store: &Arc<dyn Store>, event: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let e = store.get_sync_event(event).await?;
        if !matches!(e.status.as_str(), "queued" | "running") {
            return Ok(format!(
                "{} · created {} updated {} deleted {} skipped {}",
                e.status, e.counts.created, e.counts.updated, e.counts.deleted, e.counts.skipped
            ));
        }
        anyhow::ensure!(Instant::now() < deadline, "sync {event} did not finish");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn app(
    gh: &FakeGitHub,
    dir: &std::path::Path,
    mode: FetchMode,
) -> anyhow::Result<(Arc<dyn Store>, tokio_util::sync::CancellationToken)> {
    let settings = common::sync_settings(
        gh.base_url(),
        &dir.join("bench.db"),
        FetchSettings {
            mode,
            ..FetchSettings::default()
        },
    );
    let app = Application::build(settings, None).await?;
    let store = app.store();
    let token = app.shutdown_token();
    tokio::spawn(app.run_until_stopped());
    Ok((store, token))
}

async fn add_target(store: &Arc<dyn Store>) -> anyhow::Result<(String, String)> {
    let (connector, _) = store.create_connector(INSTALLATION).await?;
    let (target, event) = store
        .create_target(
            &connector.id,
            NewTarget {
                repository_full_name: RepoFullName::parse("octo/big")?,
                repository_id: Some(REPO_ID),
                branch: BranchName::parse("main")?,
                path_prefix: PathPrefix::parse("")?,
                max_file_bytes: 1024 * 1024,
            },
        )
        .await?;
    Ok((target.id, event.id))
}

fn populate(repo: &GitRepo, files: usize) -> String {
    for i in 0..files {
        let body = format!(
            "# Page {i}\n\n{}\n",
            "Lorem ipsum dolor sit amet. ".repeat(8)
        );
        repo.write(
            &format!("docs/section-{:03}/page-{i:05}.md", i / 100),
            body.as_bytes(),
        );
    }
    repo.commit("a large repository")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    connectord::telemetry::init_logging(false);
    let files: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let latency = Duration::from_millis(args.next().map(|a| a.parse()).transpose()?.unwrap_or(0));
    let gh = FakeGitHub::start(APP_ID, TEST_APP_PUBLIC_KEY_PEM).await;
    gh.add_installation(INSTALLATION);
    let repo = gh.add_repo("octo/big", REPO_ID, INSTALLATION);
    populate(&repo, files);
    if !latency.is_zero() {
        gh.set_delay("/repos/", latency);
    }
    let mut results = vec![];

    // (i)-(iii) with the fetch plan's rule.
    let dir = tempfile::tempdir()?;
    let (store, token) = app(&gh, dir.path(), FetchMode::Auto).await?;
    gh.reset_calls();
    let t0 = Instant::now();
    let (target, initial) = add_target(&store).await?;
    let counts = wait_final(&store, &initial).await?;
    results.push(Measured {
        label: "(i) first sync".into(),
        calls: gh.total_repo_calls(),
        detail: detail(&gh),
        wall: t0.elapsed(),
        counts,
    });

    for i in 0..3 {
        repo.write(
            &format!("docs/section-000/page-{i:05}.md"),
            format!("changed {i}\n").as_bytes(),
        );
    }
    repo.commit("three files");
    gh.reset_calls();
    let t0 = Instant::now();
    let event = store.request_sync(&target).await?;
    let counts = wait_final(&store, &event.id).await?;
    results.push(Measured {
        label: "(ii) 3 files changed".into(),
        calls: gh.total_repo_calls(),
        detail: detail(&gh),
        wall: t0.elapsed(),
        counts,
    });

    gh.reset_calls();
    let t0 = Instant::now();
    let event = store.request_sync(&target).await?;
    let counts = wait_final(&store, &event.id).await?;
    results.push(Measured {
        label: "(iii) no-op resync".into(),
        calls: gh.total_repo_calls(),
        detail: detail(&gh),
        wall: t0.elapsed(),
        counts,
    });
    token.cancel();

    // The peer: the first sync fetching blob by blob. GitHub's 5,000/h budget
    // would stop it (the worker waits for the reset rather than run dry), so
    // the fake is told to report a budget that never runs out.
    gh.set_rate_limit_remaining(1_000_000);
    let dir = tempfile::tempdir()?;
    let (store, token) = app(&gh, dir.path(), FetchMode::Blobs).await?;
    gh.reset_calls();
    let t0 = Instant::now();
    let (_, initial) = add_target(&store).await?;
    let counts = wait_final(&store, &initial).await?;
    results.push(Measured {
        label: "(i) first sync, per-blob (peer)".into(),
        calls: gh.total_repo_calls(),
        detail: detail(&gh),
        wall: t0.elapsed(),
        counts,
    });
    token.cancel();

    // Threshold sweep: the same k-file change synced blob by blob (app P) and
    // through one tarball (app T), with the latency added to every REST answer.
    let sweep_latency = if latency.is_zero() {
        Duration::from_millis(20)
    } else {
        latency
    };
    gh.set_delay("/repos/", Duration::ZERO);
    let (dir_p, dir_t) = (tempfile::tempdir()?, tempfile::tempdir()?);
    let (store_p, token_p) = app(&gh, dir_p.path(), FetchMode::Blobs).await?;
    let (target_p, initial_p) = add_target(&store_p).await?;
    wait_final(&store_p, &initial_p).await?;
    let (store_t, token_t) = app(&gh, dir_t.path(), FetchMode::Tarball).await?;
    let (target_t, initial_t) = add_target(&store_t).await?;
    wait_final(&store_t, &initial_t).await?;
    gh.set_delay("/repos/", sweep_latency);
    let mut sweep = vec![];
    for (round, k) in [8usize, 16, 32, 64, 128, 256].into_iter().enumerate() {
        for i in 0..k {
            let path = format!("docs/section-{:03}/page-{:05}.md", i / 100, i);
            repo.write(&path, format!("round {round} {i}\n").as_bytes());
        }
        repo.commit("sweep");
        let mut times = vec![];
        for (store, target) in [(&store_p, &target_p), (&store_t, &target_t)] {
            let t0 = Instant::now();
            let event = store.request_sync(target).await?;
            wait_final(store, &event.id).await?;
            times.push(t0.elapsed());
        }
        sweep.push((k, times[0], times[1]));
    }
    token_p.cancel();
    token_t.cancel();

    println!(
        "{files} files, {} ms added per fake REST answer",
        latency.as_millis()
    );
    println!("| scenario | REST calls | of which | wall | result |");
    println!("|---|---|---|---|---|");
    for r in &results {
        println!(
            "| {} | {} | {} | {:.2} s | {} |",
            r.label,
            r.calls,
            r.detail,
            r.wall.as_secs_f64(),
            r.counts
        );
    }
    println!();
    println!(
        "threshold sweep, {} ms added per REST answer: wall time of a k-file change",
        sweep_latency.as_millis()
    );
    println!("| k files changed | blob by blob | one tarball | faster |");
    println!("|---|---|---|---|");
    for (k, p, t) in sweep {
        let faster = if p < t { "blobs" } else { "tarball" };
        println!(
            "| {k} | {:.2} s | {:.2} s | {faster} |",
            p.as_secs_f64(),
            t.as_secs_f64()
        );
    }
    Ok(())
}
