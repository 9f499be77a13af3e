//! Gzip CSV parts that never exceed the size limit and are at least 90% full.
//!
//! The compressed size of what deflate still buffers is unknown, so the writer keeps an upper
//! bound: exact bytes at the last sync flush plus zlib's worst case (`deflateBound`) for the
//! raw bytes written since. While a row fits under the bound it is written blindly; when it
//! does not, a sync flush makes the size exact and the row is tried again; only a row that
//! does not fit after a flush rolls the part. Near the limit this costs a few dozen sync
//! flushes per part (each a few bytes), and a part is closed only when the next row really
//! would not fit, which is what keeps parts full.

use std::io::Write;

use arrow::record_batch::RecordBatch;
use flate2::Compression;
use flate2::write::GzEncoder;

use super::csv::{Rows, header};
use super::{PartReceipt, PartSink, PartTally};
use crate::error::{Error, Result};

/// Bytes reserved for the final deflate block and the 8-byte gzip trailer.
const FINISH_RESERVE: u64 = 64;
/// Compressed output is handed to the sink in pieces of about this size.
const DRAIN_AT: usize = 256 * 1024;
/// CSV rows are handed to deflate in pieces of about this size: one call per row costs
/// deflate's per-call bookkeeping millions of times.
const FEED_AT: usize = 64 * 1024;

/// Worst-case deflate output for `raw` input bytes, plus a sync-flush marker.
fn deflate_bound(raw: u64) -> u64 {
    raw + (raw >> 12) + (raw >> 14) + (raw >> 25) + 13 + 5
}

struct OpenPart {
    encoder: GzEncoder<Vec<u8>>,
    tally: PartTally,
    /// Compressed bytes known exactly (handed to the sink or waiting in the encoder's Vec)
    /// as of the last sync flush.
    exact: u64,
    /// Raw bytes written since the last sync flush (in `feed` or inside the encoder).
    pending_raw: u64,
    /// Rows accepted into this part but not yet handed to the encoder.
    feed: Vec<u8>,
}

impl OpenPart {
    /// Hands the buffered rows to deflate.
    fn feed_encoder(&mut self) -> Result<()> {
        if !self.feed.is_empty() {
            self.encoder.write_all(&self.feed).map_err(|e| Error::io("gzip", e))?;
            self.feed.clear();
        }
        Ok(())
    }
}

/// Writes one table as gzip CSV parts through a [`PartSink`].
pub struct CsvGzipWriter<S: PartSink> {
    table: String,
    sink: S,
    limit: u64,
    level: Compression,
    header: Option<Vec<u8>>,
    part: Option<OpenPart>,
    receipts: Vec<PartReceipt>,
    row_buf: Vec<u8>,
}

impl<S: PartSink> CsvGzipWriter<S> {
    /// `schema` is the batches' (Utf8) schema: its names make the header of every part.
    pub fn new(table: impl Into<String>, schema: &arrow::datatypes::Schema, sink: S, limit: u64, level: u32) -> Self {
        CsvGzipWriter {
            table: table.into(),
            sink,
            limit,
            level: Compression::new(level),
            header: Some(header(schema)),
            part: None,
            receipts: Vec::new(),
            row_buf: Vec::new(),
        }
    }

