//! The App-level endpoints, called with the App JWT (not an installation
//! token): who the App is (`GET /app`), its webhook configuration, its log
//! of recent deliveries, and asking for a redelivery. Used by the start-up
//! self-check, `connectord doctor` and the failed-delivery redelivery.
//!
//! Every answer is read within a byte cap (the buffer grows with what
//! arrives, never from a length the server states), and every failure is an
//! [`ApiError`] classified as the rest of the client does it.

use super::auth::AppAuth;
use super::blobs::read_bounded;
use super::client::{classify, ApiError};
use super::http::{self, Timeouts};
use chrono::{DateTime, Utc};
use reqwest::{Method, Response};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::time::Duration;

/// `GET /app` and the hook config are a few hundred bytes.
const SMALL_ANSWER: u64 = 256 << 10;
/// A page of at most 100 delivery summaries is tens of KiB.
const PAGE_ANSWER: u64 = 4 << 20;
/// GitHub's most per page for the delivery log.
pub const MAX_PER_PAGE: u32 = 100;

/// Who the App is, as GitHub says.
#[derive(Debug, Clone, Deserialize)]
pub struct AppInfo {
    pub id: i64,
    #[serde(default)]
    pub slug: Option<String>,
}

/// The App's webhook configuration. The secret itself is never held:
/// GitHub answers `********` when one is set, and only that fact is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    pub url: Option<String>,
    pub content_type: Option<String>,
    /// `"0"` or `"1"` (GitHub documents a string or a number; both read as text).
    pub insecure_ssl: Option<String>,
    pub secret_set: bool,
}

#[derive(Deserialize)]
struct RawHookConfig {
    url: Option<String>,
    content_type: Option<String>,
    insecure_ssl: Option<serde_json::Value>,
    secret: Option<String>,
}

/// One entry of the delivery log: one attempt (first or redelivery) of a
/// delivery `guid`.
#[derive(Debug, Clone, Deserialize)]
pub struct HookDelivery {
    pub id: i64,
    /// The `X-GitHub-Delivery` the attempt carried.
    pub guid: String,
    pub delivered_at: DateTime<Utc>,
    #[serde(default)]
    pub redelivery: bool,
    /// What the receiver answered; 0 (or absent) when nothing answered.
    #[serde(default)]
    pub status_code: i64,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub event: Option<String>,
}

impl HookDelivery {
    pub fn succeeded(&self) -> bool {
        (200..300).contains(&self.status_code)
    }
}

/// One page of the delivery log and the cursor of the next, if any.
#[derive(Debug, Clone)]
pub struct DeliveryPage {
    pub items: Vec<HookDelivery>,
    pub next_cursor: Option<String>,
}

pub struct AppClient {
    http: reqwest::Client,
    api: String,
    auth: AppAuth,
    /// Small answers only: a whole call taking longer is a stalled server.
    request_timeout: Duration,
}

impl AppClient {
    pub fn new(api_url: &str, auth: AppAuth, timeouts: &Timeouts) -> anyhow::Result<Self> {
        Ok(Self {
            http: http::client(timeouts)?,
            api: api_url.trim_end_matches('/').to_owned(),
            auth,
            request_timeout: timeouts.request,
        })
    }

    /// `GET /app`: accepted only if GitHub takes the App JWT.
    pub async fn app(&self) -> Result<AppInfo, ApiError> {
        let res = self.send(Method::GET, "/app").await?;
        parse(res, SMALL_ANSWER, "GET /app").await
    }

