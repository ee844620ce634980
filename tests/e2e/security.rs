//! Security properties end to end: URL encoding of templated values, which
//! headers reach upstreams, `X-Forwarded-For` trust, and proxy hop-by-hop
//! handling (README "Encoding", "Headers", "Pass-through"; CASES R17).

use crate::common::*;
use serde_json::json;
use std::time::Duration;

/// A gateway with one upstream `up` at `url` and the given routes (YAML list items).
async fn gateway(server: &str, url: &str, routes: &str) -> TestGateway {
    TestGateway::start(&format!(
        "server: {{ {server} }}\nupstreams:\n  up: {{ url: \"{url}\" }}\nroutes:\n{routes}"
    ))
    .await
}

/// The status code and lower-cased headers of a raw HTTP/1.1 response.
fn parse_head(raw: &str) -> (u16, Vec<(String, String)>) {
    let head = raw.split("\r\n\r\n").next().unwrap_or("");
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {raw:?}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers)
}

const PATH_ROUTE: &str = r#"  - get: /u/{id}
    calls:
      one: { get: "up:/users/{path.id}/profile?x=1" }
"#;

// A path parameter is encoded inside its one upstream segment: no new segment, parameter or header.
#[tokio::test]
async fn path_values_cannot_escape_their_segment() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = gateway("", &up.url(), PATH_ROUTE).await;
    let cases = [
        ("..%2Fadmin", "/users/..%2Fadmin/profile?x=1"),
        ("a%2Fb", "/users/a%2Fb/profile?x=1"),
        ("%252e%252e", "/users/%252e%252e/profile?x=1"),
        ("x%3Fy%3Dz", "/users/x%3Fy%3Dz/profile?x=1"),
        (
            "a%0D%0AX-Injected:%201",
            "/users/a%0D%0AX-Injected%3A%201/profile?x=1",
        ),
    ];
    for (i, (client, upstream)) in cases.iter().enumerate() {
        let r = gw.get(&format!("/u/{client}")).await;
        assert_eq!(r.status, 200, "{client}: {}", r.text());
        let seen = up.seen();
        assert_eq!(seen.len(), i + 1, "{client}: {seen:?}");
        let s = &seen[i];
        assert_eq!(s.uri, *upstream, "{client}");
        assert!(
            !s.headers.contains_key("x-injected"),
            "{client}: header injected: {:?}",
            s.headers
        );
    }
}

// A query value cannot add a parameter: `q=a&fixed=2` stays inside `q`, `fixed` stays 1.
#[tokio::test]
async fn query_values_cannot_add_parameters() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = gateway(
        "",
        &up.url(),
        r#"  - get: /s
    calls:
      one: { get: "up:/search?q={query.q}&fixed=1" }
"#,
    )
    .await;
    let r = gw.get("/s?q=a%26fixed%3D2").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let uri = &up.seen()[0].uri;
    assert_eq!(uri, "/search?q=a%26fixed%3D2&fixed=1");
    let query = uri.split_once('?').map(|(_, q)| q).unwrap_or("");
    let pairs: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let fixed: Vec<&str> = pairs
        .iter()
        .filter(|(k, _)| k == "fixed")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(fixed, ["1"], "{pairs:?}");
    assert!(
        pairs.contains(&("q".into(), "a&fixed=2".into())),
        "{pairs:?}"
    );
}

const HEADER_ROUTE: &str = r#"  - get: /h
    forward_headers: [authorization]
    calls:
      one: { get: "up:/h" }
"#;

