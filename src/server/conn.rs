//! Serving one client connection, and parking it while it is idle.
//!
//! hyper keeps about 16 KiB for each HTTP/1 connection (an 8 KiB read
//! buffer and an 8 KiB write buffer) for the connection's whole life, idle
//! or not. An idle keep-alive connection needs none of it: after
//! `PARK_AFTER` without a request or a byte read, its hyper connection is
//! ended gracefully (nothing is written, the socket stays open) and the
//! socket waits for its next bytes alone, holding a few hundred bytes. When
//! they come, a new hyper connection takes over, starting with them. The
//! client sees one keep-alive connection throughout.
//!
//! Limits are kept: a parked connection is closed when no request comes
//! within the header-read timeout (as hyper closes an idle keep-alive
//! connection), and a request head that stalled half-read is resumed with
//! only the time it has left. HTTP/2 connections (recognised by their
//! preface) are served by hyper's auto builder as they are: their state is
//! of another kind, and they are few.

use super::ResponseFuture;
use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use pin_project_lite::pin_project;
use std::convert::Infallible;
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::Instant;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long an HTTP/1 connection stays without a request (and without a
/// byte read) before it is parked: between this and twice this.
pub const PARK_AFTER: Duration = Duration::from_millis(250);

/// The start of every HTTP/2 connection (RFC 9113 §3.4).
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Requests of one connection: how many started, how many are unfinished
/// (their response body not yet sent or dropped).
#[derive(Default)]
pub struct Activity {
    started: AtomicUsize,
    active: AtomicUsize,
    /// Bytes read from the client.
    read: AtomicUsize,
}

impl Activity {
    /// A request starts; the guard ends it when dropped.
    pub fn start(self: &Arc<Self>) -> Busy {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.active.fetch_add(1, Ordering::Relaxed);
        Busy(self.clone())
    }
}

/// A request not yet finished (held by its response body).
pub struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::Relaxed);
    }
}

pin_project! {
    /// A response body that ends its request's `Busy` when it is dropped.
    pub struct Tracked {
        #[pin]
        inner: crate::upstream::Body,
        busy: Busy,
    }
}

