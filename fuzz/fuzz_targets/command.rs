//! `herder start <script|"command string"> [flags]`: PM2's flags, the argument parser, the
//! units and the resolution of the app, on arbitrary words (the input split at NUL bytes, as
//! argv is). The app that resolves must cross the wire unchanged. Errors, never panics.
#![no_main]

use herder::config::fuzzing::{assert_crosses_the_wire, context};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let words: Vec<&str> = text.split('\0').collect();
    match herder::cli::script_spec(&words, context()) {
        Some(Ok(spec)) => assert_crosses_the_wire(&[spec]),
        Some(Err(errors)) => {
            let _ = errors.to_string();
        }
        None => {}
    }
});
