//! The sync queue on PostgreSQL, scaled out: every "process" here is its own
//! `SqlStore` (its own connection pool and its own LISTEN connection), as a
//! separate `connectord serve --role worker` would have; they share this
//! process's CPU and tokio runtime.
//!
//! 1. Enqueue-to-start latency: jobs enqueued one at a time through one store
//!    instance (the ingress) and started by a worker on another, with a 5 s
//!    poll interval, so only LISTEN/NOTIFY explains millisecond starts.
//!    Measured from just before the enqueue call to the moment the
//!    reconciler is entered. Peers: the worker on the enqueuing instance
//!    (in-process wake-up), and SQLite (one process).
//! 2. Drain throughput: a pre-filled queue drained by 1, 2 and 4 worker
//!    processes with a no-op reconciler. Peer: SQLite, one process.
//!
//! `CONNECTORD_BENCH_POSTGRES_URL=postgres://… cargo run --release -p connectord-bench --bin queue-bench -- [latency_jobs] [drain_jobs] [concurrency] [drain_installations]`
//! (defaults 500, 2000, 2, 100; 0 jobs skips that part).

use connectord_bench::common;

use async_trait::async_trait;
use common::{ms, pct, settings, Cpu, CpuUse, Schema, SECRET};
use connectord::config::Role;
use connectord::domain::{BranchName, PathPrefix, RepoFullName};
use connectord::ingress::signature::sign;
use connectord::startup::Application;
use connectord::store::models::{ClaimedJob, NewTarget, SyncResult};
use connectord::store::sql::SqlStore;
use connectord::store::{Store, StoreOptions};
use connectord::sync::worker::{WorkerPool, WorkerSettings};
use connectord::sync::{ReconcileError, Reconciler};
use futures::StreamExt;
use rand::Rng;
use serde_json::json;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Long enough that a start within milliseconds can only be a wake-up.
const LATENCY_POLL: Duration = Duration::from_secs(5);
/// Latency: jobs go round-robin over this many targets, so a target's
/// previous job has long finished when the next one is enqueued.
const LATENCY_TARGETS: usize = 50;
const LATENCY_INSTALLATIONS: usize = 10;
const WARM_UP: usize = 20;
/// Drain: installations the targets are spread over by default; with the
/// default cap of 4 running jobs per installation, 100 installations allow
/// 400 at once, far more than the workers run, so the cap never limits.
const DRAIN_INSTALLATIONS: usize = 100;

/// A reconciler that does nothing and records when each job started.
#[derive(Default)]
struct Recorder {
    /// Sync event id → when `reconcile` was entered.
    starts: Mutex<HashMap<String, Instant>>,
}

#[async_trait]
impl Reconciler for Recorder {
    async fn reconcile(&self, job: &ClaimedJob) -> Result<SyncResult, ReconcileError> {
        let now = Instant::now();
        self.starts
            .lock()
            .expect("lock")
            .insert(job.job.connector_sync_event_id.clone(), now);
        Ok(SyncResult::default())
    }
}

impl Recorder {
    fn started(&self, event: &str) -> Option<Instant> {
        self.starts.lock().expect("lock").get(event).copied()
    }

    fn count(&self) -> usize {
        self.starts.lock().expect("lock").len()
    }

    /// The longest time between two consecutive job starts.
    fn longest_gap(&self) -> Duration {
        let mut at: Vec<Instant> = self
            .starts
            .lock()
            .expect("lock")
            .values()
            .copied()
            .collect();
        at.sort();
        at.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
    }
}

/// One worker "process": its own store instance and a worker pool on it.
struct Worker {
    token: CancellationToken,
    task: JoinHandle<()>,
}

fn worker_settings(concurrency: usize, poll_interval: Duration) -> WorkerSettings {
    WorkerSettings {
        concurrency,
        poll_interval,
        ..WorkerSettings::default()
    }
}

fn start_worker(
    store: Arc<dyn Store>,
    recorder: Arc<Recorder>,
    settings: WorkerSettings,
) -> Worker {
    let pool = WorkerPool::new(store, recorder, settings);
    let token = CancellationToken::new();
    let task = tokio::spawn(pool.run_until_stopped(token.clone()));
    Worker { token, task }
}

async fn stop(workers: Vec<Worker>) -> anyhow::Result<()> {
    for w in &workers {
        w.token.cancel();
    }
    for w in workers {
        w.task.await?;
    }
    Ok(())
}

async fn open(url: &str) -> anyhow::Result<Arc<dyn Store>> {
    Ok(Arc::new(
        SqlStore::connect(url, StoreOptions::default()).await?,
    ))
}

