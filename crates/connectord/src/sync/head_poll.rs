//! The missed-push pass: GitHub does not retry a failed delivery and drops
//! some pushes outright, so every tracked branch's head is read from GitHub
//! once per interval and a `reconcile` sync is queued when it is not what the
//! target is at or on its way to.
//!
//! Each read is conditional (`If-None-Match` with the ETag of the last
//! answer): an unchanged branch answers 304, which GitHub does not count
//! against the installation's rate limit. The ETags live in this process, so
//! the first pass after a start pays one call per target. The reads of one
//! pass are spread evenly over the interval, and each pass starts at a random
//! point of it, so thousands of targets (or several processes) do not ask at
//! once.

use crate::github::branch_head::{self, BranchHead};
use crate::github::client::GithubClient;
use crate::store::models::HeadPollTarget;
use crate::store::Store;
use futures::StreamExt;
use rand::Rng;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

/// Reads in flight at once: enough that slow answers do not stretch a pass
/// past its interval, few enough to stay far below GitHub's concurrency limits.
const CONCURRENCY: usize = 8;
const PAGE: i64 = 500;

pub struct HeadPoll {
    store: Arc<dyn Store>,
    client: Arc<GithubClient>,
    interval: Duration,
    /// Per target: (repository, branch) the ETag is for, the ETag, the head it named.
    etags: Mutex<HashMap<String, Cached>>,
}

struct Cached {
    repo_branch: (String, String),
    etag: String,
    sha: String,
}

impl HeadPoll {
    pub fn new(store: Arc<dyn Store>, client: Arc<GithubClient>, interval: Duration) -> Self {
        Self {
            store,
            client,
            interval,
            etags: Mutex::new(HashMap::new()),
        }
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) {
        tracing::info!(interval = ?self.interval, "missed-push pass: reading tracked branch heads");
        let mut start = Instant::now() + self.interval.mul_f64(rand::thread_rng().gen::<f64>());
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = sleep_until(start) => {}
            }
            if let Err(e) = self.pass(start, &shutdown).await {
                tracing::warn!(error = %e, "missed-push pass: cannot list targets; trying again next interval");
            }
            start += self
                .interval
                .mul_f64(rand::thread_rng().gen_range(0.9..1.1));
            start = start.max(Instant::now());
        }
    }

    /// One pass: every active target once, spread over 90% of the interval.
    async fn pass(
        &self,
        started: Instant,
        shutdown: &CancellationToken,
    ) -> crate::store::Result<()> {
        let mut ids = vec![];
        loop {
            let page = self
                .store
                .head_poll_ids(ids.last().map(String::as_str), PAGE)
                .await?;
            let full = page.len() as i64 == PAGE;
            ids.extend(page);
            if !full {
                break;
            }
        }
        let n = ids.len().max(1) as f64;
        let spread = self.interval.mul_f64(0.9);
        futures::stream::iter(ids.into_iter().enumerate())
            .map(|(i, id)| async move {
                sleep_until(started + spread.mul_f64(i as f64 / n)).await;
                self.check(&id).await;
            })
            .buffer_unordered(CONCURRENCY)
            .take_until(shutdown.cancelled())
            .collect::<()>()
            .await;
        Ok(())
    }

    async fn check(&self, target_id: &str) {
        let t = match self.store.head_poll_target(target_id).await {
            Ok(Some(t)) => t,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(target_id, error = %e, "missed-push pass");
                return count("error");
            }
        };
        let Some(head) = self.read_head(&t).await else {
            return;
        };
        if !t.needs_sync(&head) {
            return;
        }
        match self.store.enqueue_reconcile(&t, &head).await {
            Ok(Some(event)) => {
                metrics::counter!("connectord_reconcile_syncs_total").increment(1);
                tracing::info!(
                    target_id, repository = %t.repository_full_name, branch = %t.branch, head = %head,
                    sync_event_id = %event,
                    "missed push: the branch is at a head no webhook brought; queued a reconcile sync"
                );
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(target_id, error = %e, "missed-push pass");
                count("error");
            }
        }
    }

    /// GitHub's head for the target's branch, or `None` when there is none to act on.
    async fn read_head(&self, t: &HeadPollTarget) -> Option<String> {
        let key = (t.repository_full_name.clone(), t.branch.clone());
        let cached = {
            let etags = self.etags.lock().unwrap_or_else(|p| p.into_inner());
            etags
                .get(&t.id)
                .filter(|c| c.repo_branch == key)
                .map(|c| (c.etag.clone(), c.sha.clone()))
        };
        let answer = branch_head::read(
            &self.client,
            t.installation_id,
            &t.repository_full_name,
            &t.branch,
            cached.as_ref().map(|(etag, _)| etag.as_str()),
        )
        .await;
        let mut etags = self.etags.lock().unwrap_or_else(|p| p.into_inner());
        match answer {
            Ok(BranchHead::Unchanged) => {
                count("not_modified");
                // Only sent with a cached ETag, so there is a cached head.
                cached.map(|(_, sha)| sha)
            }
            Ok(BranchHead::At { sha, etag }) => {
                count("read");
                match etag {
                    Some(etag) => {
                        let c = Cached {
                            repo_branch: key,
                            etag,
                            sha: sha.clone(),
                        };
                        etags.insert(t.id.clone(), c);
                    }
                    None => {
                        etags.remove(&t.id);
                    }
                }
                Some(sha)
            }
            // A deleted branch or a repository gone from the installation is
            // the webhook lifecycle's business (its events say which).
            Ok(BranchHead::Missing) => {
                etags.remove(&t.id);
                count("missing");
                None
            }
            Err(e) => {
                tracing::debug!(target_id = %t.id, error = %e, "missed-push pass: cannot read the branch head");
                count("error");
                None
            }
        }
    }
}

/// Counts one check by its result.
fn count(result: &'static str) {
    metrics::counter!("connectord_reconcile_checks_total", "result" => result).increment(1);
}
