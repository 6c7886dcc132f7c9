//! A JavaScript-shaped value and Node's `util.inspect` layout of it, for the PM2 verbs whose
//! output scripts parse (`prettylist`, `id`): the same bytes as `util.inspect(value, false,
//! null, false)` prints for plain data (unquoted keys, single-quoted strings, entries on one
//! line while they fit in 80 columns and nest less than three levels, arrays of more than six
//! short entries in columns).
//!
//! Written from the layout's observable behaviour; the integration tests compare it with a real
//! `node` on the same data.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

/// A JSON value whose objects keep their keys in insertion order (as JavaScript's do).
#[derive(Debug, Clone, PartialEq)]
pub enum Js {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Arr(Vec<Js>),
    Obj(Vec<(String, Js)>),
}

impl Js {
    /// An object from `(key, value)` pairs.
    pub fn obj<K: Into<String>>(entries: impl IntoIterator<Item = (K, Js)>) -> Js {
        Js::Obj(entries.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    pub fn str(s: impl Into<String>) -> Js {
        Js::Str(s.into())
    }

    pub fn num(n: impl Into<f64>) -> Js {
        Js::Num(n.into())
    }

    /// Add `key` to an object unless it has it already.
    pub fn insert_missing(&mut self, key: &str, value: Js) {
        if let Js::Obj(entries) = self {
            if !entries.iter().any(|(k, _)| k == key) {
                entries.push((key.to_string(), value));
            }
        }
    }
}

/// A number as JavaScript prints it: integers without a fraction, `-0` kept.
fn number(n: f64) -> String {
    if n == 0.0 && n.is_sign_negative() {
        "-0".into()
    } else if n.is_nan() {
        "NaN".into()
    } else if n.is_infinite() {
        if n > 0.0 { "Infinity" } else { "-Infinity" }.into()
    } else if n.fract() == 0.0 && n.abs() < 1e21 {
        format!("{}", n as i128)
    } else {
        // Rust and JavaScript both print the shortest representation that reads back the same.
        format!("{n}")
    }
}

impl Serialize for Js {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Js::Null => s.serialize_unit(),
            Js::Bool(b) => s.serialize_bool(*b),
            // As JSON.stringify: integral numbers without `.0`.
            Js::Num(n) if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 => {
                s.serialize_i64(*n as i64)
            }
            Js::Num(n) if n.is_finite() => s.serialize_f64(*n),
            Js::Num(_) => s.serialize_unit(),
            Js::Str(v) => s.serialize_str(v),
            Js::Arr(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for i in items {
                    seq.serialize_element(i)?;
                }
                seq.end()
            }
            Js::Obj(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// `util.inspect(value, false, null, false)`.
pub fn inspect(value: &Js) -> String {
    let mut ctx = Ctx { indentation: 0, current_depth: 0 };
    ctx.value(value, 0)
}

const BREAK_LENGTH: usize = 80;
/// Levels of nesting that may still share one line.
const COMPACT: usize = 3;
const MAX_ARRAY_LENGTH: usize = 100;
/// Strings longer than this that do not fit the line are split after their newlines.
const MIN_LINE_LENGTH: usize = 16;

struct Ctx {
    indentation: usize,
    /// The depth of the object formatted last: the innermost level of what was just printed.
    current_depth: usize,
}

/// JavaScript's length of a string: UTF-16 code units.
fn js_len(s: &str) -> usize {
    s.encode_utf16().count()
}

impl Ctx {
    fn value(&mut self, v: &Js, depth: usize) -> String {
        match v {
            Js::Null => "null".into(),
            Js::Bool(b) => b.to_string(),
            Js::Num(n) => number(*n),
            Js::Str(s) => self.string(s),
            Js::Arr(items) if items.is_empty() => "[]".into(),
            Js::Obj(entries) if entries.is_empty() => "{}".into(),
            Js::Arr(items) => {
                let depth = depth + 1;
                self.current_depth = depth;
                let mut output: Vec<String> =
                    items.iter().take(MAX_ARRAY_LENGTH).map(|item| self.nested(item, depth)).collect();
                if items.len() > MAX_ARRAY_LENGTH {
                    let more = items.len() - MAX_ARRAY_LENGTH;
                    output.push(format!("... {more} more item{}", if more > 1 { "s" } else { "" }));
                }
                self.reduce(output, ("[", "]"), Some(items), depth)
            }
            Js::Obj(entries) => {
                let depth = depth + 1;
                self.current_depth = depth;
                let output = entries
                    .iter()
                    .map(|(k, item)| {
                        let value = self.nested(item, depth);
                        format!("{}: {value}", key(k))
                    })
                    .collect();
                self.reduce(output, ("{", "}"), None, depth)
            }
        }
    }

    /// A property's value, indented two more.
    fn nested(&mut self, v: &Js, depth: usize) -> String {
        self.indentation += 2;
        let s = self.value(v, depth);
        self.indentation -= 2;
        s
    }

    fn string(&self, s: &str) -> String {
        let len = js_len(s);
        if len > MIN_LINE_LENGTH
            && len > BREAK_LENGTH.saturating_sub(self.indentation + 4)
            && s.contains('\n')
        {
            let joint = format!(" +\n{}", " ".repeat(self.indentation + 2));
            return s.split_inclusive('\n').map(quote).collect::<Vec<_>>().join(&joint);
        }
        quote(s)
    }

    /// Entries on one line when they fit and nest little, else one entry per line.
    fn reduce(
        &mut self,
        mut output: Vec<String>,
        braces: (&str, &str),
        array: Option<&[Js]>,
        depth: usize,
    ) -> String {
        let entries = output.len();
        if let Some(items) = array {
            if entries > 6 {
                output = self.group(output, items);
            }
        }
        if self.current_depth - depth < COMPACT && entries == output.len() {
            let start = output.len() + self.indentation + braces.0.len() + 10;
            if self.below_break_length(&output, start) {
                let joined = output.join(", ");
                if !joined.contains('\n') {
                    return format!("{} {joined} {}", braces.0, braces.1);
                }
            }
        }
        let indentation = format!("\n{}", " ".repeat(self.indentation));
        format!(
            "{}{indentation}  {}{indentation}{}",
            braces.0,
            output.join(&format!(",{indentation}  ")),
            braces.1
        )
    }

    fn below_break_length(&self, output: &[String], start: usize) -> bool {
        let mut total = output.len() + start;
        if total + output.len() > BREAK_LENGTH {
            return false;
        }
        for o in output {
            total += js_len(o);
            if total > BREAK_LENGTH {
                return false;
            }
        }
        true
    }

    /// Arrays of many short entries in aligned columns, as `util.inspect` lays them out.
    fn group(&self, output: Vec<String>, items: &[Js]) -> Vec<String> {
        const SEPARATOR: usize = 2;
        let mut output_len = output.len();
        if items.len() > MAX_ARRAY_LENGTH {
            // The "... more items" entry takes no part in the columns.
            output_len -= 1;
        }
        let data_len: Vec<usize> = output[..output_len].iter().map(|o| js_len(o)).collect();
        let total: usize = data_len.iter().map(|l| l + SEPARATOR).sum();
        let max_len = data_len.iter().copied().max().unwrap_or(0);
        let actual_max = max_len + SEPARATOR;
        if !(actual_max * 3 + self.indentation < BREAK_LENGTH
            && (total as f64 / actual_max as f64 > 5.0 || max_len <= 6))
        {
            return output;
        }
        let average_bias = (actual_max as f64 - total as f64 / output.len() as f64).sqrt();
        let biased_max = (actual_max as f64 - 3.0 - average_bias).max(1.0);
        let columns = [
            ((2.5 * biased_max * output_len as f64).sqrt() / biased_max).round() as usize,
            (BREAK_LENGTH - self.indentation) / actual_max,
            COMPACT * 4,
            15,
        ]
        .into_iter()
        .min()
        .unwrap_or(1);
        if columns <= 1 {
            return output;
        }
        let max_line_len: Vec<usize> = (0..columns)
            .map(|i| data_len.iter().skip(i).step_by(columns).copied().max().unwrap_or(0) + SEPARATOR)
            .collect();
        // Numbers are aligned to the right, anything else to the left.
        let numbers = items.iter().take(output.len()).all(|i| matches!(i, Js::Num(_)));
        let pad = |s: &str, width: usize| {
            let fill = " ".repeat(width.saturating_sub(js_len(s)));
            if numbers {
                format!("{fill}{s}")
            } else {
                format!("{s}{fill}")
            }
        };
        let mut grouped = Vec::new();
        for start in (0..output_len).step_by(columns) {
            let end = (start + columns).min(output_len);
            let mut line = String::new();
            for j in start..end - 1 {
                line.push_str(&pad(&format!("{}, ", output[j]), max_line_len[j - start]));
            }
            let last = end - 1;
            if numbers {
                line.push_str(&pad(&output[last], max_line_len[last - start] - SEPARATOR));
            } else {
                line.push_str(&output[last]);
            }
            grouped.push(line);
        }
        if output_len < output.len() {
            grouped.push(output[output_len].clone());
        }
        grouped
    }
}

/// A key as `util.inspect` prints it: bare when it is an identifier, quoted otherwise.
fn key(k: &str) -> String {
    let mut chars = k.chars();
    let identifier = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if identifier {
        k.to_string()
    } else {
        quote(k)
    }
}

/// A string literal: single quotes, or double quotes (then backticks) when it holds single
/// quotes, with control characters and the backslash escaped.
fn quote(s: &str) -> String {
    let q = if !s.contains('\'') {
        '\''
    } else if !s.contains('"') {
        '"'
    } else if !s.contains('`') && !s.contains("${") {
        '`'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(q);
    for c in s.chars() {
        match c {
            '\'' if q == '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || (0x7f..0xa0).contains(&(c as u32)) => {
                out.push_str(&format!("\\x{:02X}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push(q);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nums(n: impl IntoIterator<Item = i32>) -> Js {
        Js::Arr(n.into_iter().map(Js::num).collect())
    }

    #[test]
    fn small_objects_share_a_line() {
        let v = Js::obj([("pid", Js::num(12)), ("name", Js::str("web")), ("ok", Js::Bool(true))]);
        assert_eq!(inspect(&v), "{ pid: 12, name: 'web', ok: true }");
        assert_eq!(inspect(&Js::Arr(vec![])), "[]");
        assert_eq!(inspect(&Js::obj::<&str>([])), "{}");
        assert_eq!(inspect(&nums([0])), "[ 0 ]");
    }

    #[test]
    fn long_objects_take_a_line_per_entry() {
        let long = "x".repeat(70);
        let v = Js::obj([("a", Js::str(long.clone())), ("b", Js::Null)]);
        assert_eq!(inspect(&v), format!("{{\n  a: '{long}',\n  b: null\n}}"));
    }

    #[test]
    fn deep_nesting_breaks_lines() {
        // Three levels below: one entry per line even though it would fit.
        let v = Js::obj([("a", Js::obj([("b", Js::obj([("c", Js::obj([("d", Js::num(1))]))]))]))]);
        assert_eq!(inspect(&v), "{\n  a: { b: { c: { d: 1 } } }\n}");
    }

    #[test]
    fn keys_and_strings_are_quoted_as_node_does() {
        let v = Js::obj([
            ("my-key", Js::str("it's")),
            ("_ok1", Js::str("say \"it's\"")),
            ("x", Js::str("tab\there\\")),
        ]);
        assert_eq!(inspect(&v), "{ 'my-key': \"it's\", _ok1: `say \"it's\"`, x: 'tab\\there\\\\' }");
        assert_eq!(quote("\u{1b}[0m\u{7f}"), "'\\x1B[0m\\x7F'");
    }

    #[test]
    fn numbers_print_as_javascript_does() {
        assert_eq!(number(1.0), "1");
        assert_eq!(number(4.1), "4.1");
        assert_eq!(number(-0.0), "-0");
        assert_eq!(serde_json::to_string(&Js::num(3.0)).unwrap(), "3");
        assert_eq!(serde_json::to_string(&Js::num(0.5)).unwrap(), "0.5");
    }

    // The expected strings are what Node 20's util.inspect(value, false, null, false) prints.
    #[test]
    fn many_short_entries_are_grouped_in_columns() {
        assert_eq!(
            inspect(&nums(1..=26)),
            "[\n   1,  2,  3,  4,  5,  6,  7,  8,\n   9, 10, 11, 12, 13, 14, 15, 16,\n  17, 18, 19, 20, 21, 22, 23, 24,\n  25, 26\n]"
        );
    }

    #[test]
    fn objects_keep_their_key_order_in_json() {
        let v = Js::obj([("z", Js::num(1)), ("a", Js::Arr(vec![Js::Null]))]);
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"{"z":1,"a":[null]}"#);
    }
}
