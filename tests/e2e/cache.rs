//! Selective caching end to end: single-flight, keys that cannot leak, what
//! is never stored (R06, R07), the byte bound (R08), encoding variants and
//! purge (R09), stale serving, and the shared Redis tier with two gateway
//! processes.

use crate::common::*;
use crate::redis_fixture::RedisServer;
use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use switchyard::server::{Gateway, RunningServer};
use tokio::net::TcpListener;

/// The gateway in-process with its admin listener, the `Gateway` in reach.
struct CachedGateway {
    addr: SocketAddr,
    admin: SocketAddr,
    gw: Arc<Gateway>,
    servers: Vec<RunningServer>,
}

impl CachedGateway {
    async fn start(yaml: &str) -> CachedGateway {
        let plan = match switchyard::plan::compile_str("test.yaml", yaml) {
            Ok((plan, _)) => plan,
            Err(e) => panic!("test config does not compile:\n{e}\n---\n{yaml}"),
        };
        let gw = Gateway::new(plan);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = admin_listener.local_addr().unwrap();
        let servers = vec![
            switchyard::server::serve(gw.clone(), listener).unwrap(),
            switchyard::admin::serve_gateway(admin_listener, gw.clone()).unwrap(),
        ];
        CachedGateway {
            addr,
            admin,
            gw,
            servers,
        }
    }

    async fn get(&self, path: &str) -> TestResponse {
        self.get_with(path, &[]).await
    }

    async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> TestResponse {
        send(
            Method::GET,
            &format!("http://{}{path}", self.addr),
            headers,
            Bytes::new(),
        )
        .await
    }

    async fn purge(&self, query: &str) -> Value {
        purge(self.admin, query).await
    }

    async fn shutdown(self) {
        for s in self.servers {
            s.shutdown().await;
        }
    }
}

