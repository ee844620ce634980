//! The call graph end to end: parallelism, dependency order, fan-out,
//! deadlines, cancellation, pooling and `Server-Timing`, proved from what the
//! test upstreams recorded (request intervals), never from wall-clock speed.

use crate::common::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// The `upstreams:` section for these servers followed by `routes` (plain
/// text, so templates keep their single braces).
async fn gateway(upstreams: &[(&str, &TestUpstream)], routes: &str) -> TestGateway {
    let mut yaml = String::from("upstreams:\n");
    for (name, up) in upstreams {
        yaml.push_str(&format!("  {name}: {{ url: \"{}\" }}\n", up.url()));
    }
    yaml.push_str(routes);
    TestGateway::start(&yaml).await
}

/// Whether two requests were open at the same time on the upstream side.
fn overlap(a: &Seen, b: &Seen) -> bool {
    a.started < b.finished && b.started < a.finished
}

/// The largest number of requests open at one instant (a request that
/// finished at the instant another started does not count as open).
fn max_overlap(seen: &[Seen]) -> usize {
    let mut events: Vec<(Instant, i32)> = Vec::new();
    for s in seen {
        events.push((s.started, 1));
        events.push((s.finished, -1));
    }
    events.sort(); // at equal instants -1 sorts before +1
    let (mut open, mut max) = (0i32, 0i32);
    for (_, d) in events {
        open += d;
        max = max.max(open);
    }
    max as usize
}

/// The one request whose URI is exactly `uri`.
fn request<'a>(seen: &'a [Seen], uri: &str) -> &'a Seen {
    let found: Vec<&Seen> = seen.iter().filter(|s| s.uri == uri).collect();
    assert_eq!(
        found.len(),
        1,
        "expected exactly one request {uri}, saw {:?}",
        uris(seen)
    );
    found[0]
}

fn uris(seen: &[Seen]) -> Vec<String> {
    seen.iter().map(|s| s.uri.clone()).collect()
}

/// `Server-Timing` entries as (name, params) pairs.
fn server_timing(r: &TestResponse) -> Vec<(String, String)> {
    r.header("server-timing")
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| match e.split_once(';') {
            Some((n, p)) => (n.to_string(), p.to_string()),
            None => (e.to_string(), String::new()),
        })
        .collect()
}

/// The value of `dur=` in one entry's params, if it has one.
fn dur(params: &str) -> Option<f64> {
    params
        .split(';')
        .find_map(|p| p.strip_prefix("dur="))
        .map(|d| {
            d.parse()
                .unwrap_or_else(|_| panic!("bad dur in {params:?}"))
        })
}

/// The last path segment of a request, e.g. `/p/3` → `3`.
fn last_segment(s: &Seen) -> String {
    s.uri.rsplit('/').next().unwrap().to_string()
}

fn assert_problem(r: &TestResponse, status: u16, call: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/problem+json");
    let body = r.json();
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(body["call"], call, "{body}");
    assert!(
        body["detail"].as_str().unwrap_or("").contains(call),
        "{body}"
    );
}

// Independent calls are all in flight at the same time.
#[tokio::test]
async fn independent_calls_run_in_parallel() {
    let up = TestUpstream::start(|s| Reply::json(json!({"uri": s.uri})).after(ms(100))).await;
    let gw = gateway(
        &[("up", &up)],
        r#"
routes:
  - get: /x
    calls:
      a: { get: "up:/a" }
      b: { get: "up:/b" }
      c: { get: "up:/c" }
"#,
    )
    .await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"a": {"uri": "/a"}, "b": {"uri": "/b"}, "c": {"uri": "/c"}})
    );
    let seen = up.seen();
    let (a, b, c) = (
        request(&seen, "/a"),
        request(&seen, "/b"),
        request(&seen, "/c"),
    );
    assert!(overlap(a, b), "a and b did not overlap: {seen:#?}");
    assert!(overlap(a, c), "a and c did not overlap: {seen:#?}");
    assert!(overlap(b, c), "b and c did not overlap: {seen:#?}");
}

