//! The content-addressed blob store through the real application: bytes
//! stored once per git blob id whatever shares them, written before the
//! completion that points documents at them, collected once unreferenced.

mod common;

use async_trait::async_trait;
use common::content::{blob_shas, document_rows};
use common::github::spawn_with_github;
use common::*;
use connectord::github::tarball::git_blob_sha;
use connectord::store::models::{now_ms, ClaimedJob, ContentRetention, DocumentChange, SyncResult};
use connectord::store::{Store, StoreError};
use connectord::sync::{ReconcileError, Reconciler};
use fake_github::{FakeGitHub, TEST_APP_PUBLIC_KEY_PEM};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::borrow::Cow;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

const APP_ID: i64 = 4242;

/// Collects everything unreferenced, however young.
fn collect_all() -> ContentRetention {
    ContentRetention {
        keep_revisions: 1,
        revisions_before: now_ms() + 1,
        blobs_before: now_ms() + 1,
    }
}

async fn raw(app: &TestApp, target: &str, path: &str) -> (StatusCode, Option<String>, Vec<u8>) {
    raw_at(app, target, path, None).await
}

/// `GET …/documents/{path}`, as of `revision` if given: status, ETag, bytes.
async fn raw_at(
    app: &TestApp,
    target: &str,
    path: &str,
    revision: Option<&str>,
) -> (StatusCode, Option<String>, Vec<u8>) {
    let query = revision.map_or(String::new(), |r| format!("?revision={r}"));
    let res = app
        .client
        .get(format!(
            "{}/v1/admin/targets/{target}/documents/{path}{query}",
            app.admin_base
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .expect("document request");
    let etag = res
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    (
        res.status(),
        etag,
        res.bytes().await.expect("body").to_vec(),
    )
}

async fn spawn_synced(fake: &FakeGitHub) -> TestApp {
    spawn_with_github(
        fake.base_url(),
        connectord::github::FetchSettings::default(),
        TestOptions::default(),
    )
    .await
}

conformance! {
#[tokio::test]
async fn a_blob_shared_by_two_targets_and_two_branches_is_stored_once_and_survives_deleting_one() {
    let fake = FakeGitHub::start(APP_ID, TEST_APP_PUBLIC_KEY_PEM).await;
    let repo = fake.add_repo("octo/docs", 700, 70);
    repo.write("shared.md", b"# the same bytes on both branches\n");
    repo.write("only-main.md", b"main only\n");
    repo.commit("main");
    repo.checkout("dev");
    repo.remove("only-main.md");
    repo.write("only-dev.md", b"dev only\n");
    repo.commit("dev");
    let app = spawn_synced(&fake).await;
    let connector = app.create_connector(70).await;
    let (main, e1) = app.create_target(&connector, "octo/docs", Some(700), "main").await;
    let (dev, e2) = app.create_target(&connector, "octo/docs", Some(700), "dev").await;
    app.wait_for_status(&e1, "completed").await;
    app.wait_for_status(&e2, "completed").await;

    let shared = git_blob_sha(b"# the same bytes on both branches\n");
    let expected: BTreeSet<String> = [
        shared.clone(),
        git_blob_sha(b"main only\n"),
        git_blob_sha(b"dev only\n"),
    ]
    .into();
    assert_eq!(blob_shas(&app.db_url).await, expected, "each distinct file once");
    for target in [&main, &dev] {
        let (status, etag, bytes) = raw(&app, target, "shared.md").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(etag, Some(format!("\"{shared}\"")));
        assert_eq!(bytes, b"# the same bytes on both branches\n");
    }

    let (status, _) = app
        .admin(Method::DELETE, &format!("/v1/admin/targets/{main}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    app.store.prune_content(collect_all()).await.expect("prune");
    assert_eq!(document_rows(&app.db_url, &main).await, 0, "a removed target's documents go");
    assert_eq!(
        blob_shas(&app.db_url).await,
        [shared.clone(), git_blob_sha(b"dev only\n")].into(),
        "only the blob no target uses any more is collected"
    );
    let (status, _, bytes) = raw(&app, &dev, "shared.md").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(bytes, b"# the same bytes on both branches\n");
    app.stop().await;
}
}

/// A reconciler the test scripts step by step, with the store to write blobs to.
struct Steps {
    store: OnceLock<Arc<dyn Store>>,
    calls: AtomicUsize,
}

const OLD: &[u8] = b"old bytes\n";
const A: &[u8] = b"first new file\n";
const B: &[u8] = b"second new file\n";

fn upsert(path: &str, bytes: &[u8]) -> DocumentChange {
    DocumentChange::Upsert {
        path: path.into(),
        blob_sha: git_blob_sha(bytes),
        size: bytes.len() as i64,
        is_binary: false,
    }
}

#[async_trait]
impl Reconciler for Steps {
    async fn reconcile(&self, _job: &ClaimedJob) -> Result<SyncResult, ReconcileError> {
        // The initial sync may be claimed before the test hands the store over.
        let store = loop {
            match self.store.get() {
                Some(s) => break s.clone(),
                None => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
            }
        };
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let put = |bytes: &'static [u8]| {
            let store = store.clone();
            async move {
                store
                    .put_blob(&git_blob_sha(bytes), bytes)
                    .await
                    .map_err(|e| ReconcileError::Transient(e.to_string()))
            }
        };
        let changes = match n {
            1 => {
                put(OLD).await?;
                vec![upsert("old.md", OLD)]
            }
            2 => {
                // Writes its blobs, then fails before completing.
                put(A).await?;
                put(B).await?;
                return Err(ReconcileError::Permanent(
                    "broke off after two blobs".into(),
                ));
            }
            // Reuses the blobs the failed sync left, writing none.
            3 => vec![
                upsert("a.md", A),
                upsert("b.md", B),
                DocumentChange::Delete {
                    path: "old.md".into(),
                },
            ],
            // Names a blob nobody wrote: the completion must be refused, every attempt.
            _ => vec![upsert("ghost.md", b"never stored\n")],
        };
        Ok(SyncResult {
            head_sha: Some(sha(char::from(b'0' + n as u8))),
            changes,
            ..Default::default()
        })
    }
}

async fn spawn_steps() -> (TestApp, Arc<Steps>) {
    let steps = Arc::new(Steps {
        store: OnceLock::new(),
        calls: AtomicUsize::new(0),
    });
    let app = spawn_app_with(TestOptions {
        reconciler: Some(steps.clone()),
        ..Default::default()
    })
    .await;
    assert!(steps.store.set(app.store.clone()).is_ok());
    (app, steps)
}

async fn sync_now(app: &TestApp, target: &str) -> String {
    let (status, body) = app
        .post(&format!("/v1/admin/targets/{target}/sync"), json!({}))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    body["id"].as_str().expect("event id").to_owned()
}

conformance! {
#[tokio::test]
async fn a_sync_failing_after_writing_blobs_leaves_documents_unchanged_and_the_next_reuses_them() {
    let (app, steps) = spawn_steps().await;
    let connector = app.create_connector(71).await;
    let (target, initial) = app.create_target(&connector, "octo/docs", Some(710), "main").await;
    app.wait_for_status(&initial, "completed").await;
    assert_eq!(app.document_paths(&target).await, ["old.md"]);

    let failed = sync_now(&app, &target).await;
    app.wait_for_status(&failed, "failed").await;
    assert_eq!(app.document_paths(&target).await, ["old.md"], "a failed sync changes no document");
    let (_, _, bytes) = raw(&app, &target, "old.md").await;
    assert_eq!(bytes, OLD);
    let (_, feed) = app.get(&format!("/v1/admin/targets/{target}/changes")).await;
    assert_eq!(feed["items"].as_array().map(Vec::len), Some(1), "{feed}");
    let stored = blob_shas(&app.db_url).await;
    assert!(stored.contains(&git_blob_sha(A)) && stored.contains(&git_blob_sha(B)), "{stored:?}");

    let next = sync_now(&app, &target).await;
    app.wait_for_status(&next, "completed").await;
    assert_eq!(app.document_paths(&target).await, ["a.md", "b.md"]);
    for (path, bytes) in [("a.md", A), ("b.md", B)] {
        let (status, etag, got) = raw(&app, &target, path).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(etag, Some(format!("\"{}\"", git_blob_sha(bytes))));
        assert_eq!(got, bytes);
    }
    assert_eq!(blob_shas(&app.db_url).await, stored, "no blob written twice, none lost");
    assert_eq!(steps.calls.load(Ordering::SeqCst), 3);
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_completion_naming_a_missing_blob_is_refused_and_retried_until_it_fails() {
    let (app, steps) = spawn_steps().await;
    let connector = app.create_connector(72).await;
    let (target, initial) = app.create_target(&connector, "octo/docs", Some(720), "main").await;
    app.wait_for_status(&initial, "completed").await;
    steps.calls.store(3, Ordering::SeqCst);
    let event = sync_now(&app, &target).await;
    let e = app.wait_for_status(&event, "failed").await;
    assert!(e["attempts"].as_i64().unwrap_or(0) > 1, "retried: {e}");
    assert!(e["lastError"].as_str().unwrap_or("").contains("not stored"), "{e}");
    assert_eq!(app.document_paths(&target).await, ["old.md"], "nothing applied");
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn collection_removes_unreferenced_blobs_only_and_spares_young_ones() {
    let (app, _steps) = spawn_steps().await;
    let connector = app.create_connector(73).await;
    let (target, initial) = app.create_target(&connector, "octo/docs", Some(730), "main").await;
    app.wait_for_status(&initial, "completed").await;
    let stray: &[u8] = b"written by a sync that never completed\n";
    app.store.put_blob(&git_blob_sha(stray), stray).await.expect("put");
    // The same bytes again: stored once.
    app.store.put_blob(&git_blob_sha(stray), stray).await.expect("put again");
    let both: BTreeSet<String> = [git_blob_sha(OLD), git_blob_sha(stray)].into();
    assert_eq!(blob_shas(&app.db_url).await, both);

    // Within the grace period nothing is collected.
    let young = ContentRetention {
        blobs_before: now_ms() - 3_600_000,
        ..collect_all()
    };
    app.store.prune_content(young).await.expect("prune");
    assert_eq!(blob_shas(&app.db_url).await, both);

    app.store.prune_content(collect_all()).await.expect("prune");
    assert_eq!(blob_shas(&app.db_url).await, [git_blob_sha(OLD)].into());
    let (status, _, bytes) = raw(&app, &target, "old.md").await;
    assert_eq!((status, bytes.as_slice()), (StatusCode::OK, OLD));
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_blob_whose_bytes_do_not_hash_to_its_id_is_refused() {
    let app = spawn_app().await;
    let err = app
        .store
        .put_blob(&git_blob_sha(b"claimed"), b"something else")
        .await
        .expect_err("mismatch");
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    let err = app.store.put_blob("not-a-sha", b"").await.expect_err("bad id");
    assert!(matches!(err, StoreError::Invalid(_)), "{err:?}");
    assert!(blob_shas(&app.db_url).await.is_empty());
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn documents_stored_before_blobs_migrate_in_place_with_the_same_etags() {
    // A database at the schema before blobs, with documents in it.
    let backend = common::backend::current();
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    let url = common::backend::database_url(backend, dir.path()).await;
    let (migrations, last_before_blobs) = match backend {
        common::backend::Backend::Sqlite => ("migrations/sqlite", 4),
        common::backend::Backend::Postgres => ("migrations/postgres", 1),
    };
    let mut migrator =
        sqlx::migrate::Migrator::new(Path::new(env!("CARGO_MANIFEST_DIR")).join(migrations))
            .await
            .expect("read migrations");
    let before: Vec<_> = migrator
        .migrations
        .iter()
        .filter(|m| m.version <= last_before_blobs)
        .cloned()
        .collect();
    assert!(before.len() < migrator.migrations.len(), "a blob migration exists");
    migrator.migrations = Cow::Owned(before);
    let mut conn = common::content::connect(&url).await;
    migrator.run(&mut conn).await.expect("migrate to the old schema");

    let head = sha('7');
    let docs: [(&str, &[u8], bool); 3] = [
        ("a.md", b"same bytes\n", false),
        ("copy/a.md", b"same bytes\n", false),
        ("logo.bin", &[0u8, 159, 146, 150, 255], true),
    ];
    for sql in [
        "INSERT INTO connector_instance (id, installation_id, status, created_at, updated_at) \
         VALUES ('ci_old', 74, 'active', 1, 1)",
        "INSERT INTO connector_target (id, connector_id, repository_full_name, repository_id, branch, status, \
         health, last_synced_sha, last_synced_at, created_at, updated_at) \
         VALUES ('ct_old', 'ci_old', 'octo/docs', 740, 'main', 'active', 'ok', $1, 2, 1, 2)",
        "INSERT INTO connector_sync_event (id, connector_target_id, trigger, ref, head_sha, status, created_at, completed_at) \
         VALUES ('se_old', 'ct_old', 'initial', 'refs/heads/main', $1, 'completed', 1, 2)",
    ] {
        let q = sqlx::query(sql);
        let q = if sql.contains("$1") { q.bind(&head) } else { q };
        q.execute(&mut conn).await.expect(sql);
    }
    for (path, bytes, binary) in docs {
        sqlx::query(
            "INSERT INTO document (target_id, path, blob_sha, size, is_binary, content, updated_at, sync_event_id) \
             VALUES ('ct_old', $1, $2, $3, $4, $5, 2, 'se_old')",
        )
        .bind(path)
        .bind(git_blob_sha(bytes))
        .bind(bytes.len() as i64)
        .bind(binary)
        .bind(bytes)
        .execute(&mut conn)
        .await
        .expect("old document");
        sqlx::query(
            "INSERT INTO document_change (target_id, path, op, blob_sha, sync_event_id) \
             VALUES ('ct_old', $1, 'created', $2, 'se_old')",
        )
        .bind(path)
        .bind(git_blob_sha(bytes))
        .execute(&mut conn)
        .await
        .expect("old feed entry");
    }
    drop(conn);

    // The application migrates it at start.
    let app = spawn_app_with(TestOptions {
        dir: Some(dir.clone()),
        ..Default::default()
    })
    .await;
    for (path, bytes, _) in docs {
        let (status, etag, got) = raw(&app, "ct_old", path).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(etag, Some(format!("\"{}\"", git_blob_sha(bytes))), "{path}");
        assert_eq!(got, bytes, "{path}");
    }
    let (_, listing) = app.get("/v1/admin/targets/ct_old/documents").await;
    assert_eq!(listing["items"].as_array().map(Vec::len), Some(3), "{listing}");
    assert_eq!(listing["items"][2]["isBinary"], true, "{listing}");
    assert_eq!(listing["revision"]["headSha"], head.as_str(), "{listing}");
    let (_, feed) = app.get("/v1/admin/targets/ct_old/changes").await;
    assert_eq!(feed["items"][0]["headSha"], head.as_str(), "{feed}");
    assert_eq!(
        blob_shas(&app.db_url).await.len(),
        2,
        "the two copies of one file became one blob"
    );
    app.stop().await;
}
}

/// One page of the listing; `extra` is appended to the query as given.
async fn page(app: &TestApp, target: &str, extra: &[(&str, &str)]) -> (StatusCode, Value) {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in extra {
        q.append_pair(k, v);
    }
    app.get(&format!(
        "/v1/admin/targets/{target}/documents?{}",
        q.finish()
    ))
    .await
}

fn blobs_of(listing: &Value) -> Vec<(String, String)> {
    listing["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| {
            (
                d["path"].as_str().expect("path").to_owned(),
                d["blobSha"].as_str().expect("blobSha").to_owned(),
            )
        })
        .collect()
}

fn version(n: u8, i: usize) -> Vec<u8> {
    format!("version {n} of file {i}\n").into_bytes()
}

conformance! {
#[tokio::test]
async fn a_listing_paged_across_a_sync_shows_one_revision_only() {
    let fake = FakeGitHub::start(APP_ID, TEST_APP_PUBLIC_KEY_PEM).await;
    let repo = fake.add_repo("octo/docs", 750, 75);
    for i in 0..6 {
        repo.write(&format!("f{i}.md"), &version(1, i));
    }
    let head1 = repo.commit("one");
    let app = spawn_synced(&fake).await;
    let connector = app.create_connector(75).await;
    let (target, initial) = app.create_target(&connector, "octo/docs", Some(750), "main").await;
    app.wait_for_status(&initial, "completed").await;

    let (status, first) = page(&app, &target, &[("limit", "2")]).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(first["revision"]["headSha"], head1.as_str(), "{first}");

    // A sync commits while the consumer is between pages.
    for i in 0..5 {
        repo.write(&format!("f{i}.md"), &version(2, i));
    }
    repo.remove("f5.md");
    repo.write("f6.md", &version(2, 6));
    let head2 = repo.commit("two");
    let (status, body) = app
        .deliver_json("push", "snap-1", &push_payload(75, 750, "octo/docs", "main", &head1, &head2))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    app.wait_for_status(body["syncEventIds"][0].as_str().expect("event"), "completed")
        .await;

    let mut seen = blobs_of(&first);
    let mut cursor = first["nextCursor"].as_str().expect("more pages").to_owned();
    loop {
        let (status, next) = page(&app, &target, &[("limit", "2"), ("cursor", &cursor)]).await;
        assert_eq!(status, StatusCode::OK, "{next}");
        assert_eq!(next["revision"]["headSha"], head1.as_str(), "later pages stay on it: {next}");
        seen.extend(blobs_of(&next));
        match next["nextCursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    let old: Vec<(String, String)> =
        (0..6).map(|i| (format!("f{i}.md"), git_blob_sha(&version(1, i)))).collect();
    assert_eq!(seen, old, "every page from the first revision, none from the second");

    let (_, latest) = page(&app, &target, &[]).await;
    assert_eq!(latest["revision"]["headSha"], head2.as_str(), "{latest}");
    let new: Vec<(String, String)> = [0, 1, 2, 3, 4, 6]
        .into_iter()
        .map(|i| (format!("f{i}.md"), git_blob_sha(&version(2, i))))
        .collect();
    assert_eq!(blobs_of(&latest), new);
    let (_, pinned) = page(&app, &target, &[("revision", &head1)]).await;
    assert_eq!(blobs_of(&pinned), old, "?revision= reads the older one");
    let (status, etag, bytes) = raw_at(&app, &target, "f0.md", Some(&head1)).await;
    assert_eq!((status, bytes), (StatusCode::OK, version(1, 0)));
    assert_eq!(etag, Some(format!("\"{}\"", git_blob_sha(&version(1, 0)))));
    assert_eq!(raw(&app, &target, "f0.md").await.2, version(2, 0));
    assert_eq!(raw_at(&app, &target, "f6.md", Some(&head1)).await.0, StatusCode::NOT_FOUND);
    assert_eq!(raw_at(&app, &target, "f5.md", Some(&head1)).await.0, StatusCode::OK);
    let (status, _) = page(&app, &target, &[("revision", &sha('9'))]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Each feed entry names its revision.
    let (_, feed) = app.get(&format!("/v1/admin/targets/{target}/changes?limit=100")).await;
    let rev1_end = first["revision"]["seq"].as_i64().expect("seq");
    let entries = feed["items"].as_array().expect("items");
    assert_eq!(entries.len(), 6 + 7, "{feed}");
    for c in entries {
        let want = if c["seq"].as_i64() <= Some(rev1_end) { &head1 } else { &head2 };
        assert_eq!(c["headSha"], want.as_str(), "{c}");
    }

    // Past retention (only the newest revision kept) the old one is gone:
    // its cursor says so, and its bytes no document needs are collected.
    app.store.prune_content(collect_all()).await.expect("prune");
    let (status, body) = page(&app, &target, &[("limit", "2"), ("cursor", first["nextCursor"].as_str().unwrap())]).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(page(&app, &target, &[("revision", &head1)]).await.0, StatusCode::NOT_FOUND);
    let stored = blob_shas(&app.db_url).await;
    let current: BTreeSet<String> = new.iter().map(|(_, s)| s.clone()).collect();
    assert_eq!(stored, current, "only the latest revision's blobs remain");
    assert_eq!(document_rows(&app.db_url, &target).await, 6);
    let (status, body) = page(&app, &target, &[("cursor", "garbage")]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    app.stop().await;
}
}
