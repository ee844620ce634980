//! Measurement: the Prometheus recorder and the gateway's observable events.
//!
//! Each event is one function here that counts (and, where useful, logs), so
//! metric names and labels live in one place. Label values are bounded:
//! route templates (never raw paths), upstream and call names from the config,
//! and fixed outcome kinds.
//!
//! Layout: `record.rs` (the request-finished record and the per-gateway
//! `Telemetry` that consumes it), `trace.rs` (W3C trace context),
//! `otlp.rs` (span export), `access_log.rs`, `stats.rs` (dashboard figures).

pub mod access_log;
mod handles;
mod otlp;
pub mod record;
pub mod stats;
pub mod trace;

pub use record::{CallRecord, RequestRecord, Telemetry, TelemetryError};

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;
use std::time::Duration;

/// Latency buckets in seconds: sub-millisecond gateway work up to slow upstreams.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How often queued histogram samples are folded into buckets.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

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
        // Histogram samples queue until drained into buckets; without a
        // scrape they would pile up, so drain them on a timer.
        let upkeep = handle.clone();
        let _ = std::thread::Builder::new()
            .name("metrics-upkeep".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(UPKEEP_EVERY);
                    upkeep.run_upkeep();
                }
            });
        // Another recorder may already be installed (e.g. by an embedding
        // program); then ours only renders what it sees, which is nothing.
        let _ = metrics::set_global_recorder(recorder);
        describe();
        metrics::gauge!("switchyard_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        // Reload results exist (at 0) before the first reload, so alerts and
        // dashboards can refer to them from the start.
        for result in ["ok", "error"] {
            metrics::counter!("switchyard_config_reloads_total", "result" => result).absolute(0);
        }
        metrics::gauge!("switchyard_config_last_reload_successful").set(1.0);
        metrics::counter!("switchyard_access_log_dropped_total").absolute(0);
        // The cache tier's series exist from the start too (the gauges are
        // refreshed every second; a series appearing later looks like growth).
        cache_held(0, 0);
        metrics::counter!("switchyard_cache_evictions_total").absolute(0);
        handle
    })
}

/// HELP lines, one per metric of this file.
fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "switchyard_requests_total",
        "Client requests answered, by route template, method and status class."
    );
    describe_histogram!(
        "switchyard_request_duration_seconds",
        Unit::Seconds,
        "Time until the response head was ready, by route template, method and status class."
    );
    describe_counter!(
        "switchyard_upstream_calls_total",
        "Upstream calls sent, by upstream, call name and outcome."
    );
    describe_histogram!(
        "switchyard_upstream_call_duration_seconds",
        Unit::Seconds,
        "Upstream call time, by upstream, call name and outcome."
    );
    describe_gauge!(
        "switchyard_requests_in_flight",
        "Client requests being served now."
    );
    describe_gauge!(
        "switchyard_build_info",
        "Always 1; the labels say which build runs."
    );
    describe_counter!(
        "switchyard_config_reloads_total",
        "Config reloads, by result (ok, error)."
    );
    describe_gauge!(
        "switchyard_config_last_reload_successful",
        "1 when the config in use is the latest one loaded, 0 after a failed reload."
    );
    describe_counter!(
        "switchyard_access_log_dropped_total",
        "Access log lines dropped because the writer fell behind or failed."
    );
    describe_cache();
    describe_policies();
}

/// HELP lines of the rate limiter's and the resilience policies' metrics.
fn describe_policies() {
    use metrics::{describe_counter, describe_gauge};
    for (name, help) in [
        (
            "switchyard_ratelimit_decisions_total",
            "Rate-limit decisions, by policy, store and outcome.",
        ),
        (
            "switchyard_ratelimit_backend_errors_total",
            "Redis errors of the rate limiter.",
        ),
        (
            "switchyard_retry_attempts_total",
            "Retries sent, by upstream and the failure retried.",
        ),
        (
            "switchyard_retry_budget_exhausted_total",
            "Retries not sent because the upstream's retry budget was spent.",
        ),
        (
            "switchyard_retry_hedges_total",
            "Hedged second attempts sent, by upstream.",
        ),
        (
            "switchyard_bulkhead_rejected_total",
            "Calls shed because the upstream's in-flight cap was reached.",
        ),
        (
            "switchyard_upstream_body_too_large_total",
            "Upstream bodies aborted at the size cap (encoded or decoded).",
        ),
        (
            "switchyard_connections_refused_total",
            "Client connections closed at once because max_connections was reached.",
        ),
    ] {
        describe_counter!(name, help);
    }
    for (name, help) in [
        (
            "switchyard_ratelimit_keys",
            "Rate-limit buckets held in process, by policy and store.",
        ),
        (
            "switchyard_ratelimit_degraded",
            "1 while the rate limiter's Redis fails.",
        ),
        (
            "switchyard_circuit_state",
            "Circuit breaker state per upstream: 0 closed, 1 open, 2 half-open.",
        ),
    ] {
        describe_gauge!(name, help);
    }
}

