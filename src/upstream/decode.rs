//! Reading an upstream body for composition: `Content-Encoding` (gzip, br,
//! deflate) is undone while the body streams in, and both the bytes on the
//! wire and the decoded bytes are capped at the upstream's `max_body`.
//!
//! The decoder writes into a buffer that refuses to grow past the cap, so a
//! decompression bomb costs at most `max_body` of memory and is abandoned
//! mid-stream (dropping the body closes its connection).

use super::CallError;
use bytes::Bytes;
use http::HeaderMap;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::io::{self, Write};

/// An encoding we can undo.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Coding {
    Gzip,
    Deflate,
    Brotli,
}

/// The `Accept-Encoding` sent by upstreams with `compression: true`.
pub const ACCEPT_ENCODING: &str = "gzip, br, deflate";

/// Reads the whole body, decoded, failing with `TooLarge` past `cap` bytes
/// (encoded or decoded) and `Decode` for an unknown or corrupt encoding.
pub async fn read_body(
    headers: &HeaderMap,
    mut body: Incoming,
    cap: u64,
) -> Result<Bytes, CallError> {
    let cap_usize = usize::try_from(cap).unwrap_or(usize::MAX);
    let codings = codings(headers)?;
    let mut decoder = Decoder::new(&codings, cap_usize);
    let mut wire: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| CallError::Transport(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        wire += data.len() as u64;
        if wire > cap {
            return Err(CallError::TooLarge(cap));
        }
        decoder.write(&data, cap)?;
    }
    decoder.finish(cap)
}

/// The codings of `Content-Encoding`, in the order they were applied.
fn codings(headers: &HeaderMap) -> Result<Vec<Coding>, CallError> {
    let mut out = Vec::new();
    for value in headers.get_all(http::header::CONTENT_ENCODING) {
        let text = value
            .to_str()
            .map_err(|_| CallError::Decode("content-encoding is not text".into()))?;
        for token in text.split(',') {
            match token.trim().to_ascii_lowercase().as_str() {
                "" | "identity" => {}
                "gzip" | "x-gzip" => out.push(Coding::Gzip),
                "deflate" => out.push(Coding::Deflate),
                "br" => out.push(Coding::Brotli),
                other => {
                    return Err(CallError::Decode(format!(
                        "content-encoding `{other}` is not supported"
                    )));
                }
            }
        }
    }
    if out.len() > 1 {
        // Stacked encodings are legal but nobody sends them; each layer
        // would need its own cap.
        return Err(CallError::Decode(
            "more than one content-encoding is not supported".into(),
        ));
    }
    Ok(out)
}

/// A buffer that fails a write that would take it past its cap.
struct Capped {
    buf: Vec<u8>,
    cap: usize,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buf.len() + data.len() > self.cap {
            return Err(io::Error::other(TooLarge));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[derive(Debug)]
struct TooLarge;
impl std::fmt::Display for TooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("decoded body too large")
    }
}
impl std::error::Error for TooLarge {}

enum Decoder {
    Identity(Vec<u8>),
    Gzip(flate2::write::MultiGzDecoder<Capped>),
    /// `deflate` is zlib-wrapped (RFC 9110 §8.4.1.2); some servers send raw
    /// deflate, which is detected from the first byte.
    Deflate {
        pending: Option<Capped>,
        zlib: Option<flate2::write::ZlibDecoder<Capped>>,
        raw: Option<flate2::write::DeflateDecoder<Capped>>,
    },
    Brotli(Box<brotli_decompressor::DecompressorWriter<Capped>>),
}

impl Decoder {
    fn new(codings: &[Coding], cap: usize) -> Self {
        let sink = || Capped {
            buf: Vec::new(),
            cap,
        };
        match codings.first() {
            None => Decoder::Identity(Vec::new()),
            Some(Coding::Gzip) => Decoder::Gzip(flate2::write::MultiGzDecoder::new(sink())),
            Some(Coding::Deflate) => Decoder::Deflate {
                pending: Some(sink()),
                zlib: None,
                raw: None,
            },
            Some(Coding::Brotli) => Decoder::Brotli(Box::new(
                brotli_decompressor::DecompressorWriter::new(sink(), 8192),
            )),
        }
    }

