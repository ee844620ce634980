//! The load generators' outputs, parsed into one shape.
//!
//! - wrk (closed loop) prints its usual text and then one JSON line written
//!   by the `done()` hook of `bench/wrk-report.lua`; latencies in µs.
//! - oha (open loop, `--output-format json`) prints one JSON document;
//!   latencies in seconds, counts per status code and per error.

use serde_json::Value;

/// What one load phase did, whichever tool ran it.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadResult {
    /// Answers that were a 2xx/3xx.
    pub ok: u64,
    /// Everything else: other statuses, connect/read/write errors, timeouts.
    pub errors: u64,
    /// Length of the phase.
    pub seconds: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl LoadResult {
    /// Successful answers per second.
    pub fn req_s(&self) -> f64 {
        self.ok as f64 / self.seconds
    }
}

/// wrk's output: the last line that is our hook's JSON.
pub fn parse_wrk(stdout: &str) -> Result<LoadResult, String> {
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with("{\"tool\":\"wrk\""))
        .ok_or("no JSON line from bench/wrk-report.lua in wrk's output")?;
    let v: Value = serde_json::from_str(line).map_err(|e| format!("wrk JSON: {e}"))?;
    let num = |k: &str| v[k].as_f64().ok_or(format!("wrk JSON has no number `{k}`"));
    let (requests, errors) = (num("requests")? as u64, num("errors")? as u64);
    Ok(LoadResult {
        ok: requests.saturating_sub(errors),
        errors,
        seconds: num("duration_us")? / 1e6,
        p50_ms: num("p50_us")? / 1e3,
        p90_ms: num("p90_us")? / 1e3,
        p99_ms: num("p99_us")? / 1e3,
        max_ms: num("max_us")? / 1e3,
    })
}

/// oha's JSON output.
pub fn parse_oha(stdout: &str) -> Result<LoadResult, String> {
    let v: Value = serde_json::from_str(stdout.trim()).map_err(|e| format!("oha JSON: {e}"))?;
    let secs = |path: &[&str]| {
        path.iter()
            .fold(&v, |v, k| &v[*k])
            .as_f64()
            .ok_or(format!("oha JSON has no number {}", path.join(".")))
    };
    let count = |key: &str, good: bool| -> u64 {
        let Some(map) = v[key].as_object() else {
            return 0;
        };
        map.iter()
            .filter(|(k, _)| key != "statusCodeDistribution" || is_success(k) == good)
            .filter_map(|(_, n)| n.as_u64())
            .sum()
    };
    let ok = count("statusCodeDistribution", true);
    let errors = count("statusCodeDistribution", false) + count("errorDistribution", false);
    let pct = |p: &str| secs(&["latencyPercentiles", p]).map(|s| s * 1e3);
    Ok(LoadResult {
        ok,
        errors,
        seconds: secs(&["summary", "total"])?,
        p50_ms: pct("p50")?,
        p90_ms: pct("p90")?,
        p99_ms: pct("p99")?,
        max_ms: secs(&["summary", "slowest"])? * 1e3,
    })
}

fn is_success(status: &str) -> bool {
    status.starts_with('2') || status.starts_with('3')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrk_hook_line_after_the_text_report() {
        let out = "Running 3s test @ http://127.0.0.1:18080/catalog/7\n  1 threads and 64 connections\n\
                   {\"tool\":\"wrk\",\"requests\":30000,\"errors\":3,\"duration_us\":3000000,\
                   \"p50_us\":1500,\"p90_us\":2500,\"p99_us\":4000,\"max_us\":9000}\n";
        let r = parse_wrk(out).unwrap();
        assert_eq!((r.ok, r.errors), (29997, 3));
        assert!((r.req_s() - 9999.0).abs() < 1e-6);
        assert_eq!((r.p50_ms, r.p99_ms, r.max_ms), (1.5, 4.0, 9.0));
        assert!(parse_wrk("Running 3s test\n").is_err());
    }

    #[test]
    fn oha_json_with_statuses_and_errors() {
        let out = r#"{"summary":{"successRate":0.99,"total":3.0,"slowest":0.012,"fastest":0.0001,
            "average":0.001,"requestsPerSec":1000.0},
            "latencyPercentiles":{"p10":0.0005,"p50":0.001,"p90":0.002,"p99":0.005,"p99.9":0.01},
            "statusCodeDistribution":{"200":2990,"503":4},
            "errorDistribution":{"connection closed":6}}"#;
        let r = parse_oha(out).unwrap();
        assert_eq!((r.ok, r.errors), (2990, 10));
        assert_eq!(
            (r.seconds, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms),
            (3.0, 1.0, 2.0, 5.0, 12.0)
        );
        assert!(parse_oha("{}").is_err());
    }
}