/// HELP lines of the cache's metrics.
fn describe_cache() {
    use metrics::{describe_counter, describe_gauge};
    for (name, help) in [
        (
            "switchyard_cache_hits_total",
            "Cache hits, by level (call, route), name and tier (l1, l2).",
        ),
        (
            "switchyard_cache_misses_total",
            "Cache misses fetched from the upstream, by level and name.",
        ),
        (
            "switchyard_cache_collapsed_total",
            "Requests that waited for another request's fetch of the same key.",
        ),
        (
            "switchyard_cache_stale_served_total",
            "Stale answers served, by reason (while_revalidate, if_error).",
        ),
        (
            "switchyard_cache_refreshes_total",
            "Background stale-while-revalidate refreshes, by outcome.",
        ),
        (
            "switchyard_cache_store_skipped_total",
            "Answers not stored, by reason.",
        ),
        (
            "switchyard_cache_evictions_total",
            "Entries the in-process tier evicted to stay within max_bytes.",
        ),
        (
            "switchyard_cache_redis_errors_total",
            "Redis errors of the cache tier, by operation.",
        ),
        (
            "switchyard_cache_purges_total",
            "Purges applied, by kind (key, prefix, tag) and source (admin, broadcast).",
        ),
    ] {
        describe_counter!(name, help);
    }
    describe_gauge!(
        "switchyard_cache_bytes",
        metrics::Unit::Bytes,
        "Bytes held by the in-process cache tier."
    );
    describe_gauge!(
        "switchyard_cache_entries",
        "Entries held by the in-process cache tier."
    );
}

/// A config reload was tried; a failed one leaves the old plan serving.
pub fn config_reload(ok: bool) {
    let result = if ok { "ok" } else { "error" };
    metrics::counter!("switchyard_config_reloads_total", "result" => result).increment(1);
    metrics::gauge!("switchyard_config_last_reload_successful").set(if ok { 1.0 } else { 0.0 });
}

