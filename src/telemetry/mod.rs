//! Measurement: the Prometheus recorder and the gateway's observable events.
//!
//! Each event is one function here that counts (and, where useful, logs), so
//! metric names and labels live in one place. Label values are bounded:
//! route templates (never raw paths), upstream and call names from the config,
//! and fixed outcome kinds.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Latency buckets in seconds: sub-millisecond gateway work up to slow upstreams.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The route label of requests that matched no route.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The process-wide Prometheus recorder, installed on first use. Metrics
/// recorded before installation are dropped, so servers install it at start.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (e.g. by an embedding
        // program); then ours only renders what it sees, which is nothing.
        let _ = metrics::set_global_recorder(recorder);
        metrics::gauge!("switchyard_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        handle
    })
}

/// `2xx`, `4xx`, …: status classes keep the series count small.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// A client request was answered.
pub fn request_served(route: &str, method: &str, status: u16, took: Duration) {
    let labels = [
        ("route", route.to_string()),
        ("method", method.to_string()),
        ("status", status_class(status).to_string()),
    ];
    metrics::counter!("switchyard_requests_total", &labels).increment(1);
    metrics::histogram!("switchyard_request_duration_seconds", &labels).record(took.as_secs_f64());
}

/// An upstream call ended; `outcome` is `ok` or a failure kind.
pub fn upstream_call(upstream: &str, call: &str, outcome: &'static str, took: Duration) {
    let labels = [
        ("upstream", upstream.to_string()),
        ("call", call.to_string()),
        ("outcome", outcome.to_string()),
    ];
    metrics::counter!("switchyard_upstream_calls_total", &labels).increment(1);
    metrics::histogram!("switchyard_upstream_call_duration_seconds", &labels)
        .record(took.as_secs_f64());
}

/// Requests being served right now.
pub fn in_flight(delta: f64) {
    metrics::gauge!("switchyard_requests_in_flight").increment(delta);
}

/// A circuit breaker changed state: 0 closed, 1 open, 2 half-open.
pub fn circuit_state(upstream: &str, state: u8) {
    metrics::gauge!("switchyard_circuit_state", "upstream" => upstream.to_string())
        .set(f64::from(state));
}

/// A call was shed because its upstream's in-flight cap was reached.
pub fn bulkhead_rejected(upstream: &str) {
    metrics::counter!("switchyard_bulkhead_rejected_total", "upstream" => upstream.to_string())
        .increment(1);
}

/// A failed attempt is being retried; `kind` is why it failed.
pub fn retry_attempt(upstream: &str, kind: &'static str) {
    metrics::counter!(
        "switchyard_retry_attempts_total",
        "upstream" => upstream.to_string(),
        "kind" => kind
    )
    .increment(1);
}

/// A retry (or hedge) was not sent because the upstream's retry budget is spent.
pub fn retry_budget_exhausted(upstream: &str) {
    metrics::counter!("switchyard_retry_budget_exhausted_total", "upstream" => upstream.to_string())
        .increment(1);
}

/// A slow idempotent call got a second, hedged attempt.
pub fn retry_hedged(upstream: &str) {
    metrics::counter!("switchyard_retry_hedges_total", "upstream" => upstream.to_string())
        .increment(1);
}

/// An upstream body passed `max_body` (on the wire or once decoded).
pub fn upstream_body_too_large(upstream: &str) {
    metrics::counter!("switchyard_upstream_body_too_large_total", "upstream" => upstream.to_string())
        .increment(1);
}

/// A config reload was tried; `ok` says whether the new config is serving.
pub fn config_reloaded(ok: bool) {
    let result = if ok { "ok" } else { "error" };
    metrics::counter!("switchyard_config_reloads_total", "result" => result).increment(1);
}

/// A client connection was closed at once because `max_connections` was reached.
pub fn connection_refused() {
    metrics::counter!("switchyard_connections_refused_total").increment(1);
}
