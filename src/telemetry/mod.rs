//! Measurement: the Prometheus recorder and the gateway's observable events.
//!
//! Each event is one function here that counts (and, where useful, logs), so
//! metric names and labels live in one place. Label values are bounded:
//! route templates (never raw paths), upstream and call names from the config,
//! and fixed outcome kinds.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::collections::HashMap;
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
    let class = status_class(status);
    // Handles are registered once per (route, method, status class) and
    // reused: building label strings and looking them up in the registry on
    // every request cost as much as serving a cache hit.
    type Served = (String, &'static str, metrics::Counter, metrics::Histogram);
    static HANDLES: OnceLock<std::sync::RwLock<HashMap<String, Vec<Served>>>> = OnceLock::new();
    let handles = HANDLES.get_or_init(Default::default);
    let record = |c: &metrics::Counter, h: &metrics::Histogram| {
        c.increment(1);
        h.record(took.as_secs_f64());
    };
    if let Ok(map) = handles.read()
        && let Some((_, _, c, h)) = map
            .get(route)
            .and_then(|v| v.iter().find(|(m, s, _, _)| m == method && *s == class))
    {
        record(c, h);
        return;
    }
    let labels = [
        ("route", route.to_string()),
        ("method", method.to_string()),
        ("status", class.to_string()),
    ];
    let counter = metrics::counter!("switchyard_requests_total", &labels);
    let histogram = metrics::histogram!("switchyard_request_duration_seconds", &labels);
    record(&counter, &histogram);
    if let Ok(mut map) = handles.write() {
        let list = map.entry(route.to_string()).or_default();
        if !list.iter().any(|(m, s, _, _)| m == method && *s == class) {
            list.push((method.to_string(), class, counter, histogram));
        }
    }
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
    // Registered once: every request moves this gauge twice.
    static GAUGE: OnceLock<metrics::Gauge> = OnceLock::new();
    GAUGE
        .get_or_init(|| {
            prometheus();
            metrics::gauge!("switchyard_requests_in_flight")
        })
        .increment(delta);
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
