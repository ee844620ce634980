//! Pooled HTTP clients, one per upstream, and the one place that turns an
//! upstream response into a JSON result or a classified failure.
//!
//! Invariant: only `upstream` owns connections.
//!
//! Layout: `call.rs` assembles one call's policies in the order a call meets
//! them (retry, hedge, bulkhead, breaker, deadline, send); each policy is its
//! own file: `retry.rs` (conditions, backoff, budget), `hedge.rs`,
//! `bulkhead.rs`, `breaker.rs`; `decode.rs` reads and decodes bodies;
//! `window.rs` is the sliding window the budget and the breaker count in.

mod breaker;
mod bulkhead;
mod call;
mod decode;
mod hedge;
mod json;
mod retry;
mod window;

pub use breaker::State as CircuitState;
pub use json::JsonBody;

use crate::plan::{Plan, UpstreamPlan};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// Boxed error type of bodies we send.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of every request sent upstream: buffered JSON or a streamed
/// client body (proxy routes).
pub type Body = http_body_util::combinators::BoxBody<Bytes, BoxError>;

/// How long an idle pooled connection is kept: below common upstream
/// keep-alive timeouts (60 s in nginx's default), so we rarely reuse a
/// connection the server is about to close.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

/// A buffered body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    full(Bytes::new())
}

/// Why one upstream call produced no usable result.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The call's time ran out (its own timeout or the route deadline).
    #[error("no answer within {}", humantime::format_duration(Duration::from_millis(.0.as_millis() as u64)))]
    Timeout(Duration),
    /// No connection could be made.
    #[error("cannot connect: {0}")]
    Connect(String),
    /// The connection failed after it was made (reset, closed mid-body).
    #[error("connection failed: {0}")]
    Transport(String),
    /// The upstream answered with a non-success status.
    #[error("answered {0}")]
    Status(StatusCode),
    /// The body is not JSON.
    #[error("body is not valid JSON: {0}")]
    Decode(String),
    /// The body exceeded the upstream's `max_body`.
    #[error("body larger than {0} bytes")]
    TooLarge(u64),
    /// An input of the call's URL was missing or null in an earlier result.
    #[error("input `{0}` is missing or null")]
    MissingDependency(String),
    /// An input had the wrong type (a list or object where one value belongs).
    #[error("{0}")]
    BadInput(String),
    /// The client's request body passed `max_request_body` while streaming.
    #[error("request body larger than the limit")]
    RequestTooLarge,
    /// An optional call this one depends on failed, so it was not sent.
    #[error("skipped because `{0}` failed")]
    DependencyFailed(String),
    /// The upstream's circuit breaker is open: the call was not sent.
    #[error("circuit open: the upstream failed too often recently")]
    CircuitOpen,
    /// The upstream's in-flight cap is reached: the call was not sent.
    #[error("too many calls in flight to the upstream")]
    Overloaded,
}

impl CallError {
    /// The stable name of the kind, as shown in problem bodies and `$errors`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Timeout(_) => "timeout",
            CallError::Connect(_) => "connect",
            CallError::Transport(_) => "transport",
            CallError::Status(_) => "status",
            CallError::Decode(_) => "decode",
            CallError::TooLarge(_) => "too_large",
            CallError::MissingDependency(_) => "missing_dependency",
            CallError::BadInput(_) => "bad_input",
            CallError::DependencyFailed(_) => "dependency_failed",
            CallError::RequestTooLarge => "request_too_large",
            CallError::CircuitOpen => "circuit_open",
            CallError::Overloaded => "overloaded",
        }
    }

    /// The status a client gets when a required call fails this way.
    pub fn client_status(&self) -> StatusCode {
        match self {
            CallError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            CallError::Status(s) if s.is_client_error() => *s,
            CallError::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            CallError::CircuitOpen | CallError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_GATEWAY,
        }
    }
}

/// A successful JSON answer.
#[derive(Debug, Clone)]
pub struct JsonResponse {
    /// Its status (2xx).
    pub status: StatusCode,
    /// Its headers.
    pub headers: HeaderMap,
    /// Its body.
    pub body: JsonBody,
}

