//! RFC 9457 problem responses: the one place errors become HTTP responses.

use crate::upstream::{self, Body, CallError};
use http::{HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value, json};

/// A problem+json response.
pub fn problem(
    status: StatusCode,
    title: &str,
    detail: String,
    extra: Map<String, Value>,
) -> Response<Body> {
    let mut body = Map::new();
    body.insert("type".into(), json!("about:blank"));
    body.insert("title".into(), json!(title));
    body.insert("status".into(), json!(status.as_u16()));
    body.insert("detail".into(), json!(detail));
    body.extend(extra);
    let bytes = serde_json::to_vec(&Value::Object(body)).unwrap_or_default();
    let mut resp = Response::new(upstream::full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

/// One failed call, as problem bodies and `$errors` describe it.
pub fn call_error_json(call: &str, upstream: &str, error: &CallError) -> Value {
    let mut v = json!({
        "call": call,
        "upstream": upstream,
        "kind": error.kind(),
        "message": error.to_string(),
    });
    if let CallError::Status(s) = error {
        v["status"] = json!(s.as_u16());
    }
    if let CallError::MissingDependency(input) = error {
        v["input"] = json!(input);
        let field = input
            .rsplit(['.', '['])
            .next()
            .unwrap_or(input)
            .trim_end_matches(']');
        v["field"] = json!(field.trim_matches(['"', '\'']));
    }
    v
}

/// A required call failed: the status comes from the failure table.
pub fn call_failed(call: &str, upstream: &str, error: &CallError) -> Response<Body> {
    let status = error.client_status();
    let title = match status {
        StatusCode::GATEWAY_TIMEOUT => "Upstream call timed out",
        s if s.is_client_error() => "Upstream rejected the request",
        _ => "Upstream call failed",
    };
    let detail = format!("call '{call}' to upstream '{upstream}' failed: {error}");
    let entry = call_error_json(call, upstream, error);
    let mut extra = Map::new();
    for key in ["call", "upstream", "kind"] {
        extra.insert(key.into(), entry[key].clone());
    }
    extra.insert("errors".into(), Value::Array(vec![entry]));
    problem(status, title, detail, extra)
}

/// The draft-ietf-httpapi-ratelimit-headers problem type for 429.
const QUOTA_EXCEEDED: &str = "https://iana.org/assignments/http-problem-types#quota-exceeded";
/// … and for a limiter that cannot decide (its 503).
const REDUCED_CAPACITY: &str =
    "https://iana.org/assignments/http-problem-types#temporary-reduced-capacity";

/// 429: rate limit policies are out of quota; `Retry-After` in whole seconds.
pub fn rate_limited(retry_after: u64, violated: &[String]) -> Response<Body> {
    let mut extra = Map::new();
    extra.insert("type".into(), json!(QUOTA_EXCEEDED));
    extra.insert("violated-policies".into(), json!(violated));
    extra.insert("retry_after".into(), json!(retry_after));
    let detail = format!(
        "rate limit exceeded ({}); retry in {retry_after} s",
        violated.join(", ")
    );
    let mut resp = problem(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many requests",
        detail,
        extra,
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    resp
}

/// 503: a `fail_closed` policy cannot reach its store.
pub fn limiter_unavailable(policies: &[String]) -> Response<Body> {
    let mut extra = Map::new();
    extra.insert("type".into(), json!(REDUCED_CAPACITY));
    extra.insert("violated-policies".into(), json!(policies));
    let detail = format!(
        "the rate limit store of {} is unreachable and the policy fails closed",
        policies.join(", ")
    );
    let mut resp = problem(
        StatusCode::SERVICE_UNAVAILABLE,
        "Rate limiter unavailable",
        detail,
        extra,
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    resp
}

/// A bad client request.
pub fn bad_request(detail: String) -> Response<Body> {
    problem(StatusCode::BAD_REQUEST, "Bad request", detail, Map::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_dependency_names_the_field() {
        let v = call_error_json(
            "orders",
            "orders",
            &CallError::MissingDependency("user.body.id".into()),
        );
        assert_eq!(v["kind"], "missing_dependency");
        assert_eq!(v["field"], "id");
        assert_eq!(v["input"], "user.body.id");
    }
}
