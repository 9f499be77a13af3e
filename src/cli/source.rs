//! The flags that pick and reach a source, shared by `export`, `tables` and `check`, and
//! the one place that turns them into a connected extractor (starting the in-process
//! sandbox when asked).

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::sandbox::SandboxData;
use crate::error::{Error, Result};
use crate::extract::hubspot::{HistoryLimits, HubSpot, HubSpotOptions};
use crate::http::{Auth, ClientOptions, HttpClient, RateLimit};
use crate::sandbox::SandboxServer;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// A HubSpot account; the token comes from HUBSPOT_ACCESS_TOKEN.
    Hubspot,
    /// The built-in fake HubSpot, started in-process on a free 127.0.0.1 port.
    Sandbox,
}

#[derive(Debug, Args)]
pub struct SourceArgs {
    /// Where the data comes from.
    #[arg(long, value_enum, default_value_t = Source::Sandbox)]
    pub source: Source,
    /// Object types to export, comma-separated (contacts,deals,p1234_cars,2-123...);
    /// default: every standard type the token can read and every custom object.
    #[arg(long, value_delimiter = ',')]
    pub objects: Option<Vec<String>>,
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
    /// CRM searches allowed per period (incremental and backfill runs find changed records
    /// through search, which HubSpot limits to 5 per second), or 'none'.
    #[arg(long, default_value = "4/1s", value_parser = RateLimit::parse)]
    pub search_rate_limit: RateLimit,
    /// Seconds before a request is abandoned and retried.
    #[arg(long, default_value_t = 60)]
    pub request_timeout: u64,
    /// Historical values kept per (contact, property), newest first.
    #[arg(long, default_value_t = 45)]
    pub history_contacts: usize,
    /// Historical values kept per (record, property) for types other than contacts.
    #[arg(long, default_value_t = 20)]
    pub history_others: usize,
    /// Skip property history (no OBJECT_PROPERTIES_HISTORY): fewer, smaller requests.
    #[arg(long)]
    pub no_history: bool,
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
    /// Scopes the in-process sandbox's token lacks, comma-separated (with --source sandbox),
    /// to see how crmdump skips what it may not read.
    #[arg(long = "sandbox-missing-scopes", value_delimiter = ',')]
    pub missing_scopes: Vec<String>,
    /// The in-process sandbox's account limit (as `crmdump sandbox --rate-limit`); crmdump's
    /// own limiter follows it unless --rate-limit says otherwise.
    #[arg(long = "sandbox-rate-limit", id = "sandbox_rate_limit", value_parser = RateLimit::parse)]
    pub rate_limit: Option<RateLimit>,
    /// Faults the in-process sandbox injects (as `crmdump sandbox --faults`).
    #[arg(long = "sandbox-faults", default_value = "none", value_parser = crate::sandbox::Faults::parse)]
    pub faults: crate::sandbox::Faults,
    /// Retry-After of the in-process sandbox's injected 429s.
    #[arg(long = "sandbox-fault-retry-after", default_value = "200ms", value_parser = super::parse_duration)]
    pub fault_retry_after: chrono::Duration,
    /// Share of the in-process sandbox's records served with a defect (as `crmdump sandbox --bad-records`).
    #[arg(long = "sandbox-bad-records", default_value_t = 0.0)]
    pub bad_records: f64,
    /// How long the in-process sandbox's injected slow responses wait.
    #[arg(long = "sandbox-slow-delay", default_value = "65s", value_parser = super::parse_duration)]
    pub slow_delay: chrono::Duration,
}

const HUBSPOT_API: &str = "https://api.hubapi.com";

/// A connected source; keeps the in-process sandbox alive as long as it lives.
pub struct Connected {
    pub hubspot: HubSpot,
    pub client: Arc<HttpClient>,
    _sandbox: Option<SandboxServer>,
}

impl SourceArgs {
    pub async fn connect(&self, ingested_at: Arc<str>) -> Result<Connected> {
        let mut sandbox = None;
        let (base_url, token, default_limit) = match self.source {
            Source::Sandbox => {
                if self.base_url.is_some() {
                    return Err(Error::Config(
                        "--base-url goes with --source hubspot; --source sandbox starts its own server".into(),
                    ));
                }
                let token = format!("sandbox-{:x}", rand_token());
                let data = SandboxData {
                    seed: self.sandbox.seed,
                    scale: self.sandbox.scale,
                    anchor: self.sandbox.anchor.clone(),
                    rate_limit: self.sandbox.rate_limit,
                    faults: self.sandbox.faults.clone(),
                    fault_retry_after: self.sandbox.fault_retry_after,
                    slow_delay: self.sandbox.slow_delay,
                    daily_limit: None,
                    bad_records: self.sandbox.bad_records,
                };
                let mut config = data.config(Some(token.clone()))?;
                config.missing_scopes = self.sandbox.missing_scopes.clone();
                let server = SandboxServer::start(config, 0).await?;
                tracing::info!(url = %server.base_url(), scale = self.sandbox.scale, seed = self.sandbox.seed, "Sandbox started.");
                let url = server.base_url();
                sandbox = Some(server);
                (url, token, self.sandbox.rate_limit.unwrap_or(RateLimit::Unlimited))
            }
            Source::Hubspot => {
                let token = std::env::var("HUBSPOT_ACCESS_TOKEN").ok().filter(|t| !t.trim().is_empty()).ok_or_else(|| {
                    Error::Config(
                        "HUBSPOT_ACCESS_TOKEN is not set: create a private app in HubSpot (Settings > Integrations > Private Apps) with the crm.objects.*.read and crm.schemas.*.read scopes, and export its token in HUBSPOT_ACCESS_TOKEN".into(),
                    )
                })?;
                (self.base_url.clone().unwrap_or_else(|| HUBSPOT_API.to_string()), token, RateLimit::HUBSPOT_DEFAULT)
            }
        };
        let base_url = url::Url::parse(&base_url)
            .map_err(|e| Error::Config(format!("--base-url '{base_url}' is not a URL: {e}")))?;
        let client = Arc::new(HttpClient::new(ClientOptions {
            base_url,
            auth: Auth::Bearer(token),
            rate_limit: self.rate_limit.unwrap_or(default_limit),
            search_rate_limit: self.search_rate_limit,
            // A real account's headers size the limiter, unless --rate-limit was given.
            adjust_from_headers: self.source == Source::Hubspot && self.rate_limit.is_none(),
            max_attempts: 6,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(self.request_timeout.max(1)),
            unauthorized_hint: "Regenerate the private-app token in HubSpot and set HUBSPOT_ACCESS_TOKEN to it",
        })?);
        let hubspot = HubSpot::new(
            client.clone(),
            HubSpotOptions {
                objects: self.objects.clone(),
                concurrency: self.concurrency.max(1),
                ingested_at,
                history: (!self.no_history)
                    .then_some(HistoryLimits { contacts: self.history_contacts, others: self.history_others }),
            },
        );
        Ok(Connected { hubspot, client, _sandbox: sandbox })
    }
}

fn rand_token() -> u128 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    t.as_nanos() ^ ((std::process::id() as u128) << 64)
}
