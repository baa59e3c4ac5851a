//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs` call these with
//! libFuzzer's bytes, and `tests/fuzz_corpus.rs` replays every kept corpus
//! entry through them on stable Rust, so CI checks the corpora without a
//! nightly toolchain). Each takes arbitrary bytes from the network's point of
//! view and must neither panic nor break the invariant it asserts.

use crate::domain::{DeliveryId, EventName};
use crate::github::plan::unclean_path;
use crate::github::tarball::{self, Expected, Limits};
use crate::ingress::dispatch::{dispatch, fields_for};
use crate::ingress::envelope::{decode_payload, BodyEncoding, Fields, GithubWebhookEnvelope};
use crate::ingress::signature::{sign, WebhookSecrets};
use std::collections::HashMap;

/// The events dispatch treats differently, and one it ignores.
const EVENTS: [&str; 6] = [
    "push",
    "installation",
    "installation_repositories",
    "repository",
    "ping",
    "pull_request",
];

/// `X-Hub-Signature-256` against a body: the first byte splits the input
/// into header and body. Only a header made from the current or previous
/// secret verifies, and the right one says so.
pub fn signature(data: &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (header, body) = rest.split_at((n as usize).min(rest.len()));
    let secrets = WebhookSecrets::new(b"current".to_vec(), Some(b"previous".to_vec()));
    let verified = secrets.verify(Some(header), body);
    if let Ok(slot) = verified {
        let expected = if slot == 0 { "current" } else { "previous" };
        assert_eq!(
            header,
            sign(expected.as_bytes(), body).as_bytes(),
            "a header verified that is not the HMAC of the body"
        );
    }
    assert_eq!(
        secrets
            .verify(Some(sign(b"current", body).as_bytes()), body)
            .ok(),
        Some(0)
    );
    assert_eq!(
        secrets
            .verify(Some(sign(b"previous", body).as_bytes()), body)
            .ok(),
        Some(1)
    );
}

/// Envelope normalization and dispatch over arbitrary JSON, for each event
/// (the first byte picks it). The routing-fields parse that pushes and
/// ignored events use must lead to the same plan as the whole parse.
pub fn envelope(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let event = EVENTS[pick as usize % EVENTS.len()];
    dispatch_both(event, body, BodyEncoding::Json);
}

/// As [`envelope`], for `application/x-www-form-urlencoded` bodies.
pub fn form_body(data: &[u8]) {
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let event = EVENTS[pick as usize % EVENTS.len()];
    dispatch_both(event, body, BodyEncoding::Form);
}

fn dispatch_both(event: &str, body: &[u8], encoding: BodyEncoding) {
    let event = EventName::parse(event).expect("a valid event name");
    let id = DeliveryId::parse("fuzz-delivery").expect("a valid delivery id");
    let plan = |fields: Fields| {
        decode_payload(body, encoding, fields).map(|payload| {
            dispatch(&GithubWebhookEnvelope::new(
                id.clone(),
                event.clone(),
                payload,
            ))
        })
    };
    let whole = plan(Fields::Whole);
    // What the handler runs: the routing parse where dispatch allows it.
    let used = plan(fields_for(&event));
    match (whole, used) {
        (Ok(Ok(a)), Ok(Ok(b))) => assert_eq!(a, b, "the routing parse changed the plan"),
        // The routing parse skips what it does not need, so it may accept a
        // body the whole parse refuses; never the other way round.
        (Ok(_), Err(e)) => panic!("the routing parse refused what the whole parse read: {e}"),
        _ => {}
    }
}

/// Tarball extraction: arbitrary bytes as a `.tar.gz`, with a few wanted
/// paths. Nothing delivered is other than what was wanted, at its size and
/// SHA, and the caps hold.
pub fn tarball(data: &[u8]) {
    let wanted: HashMap<String, Expected> = [("a.md", b"a\n".as_slice()), ("d/b.txt", b"")]
        .into_iter()
        .map(|(p, bytes)| {
            (
                p.to_owned(),
                Expected {
                    sha: tarball::git_blob_sha(bytes),
                    size: bytes.len() as u64,
                },
            )
        })
        .collect();
    let limits = Limits {
        max_bytes: 1 << 20,
        max_entries: 64,
    };
    let _ = tarball::extract(data, &wanted, limits, |path, file| {
        let w = wanted.get(&path).expect("only wanted paths are delivered");
        let bytes = file.into_bytes();
        assert_eq!(bytes.len() as u64, w.size);
        assert_eq!(tarball::git_blob_sha(&bytes), w.sha);
        true
    });
}

/// Tree paths: whatever `unclean_path` lets through is a clean relative path.
pub fn path(data: &[u8]) {
    let Ok(p) = std::str::from_utf8(data) else {
        return;
    };
    if unclean_path(p).is_none() {
        assert!(!p.is_empty() && !p.starts_with('/'), "{p:?}");
        assert!(
            p.split('/').all(|c| !c.is_empty() && c != "." && c != ".."),
            "{p:?}"
        );
        assert!(!p.chars().any(char::is_control), "{p:?}");
    }
}

/// The admin API's query strings and cursors: any query string either
/// parses into valid page parameters or is refused, never a panic.
pub fn admin_query(data: &[u8]) {
    let Ok(q) = std::str::from_utf8(data) else {
        return;
    };
    let params: Result<crate::admin::PageParams, _> = query_params(q);
    if let Ok(p) = params {
        if let Ok(page) = p.page() {
            assert!((1..=200).contains(&page.limit));
        }
    }
    if let Ok((seq, _)) = crate::store::sql::snapshot::parse_cursor(q) {
        assert!(seq >= 0);
    }
}

/// The query string as axum's `Query` extractor reads it.
fn query_params<T: serde::de::DeserializeOwned>(q: &str) -> Result<T, String> {
    // What is not a valid URI never reaches the extractor.
    let uri: axum::http::Uri = format!("/x?{q}")
        .parse()
        .map_err(|e: axum::http::uri::InvalidUri| e.to_string())?;
    axum::extract::Query::<T>::try_from_uri(&uri)
        .map(|axum::extract::Query(v)| v)
        .map_err(|e| e.to_string())
}
