//! The durability check after a connectord run: every delivery answered 202
//! must be in the database as `accepted`, with a sync event and its job. It
//! reads the tables directly, after the server was killed with SIGKILL, so a
//! fast wrong answer (a 202 before the commit, or for nothing) cannot pass.

use super::servers::Store;
use sqlx::Connection;
use std::collections::HashMap;

/// One row per recorded delivery: its outcome and how many jobs it queued.
const RECORDS: &str = "SELECT d.delivery_id, d.outcome, COUNT(j.id) \
     FROM webhook_delivery d \
     LEFT JOIN connector_sync_event e ON e.delivery_id = d.delivery_id \
     LEFT JOIN sync_job j ON j.sync_event_id = e.id \
     GROUP BY d.delivery_id, d.outcome";

#[derive(Debug, Clone, Default)]
pub struct Check {
    /// 202s the load generator received.
    pub accepted: usize,
    /// Of those, not in `webhook_delivery` at all.
    pub missing: usize,
    /// Recorded with another outcome than `accepted`.
    pub not_accepted: usize,
    /// Recorded as accepted but without a sync event and job.
    pub without_job: usize,
    /// Deliveries recorded in all.
    pub recorded: usize,
}

impl Check {
    pub fn ok(&self) -> bool {
        self.missing == 0 && self.not_accepted == 0 && self.without_job == 0
    }

    /// For a run of wrongly signed requests: nothing may be recorded.
    pub fn nothing_recorded(&self) -> bool {
        self.accepted == 0 && self.recorded == 0
    }

    pub fn describe(&self) -> String {
        if self.ok() {
            format!(
                "ok: {} of {} 202s with their job",
                self.accepted, self.accepted
            )
        } else {
            format!(
                "FAILED: of {} 202s, {} not recorded, {} not `accepted`, {} without a job",
                self.accepted, self.missing, self.not_accepted, self.without_job
            )
        }
    }
}

pub async fn check(store: &Store, accepted_ids: &[String]) -> anyhow::Result<Check> {
    let rows: Vec<(String, String, i64)> = match store {
        Store::Sqlite(path) => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(false);
            let mut conn = sqlx::SqliteConnection::connect_with(&options).await?;
            let rows = sqlx::query_as(RECORDS).fetch_all(&mut conn).await?;
            conn.close().await?;
            rows
        }
        Store::Postgres { url, .. } => {
            let mut conn = sqlx::PgConnection::connect(url).await?;
            let rows = sqlx::query_as(RECORDS).fetch_all(&mut conn).await?;
            conn.close().await?;
            rows
        }
    };
    let recorded: HashMap<&str, (&str, i64)> = rows
        .iter()
        .map(|(id, outcome, jobs)| (id.as_str(), (outcome.as_str(), *jobs)))
        .collect();
    let mut check = Check {
        accepted: accepted_ids.len(),
        recorded: recorded.len(),
        ..Check::default()
    };
    for id in accepted_ids {
        match recorded.get(id.as_str()) {
            None => check.missing += 1,
            Some((outcome, _)) if *outcome != "accepted" => check.not_accepted += 1,
            Some((_, 0)) => check.without_job += 1,
            Some(_) => {}
        }
    }
    Ok(check)
}
