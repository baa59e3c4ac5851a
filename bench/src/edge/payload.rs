//! The edge benchmark's request body: GitHub's documented `push` example for a
//! branch (from the test fixtures, about 8 KB), re-pointed at the benchmark's
//! targets. It is serialized once; every request is a copy of that template
//! with three fixed-width fields overwritten (`after`, `repository.id`,
//! `repository.full_name`), so all bodies have the same size and layout and
//! preparing one costs a copy, not a JSON serialization.
#![allow(dead_code)] // the driver uses the target layout, the load generator the template

use anyhow::{bail, Context};
use serde_json::Value;

/// GitHub's example payloads, as the tests use them.
pub const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../crates/connectord/tests/fixtures/webhooks-examples.json"
);

/// The installation every target's connector is registered for.
pub const INSTALLATION_ID: i64 = 4242;

/// Targets are numbered 0..MAX_TARGETS; their names and ids have fixed widths.
pub const MAX_TARGETS: usize = 1000;

/// Repository ids `BASE + n`: thirteen digits for every target.
const REPOSITORY_ID_BASE: i64 = 7_000_000_000_000;
const ID_WIDTH: usize = 13;
const NAME_PREFIX: &str = "edge-bench/repo-";
const NAME_WIDTH: usize = 3;

// Placeholders written into the template and found again in its bytes.
const AFTER_MARK: &str = "feedfacefeedfacefeedfacefeedfacefeedface";
const ID_MARK: i64 = 7_999_999_999_999;
const NAME_MARK: &str = "edge-bench/repo-XXX";

pub fn repository_id(target: usize) -> i64 {
    REPOSITORY_ID_BASE + target as i64
}

pub fn full_name(target: usize) -> String {
    format!("{NAME_PREFIX}{target:0NAME_WIDTH$}")
}

/// The serialized body and where its variable fields sit.
pub struct Template {
    pub bytes: Vec<u8>,
    /// The branch the example pushes to (`ref` without `refs/heads/`).
    pub branch: String,
    after_at: usize,
    id_at: usize,
    name_at: usize,
    /// Per target: its id's digits and its name's number, as written.
    targets: Vec<([u8; ID_WIDTH], [u8; NAME_WIDTH])>,
}

impl Template {
    /// The first `push` example whose `ref` is a branch, for `targets` targets.
    pub fn load(fixtures: &std::path::Path, targets: usize) -> anyhow::Result<Template> {
        if targets == 0 || targets > MAX_TARGETS {
            bail!("targets must be 1..={MAX_TARGETS}");
        }
        let text = std::fs::read_to_string(fixtures)
            .with_context(|| format!("reading {}", fixtures.display()))?;
        let corpus: Vec<Value> = serde_json::from_str(&text).context("parsing the examples")?;
        let mut push = corpus
            .iter()
            .filter(|e| e["name"] == "push")
            .flat_map(|e| e["examples"].as_array().into_iter().flatten())
            .find(|x| {
                x["ref"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("refs/heads/"))
            })
            .cloned()
            .context("no push example for a branch in the fixtures")?;
        let branch = push["ref"].as_str().unwrap_or_default()["refs/heads/".len()..].to_owned();
        push["after"] = AFTER_MARK.into();
        push["repository"]["id"] = ID_MARK.into();
        push["repository"]["full_name"] = NAME_MARK.into();
        push["installation"] = serde_json::json!({ "id": INSTALLATION_ID });
        let bytes = serde_json::to_vec(&push)?;
        let after_at = find_once(&bytes, AFTER_MARK.as_bytes())?;
        let id_at = find_once(&bytes, ID_MARK.to_string().as_bytes())?;
        let name_at = find_once(&bytes, NAME_MARK.as_bytes())? + NAME_PREFIX.len();
        let targets = (0..targets)
            .map(|t| {
                let id = format!("{:0ID_WIDTH$}", repository_id(t));
                let name = full_name(t);
                let mut digits = [0; ID_WIDTH];
                digits.copy_from_slice(id.as_bytes());
                let mut number = [0; NAME_WIDTH];
                number.copy_from_slice(&name.as_bytes()[NAME_PREFIX.len()..]);
                (digits, number)
            })
            .collect();
        Ok(Template {
            bytes,
            branch,
            after_at,
            id_at,
            name_at,
            targets,
        })
    }

    pub fn targets(&self) -> usize {
        self.targets.len()
    }

    /// Turns `body` (a copy of `self.bytes`) into the push of `after` to
    /// target `n % targets`.
    pub fn patch(&self, body: &mut [u8], n: usize, after: &[u8; 40]) {
        let (id, name) = &self.targets[n % self.targets.len()];
        body[self.after_at..self.after_at + 40].copy_from_slice(after);
        body[self.id_at..self.id_at + ID_WIDTH].copy_from_slice(id);
        body[self.name_at..self.name_at + NAME_WIDTH].copy_from_slice(name);
    }
}

fn find_once(haystack: &[u8], needle: &[u8]) -> anyhow::Result<usize> {
    let mut hits = haystack
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| *w == needle)
        .map(|(i, _)| i);
    match (hits.next(), hits.next()) {
        (Some(i), None) => Ok(i),
        _ => bail!(
            "placeholder {} is not exactly once in the template",
            String::from_utf8_lossy(needle)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_patched_body_is_the_push_of_that_head_to_that_target() {
        let template = Template::load(FIXTURES.as_ref(), 20).expect("template");
        assert_eq!(template.branch, "master");
        assert!(template.bytes.len() > 7_000, "the ~8 KB example");
        let mut body = template.bytes.clone();
        let after = *b"0123456789abcdef0123456789abcdef01234567";
        template.patch(&mut body, 27, &after);
        let v: Value = serde_json::from_slice(&body).expect("still JSON");
        assert_eq!(v["after"], "0123456789abcdef0123456789abcdef01234567");
        assert_eq!(v["repository"]["id"], repository_id(7));
        assert_eq!(v["repository"]["full_name"], full_name(7));
        assert_eq!(v["installation"]["id"], INSTALLATION_ID);
        assert_eq!(v["ref"], "refs/heads/master");
        assert_eq!(body.len(), template.bytes.len());
    }
}
