//! Reading the files a sync needs out of a repository tarball, as a stream.
//!
//! GitHub's tarball is `git archive` of the commit under one top directory.
//! The archive comes from the network, so nothing in it is trusted:
//! - only regular files are read, and only those whose path (under the
//!   archive's one top directory, after a PAX `path` override) is a clean
//!   relative path the plan wants; links, devices, `..`, absolute paths and
//!   entries under another top directory are passed over;
//! - a file is read only if its size is the tree's size for its blob, and
//!   never more than that many bytes; no size from a header ever sizes an
//!   allocation;
//! - each file is checked against the tree's blob SHA before it is handed on;
//! - the decompressed bytes and the entries of the whole archive are capped
//!   (a gzip bomb, an endless archive), and so are PAX headers (64 KiB).
//!
//! The tar crate runs in raw mode: it hands PAX and GNU extension headers
//! over as entries instead of reading them into memory whole (its own
//! handling reads a PAX header of any size and applies a PAX `size` to the
//! framing). A PAX `size` is never honoured: git writes one only for files
//! of 8 GiB and more, which no target syncs.

use sha1::{Digest, Sha1};
use std::collections::HashMap;
use std::io::Read;

/// The git blob id of `bytes`.
pub fn git_blob_sha(bytes: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", bytes.len()).as_bytes());
    h.update(bytes);
    hex::encode(h.finalize())
}

/// Bytes that are, checked, the git blob the tree names. The only way to
/// make one is [`Verified::check`], so whatever takes a `Verified` (the
/// reconciler's `accept_file`) cannot be handed unchecked bytes.
#[derive(Debug, Clone)]
pub struct Verified(Vec<u8>);

impl Verified {
    /// `bytes` if they are `expected` (size and git blob SHA), else why not.
    pub fn check(bytes: Vec<u8>, expected: &Expected) -> Result<Verified, String> {
        if bytes.len() as u64 != expected.size {
            return Err(format!(
                "{} bytes where the tree says {}",
                bytes.len(),
                expected.size
            ));
        }
        let got = git_blob_sha(&bytes);
        if !got.eq_ignore_ascii_case(&expected.sha) {
            return Err(format!(
                "content hashes to {got}, not the tree's blob {}",
                expected.sha
            ));
        }
        Ok(Verified(bytes))
    }

    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// What the tree says a wanted blob is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    pub sha: String,
    pub size: u64,
}

/// Caps on one archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Decompressed bytes (tar headers included).
    pub max_bytes: u64,
    pub max_entries: u64,
}

/// The largest PAX extended header read (git writes a few hundred bytes).
const MAX_PAX_HEADER: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A cap was hit: the archive is not what the tree says it is.
    #[error("the archive is over its cap: {0}")]
    OverCap(String),
    /// Unreadable (a broken download, not gzip, not tar).
    #[error("unreadable archive: {0}")]
    Io(#[from] std::io::Error),
}

/// How far an extraction got.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Extracted {
    pub entries: u64,
    pub delivered: u64,
    /// Entries passed over because they are not a regular file under the
    /// top directory at a clean path (links, `..`, absolute, other tops).
    pub refused: u64,
}

/// Counts decompressed bytes and fails the read past the cap, so a gzip
/// bomb costs at most `limit` bytes of inflating, never memory.
struct Capped<R> {
    inner: R,
    read: u64,
    limit: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.read > self.limit {
            return Err(over_bytes(self.limit));
        }
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        if self.read > self.limit {
            return Err(over_bytes(self.limit));
        }
        Ok(n)
    }
}

fn over_bytes(limit: u64) -> std::io::Error {
    std::io::Error::other(OverBytes(limit))
}

#[derive(Debug)]
struct OverBytes(u64);
impl std::fmt::Display for OverBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "more than {} decompressed bytes", self.0)
    }
}
impl std::error::Error for OverBytes {}

fn classify(e: std::io::Error) -> ArchiveError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<OverBytes>())
    {
        Some(over) => ArchiveError::OverCap(over.to_string()),
        None => ArchiveError::Io(e),
    }
}

