//! Blobs or the tarball: the rule that picks how a sync downloads what its
//! plan wants, from what the tree already tells. docs/benchmarks.md has the
//! numbers behind the constants.
//!
//! Two costs count: REST calls (an installation's 5,000 an hour are shared
//! by every repository it syncs) and time. k blobs cost k calls, 8 at a
//! time; the tarball costs one call but carries the whole tree, prefix or
//! not. So the tarball wins a first sync, and blobs win a small push and a
//! small prefix of a big monorepo, unless the budget left could not pay for
//! the blob calls.

use std::time::Duration;

/// How a sync downloads. `Auto` applies [`choose`]; the others force one
/// path (benchmarks, or working around a proxy that breaks one of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FetchMode {
    #[default]
    Auto,
    Blobs,
    Tarball,
}

/// What [`choose`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    Nothing,
    Blobs,
    Tarball,
}

/// What the rule looks at.
#[derive(Debug, Clone, Copy)]
pub struct FetchInputs {
    pub files: usize,
    /// The bytes of the wanted files, from the tree.
    pub wanted_bytes: u64,
    /// The archive's size, the whole tree's blob bytes; `None` when the tree
    /// was truncated and only part of it was walked.
    pub archive_bytes: Option<u64>,
    /// Remaining calls of the installation's hourly budget, if known.
    pub remaining_budget: Option<i64>,
    /// Observed time of one REST call, if any call was timed yet.
    pub latency: Option<Duration>,
}

/// Blob downloads in flight per sync (see the reconciler).
pub const BLOB_CONCURRENCY: u64 = 8;
/// Assumed per-call time when none was observed, and the least one used:
/// GitHub answers in 50–200 ms; loopback (tests, the double) in 1 ms, which
/// would make blob calls look free while they still spend the budget.
const MIN_LATENCY: Duration = Duration::from_millis(20);
/// Assumed download-and-extract speed of the tarball (bytes per second).
const ARCHIVE_BYTES_PER_SEC: u64 = 25_000_000;
/// Up to this many files, blob calls cost no more than a ref-less tarball
/// would save, and never read a byte that is not needed.
const FEW_FILES: usize = 2;
/// An archive carrying at most this many times the wanted bytes is taken
/// whatever the time estimate says: one call instead of `files`, for bytes
/// that would mostly be downloaded anyway (a first sync, a large change).
const ARCHIVE_WASTE: u64 = 4;