// Aggregated calls forward only `forward_headers` (plus trace context); other client headers stay behind.
#[tokio::test]
async fn only_listed_headers_are_forwarded() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = gateway("", &up.url(), HEADER_ROUTE).await;
    let r = gw
        .get_with(
            "/h",
            &[
                ("authorization", "Bearer t0k"),
                ("cookie", "session=s3cret"),
                ("x-custom", "1"),
                ("accept-language", "fr"),
                ("user-agent", "test-agent"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let h = &up.seen()[0].headers;
    assert_eq!(h["authorization"], "Bearer t0k");
    for absent in ["cookie", "x-custom", "accept-language", "user-agent"] {
        assert!(!h.contains_key(absent), "{absent} forwarded: {h:?}");
    }
    let allowed = [
        "host",
        "accept",
        "authorization",
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "content-length",
        "traceparent",
    ];
    for name in h.keys() {
        assert!(allowed.contains(&name.as_str()), "unexpected {name}: {h:?}");
    }
}

// Trace context is continued even when not listed: the client's trace id
// with the call's own span id, and the client's `tracestate`.
#[tokio::test]
async fn trace_context_is_forwarded() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = gateway("", &up.url(), HEADER_ROUTE).await;
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let r = gw
        .get_with("/h", &[("traceparent", tp), ("tracestate", "k=v")])
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let h = &up.seen()[0].headers;
    let sent = h["traceparent"].to_str().unwrap();
    assert!(
        sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-") && sent.ends_with("-01"),
        "{sent}"
    );
    assert_ne!(sent, tp, "the call has a span id of its own");
    assert_eq!(h["tracestate"], "k=v");
}

// Upstream `Host` is the upstream's own; X-Forwarded-For/-Host/-Proto describe the client.
#[tokio::test]
async fn host_and_forwarded_headers_are_set() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = gateway("", &up.url(), HEADER_ROUTE).await;
    let r = gw.get_with("/h", &[("host", "gw.example.com")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let h = &up.seen()[0].headers;
    assert_eq!(h["host"], up.addr.to_string().as_str());
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-host"], "gw.example.com");
    assert_eq!(h["x-forwarded-proto"], "http");
}

// Without trusted proxies a client's X-Forwarded-* headers are replaced, never believed.
#[tokio::test]
async fn untrusted_forwarded_headers_are_replaced() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = gateway("", &up.url(), HEADER_ROUTE).await;
    let r = gw
        .get_with(
            "/h",
            &[
                ("host", "gw.example.com"),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-host", "evil.example"),
                ("x-forwarded-proto", "https"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let h = &up.seen()[0].headers;
    let all = |n: &str| h.get_all(n).iter().cloned().collect::<Vec<_>>();
    assert_eq!(all("x-forwarded-for"), ["127.0.0.1"], "{h:?}");
    assert_eq!(all("x-forwarded-host"), ["gw.example.com"], "{h:?}");
    assert_eq!(all("x-forwarded-proto"), ["http"], "{h:?}");
}

// From a trusted proxy the X-Forwarded-For chain is extended with the peer.
#[tokio::test]
async fn trusted_forwarded_for_is_extended() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = gateway("trusted_proxies: [127.0.0.1/32]", &up.url(), HEADER_ROUTE).await;
    let r = gw.get_with("/h", &[("x-forwarded-for", "6.6.6.6")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let h = &up.seen()[0].headers;
    let all: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
    assert_eq!(all, ["6.6.6.6, 127.0.0.1"], "{h:?}");
}

const PROXY_ROUTE: &str = r#"  - get: /p/{*rest}
    proxy: "up:/base/{path.rest}"
"#;

// R17: a proxy drops client hop-by-hop headers (and those `Connection` names) and sets its own Host.
#[tokio::test]
async fn proxy_drops_request_hop_by_hop_headers() {
    let up = TestUpstream::fixed(Reply::json(json!({"ok": true}))).await;
    let gw = gateway("", &up.url(), PROXY_ROUTE).await;
    let raw = raw_exchange(
        gw.addr,
        b"GET /p/x HTTP/1.1\r\n\
          Host: gw.example.com\r\n\
          Connection: close, X-Secret\r\n\
          X-Secret: 1\r\n\
          Keep-Alive: timeout=5\r\n\
          TE: trailers\r\n\
          Proxy-Authorization: Basic x\r\n\
          Proxy-Connection: keep-alive\r\n\
          X-Kept: yes\r\n\
          \r\n",
        Duration::from_secs(2),
    )
    .await;
    let (status, _) = parse_head(&raw);
    assert_eq!(status, 200, "{raw}");
    let seen = up.seen();
    assert_eq!(seen.len(), 1, "{seen:?}");
    let s = &seen[0];
    assert_eq!(s.uri, "/base/x");
    let h = &s.headers;
    for absent in [
        "connection",
        "x-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(!h.contains_key(absent), "{absent} reached upstream: {h:?}");
    }
    assert_eq!(h["host"], up.addr.to_string().as_str(), "{h:?}");
    assert_eq!(h["x-forwarded-host"], "gw.example.com", "{h:?}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1", "{h:?}");
    assert_eq!(h["x-kept"], "yes", "end-to-end header lost: {h:?}");
}

// R17: a proxy drops the upstream's response hop-by-hop headers (and those its `Connection` names).
#[tokio::test]
async fn proxy_drops_response_hop_by_hop_headers() {
    let up = TestUpstream::fixed(
        Reply::json(json!({"ok": true}))
            .header("connection", "X-Up-Secret")
            .header("x-up-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic")
            .header("x-up-kept", "yes"),
    )
    .await;
    let gw = gateway("", &up.url(), PROXY_ROUTE).await;
    let r = gw.get("/p/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    for absent in [
        "x-up-secret",
        "keep-alive",
        "proxy-authenticate",
        "connection",
    ] {
        assert!(
            !r.headers.contains_key(absent),
            "{absent} reached client: {:?}",
            r.headers
        );
    }
    assert_eq!(r.header("x-up-kept"), "yes", "{:?}", r.headers);
    assert_eq!(r.json(), json!({"ok": true}));
}

// A proxy path with a `.`/`..` segment (plain or encoded) is 400 and nothing reaches the upstream.
#[tokio::test]
async fn proxy_rejects_dot_segments() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = gateway("", &up.url(), PROXY_ROUTE).await;
    for path in [
        "/p/a/%2e%2e/admin",
        "/p/a/%2E%2E/admin",
        "/p/a/../admin",
        "/p/a/./b",
        "/p/%2e/b",
    ] {
        let raw = raw_exchange(
            gw.addr,
            format!("GET {path} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(2),
        )
        .await;
        let (status, headers) = parse_head(&raw);
        assert_eq!(status, 400, "{path}: {raw}");
        assert!(
            headers
                .iter()
                .any(|(k, v)| k == "content-type" && v == "application/problem+json"),
            "{path}: {raw}"
        );
    }
    assert_eq!(up.count(), 0, "upstream reached: {:?}", up.seen());
}

// A proxy keeps an encoded `/` inside its segment: `/p/a%2Fb/c` → `/base/a%2Fb/c`.
#[tokio::test]
async fn proxy_keeps_encoded_slash_in_segment() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = gateway("", &up.url(), PROXY_ROUTE).await;
    let r = gw.get("/p/a%2Fb/c").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(up.seen()[0].uri, "/base/a%2Fb/c");
}

// A header template rejects a value with CR/LF: the call fails `bad_input` and is never sent.
#[tokio::test]
async fn header_template_rejects_control_characters() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = gateway(
        "",
        &up.url(),
        r#"  - get: /t
    calls:
      one: { get: "up:/t", headers: { x-user: "{query.u}" } }
"#,
    )
    .await;
    let r = gw.get("/t?u=a%0D%0AX-Injected:%201").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/problem+json");
    assert_eq!(r.json()["kind"], "bad_input", "{}", r.text());
    assert_eq!(up.count(), 0, "call was sent: {:?}", up.seen());
}

// A proxy replaces an untrusted client's X-Forwarded-* headers instead of passing them through.
#[tokio::test]
async fn proxy_replaces_untrusted_forwarded_headers() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = gateway("", &up.url(), PROXY_ROUTE).await;
    let r = gw
        .get_with(
            "/p/x",
            &[
                ("host", "gw.example.com"),
                ("x-forwarded-for", "6.6.6.6"),
                ("x-forwarded-host", "evil.example"),
                ("x-forwarded-proto", "https"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let h = &up.seen()[0].headers;
    let all = |n: &str| h.get_all(n).iter().cloned().collect::<Vec<_>>();
    assert_eq!(all("x-forwarded-for"), ["127.0.0.1"], "{h:?}");
    assert_eq!(all("x-forwarded-host"), ["gw.example.com"], "{h:?}");
    assert_eq!(all("x-forwarded-proto"), ["http"], "{h:?}");
}

// A proxy request without Host cannot smuggle a client X-Forwarded-Host to the upstream.
#[tokio::test]
async fn proxy_without_host_drops_client_forwarded_host() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = gateway("", &up.url(), PROXY_ROUTE).await;
    let raw = raw_exchange(
        gw.addr,
        b"GET /p/x HTTP/1.0\r\nX-Forwarded-Host: evil.example\r\n\r\n",
        Duration::from_secs(2),
    )
    .await;
    let (status, _) = parse_head(&raw);
    assert_eq!(status, 200, "{raw}");
    let h = &up.seen()[0].headers;
    let xfh: Vec<_> = h.get_all("x-forwarded-host").iter().collect();
    assert!(!xfh.iter().any(|v| *v == "evil.example"), "{h:?}");
}
