//! `.yaml`/`.yml` files into the spanned [`Value`] tree, from the events of `saphyr-parser`
//! (a maintained YAML 1.2 parser that marks every event with its line and column).
//!
//! Scalars follow the YAML 1.2 core schema: `yes`/`no`/`on`/`off` are strings, not booleans.
//! Anchors, aliases and merge keys (`<<: *defaults`) work; a file holds one document.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, ScanError};

use super::value::{Entry, Kind, Span, Table, Value};
use super::ConfigError;

/// Nesting deeper than this is refused.
const MAX_DEPTH: usize = 128;
/// Aliases may not expand the tree beyond this many nodes ("billion laughs").
const MAX_NODES: usize = 200_000;

/// Parses YAML text; a syntax error comes back with its line and column.
pub fn parse(text: &str) -> Result<Value, ConfigError> {
    let mut b = Builder { parser: Parser::new_from_str(text), anchors: HashMap::new(), nodes: 0 };
    let mut root = None;
    loop {
        let (event, span) = b.next()?;
        match event {
            Event::StreamEnd => break,
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => {}
            Event::DocumentStart(_) => {
                let at = self::span(&span);
                let (event, span) = b.next()?;
                if matches!(event, Event::DocumentEnd) {
                    continue;
                }
                if root.is_some() {
                    return Err(ConfigError::new("a YAML config holds one document, found a second one")
                        .at(at)
                        .with_hint("remove the second `---`, or put every app under one `apps` list"));
                }
                root = Some(b.node(event, span, 0)?);
            }
            other => root = Some(b.node(other, span, 0)?),
        }
    }
    Ok(root.unwrap_or_else(|| Value::new(Kind::Null, Span::new(1, 1))))
}

fn span(s: &saphyr_parser::Span) -> Span {
    Span::new(s.start.line(), s.start.col() + 1)
}

fn scan_error(e: &ScanError) -> ConfigError {
    let m = e.marker();
    ConfigError::new(format!("invalid yaml: {}", e.info())).at(Span::new(m.line(), m.col() + 1))
}

