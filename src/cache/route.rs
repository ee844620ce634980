//! Route-level caching: the whole composed response of a GET route, with
//! `Cache-Status` (RFC 9211), `Cache-Control`, `Age` and `Vary` on every
//! response of a cached route.

use super::entry::Entry;
use super::flight::Role;
use super::freshness::{self, Decision, Directives, Freshness, SkipReason, State, now_ms};
use super::policy::{CachePolicy, Rule};
use super::{Cache, Inner, Tier, encoding};
use crate::exec::eval::Env;
use crate::exec::render::{self, Rendered};
use crate::exec::{CallState, Outcome};
use crate::plan::Aggregate;
use crate::telemetry::CacheLookup;
use crate::upstream::{self, Body};
use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body_util::BodyExt;
use std::fmt::Write;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use tokio::time::Instant;

/// The `Cache-Status` cache name.
const CACHE_NAME: &str = "switchyard";
/// Headers of a composed response that are stored with it.
const STORED_HEADERS: &[header::HeaderName] = &[header::CONTENT_TYPE];
const MISSING: &str = "switchyard-missing";
const SERVER_TIMING: &str = "server-timing";

/// What a route's calls say about caching its response, and its tags; the
/// composer attaches it to the response (as an extension) for the cache.
#[derive(Debug, Clone, Default)]
pub struct Parts {
    /// The parts' combined Cache-Control constraints.
    pub directives: Directives,
    /// Rendered tags.
    pub tags: Vec<String>,
}

/// The smallest lifetime and any `private`/`no-store` of the route's
/// calls (cached calls count with what is left of their entry), and the
/// route's rendered tags.
pub fn route_parts(policy: &CachePolicy, agg: &Aggregate, outcome: &Outcome, env: &Env) -> Parts {
    let now = now_ms();
    let mut directives = Directives::default();
    for (i, state) in outcome.states.iter().enumerate() {
        if let CallState::Done(resp) = state {
            let cached = outcome.cache.get(i).copied().flatten();
            let d = cached
                .and_then(|c| c.directives(now))
                .unwrap_or_else(|| Directives::of(&resp.headers));
            directives.merge(&d);
        }
    }
    let _ = agg;
    Parts {
        directives,
        tags: render_tags(&policy.tags, env),
    }
}

/// Renders tag templates; a tag whose inputs are missing is left out.
pub fn render_tags(tags: &[crate::plan::template::Template], env: &Env) -> Vec<String> {
    let mut out = Vec::with_capacity(tags.len());
    for t in tags {
        let mut text = String::new();
        if let Ok(Rendered::Text(s)) = render::render(t, env, &mut text) {
            out.push(s);
        }
    }
    out
}

/// A composed response, read whole so it can be stored.
#[derive(Debug, Clone)]
pub struct RouteAnswer {
    /// Its status.
    pub status: StatusCode,
    /// Content-Type, Switchyard-Missing and Server-Timing.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// What its parts say (absent for failures).
    pub parts: Option<Parts>,
}

impl RouteAnswer {
    /// Reads a composed response (its body is already in memory).
    pub async fn from_response(resp: Response<Body>) -> RouteAnswer {
        let (mut head, body) = resp.into_parts();
        let parts = head.extensions.remove::<Parts>();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let mut headers = HeaderMap::new();
        for name in [header::CONTENT_TYPE.as_str(), MISSING, SERVER_TIMING] {
            if let Some(v) = head.headers.get(name) {
                headers.insert(name, v.clone());
            }
        }
        RouteAnswer {
            status: head.status,
            headers,
            body,
            parts,
        }
    }
}

/// What a route flight produced.
#[derive(Clone)]
pub(super) enum RouteFetched {
    /// A stored entry; a fresh one carries the Server-Timing of its calls.
    Entry(Arc<Entry>, Tier, Option<HeaderValue>),
    /// An answer that was not stored.
    Unstored(Arc<RouteAnswer>, SkipReason),
}

