//! The parsers of values users write in config files and flags: durations (`1.5s`), sizes
//! (`500M`) and signals (`SIGTERM`, `term`, `15`). Errors, never panics; a value that reads is
//! refused with a minus sign in front, and a signal reads back from its name.
#![no_main]

use herder::config::units::{parse_duration, parse_size, UnitError};
use herder::protocol::signal::{canonical_name, name_of, signal_name, signal_number};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for parse in [parse_duration, parse_size] {
        match parse(text) {
            Ok(_) => {
                let negative = format!("-{text}");
                assert!(matches!(parse(&negative), Err(UnitError::Negative { .. })), "{negative:?}");
            }
            Err(e) => {
                let _ = (e.to_string(), e.hint());
            }
        }
    }
    if let Some(n) = signal_number(text) {
        let name = signal_name(n);
        if name_of(n.into()).is_some() {
            assert_eq!(signal_number(&name), Some(n), "{text:?} is {name}");
        }
        let _ = canonical_name(text);
    }
});
