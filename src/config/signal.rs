//! Signal names and numbers as users write them (`"SIGTERM"`, `"term"`, `"INT"`, `15`), checked
//! against the signals this platform has and normalised to the canonical `SIGxxx` name.

use std::str::FromStr;

use nix::sys::signal::Signal;

/// The canonical name of a signal written as a name (with or without `SIG`, any case) or a
/// number in a string.
pub fn parse_signal(input: &str) -> Option<&'static str> {
    let s = input.trim();
    if let Ok(number) = s.parse::<i64>() {
        return signal_from_number(number);
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") { upper } else { format!("SIG{upper}") };
    Signal::from_str(&name).ok().map(Signal::as_str)
}

/// The canonical name of a signal number.
pub fn signal_from_number(number: i64) -> Option<&'static str> {
    let number = i32::try_from(number).ok()?;
    Signal::try_from(number).ok().map(Signal::as_str)
}

/// Every signal name, for "did you mean" hints.
pub fn signal_names() -> impl Iterator<Item = &'static str> {
    Signal::iterator().map(Signal::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_are_normalised() {
        for input in ["SIGTERM", "TERM", "term", "SigTerm", " SIGTERM ", "15"] {
            assert_eq!(parse_signal(input), Some("SIGTERM"), "{input}");
        }
        assert_eq!(parse_signal("SIGINT"), Some("SIGINT"));
        assert_eq!(parse_signal("usr2"), Some("SIGUSR2"));
        assert_eq!(signal_from_number(9), Some("SIGKILL"));
    }

    #[test]
    fn unknown_signals_are_refused() {
        for input in ["", "SIG", "SIGFOO", "TERMINATE", "0", "-15", "999", "1.5"] {
            assert_eq!(parse_signal(input), None, "{input}");
        }
        assert_eq!(signal_from_number(0), None);
        assert_eq!(signal_from_number(i64::MAX), None);
        assert!(signal_names().any(|n| n == "SIGHUP"));
    }
}
