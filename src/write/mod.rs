//! Encoders that turn a table's record batches into parts no larger than the size limit.
//!
//! Never touches the network or the file system itself: finished bytes go to a [`PartSink`],
//! which the `sink` module implements over object_store. Every closed part yields a
//! [`PartReceipt`] (path, rows, bytes, sha256) for the manifest.

pub mod csv;
mod csv_gzip;
pub mod parquet_parts;

pub use csv_gzip::CsvGzipWriter;
pub use parquet_parts::ParquetPartWriter;

use arrow::record_batch::RecordBatch;

use sha2::{Digest, Sha256};

use crate::error::Result;

/// Where a table's parts go. Parts are written one at a time, in order.
pub trait PartSink {
    /// Starts part number `index`; bytes written next belong to it. Returns its path
    /// relative to the export root (for example `OBJECTS_CONTACTS/part-00000.csv.gz`).
    fn begin_part(&mut self, index: usize) -> Result<String>;
    /// Appends bytes to the open part.
    fn write(&mut self, bytes: &[u8]) -> Result<()>;
    /// Completes the open part so that it is durable at its path.
    fn finish_part(&mut self) -> Result<()>;
    /// Abandons the open part, if any: nothing of it may stay at its path or in flight
    /// (an upload is aborted). Called when the export fails.
    fn abort_part(&mut self) -> Result<()>;
}

/// The file format of an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Gzip CSV parts at this gzip level.
    Csv { gzip_level: u32 },
    /// Typed Parquet parts, ZSTD.
    Parquet,
}

impl OutputFormat {
    /// Part file extension (after `part-NNNNN.`).
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Csv { .. } => "csv.gz",
            OutputFormat::Parquet => "parquet",
        }
    }

    /// The manifest's `format`.
    pub fn manifest_name(self) -> &'static str {
        self.extension()
    }

    /// An encoder for one table writing through `sink`.
    pub fn encoder<S: PartSink + Send + 'static>(
        self,
        table: &crate::schema::TableSchema,
        sink: S,
        limit: u64,
        source: &str,
    ) -> Box<dyn TableEncoder> {
        match self {
            OutputFormat::Csv { gzip_level } => {
                Box::new(CsvGzipWriter::new(table.name.clone(), &table.arrow_schema(), sink, limit, gzip_level))
            }
            OutputFormat::Parquet => Box::new(ParquetPartWriter::new(table, sink, limit, source)),
        }
    }
}

/// A table's encoder: batches in, parts out (gzip CSV or Parquet).
pub trait TableEncoder: Send {
    fn write_batch(&mut self, batch: &RecordBatch) -> Result<()>;
    /// Closes the last part (an empty table still gets one part with the header or schema)
    /// and returns the receipts of every part, in order. Nothing may be written after it.
    fn finish(&mut self) -> Result<Vec<PartReceipt>>;
    /// Abandons the open part after a failure (see [`PartSink::abort_part`]).
    fn abort(&mut self) -> Result<()>;
}

/// Refuses a closed part larger than the limit. The encoders size parts so that this never
/// happens; the check keeps a bug in that sizing from ever reaching a loader (the part is
/// then aborted, not completed).
fn check_part_size(table: &str, tally: &PartTally, limit: u64) -> Result<()> {
    if tally.bytes <= limit {
        return Ok(());
    }
    Err(crate::error::Error::Internal(format!(
        "part {} of {table} came to {} bytes, over the limit of {limit}; the part was abandoned",
        tally.path, tally.bytes
    )))
}

/// What the manifest records of one written part.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PartReceipt {
    pub path: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

/// Counts and hashes the bytes of one part on their way to the sink.
struct PartTally {
    path: String,
    hasher: Sha256,
    bytes: u64,
    rows: u64,
}

impl PartTally {
    fn new(path: String) -> PartTally {
        PartTally { path, hasher: Sha256::new(), bytes: 0, rows: 0 }
    }

    fn record(&mut self, bytes: &[u8]) {
        self.hasher.update(bytes);
        self.bytes += bytes.len() as u64;
    }

    /// Counts `out` into this part, hands it to `sink` and empties it (nothing if empty).
    fn hand_over<S: PartSink>(&mut self, sink: &mut S, out: &mut Vec<u8>) -> Result<()> {
        if !out.is_empty() {
            self.record(out);
            sink.write(out)?;
            out.clear();
        }
        Ok(())
    }

    fn into_receipt(self) -> PartReceipt {
        PartReceipt { path: self.path, rows: self.rows, bytes: self.bytes, sha256: hex::encode(self.hasher.finalize()) }
    }
}

/// Parses `--max-file-size`: `15MiB`, `1MiB`, `512KiB`, `15MB` (= 15,000,000), `2GB`, or a
/// plain byte count.
pub fn parse_size(text: &str) -> std::result::Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().map_err(|_| {
        format!("'{text}' is not a size: use a byte count or a number with KiB, MiB, GiB, KB, MB or GB")
    })?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        other => {
            return Err(format!("unknown size unit '{other}' in '{text}': use KiB, MiB, GiB, KB, MB or GB"));
        }
    };
    let size = n.checked_mul(factor).ok_or_else(|| format!("size '{text}' is too large"))?;
    if size < 4096 {
        return Err(format!("size '{text}' is below the smallest part size of 4096 bytes"));
    }
    Ok(size)
}

#[cfg(test)]
pub(crate) mod tests_support {
    use std::sync::{Arc, Mutex};

    use super::PartSink;
    use crate::error::Result;

    /// Keeps parts in memory, shared with the test that reads them back.
    #[derive(Default, Clone)]
    pub struct MemoryParts {
        pub parts: Arc<Mutex<Vec<Vec<u8>>>>,
    }

    impl PartSink for MemoryParts {
        fn begin_part(&mut self, index: usize) -> Result<String> {
            self.parts.lock().unwrap().push(Vec::new());
            Ok(format!("T/part-{index:05}"))
        }
        fn write(&mut self, bytes: &[u8]) -> Result<()> {
            self.parts.lock().unwrap().last_mut().unwrap().extend_from_slice(bytes);
            Ok(())
        }
        fn finish_part(&mut self) -> Result<()> {
            Ok(())
        }
        fn abort_part(&mut self) -> Result<()> {
            self.parts.lock().unwrap().pop();
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_binary_and_decimal_units() {
        assert_eq!(parse_size("15MiB"), Ok(15_728_640));
        assert_eq!(parse_size("15MB"), Ok(15_000_000));
        assert_eq!(parse_size("1MiB"), Ok(1_048_576));
        assert_eq!(parse_size("65536"), Ok(65_536));
        assert!(parse_size("15 parsecs").unwrap_err().contains("parsecs"));
        assert!(parse_size("12").is_err());
    }
}
