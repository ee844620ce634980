//! Rate limiting end to end: real sockets, the gateway in-process (or as
//! real processes sharing one Redis), windows scaled down to seconds and
//! every bound derived from the configured rate and burst.
//!
//! Policy names are unique per test: metrics are process-wide.

use crate::common::*;
use crate::redis_fixture::RedisServer;
use http::StatusCode;
use serde_json::json;
use std::time::{Duration, Instant};

async fn upstream() -> TestUpstream {
    TestUpstream::fixed(Reply::json(json!({"ok": true}))).await
}

/// Reads one sample's value from Prometheus text (first line with all `parts`).
fn sample(text: &str, name: &str, parts: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Every `Server-Timing` field of a response, joined.
fn server_timing(r: &TestResponse) -> String {
    let all: Vec<&str> = r
        .headers
        .get_all("server-timing")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    all.join(", ")
}

fn metrics() -> String {
    switchyard::telemetry::prometheus().render()
}

/// `"name";r=3;t=1` → (r, t) of the item named `name`.
fn item(header: &str, name: &str) -> Option<(u64, u64)> {
    let it = header
        .split(',')
        .map(str::trim)
        .find(|i| i.starts_with(&format!("\"{name}\"")))?;
    let param = |p: &str| {
        it.split(';')
            .find_map(|kv| kv.strip_prefix(&format!("{p}="))?.parse().ok())
    };
    Some((param("r")?, param("t")?))
}

// R10: one host rotating through the addresses of its /64 is one client:
// the 6th request of a 5/1m per-IP limit gets 429, the limiter holds one
// bucket, and another /64 is another client. Addresses come through a
// trusted proxy (the test client is that proxy).
#[tokio::test]
async fn r10_ipv6_rotation_within_one_prefix_is_one_client() {
    let up = upstream().await;
    let config = |prefix: &str| {
        format!(
            r#"
server: {{ trusted_proxies: ["127.0.0.1"] {prefix} }}
upstreams: {{ u: {{ url: "{}" }} }}
rate_limits:
  r10_per_ip{prefix_name}: {{ key: client_ip, rate: 5/1m }}
routes:
  - get: /a
    rate_limit: r10_per_ip{prefix_name}
    calls: {{ a: {{ get: "u:/a" }} }}
"#,
            up.url(),
            prefix_name = if prefix.is_empty() { "" } else { "_128" }
        )
    };
    let gw = TestGateway::start(&config("")).await;
    let mut statuses = Vec::new();
    for i in 1..=6 {
        let xff = format!("2001:db8:1:2::{i:x}");
        statuses.push(gw.get_with("/a", &[("x-forwarded-for", &xff)]).await.status);
    }
    assert_eq!(&statuses[..5], &[StatusCode::OK; 5]);
    assert_eq!(statuses[5], StatusCode::TOO_MANY_REQUESTS);
    let keys = |text: &str| {
        sample(
            text,
            "switchyard_ratelimit_keys",
            &[r#"policy="r10_per_ip""#],
        )
    };
    assert_eq!(keys(&metrics()), Some(1.0), "one bucket for the whole /64");
    let other = gw
        .get_with("/a", &[("x-forwarded-for", "2001:db8:1:3::1")])
        .await;
    assert_eq!(
        other.status,
        StatusCode::OK,
        "another /64 is another client"
    );
    assert_eq!(keys(&metrics()), Some(2.0));

    // The prefix is configurable: with /128 every address is a client.
    let gw128 = TestGateway::start(&config(", client_ipv6_prefix: 128")).await;
    for i in 1..=6 {
        let xff = format!("2001:db8:1:2::{i:x}");
        let r = gw128.get_with("/a", &[("x-forwarded-for", &xff)]).await;
        assert_eq!(r.status, StatusCode::OK);
    }
}

// Proxy headers from a peer that is not a trusted proxy are a spoof: a
// client rotating X-Forwarded-For / Forwarded values is still its socket
// address. Behind a trusted proxy, the right-most untrusted hop counts.
#[tokio::test]
async fn spoofed_forwarded_for_from_an_untrusted_peer_is_ignored() {
    let up = upstream().await;
    let yaml = |trusted: &str, name: &str| {
        format!(
            r#"
server: {{ trusted_proxies: [{trusted}] }}
upstreams: {{ u: {{ url: "{}" }} }}
rate_limits:
  {name}: {{ key: client_ip, rate: 3/1m }}
routes:
  - get: /a
    rate_limit: {name}
    calls: {{ a: {{ get: "u:/a" }} }}
"#,
            up.url()
        )
    };
    let gw = TestGateway::start(&yaml("", "spoof_untrusted")).await;
    let mut admitted = 0;
    for i in 0..6 {
        let xff = format!("198.51.100.{i}");
        let fwd = format!("for=203.0.113.{i}");
        let r = gw
            .get_with("/a", &[("x-forwarded-for", &xff), ("forwarded", &fwd)])
            .await;
        admitted += usize::from(r.status == StatusCode::OK);
    }
    assert_eq!(admitted, 3, "spoofed headers do not make new clients");

    // Trusted: "client-claimed, real client, our proxy" → the real client.
    let gw = TestGateway::start(&yaml(r#""127.0.0.1", "10.0.0.0/8""#, "spoof_trusted")).await;
    let mut admitted = 0;
    for i in 0..6 {
        let xff = format!("6.6.6.{i}, 203.0.113.9, 10.0.0.5");
        let r = gw.get_with("/a", &[("x-forwarded-for", &xff)]).await;
        admitted += usize::from(r.status == StatusCode::OK);
    }
    assert_eq!(
        admitted, 3,
        "the left-most, client-written hop is not believed"
    );
    let r = gw
        .get_with("/a", &[("x-forwarded-for", "203.0.113.10, 10.0.0.5")])
        .await;
    assert_eq!(r.status, StatusCode::OK, "another real client");
}

// R11: no double burst at a window edge, and a correct Retry-After. With
// 10 per 10 s and a burst of 10, ten requests then ten more 0.2 s later
// admit 10 (plus what the rate refills in the elapsed time), never 20. Each
// 429 is problem+json with Retry-After in whole seconds up to the next
// permit, RateLimit carries `t` (also when it is 0), and a retry after
// exactly Retry-After seconds succeeds.
#[tokio::test]
async fn r11_no_double_burst_and_retry_after_in_whole_seconds() {
    let up = upstream().await;
    let gw = TestGateway::start(&format!(
        r#"
upstreams: {{ u: {{ url: "{}" }} }}
rate_limits:
  r11: {{ key: client_ip, rate: 10/10s, burst: 10 }}
routes:
  - get: /a
    rate_limit: r11
    calls: {{ a: {{ get: "u:/a" }} }}
"#,
        up.url()
    ))
    .await;
    let started = Instant::now();
    for expected_remaining in (0..10).rev() {
        let r = gw.get("/a").await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.header("ratelimit-policy"), "\"r11\";q=10;w=10");
        let (remaining, t) =
            item(r.header("ratelimit"), "r11").expect("RateLimit item with r and t");
        assert!(remaining <= expected_remaining, "{}", r.header("ratelimit"));
        assert!(t <= 1, "the next permit is at most one interval away: {t}");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut second = Vec::new();
    for _ in 0..10 {
        second.push(gw.get("/a").await);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let admitted = second.iter().filter(|r| r.status == StatusCode::OK).count();
    // Over the whole run at most burst + rate × elapsed were admitted.
    let refill = (elapsed * 10.0 / 10.0).floor() as usize;
    assert!(
        10 + admitted <= 10 + refill,
        "{admitted} admitted in the second batch after {elapsed:.2}s"
    );
    let rejected: Vec<&TestResponse> = second
        .iter()
        .filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS)
        .collect();
    assert!(!rejected.is_empty());
    for r in &rejected {
        assert_eq!(r.header("content-type"), "application/problem+json");
        let retry: u64 = r.header("retry-after").parse().unwrap_or_else(|_| {
            panic!(
                "Retry-After is whole seconds: {:?}",
                r.header("retry-after")
            )
        });
        assert!((1..=10).contains(&retry), "Retry-After {retry}");
        let (remaining, t) = item(r.header("ratelimit"), "r11").unwrap();
        assert_eq!(remaining, 0);
        assert!(
            t <= retry,
            "Retry-After is never before the effective window ends"
        );
        let body = r.json();
        assert_eq!(body["status"], 429);
        assert_eq!(body["violated-policies"], json!(["r11"]));
        assert_eq!(
            body["type"],
            "https://iana.org/assignments/http-problem-types#quota-exceeded"
        );
    }
    let last = rejected.last().unwrap();
    let retry: u64 = last.header("retry-after").parse().unwrap();
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(
        gw.get("/a").await.status,
        StatusCode::OK,
        "retry after Retry-After succeeds"
    );
}

// Key forms: a path parameter (decoded, so `%41` is `A`), a fallback list
// (API key, else client IP), a composite (tenant + path), a global key;
// proxy routes are limited too and admitted responses carry the headers.
#[tokio::test]
async fn keys_from_paths_headers_fallbacks_and_composites() {
    let up = upstream().await;
    let gw = TestGateway::start(&format!(
        r#"
upstreams: {{ u: {{ url: "{}" }} }}
rate_limits:
  keys_by_user: {{ key: "path:id", rate: 2/1m }}
  keys_fallback: {{ key: ["header:x-api-key", client_ip], rate: 2/1m }}
  keys_composite: {{ key: "header:x-tenant + path:id", rate: 1/1m }}
  keys_global: {{ key: global, rate: 3/1m }}
routes:
  - get: /users/{{id}}
    rate_limit: keys_by_user
    calls: {{ a: {{ get: "u:/a" }} }}
  - get: /fallback
    rate_limit: keys_fallback
    calls: {{ a: {{ get: "u:/a" }} }}
  - get: /tenants/{{id}}
    rate_limit: keys_composite
    calls: {{ a: {{ get: "u:/a" }} }}
  - get: /proxied/{{*rest}}
    rate_limit: keys_global
    proxy: "u:/{{path.rest}}"
"#,
        up.url()
    ))
    .await;
    let st = |r: TestResponse| r.status.as_u16();
    assert_eq!(st(gw.get("/users/A").await), 200);
    assert_eq!(st(gw.get("/users/%41").await), 200);
    assert_eq!(
        st(gw.get("/users/A").await),
        429,
        "%41 and A are one bucket"
    );
    assert_eq!(st(gw.get("/users/B").await), 200);

    for _ in 0..2 {
        assert_eq!(
            st(gw.get_with("/fallback", &[("x-api-key", "k1")]).await),
            200
        );
    }
    assert_eq!(
        st(gw.get_with("/fallback", &[("x-api-key", "k1")]).await),
        429
    );
    assert_eq!(
        st(gw.get_with("/fallback", &[("x-api-key", "k2")]).await),
        200
    );
    // Without a key: the client IP; its bucket is separate from any key's.
    assert_eq!(st(gw.get("/fallback").await), 200);
    assert_eq!(st(gw.get("/fallback").await), 200);
    assert_eq!(st(gw.get("/fallback").await), 429);

    assert_eq!(
        st(gw.get_with("/tenants/1", &[("x-tenant", "t1")]).await),
        200
    );
    assert_eq!(
        st(gw.get_with("/tenants/1", &[("x-tenant", "t1")]).await),
        429
    );
    assert_eq!(
        st(gw.get_with("/tenants/2", &[("x-tenant", "t1")]).await),
        200
    );
    assert_eq!(
        st(gw.get_with("/tenants/1", &[("x-tenant", "t2")]).await),
        200
    );
    // Missing a part: every such request shares one bucket (never unlimited).
    assert_eq!(st(gw.get("/tenants/1").await), 200);
    assert_eq!(st(gw.get("/tenants/9").await), 429);

    let r = gw.get("/proxied/x").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("ratelimit-policy"), "\"keys_global\";q=3;w=60");
    assert_eq!(
        item(r.header("ratelimit"), "keys_global").map(|i| i.0),
        Some(2)
    );
    assert_eq!(st(gw.get("/proxied/y").await), 200);
    assert_eq!(st(gw.get("/proxied/z").await), 200);
    let r = gw.get("/proxied/x").await;
    assert_eq!(r.status, 429);
    assert!(server_timing(&r).contains("total;dur="));
}

// Allow-listed networks and keys bypass a policy and report no item for it.
#[tokio::test]
async fn allow_listed_clients_bypass_the_limit() {
    let up = upstream().await;
    let gw = TestGateway::start(&format!(
        r#"
upstreams: {{ u: {{ url: "{}" }} }}
rate_limits:
  allow_net: {{ key: client_ip, rate: 1/1m, allow: {{ ips: ["127.0.0.0/8"] }} }}
  allow_key: {{ key: "header:x-api-key", rate: 1/1m, allow: {{ keys: [batch-job] }} }}
routes:
  - get: /net
    rate_limit: allow_net
    calls: {{ a: {{ get: "u:/a" }} }}
  - get: /key
    rate_limit: allow_key
    calls: {{ a: {{ get: "u:/a" }} }}
"#,
        up.url()
    ))
    .await;
    for _ in 0..5 {
        let r = gw.get("/net").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("ratelimit"), "");
        assert_eq!(r.header("ratelimit-policy"), "\"allow_net\";q=1;w=60");
        let r = gw.get_with("/key", &[("x-api-key", "batch-job")]).await;
        assert_eq!(r.status, 200);
    }
    assert_eq!(
        gw.get_with("/key", &[("x-api-key", "someone")])
            .await
            .status,
        200
    );
    assert_eq!(
        gw.get_with("/key", &[("x-api-key", "someone")])
            .await
            .status,
        429
    );
}

fn redis_config(up: &TestUpstream, redis: &RedisServer, policies: &str, routes: &str) -> String {
    format!(
        r#"
upstreams: {{ u: {{ url: "{}" }} }}
redis: {{ url: "{}", timeout: 1s }}
rate_limits:
{policies}
routes:
{routes}
"#,
        up.url(),
        redis.url()
    )
}

// R12 (a) and (c): two instances share Redis: 15 requests alternating
// between them admit exactly 10 of a 10/1m limit; an instance restarted in
// the middle of the window continues the count. The trip to Redis shows in
// Server-Timing.
#[tokio::test]
async fn r12_instances_share_one_exact_limit_across_restarts() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let up = upstream().await;
    let yaml = redis_config(
        &up,
        &redis,
        r#"  r12_shared: { key: "header:x-api-key", rate: 10/1m, store: redis }"#,
        r#"  - get: /a
    rate_limit: r12_shared
    calls: { a: { get: "u:/a" } }"#,
    );
    let a = TestGateway::start(&yaml).await;
    let b = TestGateway::start(&yaml).await;
    let mut admitted = 0;
    for i in 0..15 {
        let gw = if i % 2 == 0 { &a } else { &b };
        let r = gw.get_with("/a", &[("x-api-key", "k")]).await;
        assert!(r.status == 200 || r.status == 429, "{}", r.status);
        admitted += usize::from(r.status == 200);
        let timing = server_timing(&r);
        assert!(
            timing.contains("ratelimit;dur=") && timing.contains("desc=\"redis\""),
            "{timing}"
        );
    }
    assert_eq!(admitted, 10, "exactly the limit across two instances");

    // (c) A fresh key: 6 on A, restart A, the count goes on.
    for _ in 0..6 {
        assert_eq!(a.get_with("/a", &[("x-api-key", "r")]).await.status, 200);
    }
    a.shutdown().await;
    let a = TestGateway::start(&yaml).await;
    let mut after = Vec::new();
    for _ in 0..6 {
        after.push(
            a.get_with("/a", &[("x-api-key", "r")])
                .await
                .status
                .as_u16(),
        );
    }
    assert_eq!(after, [200, 200, 200, 200, 429, 429]);
}

// Several Redis policies on one route are decided in one atomic script: a
// rejection by `global` spends no `per_client` quota. With one policy in
// memory and one in Redis, a Redis rejection gives the in-process quota back.
#[tokio::test]
async fn redis_policies_reject_without_spending_each_other() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let up = upstream().await;
    let gw = TestGateway::start(&redis_config(
        &up,
        &redis,
        r#"  multi_client: { key: "header:x-api-key", rate: 3/1h, store: redis }
  multi_global: { key: global, rate: 2/1h, store: redis }
  multi_local: { key: "header:x-api-key", rate: 3/1h }"#,
        r#"  - get: /both
    rate_limit: [multi_client, multi_global]
    calls: { a: { get: "u:/a" } }
  - get: /solo
    rate_limit: multi_client
    calls: { a: { get: "u:/a" } }
  - get: /mixed
    rate_limit: [multi_local, multi_global]
    calls: { a: { get: "u:/a" } }
  - get: /local
    rate_limit: multi_local
    calls: { a: { get: "u:/a" } }"#,
    ))
    .await;
    let get = |path: &'static str| {
        let gw = &gw;
        async move { gw.get_with(path, &[("x-api-key", "b")]).await }
    };
    assert_eq!(get("/both").await.status, 200);
    assert_eq!(get("/both").await.status, 200);
    for _ in 0..3 {
        let r = get("/both").await;
        assert_eq!(r.status, 429);
        assert_eq!(r.json()["violated-policies"], json!(["multi_global"]));
        assert_eq!(
            item(r.header("ratelimit"), "multi_client").map(|i| i.0),
            Some(1)
        );
    }
    let r = get("/solo").await;
    assert_eq!(
        r.status, 200,
        "per-client quota was not spent by the rejections"
    );
    assert_eq!(
        item(r.header("ratelimit"), "multi_client").map(|i| i.0),
        Some(0)
    );
    assert_eq!(get("/solo").await.status, 429);

    // Mixed stores: global (Redis) is exhausted; the in-process quota of
    // multi_local is given back after each Redis rejection.
    for _ in 0..3 {
        assert_eq!(get("/mixed").await.status, 429);
    }
    for _ in 0..3 {
        assert_eq!(get("/local").await.status, 200);
    }
    assert_eq!(get("/local").await.status, 429);
}

