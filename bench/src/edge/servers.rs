//! The four servers of the edge benchmark, each started fresh for a run as
//! its own process on a free loopback port, and stopped after it.

use anyhow::{bail, Context};
use sqlx::Connection;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// The webhook secret and admin token every server of a run is configured with.
pub const SECRET: &str = "edge-bench-webhook-secret";
const ADMIN_TOKEN: &str = "edge-bench-admin-token";
const WEBHOOK_PATH: &str = "/v1/webhooks/connectors/github";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Sqlite,
    Postgres,
    Octokit,
    Limit,
    /// connectord on SQLite, sent wrongly signed requests.
    BadSignature,
}

impl Kind {
    pub fn label(self) -> &'static str {
        match self {
            Kind::Sqlite => "connectord `serve`, SQLite",
            Kind::Postgres => "connectord `serve`, PostgreSQL",
            Kind::Octokit => "`@octokit/webhooks` 14.2.0 `createNodeMiddleware`",
            Kind::Limit => "limit: bare axum HMAC check (`bare-hmac`)",
            Kind::BadSignature => "connectord `serve`, SQLite, bad signatures",
        }
    }

    pub fn is_connectord(self) -> bool {
        matches!(self, Kind::Sqlite | Kind::Postgres | Kind::BadSignature)
    }
}

/// Where the programs are.
pub struct Tools {
    pub connectord: PathBuf,
    pub bare_hmac: PathBuf,
    pub node: String,
    /// `bench/node`, with its `node_modules` installed.
    pub node_dir: PathBuf,
    /// A PostgreSQL URL to create and drop the per-run databases through.
    pub postgres: Option<String>,
}

/// Where a connectord run stored its records.
pub enum Store {
    Sqlite(PathBuf),
    Postgres { name: String, url: String },
}

pub struct Server {
    pub kind: Kind,
    pub pid: u32,
    port: u16,
    child: Child,
    /// The data directory (connectord) and the log, removed on drop.
    dir: tempfile::TempDir,
    pub store: Option<Store>,
}

