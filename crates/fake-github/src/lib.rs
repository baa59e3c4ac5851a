//! A test double of the GitHub REST endpoints connectord's sync worker uses,
//! serving repositories that tests build with real git.
//!
//! Every tree SHA, blob SHA and tarball comes from the `git` CLI, so it is what
//! GitHub would return for the same commits. The fake checks App JWTs (RS256,
//! `iss`, `iat`, `exp`) and installation tokens like GitHub, counts calls per
//! endpoint, reports `x-ratelimit-*` headers, and can be told to fail: an error
//! status on chosen paths, a secondary or primary rate limit, truncated trees,
//! slow responses, expired tokens, or any body at all on chosen paths
//! ([`FakeGitHub::respond_next`]: oversized or wrong blobs, hostile archives).
//!
//! Endpoints served (all under [`FakeGitHub::base_url`]):
//! - `POST /app/installations/{id}/access_tokens` (App JWT)
//! - `GET /app`, `GET /app/hook/config`, `GET /app/hook/deliveries`
//!   (`per_page`, `cursor`, `Link: <…>; rel="next"`) and
//!   `POST /app/hook/deliveries/{id}/attempts` (App JWT; see [`HookConfig`],
//!   [`HookDelivery`])
//! - `GET /repos/{owner}/{repo}/git/ref/heads/{branch}`
//! - `GET /repos/{owner}/{repo}/commits/{ref}` (JSON, or the bare SHA with
//!   `Accept: application/vnd.github.sha`, which honours `If-None-Match`)
//! - `GET /repos/{owner}/{repo}/git/trees/{sha-or-ref}[?recursive=1]`
//! - `GET /repos/{owner}/{repo}/git/blobs/{sha}` (base64 JSON, or raw bytes
//!   with `Accept: application/vnd.github.raw+json`)
//! - `GET /repos/{owner}/{repo}/tarball/{ref}` → 302 to
//!   `/_codeload/{owner}/{repo}/legacy.tar.gz/{sha}` (no auth, like codeload)
//!
//! Every path is also served under `/api/v3` (GitHub Enterprise Server's REST
//! base), so `{base_url}/api/v3` works as an API URL too.
//!
//! ```no_run
//! # async fn demo() {
//! use fake_github::{Endpoint, FakeGitHub, TEST_APP_PUBLIC_KEY_PEM};
//! let gh = FakeGitHub::start(42, TEST_APP_PUBLIC_KEY_PEM).await;
//! gh.add_installation(7);
//! let repo = gh.add_repo("acme/docs", 1001, 7);
//! repo.write("README.md", b"hello\n");
//! let head = repo.commit("first");
//! // point the code under test at gh.base_url(), then:
//! assert_eq!(gh.calls(Endpoint::Tarball), 0);
//! # let _ = head;
//! # }
//! ```

mod api;
mod auth;
mod faults;
mod hook;
mod repo;
mod server;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::DecodingKey;

pub use hook::{HookConfig, HookDelivery};
pub use repo::GitRepo;

use auth::Tokens;
use faults::{Counters, FaultKind, Faults, RateLimit};

/// The test App's private key (PKCS#8 PEM, `testdata/app-key.pem`):
/// sign App JWTs with it. It protects nothing.
pub const TEST_APP_PRIVATE_KEY_PEM: &str = include_str!("../testdata/app-key.pem");
/// The public half of [`TEST_APP_PRIVATE_KEY_PEM`], for [`FakeGitHub::start`].
pub const TEST_APP_PUBLIC_KEY_PEM: &str = include_str!("../testdata/app-key.pub.pem");

/// The kinds of call the fake counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `POST /app/installations/{id}/access_tokens`
    AccessToken,
    /// `GET /repos/{o}/{r}/git/ref/heads/{branch}`
    Ref,
    /// `GET /repos/{o}/{r}/commits/{ref}`
    Commit,
    /// `GET /repos/{o}/{r}/git/trees/{sha}`
    Tree,
    /// `GET /repos/{o}/{r}/git/blobs/{sha}`
    Blob,
    /// `GET /repos/{o}/{r}/tarball/{ref}` (the API call that redirects)
    Tarball,
    /// The redirected download (`/_codeload/...`), codeload's job on GitHub.
    Archive,
    /// `GET /app`
    App,
    /// `GET /app/hook/config`
    HookConfig,
    /// `GET /app/hook/deliveries` (one page)
    HookDeliveries,
    /// `POST /app/hook/deliveries/{id}/attempts`
    HookAttempts,
}

/// A repository the fake serves.
#[derive(Clone)]
pub(crate) struct RepoEntry {
    /// `owner/name` as added (GitHub's canonical case).
    pub full_name: String,
    pub id: i64,
    pub installation_id: i64,
    pub git: GitRepo,
}

