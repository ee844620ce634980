//! End-to-end tests of the demo services over real loopback sockets.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// One keep-alive HTTP/1.1 connection.
struct Conn(SendRequest<Empty<Bytes>>);

impl Conn {
    async fn open(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (send, conn) = http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(conn);
        Conn(send)
    }

    /// Status, content type and JSON body (Null if not JSON); checks that
    /// `content-length` is present and right.
    async fn get(&mut self, path: &str) -> (StatusCode, String, Value) {
        let request = Request::get(path)
            .header("host", "demo")
            .body(Empty::new())
            .expect("valid request");
        let response = self.0.send_request(request).await.expect("response");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        let length = headers[CONTENT_LENGTH].to_str().expect("ascii");
        assert_eq!(length, body.len().to_string(), "content-length of {path}");
        assert_ne!(
            headers.get(CONNECTION).map(|v| v.as_bytes()),
            Some(&b"close"[..])
        );
        let content_type = headers[CONTENT_TYPE].to_str().expect("ascii").to_owned();
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        (status, content_type, json)
    }
}

fn quick() -> DemoOptions {
    DemoOptions {
        latency: Duration::ZERO,
        base_port: 0,
        ..DemoOptions::default()
    }
}

fn to_value<T: serde::Serialize>(value: T) -> Value {
    serde_json::to_value(value).expect("serialisable")
}

#[tokio::test]
async fn serves_the_dataset_over_http() {
    let demo = start(quick()).await.expect("start");
    let data = dataset();
    let mut customers = Conn::open(demo.customers).await;
    // Several requests on one connection: keep-alive works.
    let (status, content_type, body) = customers.get("/customers/42").await;
    assert_eq!(
        (status, content_type.as_str()),
        (StatusCode::OK, "application/json")
    );
    assert_eq!(body, to_value(data.customer(42)));
    let (status, content_type, body) = customers.get("/customers/10001").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["status"], 404);
    assert_eq!(customers.get("/healthz").await.0, StatusCode::OK);

    let (status, _, body) = Conn::open(demo.orders)
        .await
        .get("/orders?customer_id=42")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, to_value(data.orders_of(42)));
    assert!(!data.orders_of(42).is_empty());

    let (_, _, body) = Conn::open(demo.shipping)
        .await
        .get("/shipments?customer_id=42")
        .await;
    assert_eq!(body, to_value(data.shipments_of(42)));

    let (_, _, body) = Conn::open(demo.products)
        .await
        .get("/products?ids=3,1")
        .await;
    assert_eq!(body, to_value([data.product(3), data.product(1)]));

    demo.shutdown().await;
}

#[tokio::test]
async fn wrong_method_is_405_and_content_length_is_raw_bytes() {
    let demo = start(quick()).await.expect("start");
    let mut stream = TcpStream::connect(demo.products).await.expect("connect");
    let request = "DELETE /products/1 HTTP/1.1\r\nhost: demo\r\nconnection: close\r\n\r\n";
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.expect("read");
    let raw = String::from_utf8(raw).expect("utf-8");
    let (head, body) = raw.split_once("\r\n\r\n").expect("head and body");
    assert!(head.starts_with("HTTP/1.1 405"), "{head}");
    let head = head.to_ascii_lowercase();
    assert!(head.contains("allow: get, head"), "{head}");
    assert!(
        head.contains(&format!("content-length: {}", body.len())),
        "{head}"
    );
}

#[tokio::test]
async fn latency_is_applied_per_service() {
    let opts = DemoOptions {
        latency: Duration::from_millis(60),
        latency_overrides: vec![(Service::Products, Duration::ZERO)],
        ..quick()
    };
    let demo = start(opts).await.expect("start");
    let mut slow = Conn::open(demo.customers).await;
    let t = Instant::now();
    slow.get("/customers/1").await;
    assert!(
        t.elapsed() >= Duration::from_millis(60),
        "{:?}",
        t.elapsed()
    );
    let mut fast = Conn::open(demo.products).await;
    let t = Instant::now();
    fast.get("/products/1").await;
    // Generous bound: only shows the 60 ms were not applied.
    assert!(t.elapsed() < Duration::from_millis(55), "{:?}", t.elapsed());
}

#[tokio::test]
async fn shutdown_and_drop_close_the_listeners() {
    let demo = start(quick()).await.expect("start");
    let addr = demo.orders;
    demo.shutdown().await;
    assert!(TcpStream::connect(addr).await.is_err());

    let demo = start(quick()).await.expect("start");
    let addr = demo.products;
    drop(demo);
    // Dropping stops in the background; give the task a moment.
    let mut closed = false;
    for _ in 0..100 {
        if TcpStream::connect(addr).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(closed);
}

#[tokio::test]
async fn rejects_non_loopback_hosts_and_port_overflow() {
    let public = DemoOptions {
        host: "192.0.2.1".parse().expect("ip"),
        ..quick()
    };
    let err = start(public).await.expect_err("non-loopback");
    assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    let high = DemoOptions {
        base_port: u16::MAX - 1,
        ..quick()
    };
    assert_eq!(
        start(high).await.expect_err("overflow").kind(),
        io::ErrorKind::InvalidInput
    );
}

#[test]
fn options_and_service_names() {
    let opts = DemoOptions::default();
    assert_eq!(opts.latency, Duration::from_millis(20));
    assert_eq!(opts.base_port, 9101);
    assert!(opts.host.is_loopback());
    let opts = DemoOptions {
        latency_overrides: vec![(Service::Orders, Duration::from_millis(5))],
        ..opts
    };
    assert_eq!(opts.latency_of(Service::Orders), Duration::from_millis(5));
    assert_eq!(
        opts.latency_of(Service::Shipping),
        Duration::from_millis(20)
    );
    for service in Service::ALL {
        assert_eq!(service.name().parse::<Service>(), Ok(service));
    }
    assert!("nope".parse::<Service>().is_err());
}
