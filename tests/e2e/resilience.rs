//! Upstream policies end to end: retries and their budget (R13), the circuit
//! breaker (R15), the bulkhead and hedging. Each test uses its own upstream
//! names so that the process-wide metrics of parallel tests do not mix.

use crate::common::*;
use crate::kit::{metric, ms};
use bytes::Bytes;
use http::Method;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tokio::time::Instant;

fn assert_problem(r: &TestResponse, status: u16, kind: &str, upstream: &str) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/problem+json");
    let body = r.json();
    assert_eq!(body["kind"], kind, "{body}");
    assert_eq!(body["upstream"], upstream, "{body}");
}

// An idempotent call is retried on a configured status and then succeeds.
#[tokio::test]
async fn get_is_retried_on_503_until_it_succeeds() {
    let n = Arc::new(AtomicU64::new(0));
    let n2 = n.clone();
    let up = TestUpstream::start(move |_| {
        if n2.fetch_add(1, Ordering::SeqCst) < 2 {
            Reply::status(503)
        } else {
            Reply::json(json!({"ok": true}))
        }
    })
    .await;
    let gw = TestGateway::start(&format!(
        r#"
upstreams:
  retry_ok: {{ url: "{}", retry: {{ retries: 2, backoff: 5ms, budget_min_per_second: 10 }} }}
routes:
  - get: /x
    calls:
      a: {{ get: "retry_ok:/a" }}
"#,
        up.url()
    ))
    .await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["a"]["ok"], true);
    assert_eq!(up.count(), 3);
    assert!(
        metric(
            "switchyard_retry_attempts_total",
            &[r#"upstream="retry_ok""#]
        ) >= 2.0
    );
}

// POST is not idempotent: never retried unless the call says it is safe.
#[tokio::test]
async fn post_is_retried_only_when_marked_unsafe_methods() {
    let up = TestUpstream::fixed(Reply::status(503)).await;
    let gw = TestGateway::start(&format!(
        r#"
upstreams:
  retry_post: {{ url: "{}", retry: {{ retries: 2, backoff: 5ms, budget_min_per_second: 10 }} }}
routes:
  - post: /plain
    calls:
      a: {{ post: "retry_post:/a", body: {{ x: "'1'" }} }}
  - post: /marked
    calls:
      a: {{ post: "retry_post:/a", body: {{ x: "'1'" }}, retry: {{ unsafe_methods: true }} }}
"#,
        up.url()
    ))
    .await;
    let r = send(Method::POST, &gw.url("/plain"), &[], Bytes::new()).await;
    assert_problem(&r, 502, "status", "retry_post");
    assert_eq!(up.count(), 1);
    let r = send(Method::POST, &gw.url("/marked"), &[], Bytes::new()).await;
    assert_problem(&r, 502, "status", "retry_post");
    assert_eq!(up.count(), 4);
}

// A 4xx or a condition not listed is never retried.
#[tokio::test]
async fn unlisted_failures_are_not_retried() {
    let up = TestUpstream::fixed(Reply::status(500)).await;
    let gw = TestGateway::start(&format!(
        r#"
upstreams:
  retry_500: {{ url: "{}", retry: {{ retries: 3, backoff: 5ms, on: [503] }} }}
routes:
  - get: /x
    calls:
      a: {{ get: "retry_500:/a" }}
"#,
        up.url()
    ))
    .await;
    assert_eq!(gw.get("/x").await.status, 502);
    assert_eq!(up.count(), 1);
}

// R13: an always-503 upstream, 100 concurrent GETs, retries=3, per-try
// timeout 500 ms, route deadline 1 s, budget 20 %: the upstream sees about
// 120 requests (100 first attempts + 20 % + the per-second minimum), not
// 400, and every response comes within the deadline.
#[tokio::test]
async fn r13_retry_budget_stops_a_retry_storm() {
    let up = TestUpstream::fixed(Reply::status(503)).await;
    let gw = TestGateway::start(&format!(
        r#"
upstreams:
  r13: {{ url: "{}", timeout: 500ms, retry: {{ retries: 3, backoff: 10ms, budget_percent: 20 }} }}
routes:
  - get: /x
    timeout: 1s
    calls:
      a: {{ get: "r13:/a" }}
"#,
        up.url()
    ))
    .await;
    let gw = Arc::new(gw);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = gw.get("/x").await;
            (r.status, t.elapsed())
        }));
    }
    for t in tasks {
        let (status, took) = t.await.unwrap();
        assert_eq!(status, 502);
        // The route deadline (1 s) plus a margin for a loaded machine.
        assert!(took < ms(1500), "a response took {took:?}");
    }
    let seen = up.count();
    // 100 first attempts + 20 by ratio + 1 per second by the minimum (the
    // test may straddle a second boundary: + 2).
    assert!(
        (100..=122).contains(&seen),
        "the upstream saw {seen} requests"
    );
    assert!(
        metric(
            "switchyard_retry_budget_exhausted_total",
            &[r#"upstream="r13""#]
        ) > 0.0
    );
}

