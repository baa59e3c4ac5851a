//! Storage of one repository tracked on many branches: ten branches of one
//! repository (each differing from `main` in one file) synced as ten targets
//! against the fake GitHub (real git underneath), reporting the SQLite
//! database's size after one target and after all ten. With content-addressed
//! blobs the ten should take about one copy of the content, not ten.
//!
//! `cargo run --release -p connectord-bench --bin storage-bench -- [files] [branches] [bytes per file]`

use connectord_bench::common;

use connectord::domain::{BranchName, PathPrefix, RepoFullName};
use connectord::github::FetchSettings;
use connectord::startup::Application;
use connectord::store::models::NewTarget;
use connectord::store::Store;
use fake_github::{FakeGitHub, GitRepo, TEST_APP_PUBLIC_KEY_PEM};
use sqlx::{Connection, SqliteConnection};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

const APP_ID: i64 = 4242;
const INSTALLATION: i64 = 7;
const REPO_ID: i64 = 1001;

async fn wait_final(store: &Arc<dyn Store>, event: &str) -> anyhow::Result<String> {
    let deadline = Instant::now() + Duration::from_secs(900);
    loop {
        let e = store.get_sync_event(event).await?;
        if !matches!(e.status.as_str(), "queued" | "running") {
            anyhow::ensure!(
                e.status == connectord::store::states::SyncStatus::Completed,
                "sync {event} ended {}",
                e.status
            );
            return Ok(format!("created {}", e.counts.created));
        }
        anyhow::ensure!(Instant::now() < deadline, "sync {event} did not finish");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The database's size with its WAL folded in: checkpointed and truncated
/// from a connection of its own (the app is stopped first).
async fn db_bytes(db: &Path) -> anyhow::Result<u64> {
    let mut conn = SqliteConnection::connect(&format!("sqlite://{}", db.display())).await?;
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let wal = std::fs::metadata(db.with_extension("db-wal")).map_or(0, |m| m.len());
    Ok(std::fs::metadata(db)?.len() + wal)
}

/// `files` pages of about `size` bytes each (the repository: 10,000
/// files, ~20 MB).
fn populate(repo: &GitRepo, files: usize, size: usize) -> u64 {
    let mut bytes = 0;
    for i in 0..files {
        let body = format!(
            "# Page {i}\n\n{}\n",
            "Lorem ipsum dolor sit amet. ".repeat(size / 28 + 1)
        );
        bytes += body.len() as u64;
        repo.write(
            &format!("docs/section-{:03}/page-{i:05}.md", i / 100),
            body.as_bytes(),
        );
    }
    repo.commit("a large repository");
    bytes
}

/// Runs the app on `db` and tracks `branches` as targets; returns when every
/// initial sync has completed and the app has stopped.
async fn track(gh: &FakeGitHub, db: &Path, branches: &[String]) -> anyhow::Result<()> {
    let app = Application::build(
        common::sync_settings(gh.base_url(), db, FetchSettings::default()),
        None,
    )
    .await?;
    let store = app.store();
    let token = app.shutdown_token();
    let running = tokio::spawn(app.run_until_stopped());
    let (connector, _) = store.create_connector(INSTALLATION).await?;
    let connector = connector.id;
    let mut events = vec![];
    for branch in branches {
        let (_, event) = store
            .create_target(
                &connector,
                NewTarget {
                    repository_full_name: RepoFullName::parse("octo/big")?,
                    repository_id: Some(REPO_ID),
                    branch: BranchName::parse(branch)?,
                    path_prefix: PathPrefix::parse("")?,
                    max_file_bytes: 1024 * 1024,
                },
            )
            .await?;
        events.push(event.id);
    }
    for e in &events {
        wait_final(&store, e).await?;
    }
    token.cancel();
    running.await??;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let files: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let count: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(10);
    let size: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2048);
    let gh = FakeGitHub::start(APP_ID, TEST_APP_PUBLIC_KEY_PEM).await;
    gh.add_installation(INSTALLATION);
    let repo = gh.add_repo("octo/big", REPO_ID, INSTALLATION);
    let content = populate(&repo, files, size);
    let mut branches = vec!["main".to_owned()];
    for b in 1..count {
        let name = format!("branch-{b}");
        repo.checkout("main");
        repo.checkout(&name);
        repo.write(
            "docs/section-000/page-00000.md",
            format!("branch {b}\n").as_bytes(),
        );
        repo.commit(&name);
        branches.push(name);
    }

    let one = tempfile::tempdir()?;
    let db_one = one.path().join("bench.db");
    track(&gh, &db_one, &branches[..1]).await?;
    let size_one = db_bytes(&db_one).await?;

    let all = tempfile::tempdir()?;
    let db_all = all.path().join("bench.db");
    track(&gh, &db_all, &branches).await?;
    let size_all = db_bytes(&db_all).await?;

    let mib = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "{files} files ({:.1} MiB of content), {count} branches each differing from main in one file",
        mib(content)
    );
    println!("| tracked | database size | per target |");
    println!("|---|---|---|");
    println!(
        "| 1 target (main) | {:.1} MiB | {:.1} MiB |",
        mib(size_one),
        mib(size_one)
    );
    println!(
        "| {count} targets (one per branch) | {:.1} MiB | {:.1} MiB |",
        mib(size_all),
        mib(size_all) / count as f64
    );
    println!(
        "{count} targets take {:.2}x the database of one",
        size_all as f64 / size_one as f64
    );
    Ok(())
}
