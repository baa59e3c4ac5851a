//! Settings for `connectord serve`: every one a flag and an environment variable.

use crate::edge::EdgeSettings;
use crate::github::http::Timeouts;
use crate::github::tarball::Limits;
use crate::github::{FetchMode, FetchSettings, GithubAppConfig};
use crate::secrets::{self, Source};
use crate::sync::policy::{LeasePolicy, RetryPolicy};
use crate::sync::worker::WorkerSettings;
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::time::Duration;

/// What a `serve` process does. Ingress and workers scale separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Webhook, admin API and workers.
    All,
    /// Webhook and admin API; no workers.
    Ingress,
    /// Workers only; the listener serves /healthz, /readyz and /metrics.
    Worker,
}

// No `Debug`: it holds secrets.
#[derive(Clone, Args)]
pub struct ServeArgs {
    /// `all`, `ingress` (webhook + admin API) or `worker` (sync jobs; health and metrics only).
    #[arg(long, env = "CONNECTORD_ROLE", value_enum, default_value = "all")]
    pub role: Role,
    /// Address of the public listener (webhook, health, metrics; and the admin API unless --admin-listen is set).
    #[arg(long, env = "CONNECTORD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Serve the admin API only on this address (e.g. an internal interface).
    #[arg(long, env = "CONNECTORD_ADMIN_LISTEN")]
    pub admin_listen: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
    /// Concurrent sync jobs in this process.
    #[arg(long, env = "CONNECTORD_WORKERS", default_value_t = 2)]
    pub workers: usize,
    /// Sync jobs of one GitHub App installation that may run at once, across
    /// every worker process (GitHub allows 100 concurrent requests per installation).
    #[arg(
        long,
        env = "CONNECTORD_MAX_JOBS_PER_INSTALLATION",
        default_value_t = 4
    )]
    pub max_jobs_per_installation: i64,
    /// Attempts before a sync fails for good (transient errors retry with backoff).
    #[arg(long, env = "CONNECTORD_MAX_ATTEMPTS", default_value_t = 8)]
    pub max_attempts: i64,
    /// Seconds a claimed job holds without a heartbeat before another worker may take it.
    #[arg(long, env = "CONNECTORD_LEASE_SECONDS", default_value_t = 30)]
    pub lease_seconds: u64,
    /// Days to keep the raw bodies of accepted deliveries (for inspection and replay).
    #[arg(
        long,
        env = "CONNECTORD_DELIVERY_BODY_RETENTION_DAYS",
        default_value_t = 7
    )]
    pub delivery_body_retention_days: u64,
    /// Days to keep finished syncs, their jobs, and delivery records.
    #[arg(long, env = "CONNECTORD_HISTORY_RETENTION_DAYS", default_value_t = 30)]
    pub history_retention_days: u64,
    /// The GitHub App's webhook secret. Generated into the data directory if unset.
    #[arg(
        long,
        env = "GITHUB_CONNECTOR_APP_WEBHOOK_SECRET",
        hide_env_values = true
    )]
    pub webhook_secret: Option<String>,
    /// The previous webhook secret, still accepted while a rotation is under way.
    #[arg(
        long,
        env = "GITHUB_CONNECTOR_APP_WEBHOOK_SECRET_PREVIOUS",
        hide_env_values = true
    )]
    pub webhook_secret_previous: Option<String>,
    /// Bearer token for the admin API. Generated into the data directory if unset.
    #[arg(long, env = "CONNECTORD_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    #[command(flatten)]
    pub github: GithubArgs,
    #[command(flatten)]
    pub edge: EdgeArgs,
    #[command(flatten)]
    pub recovery: crate::recovery::RecoveryArgs,
    /// Log as JSON lines.
    #[arg(long, env = "CONNECTORD_LOG_JSON", default_value_t = false)]
    pub log_json: bool,
}

