//! End to end: the GitHub sync worker of `connectord serve` against
//! `fake-github`, a double of GitHub's REST API serving real git repositories.
//!
//! Every test starts the fake (App 4242), creates a repository with real
//! commits, starts the real application configured with the fake as its
//! GitHub App API, tracks a branch through the admin API (its initial sync
//! runs through the worker), then changes the repository, delivers signed
//! push webhooks with the real SHAs and checks the sync events, the target,
//! the change feed, the fake's call counters and, byte for byte against
//! `git show`, the stored documents as the admin API serves them.

mod common;

use common::github::spawn_with_github;
use common::*;
use connectord::github::FetchSettings;
use fake_github::{Endpoint, FakeGitHub, GitRepo};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

// --- local helpers ---------------------------------------------------------

const REPO: &str = "octo/docs";
const FINAL: &[&str] = &["completed", "partial", "failed", "superseded", "cancelled"];
/// The first line of every Git LFS pointer file (the LFS spec).
const LFS_VERSION_LINE: &[u8] = b"version https://git-lfs.github.com/spec/v1\n";

async fn fake_with_repo(installation: i64, repo_id: i64) -> (FakeGitHub, GitRepo) {
    common::github::fake_with_repo(REPO, installation, repo_id).await
}

async fn spawn_synced_app(fake: &FakeGitHub) -> TestApp {
    spawn_synced_app_with(fake.base_url(), TestOptions::default()).await
}

async fn spawn_synced_app_with(api_url: String, opts: TestOptions) -> TestApp {
    spawn_with_github(api_url, FetchSettings::default(), opts).await
}

/// Every sync by blob calls (tests about the blob path on small repositories,
/// whose archive the fetch plan would otherwise take).
fn blobs_only() -> FetchSettings {
    FetchSettings {
        mode: connectord::github::FetchMode::Blobs,
        ..FetchSettings::default()
    }
}

async fn track(app: &TestApp, installation: i64, repo_id: i64, extra: Value) -> (String, String) {
    app.track_main(installation, REPO, repo_id, extra).await
}

