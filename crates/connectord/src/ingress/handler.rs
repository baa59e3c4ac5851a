//! `POST /v1/webhooks/connectors/github`: body cap, budget and timeout
//! (`super::body`), signature, then (only then) parsing, dispatch and one
//! durable write. Errors answer plain text,
//! as GitHub shows it in the delivery log.

use super::dispatch::{dispatch, fields_for};
use super::envelope::{decode_payload, BodyEncoding, GithubWebhookEnvelope};
use super::signature::SecretSlot;
use crate::domain::{DeliveryId, EventName};
use crate::startup::AppState;
use crate::store::models::{IngestOutcome, NewDelivery, Outcome};
use crate::store::StoreError;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};

/// GitHub's own cap on webhook payloads.
pub const MAX_BODY_BYTES: usize = 25 * 1024 * 1024;

pub const WEBHOOK_PATH: &str = "/v1/webhooks/connectors/github";

pub fn router() -> Router<AppState> {
    // The body is read by `super::body`, which enforces the cap itself.
    Router::new().route(WEBHOOK_PATH, post(github_webhook_ingress))
}

/// Why processing a (verified) body stopped short of the store.
#[derive(Debug)]
pub enum IngressError {
    BadRequest(String),
    /// The store could not commit: nothing was recorded, a redelivery will do.
    Unavailable(String),
    /// A bug or a broken invariant (a constraint violation, say): logged with
    /// its cause and answered 500 without it.
    Internal(String),
}

impl From<StoreError> for IngressError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) | StoreError::Contention(_) => {
                IngressError::Unavailable(e.to_string())
            }
            other => IngressError::Internal(format!("{other:#}")),
        }
    }
}

impl IntoResponse for IngressError {
    fn into_response(self) -> Response {
        match self {
            IngressError::BadRequest(m) => (StatusCode::BAD_REQUEST, m).into_response(),
            IngressError::Unavailable(m) => {
                tracing::error!(error = %m, "delivery not recorded: store unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store unavailable; the delivery was not recorded",
                )
                    .into_response()
            }
            IngressError::Internal(m) => {
                tracing::error!(error = %m, "delivery not recorded: internal error");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal error; the delivery was not recorded",
                )
                    .into_response()
            }
        }
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// A header dispatch depends on: absent, or present but not plain visible
/// ASCII (which no GitHub header is) are different mistakes, told apart.
#[derive(Debug, Clone, Copy)]
pub enum HeaderText<'a> {
    Missing,
    NotText,
    Text(&'a str),
}

impl<'a> HeaderText<'a> {
    pub fn of(headers: &'a HeaderMap, name: &str) -> Self {
        match headers.get(name).map(|v| v.to_str()) {
            None => HeaderText::Missing,
            Some(Err(_)) => HeaderText::NotText,
            Some(Ok(v)) => HeaderText::Text(v),
        }
    }

    fn require(self, name: &str) -> Result<&'a str, IngressError> {
        match self {
            HeaderText::Text(v) => Ok(v),
            HeaderText::Missing => Err(IngressError::BadRequest(format!("missing {name} header"))),
            HeaderText::NotText => Err(IngressError::BadRequest(format!(
                "the {name} header is not plain ASCII text"
            ))),
        }
    }
}

impl<'a> From<Option<&'a str>> for HeaderText<'a> {
    fn from(v: Option<&'a str>) -> Self {
        v.map_or(HeaderText::Missing, HeaderText::Text)
    }
}

/// A delivery as received, after its signature matched (or, for a replay,
/// as recorded).
pub struct VerifiedDelivery<'a> {
    pub event: HeaderText<'a>,
    pub delivery_id: HeaderText<'a>,
    /// The secret that verified it (`None` for a replay of a recorded body).
    pub secret: Option<SecretSlot>,
    pub content_type: Option<&'a str>,
    pub hook_id: Option<String>,
    pub hook_installation_target_id: Option<String>,
    pub body: Bytes,
    pub replay_of: Option<String>,
}

