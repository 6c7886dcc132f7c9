//! A small YAML writer for the manifests `herder export` writes: maps keep the order they are
//! built in (an engine's readers expect `apiVersion` and `kind` first), strings are quoted
//! whenever a plain scalar could be read as something else, and comments go where a person
//! reads them.

use std::fmt::Write;

/// A YAML value.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Map(Vec<(String, Node)>),
    List(Vec<Node>),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Node {
    /// An empty map, to fill with [`Node::with`].
    pub fn map() -> Node {
        Node::Map(Vec::new())
    }

    /// This map with `key` set to `value` (replacing an earlier value of the key).
    pub fn with(mut self, key: &str, value: impl Into<Node>) -> Node {
        self.set(key, value);
        self
    }

    /// This map with `key` set when `value` is `Some`.
    pub fn with_opt<V: Into<Node>>(self, key: &str, value: Option<V>) -> Node {
        match value {
            Some(v) => self.with(key, v),
            None => self,
        }
    }

    /// Set `key` of this map to `value`. Panics on a node that is not a map: a bug.
    pub fn set(&mut self, key: &str, value: impl Into<Node>) {
        let Node::Map(entries) = self else { panic!("set `{key}` on a node that is not a map") };
        let value = value.into();
        match entries.iter_mut().find(|(k, _)| k == key) {
            Some(entry) => entry.1 = value,
            None => entries.push((key.to_string(), value)),
        }
    }

    /// The value of `key` in this map.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match self {
            Node::Map(entries) => entries.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    fn is_empty_collection(&self) -> bool {
        matches!(self, Node::Map(m) if m.is_empty()) || matches!(self, Node::List(l) if l.is_empty())
    }

    /// The document, with `comments` (one per line, without `#`) first.
    pub fn document(&self, comments: &[String]) -> String {
        let mut out = String::new();
        for c in comments {
            for line in c.lines() {
                let _ = writeln!(out, "# {line}");
            }
        }
        write_node(&mut out, self, 0, false);
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out
    }
}

impl From<&str> for Node {
    fn from(s: &str) -> Node {
        Node::Str(s.to_string())
    }
}
impl From<String> for Node {
    fn from(s: String) -> Node {
        Node::Str(s)
    }
}
impl From<&String> for Node {
    fn from(s: &String) -> Node {
        Node::Str(s.clone())
    }
}
impl From<bool> for Node {
    fn from(b: bool) -> Node {
        Node::Bool(b)
    }
}
impl From<i64> for Node {
    fn from(n: i64) -> Node {
        Node::Int(n)
    }
}
impl From<u64> for Node {
    fn from(n: u64) -> Node {
        Node::Int(i64::try_from(n).unwrap_or(i64::MAX))
    }
}
impl From<u32> for Node {
    fn from(n: u32) -> Node {
        Node::Int(i64::from(n))
    }
}
impl From<u16> for Node {
    fn from(n: u16) -> Node {
        Node::Int(i64::from(n))
    }
}
impl From<i32> for Node {
    fn from(n: i32) -> Node {
        Node::Int(i64::from(n))
    }
}
impl From<f64> for Node {
    fn from(n: f64) -> Node {
        Node::Float(n)
    }
}
impl<T: Into<Node>> From<Vec<T>> for Node {
    fn from(v: Vec<T>) -> Node {
        Node::List(v.into_iter().map(Into::into).collect())
    }
}

/// Write `node` at `indent`; `inline` when it follows `- ` or `key: ` on the same line.
fn write_node(out: &mut String, node: &Node, indent: usize, inline: bool) {
    let pad = " ".repeat(indent);
    match node {
        Node::Map(entries) if entries.is_empty() => out.push_str("{}\n"),
        Node::List(items) if items.is_empty() => out.push_str("[]\n"),
        Node::Map(entries) => {
            for (i, (k, v)) in entries.iter().enumerate() {
                if !(inline && i == 0) {
                    out.push_str(&pad);
                }
                out.push_str(&scalar(k));
                out.push(':');
                write_value(out, v, indent);
            }
        }
        Node::List(items) => {
            for (i, item) in items.iter().enumerate() {
                if !(inline && i == 0) {
                    out.push_str(&pad);
                }
                out.push_str("- ");
                match item {
                    Node::Map(_) | Node::List(_) if !item.is_empty_collection() => {
                        write_node(out, item, indent + 2, true)
                    }
                    _ => write_scalar_line(out, item),
                }
            }
        }
        _ => write_scalar_line(out, node),
    }
}

