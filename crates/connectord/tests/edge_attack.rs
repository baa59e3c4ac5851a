//! Every hostile client at once, against the real binary at its default body
//! budget, body timeout and idle timeout (cap 200 and a 2 s header timeout
//! keep it short): stalled 25 MiB bodies, slowloris heads at 1 byte/s, idle
//! connections filling the cap, 5,000 requests with invented 1 KB methods.
//! Meanwhile a legitimate client (on its own thread, a new connection per
//! delivery, as GitHub) sends signed pushes to a tracked target: each must get
//! its 202 within 1 s, the server's resident memory must stay under 256 MiB,
//! and once the attackers leave nothing may stay held.
//!
//! All traffic goes to 127.0.0.1, every loop stops at a deadline, and the
//! numbers are printed (`cargo test --test edge_attack -- --nocapture`).

mod common;

use common::edge_server::{push, EdgeServer, MIB, SECRET};
use common::raw_http::{
    connect, head, metric, open_fds, read_response, rss_bytes, send, unsigned_webhook_head,
    wait_closed,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

const CAP: usize = 200;
const STALLED_BODIES: usize = 6;
const SLOWLORIS: usize = 40;
const METHOD_CONNECTIONS: usize = 4;
/// With the slowloris clients, more than the cap holds: the cap is always full.
const IDLE: usize = CAP - STALLED_BODIES - METHOD_CONNECTIONS;
const INVENTED_METHODS: usize = 5_000;
/// Attackers get this long to build up before the first legitimate delivery.
const RAMP_UP: Duration = Duration::from_millis(1500);
const LEGIT_PHASE: Duration = Duration::from_secs(6);
const LEGIT_EVERY: Duration = Duration::from_millis(200);
const LEGIT_BOUND: Duration = Duration::from_secs(1);
const RSS_BOUND: u64 = 256 * MIB as u64;
/// A bound on every wait, so a broken server fails the test instead of hanging it.
const HANG: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn legitimate_deliveries_get_through_every_attack_at_once_and_nothing_stays_held() {
    let cap = CAP.to_string();
    let edge = EdgeServer::start(&["--max-connections", &cap, "--header-read-timeout", "2s"]).await;
    edge.track_target().await;
    let port = edge.port();
    let pid = edge.pid();
    let baseline_fds = open_fds(pid);
    let baseline_rss = rss_bytes(pid);

    let stop = CancellationToken::new();
    let mut attackers = tokio::task::JoinSet::new();
    for _ in 0..STALLED_BODIES {
        attackers.spawn(stalled_body(port, stop.clone()));
    }
    for _ in 0..SLOWLORIS {
        attackers.spawn(slowloris(port, stop.clone()));
    }
    for _ in 0..IDLE {
        attackers.spawn(idle(port, stop.clone()));
    }
    let next_method = Arc::new(AtomicUsize::new(0));
    let answered_methods = Arc::new(AtomicUsize::new(0));
    let mut method_flood = tokio::task::JoinSet::new();
    for _ in 0..METHOD_CONNECTIONS {
        method_flood.spawn(invented_methods(
            port,
            next_method.clone(),
            answered_methods.clone(),
        ));
    }
    let peak_rss = Arc::new(AtomicUsize::new(0));
    let sampler = tokio::spawn(sample_rss(pid, peak_rss.clone(), stop.clone()));

    tokio::time::sleep(RAMP_UP).await;
    let legit = std::thread::spawn({
        let url = edge.server.webhook_url();
        move || legitimate_pushes(&url)
    });
    let results = tokio::task::spawn_blocking(move || legit.join().expect("legit client"))
        .await
        .unwrap();
    // Still under attack: what the server holds right now.
    let during = edge.metrics().await;
    let held_bodies = metric(&during, "connectord_webhook_body_bytes_buffered", &[]).unwrap();
    let open = metric(
        &during,
        "connectord_http_connections",
        &["listener=\"public\""],
    )
    .unwrap();

    tokio::time::timeout(HANG, async {
        while let Some(r) = method_flood.join_next().await {
            r.unwrap();
        }
    })
    .await
    .expect("the invented methods were all answered");
    stop.cancel();
    tokio::time::timeout(HANG, async {
        while let Some(r) = attackers.join_next().await {
            r.unwrap();
        }
    })
    .await
    .expect("attackers stop");
    sampler.await.unwrap();

    // Nothing left held: connections, body memory, descriptors.
    let deadline = Instant::now() + HANG;
    let (after_fds, text) = loop {
        let text = edge.metrics().await;
        let fds = open_fds(pid);
        let connections = metric(
            &text,
            "connectord_http_connections",
            &["listener=\"public\""],
        );
        let bodies = metric(&text, "connectord_webhook_body_bytes_buffered", &[]);
        if connections == Some(0.0) && bodies == Some(0.0) && fds <= baseline_fds + 2 {
            break (fds, text);
        }
        assert!(
            Instant::now() < deadline,
            "still held after the attack: {connections:?} connections, {bodies:?} body bytes, \
             {fds} fds (baseline {baseline_fds})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    let latencies: Vec<Duration> = results.iter().map(|(_, d)| *d).collect();
    let slowest = latencies.iter().max().copied().unwrap_or_default();
    let mut sorted = latencies.clone();
    sorted.sort();
    let median = sorted.get(sorted.len() / 2).copied().unwrap_or_default();
    let rejected = |reason: &str| {
        metric(
            &text,
            "connectord_http_connections_rejected_total",
            &["listener=\"public\"", &format!("reason=\"{reason}\"")],
        )
        .unwrap_or(0.0)
    };
    let busy = metric(
        &text,
        "connectord_webhook_rejected_total",
        &["reason=\"busy\""],
    );
    let peak = peak_rss.load(Ordering::SeqCst) as u64;
    eprintln!(
        "edge attack: {} legitimate pushes, median {median:?}, slowest {slowest:?} (bound {LEGIT_BOUND:?}); \
         resident memory {} MiB at start, peak {} MiB (bound {} MiB); during the attack {open} public \
         connections and {:.1} MiB of bodies held; {} closed to make room, {} header timeouts, {:?} bodies \
         refused as busy; {} invented-method requests answered, /metrics {} bytes; fds {baseline_fds} \
         before, {after_fds} after",
        results.len(),
        baseline_rss / MIB as u64,
        peak / MIB as u64,
        RSS_BOUND / MIB as u64,
        held_bodies / MIB as f64,
        rejected("evicted"),
        rejected("header_timeout"),
        busy,
        answered_methods.load(Ordering::SeqCst),
        text.len(),
    );

    for (i, (status, took)) in results.iter().enumerate() {
        assert_eq!(*status, 202, "push {i} answered {status} after {took:?}");
        assert!(*took < LEGIT_BOUND, "push {i} took {took:?} under attack");
    }
    assert!(
        results.len() >= 20,
        "only {} pushes were sent",
        results.len()
    );
    assert!(peak < RSS_BOUND, "resident memory peaked at {peak} bytes");
    // The attack was real: bodies were held, the cap was reached and defended.
    assert!(
        held_bodies >= (50 * MIB) as f64,
        "{held_bodies} body bytes held"
    );
    assert!(open >= (CAP - 20) as f64, "only {open} connections open");
    assert!(rejected("evicted") > 0.0 && rejected("header_timeout") > 0.0);
    assert!(busy.is_some_and(|n| n > 0.0), "no body was refused as busy");
    assert_eq!(answered_methods.load(Ordering::SeqCst), INVENTED_METHODS);
    assert!(!text.contains("M0000"), "an invented method became a label");
    assert!(
        text.len() < 64 * 1024,
        "/metrics grew to {} bytes",
        text.len()
    );
    let pushes = metric(
        &text,
        "connectord_webhook_deliveries_total",
        &["event=\"push\"", "outcome=\"accepted\""],
    );
    assert_eq!(pushes, Some(results.len() as f64));
}

/// Signed pushes, each on a new connection, one every [`LEGIT_EVERY`]:
/// (status, time to the answer).
fn legitimate_pushes(url: &str) -> Vec<(u16, Duration)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        let mut results = Vec::new();
        let until = Instant::now() + LEGIT_PHASE;
        let mut head = 1u64;
        while Instant::now() < until {
            let body = push(head, head + 1);
            head += 1;
            let started = Instant::now();
            let res = client
                .post(url)
                .header("content-type", "application/json")
                .header("x-github-event", "push")
                .header("x-github-delivery", format!("legit-{head}"))
                .header(
                    "x-hub-signature-256",
                    connectord::ingress::signature::sign(SECRET.as_bytes(), &body),
                )
                .body(body)
                .send()
                .await;
            let status = match res {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let _ = r.bytes().await;
                    status
                }
                Err(_) => 0,
            };
            results.push((status, started.elapsed()));
            tokio::time::sleep(LEGIT_EVERY).await;
        }
        results
    })
}

