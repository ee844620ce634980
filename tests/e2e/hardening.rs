//! Regressions found by a new-user pass over the README: each test pins one fix.

use crate::common::*;
use bytes::Bytes;
use http::Method;
use serde_json::json;
use std::time::Duration;

fn config(up: &TestUpstream, routes: &str) -> String {
    format!(
        "upstreams:\n  up: {{ url: \"{}\" }}\nroutes:\n{routes}",
        up.url()
    )
}

// `.` and `..` are unreserved, so encoding alone would pass them; a path
// parameter that is exactly one of them is refused before any call is sent.
#[tokio::test]
async fn dot_segment_path_params_are_refused() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = TestGateway::start(&config(
        &up,
        "  - get: /cust/{id}\n    calls:\n      c: { get: \"up:/customers/{path.id}/orders\" }\n",
    ))
    .await;
    for id in ["..", "%2E%2E", ".%2e", "."] {
        let raw = format!("GET /cust/{id} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n");
        let out = raw_exchange(gw.addr, raw.as_bytes(), Duration::from_secs(2)).await;
        assert!(out.starts_with("HTTP/1.1 400"), "{id}: {out}");
    }
    assert_eq!(up.count(), 0);
}

// A value from elsewhere (here the query) that is `..` cannot become a path
// segment either: the call fails with `bad_input` and is never sent.
#[tokio::test]
async fn dot_segment_values_never_reach_an_upstream_path() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = TestGateway::start(&config(
        &up,
        "  - get: /q\n    calls:\n      c: { get: \"up:/files/{query.name}/meta?n={query.name}\" }\n",
    ))
    .await;
    let r = gw.get("/q?name=..").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["kind"], "bad_input");
    assert_eq!(up.count(), 0);
    // In the query part the same value is harmless and goes through.
    let gw2 = TestGateway::start(&config(
        &up,
        "  - get: /q\n    calls:\n      c: { get: \"up:/files?n={query.name}\" }\n",
    ))
    .await;
    assert_eq!(gw2.get("/q?name=..").await.status, 200);
    assert_eq!(up.seen()[0].uri, "/files?n=..");
}

// A chunked proxy body that passes `max_request_body` gets 413, not 502.
#[tokio::test]
async fn chunked_proxy_body_over_the_limit_is_413() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = TestGateway::start(&format!(
        "server:\n  max_request_body: 1KiB\n{}",
        config(
            &up,
            "  - post: /p/{*rest}\n    proxy: \"up:/{path.rest}\"\n"
        )
    ))
    .await;
    let chunk = "x".repeat(4096);
    let raw = format!(
        "POST /p/a HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n{:x}\r\n{chunk}\r\n0\r\n\r\n",
        chunk.len()
    );
    let out = raw_exchange(gw.addr, raw.as_bytes(), Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
}

// Aggregated routes also refuse a declared body over `max_request_body`.
#[tokio::test]
async fn aggregated_route_refuses_a_declared_oversized_body() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = TestGateway::start(&format!(
        "server:\n  max_request_body: 1KiB\n{}",
        config(
            &up,
            "  - post: /a\n    calls:\n      c: { get: \"up:/x\" }\n"
        )
    ))
    .await;
    let r = send(
        Method::POST,
        &gw.url("/a"),
        &[],
        Bytes::from(vec![b'x'; 4096]),
    )
    .await;
    assert_eq!(r.status, 413);
    assert_eq!(up.count(), 0);
}

// A proxied response declaring more than `max_body` is refused with 502.
#[tokio::test]
async fn proxy_response_over_max_body_is_502() {
    let up = TestUpstream::fixed(Reply::raw("application/octet-stream", &"y".repeat(8192))).await;
    let gw = TestGateway::start(&format!(
        "upstreams:\n  up: {{ url: \"{}\", max_body: 1KiB }}\nroutes:\n  - get: /p/{{*rest}}\n    proxy: \"up:/{{path.rest}}\"\n",
        up.url()
    ))
    .await;
    let r = gw.get("/p/big").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["kind"], "too_large");
}

