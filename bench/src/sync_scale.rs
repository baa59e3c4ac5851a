//! Sync at scale, measured from outside the process: the `connectord serve`
//! release binary (SQLite, as a user runs it) syncs repositories served by
//! the fake GitHub (real git underneath, in this process), and this program
//! reads the child's peak resident size (`VmHWM` in `/proc/<pid>/status`),
//! the REST calls the fake counted, and the wall time.
//!
//! ```text
//! cargo build --release -p connectord -p connectord-bench
//! target/release/sync-scale first-sync --files 10000 --file-bytes 2000
//! target/release/sync-scale monorepo --files 50000 --prefix-files 200
//! target/release/sync-scale latency --pushes 200 [--delay-ms 50]
//! ```

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use fake_github::{
    Endpoint, FakeGitHub, GitRepo, TEST_APP_PRIVATE_KEY_PEM, TEST_APP_PUBLIC_KEY_PEM,
};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

const APP_ID: i64 = 4242;
const INSTALLATION: i64 = 7;
const REPO: &str = "octo/docs";
const REPO_ID: i64 = 1001;
const SECRET: &str = "sync-scale-webhook-secret-0123456789";
const TOKEN: &str = "sync-scale-admin-token-0123456789abcdef";

#[derive(Parser)]
#[command(about = "connectord's sync at scale against the fake GitHub")]
struct Args {
    /// The connectord binary (default: the one next to this program).
    #[arg(long, global = true)]
    connectord: Option<PathBuf>,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// First sync of a whole repository: calls, wall time, peak RSS.
    FirstSync {
        #[arg(long, default_value_t = 10_000)]
        files: usize,
        #[arg(long, default_value_t = 2_000)]
        file_bytes: usize,
    },
    /// A big repository tracked with a small `pathPrefix`.
    Monorepo {
        #[arg(long, default_value_t = 50_000)]
        files: usize,
        #[arg(long, default_value_t = 200)]
        prefix_files: usize,
        #[arg(long, default_value_t = 2_000)]
        file_bytes: usize,
    },
    /// Webhook 202 to sync event `completed` for 3-file pushes.
    Latency {
        #[arg(long, default_value_t = 200)]
        pushes: usize,
        /// Added to every REST answer of the fake.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
}

/// Text a documentation page might hold: compressible like prose, distinct per file.
fn page(i: usize, bytes: usize) -> Vec<u8> {
    let mut s = format!("# Page {i}\n\n");
    let words = [
        "the", "sync", "keeps", "content", "in", "step", "with", "git", "and", "every",
    ];
    let mut n = i;
    while s.len() < bytes {
        n = n
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        s.push_str(words[(n >> 33) % words.len()]);
        s.push(if (n >> 20).is_multiple_of(13) {
            '\n'
        } else {
            ' '
        });
    }
    s.truncate(bytes);
    s.into_bytes()
}

fn fill(repo: &GitRepo, files: usize, bytes: usize, dir: impl Fn(usize) -> String) -> String {
    for i in 0..files {
        repo.write(&format!("{}/page-{i}.md", dir(i)), &page(i, bytes));
    }
    repo.commit("fill")
}

fn hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

struct Serve {
    child: tokio::process::Child,
    base: String,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Serve {
    async fn start(bin: &Path, fake: &FakeGitHub) -> anyhow::Result<Serve> {
        let dir = tempfile::tempdir()?;
        let key = dir.path().join("key.pem");
        std::fs::write(&key, TEST_APP_PRIVATE_KEY_PEM)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = tokio::process::Command::new(bin)
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .env("GITHUB_CONNECTOR_APP_ID", APP_ID.to_string())
            .env("GITHUB_CONNECTOR_APP_PRIVATE_KEY_PATH", &key)
            .env("GITHUB_API_URL", fake.base_url())
            .env("GITHUB_CONNECTOR_APP_WEBHOOK_SECRET", SECRET)
            .env("CONNECTORD_ADMIN_TOKEN", TOKEN)
            // Only the syncs under test call GitHub.
            .env("CONNECTORD_RECONCILE_INTERVAL", "0")
            // `SYNC_SCALE_LOG=debug` to see where a sync spends its time.
            .env(
                "RUST_LOG",
                std::env::var("SYNC_SCALE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let s = Serve {
            child,
            base: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s
            .http
            .get(format!("{}/readyz", s.base))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            anyhow::ensure!(Instant::now() < deadline, "serve did not become ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(s)
    }

    fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await?;
        let status = res.status();
        let v: Value = res.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{path}: {status} {v}");
        Ok(v)
    }

    /// Creates the connector and a target; returns the initial sync event id.
    async fn track(&self, prefix: &str) -> anyhow::Result<String> {
        let c = self
            .admin(
                reqwest::Method::POST,
                "/v1/admin/connectors",
                Some(json!({"type": "github", "installationId": INSTALLATION})),
            )
            .await?;
        let id = c["id"].as_str().context("connector id")?;
        let t = self
            .admin(
                reqwest::Method::POST,
                &format!("/v1/admin/connectors/{id}/targets"),
                Some(json!({"repositoryFullName": REPO, "repositoryId": REPO_ID, "branch": "main", "pathPrefix": prefix})),
            )
            .await?;
        Ok(t["initialSyncEvent"]["id"]
            .as_str()
            .context("initial event")?
            .to_owned())
    }

    async fn wait_final(&self, event: &str, poll: Duration) -> anyhow::Result<Value> {
        let deadline = Instant::now() + Duration::from_secs(1800);
        loop {
            let e = self
                .admin(
                    reqwest::Method::GET,
                    &format!("/v1/admin/sync-events/{event}"),
                    None,
                )
                .await?;
            if !matches!(e["status"].as_str(), Some("queued" | "running")) {
                return Ok(e);
            }
            anyhow::ensure!(Instant::now() < deadline, "sync {event} did not finish");
            tokio::time::sleep(poll).await;
        }
    }

    async fn push(&self, n: usize, before: &str, after: &str) -> anyhow::Result<String> {
        let body = serde_json::to_vec(&json!({
            "ref": "refs/heads/main", "before": before, "after": after, "created": false, "deleted": false,
            "forced": false, "commits": [], "head_commit": {"id": after},
            "repository": {"id": REPO_ID, "full_name": REPO, "name": "docs"},
            "installation": {"id": INSTALLATION}, "sender": {"login": "octocat"},
        }))?;
        let res = self
            .http
            .post(format!("{}/v1/webhooks/connectors/github", self.base))
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", format!("scale-{n}"))
            .header(
                "x-hub-signature-256",
                connectord::ingress::signature::sign(SECRET.as_bytes(), &body),
            )
            .body(body)
            .send()
            .await?;
        let status = res.status();
        let v: Value = res.json().await?;
        anyhow::ensure!(status.as_u16() == 202, "push {n}: {status} {v}");
        Ok(v["syncEventIds"][0]
            .as_str()
            .context("sync event")?
            .to_owned())
    }
}

fn calls(fake: &FakeGitHub) -> String {
    format!(
        "{} (ref {} · tree {} · blob {} · tarball {})",
        fake.total_repo_calls(),
        fake.calls(Endpoint::Ref),
        fake.calls(Endpoint::Tree),
        fake.calls(Endpoint::Blob),
        fake.calls(Endpoint::Tarball)
    )
}

fn counts(e: &Value) -> String {
    let c = &e["counts"];
    format!(
        "{} · created {} updated {} deleted {} skipped {} · failures {}",
        e["status"],
        c["created"],
        c["updated"],
        c["deleted"],
        c["skipped"],
        e["failures"].as_array().map_or(0, Vec::len)
    )
}

fn pct(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match args.connectord {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("connectord"),
    };
    let fake = FakeGitHub::start(APP_ID, TEST_APP_PUBLIC_KEY_PEM).await;
    fake.add_installation(INSTALLATION);
    // An installation's budget that a whole-repository run does not exhaust.
    fake.set_rate_limit_remaining(1_000_000);
    let repo = fake.add_repo(REPO, REPO_ID, INSTALLATION);
    match args.what {
        What::FirstSync { files, file_bytes } => {
            let t = Instant::now();
            fill(&repo, files, file_bytes, |i| {
                format!("docs/section-{}", i % 100)
            });
            eprintln!(
                "repository of {files} files written and committed in {:.1?}",
                t.elapsed()
            );
            let serve = Serve::start(&bin, &fake).await?;
            let idle = hwm_kib(serve.pid());
            fake.reset_calls();
            let t = Instant::now();
            let ev = serve.track("").await?;
            let e = serve.wait_final(&ev, Duration::from_millis(20)).await?;
            println!(
                "first sync, {files} files of {file_bytes} bytes ({:.1} MB): {:.2?}, calls {}, {}; connectord peak RSS {} MiB (at start {} MiB)",
                (files * file_bytes) as f64 / 1e6,
                t.elapsed(),
                calls(&fake),
                counts(&e),
                hwm_kib(serve.pid()).unwrap_or(0) / 1024,
                idle.unwrap_or(0) / 1024,
            );
        }
        What::Monorepo {
            files,
            prefix_files,
            file_bytes,
        } => {
            if prefix_files > files {
                bail!("--prefix-files exceeds --files");
            }
            fill(&repo, files, file_bytes, |i| {
                if i < prefix_files {
                    "handbook".to_owned()
                } else {
                    format!("src/module-{}", i % 500)
                }
            });
            let serve = Serve::start(&bin, &fake).await?;
            fake.reset_calls();
            let t = Instant::now();
            let ev = serve.track("handbook/").await?;
            let e = serve.wait_final(&ev, Duration::from_millis(20)).await?;
            println!(
                "monorepo of {files} files, prefix holding {prefix_files}: {:.2?}, calls {}, {}; peak RSS {} MiB; \
                 bytes wanted {:.1} MB of a {:.1} MB tree",
                t.elapsed(),
                calls(&fake),
                counts(&e),
                hwm_kib(serve.pid()).unwrap_or(0) / 1024,
                (prefix_files * file_bytes) as f64 / 1e6,
                (files * file_bytes) as f64 / 1e6,
            );
        }
        What::Latency { pushes, delay_ms } => {
            let mut head = fill(&repo, 300, 2_000, |i| format!("docs/section-{}", i % 10));
            let serve = Serve::start(&bin, &fake).await?;
            let ev = serve.track("").await?;
            serve.wait_final(&ev, Duration::from_millis(20)).await?;
            fake.set_delay("", Duration::from_millis(delay_ms));
            let mut lat = Vec::with_capacity(pushes);
            for n in 0..pushes {
                for k in 0..3 {
                    let i = (n * 3 + k) % 300;
                    repo.write(
                        &format!("docs/section-{}/page-{i}.md", i % 10),
                        format!("# Page {i}, revision {n}\n").as_bytes(),
                    );
                }
                let after = repo.commit("edit three");
                let t = Instant::now();
                let ev = serve.push(n, &head, &after).await?;
                let e = serve.wait_final(&ev, Duration::from_millis(1)).await?;
                lat.push(t.elapsed());
                anyhow::ensure!(e["status"] == "completed", "push {n}: {e}");
                head = after;
            }
            lat.sort();
            println!(
                "{pushes} pushes of 3 files, {delay_ms} ms added per REST answer: webhook sent to `completed` median {:.1?}, p99 {:.1?}, max {:.1?}",
                pct(&lat, 0.5),
                pct(&lat, 0.99),
                lat[lat.len() - 1]
            );
        }
    }
    Ok(())
}
