//! Fixtures of the resilience and fault suites: metric reads, and raw TCP
//! upstreams that misbehave in ways a well-behaved hyper server cannot
//! (reset mid-body, garbage bytes, never answer, endless or bomb bodies).

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One sample's value in this process's Prometheus text (first line whose
/// name is `name` and that contains every one of `parts`), 0 when absent.
pub fn metric(name: &str, parts: &[&str]) -> f64 {
    let text = switchyard::telemetry::prometheus().render();
    text.lines()
        .filter(|l| l.split(['{', ' ']).next() == Some(name) && parts.iter().all(|p| l.contains(p)))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Milliseconds.
pub fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Polls `cond` every 10 ms until it holds or `within` passes; returns whether it held.
pub async fn eventually(within: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + within;
    loop {
        if cond() {
            return true;
        }
        if tokio::time::Instant::now() >= end {
            return false;
        }
        tokio::time::sleep(ms(10)).await;
    }
}

/// What a raw upstream does with each connection once it has read a request head.
#[derive(Clone)]
pub enum Misbehave {
    /// Writes these bytes, then closes.
    Bytes(Vec<u8>),
    /// Writes the head and part of the body, then resets the connection.
    ResetMidBody(Vec<u8>),
    /// Reads the request and never answers (keeps the socket open).
    NeverAnswer,
    /// Writes a chunked head, then `chunk` forever (until the peer leaves
    /// or `limit` bytes were written).
    Stream {
        head: Vec<u8>,
        chunk: Vec<u8>,
        limit: u64,
    },
}

/// A raw TCP upstream: counts connections and notices when they close.
pub struct RawUpstream {
    pub addr: SocketAddr,
    /// Connections accepted.
    pub accepted: Arc<AtomicU64>,
    /// Connections the peer closed (or reset) on us.
    pub closed_by_peer: Arc<AtomicU64>,
    /// Body bytes written, over all connections.
    pub written: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    /// Starts one on a free loopback port.
    pub async fn start(what: Misbehave) -> RawUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU64::new(0));
        let closed_by_peer = Arc::new(AtomicU64::new(0));
        let written = Arc::new(AtomicU64::new(0));
        let (a, c, w) = (accepted.clone(), closed_by_peer.clone(), written.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                a.fetch_add(1, Ordering::SeqCst);
                let (what, c, w) = (what.clone(), c.clone(), w.clone());
                tokio::spawn(serve(stream, what, c, w));
            }
        });
        RawUpstream {
            addr,
            accepted,
            closed_by_peer,
            written,
            task,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::SeqCst)
    }
    pub fn closed_by_peer(&self) -> u64 {
        self.closed_by_peer.load(Ordering::SeqCst)
    }
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }
}

async fn read_head(s: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut byte).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&byte[..n]),
        }
        if buf.len() > 64 << 10 {
            return false;
        }
    }
    true
}

async fn serve(mut s: TcpStream, what: Misbehave, closed: Arc<AtomicU64>, written: Arc<AtomicU64>) {
    if !read_head(&mut s).await {
        return;
    }
    match what {
        Misbehave::Bytes(b) => {
            let _ = s.write_all(&b).await;
            let _ = s.shutdown().await;
        }
        Misbehave::ResetMidBody(b) => {
            let _ = s.write_all(&b).await;
            // SO_LINGER 0: close with RST instead of FIN.
            #[allow(deprecated)] // linger 0 resets at once; it does not block
            let _ = s.set_linger(Some(Duration::ZERO));
            drop(s);
        }
        Misbehave::NeverAnswer => {
            let mut buf = [0u8; 1024];
            // Wait until the peer gives up (EOF or reset).
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            closed.fetch_add(1, Ordering::SeqCst);
        }
        Misbehave::Stream { head, chunk, limit } => {
            if s.write_all(&head).await.is_err() {
                closed.fetch_add(1, Ordering::SeqCst);
                return;
            }
            let framed = [
                format!("{:x}\r\n", chunk.len()).into_bytes(),
                chunk.clone(),
                b"\r\n".to_vec(),
            ]
            .concat();
            let mut sent = 0u64;
            while sent < limit {
                if s.write_all(&framed).await.is_err() {
                    closed.fetch_add(1, Ordering::SeqCst);
                    return;
                }
                sent += chunk.len() as u64;
                written.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            let _ = s.write_all(b"0\r\n\r\n").await;
        }
    }
}

/// A complete HTTP/1.1 response with a fixed length.
pub fn http_response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut out = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        out.push_str(&format!("{k}: {v}\r\n"));
    }
    out.push_str("\r\n");
    let mut out = out.into_bytes();
    out.extend_from_slice(body);
    out
}