    fn write(&mut self, data: &[u8], cap: u64) -> Result<(), CallError> {
        let result = match self {
            Decoder::Identity(buf) => {
                buf.extend_from_slice(data);
                Ok(())
            }
            Decoder::Gzip(d) => d.write_all(data),
            Decoder::Deflate { pending, zlib, raw } => {
                if let Some(sink) = pending.take() {
                    // A zlib header's first byte has compression method 8 in
                    // its low nibble (0x78 in practice).
                    if data.first().is_some_and(|b| b & 0x0f == 8) {
                        *zlib = Some(flate2::write::ZlibDecoder::new(sink));
                    } else {
                        *raw = Some(flate2::write::DeflateDecoder::new(sink));
                    }
                }
                match (zlib, raw) {
                    (Some(z), _) => z.write_all(data),
                    (_, Some(r)) => r.write_all(data),
                    _ => Ok(()),
                }
            }
            Decoder::Brotli(d) => d.write_all(data),
        };
        result.map_err(|e| decode_error(e, cap))
    }

    fn finish(self, cap: u64) -> Result<Bytes, CallError> {
        let sink = match self {
            Decoder::Identity(buf) => return Ok(Bytes::from(buf)),
            Decoder::Gzip(d) => d.finish(),
            Decoder::Deflate { pending, zlib, raw } => match (pending, zlib, raw) {
                (Some(p), _, _) => Ok(p),
                (_, Some(z), _) => z.finish(),
                (_, _, Some(r)) => r.finish(),
                _ => unreachable_sink(),
            },
            Decoder::Brotli(mut d) => d
                .close()
                .map_err(|e| io::Error::other(format!("{e:?}")))
                .and_then(|()| {
                    d.into_inner()
                        .map_err(|_| io::Error::other("brotli stream incomplete"))
                }),
        };
        sink.map(|s| Bytes::from(s.buf))
            .map_err(|e| decode_error(e, cap))
    }
}

fn unreachable_sink() -> io::Result<Capped> {
    Err(io::Error::other("deflate decoder in an impossible state"))
}

fn decode_error(e: io::Error, cap: u64) -> CallError {
    if e.get_ref().is_some_and(|inner| inner.is::<TooLarge>()) {
        CallError::TooLarge(cap)
    } else {
        CallError::Decode(format!("cannot decode the body: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), Compression::default());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decode_all(codings: &[Coding], data: &[u8], cap: usize) -> Result<Bytes, CallError> {
        let mut d = Decoder::new(codings, cap);
        // Feed in small pieces, as a network would.
        for chunk in data.chunks(7) {
            d.write(chunk, cap as u64)?;
        }
        d.finish(cap as u64)
    }

    #[test]
    fn decodes_gzip_and_both_deflate_forms() {
        let body = br#"{"a":[1,2,3]}"#;
        assert_eq!(
            &decode_all(&[Coding::Gzip], &gzip(body), 1024).unwrap()[..],
            body
        );
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), Compression::default());
        z.write_all(body).unwrap();
        assert_eq!(
            &decode_all(&[Coding::Deflate], &z.finish().unwrap(), 1024).unwrap()[..],
            body
        );
        let mut r = flate2::write::DeflateEncoder::new(Vec::new(), Compression::default());
        r.write_all(body).unwrap();
        assert_eq!(
            &decode_all(&[Coding::Deflate], &r.finish().unwrap(), 1024).unwrap()[..],
            body
        );
    }

    #[test]
    fn decodes_brotli() {
        // `{"a":1}` compressed with brotli (quality 11), from the reference encoder.
        let br: &[u8] = &[
            0x0b, 0x03, 0x80, 0x7b, 0x22, 0x61, 0x22, 0x3a, 0x31, 0x7d, 0x03,
        ];
        assert_eq!(
            &decode_all(&[Coding::Brotli], br, 1024).unwrap()[..],
            br#"{"a":1}"#
        );
    }

    #[test]
    fn a_bomb_stops_at_the_cap() {
        let bomb = gzip(&vec![b'0'; 4 << 20]);
        assert!(bomb.len() < 64 << 10, "{}", bomb.len());
        assert_eq!(
            decode_all(&[Coding::Gzip], &bomb, 1 << 20).unwrap_err(),
            CallError::TooLarge(1 << 20)
        );
    }

    #[test]
    fn corrupt_and_unknown_encodings_are_decode_errors() {
        let err = decode_all(&[Coding::Gzip], b"not gzip at all", 1024).unwrap_err();
        assert_eq!(err.kind(), "decode");
        let mut h = HeaderMap::new();
        h.insert(http::header::CONTENT_ENCODING, "zstd".parse().unwrap());
        assert_eq!(codings(&h).unwrap_err().kind(), "decode");
    }
}
