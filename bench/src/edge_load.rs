//! The edge benchmark's load generator, in its own process so that the server
//! under test is measured alone: a fixed number of keep-alive HTTP/1.1
//! connections (hyper's client), each in a closed loop (send, wait for the
//! answer, send the next) for a fixed time.
//!
//! Everything costly is done before the clock starts: every request's body
//! layout, `after` SHA, `X-GitHub-Delivery` and signature (HMAC-SHA256 over
//! the exact bytes that will be sent, as GitHub signs them). During the run a
//! request costs a copy of the ~8 KB template with three fields patched.
//! It only talks to loopback addresses.
//!
//! `edge-load --url http://127.0.0.1:PORT/v1/webhooks/connectors/github --connections 64 --duration 8`
//! with the secret in `EDGE_WEBHOOK_SECRET`.

use connectord_bench::common;
use connectord_bench::edge;

use anyhow::{bail, Context};
use clap::Parser;
use edge::closed_loop::{connection, prepare, ConnStats, Plan};
use edge::payload::{Template, FIXTURES};
use edge::report::LoadReport;
use hyper::header::HeaderValue;
use hyper::Uri;
use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

#[derive(Parser)]
#[command(about = "Closed-loop load of signed GitHub push deliveries against a loopback server")]
struct Args {
    /// The webhook URL, e.g. http://127.0.0.1:8080/v1/webhooks/connectors/github (loopback only).
    #[arg(long)]
    url: String,
    /// Keep-alive connections, each with one request in flight.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Seconds measured.
    #[arg(long, default_value_t = 8.0)]
    duration: f64,
    /// Seconds of load before the measurement starts (answers counted, not timed).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Targets the pushes go to, round-robin (see the driver's setup).
    #[arg(long, default_value_t = 20)]
    targets: usize,
    /// Requests prepared, per second of warm-up and duration: the most the run can send.
    #[arg(long, default_value_t = 60_000)]
    max_rate: u64,
    /// Sign every request with a wrong secret (a well-formed `sha256=` signature that does not match).
    #[arg(long)]
    bad_signature: bool,
    /// The webhook secret.
    #[arg(long, env = "EDGE_WEBHOOK_SECRET", hide_env_values = true)]
    secret: String,
    /// Processes whose CPU time (utime + stime) counts as the server's.
    #[arg(long)]
    server_pid: Vec<u32>,
    /// Also count the CPU time of the PostgreSQL processes working for this
    /// database (its backends and the server's background processes).
    #[arg(long)]
    postgres_db: Option<String>,
    /// Record the first server pid's resident size this many seconds into the window (repeatable).
    #[arg(long)]
    rss_at: Vec<f64>,
    /// Runtime threads of the load generator.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Also write the report here, as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// GitHub's example payloads (the `push` example for a branch is the body).
    #[arg(long, default_value = FIXTURES)]
    fixtures: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.connections == 0 || args.threads == 0 {
        bail!("--connections and --threads must be at least 1");
    }
    if !(args.duration > 0.0 && args.warmup >= 0.0) {
        bail!("--duration must be positive and --warmup not negative");
    }
    let uri: Uri = args.url.parse().context("--url")?;
    let (addr, host, path) = loopback_target(&uri)?;
    let template = Template::load(&args.fixtures, args.targets)?;
    let count = ((args.duration + args.warmup) * args.max_rate as f64).ceil() as usize;
    let key: &[u8] = if args.bad_signature {
        b"not-the-webhook-secret"
    } else {
        args.secret.as_bytes()
    };
    let prepared = prepare(&template, count, key);
    let body_bytes = template.bytes.len();

