//! The pure part of a sync: from the tree listing, what the store holds and
//! the target's settings, decide what to fetch, keep, delete and skip (with
//! reasons). No HTTP and no store here, so every decision has a unit test.

use crate::store::models::FileFailure;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};

/// One entry of a git tree listing, as GitHub's trees API answers it.
#[derive(Debug, Deserialize, Clone)]
pub struct TreeEntry {
    pub path: String,
    pub mode: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub sha: String,
    pub size: Option<i64>,
}

/// What of the target's settings the plan needs.
#[derive(Debug, Clone, Copy)]
pub struct TargetSettings<'a> {
    pub prefix: &'a str,
    pub max_file_bytes: i64,
}

/// A blob the sync must download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub path: String,
    pub sha: String,
    /// The tree's size for the blob: the most bytes a download may carry.
    pub size: u64,
    /// No document at this path yet (counted `created`, not `updated`).
    pub created: bool,
}

#[derive(Debug, Default)]
pub struct Plan {
    pub fetch: Vec<Wanted>,
    /// Stored paths the tree still backs unchanged.
    pub keep: HashSet<String>,
    /// Stored paths the tree no longer backs (deleted, moved out of the
    /// prefix, now a symlink, a submodule, too large or not a clean path).
    pub delete: Vec<String>,
    pub skipped: BTreeMap<String, i64>,
    /// Tree entries refused before any download (unclean paths).
    pub failures: Vec<FileFailure>,
    /// Bytes of every blob of the whole tree, prefix or not: what the
    /// tarball would carry (before tar's per-entry overhead).
    pub tree_bytes: u64,
    /// Entries of the whole tree (blobs, trees, links): what the tarball holds.
    pub tree_entries: u64,
}

impl Plan {
    /// Bytes of the blobs to fetch, by the tree's sizes.
    pub fn wanted_bytes(&self) -> u64 {
        self.fetch.iter().map(|w| w.size).sum()
    }
}

/// Why `path` is not a clean relative path, or `None` when it is: no empty,
/// `.` or `..` component, no leading or trailing `/`, no NUL or other
/// control character. Such a path from a tree (a hostile or broken API
/// endpoint) could address something outside the target when a consumer
/// writes documents to disk, so it is never stored.
pub fn unclean_path(path: &str) -> Option<&'static str> {
    if path.is_empty() {
        return Some("the path is empty");
    }
    if path.starts_with('/') {
        return Some("the path is absolute");
    }
    if path.chars().any(|c| c.is_control()) {
        return Some("the path contains a NUL or control character");
    }
    for component in path.split('/') {
        match component {
            "" => return Some("the path has an empty component"),
            "." | ".." => return Some("the path has a `.` or `..` component"),
            _ => {}
        }
    }
    None
}

