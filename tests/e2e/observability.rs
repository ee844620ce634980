//! Metrics (checked by Prometheus' own `promtool`), label cardinality (R19),
//! the access log, readiness, `/stats` and the dashboard page, and the
//! Grafana dashboard's queries.

use crate::common::*;
use crate::process::{GatewayProcess, temp_path};
use futures_util::stream::{self, StreamExt};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Whether a tool is installed; under CI (`CI=true`) a missing tool fails
/// the test instead, since `.ci/run` installs it.
pub fn tool_available(tool: &str) -> bool {
    let found = std::process::Command::new(tool)
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok();
    if !found {
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true" || v == "1"),
            "this test needs `{tool}` and CI must provide it"
        );
        eprintln!("skipping: `{tool}` is not installed");
    }
    found
}

/// The sum of every sample of `name` whose line contains all of `parts`.
pub fn metric_sum(text: &str, name: &str, parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
                && parts.iter().all(|p| l.contains(p))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn upstream_and_route(url: &str, path: &str) -> String {
    format!(
        r#"
upstreams:
  users: {{ url: "{url}" }}
routes:
  - get: {path}
    calls:
      first: {{ get: "users:/u/{{path.id}}" }}
      second: {{ get: "users:/v?after={{first.body.ok}}" }}
  - get: /fails
    calls:
      broken: {{ get: "users:/status/500" }}
"#
    )
}

async fn json_upstream() -> TestUpstream {
    TestUpstream::start(|seen| {
        if seen.uri.starts_with("/status/500") {
            Reply::status(500)
        } else {
            Reply::json(json!({"ok": true}))
        }
    })
    .await
}

// The scrape passes `promtool check metrics` (the Prometheus project's own
// parser and linter), and request, upstream-call and latency series move by
// exactly the requests served.
#[tokio::test]
async fn metrics_pass_promtool_and_count_requests() {
    let up = json_upstream().await;
    let gw = TestGateway::start(&upstream_and_route(&up.url(), "/promtool/{id}")).await;
    let admin = gw.admin().await;
    let route = r#"route="GET /promtool/{id}""#;
    for i in 0..7 {
        assert_eq!(gw.get(&format!("/promtool/{i}")).await.status, 200);
    }
    assert_eq!(gw.get("/fails").await.status, 502);
    let text = admin.get("/metrics").await.text();
    assert_eq!(
        metric_sum(
            &text,
            "switchyard_requests_total",
            &[route, r#"status="2xx""#]
        ),
        7.0,
        "{text}"
    );
    assert_eq!(
        metric_sum(
            &text,
            "switchyard_request_duration_seconds_count",
            &[route, r#"method="GET""#]
        ),
        7.0
    );
    assert_eq!(
        metric_sum(
            &text,
            "switchyard_request_duration_seconds_bucket",
            &[route, r#"le="+Inf""#]
        ),
        7.0
    );
    assert!(
        metric_sum(
            &text,
            "switchyard_upstream_calls_total",
            &[r#"call="second""#]
        ) >= 7.0
    );
    assert!(
        metric_sum(
            &text,
            "switchyard_upstream_call_duration_seconds_count",
            &[r#"call="broken""#, r#"outcome="status""#]
        ) >= 1.0
    );
    for present in [
        "switchyard_requests_in_flight",
        "switchyard_build_info{version=",
        r#"switchyard_config_reloads_total{result="ok"}"#,
        r#"switchyard_config_reloads_total{result="error"}"#,
        "switchyard_config_last_reload_successful",
        "# HELP switchyard_requests_total",
        "# TYPE switchyard_request_duration_seconds histogram",
    ] {
        assert!(text.contains(present), "missing {present}:\n{text}");
    }
    if tool_available("promtool") {
        use std::io::Write;
        let mut child = std::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "promtool check metrics failed:\n{}{}\n---\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    admin.shutdown().await;
}

/// A deterministic UUID-shaped string for request `i`.
fn uuid(i: u64) -> String {
    let a = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let b = a.rotate_left(29) ^ 0xD1B5_4A32_D192_ED03;
    format!(
        "{:08x}-{:04x}-4{:03x}-a{:03x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xffff,
        a & 0xfff,
        b >> 52,
        b & 0xffff_ffff_ffff
    )
}

/// Sends `n` GETs built by `path` with `concurrency` at once; returns the statuses seen.
async fn flood(
    base: &str,
    n: u64,
    concurrency: usize,
    path: impl Fn(u64) -> String,
) -> BTreeSet<u16> {
    stream::iter(0..n)
        .map(|i| {
            let url = format!("{base}{}", path(i));
            async move {
                send(http::Method::GET, &url, &[], Default::default())
                    .await
                    .status
                    .as_u16()
            }
        })
        .buffer_unordered(concurrency)
        .collect::<BTreeSet<u16>>()
        .await
}

fn route_labels(text: &str) -> BTreeSet<String> {
    text.match_indices("route=\"")
        .map(|(at, m)| {
            let rest = &text[at + m.len()..];
            rest[..rest.find('"').unwrap_or(rest.len())].to_string()
        })
        .collect()
}

fn sample_lines(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

// R19: 10,000 requests to /users/<uuid> and 10,000 to random unknown paths
// leave exactly two route label values, and the number of series and the
// scrape's size are the same after 2,000 requests as after 20,000. The
// gateway is the real binary, so its registry holds only what it served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_labels_stay_bounded_under_id_and_probe_floods() {
    const EACH: u64 = 10_000;
    const WARM: u64 = 1_000;
    let up = TestUpstream::fixed(Reply::json(json!({"id": 1}))).await;
    let gw = GatewayProcess::start(&format!(
        r#"
server: {{ listen: "127.0.0.1:0", admin_listen: "127.0.0.1:0" }}
upstreams:
  users: {{ url: "{}" }}
routes:
  - get: /users/{{id}}
    calls:
      user: {{ get: "users:/users/{{path.id}}" }}
"#,
        up.url()
    ));
    let base = gw.url("");
    let scrape = || async {
        send(
            http::Method::GET,
            &gw.admin_url("/metrics"),
            &[],
            Default::default(),
        )
        .await
        .text()
    };
    let started = Instant::now();
    let users = |i| format!("/users/{}", uuid(i));
    let probes = |i| format!("/probe-{}/{}", uuid((i + 1) << 40), i);
    assert_eq!(flood(&base, WARM, 32, users).await, BTreeSet::from([200]));
    assert_eq!(flood(&base, WARM, 32, probes).await, BTreeSet::from([404]));
    let early = scrape().await;
    assert_eq!(
        flood(&base, EACH - WARM, 32, |i| users(i + WARM)).await,
        BTreeSet::from([200])
    );
    assert_eq!(
        flood(&base, EACH - WARM, 32, |i| probes(i + WARM)).await,
        BTreeSet::from([404])
    );
    let text = scrape().await;
    eprintln!(
        "R19: {} requests in {:?}; scrape {} bytes, {} samples",
        2 * EACH,
        started.elapsed(),
        text.len(),
        sample_lines(&text)
    );
    assert_eq!(
        route_labels(&text),
        BTreeSet::from(["GET /users/{id}".to_string(), "unmatched".to_string()]),
        "{text}"
    );
    assert_eq!(
        metric_sum(
            &text,
            "switchyard_requests_total",
            &[r#"route="GET /users/{id}""#]
        ),
        EACH as f64
    );
    assert_eq!(
        metric_sum(
            &text,
            "switchyard_requests_total",
            &[r#"route="unmatched""#]
        ),
        EACH as f64
    );
    assert!(!text.contains(&uuid(7)) && !text.contains("/probe-"));
    assert_eq!(
        sample_lines(&early),
        sample_lines(&text),
        "series grew with traffic"
    );
    // Only counter digits may differ between the two scrapes.
    assert!(
        text.len().abs_diff(early.len()) < 1024,
        "{} vs {}",
        text.len(),
        early.len()
    );
    assert!(text.len() < 64 * 1024, "scrape is {} bytes", text.len());
}

// One access log line per request, with the documented fields; JSON and logfmt.
#[tokio::test]
async fn access_log_writes_one_line_per_request() {
    let up = json_upstream().await;
    let json_file = temp_path("access", "json");
    let logfmt_file = temp_path("access", "logfmt");
    let config = |file: &std::path::Path, format: &str| {
        format!(
            "{}telemetry:\n  access_log: {{ to: file, path: \"{}\", format: {format} }}\n",
            upstream_and_route(&up.url(), "/logged/{id}"),
            file.display()
        )
    };
    let gw = TestGateway::start(&config(&json_file, "json")).await;
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    assert_eq!(
        gw.get_with("/logged/7", &[("traceparent", tp)])
            .await
            .status,
        200
    );
    assert_eq!(gw.get("/nowhere").await.status, 404);
    let lines = wait_for_lines(&json_file, 2).await;
    let first: Value = serde_json::from_str(&lines[0]).unwrap();
    let time = first["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.contains('T'),
        "{time}"
    );
    assert_eq!(first["client"], "127.0.0.1");
    assert_eq!(first["method"], "GET");
    assert_eq!(first["path"], "/logged/7");
    assert_eq!(first["route"], "GET /logged/{id}");
    assert_eq!(first["status"], 200);
    assert!(first["duration_ms"].as_f64().unwrap() > 0.0);
    assert_eq!(first["trace_id"], "0af7651916cd43dd8448eb211c80319c");
    assert_eq!(first["cache"], Value::Null);
    assert_eq!(first["limiter"], Value::Null);
    let calls = first["calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{first}");
    assert_eq!(calls[0]["name"], "first");
    assert_eq!(calls[1]["name"], "second");
    for c in calls {
        assert_eq!(c["upstream"], "users");
        assert_eq!(c["outcome"], "ok");
        assert_eq!(c["status"], 200);
        assert!(c["duration_ms"].as_f64().unwrap() > 0.0);
    }
    let second: Value = serde_json::from_str(&lines[1]).unwrap();
    assert_eq!(second["route"], "unmatched");
    assert_eq!(second["status"], 404);
    assert_eq!(second["calls"], json!([]));
    assert_eq!(second["trace_id"].as_str().unwrap().len(), 32);

    let gw = TestGateway::start(&config(&logfmt_file, "logfmt")).await;
    assert_eq!(
        gw.get_with("/logged/8", &[("traceparent", tp)])
            .await
            .status,
        200
    );
    let line = &wait_for_lines(&logfmt_file, 1).await[0];
    for part in [
        "client=127.0.0.1 method=GET path=/logged/8 route=\"GET /logged/{id}\" status=200 duration_ms=",
        " calls=\"first:",
        "ms:ok second:",
        " cache= limiter= trace_id=0af7651916cd43dd8448eb211c80319c",
    ] {
        assert!(line.contains(part), "`{part}` not in {line}");
    }
    assert!(line.starts_with("time=20"), "{line}");
    let _ = std::fs::remove_file(json_file);
    let _ = std::fs::remove_file(logfmt_file);
}

async fn wait_for_lines(file: &std::path::Path, n: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        let lines: Vec<String> = text.lines().map(str::to_string).collect();
        if lines.len() >= n {
            assert_eq!(lines.len(), n, "{text}");
            return lines;
        }
        assert!(
            Instant::now() < deadline,
            "{} has {} lines, not {n}",
            file.display(),
            lines.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// /readyz: not ready until the listener is bound, ready while serving,
// not ready from the moment shutdown starts draining (while an in-flight
// request still completes); /healthz stays ok.
#[tokio::test]
async fn readiness_follows_listener_and_drain() {
    let up = TestUpstream::fixed(Reply::json(json!({})).after(Duration::from_millis(800))).await;
    let yaml = format!(
        "upstreams:\n  slow: {{ url: \"{}\" }}\nroutes:\n  - get: /slow\n    calls:\n      s: {{ get: \"slow:/s\" }}\n",
        up.url()
    );
    let (plan, _) = switchyard::plan::compile_str("test.yaml", &yaml).unwrap();
    let gateway = switchyard::server::Gateway::new(plan);
    let admin_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin_listener.local_addr().unwrap();
    let admin = switchyard::admin::serve_gateway(admin_listener, gateway.clone()).unwrap();
    let probe = |path: &'static str| async move {
        let r = send(
            http::Method::GET,
            &format!("http://{admin_addr}{path}"),
            &[],
            Default::default(),
        )
        .await;
        (r.status.as_u16(), r.text())
    };
    assert_eq!(probe("/readyz").await, (503, "starting\n".into()));
    assert_eq!(probe("/healthz").await.0, 200);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = switchyard::server::serve(gateway, listener).unwrap();
    assert_eq!(probe("/readyz").await, (200, "ready\n".into()));
    let in_flight = tokio::spawn(async move {
        send(
            http::Method::GET,
            &format!("http://{addr}/slow"),
            &[],
            Default::default(),
        )
        .await
        .status
    });
    while up.in_flight() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let draining = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(probe("/readyz").await, (503, "draining\n".into()));
    assert_eq!(probe("/healthz").await.0, 200);
    assert!(
        !draining.is_finished(),
        "the drain waits for the slow request"
    );
    assert_eq!(in_flight.await.unwrap(), 200);
    draining.await.unwrap();
    admin.shutdown().await;
}

// /stats has per-route and per-upstream totals, last-minute figures and a
// recent request's call graph; /dashboard is one self-contained page.
#[tokio::test]
async fn stats_json_and_dashboard_page() {
    let up = json_upstream().await;
    let gw = TestGateway::start(&upstream_and_route(&up.url(), "/stats/{id}")).await;
    let admin = gw.admin().await;
    for i in 0..5 {
        assert_eq!(gw.get(&format!("/stats/{i}")).await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(gw.get("/fails").await.status, 502);
    }
    assert_eq!(gw.get("/nope").await.status, 404);
    let r = admin.get("/stats").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), "application/json");
    let s = r.json();
    let series = |kind: &str, name: &str| {
        s[kind]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .unwrap_or_else(|| panic!("no {kind} {name}: {s:#}"))
            .clone()
    };
    let ok = series("routes", "GET /stats/{id}");
    assert_eq!(
        (ok["total"].as_u64(), ok["errors"].as_u64()),
        (Some(5), Some(0))
    );
    assert_eq!(ok["window"]["count"], 5);
    assert_eq!(ok["window"]["error_rate"], 0.0);
    let (p50, p99) = (
        ok["window"]["p50_ms"].as_f64().unwrap(),
        ok["window"]["p99_ms"].as_f64().unwrap(),
    );
    assert!(p50 > 0.0 && p50 <= p99, "{ok}");
    assert!(ok["window"]["rate"].as_f64().unwrap() > 0.0);
    assert_eq!(ok["cache_hit_ratio"], Value::Null);
    let failing = series("routes", "GET /fails");
    assert_eq!(
        (failing["total"].as_u64(), failing["errors"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(failing["window"]["error_rate"], 1.0);
    assert_eq!(series("routes", "unmatched")["total"], 1);
    let users = series("upstreams", "users");
    assert_eq!(
        (users["total"].as_u64(), users["errors"].as_u64()),
        (Some(12), Some(2))
    );
    // The first request is always kept for the waterfall.
    let recent = s["recent"].as_array().unwrap();
    let oldest = recent.last().unwrap();
    assert_eq!(oldest["route"], "GET /stats/{id}");
    assert_eq!(oldest["trace_id"].as_str().unwrap().len(), 32);
    let calls = oldest["calls"].as_array().unwrap();
    assert_eq!(calls[0]["name"], "first");
    assert_eq!(calls[1]["waited_for"], json!(["first"]));
    let first_end =
        calls[0]["start_ms"].as_f64().unwrap() + calls[0]["duration_ms"].as_f64().unwrap();
    assert!(
        calls[1]["start_ms"].as_f64().unwrap() >= first_end - 0.01,
        "{oldest}"
    );

    let page = admin.get("/dashboard").await;
    assert_eq!(page.status, 200);
    assert_eq!(page.header("content-type"), "text/html; charset=utf-8");
    let html = page.text();
    assert!(html.contains("<script>") && html.contains("fetch(\"stats\""));
    for external in [
        "src=\"http",
        "href=\"http",
        "src=\"//",
        "href=\"//",
        "@import",
    ] {
        assert!(
            !html.contains(external),
            "the page loads something external: {external}"
        );
    }
    admin.shutdown().await;
}

// Every metric the bundled Grafana dashboard queries exists in /metrics.
#[tokio::test]
async fn grafana_dashboard_queries_existing_metrics() {
    let up = json_upstream().await;
    let gw = TestGateway::start(&upstream_and_route(&up.url(), "/grafana/{id}")).await;
    let admin = gw.admin().await;
    assert_eq!(gw.get("/grafana/1").await.status, 200);
    let text = admin.get("/metrics").await.text();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/dashboards/switchyard.grafana.json"
    );
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut exprs = Vec::new();
    collect_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 6, "{exprs:?}");
    let mut names = BTreeSet::new();
    for e in &exprs {
        for (at, _) in e.match_indices("switchyard_") {
            let name: String = e[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            names.insert(name);
        }
    }
    assert!(names.len() >= 6, "{names:?}");
    for name in &names {
        let exists = text.lines().any(|l| {
            l.strip_prefix(name.as_str())
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        });
        assert!(
            exists,
            "the dashboard queries `{name}`, which /metrics lacks"
        );
    }
    admin.shutdown().await;
}

fn collect_exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, v) in m {
                match (k.as_str(), v) {
                    ("expr", Value::String(e)) => out.push(e.clone()),
                    _ => collect_exprs(v, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|v| collect_exprs(v, out)),
        _ => {}
    }
}
