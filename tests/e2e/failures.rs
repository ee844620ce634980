//! Failure handling end to end: how each kind of upstream failure reaches the
//! client (README "Failures and status codes", "Missing inputs"; CASES R03, R05).

use crate::common::*;
use http::Method;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

const PROBLEM: &str = "application/problem+json";

/// A gateway with one route `/x/{id}` making one required call `one` to upstream `a`.
async fn one_call(url: &str, upstream_extra: &str) -> TestGateway {
    TestGateway::start(&format!(
        r#"
upstreams:
  a: {{ url: "{url}"{upstream_extra} }}
routes:
  - get: /x/{{id}}
    calls:
      one: {{ get: "a:/items/{{path.id}}" }}
"#
    ))
    .await
}

/// Asserts a problem+json response with `status` naming call `one`, upstream `a` and `kind`.
fn assert_problem(r: &TestResponse, status: u16, kind: &str) -> Value {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), PROBLEM, "{}", r.text());
    let body = r.json();
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["call"], "one", "{body}");
    assert_eq!(body["upstream"], "a", "{body}");
    assert_eq!(body["kind"], kind, "{body}");
    body
}

/// A URL on which nothing listens: a port bound once and then released.
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

// A required call's 4xx is passed through as that status, as problem+json naming the call.
#[tokio::test]
async fn required_call_404_becomes_client_404_problem() {
    let a = TestUpstream::fixed(Reply::status(404)).await;
    let gw = one_call(&a.url(), "").await;
    let r = gw.get("/x/1").await;
    assert_problem(&r, 404, "status");
    assert_eq!(a.count(), 1);
}

// A required call's 5xx becomes 502 with kind `status`.
#[tokio::test]
async fn required_call_503_becomes_502() {
    let a = TestUpstream::fixed(Reply::status(503)).await;
    let gw = one_call(&a.url(), "").await;
    let r = gw.get("/x/1").await;
    let body = assert_problem(&r, 502, "status");
    assert_eq!(body["errors"][0]["status"], 503, "{body}");
}

// An upstream nobody listens on gives 502 with kind `connect`.
#[tokio::test]
async fn upstream_down_becomes_502_connect() {
    let gw = one_call(&dead_url(), ", connect_timeout: 200ms").await;
    let r = gw.get("/x/1").await;
    assert_problem(&r, 502, "connect");
}

// A 200 text/html error page is a decode failure (502) and its HTML never reaches the client (R03).
#[tokio::test]
async fn required_call_html_body_becomes_502_decode_without_html() {
    let a = TestUpstream::fixed(Reply::raw("text/html", "<html>502 Bad Gateway</html>")).await;
    let gw = one_call(&a.url(), "").await;
    let r = gw.get("/x/1").await;
    assert_problem(&r, 502, "decode");
    let text = r.text();
    assert!(!text.contains("<html>"), "HTML leaked: {text}");
    assert!(!text.contains("Bad Gateway</html>"), "HTML leaked: {text}");
}

