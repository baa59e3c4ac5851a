//! The sync against a hostile or broken GitHub API endpoint (a compromised
//! GitHub Enterprise Server, a proxy), through the real application and the
//! real reconciler, with `fake-github` answering crafted bodies: oversized
//! and wrong blobs, archives whose entries lie, escape or inflate, trees with
//! unclean paths; and how stored documents are served to browsers.

mod common;

use common::github::spawn_with_github;
use common::*;
use connectord::github::tarball::{git_blob_sha, Limits};
use connectord::github::{FetchMode, FetchSettings};
use fake_github::{Endpoint, FakeGitHub, GitRepo};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::io::Write;
use std::time::Duration;

const REPO: &str = "octo/docs";

async fn fake_with_repo(installation: i64, repo_id: i64) -> (FakeGitHub, GitRepo) {
    common::github::fake_with_repo(REPO, installation, repo_id).await
}

async fn spawn_synced(fake: &FakeGitHub, fetch: FetchSettings) -> TestApp {
    spawn_with_github(fake.base_url(), fetch, TestOptions::default()).await
}

fn mode(mode: FetchMode) -> FetchSettings {
    FetchSettings {
        mode,
        ..FetchSettings::default()
    }
}

/// Tracks `main` of [`REPO`]; returns (target, initial event).
async fn track(app: &TestApp, installation: i64, repo_id: i64) -> (String, String) {
    app.track_main(installation, REPO, repo_id, json!({})).await
}

