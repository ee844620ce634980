//! The `RateLimit` header of draft-ietf-httpapi-ratelimit-headers (-11): a
//! structured-field list with one item per policy,
//! `"per_client";r=19;t=1, "global";r=940;t=0`, where `r` is the quota
//! still available and `t` the seconds until it next grows (rounded up; 0
//! when the bucket is full). The static `RateLimit-Policy` value
//! (`"per_client";q=100;w=60`) is built once per route by the plan.

use super::gcra::{Status, ceil_secs};
use http::HeaderValue;
use std::fmt::Write;

/// Builds a `RateLimit` value item by item.
#[derive(Default)]
pub struct RateLimitHeader {
    text: String,
}

impl RateLimitHeader {
    /// Adds the item of one policy; `units` is the status's time units per second.
    pub fn push(&mut self, name: &str, status: Status, units: u64) {
        if self.text.is_empty() {
            self.text.reserve(name.len() + 24);
        } else {
            self.text.push_str(", ");
        }
        let _ = write!(
            self.text,
            "\"{name}\";r={};t={}",
            status.remaining,
            ceil_secs(status.reset, units)
        );
    }

    /// The header value; `None` when no item was added.
    pub fn finish(self) -> Option<HeaderValue> {
        if self.text.is_empty() {
            return None;
        }
        HeaderValue::from_maybe_shared(bytes::Bytes::from(self.text)).ok()
    }
}

/// The `RateLimit` value for (policy name, status, time units per second)
/// items; `None` when there are none.
pub fn rate_limit(items: &[(&str, Status, u64)]) -> Option<HeaderValue> {
    let mut h = RateLimitHeader::default();
    for (name, status, units) in items {
        h.push(name, *status, *units);
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_follow_the_draft_syntax() {
        let v = rate_limit(&[
            (
                "per_client",
                Status {
                    remaining: 19,
                    reset: 1_500,
                },
                1_000,
            ),
            (
                "global",
                Status {
                    remaining: 5,
                    reset: 0,
                },
                1_000,
            ),
        ])
        .unwrap();
        assert_eq!(v, "\"per_client\";r=19;t=2, \"global\";r=5;t=0");
        assert!(rate_limit(&[]).is_none());
    }
}