/// The GitHub App the workers act as. Without an App id and key, workers do
/// not run and sync jobs stay queued.
#[derive(Clone, Args)]
pub struct GithubArgs {
    #[arg(long, env = "GITHUB_CONNECTOR_APP_ID")]
    pub github_app_id: Option<i64>,
    /// The App's private key (PEM text).
    #[arg(long, env = "GITHUB_CONNECTOR_APP_PRIVATE_KEY", hide_env_values = true)]
    pub github_app_private_key: Option<String>,
    /// A file holding the App's private key (PEM).
    #[arg(long, env = "GITHUB_CONNECTOR_APP_PRIVATE_KEY_PATH")]
    pub github_app_private_key_path: Option<PathBuf>,
    /// REST API root: `https://api.github.com`, or `https://HOST/api/v3` for GitHub Enterprise Server.
    #[arg(long, env = "GITHUB_API_URL", default_value = "https://api.github.com")]
    pub github_api_url: String,
    /// How syncs download files: `auto` (the fetch plan picks blobs or one
    /// tarball per sync), or always `blobs` or `tarball`.
    #[arg(long, env = "CONNECTORD_FETCH_MODE", value_enum, default_value_t = FetchMode::Auto)]
    pub fetch_mode: FetchMode,
    /// The most decompressed bytes read from one tarball (a gzip bomb ends there).
    #[arg(long, env = "CONNECTORD_TARBALL_MAX_BYTES", default_value_t = FetchSettings::default().archive.max_bytes)]
    pub tarball_max_bytes: u64,
    /// The most entries read from one tarball.
    #[arg(long, env = "CONNECTORD_TARBALL_MAX_ENTRIES", default_value_t = FetchSettings::default().archive.max_entries)]
    pub tarball_max_entries: u64,
    /// How often each tracked branch's head is read from GitHub, to sync pushes
    /// whose webhook never came (conditional reads: an unchanged branch costs
    /// no rate limit): `5m`, `30s`; `0` turns it off.
    #[arg(long, env = "CONNECTORD_RECONCILE_INTERVAL", default_value = "5m", value_parser = parse_interval)]
    pub reconcile_interval: Duration,
    /// The longest GitHub may leave a connection silent (waiting for the
    /// answer's headers or its next bytes, archives included) before the
    /// call counts as failed and is retried.
    #[arg(long, env = "CONNECTORD_GITHUB_READ_TIMEOUT", default_value = "60s", value_parser = parse_timeout)]
    pub github_read_timeout: Duration,
    /// The longest one whole answer may take, for every call but an archive
    /// download (those are bounded by the read timeout only).
    #[arg(long, env = "CONNECTORD_GITHUB_REQUEST_TIMEOUT", default_value = "120s", value_parser = parse_timeout)]
    pub github_request_timeout: Duration,
}

impl GithubArgs {
    pub(crate) fn into_config(self) -> anyhow::Result<Option<GithubAppConfig>> {
        let key = match (
            self.github_app_private_key,
            &self.github_app_private_key_path,
        ) {
            (Some(pem), _) if !pem.trim().is_empty() => Some(pem),
            (_, Some(path)) => Some(std::fs::read_to_string(path).with_context(|| {
                format!("cannot read the GitHub App private key {}", path.display())
            })?),
            _ => None,
        };
        match (self.github_app_id, key) {
            (Some(app_id), Some(private_key_pem)) => Ok(Some(GithubAppConfig {
                app_id,
                private_key_pem,
                api_url: self.github_api_url,
                fetch: FetchSettings {
                    mode: self.fetch_mode,
                    archive: Limits {
                        max_bytes: self.tarball_max_bytes,
                        max_entries: self.tarball_max_entries,
                    },
                    timeouts: Timeouts {
                        read: self.github_read_timeout,
                        request: self.github_request_timeout,
                        ..Timeouts::default()
                    },
                },
                reconcile_interval: Some(self.reconcile_interval).filter(|d| !d.is_zero()),
            })),
            (None, None) => Ok(None),
            (Some(_), None) => anyhow::bail!(
                "GITHUB_CONNECTOR_APP_ID is set but no private key: set GITHUB_CONNECTOR_APP_PRIVATE_KEY or _PATH"
            ),
            (None, Some(_)) => anyhow::bail!("a GitHub App private key is set but GITHUB_CONNECTOR_APP_ID is not"),
        }
    }
}

