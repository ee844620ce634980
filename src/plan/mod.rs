//! Raw config → compiled plan: the route table, each route's call graph with
//! parsed templates and expressions, and resolved upstreams.
//!
//! Invariant: `plan` does no I/O and nothing after it sees config text. A
//! `Plan` that exists is valid; compiling collects every error, not the first.

mod cache;
mod explain;
pub mod expr;
pub mod graph;
pub mod limit;
pub mod reads;
pub mod resilience;
pub mod shape;
pub mod telemetry;
pub mod template;
mod tls;

pub use explain::explain;
pub use resilience::{BreakerPolicy, BudgetPolicy, ListenerLimits, RetryPolicy};
pub use shape::Shape;
pub use telemetry::TelemetryPlan;
pub use tls::{install_default_provider, provider as tls_provider};

use crate::cache::policy::{CachePolicy, CacheSettings};
use crate::config::{self, OnItemError, Pos, RawCall, RawConfig, RawRoute, SizeValue, Sp};
use expr::{CallId, Expr, Root, Scope};
use http::{HeaderName, Method, StatusCode};
use indexmap::IndexMap;
use ipnet::IpNet;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;
use template::Template;

/// Default listen address: loopback, so a fresh install exposes nothing.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default admin address: loopback, metrics are not for the public.
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9901";
/// Default per-call upstream timeout: generous, routes should set tighter ones.
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// Default connect timeout: a healthy service on a LAN connects in milliseconds.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Default route deadline: an upper bound so nothing waits forever.
pub const DEFAULT_ROUTE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default upstream body cap: keeps one response from exhausting memory.
pub const DEFAULT_MAX_UPSTREAM_BODY: u64 = 8 << 20;
/// Default client body cap: aggregation requests are small.
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 1 << 20;
/// Default idle connections kept per upstream: enough for wide fan-out.
pub const DEFAULT_POOL_IDLE_PER_HOST: usize = 256;
/// Default in-flight item calls of a `for_each`: bounded so one request
/// cannot open hundreds of connections.
pub const DEFAULT_FOR_EACH_CONCURRENCY: usize = 16;

/// One finding of the compiler, at a position in the config file.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    /// Where.
    pub pos: Pos,
    /// What, in plain words.
    pub message: String,
}

impl Diagnostic {
    /// A finding at `pos`.
    pub fn new(pos: Pos, message: impl Into<String>) -> Self {
        Diagnostic {
            pos,
            message: message.into(),
        }
    }
}

/// Errors and warnings of one compile, printable as `file:line:column: …`.
#[derive(Debug, Default)]
pub struct Report {
    /// The config file's name.
    pub file: String,
    /// Problems that stop the config from loading.
    pub errors: Vec<Diagnostic>,
    /// Likely mistakes that do not.
    pub warnings: Vec<Diagnostic>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (kind, list) in [("error", &self.errors), ("warning", &self.warnings)] {
            for d in list {
                writeln!(f, "{}:{}: {kind}: {}", self.file, d.pos, d.message)?;
            }
        }
        Ok(())
    }
}

/// Why a config could not be turned into a plan.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Unreadable file or malformed YAML.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The config is well-formed but wrong; the report lists every error.
    #[error("{0}")]
    Invalid(Report),
}

/// The compiled, immutable form of a config.
#[derive(Debug)]
pub struct Plan {
    /// Listener settings.
    pub server: ServerPlan,
    /// What to record and where to send it.
    pub telemetry: TelemetryPlan,
    /// Upstreams, indexed by `UpstreamId`.
    pub upstreams: Vec<UpstreamPlan>,
    /// Routes, indexed by the router's values.
    pub routes: Vec<RoutePlan>,
    /// Cache tier settings (the Redis tier uses `limits.redis`).
    pub cache: CacheSettings,
    /// Rate limit policies and the Redis they share.
    pub limits: limit::LimitsPlan,
    router: matchit::Router<Vec<usize>>,
}

/// Index of an upstream in `Plan::upstreams`.
pub type UpstreamId = usize;

/// Listener settings.
#[derive(Debug, Clone)]
pub struct ServerPlan {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Where the admin endpoints listen.
    pub admin_listen: SocketAddr,
    /// Peers whose X-Forwarded-For is believed.
    pub trusted_proxies: Vec<IpNet>,
    /// Largest accepted client request body.
    pub max_request_body: u64,
    /// Client-side limits: header timeout and size, connections, time.
    pub limits: ListenerLimits,
    /// TLS for the listener, when it serves HTTPS.
    pub tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// Accept HTTP/2 prior knowledge on a plain listener.
    pub h2c: bool,
}

/// One upstream service.
#[derive(Debug, Clone)]
pub struct UpstreamPlan {
    /// The config name.
    pub name: String,
    /// `host:port`, also sent as `Host`.
    pub authority: http::uri::Authority,
    /// Path prefix without a trailing slash ("" for none).
    pub base_path: String,
    /// Per-call timeout.
    pub timeout: Duration,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Response body cap in bytes.
    pub max_body: u64,
    /// Idle keep-alive connections kept.
    pub pool_idle_per_host: usize,
    /// How its calls are retried (calls may override).
    pub retry: RetryPolicy,
    /// How much retrying its calls may add.
    pub budget: BudgetPolicy,
    /// Its circuit breaker, if on.
    pub breaker: Option<BreakerPolicy>,
    /// Most calls in flight at once.
    pub max_in_flight: usize,
    /// Hedging delay of idempotent calls (calls may override).
    pub hedge_after: Option<Duration>,
    /// Ask for compressed bodies.
    pub compression: bool,
    /// For https upstreams: the TLS config (roots, ALPN).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Speak HTTP/2 (ALPN over TLS, prior knowledge over http).
    pub http2: bool,
}

