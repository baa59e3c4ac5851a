//! HTTP/1.1 by hand over a raw TCP socket, for clients no HTTP library would
//! be: slow heads, stalled bodies, invented methods. Plus what the tests read
//! of the server process (`/proc`) and of its `/metrics`.
//!
//! Every read is bounded: a server that never answers fails the test instead
//! of hanging it.

use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// An answer as read off the wire.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    /// The head's header lines, lowercased.
    pub headers: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn closes(&self) -> bool {
        self.headers.contains("connection: close")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub async fn connect(port: u16) -> TcpStream {
    let stream = tokio::time::timeout(
        Duration::from_secs(10),
        TcpStream::connect(("127.0.0.1", port)),
    )
    .await
    .expect("connect in time")
    .expect("connect");
    stream.set_nodelay(true).unwrap();
    stream
}

/// The head of a request, ending with the blank line.
pub fn head(method: &str, path: &str, headers: &[(&str, String)]) -> Vec<u8> {
    let mut out = format!("{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\n");
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// Reads one response (head and a `content-length` body), within `within`.
pub async fn read_response<R: AsyncRead + Unpin>(
    stream: &mut R,
    within: Duration,
) -> std::io::Result<RawResponse> {
    tokio::time::timeout(within, read_response_unbounded(stream))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"))?
}

async fn read_response_unbounded<R: AsyncRead + Unpin>(
    stream: &mut R,
) -> std::io::Result<RawResponse> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("closed before a whole head ({} bytes)", buf.len()),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .map(|v| v.trim().parse().expect("content-length"))
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(RawResponse {
        status,
        headers: head,
        body,
    })
}

/// How a connection ended, seen from the client.
#[derive(Debug, Clone, Copy)]
pub struct Closed {
    /// From the call until the end of stream (or reset).
    pub after: Duration,
    /// What the server sent before closing.
    pub bytes: usize,
}

/// Waits until the server closes the connection (end of stream or reset),
/// reading and dropping whatever it sends; `None` if still open after `within`.
pub async fn wait_closed<R: AsyncRead + Unpin>(stream: &mut R, within: Duration) -> Option<Closed> {
    let started = Instant::now();
    let mut chunk = [0u8; 4096];
    let mut bytes = 0;
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => {
                    return Closed {
                        after: started.elapsed(),
                        bytes,
                    }
                }
                Ok(n) => bytes += n,
            }
        }
    })
    .await
    .ok()
}

/// Writes `bytes`, ignoring a server that already closed.
pub async fn send(stream: &mut TcpStream, bytes: &[u8]) -> bool {
    stream.write_all(bytes).await.is_ok()
}

/// A signed webhook request: head and body in one buffer.
pub fn signed_webhook(secret: &str, event: &str, delivery: &str, body: &[u8]) -> Vec<u8> {
    let mut out = head(
        "POST",
        "/v1/webhooks/connectors/github",
        &[
            ("content-type", "application/json".into()),
            ("content-length", body.len().to_string()),
            ("x-github-event", event.into()),
            ("x-github-delivery", delivery.into()),
            (
                "x-hub-signature-256",
                connectord::ingress::signature::sign(secret.as_bytes(), body),
            ),
        ],
    );
    out.extend_from_slice(body);
    out
}

/// The head of a webhook POST declaring `length` body bytes, signed with a
/// secret the server does not have.
pub fn unsigned_webhook_head(length: u64) -> Vec<u8> {
    head(
        "POST",
        "/v1/webhooks/connectors/github",
        &[
            ("content-type", "application/json".into()),
            ("content-length", length.to_string()),
            ("x-github-event", "push".into()),
            ("x-github-delivery", "hostile".into()),
            ("x-hub-signature-256", format!("sha256={}", "0".repeat(64))),
        ],
    )
}

/// Resident memory of a process, from `/proc/PID/status`.
pub fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS")
}

/// Open file descriptors of a process.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read fds")
        .count()
}

/// The value of the first sample of `name` whose labels include all of `labels`.
pub fn metric(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter(|l| labels.iter().all(|x| l.contains(x)))
        .find_map(|l| l.rsplit(' ').next().and_then(|v| v.parse().ok()))
}
