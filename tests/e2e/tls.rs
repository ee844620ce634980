//! TLS: the listener over HTTPS (HTTP/1.1 and HTTP/2 through ALPN), h2c,
//! and https upstreams (a configured CA; h2 through ALPN), with
//! certificates generated for each test by rcgen.

use crate::common::*;
use bytes::Bytes;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::json;
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;

/// A CA and a server certificate for `localhost` and 127.0.0.1, as PEM files.
struct Certs {
    dir: PathBuf,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    ca_der: rustls_pki_types::CertificateDer<'static>,
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn certs() -> Certs {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "switchyard-tls-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "switchyard test CA");
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let params =
        rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = params.signed_by(&key, &ca).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    Certs {
        dir,
        ca: paths.0,
        cert: paths.1,
        key: paths.2,
        ca_der: ca.der().clone(),
    }
}

fn client_config(c: &Certs) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(c.ca_der.clone()).unwrap();
    rustls::ClientConfig::builder_with_provider(switchyard::plan::tls_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth()
}

type HttpsClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// A client trusting the test CA; `h2` offers HTTP/2 through ALPN.
fn https_client(c: &Certs, h2: bool) -> HttpsClient {
    let b = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(client_config(c))
        .https_only();
    let connector = if h2 {
        b.enable_http1().enable_http2().build()
    } else {
        b.enable_http1().build()
    };
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn get(client: &HttpsClient, url: &str) -> (Version, u16, serde_json::Value) {
    let resp = client
        .request(Request::get(url).body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{url}: {e:?}"));
    let (version, status) = (resp.version(), resp.status().as_u16());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (version, status, serde_json::from_slice(&body).unwrap())
}

// The listener serves HTTPS: HTTP/2 when the client offers it through
// ALPN, HTTP/1.1 otherwise.
#[tokio::test]
async fn listener_serves_https_with_h2_and_http1() {
    let c = certs();
    let up = TestUpstream::fixed(Reply::json(json!({"ok": true}))).await;
    let gw = TestGateway::start(&format!(
        r#"
server:
  tls: {{ cert: "{}", key: "{}" }}
upstreams:
  up: {{ url: "{}" }}
routes:
  - get: /x
    calls:
      a: {{ get: "up:/a" }}
"#,
        c.cert.display(),
        c.key.display(),
        up.url()
    ))
    .await;
    let url = format!("https://localhost:{}/x", gw.addr.port());
    let (v, status, body) = get(&https_client(&c, true), &url).await;
    assert_eq!((v, status), (Version::HTTP_2, 200));
    assert_eq!(body, json!({"a": {"ok": true}}));
    let (v, status, _) = get(&https_client(&c, false), &url).await;
    assert_eq!((v, status), (Version::HTTP_11, 200));
    // Plain HTTP on the TLS port is not served.
    let out = raw_exchange(
        gw.addr,
        b"GET /x HTTP/1.1\r\nHost: gw\r\n\r\n",
        std::time::Duration::from_secs(2),
    )
    .await;
    assert!(!out.contains("200 OK"), "{out}");
}

fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

// h2c (HTTP/2 by prior knowledge) is served on a plain listener unless
// `h2c: false`.
#[tokio::test]
async fn h2c_is_optional() {
    let up = TestUpstream::fixed(Reply::json(json!({"ok": true}))).await;
    let routes = format!(
        "upstreams:\n  up: {{ url: \"{}\" }}\nroutes:\n  - get: /x\n    calls:\n      a: {{ get: \"up:/a\" }}\n",
        up.url()
    );
    let on = TestGateway::start(&routes).await;
    let resp = h2c_client()
        .request(
            Request::get(on.url("/x"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        (resp.version(), resp.status().as_u16()),
        (Version::HTTP_2, 200)
    );
    let off = TestGateway::start(&format!("server:\n  h2c: false\n{routes}")).await;
    let refused = h2c_client()
        .request(
            Request::get(off.url("/x"))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await;
    assert!(refused.is_err(), "h2c was served with h2c: false");
    assert_eq!(off.get("/x").await.status, 200);
}

/// An HTTPS upstream (h1 and h2 through ALPN) that records each request's version.
async fn tls_upstream(c: &Certs) -> (std::net::SocketAddr, Arc<Mutex<Vec<Version>>>) {
    let certs: Vec<_> = rustls_pki_types::pem::PemObject::pem_file_iter(&c.cert)
        .unwrap()
        .map(|c| c.unwrap())
        .collect();
    let key = rustls_pki_types::pem::PemObject::from_pem_file(&c.key).unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(switchyard::plan::tls_provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let versions = Arc::new(Mutex::new(Vec::new()));
    let seen = versions.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |req: Request<Incoming>| {
                    seen.lock().unwrap().push(req.version());
                    async move {
                        let mut resp =
                            Response::new(Full::new(Bytes::from_static(br#"{"secure":true}"#)));
                        resp.headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, versions)
}

// https upstreams: a configured CA is trusted, `http2: true` speaks h2
// (ALPN), and a certificate the roots do not vouch for is a 502 `connect`.
#[tokio::test]
async fn https_upstreams_with_a_ca_and_h2() {
    let c = certs();
    let other = certs();
    let (addr, versions) = tls_upstream(&c).await;
    let gw = TestGateway::start(&format!(
        r#"
upstreams:
  h1: {{ url: "https://localhost:{port}", ca: "{ca}" }}
  h2: {{ url: "https://127.0.0.1:{port}", ca: "{ca}", http2: true }}
  wrong_ca: {{ url: "https://localhost:{port}", ca: "{other}" }}
routes:
  - get: /h1
    calls: {{ a: {{ get: "h1:/a" }} }}
  - get: /h2
    calls: {{ a: {{ get: "h2:/a" }} }}
  - get: /wrong
    calls: {{ a: {{ get: "wrong_ca:/a" }} }}
"#,
        port = addr.port(),
        ca = c.ca.display(),
        other = other.ca.display()
    ))
    .await;
    let r = gw.get("/h1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json(), json!({"a": {"secure": true}}));
    assert_eq!(gw.get("/h2").await.status, 200);
    assert_eq!(
        *versions.lock().unwrap(),
        vec![Version::HTTP_11, Version::HTTP_2]
    );
    let r = gw.get("/wrong").await;
    assert_eq!(r.status, 502, "{}", r.text());
    assert_eq!(r.json()["kind"], "connect");
    assert_eq!(versions.lock().unwrap().len(), 2);
}

// A missing certificate or CA file is a config error at the line naming it.
#[test]
fn missing_tls_files_are_config_errors_at_their_line() {
    let yaml = "server:\n  tls:\n    cert: /nonexistent/cert.pem\n    key: /nonexistent/key.pem\nupstreams:\n  u:\n    url: https://localhost:1\n    ca: /nonexistent/ca.pem\nroutes: []\n";
    let report = match switchyard::plan::compile_str("tls.yaml", yaml) {
        Err(switchyard::plan::LoadError::Invalid(r)) => r,
        other => panic!("{:?}", other.map(|_| ())),
    };
    let text = report.to_string();
    assert!(
        text.contains("tls.yaml:3:11: error: `tls.cert`: cannot read `/nonexistent/cert.pem`"),
        "{text}"
    );
    assert!(text.contains("tls.yaml:4:10: error: `tls.key`"), "{text}");
    assert!(
        text.contains("tls.yaml:8:9: error: `ca`: cannot read `/nonexistent/ca.pem`"),
        "{text}"
    );
}

// A reload with a renewed certificate applies to new connections: the
// listener keeps serving, and clients see the new certificate.
#[tokio::test]
async fn a_reload_renews_the_listener_certificate() {
    let (old, new) = (certs(), certs());
    let up = TestUpstream::fixed(Reply::json(json!({"ok": true}))).await;
    let config = |c: &Certs| {
        format!(
            "server:\n  tls: {{ cert: \"{}\", key: \"{}\" }}\nupstreams:\n  up: {{ url: \"{}\" }}\nroutes:\n  - get: /x\n    calls:\n      a: {{ get: \"up:/a\" }}\n",
            c.cert.display(),
            c.key.display(),
            up.url()
        )
    };
    let plan = |c: &Certs| {
        switchyard::plan::compile_str("tls.yaml", &config(c))
            .unwrap()
            .0
    };
    let shared: switchyard::server::SharedGateway = Arc::new(arc_swap::ArcSwap::new(
        switchyard::server::Gateway::new(plan(&old)),
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let _server = switchyard::server::serve_shared(shared.clone(), listener).unwrap();
    let url = format!("https://localhost:{port}/x");
    let (_, status, _) = get(&https_client(&old, false), &url).await;
    assert_eq!(status, 200);
    shared.store(switchyard::server::Gateway::new(plan(&new)));
    let (_, status, _) = get(&https_client(&new, false), &url).await;
    assert_eq!(status, 200);
    // A client that trusts only the old CA now refuses the certificate.
    let refused = https_client(&old, false)
        .request(Request::get(&url).body(Full::new(Bytes::new())).unwrap())
        .await;
    assert!(refused.is_err(), "the old certificate is still served");
}
