//! Drives the real `connectord` binary: the CLI run to completion ([`run`],
//! [`run_within`]) and `serve` on a free port ([`Server`]).
//!
//! Every wait is bounded, every child is killed when its guard drops (even when
//! a test panics), and no setting leaks in from the host environment.

use reqwest::StatusCode;
use serde_json::Value;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_connectord");
/// How long `serve` may take to answer /healthz (a loaded 2-core machine), by
/// default; [`Server::start_within`] takes another bound.
pub const STARTUP: Duration = Duration::from_secs(15);
/// How long one CLI invocation may take.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variables a host could set that change what the binary does.
pub fn host_vars_to_clear() -> Vec<String> {
    let mut vars: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| {
            k.starts_with("CONNECTORD_")
                || k.starts_with("GITHUB_CONNECTOR_")
                || k == "GITHUB_API_URL"
        })
        .collect();
    for known in [
        "CONNECTORD_LISTEN",
        "CONNECTORD_ADMIN_LISTEN",
        "CONNECTORD_DATA_DIR",
        "CONNECTORD_DATABASE_URL",
        "CONNECTORD_WORKERS",
        "CONNECTORD_MAX_ATTEMPTS",
        "CONNECTORD_LEASE_SECONDS",
        "CONNECTORD_DELIVERY_BODY_RETENTION_DAYS",
        "CONNECTORD_ADMIN_TOKEN",
        "CONNECTORD_ADMIN_URL",
        "CONNECTORD_WEBHOOK_URL",
        "CONNECTORD_LOG_JSON",
        "CONNECTORD_FETCH_MODE",
        "GITHUB_CONNECTOR_APP_ID",
        "GITHUB_CONNECTOR_APP_PRIVATE_KEY",
        "GITHUB_CONNECTOR_APP_PRIVATE_KEY_PATH",
        "GITHUB_CONNECTOR_APP_WEBHOOK_SECRET",
        "GITHUB_CONNECTOR_APP_WEBHOOK_SECRET_PREVIOUS",
        "GITHUB_API_URL",
        "RUST_LOG",
        "RUST_BACKTRACE",
        "RUST_LIB_BACKTRACE",
    ] {
        vars.push(known.to_owned());
    }
    vars
}

/// The binary, run in `work`, with none of the host's settings.
pub fn std_command(work: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(BIN);
    cmd.current_dir(work);
    // The missed-push pass would add GitHub calls at a random moment: off
    // unless a test turns it on.
    cmd.env("CONNECTORD_RECONCILE_INTERVAL", "0");
    for var in host_vars_to_clear() {
        cmd.env_remove(var);
    }
    cmd
}

/// As [`std_command`], for tokio; the child is killed when dropped.
pub fn tokio_command(work: &Path) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.current_dir(work).kill_on_drop(true);
    // The missed-push pass would add GitHub calls at a random moment: off
    // unless a test turns it on.
    cmd.env("CONNECTORD_RECONCILE_INTERVAL", "0");
    for var in host_vars_to_clear() {
        cmd.env_remove(var);
    }
    cmd
}

pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

pub fn str_arg(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// The result of one finished CLI run: stdout as text (lossy) and as the raw
/// bytes printed.
pub struct Out {
    pub status: ExitStatus,
    pub stdout: String,
    pub stdout_bytes: Vec<u8>,
    pub stderr: String,
}

impl std::fmt::Debug for Out {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Out")
            .field("status", &self.status)
            .field("stdout", &self.stdout)
            .field("stderr", &self.stderr)
            .finish()
    }
}

impl Out {
    pub fn text(&self) -> String {
        self.stdout.clone()
    }

    /// The run must have succeeded.
    pub fn ok(self) -> Self {
        self.expect_success(None)
    }

    /// As [`Self::ok`], naming `what` was run in the failure message.
    pub fn ok_for(self, what: &str) -> Self {
        self.expect_success(Some(what))
    }

    fn expect_success(self, what: Option<&str>) -> Self {
        assert!(
            self.status.success(),
            "{}expected success, got {:?}\nstdout:\n{}\nstderr:\n{}",
            what.map(|w| format!("`{w}`: ")).unwrap_or_default(),
            self.status,
            self.stdout,
            self.stderr
        );
        self
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.stdout_bytes)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// `deliver` prints a status line, then the answer body.
    pub fn status_line_and_body(&self) -> (String, Value) {
        let (line, rest) = self
            .stdout
            .split_once('\n')
            .unwrap_or_else(|| panic!("no status line in:\n{}", self.stdout));
        let body = serde_json::from_str(rest.trim())
            .unwrap_or_else(|e| panic!("answer body is not JSON ({e}):\n{}", self.stdout));
        (line.trim().to_owned(), body)
    }