/// Builds the plan. `entries` is the whole tree (the tarball's size comes
/// from it); only what lies under the prefix is synced.
pub fn plan(
    entries: &[TreeEntry],
    stored: &HashMap<String, String>,
    target: TargetSettings<'_>,
) -> Plan {
    let mut p = Plan::default();
    let skip = |skipped: &mut BTreeMap<String, i64>, reason: &str| {
        *skipped.entry(reason.to_owned()).or_default() += 1
    };
    for e in entries {
        p.tree_entries += 1;
        if e.kind == "blob" {
            p.tree_bytes = p
                .tree_bytes
                .saturating_add(e.size.unwrap_or(0).max(0) as u64);
        }
        if e.kind == "tree" || !e.path.starts_with(target.prefix) {
            continue;
        }
        if let Some(why) = unclean_path(&e.path) {
            p.failures.push(FileFailure {
                path: e.path.clone(),
                message: format!("refused: {why}"),
            });
            continue;
        }
        if e.kind == "commit" {
            skip(&mut p.skipped, "submodule");
        } else if e.mode == "120000" {
            skip(&mut p.skipped, "symlink");
        } else if e.size.unwrap_or(0) > target.max_file_bytes {
            skip(&mut p.skipped, "too_large");
        } else if stored.get(&e.path) == Some(&e.sha) {
            skip(&mut p.skipped, "unchanged");
            p.keep.insert(e.path.clone());
        } else {
            p.fetch.push(Wanted {
                path: e.path.clone(),
                sha: e.sha.clone(),
                size: e.size.unwrap_or(0).max(0) as u64,
                created: !stored.contains_key(&e.path),
            });
        }
    }
    let fetching: HashSet<&str> = p.fetch.iter().map(|w| w.path.as_str()).collect();
    let mut delete: Vec<String> = stored
        .keys()
        .filter(|path| !p.keep.contains(*path) && !fetching.contains(path.as_str()))
        .cloned()
        .collect();
    delete.sort();
    p.delete = delete;
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(path: &str, sha: &str, size: i64) -> TreeEntry {
        TreeEntry {
            path: path.into(),
            mode: "100644".into(),
            kind: "blob".into(),
            sha: sha.into(),
            size: Some(size),
        }
    }

    fn settings(prefix: &str) -> TargetSettings<'_> {
        TargetSettings {
            prefix,
            max_file_bytes: 100,
        }
    }

    #[test]
    fn clean_paths_pass_and_unclean_ones_say_why() {
        for ok in [
            "a",
            "docs/a.md",
            "a b/c&d.md",
            "caf\u{e9}.md",
            "..a/b..",
            ".hidden",
        ] {
            assert_eq!(unclean_path(ok), None, "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("../../etc/passwd", "`..`"),
            ("docs/../x", "`..`"),
            ("./x", "`..`"),
            ("a//b", "empty component"),
            ("a/", "empty component"),
            ("a\0b", "control"),
            ("a\nb", "control"),
            ("a\u{1b}[31m", "control"),
        ] {
            let got = unclean_path(bad).unwrap_or("clean");
            assert!(got.contains(why), "{bad:?}: {got}");
        }
    }

    #[test]
    fn new_changed_unchanged_and_gone_files() {
        let entries = vec![
            blob("new.md", "n1", 5),
            blob("changed.md", "c2", 6),
            blob("same.md", "s1", 7),
            TreeEntry {
                kind: "tree".into(),
                mode: "040000".into(),
                size: None,
                ..blob("dir", "t1", 0)
            },
        ];
        let stored: HashMap<String, String> =
            [("changed.md", "c1"), ("same.md", "s1"), ("gone.md", "g1")]
                .into_iter()
                .map(|(a, b)| (a.to_owned(), b.to_owned()))
                .collect();
        let p = plan(&entries, &stored, settings(""));
        let fetch: Vec<(&str, bool, u64)> = p
            .fetch
            .iter()
            .map(|w| (w.path.as_str(), w.created, w.size))
            .collect();
        assert_eq!(fetch, vec![("new.md", true, 5), ("changed.md", false, 6)]);
        assert_eq!(p.keep, HashSet::from(["same.md".to_owned()]));
        assert_eq!(p.delete, vec!["gone.md".to_owned()]);
        assert_eq!(p.skipped, BTreeMap::from([("unchanged".to_owned(), 1)]));
        assert_eq!((p.tree_bytes, p.tree_entries), (18, 4));
        assert_eq!(p.wanted_bytes(), 11);
    }

    #[test]
    fn skips_symlinks_submodules_and_large_files_and_deletes_their_old_documents() {
        let entries = vec![
            TreeEntry {
                mode: "120000".into(),
                ..blob("link", "l1", 4)
            },
            TreeEntry {
                kind: "commit".into(),
                mode: "160000".into(),
                size: None,
                ..blob("sub", "m1", 0)
            },
            blob("big.bin", "b1", 101),
            blob("edge.bin", "e1", 100),
        ];
        let stored = HashMap::from([("link".to_owned(), "old".to_owned())]);
        let p = plan(&entries, &stored, settings(""));
        assert_eq!(p.fetch.len(), 1, "{:?}", p.fetch);
        assert_eq!(p.fetch[0].path, "edge.bin", "at the limit is not over it");
        let skipped: Vec<(&str, i64)> = p.skipped.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            skipped,
            vec![("submodule", 1), ("symlink", 1), ("too_large", 1)]
        );
        assert_eq!(p.delete, vec!["link".to_owned()]);
        // The tarball would carry the large file too.
        assert_eq!(p.tree_bytes, 4 + 101 + 100);
    }

    #[test]
    fn the_prefix_limits_the_sync_but_not_the_tarball_size() {
        let entries = vec![
            blob("docs/a.md", "a", 10),
            blob("src/big.rs", "b", 1_000_000),
        ];
        let stored = HashMap::from([("src/old.rs".to_owned(), "o".to_owned())]);
        let p = plan(&entries, &stored, settings("docs/"));
        assert_eq!(p.fetch.len(), 1);
        assert_eq!(p.wanted_bytes(), 10);
        assert_eq!(p.tree_bytes, 1_000_010);
        assert_eq!(
            p.delete,
            vec!["src/old.rs".to_owned()],
            "moved out of the prefix"
        );
    }

    #[test]
    fn unclean_tree_paths_are_failures_and_never_fetched() {
        let entries = vec![
            blob("../../etc/passwd", "x", 3),
            blob("a\0b", "y", 3),
            blob("/abs", "z", 3),
            blob("ok.md", "o", 3),
        ];
        let stored = HashMap::from([("a\0b".to_owned(), "old".to_owned())]);
        let p = plan(&entries, &stored, settings(""));
        assert_eq!(p.fetch.len(), 1);
        assert_eq!(p.fetch[0].path, "ok.md");
        let failed: Vec<&str> = p.failures.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(failed, vec!["../../etc/passwd", "a\0b", "/abs"]);
        assert!(p
            .failures
            .iter()
            .all(|f| f.message.starts_with("refused: ")));
        // A document stored under such a path before this check existed goes.
        assert_eq!(p.delete, vec!["a\0b".to_owned()]);
    }
}
