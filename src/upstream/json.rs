//! An upstream's JSON body, kept as the text it arrived in and parsed into a
//! tree only when an expression looks inside it.
//!
//! Why: most routes put whole bodies into the response (`customer:
//! customer.body`). Checking the text and copying it is several times cheaper
//! than building a tree and writing it back out, and it keeps every number
//! exactly as the upstream wrote it. The tree, once built, is shared by every
//! clone (a cached body is parsed at most once).

use crate::plan::reads::Reads;
use bytes::Bytes;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::fmt;
use std::sync::{Arc, OnceLock};

/// A JSON value: checked text, a tree, or both.
#[derive(Clone, Debug)]
pub struct JsonBody(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    /// Valid JSON text without surrounding whitespace, when the body came as text.
    text: Option<Bytes>,
    /// The tree: built from `text` on first use (only as far as `reads`
    /// says), or given.
    tree: OnceLock<Value>,
    /// What is read of the tree; `None`: all of it.
    reads: Option<Arc<Reads>>,
}

impl JsonBody {
    /// Checks that `bytes` is one JSON value (UTF-8, nothing after it).
    pub fn parse(bytes: Bytes) -> Result<Self, String> {
        let text = std::str::from_utf8(&bytes).map_err(|e| format!("not UTF-8: {e}"))?;
        let tree = OnceLock::new();
        // Skipping a `\u` escape does not check surrogate pairs the way
        // building a string does; such bodies are parsed in full now, so a
        // body that passes here always parses later.
        if memchr::memmem::find(text.as_bytes(), b"\\u").is_some() {
            let _ = tree.set(serde_json::from_str::<Value>(text).map_err(|e| e.to_string())?);
        } else {
            serde_json::from_str::<IgnoredAny>(text).map_err(|e| e.to_string())?;
        }
        let start = text.len() - text.trim_start().len();
        let end = text.trim_end().len();
        Ok(JsonBody(Arc::new(Inner {
            text: Some(bytes.slice(start..end)),
            tree,
            reads: None,
        })))
    }

    /// A body given as a tree.
    pub fn from_value(value: Value) -> Self {
        JsonBody(Arc::new(Inner {
            text: None,
            tree: OnceLock::from(value),
            reads: None,
        }))
    }

    /// `null`.
    pub fn null() -> Self {
        JsonBody::from_value(Value::Null)
    }

    /// A list of bodies, in order, as one body (written without building a tree).
    pub fn list(items: &[JsonBody]) -> Self {
        let mut out = Vec::with_capacity(2 + items.iter().map(|i| i.len_hint() + 1).sum::<usize>());
        out.push(b'[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            item.write(&mut out);
        }
        out.push(b']');
        JsonBody(Arc::new(Inner {
            text: Some(out.into()),
            tree: OnceLock::new(),
            reads: None,
        }))
    }

    /// The same body, whose tree will hold only what `reads` reads (the
    /// rest of it as `null`s and absent keys, which no read can tell apart).
    /// Bodies given as trees, or already parsed, stay as they are, as do
    /// bodies read whole or not at all (no tree is ever built for those).
    pub fn reading(&self, reads: &Arc<Reads>) -> JsonBody {
        let partial = matches!(**reads, Reads::Parts { .. });
        if !partial || self.0.text.is_none() || self.0.tree.get().is_some() {
            return self.clone();
        }
        JsonBody(Arc::new(Inner {
            text: self.0.text.clone(),
            tree: OnceLock::new(),
            reads: Some(reads.clone()),
        }))
    }

    /// The tree (as far as it is read), built on first use.
    pub fn value(&self) -> &Value {
        self.0.tree.get_or_init(|| {
            let Some(text) = &self.0.text else {
                return Value::Null;
            };
            // `parse` checked the text, so these succeed.
            let tree = match &self.0.reads {
                None => serde_json::from_slice(text),
                Some(reads) => {
                    Pruned(reads).deserialize(&mut serde_json::Deserializer::from_slice(text))
                }
            };
            tree.unwrap_or(Value::Null)
        })
    }

    /// Appends the body as JSON text (all of it, whatever is read).
    pub fn write(&self, out: &mut Vec<u8>) {
        match &self.0.text {
            Some(text) => out.extend_from_slice(text),
            None => {
                // Writing a `Value` into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, self.value());
            }
        }
    }

    /// The body as JSON text.
    pub fn to_bytes(&self) -> Bytes {
        match &self.0.text {
            Some(text) => text.clone(),
            None => {
                let mut out = Vec::new();
                self.write(&mut out);
                out.into()
            }
        }
    }

    fn len_hint(&self) -> usize {
        self.0.text.as_ref().map_or(16, Bytes::len)
    }
}

/// Builds the part of a tree that `Reads` reads: objects keep the fields
/// read, lists keep every element (their length and indices are read), and a
/// value nothing reads becomes `null`.
struct Pruned<'r>(&'r Reads);

