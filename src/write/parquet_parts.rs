//! Typed Parquet parts (ZSTD, statistics on) that never exceed the size limit.
//!
//! A part's size is exact only for flushed row groups (`bytes_written`); the row group in
//! progress is bounded by the writer's own estimate of its encoded size (uncompressed, so an
//! upper bound of what ZSTD will make of it). Rows go in slices: a slice is written only if
//! flushed bytes + in-progress estimate + the slice's size + a reserve for the footer fit;
//! otherwise the row group is flushed (making the size exact) and the slice tried again, and
//! only then is the part closed. Row groups are also flushed at a few MiB to bound memory.

use std::sync::Arc;

use arrow::array::{ArrayRef, AsArray};
use arrow::compute::{CastOptions, cast_with_options};
use arrow::datatypes::TimestampMillisecondType;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};

use super::{PartReceipt, PartSink, PartTally, TableEncoder};
use crate::error::{Error, Result};
use crate::schema::{ColumnType, TableSchema};

/// Rows encoded at a time: the granularity at which a part can be closed.
const SLICE_ROWS: usize = 128;
/// A row group is flushed when its estimate passes this (bounds memory per table).
const ROW_GROUP_BYTES: usize = 2 * 1024 * 1024;

/// The Arrow type of a logical column in typed files.
pub fn arrow_type(ty: ColumnType) -> DataType {
    match ty {
        ColumnType::Utf8 | ColumnType::Json => DataType::Utf8,
        ColumnType::Int64 => DataType::Int64,
        ColumnType::Int32 => DataType::Int32,
        ColumnType::Float64 => DataType::Float64,
        ColumnType::Boolean => DataType::Boolean,
        ColumnType::Timestamp => DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        ColumnType::Date32 => DataType::Date32,
    }
}

/// The typed Arrow schema of a table.
pub fn typed_schema(table: &TableSchema) -> SchemaRef {
    Arc::new(Schema::new(
        table.columns.iter().map(|c| Field::new(&c.name, arrow_type(c.ty), c.nullable)).collect::<Vec<_>>(),
    ))
}

/// Converts a batch of canonical text to its typed columns (lossless: the text is canonical).
///
/// The cast is strict: the canonical text was already checked with the parsers the cast
/// uses (a value that does not parse is NULL in CSV and Parquet alike, and counted), so a
/// value the cast would reject is a bug, reported with its column, never a silent NULL
/// that only the Parquet files would have.
pub fn typed_batch(schema: &SchemaRef, batch: &RecordBatch) -> Result<RecordBatch> {
    let strict = CastOptions { safe: false, ..Default::default() };
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            let typed: std::result::Result<ArrayRef, arrow::error::ArrowError> = match f.data_type() {
                // Parsing with a named zone needs chrono-tz; the text is UTC ('Z'), so parse it
                // zone-less and label the values UTC.
                DataType::Timestamp(TimeUnit::Millisecond, Some(zone)) => {
                    cast_with_options(c, &DataType::Timestamp(TimeUnit::Millisecond, None), &strict).map(|naive| {
                        let millis = naive.as_primitive::<TimestampMillisecondType>().clone();
                        Arc::new(millis.with_timezone(zone.clone())) as ArrayRef
                    })
                }
                other => cast_with_options(c, other, &strict),
            };
            typed.map_err(|e| Error::Internal(format!("typing column {}: {e}", f.name())))
        })
        .collect::<Result<_>>()?;
    RecordBatch::try_new(schema.clone(), columns).map_err(|e| Error::Internal(format!("typing a batch: {e}")))
}

/// Bytes of `batch`'s values in PLAIN encoding (what the slice adds to an uncompressed
/// page at most). Computed from the slice's own range: a slice shares its parent's buffers,
/// so the arrays' memory sizes would count the whole parent.
fn plain_size(batch: &RecordBatch) -> u64 {
    let rows = batch.num_rows() as u64;
    batch
        .columns()
        .iter()
        .map(|c| {
            let values = match c.data_type() {
                DataType::Utf8 => {
                    let offsets = c.as_string::<i32>().value_offsets();
                    (offsets[offsets.len() - 1] - offsets[0]) as u64 + 4 * rows
                }
                DataType::Boolean => rows.div_ceil(8),
                other => other.primitive_width().unwrap_or(8) as u64 * rows,
            };
            values + rows.div_ceil(8) + 16
        })
        .sum()
}

