//! The flags that pick and reach a source, shared by `export`, `tables` and `check`, and
//! the one place that turns them into a connected extractor (starting the in-process
//! sandbox when asked).

use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};

use super::sandbox::SandboxData;
use crate::error::{Error, Result};
use crate::extract::Extractor;
use crate::extract::hubspot::{HistoryLimits, HubSpot, HubSpotOptions};
use crate::extract::pipedrive::{Pipedrive, PipedriveOptions};
use crate::http::{Auth, ClientOptions, HttpClient, RateLimit};
use crate::sandbox::{Flavor, SandboxServer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Source {
    /// A HubSpot account; the token comes from HUBSPOT_ACCESS_TOKEN.
    Hubspot,
    /// A Pipedrive company; the API token comes from PIPEDRIVE_API_TOKEN (or an OAuth
    /// access token from PIPEDRIVE_ACCESS_TOKEN).
    Pipedrive,
    /// The built-in fake CRM (HubSpot, or Pipedrive with --sandbox-flavor pipedrive),
    /// started in-process on a free 127.0.0.1 port.
    Sandbox,
}

/// The CRM an export reads, whatever serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crm {
    Hubspot,
    Pipedrive,
}

#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Where the data comes from.
    #[arg(long, value_enum, default_value_t = Source::Sandbox)]
    pub source: Source,
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
    /// Object types extracted at the same time.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Discovery asks the API about every pair of object types (`tables`, `check`), where an
    /// export learns the associated pairs from its reads and the state.
    #[arg(skip)]
    pub every_pair: bool,
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
    /// Longest request URL: a GET page of a wide type carries every property name in its URL
    /// up to this length (fewer requests), and reads them through batch reads beyond it. A 414
    /// answer lowers it to 8 KiB for the rest of the run.
    #[arg(long, default_value_t = crate::http::DEFAULT_MAX_URL_BYTES, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1024..=65536))]
    pub max_url_bytes: usize,
    /// Historical values kept per (contact, property), newest first.
    #[arg(long, default_value_t = 45)]
    pub history_contacts: usize,
    /// Historical values kept per (record, property) for types other than contacts (and
    /// per (record, field) for Pipedrive).
    #[arg(long, default_value_t = 20)]
    pub history_others: usize,
    /// Skip property history (no OBJECT_PROPERTIES_HISTORY): fewer, smaller requests.
    #[arg(long)]
    pub no_history: bool,
    #[command(flatten)]
    pub sandbox: SandboxFlags,
}

/// `--sandbox-*`: the settings of `crmdump sandbox`, for `--source sandbox`.
#[derive(Debug, Clone, Args)]
pub struct SandboxFlags {
    /// Which CRM the in-process sandbox imitates (with --source sandbox).
    #[arg(long = "sandbox-flavor", value_enum, default_value_t = Flavor::Hubspot)]
    pub flavor: Flavor,
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
    /// Custom behavioral event types the sandbox adds, each a table of its own (as `crmdump
    /// sandbox --extra-event-types`).
    #[arg(long = "sandbox-extra-event-types", default_value_t = 0)]
    pub extra_event_types: u32,
}

const HUBSPOT_API: &str = "https://api.hubapi.com";
/// Where Pipedrive answers before the company domain is known.
const PIPEDRIVE_API: &str = "https://api.pipedrive.com";
/// Pipedrive's lowest burst limit (Lite plan, API token): 20 requests per 2 seconds.
const PIPEDRIVE_DEFAULT: RateLimit = RateLimit::PerPeriod { requests: 20, period: Duration::from_secs(2) };

const HUBSPOT_DAILY_HINT: &str = "The account's daily API limit is used up: days already committed are kept and nothing of this run was committed; run again after the daily reset (midnight in the account's time zone), or raise the limit in HubSpot";
const PIPEDRIVE_DAILY_HINT: &str = "The company's daily API token budget is used up: days already committed are kept and nothing of this run was committed; run again after the budget resets (midnight in the server's time zone), or buy more tokens in Pipedrive (Company settings > API usage)";

/// A connected source; keeps the in-process sandbox alive as long as it lives.
pub struct Connected {
    pub extractor: Box<dyn Extractor>,
    pub client: Arc<HttpClient>,
    _sandbox: Option<SandboxServer>,
}

