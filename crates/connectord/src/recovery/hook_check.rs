//! Pure: the App's webhook configuration against what connectord expects.
//!
//! - The URL: with `--public-url`, exactly `{public-url}/v1/webhooks/connectors/github`
//!   (a proxy's path prefix belongs in the public URL); without it, only
//!   the path can be checked, and it must be `/v1/webhooks/connectors/github`.
//! - SSL verification on (`insecure_ssl` `"0"`): with it off, anyone on
//!   the path can read deliveries.
//! - Content type `json`: connectord accepts `form` too, but `json` is what
//!   it expects (the form variant is the same JSON URL-encoded into a
//!   `payload` field: larger, and one more decoding step).
//! - A secret set: without one GitHub signs nothing and every delivery is refused.

use crate::github::app_hook::HookConfig;
use crate::ingress::handler::WEBHOOK_PATH;
use reqwest::Url;

/// One problem and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub problem: String,
    pub fix: String,
}

const SETTINGS: &str =
    "GitHub: Settings > Developer settings > GitHub Apps > your app > General > Webhook";

fn finding(problem: String, fix: String) -> Finding {
    Finding { problem, fix }
}

/// The URL as it may be shown: no credentials, no query (either may hold a secret).
pub fn shown(url: &Url) -> String {
    let mut u = url.clone();
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    u.to_string()
}

/// The hook URL connectord expects when its public base URL is `public`.
pub fn expected_url(public: &Url) -> String {
    format!("{}{WEBHOOK_PATH}", shown(public).trim_end_matches('/'))
}

pub fn check(config: &HookConfig, public_url: Option<&Url>) -> Vec<Finding> {
    let mut out = Vec::new();
    let want = public_url.map(expected_url);
    let example = want
        .clone()
        .unwrap_or_else(|| format!("https://<this host>{WEBHOOK_PATH}"));
    match config.url.as_deref().map(Url::parse) {
        None => out.push(finding(
            "the App has no webhook URL: GitHub sends nothing".into(),
            format!("set Webhook URL to {example} ({SETTINGS})"),
        )),
        Some(Err(_)) => out.push(finding(
            "the App's webhook URL is not a URL".into(),
            format!("set Webhook URL to {example} ({SETTINGS})"),
        )),
        Some(Ok(url)) => match &want {
            Some(want) if shown(&url).trim_end_matches('/') != want => out.push(finding(
                format!(
                    "the webhook URL is {}, not this service's {want}",
                    shown(&url)
                ),
                format!("set Webhook URL to {want} ({SETTINGS}), or fix --public-url"),
            )),
            None if url.path() != WEBHOOK_PATH => out.push(finding(
                format!(
                    "the webhook URL's path is {}, but connectord serves {WEBHOOK_PATH} ({})",
                    url.path(),
                    shown(&url)
                ),
                format!("set Webhook URL to {example} ({SETTINGS})"),
            )),
            _ => {}
        },
    }
    if config
        .insecure_ssl
        .as_deref()
        .is_some_and(|v| v.trim() != "0")
    {
        out.push(finding(
            "SSL verification is off (insecure_ssl = 1): deliveries can be read and withheld by anyone on the path".into(),
            format!("enable SSL verification ({SETTINGS}) and serve a valid certificate"),
        ));
    }
    match config.content_type.as_deref() {
        Some("json") => {}
        other => out.push(finding(
            format!(
                "the content type is {}: connectord accepts form too, but expects json",
                other.unwrap_or("unset")
            ),
            format!("set Content type to application/json ({SETTINGS})"),
        )),
    }
    if !config.secret_set {
        out.push(finding(
            "the App has no webhook secret: connectord refuses every unsigned delivery (401)".into(),
            format!("set Webhook secret ({SETTINGS}) to connectord's GITHUB_CONNECTOR_APP_WEBHOOK_SECRET"),
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn good() -> HookConfig {
        HookConfig {
            url: Some(format!("https://hooks.example.com{WEBHOOK_PATH}")),
            content_type: Some("json".into()),
            insecure_ssl: Some("0".into()),
            secret_set: true,
        }
    }

    fn public(s: &str) -> Url {
        Url::parse(s).unwrap()
    }

    #[test]
    fn a_good_config_has_no_findings_with_or_without_a_public_url() {
        assert_eq!(check(&good(), None), vec![]);
        assert_eq!(
            check(&good(), Some(&public("https://hooks.example.com/"))),
            vec![]
        );
    }

    #[test]
    fn each_problem_is_its_own_finding() {
        let bad = HookConfig {
            url: Some("https://hooks.example.com/webhook".into()),
            content_type: Some("form".into()),
            insecure_ssl: Some("1".into()),
            secret_set: false,
        };
        let f = check(&bad, None);
        assert_eq!(f.len(), 4, "{f:?}");
        assert!(f[0].problem.contains("path is /webhook"), "{f:?}");
        assert!(f[1].problem.contains("SSL verification is off"));
        assert!(f[2].problem.contains("content type is form"));
        assert!(f[3].problem.contains("no webhook secret"));
    }

    #[test]
    fn the_public_url_fixes_host_and_prefix() {
        let p = public("https://edge.example.com/connectord");
        let f = check(&good(), Some(&p));
        assert_eq!(f.len(), 1);
        assert!(
            f[0].fix
                .contains("https://edge.example.com/connectord/v1/webhooks/connectors/github"),
            "{f:?}"
        );
        let mut prefixed = good();
        prefixed.url = Some(expected_url(&p));
        assert_eq!(check(&prefixed, Some(&p)), vec![]);
    }

    #[test]
    fn a_missing_url_and_credentials_in_it_are_handled() {
        let mut c = good();
        c.url = None;
        assert!(check(&c, None)[0].problem.contains("no webhook URL"));
        c.url = Some(format!(
            "https://user:hunter2@x.example{WEBHOOK_PATH}?token=s3cret"
        ));
        assert_eq!(check(&c, None), vec![]);
        let f = check(&c, Some(&public("https://y.example")));
        assert!(!format!("{f:?}").contains("hunter2") && !format!("{f:?}").contains("s3cret"));
    }
}
