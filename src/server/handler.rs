//! One request's lifecycle: route lookup → identify the client → run the
//! call graph (or proxy) → compose → headers.

use super::forwarded::forwarding;
use super::problem::{self, bad_request, call_error_json, call_failed};
use super::{Gateway, observe, proxy, timing};
use crate::compose;
use crate::exec::eval::{Env, RequestView};
use crate::exec::{self, CallState, Execution};
use crate::plan::{Aggregate, Lookup, Respond, RouteKind, RoutePlan};
use crate::telemetry::trace::TraceContext;
use crate::telemetry::{self, CallRecord, RequestRecord};
use crate::upstream::{self, Body};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Map, Value};
use std::net::SocketAddr;
use std::time::SystemTime;
use tokio::time::Instant;

/// Serves one request; never fails (every error is a response). Every
/// response carries `Server-Timing`, at least with the total. Every answered
/// request ends in one `RequestRecord` (metrics, access log, spans).
pub async fn handle(gw: &Gateway, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
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
        cache: None,
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

async fn serve_route<'g>(
    gw: &'g Gateway,
    route: &'g RoutePlan,
    raw_params: Vec<&str>,
    req: Request<Incoming>,
    ctx: &RequestContext<'_>,
    calls: &mut Vec<CallRecord<'g>>,
) -> Response<Body> {
    let fwd = forwarding(
        req.headers(),
        ctx.peer.ip(),
        &gw.plan.server.trusted_proxies,
        "http",
    );
    match &route.kind {
        RouteKind::Proxy(p) => {
            let mut resp = proxy::forward(gw, route, p, &raw_params, req, &fwd, ctx, calls).await;
            // The upstream's own Server-Timing passes through; ours is added.
            let ours = timing::proxy(ctx.started.elapsed());
            resp.headers_mut().append(SERVER_TIMING, ours);
            resp
        }
        RouteKind::Aggregate(agg) => {
            let mut params = Vec::with_capacity(raw_params.len());
            for (name, raw) in route.params.iter().zip(&raw_params) {
                match percent_encoding::percent_decode_str(raw).decode_utf8() {
                    Ok(p) => params.push(p.into_owned()),
                    Err(_) => {
                        return bad_request(format!(
                            "path parameter `{name}` is not valid UTF-8 once decoded"
                        ));
                    }
                }
            }
            let view = RequestView::new(&params, req.uri().query(), req.headers());
            let run = Execution {
                plan: &gw.plan,
                route,
                agg,
                upstreams: &gw.upstreams,
                view: &view,
                client_headers: req.headers(),
                forwarding: &fwd,
                trace: ctx.trace,
            };
            aggregate(gw, route, agg, &run, ctx.started, calls).await
        }
    }
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
    let mut missing = Vec::new();
    let mut errors = Vec::new();
    for (call, state) in agg.calls.iter().zip(&outcome.states) {
        if let CallState::Failed(e) = state {
            missing.push(call.name.as_str());
            errors.push(call_error_json(
                &call.name,
                &gw.plan.upstreams[call.upstream].name,
                e,
            ));
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
    let body = match &agg.respond {
        Respond::Shape(shape) => compose::build(shape, &env),
        Respond::Merge(ids) => {
            let merged = compose::merge(
                ids.iter()
                    .map(|&i| (agg.calls[i].name.as_str(), results[i].map(|r| &r.body))),
            );
            if !merged.conflicts.is_empty() {
                tracing::debug!(route = %route.label, keys = ?merged.conflicts, "merge conflicts (first listed call kept)");
            }
            merged.body
        }
    };
    let bytes = serde_json::to_vec(&body).unwrap_or_default();
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
    resp
}
