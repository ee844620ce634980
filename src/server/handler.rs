//! One request's lifecycle: route lookup → identify the client → rate
//! limits → run the call graph (or proxy) → compose → headers.

use super::forwarded::{client_ip, forwarding};
use super::problem::{self, bad_request, call_error_json, call_failed};
use super::{Gateway, observe, proxy, timing};
use crate::cache::{self, RouteAnswer, policy::CachePolicy};
use crate::compose;
use crate::exec::eval::{Env, RequestView};
use crate::exec::{self, CallState, Execution};
use crate::limit::{self, Verdict};
use crate::plan::{Aggregate, Lookup, Respond, RouteKind, RoutePlan};
use crate::telemetry::trace::TraceContext;
use crate::telemetry::{self, CallRecord, RequestRecord};
use crate::upstream::{self, Body};
use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Map, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::SystemTime;
use tokio::time::Instant;

/// Serves one request; never fails (every error is a response). Every
/// response carries `Server-Timing`, at least with the total. Every answered
/// request ends in one `RequestRecord` (metrics, access log, spans).
pub async fn handle(gw: &Arc<Gateway>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let started = Instant::now();
    let started_at = SystemTime::now();
    let _in_flight = InFlight::enter(gw.telemetry.metrics());
    let method = method_label(req.method());
    let trace = gw
        .telemetry
        .tracing()
        .then(|| TraceContext::from_headers(req.headers()));
    let path = req.uri().path().to_string();
    let mut calls = Vec::new();
    let ctx = RequestContext {
        peer,
        started,
        trace: trace.as_ref(),
        gateway: gw,
    };
    let (mut resp, route) = route_request(gw, req, &path, &ctx, &mut calls).await;
    let duration = started.elapsed();
    if !resp.headers().contains_key(SERVER_TIMING) {
        resp.headers_mut()
            .insert(SERVER_TIMING, timing::total_only(duration));
    }
    gw.telemetry.request_finished(&RequestRecord {
        started_at,
        method,
        path: &path,
        route,
        status: resp.status().as_u16(),
        duration,
        client: peer.ip(),
        trace,
        calls,
        cache: resp.extensions().get::<cache::RouteOutcome>().map(|o| o.0),
        limiter: None,
    });
    resp
}

/// What every step of one request may need to know about it.
pub struct RequestContext<'a> {
    /// The client's address.
    pub peer: SocketAddr,
    /// When the request arrived.
    pub started: Instant,
    /// Its trace, when tracing is on.
    pub trace: Option<&'a TraceContext>,
    /// The gateway, shared: a cached route's computation may outlive the
    /// request that started it (other requests wait for it).
    pub gateway: &'a Arc<Gateway>,
}

/// Counts a request in flight until dropped (also when the client goes away
/// and the request's future is dropped).
struct InFlight(bool);
impl InFlight {
    fn enter(counted: bool) -> Self {
        if counted {
            telemetry::in_flight(1.0);
        }
        InFlight(counted)
    }
}
impl Drop for InFlight {
    fn drop(&mut self) {
        if self.0 {
            telemetry::in_flight(-1.0);
        }
    }
}

/// The answer to a request every route refuses, if it is one: a well-formed host (RFC 9112 §3.2:
/// HTTP/1.1 requires exactly one valid `Host`) and a declared body size
/// within `max_request_body`.
fn rejection(gw: &Gateway, req: &Request<Incoming>) -> Option<Response<Body>> {
    // CONNECT would tunnel and TRACE reflects credentials (cross-site tracing):
    // neither belongs behind an aggregation gateway, not even on `any:` routes.
    if req.method() == http::Method::CONNECT || req.method() == http::Method::TRACE {
        return Some(problem::problem(
            StatusCode::METHOD_NOT_ALLOWED,
            "Method not allowed",
            format!("{} is never forwarded", req.method()),
            Map::new(),
        ));
    }
    if req.uri().authority().is_none() {
        let hosts = req.headers().get_all(header::HOST);
        let mut iter = hosts.iter();
        match (iter.next(), iter.next()) {
            (None, None) if req.version() == http::Version::HTTP_11 => {
                return Some(bad_request(
                    "an HTTP/1.1 request needs a Host header".into(),
                ));
            }
            (Some(h), None) => {
                let valid = h
                    .to_str()
                    .ok()
                    .and_then(|t| t.parse::<http::uri::Authority>().ok())
                    .is_some();
                if !valid {
                    return Some(bad_request("the Host header is not a valid host".into()));
                }
            }
            (Some(_), Some(_)) => return Some(bad_request("more than one Host header".into())),
            _ => {}
        }
    }
    let max = gw.plan.server.max_request_body;
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Some(problem::problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request body too large",
            format!("the request body is larger than {max} bytes"),
            Map::new(),
        ));
    }
    None
}

