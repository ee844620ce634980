//! Selective caching: opt-in per call (an upstream answer) or per route (the
//! composed response), in two tiers with single-flight and purge.
//!
//! A lookup, in order:
//!
//! 1. **L1** (`memory`, in-process, bounded by bytes). Fresh: served. Stale
//!    within `stale_while_revalidate`: served, and one background refresh
//!    starts. Stale within `stale_if_error`: kept as the fallback.
//! 2. **Single-flight** (`flight`): the first miss for a key starts a fetch,
//!    concurrent misses wait for it (as does a refresh).
//! 3. Inside the flight: L1 again (a flight that just ended may have filled
//!    it), then **L2** (`redis`, shared by every instance), then the
//!    upstream. The answer is judged (`freshness::decide`: statuses,
//!    Cache-Control, scope, partial responses) and stored in both tiers, or
//!    not stored with a counted reason.
//!
//! Purges (`purge`) remove from L1 at once, from Redis, and are broadcast
//! over Redis pub/sub to every instance's L1.
//!
//! Invariants: a stored answer is only ever served under a key that covers
//! everything that was sent to get it; credentials only enter keys hashed;
//! Redis trouble is a miss, never a failed request.

pub mod admin;
mod encoding;
pub mod entry;
pub mod flight;
pub mod freshness;
pub mod key;
pub mod memory;
pub mod policy;
pub mod redis;
mod route;

pub use encoding::accepts_gzip;
pub use memory::Purge;
pub use route::{Parts, RouteAnswer, RouteOutcome, RouteServed, render_tags, route_parts};

use crate::plan::Plan;
use crate::telemetry::{self, CacheLookup};
use crate::upstream::{CallError, JsonBody, JsonResponse};
use entry::Entry;
use flight::{Flights, Role};
use freshness::{Decision, Directives, Freshness, State, now_ms};
use futures_util::future::BoxFuture;
use memory::MemoryTier;
use policy::{CachePolicy, Rule};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often the held-bytes gauges are refreshed (and moka's deferred work run).
const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

/// The caches of one gateway: cheap to clone, shared by every request.
#[derive(Clone)]
pub struct Cache {
    inner: Arc<Inner>,
}

/// Where an answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tier {
    L1,
    L2,
    Upstream,
}

/// What one call flight produced.
#[derive(Clone)]
enum CallFetched {
    /// A stored entry (found in a tier, or fetched and stored).
    Entry(Arc<Entry>, Tier),
    /// A usable answer that was not stored.
    Unstored(Arc<JsonResponse>, freshness::SkipReason),
    /// The upstream call failed.
    Failed(CallError),
}

/// The shared state behind `Cache`.
pub struct Inner {
    memory: Arc<MemoryTier>,
    redis: Option<Arc<redis::RedisTier>>,
    calls: Flights<CallFetched>,
    routes: Flights<route::RouteFetched>,
    /// Bumped by every purge: a fetch that began before a purge is not
    /// stored, or it could bring back what the purge removed.
    purges: AtomicU64,
}

/// How a cached call was answered (for Server-Timing and route freshness).
#[derive(Clone, Copy, Debug)]
pub struct CacheInfo {
    /// How the lookup ended.
    pub lookup: CacheLookup,
    /// The entry's times, when the answer is (now) stored.
    pub freshness: Option<Freshness>,
}

impl CacheInfo {
    /// The Server-Timing `desc` word.
    pub fn desc(&self) -> &'static str {
        match self.lookup {
            CacheLookup::HitL1 => "hit",
            CacheLookup::HitL2 => "hit-redis",
            CacheLookup::Miss => "miss",
            CacheLookup::Collapsed => "collapsed",
            CacheLookup::Stale => "stale",
            CacheLookup::StaleIfError => "stale-if-error",
        }
    }

    /// What this call contributes to a cached route's freshness.
    pub fn directives(&self, now: u64) -> Option<Directives> {
        let f = self.freshness?;
        Some(Directives {
            private: f.private,
            lifetime: Some(Duration::from_millis(f.fresh_until_ms.saturating_sub(now))),
            ..Directives::default()
        })
    }
}

