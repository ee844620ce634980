//! Turning a call's templates into an upstream request. Every value is encoded
//! for the place it lands in; missing inputs stop the call before it is sent.

use super::eval::{self, Env};
use crate::compose;
use crate::plan::template::{Encoding, Piece, Template};
use crate::plan::{CallPlan, UpstreamPlan};
use crate::upstream::CallError;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Request, header};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde_json::Value;

/// Everything except RFC 3986 unreserved characters: a value encoded with this
/// set cannot end a path segment, start a query or add a parameter.
pub const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Headers the gateway sets on every upstream request.
pub struct Forwarding {
    /// `X-Forwarded-For`.
    pub forwarded_for: HeaderValue,
    /// `X-Forwarded-Proto`.
    pub forwarded_proto: HeaderValue,
    /// `X-Forwarded-Host`, when the client named a host.
    pub forwarded_host: Option<HeaderValue>,
    /// Whether the peer is a trusted proxy (its other proxy headers may pass).
    pub peer_trusted: bool,
}

/// The trace context one upstream call is sent.
pub struct CallTrace {
    /// The call's `traceparent`: the request's trace, the call's span id.
    pub traceparent: HeaderValue,
    /// Whether the client's trace is continued (then its `tracestate` passes).
    pub continued: bool,
}

impl CallTrace {
    /// The trace context of call `call` of a request traced by `t`.
    pub fn of(t: &crate::telemetry::trace::TraceContext, call: usize) -> Self {
        CallTrace {
            traceparent: t.traceparent(t.call_span_id(call)),
            continued: t.parent_span_id.is_some(),
        }
    }
}

/// A rendered template, or the news that a list it joins is empty.
pub enum Rendered {
    /// The text.
    Text(String),
    /// A joined list was empty: there is nothing to ask for.
    EmptyList,
}

/// Renders a URL or header template.
pub fn render(t: &Template, env: &Env<'_>, out: &mut String) -> Result<Rendered, CallError> {
    let mut empty = false;
    for piece in &t.pieces {
        match piece {
            Piece::Lit(l) => out.push_str(l),
            Piece::Slot(expr, encoding) => {
                if let Some((sep, filters)) = expr.split_join() {
                    let value = eval::eval_with(expr, filters, env)
                        .filter(|v| !v.is_null())
                        .ok_or_else(|| CallError::MissingDependency(expr.text.clone()))?;
                    let items: &[Value] = match value.as_array() {
                        Some(a) => a,
                        None => std::slice::from_ref(&*value),
                    };
                    // Like projections, `join` leaves nulls out.
                    let mut items = items.iter().filter(|v| !v.is_null()).peekable();
                    empty |= items.peek().is_none();
                    for (i, item) in items.enumerate() {
                        if i > 0 {
                            out.push_str(sep);
                        }
                        write_scalar(item, *encoding, &expr.text, out)?;
                    }
                } else {
                    let value = eval::eval(expr, env)
                        .filter(|v| !v.is_null())
                        .ok_or_else(|| CallError::MissingDependency(expr.text.clone()))?;
                    write_scalar(&value, *encoding, &expr.text, out)?;
                }
            }
        }
    }
    Ok(if empty {
        Rendered::EmptyList
    } else {
        Rendered::Text(std::mem::take(out))
    })
}

fn write_scalar(
    v: &Value,
    encoding: Encoding,
    what: &str,
    out: &mut String,
) -> Result<(), CallError> {
    let text = eval::scalar_text(v).ok_or_else(|| {
        let found = if v.is_array() { "a list" } else { "an object" };
        let hint = if what.contains("|join") {
            "join needs strings, numbers or booleans"
        } else {
            "use `|join` or a step"
        };
        CallError::BadInput(format!(
            "`{what}` is {found} where one value belongs ({hint})"
        ))
    })?;
    match encoding {
        Encoding::PathSegment => {
            // `.`/`..` are unreserved, so encoding alone would let them
            // through; an empty value would merge two segments.
            if matches!(text.as_str(), "" | "." | "..") {
                return Err(CallError::BadInput(format!(
                    "`{what}` is `{text}`, which cannot be a path segment"
                )));
            }
            out.extend(utf8_percent_encode(&text, COMPONENT));
        }
        Encoding::QueryComponent => out.extend(utf8_percent_encode(&text, COMPONENT)),
        Encoding::PathRest => write_path_rest(&text, what, out)?,
        Encoding::HeaderValue => {
            if text.chars().any(|c| c.is_control()) {
                return Err(CallError::BadInput(format!(
                    "`{what}` contains control characters"
                )));
            }
            out.push_str(&text);
        }
    }
    Ok(())
}

