//! The config file as the user wrote it: YAML → typed raw structures that keep
//! the source position of every value a later error may need to point at.
//!
//! Nothing here checks meaning (unknown upstreams, cycles, bad templates):
//! that is `plan`'s job, which reports all such errors at once.

mod cache;
mod raw;
mod resilience;
mod shape;

pub use cache::{RawCache, RawCachePolicy, RawCacheScope, RawCacheSettings};
pub use raw::*;
pub use resilience::*;
pub use shape::{RawShape, ShapeNode};

use std::fmt;
use std::path::Path;

/// A position in a config file (1-based line and column).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    /// 1-based line; 0 when unknown.
    pub line: u64,
    /// 1-based column; 0 when unknown.
    pub column: u64,
}

impl Pos {
    /// The position of a spanned value.
    pub fn of<T>(spanned: &serde_saphyr::Spanned<T>) -> Pos {
        Pos {
            line: spanned.referenced.line(),
            column: spanned.referenced.column(),
        }
    }
}

/// A config file that could not be read or is not well-formed YAML of the
/// expected structure.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Read {
        /// The path as given.
        file: String,
        /// Why.
        source: std::io::Error,
    },
    /// YAML syntax or structure error (unknown field, wrong type).
    #[error("{file}:{}:{}: error: {message}", pos.line, pos.column)]
    Syntax {
        /// The path as given.
        file: String,
        /// Where.
        pos: Pos,
        /// What is wrong, in plain words.
        message: String,
    },
}

impl UnknownField {
    /// "unknown field `tiemout` in a route; did you mean `timeout`? …"
    pub fn message(&self) -> String {
        let key = self.path.last().map_or("", String::as_str);
        let (place, def) = match self.path.iter().map(String::as_str).collect::<Vec<_>>()[..] {
            [_] => ("at the top level", None),
            ["server", _] => ("in `server`", Some("RawServer")),
            ["telemetry", _] => ("in `telemetry`", Some("RawTelemetry")),
            ["telemetry", "otlp", _] => ("in `telemetry.otlp`", Some("RawOtlp")),
            ["telemetry", "access_log", _] => ("in `telemetry.access_log`", Some("RawAccessLog")),
            ["upstreams", _, _] => ("in an upstream", Some("RawUpstream")),
            ["routes", _, _] => ("in a route", Some("RawRoute")),
            ["routes", _, "calls", _, _] => ("in a call", Some("RawCall")),
            ["routes", _, "calls", _, "cache", _] | ["routes", _, "cache", _] => {
                ("in a cache policy", Some("RawCachePolicy"))
            }
            ["cache", _] => ("in `cache`", Some("RawCacheSettings")),
            ["rate_limits", _, _] => ("in a rate limit policy", Some("RawRateLimit")),
            ["rate_limits", _, "allow", _] => ("in `allow`", Some("RawAllow")),
            ["redis", _] => ("in `redis`", Some("RawRedis")),
            _ => ("here", None),
        };
        let known = known_fields(def);
        let mut m = format!("unknown field `{key}` {place}");
        if let Some(close) = known.iter().find(|k| edit_distance(k, key) <= 2) {
            m.push_str(&format!("; did you mean `{close}`?"));
        }
        if !known.is_empty() {
            m.push_str(&format!(" (fields: {})", known.join(", ")));
        }
        m
    }
}

/// Field names of a raw struct, from the JSON Schema (one source of truth).
fn known_fields(def: Option<&str>) -> Vec<String> {
    let schema = schemars::schema_for!(RawConfig);
    let value = schema.as_value();
    let props = match def {
        None => value.get("properties"),
        Some(d) => value.pointer(&format!("/$defs/{d}/properties")),
    };
    props
        .and_then(|p| p.as_object())
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// Levenshtein distance, for "did you mean" (short strings only).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

/// Reads and parses a config file.
pub fn load_file(path: &Path) -> Result<(String, RawConfig), ConfigError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: file.clone(),
        source,
    })?;
    let raw = parse(&file, &text)?;
    Ok((file, raw))
}

/// A key no config struct has, e.g. a misspelt `tiemout`.
#[derive(Clone, Debug, PartialEq)]
pub struct UnknownField {
    /// Where the key is written.
    pub pos: Pos,
    /// The path to it: `routes`, `0`, `calls`, `orders`, `tiemout`.
    pub path: Vec<String>,
}

/// Parses config text; `file` names it in errors.
///
/// Unknown keys do not stop parsing: they are collected (with their
/// position) so that `check` reports them together with every other error.
pub fn parse(file: &str, text: &str) -> Result<RawConfig, ConfigError> {
    let options = serde_saphyr::options! { with_snippet: false };
    let mut ignored: Vec<Vec<String>> = Vec::new();
    let parsed = serde_saphyr::with_deserializer_from_str_with_options(text, options, |de| {
        serde_ignored::deserialize(de, |path| {
            if let Some(segments) = unknown_key_path(&path) {
                ignored.push(segments);
            }
        })
    });
    let mut raw: RawConfig = parsed.map_err(|e| {
        let pos = e
            .location()
            .map(|l| Pos {
                line: l.line(),
                column: l.column(),
            })
            .unwrap_or_default();
        ConfigError::Syntax {
            file: file.to_string(),
            pos,
            message: strip_location_suffix(&e.to_string()),
        }
    })?;
    raw.unknown_fields = ignored
        .into_iter()
        .map(|path| UnknownField {
            pos: locate_key(text, &raw, &path),
            path,
        })
        .collect();
    Ok(raw)
}

