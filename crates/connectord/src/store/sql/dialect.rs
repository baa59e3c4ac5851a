//! The few places where SQLite and PostgreSQL need different SQL. Everything
//! else is one statement text for both (`$n` parameters, `RETURNING`,
//! `ON CONFLICT`, partial indexes, `IS DISTINCT FROM` all exist in both).

use crate::store::Result;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn of(conn: &AnyConnection) -> Self {
        if conn.backend_name().eq_ignore_ascii_case("PostgreSQL") {
            Dialect::Postgres
        } else {
            Dialect::Sqlite
        }
    }

    /// Row locks on the rows of `alias`. SQLite has one writer, so every
    /// write transaction is already serialised; PostgreSQL's concurrent
    /// transactions lock the rows they decide on (always connector → target →
    /// job → event, to stay deadlock-free).
    pub fn for_update_of(self, alias: &str) -> String {
        match self {
            Dialect::Sqlite => String::new(),
            Dialect::Postgres => format!(" FOR NO KEY UPDATE OF {alias}"),
        }
    }

    /// The same lock on one row, whole-table form (`… FROM t WHERE id = $1`).
    pub fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR NO KEY UPDATE",
        }
    }

    /// Like [`for_update`](Self::for_update), but a row another transaction
    /// holds is skipped instead of waited for (claims).
    pub fn for_update_skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR NO KEY UPDATE SKIP LOCKED",
        }
    }

    /// The key of a `target_push` row (SQLite keeps its implicit rowid).
    pub fn push_key(self) -> &'static str {
        match self {
            Dialect::Sqlite => "rowid",
            Dialect::Postgres => "id",
        }
    }

    /// A sub-select yielding the strings of a JSON array bound at `$n`.
    pub fn json_strings(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("SELECT value FROM json_each(${n})"),
            Dialect::Postgres => format!("SELECT json_array_elements_text(${n}::json)"),
        }
    }

    /// A sub-select yielding the integers of a JSON array bound at `$n`.
    pub fn json_ints(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("SELECT value FROM json_each(${n})"),
            Dialect::Postgres => format!("SELECT (json_array_elements_text(${n}::json))::bigint"),
        }
    }
}

/// A flag column: BOOLEAN on PostgreSQL, INTEGER 0/1 on SQLite.
pub fn flag(row: &AnyRow, col: &str) -> Result<bool> {
    match row.try_get::<bool, _>(col) {
        Ok(b) => Ok(b),
        Err(_) => Ok(row.try_get::<i64, _>(col)? != 0),
    }
}

/// `SELECT EXISTS (…)` as a portable query: SQLite answers an integer,
/// PostgreSQL a boolean, so ask both for a count capped at one.
pub async fn exists(conn: &mut AnyConnection, sql: &str, binds: &[&str]) -> Result<bool> {
    let mut q = sqlx::query_scalar::<_, i64>(sql);
    for b in binds {
        q = q.bind(*b);
    }
    Ok(q.fetch_one(conn).await? > 0)
}

/// Locks one row by id (PostgreSQL; SQLite's one writer needs no lock).
/// With `skip_locked` a row another transaction holds is skipped rather than
/// waited for: `false` then means "held elsewhere".
pub async fn lock_row(
    conn: &mut AnyConnection,
    table: &str,
    id: &str,
    skip_locked: bool,
) -> Result<bool> {
    let d = Dialect::of(conn);
    if d == Dialect::Sqlite {
        return Ok(true);
    }
    let lock = if skip_locked {
        d.for_update_skip_locked()
    } else {
        d.for_update()
    };
    let locked: Option<String> =
        sqlx::query_scalar(&format!("SELECT id FROM {table} WHERE id = $1{lock}"))
            .bind(id)
            .fetch_optional(conn)
            .await?;
    Ok(locked.is_some())
}

/// Locks the target row, the first lock of every write that decides
/// something about a target's jobs.
pub async fn lock_target(conn: &mut AnyConnection, target_id: &str) -> Result<()> {
    lock_row(conn, "connector_target", target_id, false).await?;
    Ok(())
}
