//! Building and running the application: listeners (port 0 works, so tests
//! run the real app), the store, the worker pool and the retention cleaner,
//! all stopped by one cancellation token.

use crate::config::{Role, Settings};
use crate::edge::budget::BodyBudget;
use crate::edge::server::ListenerLimits;
use crate::edge::{fd_limit, http_metrics, EdgeSettings};
use crate::github::auth::AppAuth;
use crate::github::client::GithubClient;
use crate::github::reconciler::GithubReconciler;
use crate::github::GithubAppConfig;
use crate::ingress::body::WebhookLimits;
use crate::ingress::signature::WebhookSecrets;
pub use crate::store::database_url::{check_database_url, redact_url};
use crate::store::models::SyncStatus;
use crate::store::sql::SqlStore;
use crate::store::Store;
use crate::store::StoreOptions;
use crate::sync::head_poll::HeadPoll;
use crate::sync::worker::WorkerPool;
use crate::sync::Reconciler;
use crate::{admin, ingress, telemetry};
use anyhow::Context;
use axum::extract::State;
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::trace::TraceLayer;

#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub secrets: WebhookSecrets,
    pub admin_token: Arc<str>,
    pub metrics: PrometheusHandle,
    pub webhook: WebhookLimits,
}

pub struct Application {
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    state: AppState,
    workers: Option<WorkerPool>,
    head_poll: Option<HeadPoll>,
    role: Role,
    body_retention: Duration,
    history_retention: Duration,
    edge: EdgeSettings,
    shutdown: CancellationToken,
    /// The webhook self-check and failed-delivery redelivery.
    recovery: crate::recovery::Recovery,
}

impl Application {
    /// Opens the store (running migrations), binds the listeners and prepares
    /// the workers. Without a reconciler no worker runs: jobs stay queued.
    pub async fn build(
        settings: Settings,
        reconciler: Option<Arc<dyn Reconciler>>,
    ) -> anyhow::Result<Self> {
        let store = open_store(
            &settings.database_url,
            StoreOptions {
                max_attempts: settings.worker.retry.max_attempts,
                max_jobs_per_installation: settings.worker.max_jobs_per_installation,
                max_connections: settings.database_max_connections,
            },
        )
        .await?;
        Self::build_with_store(settings, store, reconciler).await
    }

    /// As [`build`](Self::build), on a store the caller opened (benchmarks).
    pub async fn build_with_store(
        settings: Settings,
        store: Arc<dyn Store>,
        reconciler: Option<Arc<dyn Reconciler>>,
    ) -> anyhow::Result<Self> {
        let listener = crate::edge::server::bind(&settings.listen)
            .await
            .with_context(|| format!("cannot listen on {}", settings.listen))?;
        let admin_listener = match &settings.admin_listen {
            Some(addr) if settings.role != Role::Worker => Some(
                crate::edge::server::bind(addr)
                    .await
                    .with_context(|| format!("cannot listen on {addr}"))?,
            ),
            _ => None,
        };
        let state = AppState {
            store: store.clone(),
            secrets: WebhookSecrets::new(
                settings.webhook_secret.as_bytes(),
                settings
                    .webhook_secret_previous
                    .as_ref()
                    .map(|s| s.as_bytes().to_vec()),
            ),
            admin_token: settings.admin_token.as_str().into(),
            metrics: telemetry::prometheus(),
            webhook: webhook_limits(&EdgeSettings::default()),
        };
        let client = match &settings.github {
            Some(gh) => Some(github_client(gh)?),
            None => None,
        };
        let reconciler = match (reconciler, &settings.github, &client) {
            (Some(r), _, _) => Some(r),
            (None, Some(gh), Some(client)) => Some(github_reconciler(gh, client, store.clone())),
            _ => None,
        };
        // Where syncs run, the missed-push pass runs too: it needs the App
        // and it queues what those workers run.
        let head_poll = match (&settings.github, client) {
            (Some(gh), Some(client))
                if settings.role != Role::Ingress && settings.worker.concurrency > 0 =>
            {
                gh.reconcile_interval
                    .map(|every| HeadPoll::new(store.clone(), client, every))
            }
            _ => None,
        };
        let workers = match reconciler {
            _ if settings.role == Role::Ingress => None,
            Some(r) if settings.worker.concurrency > 0 => {
                Some(WorkerPool::new(store, r, settings.worker.clone()))
            }
            Some(_) => {
                tracing::warn!("--workers 0: this process runs no sync jobs");
                None
            }
            None => {
                tracing::warn!(
                    "no GitHub App configured (GITHUB_CONNECTOR_APP_ID and a private key): sync jobs are \
                     recorded and stay `queued` until a worker with credentials runs them"
                );
                None
            }
        };
        Ok(Self {
            listener,
            admin_listener,
            state,
            workers,
            head_poll,
            role: settings.role,
            body_retention: settings.delivery_body_retention,
            history_retention: settings.history_retention,
            edge: EdgeSettings::default(),
            shutdown: CancellationToken::new(),
            recovery: crate::recovery::Recovery::new(settings.github.clone()),
        })
    }

