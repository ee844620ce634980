//! A stored answer and its wire form in Redis.
//!
//! The Redis form is a small versioned binary record (status, freshness,
//! the headers that matter, tags, body) so that any instance, or this one
//! after a restart, can serve it.

use super::freshness::Freshness;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

/// Version of the Redis record layout; a record of another version is a miss.
const FORMAT: u8 = 1;

/// Response headers never stored: they describe one connection or one
/// exchange, or (Set-Cookie) one user's session.
const NOT_STORED: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "set-cookie",
    "date",
    "age",
];

/// One stored answer.
#[derive(Debug)]
pub struct Entry {
    /// Its status.
    pub status: StatusCode,
    /// The headers that matter (see `NOT_STORED` for the others).
    pub headers: HeaderMap,
    /// The body bytes (JSON for calls; the response body for routes).
    pub body: Bytes,
    /// A call entry's body, checked once and parsed at most once (a hit does neither again).
    pub json: Option<crate::upstream::JsonBody>,
    /// Times.
    pub freshness: Freshness,
    /// Purge tags.
    pub tags: Vec<String>,
    /// Route entries: the headers of a plain hit, built once per second
    /// (only `Age` and the TTLs change with time) so a hit only copies them.
    pub hit_headers: std::sync::Mutex<Option<(u64, HeaderMap)>>,
}

impl Entry {
    /// An entry with the storable subset of `headers`.
    pub fn new(
        status: StatusCode,
        headers: &HeaderMap,
        body: Bytes,
        freshness: Freshness,
        tags: Vec<String>,
    ) -> Entry {
        let mut kept = HeaderMap::new();
        for (k, v) in headers {
            if !NOT_STORED.contains(&k.as_str()) {
                kept.append(k.clone(), v.clone());
            }
        }
        Entry {
            status,
            headers: kept,
            body,
            json: None,
            freshness,
            tags,
            hit_headers: Default::default(),
        }
    }

    /// The in-process tier's weight: key, headers and body bytes, a parsed
    /// body counted twice more (a JSON tree takes a few times its text).
    pub fn weight(&self, key: &str) -> u32 {
        let headers: usize = self
            .headers
            .iter()
            .map(|(k, v)| k.as_str().len() + v.len() + 16)
            .sum();
        let tags: usize = self.tags.iter().map(|t| t.len() + 8).sum();
        let body = self.body.len() * if self.json.is_some() { 3 } else { 1 };
        let total = key.len() + headers + tags + body + 128;
        u32::try_from(total).unwrap_or(u32::MAX)
    }

    /// The Redis record.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = BytesMut::with_capacity(self.body.len() + 256);
        b.put_u8(FORMAT);
        b.put_u16(self.status.as_u16());
        let f = &self.freshness;
        b.put_u64(f.stored_ms);
        b.put_u64(f.fresh_until_ms);
        b.put_u64(f.stale_while_revalidate_ms);
        b.put_u64(f.stale_if_error_ms);
        b.put_u8(u8::from(f.private));
        b.put_u32(self.headers.len() as u32);
        for (k, v) in &self.headers {
            put_bytes(&mut b, k.as_str().as_bytes());
            put_bytes(&mut b, v.as_bytes());
        }
        b.put_u32(self.tags.len() as u32);
        for t in &self.tags {
            put_bytes(&mut b, t.as_bytes());
        }
        put_bytes(&mut b, &self.body);
        b.to_vec()
    }

    /// Reads a Redis record; `None` for anything malformed or of another version.
    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        let mut b = bytes;
        if b.remaining() < 1 + 2 + 32 + 1 + 4 || b.get_u8() != FORMAT {
            return None;
        }
        let status = StatusCode::from_u16(b.get_u16()).ok()?;
        let freshness = Freshness {
            stored_ms: b.get_u64(),
            fresh_until_ms: b.get_u64(),
            stale_while_revalidate_ms: b.get_u64(),
            stale_if_error_ms: b.get_u64(),
            private: b.get_u8() == 1,
        };
        let mut headers = HeaderMap::new();
        for _ in 0..get_u32(&mut b)? {
            let k = HeaderName::from_bytes(get_bytes(&mut b)?).ok()?;
            let v = HeaderValue::from_bytes(get_bytes(&mut b)?).ok()?;
            headers.append(k, v);
        }
        let mut tags = Vec::new();
        for _ in 0..get_u32(&mut b)? {
            tags.push(String::from_utf8(get_bytes(&mut b)?.to_vec()).ok()?);
        }
        let body = Bytes::copy_from_slice(get_bytes(&mut b)?);
        if b.has_remaining() {
            return None;
        }
        Some(Entry {
            status,
            headers,
            body,
            json: None,
            freshness,
            tags,
            hit_headers: Default::default(),
        })
    }
}

fn put_bytes(b: &mut BytesMut, v: &[u8]) {
    b.put_u32(v.len() as u32);
    b.put_slice(v);
}

fn get_u32(b: &mut &[u8]) -> Option<u32> {
    (b.remaining() >= 4).then(|| b.get_u32())
}

fn get_bytes<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = get_u32(b)? as usize;
    if b.remaining() < n {
        return None;
    }
    let (head, tail) = b.split_at(n);
    *b = tail;
    Some(head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redis_record_round_trips_and_rejects_damage() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        h.insert("set-cookie", HeaderValue::from_static("s=1"));
        h.append("x-multi", HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("b"));
        let f = Freshness {
            stored_ms: 1,
            fresh_until_ms: 2,
            stale_while_revalidate_ms: 3,
            stale_if_error_ms: 4,
            private: true,
        };
        let e = Entry::new(
            StatusCode::OK,
            &h,
            Bytes::from_static(b"{\"a\":1}"),
            f,
            vec!["product:7".into()],
        );
        assert!(e.headers.get("set-cookie").is_none(), "never stored");
        let bytes = e.encode();
        let back = Entry::decode(&bytes).unwrap();
        assert_eq!(back.status, StatusCode::OK);
        assert_eq!(back.freshness, f);
        assert_eq!(back.headers.get_all("x-multi").iter().count(), 2);
        assert_eq!(back.tags, vec!["product:7".to_string()]);
        assert_eq!(&back.body[..], b"{\"a\":1}");
        assert!(Entry::decode(&bytes[..bytes.len() - 1]).is_none());
        let mut other = bytes.clone();
        other[0] = 99;
        assert!(Entry::decode(&other).is_none());
    }
}
