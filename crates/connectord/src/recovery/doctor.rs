//! `connectord doctor`: checks the whole set-up with the settings `serve`
//! would use, one line per check (`ok`, `FAIL` with how to fix it, or `skip`
//! when a check cannot run without an earlier one), and fails when any
//! check did. It changes nothing: no secret is generated, no migration
//! applied (the database is opened read-only on SQLite), and no secret is
//! ever printed.

use super::hook_check;
use crate::config::{Role, ServeArgs};
use crate::github::app_hook::AppClient;
use crate::github::auth::AppAuth;
use crate::github::client::ApiError;
use crate::secrets;
use crate::store::database_url::redact_url;
use crate::store::sql::postgres::is_postgres_url;
use sqlx::{AnyConnection, Connection};
use std::collections::BTreeSet;
use std::io::Write;
use std::time::Duration;

/// How long one network check may take (the database, GitHub, the public URL).
const CHECK_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Default)]
struct Report {
    failed: usize,
}

impl Report {
    fn ok(&mut self, name: &str, detail: impl std::fmt::Display) {
        line(format!("ok    {name}: {detail}"));
    }
    fn fail(&mut self, name: &str, problem: impl std::fmt::Display, fix: impl std::fmt::Display) {
        self.failed += 1;
        line(format!("FAIL  {name}: {problem}\n        fix: {fix}"));
    }
    fn skip(&mut self, name: &str, why: impl std::fmt::Display) {
        line(format!("skip  {name}: {why}"));
    }
}

/// Printed as it is found, so a slow check shows where it is.
fn line(text: String) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{text}");
    let _ = out.flush();
}

/// Runs every check; `Err` (exit 1) when any failed.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let mut r = Report::default();
    webhook_secret(&mut r, &args);
    let installations = database(&mut r, &args.store.database_url()).await;
    github(&mut r, &args, installations).await;
    public_url(&mut r, &args).await;
    if r.failed > 0 {
        anyhow::bail!("doctor: {} check(s) failed", r.failed);
    }
    line("doctor: every check passed".into());
    Ok(())
}

fn webhook_secret(r: &mut Report, args: &ServeArgs) {
    const NAME: &str = "webhook secret";
    if args.role == Role::Worker {
        return r.skip(NAME, "a worker serves no webhook");
    }
    if args
        .webhook_secret
        .as_deref()
        .is_some_and(|s| !s.is_empty())
    {
        return r.ok(
            NAME,
            "configured (GITHUB_CONNECTOR_APP_WEBHOOK_SECRET or --webhook-secret)",
        );
    }
    let path = secrets::path_in(&args.store.data_dir, secrets::WEBHOOK_SECRET_FILE);
    match secrets::read(&path) {
        Ok(Some(_)) => r.ok(NAME, format!("stored in {}", path.display())),
        Ok(None) => r.fail(
            NAME,
            format!("none configured and none stored in {}", path.display()),
            "set GITHUB_CONNECTOR_APP_WEBHOOK_SECRET (the App's Webhook secret), or start `connectord serve` once to generate one and enter it in the App",
        ),
        Err(e) => r.fail(NAME, format!("{e:#}"), "make the file readable by this user, or set GITHUB_CONNECTOR_APP_WEBHOOK_SECRET"),
    }
}

