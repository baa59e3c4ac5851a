//! The REST answers match what git itself says about the same commits.

mod common;

use std::collections::HashMap;
use std::io::Read;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use common::*;
use fake_github::{Endpoint, GitRepo};
use serde_json::Value;

const GITLINK: &str = "1234567890abcdef1234567890abcdef12345678";

/// A repository with nested, executable, binary, empty, symlink and gitlink entries.
fn populate(repo: &GitRepo) -> String {
    repo.write("README.md", b"# Docs\n");
    repo.write("docs/guide/intro.md", b"Intro\r\nwith CRLF\n");
    repo.write("docs/empty.txt", b"");
    let binary: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    repo.write("assets/logo.bin", &binary);
    repo.write("bin/run.sh", b"#!/bin/sh\necho hi\n");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let script = repo.path().join("bin/run.sh");
        std::fs::set_permissions(script, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    repo.symlink("docs/link.md", "guide/intro.md");
    repo.add_submodule_link("vendor/lib", GITLINK);
    repo.commit("initial")
}

#[tokio::test]
async fn trees_and_blobs_match_git() {
    let gh = start().await;
    let repo = gh.add_repo("Acme/Docs", 1001, INSTALLATION);
    let head = populate(&repo);
    let tok = token(&gh, INSTALLATION).await;

    // Recursive tree by commit SHA: exactly `git ls-tree -r -t`.
    let (status, tree) = get_json(
        &gh,
        &tok,
        &format!("/repos/acme/docs/git/trees/{head}?recursive=1"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        tree["sha"],
        git(&repo, &["rev-parse", &format!("{head}^{{tree}}")])
    );
    assert_eq!(tree["truncated"], false);
    let served: Vec<(String, String, String, String)> = tree["tree"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_string();
            (s("path"), s("mode"), s("type"), s("sha"))
        })
        .collect();
    assert_eq!(served, repo.ls_tree(&head));
    let by_path: HashMap<&str, &Value> = tree["tree"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap(), e))
        .collect();
    assert_eq!(by_path["docs"]["mode"], "040000");
    assert_eq!(by_path["docs"]["type"], "tree");
    assert!(by_path["docs"].get("size").is_none());
    assert_eq!(by_path["bin/run.sh"]["mode"], "100755");
    assert_eq!(by_path["README.md"]["mode"], "100644");
    assert_eq!(by_path["docs/link.md"]["mode"], "120000");
    assert_eq!(by_path["docs/link.md"]["type"], "blob");
    assert_eq!(by_path["vendor/lib"]["mode"], "160000");
    assert_eq!(by_path["vendor/lib"]["type"], "commit");
    assert_eq!(by_path["vendor/lib"]["sha"], GITLINK);
    assert!(by_path["vendor/lib"].get("size").is_none());

    // Every regular file: the SHA is `git hash-object`'s, the size and the
    // decoded content are the bytes `git show` gives, raw too.
    for file in [
        "README.md",
        "docs/guide/intro.md",
        "docs/empty.txt",
        "assets/logo.bin",
        "bin/run.sh",
    ] {
        let entry = by_path[file];
        let sha = entry["sha"].as_str().unwrap();
        assert_eq!(
            sha,
            git(&repo, &["hash-object", "--no-filters", file]),
            "{file}"
        );
        let bytes = repo.show(&head, file);
        assert_eq!(entry["size"], bytes.len(), "{file}");
        let (status, blob) =
            get_json(&gh, &tok, &format!("/repos/Acme/Docs/git/blobs/{sha}")).await;
        assert_eq!(status, 200);
        assert_eq!(blob["sha"], sha);
        assert_eq!(blob["size"], bytes.len());
        assert_eq!(blob["encoding"], "base64");
        let content = blob["content"].as_str().unwrap();
        assert!(content.split('\n').all(|line| line.len() <= 60), "{file}");
        assert_eq!(
            STANDARD.decode(content.replace('\n', "")).unwrap(),
            bytes,
            "{file}"
        );
        let raw = get(
            &gh,
            &tok,
            &format!("/repos/acme/docs/git/blobs/{sha}"),
            "application/vnd.github.raw+json",
        )
        .await;
        assert_eq!(raw.status(), 200);
        assert_eq!(raw.bytes().await.unwrap().to_vec(), bytes, "{file}");
    }
    // The symlink's blob holds its target.
    let link_sha = by_path["docs/link.md"]["sha"].as_str().unwrap();
    let raw = get(
        &gh,
        &tok,
        &format!("/repos/acme/docs/git/blobs/{link_sha}"),
        "application/vnd.github.raw",
    )
    .await;
    assert_eq!(raw.bytes().await.unwrap().as_ref(), b"guide/intro.md");
    assert_eq!(gh.blob_calls_for(link_sha), 1);
    assert_eq!(gh.calls(Endpoint::Blob), 11);

    // By branch name, non-recursive: the immediate children only, complete.
    let (_, top) = get_json(&gh, &tok, "/repos/acme/docs/git/trees/main").await;
    assert_eq!(top["sha"], tree["sha"]);
    let names: Vec<&str> = top["tree"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["README.md", "assets", "bin", "docs", "vendor"]);
    // A subtree by its SHA.
    let docs_sha = by_path["docs"]["sha"].as_str().unwrap();
    let (_, docs) = get_json(&gh, &tok, &format!("/repos/acme/docs/git/trees/{docs_sha}")).await;
    let names: Vec<&str> = docs["tree"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["empty.txt", "guide", "link.md"]);

    // Unknown objects.
    let zeros = "0".repeat(40);
    assert_eq!(
        get_json(&gh, &tok, &format!("/repos/acme/docs/git/trees/{zeros}"))
            .await
            .0,
        404
    );
    assert_eq!(
        get_json(&gh, &tok, &format!("/repos/acme/docs/git/blobs/{zeros}"))
            .await
            .0,
        404
    );
    assert_eq!(
        get_json(&gh, &tok, "/repos/acme/docs/git/blobs/nothex")
            .await
            .0,
        422
    );
    assert_eq!(
        get_json(&gh, &tok, "/repos/acme/nope/git/trees/main")
            .await
            .0,
        404
    );
}

