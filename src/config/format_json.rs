//! `.json` files (and PM2's `ecosystem.json`) into the spanned [`Value`] tree.
//!
//! PM2 evaluates `.json` config files as JavaScript, so real ones carry comments, trailing
//! commas, unquoted keys and single-quoted strings. This is a small JSON5 parser: strict JSON is
//! a subset, and every node keeps its exact line and column. It also reads what `node` prints
//! for `ecosystem.config.js` files (whose positions are then mapped back to the JS source).
//!
//! Numbers follow JavaScript, which has no integer type: a number with an integral value is an
//! integer (`1e3` and `3000.0` are `3000`), anything else a float.

use super::value::{Entry, Kind, LineIndex, Span, Table, Value};
use super::ConfigError;

/// Nesting deeper than this is refused (a config is never that deep; it keeps the recursion
/// bounded on hostile input).
const MAX_DEPTH: usize = 128;

/// Parses JSON5 text; a syntax error comes back with its line and column.
pub fn parse(text: &str) -> Result<Value, ConfigError> {
    let index = LineIndex::new(text);
    let mut p = Parser { text, bytes: text.as_bytes(), pos: 0, index: &index };
    // A byte-order mark is not content.
    if text.starts_with('\u{feff}') {
        p.pos = 3;
    }
    p.skip_trivia()?;
    if p.pos >= p.bytes.len() {
        return Err(p.error_at(p.pos, "invalid json: the file is empty"));
    }
    let value = p.value(0)?;
    p.skip_trivia()?;
    if p.pos < p.bytes.len() {
        return Err(p.error_at(p.pos, &format!("invalid json: unexpected {} after the value", p.describe())));
    }
    Ok(value)
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    index: &'a LineIndex<'a>,
}

