//! Helpers shared by the benchmark binaries: a throw-away PostgreSQL schema
//! per run, percentiles, and CPU accounting (Linux `/proc`), so each table can
//! say what limited it.

use connectord::config::{Role, Settings};
use connectord::store::StoreOptions;
use connectord::sync::worker::WorkerSettings;
use sqlx::Connection;
use std::time::{Duration, Instant};

/// The PostgreSQL server the benchmarks use, e.g.
/// `postgres://postgres@127.0.0.1:5432/test`. Each run works in a fresh
/// schema of it and drops the schema at the end.
pub const POSTGRES_URL_VAR: &str = "CONNECTORD_BENCH_POSTGRES_URL";

/// The webhook secret of every bench app.
pub const SECRET: &str = "bench-secret";

pub fn postgres_url() -> Option<String> {
    std::env::var(POSTGRES_URL_VAR)
        .ok()
        .filter(|u| !u.trim().is_empty())
}

/// A schema `bench_<unix seconds>_<random>` and a URL whose `search_path` is it.
pub struct Schema {
    base: String,
    pub name: String,
    pub url: String,
}

impl Schema {
    pub async fn create(base: &str) -> anyhow::Result<Schema> {
        let mut conn = sqlx::PgConnection::connect(base).await?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let name = format!("bench_{now}_{:08x}", rand::random::<u32>());
        sqlx::query(&format!("CREATE SCHEMA {name}"))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        let sep = if base.contains('?') { '&' } else { '?' };
        let url = format!("{base}{sep}options=-c%20search_path%3D{name}");
        Ok(Schema {
            base: base.to_owned(),
            name,
            url,
        })
    }

    pub async fn drop_now(self) -> anyhow::Result<()> {
        let mut conn = sqlx::PgConnection::connect(&self.base).await?;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name))
            .execute(&mut conn)
            .await?;
        conn.close().await?;
        Ok(())
    }
}

/// The server's durability settings, printed with the results.
pub async fn postgres_settings(base: &str) -> anyhow::Result<String> {
    let mut conn = sqlx::PgConnection::connect(base).await?;
    let mut parts = vec![];
    for name in [
        "server_version",
        "synchronous_commit",
        "fsync",
        "max_connections",
    ] {
        let v: String = sqlx::query_scalar(&format!("SHOW {name}"))
            .fetch_one(&mut conn)
            .await?;
        parts.push(format!("{name}={v}"));
    }
    conn.close().await?;
    Ok(parts.join(" "))
}

/// The `p`-quantile (0..=1) of sorted values, nearest rank.
pub fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// CPU time used by the whole machine, by PostgreSQL's processes and by
/// this process since `start`.
pub struct Cpu {
    at: Instant,
    machine_busy: Option<u64>,
    postgres: Option<u64>,
    this_process: Option<u64>,
}

/// Cores' worth of CPU used over an interval: the whole machine (this
/// process, PostgreSQL and everything else; sampled by the kernel's tick, so
/// only roughly comparable with the other two), PostgreSQL's server
/// processes (on this host), and this process alone.
pub struct CpuUse {
    pub machine: Option<f64>,
    pub postgres: Option<f64>,
    pub this_process: Option<f64>,
}

impl std::fmt::Display for CpuUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = |x: Option<f64>| x.map_or("n/a".to_owned(), |x| format!("{x:.2}"));
        write!(
            f,
            "{} / {} / {}",
            v(self.machine),
            v(self.postgres),
            v(self.this_process)
        )
    }
}

/// Clock ticks per second of `/proc` times (USER_HZ, 100 on Linux).
const TICKS: f64 = 100.0;

impl Cpu {
    pub fn start() -> Cpu {
        Cpu {
            at: Instant::now(),
            machine_busy: machine_busy_ticks(),
            postgres: postgres_ticks(),
            this_process: process_ticks(),
        }
    }

    pub fn used(&self) -> CpuUse {
        let wall = self.at.elapsed().as_secs_f64();
        let per = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) if wall > 0.0 => Some(b.saturating_sub(a) as f64 / TICKS / wall),
            _ => None,
        };
        CpuUse {
            machine: per(self.machine_busy, machine_busy_ticks()),
            postgres: per(self.postgres, postgres_ticks()),
            this_process: per(self.this_process, process_ticks()),
        }
    }
}

/// Non-idle ticks of all CPUs (`/proc/stat`, first line: user nice system
/// idle iowait irq softirq steal ...; idle and iowait are not busy).
pub fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    Some(total - v.get(3)? - v.get(4)?)
}

/// utime + stime of this process (`/proc/self/stat`, fields 14 and 15).
pub fn process_ticks() -> Option<u64> {
    let (_, times) = stat_times(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    Some(times[0] + times[1])
}

/// utime + stime of process `pid`, all its threads (not its children).
pub fn pid_ticks(pid: u32) -> Option<u64> {
    let (_, times) = stat_times(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)?;
    Some(times[0] + times[1])
}

/// Seconds of CPU in `ticks` clock ticks.
pub fn ticks_to_secs(ticks: u64) -> f64 {
    ticks as f64 / TICKS
}

/// Resident set size of process `pid` in KiB (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The command name and utime, stime, cutime, cstime (fields 2, 14-17) of a
/// `/proc/<pid>/stat` line.
fn stat_times(stat: &str) -> Option<(&str, [u64; 4])> {
    // The command name may hold spaces; the fields after it follow ')'.
    let name = &stat[stat.find('(')? + 1..stat.rfind(')')?];
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|x| x.parse::<u64>().ok());
    Some((name, [t(11)?, t(12)?, t(13)?, t(14)?]))
}

