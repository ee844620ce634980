//! Metric handles kept per route and per call, created on first use: a
//! request then increments atomics instead of building label keys and
//! looking them up in the registry (which cost more than everything else
//! telemetry does per request).

use super::{request_series, status_class, upstream_series};
use crate::plan::{Plan, RouteKind};
use metrics::{Counter, Histogram};
use std::sync::OnceLock;
use std::time::Duration;

/// Methods with a label of their own, and `OTHER`.
const METHODS: [&str; 8] = [
    "GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "OTHER",
];
/// Status classes.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// Outcomes of a sent call; any other goes the uncached way.
const OUTCOMES: [&str; 8] = [
    "ok",
    "status",
    "timeout",
    "connect",
    "transport",
    "decode",
    "too_large",
    "cancelled",
];

type Series = OnceLock<(Counter, Histogram)>;

/// Handles of one route: by method and status class, and by call and outcome.
struct RouteHandles {
    label: String,
    requests: Vec<Series>,
    calls: Vec<Vec<Series>>,
}

/// Handles of every route of a plan (and `unmatched`), indexed like `Stats`.
pub struct Handles {
    routes: Vec<RouteHandles>,
}

fn series_vec(n: usize) -> Vec<Series> {
    (0..n).map(|_| OnceLock::new()).collect()
}

impl Handles {
    /// Empty handle slots for the plan's routes and `unmatched`.
    pub fn new(plan: &Plan) -> Self {
        let mut routes: Vec<RouteHandles> = plan
            .routes
            .iter()
            .map(|r| {
                let calls = match &r.kind {
                    RouteKind::Aggregate(a) => a.calls.len(),
                    RouteKind::Proxy(_) => 1,
                };
                RouteHandles {
                    label: r.label.clone(),
                    requests: series_vec(METHODS.len() * CLASSES.len()),
                    calls: (0..calls).map(|_| series_vec(OUTCOMES.len())).collect(),
                }
            })
            .collect();
        routes.push(RouteHandles {
            label: super::UNMATCHED_ROUTE.to_string(),
            requests: series_vec(METHODS.len() * CLASSES.len()),
            calls: Vec::new(),
        });
        Handles { routes }
    }

    /// Counts a request of route `route` (an index from `Stats::route_id`).
    pub fn request(&self, route: usize, method: &str, status: u16, took: Duration) {
        let class = status_class(status);
        let (Some(r), Some(m), Some(c)) = (
            self.routes.get(route),
            METHODS.iter().position(|x| *x == method),
            CLASSES.iter().position(|x| *x == class),
        ) else {
            return super::request_served(
                self.routes
                    .get(route)
                    .map_or(super::UNMATCHED_ROUTE, |r| &r.label),
                method,
                status,
                took,
            );
        };
        let (count, latency) = r.requests[m * CLASSES.len() + c]
            .get_or_init(|| request_series(&r.label, method, class));
        count.increment(1);
        latency.record(took.as_secs_f64());
    }

    /// Counts call `call` of route `route`.
    pub fn call(
        &self,
        route: usize,
        call: usize,
        upstream: &str,
        name: &str,
        outcome: &'static str,
        took: Duration,
    ) {
        let slot = self
            .routes
            .get(route)
            .and_then(|r| r.calls.get(call))
            .zip(OUTCOMES.iter().position(|x| *x == outcome));
        let Some((slots, o)) = slot else {
            return super::upstream_call(upstream, name, outcome, took);
        };
        let (count, latency) = slots[o].get_or_init(|| upstream_series(upstream, name, outcome));
        count.increment(1);
        latency.record(took.as_secs_f64());
    }
}