// Query parameters can be used in a proxy target; a catch-all that is not
// UTF-8 once decoded is a 400.
#[tokio::test]
async fn proxy_targets_read_the_query_and_refuse_bad_utf8() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = TestGateway::start(&config(
        &up,
        "  - get: /q/{*rest}\n    proxy: \"up:/users/{query.u}/{path.rest}\"\n",
    ))
    .await;
    assert_eq!(gw.get("/q/x?u=abc").await.status, 200);
    assert_eq!(up.seen()[0].uri, "/users/abc/x?u=abc");
    assert_eq!(gw.get("/q/%FF").await.status, 400);
    assert_eq!(up.count(), 1);
}

// `for_each` refills a slot as soon as any item finishes: a slow first item
// does not hold back the ones after it (proved from the upstream side).
#[tokio::test]
async fn for_each_has_no_head_of_line_blocking() {
    let up = TestUpstream::start(|seen| {
        let slow = seen.uri.ends_with("/0");
        Reply::json(json!({"u": seen.uri})).after(Duration::from_millis(if slow {
            400
        } else {
            50
        }))
    })
    .await;
    let list = TestUpstream::fixed(Reply::json(json!([0, 1, 2, 3]))).await;
    let gw = TestGateway::start(&format!(
        "upstreams:\n  up: {{ url: \"{}\" }}\n  list: {{ url: \"{}\" }}\nroutes:\n  - get: /f\n    calls:\n      ids: {{ get: \"list:/ids\" }}\n      items: {{ for_each: \"ids.body\", get: \"up:/i/{{item}}\", concurrency: 2 }}\n    respond: items.body\n",
        up.url(),
        list.url()
    ))
    .await;
    let r = gw.get("/f").await;
    assert_eq!(
        r.json(),
        json!([{"u": "/i/0"}, {"u": "/i/1"}, {"u": "/i/2"}, {"u": "/i/3"}])
    );
    let seen = up.seen();
    let at = |uri: &str| seen.iter().find(|s| s.uri == uri).unwrap().clone();
    assert!(
        at("/i/2").started < at("/i/0").finished,
        "item 2 waited for item 0"
    );
    assert!(
        at("/i/3").started < at("/i/0").finished,
        "item 3 waited for item 0"
    );
}

// Items that fail under `keep_null`/`skip` are reported: in `$errors` with
// their index, in Switchyard-Missing as `call[index]`, in Server-Timing.
#[tokio::test]
async fn tolerated_item_failures_are_reported() {
    let up = TestUpstream::start(|seen| {
        if seen.uri.ends_with("/2") {
            Reply::status(500)
        } else {
            Reply::json(json!({"ok": seen.uri}))
        }
    })
    .await;
    for (policy, body) in [
        ("keep_null", json!([{"ok": "/i/1"}, null, {"ok": "/i/3"}])),
        ("skip", json!([{"ok": "/i/1"}, {"ok": "/i/3"}])),
    ] {
        let list = TestUpstream::fixed(Reply::json(json!([1, 2, 3]))).await;
        let gw = TestGateway::start(&format!(
            "upstreams:\n  up: {{ url: \"{}\" }}\n  list: {{ url: \"{}\" }}\nroutes:\n  - get: /f\n    calls:\n      ids: {{ get: \"list:/ids\" }}\n      items: {{ for_each: \"ids.body\", get: \"up:/i/{{item}}\", concurrency: 2, on_item_error: {policy} }}\n    respond: {{ items: items.body, errors: $errors }}\n",
            up.url(),
            list.url()
        ))
        .await;
        let r = gw.get("/f").await;
        assert_eq!(r.status, 200);
        let j = r.json();
        assert_eq!(j["items"], body, "{policy}");
        assert_eq!(j["errors"][0]["item"], 1, "{policy}: {j}");
        assert_eq!(j["errors"][0]["kind"], "status");
        assert_eq!(r.header("switchyard-missing"), "items[1]");
        assert!(
            r.header("server-timing").contains("1 item(s) failed"),
            "{}",
            r.header("server-timing")
        );
    }
}