/// CPU of every `postgres` process on this host, including backends that
/// already exited (the postmaster's children times). Ends up a little high
/// when a backend that was already running at the start exits meanwhile.
pub fn postgres_ticks() -> Option<u64> {
    let mut total = 0;
    let mut seen = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if let Some(("postgres", times)) = stat_times(&stat) {
            seen = true;
            total += times.iter().sum::<u64>();
        }
    }
    seen.then_some(total)
}

/// PostgreSQL's background processes, which work for every database.
const POSTGRES_SHARED: [&str; 7] = [
    "checkpointer",
    "background writer",
    "walwriter",
    "autovacuum launcher",
    "logical replication launcher",
    "archiver",
    "stats collector",
];

/// utime + stime of the PostgreSQL processes working for database `db`: its
/// backends (process title `postgres: [CLUSTER: ]USER DB HOST ...`), its autovacuum
/// workers, and the server's shared background processes. Backends of other
/// databases, and the postmaster's children that already exited, are left
/// out: on a shared host they are someone else's load.
pub fn postgres_ticks_for(db: &str) -> Option<u64> {
    let mut total = 0;
    let mut seen = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some(("postgres", times)) = stat_times(&stat) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if postgres_title_is_for(&String::from_utf8_lossy(&cmdline).replace('\0', " "), db) {
            seen = true;
            total += times[0] + times[1];
        }
    }
    seen.then_some(total)
}

/// Whether a PostgreSQL process title belongs to database `db` or to the
/// server's shared background work.
fn postgres_title_is_for(title: &str, db: &str) -> bool {
    let Some(rest) = title.trim().strip_prefix("postgres: ") else {
        return false; // the postmaster
    };
    // With `cluster_name` set (Debian does) the title starts with it: `15/main: `.
    let rest = match rest.split_once(": ") {
        Some((cluster, tail)) if !cluster.contains(' ') => tail,
        _ => rest,
    };
    let words: Vec<&str> = rest.split_whitespace().collect();
    POSTGRES_SHARED.iter().any(|p| rest.starts_with(p))
        || words.get(1) == Some(&db)
        || (rest.starts_with("autovacuum worker") && words.contains(&db))
}

/// Cores' worth of CPU the machine used over one second before a run,
/// printed with the results: a benchmark on a busy two-core machine measures
/// the other load as much as the code.
pub async fn background_load() -> String {
    let cpu = Cpu::start();
    tokio::time::sleep(Duration::from_secs(1)).await;
    match cpu.used().machine {
        Some(busy) if busy > 0.2 => {
            format!("WARNING: the machine was busy before the run ({busy:.2} cores)")
        }
        Some(busy) => format!("machine idle before the run ({busy:.2} cores busy)"),
        None => "background load unknown (no /proc/stat)".into(),
    }
}

/// The settings a bench app runs with: port 0, no GitHub, test secrets.
pub fn settings(url: &str, role: Role) -> Settings {
    Settings {
        role,
        listen: "127.0.0.1:0".into(),
        admin_listen: None,
        database_url: url.into(),
        database_max_connections: StoreOptions::default().max_connections,
        webhook_secret: SECRET.into(),
        webhook_secret_previous: None,
        admin_token: "bench".into(),
        worker: WorkerSettings::default(),
        history_retention: Duration::from_secs(30 * 86_400),
        delivery_body_retention: Duration::from_secs(86_400),
        github: None,
    }
}

/// A bench app that syncs through the GitHub double at `api_url` (App id
/// 4242, the double's test key) into SQLite at `db`, with `fetch`.
pub fn sync_settings(
    api_url: String,
    db: &std::path::Path,
    fetch: connectord::github::FetchSettings,
) -> Settings {
    Settings {
        worker: WorkerSettings {
            poll_interval: Duration::from_millis(20),
            ..WorkerSettings::default()
        },
        admin_token: "bench".into(),
        webhook_secret: "bench".into(),
        github: Some(connectord::github::GithubAppConfig {
            app_id: 4242,
            private_key_pem: fake_github::TEST_APP_PRIVATE_KEY_PEM.into(),
            api_url,
            fetch,
            reconcile_interval: None,
        }),
        ..settings(&format!("sqlite://{}", db.display()), Role::All)
    }
}

#[cfg(test)]
mod tests {
    use super::postgres_title_is_for as ours;

    #[test]
    fn postgres_processes_are_told_apart_by_database() {
        let db = "edge_1_ab";
        assert!(ours(
            "postgres: 15/main: postgres edge_1_ab 127.0.0.1(4409) idle",
            db
        ));
        assert!(ours(
            "postgres: postgres edge_1_ab 127.0.0.1(4409) INSERT",
            db
        ));
        assert!(ours("postgres: 15/main: walwriter   ", db));
        assert!(ours("postgres: 15/main: autovacuum worker edge_1_ab", db));
        assert!(!ours(
            "postgres: 15/main: postgres test 127.0.0.1(4410) idle",
            db
        ));
        assert!(!ours("postgres: 15/main: autovacuum worker test", db));
        assert!(!ours(
            "/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main",
            db
        ));
    }
}