impl Tracked {
    /// `inner`, finishing `busy` with it.
    pub fn new(inner: crate::upstream::Body, busy: Busy) -> Self {
        Tracked { inner, busy }
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = crate::upstream::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How a listener's connections are served.
#[derive(Clone)]
pub struct Serving {
    /// HTTP/1 connections (the parkable kind).
    pub http1: http1::Builder,
    /// Everything else (HTTP/2), or everything when `park` is false.
    pub auto: auto::Builder<TokioExecutor>,
    /// Only HTTP/1 is spoken: no sniffing for the HTTP/2 preface.
    pub http1_only: bool,
    /// The header-read timeout (`server.header_read_timeout`).
    pub header_read_timeout: Duration,
}

/// Serves one connection until it ends or `stopped` turns true (then
/// gracefully: the request in progress is answered first).
pub async fn serve<I, S>(
    io: I,
    service: S,
    activity: Arc<Activity>,
    serving: &Serving,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<
            Request<Incoming>,
            Response = Response<Tracked>,
            Error = Infallible,
            Future = ResponseFuture,
        > + Clone
        + Unpin
        + Send
        + 'static,
{
    let mut io = Rewind::new(io, activity.clone());
    // The time a request head read so far has left (a stalled half head).
    let mut head_deadline: Option<Instant> = None;
    let mut first = true;
    loop {
        if io.prefix.is_empty() {
            // Parked: nothing of hyper's is held while waiting.
            let wait = if first {
                serving.header_read_timeout
            } else {
                serving.header_read_timeout.saturating_sub(PARK_AFTER)
            };
            let bytes = tokio::select! {
                r = read_some(&mut io.inner) => match r {
                    Ok(b) if b.is_empty() => return Ok(()),
                    Ok(b) => b,
                    Err(_) => return Ok(()),
                },
                _ = tokio::time::sleep(wait) => return Ok(()),
                _ = wait_stop(&mut stopped) => return Ok(()),
            };
            io.prefix = bytes;
        }
        if first {
            first = false;
            let n = io.prefix.len().min(H2_PREFACE.len());
            if !serving.http1_only && H2_PREFACE.starts_with(&io.prefix[..n]) {
                return serve_auto(io, service, serving, stopped).await;
            }
        }
        let mut builder = serving.http1.clone();
        if let Some(deadline) = head_deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            builder.header_read_timeout(left.max(Duration::from_millis(1)));
        }
        // Boxed: a parked connection's task then keeps no room for it.
        let mut conn = Box::new(builder.serve_connection(TokioIo::new(io), service.clone()));
        let timer = tokio::time::sleep(PARK_AFTER);
        tokio::pin!(timer);
        let mut seen = (
            activity.started.load(Ordering::Relaxed),
            activity.read.load(Ordering::Relaxed),
        );
        let mut closing = false;
        let mut parking = false;
        loop {
            tokio::select! {
                biased;
                ended = poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
                    ended?;
                    break;
                }
                _ = wait_stop(&mut stopped), if !closing => {
                    closing = true;
                    parking = false;
                    Pin::new(&mut *conn).graceful_shutdown();
                }
                _ = &mut timer, if !closing => {
                    let read = activity.read.load(Ordering::Relaxed);
                    let now = (activity.started.load(Ordering::Relaxed), read);
                    if now == seen && activity.active.load(Ordering::Relaxed) == 0 {
                        closing = true;
                        parking = true;
                        Pin::new(&mut *conn).graceful_shutdown();
                    } else {
                        seen = now;
                        timer.as_mut().reset(Instant::now() + PARK_AFTER);
                    }
                }
            }
        }
        let parts = (*conn).into_parts();
        if !parking {
            // Closed by the client, by hyper, or by the shutdown.
            let mut io = parts.io.into_inner();
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut io.inner).await;
            return Ok(());
        }
        io = parts.io.into_inner();
        if parts.read_buf.is_empty() {
            head_deadline = None;
        } else {
            // A head that stalled half-read: resumed with the time it has left.
            io.prefix = parts.read_buf;
            head_deadline.get_or_insert_with(|| {
                Instant::now() + serving.header_read_timeout.saturating_sub(PARK_AFTER)
            });
        }
    }
}

/// The auto builder (HTTP/2, or HTTP/1 when sniffing), never parked.
async fn serve_auto<I, S>(
    io: Rewind<I>,
    service: S,
    serving: &Serving,
    mut stopped: watch::Receiver<bool>,
) -> Result<(), BoxError>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<
            Request<Incoming>,
            Response = Response<Tracked>,
            Error = Infallible,
            Future = ResponseFuture,
        > + Clone
        + Send
        + 'static,
{
    let mut conn = Box::pin(
        serving
            .auto
            .serve_connection_with_upgrades(TokioIo::new(io), service),
    );
    let mut closing = false;
    loop {
        tokio::select! {
            ended = conn.as_mut() => return ended,
            _ = wait_stop(&mut stopped), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// Waits until the listener is told to stop (forever if it never is).
async fn wait_stop(stopped: &mut watch::Receiver<bool>) {
    if stopped.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Reads what is there (up to 1 KiB) into a fresh `Bytes`; empty at EOF.
/// The read buffer is on the stack of one poll only: a parked connection
/// keeps none.
async fn read_some<T: AsyncRead + Unpin>(io: &mut T) -> io::Result<Bytes> {
    poll_fn(|cx| {
        let mut buf = [0u8; 1024];
        let mut rb = ReadBuf::new(&mut buf);
        match Pin::new(&mut *io).poll_read(cx, &mut rb) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(Bytes::copy_from_slice(rb.filled()))),
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// A stream that first yields bytes already read from it, and counts the
/// bytes read through it.
pub struct Rewind<T> {
    inner: T,
    prefix: Bytes,
    activity: Arc<Activity>,
}

impl<T> Rewind<T> {
    fn new(inner: T, activity: Arc<Activity>) -> Self {
        Rewind {
            inner,
            prefix: Bytes::new(),
            activity,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Rewind<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            this.activity.read.fetch_add(n, Ordering::Relaxed);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            this.activity.read.fetch_add(n, Ordering::Relaxed);
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Rewind<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
