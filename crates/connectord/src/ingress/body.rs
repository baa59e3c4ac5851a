//! Receiving a webhook body: at most 25 MiB, within the body timeout, into
//! memory charged to the [`BodyBudget`], fed to the signature check as it
//! arrives.
//!
//! A declared `Content-Length` over the cap answers 413 before any body byte
//! is read. The buffer's first capacity takes the declared length only up to
//! [`INITIAL_CAPACITY_MAX`]: a size from outside never sizes an allocation.
//! Every early answer closes the connection; the rest of the body is read and
//! dropped for a moment first, so the client sees the answer instead of a
//! reset (nginx's lingering close).

use super::handler::MAX_BODY_BYTES;
use super::signature::Verifier;
use crate::edge::budget::{BodyBudget, Charge};
use axum::body::{Body, BodyDataStream, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use std::time::Duration;

/// The largest first buffer a declared length may ask for.
pub const INITIAL_CAPACITY_MAX: usize = 64 * 1024;
/// How long the rest of a refused body is read and dropped.
const LINGER: Duration = Duration::from_secs(2);

/// What bounds a webhook body in flight.
#[derive(Clone, Debug)]
pub struct WebhookLimits {
    pub budget: BodyBudget,
    pub read_timeout: Duration,
}

/// A whole body, with its HMACs and its share of the budget (held until the
/// request ends).
pub struct ReceivedBody {
    pub bytes: Bytes,
    pub verifier: Verifier,
    pub charge: Charge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyError {
    /// Over 25 MiB, declared or sent.
    TooLarge,
    /// The budget cannot hold the next chunk.
    Busy,
    /// Not all there within the body timeout.
    Timeout,
    /// The client broke off.
    Incomplete,
}

impl BodyError {
    fn reason(self) -> &'static str {
        match self {
            BodyError::TooLarge => "too_large",
            BodyError::Busy => "busy",
            BodyError::Timeout => "body_timeout",
            BodyError::Incomplete => "incomplete",
        }
    }
}

impl IntoResponse for BodyError {
    fn into_response(self) -> Response {
        metrics::counter!("connectord_webhook_rejected_total", "reason" => self.reason())
            .increment(1);
        let (status, text) = match self {
            BodyError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload too large (limit 25 MiB)",
            ),
            BodyError::Busy => (StatusCode::SERVICE_UNAVAILABLE, "server busy; retry"),
            BodyError::Timeout => (
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            ),
            BodyError::Incomplete => (StatusCode::BAD_REQUEST, "incomplete request body"),
        };
        let close = [(header::CONNECTION, HeaderValue::from_static("close"))];
        (status, close, text).into_response()
    }
}

/// Reads `body` whole, or says why not.
pub async fn receive(
    body: Body,
    headers: &HeaderMap,
    limits: &WebhookLimits,
    mut verifier: Verifier,
) -> Result<ReceivedBody, BodyError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let mut stream = body.into_data_stream();
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(linger(BodyError::TooLarge, stream));
    }
    let first_capacity = declared.map_or(0, |n| n.min(INITIAL_CAPACITY_MAX as u64) as usize);
    let deadline = tokio::time::sleep(limits.read_timeout);
    tokio::pin!(deadline);
    let mut charge = limits.budget.charge();
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let next = tokio::select! {
            biased;
            next = stream.next() => next,
            () = &mut deadline => return Err(linger(BodyError::Timeout, stream)),
        };
        let chunk = match next {
            None => break,
            Some(Ok(chunk)) => chunk,
            Some(Err(_)) => return Err(BodyError::Incomplete),
        };
        let needed = buf.len() + chunk.len();
        if needed > MAX_BODY_BYTES {
            return Err(linger(BodyError::TooLarge, stream));
        }
        if needed > buf.capacity() {
            // Doubling keeps copies few; what is charged is what is allocated.
            let grown = if buf.capacity() == 0 {
                first_capacity
            } else {
                buf.capacity().saturating_mul(2)
            }
            .clamp(needed, MAX_BODY_BYTES);
            if !charge.grow_to(grown) {
                return Err(linger(BodyError::Busy, stream));
            }
            buf.reserve_exact(grown - buf.len());
        }
        verifier.update(&chunk);
        buf.extend_from_slice(&chunk);
    }
    Ok(ReceivedBody {
        bytes: Bytes::from(buf),
        verifier,
        charge,
    })
}

/// Reads and drops what follows a refused body for up to [`LINGER`] (and at
/// most another 25 MiB), holding no memory, so the answer reaches a client
/// that is still sending; then the connection closes.
fn linger(error: BodyError, mut rest: BodyDataStream) -> BodyError {
    tokio::spawn(async move {
        let drain = async {
            let mut dropped = 0usize;
            while let Some(Ok(chunk)) = rest.next().await {
                dropped += chunk.len();
                if dropped > MAX_BODY_BYTES {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    });
    error
}