/// After `key:`: a scalar on the same line, a collection on the next ones.
fn write_value(out: &mut String, v: &Node, indent: usize) {
    match v {
        Node::Map(_) if !v.is_empty_collection() => {
            out.push('\n');
            write_node(out, v, indent + 2, false);
        }
        // Lists under a key are indented as kubectl writes them.
        Node::List(_) if !v.is_empty_collection() => {
            out.push('\n');
            write_node(out, v, indent + 2, false);
        }
        Node::Str(s) if s.contains('\n') => {
            // A block scalar keeps a multi-line value (a script) readable; `|-` drops no line
            // but the last newline, which is then written back by `+` when there is one.
            let chomp = if s.ends_with('\n') { "+" } else { "-" };
            let _ = writeln!(out, " |{chomp}");
            let pad = " ".repeat(indent + 2);
            for line in s.strip_suffix('\n').unwrap_or(s).split('\n') {
                if line.is_empty() {
                    out.push('\n');
                } else {
                    let _ = writeln!(out, "{pad}{line}");
                }
            }
        }
        _ => {
            out.push(' ');
            write_scalar_line(out, v);
        }
    }
}

fn write_scalar_line(out: &mut String, node: &Node) {
    match node {
        Node::Str(s) => out.push_str(&scalar(s)),
        Node::Int(n) => out.push_str(&n.to_string()),
        Node::Float(f) => out.push_str(&format!("{f:?}")),
        Node::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Node::Map(_) => out.push_str("{}"),
        Node::List(_) => out.push_str("[]"),
    }
    out.push('\n');
}

/// A string as a YAML scalar: plain when nothing could read it as another type or as syntax,
/// else double-quoted with JSON's escapes (which YAML's double quotes accept).
pub fn scalar(s: &str) -> String {
    if is_plain(s) {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
    }
}

fn is_plain(s: &str) -> bool {
    const RESERVED: &[&str] = &[
        "true", "false", "yes", "no", "on", "off", "y", "n", "null", "~", "TRUE", "FALSE", "True", "False",
        "Yes", "No", "On", "Off", "Y", "N", "NULL", "Null",
    ];
    let Some(first) = s.chars().next() else { return false };
    if RESERVED.contains(&s) || s.parse::<f64>().is_ok() || s.starts_with("0x") || s.starts_with("0o") {
        return false;
    }
    // Digits with separators (`1_000`, times `12:30`) may be numbers to YAML 1.1 readers.
    if s.chars().all(|c| c.is_ascii_digit() || matches!(c, '_' | ':' | '.' | '-' | '+')) {
        return false;
    }
    (first.is_ascii_alphanumeric() || matches!(first, '/' | '_' | '.'))
        && !s.ends_with(' ')
        && s.chars().all(|c| {
            c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ' ' | '=' | '@' | '+' | ',')
        })
        && !s.contains(" #")
        && !s.contains(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_lists_and_scalars_in_order() {
        let doc = Node::map()
            .with("apiVersion", "apps/v1")
            .with("kind", "Deployment")
            .with("metadata", Node::map().with("name", "web").with("labels", Node::map()))
            .with(
                "ports",
                vec![Node::map().with("containerPort", 3000u16).with("name", "http"), Node::from("x")],
            )
            .with("args", vec!["--port", "8080", "true", "a: b", "# no"])
            .with("script", "line one\nline two\n");
        let text = doc.document(&["herder export: app `web`".into()]);
        assert_eq!(
            text,
            "# herder export: app `web`\n\
             apiVersion: apps/v1\n\
             kind: Deployment\n\
             metadata:\n  name: web\n  labels: {}\n\
             ports:\n  - containerPort: 3000\n    name: http\n  - x\n\
             args:\n  - \"--port\"\n  - \"8080\"\n  - \"true\"\n  - \"a: b\"\n  - \"# no\"\n\
             script: |+\n  line one\n  line two\n"
        );
    }

    #[test]
    fn strings_that_look_like_other_types_are_quoted() {
        for s in
            ["", "yes", "Off", "1", "1.5", "0x1f", "12:30", "1_000", "-", " lead", "trail ", "*", "&a", "{x}"]
        {
            assert!(scalar(s).starts_with('"'), "{s:?} → {}", scalar(s));
        }
        for s in ["web", "apps/v1", "NODE_ENV", "node app.js", "web-1.example.com", "a=b"] {
            assert_eq!(scalar(s), s);
        }
        assert_eq!(scalar("a\"b\\c\td"), "\"a\\\"b\\\\c\\td\"");
    }
}
