mod common;

use common::*;

use async_trait::async_trait;
use connectord::store::models::{now_ms, ClaimedJob, SyncResult};
use connectord::sync::policy::LeasePolicy;
use connectord::sync::{ReconcileError, Reconciler};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

/// Rescued jobs due at once: the tests below that are about fencing, not backoff.
const NO_BACKOFF: connectord::retry::Backoff =
    connectord::retry::Backoff::new(std::time::Duration::ZERO, std::time::Duration::ZERO);
use std::time::Duration;

// --- local helpers ---------------------------------------------------------

const REPO: &str = "octo/docs";

/// A tracked target on a fresh connector: (connector id, target id, initial sync event id).
async fn tracked(app: &TestApp, installation: i64, repo_id: i64) -> (String, String, String) {
    let connector = app.create_connector(installation).await;
    let (target, initial) = app
        .create_target(&connector, REPO, Some(repo_id), "main")
        .await;
    (connector, target, initial)
}

/// Delivers a push to `main` of [`REPO`].
async fn push(
    app: &TestApp,
    delivery: &str,
    installation: i64,
    repo_id: i64,
    before: &str,
    after: &str,
) -> (StatusCode, Value) {
    app.deliver_json(
        "push",
        delivery,
        &push_payload(installation, repo_id, REPO, "main", before, after),
    )
    .await
}

/// Delivers a push that must be accepted with exactly one new sync event; returns it.
async fn push_accepted(
    app: &TestApp,
    delivery: &str,
    installation: i64,
    repo_id: i64,
    before: &str,
    after: &str,
) -> String {
    let (status, body) = push(app, delivery, installation, repo_id, before, after).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{delivery}: {body}");
    assert_eq!(body["outcome"], "accepted", "{delivery}: {body}");
    let ids = body["syncEventIds"].as_array().expect("syncEventIds");
    assert_eq!(ids.len(), 1, "{delivery}: {body}");
    ids[0].as_str().expect("id").to_owned()
}

async fn delivery(app: &TestApp, id: &str) -> (StatusCode, Value) {
    app.get(&format!("/v1/admin/deliveries/{id}")).await
}

fn ok_at(job: &ClaimedJob) -> Result<SyncResult, ReconcileError> {
    Ok(SyncResult {
        head_sha: job.job.head_sha.clone().or(Some(sha('f'))),
        ..Default::default()
    })
}

/// A reconciler whose head-less jobs (initial, manual, resync syncs) succeed at
/// once, and whose push jobs (with a head) follow `script`, called with the job
/// and how many times this reconciler has been called for the job's event.
fn for_pushes(
    script: impl Fn(&ClaimedJob, usize) -> Result<SyncResult, ReconcileError> + Send + Sync + 'static,
) -> Arc<ScriptedReconciler> {
    let per_event: Mutex<std::collections::HashMap<String, usize>> = Mutex::default();
    ScriptedReconciler::new(move |job, _| {
        if job.job.head_sha.is_none() {
            return ok_at(job);
        }
        let n = {
            let mut m = per_event.lock().expect("lock");
            let n = m
                .entry(job.job.connector_sync_event_id.clone())
                .or_default();
            *n += 1;
            *n
        };
        script(job, n)
    })
}

fn calls_for_event(rec: &ScriptedReconciler, event: &str) -> usize {
    rec.calls
        .lock()
        .expect("lock")
        .iter()
        .filter(|j| j.job.connector_sync_event_id == event)
        .count()
}

fn calls_for_head(rec: &ScriptedReconciler, head: &str) -> usize {
    rec.heads_run()
        .iter()
        .filter(|h| h.as_deref() == Some(head))
        .count()
}

/// A reconciler that finishes head-less jobs at once but holds every push job
/// until the test opens the gate (one permit per job): the test decides exactly
/// when a job is running and when it finishes.
struct GatedReconciler {
    gate: tokio::sync::Semaphore,
    calls: Mutex<Vec<ClaimedJob>>,
}

impl GatedReconciler {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            gate: tokio::sync::Semaphore::new(0),
            calls: Mutex::default(),
        })
    }

    /// Lets `n` held (or future) push jobs finish.
    fn open(&self, n: usize) {
        self.gate.add_permits(n);
    }

    fn heads_run(&self) -> Vec<String> {
        self.calls
            .lock()
            .expect("lock")
            .iter()
            .filter_map(|j| j.job.head_sha.clone())
            .collect()
    }

    fn calls_for_event(&self, event: &str) -> usize {
        self.calls
            .lock()
            .expect("lock")
            .iter()
            .filter(|j| j.job.connector_sync_event_id == event)
            .count()
    }
}

#[async_trait]
impl Reconciler for GatedReconciler {
    async fn reconcile(&self, job: &ClaimedJob) -> Result<SyncResult, ReconcileError> {
        if job.job.head_sha.is_none() {
            return ok_at(job);
        }
        self.calls.lock().expect("lock").push(job.clone());
        self.gate.acquire().await.expect("gate open").forget();
        ok_at(job)
    }
}

fn with_reconciler(reconciler: Arc<dyn Reconciler>) -> TestOptions {
    TestOptions {
        reconciler: Some(reconciler),
        ..Default::default()
    }
}

// --- 1. dedupe ---------------------------------------------------------------

conformance! {
#[tokio::test]
async fn same_head_pushed_twice_adds_no_job_and_points_at_the_existing_event() {
    let app = spawn_app().await;
    let (_, target, _) = tracked(&app, 1, 10).await;

    let first = push_accepted(&app, "dedupe-1", 1, 10, &sha('1'), &sha('a')).await;
    let (status, body) = push(&app, "dedupe-2", 1, 10, &sha('1'), &sha('a')).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "duplicate", "{body}");
    assert_eq!(body["syncEventIds"], json!([first]), "{body}");

    let push_events: Vec<Value> = app
        .events_of(&target)
        .await
        .into_iter()
        .filter(|e| e["trigger"] == "push")
        .collect();
    assert_eq!(push_events.len(), 1, "one sync event: {push_events:?}");
    assert_eq!(push_events[0]["id"], first);
    assert_eq!(push_events[0]["status"], "queued");
    assert_eq!(push_events[0]["deliveryId"], "dedupe-1");

    // Both deliveries are recorded; the second points at the existing event.
    let (status, d1) = delivery(&app, "dedupe-1").await;
    assert_eq!(status, StatusCode::OK, "{d1}");
    assert_eq!(d1["outcome"], "accepted");
    assert_eq!(d1["syncEventIds"], json!([first]));
    let (status, d2) = delivery(&app, "dedupe-2").await;
    assert_eq!(status, StatusCode::OK, "{d2}");
    assert_eq!(d2["outcome"], "duplicate");
    assert_eq!(d2["syncEventIds"], json!([first]));
    app.stop().await;
}
}

