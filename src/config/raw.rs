//! The raw config model: one struct per YAML mapping, unknown fields rejected.
//! Doc comments become descriptions in the JSON Schema (`switchyard schema`).

use super::Pos;
use indexmap::IndexMap;
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::{Deserialize, Deserializer};
use std::borrow::Cow;

/// A value with the position it was written at.
#[derive(Clone, Debug, PartialEq)]
pub struct Sp<T> {
    /// The value.
    pub value: T,
    /// Where it was written.
    pub pos: Pos,
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Sp<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let spanned = serde_saphyr::Spanned::<T>::deserialize(d)?;
        let pos = Pos::of(&spanned);
        Ok(Sp {
            value: spanned.value,
            pos,
        })
    }
}

impl<T: JsonSchema> JsonSchema for Sp<T> {
    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }
    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
    fn inline_schema() -> bool {
        T::inline_schema()
    }
}

/// A byte size: a number of bytes or a string such as `512KiB`, `8MiB`.
#[derive(Clone, Debug, PartialEq)]
pub enum SizeValue {
    /// A plain number of bytes.
    Bytes(u64),
    /// A number with a unit.
    Text(String),
}

/// Hand-written so that a wrong value gets a plain message rather than
/// serde's "did not match any variant of untagged enum".
impl<'de> Deserialize<'de> for SizeValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = SizeValue;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(
                    "a size: a number of bytes, or a number with KiB, MiB or GiB (e.g. 8MiB)",
                )
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<SizeValue, E> {
                Ok(SizeValue::Bytes(v))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<SizeValue, E> {
                Ok(SizeValue::Text(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for SizeValue {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        schemars::json_schema!({
            "description": "bytes, or a number with a unit: KiB, MiB, GiB (e.g. 8MiB)",
            "anyOf": [
                { "type": "integer", "minimum": 0 },
                { "type": "string", "pattern": "^[0-9]+\\s*(B|KiB|MiB|GiB|KB|MB|GB)?$" }
            ]
        })
    }
}

/// A Switchyard config file.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawConfig {
    /// Listener settings.
    #[serde(default)]
    pub server: RawServer,
    /// Upstream services by name; call templates refer to these names.
    #[serde(default)]
    pub upstreams: IndexMap<String, Sp<RawUpstream>>,
    /// The routes the gateway serves.
    #[serde(default)]
    pub routes: Vec<Sp<RawRoute>>,
    /// Rate limit policies by name; routes refer to them with `rate_limit`.
    #[serde(default)]
    pub rate_limits: IndexMap<String, Sp<RawRateLimit>>,
    /// The Redis server that policies with `store: redis` share.
    pub redis: Option<Sp<RawRedis>>,
    /// Metrics, trace context, OTLP export and the access log.
    #[serde(default)]
    pub telemetry: RawTelemetry,
    /// Cache tiers: the in-process tier's size, whether Redis is used.
    #[serde(default)]
    pub cache: super::RawCacheSettings,
    /// Keys the file has that no struct knows (typos), found while parsing.
    #[serde(skip)]
    #[schemars(skip)]
    pub unknown_fields: Vec<super::UnknownField>,
}

/// Listener settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawServer {
    /// Address to listen on (default 127.0.0.1:8080).
    pub listen: Option<Sp<String>>,
    /// Address of the admin listener: /metrics, /healthz, /readyz (default 127.0.0.1:9901).
    pub admin_listen: Option<Sp<String>>,
    /// CIDRs whose X-Forwarded-For header is believed.
    #[serde(default)]
    pub trusted_proxies: Vec<Sp<String>>,
    /// Largest accepted request body (default 1MiB).
    pub max_request_body: Option<Sp<SizeValue>>,
    /// IPv6 clients are identified by this prefix length, so one host cannot
    /// rotate through its addresses (default 64).
    pub client_ipv6_prefix: Option<Sp<u8>>,
    /// Longest a client may take to send its request headers (default 10s).
    pub header_read_timeout: Option<Sp<String>>,
    /// Largest request head, request line and headers (default 64KiB).
    pub max_header_size: Option<Sp<SizeValue>>,
    /// Most open client connections; more are closed at once (default 10000).
    pub max_connections: Option<Sp<usize>>,
    /// Longest time from a request's head to its response's head (default 60s).
    pub request_timeout: Option<Sp<String>>,
    /// How long shutdown waits for in-flight requests (default 10s).
    pub drain_timeout: Option<Sp<String>>,
    /// Serve HTTPS (HTTP/1.1 and HTTP/2 through ALPN) with this certificate.
    pub tls: Option<Sp<super::RawServerTls>>,
    /// Accept HTTP/2 without TLS (prior knowledge) on a plain listener (default true).
    pub h2c: Option<Sp<bool>>,
}

/// Metrics, trace context, OTLP export and the access log.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawTelemetry {
    /// Record Prometheus metrics and dashboard statistics (default true).
    pub metrics: Option<Sp<bool>>,
    /// Start or continue a W3C trace per request and send each upstream call
    /// its own `traceparent` (default true). When false, a client's
    /// `traceparent` is passed through unchanged.
    pub tracing: Option<Sp<bool>>,
    /// Export spans over OTLP/gRPC (off when absent).
    pub otlp: Option<Sp<RawOtlp>>,
    /// One structured line per request (off when absent).
    pub access_log: Option<Sp<RawAccessLog>>,
}