/// This process's resident set size in bytes (Linux).
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// gzip of `data`.
pub fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The real `switchyard run` binary serving a config file (for signals,
/// reloads, per-process memory and gauges). Killed when dropped.
pub struct GatewayProcess {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: std::path::PathBuf,
    pub config: std::path::PathBuf,
    child: Option<std::process::Child>,
}

impl GatewayProcess {
    /// Writes `yaml` (after a `server:` block choosing free ports and
    /// holding `server_extra` lines) to a fresh directory and runs it.
    pub async fn start(server_extra: &str, yaml: &str) -> GatewayProcess {
        Self::start_with_env(server_extra, yaml, &[]).await
    }

    /// `start` with extra environment variables for the process.
    pub async fn start_with_env(
        server_extra: &str,
        yaml: &str,
        env: &[(&str, &str)],
    ) -> GatewayProcess {
        static N: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "switchyard-e2e-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let (port, admin_port) = (free_port(), free_port());
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let admin: SocketAddr = format!("127.0.0.1:{admin_port}").parse().unwrap();
        let config = dir.join("switchyard.yaml");
        std::fs::write(&config, Self::text(addr, admin, server_extra, yaml)).unwrap();
        let log = std::fs::File::create(dir.join("stderr.log")).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
            .args(["run", "--config"])
            .arg(&config)
            .env("RUST_LOG", "switchyard=info")
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let gw = GatewayProcess {
            addr,
            admin,
            dir,
            config,
            child: Some(child),
        };
        let up = eventually(Duration::from_secs(15), || {
            std::net::TcpStream::connect(addr).is_ok()
                && std::net::TcpStream::connect(admin).is_ok()
        })
        .await;
        assert!(up, "the gateway did not start:\n{}", gw.log());
        gw
    }

    /// The config text for these addresses.
    pub fn text(addr: SocketAddr, admin: SocketAddr, server_extra: &str, yaml: &str) -> String {
        format!("server:\n  listen: \"{addr}\"\n  admin_listen: \"{admin}\"\n{server_extra}{yaml}")
    }

    /// Replaces the config file's content (through a rename, as editors and
    /// Kubernetes ConfigMaps do).
    pub fn rewrite(&self, server_extra: &str, yaml: &str) {
        let tmp = self.dir.join("switchyard.yaml.tmp");
        std::fs::write(&tmp, Self::text(self.addr, self.admin, server_extra, yaml)).unwrap();
        std::fs::rename(&tmp, &self.config).unwrap();
    }

    /// What the process logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }

    /// `http://ADDR` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends a signal (`TERM`, `INT`, `HUP`).
    pub fn signal(&self, name: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} failed");
    }

    /// Waits up to `within` for the process to exit; its exit success.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<bool> {
        let end = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < end {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Some(status.success());
            }
            tokio::time::sleep(ms(20)).await;
        }
        None
    }

    /// The process's resident set size in bytes.
    pub fn rss(&self) -> u64 {
        let statm =
            std::fs::read_to_string(format!("/proc/{}/statm", self.pid())).unwrap_or_default();
        let pages: u64 = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }

    /// The process's open TCP connections as counted by its file descriptors.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid()))
            .map(|d| d.count())
            .unwrap_or(0)
    }

    /// Its `/metrics` text.
    pub async fn metrics(&self) -> String {
        crate::common::send(
            http::Method::GET,
            &format!("http://{}/metrics", self.admin),
            &[],
            bytes::Bytes::new(),
        )
        .await
        .text()
    }

    /// One sample of its metrics (0 when absent).
    pub async fn metric(&self, name: &str, parts: &[&str]) -> f64 {
        self.metrics()
            .await
            .lines()
            .filter(|l| {
                l.split(['{', ' ']).next() == Some(name) && parts.iter().all(|p| l.contains(p))
            })
            .find_map(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
