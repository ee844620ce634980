//! W3C trace context end to end (a client's trace continued to every
//! upstream call, or a new one started) and span export through the real
//! OTLP/gRPC exporter to a collector's TraceService started by the test.

use crate::common::*;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn config(url: &str, extra: &str) -> String {
    format!(
        r#"
upstreams:
  users: {{ url: "{url}" }}
routes:
  - get: /traced/{{id}}
    calls:
      profile: {{ get: "users:/profile/{{path.id}}" }}
      orders: {{ get: "users:/orders/{{path.id}}" }}
      detail: {{ get: "users:/detail?n={{orders.body.n}}" }}
  - get: /pass/{{*rest}}
    proxy: "users:/{{path.rest}}"
{extra}"#
    )
}

/// `traceparent` → (trace id, parent span id, flags), checking the format.
fn parts(tp: &str) -> (String, String, String) {
    let p: Vec<&str> = tp.split('-').collect();
    assert_eq!(p.len(), 4, "{tp}");
    assert_eq!(
        (p[0], p[1].len(), p[2].len(), p[3].len()),
        ("00", 32, 16, 2),
        "{tp}"
    );
    assert!(
        tp.bytes()
            .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
    );
    (p[1].into(), p[2].into(), p[3].into())
}

/// The `traceparent` each path prefix received.
fn received(up: &TestUpstream) -> HashMap<String, String> {
    up.seen()
        .iter()
        .map(|s| {
            let name = s
                .uri
                .trim_start_matches('/')
                .split(['/', '?'])
                .next()
                .unwrap()
                .to_string();
            let tp = s.headers["traceparent"].to_str().unwrap().to_string();
            (name, tp)
        })
        .collect()
}

// A client's traceparent is continued: every call (and a proxy) gets the
// same trace id and flags with a span id of its own; without one (or with
// an invalid one) the gateway starts a sampled trace.
#[tokio::test]
async fn traceparent_is_continued_to_every_call() {
    let up = TestUpstream::fixed(Reply::json(json!({"n": 1}))).await;
    let gw = TestGateway::start(&config(&up.url(), "")).await;
    let client_tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let r = gw
        .get_with(
            "/traced/1",
            &[("traceparent", &client_tp), ("tracestate", "vendor=1")],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let got = received(&up);
    assert_eq!(got.len(), 3, "{got:?}");
    let mut span_ids = Vec::new();
    for tp in got.values() {
        let (trace, span, flags) = parts(tp);
        assert_eq!((trace.as_str(), flags.as_str()), (CLIENT_TRACE, "01"));
        assert_ne!(
            span, CLIENT_SPAN,
            "each call is a child span, not the client's"
        );
        span_ids.push(span);
    }
    span_ids.sort();
    span_ids.dedup();
    assert_eq!(span_ids.len(), 3, "every call has its own span id: {got:?}");
    assert!(
        up.seen()
            .iter()
            .all(|s| s.headers["tracestate"] == "vendor=1")
    );

    // Not sampled stays not sampled.
    let before = up.count();
    let r = gw
        .get_with(
            "/pass/x",
            &[(
                "traceparent",
                &format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00"),
            )],
        )
        .await;
    assert_eq!(r.status, 200);
    let proxied = &up.seen()[before];
    let (trace, span, flags) = parts(proxied.headers["traceparent"].to_str().unwrap());
    assert_eq!((trace.as_str(), flags.as_str()), (CLIENT_TRACE, "00"));
    assert_ne!(span, CLIENT_SPAN);

    // No traceparent, or an invalid one: a new sampled trace; its tracestate is dropped.
    for headers in [
        vec![],
        vec![("traceparent", "00-zz-bad-01"), ("tracestate", "vendor=1")],
    ] {
        let before = up.count();
        assert_eq!(gw.get_with("/traced/2", &headers).await.status, 200);
        let seen = &up.seen()[before..];
        let traces: Vec<String> = seen
            .iter()
            .map(|s| parts(s.headers["traceparent"].to_str().unwrap()))
            .map(|(t, _, f)| {
                assert_eq!(f, "01");
                t
            })
            .collect();
        assert!(
            traces.iter().all(|t| *t == traces[0] && t != CLIENT_TRACE),
            "{traces:?}"
        );
        assert!(seen.iter().all(|s| !s.headers.contains_key("tracestate")));
    }
}

// With `tracing: false` the client's headers pass through untouched and
// none are made up.
#[tokio::test]
async fn tracing_off_passes_client_headers_through() {
    let up = TestUpstream::fixed(Reply::json(json!({"n": 1}))).await;
    let gw = TestGateway::start(&config(&up.url(), "telemetry: { tracing: false }\n")).await;
    let client_tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    assert_eq!(
        gw.get_with("/traced/1", &[("traceparent", &client_tp)])
            .await
            .status,
        200
    );
    assert!(
        up.seen()
            .iter()
            .all(|s| s.headers["traceparent"] == client_tp.as_str())
    );
    let before = up.count();
    assert_eq!(gw.get("/traced/1").await.status, 200);
    assert!(
        up.seen()[before..]
            .iter()
            .all(|s| !s.headers.contains_key("traceparent"))
    );
}

/// A collector's TraceService that keeps what it is sent.
#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.received.lock().unwrap().push(request.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Serves OTLP/gRPC (HTTP/2) on a free loopback port.
    async fn start() -> (Collector, SocketAddr, tokio::task::JoinHandle<()>) {
        let collector = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(collector.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = TowerToHyperService::new(service.clone());
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (collector, addr, task)
    }

    /// Every span received so far with its resource's `service.name`.
    fn spans(&self) -> Vec<(String, Span)> {
        let mut out = Vec::new();
        for req in self.received.lock().unwrap().iter() {
            for rs in &req.resource_spans {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| string_attr(&r.attributes, "service.name"))
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for span in &ss.spans {
                        out.push((service.clone(), span.clone()));
                    }
                }
            }
        }
        out
    }
}

