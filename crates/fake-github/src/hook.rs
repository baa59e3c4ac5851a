//! The App's own webhook, as GitHub keeps it: its configuration
//! (`GET /app/hook/config`), the log of recent deliveries
//! (`GET /app/hook/deliveries`, cursor pages newest first with a `Link`
//! header) and redelivery requests (`POST /app/hook/deliveries/{id}/attempts`).
//! All of them, and `GET /app`, take only the App JWT, as on GitHub.
//!
//! Tests set the configuration and add deliveries; a redelivery request is
//! recorded (the fake does not send anything) so tests can count them.

use axum::response::Response;
use serde_json::{json, Value};

use crate::server::{error, json, not_found, set};
use crate::Shared;

/// The App's webhook configuration, as tests set it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookConfig {
    /// The webhook URL.
    pub url: String,
    /// `json` or `form`.
    pub content_type: String,
    /// `"0"` (verify TLS) or `"1"` (do not).
    pub insecure_ssl: String,
    /// Whether a secret is set; GitHub never returns it, only `********`.
    pub secret_set: bool,
}

impl Default for HookConfig {
    fn default() -> Self {
        Self {
            url: "https://connectord.example.com/v1/webhooks/connectors/github".into(),
            content_type: "json".into(),
            insecure_ssl: "0".into(),
            secret_set: true,
        }
    }
}

/// One entry of the App's delivery log. GitHub lists each attempt (the
/// first one and every redelivery) as its own entry with the same `guid`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookDelivery {
    /// GitHub's id of this attempt (what `/attempts` takes).
    pub id: i64,
    /// The `X-GitHub-Delivery` header it carried.
    pub guid: String,
    /// Unix seconds.
    pub delivered_at: i64,
    pub redelivery: bool,
    /// The HTTP status the receiver answered (0: no answer at all).
    pub status_code: u16,
    pub event: String,
    pub action: Option<String>,
    pub installation_id: Option<i64>,
    pub repository_id: Option<i64>,
}

impl HookDelivery {
    /// A first attempt of `guid` answered `status_code`, `age_secs` ago.
    pub fn new(id: i64, guid: &str, status_code: u16, age_secs: i64) -> Self {
        Self {
            id,
            guid: guid.to_string(),
            delivered_at: crate::now() - age_secs,
            redelivery: false,
            status_code,
            event: "push".into(),
            action: None,
            installation_id: None,
            repository_id: None,
        }
    }

    /// The same entry, marked as a redelivery.
    pub fn redelivered(mut self) -> Self {
        self.redelivery = true;
        self
    }

    fn to_json(&self) -> Value {
        let status = match self.status_code {
            200..=299 => "OK".to_string(),
            0 => "failed to connect".to_string(),
            code => format!("Invalid HTTP Response: {code}"),
        };
        let delivered_at = chrono::DateTime::from_timestamp(self.delivered_at, 0)
            .unwrap_or_default()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        json!({
            "id": self.id,
            "guid": self.guid,
            "delivered_at": delivered_at,
            "redelivery": self.redelivery,
            "duration": 0.27,
            "status": status,
            "status_code": self.status_code,
            "event": self.event,
            "action": self.action,
            "installation_id": self.installation_id,
            "repository_id": self.repository_id,
            "throttled_at": null,
        })
    }
}

#[derive(Default)]
pub(crate) struct HookState {
    pub config: HookConfig,
    pub deliveries: Vec<HookDelivery>,
    /// Delivery ids redelivery was asked for, in order.
    pub attempts: Vec<i64>,
}

/// The `/app…` routes this module serves.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AppRoute {
    App,
    Config,
    Deliveries,
    Attempts(i64),
}

impl AppRoute {
    /// `segs` are the path's segments after `app`.
    pub fn parse(get: bool, post: bool, segs: &[&str]) -> Option<AppRoute> {
        match segs {
            [] if get => Some(AppRoute::App),
            ["hook", "config"] if get => Some(AppRoute::Config),
            ["hook", "deliveries"] if get => Some(AppRoute::Deliveries),
            // An id that is not a number is a delivery GitHub has not got.
            ["hook", "deliveries", id, "attempts"] if post => {
                Some(AppRoute::Attempts(id.parse().unwrap_or(-1)))
            }
            _ => None,
        }
    }
}

pub(crate) fn handle(sh: &Shared, route: AppRoute, query: &str) -> Response {
    match route {
        AppRoute::App => json(
            200,
            json!({
                "id": sh.app_id,
                "slug": "connectord-test",
                "name": "connectord test",
                "owner": {"login": "octo-org"},
                "events": ["push", "installation", "installation_repositories", "repository"],
            }),
        ),
        AppRoute::Config => {
            let c = sh.lock().hook.config.clone();
            let mut body = json!({
                "content_type": c.content_type,
                "insecure_ssl": c.insecure_ssl,
                "url": c.url,
            });
            if c.secret_set {
                body["secret"] = json!("********");
            }
            json(200, body)
        }
        AppRoute::Deliveries => deliveries(sh, query),
        AppRoute::Attempts(id) => {
            let mut st = sh.lock();
            if !st.hook.deliveries.iter().any(|d| d.id == id) {
                return not_found();
            }
            st.hook.attempts.push(id);
            json(202, json!({}))
        }
    }
}

/// Newest first (highest id first); the cursor is the id to continue from.
fn deliveries(sh: &Shared, query: &str) -> Response {
    let mut per_page = 30usize;
    let mut cursor: Option<i64> = None;
    for (k, v) in query.split('&').filter_map(|kv| kv.split_once('=')) {
        match k {
            "per_page" => match v.parse::<usize>() {
                Ok(n) if (1..=100).contains(&n) => per_page = n,
                _ => return error(422, "per_page must be a number from 1 to 100"),
            },
            "cursor" => match v.strip_prefix("v1_").and_then(|c| c.parse().ok()) {
                Some(c) => cursor = Some(c),
                None => return error(400, "Invalid cursor"),
            },
            _ => {}
        }
    }
    let mut items: Vec<HookDelivery> = sh
        .lock()
        .hook
        .deliveries
        .iter()
        .filter(|d| cursor.is_none_or(|c| d.id <= c))
        .cloned()
        .collect();
    items.sort_by_key(|d| std::cmp::Reverse(d.id));
    let next = items.get(per_page).map(|d| d.id);
    items.truncate(per_page);
    let mut resp = json(
        200,
        Value::Array(items.iter().map(HookDelivery::to_json).collect()),
    );
    if let Some(next) = next {
        let link = format!(
            "<{}/app/hook/deliveries?per_page={per_page}&cursor=v1_{next}>; rel=\"next\"",
            sh.base_url
        );
        set(resp.headers_mut(), "link", link);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(AppRoute::parse(true, false, &[]), Some(AppRoute::App));
        assert_eq!(
            AppRoute::parse(true, false, &["hook", "config"]),
            Some(AppRoute::Config)
        );
        assert_eq!(
            AppRoute::parse(false, true, &["hook", "deliveries", "12", "attempts"]),
            Some(AppRoute::Attempts(12))
        );
        assert_eq!(
            AppRoute::parse(true, false, &["hook", "deliveries", "12", "attempts"]),
            None
        );
    }
}
