//! The fault suite: upstreams that misbehave (compressed, bomb, endless,
//! reset, garbage, never answering) and what the client gets, with the
//! gateway staying up and its memory bounded.

use crate::common::*;
use crate::kit::*;
use serde_json::{Value, json};
use std::io::Write;
use std::time::Duration;
use tokio::time::Instant;

/// A route merging optional call `a` (on `a_url`) with required call `b`.
async fn merged(a_url: &str, a_extra: &str, b_url: &str) -> TestGateway {
    TestGateway::start(&format!(
        r#"
upstreams:
  a: {{ url: "{a_url}", timeout: 2s {a_extra} }}
  b: {{ url: "{b_url}" }}
routes:
  - get: /m
    calls:
      a: {{ get: "a:/a", optional: true }}
      b: {{ get: "b:/b" }}
    merge: [a, b]
  - get: /r
    calls:
      a: {{ get: "a:/a" }}
"#
    ))
    .await
}

fn encoded(coding: &str, data: &[u8]) -> Vec<u8> {
    match coding {
        "gzip" => gzip(data),
        "deflate" => {
            let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
            z.write_all(data).unwrap();
            z.finish().unwrap()
        }
        // `{"a":1}` from the reference brotli encoder.
        "br" => vec![
            0x0b, 0x03, 0x80, 0x7b, 0x22, 0x61, 0x22, 0x3a, 0x31, 0x7d, 0x03,
        ],
        _ => unreachable!(),
    }
}

fn assert_own_framing(r: &TestResponse) {
    assert_eq!(r.header("content-encoding"), "", "stale content-encoding");
    let declared: usize = r
        .header("content-length")
        .parse()
        .expect("a content-length");
    assert_eq!(declared, r.body.len());
}

// R04 (a): gzip, br and deflate bodies are decoded for composition; the
// client's response carries its own framing, never the upstream's.
#[tokio::test]
async fn r04a_encoded_bodies_are_decoded_and_merged() {
    let b = TestUpstream::fixed(Reply::json(json!({"b": true}))).await;
    for coding in ["gzip", "br", "deflate"] {
        let body = encoded(coding, br#"{"a":1}"#);
        let mut reply = Reply::json(json!({})).header("content-encoding", coding);
        reply.body = body.into();
        let a = TestUpstream::fixed(reply).await;
        let gw = merged(&a.url(), ", compression: true", &b.url()).await;
        let r = gw.get("/m").await;
        assert_eq!(r.status, 200, "{coding}: {}", r.text());
        assert_eq!(r.json(), json!({"a": 1, "b": true}), "{coding}");
        assert_own_framing(&r);
        assert_eq!(r.header("switchyard-missing"), "");
        // `compression: true` asks for it.
        let asked = a.seen()[0].headers["accept-encoding"]
            .to_str()
            .unwrap()
            .to_string();
        assert_eq!(asked, "gzip, br, deflate");
    }
}

// Without `compression`, no Accept-Encoding is sent (but an encoded answer
// is decoded anyway); an encoding we do not know is a `decode` failure.
#[tokio::test]
async fn unknown_encoding_is_a_decode_failure() {
    let b = TestUpstream::fixed(Reply::json(json!({"b": true}))).await;
    let a =
        TestUpstream::fixed(Reply::json(json!({"a": 1})).header("content-encoding", "zstd")).await;
    let gw = merged(&a.url(), "", &b.url()).await;
    let r = gw.get("/m").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("switchyard-missing"), "a");
    assert!(a.seen()[0].headers.get("accept-encoding").is_none());
    let r = gw.get("/r").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["kind"], "decode");
}

/// One gzip member of 1 MiB of `0`s (about 1 KiB): repeated, a stream of
/// members that inflates about 1000:1.
fn bomb_member() -> Vec<u8> {
    gzip(&vec![b'0'; 1 << 20])
}

fn chunked_head(extra: &str) -> Vec<u8> {
    format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n{extra}\r\n")
        .into_bytes()
}

