//! Which bucket a request falls in: the first key alternative whose parts are
//! all present, its part values, and the forms the stores need (a hash for
//! the in-process store, text for Redis and the allow-list).

use crate::plan::limit::KeyPart;
use http::HeaderMap;
use std::borrow::Cow;
use std::hash::{BuildHasher, Hasher};
use std::net::IpAddr;

/// What the limiter needs to know about a request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The client request headers.
    pub headers: &'a HeaderMap,
    /// The route's path parameters as matched (still percent-encoded), in
    /// `RoutePlan::params` order.
    pub params: &'a [&'a str],
    /// The client's address (already taken from trusted proxy headers).
    pub client: IpAddr,
}

/// The value of one key part for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartValue<'a> {
    /// Header or path value bytes.
    Bytes(Cow<'a, [u8]>),
    /// The client address, grouped.
    Ip(IpAddr),
    /// The single bucket of a global policy.
    Global,
}

/// The bucket of one policy for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketKey<'a> {
    /// Which alternative matched; `None` when none was present (all such
    /// requests share one bucket, so a missing key never means unlimited).
    pub alternative: Option<usize>,
    /// The values of its parts, in order.
    pub parts: Vec<PartValue<'a>>,
}

/// An IPv6 address keeps only its first `prefix` bits (IPv4-mapped addresses
/// count as IPv4), so every address of one /64 is one client.
pub fn group_ip(ip: IpAddr, ipv6_prefix: u8) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let prefix = u32::from(ipv6_prefix.min(128));
            let mask = u128::MAX.checked_shl(128 - prefix).unwrap_or(0);
            IpAddr::V6((bits & mask).into())
        }
    }
}

/// Finds the bucket key of a policy for a request.
pub fn bucket_key<'a>(alternatives: &[Vec<KeyPart>], req: &RequestView<'a>) -> BucketKey<'a> {
    'alternatives: for (i, alt) in alternatives.iter().enumerate() {
        let mut parts = Vec::with_capacity(alt.len());
        for part in alt {
            let value = match part {
                KeyPart::ClientIp => PartValue::Ip(req.client),
                KeyPart::Global => PartValue::Global,
                KeyPart::Header(name) => match req.headers.get(name) {
                    Some(v) if !v.is_empty() => PartValue::Bytes(Cow::Borrowed(v.as_bytes())),
                    _ => continue 'alternatives,
                },
                KeyPart::Path(index) => match req.params.get(*index) {
                    // Decoded, so `%41` and `A` are one bucket.
                    Some(raw) if !raw.is_empty() => {
                        PartValue::Bytes(percent_encoding::percent_decode_str(raw).into())
                    }
                    _ => continue 'alternatives,
                },
            };
            parts.push(value);
        }
        return BucketKey {
            alternative: Some(i),
            parts,
        };
    }
    BucketKey {
        alternative: None,
        parts: Vec::new(),
    }
}

impl BucketKey<'_> {
    /// A 64-bit hash of the key under a per-store random seed (SipHash), so
    /// clients cannot aim collisions at each other.
    pub fn fingerprint(&self, seed: &impl BuildHasher) -> u64 {
        let mut h = seed.build_hasher();
        h.write_usize(self.alternative.map_or(usize::MAX, |a| a));
        for p in &self.parts {
            match p {
                PartValue::Bytes(b) => {
                    h.write_u8(0);
                    h.write_usize(b.len());
                    h.write(b);
                }
                PartValue::Ip(IpAddr::V4(v4)) => {
                    h.write_u8(1);
                    h.write(&v4.octets());
                }
                PartValue::Ip(IpAddr::V6(v6)) => {
                    h.write_u8(2);
                    h.write(&v6.octets());
                }
                PartValue::Global => h.write_u8(3),
            }
        }
        h.finish()
    }

    /// The key as the allow-list compares it: parts joined with `+`.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for (i, p) in self.parts.iter().enumerate() {
            if i > 0 {
                out.push('+');
            }
            match p {
                PartValue::Bytes(b) => out.push_str(&String::from_utf8_lossy(b)),
                PartValue::Ip(ip) => out.push_str(&ip.to_string()),
                PartValue::Global => out.push_str("global"),
            }
        }
        out
    }

    /// The key's suffix in Redis: the alternative, then each part with its
    /// length, so no two different keys can be written the same way.
    pub fn redis_suffix(&self) -> String {
        let mut out = match self.alternative {
            Some(a) => a.to_string(),
            None => "none".to_string(),
        };
        for p in &self.parts {
            let text: Cow<'_, str> = match p {
                PartValue::Bytes(b) => String::from_utf8_lossy(b),
                PartValue::Ip(ip) => ip.to_string().into(),
                PartValue::Global => "global".into(),
            };
            out.push(':');
            out.push_str(&text.len().to_string());
            out.push('=');
            out.push_str(&text);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};

    fn view<'a>(headers: &'a HeaderMap, params: &'a [&'a str], ip: &str) -> RequestView<'a> {
        RequestView {
            headers,
            params,
            client: ip.parse().unwrap(),
        }
    }

    #[test]
    fn ipv6_addresses_of_one_prefix_are_one_client() {
        let a = group_ip("2001:db8:1:2::1".parse().unwrap(), 64);
        let b = group_ip("2001:db8:1:2:ffff::3".parse().unwrap(), 64);
        let c = group_ip("2001:db8:1:3::1".parse().unwrap(), 64);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.to_string(), "2001:db8:1:2::");
        assert_eq!(
            group_ip("::ffff:192.0.2.7".parse().unwrap(), 64).to_string(),
            "192.0.2.7"
        );
        assert_eq!(
            group_ip("2001:db8::1".parse().unwrap(), 128).to_string(),
            "2001:db8::1"
        );
        assert_eq!(
            group_ip("2001:db8::1".parse().unwrap(), 0).to_string(),
            "::"
        );
    }

    #[test]
    fn the_first_present_alternative_is_the_key() {
        let key = [
            vec![KeyPart::Header(HeaderName::from_static("x-api-key"))],
            vec![KeyPart::ClientIp],
        ];
        let mut h = HeaderMap::new();
        let k = bucket_key(&key, &view(&h, &[], "192.0.2.1"));
        assert_eq!(k.alternative, Some(1));
        assert_eq!(k.text(), "192.0.2.1");
        h.insert("x-api-key", HeaderValue::from_static("abc"));
        let k = bucket_key(&key, &view(&h, &[], "192.0.2.1"));
        assert_eq!(k.alternative, Some(0));
        assert_eq!(k.redis_suffix(), "0:3=abc");
    }

    #[test]
    fn composite_keys_need_every_part_and_decode_paths() {
        let key = [vec![
            KeyPart::Header(HeaderName::from_static("x-tenant")),
            KeyPart::Path(0),
        ]];
        let mut h = HeaderMap::new();
        let k = bucket_key(&key, &view(&h, &["a%42"], "192.0.2.1"));
        assert_eq!(k.alternative, None, "missing header: the shared bucket");
        h.insert("x-tenant", HeaderValue::from_static("t1"));
        let encoded = bucket_key(&key, &view(&h, &["a%42"], "192.0.2.1"));
        let plain = bucket_key(&key, &view(&h, &["aB"], "192.0.2.1"));
        assert_eq!(encoded.text(), "t1+aB");
        let seed = std::hash::RandomState::new();
        assert_eq!(encoded.fingerprint(&seed), plain.fingerprint(&seed));
        let other = bucket_key(&key, &view(&h, &["aC"], "192.0.2.1"));
        assert_ne!(encoded.fingerprint(&seed), other.fingerprint(&seed));
    }
}
