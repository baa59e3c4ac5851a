//! The public edge against clients without the secret, through the real
//! binary: each protection on its own (the attack on all of them at once is
//! `tests/edge_attack.rs`). Settings are small so the file runs in seconds;
//! the only timing checks are lower bounds (a server cannot act before its
//! timer), which load cannot break.

mod common;

use common::edge_server::{ping, EdgeServer, MIB, SECRET};
use common::raw_http::{
    connect, head, read_response, send, signed_webhook, unsigned_webhook_head, wait_closed,
};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;

const ANSWER: Duration = Duration::from_secs(20);
/// Lower bounds allow for the client's and the server's clocks starting a
/// moment apart (connect vs accept).
const SLACK: Duration = Duration::from_millis(100);

fn rejected(reason: &str) -> [String; 1] {
    [format!("reason=\"{reason}\"")]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_not_complete_within_the_header_timeout_is_cut_off_without_an_answer() {
    let edge = EdgeServer::start(&["--header-read-timeout", "1s", "--idle-timeout", "30s"]).await;

    // Slowloris: a head that grows by a byte every 200 ms and never ends.
    let (mut read, mut write) = connect(edge.port()).await.into_split();
    let started = Instant::now();
    let trickle = tokio::spawn(async move {
        let _ = write.write_all(b"GET /healthz HTTP/1.1\r\nx-slow: ").await;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if write.write_all(b"a").await.is_err() {
                break;
            }
        }
    });
    // And a client that connects and sends nothing at all.
    let mut silent = connect(edge.port()).await;
    let silent_started = Instant::now();

    let closed = wait_closed(&mut read, ANSWER)
        .await
        .expect("slowloris cut off");
    let elapsed = started.elapsed();
    assert!(
        elapsed + SLACK >= Duration::from_secs(1),
        "cut after {elapsed:?}"
    );
    assert_eq!(closed.bytes, 0, "no answer to a head that never ended");
    eprintln!("header timeout 1s: slowloris cut off after {elapsed:?}");
    let silent_closed = wait_closed(&mut silent, ANSWER)
        .await
        .expect("silent cut off");
    assert!(silent_started.elapsed() + SLACK >= Duration::from_secs(1));
    assert_eq!(silent_closed.bytes, 0);
    trickle.abort();

    let labels = rejected("header_timeout");
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    let cut = edge
        .wait_metric(
            "connectord_http_connections_rejected_total",
            &labels,
            ANSWER,
            |v| v >= 2.0,
        )
        .await;
    assert_eq!(cut, 2.0);
    // The server is fine for everyone else.
    let res = edge.deliver("ping", "after-slowloris", ping(100)).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_connection_waits_for_the_idle_timeout_not_the_header_timeout() {
    let edge = EdgeServer::start(&["--header-read-timeout", "1s", "--idle-timeout", "3s"]).await;
    let mut conn = connect(edge.port()).await;
    let get = head("GET", "/healthz", &[]);
    assert!(send(&mut conn, &get).await);
    assert_eq!(read_response(&mut conn, ANSWER).await.unwrap().status, 200);
    // Idle for longer than the header timeout: still open, and served.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(send(&mut conn, &get).await);
    let second = read_response(&mut conn, ANSWER)
        .await
        .expect("served after 1.5 s idle");
    assert_eq!(second.status, 200);
    let closed = wait_closed(&mut conn, ANSWER)
        .await
        .expect("closed when idle");
    assert!(
        closed.after + SLACK >= Duration::from_secs(3),
        "closed after {:?}, before the idle timeout",
        closed.after
    );
    assert_eq!(closed.bytes, 0);
    eprintln!(
        "idle timeout 3s: closed {:?} after the last answer",
        closed.after
    );
    let labels = rejected("idle_timeout");
    let labels: Vec<&str> = labels.iter().map(String::as_str).collect();
    edge.wait_metric(
        "connectord_http_connections_rejected_total",
        &labels,
        ANSWER,
        |v| v == 1.0,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_does_not_arrive_within_the_body_timeout_gets_408_and_the_connection_closes() {
    let edge = EdgeServer::start(&["--body-read-timeout", "1s"]).await;
    let mut conn = connect(edge.port()).await;
    let started = Instant::now();
    assert!(send(&mut conn, &unsigned_webhook_head(1000)).await);
    assert!(send(&mut conn, &[b'{'; 10]).await);
    let res = read_response(&mut conn, ANSWER).await.expect("an answer");
    assert_eq!(res.status, 408, "{}", res.text());
    assert!(res.closes(), "{}", res.headers);
    eprintln!("body timeout 1s: 408 after {:?}", started.elapsed());
    assert!(started.elapsed() + SLACK >= Duration::from_secs(1));
    assert!(wait_closed(&mut conn, ANSWER).await.is_some());

    let text = edge.metrics().await;
    let metric = |name, labels: &[&str]| common::raw_http::metric(&text, name, labels);
    assert_eq!(
        metric(
            "connectord_webhook_rejected_total",
            &["reason=\"body_timeout\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric("connectord_webhook_body_bytes_buffered", &[]),
        Some(0.0)
    );
    assert_eq!(edge.delivery_count().await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_length_over_25_mib_answers_413_before_any_body_byte_and_chunked_is_cut_at_25_mib(
) {
    let edge = EdgeServer::start(&[]).await;

    // 200 MB declared, nothing sent: the answer comes without a body byte.
    let mut conn = connect(edge.port()).await;
    let started = Instant::now();
    assert!(send(&mut conn, &unsigned_webhook_head(200_000_000)).await);
    let res = read_response(&mut conn, ANSWER).await.expect("early 413");
    eprintln!("declared 200 MB: 413 after {:?}", started.elapsed());
    assert_eq!(res.status, 413, "{}", res.text());
    assert!(res.closes());
    assert!(wait_closed(&mut conn, ANSWER).await.is_some());

    // Chunked, no length: cut off once past 25 MiB.
    let chunked = head(
        "POST",
        "/v1/webhooks/connectors/github",
        &[
            ("transfer-encoding", "chunked".into()),
            ("x-github-event", "push".into()),
            ("x-github-delivery", "chunked".into()),
            ("x-hub-signature-256", format!("sha256={}", "0".repeat(64))),
        ],
    );
    let (mut read, mut write) = connect(edge.port()).await.into_split();
    let writer = tokio::spawn(async move {
        let mut chunk = format!("{MIB:x}\r\n").into_bytes();
        chunk.extend(std::iter::repeat_n(b'a', MIB));
        chunk.extend_from_slice(b"\r\n");
        let _ = write.write_all(&chunked).await;
        let mut sent = 0;
        for _ in 0..27 {
            if write.write_all(&chunk).await.is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    let res = read_response(&mut read, ANSWER)
        .await
        .expect("413 past 25 MiB");
    assert_eq!(res.status, 413, "{}", res.text());
    assert!(res.closes());
    let sent = writer.await.unwrap();
    assert!(sent >= 25, "cut off after {sent} MiB, before the cap");

    let text = edge.metrics().await;
    assert_eq!(
        common::raw_http::metric(
            &text,
            "connectord_webhook_rejected_total",
            &["reason=\"too_large\""]
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(edge.delivery_count().await, 0, "nothing recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_cap_the_connection_idle_longest_is_closed_to_make_room() {
    let edge = EdgeServer::start(&["--max-connections", "10"]).await;
    let get = head("GET", "/healthz", &[]);
    let mut idle = Vec::new();
    for _ in 0..10 {
        let mut conn = connect(edge.port()).await;
        assert!(send(&mut conn, &get).await);
        assert_eq!(read_response(&mut conn, ANSWER).await.unwrap().status, 200);
        idle.push(conn);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // An eleventh client: served, and the oldest idle connection made room.
    let res = edge.deliver("ping", "at-the-cap", ping(100)).await;
    assert_eq!(res.status(), 200);
    let closed = wait_closed(&mut idle[0], ANSWER).await;
    assert!(
        closed.is_some(),
        "the longest idle connection was not closed"
    );
    for (i, conn) in idle.iter_mut().enumerate().skip(1) {
        assert!(send(conn, &get).await, "connection {i} was closed");
        let res = read_response(conn, ANSWER).await;
        assert_eq!(res.map(|r| r.status).ok(), Some(200), "connection {i}");
    }
    assert_eq!(
        edge.metric(
            "connectord_http_connections_rejected_total",
            &["reason=\"evicted\""]
        )
        .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_connection_has_a_request_in_progress_a_new_one_waits_for_a_slot() {
    let edge = EdgeServer::start(&["--max-connections", "4", "--body-read-timeout", "2s"]).await;
    let sent_at = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let mut conn = connect(edge.port()).await;
        assert!(send(&mut conn, &unsigned_webhook_head(100)).await);
        assert!(send(&mut conn, b"{").await);
        stalled.push(conn);
    }
    // All four handlers are reading their bodies (each holds a 100-byte buffer).
    edge.wait_metric("connectord_webhook_body_bytes_buffered", &[], ANSWER, |v| {
        v == 400.0
    })
    .await;
    // A fifth client waits in the listen backlog, and is served once one of
    // the four ends: not before their body timeout.
    let res = edge.deliver("ping", "waited", ping(100)).await;
    let answered = sent_at.elapsed();
    eprintln!("every slot busy (body timeout 2s): the next client served after {answered:?}");
    assert_eq!(res.status(), 200);
    assert!(
        answered + SLACK >= Duration::from_secs(2),
        "served after {answered:?}, while every slot was busy"
    );
    for mut conn in stalled {
        let res = read_response(&mut conn, ANSWER).await.expect("408");
        assert_eq!(res.status, 408);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_body_budget_answers_503_and_keeps_a_quarter_for_bodies_up_to_1_mib() {
    // 34 MiB: large bodies may hold 25.5 MiB between them, 8.5 MiB is kept
    // for bodies up to 1 MiB.
    let edge = EdgeServer::start(&["--body-budget-mib", "34", "--body-read-timeout", "60s"]).await;
    let mib = vec![b'a'; MIB];

    // A stalled 25 MiB body that has sent 20 MiB holds a 25 MiB buffer.
    let mut large = connect(edge.port()).await;
    assert!(send(&mut large, &unsigned_webhook_head(25 * MIB as u64)).await);
    for _ in 0..20 {
        assert!(send(&mut large, &mib).await);
    }
    let held = edge
        .wait_metric("connectord_webhook_body_bytes_buffered", &[], ANSWER, |v| {
            v >= (20 * MIB) as f64
        })
        .await;
    assert_eq!(held, (25 * MIB) as f64, "charged for its buffer");

    // Another body passing 1 MiB does not fit in what large bodies may use: 503.
    let mut second = connect(edge.port()).await;
    assert!(send(&mut second, &unsigned_webhook_head(2 * MIB as u64)).await);
    let _ = send(&mut second, &mib).await;
    let _ = send(&mut second, &mib).await;
    let res = read_response(&mut second, ANSWER).await.expect("503");
    assert_eq!(
        (res.status, res.text().as_str()),
        (503, "server busy; retry")
    );
    assert!(res.closes());

    // A signed delivery under 1 MiB gets through, from the reserve...
    let res = edge.deliver("ping", "small", ping(900 * 1024)).await;
    assert_eq!(res.status(), 200);
    // ...and a signed one over 1 MiB is refused while the large share is taken.
    let res = edge.deliver("ping", "large", ping(3 * MIB / 2)).await;
    assert_eq!(res.status(), 503);

    // The stalled client leaves: everything it held comes back.
    drop(large);
    edge.wait_metric("connectord_webhook_body_bytes_buffered", &[], ANSWER, |v| {
        v == 0.0
    })
    .await;
    let res = edge.deliver("ping", "large-again", ping(3 * MIB / 2)).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        edge.metric("connectord_webhook_rejected_total", &["reason=\"busy\""])
            .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_labels_come_from_closed_sets_and_metrics_stay_off_the_public_listener() {
    let edge = EdgeServer::start(&[]).await;
    let public = edge.server.base();
    let res = edge
        .client
        .get(format!("{public}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404, "/metrics on the public listener");

    // Invented 1 KB methods, and paths no route matches.
    let mut conn = connect(edge.port()).await;
    for i in 0..300 {
        let method = format!("X{i:01023}");
        assert!(send(&mut conn, &head(&method, "/healthz", &[])).await);
        assert_eq!(read_response(&mut conn, ANSWER).await.unwrap().status, 405);
    }
    for i in 0..50 {
        assert!(send(&mut conn, &head("GET", &format!("/nothing/{i}"), &[])).await);
        assert_eq!(read_response(&mut conn, ANSWER).await.unwrap().status, 404);
    }
    let text = edge.metrics().await;
    assert!(!text.contains("X0000"), "an invented method became a label");
    assert!(!text.contains("/nothing/"), "a path became a label");
    let latency = |labels: &[&str]| {
        common::raw_http::metric(
            &text,
            "connectord_http_request_duration_seconds_count",
            labels,
        )
    };
    assert_eq!(
        latency(&["method=\"other\"", "route=\"/healthz\"", "status=\"405\""]),
        Some(300.0),
        "{text}"
    );
    assert_eq!(
        latency(&["method=\"GET\"", "route=\"other\"", "status=\"404\""]),
        Some(51.0),
        "the 50 paths and the public /metrics: {text}"
    );
    assert!(text.len() < 64 * 1024, "/metrics is {} bytes", text.len());

    // --public-metrics keeps them on the public listener too.
    let open = EdgeServer::start(&["--public-metrics"]).await;
    let res = open
        .client
        .get(format!("{}/metrics", open.server.base()))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_accepting_and_finishes_the_request_in_flight() {
    let mut edge = EdgeServer::start(&[]).await;
    let body = ping(4000);
    let request = signed_webhook(SECRET, "ping", "in-flight", &body);
    let (first, rest) = request.split_at(request.len() - 1000);
    let mut in_flight = connect(edge.port()).await;
    assert!(send(&mut in_flight, first).await);
    let mut idle = connect(edge.port()).await;
    assert!(send(&mut idle, &head("GET", "/healthz", &[])).await);
    assert_eq!(read_response(&mut idle, ANSWER).await.unwrap().status, 200);
    edge.wait_metric("connectord_webhook_body_bytes_buffered", &[], ANSWER, |v| {
        v > 0.0
    })
    .await;

    let kill = std::process::Command::new("kill")
        .args(["-TERM", &edge.pid().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    // New connections are refused at once; the idle one is closed.
    let port = edge.port();
    let deadline = Instant::now() + ANSWER;
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
    {
        assert!(Instant::now() < deadline, "still accepting after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(wait_closed(&mut idle, ANSWER).await.is_some());
    // The request in flight is finished and answered.
    assert!(send(&mut in_flight, rest).await);
    let res = read_response(&mut in_flight, ANSWER)
        .await
        .expect("answered");
    assert_eq!(res.status, 200, "{}", res.text());
    let exit = edge.server.wait_exit(ANSWER).await;
    assert!(exit.success(), "{exit}:\n{}", edge.server.log_text());
}
