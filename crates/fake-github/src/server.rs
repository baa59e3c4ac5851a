//! HTTP front: routing, counting, User-Agent, delays, injected faults,
//! authentication and the `x-ratelimit-*` headers. The git work is in `api`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};

use crate::api::{self, Ctx, Op};
use crate::auth::{credential, verify_app_jwt};
use crate::faults::FaultKind;
use crate::hook::{self, AppRoute};
use crate::{now, Endpoint, Shared};

const DOCS: &str = "https://docs.github.com/rest";
const NO_USER_AGENT: &str = "Request forbidden by administrative rules. Please make sure your \
request has a User-Agent header (https://docs.github.com/en/rest/overview/resources-in-the-rest-api#user-agent-required). \
Check https://developer.github.com for other possible causes.\n";
const SECONDARY: &str = "You have exceeded a secondary rate limit. Please wait a few minutes \
before you try again. If you reach out to GitHub Support for help, please include the request ID \
0000:0000:0000000:0000000:00000000.";
/// GitHub's answer for an installation its owner or the App's owner suspended.
const SUSPENDED: &str = "This installation has been suspended";

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new().fallback(handle).with_state(shared)
}

/// What a request asks for.
enum Route {
    AccessToken(i64),
    /// `GET /app` and the App's webhook (`/app/hook/...`): App JWT only.
    App(AppRoute),
    Repo {
        owner: String,
        name: String,
        op: Op,
    },
    Archive {
        owner: String,
        name: String,
        sha: String,
    },
    Unknown {
        under_repos: bool,
    },
}

impl Route {
    fn parse(method: &Method, path: &str) -> Route {
        let get = method == Method::GET || method == Method::HEAD;
        let segs: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match segs.as_slice() {
            ["app", "installations", id, "access_tokens"] if method == Method::POST => id
                .parse()
                .map(Route::AccessToken)
                .unwrap_or(Route::Unknown { under_repos: false }),
            ["app", rest @ ..] => AppRoute::parse(get, method == Method::POST, rest)
                .map(Route::App)
                .unwrap_or(Route::Unknown { under_repos: false }),
            ["_codeload", owner, name, "legacy.tar.gz", sha] if get => Route::Archive {
                owner: decode(owner),
                name: decode(name),
                sha: decode(sha),
            },
            ["repos", owner, name, rest @ ..] => {
                let op = if get {
                    Op::parse(&rest.join("/"))
                } else {
                    None
                };
                match op {
                    Some(op) => Route::Repo {
                        owner: decode(owner),
                        name: decode(name),
                        op,
                    },
                    None => Route::Unknown { under_repos: true },
                }
            }
            _ => Route::Unknown { under_repos: false },
        }
    }

    fn endpoint(&self) -> Option<Endpoint> {
        match self {
            Route::AccessToken(_) => Some(Endpoint::AccessToken),
            Route::App(r) => Some(match r {
                AppRoute::App => Endpoint::App,
                AppRoute::Config => Endpoint::HookConfig,
                AppRoute::Deliveries => Endpoint::HookDeliveries,
                AppRoute::Attempts(_) => Endpoint::HookAttempts,
            }),
            Route::Archive { .. } => Some(Endpoint::Archive),
            Route::Repo { op, .. } => Some(op.endpoint()),
            Route::Unknown { .. } => None,
        }
    }

    fn is_repo_call(&self) -> bool {
        matches!(
            self,
            Route::Repo { .. } | Route::Unknown { under_repos: true }
        )
    }
}

impl Op {
    /// Parses what follows `/repos/{owner}/{repo}/`.
    fn parse(rest: &str) -> Option<Op> {
        let op = if let Some(branch) = rest.strip_prefix("git/ref/heads/") {
            Op::Ref(decode(branch))
        } else if let Some(spec) = rest.strip_prefix("commits/") {
            Op::Commit(decode(spec))
        } else if let Some(spec) = rest.strip_prefix("git/trees/") {
            Op::Tree(decode(spec))
        } else if let Some(sha) = rest.strip_prefix("git/blobs/") {
            Op::Blob(decode(sha))
        } else if rest == "tarball" {
            Op::Tarball(String::new())
        } else if let Some(spec) = rest.strip_prefix("tarball/") {
            Op::Tarball(decode(spec))
        } else {
            return None;
        };
        Some(op)
    }

    fn endpoint(&self) -> Endpoint {
        match self {
            Op::Ref(_) => Endpoint::Ref,
            Op::Commit(_) => Endpoint::Commit,
            Op::Tree(_) => Endpoint::Tree,
            Op::Blob(_) => Endpoint::Blob,
            Op::Tarball(_) => Endpoint::Tarball,
        }
    }
}