impl SourceArgs {
    pub async fn connect(&self, ingested_at: Arc<str>) -> Result<Connected> {
        let mut sandbox = None;
        if self.company_domain.is_some() && self.source != Source::Pipedrive {
            return Err(Error::Config("--company-domain goes with --source pipedrive".into()));
        }
        let (crm, base_url, auth, default_limit) = match self.source {
            Source::Sandbox => {
                if self.base_url.is_some() {
                    return Err(Error::Config(
                        "--base-url goes with --source hubspot or pipedrive; --source sandbox starts its own server"
                            .into(),
                    ));
                }
                let token = format!("sandbox-{:x}", rand_token());
                let data = SandboxData {
                    flavor: self.sandbox.flavor,
                    seed: self.sandbox.seed,
                    scale: self.sandbox.scale,
                    anchor: self.sandbox.anchor.clone(),
                    rate_limit: self.sandbox.rate_limit,
                    faults: self.sandbox.faults.clone(),
                    fault_retry_after: self.sandbox.fault_retry_after,
                    slow_delay: self.sandbox.slow_delay,
                    daily_limit: None,
                    bad_records: self.sandbox.bad_records,
                    clean_numbers: false,
                    extra_event_types: self.sandbox.extra_event_types,
                    search_churn: 0,
                    search_disorder: chrono::Duration::zero(),
                    index_delay: chrono::Duration::zero(),
                    max_url_length: 16_000,
                };
                let mut config = data.config(Some(token.clone()))?;
                config.missing_scopes = self.sandbox.missing_scopes.clone();
                let server = SandboxServer::start(config, 0).await.map_err(super::sandbox::sandbox_failed)?;
                tracing::info!(url = %server.base_url(), flavor = ?self.sandbox.flavor, scale = self.sandbox.scale, seed = self.sandbox.seed, "Sandbox started.");
                let url = server.base_url();
                sandbox = Some(server);
                let crm = match self.sandbox.flavor {
                    Flavor::Hubspot => Crm::Hubspot,
                    Flavor::Pipedrive => Crm::Pipedrive,
                };
                let auth = match crm {
                    Crm::Hubspot => Auth::Bearer(token),
                    Crm::Pipedrive => Auth::ApiToken(token),
                };
                (crm, url, auth, self.sandbox.rate_limit.unwrap_or(RateLimit::Unlimited))
            }
            Source::Hubspot => {
                let token = std::env::var("HUBSPOT_ACCESS_TOKEN").ok().filter(|t| !t.trim().is_empty()).ok_or_else(|| {
                    Error::Config(
                        "HUBSPOT_ACCESS_TOKEN is not set: create a private app in HubSpot (Settings > Integrations > Private Apps) with the crm.objects.*.read and crm.schemas.*.read scopes, and export its token in HUBSPOT_ACCESS_TOKEN".into(),
                    )
                })?;
                let base = self.base_url.clone().unwrap_or_else(|| HUBSPOT_API.to_string());
                (Crm::Hubspot, base, Auth::Bearer(token), RateLimit::HUBSPOT_DEFAULT)
            }
            Source::Pipedrive => {
                // An API token (x-api-token), or an OAuth app's access token (Bearer).
                let env = |name: &str| std::env::var(name).ok().filter(|t| !t.trim().is_empty());
                let auth = match (env("PIPEDRIVE_API_TOKEN"), env("PIPEDRIVE_ACCESS_TOKEN")) {
                    (Some(token), _) => Auth::ApiToken(token),
                    (None, Some(oauth)) => Auth::Bearer(oauth),
                    (None, None) => return Err(Error::Config(
                        "PIPEDRIVE_API_TOKEN is not set: copy your API token from Pipedrive (Settings > Personal preferences > API) and export it in PIPEDRIVE_API_TOKEN (or an OAuth access token in PIPEDRIVE_ACCESS_TOKEN)".into(),
                    )),
                };
                let base = match (&self.base_url, &self.company_domain) {
                    (Some(url), _) => url.clone(),
                    (None, Some(domain)) => company_url(domain)?,
                    (None, None) => company_url(&self.discover_company_domain(&auth).await?)?,
                };
                (Crm::Pipedrive, base, auth, PIPEDRIVE_DEFAULT)
            }
        };
        let client = Arc::new(self.client(crm, &base_url, auth, default_limit)?);
        let extractor: Box<dyn Extractor> = match crm {
            Crm::Hubspot => Box::new(HubSpot::new(
                client.clone(),
                HubSpotOptions {
                    objects: self.objects.clone(),
                    concurrency: self.concurrency.max(1),
                    ingested_at,
                    history: (!self.no_history)
                        .then_some(HistoryLimits { contacts: self.history_contacts, others: self.history_others }),
                    every_pair: self.every_pair,
                },
            )),
            Crm::Pipedrive => Box::new(Pipedrive::new(
                client.clone(),
                PipedriveOptions {
                    objects: self.objects.clone(),
                    concurrency: self.concurrency.max(1),
                    ingested_at,
                    history: (!self.no_history).then_some(self.history_others),
                    every_pair: self.every_pair,
                },
            )),
        };
        Ok(Connected { extractor, client, _sandbox: sandbox })
    }