impl UpstreamPlan {
    /// `http://` or `https://`, for building request URLs.
    pub fn scheme_prefix(&self) -> &'static str {
        if self.tls.is_some() {
            "https://"
        } else {
            "http://"
        }
    }
}

/// One route.
#[derive(Debug)]
pub struct RoutePlan {
    /// `GET /customers/{id}/summary`: for logs, metrics and `explain`.
    pub label: String,
    /// The method; `None` matches any (proxy routes).
    pub method: Option<Method>,
    /// The path template.
    pub path: String,
    /// Path parameter names in template order; `Root::Path` indexes this.
    pub params: Vec<String>,
    /// The route deadline.
    pub timeout: Duration,
    /// What the route does.
    pub kind: RouteKind,
    /// Rate limit policies checked before the route runs.
    pub rate_limits: Option<limit::RouteLimits>,
}

/// What a route does.
#[derive(Debug)]
pub enum RouteKind {
    /// Calls upstreams and composes a JSON response.
    Aggregate(Aggregate),
    /// Passes the request through to one upstream.
    Proxy(ProxyPlan),
}

/// An aggregation route's call graph and response.
#[derive(Debug)]
pub struct Aggregate {
    /// The calls, in config order; `CallId` indexes this.
    pub calls: Vec<CallPlan>,
    /// Calls with no dependencies: they start at once.
    pub roots: Vec<CallId>,
    /// How the response body is built.
    pub respond: Respond,
    /// Status of a successful response.
    pub status: StatusCode,
    /// Caching of the whole composed response.
    pub cache: Option<Box<CachePolicy>>,
    /// By call id: what the route reads of each call's body.
    pub reads: Vec<std::sync::Arc<reads::Reads>>,
}

/// How an aggregation route builds its body.
#[derive(Debug)]
pub enum Respond {
    /// An explicit shape.
    Shape(Shape),
    /// Merge these calls' bodies at the root, first listed wins.
    Merge(Vec<CallId>),
}

/// One upstream call of a route.
#[derive(Debug)]
pub struct CallPlan {
    /// The config name.
    pub name: String,
    /// The upstream it goes to.
    pub upstream: UpstreamId,
    /// The HTTP method.
    pub method: Method,
    /// Path and query, relative to the upstream's base.
    pub url: Template,
    /// Extra headers.
    pub headers: Vec<(HeaderName, Template)>,
    /// Client headers copied to the call.
    pub forward_headers: Vec<HeaderName>,
    /// JSON request body.
    pub body: Option<Shape>,
    /// The call's own timeout (before the route deadline is applied).
    pub timeout: Duration,
    /// A failure yields null instead of failing the route.
    pub optional: bool,
    /// How the call is retried.
    pub retry: RetryPolicy,
    /// Hedging delay; only ever set on idempotent calls.
    pub hedge_after: Option<Duration>,
    /// Per-item fan-out.
    pub for_each: Option<ForEach>,
    /// Calls this one waits for.
    pub deps: Vec<CallId>,
    /// Calls waiting for this one.
    pub dependents: Vec<CallId>,
    /// Caching of this call's upstream answers.
    pub cache: Option<CachePolicy>,
}

/// Per-item fan-out settings.
#[derive(Debug)]
pub struct ForEach {
    /// The list to run over.
    pub list: Expr,
    /// Most item calls at once.
    pub concurrency: usize,
    /// What a failed item does.
    pub on_item_error: OnItemError,
}

/// A pass-through route's target.
#[derive(Debug)]
pub struct ProxyPlan {
    /// The upstream.
    pub upstream: UpstreamId,
    /// Path relative to the upstream's base; the client's query is appended.
    pub path: Template,
}

/// What a request path resolved to.
pub enum Lookup<'p, 'q> {
    /// A route, with the raw (still percent-encoded) parameter values in
    /// `RoutePlan::params` order.
    Found(&'p RoutePlan, Vec<&'q str>),
    /// The path matches a route but not with this method; the allowed methods.
    WrongMethod(Vec<String>),
    /// No route has this path.
    NotFound,
}

impl Plan {
    /// Finds the route for a method and path.
    pub fn lookup<'p, 'q>(&'p self, method: &Method, path: &'q str) -> Lookup<'p, 'q> {
        let Ok(matched) = self.router.at(path) else {
            return Lookup::NotFound;
        };
        let found = matched.value.iter().map(|&i| &self.routes[i]).find(|r| {
            r.method.as_ref().is_none_or(|m| m == method)
                || (method == Method::HEAD && r.method == Some(Method::GET))
        });
        match found {
            Some(route) => {
                let params = route
                    .params
                    .iter()
                    .map(|name| matched.params.get(name).unwrap_or(""))
                    .collect();
                Lookup::Found(route, params)
            }
            None => Lookup::WrongMethod(
                matched
                    .value
                    .iter()
                    .filter_map(|&i| self.routes[i].method.as_ref().map(|m| m.to_string()))
                    .collect(),
            ),
        }
    }

