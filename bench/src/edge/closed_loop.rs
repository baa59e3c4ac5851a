//! The load generator's requests and connections: every request signed
//! before the clock starts, then keep-alive HTTP/1.1 connections (hyper's
//! client), each in a closed loop: send, wait for the answer, send the next.

use super::payload::Template;
use bytes::Bytes;
use connectord::ingress::signature::sign;
use http_body_util::{BodyExt, Full};
use hyper::header::{HeaderValue, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// How long a request waits for its answer (GitHub's own limit).
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// One request, ready to send but for the body copy.
pub struct Prepared {
    pub after: [u8; 40],
    pub delivery: HeaderValue,
    pub signature: HeaderValue,
}

/// What every connection shares.
pub struct Plan {
    pub addr: SocketAddr,
    pub host: HeaderValue,
    pub path: String,
    pub template: Template,
    pub prepared: Vec<Prepared>,
    pub next: AtomicUsize,
    pub exhausted: AtomicBool,
    pub measure_from: Instant,
    pub end: Instant,
}

#[derive(Default)]
pub struct ConnStats {
    /// Latencies of the requests started and answered inside the window.
    pub window: Vec<Duration>,
    pub statuses: HashMap<u16, u64>,
    pub transport_errors: u64,
    /// Indexes of the prepared requests answered 202.
    pub accepted: Vec<usize>,
}

/// Request `i`'s head: 40 hex digits, distinct per run and request.
fn after_sha(run: u32, i: usize) -> [u8; 40] {
    let mut sha = [0; 40];
    sha.copy_from_slice(format!("{run:08x}{i:032x}").as_bytes());
    sha
}

/// A UUID-shaped delivery id, distinct per run and request, like GitHub's.
fn delivery_id(run: u32, i: usize) -> String {
    format!("{run:08x}-0000-4000-8000-{i:012x}")
}

/// `count` requests, signed with `key`, on every core (before the clock starts).
pub fn prepare(template: &Template, count: usize, key: &[u8]) -> Vec<Prepared> {
    let run: u32 = rand::random();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per = count.div_ceil(threads).max(1);
    std::thread::scope(|s| {
        let parts: Vec<_> = (0..threads)
            .map(|k| {
                s.spawn(move || {
                    let mut body = template.bytes.clone();
                    (k * per..((k + 1) * per).min(count))
                        .map(|i| {
                            let after = after_sha(run, i);
                            template.patch(&mut body, i, &after);
                            Prepared {
                                after,
                                delivery: HeaderValue::from_str(&delivery_id(run, i))
                                    .expect("hex and dashes"),
                                signature: HeaderValue::from_str(&sign(key, &body)).expect("hex"),
                            }
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .flat_map(|p| p.join().expect("a preparing thread panicked"))
            .collect()
    })
}

/// One keep-alive connection in a closed loop until the window ends; on a
/// transport error it counts it and reconnects.
pub async fn connection(plan: Arc<Plan>) -> ConnStats {
    let mut stats = ConnStats::default();
    let mut body = plan.template.bytes.clone();
    'connect: while Instant::now() < plan.end {
        let stream = match TcpStream::connect(plan.addr).await {
            Ok(s) => s,
            Err(_) => {
                stats.transport_errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok((mut sender, conn)) =
            hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream)).await
        else {
            stats.transport_errors += 1;
            continue;
        };
        let driver = tokio::spawn(conn);
        loop {
            if sender.ready().await.is_err() {
                // The server closed the connection between requests: open another.
                driver.abort();
                continue 'connect;
            }
            let started = Instant::now();
            if started >= plan.end {
                break 'connect;
            }
            let i = plan.next.fetch_add(1, Ordering::Relaxed);
            let Some(p) = plan.prepared.get(i) else {
                plan.exhausted.store(true, Ordering::Relaxed);
                break 'connect;
            };
            plan.template.patch(&mut body, i, &p.after);
            let request = Request::builder()
                .method(Method::POST)
                .uri(plan.path.as_str())
                .header(HOST, plan.host.clone())
                .header(USER_AGENT, "GitHub-Hookshot/edge-bench")
                .header(CONTENT_TYPE, "application/json")
                .header("x-github-event", "push")
                .header("x-github-delivery", p.delivery.clone())
                .header("x-hub-signature-256", p.signature.clone())
                .body(Full::new(Bytes::copy_from_slice(&body)))
                .expect("a valid request");
            let exchange = async {
                let response = sender.send_request(request).await.ok()?;
                let status = response.status().as_u16();
                response.into_body().collect().await.ok()?;
                Some(status)
            };
            // GitHub gives up on a delivery after 10 s; so does this client.
            let answered = tokio::time::timeout(ANSWER_TIMEOUT, exchange)
                .await
                .ok()
                .flatten();
            let Some(status) = answered else {
                stats.transport_errors += 1;
                driver.abort();
                continue 'connect;
            };
            let done = Instant::now();
            *stats.statuses.entry(status).or_default() += 1;
            if status == 202 {
                stats.accepted.push(i);
            }
            if started >= plan.measure_from && done <= plan.end {
                stats.window.push(done - started);
            }
        }
    }
    stats
}
