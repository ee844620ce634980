//! Evaluating expressions against one request and the calls finished so far.

use crate::plan::expr::{Expr, Filter, Root, Step};
use crate::upstream::JsonResponse;
use http::HeaderMap;
use serde_json::Value;
use std::borrow::Cow;
use std::sync::OnceLock;

/// The client request, as expressions see it.
pub struct RequestView<'a> {
    /// Decoded path parameters, in the route's parameter order.
    pub params: &'a [String],
    /// The raw query string.
    pub query: Option<&'a str>,
    /// Parsed on first use: most routes never read the query.
    pub query_pairs: OnceLock<Vec<(String, String)>>,
    /// The client's headers.
    pub headers: &'a HeaderMap,
}

impl<'a> RequestView<'a> {
    /// A view of one request.
    pub fn new(params: &'a [String], query: Option<&'a str>, headers: &'a HeaderMap) -> Self {
        RequestView {
            params,
            query,
            query_pairs: OnceLock::new(),
            headers,
        }
    }

    fn query_value(&self, name: &str) -> Option<&str> {
        let pairs = self.query_pairs.get_or_init(|| {
            form_urlencoded::parse(self.query.unwrap_or("").as_bytes())
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        });
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Everything an expression can read.
pub struct Env<'a> {
    /// The client request.
    pub request: &'a RequestView<'a>,
    /// Results of finished calls, by call id (`None`: not available).
    pub results: &'a [Option<&'a JsonResponse>],
    /// The current `for_each` element.
    pub item: Option<&'a Value>,
    /// The `$errors` value.
    pub errors: Option<&'a Value>,
}

/// Evaluates an expression; `None` means missing (absent or unavailable).
pub fn eval<'a>(e: &Expr, env: &Env<'a>) -> Option<Cow<'a, Value>> {
    eval_with(e, &e.filters, env)
}

/// Evaluates with only `filters` applied (URL rendering handles a final `join` itself).
pub fn eval_with<'a>(e: &Expr, filters: &[Filter], env: &Env<'a>) -> Option<Cow<'a, Value>> {
    let root: Cow<'a, Value> = match &e.root {
        Root::Path(i) => Cow::Owned(Value::String(env.request.params.get(*i)?.clone())),
        Root::Query(name) => Cow::Owned(Value::String(env.request.query_value(name)?.to_string())),
        Root::Header(name) => {
            let v = env.request.headers.get(name)?.to_str().ok()?;
            Cow::Owned(Value::String(v.to_string()))
        }
        Root::CallBody(c) => Cow::Borrowed((*env.results.get(*c)?)?.body.value()),
        Root::CallStatus(c) => Cow::Owned(Value::from((*env.results.get(*c)?)?.status.as_u16())),
        Root::CallHeader(c, name) => {
            let v = (*env.results.get(*c)?)?.headers.get(name)?.to_str().ok()?;
            Cow::Owned(Value::String(v.to_string()))
        }
        Root::Item => Cow::Borrowed(env.item?),
        Root::Errors => Cow::Borrowed(env.errors?),
        Root::Literal(s) => Cow::Owned(Value::String(s.clone())),
    };
    let mut value = walk(root, &e.steps)?;
    for f in filters {
        value = apply(f, value)?;
    }
    Some(value)
}

/// Follows steps; at `[*]` the rest applies to each element.
fn walk<'a>(value: Cow<'a, Value>, steps: &[Step]) -> Option<Cow<'a, Value>> {
    let Some(all) = steps.iter().position(|s| *s == Step::All) else {
        return steps.iter().try_fold(value, |v, s| step(v, s));
    };
    let list = steps[..all].iter().try_fold(value, |v, s| step(v, s))?;
    let mut out = Vec::new();
    let elems: Vec<Cow<'_, Value>> = match list {
        Cow::Borrowed(Value::Array(a)) => a.iter().map(Cow::Borrowed).collect(),
        Cow::Owned(Value::Array(a)) => a.into_iter().map(Cow::Owned).collect(),
        _ => return None,
    };
    let rest = &steps[all + 1..];
    let nested = rest.contains(&Step::All);
    for elem in elems {
        match walk(elem, rest) {
            Some(v) if v.is_null() => {}
            // A projection inside a projection flattens into one list.
            Some(v) if nested => match v.into_owned() {
                Value::Array(inner) => out.extend(inner),
                other => out.push(other),
            },
            Some(v) => out.push(v.into_owned()),
            None => {}
        }
    }
    Some(Cow::Owned(Value::Array(out)))
}