#[tokio::test]
async fn truncated_trees_only_affect_recursive_listings() {
    let gh = start().await;
    let repo = gh.add_repo("acme/big", 1, INSTALLATION);
    for i in 0..10 {
        repo.write(&format!("d{i}/f.txt"), format!("{i}\n").as_bytes());
    }
    let head = repo.commit("c");
    let tok = token(&gh, INSTALLATION).await;
    gh.set_truncate_trees(true);
    let (_, rec) = get_json(
        &gh,
        &tok,
        &format!("/repos/acme/big/git/trees/{head}?recursive=1"),
    )
    .await;
    assert_eq!(rec["truncated"], true);
    assert_eq!(
        rec["tree"].as_array().unwrap().len(),
        10,
        "half of 20 entries"
    );
    let (_, top) = get_json(&gh, &tok, &format!("/repos/acme/big/git/trees/{head}")).await;
    assert_eq!(top["truncated"], false);
    assert_eq!(top["tree"].as_array().unwrap().len(), 10);
    gh.set_truncate_trees(false);
    let (_, rec) = get_json(
        &gh,
        &tok,
        &format!("/repos/acme/big/git/trees/{head}?recursive=1"),
    )
    .await;
    assert_eq!(
        (
            rec["truncated"].as_bool(),
            rec["tree"].as_array().unwrap().len()
        ),
        (Some(false), 20)
    );
}

#[tokio::test]
async fn tarball_redirects_to_git_archive() {
    let gh = start().await;
    let repo = gh.add_repo("acme/docs", 1001, INSTALLATION);
    let head = populate(&repo);
    let tok = token(&gh, INSTALLATION).await;

    let resp = get(
        &gh,
        &tok,
        "/repos/acme/docs/tarball/main",
        "application/vnd.github+json",
    )
    .await;
    assert_eq!(resp.status(), 302);
    let location = header(&resp, "location").to_string();
    assert_eq!(
        location,
        format!("{}/_codeload/acme/docs/legacy.tar.gz/{head}", gh.base_url())
    );
    // The download needs no credentials, like codeload's signed URL.
    let download = client().get(&location).send().await.unwrap();
    assert_eq!(download.status(), 200);
    assert!(download.headers().get("x-ratelimit-remaining").is_none());
    let gz = download.bytes().await.unwrap();

    let prefix = format!("acme-docs-{}/", &head[..7]);
    let mut files: HashMap<String, (tar::EntryType, Vec<u8>, Option<String>)> = HashMap::new();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&gz[..]));
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().to_string_lossy().into_owned();
        if entry.header().entry_type() == tar::EntryType::XGlobalHeader {
            continue;
        }
        let rel = path
            .strip_prefix(&prefix)
            .unwrap_or_else(|| panic!("{path} lacks {prefix}"));
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        files.insert(
            rel.trim_end_matches('/').to_string(),
            (entry.header().entry_type(), bytes, link),
        );
    }
    for file in [
        "README.md",
        "docs/guide/intro.md",
        "docs/empty.txt",
        "assets/logo.bin",
        "bin/run.sh",
    ] {
        let (kind, bytes, _) = &files[file];
        assert_eq!(*kind, tar::EntryType::Regular, "{file}");
        assert_eq!(*bytes, repo.show(&head, file), "{file}");
    }
    assert_eq!(files["docs/link.md"].0, tar::EntryType::Symlink);
    assert_eq!(files["docs/link.md"].2.as_deref(), Some("guide/intro.md"));
    assert_eq!(
        files["vendor/lib"].0,
        tar::EntryType::Directory,
        "gitlink as an empty dir"
    );

    // A following client gets the archive in one go.
    let follow = reqwest::Client::builder().user_agent("t").build().unwrap();
    let resp = follow
        .get(format!("{}/repos/acme/docs/tarball/{head}", gh.base_url()))
        .bearer_auth(&tok)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap(), gz);

    assert_eq!(gh.calls(Endpoint::Tarball), 2);
    assert_eq!(gh.calls(Endpoint::Archive), 2);
    assert_eq!(gh.total_repo_calls(), 2, "downloads are not REST calls");
    let missing = get(&gh, &tok, "/repos/acme/docs/tarball/nope", "*/*").await;
    assert_eq!(missing.status(), 404);
}

