//! Line formats: timestamps in PM2's dayjs-style tokens (`YYYY-MM-DD HH:mm:ss Z`, as users'
//! ecosystem files carry them) and JSON lines.

use std::fmt::Write as _;

use super::Stream;

/// PM2's default for `time = true`.
pub const DEFAULT_FORMAT: &str = "YYYY-MM-DDTHH:mm:ss";

/// The moment a read reached herder, in the machine's time zone.
pub struct Stamp {
    zoned: jiff::ZonedDateTime,
}

impl Stamp {
    pub fn now() -> Stamp {
        Stamp { zoned: jiff::ZonedDateTime::now() }
    }

    /// The moment `ms` (Unix time in milliseconds), in the machine's time zone.
    pub fn from_unix_ms(ms: i64) -> Stamp {
        let ts = jiff::Timestamp::from_millisecond(ms).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
        Stamp { zoned: ts.to_zoned_datetime(local_zone().clone()) }
    }

    /// RFC 3339 with milliseconds and offset, for JSON lines.
    pub fn rfc3339(&self) -> String {
        self.zoned.strftime("%Y-%m-%dT%H:%M:%S%.3f%:z").to_string()
    }
}

/// A compiled dayjs-style format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeFormat {
    /// The equivalent strftime format for jiff.
    strftime: String,
}

impl TimeFormat {
    /// Compile a dayjs format: `YYYY YY M MM D DD H HH h hh m mm s ss SSS Z ZZ A a X x`, text in
    /// `[brackets]` kept as is, anything else literal.
    pub fn parse(dayjs: &str) -> Result<TimeFormat, String> {
        let mut out = String::new();
        let chars: Vec<char> = dayjs.chars().collect();
        let mut i = 0;
        let tokens: &[(&str, &str)] = &[
            ("YYYY", "%Y"),
            ("YY", "%y"),
            ("MMMM", "%B"),
            ("MMM", "%b"),
            ("MM", "%m"),
            ("M", "%-m"),
            ("DD", "%d"),
            ("D", "%-d"),
            ("dddd", "%A"),
            ("ddd", "%a"),
            ("HH", "%H"),
            ("H", "%-H"),
            ("hh", "%I"),
            ("h", "%-I"),
            ("mm", "%M"),
            ("m", "%-M"),
            ("ss", "%S"),
            ("s", "%-S"),
            ("SSS", "%3f"),
            ("ZZ", "%z"),
            ("Z", "%:z"),
            ("A", "%p"),
            ("a", "%P"),
            ("X", "%s"),
        ];
        'outer: while i < chars.len() {
            if chars[i] == '[' {
                let Some(end) = chars[i + 1..].iter().position(|c| *c == ']') else {
                    return Err(format!("unclosed `[` in the date format `{dayjs}`"));
                };
                for c in &chars[i + 1..i + 1 + end] {
                    push_literal(&mut out, *c);
                }
                i += end + 2;
                continue;
            }
            for (tok, f) in tokens {
                let t: Vec<char> = tok.chars().collect();
                if chars[i..].starts_with(&t) {
                    out.push_str(f);
                    i += t.len();
                    continue 'outer;
                }
            }
            push_literal(&mut out, chars[i]);
            i += 1;
        }
        Ok(TimeFormat { strftime: out })
    }

    /// The time at the start of `line` written in this format, in Unix milliseconds (the
    /// machine's time zone unless the format has an offset); `None` when the line does not
    /// start with one or the format lacks a date.
    pub fn read_prefix(&self, line: &[u8]) -> Option<i64> {
        let (tm, _) = jiff::fmt::strtime::BrokenDownTime::parse_prefix(&self.strftime, line).ok()?;
        // With an offset or a Unix time (`X`) it is a moment already; else local time.
        let ts = match tm.to_timestamp() {
            Ok(ts) => ts,
            Err(_) => local_zone().to_timestamp(tm.to_datetime().ok()?).ok()?,
        };
        Some(ts.as_millisecond())
    }

    pub fn render(&self, stamp: &Stamp) -> String {
        let mut s = String::new();
        let _ = write!(s, "{}", stamp.zoned.strftime(&self.strftime));
        s
    }
}

fn local_zone() -> &'static jiff::tz::TimeZone {
    static ZONE: std::sync::OnceLock<jiff::tz::TimeZone> = std::sync::OnceLock::new();
    ZONE.get_or_init(jiff::tz::TimeZone::system)
}

/// The time a log line was written, in Unix milliseconds, when the line carries one: a JSON
/// line's `timestamp`, or a leading `YYYY-MM-DD[T ]HH:mm:ss[.SSS][ ][Z|±HH:mm|±HHmm]` (PM2's
/// default and the usual `log_date_format`s; without an offset, the machine's time zone).
pub fn line_time(line: &[u8]) -> Option<i64> {
    if line.first() == Some(&b'{') {
        let v: serde_json::Value = serde_json::from_slice(line).ok()?;
        let ts: jiff::Timestamp = v.get("timestamp")?.as_str()?.parse().ok()?;
        return Some(ts.as_millisecond());
    }
    let num = |b: &[u8]| -> Option<i32> {
        b.iter().try_fold(0i32, |acc, c| c.is_ascii_digit().then(|| acc * 10 + i32::from(c - b'0')))
    };
    if line.len() < 19
        || line[4] != b'-'
        || line[7] != b'-'
        || !matches!(line[10], b'T' | b' ')
        || line[13] != b':'
        || line[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(&line[0..4])?, num(&line[5..7])?, num(&line[8..10])?);
    let (h, mi, s) = (num(&line[11..13])?, num(&line[14..16])?, num(&line[17..19])?);
    let mut rest = &line[19..];
    let mut nanos = 0i32;
    if let Some(frac) = rest.strip_prefix(b".").or_else(|| rest.strip_prefix(b",")) {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits > 0 {
            let used = digits.min(9);
            nanos = num(&frac[..used])? * 10i32.pow(9 - used as u32);
            rest = &frac[digits..];
        }
    }
    let dt =
        jiff::civil::DateTime::new(y as i16, mo as i8, d as i8, h as i8, mi as i8, s as i8, nanos).ok()?;
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    let offset = match rest.first() {
        Some(b'Z') => Some(0),
        Some(sign @ (b'+' | b'-')) if rest.len() >= 5 => {
            let hh = num(&rest[1..3])?;
            let mm = if rest[3] == b':' { num(rest.get(4..6)?)? } else { num(&rest[3..5])? };
            Some(if *sign == b'-' { -(hh * 3600 + mm * 60) } else { hh * 3600 + mm * 60 })
        }
        _ => None,
    };
    let ts = match offset {
        Some(secs) => jiff::tz::Offset::from_seconds(secs).ok()?.to_timestamp(dt).ok()?,
        None => local_zone().to_timestamp(dt).ok()?,
    };
    Some(ts.as_millisecond())
}

