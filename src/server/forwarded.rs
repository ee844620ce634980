//! Who the client is and the `X-Forwarded-*` headers we send upstream.
//! Proxy headers are believed only from configured trusted proxies.

use crate::exec::render::Forwarding;
use http::{HeaderMap, HeaderValue};
use ipnet::IpNet;
use std::net::IpAddr;

/// Whether `peer` is one of the trusted proxies.
pub fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    let peer = peer.to_canonical();
    trusted.iter().any(|n| n.contains(&peer))
}

/// The `X-Forwarded-*` values for a request from `peer` that named `host`
/// (its Host header, or the authority of an absolute-form or HTTP/2 URI).
pub fn forwarding(
    client: &HeaderMap,
    host: Option<&HeaderValue>,
    peer: IpAddr,
    trusted: &[IpNet],
    proto: &'static str,
) -> Forwarding {
    let peer = peer.to_canonical();
    let trusted = is_trusted(peer, trusted);
    let prior = |name: &str| client.get(name).filter(|_| trusted);
    let peer_text = peer.to_string();
    let forwarded_for = match prior("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(chain) => format!("{chain}, {peer_text}"),
        None => peer_text,
    };
    Forwarding {
        forwarded_for: HeaderValue::from_str(&forwarded_for)
            .unwrap_or(HeaderValue::from_static("unknown")),
        forwarded_proto: prior("x-forwarded-proto")
            .cloned()
            .unwrap_or(HeaderValue::from_static(proto)),
        forwarded_host: prior("x-forwarded-host").or(host).cloned(),
        peer_trusted: trusted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header;

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_peers() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert(header::HOST, HeaderValue::from_static("gw.example.com"));
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let host = h.get(header::HOST);
        let from_untrusted = forwarding(&h, host, "192.0.2.1".parse().unwrap(), &trusted, "http");
        assert_eq!(from_untrusted.forwarded_for, "192.0.2.1");
        assert_eq!(from_untrusted.forwarded_host.unwrap(), "gw.example.com");
        let from_proxy = forwarding(&h, host, "10.1.2.3".parse().unwrap(), &trusted, "http");
        assert_eq!(from_proxy.forwarded_for, "6.6.6.6, 10.1.2.3");
        let mapped = forwarding(
            &h,
            host,
            "::ffff:10.0.0.1".parse().unwrap(),
            &trusted,
            "http",
        );
        assert_eq!(mapped.forwarded_for, "6.6.6.6, 10.0.0.1");
    }
}
