//! Who the client is and the `X-Forwarded-*` headers we send upstream.
//! Proxy headers are believed only from configured trusted proxies.

use crate::exec::render::Forwarding;
use http::{HeaderMap, HeaderValue, header};
use ipnet::IpNet;
use std::net::IpAddr;

/// Whether `peer` is one of the trusted proxies.
pub fn is_trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    let peer = peer.to_canonical();
    trusted.iter().any(|n| n.contains(&peer))
}

/// Most proxy hops read from `X-Forwarded-For` / `Forwarded`: a real chain is
/// a few hops; a longer one is a client padding the header.
const MAX_FORWARDED_HOPS: usize = 32;

/// The client's address: the socket peer, unless the peer is a trusted
/// proxy. Then the proxy chain is read right to left (the right end is what
/// our own proxies appended) and the first address that is not a trusted
/// proxy is the client; what lies left of it was written by the client and
/// is never believed. `X-Forwarded-For` is read when present, else the
/// `for=` of `Forwarded` (RFC 7239). If every hop is trusted, the left-most
/// is the client; an unreadable hop stops the walk at the last good one.
pub fn client_ip(client: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    let peer = peer.to_canonical();
    if !is_trusted(peer, trusted) {
        return peer;
    }
    let mut hops: Vec<&str> = Vec::new();
    for v in client.get_all("x-forwarded-for") {
        hops.extend(v.to_str().unwrap_or("").split(','));
    }
    if hops.is_empty() {
        for v in client.get_all(header::FORWARDED) {
            for element in v.to_str().unwrap_or("").split(',') {
                let value = element.split(';').find_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    k.trim().eq_ignore_ascii_case("for").then_some(v)
                });
                // An element without `for=` is a hop we cannot read.
                hops.push(value.unwrap_or(""));
            }
        }
    }
    let mut found = peer;
    for hop in hops.iter().rev().take(MAX_FORWARDED_HOPS) {
        let Some(ip) = parse_hop(hop) else {
            return found;
        };
        found = ip;
        if !is_trusted(ip, trusted) {
            return ip;
        }
    }
    found
}

/// `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`, `"[2001:db8::1]:4711"`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    let h = hop.trim().trim_matches('"');
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Some(ip.to_canonical());
    }
    if let Some(rest) = h.strip_prefix('[') {
        return rest
            .split(']')
            .next()?
            .parse::<IpAddr>()
            .ok()
            .map(|ip| ip.to_canonical());
    }
    let (host, port) = h.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    host.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
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

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn client_ip_is_the_right_most_untrusted_hop_behind_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.7, 10.0.0.5"),
        );
        // From an untrusted peer the header is ignored: a spoof.
        assert_eq!(client_ip(&h, ip("192.0.2.1"), &trusted), ip("192.0.2.1"));
        // Behind our proxies: 10.0.0.5 is ours, 203.0.113.7 the client, 6.6.6.6 its claim.
        assert_eq!(client_ip(&h, ip("10.1.1.1"), &trusted), ip("203.0.113.7"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.9.9.9"));
        assert_eq!(client_ip(&h, ip("10.1.1.1"), &trusted), ip("203.0.113.7"));
        // Every hop trusted: the left-most is the client.
        let mut all = HeaderMap::new();
        all.insert(
            "x-forwarded-for",
            HeaderValue::from_static("10.0.0.1, 10.0.0.2"),
        );
        assert_eq!(client_ip(&all, ip("10.1.1.1"), &trusted), ip("10.0.0.1"));
        // Garbage stops the walk at the last readable hop.
        let mut bad = HeaderMap::new();
        bad.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, junk, 10.0.0.2"),
        );
        assert_eq!(client_ip(&bad, ip("10.1.1.1"), &trusted), ip("10.0.0.2"));
        // No header: the peer.
        assert_eq!(
            client_ip(&HeaderMap::new(), ip("10.1.1.1"), &trusted),
            ip("10.1.1.1")
        );
    }

    #[test]
    fn forwarded_for_with_ports_and_ipv6_brackets() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert(
            header::FORWARDED,
            HeaderValue::from_static(
                r#"for=6.6.6.6, for="[2001:db8::7]:4711";proto=https, for=10.0.0.3:80"#,
            ),
        );
        assert_eq!(client_ip(&h, ip("10.0.0.9"), &trusted), ip("2001:db8::7"));
        let mut v4 = HeaderMap::new();
        v4.insert(
            "x-forwarded-for",
            HeaderValue::from_static("198.51.100.4:5555"),
        );
        assert_eq!(client_ip(&v4, ip("10.0.0.9"), &trusted), ip("198.51.100.4"));
    }
}