struct OpenPart {
    writer: ArrowWriter<Vec<u8>>,
    tally: PartTally,
}

/// Writes one table as Parquet parts through a [`PartSink`].
pub struct ParquetPartWriter<S: PartSink> {
    table: String,
    sink: S,
    limit: u64,
    schema: SchemaRef,
    properties: WriterProperties,
    part: Option<OpenPart>,
    receipts: Vec<PartReceipt>,
}

impl<S: PartSink> ParquetPartWriter<S> {
    pub fn new(table: &TableSchema, sink: S, limit: u64, source: &str) -> Self {
        let properties = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::try_new(1).expect("level 1 is valid")))
            .set_statistics_enabled(EnabledStatistics::Page)
            .set_max_row_group_row_count(None)
            .set_key_value_metadata(Some(vec![
                KeyValue::new("crmdump.version".to_string(), env!("CARGO_PKG_VERSION").to_string()),
                KeyValue::new("crmdump.source".to_string(), source.to_string()),
                KeyValue::new("crmdump.table".to_string(), table.name.clone()),
            ]))
            .build();
        ParquetPartWriter {
            table: table.name.clone(),
            sink,
            limit,
            schema: typed_schema(table),
            properties,
            part: None,
            receipts: Vec::new(),
        }
    }

    /// Bytes kept free for the footer (row group metadata and statistics per column chunk,
    /// page indexes), growing with the row groups written.
    fn footer_reserve(&self, part: &OpenPart) -> u64 {
        let columns = self.schema.fields().len() as u64;
        let groups = part.writer.flushed_row_groups().len() as u64 + 1;
        // Per column chunk: its metadata with min/max statistics (truncated to 64 bytes each)
        // and its page indexes, a few hundred bytes in all.
        4 * 1024 + columns * groups * 320
    }

    fn fits(&self, extra: u64) -> bool {
        let p = self.part.as_ref().expect("a part is open");
        // 1% on top of the estimates covers page headers and compression frame overhead.
        let pending = p.writer.in_progress_size() as u64 + extra;
        p.writer.bytes_written() as u64 + pending + pending / 100 + self.footer_reserve(p) <= self.limit
    }

    fn open_part(&mut self) -> Result<()> {
        let path = self.sink.begin_part(self.receipts.len())?;
        let writer = ArrowWriter::try_new(Vec::new(), self.schema.clone(), Some(self.properties.clone()))
            .map_err(|e| Error::Internal(format!("opening a Parquet part of {}: {e}", self.table)))?;
        self.part = Some(OpenPart { writer, tally: PartTally::new(path) });
        Ok(())
    }

    /// Hands what the writer has produced so far to the sink.
    fn drain(&mut self) -> Result<()> {
        let part = self.part.as_mut().expect("a part is open");
        part.tally.hand_over(&mut self.sink, part.writer.inner_mut())
    }

    fn flush_row_group(&mut self) -> Result<()> {
        let part = self.part.as_mut().expect("a part is open");
        part.writer.flush().map_err(|e| Error::Internal(format!("Parquet row group of {}: {e}", self.table)))?;
        self.drain()
    }

    fn close_part(&mut self) -> Result<()> {
        let Some(mut part) = self.part.take() else {
            return Ok(());
        };
        part.writer.finish().map_err(|e| Error::Internal(format!("closing a Parquet part of {}: {e}", self.table)))?;
        part.tally.hand_over(&mut self.sink, part.writer.inner_mut())?;
        super::check_part_size(&self.table, &part.tally, self.limit)?;
        self.sink.finish_part()?;
        self.receipts.push(part.tally.into_receipt());
        Ok(())
    }

    fn write_slice(&mut self, slice: &RecordBatch) -> Result<()> {
        let estimate = plain_size(slice);
        if self.part.is_none() {
            self.open_part()?;
        }
        if !self.fits(estimate) {
            self.flush_row_group()?;
            if !self.fits(estimate) {
                if self.part.as_ref().is_some_and(|p| p.tally.rows > 0) {
                    self.close_part()?;
                    self.open_part()?;
                }
                if !self.fits(estimate) {
                    if slice.num_rows() > 1 {
                        // Try row by row before declaring a row too large.
                        for r in 0..slice.num_rows() {
                            self.write_slice(&slice.slice(r, 1))?;
                        }
                        return Ok(());
                    }
                    return Err(Error::Row {
                        table: self.table.clone(),
                        record: "a single row".into(),
                        detail: format!(
                            "the row takes about {estimate} bytes and does not fit in a Parquet part of at most {} bytes; raise --max-file-size",
                            self.limit
                        ),
                    });
                }
            }
        }
        let part = self.part.as_mut().expect("a part is open");
        part.writer.write(slice).map_err(|e| Error::Internal(format!("Parquet encoding of {}: {e}", self.table)))?;
        part.tally.rows += slice.num_rows() as u64;
        if part.writer.in_progress_size() >= ROW_GROUP_BYTES {
            self.flush_row_group()?;
        }
        Ok(())
    }
}