fn string_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match &kv.value {
            Some(AnyValue {
                value: Some(any_value::Value::StringValue(s)),
            }) => Some(s.clone()),
            Some(AnyValue {
                value: Some(any_value::Value::IntValue(i)),
            }) => Some(i.to_string()),
            _ => None,
        })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// Spans leave through the configured OTLP/gRPC exporter and reach a real
// TraceService: a server span for the request (child of the client's span)
// and one client span per call, whose ids are the ones the upstream saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_are_exported_over_otlp() {
    let (collector, addr, task) = Collector::start().await;
    let up = TestUpstream::fixed(Reply::json(json!({"n": 1}))).await;
    let extra = format!(
        "telemetry:\n  otlp: {{ endpoint: \"http://{addr}\", service_name: obs-test, timeout: 2s }}\n"
    );
    let gw = TestGateway::start(&config(&up.url(), &extra)).await;
    let client_tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    assert_eq!(
        gw.get_with("/traced/9", &[("traceparent", &client_tp)])
            .await
            .status,
        200
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    let spans = loop {
        let spans: Vec<(String, Span)> = collector
            .spans()
            .into_iter()
            .filter(|(_, s)| hex(&s.trace_id) == CLIENT_TRACE)
            .collect();
        if spans.len() >= 4 {
            break spans;
        }
        assert!(
            Instant::now() < deadline,
            "spans not exported in time: {spans:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(spans.len(), 4, "{spans:?}");
    assert!(spans.iter().all(|(service, _)| service == "obs-test"));
    let server = &spans
        .iter()
        .find(|(_, s)| s.name == "GET /traced/{id}")
        .unwrap()
        .1;
    assert_eq!(hex(&server.parent_span_id), CLIENT_SPAN);
    assert_eq!(server.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(
        string_attr(&server.attributes, "http.route").as_deref(),
        Some("/traced/{id}")
    );
    assert_eq!(
        string_attr(&server.attributes, "http.response.status_code").as_deref(),
        Some("200")
    );
    let upstream_saw = received(&up);
    for call in ["profile", "orders", "detail"] {
        let span = &spans.iter().find(|(_, s)| s.name == call).unwrap().1;
        assert_eq!(span.kind, 3, "SPAN_KIND_CLIENT");
        assert_eq!(
            span.parent_span_id, server.span_id,
            "{call} is a child of the request"
        );
        let (_, sent_span, _) = parts(&upstream_saw[call]);
        assert_eq!(
            hex(&span.span_id),
            sent_span,
            "{call}: exported id = propagated id"
        );
        assert_eq!(
            string_attr(&span.attributes, "switchyard.upstream").as_deref(),
            Some("users")
        );
        assert_eq!(
            string_attr(&span.attributes, "switchyard.outcome").as_deref(),
            Some("ok")
        );
        assert!(span.start_time_unix_nano >= server.start_time_unix_nano);
        assert!(span.end_time_unix_nano <= server.end_time_unix_nano);
    }
    let orders = &spans.iter().find(|(_, s)| s.name == "orders").unwrap().1;
    let detail = &spans.iter().find(|(_, s)| s.name == "detail").unwrap().1;
    assert!(
        detail.start_time_unix_nano >= orders.end_time_unix_nano,
        "detail waited for orders"
    );
    task.abort();
}
