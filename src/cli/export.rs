//! `crmdump export`: validate flags, open the destination, start the source, run, report.

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::sandbox::SandboxData;
use crate::error::{Error, Result};
use crate::extract::Extractor;
use crate::extract::hubspot::{HistoryLimits, HubSpot, HubSpotOptions};
use crate::http::{Auth, ClientOptions, HttpClient, RateLimit};
use crate::pipeline::{self, ExportSettings};
use crate::sandbox::{SandboxServer, iso};
use crate::sink::Sink;
use crate::write::parse_size;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// A HubSpot account; the token comes from HUBSPOT_ACCESS_TOKEN.
    Hubspot,
    /// The built-in fake HubSpot, started in-process on a free 127.0.0.1 port.
    Sandbox,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Gzip CSV parts (RFC 4180; NULL is an empty field, the empty string is "").
    Csv,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Where the data comes from.
    #[arg(long, value_enum, default_value_t = Source::Sandbox)]
    pub source: Source,
    /// Destination: a local folder, file://PATH or s3://bucket/prefix.
    #[arg(long)]
    pub dest: String,
    /// Export date, the name of the day folder (default: today, UTC).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<chrono::NaiveDate>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Csv)]
    pub format: Format,
    /// Object types to export, comma-separated (contacts,deals,p1234_cars,2-123...);
    /// default: contacts, companies, deals, tickets and every custom object.
    #[arg(long, value_delimiter = ',')]
    pub objects: Option<Vec<String>>,
    /// Largest part, in bytes of the stored file: 15MiB, 1MiB, 15MB (= 15,000,000) or a byte count.
    #[arg(long, default_value = "15MiB", value_parser = parse_size)]
    pub max_file_size: u64,
    /// API base URL, for a proxy, a recording server or a sandbox in another process
    /// (default: https://api.hubapi.com).
    #[arg(long)]
    pub base_url: Option<String>,
    /// Object types extracted at the same time.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Requests allowed per period (100/10s is HubSpot's default for private apps; raise it
    /// for higher tiers), or 'none'. Default: 100/10s for HubSpot, none for the in-process sandbox.
    #[arg(long, value_parser = RateLimit::parse)]
    pub rate_limit: Option<RateLimit>,
    /// Seconds before a request is abandoned and retried.
    #[arg(long, default_value_t = 60)]
    pub request_timeout: u64,
    /// Historical values kept per (contact, property), newest first.
    #[arg(long, default_value_t = 45)]
    pub history_contacts: usize,
    /// Historical values kept per (record, property) for types other than contacts.
    #[arg(long, default_value_t = 20)]
    pub history_others: usize,
    /// Skip property history (OBJECT_PROPERTIES_HISTORY): fewer, smaller requests.
    #[arg(long)]
    pub no_history: bool,
    /// Scopes the in-process sandbox's token lacks, comma-separated (with --source sandbox),
    /// to see how an export skips what it may not read.
    #[arg(long = "sandbox-missing-scopes", value_delimiter = ',')]
    pub sandbox_missing_scopes: Vec<String>,
    /// Gzip level of CSV parts (1 fastest .. 9 smallest).
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..=9))]
    pub gzip_level: u32,
    #[command(flatten)]
    pub sandbox: SandboxFlags,
}

/// `--sandbox-*`: the settings of `crmdump sandbox`, for `--source sandbox`.
#[derive(Debug, Args)]
pub struct SandboxFlags {
    /// Seed of the sandbox's data (with --source sandbox).
    #[arg(long = "sandbox-seed", default_value_t = 1)]
    pub seed: u64,
    /// Records per object type in the sandbox (with --source sandbox).
    #[arg(long = "sandbox-scale", default_value_t = 2000)]
    pub scale: u64,
    /// "Now" of the sandbox's data, RFC 3339 (with --source sandbox; default: start of today UTC).
    #[arg(long = "sandbox-anchor")]
    pub anchor: Option<String>,
}

const HUBSPOT_API: &str = "https://api.hubapi.com";