/// Everything the server and the test handle share.
pub(crate) struct Shared {
    pub app_id: i64,
    pub key: DecodingKey,
    pub base_url: String,
    state: Mutex<State>,
}

pub(crate) struct State {
    pub installations: HashSet<i64>,
    /// Keyed by lower-cased `owner/name` (GitHub matches case-insensitively).
    pub repos: HashMap<String, RepoEntry>,
    pub tokens: Tokens,
    pub counters: Counters,
    pub faults: Faults,
    pub rate: RateLimit,
    pub truncate_trees: bool,
    pub saw_api_version: bool,
    pub hook: hook::HookState,
    /// Installations suspended by [`FakeGitHub::suspend_installation`].
    pub suspended: HashSet<i64>,
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// The running fake; the server stops when this is dropped.
pub struct FakeGitHub {
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl FakeGitHub {
    /// Starts the server on `127.0.0.1:0` for the App `app_id`, whose JWTs
    /// must verify with `app_public_key_pem` (an RSA public key in PEM).
    /// Must be called inside a tokio runtime.
    pub async fn start(app_id: i64, app_public_key_pem: &str) -> FakeGitHub {
        let key = DecodingKey::from_rsa_pem(app_public_key_pem.as_bytes())
            .expect("the app public key must be an RSA public key in PEM");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared {
            app_id,
            key,
            base_url: format!("http://{addr}"),
            state: Mutex::new(State {
                installations: HashSet::new(),
                repos: HashMap::new(),
                tokens: Tokens::default(),
                counters: Counters::default(),
                faults: Faults::default(),
                rate: RateLimit::new(now()),
                truncate_trees: false,
                saw_api_version: false,
                hook: hook::HookState::default(),
                suspended: HashSet::new(),
            }),
        });
        let app = server::router(shared.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeGitHub { shared, server }
    }

    /// `http://127.0.0.1:PORT`, the REST base URL (like `https://api.github.com`).
    pub fn base_url(&self) -> String {
        self.shared.base_url.clone()
    }

    /// Registers an installation of the App (tokens can be minted for it).
    pub fn add_installation(&self, installation_id: i64) {
        self.shared.lock().installations.insert(installation_id);
    }

    /// Creates a real git repository (default branch `main`, no commits yet)
    /// served as `full_name` (`owner/name`) to tokens of `installation_id`,
    /// which is registered if it was not. Panics if `full_name` is taken.
    pub fn add_repo(&self, full_name: &str, repo_id: i64, installation_id: i64) -> GitRepo {
        let (owner, name) = full_name.split_once('/').expect("full_name is owner/name");
        assert!(
            !owner.is_empty() && !name.is_empty() && !name.contains('/'),
            "full_name is owner/name: {full_name}"
        );
        let git = GitRepo::init();
        let mut st = self.shared.lock();
        st.installations.insert(installation_id);
        let key = full_name.to_ascii_lowercase();
        assert!(!st.repos.contains_key(&key), "repo {full_name} exists");
        st.repos.insert(
            key,
            RepoEntry {
                full_name: full_name.to_string(),
                id: repo_id,
                installation_id,
                git: git.clone(),
            },
        );
        git
    }

    /// Stops serving `full_name` (deleted, or removed from the installation):
    /// its endpoints answer 404 from now on.
    pub fn remove_repo(&self, full_name: &str) {
        self.shared
            .lock()
            .repos
            .remove(&full_name.to_ascii_lowercase());
    }

    /// Calls of one kind since start (or the last [`Self::reset_calls`]),
    /// failed and injected ones included.
    pub fn calls(&self, kind: Endpoint) -> usize {
        self.shared.lock().counters.calls(kind)
    }

    /// Every call under `/repos/` (what counts against an installation's
    /// REST budget): all but `AccessToken` and the redirected `Archive`.
    pub fn total_repo_calls(&self) -> usize {
        self.shared.lock().counters.repo_calls()
    }

    /// Zeroes every counter (calls, per-blob calls); tokens and faults stay.
    pub fn reset_calls(&self) {
        self.shared.lock().counters = Counters::default();
    }

    /// Calls to `GET .../git/blobs/{blob_sha}`.
    pub fn blob_calls_for(&self, blob_sha: &str) -> usize {
        self.shared.lock().counters.blob_calls_for(blob_sha)
    }

    /// The next `times` requests whose path (query included) contains
    /// `path_contains` answer `status` with a GitHub-style JSON error body.
    /// Faults fire in the order they were armed; auth is not checked first.
    pub fn fail_next(&self, path_contains: &str, status: u16, times: usize) {
        self.arm(path_contains, FaultKind::Status(status), times);
    }

    /// Like [`Self::fail_next`] with GitHub's secondary rate limit: 403,
    /// `retry-after: {retry_after_secs}` and GitHub's message.
    pub fn secondary_rate_limit_next(
        &self,
        path_contains: &str,
        retry_after_secs: u64,
        times: usize,
    ) {
        self.arm(
            path_contains,
            FaultKind::SecondaryRateLimit { retry_after_secs },
            times,
        );
    }

    /// Like [`Self::fail_next`] with GitHub's primary rate limit: 403,
    /// `x-ratelimit-remaining: 0`, `x-ratelimit-reset: now + reset_in_secs`.
    pub fn primary_rate_limit_next(&self, path_contains: &str, reset_in_secs: u64, times: usize) {
        self.arm(
            path_contains,
            FaultKind::PrimaryRateLimit { reset_in_secs },
            times,
        );
    }

    /// The next `times` requests whose path contains `path_contains` answer
    /// 200 with exactly `body` as `content_type`, whatever they asked for:
    /// a hostile or broken server. Blob answers (`/git/blobs/{sha}`) larger
    /// or other than the blob, or a crafted archive for the redirected
    /// tarball download (`/legacy.tar.gz/`).
    pub fn respond_next(
        &self,
        path_contains: &str,
        content_type: &str,
        body: Vec<u8>,
        times: usize,
    ) {
        self.arm(
            path_contains,
            FaultKind::Body {
                content_type: content_type.to_string(),
                body: Arc::new(body),
            },
            times,
        );
    }

    /// The next `times` requests whose path contains `path_contains` get
    /// the real answer's status and headers (with its full `content-length`)
    /// and the first `sent_bytes` of its body, then the connection drops.
    /// For blob answers and the redirected tarball download (`/legacy.tar.gz/`).
    pub fn reset_mid_body_next(&self, path_contains: &str, sent_bytes: usize, times: usize) {
        self.arm(
            path_contains,
            FaultKind::ResetMidBody { sent: sent_bytes },
            times,
        );
    }

    /// Suspends the installation, as its owner or the App's owner can on
    /// GitHub: token requests and calls with its existing tokens answer 403
    /// `This installation has been suspended` until
    /// [`Self::unsuspend_installation`].
    pub fn suspend_installation(&self, installation_id: i64) {
        self.shared.lock().suspended.insert(installation_id);
    }

    /// Lifts [`Self::suspend_installation`].
    pub fn unsuspend_installation(&self, installation_id: i64) {
        self.shared.lock().suspended.remove(&installation_id);
    }

    fn arm(&self, path_contains: &str, kind: FaultKind, times: usize) {
        self.shared.lock().faults.arm(path_contains, kind, times);
    }

    /// While on, recursive tree answers keep only the first half of their
    /// entries and say `truncated: true`; non-recursive calls stay complete.
    pub fn set_truncate_trees(&self, on: bool) {
        self.shared.lock().truncate_trees = on;
    }

    /// Delays every request whose path (query included) contains
    /// `path_contains` by `d` (the longest matching delay wins; zero clears).
    pub fn set_delay(&self, path_contains: &str, d: Duration) {
        self.shared.lock().faults.set_delay(path_contains, d);
    }

    /// Every installation token issued so far answers 401 `Bad credentials`;
    /// tokens minted afterwards work.
    pub fn expire_all_tokens(&self) {
        self.shared.lock().tokens.expire_all();
    }

    /// Pins what `x-ratelimit-remaining` reports on every later response.
    pub fn set_rate_limit_remaining(&self, n: i64) {
        self.shared.lock().rate.pin(n);
    }

    /// Conditional requests answered 304 Not Modified so far (GitHub does not
    /// count them against the rate limit, and neither does the fake).
    pub fn not_modified_answers(&self) -> usize {
        self.shared.lock().counters.not_modified
    }

    /// Installation tokens minted so far.
    pub fn tokens_issued(&self) -> usize {
        self.shared.lock().tokens.issued()
    }

    /// What `GET /app/hook/config` answers from now on.
    pub fn set_hook_config(&self, config: HookConfig) {
        self.shared.lock().hook.config = config;
    }

    /// Adds an entry to the App's delivery log (`GET /app/hook/deliveries`).
    pub fn add_hook_delivery(&self, delivery: HookDelivery) {
        self.shared.lock().hook.deliveries.push(delivery);
    }

    /// The delivery ids redelivery was asked for (`POST …/attempts`), in order.
    pub fn redelivery_attempts(&self) -> Vec<i64> {
        self.shared.lock().hook.attempts.clone()
    }

    /// Whether any request carried an `X-GitHub-Api-Version` header.
    pub fn saw_api_version_header(&self) -> bool {
        self.shared.lock().saw_api_version
    }
}

impl std::fmt::Debug for FakeGitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGitHub")
            .field("base_url", &self.shared.base_url)
            .finish_non_exhaustive()
    }
}

impl Drop for FakeGitHub {
    fn drop(&mut self) {
        self.server.abort();
    }
}
