//! The REST client: GitHub's headers on every request, a rate budget per
//! installation read from every response's `x-ratelimit-*`, and one place
//! that turns an answer into "retry", "wait", "give up" or "not found".
//!
//! A rate-limit 403 is never taken for lost access: it is `RateLimited`.

use super::auth::AppAuth;
use super::http::{self, Timeouts};
use reqwest::{Response, StatusCode};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

pub const API_VERSION: &str = "2022-11-28";

#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Permanent(String),
    #[error("{0}")]
    NotFound(String),
    /// A 403 that is not a rate limit: the installation is suspended or
    /// lacks a permission. Never about one file, so a sync stops at the first.
    #[error("{0}")]
    Forbidden(String),
    /// 401 even with a fresh token (or from the token endpoint itself).
    #[error("{0}")]
    Unauthorized(String),
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
    },
}

/// What we know of an installation's primary rate limit.
#[derive(Debug, Clone, Copy, Default)]
struct Budget {
    limit: i64,
    remaining: i64,
    reset: i64,
}

/// Below this share of the hourly limit, requests are paced out over the
/// time left until the reset instead of running the budget dry.
const LOW_WATER: f64 = 0.05;

pub struct GithubClient {
    http: reqwest::Client,
    api: String,
    auth: AppAuth,
    budgets: Mutex<HashMap<i64, Budget>>,
    /// Smoothed time to the response headers of a call (the fetch plan's
    /// per-call cost).
    latency: Mutex<Option<Duration>>,
    /// The whole-answer bound for everything but archives.
    request_timeout: Duration,
}

impl GithubClient {
    pub fn new(api_url: &str, auth: AppAuth, timeouts: &Timeouts) -> anyhow::Result<Self> {
        Ok(Self {
            http: http::client(timeouts)?,
            api: api_url.trim_end_matches('/').to_owned(),
            auth,
            budgets: Mutex::new(HashMap::new()),
            latency: Mutex::new(None),
            request_timeout: timeouts.request,
        })
    }

    /// GET `path` (relative to the API root) as the installation. A 401 on a
    /// cached token refreshes it once. Non-2xx answers come back classified.
    pub async fn get(
        &self,
        installation_id: i64,
        path: &str,
        accept: &str,
    ) -> Result<Response, ApiError> {
        // A 304 is only taken as such for a conditional request.
        self.get_if_none_match(installation_id, path, accept, None)
            .await?
            .ok_or_else(|| ApiError::Transient(format!("GET {path}: unexpected 304")))
    }

    /// As [`get`](Self::get), with `If-None-Match: etag`: `None` when GitHub
    /// answers 304 Not Modified (which costs no rate limit).
    pub async fn get_if_none_match(
        &self,
        installation_id: i64,
        path: &str,
        accept: &str,
        etag: Option<&str>,
    ) -> Result<Option<Response>, ApiError> {
        self.pace(installation_id).await?;
        let url = format!("{}{path}", self.api);
        let mut refreshed = false;
        let mut lag_waits = 0u64;
        loop {
            let token = self
                .auth
                .token(&self.http, &self.api, installation_id, self.request_timeout)
                .await?;
            let sent = std::time::Instant::now();
            let mut req = self.http.get(&url);
            if !path.contains("/tarball/") {
                // Everything but an archive is small: a whole answer that
                // takes longer than this is a stalled or trickling server.
                req = req.timeout(self.request_timeout);
            }
            if let Some(etag) = etag {
                req = req.header("if-none-match", etag);
            }
            let res = req
                .header("accept", accept)
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
                .map_err(|e| ApiError::Transient(format!("GET {path}: {}", http::describe(&e))))?;
            // Only small answers say what one call costs: a tree of 50,000
            // entries takes the server seconds before its headers, and
            // counting it made blob calls look 10x dearer than they are.
            if path.contains("/git/blobs/") || path.contains("/git/ref/") {
                self.record_latency(sent.elapsed());
            }
            self.record_budget(installation_id, &res);
            metrics::counter!("connectord_github_requests_total", "status" => res.status().as_u16().to_string())
                .increment(1);
            if res.status().is_success() {
                return Ok(Some(res));
            }
            if res.status() == StatusCode::NOT_MODIFIED && etag.is_some() {
                return Ok(None);
            }
            if res.status() == StatusCode::UNAUTHORIZED && !refreshed {
                self.auth.invalidate(installation_id, &token).await;
                refreshed = true;
                continue;
            }
            let err = classify(res, &format!("GET {path}")).await;
            // GitHub can refuse a token for a few seconds after minting it
            // (401 or 403) while it spreads: wait that out (1 s, 2 s) before
            // taking the refusal as lost access, which stops the sync.
            if matches!(err, ApiError::Unauthorized(_) | ApiError::Forbidden(_))
                && lag_waits < 2
                && self.auth.is_new(installation_id, &token).await
            {
                lag_waits += 1;
                tokio::time::sleep(Duration::from_secs(lag_waits)).await;
                continue;
            }
            return Err(err);
        }
    }

