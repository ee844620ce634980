//! The `telemetry` section compiled: what to record and where to send it.
//! Every mistake is reported with its position, together with the rest.

use super::Compiler;
use crate::config::{RawAccessLog, RawOtlp, RawTelemetry, Sp};
use std::path::PathBuf;
use std::time::Duration;

/// Default `service.name` of exported spans.
pub const DEFAULT_SERVICE_NAME: &str = "switchyard";
/// Default OTLP export timeout: a slow collector must not hold spans forever.
pub const DEFAULT_OTLP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the gateway records about itself.
#[derive(Debug, Clone)]
pub struct TelemetryPlan {
    /// Prometheus metrics and dashboard statistics.
    pub metrics: bool,
    /// W3C trace context: a trace per request, a span id per upstream call.
    pub tracing: bool,
    /// OTLP span export, when configured.
    pub otlp: Option<OtlpPlan>,
    /// The access log, when configured and not `off`.
    pub access_log: Option<AccessLogPlan>,
}

impl Default for TelemetryPlan {
    fn default() -> Self {
        TelemetryPlan {
            metrics: true,
            tracing: true,
            otlp: None,
            access_log: None,
        }
    }
}

/// Where spans are exported.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpPlan {
    /// `http://host:port` of an OTLP/gRPC collector.
    pub endpoint: String,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Longest one export may take.
    pub timeout: Duration,
}

/// The access log's destination and format.
#[derive(Debug, Clone, PartialEq)]
pub struct AccessLogPlan {
    /// Where lines go.
    pub output: LogOutput,
    /// How a line is written.
    pub format: LogFormat,
}

/// Where access log lines go.
#[derive(Debug, Clone, PartialEq)]
pub enum LogOutput {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// Appended to a file.
    File(PathBuf),
}

/// How an access log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line.
    Json,
    /// `key=value` pairs (logfmt).
    Logfmt,
}

impl Compiler {
    pub(super) fn telemetry(&mut self, raw: &RawTelemetry) -> TelemetryPlan {
        let flag = |f: &Option<Sp<bool>>| f.as_ref().is_none_or(|f| f.value);
        TelemetryPlan {
            metrics: flag(&raw.metrics),
            tracing: flag(&raw.tracing),
            otlp: raw.otlp.as_ref().and_then(|o| self.otlp(o)),
            access_log: raw.access_log.as_ref().and_then(|a| self.access_log(a)),
        }
    }

    fn otlp(&mut self, raw: &Sp<RawOtlp>) -> Option<OtlpPlan> {
        let o = &raw.value;
        let endpoint = o.endpoint.value.trim();
        let valid = endpoint
            .parse::<http::Uri>()
            .ok()
            .filter(|u| matches!(u.scheme_str(), Some("http" | "https")))
            .filter(|u| u.authority().is_some_and(|a| a.port_u16().is_some()));
        if valid.is_none() {
            self.error(
                o.endpoint.pos,
                format!(
                    "`endpoint`: `{endpoint}` is not an OTLP/gRPC endpoint like `http://127.0.0.1:4317`"
                ),
            );
        }
        let service_name = match &o.service_name {
            None => DEFAULT_SERVICE_NAME.to_string(),
            Some(n) if n.value.trim().is_empty() => {
                self.error(n.pos, "`service_name` cannot be empty");
                String::new()
            }
            Some(n) => n.value.trim().to_string(),
        };
        let timeout = self.duration(&o.timeout, "timeout", DEFAULT_OTLP_TIMEOUT);
        valid.map(|_| OtlpPlan {
            endpoint: endpoint.to_string(),
            service_name,
            timeout,
        })
    }

    fn access_log(&mut self, raw: &Sp<RawAccessLog>) -> Option<AccessLogPlan> {
        let a = &raw.value;
        let format = match &a.format {
            None => LogFormat::Json,
            Some(f) => match f.value.trim() {
                "json" => LogFormat::Json,
                "logfmt" => LogFormat::Logfmt,
                other => {
                    self.error(
                        f.pos,
                        format!("`format`: `{other}` is not one of `json`, `logfmt`"),
                    );
                    LogFormat::Json
                }
            },
        };
        let to = a.to.as_ref().map_or("stdout", |t| t.value.trim());
        let to_pos = a.to.as_ref().map_or(raw.pos, |t| t.pos);
        let output = match (to, &a.path) {
            ("off", _) => None,
            ("stdout", None) => Some(LogOutput::Stdout),
            ("stderr", None) => Some(LogOutput::Stderr),
            ("file", Some(p)) if !p.value.trim().is_empty() => {
                Some(LogOutput::File(PathBuf::from(p.value.trim())))
            }
            ("file", _) => {
                self.error(to_pos, "`to: file` needs a `path`");
                None
            }
            ("stdout" | "stderr", Some(p)) => {
                self.error(
                    p.pos,
                    format!("`path` only applies to `to: file`, not `{to}`"),
                );
                None
            }
            (other, _) => {
                self.error(
                    to_pos,
                    format!("`to`: `{other}` is not one of `stdout`, `stderr`, `file`, `off`"),
                );
                None
            }
        };
        output.map(|output| AccessLogPlan { output, format })
    }
}
