//! URL and header templates: literal text with `{expression}` slots, parsed
//! once at load time. Each slot knows how its value must be encoded.

use super::expr::{self, Expr, Scope};

/// How a slot's value is written into its place.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    /// A value in the URL path: everything but unreserved characters is
    /// percent-encoded, and `.`, `..` and empty values are refused, so the
    /// value can never leave its segment or change the path's shape.
    PathSegment,
    /// A query value: percent-encoded like a path segment.
    QueryComponent,
    /// A catch-all path remainder (proxy routes): `/` kept, each segment encoded.
    PathRest,
    /// A header value: written as is, control characters rejected.
    HeaderValue,
}

/// A piece of a template.
#[derive(Clone, Debug, PartialEq)]
pub enum Piece {
    /// Literal text.
    Lit(String),
    /// A value to evaluate and encode.
    Slot(Expr, Encoding),
}

/// A parsed template.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Template {
    /// Literal text and slots, in order.
    pub pieces: Vec<Piece>,
}

impl Template {
    /// Every expression in the template.
    pub fn exprs(&self) -> impl Iterator<Item = &Expr> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Slot(e, _) => Some(e),
            Piece::Lit(_) => None,
        })
    }
}

/// Splits `"upstream:/path"` into the upstream name and the URL part.
pub fn split_target(text: &str) -> Result<(&str, &str), String> {
    let (name, url) = text.split_once(':').ok_or_else(|| {
        format!("expected `UPSTREAM:/path`, e.g. `orders:/orders/{{path.id}}`, not `{text}`")
    })?;
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "`{name}` is not an upstream name (write `UPSTREAM:/path`)"
        ));
    }
    if !url.starts_with('/') {
        return Err(format!(
            "the URL after `{name}:` must start with `/`, not `{url}`"
        ));
    }
    Ok((name, url))
}

/// Parses the URL part of a call or proxy target. `catch_all` is the index of
/// the route's trailing `{*param}`, which keeps its `/` in the path part.
pub fn parse_url(
    text: &str,
    scope: &dyn Scope,
    catch_all: Option<usize>,
) -> Result<Template, String> {
    // Literals are checked before the slot after them is encoded, so this
    // flag says whether that slot is past the `?`.
    let in_query = std::cell::Cell::new(false);
    parse_pieces(
        text,
        scope,
        |lit| {
            // Only characters a URI may hold literally (RFC 3986), so that a
            // template that compiles always renders a valid request URI.
            if let Some(c) = lit.chars().find(|c| !is_uri_literal(*c)) {
                return Err(format!(
                    "`{}` is not allowed in a URL template (percent-encode it)",
                    c.escape_default()
                ));
            }
            let bad_escape = lit.match_indices('%').any(|(i, _)| {
                let hex = lit.as_bytes().get(i + 1..i + 3);
                !hex.is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
            });
            if bad_escape {
                return Err("`%` in a URL template must start an escape like `%2F`".into());
            }
            in_query.set(in_query.get() || lit.contains('?'));
            Ok(())
        },
        |expr| {
            let rest = matches!(expr.root, expr::Root::Path(i) if Some(i) == catch_all);
            match (rest, in_query.get()) {
                (true, false) => Encoding::PathRest,
                (false, false) => Encoding::PathSegment,
                (_, true) => Encoding::QueryComponent,
            }
        },
    )
}

/// A character the request URI may hold as is, in the path and in the
/// query: decided by the URI parser the request is built with, so that the
/// two can never disagree (`#` would end the URL, whitespace is never valid).
fn is_uri_literal(c: char) -> bool {
    if c == '#' || c.is_whitespace() || c.is_control() {
        return false;
    }
    c.is_ascii_alphanumeric() || format!("http://h/a{c}b?a{c}b").parse::<http::Uri>().is_ok()
}

/// Parses a header value template.
pub fn parse_header(text: &str, scope: &dyn Scope) -> Result<Template, String> {
    parse_pieces(
        text,
        scope,
        |lit| match lit.chars().find(|c| c.is_control()) {
            Some(c) => Err(format!(
                "`{}` is not allowed in a header",
                c.escape_default()
            )),
            None => Ok(()),
        },
        |_| Encoding::HeaderValue,
    )
}

