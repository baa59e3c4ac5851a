//! The command line: `serve` and `migrate`, the admin API as subcommands, and
//! `deliver`, which signs a payload exactly as GitHub does and posts it.

use crate::config::{ServeArgs, StoreArgs};
use crate::secrets;
use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use reqwest::Method;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "connectord",
    version,
    about = "Keeps a platform's content in step with GitHub repositories"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the webhook ingress, the admin API and the sync workers.
    Serve(Box<ServeArgs>),
    /// Apply database migrations and exit.
    Migrate(StoreArgs),
    /// Check the whole set-up (secret, App key and JWT, installations,
    /// database, webhook config, public URL) with `serve`'s settings; exit 1 on any problem.
    Doctor(Box<ServeArgs>),
    /// Manage connectors (GitHub App installations).
    #[command(subcommand)]
    Connectors(ConnectorsCmd),
    /// Manage tracked targets (repository branches).
    #[command(subcommand)]
    Targets(TargetsCmd),
    /// Inspect sync events.
    #[command(subcommand, name = "sync-events")]
    SyncEvents(SyncEventsCmd),
    /// Inspect and replay recorded deliveries.
    #[command(subcommand)]
    Deliveries(DeliveriesCmd),
    /// Read a target's synced documents and change feed.
    #[command(subcommand)]
    Documents(DocumentsCmd),
    /// Sign a payload as GitHub does and post it to the webhook.
    Deliver(DeliverArgs),
}

#[derive(Clone, Args)]
pub struct AdminArgs {
    /// Base URL of the admin API.
    #[arg(
        long,
        env = "CONNECTORD_ADMIN_URL",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    pub admin_url: String,
    /// Admin token; default: the one stored in the data directory.
    #[arg(
        long,
        env = "CONNECTORD_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    pub admin_token: Option<String>,
    #[arg(
        long,
        env = "CONNECTORD_DATA_DIR",
        default_value = "data",
        global = true
    )]
    pub data_dir: PathBuf,
}

#[derive(Clone, Args)]
pub struct PageArgs {
    #[arg(long)]
    pub limit: Option<i64>,
    #[arg(long)]
    pub cursor: Option<String>,
}

