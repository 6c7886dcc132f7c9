//! A `herder.toml` as `herder start` and `herder convert` read it: the TOML parser, the
//! validator, the resolution of each app and the conversion back to TOML. Errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        herder::config::fuzzing::load_text("herder.toml", text);
    }
});