    /// Finds a route by its label (`GET /a/{id}`) or its bare path.
    pub fn route_named(&self, name: &str) -> Option<&RoutePlan> {
        let name = name.trim();
        self.routes
            .iter()
            .find(|r| r.label.eq_ignore_ascii_case(name))
            .or_else(|| self.routes.iter().find(|r| r.path == name))
    }
}

/// Reads, parses and compiles a config file.
pub fn load(path: &std::path::Path) -> Result<(Plan, Report), LoadError> {
    let (file, raw) = config::load_file(path)?;
    compile(&file, &raw)
}

/// Compiles config text (`file` names it in messages).
pub fn compile_str(file: &str, text: &str) -> Result<(Plan, Report), LoadError> {
    let raw = config::parse(file, text)?;
    compile(file, &raw)
}

/// Compiles a raw config; on success the report holds only warnings.
pub fn compile(file: &str, raw: &RawConfig) -> Result<(Plan, Report), LoadError> {
    let mut c = Compiler {
        // Files the config names (TLS) are relative to the config file.
        base_dir: std::path::Path::new(file)
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default(),
        ..Compiler::default()
    };
    for u in &raw.unknown_fields {
        c.error(u.pos, u.message());
    }
    let server = c.server(raw);
    let cache_settings = c.cache_settings(raw);
    c.cache = cache_settings.clone();
    let telemetry = c.telemetry(&raw.telemetry);
    let upstreams: Vec<UpstreamPlan> = raw
        .upstreams
        .iter()
        .filter_map(|(name, u)| c.upstream(name, u))
        .collect();
    c.upstream_names = raw.upstreams.keys().cloned().collect();
    let limits = c.rate_limits(raw);
    let mut routes = Vec::new();
    let mut by_path: IndexMap<String, (Pos, Vec<usize>)> = IndexMap::new();
    for raw_route in &raw.routes {
        if let Some(mut route) = c.route(raw_route, &upstreams) {
            route.rate_limits = c.route_limits(&raw_route.value.rate_limit, &route.params, &limits);
            // matchit treats `{a}` and `{b}` at the same place as a conflict;
            // the same template with several methods shares one entry.
            let entry = by_path
                .entry(route.path.clone())
                .or_insert_with(|| (raw_route.pos, Vec::new()));
            if let Some(&other) = entry
                .1
                .iter()
                .find(|&&i| methods_overlap(&routes[i], &route))
            {
                let other: &RoutePlan = &routes[other];
                c.error(
                    raw_route.pos,
                    format!("route `{}` is declared twice", other.label),
                );
            }
            entry.1.push(routes.len());
            routes.push(route);
        }
    }
    if raw.routes.is_empty() {
        c.warn(
            Pos { line: 1, column: 1 },
            "the config has no routes: every request will get 404",
        );
    }
    let mut router = matchit::Router::new();
    for (path, (pos, indices)) in by_path {
        if let Err(e) = router.insert(path.clone(), indices) {
            c.error(pos, format!("path `{path}` cannot be routed: {e}"));
        }
    }
    c.warn_unused_policies(&limits);
    let by_position = |a: &Diagnostic, b: &Diagnostic| {
        (a.pos.line, a.pos.column).cmp(&(b.pos.line, b.pos.column))
    };
    c.errors.sort_by(by_position);
    c.warnings.sort_by(by_position);
    let report = Report {
        file: file.to_string(),
        errors: c.errors,
        warnings: c.warnings,
    };
    match server {
        Some(server) if report.errors.is_empty() => Ok((
            Plan {
                server,
                telemetry,
                upstreams,
                routes,
                cache: cache_settings,
                limits,
                router,
            },
            report,
        )),
        _ => Err(LoadError::Invalid(report)),
    }
}

fn methods_overlap(a: &RoutePlan, b: &RoutePlan) -> bool {
    a.method.is_none() || b.method.is_none() || a.method == b.method
}

#[derive(Default)]
struct Compiler {
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
    upstream_names: Vec<String>,
    cache: CacheSettings,
    policies: Vec<limit::CompiledPolicy>,
    used_policies: Vec<limit::PolicyId>,
    base_dir: std::path::PathBuf,
}

/// Names a call cannot have: they are expression roots.
const RESERVED_CALL_NAMES: &[&str] = &["path", "query", "headers", "item"];

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
pub const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

impl Compiler {
    fn error(&mut self, pos: Pos, message: impl Into<String>) {
        self.errors.push(Diagnostic::new(pos, message));
    }
    fn warn(&mut self, pos: Pos, message: impl Into<String>) {
        self.warnings.push(Diagnostic::new(pos, message));
    }

