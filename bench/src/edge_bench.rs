//! The edge benchmark (issue 9): in one run, side by side on the same signed
//! `push` deliveries, connectord `serve` on SQLite and on PostgreSQL, the
//! Node.js receiver most teams use (`@octokit/webhooks`), and a bare HMAC
//! check (the limit); plus wrongly signed requests against connectord. Each
//! server is started fresh for each run (a new data directory or database),
//! loaded by `edge-load` in its own process, then killed; after each
//! connectord run every 202 is looked up in the database.
//!
//! `bench/edge.sh` builds everything (release) and runs this; `--smoke` is
//! the tiny CI variant, `--soak` the 60 s memory run.

use connectord_bench::common;
use connectord_bench::edge;

use anyhow::{bail, Context};
use clap::Parser;
use edge::payload::{Template, FIXTURES};
use edge::report::LoadReport;
use edge::servers::{Kind, Server, Tools, SECRET};
use edge::table::RunResult;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::Command;

#[derive(Parser)]
#[command(about = "connectord's webhook edge against octokit and a bare HMAC server, in one run")]
struct Args {
    /// The connectord binary (default: the one next to this program).
    #[arg(long)]
    connectord: Option<PathBuf>,
    /// Seconds measured per run.
    #[arg(long, default_value_t = 8.0)]
    duration: f64,
    /// Seconds of load before each measurement.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Rounds: every server runs once per round, in turn (A B C D E A B C D E).
    #[arg(long, default_value_t = 2)]
    runs: usize,
    /// Connections, one series of rounds each.
    #[arg(long, value_delimiter = ',', default_values_t = [64, 1, 256])]
    concurrency: Vec<usize>,
    /// Tracked targets the pushes are spread over.
    #[arg(long, default_value_t = 20)]
    targets: usize,
    /// Seconds to wait after a server stopped before the next one starts.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Requests prepared per second of load (the most a run can send).
    #[arg(long, default_value_t = 60_000)]
    max_rate: u64,
    /// Runtime threads of the load generator.
    #[arg(long, default_value_t = 1)]
    load_threads: usize,
    /// PostgreSQL to create each run's database in (trust or password in the URL).
    #[arg(
        long,
        env = "CONNECTORD_BENCH_POSTGRES_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres",
        hide_env_values = true
    )]
    postgres_url: String,
    /// Leave out the PostgreSQL row.
    #[arg(long)]
    no_postgres: bool,
    /// Leave out the Node.js row.
    #[arg(long)]
    no_node: bool,
    /// The Node.js binary.
    #[arg(long, default_value = "node")]
    node: String,
    /// Do not run `npm ci` in bench/node (it must have been run).
    #[arg(long)]
    no_npm_ci: bool,
    /// CI: 1 s, 4 connections, one round; asserts only 2xx answers and durability.
    #[arg(long)]
    smoke: bool,
    /// Only the memory run: connectord on SQLite, 64 connections, resident size after 5 s and at the end.
    #[arg(long)]
    soak: bool,
    /// Length of the soak.
    #[arg(long, default_value_t = 60.0)]
    soak_secs: f64,
    /// Requests prepared per second of the soak.
    #[arg(long, default_value_t = 10_000)]
    soak_max_rate: u64,
    /// Also write the Markdown output here.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// What a run needs besides the server.
struct Bench {
    tools: Tools,
    edge_load: PathBuf,
    template: Template,
    targets: usize,
    load_threads: usize,
    settle: Duration,
}

struct Load {
    concurrency: usize,
    duration: f64,
    warmup: f64,
    max_rate: u64,
    rss_at: Vec<f64>,
}

impl Bench {
    async fn run(&self, kind: Kind, round: usize, load: &Load) -> anyhow::Result<RunResult> {
        tokio::time::sleep(self.settle).await;
        let machine = common::background_load().await;
        println!(
            "== round {round}, {} connections: {} ({machine})",
            load.concurrency,
            kind.label()
        );
        let mut server = Server::start(kind, &self.tools).await?;
        let measured = self.measure(&mut server, load).await;
        let stopped = server.stop().await;
        let log_bytes = server.log_bytes();
        let check = match (&measured, &server.store) {
            (Ok(report), Some(store)) => {
                Some(edge::durable::check(store, &report.accepted_ids).await)
            }
            _ => None,
        };
        let dropped = server.drop_store(&self.tools).await;
        let report = measured.map_err(|e| anyhow::anyhow!("{e:#}\n{}", server.log_tail()))?;
        stopped?;
        dropped?;
        let check = check.transpose()?;
        match &check {
            Some(c) if kind == Kind::BadSignature => {
                println!("   recorded: {} deliveries (must be none)", c.recorded)
            }
            Some(c) => println!("   durability: {}", c.describe()),
            None => {}
        }
        Ok(RunResult {
            kind,
            concurrency: load.concurrency,
            round,
            report,
            check,
            log_bytes,
        })
    }

