//! One blob, bounded and verified: `GET /git/blobs/{sha}` with
//! `Accept: application/vnd.github.raw+json`, which GitHub answers with the
//! blob's raw bytes (the JSON form wraps them in base64, a third larger and
//! decoded in memory). A proxy or server that answers JSON anyway is read
//! too, within the base64 size of the blob. The answer is read chunk by
//! chunk and cut off past the tree's size for the blob, so a hostile answer
//! costs at most that many bytes; the bytes must then hash to the tree's SHA.

use super::client::{ApiError, GithubClient};
use super::tarball::{Expected, Verified};
use crate::retry::{retry, Backoff};
use base64::Engine;
use reqwest::Response;
use serde::Deserialize;
use std::time::Duration;

/// Tries per blob before it is reported as a per-file failure.
const BLOB_TRIES: u32 = 3;
const BLOB_BACKOFF: Backoff = Backoff::new(Duration::from_millis(400), Duration::from_secs(5));

pub const RAW: &str = "application/vnd.github.raw+json";

/// The most bytes a JSON blob answer of a `size`-byte blob may take:
/// base64 (4 per 3 bytes) in 60-character lines (each `\n` escaped in JSON
/// as two bytes), plus the JSON around it.
pub fn json_bound(size: u64) -> u64 {
    let b64 = size.div_ceil(3).saturating_mul(4);
    b64.saturating_add(2 * (b64 / 60 + 1)).saturating_add(4096)
}

/// Downloads and checks one blob, retrying transient failures. A content
/// failure (too large, not the tree's blob) is `Permanent`: trying again
/// would spend calls on the same answer.
pub async fn fetch(
    client: &GithubClient,
    installation: i64,
    repo: &str,
    expected: &Expected,
) -> Result<Verified, ApiError> {
    let sha = &expected.sha;
    let path = format!("/repos/{repo}/git/blobs/{sha}");
    retry(
        BLOB_TRIES,
        BLOB_BACKOFF,
        |_| async {
            let res = client.get(installation, &path, RAW).await?;
            let bytes = read_blob(res, expected.size).await?;
            Verified::check(bytes, expected)
                .map_err(|why| ApiError::Permanent(format!("blob {sha}: {why}")))
        },
        |e| matches!(e, ApiError::Transient(_)),
    )
    .await
}

#[derive(Deserialize)]
struct BlobJson {
    content: String,
    encoding: String,
}

/// The blob's bytes from a raw or a JSON answer, reading at most what a
/// `size`-byte blob can take.
async fn read_blob(res: Response, size: u64) -> Result<Vec<u8>, ApiError> {
    let json = res
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.starts_with("application/json"));
    if !json {
        return read_bounded(res, size, "the tree says").await;
    }
    let body = read_bounded(res, json_bound(size), "the tree says (in base64)").await?;
    let b: BlobJson = serde_json::from_slice(&body)
        .map_err(|e| ApiError::Transient(format!("reading the blob answer: {e}")))?;
    if b.encoding != "base64" {
        return Err(ApiError::Permanent(format!(
            "unexpected blob encoding `{}`",
            b.encoding
        )));
    }
    let clean: Vec<u8> = b
        .content
        .bytes()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(clean)
        .map_err(|e| ApiError::Permanent(format!("blob content is not base64: {e}")))
}

/// The body, or a `Permanent` error as soon as it passes `limit` bytes (a
/// `Content-Length` over it is refused before reading). The buffer grows
/// with what arrives, never from a length the server states.
/// `what` names the bound in the message ("the tree says").
pub async fn read_bounded(mut res: Response, limit: u64, what: &str) -> Result<Vec<u8>, ApiError> {
    let too_large = |n: u64| {
        ApiError::Permanent(format!(
            "the answer is larger than {what} ({n} bytes or more, at most {limit})"
        ))
    };
    if let Some(n) = res.content_length().filter(|n| *n > limit) {
        return Err(too_large(n));
    }
    let mut out = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| {
        ApiError::Transient(format!("reading the answer: {}", super::http::describe(&e)))
    })? {
        let n = out.len() as u64 + chunk.len() as u64;
        if n > limit {
            return Err(too_large(n));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_bound_covers_githubs_layout() {
        for size in [0u64, 1, 2, 3, 59, 60, 1000, 1 << 20] {
            let bytes = vec![0xa5u8; size as usize];
            let b64 = base64::engine::general_purpose::STANDARD.encode(&bytes);
            let wrapped: String = b64
                .as_bytes()
                .chunks(60)
                .map(|l| format!("{}\n", String::from_utf8_lossy(l)))
                .collect();
            let answer = serde_json::json!({
                "sha": "0".repeat(40), "node_id": "x".repeat(40), "size": size,
                "url": format!("https://api.github.com/repos/{}/git/blobs/{}", "o".repeat(100), "0".repeat(40)),
                "content": wrapped, "encoding": "base64",
            })
            .to_string();
            assert!(
                answer.len() as u64 <= json_bound(size),
                "{size}: {} > {}",
                answer.len(),
                json_bound(size)
            );
        }
        // And it stays close to 4/3: a larger answer is cut off early.
        assert!(json_bound(3_000_000) < 4_200_000);
    }
}
