//! Real git repositories for the fake to serve, driven through the `git` CLI.
//!
//! Every command runs hermetically: no system or user configuration (HOME
//! points into the repository's temp dir, `GIT_*` variables inherited from the
//! caller are dropped), a fixed identity, no signing, no background gc.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;

/// Configuration passed with `-c` to every git invocation.
const CONFIG: &[&str] = &[
    "init.defaultBranch=main",
    "commit.gpgsign=false",
    "tag.gpgsign=false",
    "core.autocrlf=false",
    "core.symlinks=true",
    "core.fsmonitor=false",
    "core.quotepath=false",
    "gc.auto=0",
    "maintenance.auto=false",
    "advice.detachedHead=false",
];

/// A non-bare git repository in a temp dir, removed when the last handle
/// (including the one the [`crate::FakeGitHub`] keeps) is dropped.
///
/// Cheap to clone: clones share the same repository. Every method panics with
/// git's stderr if git fails: this is a test tool.
#[derive(Clone)]
pub struct GitRepo {
    inner: Arc<Inner>,
}

struct Inner {
    _tmp: tempfile::TempDir,
    home: PathBuf,
    work: PathBuf,
}

impl std::fmt::Debug for GitRepo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitRepo")
            .field("path", &self.inner.work)
            .finish()
    }
}

impl GitRepo {
    /// `git init` a fresh repository (default branch `main`, no commits).
    pub(crate) fn init() -> GitRepo {
        let tmp = tempfile::Builder::new()
            .prefix("fake-github-")
            .tempdir()
            .expect("create temp dir for a git repository");
        let home = tmp.path().join("home");
        let work = tmp.path().join("repo");
        std::fs::create_dir_all(&home).expect("create fake HOME");
        std::fs::create_dir_all(&work).expect("create work tree");
        let repo = GitRepo {
            inner: Arc::new(Inner {
                _tmp: tmp,
                home,
                work,
            }),
        };
        repo.git(["init", "-q"]);
        repo
    }

    /// The work tree (a normal, clone-able repository with `.git` inside).
    pub fn path(&self) -> &Path {
        &self.inner.work
    }