/// Polls the sync event until `done` holds (up to `secs`).
async fn wait_event(
    app: &TestApp,
    event: &str,
    what: &str,
    secs: u64,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let e = app.sync_event(event).await;
        if done(&e) {
            return e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "event {event} never reached {what} in {secs} s: {e}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn is_final(e: &Value) -> bool {
    FINAL.iter().any(|s| e["status"] == *s)
}

/// Waits (up to 30 s) for the event's final status and returns the event.
async fn wait_final(app: &TestApp, event: &str) -> Value {
    wait_event(app, event, "a final status", 30, is_final).await
}

/// Waits for the event's final status, which must be `completed`.
async fn wait_completed(app: &TestApp, event: &str) -> Value {
    let e = wait_final(app, event).await;
    assert_eq!(e["status"], "completed", "{e}");
    e
}

/// Waits until every sync event of the target has a final status.
async fn wait_all_final(app: &TestApp, target: &str) -> Vec<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = app.events_of(target).await;
        if events.iter().all(is_final) {
            return events;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "unfinished sync events: {events:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `cond` holds (up to 10 s).
async fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Delivers a push of `main` of [`REPO`]; it must be accepted with one new
/// sync event, which is returned.
async fn push(
    app: &TestApp,
    delivery: &str,
    installation: i64,
    repo_id: i64,
    before: &str,
    after: &str,
) -> String {
    let payload = push_payload(installation, repo_id, REPO, "main", before, after);
    push_accepted(app, delivery, &payload).await
}

async fn push_accepted(app: &TestApp, delivery: &str, payload: &Value) -> String {
    let (status, body) = app.deliver_json("push", delivery, payload).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{delivery}: {body}");
    assert_eq!(body["outcome"], "accepted", "{delivery}: {body}");
    let ids = body["syncEventIds"].as_array().expect("syncEventIds");
    assert_eq!(ids.len(), 1, "{delivery}: {body}");
    ids[0].as_str().expect("id").to_owned()
}

/// Percent-encodes each segment of a repository path for a URL.
fn encode_path(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            seg.bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect::<String>()
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn query(pairs: &[(&str, &str)]) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        q.append_pair(k, v);
    }
    q.finish()
}

/// One page of the document listing.
async fn documents_page(
    app: &TestApp,
    target: &str,
    prefix: Option<&str>,
    limit: usize,
    cursor: Option<&str>,
) -> Value {
    let limit = limit.to_string();
    let mut pairs = vec![("limit", limit.as_str())];
    if let Some(p) = prefix {
        pairs.push(("prefix", p));
    }
    if let Some(c) = cursor {
        pairs.push(("cursor", c));
    }
    let (status, body) = app
        .get(&format!(
            "/v1/admin/targets/{target}/documents?{}",
            query(&pairs)
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// Every document's metadata (following `nextCursor`), in listing order.
async fn documents(app: &TestApp, target: &str, prefix: Option<&str>, limit: usize) -> Vec<Value> {
    let mut out = vec![];
    let mut cursor: Option<String> = None;
    loop {
        let page = documents_page(app, target, prefix, limit, cursor.as_deref()).await;
        let items = page["items"].as_array().expect("items");
        assert!(items.len() <= limit, "page over the limit: {page}");
        out.extend(items.iter().cloned());
        match page["nextCursor"].as_str() {
            Some(c) => {
                assert!(!items.is_empty(), "a cursor after an empty page: {page}");
                cursor = Some(c.to_owned());
            }
            None => return out,
        }
        assert!(out.len() <= 100_000, "pagination does not end");
    }
}

async fn all_documents(app: &TestApp, target: &str) -> Vec<Value> {
    documents(app, target, None, 1000).await
}

/// `GET .../documents/{path}`: status, headers, raw bytes.
async fn raw_document(
    app: &TestApp,
    target: &str,
    path: &str,
    if_none_match: Option<&str>,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut req = app
        .client
        .get(format!(
            "{}/v1/admin/targets/{target}/documents/{}",
            app.admin_base,
            encode_path(path)
        ))
        .bearer_auth(ADMIN_TOKEN);
    if let Some(tag) = if_none_match {
        req = req.header("if-none-match", tag);
    }
    let res = req.send().await.expect("document request");
    let status = res.status();
    let headers = res.headers().clone();
    let body = res.bytes().await.expect("document body").to_vec();
    (status, headers, body)
}

/// One page of the change feed.
async fn changes_page(app: &TestApp, target: &str, after: i64, limit: usize) -> Value {
    let (status, body) = app
        .get(&format!(
            "/v1/admin/targets/{target}/changes?after={after}&limit={limit}"
        ))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

/// The change feed after `after`, following `nextCursor`.
async fn changes(app: &TestApp, target: &str, after: i64) -> Vec<Value> {
    let mut out = vec![];
    let mut after = after;
    loop {
        let page = changes_page(app, target, after, 1000).await;
        out.extend(page["items"].as_array().expect("items").iter().cloned());
        match page["nextCursor"].as_str() {
            Some(c) => after = c.parse().expect("a seq cursor"),
            None => return out,
        }
    }
}

/// The last `seq` of the feed (0 when empty).
async fn last_seq(app: &TestApp, target: &str) -> i64 {
    changes(app, target, 0)
        .await
        .last()
        .map_or(0, |c| c["seq"].as_i64().expect("seq"))
}

/// (op, path) of feed entries, sorted.
fn ops(entries: &[Value]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = entries
        .iter()
        .map(|c| {
            (
                c["op"].as_str().expect("op").to_owned(),
                c["path"].as_str().expect("path").to_owned(),
            )
        })
        .collect();
    v.sort();
    v
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = pairs
        .iter()
        .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
        .collect();
    v.sort();
    v
}

/// A Git LFS pointer file (the spec: small, starting with the version line).
fn is_lfs_pointer(bytes: &[u8]) -> bool {
    bytes.len() < 1024 && bytes.starts_with(LFS_VERSION_LINE)
}

/// What the tests write as binary always holds a NUL; their text is UTF-8.
fn looks_binary(bytes: &[u8]) -> bool {
    bytes.contains(&0) || std::str::from_utf8(bytes).is_err()
}

/// A file the store should hold: blob SHA and bytes (`git show`).
type Expected = BTreeMap<String, (String, Vec<u8>)>;

/// The files of `head` a target must hold: regular files (100644/100755)
/// under `prefix`, at most `max_file_bytes`, that are not LFS pointers.
fn git_files(repo: &GitRepo, head: &str, prefix: &str, max_file_bytes: i64) -> Expected {
    let mut expected = Expected::new();
    for (path, mode, kind, sha) in repo.ls_tree(head) {
        if kind != "blob" || !(mode == "100644" || mode == "100755") || !path.starts_with(prefix) {
            continue;
        }
        let bytes = repo.show(head, &path);
        if bytes.len() as i64 > max_file_bytes || is_lfs_pointer(&bytes) {
            continue;
        }
        expected.insert(path, (sha, bytes));
    }
    expected
}

/// The blob SHA of `path` at `head`.
fn blob_sha(repo: &GitRepo, head: &str, path: &str) -> String {
    repo.ls_tree(head)
        .into_iter()
        .find(|(p, _, _, _)| p == path)
        .unwrap_or_else(|| panic!("{path} not in {head}"))
        .3
}

/// The stored documents (listing and raw bytes) are exactly `expected`.
async fn assert_store_equals(app: &TestApp, target: &str, expected: &Expected, what: &str) {
    let docs = all_documents(app, target).await;
    let stored: BTreeMap<String, Value> = docs
        .iter()
        .map(|d| (d["path"].as_str().expect("path").to_owned(), d.clone()))
        .collect();
    assert_eq!(stored.len(), docs.len(), "a path listed twice: {docs:?}");
    let stored_paths: BTreeSet<&String> = stored.keys().collect();
    let expected_paths: BTreeSet<&String> = expected.keys().collect();
    assert_eq!(stored_paths, expected_paths, "stored paths vs {what}");
    let listed: Vec<&str> = docs
        .iter()
        .map(|d| d["path"].as_str().expect("path"))
        .collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(listed, sorted, "the listing is in path order");
    for (path, (sha, bytes)) in expected {
        let meta = &stored[path];
        assert_eq!(meta["blobSha"], sha.as_str(), "{path}: {meta}");
        assert_eq!(meta["size"], bytes.len() as i64, "{path}: {meta}");
        assert_eq!(meta["isBinary"], looks_binary(bytes), "{path}: {meta}");
        let (status, headers, body) = raw_document(app, target, path, None).await;
        assert_eq!(status, StatusCode::OK, "GET {path}");
        assert!(
            body == *bytes,
            "{path}: stored {} bytes differ from `git show` ({} bytes) for {what}",
            body.len(),
            bytes.len()
        );
        assert_eq!(
            headers.get("etag").and_then(|v| v.to_str().ok()),
            Some(format!("\"{sha}\"").as_str()),
            "{path}"
        );
    }
}

/// The target's documents are exactly the files of `head` under its
/// `pathPrefix` and within its `maxFileBytes`, byte for byte as `git show`.
async fn assert_store_matches_git(app: &TestApp, target: &str, repo: &GitRepo, head: &str) {
    let t = app.target(target).await;
    let prefix = t["pathPrefix"].as_str().unwrap_or("").to_owned();
    let max = t["maxFileBytes"].as_i64().expect("maxFileBytes");
    let expected = git_files(repo, head, &prefix, max);
    assert_store_equals(app, target, &expected, &format!("git at {head}")).await;
}

/// The target synced `head` and is healthy.
async fn assert_synced(app: &TestApp, target: &str, head: &str) {
    let t = app.target(target).await;
    assert_eq!(t["lastSyncedSha"], head, "{t}");
    assert_eq!(t["health"], "ok", "{t}");
    assert!(t["lastSyncedAt"].is_string(), "{t}");
}

fn counts(e: &Value) -> (i64, i64, i64, i64) {
    let c = &e["counts"];
    let n = |k: &str| c[k].as_i64().unwrap_or_else(|| panic!("counts.{k}: {e}"));
    (n("created"), n("updated"), n("deleted"), n("skipped"))
}

fn reasons(e: &Value) -> BTreeMap<String, i64> {
    serde_json::from_value(e["skippedReasons"].clone()).expect("skippedReasons")
}

fn reasons_of(pairs: &[(&str, i64)]) -> BTreeMap<String, i64> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
}

/// Writes `n` markdown pages, each with different content, in nested directories.
fn write_pages(repo: &GitRepo, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let path = format!("guide/part-{}/chapter-{}/page-{i:03}.md", i % 4, i % 3);
            let body = format!("# Page {i}\n\n{}", "Some prose. ".repeat(i % 7 + 1));
            repo.write(&path, body.as_bytes());
            path
        })
        .collect()
}

/// The repository call counts of every blob of `head` (for "never twice").
fn blob_calls(fake: &FakeGitHub, repo: &GitRepo, head: &str) -> HashMap<String, usize> {
    repo.ls_tree(head)
        .into_iter()
        .filter(|(_, _, kind, _)| kind == "blob")
        .map(|(_, _, _, sha)| {
            let n = fake.blob_calls_for(&sha);
            (sha, n)
        })
        .collect()
}

// --- 1. first sync ----------------------------------------------------------

conformance! {
#[tokio::test]
async fn the_first_sync_stores_every_file_of_the_branch_byte_for_byte() {
    let (fake, repo) = fake_with_repo(101, 1001).await;
    let pages = write_pages(&repo, 80);
    repo.write("README.md", b"# Docs\n\nWelcome.\n");
    repo.write(
        "assets/logo.bin",
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\x01\xff\xfe",
    );
    repo.write("notes/with space & ampersand.md", b"spaces in paths\n");
    repo.write("notes/caf\u{e9}.md", "caf\u{e9} au lait\n".as_bytes());
    repo.write("empty.txt", b"");
    repo.write("scripts/run.sh", b"#!/bin/sh\necho hi\n");
    {
        use std::os::unix::fs::PermissionsExt;
        let p = repo.path().join("scripts/run.sh");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    let head = repo.commit("first");
    assert!(
        repo.ls_tree(&head)
            .iter()
            .any(|(p, mode, _, _)| p == "scripts/run.sh" && mode == "100755"),
        "an executable file is in the tree"
    );
    let files = pages.len() + 6;

    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 101, 1001, json!({})).await;
    let e = wait_completed(&app, &initial).await;
    assert_eq!(e["trigger"], "initial", "{e}");
    assert_eq!(e["headSha"], head, "the branch head was resolved: {e}");
    assert_eq!(counts(&e), (files as i64, 0, 0, 0), "{e}");
    assert!(
        e["failures"].as_array().expect("failures").is_empty(),
        "{e}"
    );
    assert_eq!(e["attempts"], 1, "{e}");
    assert_synced(&app, &target, &head).await;
    assert_store_matches_git(&app, &target, &repo, &head).await;

    // The binary file is flagged and served as bytes.
    let docs = all_documents(&app, &target).await;
    let logo = docs
        .iter()
        .find(|d| d["path"] == "assets/logo.bin")
        .expect("logo stored");
    assert_eq!(logo["isBinary"], true, "{logo}");
    let readme = docs
        .iter()
        .find(|d| d["path"] == "README.md")
        .expect("readme");
    assert_eq!(readme["isBinary"], false, "{readme}");
    assert_eq!(readme["syncEventId"], initial.as_str(), "{readme}");

    // The change feed: every file once, `created`, with its blob SHA.
    let feed = changes(&app, &target, 0).await;
    assert_eq!(feed.len(), files, "{feed:?}");
    let tree: HashMap<String, String> = repo
        .ls_tree(&head)
        .into_iter()
        .map(|(p, _, _, s)| (p, s))
        .collect();
    let mut seen = BTreeSet::new();
    for c in &feed {
        let path = c["path"].as_str().expect("path");
        assert!(seen.insert(path.to_owned()), "{path} twice in the feed");
        assert_eq!(c["op"], "created", "{c}");
        assert_eq!(c["blobSha"], tree[path].as_str(), "{c}");
        assert_eq!(c["syncEventId"], initial.as_str(), "{c}");
        assert_eq!(c["targetId"], target.as_str(), "{c}");
    }

    // Many files: one tarball rather than a blob call per file.
    assert_eq!(fake.calls(Endpoint::Tarball), 1);
    assert_eq!(fake.calls(Endpoint::Blob), 0, "the tarball had every file");
    app.stop().await;
}
}

// --- 2. a push changing 3 files ---------------------------------------------

conformance! {
#[tokio::test]
async fn a_push_changing_three_files_updates_exactly_those_and_downloads_no_blob_twice() {
    let (fake, repo) = fake_with_repo(102, 1002).await;
    let pages = write_pages(&repo, 30);
    let first = repo.commit("first");

    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 102, 1002, json!({})).await;
    let e = wait_completed(&app, &initial).await;
    assert_eq!(counts(&e), (30, 0, 0, 0), "{e}");
    // A first sync is one tarball (the fetch plan), whatever the file count.
    assert_eq!(fake.calls(Endpoint::Tarball), 1, "30 files: one tarball");
    assert!(
        fake.total_repo_calls() <= 4,
        "{} calls for a first sync",
        fake.total_repo_calls()
    );
    let before_push = blob_calls(&fake, &repo, &first);
    assert!(
        before_push.values().all(|n| *n == 0),
        "no blob call beside the tarball: {before_push:?}"
    );
    let seq = last_seq(&app, &target).await;

    for (i, p) in pages.iter().enumerate().take(3) {
        repo.write(p, format!("# Page {i}, revised\n").as_bytes());
    }
    let second = repo.commit("three files");
    fake.reset_calls();
    let ev = push(&app, "push-3", 102, 1002, &first, &second).await;
    let e = wait_completed(&app, &ev).await;
    assert_eq!(e["trigger"], "push", "{e}");
    assert_eq!(e["headSha"], second, "{e}");
    assert_eq!(counts(&e), (0, 3, 0, 27), "{e}");
    assert_eq!(reasons(&e), reasons_of(&[("unchanged", 27)]), "{e}");
    assert_synced(&app, &target, &second).await;
    assert_store_matches_git(&app, &target, &repo, &second).await;

    // API calls for the push: the tree and the 3 changed blobs (at most k + 2).
    assert_eq!(fake.calls(Endpoint::Blob), 3);
    assert!(
        fake.total_repo_calls() <= 3 + 2,
        "{} repository calls for a 3-file push",
        fake.total_repo_calls()
    );
    // No blob was ever downloaded twice, over the whole test.
    let after_push = blob_calls(&fake, &repo, &second);
    for (sha, n) in &after_push {
        let total = n + before_push.get(sha).copied().unwrap_or(0);
        assert!(total <= 1, "blob {sha} downloaded {total} times");
    }
    for p in pages.iter().take(3) {
        assert_eq!(after_push[&blob_sha(&repo, &second, p)], 1, "{p}");
    }

    let feed = changes(&app, &target, seq).await;
    assert_eq!(
        ops(&feed),
        owned(&[
            ("updated", &pages[0]),
            ("updated", &pages[1]),
            ("updated", &pages[2])
        ]),
        "{feed:?}"
    );
    assert!(feed.iter().all(|c| c["syncEventId"] == ev.as_str()));
    app.stop().await;
}
}

// --- 3. adds, deletes and renames -------------------------------------------

conformance! {
#[tokio::test]
async fn adds_deletes_and_renames_are_created_and_deleted_documents() {
    let (fake, repo) = fake_with_repo(103, 1003).await;
    repo.write("a.md", b"alpha\n");
    repo.write("b.md", b"bravo\n");
    repo.write("dir/c.md", b"charlie\n");
    repo.write("dir/d.md", b"delta\n");
    repo.write("gone/x.md", b"x-ray\n");
    repo.write("gone/deeper/y.md", b"yankee\n");
    let first = repo.commit("first");

    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 103, 1003, json!({})).await;
    wait_completed(&app, &initial).await;
    assert_store_matches_git(&app, &target, &repo, &first).await;
    let seq = last_seq(&app, &target).await;

    repo.write("new.md", b"november\n");
    repo.write("dir/new2.md", b"oscar\n");
    repo.remove("b.md");
    repo.remove("gone");
    // A rename is a delete and a create (same content, same blob).
    repo.remove("dir/c.md");
    repo.write("moved/c.md", b"charlie\n");
    // A rename with an edit.
    repo.remove("dir/d.md");
    repo.write("moved/d2.md", b"delta, edited\n");
    let second = repo.commit("adds, deletes, renames");

    let ev = push(&app, "ren-1", 103, 1003, &first, &second).await;
    let e = wait_completed(&app, &ev).await;
    assert_eq!(counts(&e), (4, 0, 5, 1), "{e}");
    assert_eq!(reasons(&e), reasons_of(&[("unchanged", 1)]), "{e}");
    assert_synced(&app, &target, &second).await;
    assert_store_matches_git(&app, &target, &repo, &second).await;
    assert_eq!(
        blob_sha(&repo, &first, "dir/c.md"),
        blob_sha(&repo, &second, "moved/c.md")
    );

    let feed = changes(&app, &target, seq).await;
    assert_eq!(
        ops(&feed),
        owned(&[
            ("created", "dir/new2.md"),
            ("created", "moved/c.md"),
            ("created", "moved/d2.md"),
            ("created", "new.md"),
            ("deleted", "b.md"),
            ("deleted", "dir/c.md"),
            ("deleted", "dir/d.md"),
            ("deleted", "gone/deeper/y.md"),
            ("deleted", "gone/x.md"),
        ]),
        "{feed:?}"
    );
    for c in &feed {
        if c["op"] == "deleted" {
            assert!(c["blobSha"].is_null(), "{c}");
        }
    }
    let (status, _, _) = raw_document(&app, &target, "b.md", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    app.stop().await;
}
}

// --- 4. force push to an unrelated history ----------------------------------

conformance! {
#[tokio::test]
async fn a_force_push_to_an_unrelated_history_leaves_exactly_the_new_tree() {
    let (fake, repo) = fake_with_repo(104, 1004).await;
    repo.write("a.md", b"old a\n");
    repo.write("b.md", b"old b\n");
    repo.write("keep.md", b"same in both histories\n");
    repo.write("old/deep/file.md", b"old deep\n");
    let first = repo.commit("old history");
    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 104, 1004, json!({})).await;
    wait_completed(&app, &initial).await;
    let seq = last_seq(&app, &target).await;

    repo.orphan("rewrite");
    repo.write("keep.md", b"same in both histories\n");
    repo.write("b.md", b"new b\n");
    repo.write("c.md", b"new c\n");
    let rewritten = repo.commit("unrelated history");
    repo.set_branch("main", &rewritten);
    assert_eq!(repo.head("main").as_deref(), Some(rewritten.as_str()));

    let mut payload = push_payload(104, 1004, REPO, "main", &first, &rewritten);
    payload["forced"] = json!(true);
    let ev = push_accepted(&app, "force-1", &payload).await;
    let e = wait_completed(&app, &ev).await;
    assert_eq!(counts(&e), (1, 1, 2, 1), "{e}");
    assert_synced(&app, &target, &rewritten).await;
    assert_store_matches_git(&app, &target, &repo, &rewritten).await;
    let feed = changes(&app, &target, seq).await;
    assert_eq!(
        ops(&feed),
        owned(&[
            ("created", "c.md"),
            ("deleted", "a.md"),
            ("deleted", "old/deep/file.md"),
            ("updated", "b.md"),
        ]),
        "{feed:?}"
    );
    app.stop().await;
}
}

