//! `herder.toml` into the spanned [`Value`] tree (with `toml_edit`, which keeps byte spans).

use toml_edit::{Document, Item};

use super::value::{Entry, Kind, LineIndex, Span, Table, Value};
use super::ConfigError;

/// Parses TOML text; a syntax error comes back with its line and column.
pub fn parse(text: &str) -> Result<Value, ConfigError> {
    let index = LineIndex::new(text);
    let doc = Document::parse(text).map_err(|e| {
        let span = e.span().map_or(Span::UNKNOWN, |r| index.span(r.start));
        // toml_edit's messages are short and lowercase ("invalid key", "expected `=`").
        let message = e.message().trim().trim_end_matches('.').to_string();
        ConfigError::new(format!("invalid toml: {message}")).at(span)
    })?;
    let conv = Converter { index: &index };
    Ok(Value::new(Kind::Table(conv.table(doc.as_table())), Span::new(1, 1)))
}

struct Converter<'a> {
    index: &'a LineIndex<'a>,
}

impl Converter<'_> {
    fn span(&self, range: Option<std::ops::Range<usize>>) -> Span {
        range.map_or(Span::UNKNOWN, |r| self.index.span(r.start))
    }

    fn table(&self, table: &toml_edit::Table) -> Table {
        let mut out = Table::default();
        for (key, item) in table.iter() {
            let key_span = self.span(table.key(key).and_then(|k| k.span()));
            if let Some(value) = self.item(item, key_span) {
                out.entries.push(Entry { key: key.to_string(), key_span, value });
            }
        }
        out
    }

    fn inline_table(&self, table: &toml_edit::InlineTable) -> Table {
        let mut out = Table::default();
        for (key, value) in table.iter() {
            let key_span = self.span(table.key(key).and_then(|k| k.span()));
            out.entries.push(Entry { key: key.to_string(), key_span, value: self.value(value) });
        }
        out
    }

    /// `fallback` (the key's span) locates implicit tables, which have no span of their own.
    fn item(&self, item: &Item, fallback: Span) -> Option<Value> {
        match item {
            Item::None => None,
            Item::Value(v) => Some(self.value(v)),
            Item::Table(t) => {
                let span = self.span(t.span());
                let span = if span.is_known() { span } else { fallback };
                Some(Value::new(Kind::Table(self.table(t)), span))
            }
            Item::ArrayOfTables(array) => {
                let values = array
                    .iter()
                    .map(|t| {
                        let span = self.span(t.span());
                        let span = if span.is_known() { span } else { fallback };
                        Value::new(Kind::Table(self.table(t)), span)
                    })
                    .collect();
                let span = self.span(array.span());
                Some(Value::new(Kind::Array(values), if span.is_known() { span } else { fallback }))
            }
        }
    }

    fn value(&self, value: &toml_edit::Value) -> Value {
        use toml_edit::Value as V;
        let kind = match value {
            V::String(s) => Kind::Str(s.value().clone()),
            V::Integer(i) => Kind::Int(*i.value()),
            V::Float(f) => Kind::Float(*f.value()),
            V::Boolean(b) => Kind::Bool(*b.value()),
            V::Datetime(d) => Kind::Datetime(d.value().to_string()),
            V::Array(a) => Kind::Array(a.iter().map(|v| self.value(v)).collect()),
            V::InlineTable(t) => Kind::Table(self.inline_table(t)),
        };
        Value::new(kind, self.span(value.span()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry<'a>(table: &'a Value, key: &str) -> &'a Entry {
        let Kind::Table(t) = &table.kind else { panic!("not a table") };
        t.entries.iter().find(|e| e.key == key).expect(key)
    }

    #[test]
    fn spans_point_at_keys_values_and_table_headers() {
        let text =
            "[[apps]]\nname = \"web\"\n  max_restarts = 3\nenv = { A = 1 }\n\n[[apps]]\nscript = 'b'\n";
        let root = parse(text).unwrap();
        let apps = &entry(&root, "apps").value;
        let Kind::Array(apps) = &apps.kind else { panic!() };
        assert_eq!(apps.len(), 2);
        assert_eq!(apps[0].span, Span::new(1, 1));
        assert_eq!(apps[1].span, Span::new(6, 1));
        let name = entry(&apps[0], "name");
        assert_eq!(name.key_span, Span::new(2, 1));
        assert_eq!(name.value.span, Span::new(2, 8));
        assert_eq!(name.value.kind, Kind::Str("web".into()));
        let max = entry(&apps[0], "max_restarts");
        assert_eq!(max.key_span, Span::new(3, 3));
        assert_eq!(max.value.span, Span::new(3, 18));
        let env = entry(&apps[0], "env");
        let a = entry(&env.value, "A");
        assert_eq!(a.key_span, Span::new(4, 9));
        assert_eq!(a.value.kind, Kind::Int(1));
    }

    #[test]
    fn syntax_error_has_line_and_column() {
        let err = parse("[[apps]]\nname = \"web\"\nscript = \n").unwrap_err();
        assert_eq!(err.line, Some(3));
        assert!(err.column.is_some());
        assert!(err.message.starts_with("invalid toml: "), "{}", err.message);
    }
}