/// What a purge did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PurgeReport {
    /// `key`, `prefix` or `tag`.
    pub kind: &'static str,
    /// What was purged.
    pub value: String,
    /// Entries deleted from Redis (`null` without Redis or when it failed).
    pub redis_deleted: Option<u64>,
    /// Whether the other instances were told.
    pub broadcast: bool,
}

impl Cache {
    /// The caches a plan asks for. The Redis tier (when configured) and the
    /// gauges need a tokio runtime; without one the cache is in-process only.
    pub fn new(plan: &Plan) -> Cache {
        let memory = Arc::new(MemoryTier::new(plan.cache.max_bytes));
        let runtime = tokio::runtime::Handle::try_current().is_ok();
        let redis = match (&plan.limits.redis, plan.cache.redis, runtime) {
            (Some(r), true, true) => match redis::RedisTier::new(&r.url, &r.key_prefix) {
                Ok(t) => Some(Arc::new(t)),
                Err(e) => {
                    tracing::warn!(error = %e, "Redis cache tier disabled: cannot use its URL");
                    None
                }
            },
            (Some(_), true, false) => {
                tracing::warn!("Redis cache tier disabled: no async runtime");
                None
            }
            _ => None,
        };
        let inner = Arc::new(Inner {
            memory,
            redis,
            calls: Flights::default(),
            routes: Flights::default(),
            purges: AtomicU64::new(0),
        });
        if let Some(r) = &inner.redis {
            r.listen(Arc::downgrade(&inner));
        }
        if runtime {
            spawn_gauges(Arc::downgrade(&inner));
        }
        Cache { inner }
    }

    /// Whether entries also go to Redis.
    pub fn has_redis(&self) -> bool {
        self.inner.redis.is_some()
    }

    /// Bytes and entries in the in-process tier.
    pub async fn held(&self) -> (u64, u64) {
        self.inner.memory.maintain().await;
        (self.inner.memory.bytes(), self.inner.memory.entries())
    }

    /// Answers one call through its cache. `fetch` is the upstream request,
    /// ready to send; it is only polled when this request leads a flight.
    /// With `request_no_store` (the client sent `Cache-Control: no-store`)
    /// the cache is bypassed: nothing is looked up or stored.
    pub async fn call(
        &self,
        policy: &CachePolicy,
        key: String,
        tags: Vec<String>,
        request_no_store: bool,
        fetch: BoxFuture<'static, Result<JsonResponse, CallError>>,
    ) -> (Result<JsonResponse, CallError>, CacheInfo) {
        let rule = &policy.rule;
        let events = rule.events();
        if request_no_store {
            events.store_skipped(freshness::SkipReason::RequestNoStore.label());
            events.lookup(CacheLookup::Miss);
            return (fetch.await, no_info(CacheLookup::Miss));
        }
        let now = now_ms();
        let mut fallback = None;
        if let Some(e) = self.inner.memory.get(&key).await {
            match e.freshness.state(now) {
                State::Fresh(_) => {
                    events.lookup(CacheLookup::HitL1);
                    return (call_answer(&e, now), info(CacheLookup::HitL1, &e));
                }
                State::StaleRevalidate => {
                    events.lookup(CacheLookup::Stale);
                    self.refresh_call(rule, &key, tags, fetch);
                    return (call_answer(&e, now), info(CacheLookup::Stale, &e));
                }
                State::StaleIfError => fallback = Some(e),
                State::Expired => {}
            }
        }
        let mut fetch = Some(fetch);
        let generation = self.inner.purges.load(Ordering::SeqCst);
        let (role, fetched) = {
            let inner = self.inner.clone();
            let (rule, k) = (rule.clone(), key.clone());
            let fetch = &mut fetch;
            self.inner
                .calls
                .join(&key, move || {
                    let f = fetch.take();
                    async move {
                        match f {
                            Some(f) => fetch_call(inner, rule, k, tags, f, generation).await,
                            None => CallFetched::Failed(CallError::Transport("no request".into())),
                        }
                    }
                })
                .await
        };
        let leader = role == Role::Leader;
        let answered = |lookup: CacheLookup| {
            if leader {
                lookup
            } else {
                CacheLookup::Collapsed
            }
        };
        match fetched {
            CallFetched::Entry(e, tier) => {
                let lookup = answered(match tier {
                    Tier::L1 => CacheLookup::HitL1,
                    Tier::L2 => CacheLookup::HitL2,
                    Tier::Upstream => CacheLookup::Miss,
                });
                events.lookup(lookup);
                (call_answer(&e, now_ms()), info(lookup, &e))
            }
            CallFetched::Unstored(resp, reason) => {
                // An answer the upstream meant for one client is not handed
                // to the others who waited: they ask for their own.
                if reason == freshness::SkipReason::Private
                    && let Some(own) = fetch.take()
                {
                    events.lookup(CacheLookup::Miss);
                    let result = own.await;
                    return (result, no_info(CacheLookup::Miss));
                }
                let lookup = answered(CacheLookup::Miss);
                events.lookup(lookup);
                (Ok((*resp).clone()), no_info(lookup))
            }
            CallFetched::Failed(err) => match fallback {
                Some(stale) if serves_stale_on(&err) => {
                    events.lookup(CacheLookup::StaleIfError);
                    let answer = call_answer(&stale, now_ms());
                    (answer, info(CacheLookup::StaleIfError, &stale))
                }
                _ => {
                    events.lookup(answered(CacheLookup::Miss));
                    (Err(err), no_info(answered(CacheLookup::Miss)))
                }
            },
        }
    }

