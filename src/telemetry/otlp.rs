//! Span export over OTLP/gRPC: one server span per request and one client
//! span per upstream call, with the ids of `trace.rs`.
//!
//! Spans are built when the request ends (its `RequestRecord` has every
//! timing) and handed to the SDK's batch processor, which exports them from
//! its own thread; the request never waits for the collector.

use super::record::{RequestRecord, TelemetryError};
use crate::plan::telemetry::OtlpPlan;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, SpanData, SpanEvents, SpanLinks, SpanProcessor,
};
use std::borrow::Cow;

/// How often batched spans are sent: soon enough to look at a trace right
/// after the request, rarely enough to batch under load.
const EXPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Spans held while the collector is slow or away; beyond that they are
/// dropped (by the SDK, which logs it) rather than growing memory.
const MAX_QUEUED_SPANS: usize = 8192;

/// A running exporter.
pub struct SpanExport {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
}

impl SpanExport {
    /// Builds the exporter (lazily connecting) and the batch processor.
    /// Must be called inside a tokio runtime.
    pub fn start(plan: &OtlpPlan) -> Result<Self, TelemetryError> {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(plan.endpoint.clone())
            .with_timeout(plan.timeout)
            .build()
            .map_err(|e| TelemetryError::Otlp {
                endpoint: plan.endpoint.clone(),
                message: e.to_string(),
            })?;
        let mut processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(EXPORT_EVERY)
                    .with_max_queue_size(MAX_QUEUED_SPANS)
                    .build(),
            )
            .build();
        processor.set_resource(
            &Resource::builder()
                .with_service_name(plan.service_name.clone())
                .build(),
        );
        let scope = InstrumentationScope::builder("switchyard")
            .with_version(env!("CARGO_PKG_VERSION"))
            .build();
        Ok(SpanExport { processor, scope })
    }

    /// Queues the spans of a finished request (sampled traces only).
    pub fn export(&self, rec: &RequestRecord<'_>) {
        let Some(trace) = rec.trace.filter(|t| t.sampled()) else {
            return;
        };
        let trace_id = TraceId::from(trace.trace_id);
        let flags = TraceFlags::new(trace.flags);
        let context = |span: u64| {
            SpanContext::new(trace_id, SpanId::from(span), flags, false, TraceState::NONE)
        };
        let end = rec.started_at + rec.duration;
        let mut attributes = vec![
            KeyValue::new("http.request.method", rec.method),
            KeyValue::new("http.route", route_path(rec.route).to_string()),
            KeyValue::new("url.path", rec.path.to_string()),
            KeyValue::new("http.response.status_code", i64::from(rec.status)),
            KeyValue::new("client.address", rec.client.to_canonical().to_string()),
        ];
        if let Some(c) = rec.cache {
            attributes.push(KeyValue::new("switchyard.cache", c));
        }
        if let Some(l) = rec.limiter {
            attributes.push(KeyValue::new("switchyard.limiter", l));
        }
        self.processor.on_end(SpanData {
            span_context: context(trace.span_id),
            parent_span_id: trace.parent_span_id.map_or(SpanId::INVALID, SpanId::from),
            parent_span_is_remote: trace.parent_span_id.is_some(),
            span_kind: SpanKind::Server,
            name: Cow::Owned(rec.route.to_string()),
            start_time: rec.started_at,
            end_time: end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status: if rec.status >= 500 {
                Status::error(format!("answered {}", rec.status))
            } else {
                Status::Unset
            },
            instrumentation_scope: self.scope.clone(),
        });
        for c in &rec.calls {
            let (Some(start), Some(took)) = (c.start, c.duration) else {
                continue;
            };
            let mut attributes = vec![
                KeyValue::new("switchyard.call", c.name.to_string()),
                KeyValue::new("switchyard.upstream", c.upstream.to_string()),
                KeyValue::new("switchyard.outcome", c.outcome),
                KeyValue::new("http.request.method", c.method.to_string()),
            ];
            if let Some(s) = c.status {
                attributes.push(KeyValue::new("http.response.status_code", i64::from(s)));
            }
            if let Some(cache) = c.cache {
                attributes.push(KeyValue::new("switchyard.cache", cache));
            }
            self.processor.on_end(SpanData {
                span_context: context(trace.call_span_id(c.index)),
                parent_span_id: SpanId::from(trace.span_id),
                parent_span_is_remote: false,
                span_kind: SpanKind::Client,
                name: Cow::Owned(c.name.to_string()),
                start_time: rec.started_at + start,
                end_time: rec.started_at + start + took,
                attributes,
                dropped_attributes_count: 0,
                events: SpanEvents::default(),
                links: SpanLinks::default(),
                status: if c.outcome == "ok" {
                    Status::Unset
                } else {
                    Status::error(c.outcome)
                },
                instrumentation_scope: self.scope.clone(),
            });
        }
    }

    /// Exports what is queued and stops (blocks up to the export timeout).
    pub fn shutdown(&self) {
        if let Err(e) = self.processor.shutdown() {
            tracing::warn!(error = %e, "OTLP exporter did not shut down cleanly");
        }
    }
}

/// `GET /users/{id}` → `/users/{id}` (OpenTelemetry's `http.route`).
fn route_path(label: &str) -> &str {
    label.split_once(' ').map_or(label, |(_, p)| p)
}