async fn handle(State(sh): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, _body) = req.into_parts();
    let headers = parts.headers;
    // GitHub Enterprise Server's REST base is `{host}/api/v3`: accept both.
    let path = parts.uri.path();
    let path = path.strip_prefix("/api/v3").unwrap_or(path).to_string();
    let target = parts
        .uri
        .path_and_query()
        .map_or_else(|| path.clone(), |pq| pq.as_str().to_string());
    let route = Route::parse(&parts.method, &path);
    let is_archive = matches!(route, Route::Archive { .. });
    let has_user_agent = headers
        .get(header::USER_AGENT)
        .is_some_and(|v| !v.as_bytes().is_empty());

    let blob_sha = match &route {
        Route::Repo {
            op: Op::Blob(sha), ..
        } => Some(sha.as_str()),
        _ => None,
    };
    let (fault, delay, installation) = {
        let mut st = sh.lock();
        st.counters
            .record(route.endpoint(), route.is_repo_call(), blob_sha);
        if headers.contains_key("x-github-api-version") {
            st.saw_api_version = true;
        }
        if !is_archive && !has_user_agent {
            (None, None, None)
        } else {
            let installation = credential(header_str(&headers, header::AUTHORIZATION))
                .and_then(|t| st.tokens.installation_of(t, now()));
            (
                st.faults.take(&target),
                st.faults.delay_for(&target),
                installation,
            )
        }
    };

    let mut resp = if !is_archive && !has_user_agent {
        let mut r = Response::new(Body::from(NO_USER_AGENT));
        *r.status_mut() = StatusCode::FORBIDDEN;
        r
    } else {
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        match fault.clone() {
            Some(FaultKind::ResetMidBody { sent }) => {
                let real = dispatch(&sh, route, &headers, parts.uri.query().unwrap_or("")).await;
                reset_mid_body(real, sent).await
            }
            Some(kind) => fault_response(kind, installation),
            None => dispatch(&sh, route, &headers, parts.uri.query().unwrap_or("")).await,
        }
    };

    if !is_archive {
        let not_modified = resp.status() == StatusCode::NOT_MODIFIED;
        let charge = !not_modified && !path.starts_with("/app/installations/");
        let mut st = sh.lock();
        st.counters.not_modified += usize::from(not_modified);
        let mut rate = st.rate.charge(now(), charge);
        drop(st);
        if let Some(FaultKind::PrimaryRateLimit { reset_in_secs }) = fault {
            rate.remaining = 0;
            rate.used = rate.limit;
            rate.reset = now() + reset_in_secs as i64;
        }
        let h = resp.headers_mut();
        set(h, "x-ratelimit-limit", rate.limit.to_string());
        set(h, "x-ratelimit-remaining", rate.remaining.to_string());
        set(h, "x-ratelimit-used", rate.used.to_string());
        set(h, "x-ratelimit-reset", rate.reset.to_string());
        set(h, "x-ratelimit-resource", "core".to_string());
    }
    resp
}

async fn dispatch(sh: &Arc<Shared>, route: Route, headers: &HeaderMap, query: &str) -> Response {
    match route {
        Route::AccessToken(installation_id) => access_token(sh, installation_id, headers),
        Route::App(app_route) => {
            let jwt = credential(header_str(headers, header::AUTHORIZATION));
            match verify_app_jwt(&sh.key, sh.app_id, jwt, now()) {
                Ok(()) => hook::handle(sh, app_route, query),
                Err(message) => error(401, message),
            }
        }
        Route::Unknown { .. } => not_found(),
        Route::Archive { owner, name, sha } => {
            let Some(repo) = sh.lock().repos.get(&repo_key(&owner, &name)).cloned() else {
                return not_found();
            };
            blocking(move || api::archive(&repo, &sha)).await
        }
        Route::Repo { owner, name, op } => {
            let now = now();
            let repo = {
                let st = sh.lock();
                let installation = credential(header_str(headers, header::AUTHORIZATION))
                    .and_then(|t| st.tokens.installation_of(t, now));
                let Some(installation) = installation else {
                    return error(401, "Bad credentials");
                };
                if st.suspended.contains(&installation) {
                    return error(403, SUSPENDED);
                }
                match st.repos.get(&repo_key(&owner, &name)) {
                    Some(repo) if repo.installation_id == installation => repo.clone(),
                    _ => return not_found(),
                }
            };
            let ctx = Ctx {
                base_url: sh.base_url.clone(),
                repo,
                accept: header_str(headers, header::ACCEPT)
                    .unwrap_or("")
                    .to_string(),
                if_none_match: header_str(headers, header::IF_NONE_MATCH).map(str::to_string),
                recursive: query_flag(query, "recursive"),
                truncate: sh.lock().truncate_trees,
            };
            blocking(move || api::run(&ctx, &op)).await
        }
    }
}

fn access_token(sh: &Shared, installation_id: i64, headers: &HeaderMap) -> Response {
    let now = now();
    let jwt = credential(header_str(headers, header::AUTHORIZATION));
    if let Err(message) = verify_app_jwt(&sh.key, sh.app_id, jwt, now) {
        return error(401, message);
    }
    let mut st = sh.lock();
    if !st.installations.contains(&installation_id) {
        return not_found();
    }
    if st.suspended.contains(&installation_id) {
        return error(403, SUSPENDED);
    }
    let (token, expires_at) = st.tokens.issue(installation_id, now);
    let expires_at = chrono::DateTime::from_timestamp(expires_at, 0)
        .expect("valid timestamp")
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json(
        201,
        json!({
            "token": token,
            "expires_at": expires_at,
            "permissions": {"contents": "read"},
            "repository_selection": "selected",
        }),
    )
}

