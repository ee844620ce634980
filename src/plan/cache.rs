//! Compiling `cache:` blocks: the tier settings, the `redis` section and the
//! policies of calls and routes (see `crate::cache::policy` for the types).

use super::expr::{CallId, Expr, Root};
use super::{Aggregate, Compiler, RouteScope, template};
use crate::cache::policy::{
    ALWAYS_CREDENTIALS, CachePolicy, CacheSettings, DEFAULT_MAX_BYTES, DEFAULT_STATUSES, Level,
    Rule, Scope,
};
use crate::config::{Pos, RawCache, RawCachePolicy, RawCacheScope, RawConfig, Sp};
use http::{HeaderName, Method};
use std::sync::Arc;
use std::time::Duration;

/// What compiling a call's policy needs to know about the call.
pub(super) struct CallFacts<'a> {
    pub name: &'a str,
    pub method: &'a Method,
    pub headers: &'a [(HeaderName, template::Template)],
    pub forward_headers: &'a [HeaderName],
    pub deps: &'a [CallId],
    pub scope: RouteScope<'a>,
}

impl Compiler {
    /// The top-level `cache` section (the Redis tier uses the `redis`
    /// section, compiled with the rate limits).
    pub(super) fn cache_settings(&mut self, raw: &RawConfig) -> CacheSettings {
        let c = &raw.cache;
        let use_redis = c.redis.as_ref().is_some_and(|r| r.value);
        if let Some(r) = &c.redis
            && r.value
            && raw.redis.is_none()
        {
            self.error(
                r.pos,
                "`cache.redis` needs a Redis server: add `redis: { url: \"redis://127.0.0.1:6379\" }`",
            );
        }
        let mut credential_headers = CacheSettings::default().credential_headers;
        for h in self.header_list(&c.credential_headers) {
            if !credential_headers.contains(&h) {
                credential_headers.push(h);
            }
        }
        let max_bytes = self.size(&c.max_bytes, "max_bytes", DEFAULT_MAX_BYTES);
        if max_bytes == 0
            && let Some(m) = &c.max_bytes
        {
            self.error(m.pos, "`max_bytes` must be greater than zero");
        }
        CacheSettings {
            max_bytes,
            redis: use_redis,
            credential_headers,
        }
    }

    /// A call's `cache:` policy.
    pub(super) fn call_cache(
        &mut self,
        raw: &Sp<RawCache>,
        call: &CallFacts,
    ) -> Option<CachePolicy> {
        if *call.method != Method::GET {
            self.error(
                raw.pos,
                format!("call `{}`: only GET calls can be cached", call.name),
            );
            return None;
        }
        let item_scope = call.scope;
        let (mut policy, tag_exprs) =
            self.cache_policy(raw, Level::Call, call.name, &item_scope)?;
        for (pos, e) in tag_exprs {
            if let Some(d) = e.call_dependency()
                && !call.deps.contains(&d)
            {
                self.error(
                    pos,
                    format!(
                        "tag `{}` reads call `{}`, which `{}` does not wait for; a tag may read only the call's own inputs",
                        e.text,
                        call.scope.calls.get(d).map_or("?", String::as_str),
                        call.name
                    ),
                );
            }
        }
        let creds = &self.cache.credential_headers;
        // What the call sends decides whether its answers are per client.
        let mut carries_credentials = call.forward_headers.iter().any(|h| creds.contains(h));
        let mut client_headers = creds.clone();
        for (name, t) in call.headers {
            for e in t.exprs() {
                if let Root::Header(h) = &e.root
                    && (creds.contains(h) || is_credential(name, creds))
                {
                    carries_credentials = true;
                    if !client_headers.contains(h) {
                        client_headers.push(h.clone());
                    }
                }
            }
        }
        let mut key_headers: Vec<HeaderName> = Vec::new();
        for h in call
            .forward_headers
            .iter()
            .chain(call.headers.iter().map(|(n, _)| n))
        {
            if !is_credential(h, creds) && !key_headers.contains(h) {
                key_headers.push(h.clone());
            }
        }
        policy.key_headers = key_headers;
        policy.client_headers = client_headers;
        self.finish_scope(raw, &mut policy, carries_credentials);
        Some(policy)
    }

    /// A route's `cache:` policy (the whole composed response).
    pub(super) fn route_cache(
        &mut self,
        raw: &Sp<RawCache>,
        label: &str,
        method: Option<&Method>,
        agg: &Aggregate,
        scope: &RouteScope,
    ) -> Option<CachePolicy> {
        if method != Some(&Method::GET) {
            self.error(raw.pos, "only GET routes can be cached");
            return None;
        }
        let (mut policy, _) = self.cache_policy(raw, Level::Route, label, scope)?;
        let creds = self.cache.credential_headers.clone();
        let mut read_headers: Vec<HeaderName> = Vec::new();
        let mut query: Vec<String> = Vec::new();
        let mut carries_credentials = false;
        let mut client_headers = creds.clone();
        for h in agg.calls.iter().flat_map(|c| &c.forward_headers) {
            if creds.contains(h) {
                carries_credentials = true;
            } else if !read_headers.contains(h) {
                read_headers.push(h.clone());
            }
        }
        let mut note = |e: &Expr, into_credential: bool| match &e.root {
            Root::Header(h) => {
                if creds.contains(h) || into_credential {
                    carries_credentials = true;
                    if !client_headers.contains(h) {
                        client_headers.push(h.clone());
                    }
                } else if !read_headers.contains(h) {
                    read_headers.push(h.clone());
                }
            }
            Root::Query(q) if !query.contains(q) => query.push(q.clone()),
            _ => {}
        };
        for call in &agg.calls {
            call.url.exprs().for_each(|e| note(e, false));
            for (name, t) in &call.headers {
                let cred = is_credential(name, &creds);
                t.exprs().for_each(|e| note(e, cred));
            }
            if let Some(b) = &call.body {
                b.visit_exprs(&mut |e| note(e, false));
            }
            if let Some(f) = &call.for_each {
                note(&f.list, false);
            }
        }
        if let super::Respond::Shape(s) = &agg.respond {
            s.visit_exprs(&mut |e| note(e, false));
        }
        for t in &policy.tags {
            t.exprs().for_each(|e| note(e, false));
        }
        query.sort();
        let mut vary = vec!["accept-encoding".to_string()];
        for h in read_headers.iter().chain(&policy.vary) {
            if !vary.iter().any(|v| v == h.as_str()) {
                vary.push(h.as_str().to_string());
            }
        }
        policy.response_vary = http::HeaderValue::from_str(&vary.join(", ")).ok();
        policy.key_headers = read_headers;
        policy.key_query = query;
        policy.client_headers = client_headers;
        self.finish_scope(raw, &mut policy, carries_credentials);
        Some(policy)
    }

