//! Talking to GitHub as a GitHub App: the App JWT and installation tokens
//! ([`auth`]), a REST client that classifies every failure and keeps a rate
//! budget per installation ([`client`]), and the [`reconciler`] that brings a
//! target to a head SHA.

pub mod auth;
pub mod client;
pub mod reconciler;
pub mod tarball;

/// How to reach GitHub as the App.
#[derive(Clone)]
pub struct GithubAppConfig {
    pub app_id: i64,
    /// PEM text of the App's RSA private key.
    pub private_key_pem: String,
    /// `https://api.github.com`, or `https://HOST/api/v3` for GitHub Enterprise Server.
    pub api_url: String,
    /// Above this many files to download, one tarball replaces per-blob calls.
    pub tarball_threshold: usize,
}
