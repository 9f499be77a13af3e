//! `crmdump export`: validate flags, open the destination, start the source, run, report.

use std::sync::Arc;

use clap::{Args, ValueEnum};

use super::source::SourceArgs;
use crate::error::Result;
use crate::extract::Extractor;
use crate::pipeline::{self, ExportSettings};
use crate::progress::{Progress, ProgressMode};
use crate::sandbox::iso;
use crate::sink::Sink;
use crate::sink::layout::Layout;
use crate::write::{OutputFormat, parse_size};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Gzip CSV parts (RFC 4180; NULL is an empty field, the empty string is "").
    Csv,
    /// Typed Parquet parts (ZSTD, statistics on).
    Parquet,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    Daily,
    Hive,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Destination: a local folder, file://PATH or s3://bucket/prefix.
    #[arg(long)]
    pub dest: String,
    /// Export date, the name of the day folder (default: today, UTC).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<chrono::NaiveDate>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    /// Largest part, in bytes of the stored file: 15MiB, 1MiB, 15MB (= 15,000,000) or a byte count.
    #[arg(long, default_value = "15MiB", value_parser = parse_size)]
    pub max_file_size: u64,
    /// Folder layout: daily (<dest>/<date>/<TABLE>/...) or hive (<dest>/<TABLE>/dt=<date>/...,
    /// manifests under <dest>/_manifests/, for Athena, Spark and Trino).
    #[arg(long, value_enum, default_value_t = LayoutArg::Daily)]
    pub layout: LayoutArg,
    /// Gzip level of CSV parts (1 fastest .. 9 smallest).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub gzip_level: u32,
    #[command(flatten)]
    pub source: SourceArgs,
    /// Set from the global --quiet: no progress display.
    #[arg(skip)]
    pub quiet_progress: bool,
}

/// Bars on a terminal, log lines otherwise, nothing with --quiet.
pub fn progress_mode(quiet: bool) -> ProgressMode {
    use std::io::IsTerminal;
    if quiet {
        ProgressMode::Off
    } else if std::io::stderr().is_terminal() {
        ProgressMode::Bars
    } else {
        ProgressMode::Lines
    }
}

pub async fn run(args: ExportArgs) -> Result<()> {
    let started_at = chrono::Utc::now();
    let date = args.date.unwrap_or_else(|| started_at.date_naive());
    let sink = Sink::open(&args.dest)?;
    sink.probe_writable().await?;
    let ingested_at: Arc<str> = iso(started_at).into();
    let source = args.source.connect(ingested_at.clone()).await?;
    let settings = ExportSettings {
        date,
        max_file_size: args.max_file_size,
        format: match args.format {
            Format::Csv => OutputFormat::Csv { gzip_level: args.gzip_level },
            Format::Parquet => OutputFormat::Parquet,
        },
        layout: match args.layout {
            LayoutArg::Daily => Layout::Daily,
            LayoutArg::Hive => Layout::Hive,
        },
        started_at,
        ingested_at,
    };
    let progress = Progress::new(progress_mode(args.quiet_progress));
    let report = pipeline::export(&source.hubspot as &dyn Extractor, &sink, &settings, &progress).await?;
    print_summary(&args.dest, &report);
    Ok(())
}

fn print_summary(dest: &str, report: &pipeline::ExportReport) {
    let m = &report.manifest;
    let parts: usize = m.tables.iter().map(|t| t.files.len()).sum();
    let bytes: u64 = m.tables.iter().flat_map(|t| &t.files).map(|f| f.bytes).sum();
    let rows: u64 = m.tables.iter().map(|t| t.rows).sum();
    println!("{:<48} {:>12} {:>6} {:>14}", "TABLE", "ROWS", "PARTS", "BYTES");
    for t in &m.tables {
        let b: u64 = t.files.iter().map(|f| f.bytes).sum();
        println!("{:<48} {:>12} {:>6} {:>14}", t.name, t.rows, t.files.len(), b);
    }
    println!(
        "Committed {}/{}: {} tables, {rows} rows, {parts} parts, {bytes} bytes, {} requests ({} retries), {:.1} s",
        dest.trim_end_matches('/'),
        report.manifest_key,
        m.tables.len(),
        m.requests,
        m.retries,
        report.elapsed.as_secs_f64()
    );
    for w in &m.warnings {
        match (w.count, &w.detail) {
            (Some(c), _) => println!("warning: {} in {}: {c}", w.kind, w.table),
            (None, Some(d)) => println!("warning: {} in {}: {d}", w.kind, w.table),
            _ => println!("warning: {} in {}", w.kind, w.table),
        }
    }
}
