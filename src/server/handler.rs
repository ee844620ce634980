//! One request's lifecycle: route lookup → identify the client → run the
//! call graph (or proxy) → compose → headers.

use super::forwarded::forwarding;
use super::problem::{self, bad_request, call_error_json, call_failed};
use super::{Gateway, proxy, timing};
use crate::cache::{self, RouteAnswer, policy::CachePolicy};
use crate::compose;
use crate::exec::eval::{Env, RequestView};
use crate::exec::{self, CallState, Execution};
use crate::plan::{Aggregate, Lookup, Respond, RouteKind, RoutePlan};
use crate::telemetry;
use crate::upstream::{self, Body};
use futures_util::future::BoxFuture;
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use serde_json::{Map, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;

/// Serves one request; never fails (every error is a response). Every
/// response carries `Server-Timing`, at least with the total.
pub async fn handle(gw: &Arc<Gateway>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let started = Instant::now();
    let _in_flight = InFlight::enter();
    let method = method_label(req.method());
    let (mut resp, route) = route_request(gw, req, peer, started).await;
    if !resp.headers().contains_key(SERVER_TIMING) {
        resp.headers_mut()
            .insert(SERVER_TIMING, timing::total_only(started.elapsed()));
    }
    telemetry::request_served(route, method, resp.status().as_u16(), started.elapsed());
    resp
}

/// Counts a request in flight until dropped (also when the client goes away
/// and the request's future is dropped).
struct InFlight;
impl InFlight {
    fn enter() -> Self {
        telemetry::in_flight(1.0);
        InFlight
    }
}
impl Drop for InFlight {
    fn drop(&mut self) {
        telemetry::in_flight(-1.0);
    }
}

/// Standard methods by name, anything else as `OTHER` (bounded labels).
fn method_label(m: &http::Method) -> &'static str {
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
async fn route_request(
    gw: &Arc<Gateway>,
    req: Request<Incoming>,
    peer: SocketAddr,
    started: Instant,
) -> (Response<Body>, &str) {
    let path = req.uri().path().to_string();
    let (route, raw_params) = match gw.plan.lookup(req.method(), &path) {
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
    let resp = serve_route(gw, route, raw_params, req, peer, started).await;
    (resp, &route.label)
}

async fn serve_route(
    gw: &Arc<Gateway>,
    route: &RoutePlan,
    raw_params: Vec<&str>,
    req: Request<Incoming>,
    peer: SocketAddr,
    started: Instant,
) -> Response<Body> {
    match &route.kind {
        RouteKind::Proxy(p) => {
            let fwd = forwarding(
                req.headers(),
                peer.ip(),
                &gw.plan.server.trusted_proxies,
                "http",
            );
            let mut resp = proxy::forward(gw, route, p, &raw_params, req, &fwd).await;
            // The upstream's own Server-Timing passes through; ours is added.
            let ours = timing::proxy(started.elapsed());
            resp.headers_mut().append(SERVER_TIMING, ours);
            resp
        }
        RouteKind::Aggregate(agg) => match &agg.cache {
            Some(policy) => cached_route(gw, route, policy, &raw_params, req, peer, started).await,
            None => {
                let (uri, headers) = (req.uri(), req.headers());
                run_aggregate(
                    gw,
                    route,
                    agg,
                    &raw_params,
                    uri.query(),
                    headers,
                    peer,
                    started,
                )
                .await
            }
        },
    }
}

/// A route with a `cache:` policy: the cache answers, and runs the route
/// only when this request leads the fetch of a missing or stale entry.
async fn cached_route(
    gw: &Arc<Gateway>,
    route: &RoutePlan,
    policy: &CachePolicy,
    raw_params: &[&str],
    req: Request<Incoming>,
    peer: SocketAddr,
    started: Instant,
) -> Response<Body> {
    let headers = req.headers();
    let gzip = cache::accepts_gzip(headers);
    let key = cache::key::route_key(req.uri().path(), req.uri().query(), headers, gzip, policy);
    let no_store = cache::freshness::request_forbids_store(headers);
    let compute = || -> BoxFuture<'static, RouteAnswer> {
        // Everything the route needs, owned: other requests may wait for
        // this computation after this request has gone.
        let gw = gw.clone();
        let index = gw.plan.routes.iter().position(|r| std::ptr::eq(r, route));
        let params: Vec<String> = raw_params.iter().map(|p| p.to_string()).collect();
        Box::pin(async move {
            let route = index.map(|i| &gw.plan.routes[i]);
            let Some((route, RouteKind::Aggregate(agg))) = route.map(|r| (r, &r.kind)) else {
                return RouteAnswer::from_response(bad_request("route not found".into())).await;
            };
            let raw: Vec<&str> = params.iter().map(String::as_str).collect();
            let (uri, headers) = (req.uri(), req.headers());
            let resp = run_aggregate(
                &gw,
                route,
                agg,
                &raw,
                uri.query(),
                headers,
                peer,
                Instant::now(),
            )
            .await;
            RouteAnswer::from_response(resp).await
        })
    };
    gw.cache
        .route(policy, key, no_store, gzip, started, compute)
        .await
}

/// Decodes the path parameters, runs the call graph and composes the response.
#[allow(clippy::too_many_arguments)]
async fn run_aggregate(
    gw: &Gateway,
    route: &RoutePlan,
    agg: &Aggregate,
    raw_params: &[&str],
    query: Option<&str>,
    headers: &http::HeaderMap,
    peer: SocketAddr,
    started: Instant,
) -> Response<Body> {
    let fwd = forwarding(headers, peer.ip(), &gw.plan.server.trusted_proxies, "http");
    let mut params = Vec::with_capacity(raw_params.len());
    for (name, raw) in route.params.iter().zip(raw_params) {
        match percent_encoding::percent_decode_str(raw).decode_utf8() {
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
        forwarding: &fwd,
        cache: &gw.cache,
    };
    aggregate(gw, route, agg, &run, started).await
}

async fn aggregate(
    gw: &Gateway,
    route: &RoutePlan,
    agg: &Aggregate,
    run: &Execution<'_>,
    started: Instant,
) -> Response<Body> {
    let outcome = match exec::run(run).await {
        Ok(o) => o,
        Err(failure) => {
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
    if let Some(policy) = &agg.cache {
        // For the route cache: the parts' lifetimes, privacy and the tags.
        let parts = cache::route_parts(policy, agg, &outcome, &env);
        resp.extensions_mut().insert(parts);
    }
    resp
}
