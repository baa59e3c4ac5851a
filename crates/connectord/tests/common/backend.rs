//! The conformance suite's backend switch. Every storage and queue test is
//! written once and run against SQLite and PostgreSQL: [`conformance!`]
//! turns `async fn name() {…}` into `name::sqlite` and `name::postgres`.
//!
//! PostgreSQL tests use the server `CONNECTORD_TEST_POSTGRES_URL` names,
//! each in a fresh schema. Without the variable they are skipped, and say so
//! on the terminal; under `CI=true` they fail instead, so CI cannot skip them.

use std::cell::Cell;
use std::io::Write;
use std::path::Path;
use std::sync::Once;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

thread_local! {
    static CURRENT: Cell<Backend> = const { Cell::new(Backend::Sqlite) };
}

pub const POSTGRES_URL_VAR: &str = "CONNECTORD_TEST_POSTGRES_URL";

/// The backend `spawn_app` uses on this test's thread.
pub fn current() -> Backend {
    CURRENT.with(|c| c.get())
}

/// Selects the backend for this test; `false` means skip it (PostgreSQL
/// asked for but not configured, outside CI).
pub fn select(backend: Backend) -> bool {
    CURRENT.with(|c| c.set(backend));
    backend == Backend::Sqlite || postgres_url().is_some()
}

/// The PostgreSQL server for tests, or `None` (and a notice, once) when unset.
pub fn postgres_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{POSTGRES_URL_VAR} is unset under CI=true: the PostgreSQL conformance tests must run");
            }
            static NOTICE: Once = Once::new();
            NOTICE.call_once(|| {
                // Straight to the terminal: libtest captures print!/eprint! of passing tests.
                let _ = writeln!(
                    std::io::stderr(),
                    "\n*** SKIPPED the PostgreSQL tests (the conformance suite's second backend): {POSTGRES_URL_VAR} is unset \
                     (e.g. postgres://postgres@127.0.0.1:5432/test) ***\n"
                );
            });
            None
        }
    }
}

/// A fresh database for one test: a file in `dir`, or a new PostgreSQL schema.
/// A restart in the same `dir` gets the same database back.
pub async fn database_url(backend: Backend, dir: &Path) -> String {
    match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.join("test.db").display()),
        Backend::Postgres => {
            let remembered = dir.join("postgres-url");
            if let Ok(url) = std::fs::read_to_string(&remembered) {
                return url;
            }
            let url = fresh_schema().await;
            std::fs::write(&remembered, &url).expect("remember the schema");
            url
        }
    }
}

/// Creates a schema `ct_<unix seconds>_<random>` and returns a URL whose
/// `search_path` is that schema. Schemas older than an hour (earlier runs)
/// are dropped on the way.
pub async fn fresh_schema() -> String {
    use sqlx::Connection;
    let base = postgres_url().expect("PostgreSQL tests need CONNECTORD_TEST_POSTGRES_URL");
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {POSTGRES_URL_VAR}: {e}"));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    static SWEEP: Once = Once::new();
    let mut sweep = false;
    SWEEP.call_once(|| sweep = true);
    if sweep {
        let old: Vec<String> = sqlx::query_scalar(
            "SELECT nspname FROM pg_namespace WHERE nspname LIKE 'ct\\_%' \
             AND split_part(nspname, '_', 2) ~ '^[0-9]+$' AND split_part(nspname, '_', 2)::bigint < $1",
        )
        .bind((now - 3600) as i64)
        .fetch_all(&mut conn)
        .await
        .expect("list old test schemas");
        for schema in old {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                .execute(&mut conn)
                .await;
        }
    }
    let schema = format!("ct_{now}_{}", uuid::Uuid::now_v7().simple());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut conn)
        .await
        .expect("create test schema");
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}options=-c%20search_path%3D{schema}")
}

/// Runs each test once per backend: `name::sqlite` and `name::postgres`.
#[macro_export]
macro_rules! conformance {
    ($( $(#[$attr:meta])* async fn $name:ident() $body:block )*) => {$(
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            $(#[$attr])*
            async fn sqlite() {
                $crate::common::backend::select($crate::common::backend::Backend::Sqlite);
                $body
            }

            $(#[$attr])*
            async fn postgres() {
                if !$crate::common::backend::select($crate::common::backend::Backend::Postgres) {
                    return;
                }
                $body
            }
        }
    )*};
}
