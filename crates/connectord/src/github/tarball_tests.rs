//! Hostile and broken archives, built header by header.

use super::*;
use std::io::Write;
use tar::{Builder, EntryType, Header};

const TOP: &str = "octo-docs-abc1234";
const BIG: Limits = Limits {
    max_bytes: 1 << 30,
    max_entries: 1 << 20,
};

/// An entry with exactly `name` (no checks: `..` and `/` pass) and `data`;
/// the header says `size` (default: the data's length).
fn entry(b: &mut Builder<Vec<u8>>, name: &[u8], kind: EntryType, data: &[u8], size: Option<u64>) {
    let mut h = Header::new_ustar();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_mode(0o644);
    h.set_entry_type(kind);
    h.set_size(size.unwrap_or(data.len() as u64));
    h.set_cksum();
    b.append(&h, data).expect("append");
}

fn file(b: &mut Builder<Vec<u8>>, rel: &str, data: &[u8]) {
    entry(
        b,
        format!("{TOP}/{rel}").as_bytes(),
        EntryType::Regular,
        data,
        None,
    );
}

fn gz(b: Builder<Vec<u8>>) -> Vec<u8> {
    let tar = b.into_inner().expect("tar");
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(&tar).expect("gzip");
    e.finish().expect("gzip")
}

fn start() -> Builder<Vec<u8>> {
    let mut b = Builder::new(Vec::new());
    b.append_pax_extensions([("comment", b"abc1234".as_slice())])
        .expect("global-ish header");
    entry(
        &mut b,
        format!("{TOP}/").as_bytes(),
        EntryType::Directory,
        b"",
        None,
    );
    b
}

fn want(files: &[(&str, &[u8])]) -> HashMap<String, Expected> {
    files
        .iter()
        .map(|(p, bytes)| {
            (
                (*p).to_owned(),
                Expected {
                    sha: git_blob_sha(bytes),
                    size: bytes.len() as u64,
                },
            )
        })
        .collect()
}

/// What `extract` handed on: (path, bytes), in order.
type Delivered = Vec<(String, Vec<u8>)>;

fn run(
    tar_gz: &[u8],
    wanted: &HashMap<String, Expected>,
    limits: Limits,
) -> (Result<Extracted, ArchiveError>, Delivered) {
    let mut got = vec![];
    let r = extract(tar_gz, wanted, limits, |p, f| {
        got.push((p, f.into_bytes()));
        true
    });
    (r, got)
}

#[test]
fn blob_sha_matches_git() {
    // `printf 'hello\n' | git hash-object --stdin`
    assert_eq!(
        git_blob_sha(b"hello\n"),
        "ce013625030ba8dba906f756967f9e9ca394464a"
    );
    // `git hash-object -t blob /dev/null`
    assert_eq!(
        git_blob_sha(b""),
        "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"
    );
}

#[test]
fn verified_checks_size_and_sha() {
    let e = Expected {
        sha: git_blob_sha(b"hello\n"),
        size: 6,
    };
    assert!(Verified::check(b"hello\n".to_vec(), &e).is_ok());
    let wrong = Verified::check(b"HELLO\n".to_vec(), &e).unwrap_err();
    assert!(wrong.contains("hashes to"), "{wrong}");
    let long = Verified::check(b"hello\n\n".to_vec(), &e).unwrap_err();
    assert!(long.contains("7 bytes where the tree says 6"), "{long}");
}

#[test]
fn wanted_files_are_delivered_checked_and_the_rest_left_out() {
    let mut b = start();
    file(&mut b, "a.md", b"alpha\n");
    file(&mut b, "docs/b.md", b"rewritten by export-subst\n");
    file(&mut b, "unwanted.md", b"not asked for\n");
    let wanted = want(&[
        ("a.md", b"alpha\n"),
        ("docs/b.md", b"beta\n"),
        ("absent.md", b"x"),
    ]);
    let (r, got) = run(&gz(b), &wanted, BIG);
    let r = r.expect("readable");
    assert_eq!(got, vec![("a.md".to_owned(), b"alpha\n".to_vec())]);
    assert_eq!(r.delivered, 1);
}

#[test]
fn extraction_stops_once_everything_is_found() {
    let mut b = start();
    file(&mut b, "a.md", b"alpha\n");
    file(&mut b, "b.md", b"beta\n");
    let (r, got) = run(&gz(b), &want(&[("a.md", b"alpha\n")]), BIG);
    assert_eq!(got.len(), 1);
    // The directory, the PAX header and a.md: b.md is never read.
    assert_eq!(r.expect("ok").entries, 3);
}

#[test]
fn a_pax_size_of_2_to_the_40_allocates_nothing_and_is_passed_over() {
    // The 142-byte archive: PAX `size=2^40` for a wanted path.
    let mut b = Builder::new(Vec::new());
    b.append_pax_extensions([("size", b"1099511627776".as_slice())])
        .expect("pax");
    file(&mut b, "a.md", b"hello\n");
    let (r, got) = run(&gz(b), &want(&[("a.md", b"hello\n")]), BIG);
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(r.expect("readable").refused, 1);
}

#[test]
fn a_header_size_of_2_to_the_40_is_never_read_or_allocated() {
    let mut b = start();
    let name = format!("{TOP}/a.md");
    entry(
        &mut b,
        name.as_bytes(),
        EntryType::Regular,
        b"hello\n",
        Some(1 << 40),
    );
    let (r, got) = run(&gz(b), &want(&[("a.md", b"hello\n")]), BIG);
    assert!(got.is_empty());
    // Skipping 2^40 bytes of a short stream ends it as unreadable.
    assert!(matches!(r, Err(ArchiveError::Io(_))), "{r:?}");
}

