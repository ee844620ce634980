//! The `switchyard` binary: `check` errors and warnings with positions,
//! `explain`, and `schema`. Config fixtures live under `testdata/`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Output of one run of the binary.
struct Run {
    ok: bool,
    stdout: String,
    stderr: String,
}

impl Run {
    /// stdout and stderr together (the report goes to stderr).
    fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// Runs the binary from the crate root, without backtraces.
fn switchyard(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("RUST_BACKTRACE")
        .env_remove("RUST_LIB_BACKTRACE")
        .env_remove("RUST_LOG")
        .output()
        .expect("the switchyard binary runs");
    Run {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn check(file: &str) -> Run {
    switchyard(&["check", "--config", file])
}

/// The 1-based line of `file` that contains `needle` (exactly one
/// non-comment line must).
fn line_of(file: &str, needle: &str) -> usize {
    let text = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file)).unwrap();
    let hits: Vec<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with('#') && l.contains(needle))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(
        hits.len(),
        1,
        "`{needle}` must be on exactly one line of {file}"
    );
    hits[0]
}

/// The report line `FILE:LINE:COL: KIND: …` for the line holding `needle`
/// whose message contains `message`; panics with the whole output if none.
fn diagnostic(run: &Run, file: &str, kind: &str, needle: &str, message: &str) -> String {
    let line = line_of(file, needle);
    let width = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join(file))
        .unwrap()
        .lines()
        .nth(line - 1)
        .unwrap()
        .chars()
        .count();
    let all = run.all();
    let prefix = format!("{file}:{line}:");
    let found = all.lines().find(|l| {
        let Some(rest) = l.strip_prefix(&prefix) else {
            return false;
        };
        let Some((col, rest)) = rest.split_once(':') else {
            return false;
        };
        let col_ok = col.parse::<usize>().is_ok_and(|c| c >= 1 && c <= width);
        col_ok && rest.starts_with(&format!(" {kind}: ")) && rest.contains(message)
    });
    match found {
        Some(l) => l.to_string(),
        None => panic!(
            "expected `{prefix}COL: {kind}: …{message}…` (line {line} holds `{needle}`), got:\n{all}"
        ),
    }
}

/// Asserts `check` fails on `file` with an error at the line of `needle`.
fn assert_error(file: &str, needle: &str, message: &str) -> Run {
    let run = check(file);
    assert!(!run.ok, "check must fail on {file}:\n{}", run.all());
    diagnostic(&run, file, "error", needle, message);
    run
}

/// Asserts `check` succeeds on `file` and warns at the line of `needle`.
fn assert_warning(file: &str, needle: &str, message: &str) {
    let run = check(file);
    assert!(run.ok, "check must succeed on {file}:\n{}", run.all());
    assert!(!run.all().contains("error:"), "{}", run.all());
    diagnostic(&run, file, "warning", needle, message);
}

// An undeclared upstream is an error at the call's target.
#[test]
fn check_reports_unknown_upstream() {
    assert_error(
        "testdata/bad/unknown_upstream.yaml",
        "nope:/customers",
        "unknown upstream `nope`",
    );
}

// A template naming a call the route lacks is an error at that template.
#[test]
fn check_reports_unknown_call_in_template() {
    assert_error(
        "testdata/bad/unknown_call.yaml",
        "ordr.body",
        "unknown call `ordr`",
    );
}

// A dependency cycle is an error that spells out the cycle's path.
#[test]
fn check_reports_dependency_cycle_with_its_path() {
    let run = assert_error(
        "testdata/bad/cycle.yaml",
        "up:/a?from=",
        "dependency cycle: a → b → a",
    );
    assert!(run.all().contains("a → b → a"), "{}", run.all());
}

// An unknown duration unit is an error at the value.
#[test]
fn check_reports_bad_duration() {
    assert_error(
        "testdata/bad/bad_duration.yaml",
        "3 parsecs",
        "`3 parsecs` is not a duration",
    );
}

// An unclosed `{` in a template is an error at the template.
#[test]
fn check_reports_unclosed_brace_in_template() {
    assert_error(
        "testdata/bad/bad_template.yaml",
        "{path.id\"",
        "unclosed `{`",
    );
}

// A misspelt field is an error at that field, naming it.
#[test]
fn check_reports_unknown_field() {
    assert_error(
        "testdata/bad/unknown_field.yaml",
        "tiemout",
        "unknown field `tiemout`",
    );
}

// `path.x` on a route whose path has no `{x}` is an error at the template.
#[test]
fn check_reports_unknown_path_parameter() {
    assert_error(
        "testdata/bad/unknown_path_param.yaml",
        "{path.x}",
        "no parameter `{x}`",
    );
}

// Several errors in one file are all reported by one run.
#[test]
fn check_reports_every_error_in_one_run() {
    let file = "testdata/bad/several.yaml";
    let run = assert_error(file, "2 fortnights", "`2 fortnights` is not a duration");
    diagnostic(
        &run,
        file,
        "error",
        "missing:/a",
        "unknown upstream `missing`",
    );
    diagnostic(&run, file, "error", "{path.nope}", "no parameter `{nope}`");
    diagnostic(&run, file, "error", "four.body", "unknown call `four`");
    diagnostic(&run, file, "error", "up:/d/{", "unclosed `{`");
    assert_eq!(run.all().matches(": error: ").count(), 5, "{}", run.all());
}

