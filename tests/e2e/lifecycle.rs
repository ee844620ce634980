//! The real binary's lifecycle: graceful shutdown on SIGTERM/SIGINT and hot
//! reload (file watch, SIGHUP, `POST /reload`), under load.

use crate::common::*;
use crate::kit::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::time::Instant;

fn routes(url: &str) -> String {
    format!(
        r#"
upstreams:
  up: {{ url: "{url}" }}
routes:
  - get: /v
    calls:
      a: {{ get: "up:/v" }}
    respond: a.body
"#
    )
}

// SIGTERM (and SIGINT): the listener stops accepting, the request in
// flight still gets its answer, and the process exits cleanly.
#[tokio::test]
async fn sigterm_and_sigint_drain_in_flight_requests() {
    let up = TestUpstream::fixed(Reply::json(json!({"v": 1})).after(ms(800))).await;
    for signal in ["TERM", "INT"] {
        let mut gw = GatewayProcess::start("  drain_timeout: 5s\n", &routes(&up.url())).await;
        let url = gw.url("/v");
        let in_flight =
            tokio::spawn(
                async move { send(http::Method::GET, &url, &[], Default::default()).await },
            );
        assert!(eventually(Duration::from_secs(5), || up.in_flight() == 1).await);
        gw.signal(signal);
        let r = in_flight.await.unwrap();
        assert_eq!(r.status, 200, "{signal}: {}", r.text());
        assert_eq!(r.json(), json!({"v": 1}));
        assert_eq!(
            gw.wait_exit(Duration::from_secs(5)).await,
            Some(true),
            "{signal}:\n{}",
            gw.log()
        );
        assert!(
            std::net::TcpStream::connect(gw.addr).is_err(),
            "still accepting after {signal}"
        );
    }
}

// A request that outlasts the drain timeout does not hold the process: it
// exits once `drain_timeout` has passed.
#[tokio::test]
async fn shutdown_stops_waiting_after_the_drain_timeout() {
    let up = TestUpstream::fixed(Reply::json(json!({"v": 1})).after(ms(10_000))).await;
    let mut gw = GatewayProcess::start("  drain_timeout: 1s\n", &routes(&up.url())).await;
    let url = gw.url("/v");
    let _stuck = tokio::spawn(async move {
        let _ = tokio::time::timeout(
            Duration::from_secs(8),
            send(http::Method::GET, &url, &[], Default::default()),
        )
        .await;
    });
    assert!(eventually(Duration::from_secs(5), || up.in_flight() == 1).await);
    let t = Instant::now();
    gw.signal("TERM");
    assert!(
        gw.wait_exit(Duration::from_secs(5)).await.is_some(),
        "{}",
        gw.log()
    );
    // The 1 s drain timeout, with a margin.
    assert!(
        t.elapsed() >= ms(900) && t.elapsed() < ms(3000),
        "{:?}",
        t.elapsed()
    );
}

/// Keeps `clients` loops requesting `/v` until stopped; counts answers by
/// their `v` and every failure.
struct Load {
    stop: Arc<AtomicBool>,
    ok_v1: Arc<AtomicU64>,
    ok_v2: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let (ok_v1, ok_v2) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, v1, v2, f, url) = (
                    stop.clone(),
                    ok_v1.clone(),
                    ok_v2.clone(),
                    failures.clone(),
                    url.clone(),
                );
                tokio::spawn(async move {
                    // Bounded: at most 10 000 requests per client.
                    for _ in 0..10_000 {
                        if stop.load(Ordering::SeqCst) {
                            break;
                        }
                        let r = send(http::Method::GET, &url, &[], Default::default()).await;
                        match (r.status.as_u16(), r.json()["v"].as_u64()) {
                            (200, Some(1)) => v1.fetch_add(1, Ordering::SeqCst),
                            (200, Some(2)) => v2.fetch_add(1, Ordering::SeqCst),
                            _ => {
                                f.lock().unwrap().push(format!("{} {}", r.status, r.text()));
                                0
                            }
                        };
                    }
                })
            })
            .collect();
        Load {
            stop,
            ok_v1,
            ok_v2,
            failures,
            tasks,
        }
    }

    fn v2(&self) -> u64 {
        self.ok_v2.load(Ordering::SeqCst)
    }

    async fn finish(self) -> (u64, u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        let failures = self.failures.lock().unwrap().clone();
        (
            self.ok_v1.load(Ordering::SeqCst),
            self.ok_v2.load(Ordering::SeqCst),
            failures,
        )
    }
}

