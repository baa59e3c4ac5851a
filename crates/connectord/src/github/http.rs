//! The one HTTP client set-up for every call to GitHub: its version header,
//! the User-Agent GitHub asks for, and the timeouts that bound a stalled or
//! trickling server.

use super::client::API_VERSION;
use std::time::Duration;

const USER_AGENT: &str = concat!("connectord/", env!("CARGO_PKG_VERSION"));

/// How long GitHub may take. Settings (`--github-read-timeout`,
/// `--github-request-timeout`), so a test of a slow GitHub need not wait
/// a minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To open the connection (TCP and TLS).
    pub connect: Duration,
    /// A stall, not a length: no read may wait longer than this for the
    /// next bytes (the response headers included). The only bound on an
    /// archive, which streams for minutes on a large repository.
    pub read: Duration,
    /// A whole answer, for everything but an archive: those are small, and
    /// one that takes longer is a trickling server.
    pub request: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(10),
            read: Duration::from_secs(60),
            request: Duration::from_secs(120),
        }
    }
}

/// A client with GitHub's headers and `t`'s connect and read timeouts; the
/// whole-request bound is per call (see [`Timeouts::request`]).
pub fn client(t: &Timeouts) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        "x-github-api-version",
        reqwest::header::HeaderValue::from_static(API_VERSION),
    );
    Ok(reqwest::Client::builder()
        .user_agent(USER_AGENT)
        .default_headers(headers)
        .connect_timeout(t.connect)
        .read_timeout(t.read)
        .build()?)
}

/// A failed call as an operator needs it: a timeout says so (reqwest's own
/// text says only "error sending request"), anything else with its causes.
pub fn describe(e: &reqwest::Error) -> String {
    if e.is_connect() {
        // Connect errors (a connect timeout included) say so in their chain.
    } else if e.is_timeout() {
        return "timed out (GitHub left the connection silent past the read timeout, or the whole answer took longer than the request timeout)".into();
    }
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