    /// Encodes every row of `batch`, rolling parts as needed.
    pub fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = Rows::new(batch);
        for r in 0..batch.num_rows() {
            if self.part.is_none() {
                self.open_part()?;
            }
            // The row is encoded straight into the part's feed; only a row that does not fit
            // under the bound is taken back out and goes the careful way.
            let part = self.part.as_mut().expect("a part is open");
            let start = part.feed.len();
            rows.append(r, &mut part.feed);
            let len = (part.feed.len() - start) as u64;
            if self.fits(len) {
                self.accept_row(len)?;
                continue;
            }
            let part = self.part.as_mut().expect("a part is open");
            self.row_buf.clear();
            self.row_buf.extend_from_slice(&part.feed[start..]);
            part.feed.truncate(start);
            let row = std::mem::take(&mut self.row_buf);
            let written = self.write_row(&row, || {
                (0..batch.num_columns().min(2))
                    .map(|c| rows.value(r, c).unwrap_or("NULL"))
                    .collect::<Vec<_>>()
                    .join("/")
            });
            self.row_buf = row;
            written?;
        }
        Ok(())
    }

    /// Counts a row of `len` bytes just appended to the feed into the open part.
    fn accept_row(&mut self, len: u64) -> Result<()> {
        let part = self.part.as_mut().expect("a part is open");
        part.pending_raw += len;
        part.tally.rows += 1;
        if part.feed.len() >= FEED_AT {
            part.feed_encoder()?;
            if part.encoder.get_ref().len() >= DRAIN_AT {
                self.drain()?;
            }
        }
        Ok(())
    }

    /// A row that did not fit under the bound: flush to learn the exact size, roll the part
    /// if it still does not fit, and fail if it does not fit in an empty part either.
    fn write_row(&mut self, row: &[u8], record: impl Fn() -> String) -> Result<()> {
        let len = row.len() as u64;
        if !self.fits(len) {
            self.sync_flush()?;
            if !self.fits(len) {
                let empty = self.part.as_ref().is_some_and(|p| p.tally.rows == 0);
                if !empty {
                    self.close_part()?;
                    self.open_part()?;
                    if !self.fits(len) {
                        self.sync_flush()?;
                    }
                }
                if !self.fits(len) {
                    return Err(Error::Row {
                        table: self.table.clone(),
                        record: record(),
                        detail: format!(
                            "the row is {len} bytes of CSV and does not fit in a part of at most {} bytes; raise --max-file-size",
                            self.limit
                        ),
                    });
                }
            }
        }
        self.part.as_mut().expect("a part is open").feed.extend_from_slice(row);
        self.accept_row(len)
    }

    fn fits(&self, extra_raw: u64) -> bool {
        let p = self.part.as_ref().expect("a part is open");
        p.exact + deflate_bound(p.pending_raw + extra_raw) + FINISH_RESERVE <= self.limit
    }

    fn open_part(&mut self) -> Result<()> {
        let path = self.sink.begin_part(self.receipts.len())?;
        let mut encoder = GzEncoder::new(Vec::with_capacity(DRAIN_AT * 2), self.level);
        let header = self.header.as_deref().unwrap_or_default();
        encoder.write_all(header).map_err(|e| Error::io("gzip", e))?;
        self.part = Some(OpenPart {
            encoder,
            tally: PartTally::new(path),
            exact: 0,
            pending_raw: header.len() as u64,
            feed: Vec::with_capacity(FEED_AT + 4096),
        });
        Ok(())
    }

    fn sync_flush(&mut self) -> Result<()> {
        let part = self.part.as_mut().expect("a part is open");
        part.feed_encoder()?;
        part.encoder.flush().map_err(|e| Error::io("gzip flush", e))?;
        part.exact = part.tally.bytes + part.encoder.get_ref().len() as u64;
        part.pending_raw = 0;
        Ok(())
    }

    /// Hands the compressed bytes produced so far to the sink.
    fn drain(&mut self) -> Result<()> {
        let part = self.part.as_mut().expect("a part is open");
        part.tally.hand_over(&mut self.sink, part.encoder.get_mut())
    }

    fn close_part(&mut self) -> Result<()> {
        let Some(mut part) = self.part.take() else {
            return Ok(());
        };
        part.feed_encoder()?;
        let OpenPart { encoder, mut tally, .. } = part;
        let mut rest = encoder.finish().map_err(|e| Error::io("gzip finish", e))?;
        tally.hand_over(&mut self.sink, &mut rest)?;
        super::check_part_size(&self.table, &tally, self.limit)?;
        self.sink.finish_part()?;
        self.receipts.push(tally.into_receipt());
        Ok(())
    }

    /// Closes the last part (writing a header-only part for an empty table) and returns
    /// the receipts of every part, in order.
    pub fn finish(mut self) -> Result<(Vec<PartReceipt>, S)> {
        let receipts = self.close_last()?;
        Ok((receipts, self.sink))
    }

    fn close_last(&mut self) -> Result<Vec<PartReceipt>> {
        if self.part.is_none() && self.receipts.is_empty() {
            self.open_part()?;
        }
        self.close_part()?;
        Ok(std::mem::take(&mut self.receipts))
    }
}

