//! Scale-out, end to end, through the real binary on PostgreSQL: 2 `ingress`
//! and 3 `worker` processes of `connectord serve` on one database, syncing
//! from the GitHub test double (`fake-github`, real git repositories).
//!
//! 2,000 signed push deliveries over 50 targets go to both ingress processes
//! at once: every push of a 36-commit chain per repository, some delivered
//! out of order, some sent twice at once (one to each ingress) and some
//! redelivered later with the same `X-GitHub-Delivery`. In the middle, the
//! worker holding the most running jobs is killed with SIGKILL and a new one
//! is started. Then:
//!
//! - every delivery answered 202 is recorded as accepted (and every other
//!   answer is what the rules say: `stale` for a push delivered after its
//!   successor, `delivery_already_processed` for a repeated delivery id);
//! - no two syncs of one target ever ran at the same time (see
//!   [`Watch`] and [`check_activities`] for how that is seen);
//! - each target ends at the last commit of its chain, and its stored
//!   documents are exactly git's files there (paths and bytes);
//! - no sync event stays `queued` or `running`.
//!
//! It prints the ingress throughput and the time to drain the queue.
//!
//! Needs `CONNECTORD_TEST_POSTGRES_URL` (e.g.
//! `postgres://postgres@127.0.0.1:5432/test`); without it the test says it is
//! skipped and passes (under `CI=true` it fails instead).

mod common;

use common::process::{str_arg, Server};
use connectord::ingress::signature::sign;
use fake_github::{
    Endpoint, FakeGitHub, GitRepo, TEST_APP_PRIVATE_KEY_PEM, TEST_APP_PUBLIC_KEY_PEM,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use sqlx::postgres::{PgPool, PgPoolOptions};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const APP_ID: i64 = 4343;
/// The 50 targets are spread over five installations (ten each), so that the
/// per-installation cap (4 running jobs) leaves work for every worker.
const INSTALLATIONS: [i64; 5] = [601, 602, 603, 604, 605];
const TARGETS: usize = 50;
/// Commits after the root in each repository's chain: one push each.
const CHAIN: usize = 36;
/// Per target: 36 pushes, 2 sent twice at once, 2 redelivered later = 40.
const DELIVERIES_PER_TARGET: usize = CHAIN + 4;
const WEBHOOK_SECRET: &str = "scale-out-webhook-secret-0123456789abcdef";
const ADMIN_TOKEN: &str = "scale-out-admin-token-0123456789abcdef";
/// Requests in flight from the test at once (over both ingress processes).
const SEND_CONCURRENCY: usize = 32;
/// How long `serve` may take to answer /healthz (migrations, a loaded box).
const STARTUP: Duration = Duration::from_secs(30);
const INITIAL_SYNC_TIMEOUT: Duration = Duration::from_secs(60);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Prints on stdout (seen with `--nocapture`) and on stderr.
macro_rules! report {
    ($($arg:tt)*) => {{
        let line = format!($($arg)*);
        println!("{line}");
        eprintln!("{line}");
    }};
}

// ---------------------------------------------------------------------------
// The repositories: a chain of real commits each.

/// One tracked repository and its history, root first.
struct Chain {
    full_name: String,
    repo_id: i64,
    installation: i64,
    repo: GitRepo,
    /// `commits[0]` is the root, `commits[i]` the head after push `i`.
    commits: Vec<String>,
}

impl Chain {
    fn head(&self) -> &str {
        &self.commits[CHAIN]
    }
}

fn page(t: usize, k: usize, rev: usize) -> Vec<u8> {
    format!(
        "# Page {k}\n\nRepository {t}, revision {rev}.\n\n{}\n",
        "Lorem ipsum dolor sit amet. ".repeat(1 + (k * 7 + rev) % 23)
    )
    .into_bytes()
}

/// Bytes no text file has (NULs, invalid UTF-8), different per target and revision.
fn binary(t: usize, rev: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR".to_vec();
    bytes.extend((0..=255u8).map(|b| b.wrapping_mul(31).wrapping_add((t * 37 + rev) as u8)));
    bytes.extend_from_slice(&[0xff, 0xfe, 0x00, 0x80]);
    bytes
}

/// What commit `i` of target `t`'s chain writes (path, mode, bytes) and
/// deletes, given the files before it. Every commit changes two pages; every
/// fourth deletes one, every sixth changes the binary file, every ninth adds
/// a note in a new directory, every twelfth deletes the oldest note.
#[allow(clippy::type_complexity)]
fn changes(
    t: usize,
    i: usize,
    files: &BTreeMap<String, Vec<u8>>,
) -> (Vec<(String, &'static str, Vec<u8>)>, Vec<String>) {
    let mut set = vec![];
    let mut del = vec![];
    if i == 0 {
        set.push((
            "README.md".into(),
            "100644",
            format!("# repo {t}\n").into_bytes(),
        ));
        for k in 0..10 {
            set.push((format!("docs/page-{k:02}.md"), "100644", page(t, k, 0)));
        }
        set.push(("assets/logo.png".into(), "100644", binary(t, 0)));
        set.push((
            "data/site.json".into(),
            "100644",
            format!("{{\"title\": \"Repository {t}\"}}\n").into_bytes(),
        ));
        set.push((
            "bin/build.sh".into(),
            "100755",
            b"#!/bin/sh\nexec make site\n".to_vec(),
        ));
        return (set, del);
    }
    let a = (i * 3 + t) % 10;
    let mut b = (i * 7 + 1 + t) % 10;
    if b == a {
        b = (b + 1) % 10;
    }
    for k in [a, b] {
        set.push((format!("docs/page-{k:02}.md"), "100644", page(t, k, i)));
    }
    if i % 4 == 0 {
        let d = (i * 5 + 2 + t) % 10;
        let path = format!("docs/page-{d:02}.md");
        if d != a && d != b && files.contains_key(&path) {
            del.push(path);
        }
    }
    if i % 6 == 0 {
        set.push(("assets/logo.png".into(), "100644", binary(t, i)));
    }
    if i % 9 == 0 {
        set.push((
            format!("notes/{i:02}/note.md"),
            "100644",
            format!("note {i} of repository {t}\n").into_bytes(),
        ));
    }
    if i % 12 == 0 {
        if let Some(oldest) = files.keys().find(|p| p.starts_with("notes/")) {
            del.push(oldest.clone());
        }
    }
    if i == CHAIN {
        set.push((
            "README.md".into(),
            "100644",
            format!("# repo {t}\n\nReleased.\n").into_bytes(),
        ));
    }
    (set, del)
}

/// The whole history of target `t` as a `git fast-import` stream: the root
/// on `main`, the chain on `chain`. One git process builds all 37 commits
/// (three git processes per commit through `GitRepo` would take minutes here).
fn fast_import_stream(t: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut files = BTreeMap::new();
    for i in 0..=CHAIN {
        let branch = if i == 0 { "main" } else { "chain" };
        let msg = format!("commit {i} of repository {t}\n");
        write!(
            out,
            "commit refs/heads/{branch}\nmark :{}\ncommitter Fake GitHub <fake-github@example.invalid> {} +0000\ndata {}\n{msg}",
            i + 1,
            1_700_000_000 + i,
            msg.len()
        )
        .unwrap();
        if i == 1 {
            out.extend_from_slice(b"from :1\n");
        }
        let (set, del) = changes(t, i, &files);
        for path in del {
            writeln!(out, "D {path}").unwrap();
            files.remove(&path);
        }
        for (path, mode, bytes) in set {
            write!(out, "M {mode} inline {path}\ndata {}\n", bytes.len()).unwrap();
            out.extend_from_slice(&bytes);
            out.push(b'\n');
            files.insert(path, bytes);
        }
        out.push(b'\n');
    }
    out
}

/// Runs git in `dir` without any user or system configuration.
fn git(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Vec<u8> {
    let mut cmd = Command::new("git");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(key);
        }
    }
    cmd.current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("LC_ALL", "C")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("run git");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input)
            .expect("feed git");
    }
    let out = child.wait_with_output().expect("wait for git");
    assert!(
        out.status.success(),
        "git {} failed in {}: {}",
        args.join(" "),
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn build_chain(fake: &FakeGitHub, t: usize) -> Chain {
    let full_name = format!("scale/repo-{t:02}");
    let repo_id = 70_000 + t as i64;
    let installation = INSTALLATIONS[t % INSTALLATIONS.len()];
    let repo = fake.add_repo(&full_name, repo_id, installation);
    git(
        repo.path(),
        &["fast-import", "--quiet"],
        Some(&fast_import_stream(t)),
    );
    let list = git(
        repo.path(),
        &["rev-list", "--reverse", "refs/heads/chain"],
        None,
    );
    let commits: Vec<String> = String::from_utf8(list)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(commits.len(), CHAIN + 1, "{full_name}: {commits:?}");
    assert_eq!(repo.head("main").as_deref(), Some(commits[0].as_str()));
    Chain {
        full_name,
        repo_id,
        installation,
        repo,
        commits,
    }
}

/// The regular files of `commit` with their bytes, straight from git
/// (`ls-tree` for the listing, one `cat-file --batch` for every blob).
fn git_files(repo: &GitRepo, commit: &str) -> BTreeMap<String, (String, Vec<u8>)> {
    let files: Vec<(String, String)> = repo
        .ls_tree(commit)
        .into_iter()
        .filter(|(_, mode, kind, _)| kind == "blob" && (mode == "100644" || mode == "100755"))
        .map(|(path, _, _, sha)| (path, sha))
        .collect();
    let input: String = files.iter().map(|(_, sha)| format!("{sha}\n")).collect();
    let out = git(
        repo.path(),
        &["cat-file", "--batch"],
        Some(input.as_bytes()),
    );
    let mut rest = &out[..];
    let mut result = BTreeMap::new();
    for (path, sha) in files {
        let nl = rest.iter().position(|b| *b == b'\n').expect("batch header");
        let header = String::from_utf8_lossy(&rest[..nl]).into_owned();
        let mut cols = header.split(' ');
        assert_eq!(cols.next(), Some(sha.as_str()), "{header}");
        assert_eq!(cols.next(), Some("blob"), "{header}");
        let size: usize = cols.next().and_then(|s| s.parse().ok()).expect("size");
        let bytes = rest[nl + 1..nl + 1 + size].to_vec();
        rest = &rest[nl + 1 + size + 1..];
        result.insert(path, (sha, bytes));
    }
    result
}

// ---------------------------------------------------------------------------
// GitHub's view: a proxy in front of the fake that sees every request.

/// What GitHub sees of the workers. Every worker process mints its own
/// installation token, so the `Authorization` header tells the processes
/// apart. For every repository the proxy tracks which tokens have a request
/// in flight; a request for a repository while another process still has one
/// in flight for it is recorded as an overlap.
///
/// Why that is the right test for "no job ran twice at the same time for one
/// target": a sync's requests all end before the worker records the result
/// (the reconciler awaits every fetch), and the next sync of that target can
/// only be claimed after that record commits, so even a hand-over between
/// processes leaves a gap. A killed worker's requests die with it, seconds
/// before its lease expires, so the kill needs no exception here. Two jobs of
/// one target in the *same* process would share a token: that case is the
/// proxy's timings and the database's to show together (see [`check_activities`]).
#[derive(Default)]
struct Watch {
    state: Mutex<WatchState>,
}

#[derive(Default)]
struct WatchState {
    /// repository (lower case) → token → requests in flight.
    in_flight: HashMap<String, HashMap<String, usize>>,
    overlaps: Vec<String>,
    /// Token → process number, in order of first use.
    tokens: HashMap<String, usize>,
    /// Recursive tree listings, the first request of every sync run:
    /// (repository, commit, Unix ms).
    trees: Vec<(String, String, i64)>,
    repo_requests: usize,
}

struct InFlight {
    watch: Arc<Watch>,
    repo: String,
    token: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut st = self.watch.state.lock().unwrap();
        if let Some(n) = st
            .in_flight
            .get_mut(&self.repo)
            .and_then(|m| m.get_mut(&self.token))
        {
            *n -= 1;
        }
    }
}

