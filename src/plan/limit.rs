//! Rate limit policies: `rate_limits:` and `redis:` compiled into typed
//! policies, and each route's `rate_limit:` resolved to policy ids with its
//! key sources bound to the route (path parameters by index).

use super::{Compiler, is_identifier};
use crate::config::{LimitStore, OnRedisError, OneOrMany, Pos, RawConfig, RawRateLimit, Sp};
use http::{HeaderName, HeaderValue};
use ipnet::IpNet;
use std::fmt::Write;
use std::time::Duration;

/// Default IPv6 client prefix: a /64 is what one host or one subscriber line
/// gets, so grouping by it stops address rotation without merging neighbours.
pub const DEFAULT_CLIENT_IPV6_PREFIX: u8 = 64;
/// Default wait for one Redis decision: a healthy Redis answers in well under
/// a millisecond; past this the policy's `on_redis_error` applies.
pub const DEFAULT_REDIS_TIMEOUT: Duration = Duration::from_millis(100);
/// Default prefix (and hash tag) of the keys Switchyard writes to Redis.
pub const DEFAULT_REDIS_KEY_PREFIX: &str = "switchyard";

/// Index of a policy in `LimitsPlan::policies`.
pub type PolicyId = usize;

/// Every rate limit policy of the config and what they share.
#[derive(Debug, Clone, Default)]
pub struct LimitsPlan {
    /// Policies in config order; `PolicyId` indexes this.
    pub policies: Vec<PolicyPlan>,
    /// The shared Redis, when some policy uses it.
    pub redis: Option<RedisPlan>,
    /// IPv6 clients are grouped by this prefix length.
    pub client_ipv6_prefix: u8,
}

/// One policy.
#[derive(Debug, Clone)]
pub struct PolicyPlan {
    /// The config name (also its name in headers and metrics).
    pub name: String,
    /// The key as written, for messages.
    pub key_text: String,
    /// Sustained rate: `count` per `period`.
    pub rate: Rate,
    /// Bucket capacity: how many may arrive at once.
    pub burst: u64,
    /// Where the buckets live.
    pub store: LimitStore,
    /// With Redis: what happens while it is unreachable.
    pub on_redis_error: OnRedisError,
    /// Client networks that bypass the policy.
    pub allow_ips: Vec<IpNet>,
    /// Key values that bypass the policy.
    pub allow_keys: Vec<String>,
}

/// `count` requests per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Requests per period.
    pub count: u64,
    /// The period (whole seconds).
    pub period: Duration,
}

/// The shared Redis server.
#[derive(Debug, Clone)]
pub struct RedisPlan {
    /// Connection URL.
    pub url: String,
    /// Longest wait for one decision.
    pub timeout: Duration,
    /// Key prefix, used as the hash tag of every key.
    pub key_prefix: String,
}

/// Where one part of a key comes from, before it is bound to a route.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeySource {
    ClientIp,
    Header(HeaderName),
    Path(String),
    Global,
}

/// Where one part of a key comes from, on one route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// The client address (IPv6 grouped by prefix).
    ClientIp,
    /// A request header's value.
    Header(HeaderName),
    /// A path parameter's value (index into the route's params), decoded.
    Path(usize),
    /// One bucket for every request.
    Global,
}

/// The policies of one route, a request must pass all of them.
#[derive(Debug)]
pub struct RouteLimits {
    /// The policies with their keys bound to this route, in the order listed.
    pub policies: Vec<RouteLimit>,
    /// The `RateLimit-Policy` header value, the same on every response.
    pub policy_header: HeaderValue,
}

/// One policy on one route.
#[derive(Debug)]
pub struct RouteLimit {
    /// The policy.
    pub policy: PolicyId,
    /// Alternatives in order (the first whose parts are all present is the
    /// key); each alternative is a composite of its parts.
    pub key: Vec<Vec<KeyPart>>,
}

/// A policy as the compiler keeps it until routes refer to it.
pub(super) struct CompiledPolicy {
    pos: Pos,
    key: Vec<Vec<KeySource>>,
}

