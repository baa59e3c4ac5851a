//! The real application syncing through the GitHub double: its App settings,
//! and tracking a repository's `main` through the admin API.

use super::{spawn_app_with, TestApp, TestOptions};
use connectord::github::{FetchSettings, GithubAppConfig};
use fake_github::{FakeGitHub, GitRepo, TEST_APP_PRIVATE_KEY_PEM, TEST_APP_PUBLIC_KEY_PEM};
use reqwest::StatusCode;
use serde_json::{json, Value};

/// The App id the double is started with.
pub const APP_ID: i64 = 4242;

/// The double with one installation and one repository on it.
pub async fn fake_with_repo(
    full_name: &str,
    installation: i64,
    repo_id: i64,
) -> (FakeGitHub, GitRepo) {
    let fake = FakeGitHub::start(APP_ID, TEST_APP_PUBLIC_KEY_PEM).await;
    fake.add_installation(installation);
    let repo = fake.add_repo(full_name, repo_id, installation);
    (fake, repo)
}

pub fn github_config(api_url: String, fetch: FetchSettings) -> GithubAppConfig {
    GithubAppConfig {
        app_id: APP_ID,
        private_key_pem: TEST_APP_PRIVATE_KEY_PEM.into(),
        api_url,
        fetch,
        reconcile_interval: None,
    }
}

/// The real application with `api_url` as its GitHub App API and the real
/// GitHub reconciler (no scripted one); `opts.reconciler` must be None.
pub async fn spawn_with_github(
    api_url: String,
    fetch: FetchSettings,
    opts: TestOptions,
) -> TestApp {
    assert!(
        opts.reconciler.is_none(),
        "the real GitHub reconciler runs here"
    );
    spawn_app_with(TestOptions {
        github: Some(github_config(api_url, fetch)),
        ..opts
    })
    .await
}

impl TestApp {
    /// Creates connector `installation` and a target on `main` of
    /// `full_name` with `extra` fields (`pathPrefix`, `maxFileBytes`);
    /// returns (target, initial event).
    pub async fn track_main(
        &self,
        installation: i64,
        full_name: &str,
        repo_id: i64,
        extra: Value,
    ) -> (String, String) {
        let connector = self.create_connector(installation).await;
        let mut body =
            json!({"repositoryFullName": full_name, "repositoryId": repo_id, "branch": "main"});
        if let Value::Object(extra) = extra {
            for (k, v) in extra {
                body[k] = v;
            }
        }
        let (status, created) = self
            .post(&format!("/v1/admin/connectors/{connector}/targets"), body)
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        (
            created["id"].as_str().expect("id").to_owned(),
            created["initialSyncEvent"]["id"]
                .as_str()
                .expect("initial event")
                .to_owned(),
        )
    }

    /// The paths of the target's current documents (up to 1,000), in order.
    pub async fn document_paths(&self, target: &str) -> Vec<String> {
        let (status, body) = self
            .get(&format!("/v1/admin/targets/{target}/documents?limit=1000"))
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|d| d["path"].as_str().expect("path").to_owned())
            .collect()
    }
}