struct Builder<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Value>,
    nodes: usize,
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, saphyr_parser::Span), ConfigError> {
        match self.parser.next_event() {
            Some(Ok(e)) => Ok(e),
            Some(Err(e)) => Err(scan_error(&e)),
            None => Ok((Event::StreamEnd, saphyr_parser::Span::default())),
        }
    }

    fn count(&mut self, n: usize, at: Span) -> Result<(), ConfigError> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(ConfigError::new("invalid yaml: aliases expand to too large a document").at(at));
        }
        Ok(())
    }

    fn node(
        &mut self,
        event: Event<'a>,
        sp: saphyr_parser::Span,
        depth: usize,
    ) -> Result<Value, ConfigError> {
        let at = span(&sp);
        if depth > MAX_DEPTH {
            return Err(ConfigError::new("invalid yaml: nested too deeply").at(at));
        }
        self.count(1, at)?;
        let (value, anchor) = match event {
            Event::Scalar(text, style, anchor, tag) => {
                let forced_string =
                    tag.as_ref().is_some_and(|t| t.handle == "tag:yaml.org,2002:" && t.suffix == "str")
                        || tag.as_ref().is_some_and(|t| t.handle == "!!" && t.suffix == "str");
                let kind = if style == ScalarStyle::Plain && !forced_string {
                    resolve_plain(&text)
                } else {
                    Kind::Str(text.into_owned())
                };
                (Value::new(kind, at), anchor)
            }
            Event::SequenceStart(anchor, _) => {
                let mut items = Vec::new();
                loop {
                    let (event, sp) = self.next()?;
                    match event {
                        Event::SequenceEnd => break,
                        Event::StreamEnd => {
                            return Err(ConfigError::new("invalid yaml: unclosed list").at(at))
                        }
                        event => items.push(self.node(event, sp, depth + 1)?),
                    }
                }
                (Value::new(Kind::Array(items), at), anchor)
            }
            Event::MappingStart(anchor, _) => (Value::new(Kind::Table(self.mapping(at, depth)?), at), anchor),
            Event::Alias(id) => {
                let Some(value) = self.anchors.get(&id).cloned() else {
                    return Err(ConfigError::new("invalid yaml: unknown alias").at(at));
                };
                self.count(size(&value), at)?;
                return Ok(Value { span: at, ..value });
            }
            other => {
                return Err(ConfigError::new(format!("invalid yaml: unexpected {other:?}")).at(at));
            }
        };
        if anchor > 0 {
            self.anchors.insert(anchor, value.clone());
        }
        Ok(value)
    }

    fn mapping(&mut self, at: Span, depth: usize) -> Result<Table, ConfigError> {
        let mut table = Table::default();
        let mut merged: Vec<Entry> = Vec::new();
        loop {
            let (event, sp) = self.next()?;
            let key_span = span(&sp);
            let key = match event {
                Event::MappingEnd => break,
                Event::StreamEnd => return Err(ConfigError::new("invalid yaml: unclosed mapping").at(at)),
                Event::Scalar(text, ..) => text.into_owned(),
                Event::Alias(id) => match self.anchors.get(&id).map(|v| &v.kind) {
                    Some(Kind::Str(s)) => s.clone(),
                    _ => return Err(ConfigError::new("invalid yaml: a key must be a string").at(key_span)),
                },
                _ => {
                    return Err(ConfigError::new(
                        "invalid yaml: a key must be a string, found a list or a mapping",
                    )
                    .at(key_span))
                }
            };
            let (event, sp) = self.next()?;
            let value = self.node(event, sp, depth + 1)?;
            if key == "<<" {
                // A merge key: entries of the merged mappings that this one does not set.
                let sources = match value.kind {
                    Kind::Table(t) => vec![t],
                    Kind::Array(items) => {
                        let mut tables = Vec::new();
                        for item in items {
                            match item.kind {
                                Kind::Table(t) => tables.push(t),
                                _ => return Err(merge_error(item.span)),
                            }
                        }
                        tables
                    }
                    _ => return Err(merge_error(value.span)),
                };
                for source in sources {
                    for entry in source.entries {
                        if !merged.iter().any(|e| e.key == entry.key) {
                            merged.push(entry);
                        }
                    }
                }
                continue;
            }
            table.entries.push(Entry { key, key_span, value });
        }
        for entry in merged {
            if !table.entries.iter().any(|e| e.key == entry.key) {
                table.entries.push(entry);
            }
        }
        Ok(table)
    }
}

fn merge_error(at: Span) -> ConfigError {
    ConfigError::new("invalid yaml: `<<` merges a mapping or a list of mappings").at(at)
}

fn size(v: &Value) -> usize {
    match &v.kind {
        Kind::Array(items) => 1 + items.iter().map(size).sum::<usize>(),
        Kind::Table(t) => 1 + t.entries.iter().map(|e| size(&e.value)).sum::<usize>(),
        _ => 1,
    }
}

/// A plain scalar by the YAML 1.2 core schema.
fn resolve_plain(text: &str) -> Kind {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Kind::Null,
        "true" | "True" | "TRUE" => return Kind::Bool(true),
        "false" | "False" | "FALSE" => return Kind::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => return Kind::Float(f64::INFINITY),
        "-.inf" | "-.Inf" | "-.INF" => return Kind::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Kind::Float(f64::NAN),
        _ => {}
    }
    let (sign, digits) = match text.as_bytes()[0] {
        b'-' => (-1, &text[1..]),
        b'+' => (1, &text[1..]),
        _ => (1, text),
    };
    if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        return match digits.parse::<i64>() {
            Ok(n) => Kind::Int(sign * n),
            Err(_) => Kind::Float(sign as f64 * digits.parse::<f64>().unwrap_or(f64::INFINITY)),
        };
    }
    let radix = |prefix: &str, radix: u32| {
        text.strip_prefix(prefix)
            .filter(|d| !d.is_empty() && d.chars().all(|c| c.is_digit(radix)))
            .and_then(|d| i64::from_str_radix(d, radix).ok())
    };
    if let Some(n) = radix("0x", 16).or_else(|| radix("0o", 8)) {
        return Kind::Int(n);
    }
    if is_float(digits) {
        if let Ok(x) = text.parse::<f64>() {
            return Kind::Float(x);
        }
    }
    Kind::Str(text.to_string())
}

