//! W3C Trace Context (`traceparent`): accepted from clients, generated when
//! absent or invalid, and a child span id for every upstream call.
//!
//! Ids are ours, not an SDK's, so that trace context costs the same whether
//! or not spans are exported, and the ids in the access log, in the headers
//! upstreams receive and in exported spans are always the same ones.

use http::{HeaderMap, HeaderValue};
use std::cell::Cell;
use std::hash::{BuildHasher, Hasher};

/// The trace a request belongs to and its span in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    /// 128-bit trace id (never zero).
    pub trace_id: u128,
    /// The gateway's span for this request (never zero).
    pub span_id: u64,
    /// The client's span, when the client sent a valid `traceparent`.
    pub parent_span_id: Option<u64>,
    /// Trace flags; bit 0 is "sampled".
    pub flags: u8,
}

impl TraceContext {
    /// Continues the client's trace (a valid `traceparent`) or starts a new,
    /// sampled one.
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let mut values = headers.get_all("traceparent").iter();
        let parsed = match (values.next(), values.next()) {
            // Two `traceparent` headers are as good as none (W3C §3.2).
            (Some(v), None) => parse_traceparent(v.as_bytes()),
            _ => None,
        };
        match parsed {
            Some((trace_id, parent, flags)) => TraceContext {
                trace_id,
                span_id: random_nonzero_u64(),
                parent_span_id: Some(parent),
                flags,
            },
            None => TraceContext {
                trace_id: (u128::from(random_u64()) << 64) | u128::from(random_nonzero_u64()),
                span_id: random_nonzero_u64(),
                parent_span_id: None,
                flags: FLAG_SAMPLED,
            },
        }
    }

    /// Whether the trace is sampled (spans are exported).
    pub fn sampled(&self) -> bool {
        self.flags & FLAG_SAMPLED != 0
    }

    /// The span id of upstream call `call` (0 for a proxy route's one call):
    /// derived from ours, so it needs no storage and never repeats within a
    /// request.
    pub fn call_span_id(&self, call: usize) -> u64 {
        let salt = (call as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        nonzero(mix(self.span_id ^ salt))
    }

    /// The `traceparent` an upstream call with span `span_id` is sent:
    /// `00-{trace id}-{span id}-{flags}` in lower-case hex, written by hand
    /// because it is built for every call (`format!` was most of its cost).
    pub fn traceparent(&self, span_id: u64) -> HeaderValue {
        let mut text = [0u8; 55];
        text[..3].copy_from_slice(b"00-");
        write_hex(&mut text[3..35], self.trace_id);
        text[35] = b'-';
        write_hex(&mut text[36..52], u128::from(span_id));
        text[52] = b'-';
        write_hex(&mut text[53..55], u128::from(self.flags));
        HeaderValue::from_bytes(&text).unwrap_or(HeaderValue::from_static(""))
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

const FLAG_SAMPLED: u8 = 0x01;

/// Fills `out` with the low `out.len()` hex digits of `v`, most significant first.
fn write_hex(out: &mut [u8], mut v: u128) {
    for b in out.iter_mut().rev() {
        *b = b"0123456789abcdef"[(v & 0xf) as usize];
        v >>= 4;
    }
}

/// `version-traceid-parentid-flags`; `None` when invalid. Versions above 00
/// may append fields, which are ignored; version ff is invalid.
pub fn parse_traceparent(v: &[u8]) -> Option<(u128, u64, u8)> {
    let text = std::str::from_utf8(v).ok()?.trim_matches([' ', '\t']);
    let b = text.as_bytes();
    if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let version = hex_u8(&text[0..2])?;
    if version == 0xff || (version == 0 && b.len() != 55) || (b.len() > 55 && b[55] != b'-') {
        return None;
    }
    let trace_id = hex_u128(&text[3..35])?;
    let parent = hex_u64(&text[36..52])?;
    let flags = hex_u8(&text[53..55])?;
    (trace_id != 0 && parent != 0).then_some((trace_id, parent, flags))
}

/// Lower-case hex only: W3C forbids upper case.
fn is_lower_hex(s: &str) -> bool {
    s.bytes()
        .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c))
}

fn hex_u8(s: &str) -> Option<u8> {
    is_lower_hex(s).then(|| u8::from_str_radix(s, 16).ok())?
}
fn hex_u64(s: &str) -> Option<u64> {
    is_lower_hex(s).then(|| u64::from_str_radix(s, 16).ok())?
}
fn hex_u128(s: &str) -> Option<u128> {
    is_lower_hex(s).then(|| u128::from_str_radix(s, 16).ok())?
}

/// SplitMix64's output function: a bijection that spreads every input bit.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn nonzero(x: u64) -> u64 {
    if x == 0 { 1 } else { x }
}

thread_local! {
    /// Per-thread SplitMix64 state, seeded from the OS-randomised hasher
    /// keys: ids need to be unique, not secret, and this costs nanoseconds.
    static RNG: Cell<u64> = Cell::new({
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish()
    });
}

fn random_u64() -> u64 {
    RNG.with(|s| {
        let next = s.get().wrapping_add(0x9E37_79B9_7F4A_7C15);
        s.set(next);
        mix(next)
    })
}

fn random_nonzero_u64() -> u64 {
    nonzero(random_u64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_valid_traceparents() {
        let v = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse_traceparent(v),
            Some((0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, 1))
        );
        // A future version may append fields.
        let v = b"cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00-what";
        assert!(parse_traceparent(v).is_some());
    }

    #[test]
    fn rejects_invalid_traceparents() {
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "",
        ] {
            assert_eq!(parse_traceparent(bad.as_bytes()), None, "{bad}");
        }
    }

    #[test]
    fn continues_the_client_trace_with_new_span_ids() {
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"),
        );
        let t = TraceContext::from_headers(&h);
        assert_eq!(t.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(t.parent_span_id, Some(0x00f067aa0ba902b7));
        assert!(!t.sampled());
        let ids: Vec<u64> = (0..100).map(|c| t.call_span_id(c)).collect();
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!(distinct.len(), ids.len());
        assert!(!ids.contains(&t.span_id) && !ids.contains(&0x00f067aa0ba902b7));
        let header = t.traceparent(0x0000_00ab_cdef_0012);
        assert_eq!(
            header.to_str().unwrap(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-000000abcdef0012-00"
        );
        let header = t.traceparent(ids[0]);
        assert_eq!(
            parse_traceparent(header.as_bytes()),
            Some((t.trace_id, ids[0], 0))
        );
    }

    #[test]
    fn starts_a_sampled_trace_when_absent_or_repeated() {
        let t = TraceContext::from_headers(&HeaderMap::new());
        assert!(t.sampled() && t.parent_span_id.is_none() && t.trace_id != 0);
        let mut h = HeaderMap::new();
        let v = HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        h.append("traceparent", v.clone());
        h.append("traceparent", v);
        assert_eq!(TraceContext::from_headers(&h).parent_span_id, None);
        assert_ne!(
            TraceContext::from_headers(&HeaderMap::new()).trace_id,
            TraceContext::from_headers(&HeaderMap::new()).trace_id
        );
    }
}