// --- 5. pathPrefix ----------------------------------------------------------

conformance! {
#[tokio::test]
async fn a_path_prefix_keeps_only_its_files_and_drops_files_moved_out_of_it() {
    let (fake, repo) = fake_with_repo(105, 1005).await;
    repo.write("README.md", b"root readme\n");
    repo.write("src/lib.rs", b"pub fn f() {}\n");
    repo.write("docs/index.md", b"# Index\n");
    repo.write("docs/guide/intro.md", b"intro\n");
    repo.write("docs/guide/setup.md", b"setup\n");
    repo.write("docsx/not-docs.md", b"looks like docs, is not\n");
    repo.write("other/docs/nested.md", b"docs/ but not at the root\n");
    let first = repo.commit("first");

    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 105, 1005, json!({"pathPrefix": "docs/"})).await;
    assert_eq!(app.target(&target).await["pathPrefix"], "docs/");
    let e = wait_completed(&app, &initial).await;
    assert_eq!(counts(&e), (3, 0, 0, 0), "{e}");
    assert_store_matches_git(&app, &target, &repo, &first).await;
    let stored: Vec<Value> = all_documents(&app, &target)
        .await
        .iter()
        .map(|d| d["path"].clone())
        .collect();
    assert_eq!(
        stored,
        vec![
            json!("docs/guide/intro.md"),
            json!("docs/guide/setup.md"),
            json!("docs/index.md")
        ]
    );
    for outside in [
        "README.md",
        "src/lib.rs",
        "docsx/not-docs.md",
        "other/docs/nested.md",
    ] {
        assert_eq!(
            fake.blob_calls_for(&blob_sha(&repo, &first, outside)),
            0,
            "{outside} is outside the prefix and never downloaded"
        );
    }
    let seq = last_seq(&app, &target).await;

    // Move a file out of docs/, change files outside it, add one inside.
    repo.remove("docs/guide/setup.md");
    repo.write("archive/setup.md", b"setup\n");
    repo.write("src/lib.rs", b"pub fn g() {}\n");
    repo.write("docs/new.md", b"new page\n");
    let second = repo.commit("move setup out of docs");
    let ev = push(&app, "prefix-1", 105, 1005, &first, &second).await;
    let e = wait_completed(&app, &ev).await;
    assert_eq!(counts(&e), (1, 0, 1, 2), "{e}");
    assert_eq!(reasons(&e), reasons_of(&[("unchanged", 2)]), "{e}");
    assert_synced(&app, &target, &second).await;
    assert_store_matches_git(&app, &target, &repo, &second).await;
    assert_eq!(
        ops(&changes(&app, &target, seq).await),
        owned(&[
            ("created", "docs/new.md"),
            ("deleted", "docs/guide/setup.md")
        ])
    );
    app.stop().await;
}
}

// --- 6. maxFileBytes --------------------------------------------------------

conformance! {
#[tokio::test]
async fn a_file_over_max_file_bytes_is_skipped_as_too_large_and_never_downloaded() {
    let (fake, repo) = fake_with_repo(106, 1006).await;
    repo.write("small.md", &[b'a'; 100]);
    repo.write("exact.md", &[b'b'; 1000]);
    repo.write("big.bin", &[7u8; 5000]);
    let first = repo.commit("first");
    let big = blob_sha(&repo, &first, "big.bin");

    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 106, 1006, json!({"maxFileBytes": 1000})).await;
    assert_eq!(app.target(&target).await["maxFileBytes"], 1000);
    let e = wait_completed(&app, &initial).await;
    assert_eq!(counts(&e), (2, 0, 0, 1), "{e}");
    assert_eq!(reasons(&e), reasons_of(&[("too_large", 1)]), "{e}");
    assert_eq!(fake.blob_calls_for(&big), 0, "never fetched");
    assert_eq!(fake.calls(Endpoint::Tarball), 0);
    assert_store_matches_git(&app, &target, &repo, &first).await;
    let (status, _, _) = raw_document(&app, &target, "big.bin", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // A stored file that grows over the limit leaves the store; one that
    // shrinks under it enters.
    repo.write("small.md", &[b'c'; 2000]);
    repo.write("big.bin", &[9u8; 500]);
    let second = repo.commit("grow and shrink");
    let ev = push(&app, "size-1", 106, 1006, &first, &second).await;
    let e = wait_completed(&app, &ev).await;
    assert_eq!(counts(&e), (1, 0, 1, 2), "{e}");
    assert_eq!(
        reasons(&e),
        reasons_of(&[("too_large", 1), ("unchanged", 1)]),
        "{e}"
    );
    assert_eq!(
        fake.blob_calls_for(&blob_sha(&repo, &second, "small.md")),
        0,
        "never fetched"
    );
    assert_synced(&app, &target, &second).await;
    assert_store_matches_git(&app, &target, &repo, &second).await;
    app.stop().await;
}
}

// --- 7. symlinks, submodules, LFS pointers ------------------------------------