/// A catch-all remainder, still percent-encoded as the client sent it: keep
/// its `/`, re-encode each segment, refuse `.` and `..` (also when encoded).
pub fn write_path_rest(raw: &str, what: &str, out: &mut String) -> Result<(), CallError> {
    for (i, seg) in raw.split('/').enumerate() {
        let decoded = percent_encoding::percent_decode_str(seg)
            .decode_utf8()
            .map_err(|_| CallError::BadInput(format!("`{what}` is not UTF-8 once decoded")))?;
        if decoded == "." || decoded == ".." {
            return Err(CallError::BadInput(format!(
                "`{what}` contains a `{decoded}` segment"
            )));
        }
        if i > 0 {
            out.push('/');
        }
        out.extend(utf8_percent_encode(&decoded, COMPONENT));
    }
    Ok(())
}

/// The request for one call (or one item of a `for_each` call); `trace` is
/// the call's own, when the gateway traces. Its body is buffered so that a
/// retry or a hedge can send it again.
pub fn request(
    call: &CallPlan,
    up: &UpstreamPlan,
    env: &Env<'_>,
    client_headers: &HeaderMap,
    fwd: &Forwarding,
    trace: Option<&CallTrace>,
) -> Result<Option<Request<Bytes>>, CallError> {
    let mut url = String::with_capacity(64);
    url.push_str(up.scheme_prefix());
    url.push_str(up.authority.as_str());
    url.push_str(&up.base_path);
    let url = match render(&call.url, env, &mut url)? {
        Rendered::Text(u) => u,
        Rendered::EmptyList => return Ok(None),
    };
    let mut builder = Request::builder().method(call.method.clone()).uri(url);
    let headers = builder
        .headers_mut()
        .ok_or_else(|| CallError::BadInput("invalid request".into()))?;
    set_common_headers(
        headers,
        up,
        client_headers,
        &call.forward_headers,
        fwd,
        trace,
    );
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    for (name, t) in &call.headers {
        let mut text = String::new();
        if let Rendered::Text(v) = render(t, env, &mut text)? {
            let value = HeaderValue::from_str(&v).map_err(|_| {
                CallError::BadInput(format!("header `{name}` has an invalid value"))
            })?;
            headers.insert(name.clone(), value);
        }
    }
    let body = match &call.body {
        Some(shape) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let mut out = Vec::new();
            compose::write(shape, env, &mut out);
            Bytes::from(out)
        }
        None => Bytes::new(),
    };
    builder
        .body(body)
        .map_err(|e| CallError::BadInput(format!("cannot build the request: {e}")))
        .map(Some)
}

/// Host, listed client headers, trace context and `X-Forwarded-*`.
///
/// With `trace` (the call's own span), the client's `tracestate` goes along
/// if its trace is continued; without, the client's trace headers pass
/// unchanged.
// Parsed once: a name given as a `&str` is parsed again at every use.
const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

pub fn set_common_headers(
    headers: &mut HeaderMap,
    up: &UpstreamPlan,
    client: &HeaderMap,
    forward: &[http::HeaderName],
    fwd: &Forwarding,
    trace: Option<&CallTrace>,
) {
    for name in forward {
        for v in client.get_all(name) {
            headers.append(name.clone(), v.clone());
        }
    }
    for name in [TRACEPARENT, TRACESTATE] {
        headers.remove(&name);
        if let Some(v) = client.get(&name) {
            headers.insert(name, v.clone());
        }
    }
    if let Some(t) = trace {
        headers.insert(TRACEPARENT, t.traceparent.clone());
        if !t.continued {
            // The client's trace was not continued: its state does not apply.
            headers.remove(TRACESTATE);
        }
    }
    if let Ok(host) = HeaderValue::from_str(up.authority.as_str()) {
        headers.insert(header::HOST, host);
    }
    headers.insert(X_FORWARDED_FOR, fwd.forwarded_for.clone());
    headers.insert(X_FORWARDED_PROTO, fwd.forwarded_proto.clone());
    match &fwd.forwarded_host {
        Some(h) => headers.insert(X_FORWARDED_HOST, h.clone()),
        None => headers.remove(X_FORWARDED_HOST),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encode(s: &str) -> String {
        utf8_percent_encode(s, COMPONENT).to_string()
    }

    #[test]
    fn component_encoding_cannot_escape() {
        assert_eq!(encode("../admin"), "..%2Fadmin");
        assert_eq!(encode("a/b"), "a%2Fb");
        assert_eq!(encode("%2e%2e"), "%252e%252e");
        assert_eq!(encode("x?y=z&w"), "x%3Fy%3Dz%26w");
        assert_eq!(encode("a\r\nb"), "a%0D%0Ab");
        assert_eq!(encode("Zürich 1"), "Z%C3%BCrich%201");
    }

    #[test]
    fn path_rest_keeps_slashes_and_refuses_dot_segments() {
        let mut out = String::new();
        write_path_rest("a/b%2Fc/d e", "rest", &mut out).unwrap();
        assert_eq!(out, "a/b%2Fc/d%20e");
        for bad in ["a/../b", "%2e%2e/x", "./a", "a/%2E"] {
            assert!(
                write_path_rest(bad, "rest", &mut String::new()).is_err(),
                "{bad}"
            );
        }
    }
}