impl Watch {
    fn enter(self: &Arc<Self>, repo: &str, token: &str, path: &str) -> InFlight {
        let mut st = self.state.lock().unwrap();
        st.repo_requests += 1;
        let next = st.tokens.len() + 1;
        let me = *st.tokens.entry(token.to_owned()).or_insert(next);
        let others: Vec<String> = st
            .in_flight
            .get(repo)
            .map(|m| {
                m.iter()
                    .filter(|(t, n)| t.as_str() != token && **n > 0)
                    .map(|(t, n)| format!("process #{} ({n} in flight)", st.tokens[t]))
                    .collect()
            })
            .unwrap_or_default();
        if !others.is_empty() {
            st.overlaps.push(format!(
                "{repo}: process #{me} requested {path} while {} had requests for it in flight",
                others.join(", ")
            ));
        }
        if let Some(rest) = path.split("/git/trees/").nth(1) {
            if let Some(commit) = rest.strip_suffix("?recursive=1") {
                st.trees
                    .push((repo.to_owned(), commit.to_owned(), now_ms()));
            }
        }
        *st.in_flight
            .entry(repo.to_owned())
            .or_default()
            .entry(token.to_owned())
            .or_default() += 1;
        InFlight {
            watch: self.clone(),
            repo: repo.to_owned(),
            token: token.to_owned(),
        }
    }
}

struct ProxyState {
    upstream: String,
    client: reqwest::Client,
    watch: Arc<Watch>,
}