/// An upstream whose health a test switches: 503 while failing, else 200
/// after `delay_ms`.
struct Switchable {
    up: TestUpstream,
    failing: Arc<AtomicBool>,
    delay_ms: Arc<AtomicU64>,
}

async fn switchable() -> Switchable {
    let failing = Arc::new(AtomicBool::new(true));
    let delay_ms = Arc::new(AtomicU64::new(0));
    let (f, d) = (failing.clone(), delay_ms.clone());
    let up = TestUpstream::start(move |_| {
        if f.load(Ordering::SeqCst) {
            Reply::status(503)
        } else {
            Reply::json(json!({"ok": true})).after(ms(d.load(Ordering::SeqCst)))
        }
    })
    .await;
    Switchable {
        up,
        failing,
        delay_ms,
    }
}

fn breaker_config(name: &str, url: &str) -> String {
    format!(
        r#"
upstreams:
  {name}: {{ url: "{url}", timeout: 300ms, breaker: {{ min_calls: 5, failure_percent: 50, open_for: 1s }} }}
routes:
  - get: /x
    calls:
      a: {{ get: "{name}:/a" }}
  - get: /opt
    calls:
      a: {{ get: "{name}:/a", optional: true }}
    respond: {{ a: a.body, errors: $errors }}
"#
    )
}

fn circuit(name: &str) -> f64 {
    metric(
        "switchyard_circuit_state",
        &[&format!(r#"upstream="{name}""#)],
    )
}

// R15 (a): five 503s open the breaker; while open, calls fail fast with a 503
// naming the upstream (or null for optional calls) and reach no upstream;
// after the open period exactly one probe goes out, and its success closes it.
#[tokio::test]
async fn r15a_breaker_opens_probes_once_and_closes() {
    let s = switchable().await;
    let gw = TestGateway::start(&breaker_config("r15a", &s.up.url())).await;
    for _ in 0..5 {
        assert_eq!(gw.get("/x").await.status, 502);
    }
    assert_eq!(circuit("r15a"), 1.0);
    let t = Instant::now();
    let r = gw.get("/x").await;
    let took = t.elapsed();
    assert_problem(&r, 503, "circuit_open", "r15a");
    assert!(took < ms(100), "failing fast took {took:?}");
    let opt = gw.get("/opt").await;
    assert_eq!(opt.status, 200);
    assert_eq!(opt.json()["a"], json!(null));
    assert_eq!(opt.json()["errors"][0]["kind"], "circuit_open");
    assert_eq!(opt.header("switchyard-missing"), "a");
    assert_eq!(s.up.count(), 5, "no call reaches an open circuit");

    // The upstream recovers; the probe takes 200 ms so that the other
    // requests sent meanwhile meet the half-open breaker.
    s.failing.store(false, Ordering::SeqCst);
    s.delay_ms.store(200, Ordering::SeqCst);
    tokio::time::sleep(ms(1100)).await;
    let gw = Arc::new(gw);
    let probe = {
        let gw = gw.clone();
        tokio::spawn(async move { gw.get("/x").await })
    };
    assert!(
        crate::kit::eventually(ms(2000), || s.up.in_flight() == 1).await,
        "the probe never reached the upstream"
    );
    assert_eq!(circuit("r15a"), 2.0);
    for _ in 0..4 {
        assert_problem(&gw.get("/x").await, 503, "circuit_open", "r15a");
    }
    assert_eq!(probe.await.unwrap().status, 200);
    assert_eq!(s.up.count(), 6, "exactly one probe");
    assert_eq!(circuit("r15a"), 0.0);
    s.delay_ms.store(0, Ordering::SeqCst);
    assert_eq!(gw.get("/x").await.status, 200);
}

// R15 (b): the first probe hangs; its timeout counts as a failure and opens
// the breaker again; a later probe succeeds and closes it.
#[tokio::test]
async fn r15b_hanging_probe_reopens_then_a_later_probe_closes() {
    let s = switchable().await;
    let gw = TestGateway::start(&breaker_config("r15b", &s.up.url())).await;
    for _ in 0..5 {
        gw.get("/x").await;
    }
    assert_eq!(circuit("r15b"), 1.0);
    s.failing.store(false, Ordering::SeqCst);
    s.delay_ms.store(10_000, Ordering::SeqCst);
    tokio::time::sleep(ms(1100)).await;
    let t = Instant::now();
    let probe = gw.get("/x").await;
    assert_problem(&probe, 504, "timeout", "r15b");
    // The upstream's 300 ms timeout, with a margin.
    assert!(t.elapsed() < ms(1000), "{:?}", t.elapsed());
    assert_eq!(
        circuit("r15b"),
        1.0,
        "a failed probe opens the circuit again"
    );
    assert_problem(&gw.get("/x").await, 503, "circuit_open", "r15b");
    s.delay_ms.store(0, Ordering::SeqCst);
    tokio::time::sleep(ms(1100)).await;
    assert_eq!(gw.get("/x").await.status, 200);
    assert_eq!(circuit("r15b"), 0.0);
}

// The bulkhead sheds calls over `max_in_flight` at once with 503 instead of
// queueing them behind a slow upstream.
#[tokio::test]
async fn bulkhead_sheds_excess_calls_quickly() {
    let up = TestUpstream::fixed(Reply::json(json!({})).after(ms(1000))).await;
    let gw = Arc::new(
        TestGateway::start(&format!(
            r#"
upstreams:
  bulk: {{ url: "{}", max_in_flight: 2 }}
routes:
  - get: /x
    calls:
      a: {{ get: "bulk:/a" }}
"#,
            up.url()
        ))
        .await,
    );
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let gw = gw.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = gw.get("/x").await;
            (r, t.elapsed())
        }));
    }
    let mut ok = 0;
    for t in tasks {
        let (r, took) = t.await.unwrap();
        if r.status == 200 {
            ok += 1;
        } else {
            assert_problem(&r, 503, "overloaded", "bulk");
            assert!(took < ms(300), "shedding took {took:?}");
        }
    }
    assert_eq!(ok, 2);
    assert_eq!(up.count(), 2);
    assert!(
        metric(
            "switchyard_bulkhead_rejected_total",
            &[r#"upstream="bulk""#]
        ) >= 4.0
    );
}