pub async fn run(args: ExportArgs) -> Result<()> {
    let started_at = chrono::Utc::now();
    let date = args.date.unwrap_or_else(|| started_at.date_naive());
    let sink = Sink::open(&args.dest)?;

    // The in-process sandbox lives until the export ends; it is reached over HTTP like any API.
    let mut _sandbox: Option<SandboxServer> = None;
    let (base_url, token, default_limit) = match args.source {
        Source::Sandbox => {
            if args.base_url.is_some() {
                return Err(Error::Config(
                    "--base-url goes with --source hubspot; --source sandbox starts its own server"
                        .into(),
                ));
            }
            let token = format!("sandbox-{:x}", rand_token());
            let data = SandboxData {
                seed: args.sandbox.seed,
                scale: args.sandbox.scale,
                anchor: args.sandbox.anchor.clone(),
            };
            let mut config = data.config(Some(token.clone()))?;
            config.missing_scopes = args.sandbox_missing_scopes.clone();
            let server = SandboxServer::start(config, 0).await?;
            tracing::info!(url = %server.base_url(), scale = args.sandbox.scale, seed = args.sandbox.seed, "Sandbox started.");
            let url = server.base_url();
            _sandbox = Some(server);
            (url, token, RateLimit::Unlimited)
        }
        Source::Hubspot => {
            let token = std::env::var("HUBSPOT_ACCESS_TOKEN").ok().filter(|t| !t.trim().is_empty()).ok_or_else(|| {
                Error::Config(
                    "HUBSPOT_ACCESS_TOKEN is not set: create a private app in HubSpot (Settings > Integrations > Private Apps) with the crm.objects.*.read and crm.schemas.*.read scopes, and export its token in HUBSPOT_ACCESS_TOKEN".into(),
                )
            })?;
            (
                args.base_url
                    .clone()
                    .unwrap_or_else(|| HUBSPOT_API.to_string()),
                token,
                RateLimit::HUBSPOT_DEFAULT,
            )
        }
    };
    let base_url = url::Url::parse(&base_url)
        .map_err(|e| Error::Config(format!("--base-url '{base_url}' is not a URL: {e}")))?;

    let client = HttpClient::new(ClientOptions {
        base_url,
        auth: Auth::Bearer(token),
        rate_limit: args.rate_limit.unwrap_or(default_limit),
        max_attempts: 6,
        connect_timeout: Duration::from_secs(10),
        request_timeout: Duration::from_secs(args.request_timeout.max(1)),
        unauthorized_hint: "Regenerate the private-app token in HubSpot and set HUBSPOT_ACCESS_TOKEN to it",
    })?;
    let ingested_at: Arc<str> = iso(started_at).into();
    let extractor = HubSpot::new(
        Arc::new(client),
        HubSpotOptions {
            objects: args.objects.clone(),
            concurrency: args.concurrency.max(1),
            ingested_at: ingested_at.clone(),
            history: (!args.no_history).then_some(HistoryLimits {
                contacts: args.history_contacts,
                others: args.history_others,
            }),
        },
    );
    let settings = ExportSettings {
        date,
        max_file_size: args.max_file_size,
        gzip_level: args.gzip_level,
        started_at,
        ingested_at,
    };
    let report = pipeline::export(&extractor as &dyn Extractor, &sink, &settings).await?;
    print_summary(&args.dest, &report);
    Ok(())
}

fn rand_token() -> u128 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    t.as_nanos() ^ (std::process::id() as u128) << 64
}

fn print_summary(dest: &str, report: &pipeline::ExportReport) {
    let m = &report.manifest;
    let parts: usize = m.tables.iter().map(|t| t.files.len()).sum();
    let bytes: u64 = m
        .tables
        .iter()
        .flat_map(|t| &t.files)
        .map(|f| f.bytes)
        .sum();
    let rows: u64 = m.tables.iter().map(|t| t.rows).sum();
    println!(
        "{:<48} {:>12} {:>6} {:>14}",
        "TABLE", "ROWS", "PARTS", "BYTES"
    );
    for t in &m.tables {
        let b: u64 = t.files.iter().map(|f| f.bytes).sum();
        println!(
            "{:<48} {:>12} {:>6} {:>14}",
            t.name,
            t.rows,
            t.files.len(),
            b
        );
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