/// An access log line could not be written.
pub fn access_log_dropped() {
    metrics::counter!("switchyard_access_log_dropped_total").increment(1);
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

/// The request series of one label set (`Telemetry` keeps these handles,
/// so a request does not build label keys).
pub fn request_series(route: &str, method: &str, status_class: &str) -> (Counter, Histogram) {
    let labels = [
        ("route", route.to_string()),
        ("method", method.to_string()),
        ("status", status_class.to_string()),
    ];
    (
        metrics::counter!("switchyard_requests_total", &labels),
        metrics::histogram!("switchyard_request_duration_seconds", &labels),
    )
}

/// A client request was answered.
pub fn request_served(route: &str, method: &str, status: u16, took: Duration) {
    let (count, latency) = request_series(route, method, status_class(status));
    count.increment(1);
    latency.record(took.as_secs_f64());
}

/// The upstream-call series of one label set.
pub fn upstream_series(upstream: &str, call: &str, outcome: &str) -> (Counter, Histogram) {
    let labels = [
        ("upstream", upstream.to_string()),
        ("call", call.to_string()),
        ("outcome", outcome.to_string()),
    ];
    (
        metrics::counter!("switchyard_upstream_calls_total", &labels),
        metrics::histogram!("switchyard_upstream_call_duration_seconds", &labels),
    )
}

/// An upstream call ended; `outcome` is `ok` or a failure kind.
pub fn upstream_call(upstream: &str, call: &str, outcome: &'static str, took: Duration) {
    let (count, latency) = upstream_series(upstream, call, outcome);
    count.increment(1);
    latency.record(took.as_secs_f64());
}

/// Requests being served right now.
pub fn in_flight(delta: f64) {
    static GAUGE: OnceLock<metrics::Gauge> = OnceLock::new();
    GAUGE
        .get_or_init(|| metrics::gauge!("switchyard_requests_in_flight"))
        .increment(delta);
}

/// How often a failing rate limit backend is logged: every failure counts,
/// but one line per interval says so (a Redis outage must not flood the log).
const BACKEND_ERROR_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Where a rate limit decision was made (the `store` label).
pub const RATELIMIT_STORES: [&str; 3] = ["memory", "redis", "local_fallback"];
/// How a policy decided a request (the `outcome` label): `admitted`,
/// `limited`, `bypassed` (allow-listed), `not_counted` (another policy
/// limited it), `fail_open`, `fail_closed` (Redis unreachable).
pub const RATELIMIT_OUTCOMES: [&str; 6] = [
    "admitted",
    "limited",
    "bypassed",
    "not_counted",
    "fail_open",
    "fail_closed",
];

/// One rate limit policy's metrics. Handles are registered on first use (by
/// then the recorder is installed) and kept, so a decision costs an atomic
/// add, not a registry lookup.
pub struct RatelimitMetrics {
    policy: String,
    decisions: [[OnceLock<metrics::Counter>; RATELIMIT_OUTCOMES.len()]; RATELIMIT_STORES.len()],
    keys: [OnceLock<metrics::Gauge>; RATELIMIT_STORES.len()],
}

impl RatelimitMetrics {
    /// Metrics of the policy named `policy`.
    pub fn new(policy: &str) -> RatelimitMetrics {
        RatelimitMetrics {
            policy: policy.to_string(),
            decisions: Default::default(),
            keys: Default::default(),
        }
    }

    /// A request was decided: `switchyard_ratelimit_decisions_total{policy,store,outcome}`.
    /// `store` is one of `RATELIMIT_STORES`, `outcome` one of `RATELIMIT_OUTCOMES`.
    pub fn decision(&self, store: &'static str, outcome: &'static str) {
        let s = RATELIMIT_STORES
            .iter()
            .position(|x| *x == store)
            .unwrap_or(0);
        let o = RATELIMIT_OUTCOMES
            .iter()
            .position(|x| *x == outcome)
            .unwrap_or(0);
        self.decisions[s][o]
            .get_or_init(|| {
                let labels = [
                    ("policy", self.policy.clone()),
                    ("store", store.to_string()),
                    ("outcome", outcome.to_string()),
                ];
                metrics::counter!("switchyard_ratelimit_decisions_total", &labels)
            })
            .increment(1);
    }

    /// Buckets held in process went up or down: `switchyard_ratelimit_keys{policy,store}`.
    pub fn keys(&self, store: &'static str, delta: f64) {
        let s = RATELIMIT_STORES
            .iter()
            .position(|x| *x == store)
            .unwrap_or(0);
        self.keys[s]
            .get_or_init(|| {
                let labels = [
                    ("policy", self.policy.clone()),
                    ("store", store.to_string()),
                ];
                metrics::gauge!("switchyard_ratelimit_keys", &labels)
            })
            .increment(delta);
    }
}

/// The rate limit backend (Redis) failed a decision; `first` when this
/// failure starts a degraded period. Logged at most once per interval.
pub fn ratelimit_backend_error(error: &str, first: bool) {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST_LOG: AtomicU64 = AtomicU64::new(0);
    static SUPPRESSED: AtomicU64 = AtomicU64::new(0);
    metrics::counter!("switchyard_ratelimit_backend_errors_total").increment(1);
    metrics::gauge!("switchyard_ratelimit_degraded").set(1.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let last = LAST_LOG.load(Ordering::Relaxed);
    let due = first || now >= last + BACKEND_ERROR_LOG_INTERVAL.as_secs();
    if due
        && LAST_LOG
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let suppressed = SUPPRESSED.swap(0, Ordering::Relaxed);
        tracing::warn!(
            error,
            suppressed,
            "rate limit backend (redis) failing; policies apply on_redis_error"
        );
    } else {
        SUPPRESSED.fetch_add(1, Ordering::Relaxed);
    }
}

/// The rate limit backend answers again after failing.
pub fn ratelimit_backend_recovered() {
    metrics::gauge!("switchyard_ratelimit_degraded").set(0.0);
    tracing::info!("rate limit backend (redis) recovered");
}

/// How a cache lookup ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheLookup {
    /// Served from the in-process tier.
    HitL1,
    /// Served from the Redis tier.
    HitL2,
    /// Fetched from the upstream.
    Miss,
    /// Waited for another request's fetch of the same key.
    Collapsed,
    /// Served stale while one refresh runs.
    Stale,
    /// Served stale because the upstream failed.
    StaleIfError,
}

