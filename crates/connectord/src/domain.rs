//! Domain newtypes: each parses its input once, so code past the boundary
//! never re-checks it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a value was refused; rendered to the caller as a 400/422 message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ParseError(pub String);

fn err(msg: impl Into<String>) -> ParseError {
    ParseError(msg.into())
}

/// `X-GitHub-Delivery`: a GUID in practice; we accept any short printable token.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct DeliveryId(String);

impl DeliveryId {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(err(
                "X-GitHub-Delivery must be 1-128 characters of [A-Za-z0-9-_.:]",
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeliveryId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `X-GitHub-Event`: lowercase event names such as `push` or `installation_repositories`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct EventName(String);

impl EventName {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_' || b.is_ascii_digit());
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(err(
                "X-GitHub-Event must be a GitHub event name such as `push`",
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A full 40-hex-digit git object id (SHA-1 repositories; GitHub has no SHA-256 ones yet).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Sha(String);

pub const ZERO_SHA: &str = "0000000000000000000000000000000000000000";

impl Sha {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        if s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s.to_ascii_lowercase()))
        } else {
            Err(err(format!("`{s}` is not a 40-digit hex commit SHA")))
        }
    }
    pub fn is_zero(&self) -> bool {
        self.0 == ZERO_SHA
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_string(self) -> String {
        self.0
    }
}

/// `owner/name` as GitHub spells it. Matching is case-insensitive, as on GitHub.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RepoFullName(String);

impl RepoFullName {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let valid_part = |p: &str| {
            !p.is_empty()
                && p.len() <= 100
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        match s.split_once('/') {
            Some((owner, name))
                if valid_part(owner) && valid_part(name) && name != "." && name != ".." =>
            {
                Ok(Self(s.to_owned()))
            }
            _ => Err(err("repositoryFullName must look like `owner/name`")),
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_string(self) -> String {
        self.0
    }
}

/// A branch name as git allows it (`git check-ref-format --branch`, simplified
/// to the rules that matter for matching `refs/heads/<branch>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct BranchName(String);

impl BranchName {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let bad = s.is_empty()
            || s.len() > 255
            || s.starts_with('/')
            || s.ends_with('/')
            || s.ends_with('.')
            || s.ends_with(".lock")
            || s.starts_with('-')
            || s.starts_with("refs/")
            || s.contains("..")
            || s.contains("//")
            || s.contains("@{")
            || s.bytes()
                .any(|b| b.is_ascii_control() || b" ~^:?*[\\".contains(&b));
        if bad {
            Err(err(format!(
                "`{s}` is not a valid branch name (give `main`, not `refs/heads/main`)"
            )))
        } else {
            Ok(Self(s.to_owned()))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_string(self) -> String {
        self.0
    }
}

/// A repository-relative directory prefix such as `docs/`; empty means the whole repository.
/// Stored normalised with one trailing slash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PathPrefix(String);

impl PathPrefix {
    pub fn parse(s: &str) -> Result<Self, ParseError> {
        let trimmed = s.trim_matches('/');
        if trimmed.is_empty() {
            return Ok(Self(String::new()));
        }
        let bad_segment = trimmed.split('/').any(|seg| {
            seg.is_empty() || seg == "." || seg == ".." || seg.bytes().any(|b| b.is_ascii_control())
        });
        if bad_segment || trimmed.len() > 1024 {
            return Err(err(format!(
                "`{s}` is not a valid path prefix (use e.g. `docs/`)"
            )));
        }
        Ok(Self(format!("{trimmed}/")))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn into_string(self) -> String {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_ids() {
        assert!(DeliveryId::parse("72d3162e-cc78-11e3-81ab-4c9367dc0958").is_ok());
        assert!(DeliveryId::parse("").is_err());
        assert!(DeliveryId::parse("has space").is_err());
        assert!(DeliveryId::parse(&"a".repeat(129)).is_err());
    }

    #[test]
    fn shas_are_lowercased_and_checked() {
        assert_eq!(
            Sha::parse(&"A".repeat(40)).unwrap().as_str(),
            "a".repeat(40)
        );
        assert!(Sha::parse("abc").is_err());
        assert!(Sha::parse(ZERO_SHA).unwrap().is_zero());
    }

    #[test]
    fn full_names() {
        assert!(RepoFullName::parse("octo-org/hello.world").is_ok());
        for bad in ["octo", "/x", "x/", "a/b/c", "a/..", "a b/c"] {
            assert!(RepoFullName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn branches() {
        for ok in ["main", "release/1.x", "feature-a_b"] {
            assert!(BranchName::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "refs/heads/main",
            "a..b",
            "a b",
            "x.lock",
            "-x",
            "a/",
            "a~1",
        ] {
            assert!(BranchName::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_are_normalised() {
        assert_eq!(PathPrefix::parse("").unwrap().as_str(), "");
        assert_eq!(PathPrefix::parse("/").unwrap().as_str(), "");
        assert_eq!(PathPrefix::parse("docs").unwrap().as_str(), "docs/");
        assert_eq!(
            PathPrefix::parse("/docs/api/").unwrap().as_str(),
            "docs/api/"
        );
        assert!(PathPrefix::parse("docs/../etc").is_err());
        assert!(PathPrefix::parse("a//b").is_err());
    }
}
