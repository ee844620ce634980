//! The admin listener (default 127.0.0.1:9901): `/metrics` in Prometheus
//! text format, `/healthz` (the process is up), `/readyz` (it takes
//! traffic), `/stats` (the dashboard's figures as JSON), `/dashboard`, and
//! the cache's `/cache` and `POST /cache/purge` (`crate::cache::admin`).
//! It is a separate socket so that it can stay private while the gateway
//! port is public.

use crate::server::readiness::State;
use crate::server::{Gateway, RunningServer};
use crate::telemetry;
use crate::upstream::{self, Body};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use std::sync::Arc;

/// The dashboard page: one self-contained file, no external assets.
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// Serves the admin endpoints of `gateway` on a bound listener.
pub fn serve_gateway(
    listener: tokio::net::TcpListener,
    gateway: Arc<Gateway>,
) -> std::io::Result<RunningServer> {
    serve_with(listener, Some(gateway))
}

/// Serves the process-wide endpoints only (`/metrics`, `/healthz`; `/readyz`
/// is always ready, there is no gateway to ask).
pub fn serve(listener: tokio::net::TcpListener) -> std::io::Result<RunningServer> {
    serve_with(listener, None)
}

fn serve_with(
    listener: tokio::net::TcpListener,
    gateway: Option<Arc<Gateway>>,
) -> std::io::Result<RunningServer> {
    // Installing the recorder here means metrics exist from the first request.
    telemetry::prometheus();
    crate::server::serve_fn(listener, move |req, _peer| {
        let gw = gateway.clone();
        async move {
            if let Some(g) = &gw {
                let (m, u) = (req.method(), req.uri());
                if let Some(resp) =
                    crate::cache::admin::handle(&g.cache, m, u.path(), u.query()).await
                {
                    return resp;
                }
            }
            handle(req, gw.as_deref())
        }
    })
}

fn handle(req: Request<Incoming>, gw: Option<&Gateway>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match gw.map(|g| g.readiness.state()) {
            None | Some(State::Ready) => text(StatusCode::OK, "ready\n"),
            Some(State::Starting) => text(StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
            Some(State::Draining) => text(StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
        },
        "/metrics" => with_type(
            text(StatusCode::OK, &telemetry::prometheus().render()),
            "text/plain; version=0.0.4; charset=utf-8",
        ),
        "/stats" => match gw {
            Some(g) => {
                let body = serde_json::to_vec(&g.telemetry.stats.snapshot()).unwrap_or_default();
                let mut resp = Response::new(upstream::full(body));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                resp.headers_mut()
                    .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                resp
            }
            None => text(StatusCode::NOT_FOUND, "no gateway on this admin listener\n"),
        },
        "/dashboard" | "/" => with_type(
            text(StatusCode::OK, DASHBOARD_HTML),
            "text/html; charset=utf-8",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "admin endpoints: /metrics /healthz /readyz /stats /dashboard /cache POST:/cache/purge\n",
        ),
    }
}

fn with_type(mut resp: Response<Body>, content_type: &'static str) -> Response<Body> {
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp
}

fn text(status: StatusCode, body: &str) -> Response<Body> {
    let mut resp = Response::new(upstream::full(body.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// `serve`, plus `POST /reload` (reload the config now) and `GET /reload`
/// (how the last reload went).
pub fn serve_with_reload(
    listener: tokio::net::TcpListener,
    reloader: std::sync::Arc<crate::server::reload::Reloader>,
) -> std::io::Result<RunningServer> {
    telemetry::prometheus();
    crate::server::serve_fn(listener, move |req, _peer| {
        let reloader = reloader.clone();
        async move {
            if let Some(resp) = crate::server::reload::admin_endpoint(&reloader, &req).await {
                return resp;
            }
            // The gateway serving right now: a reload swaps it.
            let g = reloader.gateway().load_full();
            let (m, u) = (req.method(), req.uri());
            if let Some(resp) = crate::cache::admin::handle(&g.cache, m, u.path(), u.query()).await
            {
                return resp;
            }
            handle(req, Some(&g))
        }
    })
}
