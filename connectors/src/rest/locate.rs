//! From byte spans to `line:column` and dotted key paths, and back, over a
//! parsed TOML document: how every config error names its place.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeTable, DeValue};

/// A parsed source file, kept for locating errors in it.
pub(crate) struct Document<'i> {
    root: &'i Spanned<DeTable<'i>>,
}

impl<'i> Document<'i> {
    pub(crate) fn new(root: &'i Spanned<DeTable<'i>>) -> Self {
        Self { root }
    }

    /// The dotted key path of the innermost entry whose key or value covers
    /// `offset` (`streams.contacts.paginator.kind`), empty at top level.
    pub(crate) fn path_at(&self, offset: usize) -> Vec<String> {
        let mut path = Vec::new();
        let mut table = self.root.get_ref();
        'descend: loop {
            for (key, value) in table.iter() {
                let covers = |span: Range<usize>| span.contains(&offset) || span.end == offset;
                let inside = match value.get_ref() {
                    DeValue::Table(inner) => contains(inner, offset),
                    _ => false,
                };
                if inside || covers(key.span()) || covers(value.span()) {
                    path.push(key.get_ref().to_string());
                    if let DeValue::Table(inner) = value.get_ref() {
                        table = inner;
                        continue 'descend;
                    }
                    break 'descend;
                }
            }
            break;
        }
        path
    }

    /// The dotted path of the table whose value spans exactly `span` (where
    /// serde points a missing-field error), empty for the document itself.
    pub(crate) fn table_at(&self, span: &Range<usize>) -> Vec<String> {
        fn find(table: &DeTable<'_>, span: &Range<usize>, path: &mut Vec<String>) -> bool {
            for (key, value) in table.iter() {
                if let DeValue::Table(inner) = value.get_ref() {
                    path.push(key.get_ref().to_string());
                    if value.span() == *span || find(inner, span, path) {
                        return true;
                    }
                    path.pop();
                }
            }
            false
        }
        let mut path = Vec::new();
        find(self.root.get_ref(), span, &mut path);
        path
    }

    /// Where `path` is written: the key of its deepest existing prefix, so a
    /// missing field points at the table that lacks it. A table's place is
    /// where it starts: its `[header]`, or its key when written inline.
    pub(crate) fn span_of(&self, path: &[&str]) -> Range<usize> {
        let mut span = self.root.span();
        let mut table = self.root.get_ref();
        for segment in path {
            let Some((key, value)) = table.get_key_value(*segment) else {
                break;
            };
            match value.get_ref() {
                DeValue::Table(inner) => {
                    span = key.span().start.min(value.span().start)..key.span().end;
                    table = inner;
                }
                _ => {
                    span = key.span();
                    break;
                }
            }
        }
        span
    }
}

/// Whether any entry of `table`, at any depth, covers `offset`.
fn contains(table: &DeTable<'_>, offset: usize) -> bool {
    table.iter().any(|(key, value)| {
        key.span().contains(&offset)
            || value.span().contains(&offset)
            || matches!(value.get_ref(), DeValue::Table(inner) if contains(inner, offset))
    })
}

/// 1-based line and column (in characters) of a byte offset in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests {
    use toml::de::DeTable;

    use super::{Document, line_column};

    const TEXT: &str = "name = \"x\"\n\n[streams.contacts]\npath = \"/c\"\n\n[streams.contacts.paginator]\nkind = \"cursor\"\n";

    #[test]
    fn paths_and_spans_round_trip() {
        let root = DeTable::parse(TEXT).expect("parses");
        let document = Document::new(&root);
        let kind = document.span_of(&["streams", "contacts", "paginator", "kind"]);
        assert_eq!(line_column(TEXT, kind.start), (7, 1));
        assert_eq!(
            document.path_at(kind.start),
            ["streams", "contacts", "paginator", "kind"]
        );
        let path = document.span_of(&["streams", "contacts", "path"]);
        assert_eq!(line_column(TEXT, path.start), (4, 1));
        let missing = document.span_of(&["streams", "contacts", "paginator", "param"]);
        assert_eq!(
            missing,
            document.span_of(&["streams", "contacts", "paginator"])
        );
        assert_eq!(document.path_at(0), ["name"]);
        let paginator = root.get_ref()["streams"].get_ref().get("contacts");
        let span = paginator
            .and_then(|contacts| contacts.get_ref().get("paginator"))
            .map(|p| p.span())
            .expect("the paginator table");
        assert_eq!(
            document.table_at(&span),
            ["streams", "contacts", "paginator"]
        );
        assert!(document.table_at(&(0..0)).is_empty());
    }

    #[test]
    fn columns_count_characters() {
        assert_eq!(line_column("a = \"é\"\nb", 9), (2, 1));
        assert_eq!(line_column("é = 1", 3), (1, 3));
    }
}