/// The rule:
/// 1. nothing wanted: no download;
/// 2. the budget left is under twice the blob calls: the tarball (one call);
/// 3. at most [`FEW_FILES`] files, or the archive size is unknown: blobs;
/// 4. the archive carries at most [`ARCHIVE_WASTE`] times the wanted bytes:
///    the tarball (one call, hardly a byte more);
/// 5. otherwise whichever is estimated faster: blobs take
///    `ceil(files / 8) * latency`, the tarball `latency + bytes / 25 MB/s`.
///    A tie goes to the tarball (one call instead of many).
pub fn choose(mode: FetchMode, i: FetchInputs) -> Fetch {
    if i.files == 0 {
        return Fetch::Nothing;
    }
    match mode {
        FetchMode::Blobs => return Fetch::Blobs,
        FetchMode::Tarball => return Fetch::Tarball,
        FetchMode::Auto => {}
    }
    if let Some(left) = i.remaining_budget {
        if (left.max(0) as u64) < 2 * i.files as u64 {
            return Fetch::Tarball;
        }
    }
    let Some(archive_bytes) = i.archive_bytes else {
        return Fetch::Blobs;
    };
    if i.files <= FEW_FILES {
        return Fetch::Blobs;
    }
    if archive_bytes <= i.wanted_bytes.saturating_mul(ARCHIVE_WASTE) {
        return Fetch::Tarball;
    }
    let latency = i.latency.unwrap_or(MIN_LATENCY).max(MIN_LATENCY);
    let rounds = (i.files as u64).div_ceil(BLOB_CONCURRENCY);
    let blobs = latency.saturating_mul(u32::try_from(rounds).unwrap_or(u32::MAX));
    let tarball =
        latency + Duration::from_secs_f64(archive_bytes as f64 / ARCHIVE_BYTES_PER_SEC as f64);
    if tarball <= blobs {
        Fetch::Tarball
    } else {
        Fetch::Blobs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(files: usize, archive_bytes: u64) -> FetchInputs {
        FetchInputs {
            files,
            wanted_bytes: 0,
            archive_bytes: Some(archive_bytes),
            remaining_budget: Some(5000),
            latency: None,
        }
    }

    #[test]
    fn nothing_to_fetch_is_no_download() {
        assert_eq!(choose(FetchMode::Auto, inputs(0, 1 << 30)), Fetch::Nothing);
        assert_eq!(choose(FetchMode::Tarball, inputs(0, 10)), Fetch::Nothing);
    }

    #[test]
    fn a_first_sync_of_a_small_repository_is_one_tarball() {
        // The 53-file repository: ~56 calls by blobs, 3 by tarball.
        assert_eq!(choose(FetchMode::Auto, inputs(53, 200_000)), Fetch::Tarball);
        // Even at loopback latency (the double), calls are never free.
        let fast = FetchInputs {
            latency: Some(Duration::from_millis(1)),
            ..inputs(30, 60_000)
        };
        assert_eq!(choose(FetchMode::Auto, fast), Fetch::Tarball);
        // 10,000 files / 20 MB: 1,250 rounds of 20 ms against ~0.8 s.
        assert_eq!(
            choose(FetchMode::Auto, inputs(10_000, 20_000_000)),
            Fetch::Tarball
        );
    }

    #[test]
    fn an_archive_of_little_more_than_the_wanted_bytes_is_taken_however_large() {
        // A first sync of 2,000 files of 100 KB: by time alone blobs looked
        // faster (250 rounds of 20 ms against 8 s), at 2,000 calls of the
        // hour's 5,000. Measured with the double: 2,002 calls before this rule.
        let big_files = FetchInputs {
            wanted_bytes: 200_000_000,
            ..inputs(2_000, 200_000_000)
        };
        assert_eq!(choose(FetchMode::Auto, big_files), Fetch::Tarball);
        // Four times the wanted bytes still qualifies; five does not.
        let four = FetchInputs {
            wanted_bytes: 50_000_000,
            ..inputs(2_000, 200_000_000)
        };
        assert_eq!(choose(FetchMode::Auto, four), Fetch::Tarball);
        let five = FetchInputs {
            wanted_bytes: 40_000_000,
            ..inputs(2_000, 200_000_000)
        };
        assert_eq!(choose(FetchMode::Auto, five), Fetch::Blobs);
    }

    #[test]
    fn a_small_push_is_blobs() {
        assert_eq!(choose(FetchMode::Auto, inputs(1, 1000)), Fetch::Blobs);
        assert_eq!(choose(FetchMode::Auto, inputs(2, 1000)), Fetch::Blobs);
        // 3 files of a 20 MB repository: 20 ms against 0.82 s.
        assert_eq!(choose(FetchMode::Auto, inputs(3, 20_000_000)), Fetch::Blobs);
    }

    #[test]
    fn a_small_prefix_of_a_big_monorepo_is_blobs() {
        // 200 files under the prefix, 1 GB in the archive: 0.5 s against 40 s.
        assert_eq!(
            choose(FetchMode::Auto, inputs(200, 1_000_000_000)),
            Fetch::Blobs
        );
        // Slow calls move the crossover: at 200 ms a call, 25 rounds = 5 s
        // against 0.2 s + 4 s for a 100 MB archive.
        let slow = FetchInputs {
            latency: Some(Duration::from_millis(200)),
            ..inputs(200, 100_000_000)
        };
        assert_eq!(choose(FetchMode::Auto, slow), Fetch::Tarball);
    }

    #[test]
    fn a_low_budget_takes_the_one_call_tarball() {
        let low = FetchInputs {
            remaining_budget: Some(300),
            ..inputs(200, 1_000_000_000)
        };
        assert_eq!(choose(FetchMode::Auto, low), Fetch::Tarball);
        let enough = FetchInputs {
            remaining_budget: Some(400),
            ..low
        };
        assert_eq!(choose(FetchMode::Auto, enough), Fetch::Blobs);
        let unknown_tree = FetchInputs {
            archive_bytes: None,
            ..low
        };
        assert_eq!(choose(FetchMode::Auto, unknown_tree), Fetch::Tarball);
    }

    #[test]
    fn a_truncated_tree_with_budget_left_is_blobs() {
        // The tree was too big to list in one answer: the archive is huge.
        let i = FetchInputs {
            archive_bytes: None,
            ..inputs(500, 0)
        };
        assert_eq!(choose(FetchMode::Auto, i), Fetch::Blobs);
    }

    #[test]
    fn forced_modes_win() {
        assert_eq!(choose(FetchMode::Blobs, inputs(10_000, 1)), Fetch::Blobs);
        assert_eq!(
            choose(FetchMode::Tarball, inputs(1, 1 << 40)),
            Fetch::Tarball
        );
    }
}
