//! Quantities as people read them, the way PM2 prints them: durations (`12s`, `5m`, `2D`) and
//! sizes (`3.0mb`). Shared by the command line's tables and the `monit` dashboard.

/// `950ms`, `12s`, `5m`, `3h`, `2D`, as PM2 shows uptimes.
pub fn duration(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0 => format!("{ms}ms"),
        1..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86399 => format!("{}h", s / 3600),
        _ => format!("{}D", s / 86400),
    }
}

/// `512b`, `1.5kb`, `3.0mb`, `1.2gb`, as PM2 shows memory.
pub fn bytes(b: u64) -> String {
    const K: u64 = 1024;
    match b {
        0..K => format!("{b}b"),
        K..=1_048_575 => format!("{:.1}kb", b as f64 / K as f64),
        1_048_576..=1_073_741_823 => format!("{:.1}mb", b as f64 / (K * K) as f64),
        _ => format!("{:.1}gb", b as f64 / (K * K * K) as f64),
    }
}

/// `14:03:07`: the local time of day of a unix time in ms.
pub fn clock_time(ms: u64) -> String {
    jiff::Timestamp::from_millisecond(ms as i64)
        .map(|t| t.to_zoned_datetime(jiff::tz::TimeZone::system()).strftime("%H:%M:%S").to_string())
        .unwrap_or_else(|_| format!("{ms} ms"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(duration(950), "950ms");
        assert_eq!(duration(12_000), "12s");
        assert_eq!(duration(300_000), "5m");
        assert_eq!(duration(2 * 86_400_000), "2D");
        assert_eq!(bytes(512), "512b");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0mb");
    }
}