fn push_literal(out: &mut String, c: char) {
    if c == '%' {
        out.push_str("%%");
    } else {
        out.push(c);
    }
}

/// Append one JSON line (`timestamp`, `app`, `instance`, `stream`, `message`) for `line`.
/// Bytes that are not UTF-8 become U+FFFD in JSON, which has no way to carry them.
pub fn json_line(out: &mut Vec<u8>, stamp: &Stamp, app: &str, instance: u32, stream: Stream, line: &[u8]) {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    let message = String::from_utf8_lossy(line);
    let obj = serde_json::json!({
        "timestamp": stamp.rfc3339(),
        "app": app,
        "instance": instance,
        "stream": stream.as_str(),
        "message": message,
    });
    // Writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, &obj);
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixed() -> Stamp {
        let ts: jiff::Timestamp = "2026-03-04T05:06:07.089Z".parse().unwrap();
        Stamp { zoned: ts.to_zoned_datetime(jiff::tz::TimeZone::UTC) }
    }

    #[test]
    fn dayjs_tokens() {
        let f = TimeFormat::parse("YYYY-MM-DD HH:mm:ss.SSS Z").unwrap();
        assert_eq!(f.render(&fixed()), "2026-03-04 05:06:07.089 +00:00");
        let f = TimeFormat::parse(DEFAULT_FORMAT).unwrap();
        assert_eq!(f.render(&fixed()), "2026-03-04T05:06:07");
        let f = TimeFormat::parse("[at] D/M/YY h:mm A [100%]").unwrap();
        assert_eq!(f.render(&fixed()), "at 4/3/26 5:06 AM 100%");
        assert!(TimeFormat::parse("[oops").is_err());
    }

    #[test]
    fn times_are_read_back_from_lines() {
        let utc = |s: &str| s.parse::<jiff::Timestamp>().unwrap().as_millisecond();
        let want = utc("2026-03-04T05:06:07.089Z");
        assert_eq!(line_time(b"2026-03-04T05:06:07.089Z hello"), Some(want));
        assert_eq!(line_time(b"2026-03-04 07:06:07.089 +02:00 hello"), Some(want));
        assert_eq!(line_time(b"2026-03-04T00:06:07.089-0500: hello"), Some(want));
        assert_eq!(line_time(b"2026-03-04T05:06:07 hello"), line_time(b"2026-03-04 05:06:07"));
        let mut json = Vec::new();
        json_line(&mut json, &fixed(), "web", 0, Stream::Out, b"hi\n");
        assert_eq!(line_time(&json[..json.len() - 1]), Some(want));
        assert_eq!(line_time(b"hello 2026-03-04T05:06:07"), None);
        assert_eq!(line_time(b"2026-13-04T05:06:07 bad month"), None);
        assert_eq!(line_time(b"{not json"), None);
        let ms = utc("2026-03-04T05:06:07.089Z");
        assert_eq!(line_time(Stamp::from_unix_ms(ms).rfc3339().as_bytes()), Some(ms));
    }

    #[test]
    fn a_format_reads_back_what_it_wrote() {
        let ms = "2026-03-04T05:06:07.089Z".parse::<jiff::Timestamp>().unwrap().as_millisecond();
        for f in
            ["D/M/YY h:mm:ss.SSS A Z", "YYYY-MM-DD HH:mm:ss.SSS", "[at] X", "DD MMM YYYY HH:mm:ss.SSS ZZ"]
        {
            let f = TimeFormat::parse(f).unwrap();
            let line = format!("{} hello", f.render(&Stamp::from_unix_ms(ms)));
            let got = f.read_prefix(line.as_bytes());
            let want = if f.strftime.contains("%3f") { ms } else { ms / 1000 * 1000 };
            assert_eq!(got, Some(want), "{f:?} on {line:?}");
        }
        assert_eq!(TimeFormat::parse("HH:mm:ss").unwrap().read_prefix(b"05:06:07 no date"), None);
        assert_eq!(TimeFormat::parse(DEFAULT_FORMAT).unwrap().read_prefix(b"plain line"), None);
    }

    #[test]
    fn json_lines_are_valid_and_keep_the_message() {
        let mut out = Vec::new();
        json_line(&mut out, &fixed(), "web", 2, Stream::Err, b"he said \"hi\"\tthen \xff\n");
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["app"], "web");
        assert_eq!(v["instance"], 2);
        assert_eq!(v["stream"], "err");
        assert_eq!(v["message"], "he said \"hi\"\tthen \u{fffd}");
        assert_eq!(v["timestamp"], "2026-03-04T05:06:07.089+00:00");
        assert!(out.ends_with(b"\n"));
    }
}