// R12 (b): Redis stops. No 5xx: by default each instance falls back to its
// own in-process limit (never unlimited); `fail_open` admits, `fail_closed`
// answers 503. Backend errors are counted and `degraded` is 1; when Redis
// returns, decisions go back to it and `degraded` is 0.
#[tokio::test]
async fn r12_redis_outage_follows_each_policys_on_redis_error() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let up = upstream().await;
    let gw = TestGateway::start(&redis_config(
        &up,
        &redis,
        r#"  outage_local: { key: "header:x-api-key", rate: 4/1h, store: redis }
  outage_open: { key: "header:x-api-key", rate: 1/1h, store: redis, on_redis_error: fail_open }
  outage_closed: { key: "header:x-api-key", rate: 100/1h, store: redis, on_redis_error: fail_closed }"#,
        r#"  - get: /local
    rate_limit: outage_local
    calls: { a: { get: "u:/a" } }
  - get: /open
    rate_limit: outage_open
    calls: { a: { get: "u:/a" } }
  - get: /closed
    rate_limit: outage_closed
    calls: { a: { get: "u:/a" } }"#,
    ))
    .await;
    let key = [("x-api-key", "k")];
    // Spend 2 of 4 in Redis, then stop it.
    for _ in 0..2 {
        assert_eq!(gw.get_with("/local", &key).await.status, 200);
    }
    assert_eq!(gw.get_with("/open", &key).await.status, 200);
    assert_eq!(gw.get_with("/open", &key).await.status, 429);
    let errors_before =
        sample(&metrics(), "switchyard_ratelimit_backend_errors_total", &[]).unwrap_or(0.0);
    redis.stop();

    // local: the in-process fallback knows nothing of Redis's count, so it
    // admits a full burst of 4 — then limits. Never unlimited, never 5xx.
    let statuses: Vec<u16> = {
        let mut v = Vec::new();
        for _ in 0..6 {
            v.push(gw.get_with("/local", &key).await.status.as_u16());
        }
        v
    };
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    for _ in 0..3 {
        assert_eq!(
            gw.get_with("/open", &key).await.status,
            200,
            "fail_open admits"
        );
        let r = gw.get_with("/closed", &key).await;
        assert_eq!(r.status, 503, "fail_closed rejects");
        assert_eq!(r.header("content-type"), "application/problem+json");
        assert_eq!(r.header("retry-after"), "1");
    }
    let text = metrics();
    assert!(
        sample(&text, "switchyard_ratelimit_backend_errors_total", &[]).unwrap() > errors_before,
        "{text}"
    );
    assert_eq!(
        sample(&text, "switchyard_ratelimit_degraded", &[]),
        Some(1.0)
    );
    assert!(
        sample(
            &text,
            "switchyard_ratelimit_decisions_total",
            &[
                r#"policy="outage_local""#,
                r#"store="local_fallback""#,
                r#"outcome="admitted""#
            ]
        )
        .unwrap()
            >= 4.0
    );
    assert!(
        sample(
            &text,
            "switchyard_ratelimit_decisions_total",
            &[r#"policy="outage_open""#, r#"outcome="fail_open""#]
        )
        .unwrap()
            >= 3.0
    );

    // Redis returns (empty: nothing was persisted). Within a few probe
    // intervals decisions use it again.
    redis.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = gw.get_with("/closed", &key).await;
        if r.status == 200 && server_timing(&r).contains("desc=\"redis\"") {
            break;
        }
        assert!(Instant::now() < deadline, "did not recover: {}", r.status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        sample(&metrics(), "switchyard_ratelimit_degraded", &[]),
        Some(0.0)
    );
    assert_eq!(gw.get_with("/open", &key).await.status, 200);
    assert_eq!(
        gw.get_with("/open", &key).await.status,
        429,
        "the limit is back"
    );
}

