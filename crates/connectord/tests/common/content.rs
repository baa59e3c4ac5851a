//! Looks at the content store's tables directly, for what the API does not
//! show: which blobs are stored, and a database at an older schema.

use sqlx::{AnyConnection, Connection};
use std::collections::BTreeSet;

/// A connection of its own to the test's database (either backend).
pub async fn connect(db_url: &str) -> AnyConnection {
    sqlx::any::install_default_drivers();
    let url = if db_url.starts_with("sqlite:") {
        format!("{db_url}?mode=rwc")
    } else {
        db_url.to_owned()
    };
    AnyConnection::connect(&url)
        .await
        .expect("connect to the test database")
}

/// The git blob ids the store holds bytes for.
pub async fn blob_shas(db_url: &str) -> BTreeSet<String> {
    let mut conn = connect(db_url).await;
    let shas: Vec<String> = sqlx::query_scalar("SELECT sha FROM blob")
        .fetch_all(&mut conn)
        .await
        .expect("list blobs");
    shas.into_iter().collect()
}

/// Rows of `document` (current and older versions) of one target.
pub async fn document_rows(db_url: &str, target: &str) -> i64 {
    let mut conn = connect(db_url).await;
    sqlx::query_scalar("SELECT count(*) FROM document WHERE target_id = $1")
        .bind(target)
        .fetch_one(&mut conn)
        .await
        .expect("count documents")
}
