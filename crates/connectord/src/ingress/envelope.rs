//! The normalized delivery envelope (`GithubWebhookEnvelope` in the spec) and
//! the body decoding that precedes it. Runs only after the signature matched.

use crate::domain::{DeliveryId, EventName, Sha};
use serde::Serialize;
use serde_json::Value;

/// A verified delivery, normalized. Field names follow the spec's TypeScript.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GithubWebhookEnvelope {
    pub delivery_id: DeliveryId,
    pub event: EventName,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installation_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_id: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repository_full_name: Option<String>,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head_sha: Option<String>,
    pub payload: Value,
}

/// How the body was encoded, from `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyEncoding {
    Json,
    Form,
}

impl BodyEncoding {
    /// GitHub sends one of two; anything else (or nothing) is treated as JSON,
    /// which then fails to parse with a clear message if it is not.
    pub fn from_content_type(ct: Option<&str>) -> Self {
        let essence = ct
            .and_then(|c| c.split(';').next())
            .map(|c| c.trim().to_ascii_lowercase());
        match essence.as_deref() {
            Some("application/x-www-form-urlencoded") => BodyEncoding::Form,
            _ => BodyEncoding::Json,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BodyEncoding::Json => "application/json",
            BodyEncoding::Form => "application/x-www-form-urlencoded",
        }
    }
}

/// Which parts of the payload dispatch will read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fields {
    /// All of it (installation and repository lifecycle events).
    Whole,
    /// Only the routing fields (`super::slim`): pushes and every ignored event.
    Routing,
}

/// Decodes the (already verified) raw body into the JSON payload.
pub fn decode_payload(
    body: &[u8],
    encoding: BodyEncoding,
    fields: Fields,
) -> Result<Value, String> {
    let json_bytes: std::borrow::Cow<[u8]> = match encoding {
        BodyEncoding::Json => body.into(),
        BodyEncoding::Form => {
            let payload = form_urlencoded::parse(body)
                .find(|(k, _)| k == "payload")
                .map(|(_, v)| v.into_owned())
                .ok_or("form-encoded body has no `payload` field")?;
            payload.into_bytes().into()
        }
    };
    let first = json_bytes.iter().find(|b| !b.is_ascii_whitespace());
    match first {
        None => return Err("empty body: expected a JSON payload".into()),
        // Checked before parsing, as the routing parse would read an array's
        // elements as an object's fields.
        Some(b'{') => {}
        Some(_) if serde_json::from_slice::<serde::de::IgnoredAny>(&json_bytes).is_ok() => {
            return Err("payload must be a JSON object".into())
        }
        Some(_) => {}
    }
    let parsed = match fields {
        Fields::Whole => serde_json::from_slice(&json_bytes),
        Fields::Routing => super::slim::parse(&json_bytes),
    };
    parsed.map_err(|e| format!("body is not valid JSON: {e}"))
}

impl GithubWebhookEnvelope {
    pub fn new(delivery_id: DeliveryId, event: EventName, payload: Value) -> Self {
        let str_at = |ptr: &str| {
            payload
                .pointer(ptr)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let int_at = |ptr: &str| payload.pointer(ptr).and_then(Value::as_i64);
        let git_ref = str_at("/ref");
        let head_sha = if event.as_str() == "push" {
            push_head_sha(&payload)
        } else {
            None
        };
        Self {
            action: str_at("/action"),
            installation_id: int_at("/installation/id"),
            repository_id: int_at("/repository/id"),
            repository_full_name: str_at("/repository/full_name"),
            git_ref,
            head_sha,
            delivery_id,
            event,
            payload,
        }
    }
}

/// The commit a push leaves its ref at. For branches that is `after`; for an
/// annotated tag `after` is the tag object, so `head_commit.id` names the
/// commit. A deletion (`after` all zeros) has no head.
fn push_head_sha(payload: &Value) -> Option<String> {
    let after = payload
        .get("after")
        .and_then(Value::as_str)
        .and_then(|s| Sha::parse(s).ok())?;
    if after.is_zero() {
        return None;
    }
    let is_tag = payload
        .get("ref")
        .and_then(Value::as_str)
        .is_some_and(|r| r.starts_with("refs/tags/"));
    let head_commit = payload
        .pointer("/head_commit/id")
        .and_then(Value::as_str)
        .and_then(|s| Sha::parse(s).ok());
    match (is_tag, head_commit) {
        (true, Some(commit)) => Some(commit.into_string()),
        _ => Some(after.into_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(event: &str, payload: Value) -> GithubWebhookEnvelope {
        GithubWebhookEnvelope::new(
            DeliveryId::parse("d-1").unwrap(),
            EventName::parse(event).unwrap(),
            payload,
        )
    }

    #[test]
    fn push_envelope_takes_after_as_head() {
        let e = env(
            "push",
            json!({"ref":"refs/heads/main","after":"a".repeat(40),"installation":{"id":7},
                   "repository":{"id":9,"full_name":"o/r"},"head_commit":{"id":"b".repeat(40)}}),
        );
        assert_eq!(e.head_sha.as_deref(), Some("a".repeat(40).as_str()));
        assert_eq!((e.installation_id, e.repository_id), (Some(7), Some(9)));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["ref"], "refs/heads/main");
        assert_eq!(v["deliveryId"], "d-1");
        assert_eq!(v["repositoryFullName"], "o/r");
    }

    #[test]
    fn annotated_tag_head_is_the_commit() {
        let e = env(
            "push",
            json!({"ref":"refs/tags/v1","after":"a".repeat(40),"head_commit":{"id":"b".repeat(40)}}),
        );
        assert_eq!(e.head_sha.as_deref(), Some("b".repeat(40).as_str()));
    }

    #[test]
    fn deletion_has_no_head() {
        let e = env(
            "push",
            json!({"ref":"refs/heads/x","after":crate::domain::ZERO_SHA,"deleted":true}),
        );
        assert_eq!(e.head_sha, None);
    }

    #[test]
    fn form_bodies_carry_json_in_payload_field() {
        let body = format!("payload={}", "%7B%22zen%22%3A%22hi%22%7D");
        let v = decode_payload(body.as_bytes(), BodyEncoding::Form, Fields::Whole).unwrap();
        assert_eq!(v["zen"], "hi");
        assert!(
            decode_payload(b"other=1", BodyEncoding::Form, Fields::Whole)
                .unwrap_err()
                .contains("payload")
        );
    }

    #[test]
    fn bad_json_is_reported() {
        for fields in [Fields::Whole, Fields::Routing] {
            let decode = |body: &[u8]| decode_payload(body, BodyEncoding::Json, fields);
            assert!(decode(b"").unwrap_err().contains("empty"));
            assert!(decode(b"  \n").unwrap_err().contains("empty"));
            assert!(decode(b"{nope").unwrap_err().contains("not valid JSON"));
            assert!(decode(b"[1]").unwrap_err().contains("object"));
            assert!(decode(b" 5").unwrap_err().contains("object"));
            assert!(decode(b"[1").unwrap_err().contains("not valid JSON"));
        }
    }

    #[test]
    fn content_types() {
        assert_eq!(
            BodyEncoding::from_content_type(Some(
                "application/x-www-form-urlencoded; charset=utf-8"
            )),
            BodyEncoding::Form
        );
        assert_eq!(
            BodyEncoding::from_content_type(Some("application/json")),
            BodyEncoding::Json
        );
        assert_eq!(BodyEncoding::from_content_type(None), BodyEncoding::Json);
    }
}