/// `(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?`
fn is_float(s: &str) -> bool {
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let (int, frac) = mantissa.split_once('.').map_or((mantissa, None), |(a, b)| (a, Some(b)));
    let digits = |d: &str| d.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match frac {
        Some(f) => digits(int) && digits(f) && (!int.is_empty() || !f.is_empty()),
        None => !int.is_empty() && digits(int),
    };
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(v: &'a Value, key: &str) -> &'a Entry {
        let Kind::Table(t) = &v.kind else { panic!("not a table: {v:?}") };
        t.entries.iter().find(|e| e.key == key).expect(key)
    }

    #[test]
    fn spans_and_scalars() {
        let text = "apps:\n  - name: web\n    instances: 4\n    env:\n      A: yes\n      B: '1'\n      C: 1.5\n      D: ~\n      E: true\n";
        let v = parse(text).unwrap();
        let Kind::Array(apps) = &entry(&v, "apps").value.kind else { panic!() };
        let app = &apps[0];
        assert_eq!(entry(app, "name").key_span, Span::new(2, 5));
        assert_eq!(entry(app, "name").value.span, Span::new(2, 11));
        assert_eq!(entry(app, "instances").value.kind, Kind::Int(4));
        let env = &entry(app, "env").value;
        assert_eq!(entry(env, "A").value.kind, Kind::Str("yes".into()));
        assert_eq!(entry(env, "B").value.kind, Kind::Str("1".into()));
        assert_eq!(entry(env, "C").value.kind, Kind::Float(1.5));
        assert_eq!(entry(env, "D").value.kind, Kind::Null);
        assert_eq!(entry(env, "E").value.kind, Kind::Bool(true));
    }

    #[test]
    fn anchors_aliases_and_merge_keys() {
        let text = "base: &base\n  max_restarts: 3\n  kill_timeout: 100\napps:\n  - <<: *base\n    name: a\n    kill_timeout: 5\n  - *base\n";
        let v = parse(text).unwrap();
        let Kind::Array(apps) = &entry(&v, "apps").value.kind else { panic!() };
        assert_eq!(entry(&apps[0], "max_restarts").value.kind, Kind::Int(3));
        assert_eq!(entry(&apps[0], "kill_timeout").value.kind, Kind::Int(5));
        assert_eq!(entry(&apps[1], "kill_timeout").value.kind, Kind::Int(100));
        assert_eq!(apps[1].span, Span::new(8, 5));
    }

    #[test]
    fn syntax_errors_have_positions() {
        let e = parse("apps:\n  - name: a\n   script: b\n").unwrap_err();
        assert!(e.message.starts_with("invalid yaml: "), "{}", e.message);
        assert_eq!(e.line, Some(3));
        let e = parse("a: [1, 2\n").unwrap_err();
        assert!(e.line.is_some());
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(e.line, Some(2));
    }

    #[test]
    fn alias_bombs_are_refused() {
        let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            text.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(parse(&text).unwrap_err().message.contains("too large"));
    }

    #[test]
    fn empty_document_is_null() {
        assert_eq!(parse("").unwrap().kind, Kind::Null);
        assert_eq!(parse("# only a comment\n").unwrap().kind, Kind::Null);
    }
}