// Hedging: the first attempt hangs, the hedge answers; the client gets the
// hedge's answer long before the first would have come, and the first
// attempt is cancelled (its upstream request ends).
#[tokio::test]
async fn hedge_answers_first_and_the_loser_is_cancelled() {
    let n = Arc::new(AtomicU64::new(0));
    let n2 = n.clone();
    let up = TestUpstream::start(move |_| {
        if n2.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::json(json!({"which": "first"})).after(ms(3000))
        } else {
            Reply::json(json!({"which": "hedge"}))
        }
    })
    .await;
    let gw = TestGateway::start(&format!(
        r#"
upstreams:
  hedged: {{ url: "{}", hedge_after: 50ms, retry: {{ budget_min_per_second: 5 }} }}
routes:
  - get: /x
    calls:
      a: {{ get: "hedged:/a" }}
  - get: /off
    calls:
      a: {{ get: "hedged:/a", hedge_after: "off" }}
"#,
        up.url()
    ))
    .await;
    let t = Instant::now();
    let r = gw.get("/x").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["a"]["which"], "hedge");
    assert!(t.elapsed() < ms(2000), "{:?}", t.elapsed());
    assert!(
        crate::kit::eventually(ms(1000), || up.in_flight() == 0).await,
        "the losing attempt was not cancelled"
    );
    assert!(metric("switchyard_retry_hedges_total", &[r#"upstream="hedged""#]) >= 1.0);
    // With hedging off for the call, one request only.
    let before = n.load(Ordering::SeqCst);
    assert_eq!(gw.get("/off").await.status, 200);
    assert_eq!(n.load(Ordering::SeqCst), before + 1);
}

// Every refused resilience setting is reported, each at its own line.
#[test]
fn check_reports_every_bad_resilience_setting_at_its_line() {
    let file = "testdata/bad/resilience.yaml";
    let text = std::fs::read_to_string(format!("{}/{file}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let report = match switchyard::plan::compile_str(file, &text) {
        Err(switchyard::plan::LoadError::Invalid(r)) => r,
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("{file} compiled"),
    };
    let line = |needle: &str| {
        text.lines()
            .position(|l| l.contains(needle) && !l.starts_with('#'))
            .map(|i| i as u64 + 1)
            .unwrap()
    };
    for (needle, message) in [
        (
            "max_header_size: 1KiB",
            "`max_header_size` must be at least 8KiB",
        ),
        ("max_connections: 0", "`max_connections` must be at least 1"),
        ("header_read_timeout: soon", "`soon` is not a duration"),
        ("max_in_flight: 0", "`max_in_flight` must be at least 1"),
        (
            "hedge_after: 0ms",
            "`hedge_after` must be greater than zero",
        ),
        ("retries: 50", "`retries` is at most 10"),
        ("teapot", "`teapot` is not a retry condition"),
        ("teapot", "`404`: only 5xx statuses are retried"),
        ("max_backoff: 1s", "`max_backoff` is shorter than `backoff`"),
        (
            "budget_percent: -5",
            "`budget_percent` must be between 0 and 1000",
        ),
        ("failure_percent: 0", "`failure_percent` must be above 0"),
        ("failure_percent: 0", "`min_calls` must be at least 1"),
        (
            "\"a:/p\"",
            "a POST call is not idempotent and is never retried",
        ),
        (
            "\"a:/q\"",
            "a POST call is not idempotent and cannot be hedged",
        ),
        (
            "\"a:/r\"",
            "`budget_percent` is shared by every call of an upstream",
        ),
    ] {
        let want = line(needle);
        assert!(
            report
                .errors
                .iter()
                .any(|d| d.pos.line == want && d.pos.column > 0 && d.message.contains(message)),
            "no error `{message}` at line {want}:\n{report}"
        );
    }
}
