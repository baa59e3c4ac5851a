//! The edge benchmark's limit: the least a correct receiver does. axum (as
//! connectord uses it), the body read whole (capped at 25 MiB, as connectord
//! caps it), `X-Hub-Signature-256` checked over the raw bytes with
//! connectord's own verifier, then 202 or 401. Nothing parsed, nothing stored.
//!
//! `bare-hmac --listen 127.0.0.1:PORT` with the secret in `EDGE_WEBHOOK_SECRET`.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use clap::Parser;
use connectord::ingress::signature::WebhookSecrets;
use std::sync::Arc;

#[derive(Parser)]
#[command(about = "A webhook receiver that only verifies the HMAC and answers 202")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:8090")]
    listen: String,
    /// The webhook secret.
    #[arg(long, env = "EDGE_WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,
}

async fn webhook(
    State(secrets): State<Arc<WebhookSecrets>>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let signature = headers.get("x-hub-signature-256").map(|v| v.as_bytes());
    match secrets.verify(signature, &body) {
        Ok(_) => StatusCode::ACCEPTED,
        Err(_) => StatusCode::UNAUTHORIZED,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secrets = Arc::new(WebhookSecrets::new(args.secret.into_bytes(), None));
    let app = Router::new()
        .route("/v1/webhooks/connectors/github", post(webhook))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(25 * 1024 * 1024))
        .with_state(secrets);
    let listener = tokio::net::TcpListener::bind(&args.listen).await?;
    println!("bare-hmac listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
