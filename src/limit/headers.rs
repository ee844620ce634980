//! The `RateLimit` header of draft-ietf-httpapi-ratelimit-headers (-11): a
//! structured-field list with one item per policy,
//! `"per_client";r=19;t=1, "global";r=940;t=0`, where `r` is the quota
//! still available and `t` the seconds until it next grows (rounded up; 0
//! when the bucket is full). The static `RateLimit-Policy` value
//! (`"per_client";q=100;w=60`) is built once per route by the plan.

use super::gcra::{Status, ceil_secs};
use http::HeaderValue;
use std::fmt::Write;

/// The `RateLimit` value for (policy name, status, time units per second)
/// items; `None` when there are none.
pub fn rate_limit(items: &[(&str, Status, u64)]) -> Option<HeaderValue> {
    if items.is_empty() {
        return None;
    }
    let mut s = String::with_capacity(32 * items.len());
    for (i, (name, status, units)) in items.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(
            s,
            "\"{name}\";r={};t={}",
            status.remaining,
            ceil_secs(status.reset, *units)
        );
    }
    HeaderValue::from_maybe_shared(bytes::Bytes::from(s)).ok()
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
