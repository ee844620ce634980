//! The listener: accepts connections (HTTP/1.1 and HTTP/2 on one port),
//! serves each with the gateway's handler, and drains them on shutdown.
//!
//! Client-side limits (`server.limits`) are applied here: a header-read
//! timeout, a cap on the request head, a connection cap (connections over
//! it are closed at once), and a time limit from request head to response
//! head. The gateway being served sits behind an `ArcSwap` so that a reload
//! (`reload.rs`) replaces it atomically: each request takes the gateway
//! current when it arrives and keeps it to the end.

mod conn;
mod forwarded;
mod framing;
mod handler;
mod observe;
mod problem;
mod proxy;
pub mod reload;
mod timing;
pub mod tls;

pub use forwarded::{client_ip, is_trusted};
pub use readiness::Readiness;

pub mod readiness;

use crate::cache::Cache;
use crate::limit::Limiter;
use crate::plan::{ListenerLimits, Plan};
use crate::telemetry::{self, Telemetry, TelemetryError};
use crate::upstream::{Body, Upstreams};
use arc_swap::ArcSwap;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use hyper_util::server::conn::auto;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long a client may take to send its request headers: stops slow-header
/// (slowloris) clients from holding connections open.
pub const HEADER_READ_TIMEOUT: Duration = crate::plan::resilience::DEFAULT_HEADER_READ_TIMEOUT;
/// How long shutdown waits for in-flight requests.
pub const DRAIN_TIMEOUT: Duration = crate::plan::resilience::DEFAULT_DRAIN_TIMEOUT;

/// What the connection's service returns for one request. Boxed on
/// purpose: hyper keeps a slot the size of the service future in every
/// connection for its whole life, idle or not, and the handler's future is
/// several KiB. Boxed, an idle connection holds a pointer and the box lives
/// only while a request is being answered.
type ResponseFuture =
    Pin<Box<dyn Future<Output = Result<Response<conn::Tracked>, Infallible>> + Send>>;

/// The gateway being served, replaceable as a whole by a reload.
pub type SharedGateway = Arc<ArcSwap<Gateway>>;

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

    /// The gateway for a reloaded plan: fresh pools and policies, the same
    /// readiness (a reload never makes the process look unready).
    pub fn reloaded(plan: Plan, previous: &Gateway) -> Arc<Self> {
        let fresh = Self::new(plan);
        match Arc::try_unwrap(fresh) {
            Ok(mut gw) => {
                gw.readiness = previous.readiness.clone();
                Arc::new(gw)
            }
            Err(shared) => shared,
        }
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
    serve_shared(Arc::new(ArcSwap::new(gateway)), listener)
}

/// Serves whichever gateway `shared` holds when each request arrives; the
/// listener limits are those of the gateway served first.
pub fn serve_shared(
    shared: SharedGateway,
    listener: TcpListener,
) -> std::io::Result<RunningServer> {
    telemetry::prometheus();
    let server = shared.load().plan.server.clone();
    let request_timeout = server.limits.request_timeout;
    let transport = tls::Transport::for_gateway(&shared);
    let first = shared.load_full();
    let readiness = first.readiness.clone();
    let mut running = serve_fn_with(listener, server.limits, transport, move |req, peer| {
        let gw = shared.load_full();
        async move {
            match tokio::time::timeout(request_timeout, handler::handle(&gw, req, peer)).await {
                Ok(resp) => resp,
                Err(_) => problem::problem(
                    StatusCode::GATEWAY_TIMEOUT,
                    "Request timed out",
                    format!(
                        "no response within the request time limit of {}",
                        humantime::format_duration(request_timeout)
                    ),
                    serde_json::Map::new(),
                ),
            }
        }
    })?;
    readiness.ready();
    running.readiness = Some(readiness);
    Ok(running)
}

/// Accepts connections on `listener` and answers every request with
/// `handle` (HTTP/1.1 and HTTP/2), with default limits, until shut down.
pub fn serve_fn<F, Fut>(listener: TcpListener, handle: F) -> std::io::Result<RunningServer>
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    serve_fn_with(
        listener,
        ListenerLimits::default(),
        tls::Transport::plain(),
        handle,
    )
}

/// `serve_fn` with the given client-side limits.
pub fn serve_fn_with<F, Fut>(
    listener: TcpListener,
    limits: ListenerLimits,
    transport: tls::Transport,
    handle: F,
) -> std::io::Result<RunningServer>
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let addr = listener.local_addr()?;
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut auto = auto::Builder::new(TokioExecutor::new());
        auto.http1()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_size)
            .keep_alive(true);
        auto.http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX));
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .max_buf_size(limits.max_header_size)
            .keep_alive(true);
        // Plain connections without h2c speak HTTP/1.1 only; over TLS,
        // ALPN has chosen the protocol and the preface confirms it.
        let http1_only = !transport.h2c && transport.tls.is_none();
        let serving = Arc::new(conn::Serving {
            http1,
            auto,
            http1_only,
            header_read_timeout: limits.header_read_timeout,
        });
        let handle = Arc::new(handle);
        let connections = Arc::new(tokio::sync::Semaphore::new(
            limits
                .max_connections
                .min(tokio::sync::Semaphore::MAX_PERMITS),
        ));
        // Each connection holds a receiver; the drain waits for them all.
        let (drain, _) = watch::channel(());
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
            // Over the connection cap: close at once rather than queue.
            let Ok(slot) = connections.clone().try_acquire_owned() else {
                tracing::debug!(%peer, "connection cap reached; closing");
                telemetry::connection_refused();
                drop(stream);
                continue;
            };
            let _ = stream.set_nodelay(true);
            let handle = handle.clone();
            let (transport, serving) = (transport.clone(), serving.clone());
            let (stopped, draining) = (stopped.clone(), drain.subscribe());
            let handshake_timeout = limits.header_read_timeout;
            tokio::spawn(async move {
                // The handshake runs here, not in the accept loop, so a
                // slow TLS client holds only its own task.
                let Some(io) = transport.open(stream, handshake_timeout).await else {
                    return;
                };
                // The framing guard reads the plaintext side.
                let suspicious = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let io = framing::Guarded::new(io, suspicious.clone());
                let activity = Arc::new(conn::Activity::default());
                let requests = activity.clone();
                let service = service_fn(move |req| -> ResponseFuture {
                    use futures_util::FutureExt as _;
                    let busy = requests.start();
                    match framing::refuse_ambiguous(&req, &suspicious) {
                        Some(refused) => Box::pin(std::future::ready(Ok(
                            refused.map(|b| conn::Tracked::new(b, busy))
                        ))),
                        None => Box::pin(
                            handle(req, peer)
                                .map(move |r| Ok(r.map(|b| conn::Tracked::new(b, busy)))),
                        ),
                    }
                });
                let ended = conn::serve(io, service, activity, &serving, stopped).await;
                if let Err(e) = ended {
                    tracing::debug!(error = %e, %peer, "connection ended with an error");
                }
                drop(slot);
                drop(draining);
            });
        }
        drop(listener);
        if tokio::time::timeout(limits.drain_timeout, drain.closed())
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
