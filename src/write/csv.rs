//! The CSV dialect (docs/FORMAT.md): RFC 4180, comma, LF, UTF-8 without BOM, quotes only
//! where needed, NULL as an empty unquoted field and the empty string as `""`.
//!
//! Written by hand because neither `arrow_csv` nor the `csv` crate can tell NULL from the
//! empty string on output (both write an empty field), which loaders then read back wrong.

use arrow::array::{Array, AsArray, StringArray};
use arrow::record_batch::RecordBatch;

/// Appends one field in the dialect.
pub fn push_field(out: &mut Vec<u8>, value: Option<&str>) {
    match value {
        None => {}
        Some("") => out.extend_from_slice(b"\"\""),
        Some(v) => {
            let bytes = v.as_bytes();
            // memchr scans a word or a vector at a time; long values (JSON, notes) dominate.
            if memchr::memchr3(b',', b'"', b'\n', bytes).is_some() || memchr::memchr(b'\r', bytes).is_some() {
                out.reserve(bytes.len() + 2);
                out.push(b'"');
                let mut rest = bytes;
                while let Some(q) = memchr::memchr(b'"', rest) {
                    out.extend_from_slice(&rest[..=q]);
                    out.push(b'"');
                    rest = &rest[q + 1..];
                }
                out.extend_from_slice(rest);
                out.push(b'"');
            } else {
                out.extend_from_slice(bytes);
            }
        }
    }
}

/// The header line (with its LF) for a batch schema.
pub fn header(batch_schema: &arrow::datatypes::Schema) -> Vec<u8> {
    let mut out = Vec::new();
    for (i, f) in batch_schema.fields().iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        push_field(&mut out, Some(f.name()));
    }
    out.push(b'\n');
    out
}

/// The Utf8 columns of a batch, ready for row-wise encoding.
pub struct Rows<'a> {
    columns: Vec<&'a StringArray>,
}

impl<'a> Rows<'a> {
    /// Panics if a column is not Utf8: every table batch is built by `schema::BatchBuilder`.
    pub fn new(batch: &'a RecordBatch) -> Rows<'a> {
        Rows { columns: batch.columns().iter().map(|c| c.as_string::<i32>()).collect() }
    }

    pub fn value(&self, row: usize, col: usize) -> Option<&'a str> {
        let c = self.columns[col];
        (!c.is_null(row)).then(|| c.value(row))
    }

    /// Appends row `row` to `out`, encoded as one CSV line with its LF.
    pub fn append(&self, row: usize, out: &mut Vec<u8>) {
        for (i, _) in self.columns.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            push_field(out, self.value(row, i));
        }
        out.push(b'\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(v: Option<&str>) -> String {
        let mut out = Vec::new();
        push_field(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn quoting_only_where_needed_and_null_differs_from_empty() {
        assert_eq!(field(None), "");
        assert_eq!(field(Some("")), "\"\"");
        assert_eq!(field(Some("plain")), "plain");
        assert_eq!(field(Some("Smith, John")), "\"Smith, John\"");
        assert_eq!(field(Some("say \"hi\"")), "\"say \"\"hi\"\"\"");
        assert_eq!(field(Some("a\nb")), "\"a\nb\"");
        assert_eq!(field(Some("a\r\nb")), "\"a\r\nb\"");
        assert_eq!(field(Some("Zoë 日本 🚀")), "Zoë 日本 🚀");
        assert_eq!(field(Some(" padded ")), " padded ");
    }
}