    /// Calls left in the installation's hourly budget, as the last answer said.
    pub fn remaining_budget(&self, installation_id: i64) -> Option<i64> {
        self.budgets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&installation_id)
            .map(|b| b.remaining)
    }

    /// The smoothed time of one call (headers received), once one was made.
    pub fn latency(&self) -> Option<Duration> {
        *self.latency.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Exponentially weighted (1/8 per call): one slow answer moves it
    /// little, a slower network soon shows.
    fn record_latency(&self, took: Duration) {
        let mut l = self.latency.lock().unwrap_or_else(|p| p.into_inner());
        *l = Some(match *l {
            None => took,
            Some(prev) => (prev * 7 + took) / 8,
        });
    }

    fn record_budget(&self, installation_id: i64, res: &Response) {
        let h = |name: &str| {
            res.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<i64>().ok())
        };
        if let (Some(limit), Some(remaining), Some(reset)) = (
            h("x-ratelimit-limit"),
            h("x-ratelimit-remaining"),
            h("x-ratelimit-reset"),
        ) {
            let mut budgets = self.budgets.lock().unwrap_or_else(|p| p.into_inner());
            budgets.insert(
                installation_id,
                Budget {
                    limit,
                    remaining,
                    reset,
                },
            );
        }
    }

    /// Slows down before the budget runs out: with none left, the job waits
    /// for the reset (without using an attempt); when low, requests are
    /// spread over the time left.
    async fn pace(&self, installation_id: i64) -> Result<(), ApiError> {
        let budget = self
            .budgets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&installation_id)
            .copied();
        let Some(b) = budget else { return Ok(()) };
        let now = chrono::Utc::now().timestamp();
        let until_reset = (b.reset - now).max(0);
        if b.remaining <= 0 && until_reset > 0 {
            return Err(ApiError::RateLimited {
                message: format!(
                    "installation {installation_id} has used its rate limit until the reset"
                ),
                retry_after: Duration::from_secs(until_reset as u64 + 1),
            });
        }
        if b.limit > 0 && (b.remaining as f64) < b.limit as f64 * LOW_WATER && until_reset > 0 {
            let gap = Duration::from_millis((until_reset * 1000 / (b.remaining + 1)) as u64)
                .min(Duration::from_secs(5));
            metrics::counter!("connectord_github_paced_requests_total").increment(1);
            tokio::time::sleep(gap).await;
        }
        Ok(())
    }
}

fn header_i64(res: &Response, name: &str) -> Option<i64> {
    res.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Classifies a non-2xx answer. Order matters: rate limits are recognised
/// before 403 can mean "forbidden".
pub async fn classify(res: Response, what: &str) -> ApiError {
    let status = res.status();
    let retry_after = header_i64(&res, "retry-after");
    let remaining = header_i64(&res, "x-ratelimit-remaining");
    let reset = header_i64(&res, "x-ratelimit-reset");
    let body = error_body(res).await;
    let message: String = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(200).collect());
    let msg = format!("{what}: GitHub answered {status}: {message}");
    let limited = matches!(
        status,
        StatusCode::FORBIDDEN | StatusCode::TOO_MANY_REQUESTS
    );
    if limited {
        if let Some(secs) = retry_after {
            return ApiError::RateLimited {
                message: msg,
                retry_after: Duration::from_secs(secs.max(1) as u64),
            };
        }
        if remaining == Some(0) {
            let wait = reset
                .map(|r| r - chrono::Utc::now().timestamp())
                .unwrap_or(60)
                .max(1);
            return ApiError::RateLimited {
                message: msg,
                retry_after: Duration::from_secs(wait as u64),
            };
        }
        let lower = message.to_ascii_lowercase();
        // GitHub's older wording for a secondary limit: "abuse detection".
        if status == StatusCode::TOO_MANY_REQUESTS
            || lower.contains("rate limit")
            || lower.contains("abuse")
        {
            // GitHub: with no header to go by, wait at least a minute.
            return ApiError::RateLimited {
                message: msg,
                retry_after: Duration::from_secs(60),
            };
        }
    }
    match status {
        StatusCode::NOT_FOUND => ApiError::NotFound(msg),
        StatusCode::UNAUTHORIZED => ApiError::Unauthorized(msg),
        StatusCode::FORBIDDEN => ApiError::Forbidden(msg),
        s if s.is_server_error() || s == StatusCode::REQUEST_TIMEOUT => ApiError::Transient(msg),
        _ => ApiError::Permanent(msg),
    }
}

/// An error answer is read only for its message: at most [`ERROR_BODY`]
/// bytes, however long the server goes on.
async fn error_body(mut res: Response) -> String {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = res.chunk().await {
        let room = ERROR_BODY.saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= ERROR_BODY {
            break;
        }
    }
    String::from_utf8_lossy(&body).into_owned()
}

const ERROR_BODY: usize = 64 << 10;

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, body: &str) -> Response {
        Response::from(
            axum::http::Response::builder()
                .status(status)
                .body(body.to_owned())
                .unwrap(),
        )
    }

    #[tokio::test]
    async fn a_403_is_a_rate_limit_only_when_it_says_so_and_forbidden_otherwise() {
        for body in [
            r#"{"message":"You have exceeded a secondary rate limit."}"#,
            r#"{"message":"You have triggered an abuse detection mechanism."}"#,
        ] {
            let e = classify(answer(403, body), "GET /x").await;
            assert!(matches!(e, ApiError::RateLimited { .. }), "{body}: {e:?}");
        }
        let e = classify(
            answer(403, r#"{"message":"This installation has been suspended"}"#),
            "GET /x",
        )
        .await;
        assert!(matches!(e, ApiError::Forbidden(_)), "{e:?}");
        assert!(e.to_string().contains("suspended"), "{e}");
    }

    #[tokio::test]
    async fn an_error_body_is_read_only_up_to_its_cap() {
        let long = "x".repeat(ERROR_BODY * 4);
        assert_eq!(error_body(answer(500, &long)).await.len(), ERROR_BODY);
    }
}
