//! Failure injection, delays, call counters and the rate-limit budget.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use crate::Endpoint;

/// GitHub's primary rate limit for an installation token (requests per hour).
pub(crate) const RATE_LIMIT: i64 = 5000;

/// What an injected fault answers instead of the real response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum FaultKind {
    /// A plain error status (5xx, 404, 429, ...).
    Status(u16),
    /// 403 with `retry-after` and GitHub's secondary-rate-limit message.
    SecondaryRateLimit { retry_after_secs: u64 },
    /// 403 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` = now + secs.
    PrimaryRateLimit { reset_in_secs: u64 },
    /// 200 with this body and `content-type`, whatever was asked for: a
    /// hostile or broken server (an oversized or wrong blob, a bad archive).
    Body {
        content_type: String,
        body: Arc<Vec<u8>>,
    },
    /// The real answer's status and headers (its full `content-length`
    /// included), then the first `sent` bytes of its body, then the
    /// connection is dropped: a reset mid-body.
    ResetMidBody { sent: usize },
}

#[derive(Debug)]
struct Fault {
    needle: String,
    kind: FaultKind,
    remaining: usize,
}

/// Armed faults (first armed, first fired) and per-path delays.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    armed: Vec<Fault>,
    delays: Vec<(String, Duration)>,
}

impl Faults {
    /// Arms `kind` for the next `times` requests whose path (with query) contains `needle`.
    pub fn arm(&mut self, needle: &str, kind: FaultKind, times: usize) {
        if times > 0 {
            self.armed.push(Fault {
                needle: needle.to_string(),
                kind,
                remaining: times,
            });
        }
    }

    /// The fault this request triggers, if any (consuming one of its shots).
    pub fn take(&mut self, target: &str) -> Option<FaultKind> {
        let idx = self
            .armed
            .iter()
            .position(|f| f.remaining > 0 && target.contains(&f.needle))?;
        let fault = &mut self.armed[idx];
        fault.remaining -= 1;
        let kind = fault.kind.clone();
        if fault.remaining == 0 {
            self.armed.remove(idx);
        }
        Some(kind)
    }

    /// Sets (or with a zero duration clears) the delay for paths containing `needle`.
    pub fn set_delay(&mut self, needle: &str, d: Duration) {
        self.delays.retain(|(n, _)| n != needle);
        if !d.is_zero() {
            self.delays.push((needle.to_string(), d));
        }
    }

    /// The longest delay that applies to this request.
    pub fn delay_for(&self, target: &str) -> Option<Duration> {
        self.delays
            .iter()
            .filter(|(n, _)| target.contains(n.as_str()))
            .map(|(_, d)| *d)
            .max()
    }
}

/// Calls seen, by endpoint kind and by blob SHA.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    by_kind: HashMap<Endpoint, usize>,
    by_blob: HashMap<String, usize>,
    repo_calls: usize,
    /// Conditional requests answered 304 (not charged to the rate limit).
    pub not_modified: usize,
}

impl Counters {
    pub fn record(&mut self, kind: Option<Endpoint>, repo_call: bool, blob_sha: Option<&str>) {
        if let Some(kind) = kind {
            *self.by_kind.entry(kind).or_default() += 1;
        }
        if repo_call {
            self.repo_calls += 1;
        }
        if let Some(sha) = blob_sha {
            *self.by_blob.entry(sha.to_ascii_lowercase()).or_default() += 1;
        }
    }

    pub fn calls(&self, kind: Endpoint) -> usize {
        self.by_kind.get(&kind).copied().unwrap_or(0)
    }

    pub fn repo_calls(&self) -> usize {
        self.repo_calls
    }

    pub fn blob_calls_for(&self, sha: &str) -> usize {
        self.by_blob
            .get(&sha.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }
}

/// The `x-ratelimit-*` values of one response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateHeaders {
    pub limit: i64,
    pub remaining: i64,
    pub used: i64,
    pub reset: i64,
}

/// An hourly window of [`RATE_LIMIT`] calls; `pinned` (set by
/// `set_rate_limit_remaining`) fixes what `remaining` reports.
#[derive(Debug)]
pub(crate) struct RateLimit {
    used: i64,
    reset: i64,
    pinned: Option<i64>,
}

impl RateLimit {
    pub fn new(now: i64) -> RateLimit {
        RateLimit {
            used: 0,
            reset: now + 3600,
            pinned: None,
        }
    }

    pub fn pin(&mut self, remaining: i64) {
        self.pinned = Some(remaining);
    }

    /// Accounts one response (`charge` false for a free 304) and returns its headers.
    pub fn charge(&mut self, now: i64, charge: bool) -> RateHeaders {
        if now >= self.reset {
            self.used = 0;
            self.reset = now + 3600;
        }
        if charge {
            self.used += 1;
        }
        let (remaining, used) = match self.pinned {
            Some(n) => (n, (RATE_LIMIT - n).max(0)),
            None => ((RATE_LIMIT - self.used).max(0), self.used),
        };
        RateHeaders {
            limit: RATE_LIMIT,
            remaining,
            used,
            reset: self.reset,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_fire_in_order_and_run_out() {
        let mut f = Faults::default();
        f.arm("/git/blobs/", FaultKind::Status(502), 2);
        f.arm("/git/", FaultKind::Status(500), 1);
        assert_eq!(
            f.take("/repos/o/r/git/trees/x"),
            Some(FaultKind::Status(500))
        );
        assert_eq!(
            f.take("/repos/o/r/git/blobs/a"),
            Some(FaultKind::Status(502))
        );
        assert_eq!(
            f.take("/repos/o/r/git/blobs/a"),
            Some(FaultKind::Status(502))
        );
        assert_eq!(f.take("/repos/o/r/git/blobs/a"), None);
        assert_eq!(f.take("/repos/o/r/git/trees/x"), None);
    }

    #[test]
    fn rate_limit_counts_down_and_pins() {
        let mut r = RateLimit::new(1000);
        assert_eq!(r.charge(1000, true).remaining, 4999);
        assert_eq!(r.charge(1000, false).remaining, 4999);
        let h = r.charge(1000, true);
        assert_eq!((h.remaining, h.used, h.reset), (4998, 2, 4600));
        r.pin(7);
        assert_eq!(r.charge(1001, true).remaining, 7);
        assert_eq!(r.charge(1002, true).remaining, 7);
        let rolled = RateLimit::new(0).charge(3600, true);
        assert_eq!((rolled.used, rolled.reset), (1, 7200));
    }
}