/// Standard methods by name, anything else as `OTHER` (bounded labels).
pub fn method_label(m: &http::Method) -> &'static str {
    use http::Method as M;
    match *m {
        M::GET => "GET",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::HEAD => "HEAD",
        M::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

const SERVER_TIMING: &str = "server-timing";

/// Answers a request; also returns the route label for metrics.
async fn route_request<'g>(
    gw: &'g Gateway,
    req: Request<Incoming>,
    path: &str,
    ctx: &RequestContext<'_>,
    calls: &mut Vec<CallRecord<'g>>,
) -> (Response<Body>, &'g str) {
    let (route, raw_params) = match gw.plan.lookup(req.method(), path) {
        Lookup::Found(route, params) => (route, params),
        Lookup::NotFound => {
            let resp = problem::problem(
                StatusCode::NOT_FOUND,
                "Not found",
                format!("no route matches {path}"),
                Map::new(),
            );
            return (resp, telemetry::UNMATCHED_ROUTE);
        }
        Lookup::WrongMethod(allowed) => {
            let mut resp = problem::problem(
                StatusCode::METHOD_NOT_ALLOWED,
                "Method not allowed",
                format!(
                    "{} is not allowed on {path}; allowed: {}",
                    req.method(),
                    allowed.join(", ")
                ),
                Map::new(),
            );
            if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                resp.headers_mut().insert(header::ALLOW, v);
            }
            return (resp, telemetry::UNMATCHED_ROUTE);
        }
    };
    let resp = serve_route(gw, route, raw_params, req, ctx, calls).await;
    (resp, &route.label)
}

/// Checks the route's rate limits, then runs it if they admit. Limited
/// routes answer with `RateLimit-Policy` and `RateLimit` either way.
async fn serve_route<'g>(
    gw: &'g Gateway,
    route: &'g RoutePlan,
    raw_params: Vec<&str>,
    req: Request<Incoming>,
    ctx: &RequestContext<'_>,
    calls: &mut Vec<CallRecord<'g>>,
) -> Response<Body> {
    if let Some(resp) = rejection(gw, &req) {
        return resp;
    }
    let Some(limits) = &route.rate_limits else {
        return dispatch(gw, route, raw_params, req, ctx, calls).await;
    };
    let decision = {
        let client = client_ip(
            req.headers(),
            ctx.peer.ip(),
            &gw.plan.server.trusted_proxies,
        );
        let view = limit::RequestView {
            headers: req.headers(),
            params: &raw_params,
            client,
        };
        gw.limiter.check(limits, &view).await
    };
    let mut resp = match &decision.verdict {
        Verdict::Admit => dispatch(gw, route, raw_params, req, ctx, calls).await,
        Verdict::Limited {
            retry_after,
            violated,
        } => problem::rate_limited(*retry_after, violated),
        Verdict::Unavailable { policies } => problem::limiter_unavailable(policies),
    };
    let h = resp.headers_mut();
    h.insert("ratelimit-policy", decision.policy_header);
    if let Some(v) = decision.limit_header {
        h.insert("ratelimit", v);
    }
    if let Some(t) = decision.redis_time {
        if !h.contains_key(SERVER_TIMING) {
            h.insert(SERVER_TIMING, timing::total_only(ctx.started.elapsed()));
        }
        h.append(SERVER_TIMING, timing::ratelimit(t.took, t.answered));
    }
    resp
}

