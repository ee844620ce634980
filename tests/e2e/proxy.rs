//! `proxy` routes: method, path, query, headers and body pass through, the
//! upstream's answer comes back untouched, limits and failures are reported.

use crate::common::*;
use bytes::Bytes;
use http::Method;
use serde_json::json;

/// An `any:` catch-all proxy and a GET proxy to `up`, with a request body cap.
fn proxy_config(up: &str, max_request_body: &str) -> String {
    format!(
        r#"
server:
  max_request_body: {max_request_body}
upstreams:
  backend: {{ url: "{up}" }}
routes:
  - any: /api/{{*rest}}
    proxy: "backend:/v1/{{path.rest}}"
  - get: /list
    proxy: "backend:/items"
"#
    )
}

/// Upstream answering 200 `{"ok":true}` to everything.
async fn ok_upstream() -> TestUpstream {
    TestUpstream::fixed(Reply::json(json!({"ok": true}))).await
}

/// A loopback URL where nothing listens.
async fn closed_port_url() -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

// Method, path remainder and query string reach the upstream as sent.
#[tokio::test]
async fn proxy_passes_method_path_and_query() {
    let up = ok_upstream().await;
    let gw = TestGateway::start(&proxy_config(&up.url(), "1MiB")).await;
    for method in [Method::GET, Method::PUT, Method::DELETE, Method::PATCH] {
        let url = gw.url("/api/items/7/notes?x=1&y=a%20b&x=2");
        let r = send(method.clone(), &url, &[], Bytes::new()).await;
        assert_eq!(r.status, 200, "{method}: {}", r.text());
        let seen = up.seen().pop().unwrap();
        assert_eq!(seen.method, method);
        assert_eq!(seen.uri, "/v1/items/7/notes?x=1&y=a%20b&x=2");
    }
}

// End-to-end request headers pass through; hop-by-hop ones (and those
// named in Connection) do not; Host is the upstream's own.
#[tokio::test]
async fn proxy_passes_end_to_end_request_headers() {
    let up = ok_upstream().await;
    let gw = TestGateway::start(&proxy_config(&up.url(), "1MiB")).await;
    let r = send(
        Method::GET,
        &gw.url("/api/h"),
        &[
            ("authorization", "Bearer t0ken"),
            ("x-custom", "one"),
            ("accept-language", "de"),
            ("connection", "x-hop"),
            ("x-hop", "secret"),
            ("proxy-authorization", "Basic eA=="),
        ],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &up.seen()[0];
    assert_eq!(seen.headers["authorization"], "Bearer t0ken");
    assert_eq!(seen.headers["x-custom"], "one");
    assert_eq!(seen.headers["accept-language"], "de");
    assert!(seen.headers.get("x-hop").is_none(), "{:?}", seen.headers);
    assert!(
        seen.headers.get("proxy-authorization").is_none(),
        "{:?}",
        seen.headers
    );
    assert_eq!(seen.headers["host"], up.addr.to_string());
}

// A 1 MiB request body (exactly the default cap) reaches the upstream byte for byte.
#[tokio::test]
async fn proxy_passes_one_mib_body_exactly() {
    let up = ok_upstream().await;
    let gw = TestGateway::start(&proxy_config(&up.url(), "1MiB")).await;
    let body: Vec<u8> = (0..1u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let body = Bytes::from(body);
    let r = send(
        Method::POST,
        &gw.url("/api/upload"),
        &[("content-type", "application/octet-stream")],
        body.clone(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &up.seen()[0];
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.body.len(), body.len());
    assert!(seen.body == body, "the upstream got different bytes");
    assert_eq!(seen.headers["content-type"], "application/octet-stream");
}

// The upstream's status, headers and non-JSON body come back untouched.
#[tokio::test]
async fn proxy_returns_upstream_status_headers_and_raw_body() {
    let up = TestUpstream::fixed(
        Reply::raw(
            "text/html; charset=utf-8",
            "<html>created, not JSON {</html>",
        )
        .with_status(201)
        .header("x-upstream", "yes")
        .header("location", "/v1/things/9"),
    )
    .await;
    let gw = TestGateway::start(&proxy_config(&up.url(), "1MiB")).await;
    let r = send(Method::POST, &gw.url("/api/things"), &[], Bytes::from("{}")).await;
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.header("x-upstream"), "yes");
    assert_eq!(r.header("location"), "/v1/things/9");
    assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(r.text(), "<html>created, not JSON {</html>");
}

// X-Forwarded-For/Proto/Host are set on proxied requests.
#[tokio::test]
async fn proxy_sets_x_forwarded_headers() {
    let up = ok_upstream().await;
    let gw = TestGateway::start(&proxy_config(&up.url(), "1MiB")).await;
    let r = gw.get("/api/who").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &up.seen()[0];
    assert_eq!(seen.headers["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(seen.headers["x-forwarded-host"], gw.addr.to_string());
}

// A body over `server.max_request_body` with Content-Length gets 413 and
// never reaches the upstream.
#[tokio::test]
async fn proxy_rejects_body_over_limit_with_413() {
    let up = ok_upstream().await;
    let gw = TestGateway::start(&proxy_config(&up.url(), "1KiB")).await;
    let r = send(
        Method::POST,
        &gw.url("/api/upload"),
        &[],
        Bytes::from(vec![b'x'; 1025]),
    )
    .await;
    assert_eq!(r.status, 413, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/problem+json");
    assert_eq!(up.count(), 0);
}

// A down upstream gives 502 problem+json naming the upstream.
#[tokio::test]
async fn proxy_to_down_upstream_is_502_naming_it() {
    let gw = TestGateway::start(&proxy_config(&closed_port_url().await, "1MiB")).await;
    let r = gw.get("/api/anything").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/problem+json");
    let p = r.json();
    assert_eq!(p["status"], 502, "{p}");
    assert_eq!(p["upstream"], "backend", "{p}");
    assert_eq!(p["kind"], "connect", "{p}");
}

// A GET proxy route returns an upstream's top-level JSON array byte for byte.
#[tokio::test]
async fn proxy_returns_top_level_array_unchanged() {
    let raw = r#"[ {"id": 1}, {"id": 2} ]"#;
    let up = TestUpstream::fixed(Reply::raw("application/json", raw)).await;
    let gw = TestGateway::start(&proxy_config(&up.url(), "1MiB")).await;
    let r = gw.get("/list?page=2").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), raw);
    assert_eq!(up.seen()[0].uri, "/items?page=2");
}

// A GET proxy route refuses other methods with 405.
#[tokio::test]
async fn get_proxy_route_rejects_other_methods() {
    let up = ok_upstream().await;
    let gw = TestGateway::start(&proxy_config(&up.url(), "1MiB")).await;
    let r = send(Method::POST, &gw.url("/list"), &[], Bytes::new()).await;
    assert_eq!(r.status, 405, "{}", r.text());
    assert_eq!(up.count(), 0);
}
