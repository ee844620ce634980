//! Any text as an expression, a URL template and a header template; when a
//! URL template parses, rendering it with any parameter values yields a
//! valid URI or a clean error.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::exec::eval::{Env, RequestView};
use switchyard::exec::render::{self, Rendered};
use switchyard::plan::expr::{self, CallId, Scope};
use switchyard::plan::template;

struct FuzzScope;
impl Scope for FuzzScope {
    fn path_param(&self, name: &str) -> Option<usize> {
        ["a", "b"].iter().position(|p| *p == name)
    }
    fn call(&self, _: &str) -> Option<CallId> {
        None
    }
    fn has_item(&self) -> bool {
        false
    }
    fn has_errors(&self) -> bool {
        true
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // The first line is the template, the rest are the parameter values.
    let mut parts = text.splitn(3, '\n');
    let (t, a, b) = (
        parts.next().unwrap_or(""),
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    let _ = expr::parse(t, &FuzzScope);
    let _ = template::parse_header(t, &FuzzScope);
    // Call targets are split as `upstream:/path`; the path always starts with `/`.
    if !t.starts_with('/') {
        return;
    }
    let Ok(url) = template::parse_url(t, &FuzzScope, None) else {
        return;
    };
    let params = vec![a, b];
    let headers = http::HeaderMap::new();
    let view = RequestView::new(&params, Some("q=1&r=%2F"), &headers);
    let env = Env {
        request: &view,
        results: &[],
        item: None,
        errors: None,
    };
    let mut out = String::from("http://up");
    if let Ok(Rendered::Text(rendered)) = render::render(&url, &env, &mut out) {
        // `http::Uri` holds at most 64 KiB; a longer URL fails the call
        // cleanly (`bad_input`) when the request is built.
        if rendered.len() < 65_000 {
            assert!(rendered.parse::<http::Uri>().is_ok(), "{rendered:?}");
        }
    }
});
