//! The open connections of one listener: their phase, the cap, and who is
//! closed to make room.
//!
//! A connection is in one of three phases: reading a request head (from
//! accept, or from the first byte of a later request), idle (kept alive, no
//! request in progress), or busy (a request is being handled). At the cap, a
//! new connection is admitted by closing the one that has been waiting
//! longest in a phase with no request in progress — a slowloris head or an
//! idle keep-alive — as nginx reuses idle keep-alive connections. Busy
//! connections are never closed for room (the body timeout bounds them); when
//! every connection is busy, accepting pauses and new connections wait in the
//! kernel's listen backlog until one finishes, so an attacker cannot push
//! accepted work out and a waiting client is served in arrival order.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;
use tokio::time::Instant;

/// What a connection is doing, packed with when it started doing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Head,
    Idle,
    Busy,
    /// Closed to make room; its task is ending.
    Closing,
}

const HEAD: u64 = 0;
const IDLE: u64 = 1;
const BUSY: u64 = 2;
const CLOSING: u64 = 3;

fn pack(phase: u64, since_us: u64) -> u64 {
    (since_us << 2) | phase
}

fn unpack(state: u64) -> (Phase, u64) {
    let phase = match state & 3 {
        HEAD => Phase::Head,
        IDLE => Phase::Idle,
        BUSY => Phase::Busy,
        _ => Phase::Closing,
    };
    (phase, state >> 2)
}

/// The connections of one listener.
#[derive(Clone)]
pub struct Registry {
    shared: Arc<Shared>,
}

struct Shared {
    cap: usize,
    epoch: Instant,
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    /// Open and not closing.
    live: AtomicUsize,
    /// Of those, with a request in progress.
    busy: AtomicUsize,
    next_id: AtomicU64,
    /// Woken when a slot may have become available while the acceptor waits.
    room: Notify,
    acceptor_waiting: AtomicBool,
    open_gauge: metrics::Gauge,
    listener: &'static str,
}

impl Shared {
    fn now_us(&self) -> u64 {
        self.epoch.elapsed().as_micros() as u64
    }

    fn wake_acceptor(&self) {
        if self.acceptor_waiting.load(SeqCst) {
            self.room.notify_one();
        }
    }

    fn has_room(&self) -> bool {
        let live = self.live.load(SeqCst);
        live < self.cap || live > self.busy.load(SeqCst)
    }
}

/// One connection's shared state: its phase, read by the IO wrapper (for its
/// timeouts) and the registry (for eviction).
pub struct ConnState {
    state: AtomicU64,
    released: AtomicBool,
    evicted: Notify,
    registry: Arc<Shared>,
}

impl Registry {
    pub fn new(cap: usize, listener: &'static str) -> Self {
        Self {
            shared: Arc::new(Shared {
                cap: cap.max(1),
                epoch: Instant::now(),
                conns: Mutex::new(HashMap::new()),
                live: AtomicUsize::new(0),
                busy: AtomicUsize::new(0),
                next_id: AtomicU64::new(0),
                room: Notify::new(),
                acceptor_waiting: AtomicBool::new(false),
                open_gauge: metrics::gauge!("connectord_http_connections", "listener" => listener),
                listener,
            }),
        }
    }

    pub fn cap(&self) -> usize {
        self.shared.cap
    }

    /// Open connections (not counting those closing to make room).
    pub fn live(&self) -> usize {
        self.shared.live.load(SeqCst)
    }

    /// Returns once a new connection can be admitted: below the cap, or at it
    /// with a connection that has no request in progress.
    pub async fn wait_for_room(&self) {
        let s = &self.shared;
        loop {
            if s.has_room() {
                return;
            }
            s.acceptor_waiting.store(true, SeqCst);
            // Checked again after raising the flag, so a change in between
            // is either seen here or sends a (stored) wake-up.
            if s.has_room() {
                s.acceptor_waiting.store(false, SeqCst);
                return;
            }
            s.room.notified().await;
            s.acceptor_waiting.store(false, SeqCst);
        }
    }

    /// After an accept: if the listener is at its cap, closes the connection
    /// that has waited longest with no request in progress. `false` if every
    /// connection is busy (the new one must then wait for room).
    pub fn make_room(&self) -> bool {
        let s = &self.shared;
        while s.live.load(SeqCst) >= s.cap {
            let victim = {
                let conns = s.conns.lock().unwrap_or_else(|p| p.into_inner());
                conns
                    .values()
                    .filter_map(|c| {
                        let state = c.state.load(SeqCst);
                        match unpack(state) {
                            (Phase::Head | Phase::Idle, since) => Some((since, state, c.clone())),
                            _ => None,
                        }
                    })
                    .min_by_key(|(since, _, _)| *since)
            };
            let Some((since, observed, conn)) = victim else {
                return false;
            };
            // Lost a race (it just started a request): look again.
            if conn
                .state
                .compare_exchange(observed, pack(CLOSING, since), SeqCst, SeqCst)
                .is_ok()
            {
                conn.release();
                conn.evicted.notify_one();
                metrics::counter!("connectord_http_connections_rejected_total",
                    "listener" => s.listener, "reason" => "evicted")
                .increment(1);
            }
        }
        true
    }