    /// Starts one background refresh of a stale call entry (or joins the
    /// fetch already running for it).
    fn refresh_call(
        &self,
        rule: &Arc<Rule>,
        key: &str,
        tags: Vec<String>,
        fetch: BoxFuture<'static, Result<JsonResponse, CallError>>,
    ) {
        let inner = self.inner.clone();
        let generation = inner.purges.load(Ordering::SeqCst);
        let (r, k) = (rule.clone(), key.to_string());
        let (role, flight) = self.inner.calls.flight(key, move || {
            fetch_call(inner, r, k, tags, fetch, generation)
        });
        if role == Role::Leader {
            let rule = rule.clone();
            tokio::spawn(async move {
                let ok = matches!(flight.await, CallFetched::Entry(..));
                rule.events().refreshed(ok);
            });
        }
    }

    /// Removes what `purge` names from this instance, Redis and (by
    /// broadcast) every other instance.
    pub async fn purge(&self, purge: Purge) -> PurgeReport {
        self.inner.apply_purge(&purge);
        telemetry::cache_purged(purge.kind(), "admin");
        let (mut redis_deleted, mut broadcast) = (None, false);
        if let Some(r) = &self.inner.redis {
            redis_deleted = r.purge(&purge).await;
            broadcast = r.publish(&purge).await;
        }
        PurgeReport {
            kind: purge.kind(),
            value: purge.value().to_string(),
            redis_deleted,
            broadcast,
        }
    }
}

impl Inner {
    /// Applies a purge to the in-process tier.
    pub(crate) fn apply_purge(&self, purge: &Purge) {
        self.purges.fetch_add(1, Ordering::SeqCst);
        self.memory.purge(purge);
    }

    /// Drops the in-process tier (purges may have been missed).
    pub(crate) fn clear(&self) {
        self.purges.fetch_add(1, Ordering::SeqCst);
        self.memory.clear();
    }

    /// Stores an entry in both tiers, unless a purge ran since `generation`.
    async fn store(&self, rule: &Rule, key: &str, entry: &Arc<Entry>, generation: u64) -> bool {
        if self.purges.load(Ordering::SeqCst) != generation {
            rule.events()
                .store_skipped(freshness::SkipReason::Purged.label());
            return false;
        }
        self.memory.insert(key, entry.clone()).await;
        if let Some(r) = &self.redis {
            // Off the request's path: the answer is ready, Redis can wait.
            let (r, k, e) = (r.clone(), key.to_string(), entry.clone());
            tokio::spawn(async move { r.set(&k, &e).await });
        }
        true
    }

