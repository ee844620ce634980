//! Any bytes as a config file: the loader returns a plan or a report, and
//! never panics or points past the end of the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchyard::plan::{self, LoadError};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // YAML counts `\r\n`, `\r` and `\n` as line breaks.
    let lines = text.replace("\r\n", "\n").matches(['\n', '\r']).count() as u64 + 1;
    if let Err(LoadError::Invalid(report)) = plan::compile_str("fuzz.yaml", text) {
        assert!(!report.errors.is_empty());
        assert!(report.errors.iter().all(|d| d.pos.line <= lines));
    }
});