    /// Reports the errors of a route policy whose route did not compile.
    pub(super) fn check_route_cache(
        &mut self,
        raw: &Sp<RawCache>,
        label: &str,
        params: &[String],
        calls: &[String],
    ) {
        let scope = RouteScope {
            params,
            calls,
            item: false,
            errors: false,
        };
        let _ = self.cache_policy(raw, Level::Route, label, &scope);
    }

    /// `per_client` when credentials are forwarded, unless the policy says otherwise.
    fn finish_scope(&mut self, raw: &Sp<RawCache>, policy: &mut CachePolicy, credentials: bool) {
        let explicit = match &raw.value {
            RawCache::Policy(p) => p.scope.as_ref().map(|s| s.value),
            RawCache::Ttl(_) => None,
        };
        let scope = match explicit {
            Some(RawCacheScope::Public) => Scope::Public,
            Some(RawCacheScope::PerClient) => Scope::PerClient,
            None if credentials => Scope::PerClient,
            None => Scope::Public,
        };
        if let Some(rule) = Arc::get_mut(&mut policy.rule) {
            rule.scope = scope;
        }
    }

    /// The parts every policy has; the tag expressions come back with their
    /// positions so a call can check what they read.
    fn cache_policy(
        &mut self,
        raw: &Sp<RawCache>,
        level: Level,
        name: &str,
        scope: &RouteScope,
    ) -> Option<(CachePolicy, Vec<(Pos, Expr)>)> {
        let default = RawCachePolicy::default();
        let (p, ttl) = match &raw.value {
            RawCache::Ttl(t) => (
                &default,
                Some(Sp {
                    value: t.clone(),
                    pos: raw.pos,
                }),
            ),
            RawCache::Policy(p) => (p.as_ref(), p.ttl.clone()),
        };
        let Some(ttl_raw) = ttl else {
            self.error(
                raw.pos,
                "a cache policy needs a `ttl`, e.g. `cache: { ttl: 30s }` or `cache: 30s`",
            );
            return None;
        };
        let ttl = self.duration(&Some(ttl_raw), "ttl", Duration::from_secs(1));
        let swr = self.optional_duration(&p.stale_while_revalidate, "stale_while_revalidate");
        let sie = self.optional_duration(&p.stale_if_error, "stale_if_error");
        let vary = self.header_list(&p.vary);
        let mut tags = Vec::new();
        let mut tag_exprs = Vec::new();
        for t in &p.tags {
            match template::parse_header(&t.value, scope) {
                Ok(tpl) => {
                    tag_exprs.extend(tpl.exprs().map(|e| (t.pos, e.clone())));
                    tags.push(tpl);
                }
                Err(e) => self.error(t.pos, format!("tag `{}`: {e}", t.value)),
            }
        }
        let statuses = match &p.statuses {
            None => DEFAULT_STATUSES.to_vec(),
            Some(list) => {
                let mut out = Vec::new();
                for s in list {
                    match s.value {
                        500..=599 | 429 => self.error(
                            s.pos,
                            format!("status {} is never stored: 5xx and 429 describe a moment, not a resource", s.value),
                        ),
                        200..=499 => out.push(s.value),
                        other => self.error(
                            s.pos,
                            format!("`{other}` is not a status that can be stored (200-499)"),
                        ),
                    }
                }
                out
            }
        };
        let rule = Rule {
            level,
            name: name.into(),
            ttl,
            stale_while_revalidate: swr,
            stale_if_error: sie,
            scope: Scope::Public,
            honour_upstream: p
                .honour_upstream_cache_control
                .as_ref()
                .is_none_or(|h| h.value),
            statuses,
            events: Default::default(),
        };
        Some((
            CachePolicy {
                rule: Arc::new(rule),
                key_headers: Vec::new(),
                vary,
                key_query: Vec::new(),
                client_headers: Vec::new(),
                tags,
                response_vary: None,
            },
            tag_exprs,
        ))
    }

    /// An optional duration; absent means zero (`0s` is allowed too).
    fn optional_duration(&mut self, raw: &Option<Sp<String>>, field: &str) -> Duration {
        match raw {
            Some(r) if r.value.trim().trim_end_matches(char::is_alphabetic) == "0" => {
                Duration::ZERO
            }
            Some(_) => self.duration(raw, field, Duration::ZERO),
            None => Duration::ZERO,
        }
    }
}

fn is_credential(name: &HeaderName, creds: &[HeaderName]) -> bool {
    creds.contains(name) || ALWAYS_CREDENTIALS.contains(&name.as_str())
}