    /// A fresh entry from L1 (re-checked inside a flight) or L2.
    async fn lookup_tiers(&self, key: &str, parse_json: bool) -> Option<(Arc<Entry>, Tier)> {
        let now = now_ms();
        if let Some(e) = self.memory.get(key).await
            && matches!(e.freshness.state(now), State::Fresh(_))
        {
            return Some((e, Tier::L1));
        }
        let mut e = self.redis.as_ref()?.get(key).await?;
        if !matches!(e.freshness.state(now), State::Fresh(_)) {
            return None;
        }
        if parse_json && e.status.is_success() {
            e.json = Some(JsonBody::parse(e.body.clone()).ok()?);
        }
        let e = Arc::new(e);
        self.memory.insert(key, e.clone()).await;
        Some((e, Tier::L2))
    }
}

/// The flight of one call: the tiers, then the upstream; stores what may be stored.
async fn fetch_call(
    inner: Arc<Inner>,
    rule: Arc<Rule>,
    key: String,
    tags: Vec<String>,
    fetch: BoxFuture<'static, Result<JsonResponse, CallError>>,
    generation: u64,
) -> CallFetched {
    if let Some((e, tier)) = inner.lookup_tiers(&key, true).await {
        return CallFetched::Entry(e, tier);
    }
    let events = rule.events();
    match fetch.await {
        Ok(resp) => {
            let d = Directives::of(&resp.headers);
            match freshness::decide(&rule, resp.status.as_u16(), &d, now_ms()) {
                Decision::Store(f) => {
                    let body = resp.body.to_bytes();
                    let mut e = Entry::new(resp.status, &resp.headers, body, f, tags);
                    e.json = Some(resp.body);
                    let e = Arc::new(e);
                    inner.store(&rule, &key, &e, generation).await;
                    CallFetched::Entry(e, Tier::Upstream)
                }
                Decision::Skip(reason) => {
                    events.store_skipped(reason.label());
                    CallFetched::Unstored(Arc::new(resp), reason)
                }
            }
        }
        Err(CallError::Status(s)) if rule.stores_status(s.as_u16()) => {
            // A configured negative answer (404, 410): stored as its status.
            match freshness::decide(&rule, s.as_u16(), &Directives::default(), now_ms()) {
                Decision::Store(f) => {
                    let e = Arc::new(Entry::new(
                        s,
                        &Default::default(),
                        Default::default(),
                        f,
                        tags,
                    ));
                    inner.store(&rule, &key, &e, generation).await;
                    CallFetched::Entry(e, Tier::Upstream)
                }
                Decision::Skip(reason) => {
                    events.store_skipped(reason.label());
                    CallFetched::Failed(CallError::Status(s))
                }
            }
        }
        Err(e) => {
            if matches!(e, CallError::Status(_)) {
                events.store_skipped(freshness::SkipReason::Status.label());
            }
            CallFetched::Failed(e)
        }
    }
}

/// Failures that a stale-if-error entry covers: the upstream's trouble, not
/// the request's (a 4xx or a missing input would fail again).
fn serves_stale_on(e: &CallError) -> bool {
    match e {
        CallError::Status(s) => s.is_server_error() || s.as_u16() == 429,
        CallError::Timeout(_)
        | CallError::Connect(_)
        | CallError::Transport(_)
        | CallError::Decode(_)
        | CallError::TooLarge(_) => true,
        _ => false,
    }
}

/// A call's answer from an entry (a stored 404 fails the call as 404 did).
fn call_answer(e: &Entry, now: u64) -> Result<JsonResponse, CallError> {
    if !e.status.is_success() {
        return Err(CallError::Status(e.status));
    }
    let mut headers = e.headers.clone();
    headers.insert(http::header::AGE, e.freshness.age_secs(now).into());
    Ok(JsonResponse {
        status: e.status,
        headers,
        body: e.json.clone().unwrap_or_default(),
    })
}

fn info(lookup: CacheLookup, e: &Entry) -> CacheInfo {
    CacheInfo {
        lookup,
        freshness: Some(e.freshness),
    }
}

fn no_info(lookup: CacheLookup) -> CacheInfo {
    CacheInfo {
        lookup,
        freshness: None,
    }
}

fn spawn_gauges(inner: Weak<Inner>) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(GAUGE_INTERVAL).await;
            let Some(i) = inner.upgrade() else { return };
            i.memory.maintain().await;
            telemetry::cache_held(i.memory.bytes(), i.memory.entries());
        }
    });
}
