//! Reading the files a sync needs out of a repository tarball.
//!
//! GitHub's tarball is `git archive` of the commit under one top directory.
//! Only regular files whose path is wanted are kept, and each is checked
//! against the tree's blob SHA (`sha1("blob <len>\0" + bytes)`), so a
//! tarball can never put different content under a path than the tree says.

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

/// Extracts `wanted` (path → blob SHA) from a `.tar.gz`. Paths missing from the
/// archive, or whose bytes do not hash to the wanted SHA, are left out: the
/// caller fetches those one by one.
pub fn extract(
    tar_gz: &[u8],
    wanted: &HashMap<String, String>,
) -> std::io::Result<HashMap<String, Vec<u8>>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tar_gz));
    let mut found = HashMap::with_capacity(wanted.len());
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path()?.to_string_lossy().into_owned();
        // Drop the `owner-repo-sha/` top directory.
        let Some((_, rel)) = path.split_once('/') else {
            continue;
        };
        let Some(sha) = wanted.get(rel) else { continue };
        let mut bytes = Vec::with_capacity(entry.size() as usize);
        entry.read_to_end(&mut bytes)?;
        if git_blob_sha(&bytes) == *sha {
            found.insert(rel.to_owned(), bytes);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_sha_matches_git() {
        // `printf 'hello\n' | git hash-object --stdin`
        assert_eq!(
            git_blob_sha(b"hello\n"),
            "ce013625030ba8dba906f756967f9e9ca394464a"
        );
        // `git hash-object -t blob /dev/null`
        assert_eq!(
            git_blob_sha(b""),
            "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
        );
    }
}