/// Creates a connector per installation and `n` targets round-robin over
/// them; each target's creation queues its initial sync.
async fn add_targets(
    store: &Arc<dyn Store>,
    installations: usize,
    n: usize,
) -> anyhow::Result<Vec<String>> {
    let mut connectors = vec![];
    for i in 0..installations {
        connectors.push(store.create_connector(1 + i as i64).await?.0.id);
    }
    let created: Vec<anyhow::Result<String>> = futures::stream::iter(0..n)
        .map(|t| {
            let (store, connector) = (store.clone(), connectors[t % installations].clone());
            async move {
                let target = NewTarget {
                    repository_full_name: RepoFullName::parse(&format!("org/repo{t}"))?,
                    repository_id: Some(1000 + t as i64),
                    branch: BranchName::parse("main")?,
                    path_prefix: PathPrefix::parse("")?,
                    max_file_bytes: 1024 * 1024,
                };
                Ok(store.create_target(&connector, target).await?.0.id)
            }
        })
        .buffered(8)
        .collect()
        .await;
    created.into_iter().collect()
}

/// Waits until no sync is queued or running.
async fn wait_idle(store: &Arc<dyn Store>, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let pending: i64 = store
            .sync_event_counts()
            .await?
            .iter()
            .filter(|(s, _)| !s.is_final())
            .map(|(_, n)| n)
            .sum();
        if pending == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{pending} syncs still pending after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Enqueue {
    /// `Store::request_sync` on the ingress instance.
    RequestSync,
    /// A signed push through the HTTP router of an app with role `ingress`.
    SignedPush,
}

#[derive(Clone, Copy, PartialEq)]
enum Db {
    Postgres,
    Sqlite,
}

struct LatencyCase {
    label: &'static str,
    db: Db,
    enqueue: Enqueue,
    /// Worker store instances; 0 = one worker pool on the enqueuing instance.
    worker_instances: usize,
}

struct LatencyRun {
    label: &'static str,
    enqueue_call_p50: Duration,
    starts: Vec<Duration>,
    missing: usize,
}

/// What is enqueued next, and the sync event it created.
struct Enqueuer {
    how: Enqueue,
    store: Arc<dyn Store>,
    targets: Vec<String>,
    client: reqwest::Client,
    webhook: String,
    /// Each target's pushes form a before → after chain.
    steps: Vec<u64>,
    next: usize,
}

impl Enqueuer {
    async fn enqueue(&mut self) -> anyhow::Result<String> {
        let t = self.next % self.targets.len();
        self.next += 1;
        match self.how {
            Enqueue::RequestSync => Ok(self.store.request_sync(&self.targets[t]).await?.id),
            Enqueue::SignedPush => {
                let step = self.steps[t];
                self.steps[t] += 1;
                let payload = json!({
                    "ref": "refs/heads/main",
                    "before": format!("{t:08x}{step:032x}"),
                    "after": format!("{t:08x}{:032x}", step + 1),
                    "repository": {"id": 1000 + t as i64, "full_name": format!("org/repo{t}")},
                    "installation": {"id": 1 + (t % LATENCY_INSTALLATIONS) as i64},
                    "commits": [], "head_commit": null, "pusher": {"name": "bench"},
                });
                let body = serde_json::to_vec(&payload)?;
                let res = self
                    .client
                    .post(&self.webhook)
                    .header("content-type", "application/json")
                    .header("x-github-event", "push")
                    .header("x-github-delivery", format!("bench-{}", self.next))
                    .header("x-hub-signature-256", sign(SECRET.as_bytes(), &body))
                    .body(body)
                    .send()
                    .await?;
                anyhow::ensure!(res.status() == 202, "push answered {}", res.status());
                let answer: serde_json::Value = res.json().await?;
                answer["syncEventIds"][0]
                    .as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| anyhow::anyhow!("no sync event in {answer}"))
            }
        }
    }
}