// --- 2. A -> B -> A ends at A -------------------------------------------------------

conformance! {
#[tokio::test]
async fn a_b_a_after_both_finished_runs_a_again() {
    let rec = ScriptedReconciler::ok();
    let app = spawn_app_with(with_reconciler(rec.clone())).await;
    let (_, target, initial) = tracked(&app, 2, 20).await;
    app.wait_for_status(&initial, "completed").await;

    let (a, b) = (sha('a'), sha('b'));
    let ea = push_accepted(&app, "aba-1", 2, 20, &sha('1'), &a).await;
    app.wait_for_status(&ea, "completed").await;
    let eb = push_accepted(&app, "aba-2", 2, 20, &a, &b).await;
    app.wait_for_status(&eb, "completed").await;
    assert_eq!(app.target(&target).await["lastSyncedSha"], b);

    // Back to A: dedupe must not collapse it into A's finished job.
    let ea2 = push_accepted(&app, "aba-3", 2, 20, &b, &a).await;
    assert_ne!(ea2, ea);
    let done = app.wait_for_status(&ea2, "completed").await;
    assert_eq!(done["headSha"], a);
    assert_eq!(app.target(&target).await["lastSyncedSha"], a);
    assert_eq!(calls_for_head(&rec, &a), 2);
    assert_eq!(calls_for_head(&rec, &b), 1);
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_b_a_while_b_is_queued_behind_running_a_ends_at_a() {
    let rec = GatedReconciler::new();
    let app = spawn_app_with(with_reconciler(rec.clone())).await;
    let (_, target, initial) = tracked(&app, 3, 30).await;
    app.wait_for_status(&initial, "completed").await;

    let (a, b) = (sha('a'), sha('b'));
    let ea = push_accepted(&app, "abaq-1", 3, 30, &sha('1'), &a).await;
    app.wait_for_status(&ea, "running").await;
    // The target is busy, so B waits in the queue.
    let eb = push_accepted(&app, "abaq-2", 3, 30, &a, &b).await;
    assert_eq!(app.sync_event(&eb).await["status"], "queued");

    // A again: B is superseded; A is already running, so nothing new is queued.
    let (status, body) = push(&app, "abaq-3", 3, 30, &b, &a).await;
    assert!(status.is_success(), "{status} {body}");
    assert_eq!(app.sync_event(&eb).await["status"], "superseded");
    let pending: Vec<Value> = app
        .events_of(&target)
        .await
        .into_iter()
        .filter(|e| e["status"] == "queued" || e["status"] == "running")
        .collect();
    assert!(
        pending.iter().all(|e| e["headSha"] == a),
        "only A may still run: {pending:?}"
    );

    rec.open(10);
    for e in &pending {
        app.wait_for_status(e["id"].as_str().expect("id"), "completed")
            .await;
    }
    app.wait_for_status(&ea, "completed").await;
    let t = app.target(&target).await;
    assert_eq!(t["lastSyncedSha"], a, "{t}");
    assert!(!rec.heads_run().contains(&b), "B must never run");
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_b_a_while_b_is_running_ends_at_a() {
    let rec = GatedReconciler::new();
    let app = spawn_app_with(with_reconciler(rec.clone())).await;
    let (_, target, initial) = tracked(&app, 4, 40).await;
    app.wait_for_status(&initial, "completed").await;

    let (a, b) = (sha('a'), sha('b'));
    let ea = push_accepted(&app, "abar-1", 4, 40, &sha('1'), &a).await;
    rec.open(1);
    app.wait_for_status(&ea, "completed").await;

    let eb = push_accepted(&app, "abar-2", 4, 40, &a, &b).await;
    app.wait_for_status(&eb, "running").await;
    // B is running; A comes back (last synced is A, but B will overwrite it).
    let ea2 = push_accepted(&app, "abar-3", 4, 40, &b, &a).await;
    assert_ne!(ea2, ea);
    assert_eq!(app.sync_event(&ea2).await["status"], "queued");

    rec.open(2);
    app.wait_for_status(&eb, "completed").await;
    app.wait_for_status(&ea2, "completed").await;
    let t = app.target(&target).await;
    assert_eq!(t["lastSyncedSha"], a, "{t}");
    assert_eq!(rec.heads_run(), vec![a.clone(), b, a]);
    app.stop().await;
}
}

// --- 3. superseding ---------------------------------------------------------------

conformance! {
#[tokio::test]
async fn newer_heads_supersede_queued_initial_push_and_manual_syncs() {
    let app = spawn_app().await; // no reconciler: every job stays queued
    let (_, target, initial) = tracked(&app, 5, 50).await;
    let e0 = app.sync_event(&initial).await;
    assert_eq!(e0["status"], "queued");
    assert_eq!(e0["trigger"], "initial");
    assert!(e0["headSha"].is_null(), "{e0}");

    // The first push supersedes the initial (head-less) sync.
    let ea = push_accepted(&app, "sup-1", 5, 50, &sha('1'), &sha('a')).await;
    assert_eq!(app.sync_event(&initial).await["status"], "superseded");
    assert_eq!(app.sync_event(&ea).await["status"], "queued");

    // A newer head supersedes the older one that has not started.
    let eb = push_accepted(&app, "sup-2", 5, 50, &sha('a'), &sha('b')).await;
    assert_eq!(app.sync_event(&ea).await["status"], "superseded");
    assert_eq!(app.sync_event(&eb).await["status"], "queued");

    // A manual sync is queued without a head ...
    let (status, manual) = app
        .admin(
            Method::POST,
            &format!("/v1/admin/targets/{target}/sync"),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{manual}");
    assert_eq!(manual["status"], "queued");
    assert_eq!(manual["trigger"], "manual");
    assert!(manual["headSha"].is_null(), "{manual}");
    let em = manual["id"].as_str().expect("id").to_owned();

    // ... and a later push supersedes it.
    let ec = push_accepted(&app, "sup-3", 5, 50, &sha('b'), &sha('c')).await;
    assert_eq!(app.sync_event(&em).await["status"], "superseded");
    let c = app.sync_event(&ec).await;
    assert_eq!(c["status"], "queued");
    assert_eq!(c["headSha"], sha('c'));

    // Superseded events end: they carry a completion time and no next attempt.
    for id in [&initial, &ea, &em] {
        let e = app.sync_event(id).await;
        assert!(e["completedAt"].is_string(), "{e}");
        assert!(e["startedAt"].is_null(), "never ran: {e}");
    }
    // Exactly one sync remains queued for the target: the newest head.
    let queued: Vec<Value> = app
        .events_of(&target)
        .await
        .into_iter()
        .filter(|e| e["status"] == "queued")
        .collect();
    assert_eq!(queued.len(), 1, "{queued:?}");
    assert_eq!(queued[0]["id"], ec);
    app.stop().await;
}
}

// --- 4. stale pushes ------------------------------------------------------------

conformance! {
#[tokio::test]
async fn push_delivered_out_of_order_is_stale_and_ignored() {
    let app = spawn_app().await;
    let (_, target, _) = tracked(&app, 6, 60).await;
    let (a, b, c) = (sha('a'), sha('b'), sha('c'));

    // p2 (B -> C) arrives before p1 (A -> B).
    let e2 = push_accepted(&app, "stale-p2", 6, 60, &b, &c).await;
    let (status, body) = push(&app, "stale-p1", 6, 60, &a, &b).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "ignored", "{body}");
    assert_eq!(body["reason"], "stale", "{body}");
    assert!(body.get("syncEventIds").is_none(), "{body}");

    let t = app.target(&target).await;
    assert_eq!(t["latestHeadSha"], c, "{t}");
    let e = app.sync_event(&e2).await;
    assert_eq!(e["status"], "queued", "the newer push is untouched: {e}");
    assert_eq!(e["headSha"], c);
    assert!(
        app.events_of(&target)
            .await
            .iter()
            .all(|e| e["headSha"] != b),
        "no sync for the stale head"
    );
    let (status, d) = delivery(&app, "stale-p1").await;
    assert_eq!(status, StatusCode::OK, "{d}");
    assert_eq!(d["outcome"], "ignored");
    assert_eq!(d["reason"], "stale");
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn branch_reset_to_an_earlier_commit_is_not_stale() {
    let app = spawn_app().await;
    let (_, target, _) = tracked(&app, 7, 70).await;
    let (a, b, c) = (sha('a'), sha('b'), sha('c'));
    push_accepted(&app, "reset-1", 7, 70, &sha('1'), &a).await;
    push_accepted(&app, "reset-2", 7, 70, &a, &b).await;
    push_accepted(&app, "reset-3", 7, 70, &b, &c).await;

    // C -> A: a recorded push moved away from A, but this one starts at the latest head.
    let ea = push_accepted(&app, "reset-4", 7, 70, &c, &a).await;
    let e = app.sync_event(&ea).await;
    assert_eq!(e["status"], "queued");
    assert_eq!(e["headSha"], a);
    assert_eq!(app.target(&target).await["latestHeadSha"], a);
    app.stop().await;
}
}

// --- 5. lease expiry, reclaim and fencing (store level, explicit times) -----------

conformance! {
/// A job whose process dies under it every time (a crash loop): each rescue
/// uses an attempt and waits a backoff like any failure, and after the
/// maximum attempts the job fails for good instead of running again.
#[tokio::test]
async fn a_job_that_keeps_dying_with_its_process_backs_off_and_fails_after_max_attempts() {
    let app = spawn_app().await; // no workers, no rescuer: the test owns the clock
    let store = app.store.clone();
    let (_, _, initial) = tracked(&app, 9, 90).await;
    let backoff = connectord::retry::Backoff {
        jitter: 0.0,
        ..connectord::retry::Backoff::new(
            std::time::Duration::from_secs(10),
            std::time::Duration::from_secs(40),
        )
    };
    let mut now = now_ms() + 60_000;
    let mut attempts = 0;
    loop {
        let job = store
            .claim_job("doomed", now, 1000)
            .await
            .expect("claim")
            .expect("the job runs again");
        attempts += 1;
        assert_eq!(job.attempt, attempts);
        assert_eq!(job.max_attempts, 8);
        // The process dies: no heartbeat, no result. The lease expires.
        now += 1001;
        assert_eq!(store.rescue_expired_leases(now, backoff).await.expect("rescue"), 1);
        let e = app.sync_event(&initial).await;
        assert_eq!(e["attempts"], attempts, "{e}");
        if attempts == job.max_attempts {
            assert_eq!(e["status"], "failed", "{e}");
            let err = e["lastError"].as_str().unwrap_or("");
            assert!(err.contains("gave up after 8 attempts") && err.contains("lease expired"), "{e}");
            break;
        }
        assert_eq!(e["status"], "queued", "{e}");
        // Backed off like a failed attempt: 10 s, 20 s, then the 40 s cap.
        let wait = (10_000i64 << (attempts - 1).min(2)).min(40_000);
        assert!(
            store.claim_job("eager", now + wait - 1, 1000).await.expect("claim").is_none(),
            "attempt {attempts}: claimable before its backoff of {wait} ms"
        );
        now += wait;
    }
    assert!(store.claim_job("w", now + 3_600_000, 1000).await.expect("claim").is_none(), "never again");
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn expired_lease_is_reclaimed_and_the_old_claim_is_fenced_out() {
    let app = spawn_app().await; // no workers, no rescuer: the test owns the clock
    let store = app.store.clone();
    let (_, _, initial) = tracked(&app, 8, 80).await;
    let t0 = now_ms() + 60_000;

    let first = store
        .claim_job("w1", t0, 1000)
        .await
        .expect("claim")
        .expect("a job");
    assert_eq!(first.attempt, 1);
    assert_eq!(first.job.connector_sync_event_id, initial);
    assert_eq!(app.sync_event(&initial).await["status"], "running");

    // The target is busy and there is nothing else.
    assert!(store
        .claim_job("w2", t0 + 500, 1000)
        .await
        .expect("claim")
        .is_none());
    // Not expired yet.
    assert_eq!(
        store.rescue_expired_leases(t0 + 500, NO_BACKOFF).await.expect("rescue"),
        0
    );
    assert_eq!(
        store
            .rescue_expired_leases(t0 + 1500, NO_BACKOFF)
            .await
            .expect("rescue"),
        1
    );
    let e = app.sync_event(&initial).await;
    assert_eq!(e["status"], "queued", "back in the queue: {e}");
    assert!(e["lastError"].is_string(), "{e}");

    let second = store
        .claim_job("w2", t0 + 1500, 1000)
        .await
        .expect("claim")
        .expect("the same job again");
    assert_eq!(second.job_id, first.job_id);
    assert_eq!(second.attempt, 2);

    // The worker that lost its lease can change nothing.
    let result = SyncResult {
        head_sha: Some(sha('e')),
        ..Default::default()
    };
    assert!(!store
        .heartbeat(&first, t0 + 1600, 1000)
        .await
        .expect("heartbeat"));
    assert!(!store
        .finish_job(&first, &result, t0 + 1600)
        .await
        .expect("finish"));
    assert!(!store
        .retry_job(&first, t0 + 2000, "late", true, t0 + 1600)
        .await
        .expect("retry"));
    assert!(!store
        .fail_job(
            &first,
            "late",
            connectord::store::models::FailureHealth::Failing,
            t0 + 1600,
        )
        .await
        .expect("fail"));
    assert!(!store.release_job(&first).await.expect("release"));
    let e = app.sync_event(&initial).await;
    assert_eq!(e["status"], "running", "still the new owner's: {e}");

    assert!(store
        .heartbeat(&second, t0 + 1700, 1000)
        .await
        .expect("heartbeat"));
    assert!(store
        .finish_job(&second, &result, t0 + 1800)
        .await
        .expect("finish"));
    let e = app.sync_event(&initial).await;
    assert_eq!(e["status"], "completed", "{e}");
    assert_eq!(e["attempts"], 2);
    assert_eq!(e["headSha"], sha('e'));
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_job_running_longer_than_its_lease_keeps_it_by_heartbeat() {
    let rec = GatedReconciler::new();
    let mut opts = with_reconciler(rec.clone());
    // Heartbeat every 400 ms; a beat may be late by 800 ms before the lease is lost.
    opts.worker.lease = LeasePolicy::new(Duration::from_millis(1200));
    let app = spawn_app_with(opts).await;
    let (_, _, initial) = tracked(&app, 21, 210).await;
    app.wait_for_status(&initial, "completed").await;

    let ev = push_accepted(&app, "hb-1", 21, 210, &sha('1'), &sha('a')).await;
    app.wait_for_status(&ev, "running").await;
    // Several lease lengths pass while the rescuer runs every 600 ms.
    tokio::time::sleep(Duration::from_millis(3600)).await;
    let e = app.sync_event(&ev).await;
    assert_eq!(e["status"], "running", "{e}");
    assert_eq!(e["attempts"], 1, "the lease was never taken away: {e}");
    assert!(e["lastError"].is_null(), "{e}");

    rec.open(1);
    let done = app.wait_for_status(&ev, "completed").await;
    assert_eq!(done["attempts"], 1, "{done}");
    assert_eq!(rec.calls_for_event(&ev), 1);
    app.stop().await;
}
}

// --- 6. one running job per target -------------------------------------------------

conformance! {
#[tokio::test]
async fn at_most_one_job_runs_per_target() {
    let rec = ScriptedReconciler::with_delay(Duration::from_millis(150), |job, _| ok_at(job));
    let mut opts = with_reconciler(rec.clone());
    opts.worker.concurrency = 4;
    let app = spawn_app_with(opts).await;
    let connector = app.create_connector(9).await;
    let (t1, _) = app
        .create_target(&connector, "octo/one", Some(91), "main")
        .await;
    let (t2, _) = app
        .create_target(&connector, "octo/two", Some(92), "main")
        .await;

    let heads: Vec<String> = "abcde234".chars().map(sha).collect();
    let mut last = vec![];
    for (i, head) in heads.iter().enumerate() {
        let before = if i == 0 {
            sha('1')
        } else {
            heads[i - 1].clone()
        };
        for (repo, name) in [(91, "octo/one"), (92, "octo/two")] {
            let (status, body) = app
                .deliver_json(
                    "push",
                    &format!("conc-{repo}-{i}"),
                    &push_payload(9, repo, name, "main", &before, head),
                )
                .await;
            assert_eq!(status, StatusCode::ACCEPTED, "{body}");
            if i == heads.len() - 1 {
                last.push(body["syncEventIds"][0].as_str().expect("id").to_owned());
            }
        }
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    for e in &last {
        app.wait_for_status(e, "completed").await;
    }
    assert_eq!(
        rec.max_concurrent_per_target.load(Ordering::SeqCst),
        1,
        "two jobs of one target ran at once"
    );
    for t in [&t1, &t2] {
        assert_eq!(app.target(t).await["lastSyncedSha"], sha('4'));
    }
    app.stop().await;
}
}

// --- 7. backoff and its visibility ----------------------------------------------------

conformance! {
#[tokio::test]
async fn transient_errors_retry_with_visible_backoff_then_complete() {
    let rec = for_pushes(|job, n| {
        if n <= 2 {
            Err(ReconcileError::Transient(format!("GitHub 502 (try {n})")))
        } else {
            ok_at(job)
        }
    });
    let mut opts = with_reconciler(rec.clone());
    // Long enough backoff that the retry wait can be observed through the API.
    opts.worker.retry.base = Duration::from_millis(1000);
    opts.worker.retry.cap = Duration::from_millis(2000);
    let app = spawn_app_with(opts).await;
    let (_, _, initial) = tracked(&app, 10, 100).await;
    app.wait_for_status(&initial, "completed").await;

    let ev = push_accepted(&app, "backoff-1", 10, 100, &sha('1'), &sha('a')).await;
    // Poll the admin API until the event shows it is waiting for a retry.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let waiting = loop {
        let e = app.sync_event(&ev).await;
        if e["status"] == "queued" && e["lastError"].is_string() && e["nextAttemptAt"].is_string() {
            break e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the event never showed a pending retry: {e}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        waiting["lastError"]
            .as_str()
            .is_some_and(|m| m.contains("GitHub 502")),
        "{waiting}"
    );
    assert!(
        waiting["attempts"].as_i64().is_some_and(|n| n >= 1),
        "{waiting}"
    );
    assert!(
        waiting["nextAttemptAt"].as_str() > waiting["createdAt"].as_str(),
        "{waiting}"
    );

    let done = app.wait_for_status(&ev, "completed").await;
    assert_eq!(done["attempts"], 3, "{done}");
    assert!(done["nextAttemptAt"].is_null(), "{done}");
    assert_eq!(calls_for_event(&rec, &ev), 3);
    // Retried internally: no second delivery was needed.
    let (_, list) = app.get("/v1/admin/deliveries?limit=50").await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(1), "{list}");
    app.stop().await;
}
}

// --- 8. max attempts -------------------------------------------------------------------

conformance! {
#[tokio::test]
async fn transient_errors_fail_the_event_after_max_attempts() {
    let rec = for_pushes(|_, _| Err(ReconcileError::Transient("GitHub 503 upstream".into())));
    let mut opts = with_reconciler(rec.clone());
    opts.worker.retry.max_attempts = 3;
    let app = spawn_app_with(opts).await;
    let (_, target, initial) = tracked(&app, 11, 110).await;
    app.wait_for_status(&initial, "completed").await;

    let ev = push_accepted(&app, "maxatt-1", 11, 110, &sha('1'), &sha('a')).await;
    let failed = app.wait_for_status(&ev, "failed").await;
    assert_eq!(failed["attempts"], 3, "{failed}");
    assert!(
        failed["lastError"]
            .as_str()
            .is_some_and(|m| m.contains("GitHub 503 upstream")),
        "{failed}"
    );
    assert!(failed["completedAt"].is_string(), "{failed}");
    assert!(failed["nextAttemptAt"].is_null(), "{failed}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(calls_for_event(&rec, &ev), 3);
    assert_eq!(app.target(&target).await["health"], "failing");
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_sync_that_panics_is_retried_and_its_worker_keeps_working() {
    let rec = for_pushes(|job, n| {
        if n == 1 {
            panic!("index out of bounds in a test reconciler");
        }
        ok_at(job)
    });
    let mut opts = with_reconciler(rec.clone());
    opts.worker.concurrency = 1;
    let app = spawn_app_with(opts).await;
    let (_, _, initial) = tracked(&app, 13, 130).await;
    app.wait_for_status(&initial, "completed").await;

    let ev = push_accepted(&app, "panic-1", 13, 130, &sha('1'), &sha('a')).await;
    let done = app.wait_for_status(&ev, "completed").await;
    assert_eq!(done["attempts"], 2, "the panic used one attempt: {done}");
    assert_eq!(calls_for_event(&rec, &ev), 2);
    // The only worker slot is still there: the next push runs too.
    let next = push_accepted(&app, "panic-2", 13, 130, &sha('a'), &sha('b')).await;
    app.wait_for_status(&next, "completed").await;
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn a_sync_that_always_panics_fails_after_max_attempts_with_a_message() {
    let rec = for_pushes(|_, _| panic!("always"));
    let mut opts = with_reconciler(rec.clone());
    opts.worker.retry.max_attempts = 2;
    let app = spawn_app_with(opts).await;
    let (_, _, initial) = tracked(&app, 14, 140).await;
    app.wait_for_status(&initial, "completed").await;

    let ev = push_accepted(&app, "panic-3", 14, 140, &sha('1'), &sha('a')).await;
    let failed = app.wait_for_status(&ev, "failed").await;
    assert_eq!(failed["attempts"], 2, "{failed}");
    assert!(
        failed["lastError"]
            .as_str()
            .is_some_and(|m| m.contains("panic") && m.contains("always")),
        "{failed}"
    );
    app.stop().await;
}
}

// --- 9. permanent errors -----------------------------------------------------------------

conformance! {
#[tokio::test]
async fn permanent_error_fails_at_once() {
    let rec = for_pushes(|_, _| Err(ReconcileError::Permanent("repository not found".into())));
    let app = spawn_app_with(with_reconciler(rec.clone())).await;
    let (_, target, initial) = tracked(&app, 12, 120).await;
    app.wait_for_status(&initial, "completed").await;
    assert_eq!(app.target(&target).await["health"], "ok");

    let ev = push_accepted(&app, "perm-1", 12, 120, &sha('1'), &sha('a')).await;
    let failed = app.wait_for_status(&ev, "failed").await;
    assert_eq!(failed["attempts"], 1, "{failed}");
    assert!(
        failed["lastError"]
            .as_str()
            .is_some_and(|m| m.contains("repository not found")),
        "{failed}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(calls_for_event(&rec, &ev), 1);
    assert_eq!(app.target(&target).await["health"], "failing");
    app.stop().await;
}
}

// --- 10. rate limits -----------------------------------------------------------------------

conformance! {
#[tokio::test]
async fn rate_limit_wait_does_not_use_up_an_attempt() {
    let rec = for_pushes(|job, n| {
        if n == 1 {
            Err(ReconcileError::RateLimited {
                message: "secondary rate limit".into(),
                retry_after: Duration::from_millis(100),
            })
        } else {
            ok_at(job)
        }
    });
    let app = spawn_app_with(with_reconciler(rec.clone())).await;
    let (_, _, initial) = tracked(&app, 13, 130).await;
    app.wait_for_status(&initial, "completed").await;

    let ev = push_accepted(&app, "rate-1", 13, 130, &sha('1'), &sha('a')).await;
    let done = app.wait_for_status(&ev, "completed").await;
    assert_eq!(calls_for_event(&rec, &ev), 2, "tried, waited, tried again");
    assert_eq!(
        done["attempts"], 1,
        "the rate-limited try is not counted: {done}"
    );
    app.stop().await;
}
}

// --- 11. suspend / unsuspend -------------------------------------------------------------

fn installation(action: &str, id: i64) -> Value {
    json!({"action": action, "installation": {"id": id, "account": {"login": "o"}}})
}

conformance! {
#[tokio::test]
async fn suspended_installation_holds_its_jobs_until_unsuspended() {
    let rec = ScriptedReconciler::ok();
    let app = spawn_app_with(with_reconciler(rec.clone())).await;
    let (connector, _, initial) = tracked(&app, 14, 140).await;
    app.wait_for_status(&initial, "completed").await;

    let (status, body) = app
        .deliver_json("installation", "susp-1", &installation("suspend", 14))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        app.get(&format!("/v1/admin/connectors/{connector}"))
            .await
            .1["status"],
        "suspended"
    );

    let ev = push_accepted(&app, "susp-2", 14, 140, &sha('1'), &sha('a')).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.sync_event(&ev).await["status"], "queued");
    assert_eq!(
        calls_for_event(&rec, &ev),
        0,
        "a suspended installation runs nothing"
    );

    let (status, body) = app
        .deliver_json("installation", "susp-3", &installation("unsuspend", 14))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let done = app.wait_for_status(&ev, "completed").await;
    assert_eq!(done["attempts"], 1);
    assert_eq!(calls_for_event(&rec, &ev), 1);
    app.stop().await;
}
}

// --- 12. cancellation ----------------------------------------------------------------------

conformance! {
#[tokio::test]
async fn installation_deleted_cancels_pending_syncs_and_deactivates_targets() {
    let app = spawn_app().await;
    let connector = app.create_connector(15).await;
    let (t1, i1) = app
        .create_target(&connector, "octo/one", Some(151), "main")
        .await;
    let (t2, i2) = app
        .create_target(&connector, "octo/two", Some(152), "main")
        .await;
    let (status, body) = app
        .deliver_json(
            "push",
            "inst-del-1",
            &push_payload(15, 151, "octo/one", "main", &sha('1'), &sha('a')),
        )
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let e1 = body["syncEventIds"][0].as_str().expect("id").to_owned();

    let (status, body) = app
        .deliver_json("installation", "inst-del-2", &installation("deleted", 15))
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    for e in [&e1, &i2] {
        let ev = app.sync_event(e).await;
        assert_eq!(ev["status"], "cancelled", "{ev}");
    }
    assert_eq!(app.sync_event(&i1).await["status"], "superseded");
    for t in [&t1, &t2] {
        assert_eq!(app.target(t).await["status"], "inactive");
    }
    // A push for a deactivated target queues nothing.
    let (status, body) = app
        .deliver_json(
            "push",
            "inst-del-3",
            &push_payload(15, 151, "octo/one", "main", &sha('a'), &sha('b')),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "ignored", "{body}");
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn repositories_removed_then_added_cancels_then_resyncs() {
    let app = spawn_app().await;
    let (_, target, _) = tracked(&app, 16, 160).await;
    let ev = push_accepted(&app, "repos-1", 16, 160, &sha('1'), &sha('a')).await;

    let removed = json!({"action": "removed", "installation": {"id": 16},
        "repository_selection": "selected", "repositories_added": [],
        "repositories_removed": [{"id": 160, "full_name": REPO}]});
    let (status, body) = app
        .deliver_json("installation_repositories", "repos-2", &removed)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(app.sync_event(&ev).await["status"], "cancelled");
    let t = app.target(&target).await;
    assert_eq!(t["status"], "inaccessible", "{t}");
    // Pushes to an inaccessible target queue nothing.
    let (status, body) = push(&app, "repos-3", 16, 160, &sha('a'), &sha('b')).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let added = json!({"action": "added", "installation": {"id": 16},
        "repository_selection": "selected", "repositories_removed": [],
        "repositories_added": [{"id": 160, "full_name": REPO}]});
    let (status, body) = app
        .deliver_json("installation_repositories", "repos-4", &added)
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let ids = body["syncEventIds"].as_array().cloned().unwrap_or_default();
    assert_eq!(ids.len(), 1, "{body}");
    let resync = app.sync_event(ids[0].as_str().expect("id")).await;
    assert_eq!(resync["trigger"], "resync", "{resync}");
    assert_eq!(resync["status"], "queued", "{resync}");
    assert!(resync["headSha"].is_null(), "{resync}");
    assert_eq!(resync["connectorTargetId"], target);
    assert_eq!(app.target(&target).await["status"], "active");
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn repository_deleted_cancels_pending_syncs() {
    let app = spawn_app().await;
    let (_, target, _) = tracked(&app, 17, 170).await;
    let ev = push_accepted(&app, "repodel-1", 17, 170, &sha('1'), &sha('a')).await;
    let payload = json!({"action": "deleted", "installation": {"id": 17},
        "repository": {"id": 170, "full_name": REPO, "name": "docs"}});
    let (status, body) = app.deliver_json("repository", "repodel-2", &payload).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(app.sync_event(&ev).await["status"], "cancelled");
    assert_eq!(app.target(&target).await["status"], "deleted");
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn admin_delete_target_cancels_pending_syncs() {
    let app = spawn_app().await;
    let (_, target, _) = tracked(&app, 18, 180).await;
    let ev = push_accepted(&app, "tdel-1", 18, 180, &sha('1'), &sha('a')).await;
    let (status, body) = app
        .admin(Method::DELETE, &format!("/v1/admin/targets/{target}"), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let e = app.sync_event(&ev).await;
    assert_eq!(e["status"], "cancelled", "{e}");
    let (status, body) = app.get(&format!("/v1/admin/targets/{target}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    // No longer tracked: a push queues nothing.
    let (status, body) = push(&app, "tdel-2", 18, 180, &sha('a'), &sha('b')).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outcome"], "ignored", "{body}");
    app.stop().await;
}
}

// --- 13. enqueue is atomic with the delivery record ---------------------------------------

#[tokio::test]
async fn nothing_is_acknowledged_when_the_enqueue_cannot_commit() {
    use sqlx::Connection;
    let app = spawn_app().await;
    let (_, target, _) = tracked(&app, 19, 190).await;

    // Make every job insert fail, after the delivery row and the sync event row
    // of the same unit have been written.
    let mut db = sqlx::SqliteConnection::connect(&app.db_url)
        .await
        .expect("open the test database");
    sqlx::query(
        "CREATE TRIGGER test_refuse_jobs BEFORE INSERT ON sync_job \
         BEGIN SELECT RAISE(ABORT, 'simulated write failure'); END",
    )
    .execute(&mut db)
    .await
    .expect("create trigger");

    let before = app.events_of(&target).await.len();
    let (status, body) = push(&app, "atomic-1", 19, 190, &sha('1'), &sha('a')).await;
    // A statement the database refuses (here a trigger's ABORT, a constraint
    // error) is an internal error, 500, not "unavailable": either way not a 2xx.
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    assert!(
        !body.to_string().contains("simulated"),
        "the cause is logged, not sent: {body}"
    );
    let (status, body) = delivery(&app, "atomic-1").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "not recorded: {body}");
    assert_eq!(app.events_of(&target).await.len(), before, "no sync event");
    assert!(app.target(&target).await["latestHeadSha"].is_null());

    // The store still works for writes that need no job.
    let (status, body) = app
        .deliver_json(
            "ping",
            "atomic-ping",
            &json!({"zen": "Keep it logically awesome."}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Once the store can commit again, GitHub's redelivery (same id) is processed
    // as new: nothing of the failed attempt was kept.
    sqlx::query("DROP TRIGGER test_refuse_jobs")
        .execute(&mut db)
        .await
        .expect("drop trigger");
    db.close().await.expect("close");
    let ev = push_accepted(&app, "atomic-1", 19, 190, &sha('1'), &sha('a')).await;
    assert_eq!(app.sync_event(&ev).await["deliveryId"], "atomic-1");
    app.stop().await;
}

// --- 14. crash while holding a claimed job ------------------------------------------------

#[test]
fn job_claimed_by_a_killed_process_completes_once_after_restart() {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));

    // Process A: claims the push job and hangs in the reconciler, then dies
    // without releasing anything.
    let rt_a = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime A");
    let hang = GatedReconciler::new(); // never opened: the job runs "forever"
    let opts_a = TestOptions {
        reconciler: Some(hang.clone()),
        dir: Some(dir.clone()),
        ..Default::default()
    };
    let event = rt_a.block_on(async {
        let app = spawn_app_with(opts_a).await;
        let (_, _, initial) = tracked(&app, 20, 200).await;
        app.wait_for_status(&initial, "completed").await;
        let ev = push_accepted(&app, "crash-1", 20, 200, &sha('1'), &sha('a')).await;
        let running = app.wait_for_status(&ev, "running").await;
        assert_eq!(running["attempts"], 1);
        // Only the test's handles go; the application's tasks keep running.
        drop(app);
        ev
    });
    assert_eq!(hang.calls_for_event(&event), 1);
    // Kill: every task of process A is dropped where it stands; no graceful
    // shutdown, no release of the claimed job.
    rt_a.shutdown_background();

    // Process B on the same database.
    let rt_b = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime B");
    let rec = ScriptedReconciler::ok();
    let opts_b = TestOptions {
        reconciler: Some(rec.clone()),
        dir: Some(dir.clone()),
        ..Default::default()
    };
    rt_b.block_on(async {
        let app = spawn_app_with(opts_b).await;
        let done = app.wait_for_status(&event, "completed").await;
        assert_eq!(done["attempts"], 2, "{done}");
        assert_eq!(done["headSha"], sha('a'));
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(calls_for_event(&rec, &event), 1, "completed exactly once");
        assert_eq!(rec.call_count(), 1, "nothing else was left to run");
        assert_eq!(app.sync_event(&event).await["status"], "completed");
        app.stop().await;
    });
    drop(rt_b);
    drop(dir);
}

conformance! {
#[tokio::test]
async fn graceful_shutdown_returns_the_running_job_without_using_an_attempt() {
    let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
    let hang = GatedReconciler::new();
    let app = spawn_app_with(TestOptions {
        reconciler: Some(hang.clone()),
        dir: Some(dir.clone()),
        ..Default::default()
    })
    .await;
    let (_, _, initial) = tracked(&app, 22, 220).await;
    app.wait_for_status(&initial, "completed").await;
    let ev = push_accepted(&app, "grace-1", 22, 220, &sha('1'), &sha('a')).await;
    app.wait_for_status(&ev, "running").await;
    // Stops after the shutdown grace (200 ms) with the job unfinished.
    app.stop().await;

    let rec = ScriptedReconciler::ok();
    let app = spawn_app_with(TestOptions {
        reconciler: Some(rec.clone()),
        dir: Some(dir.clone()),
        ..Default::default()
    })
    .await;
    let done = app.wait_for_status(&ev, "completed").await;
    assert_eq!(
        done["attempts"], 1,
        "the interrupted try was given back: {done}"
    );
    assert_eq!(calls_for_event(&rec, &ev), 1);
    app.stop().await;
}
}

// --- fairness across installations and the per-installation cap -----------------

/// Claims until the store has nothing more to give at `at`: the installation of each claim.
async fn claim_all(app: &TestApp, at: i64) -> Vec<ClaimedJob> {
    let mut claimed = vec![];
    while let Some(job) = app.store.claim_job("w", at, 60_000).await.expect("claim") {
        claimed.push(job);
        assert!(claimed.len() <= 50, "claims never ran out");
    }
    claimed
}

conformance! {
#[tokio::test]
async fn a_busy_installation_neither_starves_another_nor_exceeds_its_cap() {
    let app = spawn_app().await; // no workers: the test claims
    let busy = app.create_connector(100).await;
    for i in 0..8 {
        app.create_target(&busy, &format!("busy/repo-{i}"), Some(1000 + i), "main")
            .await;
    }
    // Queued after all eight of the busy installation's syncs.
    let quiet = app.create_connector(200).await;
    let (_, quiet_sync) = app.create_target(&quiet, "quiet/repo", Some(2000), "main").await;

    let claimed = claim_all(&app, now_ms() + 60_000).await;
    let installations: Vec<i64> = claimed.iter().map(|j| j.job.installation_id).collect();
    // Oldest first, but an installation with fewer running jobs goes ahead:
    // the quiet installation's one sync is second, not ninth.
    assert_eq!(installations, vec![100, 200, 100, 100, 100], "claim order");
    assert_eq!(claimed[1].job.connector_sync_event_id, quiet_sync);

    // Four of the busy installation's eight run; the others wait for a slot.
    let done = SyncResult::default();
    assert!(app
        .store
        .finish_job(&claimed[0], &done, now_ms())
        .await
        .expect("finish"));
    let next = claim_all(&app, now_ms() + 60_000).await;
    assert_eq!(next.len(), 1, "one slot freed, one more claim");
    assert_eq!(next[0].job.installation_id, 100);
    app.stop().await;
}
}

conformance! {
#[tokio::test]
async fn the_per_installation_cap_is_a_setting() {
    let mut worker = fast_workers();
    worker.max_jobs_per_installation = 1;
    let app = spawn_app_with(TestOptions {
        worker,
        ..TestOptions::default()
    })
    .await;
    for installation in [300, 400] {
        let connector = app.create_connector(installation).await;
        for i in 0..3 {
            app.create_target(&connector, &format!("org{installation}/r{i}"), Some(installation * 10 + i), "main")
                .await;
        }
    }
    let claimed = claim_all(&app, now_ms() + 60_000).await;
    let mut installations: Vec<i64> = claimed.iter().map(|j| j.job.installation_id).collect();
    installations.sort();
    assert_eq!(installations, vec![300, 400], "one running job per installation");
    app.stop().await;
}
}

// --- a job put back in the queue never overtakes a newer one -------------------

/// Target tracked and synced at `0…`, then head `a` claimed and head `b`
/// pushed while `a` runs: (store, claimed job for `a`, event of `a`, event of `b`).
async fn newer_push_while_running(app: &TestApp, inst: i64) -> (ClaimedJob, String, String) {
    let store = &app.store;
    tracked(app, inst, inst * 10).await;
    let init = store
        .claim_job("w0", now_ms(), 60_000)
        .await
        .unwrap()
        .unwrap();
    let synced = SyncResult {
        head_sha: Some(sha('0')),
        ..Default::default()
    };
    assert!(store.finish_job(&init, &synced, now_ms()).await.unwrap());
    let ea = push_accepted(
        app,
        &format!("{inst}-a"),
        inst,
        inst * 10,
        &sha('0'),
        &sha('a'),
    )
    .await;
    let a = store
        .claim_job("w1", now_ms(), 1000)
        .await
        .unwrap()
        .expect("a");
    assert_eq!(a.job.connector_sync_event_id, ea);
    let eb = push_accepted(
        app,
        &format!("{inst}-b"),
        inst,
        inst * 10,
        &sha('a'),
        &sha('b'),
    )
    .await;
    (a, ea, eb)
}

conformance! {
/// A sync of `a` that fails transiently after `b` was pushed would otherwise
/// be retried after `b` completed and leave the target at the older head.
#[tokio::test]
async fn a_transient_failure_after_a_newer_push_supersedes_the_older_job() {
    let app = spawn_app().await; // no workers: the test drives the queue
    let (a, ea, eb) = newer_push_while_running(&app, 31).await;
    assert!(app
        .store
        .retry_job(&a, now_ms() + 10, "502 from GitHub", true, now_ms())
        .await
        .unwrap());
    let e = app.sync_event(&ea).await;
    assert_eq!(e["status"], "superseded", "{e}");
    let next = app
        .store
        .claim_job("w2", now_ms() + 60_000, 1000)
        .await
        .unwrap()
        .expect("b runs");
    assert_eq!(next.job.connector_sync_event_id, eb);
    assert!(app
        .store
        .claim_job("w3", now_ms() + 60_000, 1000)
        .await
        .unwrap()
        .is_none(), "a never runs again");
    app.stop().await;
}
}

conformance! {
/// The same after a crash: the dead worker's job for `a` is not put back
/// behind `b` by the rescuer.
#[tokio::test]
async fn a_rescued_job_older_than_a_queued_push_is_superseded() {
    let app = spawn_app().await;
    let (_a, ea, eb) = newer_push_while_running(&app, 32).await;
    let later = now_ms() + 5_000; // the 1 s lease has expired
    assert_eq!(app.store.rescue_expired_leases(later, NO_BACKOFF).await.unwrap(), 1);
    let e = app.sync_event(&ea).await;
    assert_eq!(e["status"], "superseded", "{e}");
    assert!(e["lastError"].as_str().unwrap_or("").contains("lease expired"), "{e}");
    let next = app.store.claim_job("w2", later, 1000).await.unwrap().expect("b runs");
    assert_eq!(next.job.connector_sync_event_id, eb);
    app.stop().await;
}
}

conformance! {
/// Without a newer push, a failed attempt is simply retried.
#[tokio::test]
async fn a_transient_failure_with_nothing_newer_queued_is_retried() {
    let app = spawn_app().await;
    let (_, _, _) = tracked(&app, 33, 330).await;
    let job = app.store.claim_job("w1", now_ms(), 1000).await.unwrap().unwrap();
    let run_at = now_ms() + 10;
    assert!(app.store.retry_job(&job, run_at, "502", true, now_ms()).await.unwrap());
    let e = app.sync_event(&job.job.connector_sync_event_id).await;
    assert_eq!(e["status"], "queued", "{e}");
    let again = app.store.claim_job("w2", run_at, 1000).await.unwrap().expect("retried");
    assert_eq!(again.job_id, job.job_id);
    assert_eq!(again.attempt, 2);
    app.stop().await;
}
}

conformance! {
/// The issue's case at scale: an installation with hundreds of queued syncs
/// (more than the claim's quick window of the oldest 256) ahead of another
/// installation's one. The other installation's sync is the second claimed.
#[tokio::test]
async fn hundreds_queued_in_one_installation_do_not_starve_another() {
    use connectord::domain::{BranchName, PathPrefix, RepoFullName};
    use connectord::store::models::NewTarget;
    let app = spawn_app().await;
    let target = |name: String, id: i64| NewTarget {
        repository_full_name: RepoFullName::parse(&name).unwrap(),
        repository_id: Some(id),
        branch: BranchName::parse("main").unwrap(),
        path_prefix: PathPrefix::parse("").unwrap(),
        max_file_bytes: 1 << 20,
    };
    let (busy, _) = app.store.create_connector(500).await.unwrap();
    for i in 0..300 {
        app.store.create_target(&busy.id, target(format!("busy/r{i}"), 5000 + i)).await.unwrap();
    }
    let (quiet, _) = app.store.create_connector(600).await.unwrap();
    let (_, quiet_sync) = app.store.create_target(&quiet.id, target("quiet/r".into(), 6000)).await.unwrap();

    let claimed = claim_all(&app, now_ms() + 60_000).await;
    let installations: Vec<i64> = claimed.iter().map(|j| j.job.installation_id).collect();
    assert_eq!(installations, vec![500, 600, 500, 500, 500], "claim order");
    assert_eq!(claimed[1].job.connector_sync_event_id, quiet_sync.id);
    app.stop().await;
}
}
