//! Request framing checks that hyper leaves to us (R18, request smuggling).
//!
//! hyper refuses two different `Content-Length` values and malformed
//! chunking (400, connection closed). Two ambiguities it accepts:
//! `Transfer-Encoding` together with `Content-Length` (it uses the chunked
//! framing, drops `Content-Length` and closes afterwards, as RFC 9112 §6.3
//! allows), and framing values with whitespace it trims (`chunked<TAB>` is
//! `chunked` to it). Proxies in front of the gateway may frame such requests
//! differently, which is how a request is smuggled past them. We refuse
//! them: 400, and the connection is closed, so nothing after the ambiguous
//! request is read as a request.
//!
//! Because hyper has normalised those headers by the time a request is
//! parsed, the check looks at the raw bytes: `Guarded` wraps a client
//! connection and scans the header lines it reads for framing headers; a
//! suspicious one marks the connection, and its request is refused before
//! it is routed. The scan runs over body bytes too (it cannot tell them
//! apart without framing them itself); a body would have to hold such a
//! header line, whitespace trick included, to be refused by mistake.
//! HTTP/2 connections (recognised by their preface) are not scanned: their
//! framing is binary and leaves nothing ambiguous.
//!
//! Requests sent upstream are always re-framed by our client (their own
//! `Content-Length` or chunking): client framing headers are never copied.

use super::problem::bad_request;
use crate::upstream::Body;
use http::{HeaderValue, Request, Response, header};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A connection whose reads are scanned for ambiguous framing headers.
pub struct Guarded<T> {
    inner: T,
    scanner: Scanner,
    suspicious: Arc<AtomicBool>,
}

impl<T> Guarded<T> {
    /// Wraps `inner`; `suspicious` is set once an ambiguous header is read.
    pub fn new(inner: T, suspicious: Arc<AtomicBool>) -> Self {
        Guarded {
            inner,
            scanner: Scanner::default(),
            suspicious,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let result = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &result
            && this.scanner.feed(&buf.filled()[before..])
        {
            this.suspicious.store(true, Ordering::Release);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
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

/// The longest header line kept for inspection; longer framing lines are
/// suspicious in themselves.
const MAX_LINE: usize = 256;

/// The start of every HTTP/2 connection (RFC 9113 §3.4): such a
/// connection has binary framing and no length ambiguity to look for.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n";

/// Finds framing header lines in a byte stream, line by line.
#[derive(Default)]
struct Scanner {
    /// The connection's first bytes, until it is clear whether it is HTTP/2.
    start: Vec<u8>,
    /// An HTTP/2 connection: nothing to scan.
    h2: bool,
    line: Vec<u8>,
    /// The current line is longer than `MAX_LINE`.
    overflow: bool,
    /// Framing headers seen since the last blank line (the current head).
    saw_te: bool,
    saw_cl: bool,
    found: bool,
}

impl Scanner {
    /// Feeds bytes; true once an ambiguous framing header has been seen.
    fn feed(&mut self, data: &[u8]) -> bool {
        if self.found {
            return true;
        }
        if self.h2 {
            return false;
        }
        if self.start.len() < H2_PREFACE.len() {
            let take = (H2_PREFACE.len() - self.start.len()).min(data.len());
            self.start.extend_from_slice(&data[..take]);
            if self.start == H2_PREFACE {
                self.h2 = true;
                return false;
            }
        }
        let mut rest = data;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.push(&rest[..nl]);
            self.end_line();
            rest = &rest[nl + 1..];
        }
        self.push(rest);
        self.found
    }

    fn push(&mut self, bytes: &[u8]) {
        let room = MAX_LINE.saturating_sub(self.line.len());
        self.line.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.overflow |= bytes.len() > room;
    }

    fn end_line(&mut self) {
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        if line.is_empty() {
            // The end of a head (or an empty line in a body).
            self.saw_te = false;
            self.saw_cl = false;
        } else if let Some((name, value)) = split_header(line) {
            let te = name.eq_ignore_ascii_case(b"transfer-encoding");
            let cl = name.eq_ignore_ascii_case(b"content-length");
            if te || cl {
                self.saw_te |= te;
                self.saw_cl |= cl;
                // A single optional space after the colon is what everyone
                // sends; tabs or trailing whitespace are framing tricks.
                let value = value.strip_prefix(b" ").unwrap_or(value);
                let tricky = value.is_empty()
                    || value.contains(&b'\t')
                    || value.ends_with(b" ")
                    || value.starts_with(b" ");
                if tricky || self.overflow || (self.saw_te && self.saw_cl) {
                    self.found = true;
                }
            }
        }
        self.line.clear();
        self.overflow = false;
    }
}

fn split_header(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = line.iter().position(|&b| b == b':')?;
    Some((&line[..colon], &line[colon + 1..]))
}

/// A 400 with `Connection: close` for a request on a connection that sent
/// an ambiguous framing header, or with a coding list other than `chunked`.
pub fn refuse_ambiguous<B>(req: &Request<B>, suspicious: &AtomicBool) -> Option<Response<Body>> {
    let reason = if suspicious.load(Ordering::Acquire) {
        "the request's length is ambiguous (conflicting or malformed Content-Length / Transfer-Encoding)"
    } else {
        let codings: Vec<&HeaderValue> = req
            .headers()
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .collect();
        let plain = codings.is_empty()
            || (codings.len() == 1 && codings[0].as_bytes().eq_ignore_ascii_case(b"chunked"));
        if plain {
            return None;
        }
        "the only Transfer-Encoding accepted is `chunked`"
    };
    let mut resp = bad_request(reason.into());
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    Some(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(pieces: &[&[u8]]) -> bool {
        let mut s = Scanner::default();
        pieces.iter().any(|p| s.feed(p))
    }

    #[test]
    fn finds_ambiguous_framing_across_reads() {
        assert!(scan(&[
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Enc",
            b"oding: chunked\r\n\r\n"
        ]));
        assert!(scan(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\t\r\n\r\n"
        ]));
        assert!(scan(&[b"POST / HTTP/1.1\r\ncontent-length:\t5\r\n\r\n"]));
        assert!(scan(&[b"POST / HTTP/1.1\r\nContent-Length: 5 \r\n\r\n"]));
    }

    #[test]
    fn plain_requests_pass() {
        assert!(!scan(&[
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello"
        ]));
        assert!(!scan(&[
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"
        ]));
        // Two pipelined requests, each with one framing header.
        assert!(!scan(&[
            b"POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ]));
        assert!(!scan(&[
            b"GET / HTTP/1.1\r\nX-Long: ",
            &[b'a'; 5000],
            b"\r\n\r\n"
        ]));
    }

    #[test]
    fn http2_connections_are_not_scanned() {
        // DATA frames may hold anything, header-like text included.
        assert!(!scan(&[
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        ]));
        assert!(!scan(&[
            b"PRI * HT",
            b"TP/2.0\r\n\r\nSM\r\n\r\n\r\nContent-Length:\t5\r\n",
        ]));
    }
}
