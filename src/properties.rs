//! Property tests of the two parsers that read untrusted or hand-written
//! text — the config loader and the template/expression engine — and of the
//! encoding invariant of rendered URLs. (Coverage-guided fuzz targets for
//! the same entry points live in `fuzz/`; see README.)

use crate::exec::eval::{Env, RequestView};
use crate::exec::render::{self, Rendered};
use crate::plan::expr::{self, CallId, Scope};
use crate::plan::{self, LoadError, template};
use proptest::prelude::*;

const SHOP: &str = include_str!("../examples/shop.yaml");

/// Path parameters `a` and `b`, one call `c`, `item` and `$errors` in scope.
struct TestScope;
impl Scope for TestScope {
    fn path_param(&self, name: &str) -> Option<usize> {
        ["a", "b"].iter().position(|p| *p == name)
    }
    fn call(&self, name: &str) -> Option<CallId> {
        (name == "c").then_some(0)
    }
    fn has_item(&self) -> bool {
        true
    }
    fn has_errors(&self) -> bool {
        true
    }
}

/// Compiling must end in a plan or in a report whose positions lie in the text.
fn compiles_or_reports(text: &str) {
    // YAML counts `\r\n`, `\r` and `\n` as line breaks.
    let lines = text.replace("\r\n", "\n").matches(['\n', '\r']).count() as u64 + 1;
    match plan::compile_str("p.yaml", text) {
        Ok(_) | Err(LoadError::Config(_)) => {}
        Err(LoadError::Invalid(report)) => {
            assert!(!report.errors.is_empty());
            for d in &report.errors {
                assert!(
                    d.pos.line <= lines,
                    "{} points past the end: {text:?}",
                    d.pos.line
                );
            }
        }
    }
}

