//! The HTTP edge: what stands between the internet and the handlers.
//!
//! Anyone can connect to the webhook endpoint without the secret, so every
//! resource a client can make the server hold is bounded: time (header, body
//! and idle timeouts), connections (a cap per listener that closes the oldest
//! connection with no request in progress to make room), memory for bodies
//! being received (a budget across all connections), and metric labels
//! (closed sets). docs/edge.md gives each default and why.

pub mod budget;
pub mod connections;
pub mod fd_limit;
pub mod http_metrics;
mod io;
pub mod server;

use std::time::Duration;

/// The edge's limits. [`Default`] holds the documented defaults.
#[derive(Debug, Clone)]
pub struct EdgeSettings {
    /// From accept (or the first byte of a later request) to the end of the request head.
    pub header_read_timeout: Duration,
    /// From the end of the head to the last byte of a webhook body.
    pub body_read_timeout: Duration,
    /// A kept-alive connection with no request in progress (and a response
    /// the client does not read) is closed after this.
    pub idle_timeout: Duration,
    /// Open connections per listener.
    pub max_connections: usize,
    /// Bytes of webhook bodies held while they are received, across all connections.
    pub body_budget_bytes: usize,
    /// Serve `/metrics` on the public listener even when `--admin-listen` is set.
    pub public_metrics: bool,
}

pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
pub const DEFAULT_BODY_BUDGET_MIB: usize = 128;
/// The smallest budget in which one 25 MiB body fits in the share that large
/// bodies may use (three quarters).
pub const MIN_BODY_BUDGET_MIB: usize = 34;

impl Default for EdgeSettings {
    fn default() -> Self {
        Self {
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            body_read_timeout: DEFAULT_BODY_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            body_budget_bytes: DEFAULT_BODY_BUDGET_MIB << 20,
            public_metrics: false,
        }
    }
}