async fn wait_final(app: &TestApp, event: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let e = app.sync_event(event).await;
        if ["completed", "partial", "failed"]
            .iter()
            .any(|s| e["status"] == *s)
        {
            return e;
        }
        assert!(tokio::time::Instant::now() < deadline, "never final: {e}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Raw document: status, a header's value, bytes.
async fn document(
    app: &TestApp,
    target: &str,
    path: &str,
) -> (StatusCode, reqwest::header::HeaderMap, Vec<u8>) {
    let res = app
        .client
        .get(format!(
            "{}/v1/admin/targets/{target}/documents/{path}",
            app.admin_base
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("document");
    let status = res.status();
    let headers = res.headers().clone();
    (status, headers, res.bytes().await.expect("body").to_vec())
}

fn failures(e: &Value) -> Vec<(String, String)> {
    e["failures"]
        .as_array()
        .expect("failures")
        .iter()
        .map(|f| {
            (
                f["path"].as_str().unwrap_or("").to_owned(),
                f["message"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect()
}

fn sha_of(repo: &GitRepo, head: &str, path: &str) -> String {
    repo.ls_tree(head)
        .into_iter()
        .find(|(p, ..)| p == path)
        .expect("in the tree")
        .3
}

conformance! {
#[tokio::test]
async fn a_blob_answer_larger_than_the_tree_says_is_cut_off_and_never_stored() {
    let (fake, repo) = fake_with_repo(201, 2001).await;
    repo.write("small.md", b"ten bytes\n");
    repo.write("fine.md", b"fine\n");
    let head = repo.commit("first");
    let small = sha_of(&repo, &head, "small.md");
    // The tree says 10 bytes; every answer for it is 8 MiB (3 tries' worth).
    fake.respond_next(&format!("/git/blobs/{small}"), "application/vnd.github.raw", vec![b'x'; 8 << 20], 3);

    let app = spawn_synced(&fake, mode(FetchMode::Blobs)).await;
    let (target, initial) = track(&app, 201, 2001).await;
    let e = wait_final(&app, &initial).await;
    assert_eq!(e["status"], "partial", "{e}");
    let f = failures(&e);
    assert_eq!(f.len(), 1, "{e}");
    assert_eq!(f[0].0, "small.md");
    assert!(f[0].1.contains("larger than the tree says"), "{e}");
    assert_eq!(fake.blob_calls_for(&small), 1, "a content failure is not retried");
    assert_eq!(app.document_paths(&target).await, vec!["fine.md".to_owned()]);
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_blob_answer_that_is_not_the_trees_blob_is_a_failure_on_the_raw_and_the_json_path() {
    let (fake, repo) = fake_with_repo(202, 2002).await;
    repo.write("raw.md", b"the real one\n");
    repo.write("json.md", b"the real two\n");
    let head = repo.commit("first");
    let (raw, js) = (sha_of(&repo, &head, "raw.md"), sha_of(&repo, &head, "json.md"));
    // Same length as the real content, other bytes.
    fake.respond_next(&format!("/git/blobs/{raw}"), "application/vnd.github.raw", b"the fake one\n".to_vec(), 1);
    let fake_json = json!({"sha": js, "size": 13, "encoding": "base64",
        "content": base64_of(b"the fake two\n")}).to_string();
    fake.respond_next(&format!("/git/blobs/{js}"), "application/json; charset=utf-8", fake_json.into_bytes(), 1);

    let app = spawn_synced(&fake, mode(FetchMode::Blobs)).await;
    let (target, initial) = track(&app, 202, 2002).await;
    let e = wait_final(&app, &initial).await;
    assert_eq!(e["status"], "partial", "{e}");
    let mut f = failures(&e);
    f.sort();
    assert_eq!(f.len(), 2, "{e}");
    assert_eq!((f[0].0.as_str(), f[1].0.as_str()), ("json.md", "raw.md"));
    assert!(f.iter().all(|(_, m)| m.contains("not the tree's blob")), "{e}");
    assert!(app.document_paths(&target).await.is_empty());
    app.stop().await;
}
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A tar entry with exactly `name` (`..` and `/` allowed) of `kind`.
fn tar_entry(
    b: &mut tar::Builder<Vec<u8>>,
    name: &str,
    kind: tar::EntryType,
    data: &[u8],
    size: Option<u64>,
) {
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.set_size(size.unwrap_or(data.len() as u64));
    if kind == tar::EntryType::Symlink {
        h.set_link_name_literal("/etc/passwd").expect("link");
    }
    h.set_cksum();
    b.append(&h, data).expect("append");
}

fn gzip(tar: Vec<u8>) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&tar).expect("gzip");
    e.finish().expect("gzip")
}

conformance! {
#[tokio::test]
async fn a_hostile_tarball_stores_nothing_under_a_wrong_path_and_the_blobs_fill_in() {
    let (fake, repo) = fake_with_repo(203, 2003).await;
    let names: Vec<String> = (0..6).map(|i| format!("page-{i}.md")).collect();
    for (i, n) in names.iter().enumerate() {
        repo.write(n, format!("page {i}\n").as_bytes());
    }
    let head = repo.commit("first");
    let good = |i: usize| format!("page {i}\n").into_bytes();
    let top = format!("octo-docs-{}", &head[..7]);
    let mut b = tar::Builder::new(Vec::new());
    tar_entry(&mut b, &format!("{top}/"), tar::EntryType::Directory, b"", None);
    // Correct bytes, wrong places: outside the top, `..`, absolute, a link.
    tar_entry(&mut b, "elsewhere/page-0.md", tar::EntryType::Regular, &good(0), None);
    tar_entry(&mut b, &format!("{top}/../page-1.md"), tar::EntryType::Regular, &good(1), None);
    tar_entry(&mut b, "/page-2.md", tar::EntryType::Regular, &good(2), None);
    tar_entry(&mut b, &format!("{top}/page-3.md"), tar::EntryType::Symlink, b"", None);
    b.append_pax_extensions([("path", format!("{top}/../../page-4.md").as_bytes())]).expect("pax");
    tar_entry(&mut b, &format!("{top}/decoy"), tar::EntryType::Regular, &good(4), None);
    // Larger than the tree says (the tree: 7 bytes).
    tar_entry(&mut b, &format!("{top}/page-5.md"), tar::EntryType::Regular, &vec![b'x'; 100_000], None);
    let archive = gzip(b.into_inner().expect("tar"));
    fake.respond_next("/legacy.tar.gz/", "application/x-gzip", archive, 1);

    let app = spawn_synced(&fake, mode(FetchMode::Tarball)).await;
    let (target, initial) = track(&app, 203, 2003).await;
    let e = wait_final(&app, &initial).await;
    assert_eq!(e["status"], "completed", "{e}");
    assert_eq!(fake.calls(Endpoint::Archive), 1);
    // Nothing came from the archive: each file was fetched as its blob.
    assert_eq!(fake.calls(Endpoint::Blob), 6);
    let mut paths = app.document_paths(&target).await;
    paths.sort();
    assert_eq!(paths, names);
    for (i, n) in names.iter().enumerate() {
        let (status, headers, bytes) = document(&app, &target, n).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(bytes, good(i), "{n}");
        assert_eq!(headers["etag"], format!("\"{}\"", git_blob_sha(&good(i))));
    }
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_gzip_bomb_fails_the_sync_at_the_byte_cap_and_stores_nothing() {
    let (fake, repo) = fake_with_repo(204, 2004).await;
    repo.write("tiny.md", b"tiny\n");
    repo.write("also.md", b"also\n");
    repo.write("more.md", b"more\n");
    let head = repo.commit("first");
    let top = format!("octo-docs-{}", &head[..7]);
    let mut b = tar::Builder::new(Vec::new());
    tar_entry(&mut b, &format!("{top}/zeros"), tar::EntryType::Regular, &vec![0u8; 8 << 20], None);
    let bomb = gzip(b.into_inner().expect("tar"));
    assert!(bomb.len() < 256 << 10, "{} bytes", bomb.len());
    fake.respond_next("/legacy.tar.gz/", "application/x-gzip", bomb, 1);

    let fetch = FetchSettings {
        mode: FetchMode::Tarball,
        archive: Limits {
            max_bytes: 64 << 20,
            max_entries: 1000,
        },
        ..FetchSettings::default()
    };
    let app = spawn_synced(&fake, fetch).await;
    let (target, initial) = track(&app, 204, 2004).await;
    let e = wait_final(&app, &initial).await;
    // The tree says a few bytes: the archive's own cap (far under the
    // configured 64 MiB) stops the inflating.
    assert_eq!(e["status"], "failed", "{e}");
    let err = e["lastError"].as_str().unwrap_or("");
    assert!(err.contains("decompressed bytes") && err.contains("not what its tree says"), "{e}");
    assert_eq!(e["attempts"], 1, "not retried: {e}");
    assert_eq!(fake.calls(Endpoint::Blob), 0);
    assert!(app.document_paths(&target).await.is_empty());
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn tree_paths_that_are_not_clean_are_per_file_failures() {
    let (fake, repo) = fake_with_repo(205, 2005).await;
    repo.write("ok.md", b"ok\n");
    let head = repo.commit("first");
    let ok = sha_of(&repo, &head, "ok.md");
    let entry = |path: &str| json!({"path": path, "mode": "100644", "type": "blob", "sha": ok, "size": 3});
    let tree = json!({"sha": head, "truncated": false, "tree": [
        entry("ok.md"), entry("../../etc/passwd"), entry("/abs.md"), entry("a\u{0}b.md"),
        entry("dir//x.md"), entry("ctl\u{1b}.md"),
    ]});
    fake.respond_next("/git/trees/", "application/json", tree.to_string().into_bytes(), 1);

    let app = spawn_synced(&fake, FetchSettings::default()).await;
    let (target, initial) = track(&app, 205, 2005).await;
    let e = wait_final(&app, &initial).await;
    assert_eq!(e["status"], "partial", "{e}");
    let f = failures(&e);
    assert_eq!(f.len(), 5, "{e}");
    assert!(f.iter().all(|(_, m)| m.starts_with("refused: the path")), "{e}");
    assert_eq!(app.document_paths(&target).await, vec!["ok.md".to_owned()]);
    assert_eq!(fake.calls(Endpoint::Blob), 1, "only ok.md was fetched");
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn documents_a_browser_would_render_are_served_as_plain_text_with_nosniff() {
    let (fake, repo) = fake_with_repo(206, 2006).await;
    let page: &[u8] = b"<html><script>fetch('/v1/admin/connectors')</script></html>\n";
    repo.write("evil.html", page);
    repo.write("evil.svg", b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>\n");
    repo.write("evil.xml", b"<?xml version='1.0'?><x/>\n");
    repo.write("evil.js", b"alert(1)\n");
    repo.write("README.md", b"# hi\n");
    repo.write("logo.bin", b"\x89PNG\0\0");
    let head = repo.commit("first");
    let app = spawn_synced(&fake, FetchSettings::default()).await;
    let (target, initial) = track(&app, 206, 2006).await;
    assert_eq!(wait_final(&app, &initial).await["status"], "completed");
    for (path, ty) in [
        ("evil.html", "text/plain; charset=utf-8"),
        ("evil.svg", "text/plain; charset=utf-8"),
        ("evil.xml", "text/plain; charset=utf-8"),
        ("evil.js", "text/plain; charset=utf-8"),
        ("README.md", "text/markdown; charset=utf-8"),
        ("logo.bin", "application/octet-stream"),
    ] {
        let (status, h, bytes) = document(&app, &target, path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(h["content-type"], ty, "{path}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert!(h["content-security-policy"].to_str().unwrap_or("").contains("sandbox"), "{path}");
        assert_eq!(bytes, repo.show(&head, path), "{path}: bytes unchanged");
    }
    app.stop().await;
}
}
