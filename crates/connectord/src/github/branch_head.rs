//! A branch head read with `If-None-Match`, for the missed-push pass: an
//! unchanged branch answers 304, which GitHub does not count against the
//! installation's rate limit.

use super::blobs::read_bounded;
use super::client::{ApiError, GithubClient};
use serde::Deserialize;

const MAX_REF_ANSWER: u64 = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BranchHead {
    /// The ETag given still matches.
    Unchanged,
    /// The head now, and the ETag to send next time (if GitHub gave one).
    At { sha: String, etag: Option<String> },
    /// No such branch (or repository) for this installation.
    Missing,
}

#[derive(Deserialize)]
struct RefResponse {
    object: RefObject,
}

#[derive(Deserialize)]
struct RefObject {
    sha: String,
}

pub async fn read(
    client: &GithubClient,
    installation_id: i64,
    repo: &str,
    branch: &str,
    etag: Option<&str>,
) -> Result<BranchHead, ApiError> {
    let path = format!("/repos/{repo}/git/ref/heads/{branch}");
    let res = match client
        .get_if_none_match(installation_id, &path, "application/vnd.github+json", etag)
        .await
    {
        Ok(Some(res)) => res,
        Ok(None) => return Ok(BranchHead::Unchanged),
        Err(ApiError::NotFound(_)) => return Ok(BranchHead::Missing),
        Err(e) => return Err(e),
    };
    let etag = res
        .headers()
        .get("etag")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = read_bounded(res, MAX_REF_ANSWER, "a ref answer can be").await?;
    let r: RefResponse = serde_json::from_slice(&body)
        .map_err(|e| ApiError::Transient(format!("reading the ref of {repo}@{branch}: {e}")))?;
    let sha = crate::domain::Sha::parse(&r.object.sha)
        .map_err(|e| ApiError::Permanent(format!("the ref of {repo}@{branch}: {e}")))?;
    Ok(BranchHead::At {
        sha: sha.as_str().to_owned(),
        etag,
    })
}