impl<'de> DeserializeSeed<'de> for Pruned<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        match self.0 {
            Reads::Whole => serde::Deserialize::deserialize(d),
            Reads::Nothing => d.deserialize_ignored_any(IgnoredAny).map(|_| Value::Null),
            Reads::Parts { .. } => d.deserialize_any(self),
        }
    }
}

impl<'de> Visitor<'de> for Pruned<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(field) = map.next_key_seed(FieldOf(self.0))? {
            match field {
                Some((name, reads)) => {
                    let v = map.next_value_seed(Pruned(reads))?;
                    out.insert(name.to_string(), v);
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Value::Object(out))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let items = match self.0 {
            Reads::Parts { items, .. } => &**items,
            _ => &Reads::Nothing,
        };
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Pruned(items))? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }

    // Scalars where fields or elements are read: no step finds anything in them.
    fn visit_bool<E>(self, _: bool) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_str<E>(self, _: &str) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
}

/// Looks an object key up among the fields read, without allocating it.
struct FieldOf<'r>(&'r Reads);

impl<'de, 'r> DeserializeSeed<'de> for FieldOf<'r> {
    type Value = Option<(&'r str, &'r Reads)>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'r> Visitor<'_> for FieldOf<'r> {
    type Value = Option<(&'r str, &'r Reads)>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E>(self, key: &str) -> Result<Self::Value, E> {
        Ok(match self.0 {
            Reads::Parts { fields, .. } => fields
                .iter()
                .find(|(k, _)| k == key)
                .map(|(k, r)| (k.as_str(), r)),
            _ => None,
        })
    }
}

impl Default for JsonBody {
    fn default() -> Self {
        JsonBody::null()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn text(b: &JsonBody) -> String {
        String::from_utf8(b.to_bytes().to_vec()).unwrap()
    }

    #[test]
    fn text_is_kept_exactly_and_parsed_on_demand() {
        let b = JsonBody::parse(Bytes::from_static(
            b" {\"n\": 1.50, \"big\": 123456789012345678901234567890}\n",
        ))
        .unwrap();
        assert_eq!(
            text(&b),
            "{\"n\": 1.50, \"big\": 123456789012345678901234567890}"
        );
        assert_eq!(b.value()["n"].to_string(), "1.50");
    }

    #[test]
    fn invalid_bodies_are_refused() {
        for bad in [
            &b"{"[..],
            b"[1,]",
            b"{} {}",
            b"\"\xff\"",
            b"\"\\ud800\"",
            b"nul",
            b"",
        ] {
            assert!(
                JsonBody::parse(Bytes::copy_from_slice(bad)).is_err(),
                "{bad:?}"
            );
        }
        let ok = JsonBody::parse(Bytes::from_static(b"\"\\ud83d\\ude00\"")).unwrap();
        assert_eq!(ok.value(), &json!("😀"));
    }

    #[test]
    fn reading_keeps_what_is_read_and_every_list_element() {
        let sent =
            br#"{"items": [{"id": 1, "x": [9]}, "s", {"id": 2.50}], "other": {"id": 3}, "n": 1}"#;
        let body = JsonBody::parse(Bytes::from_static(sent)).unwrap();
        // What `a.body.items[*].id` reads.
        let parts = |fields: Vec<(&str, Reads)>, items: Reads| Reads::Parts {
            fields: fields
                .into_iter()
                .map(|(k, r)| (k.to_string(), r))
                .collect(),
            items: Box::new(items),
        };
        let id = parts(vec![("id", Reads::Whole)], Reads::Nothing);
        let reads = parts(vec![("items", parts(vec![], id))], Reads::Nothing);
        let read = body.reading(&Arc::new(reads));
        assert_eq!(
            read.value().to_string(),
            r#"{"items":[{"id":1},null,{"id":2.50}]}"#
        );
        // The text stays whole, and the original body is not pruned.
        assert_eq!(text(&read), String::from_utf8(sent.to_vec()).unwrap());
        assert_eq!(body.value()["n"], json!(1));
        // Read whole, or not at all: the same body.
        for r in [Reads::Whole, Reads::Nothing] {
            assert!(Arc::ptr_eq(&body.reading(&Arc::new(r)).0, &body.0));
        }
    }

    #[test]
    fn lists_join_texts_and_trees() {
        let a = JsonBody::parse(Bytes::from_static(b"{\"a\":1}")).unwrap();
        let l = JsonBody::list(&[a, JsonBody::null(), JsonBody::from_value(json!([2]))]);
        assert_eq!(text(&l), "[{\"a\":1},null,[2]]");
        assert_eq!(l.value(), &json!([{"a": 1}, null, [2]]));
        assert_eq!(text(&JsonBody::list(&[])), "[]");
    }
}
