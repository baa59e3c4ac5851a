//! `connectord doctor` through the real binary against the GitHub double:
//! a good set-up passes (exit 0); each broken part gives its own FAIL line
//! and exit 1; no secret is ever printed.

mod common;

use common::process::{run, str_arg, Out};
use fake_github::{FakeGitHub, HookConfig, TEST_APP_PRIVATE_KEY_PEM, TEST_APP_PUBLIC_KEY_PEM};
use std::path::Path;

const APP_ID: &str = "4242";
const SECRET: &str = "doctor-webhook-secret-do-not-print-me";

struct Setup {
    fake: FakeGitHub,
    dir: tempfile::TempDir,
    key: std::path::PathBuf,
}

/// The double (installation 7), a key file and a migrated SQLite database
/// with a connector for installation 7.
async fn setup() -> Setup {
    let fake = FakeGitHub::start(4242, TEST_APP_PUBLIC_KEY_PEM).await;
    fake.add_installation(7);
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("app.pem");
    std::fs::write(&key, TEST_APP_PRIVATE_KEY_PEM).unwrap();
    let url = db_url(dir.path());
    run(dir.path(), &["migrate", "--database-url", &url], &[])
        .await
        .ok_for("migrate");
    let mut conn = common::content::connect(&url).await;
    sqlx::query("INSERT INTO connector_instance (id, installation_id, status, created_at, updated_at) VALUES ($1, $2, $3, 0, 0)")
        .bind("con_doctor")
        .bind(7i64)
        .bind("active")
        .execute(&mut conn)
        .await
        .unwrap();
    Setup { fake, dir, key }
}

fn db_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("c.db").display())
}

impl Setup {
    async fn doctor(&self, extra: &[&str], key: &Path) -> Out {
        let url = db_url(self.dir.path());
        let api = self.fake.base_url();
        let mut args = vec!["doctor", "--data-dir", str_arg(self.dir.path())];
        if !extra.contains(&"--database-url") {
            args.extend_from_slice(&["--database-url", &url]);
        }
        args.extend_from_slice(extra);
        let out = run(
            self.dir.path(),
            &args,
            &[
                ("GITHUB_CONNECTOR_APP_ID", APP_ID),
                ("GITHUB_CONNECTOR_APP_PRIVATE_KEY_PATH", str_arg(key)),
                ("GITHUB_API_URL", &api),
                ("GITHUB_CONNECTOR_APP_WEBHOOK_SECRET", SECRET),
            ],
        )
        .await;
        out.assert_no_panic();
        for text in [&out.stdout, &out.stderr] {
            assert!(!text.contains(SECRET), "the secret was printed:\n{text}");
            assert!(
                !text.contains("PRIVATE KEY"),
                "the key was printed:\n{text}"
            );
        }
        out
    }
}

fn fails(out: &Out) -> Vec<&str> {
    out.stdout
        .lines()
        .filter(|l| l.starts_with("FAIL"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_set_up_passes_every_check() {
    let s = setup().await;
    let out = s.doctor(&[], &s.key).await;
    assert!(out.status.success(), "{out:?}");
    for check in [
        "webhook secret",
        "database",
        "migrations",
        "private key",
        "App JWT",
        "installation 7",
        "webhook config",
    ] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.starts_with("ok") && l.contains(check)),
            "no ok line for {check}:\n{}",
            out.stdout
        );
    }
    assert!(fails(&out).is_empty(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_hook_url_and_insecure_ssl_each_fail() {
    let s = setup().await;
    s.fake.set_hook_config(HookConfig {
        url: "https://connectord.example.com/github/webhook".into(),
        insecure_ssl: "1".into(),
        ..HookConfig::default()
    });
    let out = s.doctor(&[], &s.key).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let f = fails(&out);
    assert_eq!(f.len(), 2, "{out:?}");
    assert!(
        f[0].contains("webhook config") && f[0].contains("path is /github/webhook"),
        "{f:?}"
    );
    assert!(f[1].contains("SSL verification is off"), "{f:?}");
    assert!(out.stdout.contains("fix: "), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_url_is_compared_and_must_answer() {
    let s = setup().await;
    // The hook points at connectord.example.com; the public URL says otherwise, and nothing listens there.
    let port = common::process::free_port();
    let public = format!("http://127.0.0.1:{port}");
    let out = s.doctor(&["--public-url", &public], &s.key).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let f = fails(&out);
    assert!(
        f.iter()
            .any(|l| l.contains("webhook config") && l.contains("not this service's")),
        "{f:?}"
    );
    assert!(
        f.iter()
            .any(|l| l.contains("public URL") && l.contains("cannot reach")),
        "{f:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_fails_and_the_github_checks_are_skipped() {
    let s = setup().await;
    let bad = s.dir.path().join("bad.pem");
    std::fs::write(
        &bad,
        "-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n",
    )
    .unwrap();
    let out = s.doctor(&[], &bad).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let f = fails(&out);
    assert_eq!(f.len(), 1, "{out:?}");
    assert!(f[0].contains("private key"), "{f:?}");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("skip") && l.contains("App JWT")),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmigrated_and_an_unreachable_database_each_fail() {
    let s = setup().await;
    // An empty database file: reachable, nothing applied; doctor must not migrate it.
    let empty = s.dir.path().join("empty.db");
    std::fs::write(&empty, b"").unwrap();
    let url = format!("sqlite://{}", empty.display());
    let out = s.doctor(&["--database-url", &url], &s.key).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let f = fails(&out);
    assert_eq!(f.len(), 1, "{out:?}");
    assert!(
        f[0].contains("migrations") && f[0].contains("not applied"),
        "{f:?}"
    );
    assert_eq!(
        std::fs::metadata(&empty).unwrap().len(),
        0,
        "doctor changed the database"
    );

    let port = common::process::free_port();
    let url = format!("postgres://postgres:pw-not-shown@127.0.0.1:{port}/nothing");
    let out = s.doctor(&["--database-url", &url], &s.key).await;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let f = fails(&out);
    assert!(
        f.iter()
            .any(|l| l.contains("database") && l.contains("cannot open")),
        "{f:?}"
    );
    assert!(
        !out.stdout.contains("pw-not-shown") && !out.stderr.contains("pw-not-shown"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_installations_are_sampled_not_each_minted_a_token() {
    let s = setup().await;
    let mut conn = common::content::connect(&db_url(s.dir.path())).await;
    for id in 100..130i64 {
        s.fake.add_installation(id);
        sqlx::query("INSERT INTO connector_instance (id, installation_id, status, created_at, updated_at) VALUES ($1, $2, $3, 0, 0)")
            .bind(format!("con_{id}"))
            .bind(id)
            .bind("active")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    let before = s.fake.tokens_issued();
    let out = s.doctor(&[], &s.key).await;
    assert!(out.status.success(), "{out:?}");
    assert!(
        out.stdout
            .contains("31 recorded; checking the first 25 by id"),
        "{}",
        out.stdout
    );
    let checked = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("ok    installation "))
        .count();
    assert_eq!(checked, 25, "{}", out.stdout);
    assert_eq!(
        s.fake.tokens_issued() - before,
        25,
        "one token per checked installation"
    );
}
