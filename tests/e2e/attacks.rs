//! The attack suite: request smuggling (R18), slow clients (R16), oversized
//! heads, timeouts and disconnects that must cancel upstream work (R14).

use crate::common::*;
use crate::kit::*;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

fn proxy_and_post(up: &TestUpstream) -> String {
    format!(
        r#"
upstreams:
  up: {{ url: "{}" }}
routes:
  - any: /p/{{*rest}}
    proxy: "up:/{{path.rest}}"
  - post: /agg
    calls:
      a: {{ get: "up:/a" }}
"#,
        up.url()
    )
}

/// Sends raw bytes and reads until the server closes the connection;
/// returns what was read and whether it closed within `wait`.
async fn exchange_until_closed(
    addr: std::net::SocketAddr,
    bytes: &[u8],
    wait: Duration,
) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(wait, s.read_to_end(&mut out))
        .await
        .is_ok();
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

// R18: ambiguous framing gets 400 and a closed connection; the upstream
// receives nothing, not even the request hidden after the first.
#[tokio::test]
async fn r18_smuggling_attempts_are_refused_and_the_connection_closed() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = TestGateway::start(&proxy_and_post(&up)).await;
    let hidden = "GET /p/hidden HTTP/1.1\r\nHost: gw\r\n\r\n";
    let attempts = [
        (
            "CL+TE",
            format!(
                "POST /p/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}"
            ),
        ),
        (
            "two Content-Lengths",
            format!(
                "POST /p/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nContent-Length: 40\r\n\r\nhello{hidden}"
            ),
        ),
        (
            "chunked<TAB>",
            format!(
                "POST /p/x HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n{hidden}"
            ),
        ),
        (
            "chunked<TAB> on an aggregation route",
            format!(
                "POST /agg HTTP/1.1\r\nHost: gw\r\nTransfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n{hidden}"
            ),
        ),
    ];
    let mut results = Vec::new();
    for (what, raw) in attempts {
        let (out, closed) =
            exchange_until_closed(gw.addr, raw.as_bytes(), Duration::from_secs(3)).await;
        results.push((what, out, closed));
    }
    for (what, out, closed) in results {
        assert!(out.starts_with("HTTP/1.1 400"), "{what}: {out}");
        assert_eq!(
            out.matches("HTTP/1.1").count(),
            1,
            "{what}: a second response: {out}"
        );
        assert!(closed, "{what}: the connection stayed open");
    }
    assert_eq!(
        up.count(),
        0,
        "{:?}",
        up.seen().iter().map(|s| &s.uri).collect::<Vec<_>>()
    );
}

fn simple(up_url: &str) -> String {
    format!(
        r#"
upstreams:
  up: {{ url: "{up_url}" }}
routes:
  - get: /x
    calls:
      a: {{ get: "up:/a" }}
"#
    )
}

/// Dribbles a request head one byte every `every`, up to `max` bytes; the
/// time until the server closed the connection, if it did.
async fn dribble(addr: std::net::SocketAddr, every: Duration, max: usize) -> Option<Duration> {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = b"GET /x HTTP/1.1\r\nHost: gw\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let mut buf = [0u8; 512];
    for &b in head.iter().take(max) {
        if s.write_all(&[b]).await.is_err() {
            return Some(t.elapsed());
        }
        // A read that ends (EOF, reset, or a 408) means the server gave up on us.
        if tokio::time::timeout(every, s.read(&mut buf)).await.is_ok() {
            return Some(t.elapsed());
        }
    }
    None
}

// R16: 50 slow-header clients (1 byte/s) are cut off once the 1 s header
// timeout passes, while normal requests keep being served.
#[tokio::test]
async fn r16_slowloris_clients_are_cut_off_and_others_served() {
    let up = TestUpstream::fixed(Reply::json(json!({"ok": true}))).await;
    let gw = TestGateway::start(&format!(
        "server:\n  header_read_timeout: 1s\n{}",
        simple(&up.url())
    ))
    .await;
    let addr = gw.addr;
    let slow: Vec<_> = (0..50)
        .map(|_| tokio::spawn(dribble(addr, Duration::from_secs(1), 10)))
        .collect();
    // Meanwhile: normal requests, one after the other, all served promptly.
    let t = Instant::now();
    let mut served = 0;
    while t.elapsed() < ms(2500) {
        let t1 = Instant::now();
        let r = gw.get("/x").await;
        assert_eq!(r.status, 200);
        // A correctness margin, not a benchmark: a blocked gateway would take seconds.
        assert!(
            t1.elapsed() < ms(1000),
            "a normal request took {:?}",
            t1.elapsed()
        );
        served += 1;
        tokio::time::sleep(ms(50)).await;
    }
    assert!(served > 10);
    for task in slow {
        let closed = task
            .await
            .unwrap()
            .expect("a slow client was never cut off");
        // The 1 s timeout, checked on the next 1 s tick of the client: < 3 s.
        assert!(
            closed >= ms(900) && closed < ms(3000),
            "closed after {closed:?}"
        );
    }
}

