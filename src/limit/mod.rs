//! Rate limiting: the policies of a route decide whether a request may run.
//!
//! Layout:
//! - `gcra.rs`: the algorithm, one model both stores use.
//! - `key.rs`: which bucket a request falls in (client IP grouping, composite
//!   and fallback keys).
//! - `memory.rs`: the in-process store (sharded, idle buckets dropped).
//! - `redis.rs`: the shared store (one atomic script per decision) and its health.
//! - `headers.rs`: `RateLimit` / `RateLimit-Policy` values.
//!
//! A request must pass every policy of its route, and a policy that rejects
//! spends nobody's quota: in-process buckets are all locked, checked, and
//! written only if all admit; Redis buckets are checked and written in one
//! script; when both kinds are on one route and Redis rejects, the
//! in-process buckets are given back. The limiter never builds HTTP
//! responses: it returns a `Decision`, and `server` turns it into one.

pub mod gcra;
pub mod headers;
pub mod key;
pub mod memory;
pub mod redis;

use crate::config::{LimitStore, OnRedisError};
use crate::plan::limit::{LimitsPlan, PolicyPlan, RouteLimits};
use crate::telemetry;
use gcra::Gcra;
use http::HeaderValue;
pub use key::{RequestView, group_ip};
use memory::MemoryStore;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Nanoseconds: the in-process stores' time unit.
const NANOS: u64 = 1_000_000_000;

/// Where the in-process stores read the time.
#[derive(Clone, Debug)]
pub enum Clock {
    /// Monotonic time since the limiter was made.
    Monotonic(Instant),
    /// A clock tests move by hand (nanoseconds).
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// Now, in nanoseconds. Starts above 0 so that a TAT of 0 is "never seen".
    pub fn now(&self) -> u64 {
        match self {
            Clock::Monotonic(start) => start.elapsed().as_nanos() as u64 + NANOS,
            Clock::Manual(t) => t.load(Ordering::Relaxed) + NANOS,
        }
    }
}

/// One policy at run time.
struct Policy {
    plan: PolicyPlan,
    /// In nanoseconds, for the in-process store.
    local_gcra: Gcra,
    /// In microseconds, for the Redis script.
    redis_gcra: Gcra,
    /// The policy's store (`store: memory`), or its fallback (`store: redis`).
    local: MemoryStore,
    /// The label of `local` in metrics.
    local_label: &'static str,
    metrics: telemetry::RatelimitMetrics,
}

/// Every policy of a plan, with their stores.
pub struct Limiter {
    policies: Vec<Policy>,
    redis: Option<redis::RedisStore>,
    clock: Clock,
    ipv6_prefix: u8,
}

/// What the limiter decided about a request.
#[derive(Debug)]
pub struct Decision {
    /// Admit, or why not.
    pub verdict: Verdict,
    /// The route's `RateLimit-Policy` value.
    pub policy_header: HeaderValue,
    /// The `RateLimit` value: one item per policy that counted the request.
    pub limit_header: Option<HeaderValue>,
    /// Time spent asking Redis, when it was asked (for `Server-Timing`).
    pub redis_time: Option<RedisTiming>,
}

/// How the Redis part of a decision went.
#[derive(Debug, Clone, Copy)]
pub struct RedisTiming {
    /// How long it took.
    pub took: Duration,
    /// Whether Redis answered (false: the fallback decided).
    pub answered: bool,
}

/// The outcome of a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Run the request.
    Admit,
    /// One or more policies are out of quota.
    Limited {
        /// Whole seconds until every violated policy admits again (at least 1).
        retry_after: u64,
        /// The policies that rejected.
        violated: Vec<String>,
    },
    /// A `fail_closed` policy cannot reach Redis.
    Unavailable {
        /// The policies that could not decide.
        policies: Vec<String>,
    },
}

/// One policy's part in a decision.
#[derive(Clone, Copy)]
struct Part {
    route_index: usize,
    policy: usize,
    fingerprint: u64,
    /// Occupancy before the request, in the store's units.
    occupancy: u64,
    admits: bool,
    store: Store,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Store {
    Memory,
    Redis,
    Fallback,
}

impl Store {
    fn label(self) -> &'static str {
        match self {
            Store::Memory => "memory",
            Store::Redis => "redis",
            Store::Fallback => "local_fallback",
        }
    }
}

impl Limiter {
    /// The policies of a plan with empty stores; Redis connects on first use.
    pub fn new(plan: &LimitsPlan) -> Limiter {
        Self::with_clock(plan, Clock::Monotonic(Instant::now()))
    }