/// OTLP span export over gRPC.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawOtlp {
    /// The collector's OTLP/gRPC endpoint, e.g. http://127.0.0.1:4317.
    pub endpoint: Sp<String>,
    /// The `service.name` resource attribute (default switchyard).
    pub service_name: Option<Sp<String>>,
    /// Longest one export may take (default 10s).
    pub timeout: Option<Sp<String>>,
}

/// The access log.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawAccessLog {
    /// Where lines go: stdout, stderr, file (with `path`) or off (default stdout).
    pub to: Option<Sp<String>>,
    /// The file, when `to: file`.
    pub path: Option<Sp<String>>,
    /// json (default) or logfmt.
    pub format: Option<Sp<String>>,
}

/// One upstream service.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawUpstream {
    /// Base URL: http://host:port, optionally with a path prefix.
    pub url: Sp<String>,
    /// Longest one call may take (default 5s).
    pub timeout: Option<Sp<String>>,
    /// Longest a new connection may take (default 1s).
    pub connect_timeout: Option<Sp<String>>,
    /// Largest accepted response body (default 8MiB).
    pub max_body: Option<Sp<SizeValue>>,
    /// Idle keep-alive connections kept per host (default 256).
    pub pool_idle_per_host: Option<usize>,
    /// Retries of failed calls (default: none).
    pub retry: Option<Sp<super::RawRetry>>,
    /// Circuit breaker (default: off).
    pub breaker: Option<Sp<super::RawBreaker>>,
    /// Most calls in flight to this upstream; more fail at once with 503 (default 1024).
    pub max_in_flight: Option<Sp<usize>>,
    /// Idempotent calls: send a second attempt if the first has not answered
    /// after this long; the first answer wins (default: off).
    pub hedge_after: Option<Sp<String>>,
    /// Ask for gzip, br or deflate bodies (default false; encoded bodies are decoded either way).
    pub compression: Option<Sp<bool>>,
    /// https upstreams: trust this CA bundle (PEM) instead of the system's roots.
    pub ca: Option<Sp<String>>,
    /// Speak HTTP/2: negotiated through ALPN over https, prior knowledge over http (default false).
    pub http2: Option<Sp<bool>>,
}

/// One route: a method and path, then calls with a response shape or merge, or a proxy.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawRoute {
    /// GET route: the path template.
    pub get: Option<Sp<String>>,
    /// POST route: the path template.
    pub post: Option<Sp<String>>,
    /// PUT route: the path template.
    pub put: Option<Sp<String>>,
    /// PATCH route: the path template.
    pub patch: Option<Sp<String>>,
    /// DELETE route: the path template.
    pub delete: Option<Sp<String>>,
    /// Any method (proxy routes only): the path template.
    pub any: Option<Sp<String>>,
    /// The route deadline (default 10s).
    pub timeout: Option<Sp<String>>,
    /// Client headers copied to every call.
    #[serde(default)]
    pub forward_headers: Vec<Sp<String>>,
    /// Named upstream calls.
    #[serde(default)]
    pub calls: IndexMap<String, Sp<RawCall>>,
    /// The response shape: strings are expressions, everything else literal.
    #[schemars(with = "serde_json::Value")]
    pub respond: Option<super::RawShape>,
    /// Merge these calls' bodies at the root; the first listed wins on collisions.
    pub merge: Option<Vec<Sp<String>>>,
    /// Status of a successful response (default 200).
    pub status: Option<Sp<u16>>,
    /// Pass-through target: "upstream:/path/{path.rest}".
    pub proxy: Option<Sp<String>>,
    /// Cache the whole composed response: a TTL (`30s`) or a policy.
    pub cache: Option<Sp<super::RawCache>>,
    /// Rate limit policies (names from `rate_limits`) a request must all pass.
    pub rate_limit: Option<Sp<OneOrMany>>,
}