// A truncated JSON body (labelled JSON) is a decode failure: 502 (R03).
#[tokio::test]
async fn required_call_truncated_json_becomes_502_decode() {
    let a = TestUpstream::fixed(Reply::raw("application/json", r#"{"id": 1, "name": "ad"#)).await;
    let gw = one_call(&a.url(), "").await;
    let r = gw.get("/x/1").await;
    assert_problem(&r, 502, "decode");
}

// A body over the upstream's `max_body` fails the call with kind `too_large` (502).
#[tokio::test]
async fn body_over_max_body_becomes_502_too_large() {
    let big = format!(r#"{{"blob":"{}"}}"#, "x".repeat(10 * 1024));
    let a = TestUpstream::fixed(Reply::raw("application/json", &big)).await;
    let gw = one_call(&a.url(), ", max_body: 1KiB").await;
    let r = gw.get("/x/1").await;
    assert_problem(&r, 502, "too_large");
    assert!(!r.text().contains("xxxxxxxx"), "body leaked");
}

// An upstream slower than its timeout gives 504 kind `timeout`, at about the timeout.
#[tokio::test]
async fn slow_upstream_past_timeout_becomes_504_timeout() {
    let a = TestUpstream::fixed(Reply::json(json!({})).after(Duration::from_secs(1))).await;
    let gw = one_call(&a.url(), ", timeout: 100ms").await;
    let t0 = Instant::now();
    let r = gw.get("/x/1").await;
    let took = t0.elapsed();
    assert_problem(&r, 504, "timeout");
    assert!(took < Duration::from_millis(800), "took {took:?}");
}

/// A gateway whose route `/r` has required call `a` and optional call `opt`,
/// responding with both bodies and `$errors`.
async fn with_optional(a_url: &str, opt_url: &str) -> TestGateway {
    TestGateway::start(&format!(
        r#"
upstreams:
  a: {{ url: "{a_url}" }}
  o: {{ url: "{opt_url}" }}
routes:
  - get: /r
    calls:
      main: {{ get: "a:/main" }}
      opt: {{ get: "o:/opt", optional: true }}
    respond:
      main: main.body
      opt: opt.body
      errors: $errors
"#
    ))
    .await
}

// A failing optional call yields 200 with a null key, `Switchyard-Missing` and an `$errors` entry.
#[tokio::test]
async fn failing_optional_call_is_null_and_reported() {
    let a = TestUpstream::fixed(Reply::json(json!({"ok": true}))).await;
    let o = TestUpstream::fixed(Reply::status(500)).await;
    let gw = with_optional(&a.url(), &o.url()).await;
    let r = gw.get("/r").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("switchyard-missing"), "opt");
    let body = r.json();
    assert_eq!(body["main"], json!({"ok": true}));
    assert!(body["opt"].is_null(), "{body}");
    let errors = body["errors"].as_array().expect("errors is a list");
    assert_eq!(errors.len(), 1, "{body}");
    let e = &errors[0];
    assert_eq!(e["call"], "opt", "{body}");
    assert_eq!(e["upstream"], "o", "{body}");
    assert_eq!(e["kind"], "status", "{body}");
    assert!(
        e["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
}

// An optional call answering HTML is null with kind `decode`, and the HTML never appears (R03).
#[tokio::test]
async fn optional_call_html_is_null_with_decode() {
    let a = TestUpstream::fixed(Reply::json(json!({"ok": true}))).await;
    let o = TestUpstream::fixed(Reply::raw("text/html", "<html>502 Bad Gateway</html>")).await;
    let gw = with_optional(&a.url(), &o.url()).await;
    let r = gw.get("/r").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("switchyard-missing"), "opt");
    let body = r.json();
    assert!(body["opt"].is_null(), "{body}");
    assert_eq!(body["errors"][0]["call"], "opt", "{body}");
    assert_eq!(body["errors"][0]["kind"], "decode", "{body}");
    assert!(!r.text().contains("<html>"), "HTML leaked: {}", r.text());
}

// A call depending on a failed optional call is never sent and is reported missing; the route is 200.
#[tokio::test]
async fn call_depending_on_failed_optional_call_is_skipped() {
    let o = TestUpstream::fixed(Reply::status(500)).await;
    let b = TestUpstream::fixed(Reply::json(json!({"b": 1}))).await;
    let gw = TestGateway::start(&format!(
        r#"
upstreams:
  o: {{ url: "{}" }}
  b: {{ url: "{}" }}
routes:
  - get: /r
    calls:
      opt: {{ get: "o:/opt", optional: true }}
      next: {{ get: "b:/next?id={{opt.body.id}}" }}
    respond:
      opt: opt.body
      next: next.body
      errors: $errors
"#,
        o.url(),
        b.url()
    ))
    .await;
    let r = gw.get("/r").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(b.count(), 0, "dependent call was sent: {:?}", b.seen());
    let missing: Vec<&str> = r.header("switchyard-missing").split(", ").collect();
    assert!(missing.contains(&"opt"), "{missing:?}");
    assert!(missing.contains(&"next"), "{missing:?}");
    let body = r.json();
    assert!(body["opt"].is_null(), "{body}");
    assert!(body["next"].is_null(), "{body}");
    let calls: Vec<&Value> = body["errors"]
        .as_array()
        .expect("errors is a list")
        .iter()
        .map(|e| &e["call"])
        .collect();
    assert!(calls.contains(&&json!("next")), "{body}");
}

/// R05: `/u/{id}` calls A `/users/{id}`, then B `/orders?uid={a.body.id}`.
async fn r05(a_reply: Reply) -> (TestResponse, TestUpstream) {
    let a = TestUpstream::fixed(a_reply).await;
    let b = TestUpstream::fixed(Reply::json(json!([]))).await;
    let gw = TestGateway::start(&format!(
        r#"
upstreams:
  ua: {{ url: "{}" }}
  ub: {{ url: "{}" }}
routes:
  - get: /u/{{id}}
    calls:
      a: {{ get: "ua:/users/{{path.id}}" }}
      b: {{ get: "ub:/orders?uid={{a.body.id}}" }}
"#,
        a.url(),
        b.url()
    ))
    .await;
    let r = gw.get("/u/5").await;
    assert_eq!(a.seen()[0].uri, "/users/5");
    (r, b)
}

/// Asserts the R05 (a)/(b) outcome: 502 missing_dependency on field `id`, B untouched.
fn assert_r05_missing(r: &TestResponse, b: &TestUpstream) {
    assert_eq!(b.count(), 0, "B was called: {:?}", b.seen());
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("content-type"), PROBLEM);
    let body = r.json();
    assert_eq!(body["call"], "b", "{body}");
    assert_eq!(body["errors"][0]["kind"], "missing_dependency", "{body}");
    assert_eq!(body["errors"][0]["field"], "id", "{body}");
}

// R05(a): A's body lacks `id` → B is never sent, client gets 502 missing_dependency field `id`.
#[tokio::test]
async fn r05_absent_field_is_missing_dependency() {
    let (r, b) = r05(Reply::json(json!({"name": "x"}))).await;
    assert_r05_missing(&r, &b);
}

// R05(b): A's `id` is null → same as absent; B never sees `null` or an empty value.
#[tokio::test]
async fn r05_null_field_is_missing_dependency() {
    let (r, b) = r05(Reply::json(json!({"id": null}))).await;
    assert_r05_missing(&r, &b);
}

// R05(c): A answers 404 → the client gets 404 (not 500), and B is never sent.
#[tokio::test]
async fn r05_first_call_404_is_passed_through() {
    let (r, b) = r05(Reply::status(404)).await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.header("content-type"), PROBLEM);
    assert_eq!(r.json()["call"], "a");
    assert_eq!(b.count(), 0, "B was called: {:?}", b.seen());
}

// A path that matches no route gets 404 problem+json.
#[tokio::test]
async fn unknown_route_is_404_problem() {
    let a = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = one_call(&a.url(), "").await;
    let r = gw.get("/nowhere/at/all").await;
    assert_eq!(r.status, 404, "{}", r.text());
    assert_eq!(r.header("content-type"), PROBLEM);
    assert_eq!(r.json()["status"], 404);
    assert_eq!(a.count(), 0);
}

// A known path with another method gets 405 problem+json with an `Allow` header.
#[tokio::test]
async fn wrong_method_is_405_problem_with_allow() {
    let a = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = one_call(&a.url(), "").await;
    let r = send(Method::POST, &gw.url("/x/1"), &[], Default::default()).await;
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(r.header("content-type"), PROBLEM);
    assert_eq!(r.json()["status"], 405);
    let allow = r.header("allow");
    assert!(
        allow.split(',').any(|m| m.trim() == "GET"),
        "Allow: {allow:?}"
    );
    assert_eq!(a.count(), 0);
}

// A failed route's response still carries Server-Timing naming the call and the total.
#[tokio::test]
async fn failed_route_carries_server_timing() {
    let a = TestUpstream::fixed(Reply::status(503)).await;
    let gw = one_call(&a.url(), "").await;
    let r = gw.get("/x/1").await;
    assert_eq!(r.status, 502, "{}", r.text());
    let timing = r.header("server-timing");
    assert!(timing.contains("one;dur="), "Server-Timing: {timing:?}");
    assert!(timing.contains("total;dur="), "Server-Timing: {timing:?}");
}