    /// Registers a just-accepted connection (reading its first head from now).
    pub fn register(&self) -> Registration {
        let s = &self.shared;
        let id = s.next_id.fetch_add(1, SeqCst);
        let conn = Arc::new(ConnState {
            state: AtomicU64::new(pack(HEAD, s.now_us())),
            released: AtomicBool::new(false),
            evicted: Notify::new(),
            registry: s.clone(),
        });
        s.live.fetch_add(1, SeqCst);
        s.open_gauge.increment(1.0);
        s.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, conn.clone());
        Registration { id, conn }
    }
}

/// A registered connection; unregisters on drop.
pub struct Registration {
    id: u64,
    conn: Arc<ConnState>,
}

impl Registration {
    pub fn state(&self) -> &Arc<ConnState> {
        &self.conn
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let s = &self.conn.registry;
        s.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
        s.open_gauge.decrement(1.0);
        self.conn.release();
    }
}

impl ConnState {
    pub fn phase(&self) -> (Phase, u64) {
        unpack(self.state.load(SeqCst))
    }

    /// When the phase that started at `since_us` began.
    pub fn instant(&self, since_us: u64) -> Instant {
        self.registry.epoch + std::time::Duration::from_micros(since_us)
    }

    /// Bytes arrived: an idle connection starts reading its next head.
    pub fn bytes_read(&self) {
        let state = self.state.load(SeqCst);
        if state & 3 == IDLE {
            let head = pack(HEAD, self.registry.now_us());
            // Fails only if it was just closed for room; nothing to do then.
            let _ = self.state.compare_exchange(state, head, SeqCst, SeqCst);
        }
    }

    /// A request head was parsed and is being handled. The returned guard
    /// makes the connection idle again when it drops (response produced, or
    /// the handler cancelled).
    pub fn begin_request(self: &Arc<Self>) -> RequestGuard {
        let began = self
            .state
            .fetch_update(SeqCst, SeqCst, |state| match state & 3 {
                HEAD | IDLE => Some((state & !3) | BUSY),
                _ => None,
            })
            .is_ok();
        if began {
            self.registry.busy.fetch_add(1, SeqCst);
        }
        RequestGuard {
            conn: began.then(|| self.clone()),
        }
    }

    /// Resolves when the connection was closed to make room.
    pub async fn evicted(&self) {
        self.evicted.notified().await
    }

    /// Gives the connection's slot back, once.
    fn release(&self) {
        if !self.released.swap(true, SeqCst) {
            self.registry.live.fetch_sub(1, SeqCst);
            self.registry.wake_acceptor();
        }
    }
}

pub struct RequestGuard {
    conn: Option<Arc<ConnState>>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let s = &conn.registry;
        let idle = pack(IDLE, s.now_us());
        // Only a busy connection gets here, and nothing else moves it out of busy.
        let _ = conn
            .state
            .fetch_update(SeqCst, SeqCst, |state| (state & 3 == BUSY).then_some(idle));
        s.busy.fetch_sub(1, SeqCst);
        s.wake_acceptor();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn the_longest_waiting_connection_without_a_request_makes_room() {
        let registry = Registry::new(3, "test");
        let first = registry.register();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let second = registry.register();
        tokio::time::sleep(Duration::from_millis(2)).await;
        let third = registry.register();
        assert_eq!(registry.live(), 3);
        // The oldest is busy: it is never closed for room.
        let _busy = first.state().begin_request();
        assert_eq!(first.state().phase().0, Phase::Busy);
        assert!(registry.make_room());
        assert_eq!(second.state().phase().0, Phase::Closing);
        assert_eq!(third.state().phase().0, Phase::Head);
        assert_eq!(registry.live(), 2);
        tokio::time::timeout(Duration::from_secs(1), second.state().evicted())
            .await
            .expect("the evicted connection is told");
        drop(second);
        assert_eq!(registry.live(), 2, "its slot was given back once");
    }

    #[tokio::test]
    async fn when_every_connection_is_busy_the_acceptor_waits_for_one_to_finish() {
        let registry = Registry::new(2, "test");
        let a = registry.register();
        let b = registry.register();
        let busy_a = a.state().begin_request();
        let _busy_b = b.state().begin_request();
        assert!(!registry.make_room());
        let waiting = tokio::spawn({
            let registry = registry.clone();
            async move { registry.wait_for_room().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished(), "no room while both are busy");
        drop(busy_a);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("room once a request ended")
            .unwrap();
        assert_eq!(a.state().phase().0, Phase::Idle);
        assert!(registry.make_room());
        assert_eq!(a.state().phase().0, Phase::Closing);
    }

    #[tokio::test]
    async fn bytes_on_an_idle_connection_start_a_head() {
        let registry = Registry::new(4, "test");
        let c = registry.register();
        let (phase, _) = c.state().phase();
        assert_eq!(phase, Phase::Head, "a new connection owes its first head");
        drop(c.state().begin_request());
        let (phase, idle_since) = c.state().phase();
        assert_eq!(phase, Phase::Idle);
        tokio::time::sleep(Duration::from_millis(2)).await;
        c.state().bytes_read();
        let (phase, head_since) = c.state().phase();
        assert_eq!(phase, Phase::Head);
        assert!(head_since > idle_since);
        c.state().bytes_read();
        assert_eq!(c.state().phase(), (Phase::Head, head_since), "unchanged");
    }
}