/// The clients of every upstream of a plan, indexed like `Plan::upstreams`.
pub struct Upstreams {
    clients: Vec<UpstreamClient>,
}

impl Upstreams {
    /// One pooled client per upstream of the plan.
    pub fn new(plan: &Plan) -> Self {
        Upstreams {
            clients: plan.upstreams.iter().map(UpstreamClient::new).collect(),
        }
    }

    /// The client of upstream `id`.
    pub fn get(&self, id: usize) -> &UpstreamClient {
        &self.clients[id]
    }

    /// The circuit state of upstream `id` (closed when it has no breaker).
    pub fn circuit(&self, id: usize) -> CircuitState {
        self.clients[id]
            .breaker
            .as_ref()
            .map_or(CircuitState::Closed, |b| b.state())
    }
}

/// A keep-alive connection pool to one upstream (clones share the pool).
#[derive(Clone)]
pub struct UpstreamClient {
    /// Response body cap in bytes.
    pub max_body: u64,
    name: String,
    client: Client<HttpsConnector<HttpConnector>, Body>,
    // Shared by clones (a cache flight owns one): one budget, breaker and
    // bulkhead per upstream, whoever sends.
    budget: std::sync::Arc<retry::RetryBudget>,
    breaker: Option<std::sync::Arc<breaker::Breaker>>,
    bulkhead: std::sync::Arc<bulkhead::Bulkhead>,
    compression: bool,
}

impl UpstreamClient {
    fn new(plan: &UpstreamPlan) -> Self {
        let mut tcp = HttpConnector::new();
        tcp.set_nodelay(true);
        tcp.set_connect_timeout(Some(plan.connect_timeout));
        // The TLS layer below decides the scheme: `https_only` for https
        // upstreams, plain `http` only for the others.
        tcp.enforce_http(false);
        let tls = plan
            .tls
            .as_deref()
            .cloned()
            .unwrap_or_else(plain_tls_config);
        let builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls);
        let builder = if plan.tls.is_some() {
            builder.https_only()
        } else {
            builder.https_or_http()
        };
        let connector = if plan.http2 {
            builder.enable_http1().enable_http2().wrap_connector(tcp)
        } else {
            builder.enable_http1().wrap_connector(tcp)
        };
        let mut client = Client::builder(TokioExecutor::new());
        client
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(plan.pool_idle_per_host);
        if plan.http2 && plan.tls.is_none() {
            // Cleartext HTTP/2 has no ALPN: prior knowledge.
            client.http2_only(true);
        }
        let client = client.build(connector);
        UpstreamClient {
            max_body: plan.max_body,
            name: plan.name.clone(),
            client,
            budget: std::sync::Arc::new(retry::RetryBudget::new(plan.budget.clone())),
            breaker: plan
                .breaker
                .clone()
                .map(|b| std::sync::Arc::new(breaker::Breaker::new(&plan.name, b))),
            bulkhead: std::sync::Arc::new(bulkhead::Bulkhead::new(&plan.name, plan.max_in_flight)),
            compression: plan.compression,
        }
    }

    fn breaker_permit(&self) -> Result<breaker::Permit<'_>, CallError> {
        match &self.breaker {
            Some(b) => b.acquire(),
            None => Ok(breaker::Permit::unlimited()),
        }
    }

    /// Sends a proxied request through the bulkhead and the breaker; the
    /// in-flight slot is held until the response head arrives (the body
    /// then streams outside the cap).
    pub async fn send_guarded(
        &self,
        req: Request<Body>,
        timeout: Duration,
    ) -> Result<Response<Incoming>, CallError> {
        let _slot = self.bulkhead.try_enter()?;
        let permit = self.breaker_permit()?;
        let result = match tokio::time::timeout(timeout, self.send(req)).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Timeout(timeout)),
        };
        let failed = match &result {
            Ok(resp) => resp.status().is_server_error(),
            Err(e) => breaker::is_failure(e),
        };
        permit.record(failed);
        result
    }

    /// Sends a request and returns the streaming response (proxy routes).
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, CallError> {
        self.client.request(req).await.map_err(|e| classify(&e))
    }

    /// Sends a request and reads a JSON answer, enforcing the body cap.
    pub async fn fetch_json(&self, mut req: Request<Body>) -> Result<JsonResponse, CallError> {
        if self.compression {
            req.headers_mut().insert(
                http::header::ACCEPT_ENCODING,
                http::HeaderValue::from_static(decode::ACCEPT_ENCODING),
            );
        }
        let resp = self.send(req).await?;
        let status = resp.status();
        if !status.is_success() {
            // Dropping the body closes or returns the connection; we never
            // read an error body into the response.
            return Err(CallError::Status(status));
        }
        let (mut parts, body) = resp.into_parts();
        if status == StatusCode::NO_CONTENT {
            // A success without a body: its value is null.
            return Ok(JsonResponse {
                status,
                headers: parts.headers,
                body: JsonBody::null(),
            });
        }
        if let Some(ct) = parts.headers.get(http::header::CONTENT_TYPE)
            && !is_json(ct.as_bytes())
        {
            let shown = String::from_utf8_lossy(ct.as_bytes()).into_owned();
            return Err(CallError::Decode(format!(
                "content-type is `{shown}`, not JSON"
            )));
        }
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body) {
            crate::telemetry::upstream_body_too_large(&self.name);
            return Err(CallError::TooLarge(self.max_body));
        }
        let bytes = decode::read_body(&parts.headers, body, self.max_body)
            .await
            .inspect_err(|e| {
                if matches!(e, CallError::TooLarge(_)) {
                    crate::telemetry::upstream_body_too_large(&self.name);
                }
            })?;
        // The body is decoded now: its wire encoding and length no longer describe it.
        parts.headers.remove(http::header::CONTENT_ENCODING);
        parts.headers.remove(http::header::CONTENT_LENGTH);
        let body = JsonBody::parse(bytes).map_err(CallError::Decode)?;
        Ok(JsonResponse {
            status,
            headers: parts.headers,
            body,
        })
    }
}