    let runtime = if args.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    let report = runtime.block_on(async {
        let start = Instant::now();
        let measure_from = start + Duration::from_secs_f64(args.warmup);
        let plan = Arc::new(Plan {
            addr,
            host,
            path,
            template,
            prepared,
            next: AtomicUsize::new(0),
            exhausted: AtomicBool::new(false),
            measure_from,
            end: measure_from + Duration::from_secs_f64(args.duration),
        });
        let cpu = tokio::spawn(sample_cpu(
            plan.clone(),
            args.server_pid.clone(),
            args.postgres_db.clone(),
        ));
        let rss = tokio::spawn(sample_rss(
            plan.clone(),
            args.server_pid.first().copied(),
            args.rss_at.clone(),
            args.duration,
        ));
        let connections: Vec<_> = (0..args.connections)
            .map(|_| tokio::spawn(connection(plan.clone())))
            .collect();
        let mut all = ConnStats::default();
        for c in connections {
            let s = c.await?;
            all.window.extend(s.window);
            for (status, n) in s.statuses {
                *all.statuses.entry(status).or_default() += n;
            }
            all.transport_errors += s.transport_errors;
            all.accepted.extend(s.accepted);
        }
        let cpu = cpu.await?;
        let (rss_kib, rss_end_kib) = rss.await?;
        all.window.sort();
        let window_secs = args.duration;
        let requests = all.window.len() as u64;
        anyhow::Ok(LoadReport {
            connections: args.connections,
            bad_signature: args.bad_signature,
            body_bytes,
            window_secs,
            requests,
            requests_per_sec: requests as f64 / window_secs,
            p50_ms: common::ms(common::pct(&all.window, 0.50)),
            p99_ms: common::ms(common::pct(&all.window, 0.99)),
            max_ms: common::ms(all.window.last().copied().unwrap_or_default()),
            statuses: all
                .statuses
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect::<BTreeMap<_, _>>(),
            transport_errors: all.transport_errors,
            accepted_ids: all
                .accepted
                .iter()
                .map(|&i| {
                    plan.prepared[i]
                        .delivery
                        .to_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect(),
            server_cpu_secs: cpu.server,
            postgres_cpu_secs: cpu.postgres,
            load_cpu_secs: cpu.load,
            machine_cpu_secs: cpu.machine,
            rss_kib,
            rss_end_kib,
            exhausted: plan.exhausted.load(Ordering::Relaxed),
        })
    })?;
    print_summary(&report);
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if report.exhausted {
        bail!(
            "ran out of the {count} prepared requests before the window closed: raise --max-rate"
        );
    }
    Ok(())
}

/// The address to connect to, the Host header and the path; refuses anything
/// but a loopback IP address, so the load can only reach this machine.
fn loopback_target(uri: &Uri) -> anyhow::Result<(SocketAddr, HeaderValue, String)> {
    if uri.scheme_str() != Some("http") {
        bail!("--url must be http://");
    }
    let host = uri.host().context("--url has no host")?;
    let ip: IpAddr = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .context("--url must name a loopback IP address, e.g. 127.0.0.1")?;
    if !ip.is_loopback() {
        bail!("--url must be a loopback address; this load is for servers on this machine");
    }
    let port = uri.port_u16().unwrap_or(80);
    let authority = uri.authority().context("--url has no authority")?.as_str();
    Ok((
        SocketAddr::new(ip, port),
        HeaderValue::from_str(authority)?,
        uri.path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned()),
    ))
}

/// CPU seconds over the window.
struct CpuWindow {
    server: Option<f64>,
    postgres: Option<f64>,
    load: Option<f64>,
    /// Every core of the machine (whatever ran).
    machine: Option<f64>,
}

/// CPU over the window: the server pids, PostgreSQL, this process, the machine.
async fn sample_cpu(plan: Arc<Plan>, pids: Vec<u32>, postgres: Option<String>) -> CpuWindow {
    let sample = || {
        let server: Option<u64> = if pids.is_empty() {
            None
        } else {
            pids.iter().map(|&p| common::pid_ticks(p)).sum()
        };
        let pg = postgres.as_deref().and_then(common::postgres_ticks_for);
        [
            server,
            pg,
            common::process_ticks(),
            common::machine_busy_ticks(),
        ]
    };
    tokio::time::sleep_until(plan.measure_from).await;
    let before = sample();
    tokio::time::sleep_until(plan.end).await;
    let after = sample();
    let secs = |i: usize| Some(common::ticks_to_secs(after[i]?.saturating_sub(before[i]?)));
    CpuWindow {
        server: secs(0),
        postgres: secs(1),
        load: secs(2),
        machine: secs(3),
    }
}

/// The server's resident size at the given seconds into the window, and at its end.
async fn sample_rss(
    plan: Arc<Plan>,
    pid: Option<u32>,
    mut at: Vec<f64>,
    duration: f64,
) -> (Vec<(f64, u64)>, Option<u64>) {
    let Some(pid) = pid else {
        return (vec![], None);
    };
    at.sort_by(f64::total_cmp);
    let mut samples = vec![];
    for secs in at {
        let secs = secs.clamp(0.0, duration);
        tokio::time::sleep_until(plan.measure_from + Duration::from_secs_f64(secs)).await;
        if let Some(kib) = common::rss_kib(pid) {
            samples.push((secs, kib));
        }
    }
    tokio::time::sleep_until(plan.end).await;
    (samples, common::rss_kib(pid))
}

fn print_summary(r: &LoadReport) {
    let opt = |x: Option<f64>| x.map_or("n/a".to_owned(), |x| format!("{x:.2} s"));
    println!(
        "edge-load: {} connections{}, {:.1} s: {} requests, {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms; \
         answers {:?}, no answer {}; CPU server {} postgres {} load {}; {} bytes per body",
        r.connections,
        if r.bad_signature { " (bad signatures)" } else { "" },
        r.window_secs,
        r.requests,
        r.requests_per_sec,
        r.p50_ms,
        r.p99_ms,
        r.max_ms,
        r.statuses,
        r.transport_errors,
        opt(r.server_cpu_secs),
        opt(r.postgres_cpu_secs),
        opt(r.load_cpu_secs),
        r.body_bytes,
    );
}