async fn latency(
    case: &LatencyCase,
    url: &str,
    jobs: usize,
    concurrency: usize,
) -> anyhow::Result<LatencyRun> {
    let ingress = open(url).await?;
    let recorder = Arc::new(Recorder::default());
    let mut worker_stores = vec![];
    for _ in 0..case.worker_instances {
        worker_stores.push(open(url).await?);
    }
    if worker_stores.is_empty() {
        worker_stores.push(ingress.clone());
    }
    let workers: Vec<Worker> = worker_stores
        .into_iter()
        .map(|s| {
            start_worker(
                s,
                recorder.clone(),
                worker_settings(concurrency, LATENCY_POLL),
            )
        })
        .collect();
    let targets = add_targets(&ingress, LATENCY_INSTALLATIONS, LATENCY_TARGETS).await?;
    wait_idle(&ingress, Duration::from_secs(60)).await?;

    let mut app = None;
    let mut webhook = String::new();
    if case.enqueue == Enqueue::SignedPush {
        let a = Application::build_with_store(settings(url, Role::Ingress), ingress.clone(), None)
            .await?;
        webhook = format!(
            "http://127.0.0.1:{}/v1/webhooks/connectors/github",
            a.port()
        );
        let token = a.shutdown_token();
        app = Some((token, tokio::spawn(a.run_until_stopped())));
    }
    let mut enqueuer = Enqueuer {
        how: case.enqueue,
        store: ingress.clone(),
        steps: vec![0; targets.len()],
        targets,
        client: reqwest::Client::new(),
        webhook,
        next: 0,
    };
    let mut rng = rand::thread_rng();
    let mut sent = vec![];
    for i in 0..WARM_UP + jobs {
        let t0 = Instant::now();
        let event = enqueuer.enqueue().await?;
        let call = t0.elapsed();
        if i >= WARM_UP {
            sent.push((event, t0, call));
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(2..=10))).await;
    }
    wait_idle(&ingress, Duration::from_secs(30)).await?;
    stop(workers).await?;
    if let Some((token, task)) = app {
        token.cancel();
        task.await??;
    }

    let mut calls: Vec<Duration> = sent.iter().map(|(_, _, c)| *c).collect();
    calls.sort();
    let mut starts = vec![];
    let mut missing = 0;
    for (event, t0, _) in &sent {
        match recorder.started(event) {
            Some(at) => starts.push(at.saturating_duration_since(*t0)),
            None => missing += 1,
        }
    }
    starts.sort();
    Ok(LatencyRun {
        label: case.label,
        enqueue_call_p50: pct(&calls, 0.5),
        starts,
        missing,
    })
}

struct DrainRun {
    label: String,
    jobs: usize,
    wall: Duration,
    longest_gap: Duration,
    cpu: CpuUse,
}

