//! The admin listener (default 127.0.0.1:9901): `/metrics` in Prometheus
//! text format, `/healthz` (the process is up) and `/readyz` (it serves),
//! and the cache's `/cache` and `POST /cache/purge` (`crate::cache::admin`).
//! It is a separate socket so that it can stay private while the gateway
//! port is public.

use crate::cache::Cache;
use crate::server::RunningServer;
use crate::telemetry;
use crate::upstream::{self, Body};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

/// Serves the admin endpoints on a bound listener.
pub fn serve(listener: tokio::net::TcpListener) -> std::io::Result<RunningServer> {
    serve_with_cache(listener, None)
}

/// Serves the admin endpoints, with the cache's purge endpoints
/// (`crate::cache::admin`) when a cache is given.
pub fn serve_with_cache(
    listener: tokio::net::TcpListener,
    cache: Option<Cache>,
) -> std::io::Result<RunningServer> {
    // Installing the recorder here means metrics exist from the first request.
    telemetry::prometheus();
    crate::server::serve_fn(listener, move |req, _peer| {
        let cache = cache.clone();
        async move {
            if let Some(c) = &cache {
                let (m, u) = (req.method(), req.uri());
                if let Some(resp) = crate::cache::admin::handle(c, m, u.path(), u.query()).await {
                    return resp;
                }
            }
            handle(req)
        }
    })
}

fn handle(req: Request<Incoming>) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET\n");
    }
    match req.uri().path() {
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => text(StatusCode::OK, "ready\n"),
        "/metrics" => {
            let mut resp = text(StatusCode::OK, &telemetry::prometheus().render());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "admin endpoints: /metrics /healthz /readyz /cache POST:/cache/purge\n",
        ),
    }
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