/// Runs an admitted request: the proxy, or the call graph and composer.
async fn dispatch<'g>(
    gw: &'g Gateway,
    route: &'g RoutePlan,
    raw_params: Vec<&str>,
    req: Request<Incoming>,
    ctx: &RequestContext<'_>,
    calls: &mut Vec<CallRecord<'g>>,
) -> Response<Body> {
    // A cache hit needs neither the forwarding headers nor the (large)
    // futures of the call graph: it is answered first, from a small future.
    if let RouteKind::Aggregate(agg) = &route.kind
        && let Some(policy) = &agg.cache
    {
        return cached_route(route, policy, &raw_params, req, ctx).await;
    }
    let fwd = request_forwarding(gw, &req, ctx.peer);
    match &route.kind {
        RouteKind::Proxy(p) => {
            let forwarded = proxy::forward(gw, route, p, &raw_params, req, &fwd, ctx, calls);
            let mut resp = Box::pin(forwarded).await;
            // The upstream's own Server-Timing passes through; ours is added.
            let ours = timing::proxy(ctx.started.elapsed());
            resp.headers_mut().append(SERVER_TIMING, ours);
            resp
        }
        RouteKind::Aggregate(agg) => {
            let (query, headers) = (req.uri().query(), req.headers());
            let run = run_aggregate(
                gw,
                route,
                agg,
                &raw_params,
                query,
                headers,
                &fwd,
                ctx,
                calls,
            );
            Box::pin(run).await
        }
    }
}

/// `X-Forwarded-*` for the upstream requests of `req`.
fn request_forwarding(
    gw: &Gateway,
    req: &Request<Incoming>,
    peer: SocketAddr,
) -> crate::exec::render::Forwarding {
    let host = req
        .uri()
        .authority()
        .and_then(|a| HeaderValue::from_str(a.as_str()).ok());
    forwarding(
        req.headers(),
        host.as_ref().or(req.headers().get(header::HOST)),
        peer.ip(),
        &gw.plan.server.trusted_proxies,
        "http",
    )
}

/// A route with a `cache:` policy: the cache answers, and runs the route
/// only when this request leads the fetch of a missing or stale entry. That
/// run owns what it needs (other requests may wait for it after this one
/// has gone), so its calls are not in this request's records.
async fn cached_route(
    route: &RoutePlan,
    policy: &CachePolicy,
    raw_params: &[&str],
    req: Request<Incoming>,
    ctx: &RequestContext<'_>,
) -> Response<Body> {
    let gw = ctx.gateway;
    let headers = req.headers();
    let gzip = cache::accepts_gzip(headers);
    let key = cache::key::route_key(req.uri().path(), req.uri().query(), headers, gzip, policy);
    let no_store = cache::freshness::request_forbids_store(headers);
    let (peer, trace) = (ctx.peer, ctx.trace.copied());
    let compute = || -> BoxFuture<'static, RouteAnswer> {
        let gw = gw.clone();
        let index = gw.plan.routes.iter().position(|r| std::ptr::eq(r, route));
        let params: Vec<String> = raw_params.iter().map(|p| p.to_string()).collect();
        Box::pin(async move {
            let route = index.map(|i| &gw.plan.routes[i]);
            let Some((route, RouteKind::Aggregate(agg))) = route.map(|r| (r, &r.kind)) else {
                return RouteAnswer::from_response(bad_request("route not found".into())).await;
            };
            let raw: Vec<&str> = params.iter().map(String::as_str).collect();
            let fwd = request_forwarding(&gw, &req, peer);
            let ctx = RequestContext {
                peer,
                started: Instant::now(),
                trace: trace.as_ref(),
                gateway: &gw,
            };
            let mut calls = Vec::new();
            let (query, headers) = (req.uri().query(), req.headers());
            let run = run_aggregate(
                &gw, route, agg, &raw, query, headers, &fwd, &ctx, &mut calls,
            );
            let resp = Box::pin(run).await;
            RouteAnswer::from_response(resp).await
        })
    };
    gw.cache
        .route(policy, key, no_store, gzip, ctx.started, compute)
        .await
}

