//! The missed-push pass through the real application and the GitHub double:
//! a push whose webhook never came is synced (trigger `reconcile`), an
//! unchanged branch is read with `If-None-Match` and answers 304, pushes
//! delivered out of order end at GitHub's head, and a push that does not
//! start where the last one ended is counted as a gap. Both backends.

mod common;

use common::github::{github_config, APP_ID};
use common::*;
use connectord::github::FetchSettings;
use fake_github::{Endpoint, FakeGitHub, GitRepo, TEST_APP_PUBLIC_KEY_PEM};
use reqwest::StatusCode;
use serde_json::Value;
use std::time::Duration;

const INSTALLATION: i64 = 61;
const REPO: &str = "octo/handbook";
const REPO_ID: i64 = 6100;
/// The pass's period here: a pass reads every head within 90% of it.
const EVERY: Duration = Duration::from_secs(1);

async fn fake() -> (FakeGitHub, GitRepo) {
    let fake = FakeGitHub::start(APP_ID, TEST_APP_PUBLIC_KEY_PEM).await;
    fake.add_installation(INSTALLATION);
    let repo = fake.add_repo(REPO, REPO_ID, INSTALLATION);
    (fake, repo)
}

async fn spawn(fake: &FakeGitHub, every: Option<Duration>) -> TestApp {
    let mut github = github_config(fake.base_url(), FetchSettings::default());
    github.reconcile_interval = every;
    spawn_app_with(TestOptions {
        github: Some(github),
        ..TestOptions::default()
    })
    .await
}

/// Waits until the target is synced at `head` with no sync left to run.
async fn settled_at(app: &TestApp, target: &str, head: &str) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let t = app.target(target).await;
        let events = app.events_of(target).await;
        let all_final = events
            .iter()
            .all(|e| !matches!(e["status"].as_str(), Some("queued" | "running")));
        if t["lastSyncedSha"] == head && all_final {
            return t;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "target never settled at {head} within 30 s: {t}\nevents: {events:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The value of a counter in the Prometheus text (0 when absent).
async fn counter(app: &TestApp, series: &str) -> f64 {
    let text = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics text");
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
        .unwrap_or(0.0)
}

fn reconcile_events(events: &[Value]) -> Vec<&Value> {
    events
        .iter()
        .filter(|e| e["trigger"] == "reconcile")
        .collect()
}

conformance! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_push_whose_webhook_never_came_is_synced_by_the_pass_and_an_unchanged_branch_costs_a_304() {
        let (fake, repo) = fake().await;
        repo.write("README.md", b"# Handbook\n");
        let first = repo.commit("first");
        let app = spawn(&fake, Some(EVERY)).await;
        let (target, initial) = app.track_main(INSTALLATION, REPO, REPO_ID, serde_json::json!({})).await;
        app.wait_for_status(&initial, "completed").await;

        // A push on GitHub, and no webhook for it.
        repo.write("README.md", b"# Handbook, edited\n");
        repo.write("guide.md", b"new\n");
        let second = repo.commit("second");
        let t = settled_at(&app, &target, &second).await;
        assert_eq!(t["latestHeadSha"], second, "{t}");
        assert_eq!(app.document_paths(&target).await, ["README.md", "guide.md"]);
        let events = app.events_of(&target).await;
        let reconciled = reconcile_events(&events);
        assert_eq!(reconciled.len(), 1, "one reconcile sync: {events:#?}");
        assert_eq!(reconciled[0]["headSha"], second, "{events:#?}");
        assert_eq!(reconciled[0]["status"], "completed", "{events:#?}");
        assert!(reconciled[0]["deliveryId"].is_null(), "{events:#?}");
        assert_ne!(first, second);

        // Nothing changes now: the next reads send the ETag and GitHub answers
        // 304 (free of rate limit), and no further sync is queued.
        let (refs, answered_304) = (fake.calls(Endpoint::Ref), fake.not_modified_answers());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while fake.not_modified_answers() < answered_304 + 2 {
            assert!(tokio::time::Instant::now() < deadline, "no two 304s within 10 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(fake.calls(Endpoint::Ref) >= refs + 2);
        assert!(counter(&app, "connectord_reconcile_checks_total{result=\"not_modified\"}").await >= 2.0);
        let events = app.events_of(&target).await;
        assert_eq!(reconcile_events(&events).len(), 1, "{events:#?}");
        assert_eq!(events.len(), 2, "initial and one reconcile: {events:#?}");
        app.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pushes_delivered_out_of_order_end_at_githubs_head() {
        let (fake, repo) = fake().await;
        repo.write("a.md", b"a\n");
        let a = repo.commit("a");
        let mut heads = vec![];
        for (i, text) in ["b", "c", "d"].iter().enumerate() {
            repo.write(&format!("{text}.md"), format!("{i}\n").as_bytes());
            heads.push(repo.commit(text));
        }
        let (b, c, d) = (heads[0].clone(), heads[1].clone(), heads[2].clone());
        // Without the pass first: the known limit of the ingest rules.
        for every in [None, Some(EVERY)] {
            let app = spawn(&fake, every).await;
            let (target, initial) = app.track_main(INSTALLATION, REPO, REPO_ID, serde_json::json!({})).await;
            app.wait_for_status(&initial, "completed").await;
            // The initial sync read d. Then the webhooks of a→b, b→c, c→d
            // arrive as c→d, a→b, b→c: the last push overtook the two before it.
            let gaps = counter(&app, "connectord_push_gaps_total").await;
            for (n, (before, after)) in [(&c, &d), (&a, &b), (&b, &c)].into_iter().enumerate() {
                let body = push_payload(INSTALLATION, REPO_ID, REPO, "main", before, after);
                let (status, text) = app
                    .deliver_json("push", &format!("ooo-{}-{n}", every.is_some()), &body)
                    .await;
                assert!(status == StatusCode::ACCEPTED || status == StatusCode::OK, "{status} {text}");
            }
            // a→b starts from a head no recorded push ended at (d was last).
            assert!(counter(&app, "connectord_push_gaps_total").await >= gaps + 1.0);
            match every {
                None => {
                    // The ingest rules alone end at c, the middle head.
                    let t = settled_at(&app, &target, &c).await;
                    let events = app.events_of(&target).await;
                    assert!(reconcile_events(&events).is_empty(), "{events:#?}");
                    assert_eq!(t["latestHeadSha"], c, "{t}");
                }
                Some(_) => {
                    // The pass reads d from GitHub and syncs it.
                    settled_at(&app, &target, &d).await;
                    let events = app.events_of(&target).await;
                    assert!(!reconcile_events(&events).is_empty(), "{events:#?}");
                    assert_eq!(app.document_paths(&target).await, ["a.md", "b.md", "c.md", "d.md"]);
                }
            }
            app.stop().await;
        }
    }
}