// An oversized request head gets 431 and reaches no upstream.
#[tokio::test]
async fn oversized_head_is_refused() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = TestGateway::start(&format!(
        "server:\n  max_header_size: 16KiB\n{}",
        simple(&up.url())
    ))
    .await;
    let big = "a".repeat(64 << 10);
    let raw = format!("GET /x HTTP/1.1\r\nHost: gw\r\nX-Big: {big}\r\n\r\n");
    let (out, closed) =
        exchange_until_closed(gw.addr, raw.as_bytes(), Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 431"), "{out}");
    assert!(closed);
    assert_eq!(up.count(), 0);
    // A head under the limit passes.
    let ok = format!(
        "GET /x HTTP/1.1\r\nHost: gw\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(8 << 10)
    );
    let (out, _) = exchange_until_closed(gw.addr, ok.as_bytes(), Duration::from_secs(3)).await;
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

// Connections over `max_connections` are closed at once; a freed slot is reused.
#[tokio::test]
async fn connections_over_the_cap_are_closed_at_once() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = TestGateway::start(&format!(
        "server:\n  max_connections: 3\n{}",
        simple(&up.url())
    ))
    .await;
    let request = b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(gw.addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = [0u8; 12];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"HTTP/1.1 200");
        held.push(s);
    }
    let (out, closed) = exchange_until_closed(gw.addr, request, Duration::from_secs(2)).await;
    assert!(closed && out.is_empty(), "{out}");
    drop(held.pop());
    let mut served = false;
    for _ in 0..50 {
        let (out, _) = exchange_until_closed(
            gw.addr,
            b"GET /x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n",
            Duration::from_secs(2),
        )
        .await;
        if out.starts_with("HTTP/1.1 200") {
            served = true;
            break;
        }
        tokio::time::sleep(ms(20)).await;
    }
    assert!(served, "a freed connection slot was not reused");
}

/// A gateway process with a 1 s route in front of upstreams that never answer.
async fn r14_gateway(a: &RawUpstream, b: &RawUpstream) -> GatewayProcess {
    GatewayProcess::start(
        "",
        &format!(
            r#"
upstreams:
  a: {{ url: "{}", timeout: 10s }}
  b: {{ url: "{}", timeout: 10s }}
routes:
  - get: /one
    timeout: 1s
    calls:
      a: {{ get: "a:/sleep" }}
  - get: /two
    timeout: 1s
    calls:
      a: {{ get: "a:/sleep" }}
      b: {{ get: "b:/sleep" }}
"#,
            a.url(),
            b.url()
        ),
    )
    .await
}

async fn in_flight_returns_to_zero(gw: &GatewayProcess) -> bool {
    for _ in 0..100 {
        if gw.metric("switchyard_requests_in_flight", &[]).await == 0.0 {
            return true;
        }
        tokio::time::sleep(ms(20)).await;
    }
    false
}

// R14: the route deadline gives 504 (not 408 or 500) at about 1 s; the
// upstream sees its connection closed, siblings included, and the
// in-flight gauge goes back to 0.
#[tokio::test]
async fn r14_deadline_is_504_and_cancels_upstream_calls() {
    let a = RawUpstream::start(Misbehave::NeverAnswer).await;
    let b = RawUpstream::start(Misbehave::NeverAnswer).await;
    let gw = r14_gateway(&a, &b).await;
    let t = Instant::now();
    let r = send(http::Method::GET, &gw.url("/two"), &[], Default::default()).await;
    let took = t.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["kind"], "timeout");
    assert!(took >= ms(950) && took < ms(1500), "504 after {took:?}");
    assert!(
        eventually(ms(1200), || a.closed_by_peer() == 1
            && b.closed_by_peer() == 1)
        .await,
        "upstream connections left open: a {} b {}",
        a.closed_by_peer(),
        b.closed_by_peer()
    );
    assert!(t.elapsed() < ms(2500));
    assert!(in_flight_returns_to_zero(&gw).await);
}