/// The counters of one cache policy, registered once (not per request):
/// `switchyard_cache_{hits,misses,collapsed,stale_served,refreshes}_total`
/// labelled `level` (`call`/`route`) and `name` (call name or route template).
pub struct CacheEvents {
    level: &'static str,
    name: String,
    hit_l1: metrics::Counter,
    hit_l2: metrics::Counter,
    miss: metrics::Counter,
    collapsed: metrics::Counter,
    stale: metrics::Counter,
    stale_if_error: metrics::Counter,
    refreshed: metrics::Counter,
    refresh_failed: metrics::Counter,
}

impl std::fmt::Debug for CacheEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CacheEvents({} {})", self.level, self.name)
    }
}

impl CacheEvents {
    /// Registers the counters of one policy.
    pub fn new(level: &'static str, name: &str) -> CacheEvents {
        let l = |extra: (&'static str, &'static str)| {
            [
                ("level", level.to_string()),
                ("name", name.to_string()),
                (extra.0, extra.1.to_string()),
            ]
        };
        CacheEvents {
            level,
            name: name.to_string(),
            hit_l1: metrics::counter!("switchyard_cache_hits_total", &l(("tier", "l1"))),
            hit_l2: metrics::counter!("switchyard_cache_hits_total", &l(("tier", "l2"))),
            miss: metrics::counter!("switchyard_cache_misses_total", &l(("tier", "upstream"))),
            collapsed: metrics::counter!(
                "switchyard_cache_collapsed_total",
                &l(("tier", "upstream"))
            ),
            stale: metrics::counter!(
                "switchyard_cache_stale_served_total",
                &l(("reason", "while_revalidate"))
            ),
            stale_if_error: metrics::counter!(
                "switchyard_cache_stale_served_total",
                &l(("reason", "if_error"))
            ),
            refreshed: metrics::counter!("switchyard_cache_refreshes_total", &l(("outcome", "ok"))),
            refresh_failed: metrics::counter!(
                "switchyard_cache_refreshes_total",
                &l(("outcome", "failed"))
            ),
        }
    }

    /// A lookup ended.
    pub fn lookup(&self, how: CacheLookup) {
        match how {
            CacheLookup::HitL1 => &self.hit_l1,
            CacheLookup::HitL2 => &self.hit_l2,
            CacheLookup::Miss => &self.miss,
            CacheLookup::Collapsed => &self.collapsed,
            CacheLookup::Stale => &self.stale,
            CacheLookup::StaleIfError => &self.stale_if_error,
        }
        .increment(1);
    }

    /// A background stale-while-revalidate refresh ended.
    pub fn refreshed(&self, ok: bool) {
        if ok {
            &self.refreshed
        } else {
            &self.refresh_failed
        }
        .increment(1);
    }

    /// An answer was not stored; `reason` is a fixed word (`status`,
    /// `partial`, `no_store`, `no_cache`, `private`, `expired`,
    /// `request_no_store`, `purged`).
    pub fn store_skipped(&self, reason: &'static str) {
        let labels = [
            ("level", self.level.to_string()),
            ("name", self.name.clone()),
            ("reason", reason.to_string()),
        ];
        metrics::counter!("switchyard_cache_store_skipped_total", &labels).increment(1);
    }
}

/// The in-process tier evicted an entry to stay within its byte bound.
pub fn cache_evicted() {
    metrics::counter!("switchyard_cache_evictions_total").increment(1);
}

/// What the in-process tier holds now.
pub fn cache_held(bytes: u64, entries: u64) {
    metrics::gauge!("switchyard_cache_bytes").set(bytes as f64);
    metrics::gauge!("switchyard_cache_entries").set(entries as f64);
}

/// A Redis command of the cache tier failed (`op`: get, set, purge, publish, subscribe).
pub fn cache_redis_error(op: &'static str) {
    metrics::counter!("switchyard_cache_redis_errors_total", "op" => op).increment(1);
}

/// A purge was applied; `source` is `admin` or `broadcast`.
pub fn cache_purged(kind: &'static str, source: &'static str) {
    metrics::counter!("switchyard_cache_purges_total", "kind" => kind, "source" => source)
        .increment(1);
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
