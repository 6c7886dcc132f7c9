//! `env_file`: dotenv files (`KEY=value` lines), as docker compose and most dotenv libraries
//! read them: `#` comments, an optional `export `, single quotes taken literally, double quotes
//! with `\n`, `\t`, `\"`, `\\` escapes and line breaks, unquoted values trimmed with a ` #`
//! comment cut off. No variable expansion: `$HOME` stays `$HOME`.

use std::collections::BTreeMap;

use super::value::Span;
use super::ConfigError;

/// The variables of a dotenv text, in order; an error carries its line and column.
pub fn parse(text: &str) -> Result<BTreeMap<String, String>, ConfigError> {
    let mut vars = BTreeMap::new();
    let lines: Vec<&str> = text.split('\n').collect();
    let mut i = 0;
    while i < lines.len() {
        let line_no = i + 1;
        let raw = lines[i].strip_suffix('\r').unwrap_or(lines[i]);
        i += 1;
        let indent = raw.len() - raw.trim_start().len();
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (line, offset) = match line.strip_prefix("export ") {
            Some(rest) => (rest.trim_start(), indent + (line.len() - rest.trim_start().len())),
            None => (line, indent),
        };
        let at = |col: usize| Span::new(line_no, raw[..col.min(raw.len())].chars().count() + 1);
        let Some(eq) = line.find('=') else {
            return Err(ConfigError::new(format!("expected `KEY=value`, found {:?}", line.trim_end()))
                .at(at(offset))
                .with_hint("each line is `KEY=value`, a `# comment`, or empty"));
        };
        let key = line[..eq].trim_end();
        if key.is_empty()
            || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
        {
            return Err(ConfigError::new(format!("`{key}` is not a valid variable name")).at(at(offset)));
        }
        let value_col = offset + eq + 1;
        let rest = line[eq + 1..].trim_start();
        let value_col = value_col + (line[eq + 1..].len() - rest.len());
        let value = match rest.as_bytes().first() {
            Some(b'\'') => match rest[1..].find('\'') {
                Some(end) => rest[1..1 + end].to_string(),
                None => {
                    return Err(
                        ConfigError::new(format!("unclosed `'` in the value of `{key}`")).at(at(value_col))
                    )
                }
            },
            Some(b'"') => {
                // A double-quoted value may span lines.
                let mut body = rest[1..].to_string();
                let start_line = line_no;
                loop {
                    if let Some(end) = closing_quote(&body) {
                        body.truncate(end);
                        break;
                    }
                    if i >= lines.len() {
                        return Err(ConfigError::new(format!("unclosed `\"` in the value of `{key}`"))
                            .at(Span::new(start_line, raw[..value_col].chars().count() + 1)));
                    }
                    body.push('\n');
                    body.push_str(lines[i].strip_suffix('\r').unwrap_or(lines[i]));
                    i += 1;
                }
                unescape(&body)
            }
            _ => {
                let value = match rest.find(" #").or_else(|| rest.find("\t#")) {
                    Some(comment) => &rest[..comment],
                    None => rest,
                };
                value.trim_end().to_string()
            }
        };
        if value.contains('\0') {
            return Err(
                ConfigError::new(format!("the value of `{key}` contains a NUL byte")).at(at(value_col))
            );
        }
        vars.insert(key.to_string(), value);
    }
    Ok(vars)
}

/// The index of the first unescaped `"`.
fn closing_quote(s: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '"' => return Some(i),
            _ => {}
        }
    }
    None
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other @ ('"' | '\\' | '$')) => out.push(other),
            Some(other) => {
                out.push('\\');
                out.push(other);
            }
            None => out.push('\\'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values() {
        let text = "# comment\nA=1\nexport B = two words # note\nC='single $HOME # x'\nD=\"line\\nbreak \\\"q\\\"\"\n\
                    E=\nF=\"multi\nline\"\r\nG=a#b\n";
        let vars = parse(text).unwrap();
        let get = |k: &str| vars.get(k).map(String::as_str);
        assert_eq!(get("A"), Some("1"));
        assert_eq!(get("B"), Some("two words"));
        assert_eq!(get("C"), Some("single $HOME # x"));
        assert_eq!(get("D"), Some("line\nbreak \"q\""));
        assert_eq!(get("E"), Some(""));
        assert_eq!(get("F"), Some("multi\nline"));
        assert_eq!(get("G"), Some("a#b"));
    }

    #[test]
    fn errors_have_positions() {
        let e = parse("A=1\n  just words\n").unwrap_err();
        assert_eq!((e.line, e.column), (Some(2), Some(3)));
        let e = parse("A=1\nB='open\n").unwrap_err();
        assert_eq!((e.line, e.column), (Some(2), Some(3)));
        assert!(e.message.contains("unclosed"));
        let e = parse("BAD KEY=1\n").unwrap_err();
        assert!(e.message.contains("not a valid variable name"), "{}", e.message);
        let e = parse("X=\"never closed\nY=2\n").unwrap_err();
        assert_eq!((e.line, e.column), (Some(1), Some(3)));
    }
}
