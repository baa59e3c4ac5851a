//! The `--database-url` as the user gave it: which backend it names, and how
//! it is shown in messages (never with its password).

/// The URL schemes this build can open.
pub fn check_database_url(database_url: &str) -> anyhow::Result<()> {
    if database_url.starts_with("sqlite:")
        || crate::store::sql::postgres::is_postgres_url(database_url)
    {
        Ok(())
    } else {
        anyhow::bail!(
            "unsupported --database-url `{}`: use sqlite://PATH or postgres://USER@HOST/DB",
            redact_url(database_url)
        )
    }
}

/// The URL without its password (in the user info or as a `password` /
/// `sslpassword` query parameter), for messages.
pub fn redact_url(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &base[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &base[..scheme + 3], &base[at..]),
                None => base.to_owned(),
            }
        }
        _ => base.to_owned(),
    };
    if let Some(q) = query {
        let params: Vec<String> = q
            .split('&')
            .map(|kv| match kv.split_once('=') {
                Some((k, _))
                    if k.eq_ignore_ascii_case("password")
                        || k.eq_ignore_ascii_case("sslpassword") =>
                {
                    format!("{k}=***")
                }
                _ => kv.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_wherever_the_url_carries_them() {
        assert_eq!(
            redact_url("postgres://app:s3cret@db:5432/connectord"),
            "postgres://app:***@db:5432/connectord"
        );
        assert_eq!(
            redact_url("postgres://app@db/c?sslmode=require&password=s3cret&PASSWORD=x"),
            "postgres://app@db/c?sslmode=require&password=***&PASSWORD=***"
        );
        assert_eq!(
            redact_url("postgres://u:p@h/d?sslpassword=k"),
            "postgres://u:***@h/d?sslpassword=***"
        );
        assert_eq!(
            redact_url("sqlite://data/connectord.db"),
            "sqlite://data/connectord.db"
        );
    }

    #[test]
    fn only_sqlite_and_postgres_urls_are_accepted_and_errors_hide_the_password() {
        assert!(check_database_url("sqlite://x.db").is_ok());
        let e = check_database_url("mysql://u:hunter2@h/d")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("hunter2"), "{e}");
    }
}