    /// Same, reading the in-process stores' time from `clock`.
    pub fn with_clock(plan: &LimitsPlan, clock: Clock) -> Limiter {
        let policies = plan
            .policies
            .iter()
            .map(|p| Policy {
                metrics: telemetry::RatelimitMetrics::new(&p.name),
                plan: p.clone(),
                local_gcra: Gcra::new(p.rate, p.burst, NANOS),
                redis_gcra: Gcra::new(p.rate, p.burst, redis::UNITS_PER_SEC),
                local: MemoryStore::new(),
                local_label: match p.store {
                    LimitStore::Memory => Store::Memory.label(),
                    LimitStore::Redis => Store::Fallback.label(),
                },
            })
            .collect();
        let redis = plan
            .redis
            .as_ref()
            .and_then(|r| match redis::RedisStore::new(r) {
                Ok(s) => Some(s),
                Err(e) => {
                    // The plan checked the URL; this is a client that cannot be
                    // built at all, so every Redis policy runs on its fallback.
                    tracing::error!(error = %e, "cannot create the redis client");
                    None
                }
            });
        Limiter {
            policies,
            redis,
            clock,
            ipv6_prefix: plan.client_ipv6_prefix,
        }
    }

    /// The configured IPv6 client prefix.
    pub fn ipv6_prefix(&self) -> u8 {
        self.ipv6_prefix
    }

    /// Groups a client address the way keys use it.
    pub fn client_key(&self, ip: IpAddr) -> IpAddr {
        group_ip(ip, self.ipv6_prefix)
    }

    /// Buckets the in-process store of a policy holds (tests, benchmarks).
    pub fn local_buckets(&self, policy: &str) -> Option<usize> {
        self.policies
            .iter()
            .find(|p| p.plan.name == policy)
            .map(|p| p.local.len())
    }

    /// Bytes the in-process store of a policy has allocated (an estimate).
    pub fn local_allocated_bytes(&self, policy: &str) -> Option<usize> {
        self.policies
            .iter()
            .find(|p| p.plan.name == policy)
            .map(|p| p.local.allocated_bytes())
    }

    /// Decides a request against every policy of its route.
    pub async fn check(&self, limits: &RouteLimits, req: &RequestView<'_>) -> Decision {
        let now = self.clock.now();
        let peer = req.client.to_canonical();
        let client = self.client_key(peer);
        let req = RequestView { client, ..*req };
        let mut memory: Vec<Part> = Vec::with_capacity(limits.policies.len());
        let mut remote: Vec<(Part, String)> = Vec::new();
        for (route_index, bound) in limits.policies.iter().enumerate() {
            let policy = &self.policies[bound.policy];
            let key = key::bucket_key(&bound.key, &req);
            if policy.bypasses(&key, peer) {
                policy.metrics.decision(policy.local_label, "bypassed");
                continue;
            }
            let part = Part {
                route_index,
                policy: bound.policy,
                fingerprint: key.fingerprint(policy.local.seed()),
                occupancy: 0,
                admits: true,
                store: Store::Memory,
            };
            match (&self.redis, policy.plan.store) {
                (Some(redis), LimitStore::Redis) => {
                    let k = redis.key(&policy.plan.name, &key.redis_suffix());
                    remote.push((
                        Part {
                            store: Store::Redis,
                            ..part
                        },
                        k,
                    ));
                }
                (None, LimitStore::Redis) => memory.push(Part {
                    store: Store::Fallback,
                    ..part
                }),
                _ => memory.push(part),
            }
        }
        // 1. In-process buckets: check all, commit only if all admit.
        if !self.decide_local(&mut memory, now) {
            return self.finish(limits, memory, None, Vec::new());
        }
        let Some(redis) = self.redis.as_ref().filter(|_| !remote.is_empty()) else {
            return self.finish(limits, memory, None, Vec::new());
        };
        let mut decided = memory.clone();
        // 2. Redis buckets: one script, atomic.
        let buckets: Vec<redis::ScriptBucket> = remote
            .iter()
            .map(|(p, key)| redis::ScriptBucket {
                key: key.clone(),
                gcra: self.policies[p.policy].redis_gcra,
            })
            .collect();
        let asked = Instant::now();
        let answer = redis.decide(&buckets).await;
        let took = asked.elapsed();
        match answer {
            Ok(answer) => {
                let timing = RedisTiming {
                    took,
                    answered: true,
                };
                for ((mut part, _), occupancy) in remote.into_iter().zip(answer.occupancy) {
                    part.occupancy = occupancy;
                    part.admits = self.policies[part.policy].redis_gcra.admits(occupancy);
                    decided.push(part);
                }
                if !answer.admitted {
                    self.refund(&memory);
                }
                self.finish(limits, decided, Some(timing), Vec::new())
            }
            Err(failure) => {
                let timing =
                    (!matches!(failure, redis::RedisFailure::Skipped)).then_some(RedisTiming {
                        took,
                        answered: false,
                    });
                let mut fallback = Vec::new();
                let mut closed = Vec::new();
                for (part, _) in remote {
                    let policy = &self.policies[part.policy];
                    match policy.plan.on_redis_error {
                        OnRedisError::Local => fallback.push(Part {
                            store: Store::Fallback,
                            ..part
                        }),
                        OnRedisError::FailOpen => {
                            policy.metrics.decision(Store::Redis.label(), "fail_open")
                        }
                        OnRedisError::FailClosed => closed.push(part),
                    }
                }
                if !closed.is_empty() {
                    self.refund(&memory);
                    return self.finish(limits, decided, timing, closed);
                }
                if !self.decide_local(&mut fallback, now) {
                    self.refund(&memory);
                }
                decided.extend(fallback);
                self.finish(limits, decided, timing, Vec::new())
            }
        }
    }