impl Compiler {
    /// Compiles `rate_limits:` and `redis:`; routes are bound later with
    /// `route_limits`.
    pub(super) fn rate_limits(&mut self, raw: &RawConfig) -> LimitsPlan {
        let client_ipv6_prefix = match &raw.server.client_ipv6_prefix {
            None => DEFAULT_CLIENT_IPV6_PREFIX,
            Some(p) if p.value <= 128 => p.value,
            Some(p) => {
                self.error(
                    p.pos,
                    format!(
                        "`client_ipv6_prefix` is a prefix length from 0 to 128, not {}",
                        p.value
                    ),
                );
                DEFAULT_CLIENT_IPV6_PREFIX
            }
        };
        let redis = raw.redis.as_ref().map(|r| {
            let url = r.value.url.value.trim().to_string();
            if let Err(e) = redis::IntoConnectionInfo::into_connection_info(url.as_str()) {
                self.error(
                    r.value.url.pos,
                    format!(
                        "`redis.url`: `{url}` is not a Redis URL like `redis://127.0.0.1:6379` ({e})"
                    ),
                );
            }
            let key_prefix = match &r.value.key_prefix {
                None => DEFAULT_REDIS_KEY_PREFIX.to_string(),
                Some(p) if is_identifier(&p.value, true) => p.value.clone(),
                Some(p) => {
                    self.error(
                        p.pos,
                        "`key_prefix` may only contain letters, digits, `_` and `-`",
                    );
                    DEFAULT_REDIS_KEY_PREFIX.to_string()
                }
            };
            RedisPlan {
                url,
                timeout: self.duration(&r.value.timeout, "timeout", DEFAULT_REDIS_TIMEOUT),
                key_prefix,
            }
        });
        let mut policies = Vec::new();
        for (name, raw_policy) in &raw.rate_limits {
            if !is_identifier(name, true) {
                self.error(
                    raw_policy.pos,
                    format!("policy name `{name}` may only contain letters, digits, `_` and `-`"),
                );
            }
            let (plan, compiled) = self.policy(name, raw_policy, redis.is_some());
            policies.push(plan);
            self.policies.push(compiled);
        }
        LimitsPlan {
            policies,
            redis,
            client_ipv6_prefix,
        }
    }

    fn policy(
        &mut self,
        name: &str,
        raw: &Sp<RawRateLimit>,
        have_redis: bool,
    ) -> (PolicyPlan, CompiledPolicy) {
        let p = &raw.value;
        let rate = parse_rate(&p.rate.value).unwrap_or_else(|e| {
            self.error(p.rate.pos, format!("`rate`: {e}"));
            Rate {
                count: 1,
                period: Duration::from_secs(1),
            }
        });
        let burst = match &p.burst {
            None => rate.count,
            Some(b) if b.value == 0 => {
                self.error(b.pos, "`burst` must be at least 1");
                1
            }
            Some(b) => b.value,
        };
        let mut alternatives = Vec::new();
        for alt in p.key.value.names() {
            match parse_alternative(alt) {
                Ok(parts) => alternatives.push(parts),
                Err(e) => self.error(p.key.pos, format!("`key`: {e}")),
            }
        }
        if p.key.value.names().is_empty() {
            self.error(
                p.key.pos,
                "`key` needs at least one source, e.g. `client_ip`",
            );
        }
        let store = p.store.as_ref().map_or(LimitStore::Memory, |s| s.value);
        if let Some(s) = &p.store
            && s.value == LimitStore::Redis
            && !have_redis
        {
            self.error(
                s.pos,
                format!("policy `{name}` uses `store: redis` but there is no top-level `redis: {{ url: ... }}`"),
            );
        }
        if let Some(o) = &p.on_redis_error
            && store != LimitStore::Redis
        {
            self.error(o.pos, "`on_redis_error` only applies to `store: redis`");
        }
        let mut allow_ips = Vec::new();
        let mut allow_keys = Vec::new();
        if let Some(allow) = &p.allow {
            for ip in &allow.ips {
                let text = ip.value.trim();
                match text
                    .parse::<IpNet>()
                    .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
                {
                    Ok(n) => allow_ips.push(n.trunc()),
                    Err(_) => self.error(
                        ip.pos,
                        format!(
                            "`allow.ips`: `{text}` is not an address or CIDR like `10.0.0.0/8`"
                        ),
                    ),
                }
            }
            allow_keys = allow.keys.iter().map(|k| k.value.clone()).collect();
        }
        let plan = PolicyPlan {
            name: name.to_string(),
            key_text: p.key.value.names().join(" else "),
            rate,
            burst,
            store,
            on_redis_error: p
                .on_redis_error
                .as_ref()
                .map_or(OnRedisError::Local, |o| o.value),
            allow_ips,
            allow_keys,
        };
        let compiled = CompiledPolicy {
            pos: raw.pos,
            key: alternatives,
        };
        (plan, compiled)
    }

