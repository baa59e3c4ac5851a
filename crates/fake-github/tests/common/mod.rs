//! Helpers shared by the fake's integration tests.
#![allow(dead_code)]

use std::process::Command;

use fake_github::{FakeGitHub, GitRepo, TEST_APP_PRIVATE_KEY_PEM, TEST_APP_PUBLIC_KEY_PEM};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

pub const APP_ID: i64 = 4242;
pub const INSTALLATION: i64 = 77;

pub fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Signs `claims` with the test App key.
pub fn sign(claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(TEST_APP_PRIVATE_KEY_PEM.as_bytes()).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).unwrap()
}

/// A JWT the way GitHub recommends: iat 60 s in the past, exp 9 min ahead.
pub fn app_jwt() -> String {
    let now = now();
    sign(&json!({"iat": now - 60, "exp": now + 540, "iss": APP_ID}))
}

/// A client that does not follow redirects and sends a User-Agent.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .user_agent("fake-github-tests")
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

pub async fn start() -> FakeGitHub {
    let gh = FakeGitHub::start(APP_ID, TEST_APP_PUBLIC_KEY_PEM).await;
    gh.add_installation(INSTALLATION);
    gh
}

/// POSTs the access-token request with `jwt`.
pub async fn mint(gh: &FakeGitHub, installation: i64, jwt: &str) -> reqwest::Response {
    client()
        .post(format!(
            "{}/app/installations/{installation}/access_tokens",
            gh.base_url()
        ))
        .bearer_auth(jwt)
        .header("accept", "application/vnd.github+json")
        .send()
        .await
        .unwrap()
}

/// A fresh installation token.
pub async fn token(gh: &FakeGitHub, installation: i64) -> String {
    let resp = mint(gh, installation, &app_jwt()).await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    body["token"].as_str().unwrap().to_string()
}

/// An authenticated GET of `path` (relative to the base URL) with `accept`.
pub async fn get(gh: &FakeGitHub, token: &str, path: &str, accept: &str) -> reqwest::Response {
    client()
        .get(format!("{}{path}", gh.base_url()))
        .bearer_auth(token)
        .header("accept", accept)
        .header("x-github-api-version", "2022-11-28")
        .send()
        .await
        .unwrap()
}

pub async fn get_json(gh: &FakeGitHub, token: &str, path: &str) -> (u16, Value) {
    let resp = get(gh, token, path, "application/vnd.github+json").await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Runs plain git (outside the fake's wrapper) in the repository.
pub fn git(repo: &GitRepo, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(repo.path())
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
}
