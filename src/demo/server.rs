//! The network side of a demo service: an HTTP/1.1 server on one listener
//! that delays every answer by the configured latency and shuts down
//! gracefully when told to.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Service;
use super::rng::SplitMix64;
use super::routes::respond;

/// How long in-flight requests may take to finish once shutdown begins.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause after a failed accept (e.g. out of file descriptors), so a
/// persistent error does not spin the loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What every connection of one service shares.
struct State {
    service: Service,
    latency: Duration,
    jitter: Duration,
    /// Requests served so far; seeds each request's jitter, so a run's
    /// delays are reproducible.
    requests: AtomicU64,
}

/// Serves `service` on `listener` until `shutdown` changes or its sender is
/// dropped; the task ends once the open connections are drained.
pub fn spawn(
    service: Service,
    listener: TcpListener,
    latency: Duration,
    jitter: Duration,
    shutdown: watch::Receiver<()>,
) -> JoinHandle<()> {
    let state = Arc::new(State {
        service,
        latency,
        jitter,
        requests: AtomicU64::new(0),
    });
    tokio::spawn(accept_loop(listener, state, shutdown))
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, mut shutdown: watch::Receiver<()>) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => serve_connection(stream, &state, &graceful),
                Err(e) => {
                    tracing::warn!(service = %state.service, error = %e, "demo accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
            // Either a value was sent or the sender was dropped: stop both ways.
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(service = %state.service, "demo connections not drained in time");
    }
}

fn serve_connection(stream: TcpStream, state: &Arc<State>, graceful: &GracefulShutdown) {
    // Small JSON answers must not wait for Nagle's algorithm.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(error = %e, "demo: TCP_NODELAY not set");
    }
    let state = Arc::clone(state);
    let service = service_fn(move |request: http::Request<hyper::body::Incoming>| {
        let state = Arc::clone(&state);
        async move {
            let n = state.requests.fetch_add(1, Ordering::Relaxed);
            let pause = delay(state.latency, state.jitter, n);
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            let response = respond(state.service, request.method(), request.uri());
            Ok::<_, Infallible>(response.map(Full::new))
        }
    });
    // No timer, hence no header-read timeout: idle keep-alive connections
    // stay open until the client closes them, so a gateway's pool never
    // races a server-side idle close during benchmarks.
    let connection = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    let connection = graceful.watch(connection);
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "demo connection ended with an error");
        }
    });
}

/// The pause before answering request number `n`: uniform in
/// `latency ± jitter` (never below zero), exactly `latency` when `jitter`
/// is zero.
fn delay(latency: Duration, jitter: Duration, n: u64) -> Duration {
    if jitter.is_zero() {
        return latency;
    }
    let jitter_ns = u64::try_from(jitter.as_nanos()).unwrap_or(u64::MAX / 2);
    let offset = SplitMix64::new(n).below(jitter_ns.saturating_mul(2).saturating_add(1));
    (latency + Duration::from_nanos(offset)).saturating_sub(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delay_stays_within_jitter() {
        let ms = Duration::from_millis;
        assert_eq!(delay(ms(20), Duration::ZERO, 7), ms(20));
        let delays: Vec<_> = (0..1000).map(|n| delay(ms(20), ms(5), n)).collect();
        assert!(delays.iter().all(|d| (ms(15)..=ms(25)).contains(d)));
        assert!(delays.iter().any(|d| *d < ms(17)) && delays.iter().any(|d| *d > ms(23)));
        assert!((0..1000).all(|n| delay(ms(1), ms(5), n) <= ms(6)));
        assert_eq!(delay(ms(20), ms(5), 3), delay(ms(20), ms(5), 3));
    }
}