// `check` reports every rate limit mistake with its position.
#[test]
fn check_reports_rate_limit_errors_with_positions() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["check", "--config", "testdata/bad/rate_limits.yaml"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "rate_limits.yaml:4:39: error: `rate`: `100/1fortnight`: `1fortnight` is not a period",
        "rate_limits.yaml:6:19: error: `key`: `cookie:session` is not a key source",
        "rate_limits.yaml:7:47: error: policy `cluster` uses `store: redis` but there is no top-level `redis",
        "rate_limits.yaml:7:61: error: `burst` must be at least 1",
        "rate_limits.yaml:10:17: error: unknown rate limit policy `per_clinet` (declared: per_client, by_user, bad_key, cluster)",
        "rate_limits.yaml:14:17: error: policy `by_user` keys on `path:id`, but this route's path has no `{id}`",
        "rate_limits.yaml:6:12: warning: rate limit policy `bad_key` is not used by any route",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

/// A `switchyard run` child process on free loopback ports; killed on drop.
struct GatewayProcess {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    admin: std::net::SocketAddr,
    config: std::path::PathBuf,
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config);
    }
}

fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl GatewayProcess {
    /// Writes `yaml` (without `server:`) to a file and runs the binary on it;
    /// returns once its admin listener answers.
    async fn start(yaml: &str) -> GatewayProcess {
        let (addr, admin) = (free_addr(), free_addr());
        let config = std::env::temp_dir().join(format!(
            "switchyard-ratelimit-{}-{}.yaml",
            std::process::id(),
            addr.port()
        ));
        std::fs::write(
            &config,
            format!("server: {{ listen: \"{addr}\", admin_listen: \"{admin}\" }}\n{yaml}"),
        )
        .unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["run", "--config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let mut p = GatewayProcess {
            child,
            addr,
            admin,
            config,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            assert!(
                p.child.try_wait().unwrap().is_none(),
                "gateway process exited while starting"
            );
            if tokio::net::TcpStream::connect(p.addr).await.is_ok()
                && tokio::net::TcpStream::connect(p.admin).await.is_ok()
            {
                return p;
            }
            assert!(Instant::now() < deadline, "gateway process not listening");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn metrics(&self) -> String {
        let url = format!("http://{}/metrics", self.admin);
        send(http::Method::GET, &url, &[], Default::default())
            .await
            .text()
    }
}

/// Sends `per_instance` concurrent requests with `key` to every instance;
/// returns the statuses per instance.
async fn burst_at(instances: &[GatewayProcess], key: &str, per_instance: usize) -> Vec<Vec<u16>> {
    let mut tasks = Vec::new();
    for gw in instances {
        let url = format!("http://{}/a", gw.addr);
        let key = key.to_string();
        tasks.push(tokio::spawn(async move {
            let calls = (0..per_instance).map(|_| {
                let (url, key) = (url.clone(), key.clone());
                tokio::spawn(async move {
                    send(
                        http::Method::GET,
                        &url,
                        &[("x-api-key", &key)],
                        Default::default(),
                    )
                    .await
                    .status
                    .as_u16()
                })
            });
            let mut statuses = Vec::new();
            for c in calls.collect::<Vec<_>>() {
                statuses.push(c.await.unwrap());
            }
            statuses
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

// The issue's cluster test: three gateway processes share one Redis. Many
// concurrent clients → exactly the limit in total. Redis is killed →
// no 5xx, every instance enforces the limit locally (the default), the
// errors are counted and `degraded` = 1. Redis returns → the instances use
// it again and the limit is exact again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateway_processes_share_one_redis_and_survive_its_outage() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let up = upstream().await;
    const BURST: usize = 20;
    let yaml = format!(
        r#"
upstreams: {{ u: {{ url: "{}" }} }}
redis: {{ url: "{}", timeout: 1s }}
rate_limits:
  cluster: {{ key: "header:x-api-key", rate: {BURST}/1h, store: redis }}
routes:
  - get: /a
    rate_limit: cluster
    calls: {{ a: {{ get: "u:/a" }} }}
"#,
        up.url(),
        redis.url()
    );
    let instances = vec![
        GatewayProcess::start(&yaml).await,
        GatewayProcess::start(&yaml).await,
        GatewayProcess::start(&yaml).await,
    ];
    let admitted = |runs: &[Vec<u16>]| -> Vec<usize> {
        for s in runs.iter().flatten() {
            assert!(*s == 200 || *s == 429, "only 200 or 429, got {s}");
        }
        runs.iter()
            .map(|r| r.iter().filter(|s| **s == 200).count())
            .collect()
    };

    // Exact: 3 clients × 3 instances × 12 concurrent requests, limit 20 each.
    for key in ["c1", "c2", "c3"] {
        let runs = burst_at(&instances, key, 12).await;
        let total: usize = admitted(&runs).iter().sum();
        assert_eq!(total, BURST, "client {key}: {runs:?}");
    }

    // Outage: each instance falls back to its own bucket of 20.
    redis.stop();
    let runs = burst_at(&instances, "outage", 30).await;
    assert_eq!(
        admitted(&runs),
        vec![BURST; 3],
        "local limit per instance: {runs:?}"
    );
    for gw in &instances {
        let text = gw.metrics().await;
        assert_eq!(
            sample(&text, "switchyard_ratelimit_degraded", &[]),
            Some(1.0),
            "{text}"
        );
        assert!(sample(&text, "switchyard_ratelimit_backend_errors_total", &[]).unwrap() >= 1.0);
        assert!(
            sample(
                &text,
                "switchyard_ratelimit_decisions_total",
                &[r#"store="local_fallback""#, r#"outcome="limited""#]
            )
            .unwrap()
                >= 10.0
        );
    }

    // Recovery: Redis is back (empty); each instance probes it again.
    redis.restart();
    for (i, gw) in instances.iter().enumerate() {
        let url = format!("http://{}/a", gw.addr);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let key = format!("probe-{i}");
            let r = send(
                http::Method::GET,
                &url,
                &[("x-api-key", &key)],
                Default::default(),
            )
            .await;
            if server_timing(&r).contains("desc=\"redis\"") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "instance {i} did not go back to redis"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let text = gw.metrics().await;
        assert_eq!(
            sample(&text, "switchyard_ratelimit_degraded", &[]),
            Some(0.0)
        );
    }
    let runs = burst_at(&instances, "after", 15).await;
    assert_eq!(
        admitted(&runs).iter().sum::<usize>(),
        BURST,
        "exact again: {runs:?}"
    );
}

// A gateway whose Redis is down from the start still serves: the policy
// runs on its in-process fallback, limited, never unlimited, never 5xx.
#[tokio::test]
async fn a_gateway_starts_and_limits_while_its_redis_is_down() {
    let up = upstream().await;
    let nobody = free_addr();
    let gw = TestGateway::start(&format!(
        r#"
upstreams: {{ u: {{ url: "{}" }} }}
redis: {{ url: "redis://{nobody}", timeout: 200ms }}
rate_limits:
  down_from_start: {{ key: client_ip, rate: 3/1h, store: redis }}
routes:
  - get: /a
    rate_limit: down_from_start
    calls: {{ a: {{ get: "u:/a" }} }}
"#,
        up.url()
    ))
    .await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(gw.get("/a").await.status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);
}

// `explain` lists a route's rate limit policies before its call graph.
#[test]
fn explain_lists_a_routes_rate_limits() {
    let config =
        std::env::temp_dir().join(format!("switchyard-explain-rl-{}.yaml", std::process::id()));
    std::fs::write(
        &config,
        r#"
upstreams: { u: { url: "http://127.0.0.1:9" } }
redis: { url: "redis://127.0.0.1:9" }
rate_limits:
  per_client: { key: ["header:x-api-key", client_ip], rate: 100/1m, burst: 20 }
  orders_global: { key: global, rate: 500/1s, store: redis, on_redis_error: fail_closed }
routes:
  - get: /a/{id}
    rate_limit: [per_client, orders_global]
    calls: { a: { get: "u:/a/{path.id}" } }
"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(["explain", "--config"])
        .arg(&config)
        .arg("/a/{id}")
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&config);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("rate limit per_client: 100/60s, burst 20, in-process; key header:x-api-key else client_ip\n")
            && text.contains("rate limit orders_global: 500/1s, burst 500, redis (503 while redis fails); key global\n"),
        "{text}"
    );
}
