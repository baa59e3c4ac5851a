//! The GitHub reconciler: bring a target's documents to exactly the tree at
//! the job's head, fetching only blobs whose SHA changed.
//!
//! 1. Resolve the head (jobs queued without one: initial, manual, resync).
//! 2. List the tree recursively; if GitHub truncates it, walk sub-trees.
//! 3. Plan (`plan::plan`, pure): what to fetch, keep, delete and skip.
//! 4. Choose blobs or one tarball (`fetch_plan::choose`) and stream the
//!    files in; every checked file goes through [`GithubReconciler::accept_file`],
//!    one at a time, with at most a few in memory besides what is accepted.
//!    Each is stored as a blob at once (its own short write) and only its
//!    blob id is kept.
//! 5. Return the changes (paths → blob ids); the worker applies them with
//!    the job's completion in one transaction.

use super::blobs;
use super::client::{ApiError, GithubClient};
use super::fetch_plan::{self, Fetch, FetchInputs, BLOB_CONCURRENCY};
use super::plan::{self, Plan, TargetSettings, Wanted};
use super::tarball::{self, ArchiveError, Expected, Limits, Verified};
use super::tree;
use super::FetchSettings;
use crate::store::models::{ClaimedJob, DocumentChange, FileFailure, SyncCounts, SyncResult};
use crate::store::Store;
use crate::sync::{ReconcileError, Reconciler};
use async_trait::async_trait;
use futures::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Checked files waiting between the tarball reader and `accept_file`: the
/// reader stops while they wait, so memory holds at most this many files
/// (plus the one being read) whatever the archive's size.
const TARBALL_QUEUE: usize = 4;

pub struct GithubReconciler {
    client: Arc<GithubClient>,
    store: Arc<dyn Store>,
    fetch: FetchSettings,
}

impl From<ApiError> for ReconcileError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Transient(m) => ReconcileError::Transient(m),
            ApiError::Permanent(m) | ApiError::Forbidden(m) => ReconcileError::Permanent(m),
            // The repository (or the installation) is gone or no longer ours.
            ApiError::NotFound(m) | ApiError::Unauthorized(m) => ReconcileError::Inaccessible(m),
            ApiError::RateLimited {
                message,
                retry_after,
            } => ReconcileError::RateLimited {
                message,
                retry_after,
            },
        }
    }
}

/// What a sync has accepted so far: the result under construction.
#[derive(Default)]
struct Accepted {
    counts: SyncCounts,
    skipped: BTreeMap<String, i64>,
    failures: Vec<FileFailure>,
    changes: Vec<DocumentChange>,
    /// Checked files not yet stored, written together by [`flush`]: at most
    /// [`BLOB_BATCH_FILES`] files or [`BLOB_BATCH_BYTES`] plus one file.
    ///
    /// [`flush`]: GithubReconciler::flush
    unstored: Vec<(String, Vec<u8>)>,
    unstored_bytes: usize,
}

/// Blobs per write: one commit (an fsync) per file made a 10,000-file first
/// sync take 12 s, nearly all of it committing.
const BLOB_BATCH_FILES: usize = 256;
/// Bytes held before a write, whatever the count: what bounds a sync's memory
/// (with the largest file and the few downloads in flight).
const BLOB_BATCH_BYTES: usize = 8 << 20;

impl Accepted {
    fn skip(&mut self, reason: &str) {
        *self.skipped.entry(reason.to_owned()).or_default() += 1;
    }

    /// The file stays as stored (if it is): the next sync tries it again.
    fn fail(&mut self, w: &Wanted, message: String) {
        self.failures.push(FileFailure {
            path: w.path.clone(),
            message,
        });
    }
}

const LFS_HEADER: &[u8] = b"version https://git-lfs.github.com/spec/v1";

fn is_binary(bytes: &[u8]) -> bool {
    bytes.iter().take(8000).any(|b| *b == 0) || std::str::from_utf8(bytes).is_err()
}

fn expected(w: &Wanted) -> Expected {
    Expected {
        sha: w.sha.clone(),
        size: w.size,
    }
}

impl GithubReconciler {
    pub fn new(client: Arc<GithubClient>, store: Arc<dyn Store>, fetch: FetchSettings) -> Self {
        Self {
            client,
            store,
            fetch,
        }
    }

    /// Every file a sync stores passes here, one at a time, and only checked
    /// (a [`Verified`] is the tree's blob, size and SHA): from the tarball as
    /// from the blob path. This is where the bytes leave the fetch.
    async fn accept_file(
        &self,
        acc: &mut Accepted,
        w: &Wanted,
        file: Verified,
    ) -> Result<(), ReconcileError> {
        let bytes = file.into_bytes();
        if bytes.len() < 1024 && bytes.starts_with(LFS_HEADER) {
            acc.skip("lfs_pointer");
            if !w.created {
                acc.counts.deleted += 1;
                acc.changes.push(DocumentChange::Delete {
                    path: w.path.clone(),
                });
            }
            return Ok(());
        }
        // Stored soon, under its verified git blob id, with the next batch;
        // the completion only points the document at it. Every batch is
        // written before the result is returned.
        let (size, binary) = (bytes.len(), is_binary(&bytes));
        acc.unstored_bytes += size;
        acc.unstored.push((w.sha.clone(), bytes));
        if acc.unstored.len() >= BLOB_BATCH_FILES || acc.unstored_bytes >= BLOB_BATCH_BYTES {
            self.flush(acc).await?;
        }
        if w.created {
            acc.counts.created += 1;
        } else {
            acc.counts.updated += 1;
        }
        acc.changes.push(DocumentChange::Upsert {
            path: w.path.clone(),
            blob_sha: w.sha.clone(),
            size: size as i64,
            is_binary: binary,
        });
        Ok(())
    }