/// The TLS config of an http:// upstream's connector, which never makes a
/// TLS connection: no roots.
fn plain_tls_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(crate::plan::tls_provider())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
        .unwrap_or_else(|_| {
            // Not reached with aws-lc-rs; the process default then exists.
            crate::plan::install_default_provider();
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
}

/// `application/json`, `application/problem+json`, `text/json`, any `+json`.
fn is_json(content_type: &[u8]) -> bool {
    let ct = String::from_utf8_lossy(content_type).to_ascii_lowercase();
    let mime = ct.split(';').next().unwrap_or("").trim();
    mime == "application/json" || mime == "text/json" || mime.ends_with("+json")
}

fn classify(e: &hyper_util::client::legacy::Error) -> CallError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return CallError::RequestTooLarge;
        }
        message = s.to_string();
        source = s.source();
    }
    if e.is_connect() {
        CallError::Connect(message)
    } else {
        CallError::Transport(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_json_content_types() {
        assert!(is_json(b"application/json"));
        assert!(is_json(b"Application/JSON; charset=utf-8"));
        assert!(is_json(b"application/problem+json"));
        assert!(!is_json(b"text/html"));
        assert!(!is_json(b"application/jsonp"));
    }

    #[test]
    fn maps_failures_to_client_statuses() {
        assert_eq!(
            CallError::Status(StatusCode::NOT_FOUND).client_status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            CallError::Status(StatusCode::SERVICE_UNAVAILABLE).client_status(),
            StatusCode::BAD_GATEWAY
        );
        assert_eq!(
            CallError::Timeout(Duration::from_secs(1)).client_status(),
            StatusCode::GATEWAY_TIMEOUT
        );
        assert_eq!(
            CallError::Decode("x".into()).client_status(),
            StatusCode::BAD_GATEWAY
        );
    }
}
