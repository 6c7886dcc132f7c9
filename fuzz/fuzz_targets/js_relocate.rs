//! Mapping node's JSON output back onto a JS source (the part of the JS loader that runs in
//! herder): arbitrary JSON and source text, never panics. The input is split at the first NUL.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let (json, source) = text.split_once('\0').unwrap_or((text, text));
        herder::config::fuzzing::relocate(json, source);
    }
});
