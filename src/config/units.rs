//! Units shared by config files and flags: durations (to milliseconds) and sizes (to bytes).
//!
//! Durations: an integer is milliseconds (PM2's convention), a string is a number followed by
//! an optional unit: `"1500"`, `"500ms"`, `"10s"`, `"1.5m"`, `"1h"`.
//! Sizes: an integer is bytes, a string is a number followed by an optional binary unit,
//! case-insensitive, with an optional `B`/`iB`: `"4096"`, `"10K"`, `"500M"`, `"1.5G"`, `"2GiB"`.

use thiserror::Error;

/// Why a duration or a size was refused. The message quotes the input as written.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UnitError {
    #[error("invalid {what} `{input}`")]
    Malformed { what: &'static str, input: String },
    #[error("negative {what} `{input}`")]
    Negative { what: &'static str, input: String },
    #[error("{what} `{input}` is too large")]
    TooLarge { what: &'static str, input: String },
}

impl UnitError {
    /// What a valid value looks like.
    pub fn hint(&self) -> &'static str {
        match self.what() {
            DURATION => "write milliseconds (`1500`) or a number with a unit: `500ms`, `10s`, `5m`, `1h`",
            _ => "write bytes (`1048576`) or a number with a unit: `10K`, `500M`, `1G`",
        }
    }

    fn what(&self) -> &'static str {
        match self {
            UnitError::Malformed { what, .. }
            | UnitError::Negative { what, .. }
            | UnitError::TooLarge { what, .. } => what,
        }
    }
}

const DURATION: &str = "duration";
const SIZE: &str = "size";

/// A duration written as a string, in milliseconds.
pub fn parse_duration(input: &str) -> Result<u64, UnitError> {
    non_negative(input, DURATION, parse_unsigned_duration)
}

fn parse_unsigned_duration(input: &str) -> Result<u64, UnitError> {
    let (number, unit) = split_number(input, DURATION)?;
    let factor = match unit {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => return Err(malformed(DURATION, input)),
    };
    scale(number, factor, DURATION, input)
}

/// A duration written as an integer: milliseconds.
pub fn duration_from_int(ms: i64) -> Result<u64, UnitError> {
    u64::try_from(ms).map_err(|_| UnitError::Negative { what: DURATION, input: ms.to_string() })
}

/// A size written as a string, in bytes (units are powers of 1024).
pub fn parse_size(input: &str) -> Result<u64, UnitError> {
    non_negative(input, SIZE, parse_unsigned_size)
}

fn parse_unsigned_size(input: &str) -> Result<u64, UnitError> {
    let (number, unit) = split_number(input, SIZE)?;
    let unit = unit.to_ascii_lowercase();
    let prefix = unit.strip_suffix("ib").or_else(|| unit.strip_suffix('b')).unwrap_or(&unit);
    let factor: u64 = match prefix {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(malformed(SIZE, input)),
    };
    // "iB" alone is not a unit.
    if unit == "ib" {
        return Err(malformed(SIZE, input));
    }
    scale(number, factor, SIZE, input)
}

/// A size written as an integer: bytes.
pub fn size_from_int(bytes: i64) -> Result<u64, UnitError> {
    u64::try_from(bytes).map_err(|_| UnitError::Negative { what: SIZE, input: bytes.to_string() })
}

/// Calls a value negative only when it would be valid without its minus sign.
fn non_negative(
    input: &str,
    what: &'static str,
    parse: fn(&str) -> Result<u64, UnitError>,
) -> Result<u64, UnitError> {
    match input.trim().strip_prefix('-') {
        Some(rest) => match parse(rest) {
            Ok(_) => Err(UnitError::Negative { what, input: input.to_string() }),
            Err(e) => Err(e.with_input(input)),
        },
        None => parse(input),
    }
}

/// A non-negative decimal number and the unit after it (spaces allowed between them).
struct Number<'a> {
    int: &'a str,
    frac: &'a str,
}

fn split_number<'a>(input: &'a str, what: &'static str) -> Result<(Number<'a>, &'a str), UnitError> {
    let s = input.trim();
    let digits_end = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (number, unit) = s.split_at(digits_end);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    // `12`, `1.5`; not `.5`, `1.` or `1.2.3`.
    let has_point = number.contains('.');
    if int.is_empty() || frac.contains('.') || (has_point && frac.is_empty()) {
        return Err(malformed(what, input));
    }
    Ok((Number { int, frac }, unit.trim_start()))
}

/// Fraction digits [`scale`] reads.
const FRACTION_DIGITS: usize = 26;