/// Declares 25 MiB with a bad signature, sends all but the last byte, and
/// holds; when answered (503 once the budget is spent) or cut off, tries again.
async fn stalled_body(port: u16, stop: CancellationToken) {
    let mib = vec![b'a'; MIB];
    while !stop.is_cancelled() {
        let mut conn = connect(port).await;
        let work = async {
            if !send(&mut conn, &unsigned_webhook_head(25 * MIB as u64)).await {
                return;
            }
            for i in 0..25 {
                let chunk = if i == 24 { &mib[1..] } else { &mib[..] };
                if !send(&mut conn, chunk).await {
                    return;
                }
            }
            let _ = read_response(&mut conn, Duration::from_secs(60)).await;
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = work => {}
        }
        pause(&stop, Duration::from_secs(1)).await;
    }
}

/// A head at one byte per second, never finished; again when cut off.
async fn slowloris(port: u16, stop: CancellationToken) {
    let request = b"POST /v1/webhooks/connectors/github HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ";
    while !stop.is_cancelled() {
        let mut conn = connect(port).await;
        for byte in request.iter().chain(std::iter::repeat(&b'a')) {
            if !send(&mut conn, std::slice::from_ref(byte)).await {
                break;
            }
            if !pause(&stop, Duration::from_secs(1)).await {
                return;
            }
        }
    }
}