    /// The self-check's public URL and the redelivery settings (off by default).
    pub fn with_recovery(mut self, settings: crate::recovery::RecoverySettings) -> Self {
        self.recovery.settings = settings;
        self
    }

    /// The edge's limits (timeouts, connection cap, body budget); the
    /// defaults otherwise.
    pub fn with_edge(mut self, edge: EdgeSettings) -> Self {
        self.state.webhook = webhook_limits(&edge);
        self.edge = edge;
        self
    }

    pub fn port(&self) -> u16 {
        self.listener.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub fn admin_port(&self) -> u16 {
        self.admin_listener
            .as_ref()
            .map(|l| l.local_addr().map(|a| a.port()).unwrap_or(0))
            .unwrap_or(self.port())
    }

    pub fn store(&self) -> Arc<dyn Store> {
        self.state.store.clone()
    }

    /// Cancel it to stop the application gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            listener,
            admin_listener,
            state,
            workers,
            head_poll,
            role,
            body_retention,
            history_retention,
            edge,
            shutdown,
            recovery,
        } = self;
        let health = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz));
        let health_and_metrics = health.clone().route("/metrics", get(metrics));
        let public = Router::new().merge(ingress::router());
        let admin = admin::router(state.clone());
        let listeners = if admin_listener.is_some() { 2 } else { 1 };
        let max_connections = fd_limit::fit_connection_cap(listeners, edge.max_connections);
        let limits = |name| ListenerLimits {
            name,
            max_connections,
            header_read_timeout: edge.header_read_timeout,
            idle_timeout: edge.idle_timeout,
        };
        let mut servers = tokio::task::JoinSet::new();
        match admin_listener {
            // A worker serves nothing but its health and metrics.
            _ if role == Role::Worker => {
                tracing::info!(address = %listener.local_addr()?, "worker: serving /healthz, /readyz and /metrics");
                servers.spawn(serve(
                    listener,
                    health_and_metrics,
                    state.clone(),
                    limits("public"),
                    shutdown.clone(),
                ));
            }
            Some(admin_listener) => {
                tracing::info!(address = %listener.local_addr()?, "serving the webhook");
                tracing::info!(address = %admin_listener.local_addr()?, "serving the admin API");
                // Metrics describe the service to its operators, not to the internet.
                let public_health = if edge.public_metrics {
                    health_and_metrics.clone()
                } else {
                    health
                };
                servers.spawn(serve(
                    listener,
                    public.merge(public_health),
                    state.clone(),
                    limits("public"),
                    shutdown.clone(),
                ));
                servers.spawn(serve(
                    admin_listener,
                    admin.merge(health_and_metrics),
                    state.clone(),
                    limits("admin"),
                    shutdown.clone(),
                ));
            }
            None => {
                tracing::info!(address = %listener.local_addr()?, "serving the webhook and the admin API");
                servers.spawn(serve(
                    listener,
                    public.merge(admin).merge(health_and_metrics),
                    state.clone(),
                    limits("public"),
                    shutdown.clone(),
                ));
            }
        }
        if let Some(pool) = workers {
            let token = shutdown.clone();
            servers.spawn(async move {
                pool.run_until_stopped(token).await;
                Ok(())
            });
        }
        if let Some(poll) = head_poll {
            let token = shutdown.clone();
            servers.spawn(async move {
                poll.run_until_stopped(token).await;
                Ok(())
            });
        }
        // Never fails and never delays start-up: it only reads GitHub and logs.
        servers.spawn(recovery.run(state.store.clone(), shutdown.clone()));
        if role != Role::Worker {
            servers.spawn(prune(
                state.store.clone(),
                body_retention,
                history_retention,
                shutdown.clone(),
            ));
        }
        let mut result = Ok(());
        while let Some(joined) = servers.join_next().await {
            let outcome = joined.map_err(anyhow::Error::from).and_then(|r| r);
            if let Err(e) = outcome {
                tracing::error!(error = ?e, "a component stopped with an error; shutting down");
                shutdown.cancel();
                result = Err(e);
            }
        }
        result
    }
}

/// One client per process: syncs and the missed-push pass share its token
/// cache and its view of each installation's rate budget.
fn github_client(gh: &GithubAppConfig) -> anyhow::Result<Arc<GithubClient>> {
    let auth = AppAuth::new(gh.app_id, &gh.private_key_pem)?;
    Ok(Arc::new(GithubClient::new(
        &gh.api_url,
        auth,
        &gh.fetch.timeouts,
    )?))
}

