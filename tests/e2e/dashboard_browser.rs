//! The dashboard page in headless Chromium: after a known number of
//! requests, the figures it renders agree with `/metrics`, and a recent
//! request's waterfall is drawn.

use crate::common::*;
use crate::observability::{metric_sum, tool_available};
use serde_json::json;
use std::time::Duration;

/// The browser binary: Debian's `chromium`.
const CHROMIUM: &str = "chromium";

/// Loads `url` in headless Chromium, lets its scripts run, returns the DOM.
fn rendered_dom(url: &str) -> String {
    let out = std::process::Command::new(CHROMIUM)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=5000",
            "--dump-dom",
            url,
        ])
        .output()
        .expect("chromium runs");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the `<td data-k="KEY">` in the row `<tr data-name="NAME">`.
fn cell(dom: &str, name: &str, key: &str) -> String {
    let row_start = dom
        .find(&format!("<tr data-name=\"{name}\">"))
        .unwrap_or_else(|| panic!("no row for {name}:\n{dom}"));
    let row = &dom[row_start..];
    let row = &row[..row.find("</tr>").unwrap()];
    let at = row
        .find(&format!("data-k=\"{key}\""))
        .unwrap_or_else(|| panic!("no {key} in {row}"));
    let rest = &row[at..];
    let text = &rest[rest.find('>').unwrap() + 1..];
    text[..text.find('<').unwrap()].to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_chromium_agrees_with_metrics() {
    if !tool_available(CHROMIUM) {
        return;
    }
    let up = TestUpstream::start(|seen| {
        if seen.uri.starts_with("/fail") {
            Reply::status(503)
        } else {
            Reply::json(json!({"n": 1})).after(Duration::from_millis(3))
        }
    })
    .await;
    let gw = TestGateway::start(&format!(
        r#"
upstreams:
  browser-up: {{ url: "{}" }}
routes:
  - get: /browser/{{id}}
    calls:
      lookup: {{ get: "browser-up:/lookup/{{path.id}}" }}
      enrich: {{ get: "browser-up:/enrich?n={{lookup.body.n}}" }}
  - get: /browser-fails
    calls:
      broken: {{ get: "browser-up:/fail" }}
"#,
        up.url()
    ))
    .await;
    let admin = gw.admin().await;
    for _ in 0..3 {
        assert_eq!(gw.get("/browser-fails").await.status, 502);
    }
    // Past the waterfall's sampling interval, so the newest sample (the one
    // the page shows) is one of these.
    tokio::time::sleep(Duration::from_millis(150)).await;
    for i in 0..9 {
        assert_eq!(gw.get(&format!("/browser/{i}")).await.status, 200);
    }
    let metrics = admin.get("/metrics").await.text();
    let url = format!("http://{}/dashboard", admin.addr);
    let dom = tokio::task::spawn_blocking(move || rendered_dom(&url))
        .await
        .unwrap();
    assert!(
        dom.contains("data-loaded=\"true\""),
        "the page never loaded /stats:\n{dom}"
    );

    let ok_route = r#"route="GET /browser/{id}""#;
    let shown_total: f64 = cell(&dom, "GET /browser/{id}", "total").parse().unwrap();
    assert_eq!(
        shown_total,
        metric_sum(&metrics, "switchyard_requests_total", &[ok_route])
    );
    assert_eq!(shown_total, 9.0);
    let fail_route = r#"route="GET /browser-fails""#;
    let shown_errors: f64 = cell(&dom, "GET /browser-fails", "errors").parse().unwrap();
    assert_eq!(
        shown_errors,
        metric_sum(
            &metrics,
            "switchyard_requests_total",
            &[fail_route, r#"status="5xx""#]
        )
    );
    assert_eq!(cell(&dom, "GET /browser-fails", "error_rate"), "100.0 %");
    let shown_calls: f64 = cell(&dom, "browser-up", "total").parse().unwrap();
    assert_eq!(
        shown_calls,
        metric_sum(
            &metrics,
            "switchyard_upstream_calls_total",
            &[r#"upstream="browser-up""#]
        )
    );
    let p50: f64 = cell(&dom, "GET /browser/{id}", "p50").parse().unwrap();
    let p99: f64 = cell(&dom, "GET /browser/{id}", "p99").parse().unwrap();
    assert!(p50 > 0.0 && p50 <= p99, "p50 {p50} p99 {p99}");

    // The waterfall of a recent request: one bar per call, the dependent
    // call starting after the call it waited for.
    let wf = &dom[dom.find("id=\"waterfall\"").expect("waterfall")..];
    for call in ["lookup", "enrich"] {
        assert!(
            wf.contains(&format!("data-call=\"{call}\"")),
            "no bar for {call}:\n{wf}"
        );
    }
    assert!(wf.contains("enrich ← lookup"), "{wf}");
    admin.shutdown().await;
}