fn fault_response(kind: FaultKind, installation: Option<i64>) -> Response {
    match kind {
        FaultKind::Status(status) => {
            let message = if status >= 500 {
                "Server Error".to_string()
            } else {
                StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Error")
                    .to_string()
            };
            error(status, &message)
        }
        FaultKind::SecondaryRateLimit { retry_after_secs } => {
            let mut r = json(
                403,
                json!({
                    "message": SECONDARY,
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-secondary-rate-limits",
                }),
            );
            set(r.headers_mut(), "retry-after", retry_after_secs.to_string());
            r
        }
        // Answered in `handle`, which has the real response to cut short.
        FaultKind::ResetMidBody { .. } => error(500, "reset mid-body"),
        FaultKind::Body { content_type, body } => Response::builder()
            .status(200)
            .header(header::CONTENT_TYPE, content_type)
            .body(Body::from(body.as_ref().clone()))
            .expect("valid response"),
        FaultKind::PrimaryRateLimit { .. } => {
            let who = installation
                .map(|id| format!("installation ID {id}"))
                .unwrap_or_else(|| "installation".to_string());
            json(
                403,
                json!({
                    "message": format!("API rate limit exceeded for {who}. If you reach out to GitHub Support for help, please include the request ID 0000:0000:0000000:0000000:00000000 and timestamp {}.", chrono::Utc::now().format("%Y-%m-%d %H:%M:%S UTC")),
                    "documentation_url": "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api#about-the-primary-rate-limit",
                }),
            )
        }
    }
}

/// `real`'s status and headers, its full `content-length`, the first `sent`
/// bytes of its body, then an error that makes hyper drop the connection.
async fn reset_mid_body(real: Response, sent: usize) -> Response {
    let (mut parts, body) = real.into_parts();
    let bytes = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let len = bytes.len();
    let head = bytes.slice(..sent.min(len.saturating_sub(1)));
    set(&mut parts.headers, "content-length", len.to_string());
    let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = vec![
        Ok(head),
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "fake-github: reset mid-body",
        )),
    ];
    Response::from_parts(parts, Body::from_stream(futures_util::stream::iter(chunks)))
}

/// Runs git work off the async threads.
async fn blocking(f: impl FnOnce() -> Response + Send + 'static) -> Response {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| error(500, &format!("fake-github handler panicked: {e}")))
}

pub(crate) fn json(status: u16, body: Value) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
        .body(Body::from(body.to_string()))
        .expect("valid response")
}

/// A GitHub-style error: `{"message", "documentation_url", "status"}`.
pub(crate) fn error(status: u16, message: &str) -> Response {
    json(
        status,
        json!({"message": message, "documentation_url": DOCS, "status": status.to_string()}),
    )
}

pub(crate) fn not_found() -> Response {
    error(404, "Not Found")
}

pub(crate) fn set(h: &mut HeaderMap, name: &'static str, value: String) {
    if let Ok(v) = HeaderValue::from_str(&value) {
        h.insert(HeaderName::from_static(name), v);
    }
}

fn header_str(h: &HeaderMap, name: HeaderName) -> Option<&str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

fn repo_key(owner: &str, name: &str) -> String {
    format!("{owner}/{name}").to_ascii_lowercase()
}

/// True when `name` is in the query with a non-empty value (GitHub's `recursive`).
fn query_flag(query: &str, name: &str) -> bool {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .any(|(k, v)| k == name && !v.is_empty())
}

/// Percent-decodes a path segment (e.g. `feature%2Fx`); invalid escapes stay as they are.
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_percent_escapes() {
        assert_eq!(decode("feature%2Fx"), "feature/x");
        assert_eq!(decode("a%2"), "a%2");
        assert_eq!(decode("%41"), "A");
        assert_eq!(decode("100%"), "100%");
    }

    #[test]
    fn recursive_flag() {
        assert!(query_flag("recursive=1", "recursive"));
        assert!(query_flag("a=b&recursive=true", "recursive"));
        assert!(!query_flag("recursive=", "recursive"));
        assert!(!query_flag("", "recursive"));
    }

    #[test]
    fn routes() {
        let r = Route::parse(&Method::GET, "/repos/o/r/git/ref/heads/feature/x");
        assert!(matches!(r, Route::Repo { op: Op::Ref(ref b), .. } if b == "feature/x"));
        let r = Route::parse(&Method::GET, "/repos/o/r/tarball");
        assert!(matches!(r, Route::Repo { op: Op::Tarball(ref s), .. } if s.is_empty()));
        let r = Route::parse(&Method::POST, "/app/installations/12/access_tokens");
        assert!(matches!(r, Route::AccessToken(12)));
        let r = Route::parse(&Method::GET, "/repos/o/r/pulls");
        assert!(r.is_repo_call() && r.endpoint().is_none());
    }
}