// A call templated on another's body is sent only after that one answered, with its value.
#[tokio::test]
async fn dependent_call_waits_and_gets_the_value() {
    let a = TestUpstream::fixed(Reply::json(json!({"id": 42})).after(ms(50))).await;
    let b = TestUpstream::fixed(Reply::json(json!({"ok": true}))).await;
    let gw = gateway(
        &[("a", &a), ("b", &b)],
        r#"
routes:
  - get: /x
    calls:
      a: { get: "a:/a" }
      b: { get: "b:/b/{a.body.id}" }
"#,
    )
    .await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"a": {"id": 42}, "b": {"ok": true}}));
    let (sa, sb) = (&a.seen()[0], &b.seen()[0]);
    assert_eq!(sb.uri, "/b/42");
    assert!(sb.started >= sa.finished, "b started before a finished");
}

// A call starts as soon as its own inputs are ready, not when a whole level is done.
#[tokio::test]
async fn dependent_call_does_not_wait_for_unrelated_slow_call() {
    let up = TestUpstream::start(|s| {
        let delay = match s.uri.as_str() {
            "/a" => ms(20),
            "/b" => ms(300),
            _ => ms(0),
        };
        Reply::json(json!({"id": 1})).after(delay)
    })
    .await;
    let gw = gateway(
        &[("up", &up)],
        r#"
routes:
  - get: /x
    calls:
      a: { get: "up:/a" }
      b: { get: "up:/b" }
      c: { get: "up:/c/{a.body.id}" }
"#,
    )
    .await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = up.seen();
    let (a, b, c) = (
        request(&seen, "/a"),
        request(&seen, "/b"),
        request(&seen, "/c/1"),
    );
    assert!(c.started >= a.finished, "c started before a finished");
    assert!(
        c.started < b.finished,
        "c waited for the unrelated slow call b: {seen:#?}"
    );
}

// Diamond A → B, A → C, B + C → D: B and C run together after A, D after both.
#[tokio::test]
async fn diamond_runs_each_call_once_in_dependency_order() {
    let up = TestUpstream::start(|s| {
        let (body, delay) = match s.uri.as_str() {
            "/a" => (json!({"id": "x"}), ms(20)),
            u if u.starts_with("/b/") => (json!({"v": "bee"}), ms(100)),
            u if u.starts_with("/c/") => (json!({"v": "sea"}), ms(60)),
            _ => (json!({"v": "dee"}), ms(0)),
        };
        Reply::json(body).after(delay)
    })
    .await;
    let gw = gateway(
        &[("up", &up)],
        r#"
routes:
  - get: /x
    calls:
      a: { get: "up:/a" }
      b: { get: "up:/b/{a.body.id}" }
      c: { get: "up:/c/{a.body.id}" }
      d: { get: "up:/d?b={b.body.v}&c={c.body.v}" }
"#,
    )
    .await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["d"], json!({"v": "dee"}));
    let seen = up.seen();
    assert_eq!(seen.len(), 4, "{:?}", uris(&seen));
    let a = request(&seen, "/a");
    let b = request(&seen, "/b/x");
    let c = request(&seen, "/c/x");
    let d = request(&seen, "/d?b=bee&c=sea");
    assert!(b.started >= a.finished && c.started >= a.finished);
    assert!(overlap(b, c), "b and c did not run in parallel: {seen:#?}");
    assert!(d.started >= b.finished && d.started >= c.finished);
}

// `[*]` projection with `|distinct|join` sends one batched call with each id once, first-seen order.
#[tokio::test]
async fn batch_call_gets_distinct_joined_ids() {
    let orders = TestUpstream::fixed(Reply::json(json!([
        {"product_id": 3}, {"product_id": 1}, {"product_id": 3}, {"product_id": 2}
    ])))
    .await;
    let products = TestUpstream::fixed(Reply::json(json!([{"id": 3}, {"id": 1}, {"id": 2}]))).await;
    let gw = gateway(
        &[("orders", &orders), ("products", &products)],
        r#"
routes:
  - get: /x
    calls:
      orders: { get: "orders:/orders" }
      products: { get: "products:/products?ids={orders.body[*].product_id|distinct|join}" }
"#,
    )
    .await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(products.count(), 1);
    assert_eq!(products.seen()[0].uri, "/products?ids=3,1,2");
    assert_eq!(
        r.json()["products"],
        json!([{"id": 3}, {"id": 1}, {"id": 2}])
    );
}

