//! The json parser and the validator (and `convert`) on arbitrary input: errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        herder::config::fuzzing::parse_and_validate("json", text);
    }
});
