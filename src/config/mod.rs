//! The config file as the user wrote it: YAML → typed raw structures that keep
//! the source position of every value a later error may need to point at.
//!
//! Nothing here checks meaning (unknown upstreams, cycles, bad templates):
//! that is `plan`'s job, which reports all such errors at once.

mod raw;
mod shape;

pub use raw::*;
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
    #[error("{file}:{}:{}: {message}", pos.line, pos.column)]
    Syntax {
        /// The path as given.
        file: String,
        /// Where.
        pos: Pos,
        /// What is wrong, in plain words.
        message: String,
    },
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

/// Parses config text; `file` names it in errors.
pub fn parse(file: &str, text: &str) -> Result<RawConfig, ConfigError> {
    let options = serde_saphyr::options! { with_snippet: false };
    serde_saphyr::from_str_with_options(text, options).map_err(|e| {
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
    })
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