// A batched call over an empty list is not sent and its body is `[]`.
#[tokio::test]
async fn batch_call_over_empty_list_is_not_sent() {
    let orders = TestUpstream::fixed(Reply::json(json!([]))).await;
    let products = TestUpstream::fixed(Reply::json(json!(["should not be used"]))).await;
    let gw = gateway(
        &[("orders", &orders), ("products", &products)],
        r#"
routes:
  - get: /x
    calls:
      orders: { get: "orders:/orders" }
      products: { get: "products:/products?ids={orders.body[*].product_id|distinct|join}" }
"#,
    )
    .await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"orders": [], "products": []}));
    assert_eq!(products.count(), 0);
    assert_eq!(products.connections(), 0);
    let timing = server_timing(&r);
    let entry = &timing
        .iter()
        .find(|(n, _)| n == "products")
        .expect("products entry")
        .1;
    assert!(entry.contains("desc="), "products;{entry}");
}

/// A `for_each` route over `list.body` calling `items:/p/{item}`.
const FOR_EACH_ROUTE: &str = r#"
routes:
  - get: /x
    calls:
      list: { get: "list:/list" }
      details:
        for_each: "list.body"
        get: "items:/p/{item}"
        concurrency: CONCURRENCY
        on_item_error: ON_ITEM_ERROR
    respond: details.body
"#;

async fn for_each_gateway(
    list: &TestUpstream,
    items: &TestUpstream,
    concurrency: u32,
    on_item_error: &str,
) -> TestGateway {
    let routes = FOR_EACH_ROUTE
        .replace("CONCURRENCY", &concurrency.to_string())
        .replace("ON_ITEM_ERROR", on_item_error);
    gateway(&[("list", list), ("items", items)], &routes).await
}

// `for_each` requests each distinct item once and keeps input order even when later items answer first.
#[tokio::test]
async fn for_each_collapses_duplicates_and_keeps_input_order() {
    let list = TestUpstream::fixed(Reply::json(json!([3, 1, 3, 2]))).await;
    let items = TestUpstream::start(|s| {
        // Input order is 3, 1, 2: earlier items answer later.
        let (n, delay) = match last_segment(s).as_str() {
            "3" => (3, 150),
            "1" => (1, 100),
            _ => (2, 50),
        };
        Reply::json(json!({"id": n})).after(ms(delay))
    })
    .await;
    let gw = for_each_gateway(&list, &items, 8, "fail").await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!([{"id": 3}, {"id": 1}, {"id": 2}]));
    let seen = items.seen();
    let mut requested = uris(&seen);
    requested.sort();
    assert_eq!(requested, ["/p/1", "/p/2", "/p/3"]);
    // The upstream answered out of input order (seen is in completion order).
    assert_eq!(uris(&seen), ["/p/2", "/p/1", "/p/3"]);
}

// `concurrency: 3` over 10 items: exactly 3 item requests are ever open at once.
#[tokio::test]
async fn for_each_respects_concurrency_cap() {
    let list = TestUpstream::fixed(Reply::json(json!([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]))).await;
    let items = TestUpstream::start(|s| Reply::json(json!(last_segment(s))).after(ms(100))).await;
    let gw = for_each_gateway(&list, &items, 3, "fail").await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!(["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"])
    );
    let seen = items.seen();
    assert_eq!(seen.len(), 10);
    assert_eq!(max_overlap(&seen), 3, "{seen:#?}");
}

/// Items upstream where item 2 answers 500.
async fn items_with_failing_2() -> TestUpstream {
    TestUpstream::start(|s| match last_segment(s).as_str() {
        "2" => Reply::status(500),
        n => Reply::json(json!({"id": n})),
    })
    .await
}

// `on_item_error: fail`: one failed item fails the route with 502 naming the call.
#[tokio::test]
async fn for_each_item_error_fail() {
    let list = TestUpstream::fixed(Reply::json(json!([1, 2, 3]))).await;
    let items = items_with_failing_2().await;
    let gw = for_each_gateway(&list, &items, 1, "fail").await;
    let r = gw.get("/x").await;
    assert_problem(&r, 502, "details");
}

// `on_item_error: keep_null`: a failed item is `null` in its place.
#[tokio::test]
async fn for_each_item_error_keep_null() {
    let list = TestUpstream::fixed(Reply::json(json!([1, 2, 3]))).await;
    let items = items_with_failing_2().await;
    let gw = for_each_gateway(&list, &items, 4, "keep_null").await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!([{"id": "1"}, null, {"id": "3"}]));
}