/// Reachable and migrated; returns the installations of active connectors
/// when it could read them.
async fn database(r: &mut Report, url: &str) -> Option<Vec<i64>> {
    let shown = redact_url(url);
    let mut conn = match tokio::time::timeout(CHECK_TIMEOUT, connect(url)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            r.fail("database", format!("cannot open {shown}: {e:#}"), "check CONNECTORD_DATABASE_URL, that the server runs and this host may connect; for SQLite, run `connectord migrate` to create it");
            r.skip("migrations", "needs the database");
            return None;
        }
        Err(_) => {
            r.fail(
                "database",
                format!("no answer from {shown} within {CHECK_TIMEOUT:?}"),
                "check CONNECTORD_DATABASE_URL and the network between here and the database",
            );
            r.skip("migrations", "needs the database");
            return None;
        }
    };
    r.ok("database", format!("reachable ({shown})"));
    let migrator = if is_postgres_url(url) {
        &crate::store::sql::postgres::MIGRATOR
    } else {
        &crate::store::sql::sqlite::MIGRATOR
    };
    let known: BTreeSet<i64> = migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| m.version)
        .collect();
    // A database never migrated has no table: nothing applied.
    let applied: BTreeSet<i64> =
        sqlx::query_scalar::<_, i64>("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(&mut conn)
            .await
            .unwrap_or_default()
            .into_iter()
            .collect();
    let pending: Vec<i64> = known.difference(&applied).copied().collect();
    let unknown: Vec<i64> = applied.difference(&known).copied().collect();
    if !unknown.is_empty() {
        r.fail("migrations", format!("the database has migrations this binary does not know ({unknown:?}): a newer connectord migrated it"), "run the newer connectord version");
        return None;
    }
    if !pending.is_empty() {
        r.fail(
            "migrations",
            format!(
                "{} of {} not applied (versions {pending:?})",
                pending.len(),
                known.len()
            ),
            "run `connectord migrate` with the same settings (serve applies them at start too)",
        );
        return None;
    }
    r.ok("migrations", format!("all {} applied", known.len()));
    match sqlx::query_scalar::<_, i64>(
        "SELECT installation_id FROM connector_instance WHERE status = $1 ORDER BY installation_id",
    )
    .bind("active")
    .fetch_all(&mut conn)
    .await
    {
        Ok(ids) => Some(ids),
        Err(e) => {
            r.fail(
                "connectors",
                format!("cannot list them: {e}"),
                "check the database user may read connector_instance",
            );
            None
        }
    }
}

/// SQLite read-only and never created (doctor changes nothing); PostgreSQL as given.
async fn connect(url: &str) -> anyhow::Result<AnyConnection> {
    sqlx::any::install_default_drivers();
    let url = if is_postgres_url(url) {
        url.to_owned()
    } else {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}mode=ro")
    };
    Ok(AnyConnection::connect(&url).await?)
}

/// The most installations `doctor` mints a token for.
const MAX_INSTALLATIONS_CHECKED: usize = 25;

