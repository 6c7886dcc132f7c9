//! Signals as users write them (`"SIGTERM"`, `"term"`, `"INT"`, `15`): the one parser for the
//! command line, config files and the daemon, and the names shown for exits.

use std::str::FromStr;

use nix::sys::signal::Signal;

/// A signal written as a name (with or without `SIG`, any case) or a number, to its number.
/// Numbers of real-time signals (up to 64) are taken as they are.
pub fn signal_number(input: &str) -> Option<i32> {
    let s = input.trim();
    if let Ok(n) = s.parse::<i64>() {
        return (1..=64).contains(&n).then_some(n as i32);
    }
    named(s).map(|sig| sig as i32)
}

fn named(s: &str) -> Option<Signal> {
    let upper = s.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    let bare = match bare {
        "IOT" => "ABRT",
        "POLL" => "IO",
        other => other,
    };
    if bare.is_empty() {
        return None;
    }
    Signal::from_str(&format!("SIG{bare}")).ok()
}

/// The canonical name (`SIGTERM`) of a signal written as a name or a number, for the signals
/// that have one (a config file's `kill_signal`).
pub fn canonical_name(input: &str) -> Option<&'static str> {
    Signal::try_from(signal_number(input)?).ok().map(Signal::as_str)
}

/// The canonical name of a signal number, when it has one.
pub fn name_of(number: i64) -> Option<&'static str> {
    Signal::try_from(i32::try_from(number).ok()?).ok().map(Signal::as_str)
}

/// The name of a signal number for people (`9` → `SIGKILL`, `40` → `signal 40`).
pub fn signal_name(sig: i32) -> String {
    name_of(sig.into()).map_or_else(|| format!("signal {sig}"), str::to_string)
}

/// Every signal name, for "did you mean" hints.
pub fn signal_names() -> impl Iterator<Item = &'static str> {
    Signal::iterator().map(Signal::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_are_read_as_users_write_them() {
        for input in ["SIGTERM", "TERM", "term", "SigTerm", " SIGTERM ", "15"] {
            assert_eq!(signal_number(input), Some(15), "{input}");
            assert_eq!(canonical_name(input), Some("SIGTERM"), "{input}");
        }
        assert_eq!(signal_number("SIGUSR2"), Some(12));
        assert_eq!(signal_number("iot"), Some(libc::SIGABRT));
        assert_eq!(signal_number("POLL"), Some(libc::SIGIO));
        assert_eq!(signal_number("40"), Some(40), "a real-time signal by number");
        assert_eq!(canonical_name("40"), None, "which has no name");
        assert_eq!(name_of(9), Some("SIGKILL"));
    }

    #[test]
    fn unknown_signals_are_refused() {
        for input in ["", "SIG", "SIGFOO", "SIGNOPE", "TERMINATE", "0", "-15", "999", "1.5"] {
            assert_eq!(signal_number(input), None, "{input}");
        }
        assert_eq!(name_of(0), None);
        assert_eq!(name_of(i64::MAX), None);
        assert!(signal_names().any(|n| n == "SIGHUP"));
    }

    #[test]
    fn exits_name_their_signal() {
        assert_eq!(signal_name(9), "SIGKILL");
        assert_eq!(signal_name(64), "signal 64");
    }
}