/// `number × factor`, rounded to the nearest integer, without going through floats.
fn scale(number: Number<'_>, factor: u64, what: &'static str, input: &str) -> Result<u64, UnitError> {
    let too_large = || UnitError::TooLarge { what, input: input.to_string() };
    let int: u64 = number.int.parse().map_err(|_| too_large())?;
    let mut total = int.checked_mul(factor).ok_or_else(too_large)?;
    // Fractional part: add round(0.frac × factor), digit by digit. Digits past the 26th are
    // dropped: they change the product by less than 10^-13, and 10^26 × 2^40 (the largest
    // factor) is as much as a u128 holds.
    let mut frac_value: u128 = 0;
    let mut denominator: u128 = 1;
    for digit in number.frac.bytes().take(FRACTION_DIGITS) {
        frac_value = frac_value * 10 + u128::from(digit - b'0');
        denominator *= 10;
    }
    let frac_scaled = (frac_value * u128::from(factor) + denominator / 2) / denominator;
    total = total.checked_add(u64::try_from(frac_scaled).map_err(|_| too_large())?).ok_or_else(too_large)?;
    Ok(total)
}

fn malformed(what: &'static str, input: &str) -> UnitError {
    UnitError::Malformed { what, input: input.to_string() }
}

impl UnitError {
    fn with_input(self, input: &str) -> Self {
        let input = input.to_string();
        match self {
            UnitError::Malformed { what, .. } => UnitError::Malformed { what, input },
            UnitError::Negative { what, .. } => UnitError::Negative { what, input },
            UnitError::TooLarge { what, .. } => UnitError::TooLarge { what, input },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("1500", 1500),
            ("500ms", 500),
            ("10s", 10_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("1.5s", 1_500),
            ("0.5m", 30_000),
            (" 2 s ", 2_000),
            ("0.0004s", 0),
            ("0.0006s", 1),
        ];
        for (input, ms) in cases {
            assert_eq!(parse_duration(input), Ok(*ms), "{input}");
        }
    }

    #[test]
    fn malformed_durations() {
        for input in ["", "abc", "10x", "s", "1.2.3s", "1.s", ".5s", "10 S", "5M", "1d", "10s5"] {
            assert_eq!(
                parse_duration(input),
                Err(UnitError::Malformed { what: "duration", input: input.to_string() }),
                "{input}"
            );
        }
    }

    #[test]
    fn negative_and_huge_durations() {
        assert_eq!(parse_duration("-5s"), Err(UnitError::Negative { what: "duration", input: "-5s".into() }));
        assert_eq!(parse_duration("-5s").unwrap_err().to_string(), "negative duration `-5s`");
        assert_eq!(
            parse_duration("-abc"),
            Err(UnitError::Malformed { what: "duration", input: "-abc".into() })
        );
        assert_eq!(duration_from_int(-1).unwrap_err().to_string(), "negative duration `-1`");
        assert_eq!(duration_from_int(250), Ok(250));
        assert!(matches!(parse_duration("99999999999999999999h"), Err(UnitError::TooLarge { .. })));
        assert!(matches!(parse_duration("9999999999999999h"), Err(UnitError::TooLarge { .. })));
        assert_eq!(parse_duration("abc").unwrap_err().to_string(), "invalid duration `abc`");
        assert!(parse_duration("abc").unwrap_err().hint().contains("`10s`"));
    }

    #[test]
    fn sizes() {
        let cases: &[(&str, u64)] = &[
            ("0", 0),
            ("4096", 4096),
            ("10K", 10 * 1024),
            ("10k", 10 * 1024),
            ("10KB", 10 * 1024),
            ("500M", 500 * 1024 * 1024),
            ("500MiB", 500 * 1024 * 1024),
            ("1G", 1 << 30),
            ("1.5G", 3 << 29),
            ("2T", 2 << 40),
            ("100B", 100),
            ("64 mb", 64 << 20),
        ];
        for (input, bytes) in cases {
            assert_eq!(parse_size(input), Ok(*bytes), "{input}");
        }
    }

    #[test]
    fn long_fractions_of_the_largest_units_do_not_overflow() {
        // Found by the `units` fuzz target: 30 fraction digits times 2^30 overflowed a u128.
        let nines = "9".repeat(40);
        assert_eq!(parse_size(&format!("1.{nines}T")), Ok(2 << 40));
        assert_eq!(parse_size(&format!("0.{nines}G")), Ok(1 << 30));
        assert_eq!(
            parse_size(&format!("9911.99199919999199999999{}G", "7".repeat(100))),
            Ok(10_642_920_368_694)
        );
        assert_eq!(parse_duration(&format!("1.{nines}h")), Ok(7_200_000));
        assert_eq!(parse_size("0.000000000000000000000000001T"), Ok(0));
    }

    #[test]
    fn bad_sizes() {
        for input in ["", "M", "10X", "10iB", "1..5G", "ten"] {
            assert_eq!(
                parse_size(input),
                Err(UnitError::Malformed { what: "size", input: input.to_string() }),
                "{input}"
            );
        }
        assert_eq!(parse_size("-1G").unwrap_err().to_string(), "negative size `-1G`");
        assert_eq!(size_from_int(-5).unwrap_err().to_string(), "negative size `-5`");
        assert_eq!(size_from_int(5), Ok(5));
        assert!(matches!(parse_size("99999999999T"), Err(UnitError::TooLarge { .. })));
        assert!(parse_size("x").unwrap_err().hint().contains("`500M`"));
    }
}
