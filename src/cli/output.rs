//! Where and how an export writes: the flags `export` and `backfill` share, and the summary
//! they print.

use clap::{Args, ValueEnum};

use crate::pipeline::DaySummary;
use crate::run::DEFAULT_STALE_AFTER;
use crate::run::{DEFAULT_GZIP_LEVEL, LeaseOptions, OutputSettings};
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
pub struct OutputArgs {
    /// Destination: a local folder, file://PATH, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix.
    #[arg(long)]
    pub dest: String,
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
    /// Exit with code 4 when the export is committed but has data warnings (values that did
    /// not parse as their type, records left out, invalid UTF-8 replaced).
    #[arg(long)]
    pub strict: bool,
    /// Gzip level of CSV parts (1 fastest .. 9 smallest). The default 5 is 14% less CPU than 6
    /// for output within 1% of GNU `gzip -6` (BENCHMARKS.md).
    #[arg(long, default_value_t = DEFAULT_GZIP_LEVEL, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub gzip_level: u32,
    #[command(flatten)]
    pub lease: LeaseArgs,
}

/// How a run takes the destination's lease (one writer per destination and account).
#[derive(Debug, Clone, Args)]
pub struct LeaseArgs {
    /// Wait up to this long for another run of the same account into the same destination to
    /// end (a cron overlap, an orchestrator's retry), or for its lease to go stale, instead of
    /// refusing at once with exit code 75.
    #[arg(long, value_name = "DURATION", value_parser = super::parse_duration)]
    pub wait_for_lease: Option<chrono::Duration>,
    /// A lease whose holder has not renewed it for this long (watched by this run's own clock)
    /// belongs to a dead run and is taken over. It must exceed the store's whole retry budget
    /// (about 90 s), hence the default.
    #[arg(long, value_name = "DURATION", default_value = "3m", value_parser = super::parse_duration)]
    pub lease_stale_after: chrono::Duration,
    /// Write to a store that ignores conditional writes (some S3-compatible servers), without
    /// a lease: two runs at once could then corrupt the export, so make sure only one runs.
    #[arg(long)]
    pub accept_unconditional_writes: bool,
}

impl LeaseArgs {
    /// The library's lease options of these flags.
    pub fn options(&self) -> LeaseOptions {
        let stale_after = self.lease_stale_after.to_std().unwrap_or(DEFAULT_STALE_AFTER);
        if stale_after < DEFAULT_STALE_AFTER {
            tracing::warn!(
                stale_after = ?stale_after,
                "--lease-stale-after is below 3 minutes: a run slowed by its store's retries could be taken for dead."
            );
        }
        LeaseOptions {
            stale_after: stale_after.max(std::time::Duration::from_secs(1)),
            wait: self.wait_for_lease.and_then(|w| w.to_std().ok()),
            unconditional: self.accept_unconditional_writes,
        }
    }
}

impl OutputArgs {
    /// The library's settings of these flags.
    pub fn settings(&self) -> OutputSettings {
        OutputSettings {
            dest: self.dest.clone(),
            format: match self.format {
                Format::Csv => OutputFormat::Csv { gzip_level: self.gzip_level },
                Format::Parquet => OutputFormat::Parquet,
            },
            max_file_size: self.max_file_size,
            layout: match self.layout {
                LayoutArg::Daily => Layout::Daily,
                LayoutArg::Hive => Layout::Hive,
            },
            lease: self.lease.options(),
        }
    }
}

pub fn print_summary(dest: &str, report: &DaySummary) {
    let m = &report.manifest;
    let parts: usize = m.tables.iter().map(|t| t.files.len()).sum();
    let bytes: u64 = m.tables.iter().flat_map(|t| &t.files).map(|f| f.bytes).sum();
    let rows: u64 = m.tables.iter().map(|t| t.rows).sum();
    say!("{:<48} {:>12} {:>6} {:>14}", "TABLE", "ROWS", "PARTS", "BYTES");
    for t in &m.tables {
        let b: u64 = t.files.iter().map(|f| f.bytes).sum();
        say!("{:<48} {:>12} {:>6} {:>14}", t.name, t.rows, t.files.len(), b);
    }
    let window = m.window.as_ref().map(|w| format!(", window {} .. {}", w.from, w.to)).unwrap_or_default();
    let fake = if m.sandbox { ", sandbox data: generated, not an account's" } else { "" };
    say!(
        "Committed {}/{} ({}{window}{fake}): {} tables, {rows} rows, {parts} parts, {bytes} bytes, {} requests ({} for discovery, {} retries, {} held for the rate limit), {:.1} s",
        dest.trim_end_matches('/'),
        report.manifest_key,
        m.mode,
        m.tables.len(),
        m.requests,
        report.discovery,
        m.retries,
        report.paced,
        report.elapsed.as_secs_f64()
    );
    if report.tokens > 0 {
        say!("Pipedrive API tokens spent: {} (of the company's daily budget)", report.tokens);
    }
    if let Some(r) = &m.reconcile {
        let per_thousand = |requests: u64| requests as f64 * 1000.0 / r.ids.max(1) as f64;
        say!(
            "Reconciled {} ids: listing {} requests ({:.1} per 1,000 records), association refresh {} requests ({:.1} per 1,000), {} gone{}",
            r.ids,
            r.listing_requests,
            per_thousand(r.listing_requests),
            r.association_requests,
            per_thousand(r.association_requests),
            r.deleted,
            if r.baseline {
                ""
            } else {
                " (no baseline yet: nothing compared; the next reconcile compares with this one)"
            }
        );
    }
    for w in &m.warnings {
        say!("warning: {}", w.sentence());
    }
}