    fn duration(&mut self, raw: &Option<Sp<String>>, field: &str, default: Duration) -> Duration {
        let Some(raw) = raw else { return default };
        match humantime::parse_duration(raw.value.trim()) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.error(raw.pos, format!("`{field}` must be greater than zero"));
                default
            }
            Err(e) => {
                self.error(
                    raw.pos,
                    format!(
                        "`{field}`: `{}` is not a duration ({e}); write e.g. `300ms`, `2s`, `1m`",
                        raw.value
                    ),
                );
                default
            }
        }
    }

    fn size(&mut self, raw: &Option<Sp<SizeValue>>, field: &str, default: u64) -> u64 {
        let Some(raw) = raw else { return default };
        match &raw.value {
            SizeValue::Bytes(n) => *n,
            SizeValue::Text(t) => parse_size(t).unwrap_or_else(|| {
                self.error(raw.pos, format!("`{field}`: `{t}` is not a size; write e.g. `512KiB`, `8MiB` or a number of bytes"));
                default
            }),
        }
    }

    fn address(
        &mut self,
        raw: &Option<Sp<String>>,
        field: &str,
        default: &str,
    ) -> Option<SocketAddr> {
        let Some(raw) = raw else {
            return default.parse().ok();
        };
        let parsed = raw.value.parse().ok();
        if parsed.is_none() {
            self.error(
                raw.pos,
                format!(
                    "`{field}`: `{}` is not an address like `{default}`",
                    raw.value
                ),
            );
        }
        parsed
    }

    fn server(&mut self, raw: &RawConfig) -> Option<ServerPlan> {
        let s = &raw.server;
        let listen = self.address(&s.listen, "listen", DEFAULT_LISTEN)?;
        let admin_listen = self.address(&s.admin_listen, "admin_listen", DEFAULT_ADMIN_LISTEN)?;
        let mut trusted_proxies = Vec::new();
        for p in &s.trusted_proxies {
            let text = p.value.trim();
            let net = text
                .parse::<IpNet>()
                .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from));
            match net {
                Ok(n) => trusted_proxies.push(n),
                Err(_) => self.error(
                    p.pos,
                    format!(
                        "`trusted_proxies`: `{text}` is not an address or CIDR like `10.0.0.0/8`"
                    ),
                ),
            }
        }
        // Port 0 asks the OS for a free port each, so only fixed ports can clash.
        if admin_listen == listen && listen.port() != 0 {
            let pos = s.admin_listen.as_ref().map_or(Pos::default(), |a| a.pos);
            self.error(
                pos,
                format!("`admin_listen` and `listen` are both {listen}; they need different ports"),
            );
        }
        let max_request_body = self.size(
            &s.max_request_body,
            "max_request_body",
            DEFAULT_MAX_REQUEST_BODY,
        );
        let limits = self.listener_limits(s);
        let base = self.base_dir.clone();
        let tls = self.server_tls(&s.tls, &base);
        Some(ServerPlan {
            listen,
            admin_listen,
            trusted_proxies,
            max_request_body,
            limits,
            tls,
            h2c: s.h2c.as_ref().is_none_or(|h| h.value),
        })
    }

    fn upstream(&mut self, name: &str, raw: &Sp<config::RawUpstream>) -> Option<UpstreamPlan> {
        let u = &raw.value;
        if !is_identifier(name, true) {
            self.error(
                raw.pos,
                format!(
                    "upstream name `{name}` may only contain ASCII letters, digits, `_` and `-`"
                ),
            );
        }
        let timeout = self.duration(&u.timeout, "timeout", DEFAULT_UPSTREAM_TIMEOUT);
        let connect_timeout = self.duration(
            &u.connect_timeout,
            "connect_timeout",
            DEFAULT_CONNECT_TIMEOUT,
        );
        let max_body = self.size(&u.max_body, "max_body", DEFAULT_MAX_UPSTREAM_BODY);
        let (retry, budget) = self.upstream_retry(&u.retry);
        let breaker = self.breaker(&u.breaker);
        let max_in_flight = match &u.max_in_flight {
            Some(n) if n.value == 0 => {
                self.error(n.pos, "`max_in_flight` must be at least 1");
                1
            }
            Some(n) => n.value,
            None => resilience::DEFAULT_MAX_IN_FLIGHT,
        };
        let hedge_after = self.hedge_after(&u.hedge_after, None);
        let uri = match u.url.value.parse::<http::Uri>() {
            Ok(uri) => uri,
            Err(e) => {
                self.error(
                    u.url.pos,
                    format!("upstream `{name}`: `{}` is not a URL ({e})", u.url.value),
                );
                return None;
            }
        };
        let http2 = u.http2.as_ref().is_some_and(|h| h.value);
        let base = self.base_dir.clone();
        let tls = match uri.scheme_str() {
            Some("http") => {
                if let Some(ca) = &u.ca {
                    self.error(
                        ca.pos,
                        format!("upstream `{name}`: `ca` is for https:// upstreams"),
                    );
                }
                None
            }
            Some("https") => Some(self.upstream_tls(name, &u.ca, u.url.pos, &base)?),
            _ => {
                self.error(
                    u.url.pos,
                    format!(
                        "upstream `{name}`: the URL must start with `http://` or `https://`, not `{}`",
                        u.url.value
                    ),
                );
                return None;
            }
        };
        let Some(authority) = uri.authority().cloned() else {
            self.error(u.url.pos, format!("upstream `{name}`: the URL has no host"));
            return None;
        };
        if uri.query().is_some() {
            self.error(
                u.url.pos,
                format!("upstream `{name}`: the base URL cannot have a query"),
            );
        }
        Some(UpstreamPlan {
            name: name.to_string(),
            authority,
            base_path: uri.path().trim_end_matches('/').to_string(),
            timeout,
            connect_timeout,
            max_body,
            pool_idle_per_host: u.pool_idle_per_host.unwrap_or(DEFAULT_POOL_IDLE_PER_HOST),
            retry,
            budget,
            breaker,
            max_in_flight,
            hedge_after,
            compression: u.compression.as_ref().is_some_and(|c| c.value),
            tls,
            http2,
        })
    }

    fn upstream_id(&mut self, name: &str, pos: Pos) -> Option<UpstreamId> {
        let id = self.upstream_names.iter().position(|n| n == name);
        if id.is_none() {
            let known = if self.upstream_names.is_empty() {
                "none are declared".to_string()
            } else {
                format!("declared: {}", self.upstream_names.join(", "))
            };
            self.error(pos, format!("unknown upstream `{name}` ({known})"));
        }
        id
    }

    fn route(&mut self, raw: &Sp<RawRoute>, upstreams: &[UpstreamPlan]) -> Option<RoutePlan> {
        let r = &raw.value;
        let methods = [
            (&r.get, Some(Method::GET)),
            (&r.post, Some(Method::POST)),
            (&r.put, Some(Method::PUT)),
            (&r.patch, Some(Method::PATCH)),
            (&r.delete, Some(Method::DELETE)),
            (&r.any, None),
        ];
        let mut declared = methods
            .iter()
            .filter_map(|(p, m)| p.as_ref().map(|p| (p, m.clone())));
        let Some((path, method)) = declared.next() else {
            self.error(
                raw.pos,
                "a route needs a method and path, e.g. `get: /customers/{id}`",
            );
            return None;
        };
        if let Some((other, _)) = declared.next() {
            self.error(
                other.pos,
                "a route has exactly one method key; declare another route for another method",
            );
        }
        let params = self.path_params(path)?;
        let label = match &method {
            Some(m) => format!("{m} {}", path.value),
            None => format!("ANY {}", path.value),
        };
        let timeout = self.duration(&r.timeout, "timeout", DEFAULT_ROUTE_TIMEOUT);
        let forward = self.header_list(&r.forward_headers);
        let kind = if let Some(target) = &r.proxy {
            if !r.calls.is_empty() || r.respond.is_some() || r.merge.is_some() || r.status.is_some()
            {
                self.error(
                    target.pos,
                    "a `proxy` route has no `calls`, `respond`, `merge` or `status`",
                );
            }
            if !r.forward_headers.is_empty() {
                self.error(target.pos, "a `proxy` route forwards all end-to-end headers; `forward_headers` does not apply");
            }
            if let Some(c) = &r.cache {
                self.error(c.pos, "a `proxy` route streams and is not cached; cache an aggregation route or its calls");
            }
            RouteKind::Proxy(self.proxy(target, &params)?)
        } else {
            if method.is_none() {
                self.error(path.pos, "`any:` is only for `proxy` routes");
            }
            if r.calls.is_empty() {
                self.error(
                    raw.pos,
                    "a route needs `calls` (with `respond` or `merge`) or a `proxy`",
                );
                return None;
            }
            let Some(mut agg) = self.aggregate(r, raw.pos, &params, &forward, timeout, upstreams)
            else {
                // Still check the policy, so one `check` reports its errors too.
                if let Some(raw_cache) = &r.cache {
                    let names: Vec<String> = r.calls.keys().cloned().collect();
                    self.check_route_cache(raw_cache, &label, &params, &names);
                }
                return None;
            };
            if let Some(raw_cache) = &r.cache {
                let names: Vec<String> = agg.calls.iter().map(|c| c.name.clone()).collect();
                let scope = RouteScope {
                    params: &params,
                    calls: &names,
                    item: false,
                    errors: false,
                };
                agg.cache = self
                    .route_cache(raw_cache, &label, method.as_ref(), &agg, &scope)
                    .map(Box::new);
            }
            // Last: the route cache's tags read bodies too.
            agg.reads = reads::body_reads(&agg)
                .into_iter()
                .map(std::sync::Arc::new)
                .collect();
            RouteKind::Aggregate(agg)
        };
        Some(RoutePlan {
            label,
            method,
            path: path.value.clone(),
            params,
            timeout,
            kind,
            rate_limits: None,
        })
    }

    /// Parameter names of a path template; `{*rest}` only at the end.
    fn path_params(&mut self, path: &Sp<String>) -> Option<Vec<String>> {
        let p = &path.value;
        if !p.starts_with('/') {
            self.error(
                path.pos,
                format!("a route path must start with `/`, not `{p}`"),
            );
            return None;
        }
        let mut params = Vec::new();
        let segments: Vec<&str> = p.split('/').collect();
        for (i, seg) in segments.iter().enumerate() {
            let Some(inner) = seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')) else {
                if seg.contains(['{', '}']) {
                    self.error(
                        path.pos,
                        format!("`{seg}`: a parameter must be a whole segment, like `{{id}}`"),
                    );
                    return None;
                }
                continue;
            };
            let (name, catch_all) = match inner.strip_prefix('*') {
                Some(n) => (n, true),
                None => (inner, false),
            };
            if catch_all && i + 1 != segments.len() {
                self.error(
                    path.pos,
                    format!("`{{*{name}}}` must be the last segment of the path"),
                );
                return None;
            }
            if !is_identifier(name, false) {
                self.error(
                    path.pos,
                    format!("`{name}` is not a parameter name (letters, digits, `_`)"),
                );
                return None;
            }
            if params.iter().any(|p| p == name) {
                self.error(path.pos, format!("parameter `{name}` appears twice"));
                return None;
            }
            params.push(name.to_string());
        }
        Some(params)
    }

    fn header_list(&mut self, raw: &[Sp<String>]) -> Vec<HeaderName> {
        let mut out = Vec::new();
        for h in raw {
            let name = h.value.trim().to_ascii_lowercase();
            match HeaderName::from_bytes(name.as_bytes()) {
                Ok(_)
                    if HOP_BY_HOP.contains(&name.as_str())
                        || name == "host"
                        || name == "content-length" =>
                {
                    self.error(
                        h.pos,
                        format!("`{name}` describes one connection and is never forwarded"),
                    )
                }
                Ok(n) => out.push(n),
                Err(_) => self.error(h.pos, format!("`{}` is not a header name", h.value)),
            }
        }
        out
    }

    fn proxy(&mut self, target: &Sp<String>, params: &[String]) -> Option<ProxyPlan> {
        let (name, url) = match template::split_target(&target.value) {
            Ok(t) => t,
            Err(e) => {
                self.error(target.pos, e);
                return None;
            }
        };
        let upstream = self.upstream_id(name, target.pos)?;
        let scope = RouteScope {
            params,
            calls: &[],
            item: false,
            errors: false,
        };
        let catch_all = params
            .len()
            .checked_sub(1)
            .filter(|_| target_has_catch_all(&target.value, params));
        let path = match template::parse_url(url, &scope, catch_all) {
            Ok(t) => t,
            Err(e) => {
                self.error(target.pos, e);
                return None;
            }
        };
        if url.contains('?') {
            self.error(
                target.pos,
                "a proxy target has no query: the client's query is passed through",
            );
        }
        Some(ProxyPlan { upstream, path })
    }

    fn aggregate(
        &mut self,
        r: &RawRoute,
        route_pos: Pos,
        params: &[String],
        route_forward: &[HeaderName],
        deadline: Duration,
        upstreams: &[UpstreamPlan],
    ) -> Option<Aggregate> {
        let names: Vec<String> = r.calls.keys().cloned().collect();
        let errors_before = self.errors.len();
        for (name, call) in &r.calls {
            if !is_identifier(name, false) || name.starts_with(|c: char| c.is_ascii_digit()) {
                self.error(
                    call.pos,
                    format!("call name `{name}` must be lower-case ASCII letters, digits and `_`, not starting with a digit"),
                );
            } else if RESERVED_CALL_NAMES.contains(&name.as_str()) {
                self.error(
                    call.pos,
                    format!(
                        "`{name}` is reserved (it is an expression root); name the call differently"
                    ),
                );
            }
        }
        let list_calls: Vec<bool> = r
            .calls
            .values()
            .map(|c| c.value.for_each.is_some())
            .collect();
        let compiled: Vec<Option<CallPlan>> = r
            .calls
            .iter()
            .map(|(name, raw_call)| {
                let ctx = CallContext {
                    params,
                    names: &names,
                    list_calls: &list_calls,
                    route_forward,
                    upstreams,
                };
                self.call(name, raw_call, &ctx)
            })
            .collect();
        // Cycles are looked for even when some calls have errors, so one
        // `check` run reports everything it can.
        let deps: Vec<Vec<CallId>> = compiled
            .iter()
            .map(|c| c.as_ref().map(|c| c.deps.clone()).unwrap_or_default())
            .collect();
        if let Some(cycle) = graph::find_cycle(&deps) {
            let path: Vec<&str> = cycle.iter().map(|&i| names[i].as_str()).collect();
            self.error(
                r.calls[cycle[0]].pos,
                format!("dependency cycle: {}", path.join(" → ")),
            );
            return None;
        }
        if self.errors.len() > errors_before {
            return None;
        }
        let mut calls = compiled.into_iter().collect::<Option<Vec<CallPlan>>>()?;
        for (i, ds) in graph::dependents(&deps).into_iter().enumerate() {
            calls[i].dependents = ds;
        }
        self.warn_about_graph(r, route_pos, &calls, &names, deadline);

        let list_calls = |c: CallId| calls[c].for_each.is_some();
        let respond =
            match (&r.respond, &r.merge) {
                (Some(_), Some(m)) => {
                    self.error(
                        m.first().map(|m| m.pos).unwrap_or(route_pos),
                        "`respond` and `merge` are exclusive",
                    );
                    return None;
                }
                (Some(shape), None) => {
                    let scope = RouteScope {
                        params,
                        calls: &names,
                        item: false,
                        errors: true,
                    };
                    let mut errs = Vec::new();
                    let shape = shape::compile(shape, &scope, &mut errs);
                    self.errors.extend(errs);
                    Respond::Shape(shape)
                }
                (None, Some(merge)) => {
                    let mut ids = Vec::new();
                    for m in merge {
                        match names.iter().position(|n| *n == m.value) {
                            Some(i) if ids.contains(&i) => self
                                .error(m.pos, format!("`{}` is listed twice in `merge`", m.value)),
                            Some(i) => ids.push(i),
                            None => self
                                .error(m.pos, format!("`merge` names unknown call `{}`", m.value)),
                        }
                    }
                    Respond::Merge(ids)
                }
                (None, None) => Respond::Shape(Shape::Map(
                    names
                        .iter()
                        .enumerate()
                        .map(|(i, n)| {
                            let e = Expr {
                                root: Root::CallBody(i),
                                steps: vec![],
                                filters: vec![],
                                text: format!("{n}.body"),
                            };
                            (n.clone(), Shape::Expr(e))
                        })
                        .collect(),
                )),
            };
        if let Respond::Shape(shape) = &respond {
            let mut bad = Vec::new();
            shape.visit_exprs(&mut |e| {
                if let (Root::CallBody(c), Some(expr::Step::Field(f))) = (&e.root, e.steps.first())
                    && list_calls(*c)
                {
                    bad.push(format!(
                        "`{}`: `{}` is a `for_each` call, its body is a list; did you mean `{}.body[*].{f}`?",
                        e.text, names[*c], names[*c]
                    ));
                }
            });
            if let Some(pos) = r.respond.as_ref().map(|s| s.pos) {
                bad.into_iter().for_each(|m| self.warn(pos, m));
            }
        }
        let status = match &r.status {
            None => StatusCode::OK,
            Some(s) => match StatusCode::from_u16(s.value) {
                Ok(st) if st.is_success() => st,
                _ => {
                    self.error(
                        s.pos,
                        format!("`status` must be a 2xx status, not {}", s.value),
                    );
                    StatusCode::OK
                }
            },
        };
        let roots = calls
            .iter()
            .enumerate()
            .filter(|(_, c)| c.deps.is_empty())
            .map(|(i, _)| i)
            .collect();
        Some(Aggregate {
            calls,
            roots,
            respond,
            status,
            cache: None,
            reads: Vec::new(),
        })
    }

    fn warn_about_graph(
        &mut self,
        r: &RawRoute,
        route_pos: Pos,
        calls: &[CallPlan],
        names: &[String],
        deadline: Duration,
    ) {
        let deps: Vec<Vec<CallId>> = calls.iter().map(|c| c.deps.clone()).collect();
        let (path, worst) = graph::critical_path(&deps, &|i| calls[i].timeout);
        if worst > deadline && path.len() > 1 {
            let chain: Vec<&str> = path.iter().map(|&i| names[i].as_str()).collect();
            self.warn(
                r.timeout.as_ref().map(|t| t.pos).unwrap_or(route_pos),
                format!(
                    "the call chain {} may take up to {} by its timeouts, longer than the route deadline of {}; later calls get only what is left",
                    chain.join(" → "),
                    humantime::format_duration(worst),
                    humantime::format_duration(deadline)
                ),
            );
        }
        for (name, raw) in &r.calls {
            if raw.value.for_each.is_some() && raw.value.concurrency.is_none() {
                self.warn(
                    raw.pos,
                    format!(
                        "`{name}` fans out per item without `concurrency`; at most {DEFAULT_FOR_EACH_CONCURRENCY} item calls run at once"
                    ),
                );
            }
        }
    }

    fn call(&mut self, name: &str, raw: &Sp<RawCall>, ctx: &CallContext) -> Option<CallPlan> {
        let CallContext {
            params,
            names,
            list_calls,
            route_forward,
            upstreams,
        } = *ctx;
        let c = &raw.value;
        let methods = [
            (&c.get, Method::GET),
            (&c.post, Method::POST),
            (&c.put, Method::PUT),
            (&c.patch, Method::PATCH),
            (&c.delete, Method::DELETE),
        ];
        let mut declared = methods
            .iter()
            .filter_map(|(t, m)| t.as_ref().map(|t| (t, m.clone())));
        let Some((target, method)) = declared.next() else {
            self.error(raw.pos, format!("call `{name}` needs a method and target, e.g. `get: \"orders:/orders/{{path.id}}\"`"));
            return None;
        };
        if let Some((other, _)) = declared.next() {
            self.error(
                other.pos,
                format!("call `{name}` has more than one method key"),
            );
        }
        let (upstream_name, url) = match template::split_target(&target.value) {
            Ok(t) => t,
            Err(e) => {
                self.error(target.pos, e);
                return None;
            }
        };
        let upstream = self.upstream_id(upstream_name, target.pos);
        let scope = RouteScope {
            params,
            calls: names,
            item: c.for_each.is_some(),
            errors: false,
        };
        let for_each_list = c.for_each.as_ref().and_then(|f| {
            let outer = RouteScope {
                item: false,
                ..scope
            };
            expr::parse(&f.value, &outer)
                .map_err(|e| self.error(f.pos, e))
                .ok()
        });
        let url = template::parse_url(url, &scope, None)
            .map_err(|e| self.error(target.pos, e))
            .ok();
        let mut headers = Vec::new();
        for (h, value) in &c.headers {
            let name = match HeaderName::from_bytes(h.to_ascii_lowercase().as_bytes()) {
                Ok(n)
                    if !HOP_BY_HOP.contains(&n.as_str())
                        && n != http::header::HOST
                        && n != http::header::CONTENT_LENGTH =>
                {
                    n
                }
                _ => {
                    self.error(value.pos, format!("`{h}` cannot be set on a call"));
                    continue;
                }
            };
            match template::parse_header(&value.value, &scope) {
                Ok(t) => headers.push((name, t)),
                Err(e) => self.error(value.pos, e),
            }
        }
        let mut forward_headers = route_forward.to_vec();
        for h in self.header_list(&c.forward_headers) {
            if !forward_headers.contains(&h) {
                forward_headers.push(h);
            }
        }
        let body = c.body.as_ref().map(|b| {
            let mut errs = Vec::new();
            let s = shape::compile(b, &scope, &mut errs);
            self.errors.extend(errs);
            s
        });
        if body.is_some() && method == Method::GET {
            self.error(
                target.pos,
                format!("call `{name}` is a GET and cannot have a `body`"),
            );
        }
        let upstream_timeout = upstream
            .and_then(|u| upstreams.get(u))
            .map_or(DEFAULT_UPSTREAM_TIMEOUT, |u| u.timeout);
        let timeout = match &c.timeout {
            None => upstream_timeout,
            Some(_) => self.duration(&c.timeout, "timeout", upstream_timeout),
        };
        let up_plan = upstream.and_then(|u| upstreams.get(u));
        let retry = match up_plan {
            Some(u) => self.call_retry(&c.retry, &u.retry, &method),
            None => RetryPolicy::default(),
        };
        let hedge_after = self.hedge_after(&c.hedge_after, up_plan.and_then(|u| u.hedge_after));
        if let Some(h) = &c.hedge_after
            && hedge_after.is_some()
            && !resilience::is_idempotent(&method)
        {
            self.error(
                h.pos,
                format!("a {method} call is not idempotent and cannot be hedged"),
            );
        }
        let hedge_after = hedge_after.filter(|_| resilience::is_idempotent(&method));
        let for_each = match (&c.for_each, for_each_list) {
            (Some(_), Some(list)) => Some(ForEach {
                list,
                concurrency: match &c.concurrency {
                    Some(n) if n.value == 0 => {
                        self.error(n.pos, "`concurrency` must be at least 1");
                        1
                    }
                    Some(n) => n.value,
                    None => DEFAULT_FOR_EACH_CONCURRENCY,
                },
                on_item_error: c
                    .on_item_error
                    .as_ref()
                    .map(|o| o.value)
                    .unwrap_or(OnItemError::Fail),
            }),
            (Some(_), None) => return None,
            (None, _) => {
                if let Some(x) = c
                    .concurrency
                    .as_ref()
                    .map(|x| x.pos)
                    .or(c.on_item_error.as_ref().map(|x| x.pos))
                {
                    self.error(
                        x,
                        "`concurrency` and `on_item_error` only apply to `for_each` calls",
                    );
                }
                None
            }
        };
        let url = url?;
        // Dependencies: every call any of this call's expressions reads.
        let mut deps: Vec<CallId> = Vec::new();
        let mut exprs: Vec<&Expr> = url.exprs().collect();
        exprs.extend(headers.iter().flat_map(|(_, t)| t.exprs()));
        if let Some(b) = &body {
            b.visit_exprs(&mut |e| exprs.push(e));
        }
        if let Some(f) = &for_each {
            exprs.push(&f.list);
        }
        let self_id = names.iter().position(|n| n == name);
        for e in &exprs {
            if let Some(d) = e.call_dependency()
                && !deps.contains(&d)
            {
                deps.push(d);
            }
        }
        for e in url
            .exprs()
            .chain(headers.iter().flat_map(|(_, t)| t.exprs()))
        {
            if e.yields_list(&|d| list_calls[d]) && e.split_join().is_none() {
                self.error(
                    target.pos,
                    format!(
                        "`{{{}}}` is a list; add `|join` to put it in one place",
                        e.text
                    ),
                );
            }
        }
        if self_id.is_some_and(|s| deps.contains(&s)) {
            self.error(target.pos, format!("call `{name}` refers to itself"));
            return None;
        }
        let cache = c.cache.as_ref().and_then(|raw_cache| {
            let facts = cache::CallFacts {
                name,
                method: &method,
                headers: &headers,
                forward_headers: &forward_headers,
                deps: &deps,
                scope,
            };
            self.call_cache(raw_cache, &facts)
        });
        Some(CallPlan {
            name: name.to_string(),
            upstream: upstream?,
            method,
            url,
            headers,
            forward_headers,
            body,
            timeout,
            optional: c.optional,
            retry,
            hedge_after,
            for_each,
            deps,
            dependents: Vec::new(),
            cache,
        })
    }
}

