#![allow(dead_code)]
//! Shared by every test binary (each uses a different subset, hence the allow).
//! `spawn_app()`: the real application on port 0 with a fresh database per
//! test (SQLite, or PostgreSQL under [`conformance!`]), plus typed helpers for
//! the webhook and the admin API.

pub mod backend;
pub mod content;
pub mod edge_server;
pub mod github;
pub mod process;
pub mod raw_http;

use async_trait::async_trait;
use connectord::config::Settings;
use connectord::github::GithubAppConfig;
use connectord::ingress::signature::sign;
use connectord::startup::Application;
use connectord::store::models::{ClaimedJob, SyncResult};
use connectord::store::Store;
use connectord::sync::policy::{LeasePolicy, RetryPolicy};
use connectord::sync::worker::WorkerSettings;
use connectord::sync::{ReconcileError, Reconciler};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "test-webhook-secret";
pub const ADMIN_TOKEN: &str = "test-admin-token";

pub fn sha(c: char) -> String {
    std::iter::repeat_n(c, 40).collect()
}

pub struct TestApp {
    pub base: String,
    pub admin_base: String,
    pub client: reqwest::Client,
    pub store: Arc<dyn Store>,
    pub shutdown: CancellationToken,
    pub db_url: String,
    pub dir: Arc<tempfile::TempDir>,
    pub handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

#[derive(Clone)]
pub struct TestOptions {
    pub reconciler: Option<Arc<dyn Reconciler>>,
    pub worker: WorkerSettings,
    pub separate_admin: bool,
    pub previous_secret: Option<String>,
    /// Reuse a data directory (a restart after a crash).
    pub dir: Option<Arc<tempfile::TempDir>>,
    /// Instead of [`SECRET`].
    pub webhook_secret: Option<String>,
    /// Sync through this GitHub (the fake); needs `reconciler: None`.
    pub github: Option<GithubAppConfig>,
    pub role: connectord::config::Role,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            reconciler: None,
            worker: fast_workers(),
            separate_admin: false,
            previous_secret: None,
            dir: None,
            webhook_secret: None,
            github: None,
            role: connectord::config::Role::All,
        }
    }
}

