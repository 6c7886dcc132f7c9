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

    pub fn render(&self, stamp: &Stamp) -> String {
        let mut s = String::new();
        let _ = write!(s, "{}", stamp.zoned.strftime(&self.strftime));
        s
    }
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
