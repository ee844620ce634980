//! Cache keys. A key is readable, so that admins can purge by prefix:
//!
//! - call: `UPSTREAM METHOD /rendered/path?query`, e.g. `products GET /products?ids=1,2`
//! - route: `route METHOD /client/path?allowlisted=query`, e.g. `route GET /customers/42/summary`
//!
//! then the variant: `#name=value` for each key header (percent-escaped),
//! `#ae=gzip|identity` for route responses, and `#client=HASH` for
//! `per_client` entries. The part before the first `#` is the *base*: a purge
//! by key removes every variant of a base (as HTTP caches invalidate every
//! variant of a URI). Rendered URLs and client paths never contain a raw `#`
//! and escaped values cannot forge one, so a key cannot be made to collide
//! with another client's.

use super::policy::{CachePolicy, Scope};
use http::{HeaderMap, Method, Uri};
use sha2::{Digest, Sha256};
use std::fmt::Write;

/// The variant separator.
pub const VARIANT: char = '#';

/// The key of one call's upstream request.
pub fn call_key(
    upstream: &str,
    method: &Method,
    uri: &Uri,
    sent: &HeaderMap,
    client: &HeaderMap,
    policy: &CachePolicy,
) -> String {
    let pq = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut k = String::with_capacity(upstream.len() + pq.len() + 32);
    let _ = write!(k, "{upstream} {method} {pq}");
    for name in &policy.key_headers {
        push_header(&mut k, name.as_str(), sent);
    }
    for name in &policy.vary {
        push_header(&mut k, name.as_str(), client);
    }
    push_client(&mut k, policy, client);
    k
}

/// The key of a route's composed response.
pub fn route_key(
    path: &str,
    query: Option<&str>,
    client: &HeaderMap,
    gzip: bool,
    policy: &CachePolicy,
) -> String {
    let mut k = String::with_capacity(path.len() + 64);
    k.push_str("route GET ");
    k.push_str(path);
    if !policy.key_query.is_empty()
        && let Some(q) = query
    {
        // Only the parameters the route reads, each once (expressions read
        // the first value), in name order: `?cb=<random>` makes no entry.
        let pairs: Vec<(String, String)> = form_urlencoded::parse(q.as_bytes())
            .map(|(a, b)| (a.into_owned(), b.into_owned()))
            .collect();
        let mut ser = form_urlencoded::Serializer::new(String::new());
        for name in &policy.key_query {
            if let Some((_, v)) = pairs.iter().find(|(n, _)| n == name) {
                ser.append_pair(name, v);
            }
        }
        let q = ser.finish();
        if !q.is_empty() {
            k.push('?');
            k.push_str(&q);
        }
    }
    for name in policy.key_headers.iter().chain(&policy.vary) {
        push_header(&mut k, name.as_str(), client);
    }
    k.push_str(if gzip { "#ae=gzip" } else { "#ae=identity" });
    push_client(&mut k, policy, client);
    k
}

/// The base of a key: the part every variant shares.
pub fn base(key: &str) -> &str {
    key.split(VARIANT).next().unwrap_or(key)
}

fn push_header(k: &mut String, name: &str, headers: &HeaderMap) {
    k.push(VARIANT);
    k.push_str(name);
    let mut values = headers.get_all(name).iter().peekable();
    if values.peek().is_none() {
        return; // absent differs from empty: `#name` vs `#name=`
    }
    k.push('=');
    for (i, v) in values.enumerate() {
        if i > 0 {
            k.push(',');
        }
        escape_into(k, v.as_bytes());
    }
}

fn push_client(k: &mut String, policy: &CachePolicy, client: &HeaderMap) {
    if policy.rule.scope == Scope::PerClient {
        k.push_str("#client=");
        k.push_str(&client_id(policy, client));
    }
}

