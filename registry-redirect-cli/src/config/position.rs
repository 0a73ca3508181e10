//! Places in a configuration file: byte offsets as line and column numbers,
//! and the links between field paths and the spans of values in the parsed
//! document.

use std::ops::Range;

use registry_redirect_core::policy::{FieldPath, FieldSegment};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// A line and column in a text, both counted from 1. The column counts
/// characters, not bytes, as editors do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// The line, from 1.
    pub line: usize,
    /// The column, from 1, in characters.
    pub column: usize,
}

/// The start offset of every line of a text, for turning byte offsets into
/// [`Position`]s.
#[derive(Debug)]
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    line_starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    pub(crate) fn new(text: &'a str) -> Self {
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(offset, _)| offset + 1));
        LineIndex { text, line_starts }
    }

    /// Converts a byte offset into a position. An offset past the end or
    /// inside a multi-byte character is moved back to the nearest character
    /// start, so every offset has a position.
    pub(crate) fn position(&self, offset: usize) -> Position {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self
            .line_starts
            .partition_point(|&start| start <= offset)
            .max(1);
        let line_start = self.line_starts.get(line - 1).copied().unwrap_or(0);
        let column = self
            .text
            .get(line_start..offset)
            .map_or(0, |before| before.chars().count());
        Position {
            line,
            column: column + 1,
        }
    }
}

/// Finds the span to report for the value at `path`: the value itself, or
/// its key when the value is a table (a table defined by a `[header]` has
/// its fields outside its own span). When the path leaves the document, the
/// span of the deepest part that exists is returned, and `0..0` when none
/// does.
pub(crate) fn span_of_field(root: &DeTable<'_>, path: &FieldPath) -> Range<usize> {
    let mut span = 0..0;
    let mut current: Option<&DeValue<'_>> = None;
    for segment in &path.0 {
        let next = match (segment, current) {
            (FieldSegment::Key(name), None) => find_key(root, name),
            (FieldSegment::Key(name), Some(DeValue::Table(table))) => find_key(table, name),
            (FieldSegment::Index(index), Some(DeValue::Array(array))) => {
                array.get(*index).map(|value| (value.span(), value))
            }
            _ => None,
        };
        let Some((next_span, value)) = next else {
            break;
        };
        span = next_span;
        current = Some(value.get_ref());
    }
    span
}

/// Looks up `name` in a table and returns the span to report with the value.
fn find_key<'t, 'i>(
    table: &'t DeTable<'i>,
    name: &str,
) -> Option<(Range<usize>, &'t Spanned<DeValue<'i>>)> {
    let (key, value) = table.get_key_value(name)?;
    let span = match value.get_ref() {
        DeValue::Table(_) => key.span(),
        _ => value.span(),
    };
    Some((span, value))
}

/// Extends `path`, the path of `value`, down to the deepest key or element
/// of `value` whose span contains `offset`. Deserialization errors carry
/// only a span; this gives them the field path a reader looks for.
pub(crate) fn field_at(
    value: &Spanned<DeValue<'_>>,
    offset: usize,
    mut path: FieldPath,
) -> FieldPath {
    let mut current = value;
    loop {
        let next = match current.get_ref() {
            DeValue::Table(table) => table.iter().find_map(|(key, value)| {
                let found = key.span().contains(&offset) || subtree_contains(value, offset);
                found.then(|| (FieldSegment::Key(key.get_ref().to_string()), value))
            }),
            DeValue::Array(array) => array.iter().enumerate().find_map(|(index, value)| {
                subtree_contains(value, offset).then_some((FieldSegment::Index(index), value))
            }),
            _ => None,
        };
        let Some((segment, value)) = next else {
            return path;
        };
        path.0.push(segment);
        current = value;
    }
}

/// Returns whether `offset` lies in the span of `value` or of anything in it.
fn subtree_contains(value: &Spanned<DeValue<'_>>, offset: usize) -> bool {
    if value.span().contains(&offset) {
        return true;
    }
    match value.get_ref() {
        DeValue::Table(table) => table
            .iter()
            .any(|(key, value)| key.span().contains(&offset) || subtree_contains(value, offset)),
        DeValue::Array(array) => array.iter().any(|value| subtree_contains(value, offset)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_characters() {
        let index = LineIndex::new("ab\nc\u{e9}d\n\nx");
        let cases = [
            (0, 1, 1),
            (1, 1, 2),
            (2, 1, 3),
            (3, 2, 1),
            // After the two-byte 'é', the column counts one character.
            (6, 2, 3),
            // Inside the 'é': moved back to its start.
            (5, 2, 2),
            (8, 3, 1),
            (9, 4, 1),
            (10, 4, 2),
            (999, 4, 2),
        ];
        for (offset, line, column) in cases {
            assert_eq!(
                index.position(offset),
                Position { line, column },
                "offset {offset}"
            );
        }
    }

    #[test]
    fn empty_text_has_position_one_one() {
        let index = LineIndex::new("");
        assert_eq!(index.position(0), Position { line: 1, column: 1 });
    }

    fn path(segments: &[FieldSegment]) -> FieldPath {
        FieldPath(segments.to_vec())
    }

    fn key(name: &str) -> FieldSegment {
        FieldSegment::Key(name.to_owned())
    }

    const DOCUMENT: &str = "default_upstream = \"k8s\"\n\
        [upstreams.k8s]\n\
        url = \"https://registry.k8s.io\"\n\
        [[rules]]\n\
        name = \"lab\"\n\
        clients = [\"10.0.0.0/8\", \"bad\"]\n";

    #[test]
    fn field_spans_point_at_values_and_table_keys() {
        let root = DeTable::parse(DOCUMENT).unwrap();
        let text_at = |segments: &[FieldSegment]| {
            let span = span_of_field(root.get_ref(), &path(segments));
            &DOCUMENT[span]
        };
        assert_eq!(text_at(&[key("default_upstream")]), "\"k8s\"");
        assert_eq!(text_at(&[key("upstreams"), key("k8s")]), "k8s");
        assert_eq!(
            text_at(&[key("upstreams"), key("k8s"), key("url")]),
            "\"https://registry.k8s.io\""
        );
        assert_eq!(
            text_at(&[
                key("rules"),
                FieldSegment::Index(0),
                key("clients"),
                FieldSegment::Index(1)
            ]),
            "\"bad\""
        );
        assert_eq!(
            text_at(&[key("rules"), FieldSegment::Index(0)]),
            "[[rules]]"
        );
    }

    #[test]
    fn missing_fields_fall_back_to_parent() {
        let root = DeTable::parse(DOCUMENT).unwrap();
        let span = span_of_field(
            root.get_ref(),
            &path(&[key("upstreams"), key("k8s"), key("path_prefix")]),
        );
        assert_eq!(&DOCUMENT[span], "k8s");
        let span = span_of_field(root.get_ref(), &path(&[key("nothing")]));
        assert_eq!(span, 0..0);
    }

    #[test]
    fn field_at_finds_deepest_element() {
        let root = DeTable::parse(DOCUMENT).unwrap();
        let rules = root.get_ref().get("rules").unwrap();
        let offset = DOCUMENT.find("\"bad\"").unwrap() + 1;
        let found = field_at(rules, offset, path(&[key("rules")]));
        assert_eq!(found.to_string(), "rules[0].clients[1]");

        let offset = DOCUMENT.find("name").unwrap();
        let found = field_at(rules, offset, path(&[key("rules")]));
        assert_eq!(found.to_string(), "rules[0].name");
    }
}
