//! App JWT and token checks, failure injection, rate-limit headers, counters.

mod common;

use std::time::{Duration, Instant};

use common::*;
use fake_github::Endpoint;
use serde_json::{json, Value};

async fn message(resp: reqwest::Response) -> String {
    let body: Value = resp.json().await.unwrap();
    body["message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn app_jwt_is_checked_like_github() {
    let gh = start().await;
    let now = now();

    let resp = mint(&gh, INSTALLATION, &app_jwt()).await;
    assert_eq!(resp.status(), 201);
    let body: Value = resp.json().await.unwrap();
    let token = body["token"].as_str().unwrap();
    assert!(token.starts_with("ghs_") && token.len() > 40, "{token}");
    let expires =
        chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
    assert!((expires.timestamp() - (now + 3600)).abs() <= 5);
    assert_eq!(body["permissions"], json!({"contents": "read"}));
    assert_eq!(body["repository_selection"], "selected");

    // iss as a string is accepted too.
    let iss_string = sign(&json!({"iat": now - 60, "exp": now + 540, "iss": APP_ID.to_string()}));
    assert_eq!(mint(&gh, INSTALLATION, &iss_string).await.status(), 201);

    let rejected = [
        (
            "expired",
            sign(&json!({"iat": now - 700, "exp": now - 100, "iss": APP_ID})),
        ),
        (
            "longer than 10 min",
            sign(&json!({"iat": now - 60, "exp": now + 640, "iss": APP_ID})),
        ),
        (
            "iat in the future",
            sign(&json!({"iat": now + 120, "exp": now + 300, "iss": APP_ID})),
        ),
        (
            "wrong app",
            sign(&json!({"iat": now - 60, "exp": now + 540, "iss": APP_ID + 1})),
        ),
        ("no iss", sign(&json!({"iat": now - 60, "exp": now + 540}))),
        ("garbage", "not.a.jwt".to_string()),
    ];
    for (why, jwt) in rejected {
        let resp = mint(&gh, INSTALLATION, &jwt).await;
        assert_eq!(resp.status(), 401, "{why}");
    }
    // A tampered payload breaks the RS256 signature.
    let good = app_jwt();
    let parts: Vec<&str> = good.split('.').collect();
    let forged_claims = json!({"iat": now - 60, "exp": now + 540, "iss": APP_ID, "x": 1});
    use base64::Engine as _;
    let forged_payload =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(forged_claims.to_string());
    let forged = format!("{}.{forged_payload}.{}", parts[0], parts[2]);
    let resp = mint(&gh, INSTALLATION, &forged).await;
    assert_eq!(resp.status(), 401);
    assert_eq!(message(resp).await, "A JSON web token could not be decoded");
    // No Authorization at all.
    let resp = client()
        .post(format!(
            "{}/app/installations/{INSTALLATION}/access_tokens",
            gh.base_url()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    // Unknown installation.
    assert_eq!(mint(&gh, 999, &app_jwt()).await.status(), 404);

    assert_eq!(gh.tokens_issued(), 2);
    assert_eq!(gh.calls(Endpoint::AccessToken), 11);
    assert_eq!(gh.total_repo_calls(), 0);
}

#[tokio::test]
async fn installation_tokens_gate_repositories() {
    let gh = start().await;
    gh.add_installation(88);
    let repo = gh.add_repo("acme/docs", 1, INSTALLATION);
    repo.write("a", b"a");
    repo.commit("c");
    let tok = token(&gh, INSTALLATION).await;
    let other = token(&gh, 88).await;
    let path = "/repos/acme/docs/git/ref/heads/main";

    assert_eq!(get_json(&gh, &tok, path).await.0, 200);
    let ghes = format!("/api/v3{path}");
    assert_eq!(
        get_json(&gh, &tok, &ghes).await.0,
        200,
        "GHES-style base URL"
    );
    let resp = get(&gh, "ghs_unknown", path, "*/*").await;
    assert_eq!(resp.status(), 401);
    assert_eq!(message(resp).await, "Bad credentials");
    assert_eq!(
        get_json(&gh, &other, path).await.0,
        404,
        "not this installation's repo"
    );
    let no_auth = client()
        .get(format!("{}{path}", gh.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(no_auth.status(), 401);
    let token_scheme = client()
        .get(format!("{}{path}", gh.base_url()))
        .header("authorization", format!("token {tok}"))
        .send()
        .await
        .unwrap();
    assert_eq!(token_scheme.status(), 200);

    gh.expire_all_tokens();
    let resp = get(&gh, &tok, path, "*/*").await;
    assert_eq!(resp.status(), 401);
    assert_eq!(message(resp).await, "Bad credentials");
    let fresh = token(&gh, INSTALLATION).await;
    assert_eq!(get_json(&gh, &fresh, path).await.0, 200);
    assert_eq!(gh.tokens_issued(), 3);

    gh.remove_repo("acme/docs");
    assert_eq!(get_json(&gh, &fresh, path).await.0, 404);
}

#[tokio::test]
async fn injected_failures_rate_limits_and_counters() {
    let gh = start().await;
    let repo = gh.add_repo("acme/docs", 1, INSTALLATION);
    repo.write("a.txt", b"alpha\n");
    let head = repo.commit("c");
    let blob = repo.ls_tree(&head)[0].3.clone();
    let tok = token(&gh, INSTALLATION).await;
    let blob_path = format!("/repos/acme/docs/git/blobs/{blob}");

    // Rate-limit headers on every REST answer, counting down.
    let first = get(&gh, &tok, "/repos/acme/docs/git/ref/heads/main", "*/*").await;
    assert_eq!(header(&first, "x-ratelimit-limit"), "5000");
    assert_eq!(header(&first, "x-ratelimit-resource"), "core");
    let remaining: i64 = header(&first, "x-ratelimit-remaining").parse().unwrap();
    let reset: i64 = header(&first, "x-ratelimit-reset").parse().unwrap();
    assert!(reset > now());
    let second = get(&gh, &tok, "/repos/acme/docs/git/ref/heads/main", "*/*").await;
    let next: i64 = header(&second, "x-ratelimit-remaining").parse().unwrap();
    assert_eq!(next, remaining - 1);
    assert!(gh.saw_api_version_header());

    // 502 twice on the chosen blob, then it works; other paths are untouched.
    gh.fail_next(&blob, 502, 2);
    assert_eq!(
        get_json(&gh, &tok, "/repos/acme/docs/git/trees/main")
            .await
            .0,
        200
    );
    assert_eq!(get_json(&gh, &tok, &blob_path).await.0, 502);
    assert_eq!(get_json(&gh, &tok, &blob_path).await.0, 502);
    assert_eq!(get_json(&gh, &tok, &blob_path).await.0, 200);
    assert_eq!(gh.blob_calls_for(&blob), 3);
    assert_eq!(gh.calls(Endpoint::Blob), 3);
    assert_eq!(gh.calls(Endpoint::Tree), 1);
    assert_eq!(gh.calls(Endpoint::Ref), 2);
    assert_eq!(gh.total_repo_calls(), 6);

    // Secondary rate limit: 403 + retry-after.
    gh.secondary_rate_limit_next("/git/trees/", 17, 1);
    let resp = get(
        &gh,
        &tok,
        "/repos/acme/docs/git/trees/main?recursive=1",
        "*/*",
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(header(&resp, "retry-after"), "17");
    assert_ne!(header(&resp, "x-ratelimit-remaining"), "0");
    assert!(message(resp).await.contains("secondary rate limit"));

    // Primary rate limit: 403 + remaining 0 + reset.
    gh.primary_rate_limit_next("/commits/", 90, 1);
    let resp = get(
        &gh,
        &tok,
        "/repos/acme/docs/commits/main",
        "application/vnd.github.sha",
    )
    .await;
    assert_eq!(resp.status(), 403);
    assert_eq!(header(&resp, "x-ratelimit-remaining"), "0");
    let reset: i64 = header(&resp, "x-ratelimit-reset").parse().unwrap();
    assert!((reset - (now() + 90)).abs() <= 2);
    assert!(message(resp)
        .await
        .contains("API rate limit exceeded for installation ID 77"));
    let resp = get(
        &gh,
        &tok,
        "/repos/acme/docs/commits/main",
        "application/vnd.github.sha",
    )
    .await;
    assert_eq!(resp.text().await.unwrap(), head);

    // Pinned remaining.
    gh.set_rate_limit_remaining(12);
    for _ in 0..2 {
        let resp = get(&gh, &tok, "/repos/acme/docs/git/ref/heads/main", "*/*").await;
        assert_eq!(header(&resp, "x-ratelimit-remaining"), "12");
    }

    // GitHub refuses requests without a User-Agent.
    let bare = reqwest::Client::new()
        .get(format!(
            "{}/repos/acme/docs/git/ref/heads/main",
            gh.base_url()
        ))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), 403);

    gh.reset_calls();
    assert_eq!(
        (
            gh.total_repo_calls(),
            gh.calls(Endpoint::Blob),
            gh.blob_calls_for(&blob)
        ),
        (0, 0, 0)
    );
}

#[tokio::test]
async fn delays_slow_down_matching_paths() {
    let gh = start().await;
    let repo = gh.add_repo("acme/docs", 1, INSTALLATION);
    repo.write("a.txt", b"a");
    repo.commit("c");
    let tok = token(&gh, INSTALLATION).await;
    gh.set_delay("/git/trees/", Duration::from_millis(400));
    let t = Instant::now();
    assert_eq!(
        get_json(&gh, &tok, "/repos/acme/docs/git/trees/main")
            .await
            .0,
        200
    );
    assert!(t.elapsed() >= Duration::from_millis(400));
    let t = Instant::now();
    assert_eq!(
        get_json(&gh, &tok, "/repos/acme/docs/git/ref/heads/main")
            .await
            .0,
        200
    );
    assert!(t.elapsed() < Duration::from_millis(400));
    gh.set_delay("/git/trees/", Duration::ZERO);
    let t = Instant::now();
    get_json(&gh, &tok, "/repos/acme/docs/git/trees/main").await;
    assert!(t.elapsed() < Duration::from_millis(400));
}
