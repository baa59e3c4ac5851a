//! `--redeliver-failed`: deliveries GitHub could not hand over (connectord
//! down, a 5xx, a timeout) are in the App's delivery log. A pass reads the
//! log newest first back to GitHub's 3-day redelivery window and asks GitHub
//! to redeliver each delivery `guid` that
//!
//! - has no successful (2xx) attempt: GitHub lists each redelivery as its
//!   own entry with the same guid, and one success settles it;
//! - is not recorded in `webhook_delivery` (connectord has it, whatever it
//!   answered — e.g. GitHub timed out while the commit went through);
//! - was never asked for before: the claim is a row written before the
//!   request, so each guid is asked for at most once, across passes,
//!   restarts and processes. Only a request GitHub certainly did not act on
//!   (refused, or never sent) gives the claim back for a later pass.

use crate::github::app_hook::{AppClient, HookDelivery, MAX_PER_PAGE};
use crate::github::client::ApiError;
use crate::store::Store;
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// GitHub redelivers deliveries of the past 3 days only.
pub const WINDOW: Duration = Duration::from_secs(3 * 86_400);
/// Claims are kept a day past the window (clock skew), then pruned.
const CLAIM_KEEP: Duration = Duration::from_secs(4 * 86_400);
/// At most this many pages (100 entries each) per pass: memory stays
/// bounded on a busy App; the oldest failures past it wait for calmer days.
pub const MAX_PAGES: usize = 200;

/// What one pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct PassReport {
    pub pages: usize,
    /// Entries inside the window.
    pub entries: usize,
    /// Redeliveries GitHub accepted in this pass.
    pub requested: usize,
}

/// Runs a pass now, then every `interval`, until shut down. Errors are logged.
pub async fn run(
    client: &AppClient,
    store: Arc<dyn Store>,
    interval: Duration,
    shutdown: CancellationToken,
) {
    tracing::info!(every = ?interval, "redelivering failed deliveries connectord did not record");
    loop {
        match pass(client, store.as_ref(), Utc::now()).await {
            Ok(r) if r.requested > 0 => {
                tracing::info!(
                    requested = r.requested,
                    entries = r.entries,
                    "asked GitHub to redeliver failed deliveries"
                )
            }
            Ok(r) => tracing::debug!(
                entries = r.entries,
                pages = r.pages,
                "redelivery pass: nothing to ask"
            ),
            Err(e) => tracing::warn!(error = %e, "redelivery pass stopped"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// Per guid: whether any attempt succeeded, and the newest failed attempt.
#[derive(Default)]
struct Seen {
    succeeded: bool,
    failed: Option<(i64, DateTime<Utc>)>,
}

/// One pass at time `now`.
pub async fn pass(
    client: &AppClient,
    store: &dyn Store,
    now: DateTime<Utc>,
) -> anyhow::Result<PassReport> {
    let mut report = PassReport::default();
    let cutoff = now - chrono::Duration::from_std(WINDOW)?;
    let keep = chrono::Duration::from_std(CLAIM_KEEP)?;
    if let Err(e) = store
        .prune_redelivery_claims((now - keep).timestamp_millis())
        .await
    {
        tracing::warn!(error = %e, "pruning old redelivery claims failed");
    }
    // The whole window is read before deciding: a success may be listed
    // after (older than) the failure it settles.
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut cursor: Option<String> = None;
    while report.pages < MAX_PAGES {
        let page = client.deliveries(MAX_PER_PAGE, cursor.as_deref()).await?;
        report.pages += 1;
        let mut past_window = false;
        for d in page.items {
            if d.delivered_at < cutoff {
                past_window = true;
                continue;
            }
            report.entries += 1;
            note(&mut seen, d);
        }
        match page.next_cursor {
            Some(next) if !past_window => cursor = Some(next),
            _ => break,
        }
    }
    if report.pages == MAX_PAGES {
        tracing::warn!(
            pages = MAX_PAGES,
            "the delivery log is longer than one pass reads; older failures are left"
        );
    }
    let mut todo: Vec<(String, i64, DateTime<Utc>)> = seen
        .into_iter()
        .filter(|(_, s)| !s.succeeded)
        .filter_map(|(guid, s)| s.failed.map(|(id, at)| (guid, id, at)))
        .collect();
    // Oldest first: they are the nearest to leaving the window.
    todo.sort_by_key(|(_, _, at)| *at);
    for (guid, id, _) in todo {
        if store.delivery_recorded(&guid).await? {
            continue;
        }
        if !store
            .claim_redelivery(&guid, id, now.timestamp_millis())
            .await?
        {
            continue;
        }
        match client.redeliver(id).await {
            Ok(()) => {
                report.requested += 1;
                metrics::counter!("connectord_redelivery_requested_total").increment(1);
                tracing::info!(delivery = %guid, hook_delivery_id = id, "asked GitHub to redeliver");
            }
            Err(e) => {
                let may_have = e.may_have_happened();
                let error = e.into_error();
                if !may_have {
                    store.release_redelivery(&guid).await?;
                }
                metrics::counter!("connectord_redelivery_errors_total").increment(1);
                tracing::warn!(delivery = %guid, hook_delivery_id = id, error = %error,
                    kept = may_have, "asking GitHub to redeliver failed");
                // A rate limit holds for every further request: stop here.
                if matches!(error, ApiError::RateLimited { .. }) {
                    return Err(error.into());
                }
            }
        }
    }
    Ok(report)
}

fn note(seen: &mut HashMap<String, Seen>, d: HookDelivery) {
    let s = seen.entry(d.guid.clone()).or_default();
    if d.succeeded() {
        s.succeeded = true;
    } else if s.failed.is_none_or(|(_, at)| d.delivered_at > at) {
        s.failed = Some((d.id, d.delivered_at));
    }
}