impl<S: PartSink + Send> super::TableEncoder for CsvGzipWriter<S> {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        CsvGzipWriter::write_batch(self, batch)
    }

    fn finish(&mut self) -> Result<Vec<PartReceipt>> {
        self.close_last()
    }

    fn abort(&mut self) -> Result<()> {
        self.part = None;
        self.sink.abort_part()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{BatchBuilder, Column, ColumnType, TableSchema};
    use crate::write::tests_support::MemoryParts;
    use std::io::Read;
    use std::sync::Arc;

    fn schema() -> Arc<TableSchema> {
        Arc::new(TableSchema::new(
            "T",
            vec![Column::new("ID", ColumnType::Int64, false), Column::new("TEXT", ColumnType::Utf8, true)],
        ))
    }

    /// Pseudo-random text that compresses about as well as CRM data.
    fn batch(start: u64, rows: u64, width: usize) -> RecordBatch {
        let mut b = BatchBuilder::new(schema(), "".into(), rows as usize);
        let words = ["alpha", "Zoë, \"q\"", "日本", "line\nbreak", "x", "", "1234.50"];
        let mut state = start.wrapping_mul(0x9E3779B97F4A7C15) | 1;
        for i in start..start + rows {
            let mut text = String::new();
            while text.len() < width {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                text.push_str(words[(state % 7) as usize]);
                text.push_str(&format!("{}", state % 1000));
            }
            let id = i.to_string();
            b.push_row([Some(id.as_str()), if i % 11 == 0 { None } else { Some(text.as_str()) }]);
        }
        b.finish().unwrap()
    }

    fn gunzip(bytes: &[u8]) -> String {
        let mut out = String::new();
        flate2::read::MultiGzDecoder::new(bytes).read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn parts_stay_under_the_limit_are_full_and_standalone() {
        let limit = 64 * 1024;
        let mut w = CsvGzipWriter::new("T", &schema().arrow_schema(), MemoryParts::default(), limit, 6);
        for chunk in 0..20 {
            w.write_batch(&batch(chunk * 500, 500, 120)).unwrap();
        }
        let (receipts, sink) = w.finish().unwrap();
        assert!(receipts.len() >= 3, "expected several parts, got {}", receipts.len());
        let mut total_rows = 0;
        for (i, (r, bytes)) in receipts.iter().zip(sink.parts.lock().unwrap().iter()).enumerate() {
            assert_eq!(r.bytes, bytes.len() as u64);
            assert!(r.bytes <= limit, "part {i} is {} bytes", r.bytes);
            if i + 1 < receipts.len() {
                assert!(r.bytes * 10 >= limit * 9, "part {i} is only {} bytes", r.bytes);
            }
            let text = gunzip(bytes);
            assert!(text.starts_with("ID,TEXT\n"), "part {i} lacks the header");
            assert_eq!(r.rows, (text.matches('\n').count() - 1 - text.matches("line\nbreak").count()) as u64);
            total_rows += r.rows;
            assert_eq!(r.sha256, hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes)));
        }
        assert_eq!(total_rows, 10_000);
    }

    #[test]
    fn rows_are_never_split_and_round_trip() {
        let mut w = CsvGzipWriter::new("T", &schema().arrow_schema(), MemoryParts::default(), 8 * 1024, 6);
        w.write_batch(&batch(0, 400, 60)).unwrap();
        let (receipts, sink) = w.finish().unwrap();
        assert!(receipts.len() > 1);
        let mut ids = Vec::new();
        for bytes in sink.parts.lock().unwrap().iter() {
            let text = gunzip(bytes);
            let mut rest = text.strip_prefix("ID,TEXT\n").unwrap();
            // Every part ends at a row boundary: the last byte is the LF after a full row.
            assert!(rest.ends_with('\n'));
            while !rest.is_empty() {
                let comma = rest.find(',').unwrap();
                ids.push(rest[..comma].parse::<u64>().unwrap());
                rest = &rest[comma + 1..];
                let end = if let Some(q) = rest.strip_prefix('"') {
                    let mut i = 0;
                    let b = q.as_bytes();
                    loop {
                        if b[i] == b'"' && b.get(i + 1) == Some(&b'"') {
                            i += 2;
                        } else if b[i] == b'"' {
                            break i + 2;
                        } else {
                            i += 1;
                        }
                    }
                } else {
                    rest.find('\n').unwrap()
                };
                rest = &rest[end + 1..];
            }
        }
        assert_eq!(ids, (0..400).collect::<Vec<_>>());
    }

    #[test]
    fn empty_table_gets_one_header_only_part() {
        let w = CsvGzipWriter::new("T", &schema().arrow_schema(), MemoryParts::default(), 8 * 1024, 6);
        let (receipts, sink) = w.finish().unwrap();
        assert_eq!(receipts.len(), 1);
        assert_eq!(receipts[0].rows, 0);
        assert_eq!(gunzip(&sink.parts.lock().unwrap()[0]), "ID,TEXT\n");
    }

    #[test]
    fn a_row_larger_than_the_limit_is_a_data_error_naming_the_record() {
        let mut w = CsvGzipWriter::new("T", &schema().arrow_schema(), MemoryParts::default(), 4096, 0);
        let err = w.write_batch(&batch(7, 1, 10_000)).unwrap_err();
        assert_eq!(err.class(), crate::error::ErrorClass::Data);
        assert!(err.to_string().contains("table T, record 7/"), "{err}");
    }
}
