//! Failed-delivery redelivery against the GitHub double, through the real
//! application (`--redeliver-failed` as `Application::with_recovery`), on
//! both backends.

mod common;

use common::github::{fake_with_repo, github_config};
use common::{backend, settings, TestOptions};
use connectord::github::FetchSettings;
use connectord::recovery::RecoverySettings;
use connectord::startup::Application;
use fake_github::{Endpoint, FakeGitHub, HookDelivery};
use std::sync::Arc;
use std::time::{Duration, Instant};

const DAY: i64 = 86_400;

struct Running {
    shutdown: tokio_util::sync::CancellationToken,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
    base: String,
}

impl Running {
    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.handle).await;
    }
}

/// The application with redelivery every 200 ms, in `dir` (a restart reuses it).
async fn start(fake: &FakeGitHub, dir: &Arc<tempfile::TempDir>) -> Running {
    start_with(fake, dir, true).await
}

async fn start_with(
    fake: &FakeGitHub,
    dir: &Arc<tempfile::TempDir>,
    redeliver_failed: bool,
) -> Running {
    let opts = TestOptions {
        dir: Some(dir.clone()),
        github: Some(github_config(fake.base_url(), FetchSettings::default())),
        ..TestOptions::default()
    };
    let db = backend::database_url(backend::current(), dir.path()).await;
    let app = Application::build(settings(&opts, &db), None)
        .await
        .expect("build")
        .with_recovery(RecoverySettings {
            public_url: None,
            redeliver_failed,
            // Below the CLI's 1 s floor: tests build the settings directly.
            redeliver_interval: Duration::from_millis(200),
        });
    let base = format!("http://127.0.0.1:{}", app.port());
    let shutdown = app.shutdown_token();
    let handle = tokio::spawn(app.run_until_stopped());
    Running {
        shutdown,
        handle,
        base,
    }
}

/// Waits until the delivery log has been read `pages` more times.
async fn wait_pages(fake: &FakeGitHub, pages: usize) {
    let want = fake.calls(Endpoint::HookDeliveries) + pages;
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.calls(Endpoint::HookDeliveries) < want {
        assert!(
            Instant::now() < deadline,
            "the delivery log was not read {pages} more times"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

conformance! {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_unrecorded_delivery_is_asked_for_once_across_passes_and_a_restart() {
        let (fake, _repo) = fake_with_repo("octo/docs", 7, 1001).await;
        fake.add_hook_delivery(HookDelivery::new(11, "lost-1", 503, 60));
        // A guid with a failed first attempt and a failed redelivery: one request, for the newest.
        fake.add_hook_delivery(HookDelivery::new(12, "lost-2", 0, 50));
        fake.add_hook_delivery(HookDelivery::new(13, "lost-2", 502, 40).redelivered());
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let app = start(&fake, &dir).await;
        wait_pages(&fake, 3).await;
        let mut asked = fake.redelivery_attempts();
        asked.sort();
        assert_eq!(asked, vec![11, 13]);
        app.stop().await;
        let app = start(&fake, &dir).await;
        wait_pages(&fake, 3).await;
        let mut asked = fake.redelivery_attempts();
        asked.sort();
        assert_eq!(asked, vec![11, 13], "asked again after a restart");
        app.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn recorded_successful_and_old_deliveries_are_not_asked_for() {
        let (fake, _repo) = fake_with_repo("octo/docs", 7, 1001).await;
        let dir = Arc::new(tempfile::tempdir().unwrap());
        // GitHub timed out, but connectord recorded it.
        fake.add_hook_delivery(HookDelivery::new(21, "recorded", 504, 30));
        // Failed first, then a redelivery that succeeded.
        fake.add_hook_delivery(HookDelivery::new(22, "settled", 503, 300));
        fake.add_hook_delivery(HookDelivery::new(23, "settled", 202, 200).redelivered());
        // Past GitHub's 3-day window.
        fake.add_hook_delivery(HookDelivery::new(5, "too-old", 503, 3 * DAY + 600));
        fake.add_hook_delivery(HookDelivery::new(24, "fine", 202, 10));
        // Recorded before any pass runs: the first pass runs at start.
        let app = start_with(&fake, &dir, false).await;
        let ping = serde_json::to_vec(&serde_json::json!({"zen": "z", "hook_id": 1})).unwrap();
        let res = reqwest::Client::new()
            .post(format!("{}/v1/webhooks/connectors/github", app.base))
            .header("content-type", "application/json")
            .header("x-github-event", "ping")
            .header("x-github-delivery", "recorded")
            .header("x-hub-signature-256", connectord::ingress::signature::sign(common::SECRET.as_bytes(), &ping))
            .body(ping)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.status());
        app.stop().await;
        let app = start(&fake, &dir).await;
        wait_pages(&fake, 3).await;
        assert_eq!(fake.redelivery_attempts(), Vec::<i64>::new());
        app.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_pass_follows_the_link_pages() {
        let (fake, _repo) = fake_with_repo("octo/docs", 7, 1001).await;
        // 150 entries: two pages of 100; the failure is on the second.
        fake.add_hook_delivery(HookDelivery::new(1, "deep", 500, 3600));
        for i in 2..=150 {
            fake.add_hook_delivery(HookDelivery::new(i, &format!("ok-{i}"), 202, 3600 - i));
        }
        let dir = Arc::new(tempfile::tempdir().unwrap());
        let app = start(&fake, &dir).await;
        let deadline = Instant::now() + Duration::from_secs(20);
        while fake.redelivery_attempts().is_empty() {
            assert!(Instant::now() < deadline, "the second page was never read");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(fake.redelivery_attempts(), vec![1]);
        app.stop().await;
    }
}
