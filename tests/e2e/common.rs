//! Shared test fixtures: scriptable upstream servers that record what they
//! saw, the gateway started in-process on port 0, and a small HTTP client.

#![allow(dead_code)]

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard::server::{Gateway, RunningServer};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// What a test upstream saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The method.
    pub method: Method,
    /// Path and query as received (still percent-encoded).
    pub uri: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The request body.
    pub body: Bytes,
    /// When the request arrived.
    pub started: Instant,
    /// When the upstream began answering (after its delay).
    pub finished: Instant,
    /// Which TCP connection it came on (1, 2, … in accept order).
    pub connection: u64,
}

/// What a test upstream answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    pub delay: Duration,
}

impl Reply {
    /// 200 with a JSON body.
    pub fn json(v: Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            headers: vec![("content-type".into(), "application/json".into())],
            body: Bytes::from(serde_json::to_vec(&v).unwrap()),
            delay: Duration::ZERO,
        }
    }
    /// A status with an empty JSON object body.
    pub fn status(code: u16) -> Reply {
        Reply {
            status: StatusCode::from_u16(code).unwrap(),
            ..Reply::json(serde_json::json!({}))
        }
    }
    /// A body with any content type.
    pub fn raw(content_type: &str, body: &str) -> Reply {
        Reply {
            status: StatusCode::OK,
            headers: vec![("content-type".into(), content_type.into())],
            body: Bytes::from(body.to_string()),
            delay: Duration::ZERO,
        }
    }
    /// Answer after a delay.
    pub fn after(mut self, d: Duration) -> Reply {
        self.delay = d;
        self
    }
    /// Add a response header.
    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers.push((k.into(), v.into()));
        self
    }
    /// Replace the status.
    pub fn with_status(mut self, code: u16) -> Reply {
        self.status = StatusCode::from_u16(code).unwrap();
        self
    }
}

type Handler = dyn Fn(&Seen) -> Reply + Send + Sync;

/// A real HTTP/1.1 server on a free loopback port that answers with a
/// handler and records every request.
pub struct TestUpstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    connections: Arc<AtomicU64>,
    in_flight: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestUpstream {
    /// Starts a server answering every request with `handler`.
    pub async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicU64::new(0));
        let in_flight = Arc::new(AtomicU64::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (s, c, f) = (seen.clone(), connections.clone(), in_flight.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let conn_id = c.fetch_add(1, Ordering::SeqCst) + 1;
                let (seen, handler, in_flight) = (s.clone(), handler.clone(), f.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (seen, handler, in_flight) =
                            (seen.clone(), handler.clone(), in_flight.clone());
                        async move {
                            in_flight.fetch_add(1, Ordering::SeqCst);
                            let _guard = Decrement(in_flight);
                            let started = Instant::now();
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let mut record = Seen {
                                method: parts.method,
                                uri: parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default(),
                                headers: parts.headers,
                                body,
                                started,
                                finished: started,
                                connection: conn_id,
                            };
                            let reply = handler(&record);
                            tokio::time::sleep(reply.delay).await;
                            record.finished = Instant::now();
                            seen.lock().unwrap().push(record);
                            let mut resp = Response::new(Full::new(reply.body));
                            *resp.status_mut() = reply.status;
                            for (k, v) in reply.headers {
                                resp.headers_mut().append(
                                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                                    HeaderValue::from_str(&v).unwrap(),
                                );
                            }
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestUpstream {
            addr,
            seen,
            connections,
            in_flight,
            task,
        }
    }

    /// A server that always answers `reply`.
    pub async fn fixed(reply: Reply) -> TestUpstream {
        TestUpstream::start(move |_| reply.clone()).await
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request answered so far, in completion order.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// How many requests were answered.
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    /// How many TCP connections were accepted.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests being handled right now (a cancelled call leaves this).
    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }
}

struct Decrement(Arc<AtomicU64>);
impl Drop for Decrement {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The gateway serving a config on a free loopback port.
pub struct TestGateway {
    pub addr: SocketAddr,
    pub gateway: Arc<Gateway>,
    server: Option<RunningServer>,
}

/// An admin listener on a free loopback port.
pub struct TestAdmin {
    pub addr: SocketAddr,
    server: Option<RunningServer>,
}

impl TestAdmin {
    /// GET an admin path.
    pub async fn get(&self, path: &str) -> TestResponse {
        let url = format!("http://{}{}", self.addr, path);
        send(Method::GET, &url, &[], Bytes::new()).await
    }

    /// Stops the listener.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

impl TestGateway {
    /// Compiles `yaml` (panicking with the report if it is invalid) and serves it.
    pub async fn start(yaml: &str) -> TestGateway {
        let plan = match switchyard::plan::compile_str("test.yaml", yaml) {
            Ok((plan, _warnings)) => plan,
            Err(e) => panic!("test config does not compile:\n{e}\n---\n{yaml}"),
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gateway = Gateway::new(plan);
        let server = switchyard::server::serve(gateway.clone(), listener).unwrap();
        TestGateway {
            addr,
            gateway,
            server: Some(server),
        }
    }

    /// Starts this gateway's admin listener (`/metrics`, `/stats`, …).
    pub async fn admin(&self) -> TestAdmin {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = switchyard::admin::serve_gateway(listener, self.gateway.clone()).unwrap();
        TestAdmin {
            addr,
            server: Some(server),
        }
    }

    /// `http://127.0.0.1:PORT` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// GET a path.
    pub async fn get(&self, path: &str) -> TestResponse {
        send(Method::GET, &self.url(path), &[], Bytes::new()).await
    }

    /// GET a path with headers.
    pub async fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> TestResponse {
        send(Method::GET, &self.url(path), headers, Bytes::new()).await
    }

    /// Stops the server and waits for it to drain.
    pub async fn shutdown(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }
}

/// A response read whole.
#[derive(Debug)]
pub struct TestResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    /// The body as JSON (panics with the body text if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn client() -> &'static Client<HttpConnector, Full<Bytes>> {
    static CLIENT: std::sync::OnceLock<Client<HttpConnector, Full<Bytes>>> =
        std::sync::OnceLock::new();
    CLIENT.get_or_init(|| Client::builder(TokioExecutor::new()).build_http())
}

/// Sends one request and reads the whole response.
pub async fn send(
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> TestResponse {
    let mut req = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client()
        .request(req.body(Full::new(body)).unwrap())
        .await
        .unwrap_or_else(|e| panic!("request to {url} failed: {e:?}"));
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    TestResponse {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Writes raw bytes on a new connection and returns everything read until
/// the server closes it or `wait` passes.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}