/// A cached route's response, ready to send.
pub type RouteServed = Response<Body>;

/// How the route cache answered (a response extension, for the request's
/// telemetry record): `hit`, `hit-redis`, `miss`, `collapsed`, `stale`,
/// `stale-if-error` or `bypass` (the client sent `no-store`).
#[derive(Debug, Clone, Copy)]
pub struct RouteOutcome(pub &'static str);

impl Cache {
    /// Answers a GET on a cached route. `compute` runs the route (its calls
    /// and composition); it runs only when this request leads a flight.
    pub async fn route(
        &self,
        policy: &CachePolicy,
        key: String,
        request_no_store: bool,
        gzip: bool,
        started: Instant,
        compute: impl FnOnce() -> BoxFuture<'static, RouteAnswer>,
    ) -> RouteServed {
        let rule = &policy.rule;
        let events = rule.events();
        let out = Out { policy, started };
        if request_no_store {
            events.store_skipped(SkipReason::RequestNoStore.label());
            let a = compute().await;
            return out.unstored(&a, "fwd=request; detail=no-store", "bypass");
        }
        let now = now_ms();
        let mut fallback = None;
        if let Some(e) = self.inner.memory.get(&key).await {
            match e.freshness.state(now) {
                State::Fresh(_) => {
                    events.lookup(CacheLookup::HitL1);
                    return out.hit(&e, now);
                }
                State::StaleRevalidate => {
                    events.lookup(CacheLookup::Stale);
                    self.refresh_route(rule, &key, gzip, compute());
                    return out.entry(&e, now, "stale", None, |s, f| {
                        hit(s, f, now, Some("stale-while-revalidate"))
                    });
                }
                State::StaleIfError => fallback = Some(e),
                State::Expired => {}
            }
        }
        let generation = self.inner.purges.load(Ordering::SeqCst);
        let mut compute = Some(compute);
        let (role, fetched) = {
            let inner = self.inner.clone();
            let (r, k) = (rule.clone(), key.clone());
            let compute = &mut compute;
            self.inner
                .routes
                .join(&key, move || {
                    let run = compute.take().map(|c| c());
                    async move {
                        match run {
                            Some(run) => fetch_route(inner, r, k, gzip, run, generation).await,
                            None => unreachable_answer(),
                        }
                    }
                })
                .await
        };
        let leader = role == Role::Leader;
        let now = now_ms();
        match fetched {
            RouteFetched::Entry(e, tier, timing) => {
                let lookup = match (leader, tier) {
                    (false, _) => CacheLookup::Collapsed,
                    (true, Tier::L1) => CacheLookup::HitL1,
                    (true, Tier::L2) => CacheLookup::HitL2,
                    (true, Tier::Upstream) => CacheLookup::Miss,
                };
                events.lookup(lookup);
                let timing = if leader { timing } else { None };
                let desc = super::CacheInfo {
                    lookup,
                    freshness: None,
                }
                .desc();
                out.entry(&e, now, desc, timing, |s, f| match lookup {
                    CacheLookup::HitL1 => hit(s, f, now, None),
                    CacheLookup::HitL2 => hit(s, f, now, Some("redis")),
                    CacheLookup::Collapsed => s.push_str("; fwd=uri-miss; collapsed"),
                    _ => {
                        let _ = write!(s, "; fwd=uri-miss; stored; ttl={}", f.ttl_secs(now));
                    }
                })
            }
            RouteFetched::Unstored(a, reason) => {
                if let Some(stale) = fallback
                    && a.status.is_server_error()
                {
                    events.lookup(CacheLookup::StaleIfError);
                    return out.entry(&stale, now, "stale-if-error", None, |s, f| {
                        let _ = write!(
                            s,
                            "; fwd=stale; fwd-status={}; ttl={}; detail=stale-if-error",
                            a.status.as_u16(),
                            f.ttl_secs(now)
                        );
                    });
                }
                if reason == SkipReason::Private
                    && let Some(own) = compute.take()
                {
                    // Meant for one client: the others compute their own.
                    events.lookup(CacheLookup::Miss);
                    let mine = own().await;
                    return out.unstored(&mine, "fwd=uri-miss; detail=private", "miss");
                }
                let lookup = if leader {
                    CacheLookup::Miss
                } else {
                    CacheLookup::Collapsed
                };
                events.lookup(lookup);
                let collapsed = if leader { "" } else { "; collapsed" };
                let status = format!(
                    "fwd=uri-miss{collapsed}; detail={}",
                    reason.label().replace('_', "-")
                );
                out.unstored(&a, &status, if leader { "miss" } else { "collapsed" })
            }
        }
    }

    /// Starts one background refresh of a stale route entry.
    fn refresh_route(
        &self,
        rule: &Arc<Rule>,
        key: &str,
        gzip: bool,
        run: BoxFuture<'static, RouteAnswer>,
    ) {
        let inner = self.inner.clone();
        let generation = inner.purges.load(Ordering::SeqCst);
        let (r, k) = (rule.clone(), key.to_string());
        let (role, flight) = self
            .inner
            .routes
            .flight(key, move || fetch_route(inner, r, k, gzip, run, generation));
        if role == Role::Leader {
            let rule = rule.clone();
            tokio::spawn(async move {
                let ok = matches!(flight.await, RouteFetched::Entry(..));
                rule.events().refreshed(ok);
            });
        }
    }
}

fn unreachable_answer() -> RouteFetched {
    // `join` calls its start function exactly once, with the computation
    // still in hand; this is only the type system's fallback.
    RouteFetched::Unstored(
        Arc::new(RouteAnswer {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            parts: None,
        }),
        SkipReason::Status,
    )
}

/// The flight of one route: the tiers, then the route itself; stores what may be stored.
async fn fetch_route(
    inner: Arc<Inner>,
    rule: Arc<Rule>,
    key: String,
    gzip: bool,
    run: BoxFuture<'static, RouteAnswer>,
    generation: u64,
) -> RouteFetched {
    if let Some((e, tier)) = inner.lookup_tiers(&key, false).await {
        return RouteFetched::Entry(e, tier, None);
    }
    let a = run.await;
    let decision = if a.headers.contains_key(MISSING) {
        Decision::Skip(SkipReason::Partial)
    } else {
        let d = a
            .parts
            .as_ref()
            .map(|p| p.directives.clone())
            .unwrap_or_default();
        freshness::decide(&rule, a.status.as_u16(), &d, now_ms())
    };
    match decision {
        Decision::Store(f) => {
            let mut headers = HeaderMap::new();
            for name in STORED_HEADERS {
                if let Some(v) = a.headers.get(name) {
                    headers.insert(name, v.clone());
                }
            }
            let mut body = a.body.clone();
            if gzip
                && body.len() >= encoding::MIN_GZIP_BYTES
                && let Some(z) = encoding::gzip(&body)
            {
                body = z;
                headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            }
            let tags = a.parts.map(|p| p.tags).unwrap_or_default();
            let e = Arc::new(Entry::new(a.status, &headers, body, f, tags));
            inner.store(&rule, &key, &e, generation).await;
            RouteFetched::Entry(e, Tier::Upstream, a.headers.get(SERVER_TIMING).cloned())
        }
        Decision::Skip(reason) => {
            rule.events().store_skipped(reason.label());
            RouteFetched::Unstored(Arc::new(a), reason)
        }
    }
}

/// `; hit; ttl=N` (and a detail).
fn hit(s: &mut String, f: &Freshness, now: u64, detail: Option<&str>) {
    let _ = write!(s, "; hit; ttl={}", f.ttl_secs(now));
    if let Some(d) = detail {
        let _ = write!(s, "; detail={d}");
    }
}

/// Builds the responses of one cached route.
struct Out<'a> {
    policy: &'a CachePolicy,
    started: Instant,
}