    /// Writes the batch of checked files. They were hashed on the way in
    /// ([`Verified`]), so a refusal here is the store's, and the whole sync
    /// is tried again.
    async fn flush(&self, acc: &mut Accepted) -> Result<(), ReconcileError> {
        if acc.unstored.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut acc.unstored);
        acc.unstored_bytes = 0;
        let n = batch.len();
        self.store
            .put_blobs(batch)
            .await
            .map_err(|e| ReconcileError::Transient(format!("storing {n} blobs: {e}")))
    }

    /// Downloads each distinct blob once, [`BLOB_CONCURRENCY`] at a time,
    /// accepting each as it arrives. A rate limit on any of them stops the
    /// whole sync until the wait is over; other errors stay per file.
    async fn fetch_blobs(
        &self,
        installation: i64,
        repo: &str,
        wanted: Vec<Wanted>,
        acc: &mut Accepted,
    ) -> Result<(), ReconcileError> {
        let mut by_blob: HashMap<(String, u64), Vec<Wanted>> = HashMap::new();
        for w in wanted {
            by_blob.entry((w.sha.clone(), w.size)).or_default().push(w);
        }
        let client = &*self.client;
        // Owned items: borrowed ones trip the compiler's higher-ranked
        // inference for the `Send` future async_trait requires.
        let mut downloads = futures::stream::iter(by_blob.into_values())
            .map(|paths: Vec<Wanted>| async move {
                let result = blobs::fetch(client, installation, repo, &expected(&paths[0])).await;
                (paths, result)
            })
            .buffer_unordered(BLOB_CONCURRENCY as usize);
        while let Some((paths, result)) = downloads.next().await {
            match result {
                Ok(file) => {
                    for w in &paths {
                        self.accept_file(acc, w, file.clone()).await?;
                    }
                }
                // About the installation, not this file: stop the sync (the
                // downloads still in flight are dropped with the stream).
                Err(
                    e @ (ApiError::RateLimited { .. }
                    | ApiError::Forbidden(_)
                    | ApiError::Unauthorized(_)),
                ) => return Err(e.into()),
                Err(e) => {
                    for w in &paths {
                        acc.fail(w, e.to_string());
                    }
                }
            }
        }
        Ok(())
    }

    /// The caps for this archive: the configured ones, and, when the whole
    /// tree is known, what the tree says the archive holds with generous
    /// room for tar's headers (up to 2 KiB an entry), `export-subst`
    /// expansion (1 %) and 1 MiB, so only a lying archive reaches them.
    fn archive_limits(&self, plan: &Plan, whole_tree: bool) -> Limits {
        let cfg = self.fetch.archive;
        if !whole_tree {
            return cfg;
        }
        let bytes = plan
            .tree_bytes
            .saturating_add(plan.tree_bytes / 100)
            .saturating_add(plan.tree_entries.saturating_mul(2048))
            .saturating_add(1 << 20);
        let entries = plan.tree_entries.saturating_mul(2).saturating_add(16);
        Limits {
            max_bytes: cfg.max_bytes.min(bytes),
            max_entries: cfg.max_entries.min(entries),
        }
    }

    /// Streams the commit's tarball (HTTP body → gzip → tar, on a blocking
    /// thread) and accepts each wanted file as it is read. Returns what it
    /// did not deliver (missing from the archive, or not the tree's blob),
    /// for the blob path. A broken download also leaves the rest to blobs; a
    /// cap reached fails the job.
    ///
    /// Why tokio-util's `StreamReader` + `SyncIoBridge` into `flate2` and
    /// `tar` rather than async-compression/tokio-tar: both crates are
    /// already used here and tested against GitHub's archives, the bounded
    /// channel gives the back-pressure, and tar's raw mode lets this code,
    /// not the tar reader, decide how much of an extension header to read.
    async fn fetch_tarball(
        &self,
        installation: i64,
        repo: &str,
        head: &str,
        plan: &Plan,
        whole_tree: bool,
        acc: &mut Accepted,
    ) -> Result<Vec<Wanted>, ReconcileError> {
        let mut pending: HashMap<String, Wanted> = plan
            .fetch
            .iter()
            .map(|w| (w.path.clone(), w.clone()))
            .collect();
        let all =
            |pending: HashMap<String, Wanted>| -> Vec<Wanted> { pending.into_values().collect() };
        let res = match self
            .client
            .get(
                installation,
                &format!("/repos/{repo}/tarball/{head}"),
                "application/vnd.github+json",
            )
            .await
        {
            Ok(r) => r,
            // Told to wait: the job waits too, rather than turning one call
            // into thousands of blob calls while rate limited. Refused
            // access is the installation's, so the blobs would be refused too.
            Err(
                e @ (ApiError::RateLimited { .. }
                | ApiError::Forbidden(_)
                | ApiError::Unauthorized(_)),
            ) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "tarball download failed; fetching blobs one by one");
                return Ok(all(pending));
            }
        };
        let want: HashMap<String, Expected> = plan
            .fetch
            .iter()
            .map(|w| (w.path.clone(), expected(w)))
            .collect();
        let limits = self.archive_limits(plan, whole_tree);
        let body = futures::stream::unfold(Some(res), |res| async move {
            let mut res = res?;
            match res.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), Some(res))),
                Ok(None) => None,
                Err(e) => Some((Err(std::io::Error::other(e)), None)),
            }
        });
        let reader =
            tokio_util::io::SyncIoBridge::new(tokio_util::io::StreamReader::new(Box::pin(body)));
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(String, Verified)>(TARBALL_QUEUE);
        let reading = tokio::task::spawn_blocking(move || {
            tarball::extract(reader, &want, limits, |path, file| {
                tx.blocking_send((path, file)).is_ok()
            })
        });
        while let Some((path, file)) = rx.recv().await {
            if let Some(w) = pending.remove(&path) {
                self.accept_file(acc, &w, file).await?;
            }
        }
        match reading.await {
            Ok(Ok(done)) => {
                tracing::debug!(
                    entries = done.entries,
                    delivered = done.delivered,
                    refused = done.refused,
                    "tarball read"
                );
                if done.refused > 0 {
                    tracing::warn!(refused = done.refused, "tarball entries outside the top directory, links or unclean paths were ignored");
                }
            }
            Ok(Err(ArchiveError::OverCap(m))) => {
                return Err(ReconcileError::Permanent(format!(
                    "the tarball of {repo} at {head} is not what its tree says: {m} \
                     (see --tarball-max-bytes and --tarball-max-entries)"
                )))
            }
            Ok(Err(e @ ArchiveError::Io(_))) => {
                tracing::warn!(error = %e, "tarball unreadable or broken off; fetching the rest blob by blob");
            }
            Err(e) => {
                tracing::warn!(error = %e, "tarball extraction failed; fetching the rest blob by blob");
            }
        }
        Ok(all(pending))
    }
}