fn target_has_catch_all(target: &str, params: &[String]) -> bool {
    params
        .last()
        .is_some_and(|p| target.contains(&format!("{{path.{p}}}")))
}

/// Names for upstreams (`dash` allowed) and calls/params (no dash: they are
/// expression roots and Server-Timing names).
fn is_identifier(name: &str, dash: bool) -> bool {
    !name.is_empty()
        && name.chars().all(|c| {
            c.is_ascii_lowercase()
                || c.is_ascii_digit()
                || c == '_'
                || (dash && c == '-')
                || (dash && c.is_ascii_uppercase())
        })
}

fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..split].parse().ok()?;
    let mult = match t[split..].trim() {
        "" | "B" => 1,
        "KiB" | "KB" => 1 << 10,
        "MiB" | "MB" => 1 << 20,
        "GiB" | "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

/// What compiling one call needs to know about its route.
#[derive(Clone, Copy)]
struct CallContext<'a> {
    params: &'a [String],
    names: &'a [String],
    list_calls: &'a [bool],
    route_forward: &'a [HeaderName],
    upstreams: &'a [UpstreamPlan],
}

/// Names visible to expressions of one route.
#[derive(Clone, Copy)]
struct RouteScope<'a> {
    params: &'a [String],
    calls: &'a [String],
    item: bool,
    errors: bool,
}

impl Scope for RouteScope<'_> {
    fn path_param(&self, name: &str) -> Option<usize> {
        self.params.iter().position(|p| p == name)
    }
    fn call(&self, name: &str) -> Option<CallId> {
        self.calls.iter().position(|c| c == name)
    }
    fn has_item(&self) -> bool {
        self.item
    }
    fn has_errors(&self) -> bool {
        self.errors
    }
}
