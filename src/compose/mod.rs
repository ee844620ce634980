//! Building the response JSON from call results: explicit shapes and `merge`.

use crate::exec::eval::{self, Env};
use crate::plan::Shape;
use crate::plan::expr::Expr;
use crate::upstream::JsonBody;
use serde_json::Value;
use std::collections::HashSet;

/// Writes the JSON a shape describes into `out`; missing values become `null`.
///
/// Written straight from the call results, never built as a tree first: a
/// whole body (`customer.body`) is copied as the text it arrived in.
pub fn write(shape: &Shape, env: &Env<'_>, out: &mut Vec<u8>) {
    match shape {
        Shape::Expr(e) => match whole_body(e, env) {
            Some(body) => body.write(out),
            None => match eval::eval(e, env) {
                Some(v) => write_value(&v, out),
                None => out.extend_from_slice(b"null"),
            },
        },
        Shape::Literal(v) => write_value(v, out),
        Shape::Map(entries) => {
            out.push(b'{');
            for (i, (k, s)) in entries.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_key(k, out);
                write(s, env, out);
            }
            out.push(b'}');
        }
        Shape::List(items) => {
            out.push(b'[');
            for (i, s) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write(s, env, out);
            }
            out.push(b']');
        }
    }
}

/// `call.body` itself: copied, not evaluated.
fn whole_body<'a>(e: &Expr, env: &Env<'a>) -> Option<&'a JsonBody> {
    let c = e.whole_body()?;
    env.results.get(c).copied().flatten().map(|r| &r.body)
}

fn write_value(v: &Value, out: &mut Vec<u8>) {
    // Writing a `Value` into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

fn write_key(k: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(&mut *out, k);
    out.push(b':');
}

/// Merges bodies in the order given and writes the merged object: on a key
/// collision the earlier body wins, so the output never depends on which
/// upstream answered first. A body that is not an object goes under its
/// call's name. `None` bodies (failed optional calls) contribute nothing.
/// Returns the keys that more than one body had.
pub fn write_merged<'a>(
    parts: impl IntoIterator<Item = (&'a str, Option<&'a Value>)>,
    out: &mut Vec<u8>,
) -> Vec<String> {
    let mut seen: HashSet<&str> = HashSet::new();
    let mut conflicts = Vec::new();
    out.push(b'{');
    let mut put = |k: &'a str, v: &Value, out: &mut Vec<u8>| {
        if !seen.insert(k) {
            conflicts.push(k.to_string());
            return;
        }
        if seen.len() > 1 {
            out.push(b',');
        }
        write_key(k, out);
        write_value(v, out);
    };
    for (name, body) in parts {
        match body {
            Some(Value::Object(m)) => m.iter().for_each(|(k, v)| put(k, v, out)),
            Some(other) => put(name, other, out),
            None => {}
        }
    }
    out.push(b'}');
    conflicts
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merged<'a>(
        parts: impl IntoIterator<Item = (&'a str, Option<&'a Value>)>,
    ) -> (Value, Vec<String>) {
        let mut out = Vec::new();
        let conflicts = write_merged(parts, &mut out);
        (serde_json::from_slice(&out).unwrap(), conflicts)
    }

    #[test]
    fn first_listed_wins_and_arrays_are_wrapped() {
        let a = json!({"items": [1], "v": "a"});
        let b = json!({"items": [2], "v": "b", "only_b": true});
        let (body, conflicts) = merged([("a", Some(&a)), ("b", Some(&b))]);
        assert_eq!(body, json!({"items": [1], "v": "a", "only_b": true}));
        assert_eq!(conflicts, vec!["items", "v"]);

        let list = json!([{"id": 1}, {"id": 2}]);
        let total = json!({"total": 2});
        let (body, conflicts) = merged([("a", Some(&list)), ("b", Some(&total)), ("c", None)]);
        assert_eq!(body, json!({"a": [{"id": 1}, {"id": 2}], "total": 2}));
        assert!(conflicts.is_empty());
        assert_eq!(merged([("a", None)]).0, json!({}));
    }
}
