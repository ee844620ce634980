//! The listener: accepts connections (HTTP/1.1 and HTTP/2 on one port),
//! serves each with the gateway's handler, and drains them on shutdown.

mod forwarded;
mod handler;
mod observe;
mod problem;
mod proxy;
mod timing;

pub use forwarded::{client_ip, is_trusted};
pub use readiness::Readiness;

pub mod readiness;

use crate::cache::Cache;
use crate::limit::Limiter;
use crate::plan::Plan;
use crate::telemetry::{self, Telemetry, TelemetryError};
use crate::upstream::{Body, Upstreams};
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a client may take to send its request headers: stops slow-header
/// (slowloris) clients from holding connections open.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long shutdown waits for in-flight requests.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A compiled plan with the connection pools it needs: what serves requests.
pub struct Gateway {
    /// The plan.
    pub plan: Plan,
    /// One pool per upstream of the plan.
    pub upstreams: Upstreams,
    /// The plan's rate limit policies with their stores.
    pub limiter: Limiter,
    /// Metrics, statistics, access log, span export.
    pub telemetry: Telemetry,
    /// Whether it takes traffic (`/readyz`).
    pub readiness: Readiness,
    /// The caches of the plan's cached calls and routes.
    pub cache: Cache,
}

impl Gateway {
    /// A gateway for a plan, with fresh connection pools; fails when a
    /// telemetry sink (access log file, OTLP exporter) cannot start. Call
    /// inside a tokio runtime when the plan exports spans.
    pub fn try_new(plan: Plan) -> Result<Arc<Self>, TelemetryError> {
        let telemetry = Telemetry::new(&plan)?;
        Ok(Self::with_telemetry(plan, telemetry))
    }

    /// Like `try_new`, but a sink that cannot start is logged and left off.
    pub fn new(plan: Plan) -> Arc<Self> {
        let telemetry = Telemetry::new(&plan).unwrap_or_else(|e| {
            tracing::error!(error = %e, "telemetry sink disabled");
            Telemetry::without_sinks(&plan)
        });
        Self::with_telemetry(plan, telemetry)
    }

    fn with_telemetry(plan: Plan, telemetry: Telemetry) -> Arc<Self> {
        let upstreams = Upstreams::new(&plan);
        let limiter = Limiter::new(&plan.limits);
        let cache = Cache::new(&plan);
        Arc::new(Gateway {
            plan,
            upstreams,
            limiter,
            telemetry,
            readiness: Readiness::default(),
            cache,
        })
    }
}

/// A gateway serving on a socket.
pub struct RunningServer {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
    readiness: Option<Readiness>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, waits for in-flight requests (up to the drain
    /// timeout). The gateway reports not ready from the start of the drain.
    pub async fn shutdown(self) {
        if let Some(r) = &self.readiness {
            r.draining();
        }
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Waits until the server stops (it only stops through `shutdown`).
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Serves the gateway on an already bound listener.
/// The gateway is ready from here on: its listener is bound.
pub fn serve(gateway: Arc<Gateway>, listener: TcpListener) -> std::io::Result<RunningServer> {
    telemetry::prometheus();
    let readiness = gateway.readiness.clone();
    let mut server = serve_fn(listener, move |req, peer| {
        let gw = gateway.clone();
        async move { handler::handle(&gw, req, peer).await }
    })?;
    readiness.ready();
    server.readiness = Some(readiness);
    Ok(server)
}

/// Accepts connections on `listener` and answers every request with
/// `handle` (HTTP/1.1 and HTTP/2), until shut down.
pub fn serve_fn<F, Fut>(listener: TcpListener, handle: F) -> std::io::Result<RunningServer>
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT)
            .keep_alive(true);
        let graceful = GracefulShutdown::new();
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                _ = stopped.changed() => break,
            };
            let _ = stream.set_nodelay(true);
            let handle = handle.clone();
            let service = service_fn(move |req| {
                let fut = handle(req, peer);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            let conn = graceful.watch(conn.into_owned());
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
            });
        }
        drop(listener);
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("drain timeout passed; closing remaining connections");
        }
    });
    Ok(RunningServer {
        addr,
        stop,
        task,
        readiness: None,
    })
}

/// Binds `addr` and serves the gateway on it.
pub async fn bind(gateway: Arc<Gateway>, addr: SocketAddr) -> std::io::Result<RunningServer> {
    let listener = TcpListener::bind(addr).await?;
    serve(gateway, listener)
}