/// Checks an aborted-at-the-cap call: partial with `too_large`, the
/// upstream connection closed long before the stream would have ended.
async fn assert_aborted(gw: &TestGateway, a: &RawUpstream, limit: u64) {
    let r = gw.get("/m").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("switchyard-missing"), "a");
    assert_eq!(r.json(), json!({"b": true}));
    assert!(
        eventually(Duration::from_secs(5), || a.closed_by_peer() >= 1).await,
        "the upstream connection was not closed"
    );
    // What was written beyond the cap sits in loopback socket buffers (a
    // few MiB with autotuning); the stream itself was far from done.
    assert!(
        a.written() < 16 << 20,
        "read {} of {limit} bytes",
        a.written()
    );
    let r = gw.get("/r").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["kind"], "too_large");
}

// R04 (b): a gzip bomb (members of 1 MiB of zeros, ~100 GB in all) is
// abandoned at the 1 MiB cap and its connection closed.
#[tokio::test]
async fn r04b_decompression_bomb_is_aborted_at_the_cap() {
    let member = bomb_member();
    let limit = 100_000 * member.len() as u64;
    let a = RawUpstream::start(Misbehave::Stream {
        head: chunked_head("content-encoding: gzip\r\n"),
        chunk: member,
        limit,
    })
    .await;
    let b = TestUpstream::fixed(Reply::json(json!({"b": true}))).await;
    let gw = merged(&a.url(), ", max_body: 1MiB", &b.url()).await;
    let before = metric(
        "switchyard_upstream_body_too_large_total",
        &[r#"upstream="a""#],
    );
    assert_aborted(&gw, &a, limit).await;
    assert!(
        metric(
            "switchyard_upstream_body_too_large_total",
            &[r#"upstream="a""#]
        ) > before
    );
}

// R04 (c): 50 MB of chunked JSON against a 1 MiB cap is cut off at the cap.
#[tokio::test]
async fn r04c_endless_body_is_aborted_at_the_cap() {
    let limit = 50 << 20;
    let a = RawUpstream::start(Misbehave::Stream {
        head: chunked_head(""),
        chunk: vec![b' '; 16 << 10],
        limit,
    })
    .await;
    let b = TestUpstream::fixed(Reply::json(json!({"b": true}))).await;
    let gw = merged(&a.url(), ", max_body: 1MiB", &b.url()).await;
    assert_aborted(&gw, &a, limit).await;
}

// R04 (b, c) memory: the real binary's RSS grows by less than twice the
// cap while bombs and endless bodies are thrown at it, and it keeps serving.
#[tokio::test]
async fn r04_memory_stays_bounded_under_bombs() {
    let member = bomb_member();
    let bomb = RawUpstream::start(Misbehave::Stream {
        head: chunked_head("content-encoding: gzip\r\n"),
        chunk: member.clone(),
        limit: 1000 * member.len() as u64,
    })
    .await;
    let endless = RawUpstream::start(Misbehave::Stream {
        head: chunked_head(""),
        chunk: vec![b' '; 16 << 10],
        limit: 50 << 20,
    })
    .await;
    let ok = TestUpstream::fixed(Reply::json(json!({"ok": true}))).await;
    // One malloc arena: what is measured is the gateway's memory, not how
    // many per-thread arenas glibc keeps freed buffers in.
    let gw = GatewayProcess::start_with_env(
        "",
        &format!(
            r#"
upstreams:
  bomb: {{ url: "{}", max_body: 4MiB }}
  endless: {{ url: "{}", max_body: 4MiB }}
  ok: {{ url: "{}" }}
routes:
  - get: /bomb
    calls: {{ a: {{ get: "bomb:/" }} }}
  - get: /endless
    calls: {{ a: {{ get: "endless:/" }} }}
  - get: /ok
    calls: {{ a: {{ get: "ok:/" }} }}
"#,
            bomb.url(),
            endless.url(),
            ok.url()
        ),
        &[("MALLOC_ARENA_MAX", "1")],
    )
    .await;
    let get = |p: &str| {
        let url = gw.url(p);
        async move { crate::common::send(http::Method::GET, &url, &[], Default::default()).await }
    };
    // Warm up: pools, buffers and worker threads exist before the baseline.
    for _ in 0..2 {
        assert_eq!(get("/bomb").await.status, 502);
        assert_eq!(get("/endless").await.status, 502);
    }
    let baseline = gw.rss();
    for _ in 0..10 {
        let r = get("/bomb").await;
        assert_eq!(r.status, 502);
        assert_eq!(
            serde_json::from_slice::<Value>(&r.body).unwrap()["kind"],
            "too_large"
        );
        assert_eq!(get("/endless").await.status, 502);
    }
    let grown = gw.rss().saturating_sub(baseline);
    eprintln!("RSS baseline {baseline} bytes, grown {grown} bytes");
    // Twice the cap: allocator slack (a freed 4 MiB buffer may stay resident)
    // is allowed; buffering a 50 MB stream or an inflating bomb is not.
    assert!(
        grown < 2 * (4 << 20),
        "RSS grew by {grown} bytes (cap 4 MiB)"
    );
    assert_eq!(get("/ok").await.status, 200);
}

/// A gateway with one required call to `url` (timeout 500 ms).
async fn one_call(url: &str) -> TestGateway {
    TestGateway::start(&format!(
        r#"
upstreams:
  f: {{ url: "{url}", timeout: 500ms }}
routes:
  - get: /x
    calls:
      a: {{ get: "f:/a" }}
"#
    ))
    .await
}

// A connection reset in the middle of the body is a 502 `transport`.
#[tokio::test]
async fn reset_mid_body_is_502_transport() {
    let mut partial = http_response("200 OK", &[("content-type", "application/json")], b"");
    partial = String::from_utf8(partial)
        .unwrap()
        .replace("content-length: 0", "content-length: 1000")
        .into_bytes();
    partial.extend_from_slice(br#"{"a": [1, 2, "#);
    let up = RawUpstream::start(Misbehave::ResetMidBody(partial)).await;
    let gw = one_call(&up.url()).await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["kind"], "transport");
    assert!(!r.text().contains("[1, 2"));
}

// Garbage instead of HTTP is a 502 `transport`, and the gateway keeps serving.
#[tokio::test]
async fn garbage_response_is_502_transport() {
    let up = RawUpstream::start(Misbehave::Bytes(
        b"\x00\x01SSH-2.0-garbage\r\n\r\n\xff\xfe".to_vec(),
    ))
    .await;
    let gw = one_call(&up.url()).await;
    for _ in 0..3 {
        let r = gw.get("/x").await;
        assert_eq!(r.status, 502, "{}", r.text());
        assert_eq!(r.json()["kind"], "transport");
    }
}

// An upstream that accepts and never answers: 504 at the call's timeout,
// and the gateway closes that connection.
#[tokio::test]
async fn never_answering_upstream_is_504_and_its_connection_closed() {
    let up = RawUpstream::start(Misbehave::NeverAnswer).await;
    let gw = one_call(&up.url()).await;
    let t = Instant::now();
    let r = gw.get("/x").await;
    let took = t.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.json()["kind"], "timeout");
    assert!(took >= ms(500) && took < ms(1500), "{took:?}");
    assert!(
        eventually(ms(1000), || up.closed_by_peer() == 1).await,
        "the upstream connection stayed open"
    );
}

// A streamed body (no Content-Length) longer than `max_body` is `too_large`.
#[tokio::test]
async fn streamed_body_over_max_body_is_too_large() {
    let up = RawUpstream::start(Misbehave::Stream {
        head: chunked_head(""),
        chunk: vec![b' '; 4096],
        limit: 1 << 20,
    })
    .await;
    let gw = TestGateway::start(&format!(
        "upstreams:\n  s: {{ url: \"{}\", max_body: 64KiB }}\nroutes:\n  - get: /x\n    calls:\n      a: {{ get: \"s:/\" }}\n",
        up.url()
    ))
    .await;
    let r = gw.get("/x").await;
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["kind"], "too_large");
}

