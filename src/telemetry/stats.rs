//! Live figures for the dashboard (`/stats` on the admin listener): per route
//! and per upstream, totals since start and, over the last minute, rate,
//! latency percentiles and error rate; plus the call graphs of a few recent
//! requests.
//!
//! Prometheus histograms are for a server that keeps history; these are for
//! a person looking now, so they keep a one-minute window in 5-second slots.
//! The series are fixed when the gateway starts (its routes, its upstreams,
//! `unmatched`), so their number is bounded like the metric labels.

use super::UNMATCHED_ROUTE;
use super::record::RequestRecord;
use serde::Serialize;
use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

/// One window slot's length.
const SLOT: Duration = Duration::from_secs(5);
/// Slots in the window: 12 × 5 s = the last minute.
const SLOTS: usize = 12;
/// Latency buckets: bucket `i` ends at `FIRST_BUCKET × GROWTH^i`, so a
/// percentile is off by at most 25 %; 64 of them reach about a minute.
const BUCKETS: usize = 64;
const FIRST_BUCKET_SECS: f64 = 50e-6;
const GROWTH: f64 = 1.25;
/// How many recent requests keep their call graph for the waterfall.
const RECENT: usize = 20;
/// At most one request per this interval is kept for the waterfall, so
/// sampling costs nothing under load.
const SAMPLE_EVERY_MS: u64 = 100;

/// All figures of one gateway.
pub struct Stats {
    epoch: Instant,
    routes: Vec<Series>,
    route_index: HashMap<String, usize>,
    upstreams: Vec<Series>,
    upstream_index: HashMap<String, usize>,
    recent: Mutex<VecDeque<RecentRequest>>,
    next_sample_ms: AtomicU64,
}

struct Series {
    name: String,
    data: Mutex<SeriesData>,
}

#[derive(Default)]
struct Counts {
    requests: u64,
    errors: u64,
    limited: u64,
    cache_lookups: u64,
    cache_hits: u64,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.limited += o.limited;
        self.cache_lookups += o.cache_lookups;
        self.cache_hits += o.cache_hits;
    }
}

struct Slot {
    number: u64,
    counts: Counts,
    buckets: [u32; BUCKETS],
}

struct SeriesData {
    total: Counts,
    slots: Vec<Slot>,
}

/// What one event adds to a series.
struct Event {
    error: bool,
    limited: bool,
    cache: Option<bool>,
    took: Duration,
}

impl Series {
    fn new(name: &str) -> Self {
        let slots = (0..SLOTS)
            .map(|_| Slot {
                number: u64::MAX,
                counts: Counts::default(),
                buckets: [0; BUCKETS],
            })
            .collect();
        Series {
            name: name.to_string(),
            data: Mutex::new(SeriesData {
                total: Counts::default(),
                slots,
            }),
        }
    }

    fn record(&self, slot_number: u64, e: &Event) {
        let one = Counts {
            requests: 1,
            errors: u64::from(e.error),
            limited: u64::from(e.limited),
            cache_lookups: u64::from(e.cache.is_some()),
            cache_hits: u64::from(e.cache == Some(true)),
        };
        let Ok(mut d) = self.data.lock() else { return };
        d.total.add(&one);
        let slot = &mut d.slots[(slot_number % SLOTS as u64) as usize];
        if slot.number != slot_number {
            slot.number = slot_number;
            slot.counts = Counts::default();
            slot.buckets = [0; BUCKETS];
        }
        slot.counts.add(&one);
        let b = &mut slot.buckets[bucket_of(e.took)];
        *b = b.saturating_add(1);
    }

    fn snapshot(&self, now_slot: u64, window_secs: f64) -> SeriesSnapshot {
        let Ok(d) = self.data.lock() else {
            return SeriesSnapshot::default();
        };
        let mut counts = Counts::default();
        let mut buckets = [0u64; BUCKETS];
        for s in d.slots.iter().filter(|s| {
            s.number != u64::MAX && s.number <= now_slot && now_slot - s.number < SLOTS as u64
        }) {
            counts.add(&s.counts);
            for (total, &n) in buckets.iter_mut().zip(&s.buckets) {
                *total += u64::from(n);
            }
        }
        let ratio = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
        SeriesSnapshot {
            name: self.name.clone(),
            total: d.total.requests,
            errors: d.total.errors,
            limited: d.total.limited,
            cache_hit_ratio: ratio(d.total.cache_hits, d.total.cache_lookups),
            window: WindowSnapshot {
                count: counts.requests,
                rate: counts.requests as f64 / window_secs.max(1e-3),
                error_rate: ratio(counts.errors, counts.requests),
                limited: counts.limited,
                cache_hit_ratio: ratio(counts.cache_hits, counts.cache_lookups),
                p50_ms: percentile(&buckets, 0.50),
                p95_ms: percentile(&buckets, 0.95),
                p99_ms: percentile(&buckets, 0.99),
            },
        }
    }
}