/// The HTTP edge's limits; docs/edge.md says why each default.
#[derive(Debug, Clone, Args)]
pub struct EdgeArgs {
    /// A client must send a whole request head within this, from connecting
    /// (or from the first byte of a later request): `10s`, `500ms`, `2m`.
    #[arg(long, env = "CONNECTORD_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub header_read_timeout: Duration,
    /// A webhook body must arrive whole within this after its head, else 408
    /// (GitHub itself gives up after 10 s).
    #[arg(long, env = "CONNECTORD_BODY_READ_TIMEOUT", default_value = "10s", value_parser = parse_timeout)]
    pub body_read_timeout: Duration,
    /// A kept-alive connection with no request in progress is closed after this.
    #[arg(long, env = "CONNECTORD_IDLE_TIMEOUT", default_value = "75s", value_parser = parse_timeout)]
    pub idle_timeout: Duration,
    /// Open connections per listener. At the cap, the connection waiting
    /// longest with no request in progress is closed to make room.
    #[arg(long, env = "CONNECTORD_MAX_CONNECTIONS", default_value_t = crate::edge::DEFAULT_MAX_CONNECTIONS,
        value_parser = parse_max_connections)]
    pub max_connections: usize,
    /// MiB of webhook bodies held while they are received, across all
    /// connections; a quarter is kept for bodies up to 1 MiB. Beyond it: 503.
    #[arg(long, env = "CONNECTORD_BODY_BUDGET_MIB", default_value_t = crate::edge::DEFAULT_BODY_BUDGET_MIB,
        value_parser = parse_body_budget)]
    pub body_budget_mib: usize,
    /// Also serve /metrics on the public listener when --admin-listen is set
    /// (by default it is then served on the admin listener only).
    #[arg(long, env = "CONNECTORD_PUBLIC_METRICS", default_value_t = false)]
    pub public_metrics: bool,
}

impl EdgeArgs {
    pub fn settings(&self) -> EdgeSettings {
        EdgeSettings {
            header_read_timeout: self.header_read_timeout,
            body_read_timeout: self.body_read_timeout,
            idle_timeout: self.idle_timeout,
            max_connections: self.max_connections,
            body_budget_bytes: self.body_budget_mib << 20,
            public_metrics: self.public_metrics,
        }
    }
}

/// `0` (off) or at least a second: shorter would ask GitHub in a tight loop.
pub(crate) fn parse_interval(s: &str) -> Result<Duration, String> {
    if s.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (write a duration such as 5m or 30s)"))?;
    if !d.is_zero() && d < Duration::from_secs(1) {
        return Err("must be 0 (off) or at least 1s".into());
    }
    Ok(d)
}

fn parse_timeout(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("{e} (write a duration such as 10s, 500ms or 2m)"))?;
    if d.is_zero() {
        return Err("must be longer than 0".into());
    }
    Ok(d)
}

fn parse_max_connections(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
        _ => Err("must be a number from 1 to 1000000".into()),
    }
}

fn parse_body_budget(s: &str) -> Result<usize, String> {
    let min = crate::edge::MIN_BODY_BUDGET_MIB;
    match s.parse::<usize>() {
        Ok(n) if (min..=1 << 20).contains(&n) => Ok(n),
        _ => Err(format!(
            "must be a number of MiB from {min} (one 25 MiB body must fit in the three quarters \
             that bodies over 1 MiB may use) to 1048576"
        )),
    }
}

#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// Directory for the default SQLite database and generated secrets.
    #[arg(long, env = "CONNECTORD_DATA_DIR", default_value = "data")]
    pub data_dir: PathBuf,
    /// `sqlite://PATH` (created if missing) or `postgres://USER[:PASSWORD]@HOST[:PORT]/DB`
    /// (migrated at start). Default: sqlite://<data-dir>/connectord.db
    // The URL may carry a password: never shown by `--help`.
    #[arg(long, env = "CONNECTORD_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// PostgreSQL connections this process may open (plus one for LISTEN).
    #[arg(
        long,
        env = "CONNECTORD_DATABASE_MAX_CONNECTIONS",
        default_value_t = 10
    )]
    pub database_max_connections: u32,
}

impl StoreArgs {
    pub fn database_url(&self) -> String {
        self.database_url.clone().unwrap_or_else(|| {
            format!("sqlite://{}", self.data_dir.join("connectord.db").display())
        })
    }
}