impl<S: PartSink + Send> TableEncoder for ParquetPartWriter<S> {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let typed = typed_batch(&self.schema, batch)?;
        let mut start = 0;
        while start < typed.num_rows() {
            let len = SLICE_ROWS.min(typed.num_rows() - start);
            self.write_slice(&typed.slice(start, len))?;
            start += len;
        }
        Ok(())
    }

    fn abort(&mut self) -> Result<()> {
        self.part = None;
        self.sink.abort_part()
    }

    fn finish(&mut self) -> Result<Vec<PartReceipt>> {
        if self.part.is_none() && self.receipts.is_empty() {
            self.open_part()?;
        }
        self.close_part()?;
        Ok(std::mem::take(&mut self.receipts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{BatchBuilder, Column};
    use crate::write::tests_support::MemoryParts;
    use bytes::Bytes;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn table() -> Arc<TableSchema> {
        Arc::new(TableSchema::new(
            "T",
            vec![
                Column::new("ID", ColumnType::Int64, false),
                Column::new("AMOUNT", ColumnType::Float64, true),
                Column::new("AT", ColumnType::Timestamp, true),
                Column::new("DAY", ColumnType::Date32, true),
                Column::new("OK", ColumnType::Boolean, true),
                Column::new("TEXT", ColumnType::Utf8, true),
            ],
        ))
    }

    fn batch(start: u64, rows: u64) -> RecordBatch {
        let mut b = BatchBuilder::new(table(), "".into(), rows as usize);
        let mut state = start | 1;
        for i in start..start + rows {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let id = i.to_string();
            let amount = format!("{}.{}", state % 100_000, state % 100);
            let text: String = (0..40).map(|k| char::from(b'a' + ((state >> (k % 60)) % 26) as u8)).collect();
            b.push_row([
                Some(id.as_str()),
                (i % 5 != 0).then_some(amount.as_str()),
                Some("2025-01-02T03:04:05.678Z"),
                Some("2025-01-02"),
                Some(if i % 2 == 0 { "true" } else { "false" }),
                (i % 7 != 0).then_some(text.as_str()),
            ]);
        }
        b.finish().unwrap()
    }

    /// Odd values of every type: each is NULL in the typed (Parquet) column exactly when
    /// canonicalisation made it NULL for CSV, and the strict cast never refuses one.
    #[test]
    fn parquet_nulls_exactly_what_csv_nulls() {
        let odd = [
            "",
            " ",
            "N/A",
            "1",
            "+1",
            "-0",
            "007",
            " 42 ",
            "1e3",
            "1E-3",
            ".5",
            "5.",
            "1.e5",
            "-.5e2",
            "1e",
            "e5",
            "+",
            "-",
            ".",
            "1e400",
            "-1e400",
            "NaN",
            "inf",
            "0x10",
            "1_000",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775809",
            "1.5",
            "2024-02-29",
            "2024-02-30",
            "2024-01-01T00:00:00Z",
            "2024-01-01T02:00:00+02:00",
            "1709251200000",
            "999999999999999",
            "-99999999999999",
            "99999999999999",
            "9999-12-31T23:59:59.999Z",
            "0000-01-01T00:00:00.000Z",
            "2024-01-01 10:00:00",
            "true",
            "TRUE",
            "yes",
        ];
        for ty in
            [ColumnType::Int64, ColumnType::Float64, ColumnType::Timestamp, ColumnType::Date32, ColumnType::Boolean]
        {
            let table = Arc::new(TableSchema::new("T", vec![Column::new("V", ty, true)]));
            let mut b = BatchBuilder::new(table.clone(), "".into(), odd.len());
            for v in odd {
                b.push_row([Some(v)]);
            }
            let text = b.finish().unwrap();
            let typed = typed_batch(&typed_schema(&table), &text)
                .unwrap_or_else(|e| panic!("{ty:?}: the strict cast refused a canonical value: {e}"));
            for (i, v) in odd.iter().enumerate() {
                assert_eq!(
                    text.column(0).is_null(i),
                    typed.column(0).is_null(i),
                    "{ty:?} {v:?}: NULL in one format only"
                );
            }
        }
    }

    #[test]
    fn parquet_parts_stay_under_the_limit_are_full_and_typed() {
        let limit = 1024 * 1024;
        let sink = MemoryParts::default();
        let parts = sink.parts.clone();
        let mut w: Box<dyn TableEncoder> = Box::new(ParquetPartWriter::new(&table(), sink, limit, "test"));
        for chunk in 0..150 {
            w.write_batch(&batch(chunk * 1000, 1000)).unwrap();
        }
        let receipts = w.finish().unwrap();
        assert!(receipts.len() >= 3, "expected several parts, got {}", receipts.len());
        let parts = parts.lock().unwrap().clone();
        let mut ids = Vec::new();
        for (i, (r, bytes)) in receipts.iter().zip(&parts).enumerate() {
            assert_eq!(r.bytes, bytes.len() as u64);
            assert!(r.bytes <= limit, "part {i} is {} bytes", r.bytes);
            if i + 1 < receipts.len() {
                assert!(r.bytes * 10 >= limit * 9, "part {i} is only {} bytes", r.bytes);
            }
            let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(bytes.clone())).unwrap();
            assert_eq!(reader.schema().field(0).data_type(), &DataType::Int64);
            assert_eq!(reader.schema().field(2).data_type(), &arrow_type(ColumnType::Timestamp));
            let kv = reader.metadata().file_metadata().key_value_metadata().unwrap();
            assert!(kv.iter().any(|k| k.key == "crmdump.source" && k.value.as_deref() == Some("test")));
            let mut rows = 0;
            for b in reader.build().unwrap() {
                let b = b.unwrap();
                rows += b.num_rows();
                let col = b.column(0).as_any().downcast_ref::<arrow::array::Int64Array>().unwrap();
                ids.extend(col.values().iter().copied());
            }
            assert_eq!(rows as u64, r.rows);
        }
        assert_eq!(ids, (0..150_000).collect::<Vec<i64>>());
    }

    #[test]
    fn an_empty_table_is_one_file_with_the_schema() {
        let sink = MemoryParts::default();
        let parts = sink.parts.clone();
        let mut w: Box<dyn TableEncoder> = Box::new(ParquetPartWriter::new(&table(), sink, 64 * 1024, "test"));
        let receipts = w.finish().unwrap();
        assert_eq!(receipts.len(), 1);
        let parts = parts.lock().unwrap().clone();
        let reader = ParquetRecordBatchReaderBuilder::try_new(Bytes::from(parts[0].clone())).unwrap();
        assert_eq!(reader.schema().fields().len(), 6);
        assert_eq!(reader.metadata().file_metadata().num_rows(), 0);
    }
}