impl Server {
    pub async fn start(kind: Kind, tools: &Tools) -> anyhow::Result<Server> {
        let dir = tempfile::Builder::new().prefix("edge-bench-").tempdir()?;
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let (mut cmd, store) = match kind {
            Kind::Sqlite | Kind::BadSignature | Kind::Postgres => {
                let mut cmd = Command::new(&tools.connectord);
                cmd.arg("serve").arg("--listen").arg(&listen);
                cmd.arg("--data-dir").arg(dir.path());
                let store = if kind == Kind::Postgres {
                    let base = tools
                        .postgres
                        .as_deref()
                        .context("no PostgreSQL URL for the PostgreSQL row")?;
                    let (name, url) = create_database(base).await?;
                    cmd.arg("--database-url").arg(&url);
                    Store::Postgres { name, url }
                } else {
                    Store::Sqlite(dir.path().join("connectord.db"))
                };
                // Configured as a user would: the secret and the token from
                // the environment, everything else at its default.
                cmd.env("GITHUB_CONNECTOR_APP_WEBHOOK_SECRET", SECRET);
                cmd.env("CONNECTORD_ADMIN_TOKEN", ADMIN_TOKEN);
                (cmd, Some(store))
            }
            Kind::Octokit => {
                let mut cmd = Command::new(&tools.node);
                cmd.arg(tools.node_dir.join("server.mjs"));
                cmd.current_dir(&tools.node_dir);
                cmd.env("PORT", port.to_string())
                    .env("WEBHOOK_SECRET", SECRET)
                    .env("NODE_ENV", "production");
                (cmd, None)
            }
            Kind::Limit => {
                let mut cmd = Command::new(&tools.bare_hmac);
                cmd.arg("--listen").arg(&listen);
                cmd.env("EDGE_WEBHOOK_SECRET", SECRET);
                (cmd, None)
            }
        };
        // Settings of the person running the bench must not leak into the servers.
        for (name, _) in std::env::vars_os() {
            let n = name.to_string_lossy();
            if n.starts_with("CONNECTORD_") || n.starts_with("GITHUB_CONNECTOR_") {
                cmd.env_remove(&name);
            }
        }
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true);
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                if let Some(Store::Postgres { name, .. }) = &store {
                    drop_database(tools, name).await.ok();
                }
                return Err(e).with_context(|| format!("starting {}", kind.label()));
            }
        };
        let mut server = Server {
            kind,
            pid: child.id().unwrap_or_default(),
            port,
            child,
            dir,
            store,
        };
        if let Err(e) = server.wait_ready().await {
            let tail = server.log_tail();
            server.stop().await.ok();
            server.drop_store(tools).await.ok();
            bail!("{} did not start: {e:#}\n{tail}", kind.label());
        }
        Ok(server)
    }

    pub fn webhook_url(&self) -> String {
        format!("http://127.0.0.1:{}{WEBHOOK_PATH}", self.port)
    }

    /// Any HTTP answer on `/healthz` (the Node peer answers 404) within 30 s.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/healthz", self.port);
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait()? {
                bail!("exited with {status}");
            }
            if client.get(&url).send().await.is_ok() {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("no answer on {url} within 30 s")
    }

    /// Registers the installation and `targets` tracked repositories through
    /// the admin API, as a user would.
    pub async fn track_targets(&self, targets: usize, branch: &str) -> anyhow::Result<()> {
        use super::payload::{full_name, repository_id, INSTALLATION_ID};
        let client = reqwest::Client::new();
        let admin = format!("http://127.0.0.1:{}/v1/admin", self.port);
        let res = client
            .post(format!("{admin}/connectors"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&serde_json::json!({"type": "github", "installationId": INSTALLATION_ID}))
            .send()
            .await?;
        if !res.status().is_success() {
            bail!("creating the connector: {}", res.status());
        }
        let connector: serde_json::Value = res.json().await?;
        let id = connector["id"]
            .as_str()
            .context("connector without an id")?;
        for t in 0..targets {
            let res = client
                .post(format!("{admin}/connectors/{id}/targets"))
                .bearer_auth(ADMIN_TOKEN)
                .json(&serde_json::json!({
                    "repositoryFullName": full_name(t),
                    "repositoryId": repository_id(t),
                    "branch": branch,
                }))
                .send()
                .await?;
            if res.status() != reqwest::StatusCode::CREATED {
                bail!("creating target {t}: {}", res.status());
            }
        }
        Ok(())
    }

    /// Bytes the server wrote to stdout and stderr so far.
    pub fn log_bytes(&self) -> Option<u64> {
        Some(
            std::fs::metadata(self.dir.path().join("server.log"))
                .ok()?
                .len(),
        )
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGKILL, so that what the durability check then finds was committed
    /// before the answers were sent, not at a graceful shutdown.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// Drops the run's PostgreSQL database, if it had one.
    pub async fn drop_store(&mut self, tools: &Tools) -> anyhow::Result<()> {
        match self.store.take() {
            Some(Store::Postgres { name, .. }) => drop_database(tools, &name).await,
            _ => Ok(()),
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// A port nobody listens on now (the server binds it a moment later).
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A fresh database `edge_<unix seconds>_<hex>` and its URL.
async fn create_database(base: &str) -> anyhow::Result<(String, String)> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let name = format!("edge_{now}_{:08x}", rand::random::<u32>());
    let mut conn = sqlx::PgConnection::connect(base)
        .await
        .context("connecting to PostgreSQL (--postgres-url; or --no-postgres)")?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    let mut url = reqwest::Url::parse(base).context("--postgres-url")?;
    url.set_path(&format!("/{name}"));
    Ok((name, url.to_string()))
}

async fn drop_database(tools: &Tools, name: &str) -> anyhow::Result<()> {
    let base = tools.postgres.as_deref().context("no PostgreSQL URL")?;
    let mut conn = sqlx::PgConnection::connect(base).await?;
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}