/// Resolved settings. Tests build these directly. No `Debug`: it holds secrets.
#[derive(Clone)]
pub struct Settings {
    pub role: Role,
    pub listen: String,
    pub admin_listen: Option<String>,
    pub database_url: String,
    /// PostgreSQL pool size (SQLite ignores it).
    pub database_max_connections: u32,
    pub webhook_secret: String,
    pub webhook_secret_previous: Option<String>,
    pub admin_token: String,
    pub worker: WorkerSettings,
    pub delivery_body_retention: Duration,
    pub history_retention: Duration,
    /// The GitHub App; `None` leaves sync jobs queued.
    pub github: Option<GithubAppConfig>,
}

impl ServeArgs {
    /// Resolves secrets (generating them on first start) and prints where they
    /// are kept, never their values.
    pub fn into_settings(self) -> anyhow::Result<Settings> {
        // Refuse settings we cannot run with before writing secrets anywhere.
        crate::startup::check_database_url(&self.store.database_url())?;
        let github = self.github.clone().into_config()?;
        // A worker serves no webhook and no admin API: it needs neither secret.
        let (webhook_secret, admin_token) = if self.role == Role::Worker {
            (String::new(), String::new())
        } else {
            self.resolve_secrets()?
        };
        let retry = RetryPolicy {
            max_attempts: self.max_attempts.max(1),
            ..RetryPolicy::default()
        };
        if self.role == Role::Worker && github.is_none() {
            anyhow::bail!(
                "--role worker runs sync jobs and needs the GitHub App: set GITHUB_CONNECTOR_APP_ID and a private key"
            );
        }
        Ok(Settings {
            role: self.role,
            listen: self.listen,
            admin_listen: self.admin_listen,
            database_url: self.store.database_url(),
            database_max_connections: self.store.database_max_connections.max(2),
            webhook_secret,
            webhook_secret_previous: self.webhook_secret_previous.filter(|s| !s.is_empty()),
            admin_token,
            worker: WorkerSettings {
                concurrency: self.workers,
                max_jobs_per_installation: self.max_jobs_per_installation.max(1),
                retry,
                lease: LeasePolicy::new(Duration::from_secs(self.lease_seconds.max(3))),
                ..WorkerSettings::default()
            },
            github,
            history_retention: Duration::from_secs(self.history_retention_days * 86_400),
            delivery_body_retention: Duration::from_secs(
                self.delivery_body_retention_days * 86_400,
            ),
        })
    }

    /// The webhook secret and admin token (generated on first start), with a
    /// note of where they are kept; never their values.
    fn resolve_secrets(&self) -> anyhow::Result<(String, String)> {
        let dir = &self.store.data_dir;
        let (webhook_secret, ws) = secrets::resolve(
            self.webhook_secret.clone(),
            dir,
            secrets::WEBHOOK_SECRET_FILE,
        )?;
        let (admin_token, at) =
            secrets::resolve(self.admin_token.clone(), dir, secrets::ADMIN_TOKEN_FILE)?;
        announce(
            ws,
            &secrets::path_in(dir, secrets::WEBHOOK_SECRET_FILE),
            "a webhook secret",
        );
        announce(
            at,
            &secrets::path_in(dir, secrets::ADMIN_TOKEN_FILE),
            "an admin token",
        );
        if ws == Source::Generated {
            eprintln!(
                "connectord: enter the webhook secret in your GitHub App (Settings > Developer settings > GitHub Apps > \
                 your app > Webhook secret), with the webhook URL http(s)://<this host>/v1/webhooks/connectors/github. \
                 Copy it from the file above; it is never printed."
            );
        }
        let shared_db = crate::store::sql::postgres::is_postgres_url(&self.store.database_url());
        if shared_db && (ws != Source::Configured || at != Source::Configured) {
            eprintln!(
                "connectord: on PostgreSQL several ingress processes serve one webhook: give every one the same \
                 GITHUB_CONNECTOR_APP_WEBHOOK_SECRET and CONNECTORD_ADMIN_TOKEN (secrets kept in a data directory \
                 are this process's own; see docs/deploy.md)"
            );
        }
        Ok((webhook_secret, admin_token))
    }
}

fn announce(source: Source, path: &std::path::Path, what: &str) {
    match source {
        Source::Configured => {}
        Source::Stored => eprintln!("connectord: using {what} stored in {}", path.display()),
        Source::Generated => eprintln!(
            "connectord: generated {what} and stored it in {} (mode 0600)",
            path.display()
        ),
    }
}
