//! The flags that pick and reach a source, shared by `export`, `backfill`, `tables` and
//! `check`, turned into the library's [`SourceSettings`].

use clap::{Args, ValueEnum};

use super::sandbox::SandboxFlags;
use crate::extract::hubspot::HistoryLimits;
use crate::http::RateLimit;
use crate::run::{DEFAULT_CONCURRENCY, SourceKind, SourceSettings};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SourceArg {
    /// A HubSpot account; the token comes from HUBSPOT_ACCESS_TOKEN.
    Hubspot,
    /// A Pipedrive company; the API token comes from PIPEDRIVE_API_TOKEN (or an OAuth
    /// access token from PIPEDRIVE_ACCESS_TOKEN).
    Pipedrive,
    /// The built-in fake CRM (HubSpot, or Pipedrive with --sandbox-flavor pipedrive),
    /// started in-process on a free 127.0.0.1 port: generated data, for trying crmdump.
    Sandbox,
}

#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Where the data comes from (required; the config file's `source` key counts).
    #[arg(long, value_enum)]
    pub source: SourceArg,
    /// Object types to export, comma-separated (contacts,deals,p1234_cars,2-123...);
    /// default: every standard type the token can read and every custom object.
    #[arg(long, value_delimiter = ',')]
    pub objects: Option<Vec<String>>,
    /// API base URL, for a proxy, a recording server or a sandbox in another process
    /// (default: https://api.hubapi.com; Pipedrive: https://<company-domain>.pipedrive.com).
    #[arg(long)]
    pub base_url: Option<String>,
    /// Pipedrive company domain (`acme` for acme.pipedrive.com); default: asked of
    /// api.pipedrive.com (`/v1/users/me`) with the token.
    #[arg(long)]
    pub company_domain: Option<String>,
    /// Object types extracted at the same time (at least 1).
    #[arg(long, default_value_t = DEFAULT_CONCURRENCY)]
    pub concurrency: usize,
    /// Requests allowed per period (100/10s is HubSpot's default for private apps; raise it
    /// for higher tiers), or 'none'. Default: 100/10s for HubSpot, 20/2s for Pipedrive, the
    /// in-process sandbox's own limit.
    #[arg(long, value_parser = RateLimit::parse)]
    pub rate_limit: Option<RateLimit>,
    /// CRM searches allowed per period (incremental and backfill runs find changed records
    /// through search, which HubSpot limits to 5 per second), or 'none'.
    #[arg(long, default_value = "4/1s", value_parser = RateLimit::parse)]
    pub search_rate_limit: RateLimit,
    /// Seconds before a request is abandoned and retried (at least 1).
    #[arg(long, default_value_t = crate::run::DEFAULT_REQUEST_TIMEOUT.as_secs())]
    pub request_timeout: u64,
    /// Longest request URL: a GET page of a wide type carries every property name in its URL
    /// up to this length (fewer requests), and reads them through batch reads beyond it. A 414
    /// answer lowers it to 8 KiB for the rest of the run.
    #[arg(long, default_value_t = crate::http::DEFAULT_MAX_URL_BYTES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=65536))]
    pub max_url_bytes: usize,
    /// Historical values kept per (contact, property), newest first.
    #[arg(long, default_value_t = HistoryLimits::DEFAULT.contacts)]
    pub history_contacts: usize,
    /// Historical values kept per (record, property) for types other than contacts (and
    /// per (record, field) for Pipedrive).
    #[arg(long, default_value_t = HistoryLimits::DEFAULT.others)]
    pub history_others: usize,
    /// Skip property history (no OBJECT_PROPERTIES_HISTORY): fewer, smaller requests.
    #[arg(long)]
    pub no_history: bool,
    #[command(flatten)]
    pub sandbox: SandboxFlags,
}

impl SourceArgs {
    /// The library's settings of these flags; `every_pair` for commands that list every
    /// table an account could have (`tables`, `check`).
    pub fn settings(&self, every_pair: bool) -> SourceSettings {
        let kind = match self.source {
            SourceArg::Hubspot => SourceKind::Hubspot,
            SourceArg::Pipedrive => SourceKind::Pipedrive,
            SourceArg::Sandbox => SourceKind::Sandbox,
        };
        SourceSettings {
            sandbox: self.sandbox.0.clone(),
            objects: self.objects.clone(),
            base_url: self.base_url.clone(),
            company_domain: self.company_domain.clone(),
            concurrency: self.concurrency,
            every_pair,
            rate_limit: self.rate_limit,
            search_rate_limit: self.search_rate_limit,
            request_timeout: std::time::Duration::from_secs(self.request_timeout),
            max_url_bytes: self.max_url_bytes,
            history: (!self.no_history)
                .then_some(HistoryLimits { contacts: self.history_contacts, others: self.history_others }),
            ..SourceSettings::new(kind)
        }
    }
}