// R14, second run: the client disconnects at 300 ms; the upstream call is
// cancelled (its connection closed) well before the deadline would have
// passed, and the in-flight gauge goes back to 0.
#[tokio::test]
async fn r14_client_disconnect_cancels_the_upstream_call() {
    let a = RawUpstream::start(Misbehave::NeverAnswer).await;
    let b = RawUpstream::start(Misbehave::NeverAnswer).await;
    let gw = r14_gateway(&a, &b).await;
    let t = Instant::now();
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /one HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    assert!(eventually(ms(1000), || a.accepted() == 1).await);
    tokio::time::sleep(ms(300).saturating_sub(t.elapsed())).await;
    drop(s);
    assert!(
        eventually(ms(1200), || a.closed_by_peer() == 1).await,
        "the upstream connection stayed open after the client left"
    );
    // Cancelled by the disconnect, not by the 1 s deadline.
    assert!(t.elapsed() < ms(950), "closed only after {:?}", t.elapsed());
    assert!(in_flight_returns_to_zero(&gw).await);
}

// `request_timeout` bounds the time to the response head whatever the route
// allows: 504 problem+json when it passes.
#[tokio::test]
async fn request_timeout_caps_the_time_to_the_response_head() {
    let up = TestUpstream::fixed(Reply::json(json!({})).after(ms(3000))).await;
    let gw = TestGateway::start(&format!(
        "server:\n  request_timeout: 300ms\n{}",
        simple(&up.url())
    ))
    .await;
    let t = Instant::now();
    let r = gw.get("/x").await;
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/problem+json");
    assert!(
        t.elapsed() >= ms(290) && t.elapsed() < ms(1500),
        "{:?}",
        t.elapsed()
    );
}

// Hop-by-hop tricks: naming end-to-end headers in `Connection` cannot make
// the proxy drop the headers it sets itself (X-Forwarded-For, Host).
#[tokio::test]
async fn connection_header_cannot_strip_gateway_headers() {
    let up = TestUpstream::fixed(Reply::json(json!({}))).await;
    let gw = TestGateway::start(&proxy_and_post(&up)).await;
    let r = gw
        .get_with(
            "/p/x",
            &[
                ("connection", "x-forwarded-for, x-forwarded-proto, host"),
                ("x-forwarded-for", "6.6.6.6"),
            ],
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let seen = &up.seen()[0].headers;
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["x-forwarded-proto"], "http");
    assert_eq!(seen["host"], up.addr.to_string().as_str());
    assert!(
        seen.get("connection")
            .is_none_or(|c| c != "x-forwarded-for, x-forwarded-proto, host")
    );
}

/// Reads one response with a `Content-Length` body from a kept-alive connection.
async fn read_response(s: &mut TcpStream) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&out).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if out.len() >= end + 4 + len {
                return text;
            }
        }
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("no response")
            .unwrap();
        assert!(n > 0, "closed; read so far: {text}");
        out.extend_from_slice(&buf[..n]);
    }
}

// An idle keep-alive connection is parked (its HTTP state dropped) and taken
// up again by its next request: same connection, nothing lost, including a
// head that stalled half-sent and a request pipelined behind it; the header
// timeout still closes one that stays silent.
#[tokio::test]
async fn parked_keep_alive_connections_serve_their_next_requests() {
    let up = TestUpstream::fixed(Reply::json(json!({"ok": true}))).await;
    let gw = TestGateway::start(&format!(
        "server:\n  header_read_timeout: 3s\n{}",
        simple(&up.url())
    ))
    .await;
    let mut s = TcpStream::connect(gw.addr).await.unwrap();
    let get = b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n";
    for _ in 0..2 {
        s.write_all(get).await.unwrap();
        assert!(read_response(&mut s).await.starts_with("HTTP/1.1 200"));
        // Long enough to be parked.
        tokio::time::sleep(ms(900)).await;
    }
    // Half a head, a pause past the parking delay, then the rest and a
    // pipelined second request.
    s.write_all(b"GET /x HTTP/1.1\r\nHo").await.unwrap();
    tokio::time::sleep(ms(900)).await;
    s.write_all(b"st: gw\r\n\r\nGET /x HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut both = Vec::new();
    let mut buf = [0u8; 4096];
    while {
        let text = String::from_utf8_lossy(&both);
        text.matches("HTTP/1.1 200").count() < 2 || !text.ends_with('}')
    } {
        let n = tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf))
            .await
            .expect("no second response")
            .unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&both));
        both.extend_from_slice(&buf[..n]);
    }
    assert_eq!(up.count(), 4);
    // Silent: closed once the header timeout passes (plus the parking delay).
    let t = Instant::now();
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(6), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an idle connection was never closed");
    assert!(t.elapsed() >= ms(2000), "closed after {:?}", t.elapsed());
}
