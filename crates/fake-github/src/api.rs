//! The git-backed REST answers. Each function runs git synchronously (the
//! server calls them on tokio's blocking pool) and builds GitHub's JSON.

use axum::body::Body;
use axum::response::Response;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::repo::parse_ls_tree;
use crate::server::{error, json, not_found, set};
use crate::RepoEntry;

/// An authenticated repository call.
#[derive(Debug)]
pub(crate) enum Op {
    /// `git/ref/heads/{branch}`
    Ref(String),
    /// `commits/{ref}`
    Commit(String),
    /// `git/trees/{sha-or-ref}`
    Tree(String),
    /// `git/blobs/{sha}`
    Blob(String),
    /// `tarball/{ref}` (empty: the default branch)
    Tarball(String),
}

/// What a repository call needs besides the op.
pub(crate) struct Ctx {
    pub base_url: String,
    pub repo: RepoEntry,
    pub accept: String,
    pub if_none_match: Option<String>,
    pub recursive: bool,
    pub truncate: bool,
}

impl Ctx {
    /// Whether `If-None-Match` names `tag` (weak or strong) or `*`.
    fn none_match(&self, tag: &str) -> bool {
        self.if_none_match.as_deref().is_some_and(|inm| {
            inm.split(',')
                .map(|t| t.trim().trim_start_matches("W/").trim_matches('"'))
                .any(|t| t == tag || t == "*")
        })
    }

    fn repo_url(&self) -> String {
        format!("{}/repos/{}", self.base_url, self.repo.full_name)
    }
}

pub(crate) fn run(ctx: &Ctx, op: &Op) -> Response {
    let resp = match op {
        Op::Ref(branch) => get_ref(ctx, branch),
        Op::Commit(spec) => get_commit(ctx, spec),
        Op::Tree(spec) => get_tree(ctx, spec),
        Op::Blob(sha) => get_blob(ctx, sha),
        // GitHub redirects, then the download of an empty repository is a 404.
        Op::Tarball(spec) => return tarball(ctx, spec),
    };
    // A repository without any branch answers 409 (checked only on a miss,
    // to spare a git process on every successful call).
    let missed = matches!(resp.status().as_u16(), 404 | 422);
    if missed && ctx.repo.git.is_empty() {
        return error(409, "Git Repository is empty.");
    }
    resp
}

/// As GitHub: the answer carries a (weak) ETag, and `If-None-Match` with it
/// answers 304 while the branch stays where it was.
fn get_ref(ctx: &Ctx, branch: &str) -> Response {
    let Some(sha) = ctx.repo.git.head(branch) else {
        return not_found();
    };
    let etag = format!("W/\"{sha}\"");
    if ctx.none_match(&sha) {
        let mut r = not_modified();
        set(r.headers_mut(), "etag", etag);
        return r;
    }
    let url = ctx.repo_url();
    let mut r = json(
        200,
        json!({
            "ref": format!("refs/heads/{branch}"),
            "node_id": node_id("Ref", ctx.repo.id, branch),
            "url": format!("{url}/git/refs/heads/{branch}"),
            "object": {"sha": sha, "type": "commit", "url": format!("{url}/git/commits/{sha}")},
        }),
    );
    set(r.headers_mut(), "etag", etag);
    r
}

fn not_modified() -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = axum::http::StatusCode::NOT_MODIFIED;
    r
}

fn get_commit(ctx: &Ctx, spec: &str) -> Response {
    let git = &ctx.repo.git;
    let Some(sha) = git.rev_parse(&format!("{spec}^{{commit}}")) else {
        return error(422, &format!("No commit found for SHA: {spec}"));
    };
    let etag = format!("\"{sha}\"");
    if ctx.accept.contains("application/vnd.github.sha") {
        let mut r = if ctx.none_match(&sha) {
            not_modified()
        } else {
            let mut r = Response::new(Body::from(sha.clone()));
            set(
                r.headers_mut(),
                "content-type",
                "application/vnd.github.sha; charset=utf-8".to_string(),
            );
            r
        };
        set(r.headers_mut(), "etag", etag);
        return r;
    }
    let format = "--format=%T%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B";
    let out = match git.try_git(["log", "-1", format, &sha]) {
        Ok(out) => String::from_utf8_lossy(&out).into_owned(),
        Err(e) => return error(500, &e),
    };
    let f: Vec<&str> = out.splitn(9, '\0').collect();
    if f.len() < 9 {
        return error(500, "unexpected git log output");
    }
    let url = ctx.repo_url();
    let parents: Vec<Value> = f[1]
        .split_whitespace()
        .map(|p| json!({"sha": p, "url": format!("{url}/commits/{p}")}))
        .collect();
    let mut r = json(
        200,
        json!({
            "sha": sha,
            "node_id": node_id("Commit", ctx.repo.id, &sha),
            "url": format!("{url}/commits/{sha}"),
            "commit": {
                "url": format!("{url}/git/commits/{sha}"),
                "author": {"name": f[2], "email": f[3], "date": f[4]},
                "committer": {"name": f[5], "email": f[6], "date": f[7]},
                "message": f[8].trim_end(),
                "tree": {"sha": f[0], "url": format!("{url}/git/trees/{}", f[0])},
            },
            "parents": parents,
        }),
    );
    set(r.headers_mut(), "etag", etag);
    r
}

