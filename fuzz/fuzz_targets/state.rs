//! The files the daemon reads back from its home: `state.json` (at every start) and
//! `dump.json` (`herder resurrect`), through the decoders the daemon uses, on arbitrary bytes
//! given to both. Their apps must cross the wire unchanged. Errors, never panics.
#![no_main]

use std::path::Path;

use herder::config::fuzzing::assert_crosses_the_wire;
use herder::daemon::{dump, state};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(st) = state::parse(data, Path::new("state.json")) {
        let specs: Vec<_> = st.apps.iter().map(|a| (*a.spec).clone()).collect();
        assert_crosses_the_wire(&specs);
    }
    match dump::parse(data, Path::new("dump.json")) {
        Ok(d) => {
            let specs: Vec<_> = d.apps.into_iter().map(|a| a.spec).collect();
            assert_crosses_the_wire(&specs);
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
