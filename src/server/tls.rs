//! How client connections are carried: plain TCP (HTTP/1.1, and HTTP/2 by
//! prior knowledge unless `h2c: false`) or TLS with ALPN choosing h2 or
//! http/1.1. Both end up as one boxed stream type so that the rest of the
//! connection handling is written once.

use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A client byte stream, plain or decrypted.
pub trait ClientIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> ClientIo for T {}

/// How a listener's connections are carried.
#[derive(Clone, Default)]
pub struct Transport {
    /// TLS, when the listener serves HTTPS.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Whether a plain connection may speak HTTP/2 (prior knowledge).
    pub h2c: bool,
}

impl Transport {
    /// Plain TCP with h2c (the admin listener, tests).
    pub fn plain() -> Self {
        Transport {
            tls: None,
            h2c: true,
        }
    }

    /// From the listener's settings.
    pub fn new(tls: Option<Arc<rustls::ServerConfig>>, h2c: bool) -> Self {
        Transport {
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            h2c,
        }
    }

    /// The stream to speak HTTP on, after a TLS handshake if there is one
    /// (bounded by `handshake_timeout`); `None` if the handshake failed.
    pub async fn open(
        &self,
        stream: TcpStream,
        handshake_timeout: Duration,
    ) -> Option<Box<dyn ClientIo>> {
        let Some(acceptor) = &self.tls else {
            return Some(Box::new(stream));
        };
        match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
            Ok(Ok(tls)) => Some(Box::new(tls)),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("TLS handshake timed out");
                None
            }
        }
    }
}
