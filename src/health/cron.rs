//! `cron_restart`: restart an app on a cron schedule (5 fields, or 6 with seconds first;
//! `@daily` and the like), in the machine's time zone or `cron_timezone`.

use std::str::FromStr;
use std::time::Duration;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: croner::Cron,
    tz: jiff02::tz::TimeZone,
}

impl Schedule {
    /// Parse `expr` (and the IANA time zone `tz`, if given).
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Schedule, String> {
        let cron = croner::Cron::from_str(expr.trim())
            .map_err(|e| format!("invalid cron expression `{expr}`: {e}"))?;
        let tz = match tz {
            Some(name) => {
                jiff02::tz::TimeZone::get(name).map_err(|_| format!("unknown time zone `{name}`"))?
            }
            None => jiff02::tz::TimeZone::system(),
        };
        Ok(Schedule { cron, tz })
    }

    /// Time from now to the next matching moment.
    pub fn until_next(&self) -> Option<Duration> {
        let now = jiff02::Timestamp::now().to_zoned(self.tz.clone());
        let next = self.cron.find_next_occurrence(&now, false).ok()?;
        let ms = next.timestamp().as_millisecond() - now.timestamp().as_millisecond();
        Some(Duration::from_millis(ms.max(0) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_field_and_errors() {
        let every2 = Schedule::parse("*/2 * * * * *", Some("UTC")).unwrap();
        let d = every2.until_next().unwrap();
        assert!(d <= Duration::from_secs(2), "{d:?}");
        let daily = Schedule::parse("0 3 * * *", Some("Europe/Paris")).unwrap();
        assert!(daily.until_next().unwrap() <= Duration::from_secs(25 * 3600));
        assert!(Schedule::parse("61 * * * *", None).unwrap_err().contains("invalid cron"));
        assert!(Schedule::parse("* * * * *", Some("Mars/Olympus"))
            .unwrap_err()
            .contains("unknown time zone"));
    }
}