/// Decodes the path parameters, runs the call graph and composes the response.
#[allow(clippy::too_many_arguments)]
async fn run_aggregate<'g>(
    gw: &'g Gateway,
    route: &'g RoutePlan,
    agg: &'g Aggregate,
    raw_params: &[&str],
    query: Option<&str>,
    headers: &http::HeaderMap,
    fwd: &crate::exec::render::Forwarding,
    ctx: &RequestContext<'_>,
    calls: &mut Vec<CallRecord<'g>>,
) -> Response<Body> {
    let mut params = Vec::with_capacity(raw_params.len());
    for (name, raw) in route.params.iter().zip(raw_params) {
        match percent_encoding::percent_decode_str(raw).decode_utf8() {
            Ok(p) if p == "." || p == ".." => {
                return bad_request(format!("path parameter `{name}` cannot be `{p}`"));
            }
            Ok(p) => params.push(p.into_owned()),
            Err(_) => {
                return bad_request(format!(
                    "path parameter `{name}` is not valid UTF-8 once decoded"
                ));
            }
        }
    }
    let view = RequestView::new(&params, query, headers);
    let run = Execution {
        plan: &gw.plan,
        route,
        agg,
        upstreams: &gw.upstreams,
        view: &view,
        client_headers: headers,
        forwarding: fwd,
        trace: ctx.trace,
        cache: &gw.cache,
    };
    aggregate(gw, route, agg, &run, ctx.started, calls).await
}

async fn aggregate<'g>(
    gw: &'g Gateway,
    route: &RoutePlan,
    agg: &'g Aggregate,
    run: &Execution<'_>,
    started: Instant,
    calls: &mut Vec<CallRecord<'g>>,
) -> Response<Body> {
    let outcome = match exec::run(run).await {
        Ok(o) => o,
        Err(failure) => {
            if gw.telemetry.wants_calls() {
                observe::aggregate_calls(
                    &gw.plan,
                    agg,
                    &failure.outcome,
                    observe::running_outcome(&failure),
                    started,
                    calls,
                );
            }
            let call = &agg.calls[failure.call];
            let upstream = &gw.plan.upstreams[call.upstream].name;
            tracing::debug!(route = %route.label, call = %call.name, error = %failure.error, "route failed");
            let mut resp = call_failed(&call.name, upstream, &failure.error);
            resp.headers_mut().insert(
                SERVER_TIMING,
                timing::server_timing(agg, &failure.outcome, started.elapsed()),
            );
            return resp;
        }
    };
    if gw.telemetry.wants_calls() {
        observe::aggregate_calls(&gw.plan, agg, &outcome, "cancelled", started, calls);
    }
    // Failed optional calls, and failed items of `for_each` calls that kept
    // going (`keep_null`, `skip`), are what makes a response partial.
    let mut missing: Vec<String> = Vec::new();
    let mut errors = Vec::new();
    for (i, (call, state)) in agg.calls.iter().zip(&outcome.states).enumerate() {
        let upstream = &gw.plan.upstreams[call.upstream].name;
        if let CallState::Failed(e) = state {
            missing.push(call.name.clone());
            errors.push(call_error_json(&call.name, upstream, e));
        }
        for (item, e) in &outcome.item_errors[i] {
            missing.push(format!("{}[{item}]", call.name));
            let mut entry = call_error_json(&call.name, upstream, e);
            entry["item"] = Value::from(*item);
            errors.push(entry);
        }
    }
    let errors = Value::Array(errors);
    let results = outcome.results();
    let env = Env {
        request: run.view,
        results: &results,
        item: None,
        errors: Some(&errors),
    };
    let mut bytes = Vec::with_capacity(1024);
    match &agg.respond {
        Respond::Shape(shape) => compose::write(shape, &env, &mut bytes),
        Respond::Merge(ids) => {
            let conflicts = compose::write_merged(
                ids.iter().map(|&i| {
                    let body = results[i].map(|r| r.body.value());
                    (agg.calls[i].name.as_str(), body)
                }),
                &mut bytes,
            );
            if !conflicts.is_empty() {
                tracing::debug!(route = %route.label, keys = ?conflicts, "merge conflicts (first listed call kept)");
            }
        }
    }
    let mut resp = Response::new(upstream::full(bytes));
    *resp.status_mut() = agg.status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        "server-timing",
        timing::server_timing(agg, &outcome, started.elapsed()),
    );
    if !missing.is_empty()
        && let Ok(v) = HeaderValue::from_str(&missing.join(", "))
    {
        h.insert("switchyard-missing", v);
    }
    if let Some(policy) = &agg.cache {
        // For the route cache: the parts' lifetimes, privacy and the tags.
        let parts = cache::route_parts(policy, agg, &outcome, &env);
        resp.extensions_mut().insert(parts);
    }
    resp
}
