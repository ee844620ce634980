//! Compiled cache policies: what `plan` makes of a `cache:` block, and what
//! the cache needs at request time. No config text survives past here.

use crate::plan::template::Template;
use crate::telemetry::CacheEvents;
use http::{HeaderName, HeaderValue};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Default size of the in-process tier: room for thousands of catalogue-sized
/// answers without letting one process's cache grow past what a small
/// container can spare.
pub const DEFAULT_MAX_BYTES: u64 = 64 << 20;
/// Statuses stored unless a policy lists its own: the successful answers
/// whose body is complete (RFC 9110 §15.1 "heuristically cacheable" 2xx).
pub const DEFAULT_STATUSES: &[u16] = &[200, 203, 204];
/// Headers that always carry client credentials (RFC 9110 §11.6.2, RFC 6265).
pub const ALWAYS_CREDENTIALS: &[&str] = &["authorization", "cookie"];

/// Who may be served a stored answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every client shares the entry.
    Public,
    /// Each client has its own entry, keyed by a hash of its credentials.
    PerClient,
}

/// Whether a policy caches one upstream call or a whole route response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// One call's upstream answer (`calls.NAME.cache`).
    Call,
    /// The composed response of a route (`routes[].cache`).
    Route,
}

impl Level {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Level::Call => "call",
            Level::Route => "route",
        }
    }
}

/// The part of a policy a store decision needs. Shared (`Arc`) so that a
/// background refresh, which outlives the request, can carry it.
#[derive(Debug)]
pub struct Rule {
    /// Call or route.
    pub level: Level,
    /// The call name or route label, for metrics and logs.
    pub name: Arc<str>,
    /// How long an answer is fresh (capped by the upstream's max-age).
    pub ttl: Duration,
    /// How long past `ttl` a stale answer is served while one refresh runs.
    pub stale_while_revalidate: Duration,
    /// How long past `ttl` a stale answer is served when the upstream fails.
    pub stale_if_error: Duration,
    /// Who may share an entry.
    pub scope: Scope,
    /// Whether upstream Cache-Control and Age count.
    pub honour_upstream: bool,
    /// Statuses that may be stored (never 5xx or 429: the compiler refuses them).
    pub statuses: Vec<u16>,
    /// Its counters, registered on first use (after the recorder is installed).
    pub events: OnceLock<CacheEvents>,
}

impl Rule {
    /// The policy's counters.
    pub fn events(&self) -> &CacheEvents {
        self.events
            .get_or_init(|| CacheEvents::new(self.level.label(), &self.name))
    }

    /// Whether answers with `status` may be stored.
    pub fn stores_status(&self, status: u16) -> bool {
        self.statuses.contains(&status)
    }
}

/// A compiled `cache:` policy of a call or a route.
#[derive(Debug)]
pub struct CachePolicy {
    /// TTLs, scope, statuses.
    pub rule: Arc<Rule>,
    /// Headers whose values are part of the key, as the key reads them: for
    /// a call, the headers it sends (forwarded and templated); for a route,
    /// the client headers its calls read or forward. Credential headers are
    /// never here (they only enter the key hashed, through `client_headers`).
    pub key_headers: Vec<HeaderName>,
    /// Client headers listed in `vary`.
    pub vary: Vec<HeaderName>,
    /// Route policies: the query parameters the route reads, sorted (the key's
    /// allowlist: any other parameter creates no entry).
    pub key_query: Vec<String>,
    /// Client headers that identify a client for `per_client` entries: the
    /// credential headers and any header a call turns into a credential.
    pub client_headers: Vec<HeaderName>,
    /// Tag templates, rendered per request.
    pub tags: Vec<Template>,
    /// Route policies: the `Vary` the response carries (Accept-Encoding and
    /// the key headers), so downstream caches key as we do.
    pub response_vary: Option<HeaderValue>,
}

/// The top-level cache settings, shared by every policy.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    /// Most bytes the in-process tier holds.
    pub max_bytes: u64,
    /// Whether entries are also stored in Redis (then `Plan::redis` is set).
    pub redis: bool,
    /// Request headers that carry credentials (always Authorization and Cookie).
    pub credential_headers: Vec<HeaderName>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings {
            max_bytes: DEFAULT_MAX_BYTES,
            redis: false,
            credential_headers: ALWAYS_CREDENTIALS
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect(),
        }
    }
}
