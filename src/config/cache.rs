//! Cache settings as written: a call's or route's `cache:` policy (a TTL
//! shorthand or a full policy) and the top-level `cache:` tier settings.
//!
//! `RawCache` has a hand-written `Deserialize` so that `cache: 30s` and
//! `cache: { ttl: 30s, ... }` both parse without serde's untagged enums,
//! which buffer the input and would lose every source position.

use super::{SizeValue, Sp};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use std::borrow::Cow;
use std::fmt;

/// A `cache:` value: a TTL shorthand or a policy.
#[derive(Debug, Clone, PartialEq)]
pub enum RawCache {
    /// `cache: 30s`: the TTL, everything else default.
    Ttl(String),
    /// `cache: { ttl: 30s, ... }`.
    Policy(Box<RawCachePolicy>),
}

/// Who may be served a stored answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RawCacheScope {
    /// Every client shares the entry.
    Public,
    /// Each client (by its credentials) has its own entry.
    PerClient,
}

/// A cache policy of a call or a route.
#[derive(Debug, Clone, PartialEq, Default, serde::Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawCachePolicy {
    /// How long an answer is fresh (required), e.g. `30s`, `5m`.
    pub ttl: Option<Sp<String>>,
    /// After the TTL, serve the stale answer this long while one refresh runs in the background.
    pub stale_while_revalidate: Option<Sp<String>>,
    /// After the TTL, serve the stale answer this long when the upstream fails.
    pub stale_if_error: Option<Sp<String>>,
    /// `public` (shared by all clients) or `per_client` (default when credentials are forwarded).
    pub scope: Option<Sp<RawCacheScope>>,
    /// Request headers whose values are part of the key.
    #[serde(default)]
    pub vary: Vec<Sp<String>>,
    /// Tags for purging, as templates: `product:{path.id}`.
    #[serde(default)]
    pub tags: Vec<Sp<String>>,
    /// Obey the upstream's Cache-Control (no-store, private, no-cache, max-age, s-maxage) and Age (default true).
    pub honour_upstream_cache_control: Option<Sp<bool>>,
    /// Statuses that may be stored (default 200, 203, 204); never 5xx or 429.
    pub statuses: Option<Vec<Sp<u16>>>,
}

impl<'de> Deserialize<'de> for RawCache {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CacheVisitor)
    }
}

struct CacheVisitor;

impl<'de> Visitor<'de> for CacheVisitor {
    type Value = RawCache;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a TTL such as `30s`, or a cache policy `{ ttl: 30s, ... }`")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<RawCache, E> {
        Ok(RawCache::Ttl(v.to_string()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<RawCache, E> {
        Ok(RawCache::Ttl(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<RawCache, A::Error> {
        let policy = RawCachePolicy::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(RawCache::Policy(Box::new(policy)))
    }
}

impl JsonSchema for RawCache {
    fn schema_name() -> Cow<'static, str> {
        "Cache".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let policy = generator.subschema_for::<RawCachePolicy>();
        schemars::json_schema!({
            "description": "a TTL (`30s`, `5m`) or a cache policy",
            "anyOf": [ { "type": "string" }, policy ]
        })
    }
}

/// The top-level `cache:` section: the tiers every policy shares.
#[derive(Debug, Default, serde::Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawCacheSettings {
    /// Most bytes the in-process tier holds (default 64MiB); least valuable entries are evicted.
    pub max_bytes: Option<Sp<SizeValue>>,
    /// Also store entries in Redis (needs `redis.url`), shared by every instance (default false).
    pub redis: Option<Sp<bool>>,
    /// Request headers that carry client credentials besides Authorization and Cookie (e.g. your API-key header).
    #[serde(default)]
    pub credential_headers: Vec<Sp<String>>,
}