impl Parser<'_> {
    fn span(&self, offset: usize) -> Span {
        self.index.span(offset)
    }

    fn error_at(&self, offset: usize, message: &str) -> ConfigError {
        ConfigError::new(message).at(self.span(offset))
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn peek_char(&self) -> Option<char> {
        self.text.get(self.pos..).and_then(|s| s.chars().next())
    }

    /// "`x`" for the character at the cursor, "the end of the file" at the end.
    fn describe(&self) -> String {
        match self.peek_char() {
            Some(c) if c.is_control() => format!("character {:?}", c),
            Some(c) => format!("`{c}`"),
            None => "end of the file".to_string(),
        }
    }

    /// Whitespace (JSON5's, including U+2028/2029 and the BOM) and comments.
    fn skip_trivia(&mut self) -> Result<(), ConfigError> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c) => self.pos += 1,
                Some(b'/') if self.bytes.get(self.pos + 1) == Some(&b'/') => {
                    while let Some(b) = self.peek() {
                        if b == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                Some(b'/') if self.bytes.get(self.pos + 1) == Some(&b'*') => {
                    let start = self.pos;
                    match self.text[self.pos + 2..].find("*/") {
                        Some(end) => self.pos += 2 + end + 2,
                        None => return Err(self.error_at(start, "invalid json: unclosed `/*` comment")),
                    }
                }
                Some(_) => match self.peek_char() {
                    Some('\u{a0}' | '\u{feff}' | '\u{2028}' | '\u{2029}') => {
                        self.pos += self.peek_char().map_or(1, char::len_utf8)
                    }
                    Some(c) if c.is_whitespace() && !c.is_ascii() => self.pos += c.len_utf8(),
                    _ => return Ok(()),
                },
                None => return Ok(()),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Value, ConfigError> {
        if depth > MAX_DEPTH {
            return Err(self.error_at(self.pos, "invalid json: nested too deeply"));
        }
        let start = self.pos;
        let span = self.span(start);
        match self.peek() {
            Some(b'{') => self.object(depth).map(|t| Value::new(Kind::Table(t), span)),
            Some(b'[') => self.array(depth).map(|a| Value::new(Kind::Array(a), span)),
            Some(b'"' | b'\'') => self.string().map(|s| Value::new(Kind::Str(s), span)),
            Some(b'0'..=b'9' | b'-' | b'+' | b'.') => self.number(),
            Some(_) => {
                let word = self.identifier_text();
                let kind = match word {
                    "true" => Kind::Bool(true),
                    "false" => Kind::Bool(false),
                    "null" => Kind::Null,
                    "Infinity" | "NaN" => {
                        self.pos = start;
                        return self.number();
                    }
                    "undefined" => {
                        return Err(self
                            .error_at(start, "invalid json: `undefined` is not a value")
                            .with_hint("remove the key, or write `null`"))
                    }
                    "" => {
                        return Err(
                            self.error_at(start, &format!("invalid json: unexpected {}", self.describe()))
                        )
                    }
                    other => {
                        let message = format!("invalid json: unexpected word `{other}`");
                        return Err(self.error_at(start, &message).with_hint("quote strings: \"…\""));
                    }
                };
                self.pos = start + word.len();
                Ok(Value::new(kind, span))
            }
            None => Err(self.error_at(start, "invalid json: unexpected end of the file, expected a value")),
        }
    }

    /// The identifier-like word at the cursor (without moving it).
    fn identifier_text(&self) -> &str {
        let rest = &self.text[self.pos..];
        let end = rest
            .char_indices()
            .find(|(i, c)| !(c.is_alphanumeric() || *c == '_' || *c == '$' || (*i > 0 && *c == '\u{200c}')))
            .map_or(rest.len(), |(i, _)| i);
        // A word cannot start with a digit.
        if rest.starts_with(|c: char| c.is_ascii_digit()) {
            return "";
        }
        &rest[..end]
    }

    fn object(&mut self, depth: usize) -> Result<Table, ConfigError> {
        let open = self.pos;
        self.pos += 1;
        let mut table = Table::default();
        loop {
            self.skip_trivia()?;
            match self.peek() {
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(table);
                }
                None => return Err(self.error_at(open, "invalid json: unclosed `{`")),
                _ => {}
            }
            let key_start = self.pos;
            let key = match self.peek() {
                Some(b'"' | b'\'') => self.string()?,
                _ => {
                    let word = self.identifier_text().to_string();
                    if word.is_empty() {
                        let message =
                            format!("invalid json: expected a key or `}}`, found {}", self.describe());
                        return Err(self.error_at(key_start, &message));
                    }
                    self.pos += word.len();
                    word
                }
            };
            self.skip_trivia()?;
            if self.peek() != Some(b':') {
                let message =
                    format!("invalid json: expected `:` after the key `{key}`, found {}", self.describe());
                return Err(self.error_at(self.pos, &message));
            }
            self.pos += 1;
            self.skip_trivia()?;
            let value = self.value(depth + 1)?;
            table.entries.push(Entry { key, key_span: self.span(key_start), value });
            self.skip_trivia()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                None => return Err(self.error_at(open, "invalid json: unclosed `{`")),
                _ => {
                    let message = format!("invalid json: expected `,` or `}}`, found {}", self.describe());
                    return Err(self.error_at(self.pos, &message).with_hint("separate entries with commas"));
                }
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Vec<Value>, ConfigError> {
        let open = self.pos;
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_trivia()?;
            match self.peek() {
                Some(b']') => {
                    self.pos += 1;
                    return Ok(items);
                }
                None => return Err(self.error_at(open, "invalid json: unclosed `[`")),
                _ => {}
            }
            items.push(self.value(depth + 1)?);
            self.skip_trivia()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {}
                None => return Err(self.error_at(open, "invalid json: unclosed `[`")),
                _ => {
                    let message = format!("invalid json: expected `,` or `]`, found {}", self.describe());
                    return Err(self.error_at(self.pos, &message).with_hint("separate items with commas"));
                }
            }
        }
    }

    fn string(&mut self) -> Result<String, ConfigError> {
        let start = self.pos;
        let quote = self.bytes[self.pos];
        self.pos += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek_char() else {
                return Err(self.error_at(start, "invalid json: unclosed string"));
            };
            match c {
                _ if c as u32 == quote as u32 => {
                    self.pos += 1;
                    return Ok(out);
                }
                '\n' | '\r' => {
                    return Err(self
                        .error_at(start, "invalid json: unclosed string (a line break inside a string)")
                        .with_hint("write `\\n` for a line break"))
                }
                '\\' => {
                    let escape_at = self.pos;
                    self.pos += 1;
                    let Some(e) = self.peek_char() else {
                        return Err(self.error_at(start, "invalid json: unclosed string"));
                    };
                    self.pos += e.len_utf8();
                    match e {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'v' => out.push('\u{b}'),
                        '0' if !self.peek().is_some_and(|b| b.is_ascii_digit()) => out.push('\0'),
                        'x' => {
                            let code = self.hex(2, escape_at)?;
                            out.push(char::from_u32(code).unwrap_or('\u{fffd}'));
                        }
                        'u' => out.push(self.unicode_escape(escape_at)?),
                        // A backslash before a line break continues the string on the next line.
                        '\n' | '\u{2028}' | '\u{2029}' => {}
                        '\r' => {
                            if self.peek() == Some(b'\n') {
                                self.pos += 1;
                            }
                        }
                        '1'..='9' | '0' => {
                            return Err(
                                self.error_at(escape_at, "invalid json: octal escapes are not allowed")
                            )
                        }
                        other => out.push(other),
                    }
                }
                c => {
                    out.push(c);
                    self.pos += c.len_utf8();
                }
            }
        }
    }

    fn hex(&mut self, digits: usize, escape_at: usize) -> Result<u32, ConfigError> {
        let text = self.text.get(self.pos..self.pos + digits).unwrap_or("");
        if text.len() != digits || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(self.error_at(escape_at, "invalid json: bad escape sequence"));
        }
        self.pos += digits;
        Ok(u32::from_str_radix(text, 16).unwrap_or(0))
    }

    /// `\uXXXX`, with surrogate pairs joined.
    fn unicode_escape(&mut self, escape_at: usize) -> Result<char, ConfigError> {
        let high = self.hex(4, escape_at)?;
        if (0xd800..0xdc00).contains(&high) && self.text[self.pos..].starts_with("\\u") {
            let save = self.pos;
            self.pos += 2;
            let low = self.hex(4, escape_at)?;
            if (0xdc00..0xe000).contains(&low) {
                let code = 0x10000 + ((high - 0xd800) << 10) + (low - 0xdc00);
                return Ok(char::from_u32(code).unwrap_or('\u{fffd}'));
            }
            self.pos = save;
        }
        Ok(char::from_u32(high).unwrap_or('\u{fffd}'))
    }

    fn number(&mut self) -> Result<Value, ConfigError> {
        let start = self.pos;
        let span = self.span(start);
        let mut negative = false;
        if let Some(sign @ (b'-' | b'+')) = self.peek() {
            negative = sign == b'-';
            self.pos += 1;
        }
        let rest = &self.text[self.pos..];
        let bad = |p: &Self| {
            let end = p.text[start..]
                .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '+' | '-')))
                .map_or(p.text.len(), |i| start + i);
            p.error_at(
                start,
                &format!("invalid json: invalid number `{}`", &p.text[start..end.max(start + 1)]),
            )
        };
        for (word, value) in [("Infinity", f64::INFINITY), ("NaN", f64::NAN)] {
            if rest.starts_with(word) {
                self.pos += word.len();
                let value = if negative { -value } else { value };
                return Ok(Value::new(Kind::Float(value), span));
            }
        }
        if rest.starts_with("0x") || rest.starts_with("0X") {
            self.pos += 2;
            let digits = self.text[self.pos..].bytes().take_while(u8::is_ascii_hexdigit).count();
            if digits == 0 {
                return Err(bad(self));
            }
            let text = &self.text[self.pos..self.pos + digits];
            self.pos += digits;
            return match i64::from_str_radix(text, 16) {
                Ok(n) => Ok(Value::new(Kind::Int(if negative { -n } else { n }), span)),
                Err(_) => Ok(Value::new(
                    Kind::Float(u128::from_str_radix(text, 16).map_or(f64::INFINITY, |n| n as f64)),
                    span,
                )),
            };
        }
        let digits_start = self.pos;
        let int_digits = self.skip_digits();
        let mut frac_digits = 0;
        if self.peek() == Some(b'.') {
            self.pos += 1;
            frac_digits = self.skip_digits();
        }
        if int_digits == 0 && frac_digits == 0 {
            return Err(bad(self));
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.pos += 1;
            if let Some(b'-' | b'+') = self.peek() {
                self.pos += 1;
            }
            if self.skip_digits() == 0 {
                return Err(bad(self));
            }
        }
        if self.peek().is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.') {
            return Err(bad(self));
        }
        let text = &self.text[digits_start..self.pos];
        let value: f64 = text.parse().map_err(|_| bad(self))?;
        let value = if negative { -value } else { value };
        if value.fract() == 0.0 && value.abs() < 9.0e15 {
            return Ok(Value::new(Kind::Int(value as i64), span));
        }
        // Integers too large for a double's exact range are kept exact when they fit i64.
        if !text.contains(['.', 'e', 'E']) {
            if let Ok(n) = text.parse::<i64>() {
                return Ok(Value::new(Kind::Int(if negative { -n } else { n }), span));
            }
        }
        Ok(Value::new(Kind::Float(value), span))
    }

    fn skip_digits(&mut self) -> usize {
        let n = self.text[self.pos..].bytes().take_while(u8::is_ascii_digit).count();
        self.pos += n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(v: &'a Value, key: &str) -> &'a Entry {
        let Kind::Table(t) = &v.kind else { panic!("not a table: {v:?}") };
        t.entries.iter().find(|e| e.key == key).expect(key)
    }

    #[test]
    fn strict_json() {
        let v =
            parse("{\"apps\": [{\"name\": \"a\", \"instances\": 4, \"x\": 1.5, \"y\": null, \"z\": true}]}")
                .unwrap();
        let Kind::Array(apps) = &entry(&v, "apps").value.kind else { panic!() };
        assert_eq!(apps[0].span, Span::new(1, 11));
        assert_eq!(entry(&apps[0], "instances").value.kind, Kind::Int(4));
        assert_eq!(entry(&apps[0], "x").value.kind, Kind::Float(1.5));
        assert_eq!(entry(&apps[0], "y").value.kind, Kind::Null);
        assert_eq!(entry(&apps[0], "z").value.kind, Kind::Bool(true));
        assert_eq!(entry(&apps[0], "name").key_span, Span::new(1, 12));
    }

    #[test]
    fn json5_extensions() {
        let text =
            "// ecosystem\n{\n  apps: [{\n    name: 'web', /* inline */\n    script: \"a\\\nb\",\n    \
                    instances: +2, hex: 0x10, half: .5, big: 1e3, inf: -Infinity,\n  },],\n}\n";
        let v = parse(text).unwrap();
        let Kind::Array(apps) = &entry(&v, "apps").value.kind else { panic!() };
        let app = &apps[0];
        assert_eq!(entry(app, "name").value.kind, Kind::Str("web".into()));
        assert_eq!(entry(app, "name").key_span, Span::new(4, 5));
        assert_eq!(entry(app, "name").value.span, Span::new(4, 11));
        assert_eq!(entry(app, "script").value.kind, Kind::Str("ab".into()));
        assert_eq!(entry(app, "instances").value.kind, Kind::Int(2));
        assert_eq!(entry(app, "hex").value.kind, Kind::Int(16));
        assert_eq!(entry(app, "half").value.kind, Kind::Float(0.5));
        assert_eq!(entry(app, "big").value.kind, Kind::Int(1000));
        assert_eq!(entry(app, "inf").value.kind, Kind::Float(f64::NEG_INFINITY));
    }

    #[test]
    fn escapes() {
        let v = parse(r#"["\u00e9\n\t\"", '\'', "\ud83d\ude00", "\x41"]"#).unwrap();
        let Kind::Array(items) = v.kind else { panic!() };
        let strs: Vec<_> = items.iter().map(|v| v.kind.clone()).collect();
        assert_eq!(
            strs,
            [
                Kind::Str("é\n\t\"".into()),
                Kind::Str("'".into()),
                Kind::Str("😀".into()),
                Kind::Str("A".into())
            ]
        );
    }

    #[test]
    fn errors_have_positions() {
        let cases: &[(&str, (usize, usize), &str)] = &[
            ("{\"a\": 1,,}", (1, 9), "expected a key"),
            ("{\"a\" 1}", (1, 6), "expected `:`"),
            ("[1 2]", (1, 4), "expected `,` or `]`"),
            ("{\n  \"a\": \"x\n}", (2, 8), "unclosed string"),
            ("{\"a\": 1", (1, 1), "unclosed `{`"),
            ("{a: yes}", (1, 5), "unexpected word `yes`"),
            ("{a: 1} x", (1, 8), "after the value"),
            ("", (1, 1), "empty"),
            ("/* x", (1, 1), "unclosed `/*`"),
            ("[1.2.3]", (1, 2), "invalid number"),
            ("{a: undefined}", (1, 5), "undefined"),
        ];
        for (text, at, what) in cases {
            let e = parse(text).unwrap_err();
            assert_eq!((e.line.unwrap(), e.column.unwrap()), *at, "{text:?}: {}", e.message);
            assert!(e.message.contains(what), "{text:?}: {}", e.message);
        }
    }

    #[test]
    fn deep_nesting_is_refused_not_a_stack_overflow() {
        let text = "[".repeat(100_000);
        assert!(parse(&text).unwrap_err().message.contains("nested too deeply"));
    }
}