// The whole tour against the real binary: each misbehaving upstream gets
// its status and kind, attacks on the listener are refused, and afterwards
// the process is still up, serves normally and has not grown.
#[tokio::test]
async fn the_gateway_survives_every_fault_with_bounded_memory() {
    let dead = format!("http://127.0.0.1:{}", free_port());
    let slow = TestUpstream::fixed(Reply::json(json!({})).after(ms(2000))).await;
    let mut partial = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"a\": [1, ".to_vec();
    partial.extend_from_slice(&[b' '; 100]);
    let reset = RawUpstream::start(Misbehave::ResetMidBody(partial)).await;
    let garbage = RawUpstream::start(Misbehave::Bytes(b"\x16\x03\x01XYZZY\r\n\r\n".to_vec())).await;
    let big = RawUpstream::start(Misbehave::Stream {
        head: chunked_head(""),
        chunk: vec![b' '; 16 << 10],
        limit: 50 << 20,
    })
    .await;
    let silent = RawUpstream::start(Misbehave::NeverAnswer).await;
    let html = TestUpstream::fixed(Reply::raw("text/html", "<html>502 Bad Gateway</html>")).await;
    let ok = TestUpstream::fixed(Reply::json(json!({"ok": true}))).await;
    let mut yaml = String::from("upstreams:\n");
    let faults = [
        ("dead", dead.clone(), 502, "connect"),
        ("slow", slow.url(), 504, "timeout"),
        ("reset", reset.url(), 502, "transport"),
        ("garbage", garbage.url(), 502, "transport"),
        ("big", big.url(), 502, "too_large"),
        ("silent", silent.url(), 504, "timeout"),
        ("html", html.url(), 502, "decode"),
    ];
    for (name, url, _, _) in &faults {
        yaml.push_str(&format!(
            "  {name}: {{ url: \"{url}\", timeout: 300ms, max_body: 1MiB }}\n"
        ));
    }
    yaml.push_str(&format!("  ok: {{ url: \"{}\" }}\nroutes:\n", ok.url()));
    for (name, _, _, _) in &faults {
        yaml.push_str(&format!(
            "  - get: /{name}\n    calls: {{ a: {{ get: \"{name}:/a\" }} }}\n"
        ));
    }
    yaml.push_str("  - get: /ok\n    calls: { a: { get: \"ok:/a\" } }\n");
    let gw = GatewayProcess::start_with_env(
        "  header_read_timeout: 1s\n",
        &yaml,
        &[("MALLOC_ARENA_MAX", "1")],
    )
    .await;
    let get = |p: &str| {
        let url = gw.url(p);
        async move { send(http::Method::GET, &url, &[], Default::default()).await }
    };
    let tour = || async {
        for (name, _, status, kind) in &faults {
            let r = get(&format!("/{name}")).await;
            assert_eq!(r.status.as_u16(), *status, "{name}: {}", r.text());
            assert_eq!(
                r.header("content-type"),
                "application/problem+json",
                "{name}"
            );
            assert_eq!(r.json()["kind"], *kind, "{name}: {}", r.text());
            assert_eq!(r.json()["upstream"], *name);
            assert!(
                !r.text().contains("<html>") && !r.text().contains("XYZZY"),
                "{name}: {}",
                r.text()
            );
        }
        let smuggled = b"POST /ok HTTP/1.1\r\nHost: gw\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert!(
            raw_exchange(gw.addr, smuggled, Duration::from_secs(2))
                .await
                .starts_with("HTTP/1.1 400")
        );
        let huge = format!(
            "GET /ok HTTP/1.1\r\nHost: gw\r\nX-Big: {}\r\n\r\n",
            "a".repeat(128 << 10)
        );
        assert!(
            raw_exchange(gw.addr, huge.as_bytes(), Duration::from_secs(2))
                .await
                .starts_with("HTTP/1.1 431")
        );
    };
    tour().await;
    let baseline = gw.rss();
    for _ in 0..3 {
        tour().await;
    }
    let grown = gw.rss().saturating_sub(baseline);
    // Allocator slack is a few MiB; buffering the 50 MB stream would be far more.
    assert!(
        grown < 8 << 20,
        "RSS grew by {grown} bytes over three tours"
    );
    assert_eq!(get("/ok").await.status, 200);
    let health = send(
        http::Method::GET,
        &format!("http://{}/healthz", gw.admin),
        &[],
        Default::default(),
    )
    .await;
    assert_eq!(health.status, 200);
}
