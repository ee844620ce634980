//! Building the response JSON from call results: explicit shapes and `merge`.

use crate::exec::eval::{self, Env};
use crate::plan::Shape;
use serde_json::{Map, Value};

/// Builds the value a shape describes; missing values become `null`.
pub fn build(shape: &Shape, env: &Env<'_>) -> Value {
    match shape {
        Shape::Expr(e) => eval::eval(e, env).map_or(Value::Null, |v| v.into_owned()),
        Shape::Literal(v) => v.clone(),
        Shape::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, s)| (k.clone(), build(s, env)))
                .collect(),
        ),
        Shape::List(items) => Value::Array(items.iter().map(|s| build(s, env)).collect()),
    }
}

/// The result of merging bodies at the root.
pub struct Merged {
    /// The merged object.
    pub body: Value,
    /// Keys that more than one body had (the first listed body kept them).
    pub conflicts: Vec<String>,
}

/// Merges bodies in the order given: on a key collision the earlier body
/// wins, so the output never depends on which upstream answered first. A body
/// that is not an object goes under its call's name. `None` bodies (failed
/// optional calls) contribute nothing.
pub fn merge<'a>(parts: impl IntoIterator<Item = (&'a str, Option<&'a Value>)>) -> Merged {
    let mut out = Map::new();
    let mut conflicts = Vec::new();
    let mut put = |out: &mut Map<String, Value>, k: &str, v: &Value| {
        if out.contains_key(k) {
            conflicts.push(k.to_string());
        } else {
            out.insert(k.to_string(), v.clone());
        }
    };
    for (name, body) in parts {
        match body {
            Some(Value::Object(m)) => m.iter().for_each(|(k, v)| put(&mut out, k, v)),
            Some(other) => put(&mut out, name, other),
            None => {}
        }
    }
    Merged {
        body: Value::Object(out),
        conflicts,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn first_listed_wins_and_arrays_are_wrapped() {
        let a = json!({"items": [1], "v": "a"});
        let b = json!({"items": [2], "v": "b", "only_b": true});
        let m = merge([("a", Some(&a)), ("b", Some(&b))]);
        assert_eq!(m.body, json!({"items": [1], "v": "a", "only_b": true}));
        assert_eq!(m.conflicts, vec!["items", "v"]);

        let list = json!([{"id": 1}, {"id": 2}]);
        let total = json!({"total": 2});
        let m = merge([("a", Some(&list)), ("b", Some(&total)), ("c", None)]);
        assert_eq!(m.body, json!({"a": [{"id": 1}, {"id": 2}], "total": 2}));
        assert!(m.conflicts.is_empty());
    }
}
