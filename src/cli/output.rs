//! Where and how an export writes: the flags `export` and `backfill` share, and the summary
//! they print.

use clap::{Args, ValueEnum};

use crate::error::Result;
use crate::extract::Extent;
use crate::pipeline::{self, ExportSettings, Mode};
use crate::sink::Sink;
use crate::sink::claim;
use crate::sink::layout::Layout;
use crate::sink::manifest::Manifest;
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
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub gzip_level: u32,
}

impl OutputArgs {
    /// Opens the destination `dest` (`--dest` with its placeholders resolved) and checks it
    /// is writable.
    async fn open_sink(dest: &str) -> Result<Sink> {
        let sink = Sink::open(dest)?;
        sink.probe_writable().await?;
        Ok(sink)
    }

    pub fn layout(&self) -> Layout {
        match self.layout {
            LayoutArg::Daily => Layout::Daily,
            LayoutArg::Hive => Layout::Hive,
        }
    }

    /// Settings of a full export today; callers set the mode, extent, date and times.
    pub fn settings(&self) -> ExportSettings {
        let now = chrono::Utc::now();
        ExportSettings {
            mode: Mode::Full,
            extent: Extent::whole(),
            date: now.date_naive(),
            max_file_size: self.max_file_size,
            format: match self.format {
                Format::Csv => OutputFormat::Csv { gzip_level: self.gzip_level },
                Format::Parquet => OutputFormat::Parquet,
            },
            layout: self.layout(),
            ingested_at: crate::schema::iso(now).into(),
            counted_before: (0, 0),
            journal: None,
            merges_reported: Default::default(),
        }
    }
}

/// With `--strict`, data warnings in committed manifests end the run with exit code 4.
pub fn strict_check(strict: bool, data_warnings: u64) -> Result<()> {
    if strict && data_warnings > 0 { Err(crate::error::Error::DataWarnings(data_warnings)) } else { Ok(()) }
}

/// What [`Run::claim`] found of a date.
pub struct Claimed {
    /// The date has a committed export.
    pub committed: bool,
    /// Streams to read whole: those only the committed export read (with `--force`).
    pub reread: Vec<String>,
}

/// What `export` and `backfill` set up before their first day: the destination (checked
/// writable), the connected source, progress on display, and the account's catalog.
pub struct Run {
    pub sink: Sink,
    /// `--dest` with `{source}` and `{account}` resolved.
    pub dest: String,
    pub ingested_at: std::sync::Arc<str>,
    pub source: super::source::Connected,
    pub progress: std::sync::Arc<crate::progress::Progress>,
    pub catalog: crate::extract::Catalog,
    _display: crate::progress::ProgressGuard,
}

impl Run {
    /// The destination's state for this account, and the pairs earlier runs found associated
    /// or asked about taught to the catalog, so that they are read without asking again.
    pub async fn load_state(&mut self) -> Result<Option<crate::state::State>> {
        let state = crate::state::State::load(&self.sink, self.extractor().source(), &self.catalog.account).await?;
        self.catalog.learn_associations(state.as_ref().and_then(|s| s.association_types.clone()));
        Ok(state)
    }

    pub async fn open(
        output: &OutputArgs,
        source: &super::source::SourceArgs,
        quiet: bool,
        started_at: chrono::DateTime<chrono::Utc>,
    ) -> Result<Run> {
        // Without placeholders the destination is checked first, so that a missing bucket
        // fails before any request to the CRM; with them, once discovery named the account.
        let early = match claim::has_placeholders(&output.dest) {
            false => Some(OutputArgs::open_sink(&output.dest).await?),
            true => None,
        };
        let ingested_at: std::sync::Arc<str> = crate::schema::iso(started_at).into();
        let source = source.connect(ingested_at.clone()).await?;
        let progress = crate::progress::Progress::new(super::progress_mode(quiet));
        let display = progress.start();
        let catalog = pipeline::discover(source.extractor.as_ref(), &progress).await?;
        let dest = claim::resolve_dest(&output.dest, source.extractor.source(), &catalog.account)?;
        let sink = match early {
            Some(sink) => sink,
            None => {
                tracing::info!(dest = %dest, "Destination resolved.");
                OutputArgs::open_sink(&dest).await?
            }
        };
        Ok(Run { sink, dest, ingested_at, source, progress, catalog, _display: display })
    }

