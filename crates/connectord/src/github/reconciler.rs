//! The GitHub reconciler: bring a target's documents to exactly the tree at
//! the job's head, fetching only blobs whose SHA changed.
//!
//! 1. Resolve the head (jobs queued without one: initial, manual, resync).
//! 2. List the tree recursively; if GitHub truncates it, walk sub-trees.
//! 3. Restrict to the path prefix and diff by blob SHA against the store.
//! 4. Fetch what changed: per blob, or one tarball above the threshold.
//! 5. Store each file's bytes as a blob as soon as they are verified; return
//!    the changes (paths → blob ids), which the worker applies with the job's
//!    completion in one transaction.

use super::client::{ApiError, GithubClient};
use super::tarball;
use crate::store::models::{ClaimedJob, DocumentChange, FileFailure, SyncCounts, SyncResult};
use crate::store::{Store, StoreError};
use crate::sync::{ReconcileError, Reconciler};
use async_trait::async_trait;
use base64::Engine;
use futures::StreamExt;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

/// Tries per blob before it is reported as a per-file failure.
const BLOB_TRIES: u32 = 3;

/// Blob downloads in flight per sync: well under GitHub's 100 concurrent
/// requests, and gentle on its secondary rate limits.
const BLOB_CONCURRENCY: usize = 8;

pub struct GithubReconciler {
    client: Arc<GithubClient>,
    store: Arc<dyn Store>,
    tarball_threshold: usize,
}

#[derive(Debug, Deserialize)]
struct TreeResponse {
    tree: Vec<TreeEntry>,
    #[serde(default)]
    truncated: bool,
}

#[derive(Debug, Deserialize, Clone)]
struct TreeEntry {
    path: String,
    mode: String,
    #[serde(rename = "type")]
    kind: String,
    sha: String,
    size: Option<i64>,
}

#[derive(Deserialize)]
struct RefResponse {
    object: RefObject,
}

#[derive(Deserialize)]
struct RefObject {
    sha: String,
}

impl From<ApiError> for ReconcileError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Transient(m) => ReconcileError::Transient(m),
            ApiError::Permanent(m) => ReconcileError::Permanent(m),
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

/// A blob the sync must download.
struct Wanted {
    path: String,
    sha: String,
    created: bool,
}

impl GithubReconciler {
    pub fn new(client: Arc<GithubClient>, store: Arc<dyn Store>, tarball_threshold: usize) -> Self {
        Self {
            client,
            store,
            tarball_threshold,
        }
    }

    async fn resolve_head(&self, job: &ClaimedJob, repo: &str) -> Result<String, ReconcileError> {
        if let Some(sha) = &job.job.head_sha {
            return Ok(sha.clone());
        }
        let branch = job.job.git_ref.trim_start_matches("refs/heads/");
        let res = self
            .client
            .get(
                job.job.installation_id,
                &format!("/repos/{repo}/git/ref/heads/{branch}"),
                "application/vnd.github+json",
            )
            .await
            .map_err(|e| match e {
                ApiError::NotFound(_) => {
                    ReconcileError::Permanent(format!("branch `{branch}` not found in {repo}"))
                }
                other => other.into(),
            })?;
        let r: RefResponse = res
            .json()
            .await
            .map_err(|e| ReconcileError::Transient(format!("reading the ref: {e}")))?;
        Ok(r.object.sha)
    }

    async fn tree(
        &self,
        installation: i64,
        repo: &str,
        sha: &str,
        recursive: bool,
    ) -> Result<TreeResponse, ReconcileError> {
        let q = if recursive { "?recursive=1" } else { "" };
        let res = self
            .client
            .get(
                installation,
                &format!("/repos/{repo}/git/trees/{sha}{q}"),
                "application/vnd.github+json",
            )
            .await?;
        res.json()
            .await
            .map_err(|e| ReconcileError::Transient(format!("reading the tree of {sha}: {e}")))
    }

    /// The full listing of `head` under `prefix`. A truncated recursive answer
    /// is replaced by a non-recursive walk that only enters directories on the
    /// way to (or inside) the prefix.
    async fn listing(
        &self,
        installation: i64,
        repo: &str,
        head: &str,
        prefix: &str,
    ) -> Result<Vec<TreeEntry>, ReconcileError> {
        let full = self.tree(installation, repo, head, true).await?;
        if !full.truncated {
            return Ok(full.tree);
        }
        tracing::info!(repo, head, "tree truncated by GitHub; walking sub-trees");
        let mut out = vec![];
        let mut pending = vec![(String::new(), head.to_owned())];
        while let Some((dir, sha)) = pending.pop() {
            let level = self.tree(installation, repo, &sha, false).await?;
            for mut e in level.tree {
                e.path = format!("{dir}{}", e.path);
                if e.kind == "tree" {
                    let as_dir = format!("{}/", e.path);
                    if prefix.starts_with(&as_dir) || as_dir.starts_with(prefix) {
                        pending.push((as_dir, e.sha.clone()));
                    }
                }
                out.push(e);
            }
        }
        Ok(out)
    }

