//! The one backoff policy of the crate: capped exponential delays with
//! jitter, and an in-process retry loop built on it.
//!
//! Two kinds of retry use it. In-process loops (a blob download, opening
//! the database at startup) sleep between tries with [`retry`]. The sync
//! queue does not sleep: it reschedules the job in the database at
//! `now + delay` (`sync::policy::RetryPolicy` wraps [`Backoff`]), because the
//! retry must survive the process and free the worker meanwhile.

use rand::Rng;
use std::future::Future;
use std::time::Duration;

/// `min(cap, base * 2^(n-1)) * U(1 - jitter, 1)` after failed try `n`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
    /// Share of the delay that is random, 0 to 1: spreads out the retries of
    /// work that failed together (a GitHub outage) so they do not retry
    /// together.
    pub jitter: f64,
}

impl Backoff {
    pub const fn new(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            jitter: 0.5,
        }
    }

    /// The delay after failed try `failed` (1-based; 0 counts as 1).
    pub fn delay(&self, failed: i64, rng: &mut impl Rng) -> Duration {
        let exp = u32::try_from(failed.saturating_sub(1).clamp(0, 30)).unwrap_or(30);
        let full = self
            .base
            .saturating_mul(2u32.saturating_pow(exp))
            .min(self.cap);
        let jitter = self.jitter.clamp(0.0, 1.0);
        if jitter == 0.0 {
            return full;
        }
        full.mul_f64(rng.gen_range((1.0 - jitter)..=1.0))
    }
}

/// Runs `op` up to `tries` times (at least once), sleeping [`Backoff::delay`]
/// between tries, while `retryable` says the error is worth another try.
/// Returns the first success or the last error.
pub async fn retry<T, E, Fut>(
    tries: u32,
    backoff: Backoff,
    mut op: impl FnMut(u32) -> Fut,
    retryable: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    let mut attempt = 1;
    loop {
        match op(attempt).await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < tries.max(1) && retryable(&e) => {
                let delay = backoff.delay(i64::from(attempt), &mut rand::thread_rng());
                tokio::time::sleep(delay).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{rngs::StdRng, SeedableRng};
    use std::sync::atomic::{AtomicU32, Ordering};

    #[test]
    fn delays_double_within_the_jitter_and_stop_at_the_cap() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut rng = StdRng::seed_from_u64(3);
        for (failed, full) in [
            (1, 100),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1000),
            (40, 1000),
        ] {
            let full = Duration::from_millis(full);
            for _ in 0..50 {
                let d = b.delay(failed, &mut rng);
                assert!(d >= full / 2 && d <= full, "{failed}: {d:?} vs {full:?}");
            }
        }
        assert!(b.delay(i64::MAX, &mut rng) <= b.cap);
        assert!(b.delay(i64::MIN, &mut rng) <= b.base);
    }

    #[test]
    fn no_jitter_is_exact() {
        let b = Backoff {
            jitter: 0.0,
            ..Backoff::new(Duration::from_millis(10), Duration::from_secs(1))
        };
        let mut rng = StdRng::seed_from_u64(1);
        assert_eq!(b.delay(3, &mut rng), Duration::from_millis(40));
    }

    const FAST: Backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(2));

    #[tokio::test]
    async fn retries_retryable_errors_until_success() {
        let calls = AtomicU32::new(0);
        let r: Result<u32, &str> = retry(
            5,
            FAST,
            |n| {
                calls.fetch_add(1, Ordering::SeqCst);
                async move {
                    if n < 3 {
                        Err("flaky")
                    } else {
                        Ok(n)
                    }
                }
            },
            |_| true,
        )
        .await;
        assert_eq!(r, Ok(3));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_the_tries_and_at_once_on_other_errors() {
        let calls = AtomicU32::new(0);
        let r: Result<(), &str> = retry(
            3,
            FAST,
            |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err("down") }
            },
            |_| true,
        )
        .await;
        assert_eq!((r, calls.load(Ordering::SeqCst)), (Err("down"), 3));
        calls.store(0, Ordering::SeqCst);
        let r: Result<(), &str> = retry(
            3,
            FAST,
            |_| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err("gone") }
            },
            |e| *e != "gone",
        )
        .await;
        assert_eq!((r, calls.load(Ordering::SeqCst)), (Err("gone"), 1));
    }
}