/// An edit of the shop config: replace a range with YAML-significant noise.
fn mutated_shop() -> impl Strategy<Value = String> {
    let noise = proptest::string::string_regex("[{}\\[\\]:,'\"|#*&!?>%@` \\n\\r\\ta-z0-9.-]{0,12}")
        .unwrap();
    (0..SHOP.len(), 0usize..40, noise).prop_map(|(at, len, noise)| {
        let mut at = at;
        while !SHOP.is_char_boundary(at) {
            at -= 1;
        }
        let mut end = (at + len).min(SHOP.len());
        while !SHOP.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}{}{}", &SHOP[..at], noise, &SHOP[end..])
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn config_loader_survives_any_text(text in "\\PC{0,300}") {
        compiles_or_reports(&text);
    }

    #[test]
    fn config_loader_survives_edits_of_a_real_config(text in mutated_shop()) {
        compiles_or_reports(&text);
    }

    #[test]
    fn expressions_parse_or_fail_cleanly(text in "[a-z$*.\\[\\]|(),'\"0-9 _\u{a0}\u{3000}é-]{0,40}") {
        if let Ok(e) = expr::parse(&text, &TestScope) {
            // What parsed once parses again to the same text.
            let again = expr::parse(&e.text, &TestScope).expect("re-parse");
            prop_assert_eq!(again.text, e.text);
        }
        let _ = template::parse_url(&format!("/x/{{{text}}}?q={{{text}}}"), &TestScope, None);
        let _ = template::parse_header(&text, &TestScope);
    }

    // A URL template that compiles renders to a valid URI, whatever its
    // literal text: a config that passes `check` cannot build a bad request.
    #[test]
    fn compiled_url_templates_render_valid_uris(lit in "/\\PC{0,12}", tail in "\\PC{0,8}") {
        let text = format!("{lit}{{path.a}}{tail}");
        if let Ok(t) = template::parse_url(&text, &TestScope, None) {
            let params = vec!["v".to_string(), "w".to_string()];
            let headers = http::HeaderMap::new();
            let view = RequestView::new(&params, None, &headers);
            let env = Env { request: &view, results: &[], item: None, errors: None };
            let mut out = String::from("http://up");
            if let Ok(Rendered::Text(url)) = render::render(&t, &env, &mut out) {
                prop_assert!(url.parse::<http::Uri>().is_ok(), "`{}` compiled but renders `{}`", text, url);
            }
        }
    }

    // Whatever a path parameter holds, it stays inside its own segment:
    // the URL parses, has exactly the template's segments, and each one
    // decodes (an independent percent-decoder) back to the value.
    #[test]
    fn path_values_cannot_leave_their_segment(a in "\\PC{1,20}", b in any::<String>()) {
        prop_assume!(!matches!(a.as_str(), "." | ".."));
        let t = template::parse_url("/items/{path.a}/x/{path.b}?q=1", &TestScope, None).unwrap();
        let params = vec![a.clone(), b.clone()];
        let headers = http::HeaderMap::new();
        let view = RequestView::new(&params, None, &headers);
        let env = Env { request: &view, results: &[], item: None, errors: None };
        let mut out = String::from("http://up");
        match render::render(&t, &env, &mut out) {
            Ok(Rendered::Text(url)) => {
                let uri: http::Uri = url.parse().expect("a valid URI");
                prop_assert_eq!(uri.query(), Some("q=1"));
                let segments: Vec<&str> = uri.path().split('/').collect();
                prop_assert_eq!(segments.len(), 5, "{}", uri);
                prop_assert_eq!(segments[1], "items");
                prop_assert_eq!(segments[3], "x");
                let decode = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8().unwrap().into_owned();
                prop_assert_eq!(decode(segments[2]), a);
                prop_assert_eq!(decode(segments[4]), b);
            }
            Ok(Rendered::EmptyList) => prop_assert!(false, "no list here"),
            // Only values that cannot be a segment are refused.
            Err(_) => prop_assert!(matches!(b.as_str(), "" | "." | "..")),
        }
    }

    // A header value is rendered as given, or refused when it holds control
    // characters; what is rendered is always a valid header value.
    #[test]
    fn header_values_are_valid_or_refused(a in "\\PC{0,10}[\\x00-\\x1f\\x7f]?\\PC{0,10}") {
        prop_assume!(!a.is_empty());
        let t = template::parse_header("v={path.a}", &TestScope).unwrap();
        let params = vec![a.clone(), String::new()];
        let headers = http::HeaderMap::new();
        let view = RequestView::new(&params, None, &headers);
        let env = Env { request: &view, results: &[], item: None, errors: None };
        let mut out = String::new();
        match render::render(&t, &env, &mut out) {
            Ok(Rendered::Text(v)) => {
                prop_assert!(http::HeaderValue::from_str(&v).is_ok(), "{:?}", v);
                prop_assert_eq!(v, format!("v={a}"));
            }
            Ok(Rendered::EmptyList) => prop_assert!(false, "no list here"),
            Err(_) => prop_assert!(a.chars().any(char::is_control)),
        }
    }
}

// Found by `config_loader_survives_any_text`: an unknown key made of dots
// (`.`, `a.`) sent the key locator into an endless loop.
#[test]
fn unknown_keys_with_dots_are_reported() {
    for text in [".: c", "a.: 1", "server:\n  x..y: 1\n"] {
        match plan::compile_str("p.yaml", text) {
            Err(LoadError::Invalid(report)) => assert!(
                report
                    .errors
                    .iter()
                    .any(|d| d.message.contains("unknown field")),
                "{report}"
            ),
            other => panic!("{text:?}: {:?}", other.map(|_| ())),
        }
    }
}

// Found by the `template_engine` fuzz target: a multi-byte whitespace
// character (here a no-break space) in an expression panicked the parser.
#[test]
fn multibyte_whitespace_in_expressions_is_no_panic() {
    for text in ["path.a\u{a0}", "path.a |\u{3000}join", "\u{a0}path.a"] {
        let _ = expr::parse(text, &TestScope);
        let _ = template::parse_url(&format!("/x/{{{text}}}"), &TestScope, None);
    }
    assert!(plan::compile_str("p.yaml", "upstreams:\n  u: { url: \"http://127.0.0.1:1\" }\nroutes:\n  - get: /x\n    calls:\n      a: { get: \"u:/{path.x\u{a0}}\" }\n").is_err());
}
