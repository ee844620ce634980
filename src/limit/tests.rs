//! Limiter decisions with an injected clock (in-process stores).

use super::*;
use crate::plan;
use http::HeaderMap;

fn limiter(yaml: &str) -> (plan::Plan, Limiter, Arc<AtomicU64>) {
    let (plan, _) = plan::compile_str("t.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
    let t = Arc::new(AtomicU64::new(0));
    let l = Limiter::with_clock(&plan.limits, Clock::Manual(t.clone()));
    (plan, l, t)
}

const TWO_POLICIES: &str = r#"
upstreams: { u: { url: "http://127.0.0.1:1" } }
rate_limits:
  per_client: { key: "header:x-api-key", rate: 3/1h, burst: 3 }
  global: { key: global, rate: 2/1h, burst: 2 }
routes:
  - get: /both
    rate_limit: [per_client, global]
    calls: { a: { get: "u:/a" } }
  - get: /solo
    rate_limit: per_client
    calls: { a: { get: "u:/a" } }
"#;

async fn ask(plan: &plan::Plan, l: &Limiter, path: &str, api_key: &str) -> Decision {
    let route = plan.route_named(path).unwrap();
    let mut h = HeaderMap::new();
    h.insert("x-api-key", api_key.parse().unwrap());
    let view = RequestView {
        headers: &h,
        params: &[],
        client: "192.0.2.1".parse().unwrap(),
    };
    l.check(route.rate_limits.as_ref().unwrap(), &view).await
}

#[tokio::test]
async fn a_rejection_by_one_policy_spends_no_quota_of_another() {
    let (plan, l, _) = limiter(TWO_POLICIES);
    for _ in 0..2 {
        assert_eq!(ask(&plan, &l, "/both", "b").await.verdict, Verdict::Admit);
    }
    for _ in 0..3 {
        let d = ask(&plan, &l, "/both", "b").await;
        assert!(
            matches!(&d.verdict, Verdict::Limited { violated, .. } if violated == &["global"]),
            "{d:?}"
        );
    }
    // per_client spent 2 of 3: one more on the route without `global`.
    let d = ask(&plan, &l, "/solo", "b").await;
    assert_eq!(d.verdict, Verdict::Admit);
    assert_eq!(d.limit_header.unwrap(), "\"per_client\";r=0;t=1200");
    assert!(matches!(
        ask(&plan, &l, "/solo", "b").await.verdict,
        Verdict::Limited {
            retry_after: 1200,
            ..
        }
    ));
}

#[tokio::test]
async fn headers_report_remaining_and_reset_and_time_refills() {
    let (plan, l, t) = limiter(
        r#"
upstreams: { u: { url: "http://127.0.0.1:1" } }
rate_limits:
  p: { key: client_ip, rate: 10/10s, burst: 2 }
routes:
  - get: /a
    rate_limit: p
    calls: { a: { get: "u:/a" } }
"#,
    );
    let d = ask(&plan, &l, "/a", "k").await;
    assert_eq!(d.policy_header, "\"p\";q=10;w=10");
    assert_eq!(d.limit_header.unwrap(), "\"p\";r=1;t=1");
    assert_eq!(ask(&plan, &l, "/a", "k").await.verdict, Verdict::Admit);
    let d = ask(&plan, &l, "/a", "k").await;
    assert_eq!(
        d.verdict,
        Verdict::Limited {
            retry_after: 1,
            violated: vec!["p".into()]
        }
    );
    assert_eq!(d.limit_header.unwrap(), "\"p\";r=0;t=1");
    t.fetch_add(999_000_000, Ordering::Relaxed);
    assert!(matches!(
        ask(&plan, &l, "/a", "k").await.verdict,
        Verdict::Limited { .. }
    ));
    t.fetch_add(1_000_000, Ordering::Relaxed);
    assert_eq!(ask(&plan, &l, "/a", "k").await.verdict, Verdict::Admit);
    // After a long pause the bucket is full again: r = burst - 1, and the
    // full bucket left behind by the sweep holds no memory.
    t.fetch_add(60 * NANOS, Ordering::Relaxed);
    let d = ask(&plan, &l, "/a", "k").await;
    assert_eq!(d.limit_header.unwrap(), "\"p\";r=1;t=1");
    assert_eq!(l.local_buckets("p"), Some(1));
}

#[tokio::test]
async fn allow_listed_keys_and_networks_bypass() {
    let (plan, l, _) = limiter(
        r#"
upstreams: { u: { url: "http://127.0.0.1:1" } }
rate_limits:
  p:
    key: "header:x-api-key"
    rate: 1/1h
    allow: { keys: [internal], ips: ["192.0.2.0/24"] }
  q: { key: "header:x-api-key", rate: 1/1h, allow: { keys: [internal] } }
routes:
  - get: /p
    rate_limit: p
    calls: { a: { get: "u:/a" } }
  - get: /q
    rate_limit: q
    calls: { a: { get: "u:/a" } }
"#,
    );
    for _ in 0..5 {
        assert_eq!(ask(&plan, &l, "/p", "anyone").await.verdict, Verdict::Admit);
        let d = ask(&plan, &l, "/q", "internal").await;
        assert_eq!(d.verdict, Verdict::Admit);
        assert!(
            d.limit_header.is_none(),
            "a bypassed policy reports nothing"
        );
    }
    assert_eq!(ask(&plan, &l, "/q", "other").await.verdict, Verdict::Admit);
    assert!(matches!(
        ask(&plan, &l, "/q", "other").await.verdict,
        Verdict::Limited { .. }
    ));
}
