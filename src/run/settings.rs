//! What a run is asked to do, validated before any request or write: the source and how to
//! reach it, the destination and its format, and the run's mode and date. The command line
//! fills these from flags and the config file; a program embedding crmdump fills them itself
//! (every default is a named constant or constructor here).

use std::time::Duration;

use chrono::NaiveDate;

use crate::error::{Error, Result};
use crate::extract::hubspot::HistoryLimits;
use crate::http::RateLimit;
use crate::progress::ProgressMode;
use crate::sink::layout::Layout;
use crate::sink::lease::LeaseOptions;
use crate::state::Timing;
use crate::write::OutputFormat;

pub use crmdump_sandbox::SandboxSettings;

/// Object types extracted at the same time.
pub const DEFAULT_CONCURRENCY: usize = 4;
/// HubSpot allows 5 searches per second per account; crmdump keeps one in reserve.
pub const DEFAULT_SEARCH_RATE_LIMIT: RateLimit = RateLimit::PerPeriod { requests: 4, period: Duration::from_secs(1) };
/// How long a request may take before it is abandoned and retried.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// HubSpot's own export cuts files at "15 MB"; crmdump's parts are at most 15 MiB.
pub const DEFAULT_MAX_FILE_SIZE: u64 = 15 * 1024 * 1024;
/// Within 1% of GNU `gzip -6`'s size for 14% less CPU than level 6.
pub const DEFAULT_GZIP_LEVEL: u32 = 5;

/// Which CRM a run reads, and what serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A HubSpot account; the token comes from `HUBSPOT_ACCESS_TOKEN`.
    Hubspot,
    /// A Pipedrive company; the token comes from `PIPEDRIVE_API_TOKEN` (or an OAuth access
    /// token from `PIPEDRIVE_ACCESS_TOKEN`).
    Pipedrive,
    /// The built-in fake CRM, started in-process on a free 127.0.0.1 port (its flavour says
    /// which CRM it imitates). Its exports say they are fake: `"sandbox": true`.
    Sandbox,
}

/// The source of a run and how to reach it.
#[derive(Debug, Clone)]
pub struct SourceSettings {
    pub kind: SourceKind,
    /// The in-process sandbox's account (with [`SourceKind::Sandbox`]).
    pub sandbox: SandboxSettings,
    /// Object types to read (`contacts`, `p1234_cars`, `2-123`; Pipedrive's entity names);
    /// `None` for every type the token can read.
    pub objects: Option<Vec<String>>,
    /// The API's base URL, for a proxy, a recording server or a sandbox in another process.
    pub base_url: Option<String>,
    /// Pipedrive's company domain (`acme` for acme.pipedrive.com); `None`: asked of the API.
    pub company_domain: Option<String>,
    /// Object types extracted at the same time (at least 1).
    pub concurrency: usize,
    /// Discovery asks the API about every pair of object types (`tables`, `check`), where an
    /// export learns the associated pairs from its reads and the state.
    pub every_pair: bool,
    /// The account's request limit; `None` for the source's default (HubSpot 100/10s,
    /// Pipedrive 20/2s, the sandbox's own limit).
    pub rate_limit: Option<RateLimit>,
    /// CRM search's own limit.
    pub search_rate_limit: RateLimit,
    /// How long one request may take (more than zero).
    pub request_timeout: Duration,
    /// Longest request URL built.
    pub max_url_bytes: usize,
    /// Property history kept per (record, property); `None` reads no history.
    pub history: Option<HistoryLimits>,
}

impl SourceSettings {
    /// `kind` with every default.
    pub fn new(kind: SourceKind) -> SourceSettings {
        SourceSettings {
            kind,
            sandbox: SandboxSettings::default(),
            objects: None,
            base_url: None,
            company_domain: None,
            concurrency: DEFAULT_CONCURRENCY,
            every_pair: false,
            rate_limit: None,
            search_rate_limit: DEFAULT_SEARCH_RATE_LIMIT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_url_bytes: crate::http::DEFAULT_MAX_URL_BYTES,
            history: Some(HistoryLimits::DEFAULT),
        }
    }

    /// Refuses settings no run could use, saying what to give instead.
    pub fn validate(&self) -> Result<()> {
        if self.concurrency == 0 {
            return Err(Error::Config("--concurrency 0 would read nothing: give at least 1 (default 4)".into()));
        }
        if self.request_timeout.is_zero() {
            return Err(Error::Config(
                "--request-timeout 0 would abandon every request at once: give at least 1 second (default 60)".into(),
            ));
        }
        if self.company_domain.is_some() && self.kind != SourceKind::Pipedrive {
            return Err(Error::Config("--company-domain goes with --source pipedrive".into()));
        }
        if self.base_url.is_some() && self.kind == SourceKind::Sandbox {
            return Err(Error::Config(
                "--base-url goes with --source hubspot or pipedrive; --source sandbox starts its own server".into(),
            ));
        }
        Ok(())
    }
}

/// Where and how a run writes.
#[derive(Debug, Clone)]
pub struct OutputSettings {
    /// A local folder, `file://`, `s3://`, `gs://` or `az://` URL; may hold `{source}` and
    /// `{account}`, resolved once discovery has named the account.
    pub dest: String,
    pub format: OutputFormat,
    /// Largest part, in bytes of the stored file.
    pub max_file_size: u64,
    pub layout: Layout,
    /// How the destination's lease is taken and kept.
    pub lease: LeaseOptions,
}

impl OutputSettings {
    /// Gzip CSV parts of at most 15 MiB in day folders under `dest`.
    pub fn new(dest: impl Into<String>) -> OutputSettings {
        OutputSettings {
            dest: dest.into(),
            format: OutputFormat::Csv { gzip_level: DEFAULT_GZIP_LEVEL },
            max_file_size: DEFAULT_MAX_FILE_SIZE,
            layout: Layout::Daily,
            lease: LeaseOptions::default(),
        }
    }
}

/// The mode asked for; without one, a run is incremental once the destination holds the
/// account's watermarks and full before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestedMode {
    Full,
    Incremental,
}

/// One export of one date.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    pub source: SourceSettings,
    pub output: OutputSettings,
    /// The day folder's date; `None` for today (UTC).
    pub date: Option<NaiveDate>,
    pub mode: Option<RequestedMode>,
    pub timing: Timing,
    /// Re-run a date with fewer object types than its committed export read (the others are
    /// read again whole).
    pub force: bool,
    /// Also list every id and compare with the baseline of ids (`DELETED_OBJECTS` rows for
    /// what vanished), and read every association.
    pub reconcile: bool,
    pub progress: ProgressMode,
}

impl ExportSettings {
    pub fn new(source: SourceSettings, output: OutputSettings) -> ExportSettings {
        ExportSettings {
            source,
            output,
            date: None,
            mode: None,
            timing: Timing::DEFAULT,
            force: false,
            reconcile: false,
            progress: ProgressMode::Off,
        }
    }
}

/// A backfill: one day folder per day from `from` to `to`, both included.
#[derive(Debug, Clone)]
pub struct BackfillSettings {
    pub source: SourceSettings,
    pub output: OutputSettings,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// Export committed days again.
    pub force: bool,
    pub progress: ProgressMode,
}
