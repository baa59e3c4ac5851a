//! End to end through the real `connectord` binary and the fake GitHub:
//! `connectord serve` configured (by environment variables only) with a GitHub
//! App whose API is `fake-github`, running in this test's tokio runtime; the
//! CLI (`connectors`, `targets`, `sync-events`, `documents`, `deliver`) drives
//! it. The synced documents are compared byte for byte with `git cat-file`.
//!
//! Also: what `serve` says and does without GitHub credentials, and how it
//! refuses half a configuration.
//!
//! Every wait is bounded, every child is killed when its guard drops (even
//! when a test panics), and no setting leaks in from the host environment.

mod common;

use common::process::{run, run_within, str_arg, Out, Server};
use fake_github::{FakeGitHub, GitRepo, TEST_APP_PRIVATE_KEY_PEM, TEST_APP_PUBLIC_KEY_PEM};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long `serve` may take to answer /healthz (a loaded 2-core machine).
const STARTUP: Duration = Duration::from_secs(20);
/// How long a sync may take to reach a final status.
const SYNC_TIMEOUT: Duration = Duration::from_secs(60);

const APP_ID: i64 = 4242;
const INSTALLATION: i64 = 7;
const REPO: &str = "octo/docs";
const REPO_ID: i64 = 1001;
const WEBHOOK_SECRET: &str = "binary-sync-webhook-secret-0123456789";
const ADMIN_TOKEN: &str = "binary-sync-admin-token-0123456789abcdef";
const FINAL: &[&str] = &["completed", "partial", "failed", "superseded", "cancelled"];

/// Runs admin CLI subcommands against one server, with the admin token and
/// the webhook secret given through the environment.
struct Cli<'a> {
    work: &'a Path,
    admin_url: String,
    data: String,
}

impl<'a> Cli<'a> {
    fn new(work: &'a Path, server: &Server, data: &Path) -> Self {
        Self {
            work,
            admin_url: server.base(),
            data: str_arg(data).to_owned(),
        }
    }

