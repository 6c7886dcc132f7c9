//! The format-independent value tree: every file format (TOML now; YAML, JSON and PM2 ecosystem
//! files later) is parsed into a [`Value`] whose nodes remember where they were written, so one
//! validator can check all formats and point at the exact line and column of each problem.

use std::fmt;

/// A 1-based position in a source file; [`Span::UNKNOWN`] when the format cannot tell (JSON
/// printed by `node`, flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Span {
    pub line: usize,
    pub column: usize,
}

impl Span {
    pub const UNKNOWN: Span = Span { line: 0, column: 0 };

    pub fn new(line: usize, column: usize) -> Self {
        Span { line, column }
    }

    pub fn is_known(self) -> bool {
        self.line > 0
    }
}

/// A node of the tree and where it starts.
#[derive(Debug, Clone, PartialEq)]
pub struct Value {
    pub kind: Kind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    /// Kept so that a date is reported as a wrong type rather than silently read as text.
    Datetime(String),
    /// JSON and YAML `null`: treated as if the key were absent.
    Null,
    Array(Vec<Value>),
    Table(Table),
}

/// Keys in the order they were written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    pub entries: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: String,
    pub key_span: Span,
    pub value: Value,
}

impl Value {
    pub fn new(kind: Kind, span: Span) -> Self {
        Value { kind, span }
    }

    /// "a string", "an integer"…: for "expected X, found Y" messages.
    pub fn type_name(&self) -> &'static str {
        match self.kind {
            Kind::Str(_) => "a string",
            Kind::Int(_) => "an integer",
            Kind::Float(_) => "a float",
            Kind::Bool(_) => "a boolean",
            Kind::Datetime(_) => "a date",
            Kind::Null => "null",
            Kind::Array(_) => "an array",
            Kind::Table(_) => "a table",
        }
    }
}

impl fmt::Display for Value {
    /// A short rendering of a scalar for messages (`"abc"`, `12`); containers by type only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Str(s) => write!(f, "{s:?}"),
            Kind::Int(i) => write!(f, "{i}"),
            Kind::Float(x) => write!(f, "{x}"),
            Kind::Bool(b) => write!(f, "{b}"),
            Kind::Datetime(d) => write!(f, "{d}"),
            Kind::Null => f.write_str("null"),
            Kind::Array(_) => f.write_str("an array"),
            Kind::Table(_) => f.write_str("a table"),
        }
    }
}

/// A value as JSON (for PM2's stringified env objects).
pub(super) fn to_json(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match &value.kind {
        Kind::Str(s) | Kind::Datetime(s) => J::String(s.clone()),
        Kind::Int(i) => J::from(*i),
        Kind::Float(x) => serde_json::Number::from_f64(*x).map_or(J::Null, J::Number),
        Kind::Bool(b) => J::Bool(*b),
        Kind::Null => J::Null,
        Kind::Array(items) => J::Array(items.iter().map(to_json).collect()),
        Kind::Table(t) => J::Object(t.entries.iter().map(|e| (e.key.clone(), to_json(&e.value))).collect()),
    }
}

/// Maps byte offsets of a source text to 1-based lines and columns (columns count characters,
/// not bytes, so they match what an editor shows).
pub struct LineIndex<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineIndex { text, line_starts }
    }

    pub fn span(&self, offset: usize) -> Span {
        let offset = offset.min(self.text.len());
        let line = self.line_starts.partition_point(|&start| start <= offset) - 1;
        let start = self.line_starts[line];
        // An offset inside a multi-byte character counts as that character.
        let column = self.text.get(start..offset).map_or_else(
            || self.text[start..].char_indices().take_while(|(i, _)| start + i < offset).count(),
            |s| s.chars().count(),
        );
        Span::new(line + 1, column + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_index_counts_characters_from_one() {
        let text = "ab\nçd = 1\n\nx";
        let index = LineIndex::new(text);
        assert_eq!(index.span(0), Span::new(1, 1));
        assert_eq!(index.span(1), Span::new(1, 2));
        assert_eq!(index.span(3), Span::new(2, 1));
        // `d` follows a two-byte `ç`.
        assert_eq!(index.span(5), Span::new(2, 2));
        assert_eq!(index.span(11), Span::new(3, 1));
        assert_eq!(index.span(12), Span::new(4, 1));
        assert_eq!(index.span(100), Span::new(4, 2));
    }
}