#[derive(Subcommand)]
pub enum ConnectorsCmd {
    Add {
        #[arg(long)]
        installation_id: i64,
        #[command(flatten)]
        admin: AdminArgs,
    },
    List {
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    Get {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
pub enum TargetsCmd {
    Add {
        #[arg(long)]
        connector: String,
        /// owner/name
        #[arg(long)]
        repo: String,
        #[arg(long)]
        repository_id: Option<i64>,
        #[arg(long)]
        branch: String,
        #[arg(long)]
        path_prefix: Option<String>,
        /// Skip files larger than this many bytes (default 1 MiB).
        #[arg(long)]
        max_file_bytes: Option<i64>,
        #[command(flatten)]
        admin: AdminArgs,
    },
    List {
        #[arg(long)]
        connector: String,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    Get {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    Delete {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Queue a manual resync.
    Sync {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
pub enum SyncEventsCmd {
    List {
        #[arg(long)]
        target: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    Get {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
pub enum DeliveriesCmd {
    List {
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    Get {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    Replay {
        id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Subcommand)]
pub enum DocumentsCmd {
    List {
        #[arg(long)]
        target: String,
        #[arg(long)]
        prefix: Option<String>,
        #[command(flatten)]
        page: PageArgs,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Print one document's bytes to standard output.
    Get {
        #[arg(long)]
        target: String,
        #[arg(long)]
        path: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// The change feed after a sequence number.
    Changes {
        #[arg(long)]
        target: String,
        #[arg(long, default_value_t = 0)]
        after: i64,
        #[arg(long)]
        limit: Option<i64>,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

#[derive(Clone, Args)]
pub struct DeliverArgs {
    /// The `X-GitHub-Event` to send, e.g. `push`.
    #[arg(long)]
    pub event: String,
    /// File with the JSON payload; its bytes are signed and sent as they are.
    #[arg(long)]
    pub payload: PathBuf,
    #[arg(
        long,
        env = "CONNECTORD_WEBHOOK_URL",
        default_value = "http://127.0.0.1:8080/v1/webhooks/connectors/github"
    )]
    pub url: String,
    /// Webhook secret; default: the one stored in the data directory.
    #[arg(
        long,
        env = "GITHUB_CONNECTOR_APP_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub secret: Option<String>,
    /// `X-GitHub-Delivery`; a fresh UUID by default.
    #[arg(long)]
    pub delivery_id: Option<String>,
    /// Send as `application/x-www-form-urlencoded` (`payload=<json>`), GitHub's other content type.
    #[arg(long)]
    pub form: bool,
    #[arg(long, env = "CONNECTORD_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
}

struct AdminClient {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl AdminClient {
    fn new(args: &AdminArgs) -> anyhow::Result<Self> {
        let token = match &args.admin_token {
            Some(t) => t.clone(),
            None => secrets::read(&secrets::path_in(&args.data_dir, secrets::ADMIN_TOKEN_FILE))?.with_context(|| {
                format!(
                    "no admin token: set CONNECTORD_ADMIN_TOKEN or --admin-token (none stored in {})",
                    args.data_dir.display()
                )
            })?,
        };
        Ok(Self {
            http: reqwest::Client::new(),
            base: args.admin_url.trim_end_matches('/').to_owned(),
            token,
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, Option<String>)],
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let query: Vec<(&str, String)> = query
            .iter()
            .filter_map(|(k, v)| v.clone().map(|v| (*k, v)))
            .collect();
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .query(&query);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = res.status();
        let text = res.text().await?;
        let value: Value = if text.is_empty() {
            json!({"status": status.as_u16()})
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if !status.is_success() {
            let msg = value
                .pointer("/error/message")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .unwrap_or_else(|| value.to_string());
            bail!("{status}: {msg}");
        }
        Ok(value)
    }
}

impl AdminClient {
    /// GETs raw bytes (a document).
    async fn raw(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let res = self
            .http
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", self.base))?;
        let status = res.status();
        let bytes = res.bytes().await?;
        if !status.is_success() {
            let msg = serde_json::from_slice::<Value>(&bytes)
                .ok()
                .and_then(|v| {
                    v.pointer("/error/message")
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            bail!("{status}: {msg}");
        }
        Ok(bytes.to_vec())
    }
}

fn page_query(p: &PageArgs) -> Vec<(&'static str, Option<String>)> {
    vec![
        ("limit", p.limit.map(|l| l.to_string())),
        ("cursor", p.cursor.clone()),
    ]
}

/// Runs an admin subcommand and prints the JSON answer.
pub async fn run_admin(cmd: Command) -> anyhow::Result<()> {
    let (admin, method, path, query, body) = match cmd {
        Command::Connectors(c) => match c {
            ConnectorsCmd::Add {
                installation_id,
                admin,
            } => (
                admin,
                Method::POST,
                "/v1/admin/connectors".to_owned(),
                vec![],
                Some(json!({"type": "github", "installationId": installation_id})),
            ),
            ConnectorsCmd::List { page, admin } => (
                admin,
                Method::GET,
                "/v1/admin/connectors".into(),
                page_query(&page),
                None,
            ),
            ConnectorsCmd::Get { id, admin } => (
                admin,
                Method::GET,
                format!("/v1/admin/connectors/{id}"),
                vec![],
                None,
            ),
        },
        Command::Targets(t) => match t {
            TargetsCmd::Add {
                connector,
                repo,
                repository_id,
                branch,
                path_prefix,
                max_file_bytes,
                admin,
            } => (
                admin,
                Method::POST,
                format!("/v1/admin/connectors/{connector}/targets"),
                vec![],
                Some(
                    json!({"repositoryFullName": repo, "repositoryId": repository_id, "branch": branch, "pathPrefix": path_prefix, "maxFileBytes": max_file_bytes}),
                ),
            ),
            TargetsCmd::List {
                connector,
                page,
                admin,
            } => (
                admin,
                Method::GET,
                format!("/v1/admin/connectors/{connector}/targets"),
                page_query(&page),
                None,
            ),
            TargetsCmd::Get { id, admin } => (
                admin,
                Method::GET,
                format!("/v1/admin/targets/{id}"),
                vec![],
                None,
            ),
            TargetsCmd::Delete { id, admin } => (
                admin,
                Method::DELETE,
                format!("/v1/admin/targets/{id}"),
                vec![],
                None,
            ),
            TargetsCmd::Sync { id, admin } => (
                admin,
                Method::POST,
                format!("/v1/admin/targets/{id}/sync"),
                vec![],
                None,
            ),
        },
        Command::SyncEvents(s) => match s {
            SyncEventsCmd::List {
                target,
                status,
                page,
                admin,
            } => {
                let mut q = page_query(&page);
                q.push(("targetId", target));
                q.push(("status", status));
                (admin, Method::GET, "/v1/admin/sync-events".into(), q, None)
            }
            SyncEventsCmd::Get { id, admin } => (
                admin,
                Method::GET,
                format!("/v1/admin/sync-events/{id}"),
                vec![],
                None,
            ),
        },
        Command::Deliveries(d) => match d {
            DeliveriesCmd::List { page, admin } => (
                admin,
                Method::GET,
                "/v1/admin/deliveries".into(),
                page_query(&page),
                None,
            ),
            DeliveriesCmd::Get { id, admin } => (
                admin,
                Method::GET,
                format!("/v1/admin/deliveries/{id}"),
                vec![],
                None,
            ),
            DeliveriesCmd::Replay { id, admin } => (
                admin,
                Method::POST,
                format!("/v1/admin/deliveries/{id}/replay"),
                vec![],
                None,
            ),
        },
        Command::Documents(d) => match d {
            DocumentsCmd::List {
                target,
                prefix,
                page,
                admin,
            } => {
                let mut q = page_query(&page);
                q.push(("prefix", prefix));
                (
                    admin,
                    Method::GET,
                    format!("/v1/admin/targets/{target}/documents"),
                    q,
                    None,
                )
            }
            DocumentsCmd::Get {
                target,
                path,
                admin,
            } => {
                let client = AdminClient::new(&admin)?;
                let bytes = client
                    .raw(&format!(
                        "/v1/admin/targets/{target}/documents/{}",
                        path.trim_start_matches('/')
                    ))
                    .await?;
                std::io::Write::write_all(&mut std::io::stdout(), &bytes)?;
                return Ok(());
            }
            DocumentsCmd::Changes {
                target,
                after,
                limit,
                admin,
            } => (
                admin,
                Method::GET,
                format!("/v1/admin/targets/{target}/changes"),
                vec![
                    ("after", Some(after.to_string())),
                    ("limit", limit.map(|l| l.to_string())),
                ],
                None,
            ),
        },
        // Never format the command: `serve` and `deliver` arguments hold secrets.
        _ => bail!("not an admin command"),
    };
    let client = AdminClient::new(&admin)?;
    let value = client.call(method, &path, &query, body).await?;
    println!("{}", serde_json::to_string_pretty(&value)?);
    Ok(())
}

/// `connectord deliver`: prints the status line and the answer body.
pub async fn deliver(args: DeliverArgs) -> anyhow::Result<()> {
    let secret = match args.secret {
        Some(s) => s,
        None => secrets::read(&secrets::path_in(&args.data_dir, secrets::WEBHOOK_SECRET_FILE))?.with_context(|| {
            format!("no webhook secret: set --secret or GITHUB_CONNECTOR_APP_WEBHOOK_SECRET (none stored in {})", args.data_dir.display())
        })?,
    };
    let json_bytes = std::fs::read(&args.payload)
        .with_context(|| format!("cannot read {}", args.payload.display()))?;
    let (body, content_type) = if args.form {
        let encoded: String = form_urlencoded::Serializer::new(String::new())
            .append_pair(
                "payload",
                std::str::from_utf8(&json_bytes).context("payload is not UTF-8")?,
            )
            .finish();
        (encoded.into_bytes(), "application/x-www-form-urlencoded")
    } else {
        (json_bytes, "application/json")
    };
    let delivery_id = args
        .delivery_id
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let signature = crate::ingress::signature::sign(secret.as_bytes(), &body);
    let res = reqwest::Client::new()
        .post(&args.url)
        .header("content-type", content_type)
        .header("x-github-event", &args.event)
        .header("x-github-delivery", &delivery_id)
        .header("x-hub-signature-256", signature)
        .header("user-agent", "connectord-deliver")
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {}", args.url))?;
    let status = res.status();
    let text = res.text().await?;
    println!(
        "{} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    println!("{text}");
    if !status.is_success() {
        bail!("the webhook answered {status}");
    }
    Ok(())
}
