//! Freshness rules: parsing `Cache-Control`, deciding whether an answer may
//! be stored and for how long, and what a stored entry is at a given time.
//!
//! Pure functions of their inputs (times are passed in as unix milliseconds),
//! so they are tested without clocks.

use super::policy::{Rule, Scope};
use http::{HeaderMap, HeaderValue, header};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch: entries are shared through Redis, so
/// their times must mean the same on every instance.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// The directives of a `Cache-Control` header that a shared cache acts on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-store`: never store.
    pub no_store: bool,
    /// `no-cache`: store only with revalidation, which we do not do: not stored.
    pub no_cache: bool,
    /// `private`: for one user only; never in a shared entry.
    pub private: bool,
    /// `must-revalidate` / `proxy-revalidate`: never serve it stale.
    pub must_revalidate: bool,
    /// `max-age` in seconds.
    pub max_age: Option<u64>,
    /// `s-maxage` in seconds (shared caches prefer it over `max-age`).
    pub s_maxage: Option<u64>,
}

impl CacheControl {
    /// Parses every `Cache-Control` header of a message (RFC 9111 §5.2).
    /// Unknown directives are ignored; a malformed number voids its directive.
    pub fn parse(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        for value in headers.get_all(header::CACHE_CONTROL) {
            let Ok(text) = value.to_str() else { continue };
            for directive in split_directives(text) {
                let (name, arg) = match directive.split_once('=') {
                    Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                    None => (directive.trim(), None),
                };
                let seconds = || arg.and_then(|a| a.parse::<u64>().ok());
                match name.to_ascii_lowercase().as_str() {
                    "no-store" => cc.no_store = true,
                    "no-cache" => cc.no_cache = true,
                    // `private="set-cookie"` names fields; treating the
                    // whole answer as private is the safe reading.
                    "private" => cc.private = true,
                    "must-revalidate" | "proxy-revalidate" => cc.must_revalidate = true,
                    "max-age" => cc.max_age = seconds().or(Some(0)),
                    "s-maxage" => cc.s_maxage = seconds().or(Some(0)),
                    _ => {}
                }
            }
        }
        cc
    }

    /// The freshness lifetime a shared cache may give the answer.
    pub fn lifetime(&self) -> Option<Duration> {
        self.s_maxage.or(self.max_age).map(Duration::from_secs)
    }
}

/// Splits on commas outside quoted strings.
fn split_directives(text: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted) = (0, false);
    for (i, c) in text.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts.into_iter().filter(|p| !p.trim().is_empty())
}

/// The `Age` header in seconds (0 when absent or malformed).
pub fn age(headers: &HeaderMap) -> Duration {
    let secs = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Duration::from_secs(secs)
}

/// Whether the client asked that nothing about this exchange be stored.
pub fn request_forbids_store(headers: &HeaderMap) -> bool {
    CacheControl::parse(headers).no_store
}

/// Why an answer was not stored (the `reason` label of
/// `switchyard_cache_store_skipped_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipReason {
    /// Its status is not in the policy's `statuses` (5xx and 429 never are).
    Status,
    /// Some calls of the route were missing (`Switchyard-Missing`).
    Partial,
    /// The upstream said `no-store`.
    NoStore,
    /// The upstream said `no-cache` (we do not revalidate).
    NoCache,
    /// The upstream said `private` and the policy is `public`.
    Private,
    /// Its lifetime was already over (`max-age=0`, or `Age` past it).
    Expired,
    /// The client sent `Cache-Control: no-store`.
    RequestNoStore,
    /// A purge ran while it was being fetched.
    Purged,
}

impl SkipReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            SkipReason::Status => "status",
            SkipReason::Partial => "partial",
            SkipReason::NoStore => "no_store",
            SkipReason::NoCache => "no_cache",
            SkipReason::Private => "private",
            SkipReason::Expired => "expired",
            SkipReason::RequestNoStore => "request_no_store",
            SkipReason::Purged => "purged",
        }
    }
}

/// What an answer's own headers (or a route's parts) say about caching it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Directives {
    /// Some part said `no-store`.
    pub no_store: bool,
    /// Some part said `no-cache`.
    pub no_cache: bool,
    /// Some part said `private`.
    pub private: bool,
    /// Some part said `must-revalidate`.
    pub must_revalidate: bool,
    /// The smallest remaining lifetime of the parts that state one.
    pub lifetime: Option<Duration>,
}