fn github_reconciler(
    gh: &GithubAppConfig,
    client: &Arc<GithubClient>,
    store: Arc<dyn Store>,
) -> Arc<dyn Reconciler> {
    tracing::info!(app_id = gh.app_id, api = %gh.api_url, "workers sync through the GitHub App");
    Arc::new(GithubReconciler::new(client.clone(), store, gh.fetch))
}

pub async fn open_store(
    database_url: &str,
    options: StoreOptions,
) -> anyhow::Result<Arc<dyn Store>> {
    check_database_url(database_url)?;
    let store = SqlStore::connect(database_url, options)
        .await
        .with_context(|| format!("cannot open the store {}", redact_url(database_url)))?;
    Ok(Arc::new(store))
}

fn webhook_limits(edge: &EdgeSettings) -> WebhookLimits {
    WebhookLimits {
        budget: BodyBudget::new(edge.body_budget_bytes),
        read_timeout: edge.body_read_timeout,
    }
}

async fn serve(
    listener: TcpListener,
    router: Router<AppState>,
    state: AppState,
    limits: ListenerLimits,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let app = router
        .layer(middleware::from_fn(http_metrics::record_latency))
        .layer(TraceLayer::new_for_http())
        .with_state(state);
    crate::edge::server::serve(listener, app, limits, shutdown).await
}

async fn readyz(State(app): State<AppState>) -> Response {
    match app.store.ping().await {
        Ok(()) => "ready".into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "store unreachable").into_response()
        }
    }
}

async fn metrics(State(app): State<AppState>) -> Response {
    // Queue depth is read at scrape time rather than tracked incrementally, so
    // it is right even after a restart.
    match app.store.sync_event_counts().await {
        Ok(counts) => {
            for &status in SyncStatus::ALL {
                let n = counts
                    .iter()
                    .find(|(s, _)| *s == status)
                    .map(|(_, n)| *n)
                    .unwrap_or(0);
                metrics::gauge!("connectord_sync_events", "status" => status.as_str())
                    .set(n as f64);
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read queue depth"),
    }
    metrics::gauge!("connectord_webhook_body_bytes_buffered").set(app.webhook.budget.used() as f64);
    app.metrics.render().into_response()
}

/// How long pushes are remembered for the stale-push rule: GitHub redelivers
/// for at most 3 days (7 on GitHub Enterprise Server).
const PUSH_HISTORY: Duration = Duration::from_secs(14 * 86_400);

/// Revisions of a target readable with `?revision=`: the newest this many…
const REVISIONS_KEPT: i64 = 10;
/// …and any younger than this, so a consumer paging an old revision has an
/// hour to finish.
const REVISION_MIN_AGE: Duration = Duration::from_secs(3600);
/// Unreferenced blobs younger than this are never collected: a sync writes
/// its blobs before the completion that points documents at them, and no
/// sync runs a day (one that does is refused at completion and retried;
/// store/sql/blobs.rs).
const BLOB_GRACE: Duration = Duration::from_secs(86_400);

/// Hourly: drops retained delivery bodies past their retention, push history
/// past [`PUSH_HISTORY`], finished syncs and deliveries past theirs, and
/// content no retained revision shows ([`REVISIONS_KEPT`], [`BLOB_GRACE`]).
async fn prune(
    store: Arc<dyn Store>,
    retention: Duration,
    history: Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let cutoff = crate::store::models::now_ms() - retention.as_millis() as i64;
        match store.prune_delivery_bodies(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deliveries = n, "dropped delivery bodies past retention"),
            Err(e) => tracing::warn!(error = %e, "pruning delivery bodies failed"),
        }
        let cutoff = crate::store::models::now_ms() - PUSH_HISTORY.as_millis() as i64;
        if let Err(e) = store.prune_push_history(cutoff).await {
            tracing::warn!(error = %e, "pruning push history failed");
        }
        let cutoff = crate::store::models::now_ms() - history.as_millis() as i64;
        match store.prune_history(cutoff).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                rows = n,
                "pruned finished syncs and deliveries past retention"
            ),
            Err(e) => tracing::warn!(error = %e, "pruning history failed"),
        }
        let now = crate::store::models::now_ms();
        let content = crate::store::models::ContentRetention {
            keep_revisions: REVISIONS_KEPT,
            revisions_before: now - REVISION_MIN_AGE.as_millis() as i64,
            blobs_before: now - BLOB_GRACE.as_millis() as i64,
        };
        match store.prune_content(content).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(rows = n, "pruned old revisions and unreferenced blobs"),
            Err(e) => tracing::warn!(error = %e, "pruning content failed"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}
