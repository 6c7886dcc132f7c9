//! A JSON ecosystem file (PM2's JSON5-like syntax; a dump's shape under that name) as `herder
//! start` and `herder convert` read it: the JSON parser, the validator, the resolution of each
//! app and the conversion to TOML. Errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        herder::config::fuzzing::load_text("ecosystem.json", text);
    }
});