impl Directives {
    /// One upstream answer's directives: its lifetime less its `Age`.
    pub fn of(headers: &HeaderMap) -> Directives {
        let cc = CacheControl::parse(headers);
        Directives {
            no_store: cc.no_store,
            no_cache: cc.no_cache,
            private: cc.private,
            must_revalidate: cc.must_revalidate,
            lifetime: cc.lifetime().map(|l| l.saturating_sub(age(headers))),
        }
    }

    /// Both parts' constraints: a merged response is as short-lived and as
    /// private as its most restrictive part.
    pub fn merge(&mut self, other: &Directives) {
        self.no_store |= other.no_store;
        self.no_cache |= other.no_cache;
        self.private |= other.private;
        self.must_revalidate |= other.must_revalidate;
        self.lifetime = match (self.lifetime, other.lifetime) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// The verdict on one answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Store it with these times.
    Store(Freshness),
    /// Do not store it.
    Skip(SkipReason),
}

/// Decides whether an answer may be stored, and until when.
pub fn decide(rule: &Rule, status: u16, d: &Directives, now: u64) -> Decision {
    if !rule.stores_status(status) {
        return Decision::Skip(SkipReason::Status);
    }
    let mut ttl = rule.ttl;
    let (mut swr, mut sie) = (rule.stale_while_revalidate, rule.stale_if_error);
    if rule.honour_upstream {
        if d.no_store {
            return Decision::Skip(SkipReason::NoStore);
        }
        if d.no_cache {
            return Decision::Skip(SkipReason::NoCache);
        }
        if d.private && rule.scope == Scope::Public {
            return Decision::Skip(SkipReason::Private);
        }
        if let Some(l) = d.lifetime {
            ttl = ttl.min(l);
        }
        if d.must_revalidate {
            (swr, sie) = (Duration::ZERO, Duration::ZERO);
        }
    }
    if ttl.is_zero() {
        return Decision::Skip(SkipReason::Expired);
    }
    let fresh_until = now + ttl.as_millis() as u64;
    Decision::Store(Freshness {
        stored_ms: now,
        fresh_until_ms: fresh_until,
        stale_while_revalidate_ms: swr.as_millis() as u64,
        stale_if_error_ms: sie.as_millis() as u64,
        // Per-client entries are private downstream too.
        private: rule.scope == Scope::PerClient || (rule.honour_upstream && d.private),
    })
}

/// When an entry was stored and how long it may be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// Stored at (unix ms).
    pub stored_ms: u64,
    /// Fresh until (unix ms).
    pub fresh_until_ms: u64,
    /// Stale-while-revalidate window after `fresh_until_ms`.
    pub stale_while_revalidate_ms: u64,
    /// Stale-if-error window after `fresh_until_ms`.
    pub stale_if_error_ms: u64,
    /// The answer is for one client (`per_client`, or the upstream said `private`).
    pub private: bool,
}

/// What an entry is good for at some moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Fresh: serve it; this much life is left.
    Fresh(Duration),
    /// Stale, within stale-while-revalidate: serve it and refresh it.
    StaleRevalidate,
    /// Stale, only within stale-if-error: fetch, and serve it if that fails.
    StaleIfError,
    /// Of no use.
    Expired,
}

impl Freshness {
    /// The entry's state at `now`.
    pub fn state(&self, now: u64) -> State {
        if now < self.fresh_until_ms {
            return State::Fresh(Duration::from_millis(self.fresh_until_ms - now));
        }
        let stale_for = now - self.fresh_until_ms;
        if stale_for < self.stale_while_revalidate_ms {
            State::StaleRevalidate
        } else if stale_for < self.stale_if_error_ms {
            State::StaleIfError
        } else {
            State::Expired
        }
    }

    /// After this (unix ms) the entry is of no use and may be dropped.
    pub fn keep_until_ms(&self) -> u64 {
        self.fresh_until_ms + self.stale_while_revalidate_ms.max(self.stale_if_error_ms)
    }

    /// Whole seconds since it was stored (the `Age` we report).
    pub fn age_secs(&self, now: u64) -> u64 {
        now.saturating_sub(self.stored_ms) / 1000
    }

    /// Seconds of freshness left, negative when stale (Cache-Status `ttl`).
    pub fn ttl_secs(&self, now: u64) -> i64 {
        (self.fresh_until_ms as i64 - now as i64).div_euclid(1000)
    }
}