    async fn fetch_blob(
        &self,
        installation: i64,
        repo: &str,
        sha: &str,
    ) -> Result<Vec<u8>, ApiError> {
        let mut last = None;
        for attempt in 0..BLOB_TRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * 2u64.pow(attempt))).await;
            }
            let res = self
                .client
                .get(
                    installation,
                    &format!("/repos/{repo}/git/blobs/{sha}"),
                    "application/vnd.github+json",
                )
                .await;
            match res {
                Ok(res) => match res.json::<BlobResponse>().await {
                    Ok(b) => return b.decode(),
                    Err(e) => last = Some(ApiError::Transient(format!("reading blob {sha}: {e}"))),
                },
                Err(e @ ApiError::Transient(_)) => last = Some(e),
                Err(other) => return Err(other),
            }
        }
        Err(last.unwrap_or_else(|| ApiError::Transient(format!("blob {sha}: no answer"))))
    }

    /// Downloads each distinct blob once, a few at a time. A rate limit on
    /// any of them stops the whole sync until the wait is over; other errors
    /// stay per blob (they become per-file failures).
    async fn fetch_blobs(
        &self,
        installation: i64,
        repo: &str,
        shas: Vec<&str>,
    ) -> Result<HashMap<String, Result<Vec<u8>, ApiError>>, ReconcileError> {
        // Owned items: borrowed ones trip the compiler's higher-ranked
        // inference for the `Send` future async_trait requires.
        let unique: HashSet<String> = shas.into_iter().map(str::to_owned).collect();
        let fetched: Vec<(String, Result<Vec<u8>, ApiError>)> = futures::stream::iter(unique)
            .map(|sha: String| async move {
                let result = self.fetch_blob(installation, repo, &sha).await;
                (sha, result)
            })
            .buffer_unordered(BLOB_CONCURRENCY)
            .collect()
            .await;
        let mut out = HashMap::with_capacity(fetched.len());
        for (sha, result) in fetched {
            if let Err(e @ ApiError::RateLimited { .. }) = result {
                return Err(e.into());
            }
            out.insert(sha, result);
        }
        Ok(out)
    }

    async fn fetch_tarball(
        &self,
        installation: i64,
        repo: &str,
        head: &str,
        wanted: &[Wanted],
    ) -> Result<HashMap<String, Vec<u8>>, ReconcileError> {
        let want: HashMap<String, String> = wanted
            .iter()
            .map(|w| (w.path.clone(), w.sha.clone()))
            .collect();
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
            // into thousands of blob calls while rate limited.
            Err(e @ ApiError::RateLimited { .. }) => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, "tarball download failed; fetching blobs one by one");
                return Ok(HashMap::new());
            }
        };
        let bytes = match res.bytes().await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, "tarball download broke off; fetching blobs one by one");
                return Ok(HashMap::new());
            }
        };
        Ok(
            match tokio::task::spawn_blocking(move || tarball::extract(&bytes, &want)).await {
                Ok(Ok(found)) => found,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "unreadable tarball; fetching blobs one by one");
                    HashMap::new()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "tarball extraction panicked; fetching blobs one by one");
                    HashMap::new()
                }
            },
        )
    }
}

#[derive(Deserialize)]
struct BlobResponse {
    content: String,
    encoding: String,
}

impl BlobResponse {
    fn decode(self) -> Result<Vec<u8>, ApiError> {
        if self.encoding != "base64" {
            return Err(ApiError::Permanent(format!(
                "unexpected blob encoding `{}`",
                self.encoding
            )));
        }
        let clean: String = self
            .content
            .chars()
            .filter(|c| !c.is_ascii_whitespace())
            .collect();
        base64::engine::general_purpose::STANDARD
            .decode(clean)
            .map_err(|e| ApiError::Transient(format!("blob content is not base64: {e}")))
    }
}

const LFS_HEADER: &[u8] = b"version https://git-lfs.github.com/spec/v1";