/// One upstream call of a route.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawCall {
    /// GET "upstream:/path?query" template.
    pub get: Option<Sp<String>>,
    /// POST "upstream:/path?query" template.
    pub post: Option<Sp<String>>,
    /// PUT "upstream:/path?query" template.
    pub put: Option<Sp<String>>,
    /// PATCH "upstream:/path?query" template.
    pub patch: Option<Sp<String>>,
    /// DELETE "upstream:/path?query" template.
    pub delete: Option<Sp<String>>,
    /// When true, a failure yields null and a partial response instead of an error.
    #[serde(default)]
    pub optional: bool,
    /// Extra request headers: name → template.
    #[serde(default)]
    pub headers: IndexMap<String, Sp<String>>,
    /// Client headers for this call, in addition to the route's.
    #[serde(default)]
    pub forward_headers: Vec<Sp<String>>,
    /// JSON request body, written as a response shape.
    #[schemars(with = "serde_json::Value")]
    pub body: Option<super::RawShape>,
    /// A tighter timeout than the upstream's.
    pub timeout: Option<Sp<String>>,
    /// Retry settings of this call, over the upstream's.
    pub retry: Option<Sp<super::RawRetry>>,
    /// Hedging delay of this call (`off` to turn the upstream's off).
    pub hedge_after: Option<Sp<String>>,
    /// Run the call once per distinct element of this list expression.
    pub for_each: Option<Sp<String>>,
    /// With for_each: at most this many item calls at once (default 16).
    pub concurrency: Option<Sp<usize>>,
    /// With for_each: what a failed item does to the call.
    pub on_item_error: Option<Sp<OnItemError>>,
    /// Cache this call's upstream answers: a TTL (`5m`) or a policy.
    pub cache: Option<Sp<super::RawCache>>,
}

/// What a failed item of a `for_each` call does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnItemError {
    /// The whole call fails.
    Fail,
    /// That item's place holds null.
    KeepNull,
    /// That item is left out of the list.
    Skip,
}

/// One name or a list of names.
#[derive(Clone, Debug, PartialEq, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single name.
    One(String),
    /// Several names.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The names, in the order written.
    pub fn names(&self) -> Vec<&str> {
        match self {
            OneOrMany::One(s) => vec![s.as_str()],
            OneOrMany::Many(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// A rate limit policy: a key, a sustained rate and a burst.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawRateLimit {
    /// What identifies a bucket: `client_ip`, `header:NAME`, `path:NAME`, `global`;
    /// `a + b` combines several (composite); a list takes the first one present (fallback).
    pub key: Sp<OneOrMany>,
    /// The sustained rate: `100/1m`, `10/1s`, `5000/1h`.
    pub rate: Sp<String>,
    /// How many requests may arrive at once: the bucket's capacity (default: the rate's count).
    pub burst: Option<Sp<u64>>,
    /// Where buckets live (default memory).
    pub store: Option<Sp<LimitStore>>,
    /// With `store: redis`, what happens while Redis is unreachable (default local).
    pub on_redis_error: Option<Sp<OnRedisError>>,
    /// Clients that bypass this policy.
    pub allow: Option<RawAllow>,
}

/// Clients that bypass a policy.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawAllow {
    /// Client addresses or CIDRs (`10.0.0.0/8`, `2001:db8::/32`).
    #[serde(default)]
    pub ips: Vec<Sp<String>>,
    /// Key values (e.g. an internal API key) that bypass the policy.
    #[serde(default)]
    pub keys: Vec<Sp<String>>,
}

/// Where a policy keeps its buckets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LimitStore {
    /// In this process: each gateway instance counts on its own.
    Memory,
    /// In the shared Redis: exact across every instance and restart.
    Redis,
}

/// What a Redis-backed policy does while Redis is unreachable.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnRedisError {
    /// Each instance enforces the policy with its own in-process buckets.
    Local,
    /// Admit every request (the policy is off until Redis returns).
    FailOpen,
    /// Reject every request with 503.
    FailClosed,
}

/// The shared Redis server.
#[derive(Debug, Deserialize, JsonSchema)]
#[schemars(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://host:port/db` (or `redis://user:password@host:port`).
    pub url: Sp<String>,
    /// The longest one rate limit decision may wait for Redis before the
    /// policy's `on_redis_error` applies (default 100ms).
    pub timeout: Option<Sp<String>>,
    /// Prefix of every key Switchyard writes (default `switchyard`).
    pub key_prefix: Option<Sp<String>>,
}