/// A client's identity for `per_client` entries: a hash of the credential
/// headers it sent (`anon` without any). SHA-256, so no one can craft
/// credentials that land on another client's entries.
pub fn client_id(policy: &CachePolicy, client: &HeaderMap) -> String {
    let mut h = Sha256::new();
    let mut any = false;
    for name in &policy.client_headers {
        for v in client.get_all(name) {
            any = true;
            h.update(name.as_str().as_bytes());
            h.update([0]);
            h.update(v.as_bytes());
            h.update([0]);
        }
    }
    if !any {
        return "anon".into();
    }
    let digest = h.finalize();
    let mut out = String::with_capacity(32);
    for b in &digest[..16] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `%`, `#`, `,`, controls and non-ASCII percent-escaped: a value can
/// neither end its own part nor start another.
fn escape_into(k: &mut String, v: &[u8]) {
    for &b in v {
        if b == b'%' || b == b'#' || b == b',' || !(0x20..0x7f).contains(&b) {
            let _ = write!(k, "%{b:02X}");
        } else {
            k.push(b as char);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::policy::{Level, Rule};
    use http::{HeaderName, HeaderValue};
    use std::sync::Arc;
    use std::time::Duration;

    fn policy(scope: Scope, key_headers: &[&'static str], query: &[&str]) -> CachePolicy {
        CachePolicy {
            rule: Arc::new(Rule {
                level: Level::Route,
                name: "r".into(),
                ttl: Duration::from_secs(1),
                stale_while_revalidate: Duration::ZERO,
                stale_if_error: Duration::ZERO,
                scope,
                honour_upstream: true,
                statuses: vec![200],
                events: Default::default(),
            }),
            key_headers: key_headers
                .iter()
                .map(|h| HeaderName::from_static(h))
                .collect(),
            vary: vec![],
            key_query: query.iter().map(|q| q.to_string()).collect(),
            client_headers: vec![
                HeaderName::from_static("authorization"),
                HeaderName::from_static("cookie"),
            ],
            tags: vec![],
            response_vary: None,
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn route_keys_keep_only_the_query_the_route_reads() {
        let p = policy(Scope::Public, &["accept-language"], &["page"]);
        let h = headers(&[("accept-language", "de")]);
        let k = route_key("/a/1", Some("cb=123&page=2&page=3"), &h, false, &p);
        assert_eq!(k, "route GET /a/1?page=2#accept-language=de#ae=identity");
        assert_eq!(
            route_key("/a/1", Some("cb=999&page=2"), &h, false, &p),
            k,
            "an unread parameter makes no new entry"
        );
        assert_eq!(base(&k), "route GET /a/1?page=2");
    }

    #[test]
    fn per_client_keys_differ_by_credentials_and_cannot_be_forged() {
        let p = policy(Scope::PerClient, &["x-v"], &[]);
        let alice = headers(&[("authorization", "Bearer alice")]);
        let bob = headers(&[("authorization", "Bearer bob")]);
        let ka = route_key("/me", None, &alice, false, &p);
        let kb = route_key("/me", None, &bob, false, &p);
        assert_ne!(ka, kb);
        assert_eq!(ka, route_key("/me", None, &alice, false, &p));
        assert!(!ka.contains("alice"), "credentials never appear in keys");
        // A value that tries to smuggle in another client's part stays escaped.
        let id = client_id(&p, &alice);
        let forged = headers(&[("x-v", &format!("1#ae=identity#client={id}"))]);
        let kf = route_key("/me", None, &forged, false, &p);
        assert!(kf.ends_with("#client=anon"), "{kf}");
        assert_eq!(kf.matches('#').count(), 3, "{kf}");
    }

    #[test]
    fn call_keys_cover_upstream_method_url_and_sent_headers() {
        let p = policy(Scope::Public, &["accept-language"], &[]);
        let uri: Uri = "http://127.0.0.1:1/products?ids=1%2C2".parse().unwrap();
        let sent = headers(&[("accept-language", "fr")]);
        let k = call_key("products", &Method::GET, &uri, &sent, &HeaderMap::new(), &p);
        assert_eq!(k, "products GET /products?ids=1%2C2#accept-language=fr");
        let none = call_key(
            "products",
            &Method::GET,
            &uri,
            &HeaderMap::new(),
            &HeaderMap::new(),
            &p,
        );
        assert_eq!(none, "products GET /products?ids=1%2C2#accept-language");
    }
}
