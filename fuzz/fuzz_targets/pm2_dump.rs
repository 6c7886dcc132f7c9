//! PM2's process dump (`herder start ~/.pm2/dump.pm2`, `herder convert`): the JSON parser, the
//! records turned into apps, the validator and the resolution, as for a file named `dump.pm2`.
//! Errors, never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        herder::config::fuzzing::load_text("dump.pm2", text);
    }
});