    /// The HTTP client of `crm` at `base_url`.
    fn client(&self, crm: Crm, base_url: &str, auth: Auth, default_limit: RateLimit) -> Result<HttpClient> {
        let base_url = url::Url::parse(base_url)
            .map_err(|e| Error::Config(format!("--base-url '{base_url}' is not a URL: {e}")))?;
        let real = self.source != Source::Sandbox;
        let (search, unauthorized_hint, daily_hint, token_costs) = match crm {
            Crm::Hubspot => (
                self.search_rate_limit,
                "Regenerate the private-app token in HubSpot and set HUBSPOT_ACCESS_TOKEN to it",
                HUBSPOT_DAILY_HINT,
                None,
            ),
            Crm::Pipedrive => (
                RateLimit::Unlimited,
                "Copy the API token again from Pipedrive (Settings > Personal preferences > API; regenerating it invalidates the old one) and set PIPEDRIVE_API_TOKEN to it",
                PIPEDRIVE_DAILY_HINT,
                Some(crate::http::TokenCosts::pipedrive()),
            ),
        };
        HttpClient::new(ClientOptions {
            base_url,
            auth,
            rate_limit: self.rate_limit.unwrap_or(default_limit),
            search_rate_limit: search,
            // A real account's headers size the limiter, unless --rate-limit was given.
            adjust_from_headers: real && self.rate_limit.is_none(),
            max_attempts: 6,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(self.request_timeout.max(1)),
            unauthorized_hint,
            daily_hint,
            token_costs,
            max_url_bytes: self.max_url_bytes,
        })
    }

    /// The company domain from `GET https://api.pipedrive.com/v1/users/me`.
    async fn discover_company_domain(&self, auth: &Auth) -> Result<String> {
        let client = self.client(Crm::Pipedrive, PIPEDRIVE_API, auth.clone(), PIPEDRIVE_DEFAULT)?;
        let me: serde_json::Value =
            client.get_json("/v1/users/me", &[]).await.map_err(|e| e.in_stream("account", "GET /v1/users/me"))?;
        me.pointer("/data/company_domain").and_then(|d| d.as_str()).map(str::to_string).ok_or_else(|| {
            Error::Config(
                "Pipedrive did not say the company domain: pass --company-domain (acme for acme.pipedrive.com)".into(),
            )
        })
    }
}

/// `https://<domain>.pipedrive.com` (a full host or URL is accepted too).
fn company_url(domain: &str) -> Result<String> {
    let d = domain.trim().trim_start_matches("https://").trim_end_matches('/');
    let host = if d.contains('.') { d.to_string() } else { format!("{d}.pipedrive.com") };
    if host.is_empty() || host.contains('/') || host.contains(' ') {
        return Err(Error::Config(format!(
            "--company-domain '{domain}' is not a company domain (acme for acme.pipedrive.com)"
        )));
    }
    Ok(format!("https://{host}"))
}

fn rand_token() -> u128 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    t.as_nanos() ^ ((std::process::id() as u128) << 64)
}
