//! What one run of the load generator measured: printed by `edge-load`,
//! written as JSON, read back by the driver.
#![allow(dead_code)] // each binary uses part of it

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoadReport {
    pub connections: usize,
    pub bad_signature: bool,
    pub body_bytes: usize,
    /// The measured window (after the warm-up), seconds.
    pub window_secs: f64,
    /// Requests started and answered inside the window.
    pub requests: u64,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// Answers by status over the whole run (warm-up, window, and the
    /// requests in flight when the window closed), as "202", "401", ...
    pub statuses: BTreeMap<String, u64>,
    /// Requests that got no HTTP answer (connection refused, reset or
    /// closed, or no answer within 10 s).
    pub transport_errors: u64,
    /// Every `X-GitHub-Delivery` answered 202, over the whole run.
    pub accepted_ids: Vec<String>,
    /// CPU seconds over the window: the server process(es) given by pid,
    /// PostgreSQL's processes (if asked), and the load generator itself.
    pub server_cpu_secs: Option<f64>,
    pub postgres_cpu_secs: Option<f64>,
    pub load_cpu_secs: Option<f64>,
    /// Busy CPU seconds of the whole machine over the window (kernel tick
    /// accounting, so only roughly comparable with the figures above).
    pub machine_cpu_secs: Option<f64>,
    /// The first server pid's resident size: (seconds into the window, KiB).
    pub rss_kib: Vec<(f64, u64)>,
    /// Resident size at the end of the window, KiB.
    pub rss_end_kib: Option<u64>,
    /// Set when the prepared requests ran out before the window closed.
    pub exhausted: bool,
}

impl LoadReport {
    /// Answers that were not 2xx, plus requests that got no answer.
    pub fn non_2xx(&self) -> u64 {
        self.transport_errors
            + self
                .statuses
                .iter()
                .filter(|(s, _)| !s.starts_with('2'))
                .map(|(_, n)| n)
                .sum::<u64>()
    }

    pub fn answered(&self) -> u64 {
        self.statuses.values().sum()
    }

    /// Server CPU (PostgreSQL's included) per 1,000 requests of the window.
    pub fn server_cpu_per_1k(&self) -> Option<f64> {
        let cpu = self.server_cpu_secs? + self.postgres_cpu_secs.unwrap_or(0.0);
        (self.requests > 0).then(|| cpu * 1000.0 / self.requests as f64)
    }

    /// Cores' worth of CPU used during the window by anything but the
    /// server, PostgreSQL and the load generator: other work on the machine.
    pub fn other_cores(&self) -> Option<f64> {
        let ours =
            self.server_cpu_secs? + self.postgres_cpu_secs.unwrap_or(0.0) + self.load_cpu_secs?;
        Some(((self.machine_cpu_secs? - ours) / self.window_secs).max(0.0))
    }

    pub fn load_cpu_per_1k(&self) -> Option<f64> {
        let cpu = self.load_cpu_secs?;
        (self.requests > 0).then(|| cpu * 1000.0 / self.requests as f64)
    }
}
