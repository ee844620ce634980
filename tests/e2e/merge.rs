//! `merge`: first listed wins regardless of timing (R01), non-object bodies
//! go under the call's name and arrays pass through `respond` (R02).

use crate::common::*;
use serde_json::json;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::task::JoinSet;

/// A random delay in 0..=max_ms (splitmix64 over a shared counter seeded
/// from the clock, so every run shuffles differently).
fn random_delay(max_ms: u64) -> Duration {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let _ = STATE.compare_exchange(
        0,
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64
            | 1,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    let mut z = STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::SeqCst);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    Duration::from_millis(z % (max_ms + 1))
}

/// Requests `path` `n` times at once (run `i` sends `x-run: i`) and
/// returns every status and body.
async fn bodies(gw: &TestGateway, path: &str, n: usize) -> Vec<(u16, bytes::Bytes)> {
    let mut set = JoinSet::new();
    for i in 0..n {
        let url = gw.url(path);
        set.spawn(async move {
            let run = i.to_string();
            let headers = [("x-run", run.as_str())];
            let r = send(http::Method::GET, &url, &headers, bytes::Bytes::new()).await;
            (r.status.as_u16(), r.body)
        });
    }
    set.join_all().await
}

/// Two upstreams with colliding keys, both answering after 0–100 ms.
async fn colliding() -> (TestUpstream, TestUpstream) {
    let a = TestUpstream::start(|_| {
        Reply::json(json!({"items": [1], "v": "a"})).after(random_delay(100))
    })
    .await;
    let b = TestUpstream::start(|_| {
        Reply::json(json!({"items": [2], "v": "b"})).after(random_delay(100))
    })
    .await;
    (a, b)
}

/// Asserts both upstreams answered every run and that each finished first
/// in some runs, so the merge really saw both timings.
fn assert_timing_was_shuffled(a: &TestUpstream, b: &TestUpstream) {
    let finished = |u: &TestUpstream| -> HashMap<String, tokio::time::Instant> {
        u.seen()
            .into_iter()
            .map(|s| (s.headers["x-run"].to_str().unwrap().to_string(), s.finished))
            .collect()
    };
    let (fa, fb) = (finished(a), finished(b));
    assert_eq!((fa.len(), fb.len()), (50, 50));
    let b_first = fa.iter().filter(|(run, t)| fb[*run] < **t).count();
    assert!(
        b_first > 0 && b_first < 50,
        "B finished first in {b_first} of 50 runs; latencies were not shuffled"
    );
}

fn dash_config(a: &TestUpstream, b: &TestUpstream) -> String {
    format!(
        r#"
upstreams:
  a: {{ url: "{}" }}
  b: {{ url: "{}" }}
routes:
  - get: /dash
    forward_headers: [x-run]
    calls:
      a: {{ get: "a:/a" }}
      b: {{ get: "b:/b" }}
    merge: [a, b]
  - get: /dash-swapped
    forward_headers: [x-run]
    calls:
      a: {{ get: "a:/a" }}
      b: {{ get: "b:/b" }}
    merge: [b, a]
"#,
        a.url(),
        b.url()
    )
}

// R01: with random latencies on both sides, 50 merges are byte-identical and
// the first call listed wins every colliding key.
#[tokio::test]
async fn merge_collision_first_listed_wins_regardless_of_timing() {
    let (a, b) = colliding().await;
    let gw = TestGateway::start(&dash_config(&a, &b)).await;
    for (status, body) in bodies(&gw, "/dash", 50).await {
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(&body[..], br#"{"items":[1],"v":"a"}"#);
    }
    assert_timing_was_shuffled(&a, &b);
}

// R01: swapping the order in `merge` flips the winner, again independent of timing.
#[tokio::test]
async fn merge_collision_swapped_order_flips_winner() {
    let (a, b) = colliding().await;
    let gw = TestGateway::start(&dash_config(&a, &b)).await;
    for (status, body) in bodies(&gw, "/dash-swapped", 50).await {
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        assert_eq!(&body[..], br#"{"items":[2],"v":"b"}"#);
    }
    assert_timing_was_shuffled(&a, &b);
}

async fn array_and_object() -> (TestUpstream, TestUpstream, TestUpstream) {
    let a = TestUpstream::fixed(Reply::json(json!([{"id": 1}, {"id": 2}]))).await;
    let b = TestUpstream::fixed(Reply::json(json!({"total": 2}))).await;
    let down = TestUpstream::fixed(Reply::status(503)).await;
    (a, b, down)
}

fn array_config(a: &TestUpstream, b: &TestUpstream, down: &TestUpstream) -> String {
    format!(
        r#"
upstreams:
  a: {{ url: "{}" }}
  b: {{ url: "{}" }}
  down: {{ url: "{}" }}
routes:
  - get: /merged
    calls:
      a: {{ get: "a:/list" }}
      b: {{ get: "b:/total" }}
    merge: [a, b]
  - get: /list
    calls:
      a: {{ get: "a:/list" }}
    respond: a.body
  - get: /partial
    calls:
      b: {{ get: "b:/total" }}
      extra: {{ get: "down:/extra", optional: true }}
    merge: [b, extra]
"#,
        a.url(),
        b.url(),
        down.url()
    )
}

// R02: an array body in a merge goes under its call's name; never a 500.
#[tokio::test]
async fn merge_puts_array_body_under_call_name() {
    let (a, b, down) = array_and_object().await;
    let gw = TestGateway::start(&array_config(&a, &b, &down)).await;
    let r = gw.get("/merged").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), r#"{"a":[{"id":1},{"id":2}],"total":2}"#);
}

// R02: `respond: a.body` returns an upstream's top-level array unchanged.
#[tokio::test]
async fn respond_single_expression_returns_top_level_array() {
    let (a, b, down) = array_and_object().await;
    let gw = TestGateway::start(&array_config(&a, &b, &down)).await;
    let r = gw.get("/list").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!([{"id": 1}, {"id": 2}]));
}

// A failed optional call contributes nothing to a merge and is named in
// Switchyard-Missing.
#[tokio::test]
async fn merge_failed_optional_call_contributes_nothing() {
    let (a, b, down) = array_and_object().await;
    let gw = TestGateway::start(&array_config(&a, &b, &down)).await;
    let r = gw.get("/partial").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), r#"{"total":2}"#);
    assert_eq!(r.header("switchyard-missing"), "extra");
    assert_eq!(down.count(), 1);
}