    /// Connects `source` again reading these object types too (a forced re-run of a date
    /// whose committed export read more), and discovers the wider catalog.
    pub async fn widen(&mut self, source: &super::source::SourceArgs, objects: &[String]) -> Result<()> {
        let mut wider = source.clone();
        let mut names: Vec<String> = match &source.objects {
            Some(list) => list.clone(),
            None => self.catalog.objects.iter().map(|o| o.object_type.type_id.clone()).collect(),
        };
        for o in objects {
            if !names.contains(o) && !self.catalog.objects.iter().any(|c| &c.object_type.type_id == o) {
                names.push(o.clone());
            }
        }
        wider.objects = Some(names);
        self.source = wider.connect(self.ingested_at.clone()).await?;
        let known = self.catalog.association_types.take();
        self.catalog = pipeline::discover(self.source.extractor.as_ref(), &self.progress).await?;
        self.catalog.learn_associations(known);
        Ok(())
    }

    /// Checks the committed export of `date` (if any) against this run: another source or
    /// account is refused; a narrower run is refused unless `force`, which widens it.
    pub async fn claim(
        &mut self,
        source: &super::source::SourceArgs,
        layout: Layout,
        date: &str,
        force: bool,
    ) -> Result<Claimed> {
        let key = layout.manifest_key(date);
        let committed: Option<Manifest> = match self.sink.get(&key).await? {
            None => None,
            Some(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| {
                crate::error::Error::Config(format!(
                    "{}/{key} is not a crmdump manifest ({e}): move it away, or export to another --dest",
                    self.dest.trim_end_matches('/')
                ))
            })?),
        };
        let place = format!("{}/{key}", self.dest.trim_end_matches('/'));
        let streams = self.catalog.streams();
        let owner =
            claim::Owner { source: self.extractor().source(), account: &self.catalog.account, streams: &streams };
        let reread = match claim::check(committed.as_ref(), &owner, &place)? {
            claim::Claim::Free | claim::Claim::Rerun => Vec::new(),
            claim::Claim::Narrower { streams, .. } if !force => {
                return Err(claim::narrower_refusal(&place, date, &streams));
            }
            claim::Claim::Narrower { streams, objects } => {
                tracing::warn!(
                    streams = streams.len(),
                    "--force: re-reading whole the streams the committed export of this date read."
                );
                self.widen(source, &objects).await?;
                streams
            }
        };
        Ok(Claimed { committed: committed.is_some(), reread })
    }

    pub fn extractor(&self) -> &dyn crate::extract::Extractor {
        self.source.extractor.as_ref()
    }
}

/// The webhook journal's events of the account after `start` (a position, `None` for the
/// journal's start): `None` when the account has no journal; else its events and the last
/// part read (or `start` when nothing is new).
pub async fn read_journal(
    sink: &Sink,
    source: &str,
    account: &str,
    start: Option<&str>,
) -> Result<Option<(std::sync::Arc<Vec<crate::webhook::journal::Line>>, Option<String>)>> {
    use crate::webhook::journal::{Position, read_since};
    let after: Option<Position> = start.map(str::parse).transpose()?;
    let parts = read_since(sink, source, account, after.as_ref()).await?;
    if parts.is_empty() && start.is_none() {
        return Ok(None);
    }
    let end = parts.last().map(|(id, _)| id.position().to_string()).or_else(|| start.map(String::from));
    let lines: Vec<_> = parts.into_iter().flat_map(|(_, lines)| lines).collect();
    tracing::info!(events = lines.len(), after = start.unwrap_or("the start"), "Read the webhook journal.");
    Ok(Some((std::sync::Arc::new(lines), end)))
}

pub fn print_summary(dest: &str, report: &pipeline::ExportReport) {
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
    say!(
        "Committed {}/{} ({}{window}): {} tables, {rows} rows, {parts} parts, {bytes} bytes, {} requests ({} for discovery, {} retries, {} held for the rate limit), {:.1} s",
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
        match (w.count, &w.detail) {
            (Some(c), _) => say!("warning: {} in {}: {c}", w.kind, w.table),
            (None, Some(d)) => say!("warning: {} in {}: {d}", w.kind, w.table),
            _ => say!("warning: {} in {}", w.kind, w.table),
        }
    }
}