    /// Checks in-process buckets with all their shards locked (in policy
    /// order, so two requests never wait on each other crosswise); writes
    /// them only if every one admits. Returns whether all admitted.
    fn decide_local(&self, parts: &mut [Part], now: u64) -> bool {
        if let [part] = parts {
            // The common case, one bucket: no lock list to keep.
            let policy = &self.policies[part.policy];
            let (mut bucket, dropped) = policy.local.lock(part.fingerprint, now);
            if dropped > 0 {
                policy.metrics.keys(policy.local_label, -(dropped as f64));
            }
            part.occupancy = Gcra::occupancy(bucket.tat(), now);
            part.admits = policy.local_gcra.admits(part.occupancy);
            if part.admits && bucket.set(policy.local_gcra.next_tat(part.occupancy, now)) {
                policy.metrics.keys(policy.local_label, 1.0);
            }
            return part.admits;
        }
        parts.sort_by_key(|p| p.policy);
        let mut locked = Vec::with_capacity(parts.len());
        for part in parts.iter_mut() {
            let policy = &self.policies[part.policy];
            let (bucket, dropped) = policy.local.lock(part.fingerprint, now);
            if dropped > 0 {
                policy.metrics.keys(policy.local_label, -(dropped as f64));
            }
            part.occupancy = Gcra::occupancy(bucket.tat(), now);
            part.admits = policy.local_gcra.admits(part.occupancy);
            locked.push(bucket);
        }
        let all = parts.iter().all(|p| p.admits);
        if all {
            for (part, bucket) in parts.iter().zip(locked.iter_mut()) {
                let policy = &self.policies[part.policy];
                if bucket.set(policy.local_gcra.next_tat(part.occupancy, now)) {
                    policy.metrics.keys(policy.local_label, 1.0);
                }
            }
        }
        all
    }

    /// Gives back what in-process buckets admitted for a request that was
    /// then rejected elsewhere.
    fn refund(&self, parts: &[Part]) {
        for part in parts.iter().filter(|p| p.admits) {
            let policy = &self.policies[part.policy];
            policy
                .local
                .refund(part.fingerprint, policy.local_gcra.interval);
        }
    }

    fn finish(
        &self,
        limits: &RouteLimits,
        mut decided: Vec<Part>,
        redis_time: Option<RedisTiming>,
        closed: Vec<Part>,
    ) -> Decision {
        decided.sort_by_key(|p| p.route_index);
        let admitted = closed.is_empty() && decided.iter().all(|p| p.admits);
        let mut header = headers::RateLimitHeader::default();
        let mut violated = Vec::new();
        let mut retry_after = 0;
        for part in &decided {
            let policy = &self.policies[part.policy];
            let (gcra, units) = match part.store {
                Store::Redis => (policy.redis_gcra, redis::UNITS_PER_SEC),
                _ => (policy.local_gcra, NANOS),
            };
            let outcome = if admitted {
                "admitted"
            } else if !part.admits {
                "limited"
            } else {
                "not_counted"
            };
            policy.metrics.decision(part.store.label(), outcome);
            let occupancy = if admitted {
                part.occupancy + gcra.interval
            } else {
                part.occupancy
            };
            let status = gcra.status(occupancy);
            if !part.admits {
                violated.push(policy.plan.name.clone());
                retry_after =
                    retry_after.max(gcra::ceil_secs(gcra.retry_after(part.occupancy), units));
            }
            header.push(&policy.plan.name, status, units);
        }
        for part in &closed {
            self.policies[part.policy]
                .metrics
                .decision(Store::Redis.label(), "fail_closed");
        }
        let verdict = if !closed.is_empty() {
            Verdict::Unavailable {
                policies: closed
                    .iter()
                    .map(|p| self.policies[p.policy].plan.name.clone())
                    .collect(),
            }
        } else if admitted {
            Verdict::Admit
        } else {
            Verdict::Limited {
                retry_after: retry_after.max(1),
                violated,
            }
        };
        Decision {
            verdict,
            policy_header: limits.policy_header.clone(),
            limit_header: header.finish(),
            redis_time,
        }
    }
}

impl Policy {
    /// Whether an allow-list entry matches this request.
    fn bypasses(&self, key: &key::BucketKey<'_>, client: IpAddr) -> bool {
        (!self.plan.allow_ips.is_empty() && self.plan.allow_ips.iter().any(|n| n.contains(&client)))
            || (!self.plan.allow_keys.is_empty()
                && key.alternative.is_some()
                && self.plan.allow_keys.contains(&key.text()))
    }
}

#[cfg(test)]
mod tests;