/// One request, then an idle keep-alive connection held until the server
/// closes it; then again.
async fn idle(port: u16, stop: CancellationToken) {
    let get = head("GET", "/healthz", &[]);
    while !stop.is_cancelled() {
        let mut conn = connect(port).await;
        if send(&mut conn, &get).await && read_response(&mut conn, HANG).await.is_ok() {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = wait_closed(&mut conn, Duration::from_secs(120)) => {}
            }
        }
        // Each return closes someone else's connection at the cap: a pause
        // keeps the test's own CPU use (2 cores) from being the attack.
        pause(&stop, Duration::from_millis(500)).await;
    }
}

/// Requests to /healthz with invented 1 KB methods, each distinct, until
/// [`INVENTED_METHODS`] have been answered (a request lost with its
/// connection is sent again on a new one).
async fn invented_methods(port: u16, next: Arc<AtomicUsize>, answered: Arc<AtomicUsize>) {
    let deadline = Instant::now() + HANG;
    let mut conn: Option<TcpStream> = None;
    let mut i = next.fetch_add(1, Ordering::SeqCst);
    while i < INVENTED_METHODS && Instant::now() < deadline {
        let c = match conn.as_mut() {
            Some(c) => c,
            None => conn.insert(connect(port).await),
        };
        let request = head(&format!("M{i:01023}"), "/healthz", &[]);
        let ok = send(c, &request).await
            && matches!(read_response(c, Duration::from_secs(10)).await, Ok(r) if r.status == 405);
        if ok {
            answered.fetch_add(1, Ordering::SeqCst);
            i = next.fetch_add(1, Ordering::SeqCst);
        } else {
            conn = None;
        }
    }
}

async fn sample_rss(pid: u32, peak: Arc<AtomicUsize>, stop: CancellationToken) {
    while pause(&stop, Duration::from_millis(50)).await {
        peak.fetch_max(rss_bytes(pid) as usize, Ordering::SeqCst);
    }
    peak.fetch_max(rss_bytes(pid) as usize, Ordering::SeqCst);
}

/// Sleeps, unless stopped first; `false` if stopped.
async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        () = stop.cancelled() => false,
        () = tokio::time::sleep(d) => true,
    }
}