#[async_trait]
impl Reconciler for GithubReconciler {
    async fn reconcile(&self, job: &ClaimedJob) -> Result<SyncResult, ReconcileError> {
        let installation = job.job.installation_id;
        let repo = job.job.repository_full_name.clone();
        let head = tree::resolve_head(&self.client, job, &repo).await?;
        let prefix = job.path_prefix.as_str();
        let (entries, whole_tree) =
            tree::listing(&self.client, installation, &repo, &head, prefix).await?;
        let stored = self
            .store
            .document_manifest(&job.job.connector_target_id)
            .await
            .map_err(|e| ReconcileError::Transient(format!("reading the stored documents: {e}")))?;
        let target = TargetSettings {
            prefix,
            max_file_bytes: job.max_file_bytes,
        };
        let plan = plan::plan(&entries, &stored, target);
        drop(entries);
        let choice = fetch_plan::choose(
            self.fetch.mode,
            FetchInputs {
                files: plan.fetch.len(),
                wanted_bytes: plan.wanted_bytes(),
                archive_bytes: whole_tree.then_some(plan.tree_bytes),
                remaining_budget: self.client.remaining_budget(installation),
                latency: self.client.latency(),
            },
        );
        tracing::debug!(
            ?choice,
            files = plan.fetch.len(),
            wanted_bytes = plan.wanted_bytes(),
            tree_bytes = plan.tree_bytes,
            "fetch plan"
        );

        let mut acc = Accepted {
            skipped: plan.skipped.clone(),
            failures: plan.failures.clone(),
            ..Accepted::default()
        };
        let for_blobs = match choice {
            Fetch::Nothing => vec![],
            Fetch::Blobs => plan.fetch.clone(),
            Fetch::Tarball => {
                self.fetch_tarball(installation, &repo, &head, &plan, whole_tree, &mut acc)
                    .await?
            }
        };
        self.fetch_blobs(installation, &repo, for_blobs, &mut acc)
            .await?;
        self.flush(&mut acc).await?;
        // Everything stored that the tree no longer backs goes.
        for path in &plan.delete {
            acc.counts.deleted += 1;
            acc.changes
                .push(DocumentChange::Delete { path: path.clone() });
        }
        acc.counts.skipped = acc.skipped.values().sum();
        Ok(SyncResult {
            head_sha: Some(head),
            counts: acc.counts,
            skipped_reasons: acc.skipped,
            failures: acc.failures,
            changes: acc.changes,
        })
    }
}