    /// Resolves a route's `rate_limit:` names and binds their keys to the
    /// route's path parameters.
    pub(super) fn route_limits(
        &mut self,
        raw: &Option<Sp<OneOrMany>>,
        params: &[String],
        policies: &LimitsPlan,
    ) -> Option<RouteLimits> {
        let raw = raw.as_ref()?;
        let mut bound: Vec<RouteLimit> = Vec::new();
        for name in raw.value.names() {
            let Some(id) = policies.policies.iter().position(|p| p.name == name) else {
                let known = if policies.policies.is_empty() {
                    "none are declared under `rate_limits`".to_string()
                } else {
                    let names: Vec<&str> =
                        policies.policies.iter().map(|p| p.name.as_str()).collect();
                    format!("declared: {}", names.join(", "))
                };
                self.error(
                    raw.pos,
                    format!("unknown rate limit policy `{name}` ({known})"),
                );
                continue;
            };
            if bound.iter().any(|b| b.policy == id) {
                self.error(raw.pos, format!("policy `{name}` is listed twice"));
                continue;
            }
            self.used_policies.push(id);
            let mut key = Vec::new();
            for alt in &self.policies[id].key {
                let mut parts = Vec::new();
                for source in alt {
                    parts.push(match source {
                        KeySource::ClientIp => KeyPart::ClientIp,
                        KeySource::Global => KeyPart::Global,
                        KeySource::Header(h) => KeyPart::Header(h.clone()),
                        KeySource::Path(p) => match params.iter().position(|x| x == p) {
                            Some(i) => KeyPart::Path(i),
                            None => {
                                self.errors.push(super::Diagnostic::new(
                                    raw.pos,
                                    format!(
                                        "policy `{name}` keys on `path:{p}`, but this route's path has no `{{{p}}}`"
                                    ),
                                ));
                                KeyPart::Global
                            }
                        },
                    });
                }
                key.push(parts);
            }
            bound.push(RouteLimit { policy: id, key });
        }
        if bound.is_empty() {
            return None;
        }
        let mut header = String::new();
        for (i, b) in bound.iter().enumerate() {
            let p = &policies.policies[b.policy];
            if i > 0 {
                header.push_str(", ");
            }
            let _ = write!(
                header,
                "\"{}\";q={};w={}",
                p.name,
                p.rate.count,
                p.rate.period.as_secs()
            );
        }
        let policy_header = HeaderValue::from_str(&header).ok()?;
        Some(RouteLimits {
            policies: bound,
            policy_header,
        })
    }

    /// Warns about policies no route uses.
    pub(super) fn warn_unused_policies(&mut self, policies: &LimitsPlan) {
        for (id, p) in policies.policies.iter().enumerate() {
            if !self.used_policies.contains(&id) {
                let pos = self.policies[id].pos;
                self.warn(
                    pos,
                    format!(
                        "rate limit policy `{}` is not used by any route (add `rate_limit: {}` to a route)",
                        p.name, p.name
                    ),
                );
            }
        }
    }
}