async fn purge(admin: SocketAddr, query: &str) -> Value {
    let r = send(
        Method::POST,
        &format!("http://{admin}/cache/purge?{query}"),
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()
}

fn url_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The value of one Prometheus sample (0 when absent), summed over the lines
/// that have all `parts`.
fn metric(name: &str, parts: &[&str]) -> f64 {
    let text = switchyard::telemetry::prometheus().render();
    text.lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Counts requests and answers with `reply(n)` for the n-th (0-based).
async fn counting(reply: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> TestUpstream {
    let n = AtomicUsize::new(0);
    TestUpstream::start(move |seen| reply(n.fetch_add(1, Ordering::SeqCst), seen)).await
}

// The issue's stampede test: 200 concurrent requests on a cold key make one
// upstream request, for a cached call and for a cached route alike; the
// others wait for it and get the same answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_misses_make_one_upstream_request() {
    let up = counting(|n, _| Reply::json(json!({"n": n})).after(Duration::from_millis(200))).await;
    let gw = CachedGateway::start(&format!(
        r#"
upstreams:
  a: {{ url: "{}" }}
routes:
  - get: /call/{{id}}
    calls:
      thing: {{ get: "a:/items/{{path.id}}", cache: 10s }}
  - get: /route/{{id}}
    cache: 10s
    calls:
      thing: {{ get: "a:/items/{{path.id}}" }}
"#,
        up.url()
    ))
    .await;
    for (path, calls) in [("/call/1", 1), ("/route/1", 2)] {
        let answers = futures_util::future::join_all((0..200).map(|_| gw.get(path))).await;
        assert_eq!(
            up.count(),
            calls,
            "{path}: one upstream request for 200 clients"
        );
        let first = answers[0].text();
        for a in &answers {
            assert_eq!(a.status, 200, "{}", a.text());
            assert_eq!(a.text(), first, "every waiter gets the one answer");
        }
    }
    // Later requests are hits, and say so.
    let hit = gw.get("/call/1").await;
    assert!(
        hit.header("server-timing").contains("thing;dur="),
        "{:?}",
        hit.headers
    );
    assert!(
        hit.header("server-timing").contains(r#"desc="hit""#),
        "{:?}",
        hit.headers
    );
    let route_hit = gw.get("/route/1").await;
    assert!(
        route_hit
            .header("cache-status")
            .starts_with("switchyard; hit; ttl="),
        "{:?}",
        route_hit.headers
    );
    assert_eq!(up.count(), 2);
    gw.shutdown().await;
}

// Answers fetched with credentials are kept per client: two users with
// different tokens never see each other's data, through a cached call or a
// cached route, and a request without a token gets neither.
#[tokio::test]
async fn users_with_different_tokens_never_see_each_others_data() {
    let up = TestUpstream::start(|seen| {
        let who = seen
            .headers
            .get("authorization")
            .map_or("nobody".to_string(), |v| v.to_str().unwrap().to_string());
        Reply::json(json!({"account_of": who}))
    })
    .await;
    let gw = CachedGateway::start(&format!(
        r#"
upstreams:
  accounts: {{ url: "{}" }}
routes:
  - get: /me
    forward_headers: [authorization]
    calls:
      me: {{ get: "accounts:/me", cache: 10s }}
  - get: /me/route
    forward_headers: [authorization]
    cache: 10s
    calls:
      me: {{ get: "accounts:/me" }}
"#,
        up.url()
    ))
    .await;
    for path in ["/me", "/me/route"] {
        for _ in 0..3 {
            for user in ["alice", "bob"] {
                let token = format!("Bearer {user}-token");
                let r = gw.get_with(path, &[("authorization", &token)]).await;
                assert_eq!(r.status, 200);
                assert_eq!(
                    r.json()["me"]["account_of"],
                    token,
                    "{path}: {user} sees only their own"
                );
            }
            let anon = gw.get(path).await;
            assert_eq!(anon.json()["me"]["account_of"], "nobody", "{path}");
        }
    }
    // Each of alice, bob and the anonymous client was fetched once per path.
    assert_eq!(up.count(), 6);
    let r = gw
        .get_with("/me/route", &[("authorization", "Bearer alice-token")])
        .await;
    assert!(
        r.header("cache-control").starts_with("private"),
        "{:?}",
        r.headers
    );
    gw.shutdown().await;
}

// R06: a 5xx is never stored (the next request is a miss that gets the
// recovered 200), nor is a partial response (Switchyard-Missing).
#[tokio::test]
async fn errors_and_partial_responses_are_never_stored() {
    let a = counting(|n, _| {
        if n == 0 {
            Reply::status(503)
        } else {
            Reply::json(json!({"a": n}))
        }
    })
    .await;
    let b =
        TestUpstream::fixed(Reply::json(json!({"b": 1})).after(Duration::from_millis(300))).await;
    let gw = CachedGateway::start(&format!(
        r#"
upstreams:
  a: {{ url: "{}" }}
  b: {{ url: "{}", timeout: 50ms }}
routes:
  - get: /r
    cache: 10s
    calls:
      a: {{ get: "a:/a" }}
  - get: /partial
    cache: 10s
    calls:
      a: {{ get: "a:/a" }}
      b: {{ get: "b:/b", optional: true }}
"#,
        a.url(),
        b.url()
    ))
    .await;
    let status_before = metric(
        "switchyard_cache_store_skipped_total",
        &[r#"reason="status""#],
    );
    let first = gw.get("/r").await;
    assert_eq!(first.status, 502);
    assert_eq!(first.header("cache-control"), "no-store");
    assert!(
        first.header("cache-status").contains("detail=status"),
        "{:?}",
        first.headers
    );
    let second = gw.get("/r").await;
    assert_eq!(second.status, 200, "the 503 was not stored");
    assert!(
        second
            .header("cache-status")
            .contains("fwd=uri-miss; stored"),
        "{:?}",
        second.headers
    );
    assert_eq!(gw.get("/r").await.json()["a"]["a"], 1, "and the 200 was");
    assert!(
        metric(
            "switchyard_cache_store_skipped_total",
            &[r#"reason="status""#]
        ) > status_before
    );

    let partial_before = metric(
        "switchyard_cache_store_skipped_total",
        &[r#"reason="partial""#],
    );
    for _ in 0..2 {
        let p = gw.get("/partial").await;
        assert_eq!(p.status, 200);
        assert_eq!(p.header("switchyard-missing"), "b");
        assert!(
            p.header("cache-status").contains("detail=partial"),
            "{:?}",
            p.headers
        );
    }
    assert_eq!(a.count(), 4, "both partial responses went upstream");
    assert!(
        metric(
            "switchyard_cache_store_skipped_total",
            &[r#"reason="partial""#]
        ) >= partial_before + 2.0
    );
    gw.shutdown().await;
}

// R07 (a), (b): `no-store` from the upstream (even beside Surrogate-Control)
// and from the client store nothing; the next request is a miss.
#[tokio::test]
async fn no_store_from_upstream_or_client_stores_nothing() {
    let up = TestUpstream::start(|seen| {
        if seen.uri.starts_with("/nostore") {
            Reply::json(json!({"x": 1}))
                .header("cache-control", "no-store")
                .header("surrogate-control", r#"content="ESI/1.0""#)
        } else {
            Reply::json(json!({"x": 2}))
        }
    })
    .await;
    let gw = CachedGateway::start(&format!(
        r#"
upstreams:
  a: {{ url: "{}" }}
routes:
  - get: /upstream-says
    calls:
      a: {{ get: "a:/nostore", cache: 10s }}
  - get: /upstream-says/route
    cache: 10s
    calls:
      a: {{ get: "a:/nostore" }}
  - get: /client-says
    cache: 10s
    calls:
      a: {{ get: "a:/fine" }}
  - get: /client-says/call
    calls:
      a: {{ get: "a:/fine/call", cache: 10s }}
"#,
        up.url()
    ))
    .await;
    for path in ["/upstream-says", "/upstream-says/route"] {
        let before = up.count();
        for _ in 0..2 {
            assert_eq!(gw.get(path).await.status, 200);
        }
        assert_eq!(up.count(), before + 2, "{path}: nothing was stored");
    }
    let before = up.count();
    let r = gw
        .get_with("/client-says", &[("cache-control", "no-store")])
        .await;
    assert!(
        r.header("cache-status").contains("fwd=request"),
        "{:?}",
        r.headers
    );
    let next = gw.get("/client-says").await;
    assert!(
        next.header("cache-status").contains("fwd=uri-miss"),
        "{:?}",
        next.headers
    );
    assert_eq!(
        up.count(),
        before + 2,
        "the client's no-store stored nothing"
    );
    let before = up.count();
    let r = gw
        .get_with("/client-says/call", &[("cache-control", "no-store")])
        .await;
    assert!(
        r.header("server-timing").contains(r#"desc="miss""#),
        "{:?}",
        r.headers
    );
    let next = gw.get("/client-says/call").await;
    assert!(
        next.header("server-timing").contains(r#"desc="miss""#),
        "{:?}",
        next.headers
    );
    assert_eq!(up.count(), before + 2, "nor did a cached call");
    gw.shutdown().await;
}

// R07 (c): a merged response lives as long as its shortest-lived part, and a
// `private` part keeps it out of the shared entry; a `per_client` policy may
// store it for that client only.
#[tokio::test]
async fn merged_responses_take_the_smallest_ttl_and_privacy_of_their_parts() {
    let a = TestUpstream::fixed(Reply::json(json!({"a": 1})).header("cache-control", "max-age=10"))
        .await;
    let b =
        TestUpstream::fixed(Reply::json(json!({"b": 1})).header("cache-control", "max-age=1000"))
            .await;
    let p = TestUpstream::fixed(
        Reply::json(json!({"p": 1})).header("cache-control", "private, max-age=1000"),
    )
    .await;
    let gw = CachedGateway::start(&format!(
        r#"
upstreams:
  a: {{ url: "{}" }}
  b: {{ url: "{}" }}
  p: {{ url: "{}" }}
routes:
  - get: /ab
    cache: 1h
    calls:
      a: {{ get: "a:/a" }}
      b: {{ get: "b:/b" }}
    merge: [a, b]
  - get: /ap
    cache: 1h
    calls:
      a: {{ get: "a:/a" }}
      p: {{ get: "p:/p" }}
    merge: [a, p]
  - get: /ap/mine
    cache: {{ ttl: 1h, scope: per_client }}
    calls:
      a: {{ get: "a:/a" }}
      p: {{ get: "p:/p" }}
    merge: [a, p]
"#,
        a.url(),
        b.url(),
        p.url()
    ))
    .await;
    let r = gw.get("/ab").await;
    assert_eq!(r.json(), json!({"a": 1, "b": 1}));
    let cc = r.header("cache-control").to_string();
    let max_age: u64 = cc
        .strip_prefix("public, max-age=")
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{cc}"));
    assert!(
        (9..=10).contains(&max_age),
        "{cc}: the smallest part's 10 s"
    );

    let private_before = p.count();
    for _ in 0..2 {
        let r = gw.get("/ap").await;
        assert_eq!(r.status, 200);
        assert!(
            r.header("cache-status").contains("detail=private"),
            "{:?}",
            r.headers
        );
    }
    assert_eq!(
        p.count(),
        private_before + 2,
        "a private part is never shared"
    );

    let alice = [("authorization", "Bearer alice")];
    let bob = [("authorization", "Bearer bob")];
    let before = p.count();
    gw.get_with("/ap/mine", &alice).await;
    let again = gw.get_with("/ap/mine", &alice).await;
    assert!(
        again.header("cache-status").contains("hit"),
        "{:?}",
        again.headers
    );
    assert!(
        again
            .header("cache-control")
            .starts_with("private, max-age="),
        "{:?}",
        again.headers
    );
    let other = gw.get_with("/ap/mine", &bob).await;
    assert!(
        other.header("cache-status").contains("fwd=uri-miss"),
        "{:?}",
        other.headers
    );
    assert_eq!(p.count(), before + 2, "stored for alice only");
    gw.shutdown().await;
}

// R08: a `?cb=<random>` flood makes no entries when the route does not read
// `cb`; a flood of keys the route does read stays within `max_bytes`, with
// evictions counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_in_process_tier_stays_within_its_byte_bound() {
    let filler = "x".repeat(1000);
    let up =
        TestUpstream::start(move |seen| Reply::json(json!({"uri": seen.uri, "filler": filler})))
            .await;
    let max_bytes = 64 * 1024;
    let gw = CachedGateway::start(&format!(
        r#"
cache: {{ max_bytes: {max_bytes} }}
upstreams:
  a: {{ url: "{}" }}
routes:
  - get: /catalog
    cache: 10s
    calls:
      page: {{ get: "a:/catalog?page={{query.page}}" }}
  - get: /items
    calls:
      thing: {{ get: "a:/items/{{query.id}}", cache: 10s }}
"#,
        up.url()
    ))
    .await;
    for i in 0..300 {
        let r = gw.get(&format!("/catalog?page=1&cb={}", i * 7919)).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(up.count(), 1, "parameters outside the key make no entries");
    let evictions_before = metric("switchyard_cache_evictions_total", &[]);
    let mut tasks = Vec::new();
    for chunk in 0..8 {
        let url = format!("http://{}", gw.addr);
        tasks.push(tokio::spawn(async move {
            for i in 0..250 {
                let path = format!("{url}/items?id={}", chunk * 1000 + i);
                let r = send(Method::GET, &path, &[], Bytes::new()).await;
                assert_eq!(r.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (bytes, entries) = gw.gw.cache.held().await;
    assert!(bytes <= max_bytes, "{bytes} bytes held, bound {max_bytes}");
    assert!(entries < 2000, "{entries} entries: most were evicted");
    assert!(metric("switchyard_cache_evictions_total", &[]) > evictions_before);
    let stats = send(
        Method::GET,
        &format!("http://{}/cache", gw.admin),
        &[],
        Bytes::new(),
    )
    .await
    .json();
    assert!(stats["bytes"].as_u64().unwrap() <= max_bytes, "{stats}");
    gw.shutdown().await;
}

// R09: gzip and identity are separate variants, each marked with
// `Vary: Accept-Encoding`; a purge of the key removes both.
#[tokio::test]
async fn encoding_variants_are_separate_and_one_purge_removes_both() {
    let items: Vec<Value> = (0..100)
        .map(|i| json!({"id": i, "name": format!("product {i}")}))
        .collect();
    let up = TestUpstream::fixed(Reply::json(Value::Array(items))).await;
    let gw = CachedGateway::start(&format!(
        r#"
upstreams:
  products: {{ url: "{}" }}
routes:
  - get: /products
    cache: 1h
    calls:
      list: {{ get: "products:/products" }}
    respond: list.body
"#,
        up.url()
    ))
    .await;
    let gzip = [("accept-encoding", "gzip")];
    let zipped = gw.get_with("/products", &gzip).await;
    assert_eq!(zipped.header("content-encoding"), "gzip");
    assert!(
        zipped.header("vary").contains("accept-encoding"),
        "{:?}",
        zipped.headers
    );
    let mut plain_text = String::new();
    std::io::Read::read_to_string(
        &mut flate2::read::GzDecoder::new(&zipped.body[..]),
        &mut plain_text,
    )
    .unwrap();
    let plain = gw.get("/products").await;
    assert_eq!(
        plain.header("content-encoding"),
        "",
        "client 2 gets identity"
    );
    assert!(plain.header("vary").contains("accept-encoding"));
    assert_eq!(
        plain.json(),
        serde_json::from_str::<Value>(&plain_text).unwrap()
    );
    assert!(
        plain.header("cache-status").contains("fwd=uri-miss"),
        "its own variant"
    );
    for h in [&gzip[..], &[]] {
        assert!(
            gw.get_with("/products", h)
                .await
                .header("cache-status")
                .contains("; hit")
        );
    }
    assert_eq!(up.count(), 2);
    let report = gw
        .purge(&format!("key={}", url_encode("route GET /products")))
        .await;
    assert_eq!(report["purged"]["kind"], "key");
    for h in [&gzip[..], &[]] {
        let r = gw.get_with("/products", h).await;
        assert!(
            r.header("cache-status").contains("fwd=uri-miss"),
            "both variants purged: {:?}",
            r.headers
        );
    }
    assert_eq!(up.count(), 4);
    gw.shutdown().await;
}

// Purge by tag and by prefix removes exactly what they name.
#[tokio::test]
async fn purge_by_tag_and_prefix() {
    let up = TestUpstream::start(|seen| Reply::json(json!({"uri": seen.uri}))).await;
    let gw = CachedGateway::start(&format!(
        r#"
upstreams:
  products: {{ url: "{}" }}
routes:
  - get: /products/{{id}}
    calls:
      product:
        get: "products:/products/{{path.id}}"
        cache: {{ ttl: 1h, tags: ["product:{{path.id}}", "catalog"] }}
"#,
        up.url()
    ))
    .await;
    let desc = |r: &TestResponse| r.header("server-timing").to_string();
    for id in [7, 8, 9] {
        gw.get(&format!("/products/{id}")).await;
    }
    assert!(desc(&gw.get("/products/7").await).contains(r#"desc="hit""#));
    gw.purge("tag=product:7").await;
    assert!(
        desc(&gw.get("/products/7").await).contains(r#"desc="miss""#),
        "tag purged"
    );
    assert!(
        desc(&gw.get("/products/8").await).contains(r#"desc="hit""#),
        "other tags kept"
    );
    gw.purge(&format!("prefix={}", url_encode("products GET /products/")))
        .await;
    for id in [7, 8, 9] {
        assert!(desc(&gw.get(&format!("/products/{id}")).await).contains(r#"desc="miss""#));
    }
    gw.purge("tag=catalog").await;
    assert!(
        desc(&gw.get("/products/9").await).contains(r#"desc="miss""#),
        "shared tag purged"
    );
    assert_eq!(up.count(), 8);
    gw.shutdown().await;
}

// Stale-while-revalidate serves the stale answer at once and refreshes it
// in the background (one refresh); stale-if-error covers an upstream outage.
#[tokio::test]
async fn stale_answers_while_revalidating_and_on_error() {
    let up = counting(|n, _| Reply::json(json!({"n": n}))).await;
    let flaky = counting(|n, _| {
        if n == 0 {
            Reply::json(json!({"n": n}))
        } else {
            Reply::status(503)
        }
    })
    .await;
    let gw = CachedGateway::start(&format!(
        r#"
upstreams:
  a: {{ url: "{}" }}
  flaky: {{ url: "{}" }}
routes:
  - get: /swr
    calls:
      a: {{ get: "a:/swr", cache: {{ ttl: 1s, stale_while_revalidate: 10s }} }}
  - get: /sie
    cache: {{ ttl: 1s, stale_if_error: 10s }}
    calls:
      a: {{ get: "flaky:/flaky" }}
"#,
        up.url(),
        flaky.url()
    ))
    .await;
    assert_eq!(gw.get("/swr").await.json()["a"]["n"], 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stale = futures_util::future::join_all((0..20).map(|_| gw.get("/swr"))).await;
    for s in &stale {
        assert_eq!(s.json()["a"]["n"], 0, "served stale at once");
        assert!(
            s.header("server-timing").contains(r#"desc="stale""#),
            "{:?}",
            s.headers
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    while up.count() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(up.count(), 2, "exactly one background refresh");
    // The refreshed answer is stored as soon as it arrives.
    let mut fresh = gw.get("/swr").await;
    while fresh.json()["a"]["n"] != 1 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
        fresh = gw.get("/swr").await;
    }
    assert_eq!(fresh.json()["a"]["n"], 1);
    assert!(fresh.header("server-timing").contains(r#"desc="hit""#));
    assert_eq!(up.count(), 2, "and served from the cache");

    let first = gw.get("/sie").await;
    assert_eq!(first.status, 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let covered = gw.get("/sie").await;
    assert_eq!(covered.status, 200, "the stale answer covers the 503");
    assert_eq!(covered.body, first.body);
    assert!(
        covered
            .header("cache-status")
            .contains("fwd=stale; fwd-status=502"),
        "{:?}",
        covered.headers
    );
    gw.shutdown().await;
}

// Config mistakes in cache policies are reported with file:line:column,
// all at once.
#[test]
fn cache_config_errors_point_at_their_line() {
    let yaml = r#"upstreams:
  a: { url: "http://127.0.0.1:1" }
cache: { redis: true }
routes:
  - get: /a
    cache: { ttl: soon }
    calls:
      a: { post: "a:/a", cache: 10s }
  - get: /b
    calls:
      b: { get: "a:/b", cache: { ttl: 1s, statuses: [200, 503] } }
      c: { get: "a:/c", cache: { stale_if_error: 1m } }
  - get: /p/{*rest}
    proxy: "a:/{path.rest}"
    cache: 1m
"#;
    let err = match switchyard::plan::compile_str("test.yaml", yaml) {
        Err(switchyard::plan::LoadError::Invalid(r)) => r.to_string(),
        other => panic!("expected errors, got {:?}", other.map(|_| ())),
    };
    for want in [
        "test.yaml:3:17: error: `cache.redis` needs a Redis server",
        "test.yaml:6:19: error: `ttl`: `soon` is not a duration",
        "test.yaml:8:33: error: call `a`: only GET calls can be cached",
        "test.yaml:11:59: error: status 503 is never stored",
        "test.yaml:12:32: error: a cache policy needs a `ttl`",
        "test.yaml:15:12: error: a `proxy` route streams and is not cached",
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }
}

// --- the Redis tier, with real gateway processes ---------------------------

/// A `switchyard run` child process on free ports.
struct Process {
    child: std::process::Child,
    addr: SocketAddr,
    admin: SocketAddr,
    _dir: TempDir,
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Process {
    /// Runs the real binary with `body` (the config without `server`).
    async fn start(body: &str) -> Process {
        let (addr, admin) = (free_addr(), free_addr());
        let dir = std::env::temp_dir().join(format!(
            "switchyard-cache-{}-{}",
            std::process::id(),
            addr.port()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("config.yaml");
        std::fs::write(
            &file,
            format!("server: {{ listen: \"{addr}\", admin_listen: \"{admin}\" }}\n{body}"),
        )
        .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["run", "--config"])
            .arg(&file)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("the switchyard binary starts");
        let p = Process {
            child,
            addr,
            admin,
            _dir: TempDir(dir),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if tokio::net::TcpStream::connect(addr).await.is_ok()
                && tokio::net::TcpStream::connect(admin).await.is_ok()
            {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "gateway did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Let it subscribe to the purge channel.
        tokio::time::sleep(Duration::from_millis(200)).await;
        p
    }

    async fn get(&self, path: &str) -> TestResponse {
        send(
            Method::GET,
            &format!("http://{}{path}", self.addr),
            &[],
            Bytes::new(),
        )
        .await
    }
}

/// Waits (at most 5 s) until Redis holds at least `n` cache entries.
async fn wait_for_entries(redis: &RedisServer, n: usize) {
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("{switchyard}:cache:e:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        if keys.len() >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no entry reached Redis"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn redis_config(redis: &RedisServer, upstream: &str) -> String {
    format!(
        r#"
redis: {{ url: "{}" }}
cache: {{ redis: true }}
upstreams:
  products: {{ url: "{upstream}" }}
routes:
  - get: /products/{{id}}
    calls:
      product:
        get: "products:/products/{{path.id}}"
        cache: {{ ttl: 1h, tags: ["product:{{path.id}}"] }}
"#,
        redis.url()
    )
}

// Two gateway processes share one Redis: what one fetched, the other serves
// from Redis; a purge on one reaches the other's in-process tier within a
// second (pub/sub); the shared tier survives a gateway restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_redis_and_a_purge_reaches_both() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let up = TestUpstream::start(|seen| Reply::json(json!({"uri": seen.uri}))).await;
    let config = redis_config(&redis, &up.url());
    let a = Process::start(&config).await;
    let b = Process::start(&config).await;
    let desc = |r: &TestResponse| r.header("server-timing").to_string();

    assert!(desc(&a.get("/products/7").await).contains(r#"desc="miss""#));
    // The store to Redis runs just after the answer: wait until it is there.
    wait_for_entries(&redis, 1).await;
    let from_redis = b.get("/products/7").await;
    assert!(
        desc(&from_redis).contains(r#"desc="hit-redis""#),
        "{:?}",
        from_redis.headers
    );
    assert!(
        desc(&b.get("/products/7").await).contains(r#"desc="hit""#),
        "now in b's own tier"
    );
    assert_eq!(up.count(), 1);

    let report = purge(a.admin, "tag=product:7").await;
    assert_eq!(report["purged"]["broadcast"], true, "{report}");
    assert_eq!(report["purged"]["redis_deleted"], 1, "{report}");
    let purged_at = tokio::time::Instant::now();
    let mut reached = false;
    while purged_at.elapsed() < Duration::from_secs(1) {
        if desc(&b.get("/products/7").await).contains(r#"desc="miss""#) {
            reached = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        reached,
        "the purge reached instance b's in-process tier within 1 s"
    );
    assert_eq!(up.count(), 2);

    // Restart a: its in-process tier is gone, Redis still has the entry.
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let a = Process::start(&config).await;
    let after_restart = a.get("/products/7").await;
    assert!(
        desc(&after_restart).contains(r#"desc="hit-redis""#),
        "{:?}",
        after_restart.headers
    );
    assert_eq!(up.count(), 2);
}

// With Redis gone, the cache degrades to misses: every request still
// succeeds, and the failures are counted.
#[tokio::test]
async fn a_redis_outage_is_a_miss_not_a_failed_request() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let up = TestUpstream::start(|seen| Reply::json(json!({"uri": seen.uri}))).await;
    let gw = CachedGateway::start(&redis_config(&redis, &up.url())).await;
    assert_eq!(gw.get("/products/1").await.status, 200);
    redis.stop();
    let errors_before = metric("switchyard_cache_redis_errors_total", &[]);
    for id in 2..12 {
        let r = gw.get(&format!("/products/{id}")).await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    assert!(
        gw.get("/products/1")
            .await
            .header("server-timing")
            .contains(r#"desc="hit""#)
    );
    assert!(metric("switchyard_cache_redis_errors_total", &[]) > errors_before);
    let report = gw.purge("tag=product:1").await;
    assert_eq!(report["purged"]["broadcast"], false);
    assert!(report["purged"]["redis_deleted"].is_null());
    assert!(
        gw.get("/products/1")
            .await
            .header("server-timing")
            .contains(r#"desc="miss""#),
        "the local purge still applies"
    );
    gw.shutdown().await;
}

// Misspelt cache fields are reported with the other errors, with suggestions.
#[test]
fn misspelt_cache_fields_are_reported_with_suggestions() {
    let yaml = r#"upstreams:
  a: { url: "http://127.0.0.1:1" }
cache: { max_byte: 1MiB }
redis: { url: "redis://127.0.0.1:6379", db: 1 }
routes:
  - get: /a
    cache: { ttl: 1s, stale_while_revalidte: 1s }
    calls:
      a: { get: "a:/a", cache: { ttl: 1s, scpoe: public } }
"#;
    let err = match switchyard::plan::compile_str("test.yaml", yaml) {
        Err(switchyard::plan::LoadError::Invalid(r)) => r.to_string(),
        other => panic!("expected errors, got {:?}", other.map(|_| ())),
    };
    for want in [
        "test.yaml:3:10: error: unknown field `max_byte` in `cache`; did you mean `max_bytes`?",
        "test.yaml:4:41: error: unknown field `db` in `redis`",
        "test.yaml:7:23: error: unknown field `stale_while_revalidte` in a cache policy; did you mean `stale_while_revalidate`?",
        "test.yaml:9:43: error: unknown field `scpoe` in a cache policy; did you mean `scope`?",
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }
}
