//! The one observable event every request ends with, and the per-gateway
//! `Telemetry` that turns it into metrics, dashboard statistics, an access
//! log line and exported spans.

use super::access_log::AccessLog;
use super::handles::Handles;
use super::otlp::SpanExport;
use super::stats::Stats;
use super::trace::TraceContext;
use crate::plan::Plan;
use std::net::IpAddr;
use std::time::{Duration, SystemTime};

/// A request as it ended.
#[derive(Debug)]
pub struct RequestRecord<'a> {
    /// Wall-clock time it arrived.
    pub started_at: SystemTime,
    /// `GET`, …, `OTHER`.
    pub method: &'static str,
    /// The raw path (access log and dashboard only, never a metric label).
    pub path: &'a str,
    /// The route template label, or `unmatched`.
    pub route: &'a str,
    /// The response status.
    pub status: u16,
    /// Time until the response head was ready.
    pub duration: Duration,
    /// Who asked (the peer address for now).
    pub client: IpAddr,
    /// Trace context, when tracing is on.
    pub trace: Option<TraceContext>,
    /// Every call of the route, in call id order (sent or not).
    pub calls: Vec<CallRecord<'a>>,
    /// The response cache's outcome (`hit`, `miss`, …), once caching exists.
    pub cache: Option<&'static str>,
    /// The rate limiter's decision (`allowed`, `limited`), once limiting exists.
    pub limiter: Option<&'static str>,
}

/// One upstream call of a request.
#[derive(Debug, Clone)]
pub struct CallRecord<'a> {
    /// The call's name (`proxy` for a proxy route).
    pub name: &'a str,
    /// Its upstream.
    pub upstream: &'a str,
    /// The HTTP method it used.
    pub method: &'a str,
    /// Its index: the span id of the call is derived from it.
    pub index: usize,
    /// When it was sent, from the start of the request; `None` if never sent.
    pub start: Option<Duration>,
    /// How long it took, when sent.
    pub duration: Option<Duration>,
    /// `ok`, a failure kind, `cancelled`, `not_run` or `empty_list`.
    pub outcome: &'static str,
    /// The upstream's HTTP status, when it answered.
    pub status: Option<u16>,
    /// Calls this one waited for (indices into `RequestRecord::calls`).
    pub waited_for: &'a [usize],
    /// The cache's outcome for this call, once caching exists.
    pub cache: Option<&'static str>,
}

impl CallRecord<'_> {
    /// Whether the request went out (only those count as upstream calls).
    pub fn sent(&self) -> bool {
        self.start.is_some()
    }
}

/// A telemetry sink that could not be started.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The access log file cannot be opened.
    #[error("access log `{path}`: {source}")]
    AccessLog {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The OTLP exporter cannot be built.
    #[error("OTLP exporter for `{endpoint}`: {message}")]
    Otlp {
        /// The configured endpoint.
        endpoint: String,
        /// Why.
        message: String,
    },
}

/// What one gateway records about itself.
pub struct Telemetry {
    metrics: bool,
    tracing: bool,
    /// Figures for the dashboard (`/stats`).
    pub stats: Stats,
    handles: Handles,
    access_log: Option<AccessLog>,
    spans: Option<SpanExport>,
}

impl Telemetry {
    /// The sinks a plan asks for. OTLP export needs a tokio runtime.
    pub fn new(plan: &Plan) -> Result<Self, TelemetryError> {
        let t = &plan.telemetry;
        let access_log = t.access_log.as_ref().map(AccessLog::open).transpose()?;
        let spans = t.otlp.as_ref().map(SpanExport::start).transpose()?;
        Ok(Telemetry {
            access_log,
            spans,
            ..Telemetry::without_sinks(plan)
        })
    }

    /// Metrics and statistics as the plan says, but no access log or export
    /// (the fallback when a sink cannot start).
    pub fn without_sinks(plan: &Plan) -> Self {
        Telemetry {
            metrics: plan.telemetry.metrics,
            tracing: plan.telemetry.tracing,
            stats: Stats::new(
                plan.routes.iter().map(|r| r.label.as_str()),
                plan.upstreams.iter().map(|u| u.name.as_str()),
            ),
            handles: Handles::new(plan),
            access_log: None,
            spans: None,
        }
    }

    /// Whether metrics and statistics are recorded.
    pub fn metrics(&self) -> bool {
        self.metrics
    }

    /// Whether requests get trace context.
    pub fn tracing(&self) -> bool {
        self.tracing
    }

    /// Whether anything needs per-call records (they cost an allocation).
    pub fn wants_calls(&self) -> bool {
        self.metrics || self.access_log.is_some() || self.spans.is_some()
    }

    /// A request ended: count it, log it, export its spans.
    pub fn request_finished(&self, rec: &RequestRecord<'_>) {
        if self.metrics {
            let route_id = self.stats.route_id(rec.route);
            match route_id {
                Some(id) => {
                    self.handles
                        .request(id, rec.method, rec.status, rec.duration);
                    for c in rec.calls.iter().filter(|c| c.sent()) {
                        let took = c.duration.unwrap_or_default();
                        self.handles
                            .call(id, c.index, c.upstream, c.name, c.outcome, took);
                    }
                }
                None => {
                    super::request_served(rec.route, rec.method, rec.status, rec.duration);
                    for c in rec.calls.iter().filter(|c| c.sent()) {
                        let took = c.duration.unwrap_or_default();
                        super::upstream_call(c.upstream, c.name, c.outcome, took);
                    }
                }
            }
            self.stats.record(route_id, rec);
        }
        if let Some(log) = &self.access_log {
            log.write(rec);
        }
        if let Some(spans) = &self.spans {
            spans.export(rec);
        }
    }

    /// Flushes what is buffered (exported spans); call before exiting.
    pub fn shutdown(&self) {
        if let Some(spans) = &self.spans {
            spans.shutdown();
        }
    }
}