conformance! {
#[tokio::test]
async fn symlinks_submodules_and_lfs_pointers_are_skipped_with_their_reasons() {
    let (fake, repo) = fake_with_repo(107, 1007).await;
    repo.write("README.md", b"readme\n");
    repo.write("docs/a.md", b"a\n");
    repo.symlink("link.md", "README.md");
    repo.add_submodule_link("vendor/lib", &sha('a'));
    let pointer = format!(
        "version https://git-lfs.github.com/spec/v1\noid sha256:{}\nsize 123\n",
        "4d7a".repeat(16)
    );
    repo.write("assets/model.bin", pointer.as_bytes());
    let first = repo.commit("first");
    let tree = repo.ls_tree(&first);
    assert!(tree
        .iter()
        .any(|(p, m, _, _)| p == "link.md" && m == "120000"));
    assert!(tree
        .iter()
        .any(|(p, m, k, _)| p == "vendor/lib" && m == "160000" && k == "commit"));

    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 107, 1007, json!({})).await;
    let e = wait_completed(&app, &initial).await;
    assert_eq!(counts(&e), (2, 0, 0, 3), "{e}");
    assert_eq!(
        reasons(&e),
        reasons_of(&[("lfs_pointer", 1), ("submodule", 1), ("symlink", 1)]),
        "{e}"
    );
    assert_synced(&app, &target, &first).await;
    assert_store_matches_git(&app, &target, &repo, &first).await;
    for path in ["link.md", "vendor/lib", "assets/model.bin"] {
        let (status, _, _) = raw_document(&app, &target, path, None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path} is not stored");
    }

    // A stored file that becomes a symlink leaves the store.
    repo.symlink("docs/a.md", "../README.md");
    let second = repo.commit("a.md becomes a link");
    let seq = last_seq(&app, &target).await;
    let ev = push(&app, "link-1", 107, 1007, &first, &second).await;
    let e = wait_completed(&app, &ev).await;
    assert_eq!(counts(&e).2, 1, "{e}");
    assert_eq!(reasons(&e)["symlink"], 2, "{e}");
    assert_store_matches_git(&app, &target, &repo, &second).await;
    assert_eq!(
        ops(&changes(&app, &target, seq).await),
        owned(&[("deleted", "docs/a.md")])
    );
    app.stop().await;
}
}

// --- 8. truncated trees -------------------------------------------------------

conformance! {
#[tokio::test]
async fn a_truncated_tree_still_syncs_completely() {
    let (fake, repo) = fake_with_repo(108, 1008).await;
    let pages = write_pages(&repo, 40);
    repo.write("top.md", b"top\n");
    let first = repo.commit("first");
    fake.set_truncate_trees(true);

    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 108, 1008, json!({})).await;
    let e = wait_completed(&app, &initial).await;
    assert_eq!(counts(&e), (41, 0, 0, 0), "{e}");
    assert_synced(&app, &target, &first).await;
    assert_store_matches_git(&app, &target, &repo, &first).await;

    // Incremental syncs see the whole tree too: nothing is taken for deleted.
    repo.write(&pages[39], b"last page, edited\n");
    repo.remove(&pages[0]);
    repo.write("guide/part-9/new.md", b"new\n");
    let second = repo.commit("second");
    let ev = push(&app, "trunc-1", 108, 1008, &first, &second).await;
    let e = wait_completed(&app, &ev).await;
    assert_eq!(counts(&e), (1, 1, 1, 39), "{e}");
    assert_synced(&app, &target, &second).await;
    assert_store_matches_git(&app, &target, &repo, &second).await;
    app.stop().await;
}
}

// --- 9. blob 5xx → partial ----------------------------------------------------

