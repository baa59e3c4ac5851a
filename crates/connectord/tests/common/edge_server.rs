//! `connectord serve` with a separate admin listener, for the edge tests: the
//! hostile clients hit the public listener, the test reads `/metrics` and the
//! admin API on the other.

use super::process::{free_port, Server};
use super::raw_http;
use serde_json::{json, Value};
use std::time::Duration;

pub const SECRET: &str = "edge-test-webhook-secret";
pub const TOKEN: &str = "edge-test-admin-token";
pub const MIB: usize = 1 << 20;

pub struct EdgeServer {
    // Dropped first: the process dies before its directory goes.
    pub server: Server,
    pub admin: String,
    pub client: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl EdgeServer {
    /// Starts `serve --admin-listen … ARGS` with known secrets.
    pub async fn start(args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().to_path_buf();
        let admin_listen = format!("127.0.0.1:{}", free_port());
        let mut all = vec!["--admin-listen", admin_listen.as_str()];
        all.extend_from_slice(args);
        let server = Server::start(
            &work,
            &work.join("data"),
            &all,
            &[
                ("GITHUB_CONNECTOR_APP_WEBHOOK_SECRET", SECRET),
                ("CONNECTORD_ADMIN_TOKEN", TOKEN),
            ],
        )
        .await;
        Self {
            server,
            admin: format!("http://{admin_listen}"),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .unwrap(),
            _dir: dir,
        }
    }

    pub fn port(&self) -> u16 {
        self.server
            .base()
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in base URL")
    }

    pub fn pid(&self) -> u32 {
        self.server.pid()
    }

    /// `/metrics` from the admin listener.
    pub async fn metrics(&self) -> String {
        let res = self
            .client
            .get(format!("{}/metrics", self.admin))
            .send()
            .await
            .expect("scrape");
        assert!(res.status().is_success(), "{}", res.status());
        res.text().await.unwrap()
    }

    pub async fn metric(&self, name: &str, labels: &[&str]) -> f64 {
        raw_http::metric(&self.metrics().await, name, labels).unwrap_or(0.0)
    }

    /// Polls `/metrics` until `name{labels}` satisfies `ok`, for up to `within`.
    pub async fn wait_metric(
        &self,
        name: &str,
        labels: &[&str],
        within: Duration,
        ok: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let v = self.metric(name, labels).await;
            if ok(v) {
                return v;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name}{labels:?} still {v} after {within:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn admin_get(&self, path: &str) -> Value {
        let res = self
            .client
            .get(format!("{}{path}", self.admin))
            .bearer_auth(TOKEN)
            .send()
            .await
            .expect("admin GET");
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().await.unwrap()
    }

    async fn admin_post(&self, path: &str, body: Value) -> Value {
        let res = self
            .client
            .post(format!("{}{path}", self.admin))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .expect("admin POST");
        assert!(res.status().is_success(), "{path}: {}", res.status());
        res.json().await.unwrap()
    }

    /// Tracks `octo/docs` (repository 99, branch main) of installation 42.
    pub async fn track_target(&self) {
        let connector = self
            .admin_post(
                "/v1/admin/connectors",
                json!({"type": "github", "installationId": 42}),
            )
            .await;
        let id = connector["id"].as_str().unwrap();
        self.admin_post(
            &format!("/v1/admin/connectors/{id}/targets"),
            json!({"repositoryFullName": "octo/docs", "repositoryId": 99, "branch": "main"}),
        )
        .await;
    }

    /// Recorded deliveries (the admin API).
    pub async fn delivery_count(&self) -> usize {
        self.admin_get("/v1/admin/deliveries?limit=200").await["items"]
            .as_array()
            .map_or(0, Vec::len)
    }

    /// Posts a signed delivery (a fresh connection, as GitHub would).
    pub async fn deliver(&self, event: &str, delivery: &str, body: Vec<u8>) -> reqwest::Response {
        reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
            .post(self.server.webhook_url())
            .header("content-type", "application/json")
            .header("x-github-event", event)
            .header("x-github-delivery", delivery)
            .header(
                "x-hub-signature-256",
                connectord::ingress::signature::sign(SECRET.as_bytes(), &body),
            )
            .body(body)
            .send()
            .await
            .expect("deliver")
    }
}

/// A push to the tracked target from `before` to `after`, each a number
/// written as a 40-digit SHA.
pub fn push(before: u64, after: u64) -> Vec<u8> {
    let (before, after) = (format!("{before:040x}"), format!("{after:040x}"));
    serde_json::to_vec(&super::push_payload(
        42,
        99,
        "octo/docs",
        "main",
        &before,
        &after,
    ))
    .unwrap()
}

/// A `ping` body padded to about `size` bytes.
pub fn ping(size: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({"zen": "z".repeat(size.saturating_sub(32)), "hook_id": 1})).unwrap()
}