fn step<'a>(value: Cow<'a, Value>, s: &Step) -> Option<Cow<'a, Value>> {
    match value {
        Cow::Borrowed(v) => match s {
            Step::Field(f) => v.get(f.as_str()).map(Cow::Borrowed),
            Step::Index(i) => index(v.as_array()?, *i).map(Cow::Borrowed),
            Step::All => None,
        },
        Cow::Owned(v) => match (s, v) {
            (Step::Field(f), Value::Object(mut m)) => m.remove(f.as_str()).map(Cow::Owned),
            (Step::Index(i), Value::Array(a)) => index(&a, *i).cloned().map(Cow::Owned),
            _ => None,
        },
    }
}

fn index(a: &[Value], i: i64) -> Option<&Value> {
    let at = if i < 0 {
        a.len().checked_sub(i.unsigned_abs() as usize)?
    } else {
        i as usize
    };
    a.get(at)
}

fn apply<'a>(f: &Filter, value: Cow<'a, Value>) -> Option<Cow<'a, Value>> {
    match f {
        Filter::Count => Some(Cow::Owned(Value::from(
            value.as_array().map_or(1, Vec::len),
        ))),
        Filter::First => match value {
            Cow::Borrowed(Value::Array(a)) => a.first().map(Cow::Borrowed),
            Cow::Owned(Value::Array(a)) => a.into_iter().next().map(Cow::Owned),
            other => Some(other),
        },
        Filter::Distinct => match value.as_array() {
            Some(a) => Some(Cow::Owned(Value::Array(distinct(a)))),
            None => Some(value),
        },
        Filter::Join(sep) => {
            let parts: Option<Vec<String>> = match value.as_array() {
                Some(a) => a.iter().filter(|v| !v.is_null()).map(scalar_text).collect(),
                None => scalar_text(&value).map(|s| vec![s]),
            };
            Some(Cow::Owned(Value::String(parts?.join(sep))))
        }
    }
}

/// Unique values in first-seen order.
pub fn distinct(values: &[Value]) -> Vec<Value> {
    let mut seen = std::collections::HashSet::new();
    values
        .iter()
        .filter(|v| seen.insert(v.to_string()))
        .cloned()
        .collect()
}

/// The text of a string, number or boolean; `None` for null, lists and objects.
pub fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::expr::{self, CallId, Scope};
    use http::StatusCode;
    use serde_json::json;

    struct S;
    impl Scope for S {
        fn path_param(&self, n: &str) -> Option<usize> {
            (n == "id").then_some(0)
        }
        fn call(&self, n: &str) -> Option<CallId> {
            (n == "orders").then_some(0)
        }
        fn has_item(&self) -> bool {
            true
        }
        fn has_errors(&self) -> bool {
            false
        }
    }

    fn run(text: &str, body: Value) -> Option<Value> {
        let e = expr::parse(text, &S).unwrap();
        let headers = HeaderMap::new();
        let params = vec!["7".to_string()];
        let req = RequestView::new(&params, Some("a=1&b=x%20y"), &headers);
        let resp = JsonResponse {
            status: StatusCode::OK,
            headers: HeaderMap::new(),
            body: crate::upstream::JsonBody::from_value(body),
        };
        let results = [Some(&resp)];
        let env = Env {
            request: &req,
            results: &results,
            item: None,
            errors: None,
        };
        eval(&e, &env).map(Cow::into_owned)
    }

    #[test]
    fn projections_collect_and_skip_missing() {
        let orders = json!([{"p": 1}, {"p": 2}, {"q": 3}, {"p": null}, {"p": 1}]);
        assert_eq!(
            run("orders.body[*].p", orders.clone()),
            Some(json!([1, 2, 1]))
        );
        assert_eq!(
            run("orders.body[*].p|distinct|join", orders.clone()),
            Some(json!("1,2"))
        );
        assert_eq!(
            run("orders.body[*].p|count", orders.clone()),
            Some(json!(3))
        );
        assert_eq!(run("orders.body[-1].p", orders.clone()), Some(json!(1)));
        assert_eq!(run("orders.body[9]", orders), None);
        let nested = json!([{"items": [{"id": "a"}, {"id": "b"}]}, {"items": [{"id": "c"}]}]);
        assert_eq!(
            run("orders.body[*].items[*].id", nested),
            Some(json!(["a", "b", "c"]))
        );
    }

    #[test]
    fn request_roots() {
        assert_eq!(run("path.id", json!(null)), Some(json!("7")));
        assert_eq!(run("query.b", json!(null)), Some(json!("x y")));
        assert_eq!(run("query.zz", json!(null)), None);
        assert_eq!(run("orders.status", json!(null)), Some(json!(200)));
        assert_eq!(run("orders.body.id", json!({"name": "x"})), None);
        assert_eq!(
            run("orders.body.id", json!({"id": null})),
            Some(json!(null))
        );
    }
}