// Numbers pass through exactly as the upstream wrote them, also into URLs.
#[tokio::test]
async fn numbers_keep_their_precision() {
    let src = TestUpstream::fixed(Reply::raw(
        "application/json",
        r#"{"big":18446744073709551616,"neg":-9223372036854775809,"id":12345678901234567890123}"#,
    ))
    .await;
    let dst = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = TestGateway::start(&format!(
        "upstreams:\n  src: {{ url: \"{}\" }}\n  dst: {{ url: \"{}\" }}\nroutes:\n  - get: /n\n    calls:\n      a: {{ get: \"src:/a\" }}\n      b: {{ get: \"dst:/b?id={{a.body.id}}\" }}\n    respond: a.body\n",
        src.url(),
        dst.url()
    ))
    .await;
    let r = gw.get("/n").await;
    assert_eq!(
        r.text(),
        r#"{"big":18446744073709551616,"neg":-9223372036854775809,"id":12345678901234567890123}"#
    );
    assert_eq!(dst.seen()[0].uri, "/b?id=12345678901234567890123");
}

// `join` leaves nulls out, in URLs and in response shapes alike.
#[tokio::test]
async fn join_skips_nulls_everywhere() {
    let src = TestUpstream::fixed(Reply::json(json!([1, null, 3]))).await;
    let dst = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = TestGateway::start(&format!(
        "upstreams:\n  src: {{ url: \"{}\" }}\n  dst: {{ url: \"{}\" }}\nroutes:\n  - get: /j\n    calls:\n      a: {{ get: \"src:/a\" }}\n      b: {{ get: \"dst:/b?ids={{a.body|join}}\" }}\n    respond: {{ joined: \"a.body|join(';')\" }}\n",
        src.url(),
        dst.url()
    ))
    .await;
    let r = gw.get("/j").await;
    assert_eq!(r.json(), json!({"joined": "1;3"}));
    assert_eq!(dst.seen()[0].uri, "/b?ids=1,3");
}

// When a required call fails, the calls it cancelled still appear in Server-Timing.
#[tokio::test]
async fn server_timing_names_cancelled_calls() {
    let fail = TestUpstream::fixed(Reply::status(500)).await;
    let slow = TestUpstream::fixed(Reply::json(json!({})).after(Duration::from_secs(3))).await;
    let gw = TestGateway::start(&format!(
        "upstreams:\n  f: {{ url: \"{}\" }}\n  s: {{ url: \"{}\" }}\nroutes:\n  - get: /c\n    calls:\n      boom: {{ get: \"f:/x\" }}\n      slow: {{ get: \"s:/y\" }}\n      later: {{ get: \"s:/z/{{slow.body.id}}\" }}\n",
        fail.url(),
        slow.url()
    ))
    .await;
    let r = gw.get("/c").await;
    assert_eq!(r.status, 502);
    let timing = r.header("server-timing");
    assert!(timing.contains(r#"slow;desc="cancelled""#), "{timing}");
    assert!(timing.contains(r#"later;desc="not started""#), "{timing}");
    assert!(timing.contains(r#"boom;dur="#), "{timing}");
}

// An HTTP/1.1 request without Host, or with two, is a 400 (RFC 9112 §3.2).
#[tokio::test]
async fn host_header_is_required_and_single() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = TestGateway::start(&config(
        &up,
        "  - get: /a\n    calls:\n      c: { get: \"up:/x\" }\n",
    ))
    .await;
    let none = raw_exchange(
        gw.addr,
        b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(none.starts_with("HTTP/1.1 400"), "{none}");
    let two = raw_exchange(
        gw.addr,
        b"GET /a HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(two.starts_with("HTTP/1.1 400"), "{two}");
    let ok = raw_exchange(
        gw.addr,
        b"GET /a HTTP/1.1\r\nHost: gw.example\r\nConnection: close\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    assert_eq!(up.count(), 1);
}

// A 204 answer is a success whose value is null, not a decode error.
#[tokio::test]
async fn no_content_is_a_null_body() {
    let up = TestUpstream::fixed(Reply::raw("application/json", "").with_status(204)).await;
    let gw = TestGateway::start(&config(
        &up,
        "  - get: /a\n    calls:\n      c: { get: \"up:/x\" }\n",
    ))
    .await;
    let r = gw.get("/a").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"c": null}));
}
