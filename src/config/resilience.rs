//! Raw resilience settings: retries, circuit breaker, listener limits, TLS.
//! Kept apart from `raw.rs` so each room's config reads in one place.

use super::Sp;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;

/// Retry settings of an upstream, or a call's override of them.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawRetry {
    /// Extra attempts after the first (default 0: no retries).
    pub retries: Option<Sp<u32>>,
    /// What is retried: `connect`, `transport`, `timeout`, or a 5xx status
    /// (default [connect, 502, 503, 504]).
    pub on: Option<Vec<Sp<RetryCondition>>>,
    /// Delay before the first retry (default 25ms); it doubles with each
    /// retry, plus up to as much again of random jitter.
    pub backoff: Option<Sp<String>>,
    /// Longest delay between two attempts (default 1s).
    pub max_backoff: Option<Sp<String>>,
    /// Retries may add at most this percentage to the upstream's request
    /// rate over the last 10 seconds (default 20).
    pub budget_percent: Option<Sp<f64>>,
    /// Retries per second allowed beyond the budget, so that a quiet
    /// upstream can still be retried (default 1).
    pub budget_min_per_second: Option<Sp<u32>>,
    /// Also retry methods that are not idempotent (POST, PATCH); default false.
    pub unsafe_methods: Option<Sp<bool>>,
}

/// One retry condition: a failure kind or a status code.
#[derive(Clone, Debug, PartialEq)]
pub enum RetryCondition {
    /// `connect`, `transport`, `timeout`.
    Kind(String),
    /// A status code such as 503.
    Status(u64),
}

impl<'de> Deserialize<'de> for RetryCondition {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = RetryCondition;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("`connect`, `transport`, `timeout` or a 5xx status code")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<RetryCondition, E> {
                Ok(RetryCondition::Status(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<RetryCondition, E> {
                Ok(match v.trim().parse::<u64>() {
                    Ok(n) => RetryCondition::Status(n),
                    Err(_) => RetryCondition::Kind(v.trim().to_string()),
                })
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for RetryCondition {
    fn schema_name() -> Cow<'static, str> {
        "RetryCondition".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "description": "a failure kind (connect, transport, timeout) or a 5xx status",
            "anyOf": [
                { "type": "integer", "minimum": 500, "maximum": 599 },
                { "enum": ["connect", "transport", "timeout"] }
            ]
        })
    }
}

/// Circuit breaker of an upstream; present means on.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawBreaker {
    /// Open when at least this percentage of the calls in the window failed (default 50).
    pub failure_percent: Option<Sp<f64>>,
    /// ... and the window holds at least this many calls (default 10).
    pub min_calls: Option<Sp<u32>>,
    /// The sliding window the ratio is measured over (default 10s).
    pub window: Option<Sp<String>>,
    /// How long the breaker stays open before one probe call is let through (default 5s).
    pub open_for: Option<Sp<String>>,
}

/// TLS for the listener: a certificate chain and its private key, PEM files
/// (paths relative to the config file).
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawServerTls {
    /// The certificate chain, leaf first (PEM).
    pub cert: Sp<String>,
    /// The private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Sp<String>,
}
