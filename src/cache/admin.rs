//! The cache's admin endpoints (on the admin listener):
//!
//! - `POST /cache/purge?key=KEY`: every variant of one key
//! - `POST /cache/purge?prefix=PREFIX`: every key that starts with PREFIX
//! - `POST /cache/purge?tag=TAG`: every entry with that tag
//! - `GET /cache`: what the in-process tier holds
//!
//! A purge answers with what it did, as JSON.

use super::{Cache, Purge};
use crate::upstream::{self, Body};
use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::json;

/// Answers a request under `/cache`; `None` for other paths.
pub async fn handle(
    cache: &Cache,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Option<Response<Body>> {
    match (method, path) {
        (&Method::POST, "/cache/purge") => Some(purge(cache, query).await),
        (_, "/cache/purge") => Some(json_response(
            StatusCode::METHOD_NOT_ALLOWED,
            &json!({"error": "use POST /cache/purge?key=…, ?prefix=… or ?tag=…"}),
        )),
        (&Method::GET | &Method::HEAD, "/cache") => {
            let (bytes, entries) = cache.held().await;
            Some(json_response(
                StatusCode::OK,
                &json!({"bytes": bytes, "entries": entries, "redis": cache.has_redis()}),
            ))
        }
        _ => None,
    }
}

async fn purge(cache: &Cache, query: Option<&str>) -> Response<Body> {
    let mut which = None;
    for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let p = match k.as_ref() {
            "key" => Purge::Key(v.into_owned()),
            "prefix" => Purge::Prefix(v.into_owned()),
            "tag" => Purge::Tag(v.into_owned()),
            _ => continue,
        };
        if which.is_some() {
            return bad("give exactly one of key, prefix or tag");
        }
        which = Some(p);
    }
    match which {
        None => bad("give one of ?key=, ?prefix= or ?tag="),
        Some(p) if p.value().is_empty() && !matches!(p, Purge::Prefix(_)) => {
            bad("the key or tag is empty")
        }
        Some(p) => {
            let report = cache.purge(p).await;
            json_response(StatusCode::OK, &json!({ "purged": report }))
        }
    }
}

fn bad(message: &str) -> Response<Body> {
    json_response(StatusCode::BAD_REQUEST, &json!({ "error": message }))
}

fn json_response(status: StatusCode, v: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(upstream::full(serde_json::to_vec(v).unwrap_or_default()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}