conformance! {
#[tokio::test]
async fn a_blob_that_keeps_failing_ends_partial_and_the_next_sync_fetches_it() {
    let (fake, repo) = fake_with_repo(109, 1009).await;
    for name in ["one", "two", "three", "four", "five"] {
        repo.write(&format!("{name}.md"), format!("{name} v1\n").as_bytes());
    }
    let first = repo.commit("first");
    // Blobs forced: the whole repository is a few bytes, so the fetch plan
    // would take its archive (one call) and no blob call would fail.
    let app = spawn_with_github(fake.base_url(), blobs_only(), TestOptions::default()).await;
    let (target, initial) = track(&app, 109, 1009, json!({})).await;
    wait_completed(&app, &initial).await;
    let seq = last_seq(&app, &target).await;

    for name in ["one", "two", "three"] {
        repo.write(&format!("{name}.md"), format!("{name} v2\n").as_bytes());
    }
    repo.write("six.md", b"six v1\n");
    let second = repo.commit("second");
    let failing = blob_sha(&repo, &second, "two.md");
    // Every try the reconciler makes for two.md's new blob (3) answers 502.
    fake.fail_next(&format!("/git/blobs/{failing}"), 502, 3);

    let ev = push(&app, "5xx-1", 109, 1009, &first, &second).await;
    let e = wait_final(&app, &ev).await;
    assert_eq!(e["status"], "partial", "{e}");
    let failures = e["failures"].as_array().expect("failures");
    assert_eq!(failures.len(), 1, "{e}");
    assert_eq!(failures[0]["path"], "two.md", "{e}");
    assert!(
        !failures[0]["message"].as_str().unwrap_or("").is_empty(),
        "{e}"
    );
    assert_eq!(fake.blob_calls_for(&failing), 3, "retried, then given up");
    let (created, updated, deleted, _) = counts(&e);
    assert_eq!((created, updated, deleted), (1, 2, 0), "{e}");
    // Everything else is applied; two.md keeps what was stored.
    let mut expected = git_files(&repo, &second, "", 1 << 20);
    let old = git_files(&repo, &first, "", 1 << 20);
    expected.insert("two.md".into(), old["two.md"].clone());
    assert_store_equals(&app, &target, &expected, "the push minus two.md").await;
    assert_ne!(
        app.target(&target).await["lastSyncedSha"],
        second.as_str(),
        "not fully synced at the push's head"
    );
    assert_eq!(
        ops(&changes(&app, &target, seq).await),
        owned(&[
            ("created", "six.md"),
            ("updated", "one.md"),
            ("updated", "three.md")
        ])
    );
    let seq = last_seq(&app, &target).await;

    // The fault has cleared: a manual sync fetches the missing file.
    let (status, manual) = app
        .post(&format!("/v1/admin/targets/{target}/sync"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{manual}");
    let mev = manual["id"].as_str().expect("id").to_owned();
    let e = wait_completed(&app, &mev).await;
    assert_eq!(e["headSha"], second, "{e}");
    assert_eq!(counts(&e), (0, 1, 0, 5), "{e}");
    assert!(e["failures"].as_array().expect("failures").is_empty());
    assert_eq!(fake.blob_calls_for(&failing), 4);
    assert_synced(&app, &target, &second).await;
    assert_store_matches_git(&app, &target, &repo, &second).await;
    assert_eq!(
        ops(&changes(&app, &target, seq).await),
        owned(&[("updated", "two.md")])
    );
    app.stop().await;
}
}

// --- 10. rate limits ----------------------------------------------------------

/// Waits until the event is back in the queue after a rate limit.
async fn wait_rate_limited(app: &TestApp, event: &str) -> Value {
    wait_event(app, event, "queued with a next attempt", 10, |e| {
        e["status"] == "queued" && e["nextAttemptAt"].is_string()
    })
    .await
}

conformance! {
#[tokio::test]
async fn a_secondary_rate_limit_delays_the_sync_without_using_an_attempt() {
    let (fake, repo) = fake_with_repo(110, 1010).await;
    repo.write("a.md", b"a1\n");
    repo.write("b.md", b"b1\n");
    let first = repo.commit("first");
    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 110, 1010, json!({})).await;
    wait_completed(&app, &initial).await;

    // On the tree.
    repo.write("a.md", b"a2\n");
    let second = repo.commit("second");
    fake.secondary_rate_limit_next("/git/trees/", 1, 1);
    let ev = push(&app, "rl-tree", 110, 1010, &first, &second).await;
    let queued = wait_rate_limited(&app, &ev).await;
    assert!(
        queued["lastError"]
            .as_str()
            .is_some_and(|m| m.contains("rate limit")),
        "{queued}"
    );
    let e = wait_completed(&app, &ev).await;
    assert_eq!(e["attempts"], 1, "the rate-limited try was given back: {e}");
    assert_eq!(counts(&e), (0, 1, 0, 1), "{e}");
    assert_synced(&app, &target, &second).await;
    assert_store_matches_git(&app, &target, &repo, &second).await;

    // On a blob.
    repo.write("b.md", b"b2\n");
    let third = repo.commit("third");
    let b = blob_sha(&repo, &third, "b.md");
    fake.secondary_rate_limit_next(&format!("/git/blobs/{b}"), 1, 1);
    let ev = push(&app, "rl-blob", 110, 1010, &second, &third).await;
    wait_rate_limited(&app, &ev).await;
    let e = wait_completed(&app, &ev).await;
    assert_eq!(e["attempts"], 1, "{e}");
    assert!(e["failures"].as_array().expect("failures").is_empty());
    assert_eq!(fake.blob_calls_for(&b), 2, "limited once, then fetched");
    assert_synced(&app, &target, &third).await;
    assert_store_matches_git(&app, &target, &repo, &third).await;
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_primary_rate_limit_is_waited_out_and_never_taken_for_lost_access() {
    let (fake, repo) = fake_with_repo(111, 1011).await;
    repo.write("a.md", b"a1\n");
    repo.write("b.md", b"b1\n");
    repo.commit("first");
    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 111, 1011, json!({})).await;
    wait_completed(&app, &initial).await;

    for (n, needle) in ["/git/trees/", "/git/blobs/"].into_iter().enumerate() {
        let before = repo.head("main").expect("head");
        repo.write("a.md", format!("a{}\n", n + 2).as_bytes());
        let after = repo.commit("change");
        fake.primary_rate_limit_next(needle, 2, 1);
        let ev = push(&app, &format!("primary-{n}"), 111, 1011, &before, &after).await;
        // Watch every status and health until the sync ends.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let (mut statuses, mut healths) = (BTreeSet::new(), BTreeSet::new());
        let mut delayed = false;
        let e = loop {
            let e = app.sync_event(&ev).await;
            let t = app.target(&target).await;
            statuses.insert(e["status"].as_str().unwrap_or("").to_owned());
            healths.insert(t["health"].as_str().unwrap_or("").to_owned());
            delayed |= e["status"] == "queued" && e["nextAttemptAt"].is_string();
            if is_final(&e) {
                break e;
            }
            assert!(tokio::time::Instant::now() < deadline, "never ended: {e}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(e["status"], "completed", "{needle}: {e}");
        assert!(!statuses.contains("failed"), "{needle}: {statuses:?}");
        assert!(
            !healths.contains("inaccessible") && !healths.contains("failing"),
            "{needle}: {healths:?}"
        );
        assert!(delayed, "{needle}: the sync waited for the reset");
        assert_eq!(e["attempts"], 1, "{needle}: {e}");
        assert_eq!(app.target(&target).await["status"], "active");
        assert_synced(&app, &target, &after).await;
        assert_store_matches_git(&app, &target, &repo, &after).await;
    }
    app.stop().await;
}
}

// --- 11. token expiry -----------------------------------------------------------

conformance! {
#[tokio::test]
async fn an_expired_installation_token_is_replaced_and_the_sync_completes() {
    let (fake, repo) = fake_with_repo(112, 1012).await;
    let pages = write_pages(&repo, 8);
    let first = repo.commit("first");
    // Blobs forced: this is about a token dying while blob calls are in
    // flight, and the fetch plan would take this small repository's archive.
    let app = spawn_with_github(fake.base_url(), blobs_only(), TestOptions::default()).await;
    let (target, initial) = track(&app, 112, 1012, json!({})).await;
    wait_completed(&app, &initial).await;
    assert_eq!(fake.tokens_issued(), 1, "one token, cached");

    // Between two syncs: the cached token now answers 401.
    fake.expire_all_tokens();
    repo.write(&pages[0], b"changed once\n");
    let second = repo.commit("second");
    let ev = push(&app, "tok-1", 112, 1012, &first, &second).await;
    let e = wait_completed(&app, &ev).await;
    assert_eq!(counts(&e).1, 1, "{e}");
    assert_eq!(fake.tokens_issued(), 2, "refreshed once");
    assert_synced(&app, &target, &second).await;
    assert_store_matches_git(&app, &target, &repo, &second).await;

    // During a sync: slow blobs, and the token dies while one is in flight.
    for p in pages.iter().skip(1).take(4) {
        repo.write(p, b"changed twice\n");
    }
    for (i, p) in pages.iter().skip(5).enumerate() {
        repo.write(p, format!("changed twice, {i}\n").as_bytes());
    }
    let third = repo.commit("third");
    fake.reset_calls();
    fake.set_delay("/git/blobs/", Duration::from_millis(300));
    let ev = push(&app, "tok-2", 112, 1012, &second, &third).await;
    wait_until("a blob download started", || {
        fake.calls(Endpoint::Blob) >= 1
    })
    .await;
    fake.expire_all_tokens();
    let e = wait_completed(&app, &ev).await;
    fake.set_delay("/git/blobs/", Duration::ZERO);
    assert_eq!(counts(&e).1, 7, "{e}");
    assert_eq!(fake.tokens_issued(), 3, "refreshed once more");
    assert_synced(&app, &target, &third).await;
    assert_store_matches_git(&app, &target, &repo, &third).await;
    app.stop().await;
}
}

// --- 12. A → B → A ----------------------------------------------------------------

conformance! {
#[tokio::test]
async fn a_branch_moved_a_to_b_and_back_to_a_ends_at_a() {
    let (fake, repo) = fake_with_repo(113, 1013).await;
    repo.write("base.md", b"base\n");
    repo.write("shared.md", b"shared v0\n");
    repo.commit("base");
    repo.write("shared.md", b"shared at A\n");
    repo.write("only-a.md", b"only in A\n");
    let a = repo.commit("A");
    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 113, 1013, json!({})).await;
    wait_completed(&app, &initial).await;
    // The target starts at A (the branch head when it was added).
    assert_synced(&app, &target, &a).await;

    repo.write("shared.md", b"shared at B\n");
    repo.remove("only-a.md");
    repo.write("only-b.md", b"only in B\n");
    repo.remove("base.md");
    let b = repo.commit("B");
    let ev = push(&app, "aba-1", 113, 1013, &a, &b).await;
    wait_completed(&app, &ev).await;
    assert_synced(&app, &target, &b).await;
    assert_store_matches_git(&app, &target, &repo, &b).await;

    // Reset back to A.
    repo.set_branch("main", &a);
    let ev = push(&app, "aba-2", 113, 1013, &b, &a).await;
    let e = wait_completed(&app, &ev).await;
    assert_eq!(e["headSha"], a, "{e}");
    assert_eq!(counts(&e), (2, 1, 1, 0), "{e}");
    assert_synced(&app, &target, &a).await;
    assert_store_matches_git(&app, &target, &repo, &a).await;

    // The same in quick succession, without waiting in between: whatever runs,
    // is superseded or deduplicated, the branch ends at A.
    let (status, body) = app
        .deliver_json(
            "push",
            "aba-3",
            &push_payload(113, 1013, REPO, "main", &a, &b),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = app
        .deliver_json(
            "push",
            "aba-4",
            &push_payload(113, 1013, REPO, "main", &b, &a),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let events = wait_all_final(&app, &target).await;
    assert!(
        events
            .iter()
            .all(|e| e["status"] != "failed" && e["status"] != "partial"),
        "{events:?}"
    );
    assert_synced(&app, &target, &a).await;
    assert_store_matches_git(&app, &target, &repo, &a).await;
    app.stop().await;
}
}

// --- 13. idempotency, and a crash mid-sync -------------------------------------------

conformance! {
#[tokio::test]
async fn a_sync_run_again_at_the_same_head_changes_nothing() {
    let (fake, repo) = fake_with_repo(114, 1014).await;
    write_pages(&repo, 12);
    repo.write("bin/data.bin", b"\0\x01\x02binary\0");
    let head = repo.commit("first");
    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 114, 1014, json!({})).await;
    wait_completed(&app, &initial).await;
    let docs_before = all_documents(&app, &target).await;
    let feed_before = changes(&app, &target, 0).await;
    assert_eq!(feed_before.len(), 13);

    for round in 0..2 {
        fake.reset_calls();
        let (status, manual) = app
            .post(&format!("/v1/admin/targets/{target}/sync"), json!({}))
            .await;
        assert_eq!(status, StatusCode::ACCEPTED, "{manual}");
        let ev = manual["id"].as_str().expect("id").to_owned();
        let e = wait_completed(&app, &ev).await;
        assert_eq!(e["headSha"], head, "round {round}: {e}");
        assert_eq!(counts(&e), (0, 0, 0, 13), "round {round}: {e}");
        assert_eq!(reasons(&e), reasons_of(&[("unchanged", 13)]), "{e}");
        assert_eq!(fake.calls(Endpoint::Blob), 0, "nothing downloaded");
        assert_eq!(fake.calls(Endpoint::Tarball), 0, "nothing downloaded");
        assert_synced(&app, &target, &head).await;
        assert_eq!(
            changes(&app, &target, 0).await,
            feed_before,
            "no new feed entries"
        );
        assert_eq!(
            all_documents(&app, &target).await,
            docs_before,
            "documents untouched"
        );
        assert_store_matches_git(&app, &target, &repo, &head).await;
    }

    // A push of the head already synced queues nothing new.
    let (status, body) = app
        .deliver_json(
            "push",
            "idem-1",
            &push_payload(114, 1014, REPO, "main", &sha('0'), &head),
        )
        .await;
    assert!(status.is_success(), "{body}");
    assert_ne!(body["outcome"], "accepted", "{body}");
    app.stop().await;
}
}

#[test]
fn a_sync_interrupted_by_a_crash_completes_once_after_restart() {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    // The fake outlives both processes: it runs on its own runtime.
    let rt_fake = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime for the fake");
    let (fake, repo) = rt_fake.block_on(fake_with_repo(115, 1015));
    let pages = write_pages(&repo, 10);
    let head = repo.commit("first");
    // A first sync is one tarball (the fetch plan): slow its download.
    fake.set_delay("/legacy.tar.gz/", Duration::from_millis(400));

    // Process A: starts the initial sync and dies in the middle of the download.
    let rt_a = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime A");
    let opts = TestOptions {
        dir: Some(dir.clone()),
        ..Default::default()
    };
    let (target, initial) = rt_a.block_on(async {
        let app = spawn_synced_app_with(fake.base_url(), opts.clone()).await;
        let (target, initial) = track(&app, 115, 1015, json!({})).await;
        wait_until("the tarball download started", || {
            fake.calls(Endpoint::Archive) >= 1
        })
        .await;
        let running = app.sync_event(&initial).await;
        assert_eq!(running["status"], "running", "{running}");
        assert_eq!(running["attempts"], 1, "{running}");
        drop(app);
        (target, initial)
    });
    // Kill: every task of A dropped where it stands, no release.
    rt_a.shutdown_background();
    fake.set_delay("/legacy.tar.gz/", Duration::ZERO);

    // Process B on the same data directory: the lease expires, B reclaims the job.
    let rt_b = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime B");
    rt_b.block_on(async {
        let app = spawn_synced_app_with(fake.base_url(), opts).await;
        let e = wait_completed(&app, &initial).await;
        assert_eq!(e["attempts"], 2, "{e}");
        assert_eq!(e["headSha"], head, "{e}");
        assert_eq!(counts(&e), (pages.len() as i64, 0, 0, 0), "{e}");
        assert_synced(&app, &target, &head).await;
        assert_store_matches_git(&app, &target, &repo, &head).await;
        let feed = changes(&app, &target, 0).await;
        let mut expected: Vec<(String, String)> = pages
            .iter()
            .map(|p| ("created".to_owned(), p.clone()))
            .collect();
        expected.sort();
        assert_eq!(ops(&feed), expected, "each path once, created");
        assert_eq!(
            app.events_of(&target).await.len(),
            1,
            "one sync, run to completion once"
        );
        app.stop().await;
    });
    drop(rt_b);
    drop(fake);
    drop(rt_fake);
    drop(dir);
}

// --- 14. branch deletion and re-creation -------------------------------------------

conformance! {
#[tokio::test]
async fn a_deleted_branch_is_flagged_and_its_re_creation_syncs_again() {
    let (fake, repo) = fake_with_repo(116, 1016).await;
    repo.write("a.md", b"a\n");
    repo.write("b.md", b"b\n");
    let first = repo.commit("first");
    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 116, 1016, json!({})).await;
    wait_completed(&app, &initial).await;

    // Another branch stays (GitHub answers 409 for a repository with none).
    repo.checkout("keep");
    repo.delete_branch("main");
    assert!(repo.head("main").is_none());
    let events = app.events_of(&target).await.len();
    fake.reset_calls();
    let (status, body) = app
        .deliver_json(
            "push",
            "del-1",
            &push_payload(116, 1016, REPO, "main", &first, &sha('0')),
        )
        .await;
    assert!(status.is_success(), "{body}");
    let t = app.target(&target).await;
    assert_eq!(t["health"], "branch_deleted", "{t}");
    assert_eq!(app.events_of(&target).await.len(), events, "no sync queued");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.total_repo_calls(), 0, "nothing asked of GitHub");
    assert_eq!(app.target(&target).await["health"], "branch_deleted");

    // Re-created, with a new commit.
    repo.checkout("main");
    repo.write("c.md", b"c, after re-creation\n");
    repo.remove("a.md");
    let recreated = repo.commit("re-created");
    let ev = push(&app, "del-2", 116, 1016, &sha('0'), &recreated).await;
    let e = wait_completed(&app, &ev).await;
    assert_eq!(e["headSha"], recreated, "{e}");
    assert_synced(&app, &target, &recreated).await;
    assert_store_matches_git(&app, &target, &repo, &recreated).await;
    app.stop().await;
}
}

// --- 15. the documents API ------------------------------------------------------------

conformance! {
#[tokio::test]
async fn the_documents_api_serves_etags_prefixes_pages_and_the_change_feed() {
    let (fake, repo) = fake_with_repo(117, 1017).await;
    repo.write("docs/a.md", b"# A\n");
    repo.write("docs/b.md", b"# B\n");
    repo.write("docs/c.json", b"{\"c\": 1}\n");
    repo.write("docs/sub/d.md", b"# D\n");
    repo.write("docs_other/e.md", b"# E\n");
    repo.write("img/f.bin", b"\0\x01binary");
    repo.write("z.txt", b"zed\n");
    let first = repo.commit("first");
    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 117, 1017, json!({})).await;
    wait_completed(&app, &initial).await;
    assert_store_matches_git(&app, &target, &repo, &first).await;

    // Raw bytes, content type, ETag = "<blob sha>", 304 on If-None-Match.
    let a_sha = blob_sha(&repo, &first, "docs/a.md");
    let (status, headers, body) = raw_document(&app, &target, "docs/a.md", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"# A\n");
    let etag = headers["etag"].to_str().expect("etag").to_owned();
    assert_eq!(etag, format!("\"{a_sha}\""));
    assert!(headers["content-type"]
        .to_str()
        .expect("content type")
        .starts_with("text/markdown"));
    let (status, headers, body) = raw_document(&app, &target, "docs/a.md", Some(&etag)).await;
    assert_eq!(status, StatusCode::NOT_MODIFIED);
    assert!(body.is_empty());
    assert_eq!(headers["etag"].to_str().expect("etag"), etag);
    let (status, _, _) = raw_document(&app, &target, "docs/a.md", Some("\"0000\"")).await;
    assert_eq!(status, StatusCode::OK, "another ETag does not match");
    let (_, headers, _) = raw_document(&app, &target, "img/f.bin", None).await;
    assert_eq!(headers["content-type"], "application/octet-stream");

    // Unknown path, unknown target.
    let (status, _, _) = raw_document(&app, &target, "docs/nope.md", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, _) = raw_document(&app, &target, "docs", None).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "a directory is not a document"
    );
    let (status, _, _) = raw_document(&app, "tgt_nope", "docs/a.md", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get("/v1/admin/targets/tgt_nope/documents").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = app.get("/v1/admin/targets/tgt_nope/changes").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // ?prefix= filters by path prefix (a string prefix, as documented).
    let paths = |docs: Vec<Value>| -> Vec<String> {
        docs.iter()
            .map(|d| d["path"].as_str().expect("path").to_owned())
            .collect()
    };
    assert_eq!(
        paths(documents(&app, &target, Some("docs/"), 1000).await),
        vec!["docs/a.md", "docs/b.md", "docs/c.json", "docs/sub/d.md"]
    );
    assert_eq!(
        paths(documents(&app, &target, Some("docs/sub/"), 1000).await),
        vec!["docs/sub/d.md"]
    );
    assert!(documents(&app, &target, Some("nothing/"), 1000)
        .await
        .is_empty());

    // Pagination: pages of 2 cover everything once, in order.
    let first_page = documents_page(&app, &target, None, 2, None).await;
    assert_eq!(first_page["items"].as_array().expect("items").len(), 2);
    assert!(first_page["nextCursor"].is_string(), "{first_page}");
    let all = paths(all_documents(&app, &target).await);
    assert_eq!(all.len(), 7);
    assert_eq!(paths(documents(&app, &target, None, 2).await), all);
    assert_eq!(
        paths(documents(&app, &target, Some("docs/"), 3).await),
        vec!["docs/a.md", "docs/b.md", "docs/c.json", "docs/sub/d.md"]
    );
    let (status, _) = app
        .get(&format!("/v1/admin/targets/{target}/documents?limit=0"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // The change feed: `after` pages through it, oldest first.
    let seq = last_seq(&app, &target).await;
    repo.write("docs/a.md", b"# A, edited\n");
    repo.remove("z.txt");
    let second = repo.commit("second");
    let ev = push(&app, "api-1", 117, 1017, &first, &second).await;
    wait_completed(&app, &ev).await;
    let feed = changes(&app, &target, 0).await;
    assert_eq!(feed.len(), 9);
    let seqs: Vec<i64> = feed
        .iter()
        .map(|c| c["seq"].as_i64().expect("seq"))
        .collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    let newer = changes(&app, &target, seq).await;
    assert_eq!(
        ops(&newer),
        owned(&[("deleted", "z.txt"), ("updated", "docs/a.md")])
    );
    let updated = newer.iter().find(|c| c["op"] == "updated").expect("update");
    assert_eq!(
        updated["blobSha"],
        blob_sha(&repo, &second, "docs/a.md").as_str()
    );
    let page = changes_page(&app, &target, 0, 4).await;
    assert_eq!(page["items"].as_array().expect("items").len(), 4);
    let cursor: i64 = page["nextCursor"]
        .as_str()
        .expect("cursor")
        .parse()
        .expect("seq");
    assert_eq!(cursor, seqs[3]);
    let rest = changes_page(&app, &target, cursor, 100).await;
    assert_eq!(
        rest["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|c| c["seq"].as_i64().expect("seq"))
            .collect::<Vec<_>>(),
        seqs[4..].to_vec()
    );
    assert!(rest["nextCursor"].is_null(), "{rest}");
    let empty = changes_page(&app, &target, *seqs.last().unwrap(), 100).await;
    assert!(empty["items"].as_array().expect("items").is_empty());
    let (status, _) = app
        .get(&format!("/v1/admin/targets/{target}/changes?after=-1"))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    app.stop().await;
}
}

// --- 16. GitHub's required headers, GitHub Enterprise Server ---------------------------

conformance! {
#[tokio::test]
async fn the_headers_github_requires_are_sent() {
    let (fake, repo) = fake_with_repo(118, 1018).await;
    repo.write("a.md", b"a\n");
    let head = repo.commit("first");
    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 118, 1018, json!({})).await;
    // The fake refuses requests without a User-Agent, as GitHub does.
    wait_completed(&app, &initial).await;
    assert!(fake.saw_api_version_header(), "X-GitHub-Api-Version sent");
    assert_store_matches_git(&app, &target, &repo, &head).await;
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_github_enterprise_server_api_url_works() {
    let (fake, repo) = fake_with_repo(119, 1019).await;
    let pages = write_pages(&repo, 70);
    let first = repo.commit("first");
    let app = spawn_synced_app_with(
        format!("{}/api/v3", fake.base_url()),
        TestOptions::default(),
    )
    .await;
    let (target, initial) = track(&app, 119, 1019, json!({})).await;
    wait_completed(&app, &initial).await;
    assert_store_matches_git(&app, &target, &repo, &first).await;
    repo.write(&pages[0], b"edited\n");
    let second = repo.commit("second");
    let ev = push(&app, "ghes-1", 119, 1019, &first, &second).await;
    wait_completed(&app, &ev).await;
    assert_synced(&app, &target, &second).await;
    assert_store_matches_git(&app, &target, &repo, &second).await;
    app.stop().await;
}
}

// --- tarball and job-level failures ----------------------------------------------------

conformance! {
#[tokio::test]
async fn files_the_tarball_leaves_out_or_rewrites_are_fetched_as_blobs() {
    let (fake, repo) = fake_with_repo(120, 1020).await;
    write_pages(&repo, 70);
    // `git archive` (and so GitHub's tarball) drops export-ignore files and
    // expands $Format:...$ in export-subst files: not the blob's bytes.
    repo.write(
        ".gitattributes",
        b"ignored.md export-ignore\nsubst.md export-subst\n",
    );
    repo.write("ignored.md", b"left out of archives\n");
    repo.write("subst.md", b"commit $Format:%H$\n");
    let head = repo.commit("first");

    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 120, 1020, json!({})).await;
    let e = wait_completed(&app, &initial).await;
    assert_eq!(counts(&e), (73, 0, 0, 0), "{e}");
    assert_eq!(fake.calls(Endpoint::Tarball), 1);
    assert_store_matches_git(&app, &target, &repo, &head).await;
    let (_, _, subst) = raw_document(&app, &target, "subst.md", None).await;
    assert_eq!(
        subst, b"commit $Format:%H$\n",
        "the blob, not the archive's rewrite"
    );
    assert_eq!(
        fake.calls(Endpoint::Blob),
        2,
        "only the two the tarball lacked"
    );
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_failing_tarball_download_falls_back_to_blobs() {
    let (fake, repo) = fake_with_repo(121, 1021).await;
    write_pages(&repo, 70);
    let head = repo.commit("first");
    fake.fail_next("/tarball/", 502, 1);

    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 121, 1021, json!({})).await;
    let e = wait_completed(&app, &initial).await;
    assert_eq!(counts(&e), (70, 0, 0, 0), "{e}");
    assert_synced(&app, &target, &head).await;
    assert_store_matches_git(&app, &target, &repo, &head).await;
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_rate_limited_tarball_delays_the_sync_instead_of_downloading_blob_by_blob() {
    let (fake, repo) = fake_with_repo(122, 1022).await;
    write_pages(&repo, 70);
    let head = repo.commit("first");
    fake.secondary_rate_limit_next("/tarball/", 1, 1);

    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 122, 1022, json!({})).await;
    let e = wait_final(&app, &initial).await;
    assert_eq!(e["status"], "completed", "{e}");
    // GitHub asks for no request before `retry-after`: a rate-limited tarball
    // must put the job back in the queue, not set off 70 blob calls at once.
    assert_eq!(
        fake.calls(Endpoint::Blob),
        0,
        "blob calls made while rate limited"
    );
    assert_eq!(fake.calls(Endpoint::Tarball), 2, "limited, then downloaded");
    assert_eq!(e["attempts"], 1, "{e}");
    assert_synced(&app, &target, &head).await;
    assert_store_matches_git(&app, &target, &repo, &head).await;
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_tree_5xx_is_retried_with_backoff_and_then_completes() {
    let (fake, repo) = fake_with_repo(123, 1023).await;
    repo.write("a.md", b"a\n");
    let first = repo.commit("first");
    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 123, 1023, json!({})).await;
    wait_completed(&app, &initial).await;

    repo.write("a.md", b"a2\n");
    let second = repo.commit("second");
    fake.fail_next("/git/trees/", 502, 2);
    let ev = push(&app, "tree-5xx", 123, 1023, &first, &second).await;
    let e = wait_completed(&app, &ev).await;
    assert_eq!(
        e["attempts"], 3,
        "two transient failures, then success: {e}"
    );
    assert_synced(&app, &target, &second).await;
    assert_store_matches_git(&app, &target, &repo, &second).await;
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_repository_gone_from_github_fails_the_sync_for_good_and_marks_the_target() {
    let (fake, repo) = fake_with_repo(124, 1024).await;
    repo.write("a.md", b"a\n");
    let first = repo.commit("first");
    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 124, 1024, json!({})).await;
    wait_completed(&app, &initial).await;

    fake.remove_repo(REPO);
    repo.write("a.md", b"a2\n");
    let second = repo.commit("second");
    let ev = push(&app, "gone-1", 124, 1024, &first, &second).await;
    let e = wait_final(&app, &ev).await;
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(e["attempts"], 1, "a 404 is not retried: {e}");
    assert!(
        e["lastError"].as_str().is_some_and(|m| !m.is_empty()),
        "{e}"
    );
    let t = app.target(&target).await;
    assert_eq!(t["health"], "inaccessible", "{t}");
    assert_eq!(t["lastSyncedSha"], first, "{t}");
    // What was stored stays.
    assert_store_matches_git(&app, &target, &repo, &first).await;
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_new_token_refused_briefly_is_waited_out_but_a_lasting_401_fails_the_sync_for_good() {
    let (fake, repo) = fake_with_repo(126, 1026).await;
    repo.write("a.md", b"a\n");
    let first = repo.commit("first");
    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 126, 1026, json!({})).await;
    wait_completed(&app, &initial).await;
    let tokens = fake.tokens_issued();

    // The cached token is refused, and so is the fresh one, once: GitHub's
    // lag on a new token. It is tried again after a second and accepted.
    repo.write("a.md", b"a2\n");
    let second = repo.commit("second");
    fake.fail_next("/git/trees/", 401, 2);
    let ev = push(&app, "401-lag", 126, 1026, &first, &second).await;
    let e = wait_completed(&app, &ev).await;
    assert_eq!(e["attempts"], 1, "waited out inside the try: {e}");
    assert_eq!(fake.tokens_issued(), tokens + 1, "one refresh");
    assert_synced(&app, &target, &second).await;

    // Refused for good: the cached token, the fresh one, and the fresh one
    // again after 1 s and 2 s.
    repo.write("a.md", b"a3\n");
    let third = repo.commit("third");
    fake.fail_next("/git/trees/", 401, 4);
    let ev = push(&app, "401-1", 126, 1026, &second, &third).await;
    let e = wait_final(&app, &ev).await;
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(e["attempts"], 1, "not retried: {e}");
    assert!(
        e["lastError"].as_str().is_some_and(|m| m.contains("401")),
        "{e}"
    );
    assert_eq!(
        fake.tokens_issued(),
        tokens + 2,
        "one refresh, then give up"
    );
    let t = app.target(&target).await;
    assert_eq!(t["health"], "inaccessible", "{t}");
    assert_store_matches_git(&app, &target, &repo, &second).await;
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn token_minting_is_single_flight_per_installation() {
    let (fake, docs) = fake_with_repo(125, 1025).await;
    let site = fake.add_repo("octo/site", 1125, 125);
    docs.write("a.md", b"docs\n");
    let docs_head = docs.commit("docs");
    site.write("index.html", b"<p>site</p>\n");
    let site_head = site.commit("site");
    // Slow token answers: both initial syncs ask while the first mint is pending.
    fake.set_delay("/access_tokens", Duration::from_millis(400));

    let app = spawn_synced_app(&fake).await;
    let connector = app.create_connector(125).await;
    let mut made = vec![];
    for (name, id) in [(REPO, 1025), ("octo/site", 1125)] {
        let (status, body) = app
            .post(
                &format!("/v1/admin/connectors/{connector}/targets"),
                json!({"repositoryFullName": name, "repositoryId": id, "branch": "main"}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        made.push((
            body["id"].as_str().expect("id").to_owned(),
            body["initialSyncEvent"]["id"]
                .as_str()
                .expect("event")
                .to_owned(),
        ));
    }
    for (_, ev) in &made {
        wait_completed(&app, ev).await;
    }
    assert_eq!(fake.tokens_issued(), 1, "one token for the installation");
    assert_eq!(fake.calls(Endpoint::AccessToken), 1);
    assert_store_matches_git(&app, &made[0].0, &docs, &docs_head).await;
    assert_store_matches_git(&app, &made[1].0, &site, &site_head).await;
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn an_exhausted_rate_budget_stops_requests_until_the_reset() {
    let (fake, repo) = fake_with_repo(127, 1027).await;
    repo.write("a.md", b"a\n");
    let first = repo.commit("first");
    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 127, 1027, json!({})).await;
    wait_completed(&app, &initial).await;

    // From now on every answer says the hour's budget is spent.
    fake.set_rate_limit_remaining(0);
    repo.write("a.md", b"a2\n");
    let second = repo.commit("second");
    fake.reset_calls();
    let ev = push(&app, "budget-1", 127, 1027, &first, &second).await;
    let e = wait_rate_limited(&app, &ev).await;
    let next = chrono::DateTime::parse_from_rfc3339(e["nextAttemptAt"].as_str().unwrap())
        .expect("nextAttemptAt");
    assert!(
        next > chrono::Utc::now() + chrono::Duration::minutes(10),
        "waits for the reset, about an hour away: {e}"
    );
    assert_eq!(fake.calls(Endpoint::Blob), 0, "no call past the budget");
    assert_eq!(e["attempts"], 0, "no attempt used: {e}");
    let t = app.target(&target).await;
    assert_eq!(t["health"], "ok", "{t}");
    assert_eq!(t["lastSyncedSha"], first, "{t}");
    app.stop().await;
}
}

// --- 20. GitHub faults mid-sync ---------------------------------------------------

conformance! {
#[tokio::test]
async fn a_burst_of_5xx_on_the_tree_the_tarball_and_blobs_is_retried_and_ends_equal_to_git() {
    let (fake, repo) = fake_with_repo(130, 1030).await;
    write_pages(&repo, 70);
    let head = repo.commit("first");
    // The tree fails the first two attempts (the job's retries); then the
    // archive fails (the sync falls back to blobs); then two blob answers
    // fail (retried in the process: even one blob getting both still has a
    // third of its 3 tries, so no per-file failure).
    fake.fail_next("/git/trees/", 503, 2);
    fake.fail_next("/tarball/", 503, 1);
    fake.fail_next("/git/blobs/", 502, 2);

    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 130, 1030, json!({})).await;
    let e = wait_completed(&app, &initial).await;
    assert_eq!(e["attempts"], 3, "two failed tree calls, then success: {e}");
    assert_eq!(counts(&e), (70, 0, 0, 0), "{e}");
    assert!(e["failures"].as_array().expect("failures").is_empty(), "{e}");
    assert_eq!(fake.calls(Endpoint::Tree), 3, "one tree call per attempt");
    assert_eq!(fake.calls(Endpoint::Tarball), 1, "one archive try");
    assert_eq!(fake.calls(Endpoint::Blob), 72, "70 blobs, 2 of them twice");
    assert_synced(&app, &target, &head).await;
    assert_store_matches_git(&app, &target, &repo, &head).await;
    let feed = changes(&app, &target, 0).await;
    assert_eq!(feed.len(), 70, "each path once in the change feed");
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_connection_reset_mid_body_on_the_tarball_or_a_blob_is_recovered_and_ends_equal_to_git() {
    let (fake, repo) = fake_with_repo(131, 1031).await;
    let pages = write_pages(&repo, 70);
    let first = repo.commit("first");
    // The archive's headers and 2,000 bytes, then the connection drops.
    fake.reset_mid_body_next("/legacy.tar.gz/", 2000, 1);
    let app = spawn_synced_app(&fake).await;
    let (target, initial) = track(&app, 131, 1031, json!({})).await;
    let e = wait_completed(&app, &initial).await;
    assert_eq!(e["attempts"], 1, "the rest came blob by blob: {e}");
    assert_eq!(counts(&e), (70, 0, 0, 0), "{e}");
    assert!(e["failures"].as_array().expect("failures").is_empty(), "{e}");
    assert_eq!(fake.calls(Endpoint::Archive), 1, "{e}");
    assert_synced(&app, &target, &first).await;
    assert_store_matches_git(&app, &target, &repo, &first).await;

    // A blob answer broken off after 5 bytes: retried in the process.
    for p in pages.iter().take(3) {
        repo.write(p, b"changed after the reset\n");
    }
    repo.write(&pages[3], b"the one that is cut off\n");
    let second = repo.commit("second");
    let cut = blob_sha(&repo, &second, &pages[3]);
    fake.reset_calls();
    fake.reset_mid_body_next(&format!("/git/blobs/{cut}"), 5, 1);
    let ev = push(&app, "reset-blob", 131, 1031, &first, &second).await;
    let e = wait_completed(&app, &ev).await;
    assert_eq!(e["attempts"], 1, "{e}");
    assert_eq!(counts(&e), (0, 4, 0, 66), "66 unchanged: {e}");
    assert!(e["failures"].as_array().expect("failures").is_empty(), "{e}");
    assert_eq!(fake.blob_calls_for(&cut), 2, "cut off once, then whole");
    assert_synced(&app, &target, &second).await;
    assert_store_matches_git(&app, &target, &repo, &second).await;
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn an_installation_suspended_mid_sync_stops_the_sync_at_once_and_fails_later_syncs_clearly() {
    let (fake, repo) = fake_with_repo(132, 1032).await;
    let pages = write_pages(&repo, 30);
    let first = repo.commit("first");
    let app = spawn_with_github(fake.base_url(), blobs_only(), TestOptions::default()).await;
    let (target, initial) = track(&app, 132, 1032, json!({})).await;
    wait_completed(&app, &initial).await;

    // Suspended while slow blob calls are in flight: each answers 403. More
    // changed files than the sync downloads at once, so the ones not yet
    // started show whether the sync stops at the first 403.
    for (i, p) in pages.iter().take(20).enumerate() {
        // Distinct bytes: one blob each (equal bytes are downloaded once).
        repo.write(p, format!("changed while suspended {i}\n").as_bytes());
    }
    let second = repo.commit("second");
    fake.reset_calls();
    fake.set_delay("/git/blobs/", Duration::from_millis(300));
    let ev = push(&app, "suspend-1", 132, 1032, &first, &second).await;
    wait_until("a blob download started", || fake.calls(Endpoint::Blob) >= 1).await;
    fake.suspend_installation(132);
    let e = wait_final(&app, &ev).await;
    fake.set_delay("/git/blobs/", Duration::ZERO);
    // Not a per-file failure for each file: a 403 is about the installation,
    // never one blob, so the sync ends at the first, saying why.
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(e["attempts"], 1, "a suspension is not retried: {e}");
    assert!(
        e["lastError"]
            .as_str()
            .is_some_and(|m| m.contains("This installation has been suspended")),
        "{e}"
    );
    // Files whose download had not started when the first 403 came are
    // never asked for. (Those in flight may be asked again: a refusal of a
    // token minted seconds ago is waited out as GitHub's lag first.)
    let asked = pages
        .iter()
        .take(20)
        .filter(|p| fake.blob_calls_for(&blob_sha(&repo, &second, p)) > 0)
        .count();
    assert!(
        asked <= 16,
        "{asked} of the 20 changed files were asked for: the sync went on after the first 403"
    );
    // Nothing half-written: the store still equals git at the first commit.
    assert_store_matches_git(&app, &target, &repo, &first).await;

    // A sync while suspended fails at once, saying why (the cached token
    // answers 403 on the tree call; it is not retried).
    repo.write(&pages[26], b"pushed while suspended\n");
    let third = repo.commit("third");
    let ev = push(&app, "suspend-2", 132, 1032, &second, &third).await;
    let e = wait_final(&app, &ev).await;
    assert_eq!(e["status"], "failed", "{e}");
    assert_eq!(e["attempts"], 1, "{e}");
    assert!(
        e["lastError"]
            .as_str()
            .is_some_and(|m| m.contains("403") && m.contains("This installation has been suspended")),
        "{e}"
    );
    assert_store_matches_git(&app, &target, &repo, &first).await;

    // Unsuspended: the next push syncs everything, counts once each.
    fake.unsuspend_installation(132);
    repo.write(&pages[27], b"after the suspension\n");
    let fourth = repo.commit("fourth");
    let ev = push(&app, "suspend-3", 132, 1032, &third, &fourth).await;
    let e = wait_completed(&app, &ev).await;
    assert_eq!(counts(&e), (0, 22, 0, 8), "eight unchanged: {e}");
    assert_synced(&app, &target, &fourth).await;
    assert_store_matches_git(&app, &target, &repo, &fourth).await;
    app.stop().await;
}
}

/// Fetch settings whose GitHub timeouts are 1 s, so a test of a GitHub that
/// stops answering takes seconds, not the defaults' minutes.
fn short_timeouts(mode: connectord::github::FetchMode) -> FetchSettings {
    FetchSettings {
        mode,
        timeouts: connectord::github::http::Timeouts {
            read: Duration::from_secs(1),
            request: Duration::from_secs(1),
            ..Default::default()
        },
        ..FetchSettings::default()
    }
}

conformance! {
#[tokio::test]
async fn a_github_answer_slower_than_the_timeout_fails_the_try_clearly_and_the_retry_completes() {
    let (fake, repo) = fake_with_repo(131, 1031).await;
    repo.write("a.md", b"a\n");
    let first = repo.commit("first");
    let app = spawn_with_github(
        fake.base_url(),
        short_timeouts(connectord::github::FetchMode::Auto),
        TestOptions::default(),
    )
    .await;
    let (target, initial) = track(&app, 131, 1031, json!({})).await;
    wait_completed(&app, &initial).await;

    repo.write("a.md", b"a2\n");
    let second = repo.commit("second");
    // The tree answers only after 3 s: past both the 1 s read timeout (no
    // headers) and the whole-answer timeout.
    fake.set_delay("/git/trees/", Duration::from_secs(3));
    let ev = push(&app, "slow-tree", 131, 1031, &first, &second).await;
    let e = wait_event(&app, &ev, "a timed-out try", 20, |e| {
        e["lastError"].as_str().is_some_and(|m| m.contains("timed out"))
    })
    .await;
    assert!(!is_final(&e), "a timeout is transient, retried: {e}");
    let message = e["lastError"].as_str().unwrap();
    assert!(message.contains("/git/trees/"), "names the call: {message}");

    fake.set_delay("/git/trees/", Duration::ZERO);
    let e = wait_completed(&app, &ev).await;
    assert!(e["attempts"].as_i64().unwrap() >= 2, "retried: {e}");
    assert_eq!(counts(&e), (0, 1, 0, 0), "counts not doubled: {e}");
    assert_synced(&app, &target, &second).await;
    assert_store_matches_git(&app, &target, &repo, &second).await;
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_tarball_that_stalls_past_the_read_timeout_falls_back_to_blobs() {
    let (fake, repo) = fake_with_repo(133, 1033).await;
    write_pages(&repo, 70);
    let head = repo.commit("first");
    // Seventy files: the fetch plan takes the archive, which never answers
    // within the read timeout.
    fake.set_delay("/tarball/", Duration::from_secs(5));
    // Only the read timeout is short: a blob answer slowed by a loaded
    // machine must not time out here.
    let mut fetch = short_timeouts(connectord::github::FetchMode::Auto);
    fetch.timeouts.request = Duration::from_secs(60);
    let app = spawn_with_github(fake.base_url(), fetch, TestOptions::default()).await;
    let (target, initial) = track(&app, 133, 1033, json!({})).await;
    let e = wait_completed(&app, &initial).await;
    assert!(fake.calls(Endpoint::Tarball) >= 1, "the archive was asked for");
    assert!(
        fake.calls(Endpoint::Blob) >= 70,
        "every file came blob by blob"
    );
    assert_eq!(e["attempts"], 1, "the fallback is in the same try: {e}");
    assert_eq!(counts(&e), (70, 0, 0, 0), "{e}");
    assert_synced(&app, &target, &head).await;
    assert_store_matches_git(&app, &target, &repo, &head).await;
    app.stop().await;
}
}
