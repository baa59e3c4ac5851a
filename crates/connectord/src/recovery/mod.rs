//! Finding and repairing a broken GitHub App set-up (docs/recovery.md):
//!
//! - [`hook_check`]: is the App's webhook configured as connectord expects
//!   (its URL, SSL verification, content type, a secret)? Checked once when
//!   `serve` starts, and by `doctor`.
//! - [`redeliver`]: with `--redeliver-failed`, asks GitHub to redeliver
//!   deliveries that failed and that connectord never recorded, at most
//!   once each, within GitHub's 3-day window.
//! - [`doctor`]: `connectord doctor`, every check of the set-up, one line each.

pub mod doctor;
pub mod hook_check;
pub mod redeliver;

use crate::github::app_hook::AppClient;
use crate::github::auth::AppAuth;
use crate::github::GithubAppConfig;
use crate::store::Store;
use clap::Args;
use reqwest::Url;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The flags of `serve` (and `doctor`) for the self-check and redelivery.
#[derive(Debug, Clone, Args)]
pub struct RecoveryArgs {
    /// This service's public base URL, as GitHub reaches it (e.g.
    /// `https://hooks.example.com`). The App's webhook URL is then expected
    /// to be exactly it + /v1/webhooks/connectors/github, and `doctor`
    /// checks that `{public-url}/healthz` answers.
    #[arg(long, env = "CONNECTORD_PUBLIC_URL", value_parser = parse_public_url)]
    pub public_url: Option<Url>,
    /// Periodically ask GitHub to redeliver failed deliveries connectord
    /// never recorded (at most once each, within GitHub's 3-day window).
    #[arg(long, env = "CONNECTORD_REDELIVER_FAILED", default_value_t = false)]
    pub redeliver_failed: bool,
    /// How often the redelivery pass runs (the first one runs at start).
    #[arg(long, env = "CONNECTORD_REDELIVER_INTERVAL", default_value = "10m", value_parser = parse_interval)]
    pub redeliver_interval: Duration,
}

impl RecoveryArgs {
    pub fn settings(&self) -> RecoverySettings {
        RecoverySettings {
            public_url: self.public_url.clone(),
            redeliver_failed: self.redeliver_failed,
            redeliver_interval: self.redeliver_interval,
        }
    }
}

/// A public URL is a base: scheme, host, optional port and path prefix.
/// Credentials and queries are refused, so it can be printed anywhere.
fn parse_public_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("{e} (write e.g. https://hooks.example.com)"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err("must be an http(s) URL with a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not carry a query or fragment".into());
    }
    Ok(url)
}

fn parse_interval(s: &str) -> Result<Duration, String> {
    // GitHub's delivery log is for people too: asking it more than once a
    // second serves no one. Redelivery is turned off by its own flag, not 0.
    match crate::config::parse_interval(s)? {
        d if d.is_zero() => Err("must be at least 1s".into()),
        d => Ok(d),
    }
}

#[derive(Debug, Clone)]
pub struct RecoverySettings {
    pub public_url: Option<Url>,
    pub redeliver_failed: bool,
    pub redeliver_interval: Duration,
}

impl Default for RecoverySettings {
    fn default() -> Self {
        Self {
            public_url: None,
            redeliver_failed: false,
            redeliver_interval: Duration::from_secs(600),
        }
    }
}

/// What `serve` runs beside its servers: the self-check once, then (if on)
/// the redelivery passes.
pub struct Recovery {
    pub settings: RecoverySettings,
    github: Option<GithubAppConfig>,
}

impl Recovery {
    pub fn new(github: Option<GithubAppConfig>) -> Self {
        Self {
            settings: RecoverySettings::default(),
            github,
        }
    }

    /// Never fails: GitHub being unreachable or refusing must not stop the
    /// service, only be said in the log.
    pub async fn run(
        self,
        store: Arc<dyn Store>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<()> {
        let Some(gh) = self.github else {
            if self.settings.redeliver_failed {
                tracing::warn!("--redeliver-failed needs the GitHub App (GITHUB_CONNECTOR_APP_ID and a key): not running");
            }
            return Ok(());
        };
        let client = match AppAuth::new(gh.app_id, &gh.private_key_pem)
            .and_then(|auth| AppClient::new(&gh.api_url, auth, &gh.fetch.timeouts))
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot call GitHub as the App: no webhook self-check or redelivery");
                return Ok(());
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = self_check(&client, self.settings.public_url.as_ref()) => {}
        }
        if self.settings.redeliver_failed {
            redeliver::run(&client, store, self.settings.redeliver_interval, shutdown).await;
        }
        Ok(())
    }
}

/// Reads the App's webhook configuration once and warns about each problem.
async fn self_check(client: &AppClient, public_url: Option<&Url>) {
    match client.hook_config().await {
        Ok(config) => {
            let findings = hook_check::check(&config, public_url);
            for f in &findings {
                tracing::warn!(fix = %f.fix, "GitHub App webhook: {}", f.problem);
            }
            if findings.is_empty() {
                tracing::info!("GitHub App webhook: configured as connectord expects");
            }
        }
        Err(e) => tracing::warn!(
            error = %e,
            "cannot read the GitHub App's webhook configuration (GET /app/hook/config); run `connectord doctor`"
        ),
    }
}