pub async fn github_webhook_ingress(
    State(app): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let received =
        match super::body::receive(body, &headers, &app.webhook, app.secrets.verifier()).await {
            Ok(received) => received,
            Err(e) => return e.into_response(),
        };
    // The body's share of the memory budget is held until the request ends.
    let _charge = received.charge;
    let body = received.bytes;
    let signature = headers.get("x-hub-signature-256").map(|v| v.as_bytes());
    let secret = match received.verifier.finish(signature) {
        Ok(i) => SecretSlot::from_index(i),
        Err(e) => {
            metrics::counter!("connectord_webhook_signature_failures_total", "reason" => e.message())
                .increment(1);
            log_rejection(e.message(), header(&headers, "x-github-delivery"));
            return (StatusCode::UNAUTHORIZED, e.message()).into_response();
        }
    };
    metrics::counter!("connectord_webhook_verified_total", "secret" => secret.as_str())
        .increment(1);
    let delivery = VerifiedDelivery {
        event: HeaderText::of(&headers, "x-github-event"),
        delivery_id: HeaderText::of(&headers, "x-github-delivery"),
        secret: Some(secret),
        content_type: header(&headers, "content-type"),
        hook_id: header(&headers, "x-github-hook-id").map(str::to_owned),
        hook_installation_target_id: header(&headers, "x-github-hook-installation-target-id")
            .map(str::to_owned),
        body,
        replay_of: None,
    };
    match process(&app, delivery).await {
        Ok(outcome) => respond(outcome),
        Err(e) => e.into_response(),
    }
}

/// Anyone can send wrongly signed requests, as fast as they like: a log
/// line for each would let them fill the disk (tens of thousands of lines a
/// second, measured). So at most one warning per [`REJECTION_LOG_EVERY`],
/// saying how many were rejected since the last one; the counter
/// `connectord_webhook_signature_failures_total` counts every one, and each
/// is logged at debug.
fn log_rejection(reason: &'static str, delivery: Option<&str>) {
    use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
    static LAST_WARN_MS: AtomicI64 = AtomicI64::new(i64::MIN);
    static SINCE: AtomicU64 = AtomicU64::new(0);
    tracing::debug!(reason, delivery = ?delivery, "rejected delivery");
    let rejected = SINCE.fetch_add(1, Ordering::Relaxed) + 1;
    let now = crate::store::models::now_ms();
    let last = LAST_WARN_MS.load(Ordering::Relaxed);
    let due =
        last == i64::MIN || now.saturating_sub(last) >= REJECTION_LOG_EVERY.as_millis() as i64;
    if due
        && LAST_WARN_MS
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        SINCE.fetch_sub(rejected, Ordering::Relaxed);
        tracing::warn!(reason, delivery = ?delivery, rejected,
            "rejected deliveries with a missing or wrong signature (this one and the others since the last such line)");
    }
}

const REJECTION_LOG_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

pub fn respond(outcome: IngestOutcome) -> Response {
    let status = if outcome.outcome == Outcome::Accepted {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    (status, Json(outcome)).into_response()
}

/// Everything after the signature check; replays enter here too.
pub async fn process(
    app: &AppState,
    d: VerifiedDelivery<'_>,
) -> Result<IngestOutcome, IngressError> {
    let event = d.event.require("X-GitHub-Event")?;
    let event = EventName::parse(event).map_err(|e| IngressError::BadRequest(e.0))?;
    let delivery_id = d.delivery_id.require("X-GitHub-Delivery")?;
    let delivery_id = DeliveryId::parse(delivery_id).map_err(|e| IngressError::BadRequest(e.0))?;
    let secret = d.secret;
    let encoding = BodyEncoding::from_content_type(d.content_type);
    let payload =
        decode_payload(&d.body, encoding, fields_for(&event)).map_err(IngressError::BadRequest)?;
    let envelope = GithubWebhookEnvelope::new(delivery_id, event, payload);
    let plan = dispatch(&envelope).map_err(|e| IngressError::BadRequest(e.0))?;
    let new = NewDelivery {
        id: envelope.delivery_id.as_str().to_owned(),
        event: envelope.event.as_str().to_owned(),
        action: envelope.action.clone(),
        installation_id: envelope.installation_id,
        repository_id: envelope.repository_id,
        repository_full_name: envelope.repository_full_name.clone(),
        git_ref: envelope.git_ref.clone(),
        head_sha: envelope.head_sha.clone(),
        hook_id: d.hook_id,
        hook_installation_target_id: d.hook_installation_target_id,
        content_type: encoding.as_str().to_owned(),
        body: d.body,
        replay_of: d.replay_of,
    };
    let outcome = app.store.ingest(new, plan).await?;
    let label = outcome.outcome.as_str();
    metrics::counter!("connectord_webhook_deliveries_total", "event" => envelope.event.as_str().to_owned(), "outcome" => label)
        .increment(1);
    // At debug, not info: every delivery is in the store with more than this
    // line holds (`connectord deliveries list`), and a line per request is a
    // real cost at thousands of deliveries a second.
    tracing::debug!(delivery = %envelope.delivery_id, event = envelope.event.as_str(), action = ?envelope.action,
        outcome = label, reason = ?outcome.reason, sync_events = outcome.sync_event_ids.len(),
        secret = secret.map(SecretSlot::as_str), "delivery recorded");
    Ok(outcome)
}
