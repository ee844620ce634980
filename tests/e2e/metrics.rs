use crate::common::*;
use serde_json::json;

/// Reads one sample's value from Prometheus text (first line with all `parts`).
fn sample(text: &str, name: &str, parts: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && parts.iter().all(|p| l.contains(p)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

// Request and upstream-call counters move as requests are served, labelled by
// route template (never the raw path) and a bounded `unmatched` for 404s.
#[tokio::test]
async fn metrics_count_requests_by_route_template() {
    let up = TestUpstream::fixed(Reply::json(json!({"ok": true}))).await;
    let gw = TestGateway::start(&format!(
        r#"
upstreams:
  users: {{ url: "{}" }}
routes:
  - get: /users/{{id}}
    calls:
      user: {{ get: "users:/users/{{path.id}}" }}
"#,
        up.url()
    ))
    .await;
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin_listener.local_addr().unwrap();
    let admin = switchyard::admin::serve(admin_listener).unwrap();
    let scrape = || async {
        send(
            http::Method::GET,
            &format!("http://{admin_addr}/metrics"),
            &[],
            Default::default(),
        )
        .await
        .text()
    };
    let route = r#"route="GET /users/{id}""#;
    let before = sample(&scrape().await, "switchyard_requests_total", &[route]).unwrap_or(0.0);
    for i in 0..5 {
        assert_eq!(
            gw.get(&format!("/users/{i}-{}", uuid_like(i))).await.status,
            200
        );
    }
    assert_eq!(gw.get("/definitely/not/a/route").await.status, 404);
    let text = scrape().await;
    let after = sample(
        &text,
        "switchyard_requests_total",
        &[route, r#"status="2xx""#],
    )
    .unwrap();
    assert_eq!(after - before, 5.0, "{text}");
    assert!(
        sample(
            &text,
            "switchyard_requests_total",
            &[r#"route="unmatched""#, r#"status="4xx""#]
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        sample(
            &text,
            "switchyard_upstream_calls_total",
            &[r#"upstream="users""#, r#"call="user""#, r#"outcome="ok""#]
        )
        .unwrap()
            >= 5.0
    );
    assert!(
        text.contains("switchyard_request_duration_seconds_bucket"),
        "histograms render as buckets"
    );
    assert!(!text.contains("/users/0-"), "raw paths never become labels");
    assert!(
        !text.contains("/definitely"),
        "unmatched paths never become labels"
    );
    let health = send(
        http::Method::GET,
        &format!("http://{admin_addr}/healthz"),
        &[],
        Default::default(),
    )
    .await;
    assert_eq!(health.status, 200);
    admin.shutdown().await;
}

fn uuid_like(i: u32) -> String {
    format!(
        "{:08x}-4b2c-9d1e-{:012x}",
        i.wrapping_mul(2_654_435_761),
        u64::from(i) * 7919
    )
}