// Telemetry mistakes are compile errors with positions, all in one run.
#[test]
fn check_reports_telemetry_errors() {
    let file = "testdata/bad/telemetry.yaml";
    let run = assert_error(
        file,
        "localhost:4317",
        "`endpoint`: `localhost:4317` is not an OTLP/gRPC endpoint",
    );
    diagnostic(
        &run,
        file,
        "error",
        "servce_name",
        "unknown field `servce_name` in `telemetry.otlp`; did you mean `service_name`?",
    );
    diagnostic(&run, file, "error", "to: file", "`to: file` needs a `path`");
    diagnostic(
        &run,
        file,
        "error",
        "format: xml",
        "`format`: `xml` is not one of `json`, `logfmt`",
    );
    assert_eq!(run.all().matches(": error: ").count(), 4, "{}", run.all());
}

// A misspelt field does not hide the other errors of the file.
#[test]
fn check_reports_unknown_field_alongside_other_errors() {
    let file = "testdata/bad/several_with_typo.yaml";
    let run = assert_error(file, "missing:/a", "unknown upstream `missing`");
    assert!(
        run.all().contains("unknown field `tiemout`"),
        "{}",
        run.all()
    );
}

// A chain of call timeouts longer than the route deadline warns but passes.
#[test]
fn check_warns_about_chain_longer_than_deadline() {
    assert_warning(
        "testdata/warn/chain_longer_than_deadline.yaml",
        "timeout: 1s",
        "order → customer may take up to 4s",
    );
}

// A `for_each` without `concurrency` warns but passes.
#[test]
fn check_warns_about_for_each_without_concurrency() {
    assert_warning(
        "testdata/warn/for_each_without_concurrency.yaml",
        "for_each:",
        "without `concurrency`",
    );
}

// A field of a for_each call's body (a list) in `respond` warns but passes.
#[test]
fn check_warns_about_field_of_for_each_body() {
    assert_warning(
        "testdata/warn/list_body_field.yaml",
        "products.body.name",
        "did you mean `products.body[*].name`?",
    );
}

// Every shipped example config compiles (new examples are covered too).
#[test]
fn check_accepts_every_example() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no examples in {}", dir.display());
    for f in files {
        let run = check(f.to_str().unwrap());
        assert!(run.ok, "check fails on {}:\n{}", f.display(), run.all());
        assert!(run.stdout.contains(": ok ("), "{}", run.all());
    }
}

/// The lines of `explain` output under the heading `head` (up to the next
/// heading, i.e. the next line that does not start with a space).
fn section<'a>(out: &'a str, head: &str) -> Vec<&'a str> {
    out.lines()
        .skip_while(|l| *l != head)
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .collect()
}

/// The call name an explain line describes.
fn call_name(line: &str) -> &str {
    line.split_whitespace().next().unwrap_or("")
}

// explain shows customer, orders and shipping at once, products after orders,
// and the critical path orders → products.
#[test]
fn explain_shows_parallel_calls_dependency_and_critical_path() {
    let run = switchyard(&[
        "explain",
        "--config",
        "examples/shop.yaml",
        "GET /customers/{id}/summary",
    ]);
    assert!(run.ok, "{}", run.all());
    let out = &run.stdout;
    let mut at_once: Vec<&str> = section(out, "start at once:")
        .into_iter()
        .map(call_name)
        .collect();
    at_once.sort();
    assert_eq!(at_once, ["customer", "orders", "shipping"], "{out}");
    let after: Vec<&str> = section(out, "after orders:")
        .into_iter()
        .map(call_name)
        .collect();
    assert_eq!(after, ["products"], "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("critical path: orders → products ")),
        "{out}"
    );
}

// explain also finds a route by its path alone.
#[test]
fn explain_accepts_a_bare_path() {
    let run = switchyard(&[
        "explain",
        "--config",
        "examples/shop.yaml",
        "/customers/{id}/summary",
    ]);
    assert!(run.ok, "{}", run.all());
    assert!(
        run.stdout.contains("critical path: orders → products"),
        "{}",
        run.stdout
    );
}

// explain of an unknown route fails and lists the routes there are.
#[test]
fn explain_unknown_route_lists_routes() {
    let run = switchyard(&["explain", "--config", "examples/shop.yaml", "GET /nope"]);
    assert!(!run.ok, "{}", run.all());
    let all = run.all();
    for route in [
        "GET /customers/{id}/summary",
        "GET /customers/{id}/products",
        "GET /orders/{id}",
        "GET /catalog/{*rest}",
    ] {
        assert!(all.contains(route), "`{route}` not listed:\n{all}");
    }
}

// schema prints a JSON Schema object describing `upstreams` and `routes`,
// and the committed schema file is up to date with it.
#[test]
fn schema_is_json_and_matches_committed_file() {
    let run = switchyard(&["schema"]);
    assert!(run.ok, "{}", run.all());
    let schema: serde_json::Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("schema is not JSON ({e}):\n{}", run.stdout));
    assert_eq!(schema["type"], "object", "{schema:#}");
    assert!(schema["properties"]["upstreams"].is_object(), "{schema:#}");
    assert!(schema["properties"]["routes"].is_object(), "{schema:#}");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("schema/switchyard.schema.json");
    let committed = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{} missing ({e}); regenerate with `switchyard schema`",
            path.display()
        )
    });
    assert_eq!(
        committed.trim_end(),
        run.stdout.trim_end(),
        "schema/switchyard.schema.json is stale; regenerate with `switchyard schema > schema/switchyard.schema.json`"
    );
}
