//! The `Server-Timing` header: one entry per call and the total, so browser
//! dev tools show where a request's time went.

use crate::exec::{CallState, Outcome};
use crate::plan::Aggregate;
use http::HeaderValue;
use std::fmt::Write;
use std::time::Duration;

/// `customer;dur=20.4, products;dur=0.1;desc="hit", shipping;desc="skipped", total;dur=41.9`
pub fn server_timing(agg: &Aggregate, outcome: &Outcome, total: Duration) -> HeaderValue {
    let mut s = String::with_capacity(32 * (agg.calls.len() + 1));
    for (i, call) in agg.calls.iter().enumerate() {
        let state = outcome.states.get(i);
        let elapsed = outcome.elapsed.get(i).copied().flatten();
        match (state, elapsed) {
            (Some(CallState::Failed(e)), Some(d)) => {
                let _ = write!(s, "{};dur={:.1};desc=\"{}\", ", call.name, ms(d), e.kind());
            }
            (Some(CallState::Failed(e)), None) => {
                let _ = write!(s, "{};desc=\"{}\", ", call.name, e.kind());
            }
            (_, Some(d)) => match outcome.item_errors.get(i).map_or(0, Vec::len) {
                0 => match outcome.cache.get(i).copied().flatten() {
                    // A cached call says how its cache answered: hit, miss, stale…
                    Some(c) => {
                        let _ = write!(s, "{};dur={:.1};desc=\"{}\", ", call.name, ms(d), c.desc());
                    }
                    None => {
                        let _ = write!(s, "{};dur={:.1}, ", call.name, ms(d));
                    }
                },
                n => {
                    let _ = write!(
                        s,
                        "{};dur={:.1};desc=\"{n} item(s) failed\", ",
                        call.name,
                        ms(d)
                    );
                }
            },
            (Some(CallState::Done(_)), None) => {
                let _ = write!(s, "{};dur=0;desc=\"not sent: empty list\", ", call.name);
            }
            (Some(CallState::Running), None) => {
                let _ = write!(s, "{};desc=\"cancelled\", ", call.name);
            }
            (Some(CallState::NotRun), None) => {
                let _ = write!(s, "{};desc=\"not started\", ", call.name);
            }
            _ => {}
        }
    }
    let _ = write!(s, "total;dur={:.1}", ms(total));
    HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static("total"))
}

/// For responses without upstream calls (404, 405, bad requests).
pub fn total_only(total: Duration) -> HeaderValue {
    HeaderValue::from_str(&format!("total;dur={:.1}", ms(total)))
        .unwrap_or(HeaderValue::from_static("total"))
}

/// For proxy routes: time until the upstream's response head arrived.
pub fn proxy(upstream: Duration) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "upstream;dur={0:.1}, total;dur={0:.1}",
        ms(upstream)
    ))
    .unwrap_or(HeaderValue::from_static("total"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The limiter's trip to Redis: `ratelimit;dur=0.3;desc="redis"`, or with
/// `desc="redis failed: fallback"` when Redis did not answer.
pub fn ratelimit(took: Duration, answered: bool) -> HeaderValue {
    let desc = if answered {
        "redis"
    } else {
        "redis failed: on_redis_error"
    };
    HeaderValue::from_str(&format!("ratelimit;dur={:.1};desc=\"{desc}\"", ms(took)))
        .unwrap_or(HeaderValue::from_static("ratelimit"))
}