/// Short leases and backoff so queue behaviour shows within a test's time.
pub fn fast_workers() -> WorkerSettings {
    WorkerSettings {
        concurrency: 2,
        max_jobs_per_installation: 4,
        retry: RetryPolicy {
            max_attempts: 8,
            base: Duration::from_millis(20),
            cap: Duration::from_millis(200),
        },
        lease: LeasePolicy::new(Duration::from_millis(600)),
        poll_interval: Duration::from_millis(50),
        shutdown_grace: Duration::from_millis(200),
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(TestOptions::default()).await
}

pub fn settings(opts: &TestOptions, db_url: &str) -> Settings {
    Settings {
        role: opts.role,
        listen: "127.0.0.1:0".into(),
        admin_listen: opts.separate_admin.then(|| "127.0.0.1:0".into()),
        database_url: db_url.to_owned(),
        database_max_connections: 8,
        webhook_secret: opts.webhook_secret.clone().unwrap_or_else(|| SECRET.into()),
        webhook_secret_previous: opts.previous_secret.clone(),
        admin_token: ADMIN_TOKEN.into(),
        worker: opts.worker.clone(),
        history_retention: Duration::from_secs(30 * 86_400),
        delivery_body_retention: Duration::from_secs(7 * 86_400),
        github: opts.github.clone(),
    }
}

pub async fn spawn_app_with(opts: TestOptions) -> TestApp {
    if std::env::var_os("TEST_LOG").is_some() {
        connectord::telemetry::init_logging(false);
    }
    let dir = opts
        .dir
        .clone()
        .unwrap_or_else(|| Arc::new(tempfile::tempdir().expect("tempdir")));
    let db_url = backend::database_url(backend::current(), dir.path()).await;
    let app = Application::build(settings(&opts, &db_url), opts.reconciler.clone())
        .await
        .expect("build app");
    let base = format!("http://127.0.0.1:{}", app.port());
    let admin_base = format!("http://127.0.0.1:{}", app.admin_port());
    let store = app.store();
    let shutdown = app.shutdown_token();
    let handle = tokio::spawn(app.run_until_stopped());
    TestApp {
        base,
        admin_base,
        client: reqwest::Client::new(),
        store,
        shutdown,
        db_url,
        dir,
        handle: Some(handle),
    }
}

impl TestApp {
    pub fn webhook_url(&self) -> String {
        format!("{}/v1/webhooks/connectors/github", self.base)
    }

    /// Posts `body` signed with the test secret, as GitHub would.
    pub async fn deliver(
        &self,
        event: &str,
        delivery_id: &str,
        body: &[u8],
    ) -> (StatusCode, String) {
        let res = self
            .client
            .post(self.webhook_url())
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery_id)
            .header("x-hub-signature-256", sign(SECRET.as_bytes(), body))
            .body(body.to_vec())
            .send()
            .await
            .expect("webhook request");
        (res.status(), res.text().await.expect("body"))
    }

    pub async fn deliver_json(
        &self,
        event: &str,
        delivery_id: &str,
        payload: &Value,
    ) -> (StatusCode, Value) {
        let (status, text) = self
            .deliver(event, delivery_id, payload.to_string().as_bytes())
            .await;
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Posts with exactly these headers and body (for bad-input tests).
    pub async fn post_raw(
        &self,
        headers: &[(&str, String)],
        body: Vec<u8>,
    ) -> (StatusCode, String) {
        let mut req = self.client.post(self.webhook_url());
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let res = req.body(body).send().await.expect("webhook request");
        (res.status(), res.text().await.expect("body"))
    }

    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.admin_base))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("admin request");
        let status = res.status();
        let text = res.text().await.expect("body");
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.admin(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.admin(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn create_connector(&self, installation_id: i64) -> String {
        let (status, body) = self
            .post(
                "/v1/admin/connectors",
                json!({"type": "github", "installationId": installation_id}),
            )
            .await;
        assert!(status.is_success(), "{status} {body}");
        body["id"].as_str().expect("id").to_owned()
    }

    /// Creates a target; returns (target id, initial sync event id).
    pub async fn create_target(
        &self,
        connector: &str,
        full_name: &str,
        repo_id: Option<i64>,
        branch: &str,
    ) -> (String, String) {
        let (status, body) = self
            .post(
                &format!("/v1/admin/connectors/{connector}/targets"),
                json!({"repositoryFullName": full_name, "repositoryId": repo_id, "branch": branch}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        (
            body["id"].as_str().expect("id").to_owned(),
            body["initialSyncEvent"]["id"]
                .as_str()
                .expect("event")
                .to_owned(),
        )
    }

    pub async fn sync_event(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/admin/sync-events/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    pub async fn target(&self, id: &str) -> Value {
        let (status, body) = self.get(&format!("/v1/admin/targets/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// All sync events of a target, oldest first.
    pub async fn events_of(&self, target: &str) -> Vec<Value> {
        let (_, body) = self
            .get(&format!(
                "/v1/admin/sync-events?targetId={target}&limit=200"
            ))
            .await;
        let mut items = body["items"].as_array().cloned().unwrap_or_default();
        items.reverse();
        items
    }

    /// Waits (up to 10 s) until the sync event has `status`.
    pub async fn wait_for_status(&self, event: &str, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let e = self.sync_event(event).await;
            if e["status"] == status {
                return e;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "event {event} never reached {status}: {e}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            h.await.expect("join").expect("app run");
        }
    }
}

/// A push payload as GitHub sends it (the fields connectord reads, plus noise).
pub fn push_payload(
    installation: i64,
    repo_id: i64,
    full_name: &str,
    branch: &str,
    before: &str,
    after: &str,
) -> Value {
    json!({
        "ref": format!("refs/heads/{branch}"),
        "before": before,
        "after": after,
        "created": before == sha('0'),
        "deleted": after == sha('0'),
        "forced": false,
        "base_ref": null,
        "compare": "https://github.com/x/y/compare",
        "commits": [],
        "head_commit": if after == sha('0') { Value::Null } else { json!({"id": after}) },
        "repository": {"id": repo_id, "full_name": full_name, "name": full_name.split('/').nth(1), "pushed_at": 1700000000},
        "pusher": {"name": "octocat"},
        "sender": {"login": "octocat"},
        "installation": {"id": installation, "node_id": "x"},
    })
}

type Script = dyn Fn(&ClaimedJob, usize) -> Result<SyncResult, ReconcileError> + Send + Sync;

/// A reconciler whose answers the test scripts. It records every call and the
/// most jobs it ever ran at once for one target.
pub struct ScriptedReconciler {
    script: Box<Script>,
    pub delay: Duration,
    pub calls: Mutex<Vec<ClaimedJob>>,
    running: Mutex<HashMap<String, usize>>,
    pub max_concurrent_per_target: AtomicUsize,
}

impl ScriptedReconciler {
    pub fn new(
        script: impl Fn(&ClaimedJob, usize) -> Result<SyncResult, ReconcileError>
            + Send
            + Sync
            + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            script: Box::new(script),
            delay: Duration::ZERO,
            calls: Mutex::new(vec![]),
            running: Mutex::new(HashMap::new()),
            max_concurrent_per_target: AtomicUsize::new(0),
        })
    }

    pub fn with_delay(
        delay: Duration,
        script: impl Fn(&ClaimedJob, usize) -> Result<SyncResult, ReconcileError>
            + Send
            + Sync
            + 'static,
    ) -> Arc<Self> {
        Arc::new(Self {
            script: Box::new(script),
            delay,
            calls: Mutex::new(vec![]),
            running: Mutex::new(HashMap::new()),
            max_concurrent_per_target: AtomicUsize::new(0),
        })
    }

    /// Succeeds, reporting the job's head (or a fixed one for head-less jobs).
    pub fn ok() -> Arc<Self> {
        Self::new(|job, _| {
            Ok(SyncResult {
                head_sha: job.job.head_sha.clone().or(Some(sha('f'))),
                ..Default::default()
            })
        })
    }

    pub fn call_count(&self) -> usize {
        self.calls.lock().expect("lock").len()
    }

    pub fn heads_run(&self) -> Vec<Option<String>> {
        self.calls
            .lock()
            .expect("lock")
            .iter()
            .map(|j| j.job.head_sha.clone())
            .collect()
    }
}

#[async_trait]
impl Reconciler for ScriptedReconciler {
    async fn reconcile(&self, job: &ClaimedJob) -> Result<SyncResult, ReconcileError> {
        let n = {
            let mut calls = self.calls.lock().expect("lock");
            calls.push(job.clone());
            calls.len()
        };
        let target = job.job.connector_target_id.clone();
        {
            let mut running = self.running.lock().expect("lock");
            let c = running.entry(target.clone()).or_default();
            *c += 1;
            self.max_concurrent_per_target
                .fetch_max(*c, Ordering::SeqCst);
        }
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        let result = (self.script)(job, n);
        *self
            .running
            .lock()
            .expect("lock")
            .entry(target)
            .or_default() -= 1;
        result
    }
}

/// GitHub's example payloads, kept in the repository at `tests/fixtures/`
/// (provenance and licence in `tests/fixtures/README.md`; override the path with
/// `CONNECTORD_WEBHOOK_EXAMPLES`). Missing is a failure, not a skip.
pub fn fixtures_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CONNECTORD_WEBHOOK_EXAMPLES") {
        return PathBuf::from(p);
    }
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/webhooks-examples.json");
    assert!(
        path.exists(),
        "GitHub's webhook examples are expected at {}; set CONNECTORD_WEBHOOK_EXAMPLES to their path",
        path.display()
    );
    path
}