    pub async fn hook_config(&self) -> Result<HookConfig, ApiError> {
        let res = self.send(Method::GET, "/app/hook/config").await?;
        let raw: RawHookConfig = parse(res, SMALL_ANSWER, "GET /app/hook/config").await?;
        Ok(HookConfig {
            url: raw.url.filter(|u| !u.is_empty()),
            content_type: raw.content_type,
            insecure_ssl: raw.insecure_ssl.map(|v| match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            }),
            secret_set: raw.secret.is_some_and(|s| !s.is_empty()),
        })
    }

    /// One page of the delivery log, newest first. `cursor` comes from the
    /// previous page's `Link: rel="next"`.
    pub async fn deliveries(
        &self,
        per_page: u32,
        cursor: Option<&str>,
    ) -> Result<DeliveryPage, ApiError> {
        let per_page = per_page.clamp(1, MAX_PER_PAGE);
        let mut path = format!("/app/hook/deliveries?per_page={per_page}");
        if let Some(c) = cursor {
            path.push_str("&cursor=");
            path.extend(form_urlencoded::byte_serialize(c.as_bytes()));
        }
        let res = self.send(Method::GET, &path).await?;
        let next_cursor = res
            .headers()
            .get_all(reqwest::header::LINK)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(next_cursor);
        let items = parse(res, PAGE_ANSWER, "GET /app/hook/deliveries").await?;
        Ok(DeliveryPage { items, next_cursor })
    }

    /// Asks GitHub to deliver `delivery_id` again (202 on success).
    pub async fn redeliver(&self, delivery_id: i64) -> Result<(), SendError> {
        let path = format!("/app/hook/deliveries/{delivery_id}/attempts");
        self.send_inner(Method::POST, &path).await?;
        // The body (`{}`) says nothing more: not read.
        Ok(())
    }

    /// A token for the installation (minted with the App JWT): the
    /// installation exists and the App may act in it.
    pub async fn installation_token(&self, installation_id: i64) -> Result<(), ApiError> {
        self.auth
            .token(&self.http, &self.api, installation_id, self.request_timeout)
            .await
            .map(drop)
    }

    async fn send(&self, method: Method, path: &str) -> Result<Response, ApiError> {
        self.send_inner(method, path)
            .await
            .map_err(SendError::into_error)
    }

    /// Sends with a fresh App JWT; a non-2xx answer comes back classified.
    async fn send_inner(&self, method: Method, path: &str) -> Result<Response, SendError> {
        let jwt = self
            .auth
            .jwt(chrono::Utc::now().timestamp())
            .map_err(SendError::NotSent)?;
        let what = format!("{method} {}", path.split('?').next().unwrap_or(path));
        let res = self
            .http
            .request(method, format!("{}{path}", self.api))
            .timeout(self.request_timeout)
            .header("accept", "application/vnd.github+json")
            .bearer_auth(jwt)
            .send()
            .await
            .map_err(|e| {
                let error = ApiError::Transient(format!("{what}: {}", http::describe(&e)));
                if e.is_connect() {
                    SendError::NotSent(error)
                } else {
                    SendError::Unknown(error)
                }
            })?;
        metrics::counter!("connectord_github_requests_total", "status" => res.status().as_u16().to_string())
            .increment(1);
        if res.status().is_success() {
            return Ok(res);
        }
        Err(SendError::Answered(classify(res, &what).await))
    }
}

/// Why a request failed, as far as whether GitHub acted on it.
#[derive(Debug)]
pub enum SendError {
    /// It never left (no JWT, no connection): GitHub did nothing.
    NotSent(ApiError),
    /// GitHub answered non-2xx: it did not do it.
    Answered(ApiError),
    /// Sent, but no answer came (a timeout, a reset): it may have been done.
    Unknown(ApiError),
}

impl SendError {
    /// Whether GitHub may have acted on the request.
    pub fn may_have_happened(&self) -> bool {
        matches!(self, SendError::Unknown(_))
    }

    pub fn into_error(self) -> ApiError {
        match self {
            SendError::NotSent(e) | SendError::Answered(e) | SendError::Unknown(e) => e,
        }
    }
}

async fn parse<T: DeserializeOwned>(res: Response, cap: u64, what: &str) -> Result<T, ApiError> {
    let bytes = read_bounded(res, cap, "connectord reads from this endpoint").await?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::Permanent(format!(
            "{what}: GitHub's answer is not what it documents: {e}"
        ))
    })
}

/// The `cursor` of a `Link` header's `rel="next"` URL. Only the cursor is
/// taken: the next page is asked of our own API root, so the App JWT never
/// goes to a host a header named.
fn next_cursor(link: &str) -> Option<String> {
    link.split(',').find_map(|part| {
        let (url, params) = part.split_once(';')?;
        let is_next = params
            .split(';')
            .any(|p| p.trim().eq_ignore_ascii_case("rel=\"next\""));
        if !is_next {
            return None;
        }
        let url = url.trim().strip_prefix('<')?.strip_suffix('>')?;
        let query = url.split_once('?')?.1;
        form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == "cursor")
            .map(|(_, v)| v.into_owned())
            .filter(|c| !c.is_empty())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_cursor_comes_from_rel_next_only() {
        let link = "<https://api.github.com/app/hook/deliveries?per_page=2&cursor=v1_1>; rel=\"prev\", \
                    <https://api.github.com/app/hook/deliveries?per_page=2&cursor=v1_9%3D>; rel=\"next\"";
        assert_eq!(next_cursor(link).as_deref(), Some("v1_9="));
        assert_eq!(next_cursor("<https://x/?cursor=a>; rel=\"prev\""), None);
        assert_eq!(next_cursor("garbage"), None);
        assert_eq!(next_cursor("<https://x/?per_page=1>; rel=\"next\""), None);
    }

    #[test]
    fn success_is_2xx_only() {
        let d = |code| HookDelivery {
            id: 1,
            guid: "g".into(),
            delivered_at: Utc::now(),
            redelivery: false,
            status_code: code,
            status: None,
            event: None,
        };
        assert!(d(200).succeeded() && d(202).succeeded());
        assert!(!d(0).succeeded() && !d(503).succeeded() && !d(302).succeeded());
    }
}