#[test]
fn an_entry_larger_than_the_tree_says_is_not_read() {
    let mut b = start();
    let big = vec![b'x'; 100_000];
    file(&mut b, "a.md", &big);
    let wanted = want(&[("a.md", b"6 byte")]);
    let (r, got) = run(&gz(b), &wanted, BIG);
    assert!(got.is_empty());
    assert!(r.is_ok(), "{r:?}");
}

#[test]
fn a_gzip_bomb_stops_at_the_byte_cap() {
    let mut b = start();
    file(&mut b, "zeros.bin", &vec![0u8; 8 << 20]);
    file(&mut b, "a.md", b"alpha\n");
    let bomb = gz(b);
    assert!(bomb.len() < 64 << 10, "compresses well: {}", bomb.len());
    let limits = Limits {
        max_bytes: 1 << 20,
        max_entries: 100,
    };
    let (r, got) = run(&bomb, &want(&[("a.md", b"alpha\n")]), limits);
    assert!(got.is_empty());
    match r {
        Err(ArchiveError::OverCap(m)) => assert!(m.contains("1048576"), "{m}"),
        other => panic!("not capped: {other:?}"),
    }
}

#[test]
fn too_many_entries_stop_at_the_entry_cap() {
    let mut b = start();
    for i in 0..50 {
        file(&mut b, &format!("f{i}.md"), b"x");
    }
    let limits = Limits {
        max_bytes: 1 << 30,
        max_entries: 10,
    };
    let (r, _) = run(&gz(b), &want(&[("f49.md", b"x")]), limits);
    match r {
        Err(ArchiveError::OverCap(m)) => assert!(m.contains("10 entries"), "{m}"),
        other => panic!("not capped: {other:?}"),
    }
}

#[test]
fn oversized_pax_headers_are_refused_unread() {
    let mut b = start();
    let huge = vec![b'a'; 200_000];
    b.append_pax_extensions([("comment", huge.as_slice())])
        .expect("pax");
    file(&mut b, "a.md", b"alpha\n");
    let (r, got) = run(&gz(b), &want(&[("a.md", b"alpha\n")]), BIG);
    assert!(got.is_empty());
    assert!(matches!(r, Err(ArchiveError::Io(_))), "{r:?}");
}

#[test]
fn no_entry_leaves_the_top_directory_or_is_anything_but_a_regular_file() {
    // Every entry carries the right bytes of a wanted file, so only the path
    // and type checks can keep them out.
    let good: &[u8] = b"the real content\n";
    let mut b = start();
    entry(&mut b, b"other-top/a.md", EntryType::Regular, good, None);
    entry(
        &mut b,
        format!("{TOP}/../a.md").as_bytes(),
        EntryType::Regular,
        good,
        None,
    );
    entry(&mut b, b"/a.md", EntryType::Regular, good, None);
    entry(&mut b, b"../a.md", EntryType::Regular, good, None);
    entry(
        &mut b,
        format!("{TOP}/x/../a.md").as_bytes(),
        EntryType::Regular,
        good,
        None,
    );
    let mut link = Header::new_ustar();
    link.set_path(format!("{TOP}/a.md")).expect("path");
    link.set_entry_type(EntryType::Symlink);
    link.set_link_name_literal("/etc/passwd").expect("link");
    link.set_size(0);
    link.set_cksum();
    b.append(&link, &[][..]).expect("symlink");
    link.set_entry_type(EntryType::Link);
    link.set_cksum();
    b.append(&link, &[][..]).expect("hardlink");
    // PAX path overrides: out of the top, absolute, and a link target.
    b.append_pax_extensions([("path", format!("{TOP}/../../a.md").as_bytes())])
        .expect("pax");
    file(&mut b, "decoy-1.md", good);
    b.append_pax_extensions([("path", b"/etc/a.md".as_slice())])
        .expect("pax");
    file(&mut b, "decoy-2.md", good);
    b.append_pax_extensions([("linkpath", b"/etc/passwd".as_slice())])
        .expect("pax");
    file(&mut b, "a.md", good);
    let wanted = want(&[("a.md", good), ("x/../a.md", good)]);
    let (r, got) = run(&gz(b), &wanted, BIG);
    assert!(got.is_empty(), "escaped: {got:?}");
    assert_eq!(r.expect("readable").refused, 10);
}

#[test]
fn a_pax_path_inside_the_top_directory_is_honoured() {
    // git writes paths over 100 bytes as a PAX `path`.
    let long = format!("docs/{}.md", "x".repeat(150));
    let mut b = start();
    b.append_pax_extensions([("path", format!("{TOP}/{long}").as_bytes())])
        .expect("pax");
    file(&mut b, "truncated-name", b"long\n");
    let (r, got) = run(&gz(b), &want(&[(long.as_str(), b"long\n")]), BIG);
    assert_eq!(got, vec![(long, b"long\n".to_vec())]);
    assert_eq!(r.expect("ok").refused, 0);
}

#[test]
fn garbage_is_unreadable_not_a_panic() {
    let (r, got) = run(b"not gzip at all", &want(&[("a", b"a")]), BIG);
    assert!(got.is_empty());
    assert!(matches!(r, Err(ArchiveError::Io(_))), "{r:?}");
}