    /// Writes a file (creating parent directories), replacing a symlink there.
    pub fn write(&self, path: &str, bytes: &[u8]) {
        let full = self.full(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).expect("create parent directories");
        }
        if full
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
        {
            std::fs::remove_file(&full).expect("remove symlink before writing");
        }
        std::fs::write(&full, bytes).unwrap_or_else(|e| panic!("write {path}: {e}"));
    }

    /// Removes a file, symlink, directory or gitlink from the work tree and the index.
    pub fn remove(&self, path: &str) {
        let full = self.full(path);
        if let Ok(meta) = full.symlink_metadata() {
            if meta.is_dir() {
                std::fs::remove_dir_all(&full).expect("remove directory");
            } else {
                std::fs::remove_file(&full).expect("remove file");
            }
        }
        self.git(["rm", "-r", "-q", "--cached", "--ignore-unmatch", "--", path]);
    }

    /// Creates a symlink (git mode 120000) at `path` pointing at `target`.
    #[cfg(unix)]
    pub fn symlink(&self, path: &str, target: &str) {
        let full = self.full(path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent).expect("create parent directories");
        }
        if full.symlink_metadata().is_ok() {
            std::fs::remove_file(&full).expect("remove existing file");
        }
        std::os::unix::fs::symlink(target, &full).expect("create symlink");
    }

    /// Records a submodule gitlink (mode 160000) at `path` pointing at
    /// `commit_sha`, as an unpopulated submodule: an empty directory in the
    /// work tree (which keeps `git add -A` from dropping it). No `.gitmodules`
    /// entry is written; GitHub's trees API does not need one.
    pub fn add_submodule_link(&self, path: &str, commit_sha: &str) {
        std::fs::create_dir_all(self.full(path)).expect("create gitlink directory");
        let info = format!("160000,{commit_sha},{path}");
        self.git(["update-index", "--add", "--cacheinfo", &info]);
    }

    /// Stages everything (`git add -A`) and commits on the current branch;
    /// returns the new commit SHA. Empty commits are allowed.
    pub fn commit(&self, message: &str) -> String {
        self.git(["add", "-A"]);
        self.git([
            "commit",
            "-q",
            "--allow-empty",
            "--no-verify",
            "-m",
            message,
        ]);
        self.rev_parse("HEAD").expect("HEAD after commit")
    }

    /// Switches to `branch`, creating it from the current HEAD if missing.
    pub fn checkout(&self, branch: &str) {
        if self.head(branch).is_some() {
            self.git(["checkout", "-q", branch]);
        } else {
            self.git(["checkout", "-q", "-b", branch]);
        }
    }

    /// Starts a new, unrelated history on `branch` with an empty index and work tree.
    pub fn orphan(&self, branch: &str) {
        self.git(["checkout", "-q", "--orphan", branch]);
        self.git(["rm", "-r", "-f", "-q", "--ignore-unmatch", "."]);
        self.git(["clean", "-f", "-f", "-d", "-x", "-q"]);
    }

    /// Force-moves `branch` to `sha` (a force push or a reset), creating it if
    /// missing. When `branch` is checked out the work tree follows (`reset --hard`).
    pub fn set_branch(&self, branch: &str, sha: &str) {
        if self.current_branch().as_deref() == Some(branch) {
            self.git(["reset", "-q", "--hard", sha]);
        } else {
            self.git(["branch", "-f", branch, sha]);
        }
    }

    /// Deletes `branch`, even the checked-out one (HEAD then points at an
    /// unborn branch; the next `commit` starts a new root commit).
    pub fn delete_branch(&self, branch: &str) {
        self.git(["update-ref", "-d", &format!("refs/heads/{branch}")]);
    }

    /// The commit SHA `branch` points at, if it exists.
    pub fn head(&self, branch: &str) -> Option<String> {
        self.rev_parse(&format!("refs/heads/{branch}^{{commit}}"))
    }

    /// The bytes of `path` at `sha` (`git cat-file blob sha:path`, the same
    /// bytes as `git show sha:path`; for a symlink, its target).
    pub fn show(&self, sha: &str, path: &str) -> Vec<u8> {
        self.git(["cat-file", "blob", &format!("{sha}:{path}")])
    }

    /// The recursive listing of the tree of `sha` (commit, tree or ref), as
    /// `(path, mode, type, sha)`, in git's order. Includes the tree entries
    /// themselves (`git ls-tree -r -t`), like GitHub's recursive tree listing.
    pub fn ls_tree(&self, sha: &str) -> Vec<(String, String, String, String)> {
        let out = self.git(["ls-tree", "-r", "-t", "-z", sha]);
        parse_ls_tree(&out, false)
            .into_iter()
            .map(|e| (e.path, e.mode, e.kind, e.sha))
            .collect()
    }

    /// Runs git with `args` and returns stdout, or stderr as the error.
    pub(crate) fn try_git<I, S>(&self, args: I) -> Result<Vec<u8>, String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("git");
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("GIT_") {
                cmd.env_remove(key);
            }
        }
        cmd.current_dir(&self.inner.work)
            .env("HOME", &self.inner.home)
            .env("XDG_CONFIG_HOME", self.inner.home.join(".config"))
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "Fake GitHub")
            .env("GIT_AUTHOR_EMAIL", "fake-github@example.invalid")
            .env("GIT_COMMITTER_NAME", "Fake GitHub")
            .env("GIT_COMMITTER_EMAIL", "fake-github@example.invalid")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("LC_ALL", "C")
            .stdin(Stdio::null());
        for c in CONFIG {
            cmd.arg("-c").arg(c);
        }
        cmd.args(args);
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run git (is it installed?): {e}"));
        if out.status.success() {
            Ok(out.stdout)
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs git and panics with its stderr on failure.
    pub(crate) fn git<I, S>(&self, args: I) -> Vec<u8>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let args: Vec<S> = args.into_iter().collect();
        self.try_git(&args).unwrap_or_else(|err| {
            let shown: Vec<_> = args.iter().map(|a| a.as_ref().to_string_lossy()).collect();
            panic!(
                "git {} failed in {}: {err}",
                shown.join(" "),
                self.path().display()
            )
        })
    }

    /// `git rev-parse --verify -q spec`, or None.
    pub(crate) fn rev_parse(&self, spec: &str) -> Option<String> {
        if spec.starts_with('-') {
            return None;
        }
        let out = self.try_git(["rev-parse", "--verify", "-q", spec]).ok()?;
        let sha = String::from_utf8_lossy(&out).trim().to_string();
        (!sha.is_empty()).then_some(sha)
    }

    /// True when the repository has no branch at all (GitHub answers 409).
    pub(crate) fn is_empty(&self) -> bool {
        self.try_git(["for-each-ref", "--count=1", "refs/heads"])
            .map(|out| out.is_empty())
            .unwrap_or(true)
    }

    fn current_branch(&self) -> Option<String> {
        let out = self
            .try_git(["symbolic-ref", "-q", "--short", "HEAD"])
            .ok()?;
        Some(String::from_utf8_lossy(&out).trim().to_string())
    }

    fn full(&self, path: &str) -> PathBuf {
        assert!(
            !path.starts_with('/') && !path.split('/').any(|c| c == ".."),
            "repository paths are relative: {path}"
        );
        self.inner.work.join(path)
    }
}

/// One entry of `git ls-tree -z [-l]` output.
#[derive(Debug, Clone)]
pub(crate) struct LsEntry {
    pub mode: String,
    pub kind: String,
    pub sha: String,
    pub size: Option<u64>,
    pub path: String,
}

/// Parses `git ls-tree -z` output; with `long`, the `-l` size column too.
pub(crate) fn parse_ls_tree(out: &[u8], long: bool) -> Vec<LsEntry> {
    out.split(|b| *b == 0)
        .filter(|rec| !rec.is_empty())
        .map(|rec| {
            let rec = String::from_utf8_lossy(rec);
            let (meta, path) = rec.split_once('\t').expect("ls-tree record has a tab");
            let mut cols = meta.split_whitespace();
            let mode = cols.next().expect("mode").to_string();
            let kind = cols.next().expect("type").to_string();
            let sha = cols.next().expect("sha").to_string();
            let size = if long {
                cols.next().and_then(|s| s.parse().ok())
            } else {
                None
            };
            LsEntry {
                mode,
                kind,
                sha,
                size,
                path: path.to_string(),
            }
        })
        .collect()
}
