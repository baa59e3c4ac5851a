//! The memory budget for request bodies being received, across all
//! connections.
//!
//! A body is charged for the buffer it actually holds (never for what its
//! `Content-Length` promises: an attacker declaring 25 MiB and sending nothing
//! holds nothing), and released when its [`Charge`] drops, however the request
//! ended. A quarter of the budget is reserved for bodies up to
//! [`SMALL_BODY_BYTES`], so stalled large bodies cannot starve the ordinary
//! deliveries (a push payload is usually a few KiB).

use std::sync::{Arc, Mutex};

/// Bodies up to this size may use the reserved share.
pub const SMALL_BODY_BYTES: usize = 1 << 20;

#[derive(Clone)]
pub struct BodyBudget {
    inner: Arc<Inner>,
}

struct Inner {
    total: usize,
    /// What bodies larger than [`SMALL_BODY_BYTES`] may hold together.
    large_limit: usize,
    used: Mutex<Used>,
}

#[derive(Default)]
struct Used {
    all: usize,
    large: usize,
}

impl std::fmt::Debug for BodyBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "BodyBudget({} of {} bytes)",
            self.used(),
            self.inner.total
        )
    }
}

impl BodyBudget {
    pub fn new(total: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                total,
                large_limit: total - total / 4,
                used: Mutex::new(Used::default()),
            }),
        }
    }

    /// An empty charge for one body.
    pub fn charge(&self) -> Charge {
        Charge {
            budget: self.clone(),
            held: 0,
            large: false,
        }
    }

    /// Bytes held by bodies right now.
    pub fn used(&self) -> usize {
        self.lock().all
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Used> {
        // The counters stay consistent even if a holder panicked: every update
        // is a pair of additions done before the guard drops.
        self.inner.used.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// What one body holds of the budget; released on drop.
pub struct Charge {
    budget: BodyBudget,
    held: usize,
    large: bool,
}

impl Charge {
    /// Grows this body's share to `bytes` in all. `false` (and nothing
    /// changed) if the budget cannot hold it.
    #[must_use]
    pub fn grow_to(&mut self, bytes: usize) -> bool {
        if bytes <= self.held {
            return true;
        }
        let delta = bytes - self.held;
        let large = bytes > SMALL_BODY_BYTES;
        // A body that just became large moves everything it holds into the large share.
        let large_delta = match (self.large, large) {
            (true, _) => delta,
            (false, true) => bytes,
            (false, false) => 0,
        };
        let inner = &self.budget.inner;
        let mut used = self.budget.lock();
        if used.all + delta > inner.total || used.large + large_delta > inner.large_limit {
            return false;
        }
        used.all += delta;
        used.large += large_delta;
        drop(used);
        self.held = bytes;
        self.large = large;
        true
    }

    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if self.held == 0 {
            return;
        }
        let mut used = self.budget.lock();
        used.all -= self.held;
        if self.large {
            used.large -= self.held;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn charges_grow_and_are_released_on_drop() {
        let budget = BodyBudget::new(8 * MIB);
        let mut a = budget.charge();
        assert!(a.grow_to(1000));
        assert!(a.grow_to(500), "shrinking is a no-op");
        assert_eq!(budget.used(), 1000);
        let mut b = budget.charge();
        assert!(b.grow_to(MIB));
        assert_eq!(budget.used(), MIB + 1000);
        drop(a);
        assert_eq!(budget.used(), MIB);
        drop(b);
        assert_eq!(budget.used(), 0);
    }

    #[test]
    fn the_total_is_never_exceeded() {
        let budget = BodyBudget::new(4 * MIB);
        let mut small: Vec<Charge> = (0..4).map(|_| budget.charge()).collect();
        for c in &mut small {
            assert!(c.grow_to(MIB));
        }
        let mut one_more = budget.charge();
        assert!(!one_more.grow_to(1));
        assert_eq!(budget.used(), 4 * MIB);
        assert_eq!(one_more.held(), 0);
    }

    #[test]
    fn large_bodies_cannot_take_the_reserved_quarter() {
        let budget = BodyBudget::new(8 * MIB);
        let mut large = budget.charge();
        assert!(
            large.grow_to(6 * MIB),
            "three quarters are open to large bodies"
        );
        let mut second = budget.charge();
        assert!(second.grow_to(MIB), "a small body fits in the reserve");
        assert!(
            !second.grow_to(MIB + 1),
            "becoming large would take the reserve"
        );
        assert_eq!(second.held(), MIB, "a refused growth changes nothing");
        let mut smalls: Vec<Charge> = (0..1).map(|_| budget.charge()).collect();
        assert!(smalls[0].grow_to(MIB));
        assert_eq!(budget.used(), 8 * MIB);
        drop(large);
        assert!(second.grow_to(5 * MIB));
        drop(second);
        drop(smalls);
        assert_eq!(budget.used(), 0);
        // Everything released: the large share is whole again.
        let mut again = budget.charge();
        assert!(again.grow_to(6 * MIB));
    }
}
