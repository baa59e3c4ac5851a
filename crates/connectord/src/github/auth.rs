//! App JWTs and installation access tokens.
//!
//! Tokens are cached per installation and refreshed five minutes before they
//! expire; minting is single-flight per installation (GitHub limits token
//! requests per hour). Tokens are opaque strings of any length.

use super::client::{classify, ApiError};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

#[derive(Serialize)]
struct Claims {
    iat: i64,
    exp: i64,
    iss: String,
}

#[derive(Deserialize)]
struct TokenResponse {
    token: String,
    expires_at: chrono::DateTime<chrono::Utc>,
}

#[derive(Clone)]
struct CachedToken {
    token: Arc<str>,
    expires_at: i64,
    minted_at: std::time::Instant,
}

/// How long GitHub may still refuse a token it has just minted, while the
/// token spreads through its servers (Octokit waits out the same lag).
pub const NEW_TOKEN_LAG: std::time::Duration = std::time::Duration::from_secs(5);

/// The most an installation-token answer may be (a few hundred bytes).
const MAX_TOKEN_ANSWER: u64 = 64 << 10;

pub struct AppAuth {
    app_id: i64,
    key: EncodingKey,
    tokens: Mutex<HashMap<i64, Arc<tokio::sync::Mutex<Option<CachedToken>>>>>,
}

/// Refresh this long before GitHub's expiry, so a token never dies mid-sync.
const REFRESH_MARGIN_SECS: i64 = 300;

impl AppAuth {
    pub fn new(app_id: i64, private_key_pem: &str) -> anyhow::Result<Self> {
        let key = EncodingKey::from_rsa_pem(private_key_pem.as_bytes()).map_err(|e| {
            anyhow::anyhow!("the GitHub App private key is not an RSA PEM key: {e}")
        })?;
        Ok(Self {
            app_id,
            key,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// An App JWT: `iat` 60 s in the past against clock drift, `exp` 9 minutes
    /// after now (GitHub refuses more than 10 after `iat`), `iss` the App id
    /// (the form every GitHub Enterprise Server version accepts).
    pub fn jwt(&self, now: i64) -> Result<String, ApiError> {
        let claims = Claims {
            iat: now - 60,
            exp: now + 540,
            iss: self.app_id.to_string(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), &claims, &self.key)
            .map_err(|e| ApiError::Permanent(format!("cannot sign the App JWT: {e}")))
    }

    fn slot(&self, installation_id: i64) -> Arc<tokio::sync::Mutex<Option<CachedToken>>> {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        tokens.entry(installation_id).or_default().clone()
    }

    /// A valid installation token, minting one if needed (the mint bounded
    /// by `timeout` as a whole).
    pub async fn token(
        &self,
        http: &reqwest::Client,
        api: &str,
        installation_id: i64,
        timeout: std::time::Duration,
    ) -> Result<Arc<str>, ApiError> {
        let slot = self.slot(installation_id);
        // Holding the slot's lock across the mint makes it single-flight.
        let mut cached = slot.lock().await;
        let now = chrono::Utc::now().timestamp();
        if let Some(t) = cached
            .as_ref()
            .filter(|t| t.expires_at - REFRESH_MARGIN_SECS > now)
        {
            return Ok(t.token.clone());
        }
        let url = format!("{api}/app/installations/{installation_id}/access_tokens");
        let res = http
            .post(&url)
            .timeout(timeout)
            .bearer_auth(self.jwt(now)?)
            .send()
            .await
            .map_err(|e| {
                ApiError::Transient(format!(
                    "minting an installation token: {}",
                    super::http::describe(&e)
                ))
            })?;
        if !res.status().is_success() {
            let err = classify(res, "minting an installation token").await;
            metrics::counter!("connectord_github_token_errors_total").increment(1);
            return Err(err);
        }
        let bytes =
            super::blobs::read_bounded(res, MAX_TOKEN_ANSWER, "a token answer can be").await?;
        let body: TokenResponse = serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::Transient(format!("reading the installation token response: {e}"))
        })?;
        metrics::counter!("connectord_github_tokens_minted_total").increment(1);
        let token: Arc<str> = body.token.into();
        *cached = Some(CachedToken {
            token: token.clone(),
            expires_at: body.expires_at.timestamp(),
            minted_at: std::time::Instant::now(),
        });
        Ok(token)
    }

    /// Whether `token` is the installation's cached one and was minted less
    /// than [`NEW_TOKEN_LAG`] ago: a refusal of it may be GitHub's lag.
    pub async fn is_new(&self, installation_id: i64, token: &str) -> bool {
        let slot = self.slot(installation_id);
        let cached = slot.lock().await;
        cached
            .as_ref()
            .is_some_and(|t| &*t.token == token && t.minted_at.elapsed() < NEW_TOKEN_LAG)
    }

    /// Forgets `token` (GitHub answered 401 with it), unless a newer one replaced it already.
    pub async fn invalidate(&self, installation_id: i64, token: &str) {
        let slot = self.slot(installation_id);
        let mut cached = slot.lock().await;
        if cached.as_ref().is_some_and(|t| &*t.token == token) {
            *cached = None;
        }
    }
}
