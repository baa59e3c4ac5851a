//! Every entry of every fuzz corpus kept in the repository (`fuzz/corpus/`),
//! replayed through the same target bodies the fuzzers run
//! (`connectord::fuzz_targets`), on stable Rust: inputs a fuzzer found
//! interesting, and any crash it found once fixed, keep being checked by CI.
//! Fuzzing itself needs nightly: see docs/reliability.md.

use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let mut entries: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("the corpus {} is missing: {e}", dir.display()))
        .map(|e| {
            let path = e.expect("a corpus entry").path();
            let bytes = std::fs::read(&path).expect("read a corpus entry");
            (path, bytes)
        })
        .collect();
    entries.sort();
    assert!(!entries.is_empty(), "the corpus {} is empty", dir.display());
    entries
}

fn replay(target: &str, run: fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        if std::panic::catch_unwind(|| run(&bytes)).is_err() {
            panic!("{target}: {} fails", path.display());
        }
    }
}

#[test]
fn signature_corpus() {
    replay("signature", connectord::fuzz_targets::signature);
}

#[test]
fn envelope_corpus() {
    replay("envelope", connectord::fuzz_targets::envelope);
}

#[test]
fn form_body_corpus() {
    replay("form_body", connectord::fuzz_targets::form_body);
}

#[test]
fn tarball_corpus() {
    replay("tarball", connectord::fuzz_targets::tarball);
}

#[test]
fn path_corpus() {
    replay("path", connectord::fuzz_targets::path);
}

#[test]
fn admin_query_corpus() {
    replay("admin_query", connectord::fuzz_targets::admin_query);
}
