//! The few fields a push (and any event dispatch ignores) is decided on,
//! parsed without building the rest of the payload. A push body is mostly
//! `repository` (about a hundred fields), `commits`, `pusher` and `sender`;
//! building all of it as a `serde_json::Value` and dropping it again was the
//! largest cost on the request path after the store. The syntax of the whole
//! body is still checked (skipped values are parsed, just not kept).
//!
//! The result is a small JSON object holding only the fields below, so
//! [`GithubWebhookEnvelope`](super::envelope::GithubWebhookEnvelope) and
//! dispatch read it exactly as they read a whole payload. A field whose value
//! has a surprising type is kept as it came (or, for the objects, treated as
//! absent), so the handlers' own messages still name what is wrong.

use serde::de::{Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;

#[derive(Default)]
struct Slim {
    git_ref: Option<Value>,
    before: Option<Value>,
    after: Option<Value>,
    deleted: Option<Value>,
    action: Option<Value>,
    repository: Option<Object>,
    installation: Option<Object>,
    head_commit: Option<Object>,
}

/// An object's `id` and `full_name`; anything that is not an object is absent.
#[derive(Default)]
struct Object {
    id: Option<Value>,
    full_name: Option<Value>,
}

/// A value parsed and dropped. Unlike `serde::de::IgnoredAny`, which
/// serde_json skips without a depth limit, this goes through
/// `deserialize_any`, so a body nested deeper than serde_json's limit (128)
/// fails here exactly as it fails to parse whole.
struct Skip;

/// One visitor for the three shapes: what a map yields is decided by `K`,
/// and anything that is not a map yields the default.
struct Fields<T>(std::marker::PhantomData<T>);

trait Collect: Default {
    /// Reads the value of `key` if this shape keeps it; else skips it.
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error>;
}

impl Collect for Skip {
    fn field<'de, A: MapAccess<'de>>(&mut self, _: &str, map: &mut A) -> Result<(), A::Error> {
        map.next_value::<Skip>().map(drop)
    }
}

impl Default for Skip {
    fn default() -> Self {
        Skip
    }
}

impl Collect for Object {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "id" => self.id = Some(map.next_value()?),
            "full_name" => self.full_name = Some(map.next_value()?),
            _ => map.next_value::<Skip>().map(drop)?,
        }
        Ok(())
    }
}

impl Collect for Slim {
    fn field<'de, A: MapAccess<'de>>(&mut self, key: &str, map: &mut A) -> Result<(), A::Error> {
        match key {
            "ref" => self.git_ref = Some(map.next_value()?),
            "before" => self.before = Some(map.next_value()?),
            "after" => self.after = Some(map.next_value()?),
            "deleted" => self.deleted = Some(map.next_value()?),
            "action" => self.action = Some(map.next_value()?),
            "repository" => self.repository = map.next_value()?,
            "installation" => self.installation = map.next_value()?,
            "head_commit" => self.head_commit = map.next_value()?,
            _ => map.next_value::<Skip>().map(drop)?,
        }
        Ok(())
    }
}

macro_rules! deserialize_with_fields {
    ($($t:ty),*) => {$(
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(Fields::<$t>(std::marker::PhantomData))
            }
        }
    )*};
}
deserialize_with_fields!(Skip, Object, Slim);

macro_rules! scalars_yield_default {
    ($($name:ident: $t:ty),*) => {
        $(fn $name<E: serde::de::Error>(self, _: $t) -> Result<T, E> {
            Ok(T::default())
        })*
    };
}

impl<'de, T: Collect> Visitor<'de> for Fields<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<T, A::Error> {
        let mut out = T::default();
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            out.field(&key, &mut map)?;
        }
        Ok(out)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<T, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(T::default())
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<T, E> {
        Ok(T::default())
    }

    scalars_yield_default!(visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);
}

/// Parses `json` (known to start with `{`) into an object holding only the
/// routing fields.
pub fn parse(json: &[u8]) -> serde_json::Result<Value> {
    let slim: Slim = serde_json::from_slice(json)?;
    let mut out = Map::new();
    let mut put = |key: &str, v: Option<Value>| {
        if let Some(v) = v {
            out.insert(key.to_owned(), v);
        }
    };
    put("ref", slim.git_ref);
    put("before", slim.before);
    put("after", slim.after);
    put("deleted", slim.deleted);
    put("action", slim.action);
    for (key, object) in [
        ("repository", slim.repository),
        ("installation", slim.installation),
        ("head_commit", slim.head_commit),
    ] {
        let Some(object) = object else { continue };
        let mut fields = Map::new();
        if let Some(id) = object.id {
            fields.insert("id".into(), id);
        }
        if let Some(name) = object.full_name {
            fields.insert("full_name".into(), name);
        }
        out.insert(key.to_owned(), Value::Object(fields));
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keeps_the_routing_fields_and_drops_the_rest() {
        let body = json!({"ref": "refs/heads/main", "before": "a", "after": "b", "deleted": false,
            "repository": {"id": 9, "full_name": "o/r", "owner": {"id": 1}, "topics": ["x"]},
            "installation": {"id": 7, "node_id": "n"}, "head_commit": {"id": "c", "tree_id": "t"},
            "commits": [{"id": "c"}], "sender": {"login": "me"}});
        let slim = parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            slim,
            json!({"ref": "refs/heads/main", "before": "a", "after": "b", "deleted": false,
                "repository": {"id": 9, "full_name": "o/r"}, "installation": {"id": 7},
                "head_commit": {"id": "c"}})
        );
    }

    #[test]
    fn surprising_types_are_kept_or_absent_never_an_error() {
        let slim =
            parse(br#"{"after": 5, "repository": "x", "installation": [1], "head_commit": null}"#)
                .unwrap();
        assert_eq!(
            slim,
            json!({"after": 5, "repository": {}, "installation": {}})
        );
    }

    #[test]
    fn the_skipped_parts_must_still_be_valid_json() {
        assert!(parse(br#"{"ref": "x", "commits": [1, }"#).is_err());
        assert!(parse(br#"{"ref": "x"} trailing"#).is_err());
        let deep = format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200));
        assert!(
            parse(deep.as_bytes()).is_err(),
            "deeper than serde_json's limit"
        );
        let fine = format!("{}1{}", r#"{"a":"#.repeat(100), "}".repeat(100));
        assert!(parse(fine.as_bytes()).is_ok());
    }
}
