//! Job policy: how long leases last and when a failed job runs again. The
//! job table itself lives in the store (see `store::sql::queue`).

use crate::retry::Backoff;
use rand::Rng;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub max_attempts: i64,
    pub base: Duration,
    pub cap: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base: Duration::from_secs(10),
            cap: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// Capped exponential backoff with jitter, after failed attempt `attempt`
    /// (1-based): `min(cap, base * 2^(attempt-1)) * U(0.5, 1.0)`, the crate's
    /// one policy ([`crate::retry::Backoff`]). The jitter keeps jobs that
    /// failed together (a GitHub outage) from retrying together.
    pub fn backoff(&self, attempt: i64, rng: &mut impl Rng) -> Duration {
        Backoff::new(self.base, self.cap).delay(attempt, rng)
    }

    pub fn exhausted(&self, attempt: i64, max_attempts: i64) -> bool {
        attempt >= max_attempts
    }
}

#[derive(Debug, Clone)]
pub struct LeasePolicy {
    /// How long a claim holds without a heartbeat.
    pub ttl: Duration,
    /// How often a running job renews its lease (a third of the TTL).
    pub heartbeat: Duration,
}

impl LeasePolicy {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            heartbeat: ttl / 3,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};

    #[test]
    fn backoff_doubles_within_jitter_and_caps() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..=12 {
            let full = Duration::from_secs(10 * 2u64.pow(attempt as u32 - 1)).min(p.cap);
            for _ in 0..50 {
                let d = p.backoff(attempt, &mut rng);
                assert!(
                    d >= full / 2 && d <= full,
                    "attempt {attempt}: {d:?} not in [{:?}, {full:?}]",
                    full / 2
                );
            }
        }
    }

    #[test]
    fn jitter_spreads_retries() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(1);
        let delays: std::collections::HashSet<_> =
            (0..20).map(|_| p.backoff(3, &mut rng)).collect();
        assert!(
            delays.len() > 10,
            "jitter should spread retries: {delays:?}"
        );
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let p = RetryPolicy::default();
        let mut rng = StdRng::seed_from_u64(1);
        assert!(p.backoff(i64::MAX, &mut rng) <= p.cap);
        assert!(p.backoff(0, &mut rng) <= p.base);
    }
}