/// The map keys of an ignored-field path, without the YAML library's span
/// wrappers (`?`, `value`); `None` for the wrappers' own bookkeeping fields.
fn unknown_key_path(path: &serde_ignored::Path<'_>) -> Option<Vec<String>> {
    let text = path.to_string();
    if text.ends_with("__serde_saphyr_private_spanned") {
        return None;
    }
    let mut out = Vec::new();
    let mut after_wrapper = false;
    for seg in text.split('.') {
        match seg {
            "?" => after_wrapper = true,
            "value" if after_wrapper => after_wrapper = false,
            _ => {
                after_wrapper = false;
                out.push(seg.to_string());
            }
        }
    }
    Some(out)
}

/// Finds where an unknown key is written: walk the path, starting each step
/// at the position of the parent (sequence items by their parsed position,
/// map keys by the first `key:` after the parent).
fn locate_key(text: &str, raw: &RawConfig, path: &[String]) -> Pos {
    let mut from = 0;
    for (i, seg) in path.iter().enumerate() {
        let item_pos = match (path.first().map(String::as_str), i) {
            (Some("routes"), 1) => seg
                .parse::<usize>()
                .ok()
                .and_then(|n| raw.routes.get(n))
                .map(|r| r.pos),
            _ => None,
        };
        match item_pos {
            Some(p) => from = offset_of(text, p).unwrap_or(from),
            None => match find_key(text, from, seg) {
                Some(at) => from = at,
                None => break,
            },
        }
    }
    position_of(text, from)
}

/// Byte offset of `key:` written as a key (after indentation, `- `, `{` or `,`).
fn find_key(text: &str, from: usize, key: &str) -> Option<usize> {
    // An empty segment (a key such as `.` or `a.`, split on its dots) would
    // match everywhere without advancing.
    if key.is_empty() {
        return None;
    }
    let mut at = from;
    while let Some(i) = text.get(at..)?.find(key) {
        let start = at + i;
        let before = text[..start].chars().next_back();
        let after = text[start + key.len()..].trim_start_matches([' ', '\t']);
        let key_like =
            before.is_none_or(|c| c.is_whitespace() || matches!(c, '{' | ',' | '-' | '"' | '\''));
        let quoted = matches!(before, Some('"' | '\''));
        let after = if quoted {
            after.get(1..).unwrap_or("")
        } else {
            after
        };
        if key_like && after.trim_start().starts_with(':') {
            return Some(start);
        }
        at = start + key.len();
    }
    None
}

fn offset_of(text: &str, pos: Pos) -> Option<usize> {
    let line_start = if pos.line <= 1 {
        0
    } else {
        text.match_indices('\n')
            .nth(usize::try_from(pos.line).ok()? - 2)?
            .0
            + 1
    };
    let col = usize::try_from(pos.column.saturating_sub(1)).ok()?;
    Some(
        text[line_start..]
            .char_indices()
            .nth(col)
            .map_or(text.len(), |(i, _)| line_start + i),
    )
}

fn position_of(text: &str, offset: usize) -> Pos {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() as u64 + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u64 + 1;
    Pos { line, column }
}

/// The YAML library appends "at line X, column Y" to its messages; we print
/// positions in the `file:line:column:` prefix instead, once.
fn strip_location_suffix(message: &str) -> String {
    let first_line = message.lines().next().unwrap_or(message);
    match first_line.rfind(" at line ") {
        Some(i) => first_line[..i].to_string(),
        None => first_line.to_string(),
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_collected_with_positions_and_suggestions() {
        let text = "server:\n  lisen: x\nupstreams:\n  a: { url: \"http://x\", tiemout: 3s }\nroutes:\n  - get: /a\n    tiemout: 1s\n    calls:\n      c: { get: \"a:/x\", optinal: true }\n";
        let raw = parse("f.yaml", text).unwrap();
        let found: Vec<(u64, u64, String)> = raw
            .unknown_fields
            .iter()
            .map(|u| (u.pos.line, u.pos.column, u.path.join(".")))
            .collect();
        assert_eq!(
            found,
            vec![
                (2, 3, "server.lisen".to_string()),
                (4, 25, "upstreams.a.tiemout".to_string()),
                (7, 5, "routes.0.tiemout".to_string()),
                (9, 25, "routes.0.calls.c.optinal".to_string()),
            ]
        );
        let m = raw.unknown_fields[2].message();
        assert!(
            m.starts_with("unknown field `tiemout` in a route; did you mean `timeout`?"),
            "{m}"
        );
        assert!(
            raw.unknown_fields[3]
                .message()
                .contains("did you mean `optional`?")
        );
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("timeout", "tiemout"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