    /// `connectord ARGS [--admin-url …] --data-dir …` (`deliver` takes no
    /// admin URL), whatever its outcome.
    async fn try_run(&self, args: &[&str]) -> Out {
        let mut all: Vec<&str> = args.to_vec();
        if args.first() != Some(&"deliver") {
            all.extend_from_slice(&["--admin-url", &self.admin_url]);
        }
        all.extend_from_slice(&["--data-dir", &self.data]);
        run(
            self.work,
            &all,
            &[
                ("CONNECTORD_ADMIN_TOKEN", ADMIN_TOKEN),
                ("GITHUB_CONNECTOR_APP_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ],
        )
        .await
    }

    /// As [`Self::try_run`]; it must succeed.
    async fn run(&self, args: &[&str]) -> Out {
        self.try_run(args).await.ok_for(&args.join(" "))
    }

    async fn json(&self, args: &[&str]) -> Value {
        self.run(args).await.json()
    }

    async fn sync_event(&self, id: &str) -> Value {
        self.json(&["sync-events", "get", id]).await
    }

    /// Creates a connector for `installation` and a target on `main` of
    /// [`REPO`]; returns (target id, initial sync event id).
    async fn track(&self, installation: i64) -> (String, String) {
        let installation = installation.to_string();
        let connector = self
            .json(&["connectors", "add", "--installation-id", &installation])
            .await;
        assert_eq!(
            connector["installationId"].to_string(),
            installation,
            "{connector}"
        );
        let connector_id = connector["id"].as_str().expect("connector id").to_owned();
        let repo_id = REPO_ID.to_string();
        let target = self
            .json(&[
                "targets",
                "add",
                "--connector",
                &connector_id,
                "--repo",
                REPO,
                "--repository-id",
                &repo_id,
                "--branch",
                "main",
            ])
            .await;
        assert_eq!(target["repositoryFullName"], REPO, "{target}");
        assert_eq!(target["branch"], "main", "{target}");
        let target_id = target["id"].as_str().expect("target id").to_owned();
        let initial = target["initialSyncEvent"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no initialSyncEvent.id: {target}"))
            .to_owned();
        assert_eq!(target["initialSyncEvent"]["status"], "queued", "{target}");
        (target_id, initial)
    }

    /// Every document listed for the target (following `nextCursor`), in order.
    async fn documents(&self, target: &str) -> Vec<Value> {
        let mut out = vec![];
        let mut cursor: Option<String> = None;
        loop {
            let mut args = vec!["documents", "list", "--target", target, "--limit", "2"];
            if let Some(c) = &cursor {
                args.extend_from_slice(&["--cursor", c]);
            }
            let page = self.json(&args).await;
            let items = page["items"]
                .as_array()
                .unwrap_or_else(|| panic!("no items: {page}"));
            assert!(items.len() <= 2, "page over the limit: {page}");
            out.extend(items.iter().cloned());
            match page["nextCursor"].as_str() {
                Some(c) => {
                    assert!(!items.is_empty(), "a cursor after an empty page: {page}");
                    cursor = Some(c.to_owned());
                }
                None => return out,
            }
            assert!(out.len() <= 1000, "pagination does not end");
        }
    }

    /// The change feed after `after` (following `nextCursor`).
    async fn changes(&self, target: &str, after: i64) -> Vec<Value> {
        let mut out = vec![];
        let mut after = after;
        loop {
            let after_arg = after.to_string();
            let page = self
                .json(&[
                    "documents",
                    "changes",
                    "--target",
                    target,
                    "--after",
                    &after_arg,
                ])
                .await;
            let items = page["items"]
                .as_array()
                .unwrap_or_else(|| panic!("no items: {page}"));
            out.extend(items.iter().cloned());
            match page["nextCursor"].as_str() {
                Some(c) => after = c.parse().expect("a seq cursor"),
                None => return out,
            }
            assert!(out.len() <= 10_000, "the feed does not end");
        }
    }

    /// `connectord deliver` of the push in `payload`, signed with the secret;
    /// it must answer 202. Returns the answer's body.
    async fn deliver_push(&self, payload: &Path, webhook: &str, delivery: &str) -> Value {
        let deliver = self
            .run(&[
                "deliver",
                "--event",
                "push",
                "--payload",
                str_arg(payload),
                "--url",
                webhook,
                "--delivery-id",
                delivery,
            ])
            .await;
        let (line, answer) = deliver.status_line_and_body();
        assert_eq!(line, "202 Accepted", "{}", deliver.text());
        answer
    }

    /// `documents get`: the raw bytes printed on stdout.
    async fn document(&self, target: &str, path: &str) -> Vec<u8> {
        self.run(&["documents", "get", "--target", target, "--path", path])
            .await
            .stdout_bytes
    }
}

/// Polls the sync event (through the CLI) until it reaches a final status,
/// which it returns.
async fn wait_final(cli: &Cli<'_>, server: &mut Server, event: &str) -> Value {
    let deadline = Instant::now() + SYNC_TIMEOUT;
    loop {
        let e = cli.sync_event(event).await;
        if FINAL.iter().any(|s| e["status"] == *s) {
            return e;
        }
        server.assert_running();
        assert!(
            Instant::now() < deadline,
            "sync event {event} did not finish within {SYNC_TIMEOUT:?}: {e}\nserver log:\n{}",
            server.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// As [`wait_final`]; the final status must be `completed`.
async fn wait_completed(cli: &Cli<'_>, server: &mut Server, event: &str) -> Value {
    let e = wait_final(cli, server, event).await;
    assert_eq!(
        e["status"],
        "completed",
        "sync event {event}: {e}\nserver log:\n{}",
        server.log_text()
    );
    e
}

fn counts(e: &Value) -> (i64, i64, i64) {
    let c = &e["counts"];
    let n = |k: &str| c[k].as_i64().unwrap_or_else(|| panic!("counts.{k}: {e}"));
    (n("created"), n("updated"), n("deleted"))
}

/// The regular files of `head`, sorted by path.
fn git_files(repo: &GitRepo, head: &str) -> Vec<String> {
    let mut files: Vec<String> = repo
        .ls_tree(head)
        .into_iter()
        .filter(|(_, mode, kind, _)| kind == "blob" && (mode == "100644" || mode == "100755"))
        .map(|(path, _, _, _)| path)
        .collect();
    files.sort();
    files
}

/// The target's documents are exactly the files of `head`: the listing names
/// them all (in path order, with their blob SHAs), and `documents get` prints
/// each one's bytes exactly as `git cat-file` does.
async fn assert_documents_match_git(cli: &Cli<'_>, target: &str, repo: &GitRepo, head: &str) {
    let expected = git_files(repo, head);
    let docs = cli.documents(target).await;
    let listed: Vec<String> = docs
        .iter()
        .map(|d| {
            d["path"]
                .as_str()
                .unwrap_or_else(|| panic!("{d}"))
                .to_owned()
        })
        .collect();
    assert_eq!(listed, expected, "listed documents vs git at {head}");
    let shas: std::collections::HashMap<String, String> = repo
        .ls_tree(head)
        .into_iter()
        .map(|(p, _, _, s)| (p, s))
        .collect();
    for doc in &docs {
        let path = doc["path"].as_str().unwrap();
        assert_eq!(doc["blobSha"], shas[path].as_str(), "{doc}");
    }
    for path in &expected {
        let stored = cli.document(target, path).await;
        let git = repo.show(head, path);
        assert!(
            stored == git,
            "{path}: `documents get` printed {} bytes that differ from git's {} bytes at {head}",
            stored.len(),
            git.len()
        );
    }
}

/// Writes the App's key under `work` and returns the environment that
/// configures `serve` with the App against `fake`, the webhook secret and the
/// admin token, without the missed-push pass; `extra` is added (or overrides).
fn app_env(
    work: &Path,
    fake: &FakeGitHub,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let key_path = work.join("app-key.pem");
    std::fs::write(&key_path, TEST_APP_PRIVATE_KEY_PEM).unwrap();
    let mut env = vec![
        ("GITHUB_CONNECTOR_APP_ID", APP_ID.to_string()),
        (
            "GITHUB_CONNECTOR_APP_PRIVATE_KEY_PATH",
            str_arg(&key_path).to_owned(),
        ),
        ("GITHUB_API_URL", fake.base_url()),
        (
            "GITHUB_CONNECTOR_APP_WEBHOOK_SECRET",
            WEBHOOK_SECRET.to_owned(),
        ),
        ("CONNECTORD_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("CONNECTORD_RECONCILE_INTERVAL", "0".to_owned()),
    ];
    for (k, v) in extra {
        env.retain(|(name, _)| name != k);
        env.push((k, (*v).to_owned()));
    }
    env
}

fn env_refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

fn push_payload(before: &str, after: &str) -> Value {
    json!({
        "ref": "refs/heads/main",
        "before": before,
        "after": after,
        "created": false,
        "deleted": false,
        "forced": false,
        "base_ref": null,
        "compare": format!("https://github.com/{REPO}/compare/{}...{}", &before[..12], &after[..12]),
        "commits": [{"id": after, "message": "edit two, delete one"}],
        "head_commit": {"id": after},
        "repository": {"id": REPO_ID, "full_name": REPO, "name": "docs"},
        "pusher": {"name": "octocat"},
        "sender": {"login": "octocat"},
        "installation": {"id": INSTALLATION},
    })
}

/// Bytes no text file has: every byte value, NULs included, not UTF-8.
fn binary_bytes(seed: u8) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    bytes.extend((0..=255u8).map(|b| b.wrapping_mul(31).wrapping_add(seed)));
    bytes.extend_from_slice(&[0xff, 0xfe, 0x00, 0x80, seed]);
    bytes
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_syncs_a_repository_through_the_github_app_end_to_end() {
    // The fake GitHub runs in this test's runtime for the whole test.
    let fake = FakeGitHub::start(APP_ID, TEST_APP_PUBLIC_KEY_PEM).await;
    fake.add_installation(INSTALLATION);
    let repo = fake.add_repo(REPO, REPO_ID, INSTALLATION);
    repo.write("README.md", b"# Docs\n\nWelcome.\n");
    repo.write("docs/guide/intro.md", b"# Intro\n\nStart here.\n");
    repo.write(
        "docs/guide/advanced/config.md",
        b"# Configuration\n\nSet things.\n",
    );
    repo.write("docs/reference/api.md", b"# API\n\nEndpoints.\n");
    repo.write("assets/img/logo.png", &binary_bytes(1));
    repo.write("data/site.json", b"{\"title\": \"Docs\"}");
    let first = repo.commit("first");
    let first_files = git_files(&repo, &first);
    assert_eq!(first_files.len(), 6, "{first_files:?}");

    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let data = work.join("data");
    let env = app_env(
        work,
        &fake,
        &[
            ("CONNECTORD_WORKERS", "2"),
            ("CONNECTORD_LEASE_SECONDS", "30"),
        ],
    );
    let mut server = Server::start_within(work, &data, &[], &env_refs(&env), STARTUP).await;
    let log = server.log_text();
    assert!(
        !log.contains(WEBHOOK_SECRET) && !log.contains(ADMIN_TOKEN),
        "a configured secret is in the log:\n{log}"
    );
    assert!(
        !log.to_lowercase().contains("no github app configured"),
        "serve says no GitHub App is configured although one is:\n{log}"
    );
    let cli = Cli::new(work, &server, &data);

    // Track the branch: its initial sync runs through the App against the fake.
    let (target, initial) = cli.track(INSTALLATION).await;
    let e = wait_completed(&cli, &mut server, &initial).await;
    assert_eq!(e["trigger"], "initial", "{e}");
    assert_eq!(e["headSha"], first.as_str(), "{e}");
    assert_eq!(e["connectorTargetId"], target.as_str(), "{e}");
    assert_eq!(counts(&e), (first_files.len() as i64, 0, 0), "{e}");
    assert!(
        e["failures"].as_array().is_some_and(|f| f.is_empty()),
        "{e}"
    );
    let t = cli.json(&["targets", "get", &target]).await;
    assert_eq!(t["lastSyncedSha"], first.as_str(), "{t}");
    assert_documents_match_git(&cli, &target, &repo, &first).await;

    // The binary file is flagged as such and served as the very same bytes.
    let docs = cli.documents(&target).await;
    let logo = docs
        .iter()
        .find(|d| d["path"] == "assets/img/logo.png")
        .expect("the logo is listed");
    assert_eq!(logo["isBinary"], true, "{logo}");
    assert_eq!(logo["size"], binary_bytes(1).len() as i64, "{logo}");

    // Every file entered the feed once, as `created` by the initial sync.
    let feed = cli.changes(&target, 0).await;
    let created: BTreeSet<&str> = feed
        .iter()
        .filter(|c| c["op"] == "created" && c["syncEventId"] == initial.as_str())
        .filter_map(|c| c["path"].as_str())
        .collect();
    let expected: BTreeSet<&str> = first_files.iter().map(String::as_str).collect();
    assert_eq!(created, expected, "{feed:?}");
    assert_eq!(feed.len(), first_files.len(), "{feed:?}");
    let last_seq = feed
        .iter()
        .map(|c| c["seq"].as_i64().unwrap_or_else(|| panic!("seq: {c}")))
        .max()
        .expect("a non-empty feed");

    // Change two files (one of them the binary one), delete one, and push.
    repo.write("docs/guide/intro.md", b"# Intro\n\nStart here, revised.\n");
    repo.write("assets/img/logo.png", &binary_bytes(2));
    repo.remove("docs/reference/api.md");
    let second = repo.commit("edit two, delete one");
    let payload_path = work.join("push.json");
    std::fs::write(
        &payload_path,
        serde_json::to_vec_pretty(&push_payload(&first, &second)).unwrap(),
    )
    .unwrap();
    let webhook = server.webhook_url();
    let answer = cli
        .deliver_push(&payload_path, &webhook, "binary-sync-push-1")
        .await;
    assert_eq!(answer["outcome"], "accepted", "{answer}");
    let ids = answer["syncEventIds"]
        .as_array()
        .unwrap_or_else(|| panic!("no syncEventIds: {answer}"));
    assert_eq!(ids.len(), 1, "{answer}");
    let push_event = ids[0].as_str().expect("an event id").to_owned();

    let e = wait_completed(&cli, &mut server, &push_event).await;
    assert_eq!(e["trigger"], "push", "{e}");
    assert_eq!(e["headSha"], second.as_str(), "{e}");
    assert_eq!(e["deliveryId"], "binary-sync-push-1", "{e}");
    assert_eq!(counts(&e), (0, 2, 1), "{e}");
    let t = cli.json(&["targets", "get", &target]).await;
    assert_eq!(t["lastSyncedSha"], second.as_str(), "{t}");

    // The feed after the last seq seen holds exactly those three changes.
    let feed = cli.changes(&target, last_seq).await;
    let mut ops: Vec<(String, String)> = feed
        .iter()
        .map(|c| {
            (
                c["op"]
                    .as_str()
                    .unwrap_or_else(|| panic!("op: {c}"))
                    .to_owned(),
                c["path"]
                    .as_str()
                    .unwrap_or_else(|| panic!("path: {c}"))
                    .to_owned(),
            )
        })
        .collect();
    ops.sort();
    assert_eq!(
        ops,
        vec![
            ("deleted".to_owned(), "docs/reference/api.md".to_owned()),
            ("updated".to_owned(), "assets/img/logo.png".to_owned()),
            ("updated".to_owned(), "docs/guide/intro.md".to_owned()),
        ],
        "{feed:?}"
    );
    for c in &feed {
        assert_eq!(c["syncEventId"], push_event.as_str(), "{c}");
        assert!(c["seq"].as_i64().is_some_and(|s| s > last_seq), "{c}");
    }

    // The stored documents are git's again, and the deleted one is gone.
    assert_documents_match_git(&cli, &target, &repo, &second).await;
    let gone = cli
        .try_run(&[
            "documents",
            "get",
            "--target",
            &target,
            "--path",
            "docs/reference/api.md",
        ])
        .await;
    assert!(
        !gone.status.success(),
        "a deleted document is still served: {gone:?}"
    );
    assert!(gone.stderr.contains("404"), "expected a 404: {gone:?}");
    gone.assert_no_panic();

    server.assert_running();
    drop(server);
    drop(fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_github_credentials_leaves_syncs_queued_and_says_so() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let data = work.join("data");
    let mut server = Server::start_within(
        work,
        &data,
        &[],
        &[
            ("GITHUB_CONNECTOR_APP_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("CONNECTORD_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
        STARTUP,
    )
    .await;
    let log = server.log_text();
    assert!(
        log.to_lowercase().contains("no github app configured"),
        "stderr does not say that no GitHub App is configured:\n{log}"
    );
    assert!(
        log.contains("GITHUB_CONNECTOR_APP_ID"),
        "stderr does not say which setting is missing:\n{log}"
    );
    let cli = Cli::new(work, &server, &data);

    let (target, initial) = cli.track(INSTALLATION).await;
    for check in 1..=2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let e = cli.sync_event(&initial).await;
        assert_eq!(e["status"], "queued", "check {check}: {e}");
        assert_eq!(e["attempts"], 0, "check {check}: {e}");
        assert!(e["startedAt"].is_null(), "check {check}: {e}");
    }
    let events = cli
        .json(&["sync-events", "list", "--target", &target])
        .await;
    let items = events["items"].as_array().expect("items");
    assert_eq!(items.len(), 1, "{events}");
    assert_eq!(items[0]["status"], "queued", "{events}");
    let docs = cli.documents(&target).await;
    assert!(docs.is_empty(), "documents without a sync: {docs:?}");
    server.assert_running();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_refuses_an_app_id_without_a_private_key() {
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let data = work.join("data");
    let serve = [
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        str_arg(&data),
    ];
    let within = Duration::from_secs(20);
    // Backtraces enabled: the binary must still print only a message.
    let backtraces = [("RUST_BACKTRACE", "1"), ("RUST_LIB_BACKTRACE", "1")];

    // An App id and no key at all.
    let mut envs = backtraces.to_vec();
    envs.push(("GITHUB_CONNECTOR_APP_ID", "4242"));
    let out = run_within(work, &serve, &envs, within).await;
    assert!(!out.status.success(), "served without a key: {out:?}");
    assert!(
        out.stderr.contains("GITHUB_CONNECTOR_APP_PRIVATE_KEY"),
        "the message does not name GITHUB_CONNECTOR_APP_PRIVATE_KEY: {out:?}"
    );
    out.assert_no_panic();

    // An empty key counts as none.
    let mut envs = backtraces.to_vec();
    envs.extend([
        ("GITHUB_CONNECTOR_APP_ID", "4242"),
        ("GITHUB_CONNECTOR_APP_PRIVATE_KEY", ""),
    ]);
    let out = run_within(work, &serve, &envs, within).await;
    assert!(!out.status.success(), "served with an empty key: {out:?}");
    assert!(
        out.stderr.contains("GITHUB_CONNECTOR_APP_PRIVATE_KEY"),
        "the message does not name GITHUB_CONNECTOR_APP_PRIVATE_KEY: {out:?}"
    );
    out.assert_no_panic();

    // A key path that does not exist.
    let missing = work.join("no-such-dir").join("app-key.pem");
    let mut envs = backtraces.to_vec();
    envs.extend([
        ("GITHUB_CONNECTOR_APP_ID", "4242"),
        ("GITHUB_CONNECTOR_APP_PRIVATE_KEY_PATH", str_arg(&missing)),
    ]);
    let out = run_within(work, &serve, &envs, within).await;
    assert!(
        !out.status.success(),
        "served with a missing key file: {out:?}"
    );
    assert!(
        out.stderr.contains(str_arg(&missing)),
        "the message does not name {}: {out:?}",
        missing.display()
    );
    out.assert_no_panic();
}

/// A whole run at `RUST_LOG=trace` (the sqlx statements, reqwest and hyper
/// included) leaves no secret in the log: not the webhook secret, the admin
/// token, the App's private key, an installation token (`ghs_…`), a JWT
/// (`eyJ…`), nor the database password. On PostgreSQL when the tests have one
/// (under CI always), with a password in the URL (trust auth ignores it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_run_at_trace_level_logs_no_secret() {
    const DB_PASSWORD: &str = "db-password-in-the-url-5e3c";
    let fake = FakeGitHub::start(APP_ID, TEST_APP_PUBLIC_KEY_PEM).await;
    fake.add_installation(INSTALLATION);
    let repo = fake.add_repo(REPO, REPO_ID, INSTALLATION);
    repo.write("README.md", b"# Docs\n");
    let first = repo.commit("first");

    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let data = work.join("data");
    let key_path = work.join("app-key.pem");
    std::fs::write(&key_path, TEST_APP_PRIVATE_KEY_PEM).unwrap();
    let database_url = match common::backend::postgres_url() {
        Some(_) => common::backend::fresh_schema().await.replacen(
            "://postgres@",
            &format!("://postgres:{DB_PASSWORD}@"),
            1,
        ),
        None => format!("sqlite://{}", data.join("connectord.db").display()),
    };
    let app_id = APP_ID.to_string();
    let api_url = fake.base_url();
    let mut server = Server::start_within(
        work,
        &data,
        &[],
        &[
            ("GITHUB_CONNECTOR_APP_ID", app_id.as_str()),
            ("GITHUB_CONNECTOR_APP_PRIVATE_KEY_PATH", str_arg(&key_path)),
            ("GITHUB_API_URL", api_url.as_str()),
            ("GITHUB_CONNECTOR_APP_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("CONNECTORD_ADMIN_TOKEN", ADMIN_TOKEN),
            ("CONNECTORD_DATABASE_URL", database_url.as_str()),
            ("RUST_LOG", "trace"),
        ],
        STARTUP,
    )
    .await;
    let cli = Cli::new(work, &server, &data);
    let (_target, initial) = cli.track(INSTALLATION).await;
    wait_completed(&cli, &mut server, &initial).await;

    // A push through the CLI (signed with the secret), and a wrongly signed one.
    repo.write("README.md", b"# Docs, again\n");
    let second = repo.commit("second");
    let payload_path = work.join("push.json");
    std::fs::write(
        &payload_path,
        serde_json::to_vec(&push_payload(&first, &second)).unwrap(),
    )
    .unwrap();
    let webhook = server.webhook_url();
    let answer = cli
        .deliver_push(&payload_path, &webhook, "trace-push-1")
        .await;
    let push_event = answer["syncEventIds"][0]
        .as_str()
        .unwrap_or_else(|| panic!("no sync event: {answer}"))
        .to_owned();
    wait_completed(&cli, &mut server, &push_event).await;
    let bad = reqwest::Client::new()
        .post(&webhook)
        .header("x-github-event", "push")
        .header("x-github-delivery", "trace-bad")
        .header("x-hub-signature-256", format!("sha256={}", "0".repeat(64)))
        .body("{}")
        .send()
        .await
        .expect("a wrongly signed request");
    assert_eq!(bad.status(), reqwest::StatusCode::UNAUTHORIZED);
    assert!(
        fake.tokens_issued() > 0,
        "the run minted no installation token, so the check below proves nothing"
    );

    let log = server.log_text();
    assert!(
        log.lines().count() > 100 && log.contains("TRACE"),
        "not a trace-level log:\n{}",
        &log[..log.len().min(2000)]
    );
    let key_lines: Vec<&str> = TEST_APP_PRIVATE_KEY_PEM
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() > 20)
        .collect();
    assert!(!key_lines.is_empty());
    let mut leaks = vec![];
    for (what, needle) in [
        ("the webhook secret", WEBHOOK_SECRET),
        ("the admin token", ADMIN_TOKEN),
        ("the database password", DB_PASSWORD),
        ("an installation token", "ghs_"),
        ("a JWT", "eyJ"),
    ] {
        if log.contains(needle) {
            leaks.push(what);
        }
    }
    if key_lines.iter().any(|l| log.contains(l)) {
        leaks.push("the private key");
    }
    assert!(leaks.is_empty(), "the trace log holds {leaks:?}");
    drop(server);
    drop(fake);
}

/// `kill -9` of the real process while a sync downloads the archive: no
/// release, no last heartbeat, no completion. After a restart on the same
/// data directory the job runs again once its lease has run out, and ends
/// exactly as an uninterrupted sync would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_9_of_serve_mid_sync_runs_the_job_again_after_restart_and_counts_once() {
    let fake = FakeGitHub::start(APP_ID, TEST_APP_PUBLIC_KEY_PEM).await;
    fake.add_installation(INSTALLATION);
    let repo = fake.add_repo(REPO, REPO_ID, INSTALLATION);
    // Seventy files: the fetch plan takes the archive.
    for i in 0..70 {
        repo.write(
            &format!("docs/page-{i:03}.md"),
            format!("# Page {i}\n").as_bytes(),
        );
    }
    let head = repo.commit("first");
    // The archive answers only after 30 s: the kill lands while it is awaited.
    fake.set_delay("/tarball/", Duration::from_secs(30));

    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let data = work.join("data");
    // A 6 s lease: a loaded machine that stalls the process for a second or
    // two must not let the job be rescued before the kill.
    let env = app_env(work, &fake, &[("CONNECTORD_LEASE_SECONDS", "6")]);
    let envs = env_refs(&env);
    let mut server = Server::start_within(work, &data, &[], &envs, STARTUP).await;
    let cli = Cli::new(work, &server, &data);
    let (target, initial) = cli.track(INSTALLATION).await;
    let deadline = Instant::now() + SYNC_TIMEOUT;
    while fake.calls(fake_github::Endpoint::Tarball) == 0 {
        server.assert_running();
        assert!(Instant::now() < deadline, "the archive was never asked for");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = cli.sync_event(&initial).await;
    assert_eq!(e["status"], "running", "{e}");
    server.sigkill();

    fake.set_delay("/tarball/", Duration::ZERO);
    let mut server = Server::start_within(work, &data, &[], &envs, STARTUP).await;
    let cli = Cli::new(work, &server, &data);
    let e = wait_completed(&cli, &mut server, &initial).await;
    assert_eq!(e["attempts"], 2, "the killed try, then this one: {e}");
    assert_eq!(counts(&e), (70, 0, 0), "counted once: {e}");
    let t = cli.json(&["targets", "get", &target]).await;
    assert_eq!(t["lastSyncedSha"], head.as_str(), "{t}");
    assert_documents_match_git(&cli, &target, &repo, &head).await;
    let feed = cli.changes(&target, 0).await;
    let paths: Vec<&str> = feed.iter().filter_map(|c| c["path"].as_str()).collect();
    let distinct: BTreeSet<&str> = paths.iter().copied().collect();
    assert_eq!(paths.len(), 70, "one change-feed entry per file: {feed:?}");
    assert_eq!(distinct.len(), 70, "{feed:?}");
    server.kill();
}

/// `serve` reads the App's webhook configuration at start and says, in its
/// log, what is wrong with it and how to fix it; a good one gets one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_logs_the_start_up_webhook_self_check() {
    let fake = FakeGitHub::start(APP_ID, TEST_APP_PUBLIC_KEY_PEM).await;
    fake.add_installation(INSTALLATION);
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let env = app_env(work, &fake, &[]);
    let envs = env_refs(&env);
    let wait_for_log = |server: &mut Server, needle: &str| {
        let needle = needle.to_owned();
        let deadline = Instant::now() + STARTUP;
        loop {
            let log = server.log_text();
            if log.contains(&needle) {
                return log;
            }
            server.assert_running();
            assert!(
                Instant::now() < deadline,
                "the log never said {needle:?}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    fake.set_hook_config(fake_github::HookConfig {
        url: "https://old-host.example.com/hooks/github".into(),
        content_type: "form".into(),
        insecure_ssl: "1".into(),
        secret_set: false,
    });
    let mut server = Server::start_within(work, &work.join("bad"), &[], &envs, STARTUP).await;
    let log = wait_for_log(
        &mut server,
        "GitHub App webhook: the App has no webhook secret",
    );
    for problem in [
        "the webhook URL's path is /hooks/github, but connectord serves /v1/webhooks/connectors/github",
        "SSL verification is off",
        "the content type is form",
    ] {
        assert!(log.contains(problem), "no warning {problem:?}:\n{log}");
    }
    assert!(log.contains("WARN"), "warnings, not info lines:\n{log}");
    assert!(
        !log.contains(WEBHOOK_SECRET) && !log.contains(ADMIN_TOKEN),
        "a secret is in the log:\n{log}"
    );
    server.kill();

    fake.set_hook_config(fake_github::HookConfig::default());
    let mut server = Server::start_within(work, &work.join("good"), &[], &envs, STARTUP).await;
    let log = wait_for_log(
        &mut server,
        "GitHub App webhook: configured as connectord expects",
    );
    assert!(
        !log.contains("GitHub App webhook: the") && !log.contains("SSL verification is off"),
        "a good set-up gets a warning:\n{log}"
    );
    server.kill();
}
