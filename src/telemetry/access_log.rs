//! The access log: one structured line per request, JSON or logfmt, to
//! stdout, stderr or a file.
//!
//! Lines are formatted on the request's task and written by one thread of
//! their own, so a slow disk or a full pipe never blocks a request; when the
//! queue is full, lines are dropped and counted
//! (`switchyard_access_log_dropped_total`).

use super::record::{RequestRecord, TelemetryError};
use crate::plan::telemetry::{AccessLogPlan, LogFormat, LogOutput};
use serde::Serialize;
use std::fmt::Write as _;
use std::io::Write;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::time::{SystemTime, UNIX_EPOCH};

/// Lines waiting for the writer: enough for bursts, small enough that a
/// stuck output costs little memory (a line is about 300 bytes).
const QUEUE_LINES: usize = 16_384;

/// A running access log.
pub struct AccessLog {
    format: LogFormat,
    lines: SyncSender<String>,
}

impl AccessLog {
    /// Opens the output and starts the writer thread.
    pub fn open(plan: &AccessLogPlan) -> Result<Self, TelemetryError> {
        let out: Box<dyn Write + Send> = match &plan.output {
            LogOutput::Stdout => Box::new(std::io::stdout()),
            LogOutput::Stderr => Box::new(std::io::stderr()),
            LogOutput::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|source| TelemetryError::AccessLog {
                        path: path.display().to_string(),
                        source,
                    })?,
            ),
        };
        let (lines, queue) = std::sync::mpsc::sync_channel(QUEUE_LINES);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || write_lines(queue, out))
            .map_err(|source| TelemetryError::AccessLog {
                path: "(writer thread)".into(),
                source,
            })?;
        Ok(AccessLog {
            format: plan.format,
            lines,
        })
    }

    /// Queues the line for a request.
    pub fn write(&self, rec: &RequestRecord<'_>) {
        let line = format_line(self.format, rec);
        match self.lines.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                super::access_log_dropped();
            }
        }
    }
}

/// Writes lines as they come; flushes whenever the queue is empty, so lines
/// appear at once when idle and in large writes under load.
fn write_lines(queue: Receiver<String>, out: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, out);
    while let Ok(line) = queue.recv() {
        let mut ok = out.write_all(line.as_bytes()).is_ok();
        while let Ok(line) = queue.try_recv() {
            ok &= out.write_all(line.as_bytes()).is_ok();
        }
        ok &= out.flush().is_ok();
        if !ok {
            super::access_log_dropped();
        }
    }
}

/// One line, newline included.
pub fn format_line(format: LogFormat, rec: &RequestRecord<'_>) -> String {
    let line = Line::of(rec);
    match format {
        LogFormat::Json => {
            let mut s = serde_json::to_string(&line).unwrap_or_default();
            s.push('\n');
            s
        }
        LogFormat::Logfmt => line.logfmt(),
    }
}

#[derive(Serialize)]
struct Line<'a> {
    time: String,
    client: String,
    method: &'a str,
    path: &'a str,
    route: &'a str,
    status: u16,
    duration_ms: f64,
    calls: Vec<LineCall<'a>>,
    cache: Option<&'a str>,
    limiter: Option<&'a str>,
    trace_id: Option<String>,
}

#[derive(Serialize)]
struct LineCall<'a> {
    name: &'a str,
    upstream: &'a str,
    duration_ms: Option<f64>,
    outcome: &'a str,
    status: Option<u16>,
    cache: Option<&'a str>,
}

fn ms(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e5).round() / 100.0
}

impl<'a> Line<'a> {
    fn of(rec: &'a RequestRecord<'a>) -> Self {
        Line {
            time: rfc3339_millis(rec.started_at),
            client: rec.client.to_canonical().to_string(),
            method: rec.method,
            path: rec.path,
            route: rec.route,
            status: rec.status,
            duration_ms: ms(rec.duration),
            calls: rec
                .calls
                .iter()
                .map(|c| LineCall {
                    name: c.name,
                    upstream: c.upstream,
                    duration_ms: c.duration.map(ms),
                    outcome: c.outcome,
                    status: c.status,
                    cache: c.cache,
                })
                .collect(),
            cache: rec.cache,
            limiter: rec.limiter,
            trace_id: rec.trace.map(|t| t.trace_id_hex()),
        }
    }

    /// `time=… client=… route="GET /a/{id}" … calls="a:20.1ms:ok b:-:not_run"`
    fn logfmt(&self) -> String {
        let mut calls = String::new();
        for (i, c) in self.calls.iter().enumerate() {
            if i > 0 {
                calls.push(' ');
            }
            let _ = match c.duration_ms {
                Some(d) => write!(calls, "{}:{d}ms:{}", c.name, c.outcome),
                None => write!(calls, "{}:-:{}", c.name, c.outcome),
            };
        }
        let mut s = String::with_capacity(256);
        let fields: [(&str, &str); 5] = [
            ("time", &self.time),
            ("client", &self.client),
            ("method", self.method),
            ("path", self.path),
            ("route", self.route),
        ];
        for (k, v) in fields {
            push_pair(&mut s, k, v);
        }
        push_pair(&mut s, "status", &self.status.to_string());
        push_pair(&mut s, "duration_ms", &self.duration_ms.to_string());
        push_pair(&mut s, "calls", &calls);
        push_pair(&mut s, "cache", self.cache.unwrap_or(""));
        push_pair(&mut s, "limiter", self.limiter.unwrap_or(""));
        push_pair(&mut s, "trace_id", self.trace_id.as_deref().unwrap_or(""));
        s.push('\n');
        s
    }
}

/// ` key=value`, quoting values with spaces, quotes, `=` or control characters.
fn push_pair(s: &mut String, key: &str, value: &str) {
    if !s.is_empty() {
        s.push(' ');
    }
    s.push_str(key);
    s.push('=');
    let plain = value
        .chars()
        .all(|c| !c.is_whitespace() && !c.is_control() && c != '"' && c != '=' && c != '\\');
    if plain {
        s.push_str(value);
        return;
    }
    s.push('"');
    for c in value.chars() {
        match c {
            '"' => s.push_str("\\\""),
            '\\' => s.push_str("\\\\"),
            '\n' => s.push_str("\\n"),
            c if c.is_control() => {
                let _ = write!(s, "\\u{{{:x}}}", c as u32);
            }
            c => s.push(c),
        }
    }
    s.push('"');
}

/// `2025-01-31T12:34:56.789Z`.
pub fn rfc3339_millis(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, day) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_millis()
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_utc_times() {
        assert_eq!(rfc3339_millis(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789);
        assert_eq!(rfc3339_millis(t), "2024-02-29T12:34:56.789Z");
        let t = UNIX_EPOCH + Duration::from_secs(951_782_400);
        assert_eq!(rfc3339_millis(t), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn logfmt_quotes_only_what_needs_it() {
        let mut s = String::new();
        push_pair(&mut s, "route", "GET /a/{id}");
        push_pair(&mut s, "path", "/a/1");
        push_pair(&mut s, "cache", "");
        push_pair(&mut s, "x", "say \"hi\"\n");
        assert_eq!(
            s,
            r#"route="GET /a/{id}" path=/a/1 cache= x="say \"hi\"\n""#
        );
    }
}