async fn admin(gw: &GatewayProcess, method: http::Method) -> TestResponse {
    send(
        method,
        &format!("http://{}/reload", gw.admin),
        &[],
        Default::default(),
    )
    .await
}

// Hot reload under load, by each trigger in turn: the new config (another
// upstream) takes over, a bad file keeps the old one serving and reports
// the error (admin endpoint, metric, log), and no request fails.
#[tokio::test]
async fn reload_under_load_never_fails_a_request() {
    let v1 = TestUpstream::fixed(Reply::json(json!({"v": 1}))).await;
    let v2 = TestUpstream::fixed(Reply::json(json!({"v": 2}))).await;
    let gw = GatewayProcess::start("", &routes(&v1.url())).await;
    let load = Load::start(gw.url("/v"), 8);
    tokio::time::sleep(ms(300)).await;

    // 1. The file watch: rewriting the file (by rename) is enough.
    gw.rewrite("", &routes(&v2.url()));
    assert!(
        eventually(Duration::from_secs(5), || load.v2() > 0).await,
        "the file watch did not reload:\n{}",
        gw.log()
    );

    // 2. A broken file: the old config keeps serving, the error is reported.
    gw.rewrite("", "upstreams:\n  up: { url: \"http://127.0.0.1:1\" }\nroutes:\n  - get: /v\n    calls:\n      a: { get: \"nope:/v\" }\n");
    let r = admin(&gw, http::Method::POST).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["result"], "error");
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("unknown upstream `nope`"),
        "{}",
        r.text()
    );
    assert!(
        r.json()["message"]
            .as_str()
            .unwrap()
            .contains("switchyard.yaml:"),
        "the error has no position: {}",
        r.text()
    );
    assert_eq!(
        admin(&gw, http::Method::GET).await.json()["result"],
        "error"
    );
    assert!(
        gw.metric("switchyard_config_reloads_total", &[r#"result="error""#])
            .await
            >= 1.0
    );
    let served_v2 = load.v2();
    tokio::time::sleep(ms(300)).await;
    assert!(load.v2() > served_v2, "the old config stopped serving");

    // 3. SIGHUP after fixing the file (back to v1, watch or signal, whichever is first).
    gw.rewrite("", &routes(&v1.url()));
    gw.signal("HUP");
    tokio::time::sleep(ms(1500)).await;
    let r = admin(&gw, http::Method::GET).await;
    assert_eq!(r.json()["result"], "ok", "{}", r.text());

    // 4. The admin endpoint, to v2 again.
    std::fs::write(
        &gw.config,
        GatewayProcess::text(gw.addr, gw.admin, "", &routes(&v2.url())),
    )
    .unwrap();
    let r = admin(&gw, http::Method::POST).await;
    assert_eq!(r.status, 200, "{}", r.text());
    tokio::time::sleep(ms(300)).await;
    let (n1, n2, failures) = load.finish().await;
    assert!(
        failures.is_empty(),
        "{} requests failed during reloads: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(n1 > 0 && n2 > 0);
    assert!(
        gw.metric("switchyard_config_reloads_total", &[r#"result="ok""#])
            .await
            >= 3.0
    );
    assert!(
        gw.log().contains("previous config keeps serving"),
        "{}",
        gw.log()
    );
}