fn get_tree(ctx: &Ctx, spec: &str) -> Response {
    let git = &ctx.repo.git;
    if spec.is_empty() {
        return not_found();
    }
    let Some(tree) = git.rev_parse(&format!("{spec}^{{tree}}")) else {
        return not_found();
    };
    let mut args = vec!["ls-tree", "-z", "-l"];
    if ctx.recursive {
        args.extend(["-r", "-t"]);
    }
    args.push(&tree);
    let out = match git.try_git(&args) {
        Ok(out) => out,
        Err(e) => return error(500, &e),
    };
    let mut entries = parse_ls_tree(&out, true);
    let truncated = ctx.recursive && ctx.truncate;
    if truncated {
        entries.truncate(entries.len() / 2);
    }
    let url = ctx.repo_url();
    let listing: Vec<Value> = entries
        .into_iter()
        .map(|e| {
            let mut v = json!({"path": e.path, "mode": e.mode, "type": e.kind, "sha": e.sha});
            match e.kind.as_str() {
                "blob" => {
                    v["size"] = json!(e.size.unwrap_or(0));
                    v["url"] = json!(format!("{url}/git/blobs/{}", e.sha));
                }
                "tree" => v["url"] = json!(format!("{url}/git/trees/{}", e.sha)),
                _ => {}
            }
            v
        })
        .collect();
    json(
        200,
        json!({
            "sha": tree,
            "url": format!("{url}/git/trees/{tree}"),
            "tree": listing,
            "truncated": truncated,
        }),
    )
}

fn get_blob(ctx: &Ctx, sha: &str) -> Response {
    if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
        return error(
            422,
            "The sha parameter must be exactly 40 characters and contain only [0-9a-f].",
        );
    }
    let sha = sha.to_ascii_lowercase();
    let Ok(bytes) = ctx.repo.git.try_git(["cat-file", "blob", &sha]) else {
        return not_found();
    };
    let etag = format!("\"{sha}\"");
    if ctx.accept.contains("application/vnd.github.raw")
        || ctx.accept.contains("application/vnd.github.v3.raw")
    {
        let mut r = Response::new(Body::from(bytes));
        set(
            r.headers_mut(),
            "content-type",
            "application/vnd.github.raw".to_string(),
        );
        set(r.headers_mut(), "etag", etag);
        return r;
    }
    let mut r = json(
        200,
        json!({
            "sha": sha,
            "node_id": node_id("Blob", ctx.repo.id, &sha),
            "size": bytes.len(),
            "url": format!("{}/git/blobs/{sha}", ctx.repo_url()),
            "content": base64_lines(&bytes),
            "encoding": "base64",
        }),
    );
    set(r.headers_mut(), "etag", etag);
    r
}

fn tarball(ctx: &Ctx, spec: &str) -> Response {
    let spec = if spec.is_empty() {
        "refs/heads/main"
    } else {
        spec
    };
    let Some(sha) = ctx.repo.git.rev_parse(&format!("{spec}^{{commit}}")) else {
        return not_found();
    };
    let location = format!(
        "{}/_codeload/{}/legacy.tar.gz/{sha}",
        ctx.base_url, ctx.repo.full_name
    );
    let mut r = Response::new(Body::empty());
    *r.status_mut() = axum::http::StatusCode::FOUND;
    set(r.headers_mut(), "location", location);
    r
}

/// The redirected download: `git archive` of `sha` with GitHub's
/// `{owner}-{repo}-{sha7}/` prefix. 404 for an unknown commit or an empty repo.
pub(crate) fn archive(repo: &RepoEntry, sha: &str) -> Response {
    let Some(commit) = repo.git.rev_parse(&format!("{sha}^{{commit}}")) else {
        return not_found();
    };
    let (owner, name) = repo
        .full_name
        .split_once('/')
        .expect("full_name is owner/name");
    let stem = format!("{owner}-{name}-{}", &commit[..7]);
    let prefix = format!("--prefix={stem}/");
    let bytes = match repo
        .git
        .try_git(["archive", "--format=tar.gz", &prefix, &commit])
    {
        Ok(bytes) => bytes,
        Err(e) => return error(500, &e),
    };
    let mut r = Response::new(Body::from(bytes));
    let h = r.headers_mut();
    set(h, "content-type", "application/x-gzip".to_string());
    set(
        h,
        "content-disposition",
        format!("attachment; filename={stem}.tar.gz"),
    );
    set(h, "etag", format!("\"{commit}\""));
    r
}

/// Base64 in 60-character lines, each ending in `\n` (GitHub's layout).
fn base64_lines(bytes: &[u8]) -> String {
    let flat = STANDARD.encode(bytes);
    let mut out = String::with_capacity(flat.len() + flat.len() / 60 + 1);
    for chunk in flat.as_bytes().chunks(60) {
        out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
        out.push('\n');
    }
    out
}

/// An opaque, stable GraphQL-style node id.
fn node_id(kind: &str, repo_id: i64, key: &str) -> String {
    STANDARD.encode(format!("{kind}:{repo_id}:{key}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_is_wrapped_at_60() {
        assert_eq!(base64_lines(b""), "");
        assert_eq!(base64_lines(b"hi"), "aGk=\n");
        let text = base64_lines(&[7u8; 100]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].len(), 60);
        assert_eq!(lines[1].len(), 60);
        assert!(text.ends_with('\n'));
        let joined: String = lines.concat();
        assert_eq!(STANDARD.decode(joined).unwrap(), vec![7u8; 100]);
    }
}