/// Reads the `.tar.gz` stream `tar_gz` and hands each wanted file, checked,
/// to `deliver` (path, bytes) as soon as it is read; `deliver` answering
/// false stops the extraction. Stops early once every wanted file is found.
/// Files missing from the archive, or different from what the tree says,
/// are simply not delivered: the caller fetches those one by one.
pub fn extract<R: Read>(
    tar_gz: R,
    wanted: &HashMap<String, Expected>,
    limits: Limits,
    mut deliver: impl FnMut(String, Verified) -> bool,
) -> Result<Extracted, ArchiveError> {
    let capped = Capped {
        inner: flate2::read::GzDecoder::new(tar_gz),
        read: 0,
        limit: limits.max_bytes,
    };
    let mut archive = tar::Archive::new(capped);
    let mut out = Extracted::default();
    let mut missing = wanted.len();
    let mut top: Option<Vec<u8>> = None;
    // A PAX `path` for the next entry; `Err` when the next entry must be
    // passed over (an unreadable or size-changing extension header).
    let mut next_path: Option<Result<Vec<u8>, ()>> = None;
    let mut entries = archive.entries().map_err(classify)?.raw(true);
    while missing > 0 {
        let Some(entry) = entries.next() else { break };
        let mut entry = entry.map_err(classify)?;
        out.entries += 1;
        if out.entries > limits.max_entries {
            return Err(ArchiveError::OverCap(format!(
                "more than {} entries",
                limits.max_entries
            )));
        }
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue; // git's `comment=<commit>`; its data is skipped unread
        }
        if kind.is_pax_local_extensions() {
            next_path = read_pax_path(&mut entry).map_err(classify)?;
            continue;
        }
        if kind.is_gnu_longname() || kind.is_gnu_longlink() {
            // Not what git writes: the entry it names is passed over.
            next_path = Some(Err(()));
            continue;
        }
        let override_path = next_path.take();
        let path: Vec<u8> = match override_path {
            Some(Ok(p)) => p,
            Some(Err(())) => {
                out.refused += 1;
                continue;
            }
            None => entry.path_bytes().into_owned(),
        };
        // The first entry names the top directory; nothing outside it counts.
        let Some(rel) = under_top(&mut top, &path) else {
            out.refused += 1;
            continue;
        };
        if rel.is_empty() {
            continue; // the top directory itself
        }
        if kind != tar::EntryType::Regular {
            // Directories, links, devices: never extracted.
            if kind != tar::EntryType::Directory {
                out.refused += 1;
            }
            continue;
        }
        let Some(rel) = std::str::from_utf8(rel)
            .ok()
            .filter(|r| super::plan::unclean_path(r).is_none())
        else {
            out.refused += 1;
            continue;
        };
        let Some(expected) = wanted.get(rel) else {
            continue;
        };
        if entry.size() != expected.size {
            continue; // the blob path fetches it, bounded by the tree's size
        }
        let mut bytes = Vec::new();
        (&mut entry)
            .take(expected.size)
            .read_to_end(&mut bytes)
            .map_err(classify)?;
        if let Ok(file) = Verified::check(bytes, expected) {
            missing -= 1;
            out.delivered += 1;
            if !deliver(rel.to_owned(), file) {
                break;
            }
        }
    }
    Ok(out)
}

/// `path` without the archive's top directory, which the first entry sets
/// (empty for the top directory itself); `None` for a path under another
/// top, or none.
fn under_top<'p>(top: &mut Option<Vec<u8>>, path: &'p [u8]) -> Option<&'p [u8]> {
    let (first, rest) = match path.iter().position(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (path, &path[path.len()..]),
    };
    if first.is_empty() || first == b"." || first == b".." {
        return None;
    }
    match top {
        Some(t) if t.as_slice() != first => return None,
        Some(_) => {}
        None => *top = Some(first.to_vec()),
    }
    Some(rest.strip_suffix(b"/").unwrap_or(rest))
}

/// Reads a PAX extended header (at most [`MAX_PAX_HEADER`] bytes): `None`
/// when it overrides no path (the next entry keeps its header path), the
/// path it sets, or `Err` when the next entry must be passed over (a `size`
/// or `linkpath` override, a malformed record).
fn read_pax_path<R: Read>(
    entry: &mut tar::Entry<'_, R>,
) -> std::io::Result<Option<Result<Vec<u8>, ()>>> {
    if entry.size() > MAX_PAX_HEADER {
        return Err(std::io::Error::other(format!(
            "a PAX header of {} bytes (at most {MAX_PAX_HEADER})",
            entry.size()
        )));
    }
    let mut data = Vec::new();
    entry.take(MAX_PAX_HEADER).read_to_end(&mut data)?;
    let mut path = None;
    for ext in tar::PaxExtensions::new(&data) {
        let Ok(ext) = ext else {
            return Ok(Some(Err(())));
        };
        match ext.key_bytes() {
            b"path" => path = Some(ext.value_bytes().to_vec()),
            b"size" | b"linkpath" => return Ok(Some(Err(()))),
            _ => {}
        }
    }
    Ok(path.map(Ok))
}

#[cfg(test)]
#[path = "tarball_tests.rs"]
mod tests;
