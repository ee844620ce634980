//! How client connections are carried: plain TCP (HTTP/1.1, and HTTP/2 by
//! prior knowledge unless `h2c: false`) or TLS with ALPN choosing h2 or
//! http/1.1. Both end up as one boxed stream type so that the rest of the
//! connection handling is written once.
//!
//! The TLS config is looked up per connection from the gateway being
//! served, so a reload with a renewed certificate applies to every new
//! connection (whether a listener uses TLS at all is fixed at start).

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
    pub tls: Option<TlsSource>,
    /// Whether a plain connection may speak HTTP/2 (prior knowledge).
    pub h2c: bool,
}

/// Where a connection's TLS config comes from.
#[derive(Clone)]
pub enum TlsSource {
    /// Always this one.
    Fixed(Arc<rustls::ServerConfig>),
    /// The served gateway's, falling back to the one the listener started with.
    Current {
        /// The gateway being served.
        gateway: super::SharedGateway,
        /// The config at start.
        fallback: Arc<rustls::ServerConfig>,
    },
}

impl TlsSource {
    fn config(&self) -> Arc<rustls::ServerConfig> {
        match self {
            TlsSource::Fixed(c) => c.clone(),
            TlsSource::Current { gateway, fallback } => gateway
                .load()
                .plan
                .server
                .tls
                .clone()
                .unwrap_or_else(|| fallback.clone()),
        }
    }
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
            tls: tls.map(TlsSource::Fixed),
            h2c,
        }
    }

    /// For a served gateway: its TLS config as it is when each connection arrives.
    pub fn for_gateway(gateway: &super::SharedGateway) -> Self {
        let server = &gateway.load().plan.server;
        Transport {
            tls: server.tls.clone().map(|fallback| TlsSource::Current {
                gateway: gateway.clone(),
                fallback,
            }),
            h2c: server.h2c,
        }
    }

    /// The stream to speak HTTP on, after a TLS handshake if there is one
    /// (bounded by `handshake_timeout`); `None` if the handshake failed.
    pub async fn open(
        &self,
        stream: TcpStream,
        handshake_timeout: Duration,
    ) -> Option<Box<dyn ClientIo>> {
        let Some(source) = &self.tls else {
            return Some(Box::new(stream));
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(source.config());
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