fn bucket_of(d: Duration) -> usize {
    let secs = d.as_secs_f64();
    if secs <= FIRST_BUCKET_SECS {
        return 0;
    }
    let i = ((secs / FIRST_BUCKET_SECS).ln() / GROWTH.ln()).ceil();
    (i as usize).min(BUCKETS - 1)
}

/// The geometric middle of the bucket holding quantile `q`, in ms.
fn percentile(buckets: &[u64; BUCKETS], q: f64) -> Option<f64> {
    let n: u64 = buckets.iter().sum();
    if n == 0 {
        return None;
    }
    let rank = ((q * n as f64).ceil() as u64).max(1);
    let mut seen = 0;
    let i = buckets.iter().position(|&c| {
        seen += c;
        seen >= rank
    })?;
    let upper = FIRST_BUCKET_SECS * GROWTH.powi(i as i32);
    let middle = if i == 0 { upper } else { upper / GROWTH.sqrt() };
    Some((middle * 1e5).round() / 100.0)
}

/// Figures of one route or upstream, as `/stats` shows them.
#[derive(Debug, Default, Serialize)]
pub struct SeriesSnapshot {
    /// Route label or upstream name.
    pub name: String,
    /// Requests (or calls) since start.
    pub total: u64,
    /// Of those, errors: 5xx responses (routes) or failed calls (upstreams).
    pub errors: u64,
    /// Of those, rejected by the rate limiter (routes).
    pub limited: u64,
    /// Cache hits / cache lookups since start; `null` without lookups.
    pub cache_hit_ratio: Option<f64>,
    /// The last minute.
    pub window: WindowSnapshot,
}

/// The last minute of one series.
#[derive(Debug, Default, Serialize)]
pub struct WindowSnapshot {
    /// Requests in the window.
    pub count: u64,
    /// Requests per second over the window.
    pub rate: f64,
    /// Errors / requests; `null` without requests.
    pub error_rate: Option<f64>,
    /// Rejected by the rate limiter.
    pub limited: u64,
    /// Cache hits / lookups.
    pub cache_hit_ratio: Option<f64>,
    /// Latency percentiles in milliseconds; `null` without requests.
    pub p50_ms: Option<f64>,
    /// 95th percentile.
    pub p95_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
}

/// One recent request's call graph: the waterfall.
#[derive(Debug, Clone, Serialize)]
pub struct RecentRequest {
    /// Unix time in milliseconds.
    pub time_ms: u64,
    /// The route label.
    pub route: String,
    /// The raw path.
    pub path: String,
    /// Response status.
    pub status: u16,
    /// Total time in ms.
    pub duration_ms: f64,
    /// Trace id, when tracing is on.
    pub trace_id: Option<String>,
    /// The calls, in config order.
    pub calls: Vec<RecentCall>,
}

/// One bar of the waterfall.
#[derive(Debug, Clone, Serialize)]
pub struct RecentCall {
    /// Call name.
    pub name: String,
    /// Upstream name.
    pub upstream: String,
    /// When it was sent, ms after the request arrived (`null`: never sent).
    pub start_ms: Option<f64>,
    /// How long it took.
    pub duration_ms: Option<f64>,
    /// `ok` or what went wrong.
    pub outcome: &'static str,
    /// The calls it waited for.
    pub waited_for: Vec<String>,
}