    pub fn assert_no_panic(&self) {
        for text in [&self.stdout, &self.stderr] {
            let lower = text.to_lowercase();
            assert!(
                !lower.contains("panicked") && !lower.contains("backtrace"),
                "a panic or a backtrace was printed:\nstdout:\n{}\nstderr:\n{}",
                self.stdout,
                self.stderr
            );
        }
    }
}

/// Runs the binary to completion (bounded by [`CLI_TIMEOUT`]) in `work`.
pub async fn run(work: &Path, args: &[&str], envs: &[(&str, &str)]) -> Out {
    run_within(work, args, envs, CLI_TIMEOUT).await
}

/// Runs the binary to completion (bounded by `within`) in `work`.
pub async fn run_within(
    work: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    within: Duration,
) -> Out {
    let mut cmd = tokio_command(work);
    cmd.args(args)
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("spawn connectord");
    let output = tokio::time::timeout(within, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("`connectord {}` did not finish in time", args.join(" ")))
        .expect("wait for connectord");
    Out {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stdout_bytes: output.stdout,
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

static LOG_SEQ: AtomicUsize = AtomicUsize::new(0);

/// A running `connectord serve`; killed when dropped.
pub struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Server {
    /// [`Self::start_within`] the default [`STARTUP`].
    pub async fn start(work: &Path, data: &Path, args: &[&str], envs: &[(&str, &str)]) -> Self {
        Self::start_within(work, data, args, envs, STARTUP).await
    }

    /// Starts `serve ARGS` on a free port with the data directory `data` and
    /// the environment `envs`, and waits (up to `startup`) until /healthz
    /// answers. Retries with another port if that one was taken between
    /// choosing it and binding it.
    pub async fn start_within(
        work: &Path,
        data: &Path,
        args: &[&str],
        envs: &[(&str, &str)],
        startup: Duration,
    ) -> Self {
        for _ in 0..3 {
            let port = free_port();
            let listen = format!("127.0.0.1:{port}");
            let log = work.join(format!(
                "serve-{}.log",
                LOG_SEQ.fetch_add(1, Ordering::SeqCst)
            ));
            let mut cmd = std_command(work);
            cmd.arg("serve")
                .args(["--listen", &listen])
                .arg("--data-dir")
                .arg(data)
                .args(args)
                .envs(envs.iter().copied())
                .stdin(Stdio::null())
                .stdout(File::create(log.with_extension("out")).unwrap())
                .stderr(File::create(&log).unwrap());
            let child = cmd.spawn().expect("spawn connectord serve");
            let mut server = Server { child, port, log };
            match server.wait_healthy(startup).await {
                Ok(()) => return server,
                Err(log) if log.contains("in use") => continue,
                Err(log) => panic!("connectord serve did not come up:\n{log}"),
            }
        }
        panic!("could not find a free port for connectord serve");
    }

    async fn wait_healthy(&mut self, startup: Duration) -> Result<(), String> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let url = format!("{}/healthz", self.base());
        let deadline = Instant::now() + startup;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}:\n{}", self.log_text()));
            }
            if let Ok(res) = client.get(&url).send().await {
                if res.status() == StatusCode::OK {
                    return Ok(());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(format!(
            "no answer on /healthz within {startup:?}:\n{}",
            self.log_text()
        ))
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn webhook_url(&self) -> String {
        format!("{}/v1/webhooks/connectors/github", self.base())
    }

    /// What the server has printed on stderr so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Panics (with the server's log) if the server has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "connectord serve exited with {status}:\n{}",
                self.log_text()
            );
        }
    }

    /// Sends a signal (`TERM`, `INT`) and waits (bounded) for the process to exit.
    pub async fn signal(&mut self, signal: &str, within: Duration) -> ExitStatus {
        let kill = std::process::Command::new("kill")
            .args([&format!("-{signal}"), &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -{signal} failed");
        self.wait_exit(within).await
    }

    /// Waits (bounded) for the process to exit, after a signal sent elsewhere.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "connectord did not exit within {within:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `kill -9`: SIGKILL (no shutdown of any kind: no release of claimed
    /// jobs, no last heartbeat), then reaps the process and returns how it
    /// ended. Panics, with the server's log, if the process had already
    /// exited: a test that means to kill a live process must know it did.
    pub fn sigkill(&mut self) -> ExitStatus {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "connectord serve had already exited ({status}) before kill -9:\n{}",
                self.log_text()
            );
        }
        // std's Child::kill is SIGKILL on Unix.
        self.child.kill().expect("send SIGKILL");
        self.child.wait().expect("reap the killed process")
    }

    /// Kills the process at once (no graceful shutdown) and reaps it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