    async fn measure(&self, server: &mut Server, load: &Load) -> anyhow::Result<LoadReport> {
        if server.kind.is_connectord() {
            server
                .track_targets(self.targets, &self.template.branch)
                .await?;
        }
        let json = server.dir().join("load.json");
        let mut cmd = Command::new(&self.edge_load);
        cmd.arg("--url")
            .arg(server.webhook_url())
            .arg("--connections")
            .arg(load.concurrency.to_string())
            .arg("--duration")
            .arg(load.duration.to_string())
            .arg("--warmup")
            .arg(load.warmup.to_string())
            .arg("--targets")
            .arg(self.targets.to_string())
            .arg("--max-rate")
            .arg(load.max_rate.to_string())
            .arg("--threads")
            .arg(self.load_threads.to_string())
            .arg("--server-pid")
            .arg(server.pid.to_string())
            .arg("--json")
            .arg(&json)
            .env("EDGE_WEBHOOK_SECRET", SECRET)
            .kill_on_drop(true);
        for at in &load.rss_at {
            cmd.arg("--rss-at").arg(at.to_string());
        }
        if let Some(edge::servers::Store::Postgres { name, .. }) = &server.store {
            cmd.arg("--postgres-db").arg(name);
        }
        if server.kind == Kind::BadSignature {
            cmd.arg("--bad-signature");
        }
        // Preparing the requests takes a few seconds before the clock starts.
        let limit = Duration::from_secs_f64(load.warmup + load.duration + 120.0);
        let status = tokio::time::timeout(limit, cmd.status())
            .await
            .context("edge-load did not finish in time")??;
        if !status.success() {
            bail!("edge-load failed ({status})");
        }
        Ok(serde_json::from_slice(&std::fs::read(&json)?)?)
    }
}

/// A program built next to this one.
fn sibling(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let path = exe.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found: build it (`cargo build -p connectord -p connectord-bench`, or bench/edge.sh)",
            path.display()
        );
    }
    Ok(path)
}

async fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().await?;
    if !out.status.success() {
        bail!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// The Node peer's dependencies, exactly as locked (`npm ci`).
async fn install_node_peer(dir: &Path, skip: bool) -> anyhow::Result<()> {
    if !skip {
        output(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(dir),
        )
        .await
        .context("npm ci in bench/node")?;
    }
    if !dir
        .join("node_modules/@octokit/webhooks/package.json")
        .exists()
    {
        bail!("bench/node/node_modules is missing: run `npm ci` there");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.duration = 1.0;
        args.warmup = 0.0;
        args.runs = 1;
        args.concurrency = vec![4];
        args.settle = 0.2;
    }
    if args.runs == 0 || args.concurrency.contains(&0) {
        bail!("--runs and every --concurrency must be at least 1");
    }
    let node_dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/node"));
    let use_node = !args.no_node && !args.soak;
    let use_postgres = !args.no_postgres && !args.soak;
    let mut notes = vec![format!(
        "{} cores, shared by the server under test, the load generator ({} runtime thread{}) and the driver",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        args.load_threads,
        if args.load_threads == 1 { "" } else { "s" }
    )];
    if let Ok(commit) = output(
        Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(env!("CARGO_MANIFEST_DIR")),
    )
    .await
    {
        notes.push(format!("commit {commit}"));
    }
    if use_node {
        let version = output(Command::new(&args.node).arg("--version"))
            .await
            .context("node --version (or --no-node)")?;
        install_node_peer(&node_dir, args.no_npm_ci).await?;
        notes.push(format!("Node {version}"));
    }
    if use_postgres {
        let settings = common::postgres_settings(&args.postgres_url)
            .await
            .context("PostgreSQL at --postgres-url (or --no-postgres)")?;
        notes.push(format!("PostgreSQL on this host: {settings}"));
    }
    let template = Template::load(FIXTURES.as_ref(), args.targets)?;
    notes.push(format!(
        "body: the fixtures' `push` example, {} bytes, to {} targets of one installation",
        template.bytes.len(),
        args.targets
    ));
    let bench = Bench {
        tools: Tools {
            connectord: match &args.connectord {
                Some(p) => p.clone(),
                None => sibling("connectord")?,
            },
            bare_hmac: sibling("bare-hmac")?,
            node: args.node.clone(),
            node_dir,
            postgres: use_postgres.then(|| args.postgres_url.clone()),
        },
        edge_load: sibling("edge-load")?,
        template,
        targets: args.targets,
        load_threads: args.load_threads,
        settle: Duration::from_secs_f64(args.settle),
    };

    let mut results = vec![];
    if args.soak {
        let load = Load {
            concurrency: 64,
            duration: args.soak_secs,
            warmup: 0.0,
            max_rate: args.soak_max_rate,
            rss_at: vec![5.0, args.soak_secs],
        };
        results.push(bench.run(Kind::Sqlite, 1, &load).await?);
    } else {
        let mut kinds = vec![Kind::Sqlite];
        if use_postgres {
            kinds.push(Kind::Postgres);
        }
        if use_node {
            kinds.push(Kind::Octokit);
        }
        kinds.extend([Kind::Limit, Kind::BadSignature]);
        for &concurrency in &args.concurrency {
            let load = Load {
                concurrency,
                duration: args.duration,
                warmup: args.warmup,
                max_rate: args.max_rate,
                rss_at: vec![],
            };
            for round in 1..=args.runs {
                for &kind in &kinds {
                    results.push(bench.run(kind, round, &load).await?);
                }
            }
        }
    }

    let mut md = String::new();
    md.push_str(&format!("Conditions: {}.\n\n", notes.join("; ")));
    md.push_str(&edge::table::table(&results));
    if args.soak {
        md.push_str(&edge::verdict::soak_summary(&results[0].report));
    } else {
        md.push_str("\nRequests/s ratios, round by round:\n\n");
        md.push_str(&edge::table::ratios(&results));
        md.push_str("\nCPU per request, mean of the rounds:\n\n");
        md.push_str(&edge::table::cpu_per_request(&results));
    }
    println!("\n{md}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, &md).with_context(|| format!("writing {}", path.display()))?;
    }

    let failures = edge::verdict::checks(&results, args.smoke);
    if args.smoke {
        println!(
            "edge-bench smoke: {} passed, {} failed",
            results.len() - failures.len(),
            failures.len()
        );
    }
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("FAILED: {f}");
        }
        bail!("{} run(s) failed their checks", failures.len());
    }
    Ok(())
}
