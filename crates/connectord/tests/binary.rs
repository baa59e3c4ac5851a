//! End-to-end tests that drive the real `connectord` binary: `serve` on a free
//! port with a temporary data directory, and the CLI (`connectors`, `targets`,
//! `sync-events`, `deliveries`, `deliver`, `migrate`) against it.
//!
//! Every wait is bounded, every child is killed when its guard drops (even when
//! a test panics), and no setting leaks in from the host environment.

mod common;

use common::process::{run, str_arg, Server};
use common::sha;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::path::Path;
use std::time::Duration;

fn read_secret(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
        .trim()
        .to_owned()
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn push_payload(
    installation: i64,
    repo_id: i64,
    full_name: &str,
    before: &str,
    after: &str,
) -> Value {
    json!({
        "ref": "refs/heads/main",
        "before": before,
        "after": after,
        "created": false,
        "deleted": false,
        "forced": false,
        "base_ref": null,
        "compare": format!("https://github.com/{full_name}/compare/{}...{}", &before[..12], &after[..12]),
        "commits": [],
        "head_commit": {"id": after},
        "repository": {"id": repo_id, "full_name": full_name, "name": full_name.split('/').nth(1)},
        "pusher": {"name": "octocat"},
        "sender": {"login": "octocat"},
        "installation": {"id": installation},
    })
}

/// Posts a signed delivery straight to the webhook (not through the CLI).
async fn post_signed(
    url: &str,
    secret: &str,
    event: &str,
    delivery: &str,
    body: &[u8],
) -> (StatusCode, String) {
    let res = reqwest::Client::new()
        .post(url)
        .timeout(Duration::from_secs(10))
        .header("content-type", "application/json")
        .header("x-github-event", event)
        .header("x-github-delivery", delivery)
        .header(
            "x-hub-signature-256",
            connectord::ingress::signature::sign(secret.as_bytes(), body),
        )
        .body(body.to_vec())
        .send()
        .await
        .expect("post the delivery");
    let status = res.status();
    (status, res.text().await.unwrap_or_default())
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_generates_private_secrets_reuses_them_and_configured_secret_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let data = work.join("data");
    let secret_path = data.join("webhook-secret");
    let token_path = data.join("admin-token");

    // First start: nothing configured, nothing stored.
    let mut first = Server::start(work, &data, &[], &[]).await;
    let secret = read_secret(&secret_path);
    let token = read_secret(&token_path);
    assert!(
        secret.len() >= 32,
        "webhook secret too short: {} chars",
        secret.len()
    );
    assert!(
        token.len() >= 32,
        "admin token too short: {} chars",
        token.len()
    );
    assert_ne!(secret, token);
    #[cfg(unix)]
    {
        assert_eq!(mode(&secret_path), 0o600, "webhook-secret mode");
        assert_eq!(mode(&token_path), 0o600, "admin-token mode");
        // Raw delivery bodies and documents live in the database: only the
        // service's user may read it, its WAL or its shared memory.
        assert_eq!(mode(&data), 0o700, "data directory mode");
        for f in ["connectord.db", "connectord.db-wal", "connectord.db-shm"] {
            assert_eq!(mode(&data.join(f)), 0o600, "{f} mode");
        }
    }
    let log = first.log_text();
    assert!(
        log.contains(str_arg(&secret_path)),
        "stderr does not name {}:\n{log}",
        secret_path.display()
    );
    assert!(
        log.contains(str_arg(&token_path)),
        "stderr does not name {}:\n{log}",
        token_path.display()
    );
    assert!(!log.contains(&secret), "stderr contains the webhook secret");
    assert!(!log.contains(&token), "stderr contains the admin token");
    assert!(
        log.contains("GitHub App") && log.contains("/v1/webhooks/connectors/github"),
        "stderr does not say how to enter the secret in the GitHub App:\n{log}"
    );
    let secret_bytes = std::fs::read(&secret_path).unwrap();
    let token_bytes = std::fs::read(&token_path).unwrap();
    first.kill();

    // Second start: the stored values are reused, the files untouched.
    let second = Server::start(work, &data, &[], &[]).await;
    assert_eq!(std::fs::read(&secret_path).unwrap(), secret_bytes);
    assert_eq!(std::fs::read(&token_path).unwrap(), token_bytes);
    let log = second.log_text();
    assert!(!log.contains(&secret), "stderr contains the webhook secret");
    assert!(!log.contains(&token), "stderr contains the admin token");
    let ping = br#"{"zen":"Keep it logically awesome.","hook_id":1}"#;
    let (status, body) = post_signed(&second.webhook_url(), &secret, "ping", "ping-1", ping).await;
    assert_eq!(status, StatusCode::OK, "stored secret rejected: {body}");
    let res = reqwest::Client::new()
        .get(format!("{}/v1/admin/connectors", second.base()))
        .bearer_auth(&token)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK, "stored admin token rejected");
    drop(second);

    // Third start: a configured secret wins over the stored one.
    let configured = "configured-webhook-secret-for-this-test";
    let third = Server::start(
        work,
        &data,
        &[],
        &[("GITHUB_CONNECTOR_APP_WEBHOOK_SECRET", configured)],
    )
    .await;
    let (status, body) =
        post_signed(&third.webhook_url(), configured, "ping", "ping-2", ping).await;
    assert_eq!(status, StatusCode::OK, "configured secret rejected: {body}");
    let (status, body) = post_signed(&third.webhook_url(), &secret, "ping", "ping-3", ping).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the stored secret must not be accepted when another is configured: {body}"
    );
    let log = third.log_text();
    assert!(
        !log.contains(configured),
        "stderr contains the configured secret"
    );
    assert!(!log.contains(&token), "stderr contains the admin token");
    // The stored file is not overwritten by the configured value.
    assert_eq!(std::fs::read(&secret_path).unwrap(), secret_bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readme_flow_through_the_binary_queues_a_sync_with_head_and_delivery() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let data = work.join("data");
    let server = Server::start(work, &data, &[], &[]).await;
    let admin_url = server.base();
    let admin = ["--admin-url", &admin_url, "--data-dir", str_arg(&data)];
    let cli = |args: Vec<&str>| {
        let mut all = args;
        all.extend_from_slice(&admin);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run_cli = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run(work, &refs, &[]).await
    };

    let connector = run_cli(cli(vec!["connectors", "add", "--installation-id", "42"]))
        .await
        .ok()
        .json();
    let connector_id = connector["id"].as_str().expect("connector id").to_owned();
    assert_eq!(connector["installationId"], 42, "{connector}");

    let target = run_cli(cli(vec![
        "targets",
        "add",
        "--connector",
        &connector_id,
        "--repo",
        "octo/docs",
        "--repository-id",
        "99",
        "--branch",
        "main",
    ]))
    .await
    .ok()
    .json();
    let target_id = target["id"].as_str().expect("target id").to_owned();
    assert_eq!(target["repositoryFullName"], "octo/docs", "{target}");

    // A push to the tracked branch, signed with the stored secret by the CLI.
    let (a, b, c) = (sha('a'), sha('b'), sha('c'));
    let payload_path = work.join("push.json");
    std::fs::write(
        &payload_path,
        serde_json::to_vec_pretty(&push_payload(42, 99, "octo/docs", &a, &b)).unwrap(),
    )
    .unwrap();
    let webhook = server.webhook_url();
    let deliver = run(
        work,
        &[
            "deliver",
            "--event",
            "push",
            "--payload",
            str_arg(&payload_path),
            "--url",
            &webhook,
            "--data-dir",
            str_arg(&data),
            "--delivery-id",
            "readme-push-1",
        ],
        &[],
    )
    .await
    .ok();
    let (line, answer) = deliver.status_line_and_body();
    assert_eq!(line, "202 Accepted", "{}", deliver.stdout);
    assert_eq!(answer["outcome"], "accepted", "{answer}");
    assert_eq!(answer["deliveryId"], "readme-push-1", "{answer}");
    let event_id = answer["syncEventIds"][0]
        .as_str()
        .expect("a sync event id")
        .to_owned();

    let events = run_cli(cli(vec!["sync-events", "list", "--target", &target_id]))
        .await
        .ok()
        .json();
    let items = events["items"].as_array().expect("items");
    let event = items
        .iter()
        .find(|e| e["deliveryId"] == "readme-push-1")
        .unwrap_or_else(|| panic!("no sync event for the delivery in {events}"));
    assert_eq!(event["id"], event_id.as_str(), "{event}");
    assert_eq!(event["status"], "queued", "{event}");
    assert_eq!(event["headSha"], b.as_str(), "{event}");
    assert_eq!(event["connectorTargetId"], target_id.as_str(), "{event}");
    assert!(
        items
            .iter()
            .all(|e| e["connectorTargetId"] == target_id.as_str()),
        "list filtered by target shows another target's event: {events}"
    );

    // The delivery is recorded with what it caused.
    let delivery = run_cli(cli(vec!["deliveries", "get", "readme-push-1"]))
        .await
        .ok()
        .json();
    assert_eq!(delivery["id"], "readme-push-1", "{delivery}");
    assert_eq!(delivery["event"], "push", "{delivery}");
    assert_eq!(delivery["outcome"], "accepted", "{delivery}");
    assert_eq!(delivery["headSha"], b.as_str(), "{delivery}");
    assert_eq!(delivery["syncEventIds"], json!([event_id]), "{delivery}");

    // GitHub's other content type: the JSON in the `payload` form field.
    std::fs::write(
        &payload_path,
        serde_json::to_vec(&push_payload(42, 99, "octo/docs", &b, &c)).unwrap(),
    )
    .unwrap();
    let deliver = run(
        work,
        &[
            "deliver",
            "--event",
            "push",
            "--payload",
            str_arg(&payload_path),
            "--url",
            &webhook,
            "--data-dir",
            str_arg(&data),
            "--delivery-id",
            "readme-push-form",
            "--form",
        ],
        &[],
    )
    .await
    .ok();
    let (line, answer) = deliver.status_line_and_body();
    assert_eq!(line, "202 Accepted", "{}", deliver.stdout);
    assert_eq!(answer["outcome"], "accepted", "{answer}");
    let form_event_id = answer["syncEventIds"][0]
        .as_str()
        .expect("a sync event id")
        .to_owned();
    let form_event = run_cli(cli(vec!["sync-events", "get", &form_event_id]))
        .await
        .ok()
        .json();
    assert_eq!(form_event["status"], "queued", "{form_event}");
    assert_eq!(form_event["headSha"], c.as_str(), "{form_event}");
    assert_eq!(form_event["deliveryId"], "readme-push-form", "{form_event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_with_a_wrong_secret_fails_with_401_and_records_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let data = work.join("data");
    let server = Server::start(work, &data, &[], &[]).await;
    let payload_path = work.join("push.json");
    std::fs::write(
        &payload_path,
        serde_json::to_vec(&push_payload(42, 99, "octo/docs", &sha('a'), &sha('b'))).unwrap(),
    )
    .unwrap();
    let webhook = server.webhook_url();
    let out = run(
        work,
        &[
            "deliver",
            "--event",
            "push",
            "--payload",
            str_arg(&payload_path),
            "--url",
            &webhook,
            "--data-dir",
            str_arg(&data),
            "--secret",
            "not-the-secret",
            "--delivery-id",
            "wrong-secret-1",
        ],
        &[],
    )
    .await;
    assert!(
        !out.status.success(),
        "deliver succeeded with a wrong secret: {out:?}"
    );
    assert!(
        out.stdout.contains("401") || out.stderr.contains("401"),
        "no 401 in the output: {out:?}"
    );
    out.assert_no_panic();

    // A rejected delivery is never recorded.
    let admin_url = server.base();
    let get = run(
        work,
        &[
            "deliveries",
            "get",
            "wrong-secret-1",
            "--admin-url",
            &admin_url,
            "--data-dir",
            str_arg(&data),
        ],
        &[],
    )
    .await;
    assert!(
        !get.status.success(),
        "a rejected delivery was recorded: {get:?}"
    );
    assert!(get.stderr.contains("404"), "expected a 404: {get:?}");
    get.assert_no_panic();

    // Wrongly signed requests cannot flood the log: 500 more within a few
    // seconds give no new warning (at most one per 10 s), and the counter
    // has every one.
    let client = reqwest::Client::new();
    for i in 0..500 {
        let res = client
            .post(&webhook)
            .header("x-github-event", "ping")
            .header("x-github-delivery", format!("flood-{i}"))
            .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let warnings = server
        .log_text()
        .lines()
        .filter(|l| l.contains("rejected deliveries"))
        .count();
    assert!(
        (1..=2).contains(&warnings),
        "one warning per 10 s, not one per request: {warnings}\n{}",
        server.log_text()
    );
    let metrics = reqwest::get(format!("{}/metrics", server.base()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let invalid = metrics
        .lines()
        .find(|l| {
            l.starts_with("connectord_webhook_signature_failures_total")
                && l.contains("invalid signature")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(invalid >= 500.0, "every rejection counted: {invalid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_against_a_stopped_server_fails_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let data = work.join("data");
    // A server that ran and was stopped: its data (and token) are there, its port is not.
    let mut server = Server::start(work, &data, &[], &[]).await;
    let admin_url = server.base();
    let webhook = server.webhook_url();
    server.kill();
    // Backtraces enabled: the CLI must still print only a message.
    let envs = [("RUST_BACKTRACE", "1"), ("RUST_LIB_BACKTRACE", "1")];

    let list = run(
        work,
        &[
            "connectors",
            "list",
            "--admin-url",
            &admin_url,
            "--data-dir",
            str_arg(&data),
        ],
        &envs,
    )
    .await;
    assert!(
        !list.status.success(),
        "succeeded against a stopped server: {list:?}"
    );
    assert!(
        list.stderr.contains("cannot reach the admin API") && list.stderr.contains(&admin_url),
        "unclear message: {list:?}"
    );
    list.assert_no_panic();

    let payload_path = work.join("ping.json");
    std::fs::write(&payload_path, br#"{"zen":"z"}"#).unwrap();
    let deliver = run(
        work,
        &[
            "deliver",
            "--event",
            "ping",
            "--payload",
            str_arg(&payload_path),
            "--url",
            &webhook,
            "--data-dir",
            str_arg(&data),
        ],
        &envs,
    )
    .await;
    assert!(
        !deliver.status.success(),
        "succeeded against a stopped server: {deliver:?}"
    );
    assert!(
        deliver.stderr.contains("cannot reach") && deliver.stderr.contains(&webhook),
        "unclear message: {deliver:?}"
    );
    deliver.assert_no_panic();

    // And without any stored token: a message that says how to give one.
    let empty = work.join("empty");
    let no_token = run(
        work,
        &[
            "connectors",
            "list",
            "--admin-url",
            &admin_url,
            "--data-dir",
            str_arg(&empty),
        ],
        &envs,
    )
    .await;
    assert!(!no_token.status.success(), "{no_token:?}");
    assert!(
        no_token.stderr.contains("CONNECTORD_ADMIN_TOKEN"),
        "unclear message: {no_token:?}"
    );
    no_token.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_database_and_is_repeatable() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let db = work.join("m.db");
    let url = format!("sqlite://{}", db.display());
    for round in 1..=2 {
        let out = run(work, &["migrate", "--database-url", &url], &[]).await;
        assert!(
            out.status.success(),
            "migrate round {round} failed: {out:?}"
        );
        out.assert_no_panic();
        let header = std::fs::read(&db).expect("the database file exists");
        assert!(
            header.starts_with(b"SQLite format 3\0"),
            "not an SQLite database after round {round}"
        );
    }
    // The migrated database serves.
    let data = work.join("data");
    let server = Server::start(work, &data, &["--database-url", &url], &[]).await;
    let res = reqwest::get(format!("{}/readyz", server.base()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_cleanly_and_acknowledged_deliveries_survive_a_restart() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let data = work.join("data");
    let mut server = Server::start(work, &data, &[], &[]).await;
    let token = read_secret(&data.join("admin-token"));
    let secret = read_secret(&data.join("webhook-secret"));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let res = client
        .post(format!("{}/v1/admin/connectors", server.base()))
        .bearer_auth(&token)
        .json(&json!({"type": "github", "installationId": 42}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let connector: Value = res.json().await.unwrap();
    let res = client
        .post(format!(
            "{}/v1/admin/connectors/{}/targets",
            server.base(),
            connector["id"].as_str().unwrap()
        ))
        .bearer_auth(&token)
        .json(&json!({"repositoryFullName": "octo/docs", "repositoryId": 99, "branch": "main"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);

    let body =
        serde_json::to_vec(&push_payload(42, 99, "octo/docs", &sha('a'), &sha('b'))).unwrap();
    let (status, answer) = post_signed(
        &server.webhook_url(),
        &secret,
        "push",
        "before-sigterm",
        &body,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{answer}");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    let event_id = answer["syncEventIds"][0].as_str().unwrap().to_owned();

    // The client keeps its keep-alive connection open, as GitHub's would.
    let exit = server.signal("TERM", Duration::from_secs(10)).await;
    assert!(
        exit.success(),
        "SIGTERM should end in a clean exit, got {exit}:\n{}",
        server.log_text()
    );
    let log = server.log_text();
    assert!(
        !log.to_lowercase().contains("panicked"),
        "panic during shutdown:\n{log}"
    );
    drop(client);
    drop(server);

    let mut restarted = Server::start(work, &data, &[], &[]).await;
    let admin_url = restarted.base();
    let admin = [
        "--admin-url",
        admin_url.as_str(),
        "--data-dir",
        str_arg(&data),
    ];
    let mut args = vec!["deliveries", "get", "before-sigterm"];
    args.extend_from_slice(&admin);
    let delivery = run(work, &args, &[]).await.ok().json();
    assert_eq!(delivery["outcome"], "accepted", "{delivery}");
    assert_eq!(delivery["syncEventIds"], json!([event_id]), "{delivery}");
    let mut args = vec!["sync-events", "get", event_id.as_str()];
    args.extend_from_slice(&admin);
    let event = run(work, &args, &[]).await.ok().json();
    assert_eq!(event["status"], "queued", "{event}");
    assert_eq!(event["headSha"], sha('b'), "{event}");
    assert_eq!(event["deliveryId"], "before-sigterm", "{event}");

    // Ctrl-C (SIGINT) stops it just as cleanly.
    let exit = restarted.signal("INT", Duration::from_secs(10)).await;
    assert!(
        exit.success(),
        "SIGINT should end in a clean exit, got {exit}:\n{}",
        restarted.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_exits_non_zero_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let data = work.join("data");
    let data = str_arg(&data);

    let postgres = run(
        work,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            data,
            "--database-url",
            "postgres://x",
        ],
        &[],
    )
    .await;
    assert!(
        !postgres.status.success(),
        "served on postgres://: {postgres:?}"
    );
    assert!(
        postgres.stderr.contains("postgres://"),
        "the message does not name the URL scheme: {postgres:?}"
    );
    postgres.assert_no_panic();

    let listen = run(
        work,
        &["serve", "--listen", "not-an-address", "--data-dir", data],
        &[],
    )
    .await;
    assert!(
        !listen.status.success(),
        "served on not-an-address: {listen:?}"
    );
    assert!(
        listen.stderr.contains("not-an-address"),
        "the message does not name the address: {listen:?}"
    );
    listen.assert_no_panic();
}

/// A database URL's password is never printed: not by `--help` (clap shows
/// environment values unless told not to), not in an error message, whether
/// it is in the user info or a `password` query parameter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_password_appears_in_no_help_and_no_error() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let help = run(
        work,
        &["serve", "--help"],
        &[("CONNECTORD_DATABASE_URL", "postgres://app:hunter2@db/x")],
    )
    .await;
    assert!(help.status.success(), "{help:?}");
    assert!(help.stdout.contains("CONNECTORD_DATABASE_URL"), "{help:?}");
    assert!(
        !help.stdout.contains("hunter2"),
        "--help shows the password: {help:?}"
    );

    let data = work.join("data");
    let bad = run(
        work,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            str_arg(&data),
        ],
        &[(
            "CONNECTORD_DATABASE_URL",
            "postgres://app@127.0.0.1:1/x?connect_timeout=1&password=hunter2",
        )],
    )
    .await;
    assert!(!bad.status.success(), "{bad:?}");
    assert!(
        bad.stderr.contains("password=***"),
        "the URL is not named: {bad:?}"
    );
    assert!(
        !bad.stderr.contains("hunter2"),
        "an error shows the password: {bad:?}"
    );
    bad.assert_no_panic();
}

/// `--reconcile-interval`: off with `0` (every binary test runs so), and a period under a second (which
/// would read every branch head in a tight loop) is refused with its reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reconcile_interval_is_off_at_zero_and_never_under_a_second() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let help = run(work, &["serve", "--help"], &[]).await;
    assert!(help.stdout.contains("--reconcile-interval"), "{help:?}");
    assert!(help.stdout.contains("[default: 5m]"), "{help:?}");
    for bad in ["500ms", "soon"] {
        let out = run(
            work,
            &[
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--reconcile-interval",
                bad,
            ],
            &[],
        )
        .await;
        assert_eq!(out.status.code(), Some(2), "{bad}: {out:?}");
        assert!(
            out.stderr.contains("--reconcile-interval"),
            "{bad}: {out:?}"
        );
    }
    let out = run(
        work,
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--reconcile-interval",
            "500ms",
        ],
        &[],
    )
    .await;
    assert!(out.stderr.contains("at least 1s"), "{out:?}");
}