fn is_binary(bytes: &[u8]) -> bool {
    bytes.iter().take(8000).any(|b| *b == 0) || std::str::from_utf8(bytes).is_err()
}

#[async_trait]
impl Reconciler for GithubReconciler {
    async fn reconcile(&self, job: &ClaimedJob) -> Result<SyncResult, ReconcileError> {
        let installation = job.job.installation_id;
        let repo = job.job.repository_full_name.clone();
        let head = self.resolve_head(job, &repo).await?;
        let prefix = job.path_prefix.as_str();
        let entries = self.listing(installation, &repo, &head, prefix).await?;
        let stored = self
            .store
            .document_manifest(&job.job.connector_target_id)
            .await
            .map_err(|e| ReconcileError::Transient(format!("reading the stored documents: {e}")))?;

        let mut skipped: BTreeMap<String, i64> = BTreeMap::new();
        let mut skip = |reason: &str| *skipped.entry(reason.to_owned()).or_default() += 1;
        // Paths that stay in the store as they are.
        let mut keep: HashSet<String> = HashSet::new();
        let mut wanted: Vec<Wanted> = vec![];
        for e in entries
            .iter()
            .filter(|e| e.path.starts_with(prefix) && e.kind != "tree")
        {
            if e.kind == "commit" {
                skip("submodule");
            } else if e.mode == "120000" {
                skip("symlink");
            } else if e.size.unwrap_or(0) > job.max_file_bytes {
                skip("too_large");
            } else if stored.get(&e.path) == Some(&e.sha) {
                skip("unchanged");
                keep.insert(e.path.clone());
            } else {
                wanted.push(Wanted {
                    path: e.path.clone(),
                    sha: e.sha.clone(),
                    created: !stored.contains_key(&e.path),
                });
            }
        }

        let mut contents = if wanted.len() > self.tarball_threshold {
            self.fetch_tarball(installation, &repo, &head, &wanted)
                .await?
        } else {
            HashMap::new()
        };
        let missing: Vec<&str> = wanted
            .iter()
            .filter(|w| !contents.contains_key(&w.path))
            .map(|w| w.sha.as_str())
            .collect();
        let by_sha = self.fetch_blobs(installation, &repo, missing).await?;
        let mut failures = vec![];
        let mut changes = vec![];
        let mut counts = SyncCounts::default();
        for w in &wanted {
            let fetched = match contents.remove(&w.path) {
                Some(b) => Ok(b),
                None => by_sha.get(&w.sha).cloned().unwrap_or_else(|| {
                    Err(ApiError::Transient(format!(
                        "blob {} was not fetched",
                        w.sha
                    )))
                }),
            };
            let bytes = match fetched {
                Ok(b) => b,
                Err(e) => {
                    failures.push(FileFailure {
                        path: w.path.clone(),
                        message: e.to_string(),
                    });
                    // Keep what is stored: the next sync retries it.
                    keep.insert(w.path.clone());
                    continue;
                }
            };
            if bytes.len() < 1024 && bytes.starts_with(LFS_HEADER) {
                skip("lfs_pointer");
                continue;
            }
            // Stored now, under its verified git blob id; the completion only
            // points the document at it, and the bytes go out of scope here.
            match self.store.put_blob(&w.sha, &bytes).await {
                Ok(()) => {}
                Err(StoreError::Invalid(message)) => {
                    failures.push(FileFailure {
                        path: w.path.clone(),
                        message,
                    });
                    keep.insert(w.path.clone());
                    continue;
                }
                Err(e) => {
                    return Err(ReconcileError::Transient(format!(
                        "storing blob {}: {e}",
                        w.sha
                    )))
                }
            }
            if w.created {
                counts.created += 1;
            } else {
                counts.updated += 1;
            }
            keep.insert(w.path.clone());
            changes.push(DocumentChange::Upsert {
                path: w.path.clone(),
                blob_sha: w.sha.clone(),
                size: bytes.len() as i64,
                is_binary: is_binary(&bytes),
            });
        }
        // Everything stored that the tree no longer backs goes: deleted, moved
        // out of the prefix, or now a symlink, submodule, too large or LFS pointer.
        for path in stored.keys().filter(|p| !keep.contains(*p)) {
            counts.deleted += 1;
            changes.push(DocumentChange::Delete { path: path.clone() });
        }
        counts.skipped = skipped.values().sum();
        Ok(SyncResult {
            head_sha: Some(head),
            counts,
            skipped_reasons: skipped,
            failures,
            changes,
        })
    }
}