// `on_item_error: skip`: a failed item is left out.
#[tokio::test]
async fn for_each_item_error_skip() {
    let list = TestUpstream::fixed(Reply::json(json!([1, 2, 3]))).await;
    let items = items_with_failing_2().await;
    let gw = for_each_gateway(&list, &items, 4, "skip").await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!([{"id": "1"}, {"id": "3"}]));
}

// `for_each` over an empty list sends nothing and yields `[]`.
#[tokio::test]
async fn for_each_over_empty_list_sends_nothing() {
    let list = TestUpstream::fixed(Reply::json(json!([]))).await;
    let items = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = for_each_gateway(&list, &items, 4, "fail").await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!([]));
    assert_eq!(items.count(), 0);
    assert_eq!(items.connections(), 0);
}

// The route deadline cuts a slow call: 504 naming it, long before the upstream would answer.
#[tokio::test]
async fn route_deadline_gives_504() {
    let slow = TestUpstream::fixed(Reply::json(json!({})).after(ms(2000))).await;
    let gw = gateway(
        &[("slow", &slow)],
        r#"
routes:
  - get: /x
    timeout: 300ms
    calls:
      sleepy: { get: "slow:/s" }
"#,
    )
    .await;
    let t = Instant::now();
    let r = gw.get("/x").await;
    let took = t.elapsed();
    assert_problem(&r, 504, "sleepy");
    assert!(took >= ms(280), "answered before the deadline: {took:?}");
    assert!(took < ms(1500), "deadline not enforced: {took:?}");
}

// A call's own `timeout` beats its upstream's longer one.
#[tokio::test]
async fn call_timeout_tighter_than_upstream_applies() {
    let slow = TestUpstream::fixed(Reply::json(json!({})).after(ms(2000))).await;
    let gw = TestGateway::start(&format!(
        r#"
upstreams:
  slow: {{ url: "{}", timeout: 1500ms }}
routes:
  - get: /x
    calls:
      sleepy: {{ get: "slow:/s", timeout: 200ms }}
"#,
        slow.url()
    ))
    .await;
    let t = Instant::now();
    let r = gw.get("/x").await;
    let took = t.elapsed();
    assert_problem(&r, 504, "sleepy");
    assert_eq!(r.json()["kind"], "timeout");
    assert!(
        took < ms(1000),
        "the call's 200ms timeout did not apply: {took:?}"
    );
}

// In a chain the later call only gets the time left before the route deadline.
#[tokio::test]
async fn chained_call_gets_only_time_left() {
    let a = TestUpstream::fixed(Reply::json(json!({"id": 1})).after(ms(200))).await;
    let b = TestUpstream::fixed(Reply::json(json!({})).after(ms(200))).await;
    let gw = gateway(
        &[("a", &a), ("b", &b)],
        r#"
routes:
  - get: /x
    timeout: 300ms
    calls:
      a: { get: "a:/a" }
      b: { get: "b:/b/{a.body.id}" }
"#,
    )
    .await;
    let r = gw.get("/x").await;
    assert_problem(&r, 504, "b");
    assert_eq!(a.count(), 1, "a should have answered");
    assert_eq!(b.count(), 0, "b should have been cut off");
}

// A required call failing cancels a slow sibling: its upstream connection is closed.
#[tokio::test]
async fn failing_call_cancels_running_siblings() {
    let failing = TestUpstream::fixed(Reply::status(500).after(ms(100))).await;
    let arrived = Arc::new(AtomicU64::new(0));
    let arrived2 = arrived.clone();
    let slow = TestUpstream::start(move |_| {
        arrived2.fetch_add(1, Ordering::SeqCst);
        Reply::json(json!({})).after(ms(3000))
    })
    .await;
    let gw = gateway(
        &[("failing", &failing), ("slow", &slow)],
        r#"
routes:
  - get: /x
    calls:
      boom: { get: "failing:/f" }
      sleepy: { get: "slow:/s" }
"#,
    )
    .await;
    let t = Instant::now();
    let r = gw.get("/x").await;
    let took = t.elapsed();
    assert_problem(&r, 502, "boom");
    assert!(took < ms(1500), "502 was not prompt: {took:?}");
    assert_eq!(arrived.load(Ordering::SeqCst), 1, "sibling was never sent");
    let give_up = Instant::now() + ms(1000);
    while slow.in_flight() > 0 && Instant::now() < give_up {
        tokio::time::sleep(ms(10)).await;
    }
    assert_eq!(slow.in_flight(), 0, "sibling request was not cancelled");
    assert_eq!(slow.count(), 0, "sibling request ran to completion");
}