/// Serves on 127.0.0.1:0 and forwards everything to `upstream`; returns its base URL.
async fn start_proxy(upstream: String, watch: Arc<Watch>) -> String {
    let state = Arc::new(ProxyState {
        upstream,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        watch,
    });
    let app = axum::Router::new().fallback(forward).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

async fn forward(
    axum::extract::State(p): axum::extract::State<Arc<ProxyState>>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::http::header;
    let (parts, _body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let segments: Vec<&str> = parts
        .uri
        .path()
        .trim_start_matches('/')
        .split('/')
        .collect();
    let token = parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    // Held until the upstream answer has been read in full, i.e. before the
    // worker can see it.
    let _in_flight = match segments.as_slice() {
        ["repos", owner, name, ..] => Some(p.watch.enter(
            &format!("{owner}/{name}").to_ascii_lowercase(),
            &token,
            &path,
        )),
        _ => None,
    };
    let mut upstream = p
        .client
        .request(parts.method.clone(), format!("{}{path}", p.upstream));
    for (name, value) in &parts.headers {
        if name != header::HOST {
            upstream = upstream.header(name, value);
        }
    }
    let answer = match upstream.send().await {
        Ok(res) => res,
        Err(e) => {
            let mut r = axum::response::Response::new(axum::body::Body::from(format!(
                "proxy: upstream failed: {e}"
            )));
            *r.status_mut() = axum::http::StatusCode::BAD_GATEWAY;
            return r;
        }
    };
    let status = answer.status();
    let headers = answer.headers().clone();
    let bytes = answer.bytes().await.unwrap_or_default();
    let mut r = axum::response::Response::new(axum::body::Body::from(bytes));
    *r.status_mut() = status;
    for (name, value) in &headers {
        if name != header::CONTENT_LENGTH
            && name != header::TRANSFER_ENCODING
            && name != header::CONNECTION
        {
            r.headers_mut().append(name, value.clone());
        }
    }
    r
}

// ---------------------------------------------------------------------------
// The deliveries.

struct Delivery {
    id: String,
    target: usize,
    /// Push `push` moves the branch from `commits[push - 1]` to `commits[push]`.
    push: usize,
    body: Vec<u8>,
    signature: String,
    /// Delivered after the push that follows it: must be ignored as `stale`.
    late: bool,
}

#[derive(Clone, Copy)]
enum Step {
    /// Send delivery `d` to ingress `ingress`.
    One { d: usize, ingress: usize },
    /// Send delivery `d` to both ingress processes at once.
    Both { d: usize },
}

#[derive(Debug, Clone)]
struct Answer {
    status: u16,
    outcome: String,
    reason: Option<String>,
    events: Vec<String>,
}

/// The deliveries (36 per target) and, per target, the order in which they
/// go out: in chain order but with some adjacent pairs swapped (the later
/// push first), two sent to both ingress processes at once, and two
/// redelivered a few steps later to the other ingress.
///
/// A target's steps go out one after the other (each waits for the previous
/// answer) while all targets go at once: with arbitrary reordering within a
/// target the stale rule cannot promise the last head (a push overtaking two
/// others is taken for a reset), and the test must know what to expect. The
/// last push is never stale, so every target must end at its last commit.
fn schedule(chains: &[Chain]) -> (Vec<Delivery>, Vec<Vec<Step>>) {
    let mut rng = StdRng::seed_from_u64(0x5ca1e);
    let mut deliveries = vec![];
    let mut plans = vec![];
    for (t, chain) in chains.iter().enumerate() {
        // Pushes in the order delivered.
        let mut order: Vec<usize> = (1..=CHAIN).collect();
        let mut late = HashSet::new();
        // Swap some non-overlapping adjacent pairs (index j holds push j + 1);
        // every fifth target gets its last push before the one before it.
        let mut touched = HashSet::new();
        let mut swaps: Vec<usize> = (0..6).map(|_| rng.gen_range(1..CHAIN - 2)).collect();
        if t % 5 == 0 {
            swaps.insert(0, CHAIN - 2);
        }
        for j in swaps {
            if touched.contains(&j) || touched.contains(&(j + 1)) {
                continue;
            }
            touched.extend([j, j + 1]);
            order.swap(j, j + 1);
            late.insert(order[j + 1]);
        }
        let first = deliveries.len();
        for (n, &push) in order.iter().enumerate() {
            let payload = common::push_payload(
                chain.installation,
                chain.repo_id,
                &chain.full_name,
                "main",
                &chain.commits[push - 1],
                &chain.commits[push],
            );
            let body = payload.to_string().into_bytes();
            deliveries.push(Delivery {
                id: format!("{:08x}-5ca1-4e00-8000-{t:06}{push:06}", n * 7919 + t),
                target: t,
                push,
                signature: sign(WEBHOOK_SECRET.as_bytes(), &body),
                body,
                late: late.contains(&push),
            });
        }
        let mut steps: Vec<Step> = (0..CHAIN)
            .map(|n| Step::One {
                d: first + n,
                ingress: (t + n) % 2,
            })
            .collect();
        // Two deliveries go to both processes at once (distinct positions).
        let a = rng.gen_range(0..CHAIN / 2);
        let b = rng.gen_range(CHAIN / 2..CHAIN);
        for n in [a, b] {
            steps[n] = Step::Both { d: first + n };
        }
        // Two redeliveries, 3 to 10 steps after the original, to the other ingress.
        for _ in 0..2 {
            let n = rng.gen_range(0..CHAIN);
            let at = (n + 1 + rng.gen_range(3..=10)).min(steps.len());
            steps.insert(
                at,
                Step::One {
                    d: first + n,
                    ingress: (t + n + 1) % 2,
                },
            );
        }
        let sends: usize = steps
            .iter()
            .map(|s| match s {
                Step::One { .. } => 1,
                Step::Both { .. } => 2,
            })
            .sum();
        assert_eq!(sends, DELIVERIES_PER_TARGET);
        plans.push(steps);
    }
    (deliveries, plans)
}

#[derive(Default)]
struct SendStats {
    answered: AtomicUsize,
    /// 503s and connection errors, resent as GitHub would redeliver them.
    resent: AtomicUsize,
    per_ingress: [AtomicUsize; 2],
}

/// Posts one delivery as GitHub does; a 503 or a connection error is sent
/// again (GitHub's redelivery) until it gets a 2xx.
async fn send(
    client: &reqwest::Client,
    url: &str,
    d: &Delivery,
    stats: &SendStats,
    ingress: usize,
) -> Answer {
    for attempt in 0.. {
        assert!(attempt < 50, "delivery {} never got a 2xx", d.id);
        let res = client
            .post(url)
            .header("content-type", "application/json")
            .header("user-agent", "GitHub-Hookshot/scale-out")
            .header("x-github-event", "push")
            .header("x-github-delivery", &d.id)
            .header("x-github-hook-id", "4343")
            .header("x-hub-signature-256", &d.signature)
            .body(d.body.clone())
            .send()
            .await;
        let (status, text) = match res {
            Ok(r) => {
                let status = r.status().as_u16();
                (status, r.text().await.unwrap_or_default())
            }
            Err(_) => (0, String::new()),
        };
        if status == 0 || status == 503 {
            stats.resent.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        stats.answered.fetch_add(1, Ordering::Relaxed);
        stats.per_ingress[ingress].fetch_add(1, Ordering::Relaxed);
        assert!(
            status == 200 || status == 202,
            "delivery {} answered {status}: {text}",
            d.id
        );
        let body: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("delivery {}: answer is not JSON ({e}): {text}", d.id));
        assert_eq!(body["deliveryId"], d.id.as_str(), "{body}");
        return Answer {
            status,
            outcome: body["outcome"].as_str().unwrap_or_default().to_owned(),
            reason: body["reason"].as_str().map(str::to_owned),
            events: body["syncEventIds"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        };
    }
    unreachable!()
}

// ---------------------------------------------------------------------------
// The database, read directly.

/// Running jobs per worker process (`lease_owner` is `{pid}-{uuid}/{slot}`).
#[allow(clippy::type_complexity)]
async fn running_jobs(db: &PgPool) -> Vec<(String, Option<String>, String, Option<String>)> {
    sqlx::query_as(
        "SELECT id, lease_owner, target_id, head_sha FROM sync_job WHERE state = 'running' ORDER BY id",
    )
    .fetch_all(db)
    .await
    .expect("read running jobs")
}

fn pid_of(lease_owner: &str) -> u32 {
    lease_owner
        .split('-')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("lease_owner {lease_owner} does not start with a pid"))
}

/// Sync events that are not finished: (id, target, status, head, attempts, last error).
#[allow(clippy::type_complexity)]
async fn unfinished(
    db: &PgPool,
) -> Vec<(String, String, String, Option<String>, i64, Option<String>)> {
    sqlx::query_as(
        "SELECT id, connector_target_id, status, head_sha, attempts, last_error FROM connector_sync_event \
         WHERE status IN ('queued', 'running') ORDER BY id",
    )
    .fetch_all(db)
    .await
    .expect("read unfinished sync events")
}

async fn unfinished_jobs(db: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM sync_job WHERE state IN ('available', 'running', 'retryable')",
    )
    .fetch_one(db)
    .await
    .expect("count unfinished jobs")
}

#[derive(sqlx::FromRow, Debug, Clone)]
struct Run {
    event_id: String,
    target_id: String,
    status: String,
    trigger: String,
    head_sha: Option<String>,
    started_at: i64,
    completed_at: Option<i64>,
    job_id: String,
    attempt: i64,
    run_at: i64,
    job_error: Option<String>,
}

/// A sync's activity against GitHub: from its recursive tree listing (the
/// first request of every run; the proxy's clock) to the end of its work.
struct Activity {
    what: String,
    start: i64,
    end: i64,
}

/// "No job ran twice at the same time for one target", the second way: per
/// target, the activities of its syncs must not overlap, in any process.
///
/// A completed run is active from its last attempt's tree listing (seen by
/// the proxy) to its `completed_at`, which the worker takes after its last
/// GitHub request and before the transaction that completes the job. The next
/// run of the target can only be claimed after that transaction commits, and
/// lists its tree after the claim, so in a correct system each run's listing
/// comes strictly after the previous run's `completed_at` (one clock: the
/// processes run on this machine). A job the killed worker held had one more,
/// dead, activity: from its first listing to the kill.
///
/// The sync events' own `[started_at, completed_at]` cannot serve: the worker
/// takes `started_at` before the claim transaction (and keeps it across the
/// claim's retries), so it can precede the previous run's `completed_at` by
/// some milliseconds although the runs did not overlap; and `started_at` is
/// kept across attempts, so a rescued job's interval spans every run of its
/// target between its dead attempt and its rescued one.
fn check_activities(by_target: &BTreeMap<String, Vec<Activity>>) -> Vec<String> {
    let mut problems = vec![];
    for (target, acts) in by_target {
        let mut acts: Vec<&Activity> = acts.iter().collect();
        acts.sort_by_key(|a| (a.start, a.end));
        for pair in acts.windows(2) {
            if pair[1].start < pair[0].end {
                problems.push(format!(
                    "{target}: {} (active {}..{}) overlaps {} (active {}..{})",
                    pair[0].what,
                    pair[0].start,
                    pair[0].end,
                    pair[1].what,
                    pair[1].start,
                    pair[1].end
                ));
            }
        }
    }
    problems
}

// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_ingress_and_three_workers_on_postgres_survive_a_kill_and_converge() {
    if common::backend::postgres_url().is_none() {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** SKIPPED scale_out: {} is unset (e.g. postgres://postgres@127.0.0.1:5432/test) ***\n",
            common::backend::POSTGRES_URL_VAR
        );
        return;
    }
    let test_started = Instant::now();
    let db_url = common::backend::fresh_schema().await;

    // GitHub: 50 repositories of 37 commits, behind the watching proxy. The
    // fake keeps one 5,000-call budget for all installations where GitHub
    // gives each its own: pin it full, this test is about the queue.
    let fake = FakeGitHub::start(APP_ID, TEST_APP_PUBLIC_KEY_PEM).await;
    fake.set_rate_limit_remaining(5000);
    for i in INSTALLATIONS {
        fake.add_installation(i);
    }
    let chains: Vec<Chain> = (0..TARGETS).map(|t| build_chain(&fake, t)).collect();
    let watch = Arc::new(Watch::default());
    let api_url = start_proxy(fake.base_url(), watch.clone()).await;

    // Which commit is which, for readable messages.
    let mut names: HashMap<String, String> = HashMap::new();
    for c in &chains {
        for (i, sha) in c.commits.iter().enumerate() {
            names.insert(sha.clone(), format!("{}@c{i}", c.full_name));
        }
    }

    // The processes: 2 ingress, 3 workers, 6 PostgreSQL connections each.
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let key_path = work.join("app-key.pem");
    std::fs::write(&key_path, TEST_APP_PRIVATE_KEY_PEM).unwrap();
    let app_id = APP_ID.to_string();
    let common_args = [
        "--database-url",
        db_url.as_str(),
        "--database-max-connections",
        "6",
    ];
    let ingress_args: Vec<&str> = ["--role", "ingress"]
        .into_iter()
        .chain(common_args)
        .collect();
    let worker_args: Vec<&str> = [
        "--role",
        "worker",
        "--workers",
        "4",
        "--lease-seconds",
        "3",
        "--max-jobs-per-installation",
        "4",
    ]
    .into_iter()
    .chain(common_args)
    .collect();
    let ingress_env = [
        ("GITHUB_CONNECTOR_APP_WEBHOOK_SECRET", WEBHOOK_SECRET),
        ("CONNECTORD_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let worker_env = [
        ("GITHUB_CONNECTOR_APP_ID", app_id.as_str()),
        ("GITHUB_CONNECTOR_APP_PRIVATE_KEY_PATH", str_arg(&key_path)),
        ("GITHUB_API_URL", api_url.as_str()),
    ];
    // The first start migrates the fresh schema; the others find it done.
    let mut ingress = vec![
        Server::start_within(work, &work.join("i0"), &ingress_args, &ingress_env, STARTUP).await,
    ];
    let dirs = ["i1", "w0", "w1", "w2"].map(|d| work.join(d));
    let (i1, w0, w1, w2) = tokio::join!(
        Server::start_within(work, &dirs[0], &ingress_args, &ingress_env, STARTUP),
        Server::start_within(work, &dirs[1], &worker_args, &worker_env, STARTUP),
        Server::start_within(work, &dirs[2], &worker_args, &worker_env, STARTUP),
        Server::start_within(work, &dirs[3], &worker_args, &worker_env, STARTUP),
    );
    ingress.push(i1);
    let mut workers = vec![w0, w1, w2];
    let db = PgPoolOptions::new()
        .max_connections(3)
        .connect(&db_url)
        .await
        .expect("connect to the test schema");

    // Track the 50 repositories (through the first ingress's admin API) and
    // let the initial syncs run (at the root commit).
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(SEND_CONCURRENCY)
        .build()
        .unwrap();
    let admin = ingress[0].base();
    let mut connectors = HashMap::new();
    for i in INSTALLATIONS {
        let res = client
            .post(format!("{admin}/v1/admin/connectors"))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"type": "github", "installationId": i}))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{}", res.status());
        let body: Value = res.json().await.unwrap();
        connectors.insert(i, body["id"].as_str().unwrap().to_owned());
    }
    let mut target_ids = vec![];
    for c in &chains {
        let res = client
            .post(format!(
                "{admin}/v1/admin/connectors/{}/targets",
                connectors[&c.installation]
            ))
            .bearer_auth(ADMIN_TOKEN)
            .json(&json!({"repositoryFullName": c.full_name, "repositoryId": c.repo_id, "branch": "main"}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 201);
        let body: Value = res.json().await.unwrap();
        target_ids.push(body["id"].as_str().unwrap().to_owned());
    }
    for (t, id) in target_ids.iter().enumerate() {
        names.insert(id.clone(), chains[t].full_name.clone());
    }
    let name = |s: &str| names.get(s).cloned().unwrap_or_else(|| s.to_owned());
    let deadline = Instant::now() + INITIAL_SYNC_TIMEOUT;
    while !unfinished(&db).await.is_empty() {
        for w in &mut workers {
            w.assert_running();
        }
        assert!(
            Instant::now() < deadline,
            "the initial syncs did not finish within {INITIAL_SYNC_TIMEOUT:?}: {:?}\nworker log:\n{}",
            unfinished(&db).await,
            workers[0].log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let initial: Vec<(String, String, Option<String>)> =
        sqlx::query_as("SELECT connector_target_id, status, head_sha FROM connector_sync_event")
            .fetch_all(&db)
            .await
            .unwrap();
    assert_eq!(initial.len(), TARGETS);
    for (target, status, head) in &initial {
        let t = target_ids.iter().position(|id| id == target).unwrap();
        assert_eq!(status, "completed", "initial sync of {}", name(target));
        assert_eq!(head.as_deref(), Some(chains[t].commits[0].as_str()));
    }
    report!(
        "scale_out: set-up (50 repositories of {} commits, 5 processes, 50 initial syncs) took {:.1?}",
        CHAIN + 1,
        test_started.elapsed()
    );

    // The branches move to their last commits; the pushes say so.
    for c in &chains {
        c.repo.set_branch("main", c.head());
    }
    let (deliveries, plans) = schedule(&chains);
    let deliveries = Arc::new(deliveries);
    let total_sends = TARGETS * DELIVERIES_PER_TARGET;
    let urls = Arc::new([ingress[0].webhook_url(), ingress[1].webhook_url()]);
    let stats = Arc::new(SendStats::default());
    let answers: Arc<Mutex<HashMap<String, Vec<Answer>>>> = Arc::default();
    let permits = Arc::new(tokio::sync::Semaphore::new(SEND_CONCURRENCY));
    let send_started = Instant::now();
    let mut senders = tokio::task::JoinSet::new();
    for steps in plans {
        let (client, urls, stats, answers, permits, deliveries) = (
            client.clone(),
            urls.clone(),
            stats.clone(),
            answers.clone(),
            permits.clone(),
            deliveries.clone(),
        );
        senders.spawn(async move {
            for step in steps {
                let _permit = permits.acquire().await.unwrap();
                let got = match step {
                    Step::One { d, ingress } => {
                        let d = &deliveries[d];
                        vec![send(&client, &urls[ingress], d, &stats, ingress).await]
                    }
                    Step::Both { d } => {
                        let d = &deliveries[d];
                        let (a, b) = tokio::join!(
                            send(&client, &urls[0], d, &stats, 0),
                            send(&client, &urls[1], d, &stats, 1)
                        );
                        vec![a, b]
                    }
                };
                let id = match step {
                    Step::One { d, .. } | Step::Both { d } => deliveries[d].id.clone(),
                };
                answers.lock().unwrap().entry(id).or_default().extend(got);
            }
        });
    }

    // Halfway through, kill -9 the worker holding the most running jobs
    // (a job in flight is the point), then start a new one.
    let kill_deadline = Instant::now() + Duration::from_secs(60);
    let (victim_pid, victim_index, victim_status, kill_ms) = loop {
        assert!(
            Instant::now() < kill_deadline,
            "no worker ever held a running job after half the deliveries"
        );
        if stats.answered.load(Ordering::Relaxed) >= total_sends / 2 {
            let mut per_pid: HashMap<u32, usize> = HashMap::new();
            for (_, owner, _, _) in running_jobs(&db).await {
                if let Some(owner) = owner {
                    *per_pid.entry(pid_of(&owner)).or_default() += 1;
                }
            }
            if let Some((&pid, _)) = per_pid.iter().max_by_key(|(pid, n)| (**n, **pid)) {
                let index = workers
                    .iter()
                    .position(|w| w.pid() == pid)
                    .expect("a running job's owner is one of the workers");
                let status = workers[index].sigkill();
                break (pid, index, status, now_ms());
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    // The jobs still running under the dead process's leases: exactly the
    // orphans (it can no longer finish anything, and no lease expires this fast).
    let orphans: Vec<(String, Option<String>, String, Option<String>)> = running_jobs(&db)
        .await
        .into_iter()
        .filter(|(_, owner, _, _)| owner.as_deref().is_some_and(|o| pid_of(o) == victim_pid))
        .collect();
    let answered_at_kill = stats.answered.load(Ordering::Relaxed);
    report!(
        "scale_out: kill -9 worker {victim_index} (pid {victim_pid}, {victim_status}) after {answered_at_kill} of {total_sends} deliveries, holding {} running job(s): {}",
        orphans.len(),
        orphans
            .iter()
            .map(|(_, _, t, h)| format!("{} at {}", name(t), name(h.as_deref().unwrap_or("-"))))
            .collect::<Vec<_>>()
            .join(", ")
    );
    assert!(
        !orphans.is_empty(),
        "the killed worker held no running job any more: the kill tested nothing"
    );
    let orphan_jobs: HashSet<String> = orphans.iter().map(|(id, _, _, _)| id.clone()).collect();
    let replacement =
        Server::start_within(work, &work.join("w3"), &worker_args, &worker_env, STARTUP).await;
    workers.push(replacement);

    while let Some(done) = senders.join_next().await {
        done.expect("a sender task panicked");
    }
    let send_time = send_started.elapsed();
    let answered = stats.answered.load(Ordering::Relaxed);
    assert_eq!(answered, total_sends);

    // Drain: nothing queued or running, polled every 200 ms.
    let drain_started = Instant::now();
    loop {
        let left = unfinished(&db).await;
        if left.is_empty() && unfinished_jobs(&db).await == 0 {
            break;
        }
        for (i, w) in workers.iter_mut().enumerate() {
            if i != victim_index {
                w.assert_running();
            }
        }
        if drain_started.elapsed() > DRAIN_TIMEOUT {
            let mut listing = String::new();
            for (id, target, status, head, attempts, error) in &left {
                let _ = writeln!(
                    listing,
                    "  {id} {} {status} at {} attempts {attempts} last error {error:?}",
                    name(target),
                    name(head.as_deref().unwrap_or("-"))
                );
            }
            panic!(
                "the queue did not drain within {DRAIN_TIMEOUT:?}; still unfinished ({}):\n{listing}\nreplacement worker log:\n{}",
                left.len(),
                workers.last().unwrap().log_text()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain_time = drain_started.elapsed();
    for (i, w) in workers.iter_mut().enumerate() {
        if i != victim_index {
            w.assert_running();
        }
    }
    for i in &mut ingress {
        i.assert_running();
    }

    // ---- What happened, in numbers.
    let statuses: Vec<(String, i64)> = sqlx::query_as(
        "SELECT status, count(*) FROM connector_sync_event WHERE trigger = 'push' GROUP BY status ORDER BY status",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let runs: Vec<Run> = sqlx::query_as(
        "SELECT e.id AS event_id, e.connector_target_id AS target_id, e.status, e.trigger, e.head_sha, \
         e.started_at, e.completed_at, j.id AS job_id, j.attempt, j.run_at, j.last_error AS job_error \
         FROM connector_sync_event e JOIN sync_job j ON j.sync_event_id = e.id \
         WHERE e.started_at IS NOT NULL",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    let ingress_split = [
        stats.per_ingress[0].load(Ordering::Relaxed),
        stats.per_ingress[1].load(Ordering::Relaxed),
    ];
    report!(
        "scale_out: ingress throughput: {answered} deliveries in {send_time:.2?} = {:.0} deliveries/s \
         (ingress 0: {}, ingress 1: {}; {} resent after a 503 or a connection error)",
        answered as f64 / send_time.as_secs_f64(),
        ingress_split[0],
        ingress_split[1],
        stats.resent.load(Ordering::Relaxed)
    );
    report!(
        "scale_out: time to drain after the last delivery: {drain_time:.2?}; from the first delivery: {:.2?}",
        send_started.elapsed()
    );
    report!(
        "scale_out: push sync events by status: {statuses:?}; sync runs {}; GitHub calls: {} trees, {} blobs, {} tarballs, {} tokens; total test time so far {:.1?}",
        runs.len(),
        fake.calls(Endpoint::Tree),
        fake.calls(Endpoint::Blob),
        fake.calls(Endpoint::Tarball),
        fake.calls(Endpoint::AccessToken),
        test_started.elapsed()
    );

    report!(
        "scale_out: the killed worker's jobs ended: {}",
        orphans
            .iter()
            .map(|(job, _, target, head)| {
                let fate = runs
                    .iter()
                    .find(|r| r.job_id == *job)
                    .map_or("?".to_owned(), |r| {
                        format!("{} after {} attempts", r.status, r.attempt)
                    });
                format!(
                    "{} at {}: {fate}",
                    name(target),
                    name(head.as_deref().unwrap_or("-"))
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    );

    let mut problems: Vec<String> = vec![];

    // ---- Every answer is what the rules say; every 202'd delivery is recorded.
    let recorded: HashMap<String, (String, Option<String>, String)> =
        sqlx::query_as("SELECT delivery_id, outcome, reason, sync_event_ids FROM webhook_delivery")
            .fetch_all(&db)
            .await
            .unwrap()
            .into_iter()
            .map(
                |(id, outcome, reason, ids): (String, String, Option<String>, String)| {
                    (id, (outcome, reason, ids))
                },
            )
            .collect();
    let events: HashMap<String, (String, Option<String>, Option<String>, String)> = sqlx::query_as(
        "SELECT id, connector_target_id, delivery_id, head_sha, trigger FROM connector_sync_event",
    )
    .fetch_all(&db)
    .await
    .unwrap()
    .into_iter()
    .map(
        |(id, target, delivery, head, trigger): (
            String,
            String,
            Option<String>,
            Option<String>,
            String,
        )| (id, (target, delivery, head, trigger)),
    )
    .collect();
    assert_eq!(
        recorded.len(),
        deliveries.len(),
        "one delivery record per delivery id"
    );
    let answers = answers.lock().unwrap().clone();
    let mut accepted = 0;
    for d in deliveries.iter() {
        let got = &answers[&d.id];
        let (firsts, repeats): (Vec<&Answer>, Vec<&Answer>) = got
            .iter()
            .partition(|a| a.reason.as_deref() != Some("delivery_already_processed"));
        let what = format!(
            "delivery {} ({} push {}{})",
            d.id,
            chains[d.target].full_name,
            d.push,
            if d.late {
                ", sent after its successor"
            } else {
                ""
            }
        );
        if firsts.len() != 1 {
            problems.push(format!("{what}: {} first answers: {got:?}", firsts.len()));
            continue;
        }
        let first = firsts[0];
        let expected = if d.late {
            (200, "ignored", Some("stale"))
        } else {
            (202, "accepted", None)
        };
        if (
            first.status,
            first.outcome.as_str(),
            first.reason.as_deref(),
        ) != expected
        {
            problems.push(format!("{what}: expected {expected:?}, answered {first:?}"));
        }
        for r in repeats {
            if r.status != 200 || r.outcome != "duplicate" || r.events != first.events {
                problems.push(format!(
                    "{what}: a repeat was answered {r:?}, first {first:?}"
                ));
            }
        }
        match recorded.get(&d.id) {
            None => problems.push(format!(
                "{what}: answered {} but not recorded",
                first.status
            )),
            Some((outcome, reason, ids)) => {
                let ids: Vec<String> = serde_json::from_str(ids).unwrap_or_default();
                if *outcome != first.outcome || *reason != first.reason || ids != first.events {
                    problems.push(format!(
                        "{what}: answered {first:?}, recorded {outcome} {reason:?} {ids:?}"
                    ));
                }
            }
        }
        if first.status == 202 {
            accepted += 1;
            if first.events.len() != 1 {
                problems.push(format!("{what}: accepted with events {:?}", first.events));
            }
            for e in &first.events {
                let want = (
                    target_ids[d.target].clone(),
                    Some(d.id.clone()),
                    Some(chains[d.target].commits[d.push].clone()),
                    "push".to_owned(),
                );
                if events.get(e) != Some(&want) {
                    problems.push(format!("{what}: its sync event {e} is {:?}", events.get(e)));
                }
            }
        }
    }
    report!(
        "scale_out: {} distinct deliveries, {accepted} accepted (202), {} ignored as stale",
        deliveries.len(),
        deliveries.iter().filter(|d| d.late).count()
    );

    // ---- No two syncs of one target at once: GitHub's view and the database's.
    let (overlaps, processes, repo_requests, trees) = {
        let st = watch.state.lock().unwrap();
        (
            st.overlaps.clone(),
            st.tokens.len(),
            st.repo_requests,
            st.trees.clone(),
        )
    };
    report!(
        "scale_out: GitHub saw {repo_requests} repository requests from {processes} worker tokens; {} overlapping",
        overlaps.len()
    );
    problems.extend(overlaps.into_iter().take(20));
    let mut activities: BTreeMap<String, Vec<Activity>> = BTreeMap::new();
    for r in &runs {
        let t = target_ids.iter().position(|id| *id == r.target_id).unwrap();
        let repo = chains[t].full_name.to_ascii_lowercase();
        let head = r.head_sha.clone().unwrap_or_default();
        let listings: Vec<i64> = trees
            .iter()
            .filter(|(rp, c, _)| *rp == repo && *c == head)
            .map(|(_, _, at)| *at)
            .collect();
        let what = format!("sync {} ({} at {})", r.event_id, r.trigger, name(&head));
        if orphan_jobs.contains(&r.job_id) {
            if let Some(&first) = listings.iter().filter(|at| **at < kill_ms).min() {
                activities
                    .entry(name(&r.target_id))
                    .or_default()
                    .push(Activity {
                        what: format!("{what}, its attempt in the killed worker"),
                        start: first,
                        end: kill_ms,
                    });
            }
        }
        if r.status != "completed" {
            continue;
        }
        match (listings.iter().max(), r.completed_at) {
            (Some(&start), Some(end)) => activities
                .entry(name(&r.target_id))
                .or_default()
                .push(Activity { what, start, end }),
            _ => problems.push(format!(
                "{what} of {} completed without GitHub seeing its tree listed",
                chains[t].full_name
            )),
        }
    }
    problems.extend(check_activities(&activities));
    // The orphans were rescued (lease expired) and finished; no other job
    // lost its lease, and none needed a retry (nothing here fails).
    for r in &runs {
        let rescued = r
            .job_error
            .as_deref()
            .is_some_and(|e| e.starts_with("lease expired"));
        if orphan_jobs.contains(&r.job_id) {
            if !rescued {
                problems.push(format!("orphan {} was not rescued: {r:?}", r.job_id));
            }
        } else if r.job_error.is_some() {
            problems.push(format!(
                "job {} of {} at {} was retried or rescued although its worker lived: {:?}",
                r.job_id,
                name(&r.target_id),
                name(r.head_sha.as_deref().unwrap_or("-")),
                r.job_error
            ));
        }
        if !["completed", "superseded"].contains(&r.status.as_str()) {
            problems.push(format!("sync {} ended {}: {r:?}", r.event_id, r.status));
        }
    }
    for (job, _, _, _) in &orphans {
        if !runs.iter().any(|r| r.job_id == *job) {
            problems.push(format!("orphan job {job} has no sync event that started"));
        }
    }

    // ---- Each target at its last commit, its documents exactly git's files there.
    let targets: HashMap<String, (Option<String>, Option<String>, String)> =
        sqlx::query_as("SELECT id, latest_head_sha, last_synced_sha, health FROM connector_target")
            .fetch_all(&db)
            .await
            .unwrap()
            .into_iter()
            .map(
                |(id, latest, synced, health): (String, Option<String>, Option<String>, String)| {
                    (id, (latest, synced, health))
                },
            )
            .collect();
    let mut converged = 0;
    for (t, c) in chains.iter().enumerate() {
        let id = &target_ids[t];
        let (latest, synced, health) = &targets[id];
        let head = Some(c.head().to_owned());
        if *latest != head || *synced != head || health != "ok" {
            let mut history = String::new();
            let mut mine: Vec<&Run> = runs.iter().filter(|r| r.target_id == *id).collect();
            mine.sort_by_key(|r| r.completed_at);
            for r in mine {
                let _ = write!(
                    history,
                    "\n    {} {} {} at {} started {} completed {:?} attempt {} run_at {}{}",
                    r.event_id,
                    r.trigger,
                    r.status,
                    name(r.head_sha.as_deref().unwrap_or("-")),
                    r.started_at,
                    r.completed_at,
                    r.attempt,
                    r.run_at,
                    if orphan_jobs.contains(&r.job_id) {
                        " (held by the killed worker)"
                    } else {
                        ""
                    }
                );
            }
            problems.push(format!(
                "{}: latest head {}, last synced {}, health {health} (expected {} and ok); its sync runs by completion:{history}",
                c.full_name,
                name(latest.as_deref().unwrap_or("-")),
                name(synced.as_deref().unwrap_or("-")),
                name(c.head())
            ));
        }
        let stored: BTreeMap<String, (String, Vec<u8>)> = sqlx::query_as(
            "SELECT d.path, d.blob_sha, b.content FROM document d JOIN blob b ON b.sha = d.blob_sha \
             WHERE d.target_id = $1 AND d.to_seq IS NULL ORDER BY d.path",
        )
        .bind(id)
        .fetch_all(&db)
        .await
        .unwrap()
        .into_iter()
        .map(|(p, s, b): (String, String, Vec<u8>)| (p, (s, b)))
        .collect();
        let expected = git_files(&c.repo, c.head());
        if stored == expected {
            converged += 1;
        } else {
            let paths = |m: &BTreeMap<String, (String, Vec<u8>)>| -> BTreeSet<String> {
                m.keys().cloned().collect()
            };
            let differing: Vec<&String> = expected
                .iter()
                .filter(|(p, v)| stored.get(*p).is_some_and(|s| s != *v))
                .map(|(p, _)| p)
                .collect();
            problems.push(format!(
                "{}: documents differ from git at {}: missing {:?}, extra {:?}, different bytes {:?}",
                c.full_name,
                name(c.head()),
                paths(&expected).difference(&paths(&stored)).collect::<Vec<_>>(),
                paths(&stored).difference(&paths(&expected)).collect::<Vec<_>>(),
                differing
            ));
        }
    }
    report!(
        "scale_out: {converged} of {TARGETS} targets hold exactly git's files at their last commit; test time {:.1?}",
        test_started.elapsed()
    );

    // ---- Nothing left queued or running (checked once more, after everything).
    let left = unfinished(&db).await;
    if !left.is_empty() {
        problems.push(format!("sync events still unfinished: {left:?}"));
    }

    assert!(
        problems.is_empty(),
        "{} problem(s):\n- {}",
        problems.len(),
        problems.join("\n- ")
    );
    drop(workers);
    drop(ingress);
    drop(fake);
}

/// The kill lands after a target's *last* push was queued, behind the job the
/// dead worker held for the push before it. The rescued older job must not
/// run after the newer one: the target ends at the last head, equal to git.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_after_the_last_push_leaves_the_target_at_the_last_head() {
    if common::backend::postgres_url().is_none() {
        return; // the notice was printed by postgres_url()
    }
    let db_url = common::backend::fresh_schema().await;
    let fake = FakeGitHub::start(APP_ID, TEST_APP_PUBLIC_KEY_PEM).await;
    let c = build_chain(&fake, 0);
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let key_path = work.join("app-key.pem");
    std::fs::write(&key_path, TEST_APP_PRIVATE_KEY_PEM).unwrap();
    let (app_id, api) = (APP_ID.to_string(), fake.base_url());
    let ingress = Server::start_within(
        work,
        &work.join("i"),
        &["--role", "ingress", "--database-url", &db_url],
        &[
            ("GITHUB_CONNECTOR_APP_WEBHOOK_SECRET", WEBHOOK_SECRET),
            ("CONNECTORD_ADMIN_TOKEN", ADMIN_TOKEN),
        ],
        STARTUP,
    )
    .await;
    let worker_args = [
        "--role",
        "worker",
        "--database-url",
        &db_url,
        "--lease-seconds",
        "3",
        "--workers",
        "1",
    ];
    let worker_env = [
        ("GITHUB_CONNECTOR_APP_ID", app_id.as_str()),
        ("GITHUB_CONNECTOR_APP_PRIVATE_KEY_PATH", str_arg(&key_path)),
        ("GITHUB_API_URL", api.as_str()),
    ];
    let mut first_worker =
        Server::start_within(work, &work.join("w1"), &worker_args, &worker_env, STARTUP).await;

    let client = reqwest::Client::new();
    let admin = ingress.base();
    let admin_json = |req: reqwest::RequestBuilder| async move {
        let res = req
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .expect("admin request");
        res.json::<Value>().await.expect("admin json")
    };
    let connector = admin_json(
        client
            .post(format!("{admin}/v1/admin/connectors"))
            .json(&json!({"type": "github", "installationId": c.installation})),
    )
    .await;
    let target = admin_json(
        client
            .post(format!(
                "{admin}/v1/admin/connectors/{}/targets",
                connector["id"].as_str().unwrap()
            ))
            .json(&json!({"repositoryFullName": c.full_name, "repositoryId": c.repo_id, "branch": "main"})),
    )
    .await;
    let target_id = target["id"].as_str().expect("target id").to_owned();
    let target_url = format!("{admin}/v1/admin/targets/{target_id}");
    let wait_for_synced = |sha: String| {
        let (client, url) = (client.clone(), target_url.clone());
        async move {
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let t = admin_json(client.get(&url)).await;
                if t["lastSyncedSha"] == sha.as_str() {
                    return t;
                }
                assert!(Instant::now() < deadline, "never synced {sha}: {t}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_for_synced(c.commits[0].clone()).await;

    c.repo.set_branch("main", &c.commits[2]);
    let push = |id: &'static str, before: &str, after: &str| {
        let body = common::push_payload(
            c.installation,
            c.repo_id,
            &c.full_name,
            "main",
            before,
            after,
        )
        .to_string();
        client
            .post(ingress.webhook_url())
            .header("content-type", "application/json")
            .header("x-github-event", "push")
            .header("x-github-delivery", id)
            .header(
                "x-hub-signature-256",
                sign(WEBHOOK_SECRET.as_bytes(), body.as_bytes()),
            )
            .body(body)
            .send()
    };
    // The sync of c1 hangs in its tree call; c2, the last push, is queued
    // behind it; then the worker holding c1 dies.
    fake.set_delay("/git/trees/", Duration::from_secs(5));
    let first = push("last-1", &c.commits[0], &c.commits[1]).await.unwrap();
    assert_eq!(first.status(), reqwest::StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(800)).await;
    let last = push("last-2", &c.commits[1], &c.commits[2]).await.unwrap();
    assert_eq!(last.status(), reqwest::StatusCode::ACCEPTED);
    first_worker.sigkill();
    fake.set_delay("/git/trees/", Duration::ZERO);
    let _second_worker =
        Server::start_within(work, &work.join("w2"), &worker_args, &worker_env, STARTUP).await;

    let t = wait_for_synced(c.commits[2].clone()).await;
    // Past the lease, the rescuer has had its say: the target stays at c2.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let t2 = admin_json(client.get(&target_url)).await;
    assert_eq!(t2["lastSyncedSha"], c.commits[2].as_str(), "{t} then {t2}");
    assert_eq!(t2["latestHeadSha"], c.commits[2].as_str(), "{t2}");
    let events =
        admin_json(client.get(format!("{admin}/v1/admin/sync-events?targetId={target_id}"))).await;
    let of_c1: Vec<&Value> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["headSha"] == c.commits[1].as_str())
        .collect();
    assert_eq!(of_c1.len(), 1, "{events}");
    assert_eq!(of_c1[0]["status"], "superseded", "{events}");

    let db = PgPoolOptions::new()
        .max_connections(1)
        .connect(&db_url)
        .await
        .unwrap();
    let stored: Vec<(String, Vec<u8>)> = sqlx::query_as(
        "SELECT d.path, b.content FROM document d JOIN blob b ON b.sha = d.blob_sha \
             WHERE d.target_id = $1 AND d.to_seq IS NULL ORDER BY d.path",
    )
    .bind(&target_id)
    .fetch_all(&db)
    .await
    .unwrap();
    let expected: Vec<(String, Vec<u8>)> = git_files(&c.repo, &c.commits[2])
        .into_iter()
        .map(|(path, (_, bytes))| (path, bytes))
        .collect();
    assert_eq!(stored, expected, "documents equal git at the last head");
}