/// The `Cache-Control` a cached route's response carries: how long a
/// downstream cache may keep it and whether it may share it.
pub fn response_cache_control(f: &Freshness, now: u64) -> HeaderValue {
    let left = f.fresh_until_ms.saturating_sub(now) / 1000;
    let text = if f.private {
        format!("private, max-age={left}")
    } else {
        format!("public, max-age={left}")
    };
    HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("no-store"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::Level;

    fn rule(ttl: u64, scope: Scope) -> Rule {
        Rule {
            level: Level::Call,
            name: "c".into(),
            ttl: Duration::from_secs(ttl),
            stale_while_revalidate: Duration::from_secs(5),
            stale_if_error: Duration::from_secs(20),
            scope,
            honour_upstream: true,
            statuses: vec![200],
            events: Default::default(),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn parses_cache_control_across_headers_and_quotes() {
        let h = headers(&[
            ("cache-control", "public, max-age=60, private=\"a, b\""),
            ("cache-control", "S-MAXAGE=10, no-cache"),
        ]);
        let cc = CacheControl::parse(&h);
        assert!(cc.private && cc.no_cache && !cc.no_store);
        assert_eq!(cc.max_age, Some(60));
        assert_eq!(
            cc.lifetime(),
            Some(Duration::from_secs(10)),
            "s-maxage wins"
        );
        assert_eq!(
            CacheControl::parse(&headers(&[("cache-control", "max-age=abc")])).max_age,
            Some(0),
            "a malformed max-age is treated as already stale"
        );
    }

    #[test]
    fn age_is_subtracted_from_the_upstream_lifetime() {
        let d = Directives::of(&headers(&[("cache-control", "max-age=100"), ("age", "30")]));
        assert_eq!(d.lifetime, Some(Duration::from_secs(70)));
        let Decision::Store(f) = decide(&rule(3600, Scope::Public), 200, &d, 1_000) else {
            panic!()
        };
        assert_eq!(f.fresh_until_ms, 1_000 + 70_000);
        let over = Directives::of(&headers(&[("cache-control", "max-age=10"), ("age", "30")]));
        assert_eq!(
            decide(&rule(60, Scope::Public), 200, &over, 0),
            Decision::Skip(SkipReason::Expired)
        );
    }

    #[test]
    fn no_store_private_and_statuses_are_obeyed() {
        let r = rule(60, Scope::Public);
        let no_store = Directives::of(&headers(&[
            ("cache-control", "no-store"),
            ("surrogate-control", "content=\"ESI/1.0\""),
        ]));
        assert_eq!(
            decide(&r, 200, &no_store, 0),
            Decision::Skip(SkipReason::NoStore)
        );
        let private = Directives::of(&headers(&[("cache-control", "private, max-age=60")]));
        assert_eq!(
            decide(&r, 200, &private, 0),
            Decision::Skip(SkipReason::Private)
        );
        match decide(&rule(60, Scope::PerClient), 200, &private, 0) {
            Decision::Store(f) => assert!(f.private),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            decide(&r, 503, &Directives::default(), 0),
            Decision::Skip(SkipReason::Status)
        );
        let mut ignoring = rule(60, Scope::Public);
        ignoring.honour_upstream = false;
        assert!(matches!(
            decide(&ignoring, 200, &no_store, 0),
            Decision::Store(_)
        ));
    }

    #[test]
    fn merged_parts_take_the_smallest_lifetime_and_any_privacy() {
        let mut d = Directives::of(&headers(&[("cache-control", "max-age=10")]));
        d.merge(&Directives::of(&headers(&[(
            "cache-control",
            "max-age=1000",
        )])));
        d.merge(&Directives::default());
        assert_eq!(d.lifetime, Some(Duration::from_secs(10)));
        assert!(!d.private);
        d.merge(&Directives::of(&headers(&[("cache-control", "private")])));
        assert!(d.private);
    }

    #[test]
    fn an_entry_goes_fresh_then_stale_then_expired() {
        let Decision::Store(f) = decide(&rule(10, Scope::Public), 200, &Directives::default(), 0)
        else {
            panic!()
        };
        assert_eq!(f.state(0), State::Fresh(Duration::from_secs(10)));
        assert_eq!(f.state(10_000), State::StaleRevalidate);
        assert_eq!(f.state(15_000), State::StaleIfError);
        assert_eq!(f.state(30_000), State::Expired);
        assert_eq!(f.keep_until_ms(), 30_000);
        assert_eq!(f.ttl_secs(12_500), -3);
        let must = Directives::of(&headers(&[("cache-control", "must-revalidate")]));
        let Decision::Store(f) = decide(&rule(10, Scope::Public), 200, &must, 0) else {
            panic!()
        };
        assert_eq!(
            f.state(10_000),
            State::Expired,
            "no stale use after must-revalidate"
        );
    }
}
