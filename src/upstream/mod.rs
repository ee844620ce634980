//! Pooled HTTP clients, one per upstream, and the one place that turns an
//! upstream response into a JSON result or a classified failure.
//!
//! Invariant: only `upstream` owns connections.

use crate::plan::{Plan, UpstreamPlan};
use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
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
        }
    }

    /// The status a client gets when a required call fails this way.
    pub fn client_status(&self) -> StatusCode {
        match self {
            CallError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            CallError::Status(s) if s.is_client_error() => *s,
            CallError::RequestTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
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
    /// Its parsed body.
    pub body: serde_json::Value,
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
}

/// A keep-alive connection pool to one upstream (clones share the pool).
#[derive(Clone)]
pub struct UpstreamClient {
    /// Response body cap in bytes.
    pub max_body: u64,
    client: Client<HttpConnector, Body>,
}

impl UpstreamClient {
    fn new(plan: &UpstreamPlan) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(plan.connect_timeout));
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(plan.pool_idle_per_host)
            .build(connector);
        UpstreamClient {
            max_body: plan.max_body,
            client,
        }
    }

    /// Sends a request and returns the streaming response (proxy routes).
    pub async fn send(&self, req: Request<Body>) -> Result<Response<Incoming>, CallError> {
        self.client.request(req).await.map_err(|e| classify(&e))
    }

    /// Sends a request and reads a JSON answer, enforcing the body cap.
    pub async fn fetch_json(&self, req: Request<Body>) -> Result<JsonResponse, CallError> {
        let resp = self.send(req).await?;
        let status = resp.status();
        if !status.is_success() {
            // Dropping the body closes or returns the connection; we never
            // read an error body into the response.
            return Err(CallError::Status(status));
        }
        let (parts, body) = resp.into_parts();
        if status == StatusCode::NO_CONTENT {
            // A success without a body: its value is null.
            return Ok(JsonResponse {
                status,
                headers: parts.headers,
                body: serde_json::Value::Null,
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
            return Err(CallError::TooLarge(self.max_body));
        }
        let limit = usize::try_from(self.max_body).unwrap_or(usize::MAX);
        let bytes = match Limited::new(body, limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Err(CallError::TooLarge(self.max_body));
            }
            Err(e) => return Err(CallError::Transport(e.to_string())),
        };
        let body = serde_json::from_slice(&bytes).map_err(|e| CallError::Decode(e.to_string()))?;
        Ok(JsonResponse {
            status,
            headers: parts.headers,
            body,
        })
    }
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
