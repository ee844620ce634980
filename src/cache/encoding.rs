//! Content coding of cached route responses: a stored variant is gzip when
//! the client accepts gzip (compressed once, when stored), identity otherwise.
//! The two are separate entries (`#ae=` in the key) and the response says
//! `Vary: Accept-Encoding`, so a client that did not ask for gzip never gets it.

use bytes::Bytes;
use http::{HeaderMap, header};
use std::io::Write;

/// Bodies smaller than this are not worth compressing: the gzip framing
/// (about 20 bytes) and the CPU outweigh the saving under a typical MTU.
pub const MIN_GZIP_BYTES: usize = 860;

/// Whether the client accepts gzip (`gzip`, `x-gzip` or `*` with q > 0).
pub fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|item| {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q_zero = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            matches!(coding.as_str(), "gzip" | "x-gzip" | "*") && !q_zero
        })
}

/// The gzip form of a body.
pub fn gzip(body: &[u8]) -> Option<Bytes> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 3),
        flate2::Compression::fast(),
    );
    enc.write_all(body).ok()?;
    enc.finish().ok().map(Bytes::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn ae(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn reads_accept_encoding() {
        assert!(accepts_gzip(&ae("gzip, deflate, br")));
        assert!(accepts_gzip(&ae("br;q=1.0, GZIP;q=0.5")));
        assert!(accepts_gzip(&ae("*")));
        assert!(!accepts_gzip(&ae("gzip;q=0")));
        assert!(!accepts_gzip(&ae("identity")));
        assert!(!accepts_gzip(&HeaderMap::new()));
    }
}
