//! A YAML ecosystem file as `herder start` and `herder convert` read it: the YAML parser, the
//! validator, the resolution of each app and the conversion to TOML. Errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        herder::config::fuzzing::load_text("ecosystem.yaml", text);
    }
});