/// Pre-fills `jobs` initial syncs over `jobs` targets, then times `instances`
/// worker processes (each concurrency `concurrency`) draining them.
async fn drain(
    label: String,
    url: &str,
    instances: usize,
    concurrency: usize,
    jobs: usize,
    installations: usize,
) -> anyhow::Result<DrainRun> {
    let ingress = open(url).await?;
    add_targets(&ingress, installations, jobs).await?;
    let mut stores = vec![];
    for _ in 0..instances {
        stores.push(open(url).await?);
    }
    let recorder = Arc::new(Recorder::default());
    let cpu = Cpu::start();
    let t0 = Instant::now();
    // The default poll interval (1 s): a worker that finds nothing it can
    // claim sleeps until a wake-up or the next poll.
    let workers: Vec<Worker> = stores
        .into_iter()
        .map(|s| {
            start_worker(
                s,
                recorder.clone(),
                worker_settings(concurrency, WorkerSettings::default().poll_interval),
            )
        })
        .collect();
    let deadline = t0 + Duration::from_secs(600);
    // Wait for the last start in memory, then for the last completion in the
    // database, so polling adds no load while the queue drains.
    while recorder.count() < jobs {
        anyhow::ensure!(Instant::now() < deadline, "drain did not finish");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    loop {
        let completed: i64 = ingress
            .sync_event_counts()
            .await?
            .iter()
            .filter(|(s, _)| *s == connectord::store::states::SyncStatus::Completed)
            .map(|(_, n)| n)
            .sum();
        if completed as usize >= jobs {
            break;
        }
        anyhow::ensure!(Instant::now() < deadline, "drain did not finish");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let wall = t0.elapsed();
    let cpu = cpu.used();
    stop(workers).await?;
    anyhow::ensure!(recorder.count() == jobs, "{} starts", recorder.count());
    Ok(DrainRun {
        label,
        jobs,
        wall,
        longest_gap: recorder.longest_gap(),
        cpu,
    })
}

/// Runs `f` on a fresh database of `db` (a schema, or a temporary SQLite
/// file) and drops it afterwards, also when `f` failed.
async fn on_fresh<T, F, Fut>(db: Db, base: &str, f: F) -> anyhow::Result<T>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    match db {
        Db::Postgres => {
            let schema = Schema::create(base).await?;
            let result = f(schema.url.clone()).await;
            schema.drop_now().await?;
            result
        }
        Db::Sqlite => {
            let dir = tempfile::tempdir()?;
            f(format!(
                "sqlite://{}",
                dir.path().join("bench.db").display()
            ))
            .await
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let latency_jobs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(500);
    let drain_jobs: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(2000);
    let concurrency: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(WorkerSettings::default().concurrency);
    let installations: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(DRAIN_INSTALLATIONS);
    let Some(base) = common::postgres_url() else {
        anyhow::bail!(
            "set {} to a PostgreSQL server, e.g. postgres://postgres@127.0.0.1:5432/test",
            common::POSTGRES_URL_VAR
        );
    };
    let server = common::postgres_settings(&base).await?;
    let load = common::background_load().await;

    let cases = [
        LatencyCase {
            label: "PostgreSQL: request_sync on instance A → 1 worker instance B (NOTIFY)",
            db: Db::Postgres,
            enqueue: Enqueue::RequestSync,
            worker_instances: 1,
        },
        LatencyCase {
            label:
                "PostgreSQL: signed push → ingress app on A (HTTP) → 1 worker instance B (NOTIFY)",
            db: Db::Postgres,
            enqueue: Enqueue::SignedPush,
            worker_instances: 1,
        },
        LatencyCase {
            label: "PostgreSQL: request_sync on A → 4 worker instances (NOTIFY)",
            db: Db::Postgres,
            enqueue: Enqueue::RequestSync,
            worker_instances: 4,
        },
        LatencyCase {
            label: "PostgreSQL: request_sync → worker on the same instance (in-process wake-up)",
            db: Db::Postgres,
            enqueue: Enqueue::RequestSync,
            worker_instances: 0,
        },
        LatencyCase {
            label: "SQLite: request_sync → worker in the same process (reference)",
            db: Db::Sqlite,
            enqueue: Enqueue::RequestSync,
            worker_instances: 0,
        },
    ];
    let mut latencies = vec![];
    for case in cases.iter().filter(|_| latency_jobs > 0) {
        latencies.push(
            on_fresh(case.db, &base, |url| async move {
                latency(case, &url, latency_jobs, concurrency).await
            })
            .await?,
        );
    }

    let mut drains = vec![];
    for instances in [1usize, 2, 4].into_iter().filter(|_| drain_jobs > 0) {
        let label = format!("PostgreSQL, {instances} × {concurrency}");
        drains.push(
            on_fresh(Db::Postgres, &base, |url| async move {
                drain(
                    label,
                    &url,
                    instances,
                    concurrency,
                    drain_jobs,
                    installations,
                )
                .await
            })
            .await?,
        );
    }
    if drain_jobs > 0 {
        drains.push(
            on_fresh(Db::Sqlite, &base, |url| async move {
                drain(
                    format!("SQLite, 1 × {concurrency} (reference)"),
                    &url,
                    1,
                    concurrency,
                    drain_jobs,
                    installations,
                )
                .await
            })
            .await?,
        );
    }

    println!("PostgreSQL: {server}; {load}");
    if latency_jobs > 0 {
        println!();
        println!(
        "Enqueue-to-start latency: {latency_jobs} jobs (after {WARM_UP} warm-up), one at a time 2-10 ms apart, \
         round-robin over {LATENCY_TARGETS} targets; worker concurrency {concurrency}, poll interval {} s",
        LATENCY_POLL.as_secs()
    );
        println!("| enqueue → start | enqueue call p50 | start p50 | p90 | p99 | max | over 1 s | never started |");
        println!("|---|---|---|---|---|---|---|---|");
        for r in &latencies {
            let over = r
                .starts
                .iter()
                .filter(|d| **d > Duration::from_secs(1))
                .count();
            println!(
                "| {} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.1} ms | {over} | {} |",
                r.label,
                ms(r.enqueue_call_p50),
                ms(pct(&r.starts, 0.5)),
                ms(pct(&r.starts, 0.9)),
                ms(pct(&r.starts, 0.99)),
                ms(r.starts.last().copied().unwrap_or_default()),
                r.missing
            );
        }
    }
    if drain_jobs > 0 {
        println!();
        println!(
        "Drain: {drain_jobs} queued jobs over {drain_jobs} targets and {installations} installations, \
         no-op reconciler; a worker = one store instance (own pool and LISTEN connection) running \
         {concurrency} jobs at once"
    );
        println!("| workers × concurrency | jobs | wall | jobs/s | vs 1 worker | longest gap between starts | CPU cores: machine / PostgreSQL / bench |");
        println!("|---|---|---|---|---|---|---|");
        let one = drains[0].jobs as f64 / drains[0].wall.as_secs_f64();
        for r in &drains {
            let rate = r.jobs as f64 / r.wall.as_secs_f64();
            println!(
                "| {} | {} | {:.2} s | {rate:.0} | {:.2}x | {:.0} ms | {} |",
                r.label,
                r.jobs,
                r.wall.as_secs_f64(),
                rate / one,
                ms(r.longest_gap),
                r.cpu
            );
        }
    }
    Ok(())
}
