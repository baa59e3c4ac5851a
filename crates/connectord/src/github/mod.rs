//! Talking to GitHub as a GitHub App: the App JWT and installation tokens
//! ([`auth`]), a REST client that classifies every failure and keeps a rate
//! budget per installation ([`client`]), and the [`reconciler`] that brings a
//! target to a head SHA.

pub mod app_hook;
pub mod auth;
pub mod blobs;
pub mod branch_head;
pub mod client;
pub mod fetch_plan;
pub mod http;
pub mod plan;
pub mod reconciler;
pub mod tarball;
mod tree;

pub use fetch_plan::FetchMode;

/// How to reach GitHub as the App.
#[derive(Clone)]
pub struct GithubAppConfig {
    pub app_id: i64,
    /// PEM text of the App's RSA private key.
    pub private_key_pem: String,
    /// `https://api.github.com`, or `https://HOST/api/v3` for GitHub Enterprise Server.
    pub api_url: String,
    pub fetch: FetchSettings,
    /// The missed-push pass's period; `None`: off.
    pub reconcile_interval: Option<std::time::Duration>,
}

/// How syncs download files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchSettings {
    /// Blobs or tarball by the fetch plan's rule, or always one of them.
    pub mode: FetchMode,
    /// Hard caps on one tarball: decompressed bytes and entries. Each
    /// archive is also capped by what its tree says it holds.
    pub archive: tarball::Limits,
    /// How long GitHub may take to answer.
    pub timeouts: http::Timeouts,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self {
            mode: FetchMode::Auto,
            archive: tarball::Limits {
                max_bytes: 4 << 30,
                max_entries: 1_000_000,
            },
            timeouts: http::Timeouts::default(),
        }
    }
}
