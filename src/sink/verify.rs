//! Checks a committed export day against its manifest: every listed part exists with its
//! size, sha256 and row count, and no part of that day is there that the manifest does not
//! list.

use std::collections::HashSet;
use std::io::Read;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::Sink;
use super::layout::Layout;
use super::manifest::Manifest;
use crate::error::{Error, Result};

/// What `verify` found wrong, one line each.
#[derive(Debug, Default)]
pub struct Report {
    pub files_checked: usize,
    pub problems: Vec<String>,
    /// The manifest says its data is the sandbox's (generated, not an account's).
    pub sandbox: bool,
}

/// One committed day to check.
#[derive(Debug, Clone)]
pub struct Target {
    pub manifest_key: String,
    /// What the manifest's paths are relative to.
    pub base: String,
    /// Every part key of that day found in the destination.
    pub present: Vec<String>,
}

impl Target {
    /// The day `date` of an export root in `layout`.
    pub async fn of_day(sink: &Sink, layout: Layout, date: &str) -> Result<Target> {
        Ok(Target {
            manifest_key: layout.manifest_key(date),
            base: layout.base(date),
            present: sink.parts_of(layout, date).await?,
        })
    }
}

pub async fn verify(sink: &Sink, target: &Target) -> Result<Report> {
    let key = &target.manifest_key;
    let mut report = Report::default();
    let Some(body) = sink.get(key).await? else {
        report.problems.push(format!("{key}: no manifest: the export of this day is incomplete or absent"));
        return Ok(report);
    };
    let manifest: Manifest = match serde_json::from_slice(&body) {
        Ok(m) => m,
        Err(e) => {
            report.problems.push(format!("{key}: not a crmdump manifest ({e})"));
            return Ok(report);
        }
    };
    report.sandbox = manifest.sandbox;
    let mut listed = HashSet::new();
    for table in &manifest.tables {
        let mut rows = 0;
        for f in &table.files {
            let path = Layout::join(&target.base, &f.path);
            listed.insert(path.clone());
            report.files_checked += 1;
            rows += f.rows;
            let Some(bytes) = sink.get(&path).await? else {
                report.problems.push(format!("{path}: listed in the manifest but missing"));
                continue;
            };
            if bytes.len() as u64 != f.bytes {
                report.problems.push(format!("{path}: {} bytes, the manifest says {}", bytes.len(), f.bytes));
            }
            let sha = hex::encode(Sha256::digest(&bytes));
            if sha != f.sha256 {
                report.problems.push(format!("{path}: sha256 {sha}, the manifest says {}", f.sha256));
            }
            match count_rows(&path, bytes) {
                Ok(n) if n == f.rows => {}
                Ok(n) => report.problems.push(format!("{path}: {n} rows, the manifest says {}", f.rows)),
                Err(e) => report.problems.push(e.to_string()),
            }
        }
        if rows != table.rows {
            report
                .problems
                .push(format!("{}: parts hold {rows} rows, the manifest's table says {}", table.name, table.rows));
        }
    }
    for key in &target.present {
        if !listed.contains(key) {
            report.problems.push(format!("{key}: not listed in the manifest"));
        }
    }
    Ok(report)
}

/// Rows in a part: CSV records after the header (gzip, quoted newlines respected), JSON lines
/// of gzip NDJSON (the webhook journal), or the row count of a Parquet footer.
fn count_rows(path: &str, bytes: Bytes) -> Result<u64> {
    if path.ends_with(".parquet") {
        use parquet::file::reader::{FileReader, SerializedFileReader};
        let reader =
            SerializedFileReader::new(bytes).map_err(|e| Error::corrupt(path, format!("not Parquet ({e})")))?;
        return Ok(reader.metadata().file_metadata().num_rows() as u64);
    }
    let mut text = Vec::new();
    flate2::read::MultiGzDecoder::new(&bytes[..])
        .read_to_end(&mut text)
        .map_err(|e| Error::corrupt(path, format!("not gzip ({e})")))?;
    if path.ends_with(".ndjson.gz") {
        let lines = text.split(|&b| b == b'\n').filter(|l| !l.is_empty());
        let mut n = 0;
        for line in lines {
            serde_json::from_slice::<serde::de::IgnoredAny>(line)
                .map_err(|e| Error::corrupt(path, format!("line {}: not JSON ({e})", n + 1)))?;
            n += 1;
        }
        return Ok(n);
    }
    let mut reader = csv::ReaderBuilder::new().has_headers(true).from_reader(&text[..]);
    let mut n = 0;
    for record in reader.records() {
        record.map_err(|e| Error::corrupt(path, format!("not the CSV it was written as ({e})")))?;
        n += 1;
    }
    Ok(n)
}