// Sequential requests reuse one kept-alive upstream connection.
#[tokio::test]
async fn upstream_connections_are_pooled() {
    let up = TestUpstream::fixed(Reply::json(json!({"ok": true}))).await;
    let gw = gateway(
        &[("up", &up)],
        r#"
routes:
  - get: /x
    calls:
      a: { get: "up:/a" }
"#,
    )
    .await;
    for _ in 0..20 {
        let r = gw.get("/x").await;
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let seen = up.seen();
    assert_eq!(seen.len(), 20);
    assert!(up.connections() <= 2, "{} connections", up.connections());
    let first = seen[0].connection;
    assert!(
        seen.iter().all(|s| s.connection == first),
        "connections used: {:?}",
        seen.iter().map(|s| s.connection).collect::<Vec<_>>()
    );
}

// `Server-Timing` has one `dur=` entry per call plus `total`.
#[tokio::test]
async fn server_timing_has_one_entry_per_call_and_total() {
    let up = TestUpstream::fixed(Reply::json(json!({"id": 1})).after(ms(20))).await;
    let gw = gateway(
        &[("up", &up)],
        r#"
routes:
  - get: /x
    calls:
      alpha: { get: "up:/a" }
      beta: { get: "up:/b" }
      gamma: { get: "up:/c/{alpha.body.id}" }
"#,
    )
    .await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let entries = server_timing(&r);
    let mut names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(names, ["alpha", "beta", "gamma", "total"], "{entries:?}");
    for (name, params) in &entries {
        let d = dur(params).unwrap_or_else(|| panic!("{name} has no dur: {entries:?}"));
        assert!(d >= 0.0, "{entries:?}");
        if name != "total" {
            // Every call took at least the upstream's 20ms.
            assert!(d >= 19.0, "{name};{params}");
        }
    }
}

// A call skipped because its optional dependency failed still shows in `Server-Timing`, with a desc.
#[tokio::test]
async fn server_timing_shows_skipped_call_with_desc() {
    let ok = TestUpstream::fixed(Reply::json(json!({"id": 1}))).await;
    let bad = TestUpstream::fixed(Reply::status(500)).await;
    let gw = gateway(
        &[("ok", &ok), ("bad", &bad)],
        r#"
routes:
  - get: /x
    calls:
      base: { get: "ok:/a" }
      extra: { get: "bad:/b", optional: true }
      follow: { get: "ok:/c/{extra.body.id}", optional: true }
"#,
    )
    .await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"base": {"id": 1}, "extra": null, "follow": null})
    );
    assert_eq!(ok.count(), 1, "the skipped call was sent");
    let entries = server_timing(&r);
    let mut names: Vec<&str> = entries.iter().map(|(n, _)| n.as_str()).collect();
    names.sort();
    assert_eq!(names, ["base", "extra", "follow", "total"], "{entries:?}");
    let follow = &entries.iter().find(|(n, _)| n == "follow").unwrap().1;
    assert!(follow.contains("desc="), "follow;{follow}");
    let extra = &entries.iter().find(|(n, _)| n == "extra").unwrap().1;
    assert!(
        extra.contains("desc=") && dur(extra).is_some(),
        "extra;{extra}"
    );
}

// `{a.status}` and `{a.headers.NAME}` of an earlier call can be used in a later call's URL.
#[tokio::test]
async fn status_and_headers_of_earlier_call_in_url() {
    let a = TestUpstream::fixed(
        Reply::json(json!({}))
            .with_status(201)
            .header("x-next", "page-2"),
    )
    .await;
    let b = TestUpstream::fixed(Reply::json(json!({"ok": true}))).await;
    let gw = gateway(
        &[("a", &a), ("b", &b)],
        r#"
routes:
  - get: /x
    calls:
      a: { get: "a:/a" }
      b: { get: "b:/b?status={a.status}&next={a.headers.x-next}" }
"#,
    )
    .await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(b.count(), 1);
    assert_eq!(b.seen()[0].uri, "/b?status=201&next=page-2");
    let v: Value = r.json();
    assert_eq!(v["b"], json!({"ok": true}));
}