fn parse_pieces(
    text: &str,
    scope: &dyn Scope,
    mut check_literal: impl FnMut(&str) -> Result<(), String>,
    mut encoding_of: impl FnMut(&Expr) -> Encoding,
) -> Result<Template, String> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut rest = text;
    while let Some(i) = rest.find(['{', '}']) {
        lit.push_str(&rest[..i]);
        let brace = &rest[i..];
        if brace.starts_with("{{") || brace.starts_with("}}") {
            lit.push_str(&brace[..1]);
            rest = &brace[2..];
            continue;
        }
        if brace.starts_with('}') {
            return Err("unmatched `}` (write `}}` for a literal brace)".into());
        }
        let end = brace
            .find('}')
            .ok_or_else(|| "unclosed `{` (write `{{` for a literal brace)".to_string())?;
        if !lit.is_empty() {
            check_literal(&lit)?;
            pieces.push(Piece::Lit(std::mem::take(&mut lit)));
        }
        let expr = expr::parse(&brace[1..end], scope)?;
        if matches!(expr.root, expr::Root::Errors) {
            return Err("`$errors` can only be used in a response shape".into());
        }
        let encoding = encoding_of(&expr);
        pieces.push(Piece::Slot(expr, encoding));
        rest = &brace[end + 1..];
    }
    lit.push_str(rest);
    if !lit.is_empty() {
        check_literal(&lit)?;
        pieces.push(Piece::Lit(lit));
    }
    Ok(Template { pieces })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::expr::{CallId, Root};

    struct S;
    impl Scope for S {
        fn path_param(&self, name: &str) -> Option<usize> {
            ["id", "rest"].iter().position(|p| *p == name)
        }
        fn call(&self, name: &str) -> Option<CallId> {
            (name == "orders").then_some(0)
        }
        fn has_item(&self) -> bool {
            false
        }
        fn has_errors(&self) -> bool {
            false
        }
    }

    #[test]
    fn splits_literals_and_slots() {
        let t = parse_url("/a/{path.id}/b?x={orders.body.n}&y=1", &S, None).unwrap();
        assert_eq!(t.pieces.len(), 5);
        assert_eq!(t.pieces[0], Piece::Lit("/a/".into()));
        assert!(
            matches!(&t.pieces[1], Piece::Slot(e, Encoding::PathSegment) if e.root == Root::Path(0))
        );
        assert!(matches!(
            &t.pieces[3],
            Piece::Slot(_, Encoding::QueryComponent)
        ));
        assert_eq!(t.pieces[4], Piece::Lit("&y=1".into()));
        assert_eq!(t.exprs().count(), 2);
    }

    #[test]
    fn catch_all_keeps_slashes_only_in_the_path() {
        let t = parse_url("/p/{path.rest}?r={path.rest}", &S, Some(1)).unwrap();
        assert!(matches!(&t.pieces[1], Piece::Slot(_, Encoding::PathRest)));
        assert!(matches!(
            &t.pieces[3],
            Piece::Slot(_, Encoding::QueryComponent)
        ));
    }

    #[test]
    fn escapes_and_errors() {
        let t = parse_url("/a{{b}}", &S, None).unwrap();
        assert_eq!(t.pieces, vec![Piece::Lit("/a{b}".into())]);
        assert!(
            parse_url("/a/{path.id", &S, None)
                .unwrap_err()
                .contains("unclosed")
        );
        assert!(
            parse_url("/a}", &S, None)
                .unwrap_err()
                .contains("unmatched")
        );
        assert!(
            parse_url("/a b", &S, None)
                .unwrap_err()
                .contains("not allowed")
        );
        assert!(
            parse_url("/a/{nope.body}", &S, None)
                .unwrap_err()
                .contains("unknown call")
        );
        assert!(parse_header("x\r\ny", &S).is_err());
        assert!(split_target("orders/x").is_err());
        assert!(split_target("orders:x").is_err());
        assert_eq!(split_target("orders:/x").unwrap(), ("orders", "/x"));
    }
}