/// `explain`'s line per rate limit policy of a route, before its call graph:
/// `rate limit per_client: 100/1m, burst 20, memory; key header:x-api-key, client_ip`.
pub(super) fn explain(plan: &super::Plan, route: &super::RoutePlan, out: &mut String) {
    let Some(limits) = &route.rate_limits else {
        return;
    };
    for bound in &limits.policies {
        let p = &plan.limits.policies[bound.policy];
        let store = match (p.store, p.on_redis_error) {
            (LimitStore::Memory, _) => "in-process".to_string(),
            (LimitStore::Redis, OnRedisError::Local) => {
                "redis (in-process while redis fails)".to_string()
            }
            (LimitStore::Redis, OnRedisError::FailOpen) => {
                "redis (open while redis fails)".to_string()
            }
            (LimitStore::Redis, OnRedisError::FailClosed) => {
                "redis (503 while redis fails)".to_string()
            }
        };
        let _ = writeln!(
            out,
            "rate limit {}: {}/{}s, burst {}, {store}; key {}",
            p.name,
            p.rate.count,
            p.rate.period.as_secs(),
            p.burst,
            p.key_text
        );
    }
}

/// `100/1m`, `10/1s`, `5/m`: a count and a whole number of seconds.
fn parse_rate(text: &str) -> Result<Rate, String> {
    let hint = "write it like `100/1m` or `10/1s`";
    let Some((count, period)) = text.trim().split_once('/') else {
        return Err(format!("`{text}` is not a rate; {hint}"));
    };
    let count: u64 = match count.trim().parse() {
        Ok(n) if n > 0 => n,
        _ => {
            return Err(format!(
                "`{text}`: the count must be a whole number above 0; {hint}"
            ));
        }
    };
    let period = period.trim();
    let period_text = if period.starts_with(|c: char| c.is_ascii_digit()) {
        period.to_string()
    } else {
        format!("1{period}")
    };
    let period = humantime::parse_duration(&period_text)
        .map_err(|e| format!("`{text}`: `{period}` is not a period ({e}); {hint}"))?;
    if period.is_zero() || period.subsec_nanos() != 0 {
        return Err(format!(
            "`{text}`: the period must be a whole number of seconds, at least `1s`"
        ));
    }
    if count > 1_000_000_000 * period.as_secs() {
        return Err(format!(
            "`{text}`: more than 10^9 per second is not a limit"
        ));
    }
    Ok(Rate { count, period })
}

/// One alternative: parts joined with `+`.
fn parse_alternative(text: &str) -> Result<Vec<KeySource>, String> {
    let mut parts = Vec::new();
    for part in text.split('+') {
        let part = part.trim();
        let source = match part.split_once(':') {
            None if part == "client_ip" => KeySource::ClientIp,
            None if part == "global" => KeySource::Global,
            Some(("header", h)) => {
                let h = h.trim().to_ascii_lowercase();
                match HeaderName::from_bytes(h.as_bytes()) {
                    Ok(n) => KeySource::Header(n),
                    Err(_) => return Err(format!("`{h}` is not a header name")),
                }
            }
            Some(("path", p)) if is_identifier(p.trim(), false) => {
                KeySource::Path(p.trim().to_string())
            }
            _ => {
                return Err(format!(
                    "`{part}` is not a key source; use `client_ip`, `header:NAME`, `path:NAME` or `global` (combine with `+`, list alternatives)"
                ));
            }
        };
        if parts.contains(&source) {
            return Err(format!("`{part}` appears twice in `{text}`"));
        }
        parts.push(source);
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_or_without_a_period_count() {
        let r = parse_rate("100/1m").unwrap();
        assert_eq!((r.count, r.period), (100, Duration::from_secs(60)));
        let r = parse_rate("10/s").unwrap();
        assert_eq!((r.count, r.period), (10, Duration::from_secs(1)));
        let r = parse_rate(" 5 / 10s ").unwrap();
        assert_eq!((r.count, r.period), (5, Duration::from_secs(10)));
        assert!(parse_rate("100").is_err());
        assert!(parse_rate("0/1s").is_err());
        assert!(parse_rate("10/500ms").is_err());
        assert!(parse_rate("10/fortnight").is_err());
    }

    #[test]
    fn keys_parse_composites() {
        assert_eq!(
            parse_alternative("header:X-Tenant + path:id").unwrap(),
            vec![
                KeySource::Header(HeaderName::from_static("x-tenant")),
                KeySource::Path("id".into())
            ]
        );
        assert!(parse_alternative("cookie:x").is_err());
        assert!(parse_alternative("client_ip + client_ip").is_err());
    }
}
