//! The tree of a commit as GitHub lists it: the branch head when a job has
//! none, then one recursive listing, or a walk of sub-trees when GitHub
//! truncates it.

use super::branch_head::{self, BranchHead};
use super::client::GithubClient;
use super::plan::TreeEntry;
use crate::store::models::ClaimedJob;
use crate::sync::ReconcileError;
use serde::Deserialize;

use super::blobs::read_bounded;

/// The largest tree answer read: GitHub truncates a recursive listing at
/// 100,000 entries or 7 MB, so anything far larger is not GitHub's.
const MAX_TREE_ANSWER: u64 = 64 << 20;

#[derive(Debug, Deserialize)]
struct TreeResponse {
    tree: Vec<TreeEntry>,
    #[serde(default)]
    truncated: bool,
}

pub async fn resolve_head(
    client: &GithubClient,
    job: &ClaimedJob,
    repo: &str,
) -> Result<String, ReconcileError> {
    if let Some(sha) = &job.job.head_sha {
        return Ok(sha.clone());
    }
    let branch = job.job.git_ref.trim_start_matches("refs/heads/");
    // The same read as the missed-push pass's, unconditional.
    match branch_head::read(client, job.job.installation_id, repo, branch, None).await? {
        BranchHead::At { sha, .. } => Ok(sha),
        BranchHead::Missing => Err(ReconcileError::Permanent(format!(
            "branch `{branch}` not found in {repo}"
        ))),
        BranchHead::Unchanged => Err(ReconcileError::Transient(format!(
            "GitHub answered 304 to an unconditional read of {repo}@{branch}"
        ))),
    }
}

async fn tree(
    client: &GithubClient,
    installation: i64,
    repo: &str,
    sha: &str,
    recursive: bool,
) -> Result<TreeResponse, ReconcileError> {
    let q = if recursive { "?recursive=1" } else { "" };
    let res = client
        .get(
            installation,
            &format!("/repos/{repo}/git/trees/{sha}{q}"),
            "application/vnd.github+json",
        )
        .await?;
    let body = read_bounded(res, MAX_TREE_ANSWER, "GitHub's largest tree answer").await?;
    serde_json::from_slice(&body)
        .map_err(|e| ReconcileError::Transient(format!("reading the tree of {sha}: {e}")))
}

/// The listing of `head` and whether it is the whole tree. A truncated
/// recursive answer is replaced by a non-recursive walk that only enters
/// directories on the way to (or inside) the prefix (so not the whole tree).
pub async fn listing(
    client: &GithubClient,
    installation: i64,
    repo: &str,
    head: &str,
    prefix: &str,
) -> Result<(Vec<TreeEntry>, bool), ReconcileError> {
    let full = tree(client, installation, repo, head, true).await?;
    if !full.truncated {
        return Ok((full.tree, true));
    }
    tracing::info!(repo, head, "tree truncated by GitHub; walking sub-trees");
    let mut out = vec![];
    let mut pending = vec![(String::new(), head.to_owned())];
    while let Some((dir, sha)) = pending.pop() {
        let level = tree(client, installation, repo, &sha, false).await?;
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
    Ok((out, false))
}