/// Everything `/stats` returns.
#[derive(Debug, Serialize)]
pub struct StatsSnapshot {
    /// Seconds since the gateway started.
    pub uptime_s: f64,
    /// Seconds the window covers now (up to 60).
    pub window_s: f64,
    /// Per route (and `unmatched`), in config order.
    pub routes: Vec<SeriesSnapshot>,
    /// Per upstream.
    pub upstreams: Vec<SeriesSnapshot>,
    /// Recent requests, newest first.
    pub recent: Vec<RecentRequest>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

impl Stats {
    /// Series for these routes (plus `unmatched`) and upstreams.
    pub fn new<'a>(
        routes: impl Iterator<Item = &'a str>,
        upstreams: impl Iterator<Item = &'a str>,
    ) -> Self {
        let routes: Vec<Series> = routes
            .chain(std::iter::once(UNMATCHED_ROUTE))
            .map(Series::new)
            .collect();
        let upstreams: Vec<Series> = upstreams.map(Series::new).collect();
        Stats {
            epoch: Instant::now(),
            route_index: routes
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.clone(), i))
                .collect(),
            upstream_index: upstreams
                .iter()
                .enumerate()
                .map(|(i, s)| (s.name.clone(), i))
                .collect(),
            routes,
            upstreams,
            recent: Mutex::new(VecDeque::with_capacity(RECENT)),
            next_sample_ms: AtomicU64::new(0),
        }
    }

    /// The index of a route label (`unmatched` included), as `Handles` use it.
    pub fn route_id(&self, route: &str) -> Option<usize> {
        self.route_index.get(route).copied()
    }

    fn slot_number(&self) -> u64 {
        (self.epoch.elapsed().as_millis() / SLOT.as_millis()) as u64
    }

    /// Counts a finished request (of route `route_id`) and its calls.
    pub fn record(&self, route_id: Option<usize>, rec: &RequestRecord<'_>) {
        let slot = self.slot_number();
        if let Some(i) = route_id {
            self.routes[i].record(
                slot,
                &Event {
                    error: rec.status >= 500,
                    limited: rec.limiter == Some("limited"),
                    cache: rec.cache.map(|c| c == "hit"),
                    took: rec.duration,
                },
            );
        }
        for c in rec.calls.iter().filter(|c| c.sent()) {
            if let Some(&i) = self.upstream_index.get(c.upstream) {
                self.upstreams[i].record(
                    slot,
                    &Event {
                        error: c.outcome != "ok",
                        limited: false,
                        cache: c.cache.map(|c| c == "hit"),
                        took: c.duration.unwrap_or_default(),
                    },
                );
            }
        }
        self.maybe_sample(rec);
    }

    fn maybe_sample(&self, rec: &RequestRecord<'_>) {
        if rec.calls.is_empty() {
            return;
        }
        let now = self.epoch.elapsed().as_millis() as u64;
        let next = self.next_sample_ms.load(Ordering::Relaxed);
        if now < next
            || self
                .next_sample_ms
                .compare_exchange(
                    next,
                    now + SAMPLE_EVERY_MS,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        let sample = RecentRequest {
            time_ms: rec
                .started_at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            route: rec.route.to_string(),
            path: rec.path.to_string(),
            status: rec.status,
            duration_ms: ms(rec.duration),
            trace_id: rec.trace.map(|t| t.trace_id_hex()),
            calls: rec
                .calls
                .iter()
                .map(|c| RecentCall {
                    name: c.name.to_string(),
                    upstream: c.upstream.to_string(),
                    start_ms: c.start.map(ms),
                    duration_ms: c.duration.map(ms),
                    outcome: c.outcome,
                    waited_for: c
                        .waited_for
                        .iter()
                        .filter_map(|&d| rec.calls.get(d).map(|d| d.name.to_string()))
                        .collect(),
                })
                .collect(),
        };
        if let Ok(mut recent) = self.recent.lock() {
            if recent.len() == RECENT {
                recent.pop_back();
            }
            recent.push_front(sample);
        }
    }

    /// The figures as of now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let uptime = self.epoch.elapsed();
        let now_slot = self.slot_number();
        // The window starts at the oldest slot still counted (or at start).
        let window_start = now_slot.saturating_sub(SLOTS as u64 - 1) * SLOT.as_secs();
        let window_s = (uptime.as_secs_f64() - window_start as f64).max(0.0);
        StatsSnapshot {
            uptime_s: uptime.as_secs_f64(),
            window_s,
            routes: self
                .routes
                .iter()
                .map(|s| s.snapshot(now_slot, window_s))
                .collect(),
            upstreams: self
                .upstreams
                .iter()
                .map(|s| s.snapshot(now_slot, window_s))
                .collect(),
            recent: self
                .recent
                .lock()
                .map(|r| r.iter().cloned().collect())
                .unwrap_or_default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_grow_geometrically_and_cap() {
        assert_eq!(bucket_of(Duration::ZERO), 0);
        assert_eq!(bucket_of(Duration::from_micros(50)), 0);
        assert_eq!(bucket_of(Duration::from_micros(60)), 1);
        assert_eq!(bucket_of(Duration::from_secs(3600)), BUCKETS - 1);
        let mut last = 0;
        for us in [100, 1_000, 10_000, 100_000, 1_000_000] {
            let b = bucket_of(Duration::from_micros(us));
            assert!(b > last);
            last = b;
        }
    }

    #[test]
    fn percentiles_are_within_a_bucket_of_the_truth() {
        let mut buckets = [0u64; BUCKETS];
        // 90 requests at 1 ms, 10 at 100 ms.
        buckets[bucket_of(Duration::from_millis(1))] += 90;
        buckets[bucket_of(Duration::from_millis(100))] += 10;
        let p50 = percentile(&buckets, 0.5).unwrap();
        let p95 = percentile(&buckets, 0.95).unwrap();
        assert!((0.8..=1.25).contains(&p50), "{p50}");
        assert!((80.0..=125.0).contains(&p95), "{p95}");
        assert_eq!(percentile(&[0; BUCKETS], 0.5), None);
    }
}