#[tokio::test]
async fn refs_commits_and_branch_moves() {
    let gh = start().await;
    let repo = gh.add_repo("acme/docs", 1001, INSTALLATION);
    let tok = token(&gh, INSTALLATION).await;
    let (status, body) = get_json(&gh, &tok, "/repos/acme/docs/git/ref/heads/main").await;
    assert_eq!(
        (status, body["message"].as_str()),
        (409, Some("Git Repository is empty."))
    );
    let tarball = get(&gh, &tok, "/repos/acme/docs/tarball/main", "*/*").await;
    assert_eq!(tarball.status(), 404);

    repo.write("a.txt", b"one\n");
    let first = repo.commit("first");
    assert_eq!(repo.head("main").as_deref(), Some(first.as_str()));
    repo.checkout("feature/x");
    repo.write("a.txt", b"two\n");
    let second = repo.commit("second");

    let (status, r) = get_json(&gh, &tok, "/repos/acme/docs/git/ref/heads/feature/x").await;
    assert_eq!(status, 200);
    assert_eq!(r["ref"], "refs/heads/feature/x");
    assert_eq!(r["object"]["sha"], second.as_str());
    assert_eq!(r["object"]["type"], "commit");
    assert_eq!(
        get_json(&gh, &tok, "/repos/acme/docs/git/ref/heads/nope")
            .await
            .0,
        404
    );

    let (status, c) = get_json(&gh, &tok, "/repos/acme/docs/commits/feature/x").await;
    assert_eq!(status, 200);
    assert_eq!(c["sha"], second.as_str());
    assert_eq!(
        c["commit"]["tree"]["sha"],
        git(&repo, &["rev-parse", &format!("{second}^{{tree}}")])
    );
    assert_eq!(c["parents"][0]["sha"], first.as_str());
    assert_eq!(c["commit"]["message"], "second");
    let sha = get(
        &gh,
        &tok,
        "/repos/acme/docs/commits/main",
        "application/vnd.github.sha",
    )
    .await;
    assert_eq!(sha.text().await.unwrap(), first);
    let cached = client()
        .get(format!("{}/repos/acme/docs/commits/main", gh.base_url()))
        .bearer_auth(&tok)
        .header("accept", "application/vnd.github.sha")
        .header("if-none-match", format!("\"{first}\""))
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    assert_eq!(
        get_json(&gh, &tok, "/repos/acme/docs/commits/nope").await.0,
        422
    );

    // Force push to an unrelated history, then delete and re-create a branch.
    repo.orphan("rewrite");
    assert_eq!(repo.head("rewrite"), None, "unborn until the first commit");
    repo.write("b.txt", b"fresh\n");
    let unrelated = repo.commit("unrelated");
    assert_eq!(repo.ls_tree(&unrelated).len(), 1);
    repo.set_branch("main", &unrelated);
    let (_, r) = get_json(&gh, &tok, "/repos/acme/docs/git/ref/heads/main").await;
    assert_eq!(r["object"]["sha"], unrelated.as_str());
    repo.delete_branch("feature/x");
    assert_eq!(repo.head("feature/x"), None);
    assert_eq!(
        get_json(&gh, &tok, "/repos/acme/docs/git/ref/heads/feature/x")
            .await
            .0,
        404
    );
    repo.set_branch("feature/x", &second);
    assert_eq!(
        get_json(&gh, &tok, "/repos/acme/docs/git/ref/heads/feature%2Fx")
            .await
            .0,
        200
    );
    // The work tree follows set_branch on the checked-out branch.
    repo.checkout("main");
    repo.set_branch("main", &first);
    assert_eq!(std::fs::read(repo.path().join("a.txt")).unwrap(), b"one\n");
    repo.remove("a.txt");
    let removed = repo.commit("remove");
    assert!(repo.ls_tree(&removed).is_empty());
}