impl Out<'_> {
    /// A plain hit: the hot path. Its headers are the same for a whole
    /// second, so they are built once per second and copied.
    fn hit(&self, e: &Entry, now: u64) -> RouteServed {
        let second = now / 1000;
        let memo = e.hit_headers.try_lock().ok().and_then(|m| {
            m.as_ref()
                .filter(|(at, _)| *at == second)
                .map(|(_, h)| h.clone())
        });
        let Some(mut headers) = memo else {
            let resp = self.entry(e, second * 1000, "hit", None, |s, f| {
                hit(s, f, second * 1000, None)
            });
            if let Ok(mut m) = e.hit_headers.try_lock() {
                let mut h = resp.headers().clone();
                h.remove(SERVER_TIMING);
                *m = Some((second, h));
            }
            return resp;
        };
        headers.insert(SERVER_TIMING, self.timing("hit"));
        let mut resp = Response::new(upstream::full(e.body.clone()));
        *resp.status_mut() = e.status;
        *resp.headers_mut() = headers;
        resp.extensions_mut().insert(RouteOutcome("hit"));
        resp
    }

    /// `cache;desc="…", total;dur=…` for responses whose calls did not run here.
    fn timing(&self, desc: &str) -> HeaderValue {
        let us = self.started.elapsed().as_micros();
        let text = format!(
            "cache;desc=\"{desc}\", total;dur={}.{:02}",
            us / 1000,
            (us % 1000) / 10
        );
        HeaderValue::from_str(&text).unwrap_or(HeaderValue::from_static("total"))
    }

    /// A stored entry as a response.
    fn entry(
        &self,
        e: &Entry,
        now: u64,
        desc: &'static str,
        timing: Option<HeaderValue>,
        status: impl FnOnce(&mut String, &Freshness),
    ) -> RouteServed {
        let mut resp = Response::new(upstream::full(e.body.clone()));
        *resp.status_mut() = e.status;
        let h = resp.headers_mut();
        for (k, v) in &e.headers {
            h.insert(k, v.clone());
        }
        h.insert(
            header::CACHE_CONTROL,
            freshness::response_cache_control(&e.freshness, now),
        );
        h.insert(header::AGE, e.freshness.age_secs(now).into());
        let mut cs = String::with_capacity(48);
        cs.push_str(CACHE_NAME);
        status(&mut cs, &e.freshness);
        self.common(h, &cs, desc, timing);
        resp.extensions_mut().insert(RouteOutcome(desc));
        resp
    }

    /// An answer that was not stored, as a response: downstream caches
    /// must not keep it either.
    fn unstored(&self, a: &RouteAnswer, status: &str, desc: &'static str) -> RouteServed {
        let mut resp = Response::new(upstream::full(a.body.clone()));
        *resp.status_mut() = a.status;
        let h = resp.headers_mut();
        for (k, v) in &a.headers {
            h.insert(k, v.clone());
        }
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        let cs = format!("{CACHE_NAME}; {status}");
        let timing = h.remove(SERVER_TIMING);
        self.common(h, &cs, desc, timing);
        resp.extensions_mut().insert(RouteOutcome(desc));
        resp
    }

    /// Vary, Cache-Status and Server-Timing (the calls' timings when this
    /// request ran them, else `cache;desc=…` and the total).
    fn common(
        &self,
        h: &mut HeaderMap,
        cache_status: &str,
        desc: &str,
        timing: Option<HeaderValue>,
    ) {
        if let Some(v) = &self.policy.response_vary {
            h.insert(header::VARY, v.clone());
        }
        if let Ok(v) = HeaderValue::from_str(cache_status) {
            h.insert("cache-status", v);
        }
        let timing = timing.unwrap_or_else(|| self.timing(desc));
        h.insert(SERVER_TIMING, timing);
    }
}