async fn github(r: &mut Report, args: &ServeArgs, installations: Option<Vec<i64>>) {
    let skip_rest = |r: &mut Report, why: &str| {
        for name in ["App JWT", "installations", "webhook config"] {
            r.skip(name, why);
        }
    };
    let gh = match args.github.clone().into_config() {
        Ok(Some(gh)) => gh,
        Ok(None) if args.role == Role::Ingress => {
            r.skip("GitHub App", "not configured (an ingress process needs it only for the self-check and redelivery)");
            return skip_rest(r, "no GitHub App configured");
        }
        Ok(None) => {
            r.fail("GitHub App", "not configured: sync jobs stay queued", "set GITHUB_CONNECTOR_APP_ID and GITHUB_CONNECTOR_APP_PRIVATE_KEY_PATH (or _PRIVATE_KEY)");
            return skip_rest(r, "no GitHub App configured");
        }
        Err(e) => {
            r.fail(
                "GitHub App",
                format!("{e:#}"),
                "set both GITHUB_CONNECTOR_APP_ID and a readable private key",
            );
            return skip_rest(r, "no GitHub App configured");
        }
    };
    r.ok("GitHub App", format!("App {} at {}", gh.app_id, gh.api_url));
    let client = match AppAuth::new(gh.app_id, &gh.private_key_pem) {
        Ok(auth) => {
            r.ok("private key", "parses as an RSA key");
            match AppClient::new(&gh.api_url, auth, &gh.fetch.timeouts) {
                Ok(c) => c,
                Err(e) => {
                    r.fail("HTTP client", format!("{e:#}"), "report this as a bug");
                    return skip_rest(r, "no HTTP client");
                }
            }
        }
        Err(e) => {
            r.fail("private key", format!("{e:#}"), "download a new private key (App settings > Private keys) and point GITHUB_CONNECTOR_APP_PRIVATE_KEY_PATH at the .pem file");
            return skip_rest(r, "needs a usable private key");
        }
    };
    match tokio::time::timeout(CHECK_TIMEOUT, client.app()).await {
        Ok(Ok(app)) => r.ok(
            "App JWT",
            format!("accepted (App {} {})", app.id, app.slug.unwrap_or_default()),
        ),
        Ok(Err(e)) => {
            r.fail("App JWT", &e, github_fix(&e));
            for name in ["installations", "webhook config"] {
                r.skip(name, "needs an accepted App JWT");
            }
            return;
        }
        Err(_) => {
            r.fail(
                "App JWT",
                format!("no answer from {} within {CHECK_TIMEOUT:?}", gh.api_url),
                "check GITHUB_API_URL and that this host can reach it",
            );
            return;
        }
    }
    match installations {
        None => r.skip("installations", "needs the migrated database"),
        Some(ids) if ids.is_empty() => r.ok(
            "installations",
            "none recorded yet (`connectord connectors add`, or install the App)",
        ),
        Some(ids) => {
            // Each check mints a token (one App-JWT call): a deployment with
            // thousands of installations gets a sample, not thousands of calls.
            if ids.len() > MAX_INSTALLATIONS_CHECKED {
                r.ok(
                    "installations",
                    format!(
                        "{} recorded; checking the first {MAX_INSTALLATIONS_CHECKED} by id",
                        ids.len()
                    ),
                );
            }
            for id in ids.into_iter().take(MAX_INSTALLATIONS_CHECKED) {
                let name = format!("installation {id}");
                match tokio::time::timeout(CHECK_TIMEOUT, client.installation_token(id)).await {
                    Ok(Ok(())) => r.ok(&name, "token minted"),
                    Ok(Err(e @ ApiError::NotFound(_))) => r.fail(&name, &e, "the App is no longer installed there: reinstall it, or remove the connector's targets"),
                    Ok(Err(e)) => r.fail(&name, &e, github_fix(&e)),
                    Err(_) => r.fail(&name, "no answer in time", "check the network to GitHub"),
                }
            }
        }
    }
    match tokio::time::timeout(CHECK_TIMEOUT, client.hook_config()).await {
        Ok(Ok(config)) => {
            let findings = hook_check::check(&config, args.recovery.public_url.as_ref());
            if findings.is_empty() {
                r.ok(
                    "webhook config",
                    "URL, SSL verification, content type and secret as connectord expects",
                );
            }
            for f in findings {
                r.fail("webhook config", f.problem, f.fix);
            }
        }
        Ok(Err(e)) => r.fail("webhook config", &e, github_fix(&e)),
        Err(_) => r.fail(
            "webhook config",
            "no answer in time",
            "check the network to GitHub",
        ),
    }
}

fn github_fix(e: &ApiError) -> &'static str {
    match e {
        ApiError::Unauthorized(_) => "check that GITHUB_CONNECTOR_APP_ID is the App this key belongs to, that the key was not revoked, and that this machine's clock is right",
        ApiError::RateLimited { .. } => "wait for GitHub's rate limit to reset and run doctor again",
        ApiError::Transient(_) => "check GITHUB_API_URL and that this host can reach it (GitHub may also be having trouble)",
        _ => "check GITHUB_API_URL and the App's permissions",
    }
}

async fn public_url(r: &mut Report, args: &ServeArgs) {
    const NAME: &str = "public URL";
    let Some(base) = &args.recovery.public_url else {
        return r.skip(NAME, "not set (--public-url, CONNECTORD_PUBLIC_URL): the webhook URL's host is not compared and reachability not checked");
    };
    let url = format!("{}/healthz", hook_check::shown(base).trim_end_matches('/'));
    let client = match reqwest::Client::builder().timeout(CHECK_TIMEOUT).build() {
        Ok(c) => c,
        Err(e) => return r.fail(NAME, format!("{e:#}"), "report this as a bug"),
    };
    match client.get(&url).send().await {
        Ok(res) if res.status().is_success() => r.ok(NAME, format!("{url} answers {}", res.status())),
        Ok(res) => r.fail(NAME, format!("{url} answers {}", res.status()), "check that the proxy in front of connectord forwards /healthz and /v1/webhooks/connectors/github to it"),
        Err(e) => r.fail(NAME, format!("cannot reach {url}: {e}"), "check DNS, TLS and the proxy in front of connectord, and that `connectord serve` runs"),
    }
}
