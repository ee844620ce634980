//! Pass-through routes: the request and response stream through; only
//! hop-by-hop headers are dropped and `X-Forwarded-*` set.

use super::Gateway;
use super::handler::{RequestContext, method_label};
use super::problem::{bad_request, call_failed};
use crate::exec::eval::{Env, RequestView};
use crate::exec::render::{self, CallTrace, Forwarding, Rendered};
use crate::plan::{HOP_BY_HOP, ProxyPlan, RoutePlan};
use crate::telemetry::CallRecord;
use crate::upstream::{Body, CallError};
use http::{HeaderMap, Request, Response, header};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;

/// Forwards one request to the proxy route's upstream; the call, once sent,
/// is recorded in `calls` (as call `proxy`).
#[allow(clippy::too_many_arguments)]
pub async fn forward<'g>(
    gw: &'g Gateway,
    route: &RoutePlan,
    target: &ProxyPlan,
    raw_params: &[&str],
    req: Request<Incoming>,
    fwd: &Forwarding,
    ctx: &RequestContext<'_>,
    calls: &mut Vec<CallRecord<'g>>,
) -> Response<Body> {
    let up = &gw.plan.upstreams[target.upstream];
    let max = gw.plan.server.max_request_body;
    // The catch-all keeps its raw form (re-encoded per segment); other
    // parameters are decoded and encoded as one component.
    let params: Result<Vec<String>, String> = raw_params
        .iter()
        .enumerate()
        .map(|(i, raw)| {
            if i + 1 == raw_params.len() {
                Ok(raw.to_string())
            } else {
                percent_encoding::percent_decode_str(raw)
                    .decode_utf8()
                    .map(|p| p.into_owned())
                    .map_err(|_| format!("path parameter {} is not UTF-8 once decoded", i + 1))
            }
        })
        .collect();
    let params = match params {
        Ok(p) => p,
        Err(e) => return bad_request(e),
    };
    let view = RequestView::new(&params, req.uri().query(), req.headers());
    let env = Env {
        request: &view,
        results: &[],
        item: None,
        errors: None,
    };
    let mut uri = format!("{}{}{}", up.scheme_prefix(), up.authority, up.base_path);
    let rendered = match render::render(&target.path, &env, &mut uri) {
        Ok(Rendered::Text(u)) => u,
        Ok(Rendered::EmptyList) => return bad_request("the proxy path is empty".into()),
        Err(e) => return bad_request(format!("cannot build the upstream path: {e}")),
    };
    let mut uri = rendered;
    if let Some(q) = req.uri().query() {
        uri.push('?');
        uri.push_str(q);
    }
    let (parts, body) = req.into_parts();
    let method = method_label(&parts.method);
    let mut out = Request::builder().method(parts.method).uri(uri);
    let Some(headers) = out.headers_mut() else {
        return bad_request("invalid request".into());
    };
    copy_end_to_end(&parts.headers, headers);
    headers.remove(header::HOST);
    if !fwd.peer_trusted {
        // Other proxy headers are only believed from trusted proxies;
        // X-Forwarded-For/-Proto/-Host are rewritten below either way.
        for name in UNTRUSTED_PROXY_HEADERS {
            headers.remove(*name);
        }
    }
    let trace = ctx.trace.map(|t| CallTrace::of(t, 0));
    render::set_common_headers(headers, up, &parts.headers, &[], fwd, trace.as_ref());
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let body: Body = Limited::new(body, limit)
        .map_err(|e| e as crate::upstream::BoxError)
        .boxed();
    let Ok(out) = out.body(body) else {
        return bad_request("the request cannot be forwarded".into());
    };
    let timeout = up.timeout.min(route.timeout);
    let sent = tokio::time::Instant::now();
    let result = gw
        .upstreams
        .get(target.upstream)
        .send_guarded(out, timeout)
        .await;
    let (outcome, status) = match &result {
        Ok(resp) if resp.status().is_server_error() => ("status", Some(resp.status())),
        Ok(resp) => ("ok", Some(resp.status())),
        Err(e) => (e.kind(), None),
    };
    calls.push(CallRecord {
        name: "proxy",
        upstream: &up.name,
        method,
        index: 0,
        start: Some(sent.saturating_duration_since(ctx.started)),
        duration: Some(sent.elapsed()),
        outcome,
        status: status.map(|s| s.as_u16()),
        waited_for: &[],
        cache: None,
    });
    let resp = match result {
        Ok(resp) => resp,
        Err(e) => return call_failed("proxy", &up.name, &e),
    };
    let (parts, body) = resp.into_parts();
    // The response streams through, capped at the upstream's `max_body`: a
    // declared length over it is refused up front, a longer stream is cut.
    let client = gw.upstreams.get(target.upstream);
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > client.max_body) {
        return call_failed("proxy", &up.name, &CallError::TooLarge(client.max_body));
    }
    let cap = usize::try_from(client.max_body).unwrap_or(usize::MAX);
    let mut resp = Response::new(Limited::new(body, cap).boxed());
    *resp.status_mut() = parts.status;
    copy_end_to_end(&parts.headers, resp.headers_mut());
    resp
}

/// Proxy headers a client could use to lie about where it is.
const UNTRUSTED_PROXY_HEADERS: &[&str] = &[
    "forwarded",
    "x-real-ip",
    "x-forwarded-port",
    "x-forwarded-prefix",
];

/// Copies headers except hop-by-hop ones and any named in `Connection`.
fn copy_end_to_end(from: &HeaderMap, to: &mut HeaderMap) {
    let named: Vec<String> = from
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    for (name, value) in from {
        let n = name.as_str();
        if HOP_BY_HOP.contains(&n) || named.iter().any(|x| x == n) {
            continue;
        }
        to.append(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn drops_hop_by_hop_and_connection_named_headers() {
        let mut from = HeaderMap::new();
        from.insert(
            header::CONNECTION,
            HeaderValue::from_static("close, X-Secret"),
        );
        from.insert("x-secret", HeaderValue::from_static("1"));
        from.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        from.insert("te", HeaderValue::from_static("trailers"));
        from.insert("proxy-authorization", HeaderValue::from_static("Basic x"));
        from.insert("x-kept", HeaderValue::from_static("yes"));
        let mut to = HeaderMap::new();
        copy_end_to_end(&from, &mut to);
        assert_eq!(to.len(), 1);
        assert_eq!(to["x-kept"], "yes");
    }
}
