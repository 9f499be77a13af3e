//! The one place that turns [`SourceSettings`] into a connected extractor: the token from the
//! environment, the HTTP client with the source's limits and hints, and the in-process
//! sandbox when one is asked for (kept alive as long as the connection).

use std::sync::Arc;
use std::time::Duration;

use super::settings::{SourceKind, SourceSettings};
use crate::error::{Error, Result};
use crate::extract::hubspot::{HubSpot, HubSpotOptions};
use crate::extract::pipedrive::{Pipedrive, PipedriveOptions};
use crate::extract::{Extractor, SourceOptions};
use crate::http::{Auth, ClientOptions, HttpClient, RateLimit};
use crate::sandbox::{Flavor, SandboxServer};

/// The CRM a run reads, whatever serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Crm {
    Hubspot,
    Pipedrive,
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
    /// Whether the data is the sandbox's (fake), whatever the API it imitates.
    pub sandbox: bool,
    _sandbox: Option<SandboxServer>,
}

/// Connects to the source `settings` name; `ingested_at` is the run's start (INGESTEDAT).
pub async fn connect(settings: &SourceSettings, ingested_at: Arc<str>) -> Result<Connected> {
    settings.validate()?;
    let mut sandbox = None;
    let (crm, base_url, auth, default_limit) = match settings.kind {
        SourceKind::Sandbox => {
            let token = format!("sandbox-{:x}", rand_token());
            let config = settings.sandbox.config(Some(token.clone()));
            let server = SandboxServer::start(config, 0).await.map_err(|e| Error::Sandbox(e.to_string()))?;
            let s = &settings.sandbox;
            tracing::info!(url = %server.base_url(), flavor = ?s.flavor, scale = s.scale, seed = s.seed, "Sandbox started.");
            let url = server.base_url();
            sandbox = Some(server);
            let (crm, auth) = match s.flavor {
                Flavor::Hubspot => (Crm::Hubspot, Auth::Bearer(token)),
                Flavor::Pipedrive => (Crm::Pipedrive, Auth::ApiToken(token)),
            };
            let limit = s
                .rate_limit
                .map_or(RateLimit::Unlimited, |(requests, period)| RateLimit::PerPeriod { requests, period });
            (crm, url, auth, limit)
        }
        SourceKind::Hubspot => {
            let token = env("HUBSPOT_ACCESS_TOKEN").ok_or_else(|| {
                Error::Config(
                    "HUBSPOT_ACCESS_TOKEN is not set: create a private app in HubSpot (Settings > Integrations > Private Apps) with the crm.objects.*.read and crm.schemas.*.read scopes, and export its token in HUBSPOT_ACCESS_TOKEN".into(),
                )
            })?;
            let base = settings.base_url.clone().unwrap_or_else(|| HUBSPOT_API.to_string());
            (Crm::Hubspot, base, Auth::Bearer(token), RateLimit::HUBSPOT_DEFAULT)
        }
        SourceKind::Pipedrive => {
            // An API token (x-api-token), or an OAuth app's access token (Bearer).
            let auth = match (env("PIPEDRIVE_API_TOKEN"), env("PIPEDRIVE_ACCESS_TOKEN")) {
                (Some(token), _) => Auth::ApiToken(token),
                (None, Some(oauth)) => Auth::Bearer(oauth),
                (None, None) => return Err(Error::Config(
                    "PIPEDRIVE_API_TOKEN is not set: copy your API token from Pipedrive (Settings > Personal preferences > API) and export it in PIPEDRIVE_API_TOKEN (or an OAuth access token in PIPEDRIVE_ACCESS_TOKEN)".into(),
                )),
            };
            let base = match (&settings.base_url, &settings.company_domain) {
                (Some(url), _) => url.clone(),
                (None, Some(domain)) => company_url(domain)?,
                (None, None) => company_url(&discover_company_domain(settings, &auth).await?)?,
            };
            (Crm::Pipedrive, base, auth, PIPEDRIVE_DEFAULT)
        }
    };
    let client = Arc::new(client(settings, crm, &base_url, auth, default_limit)?);
    let extractor: Box<dyn Extractor> = match crm {
        Crm::Hubspot => {
            let options: HubSpotOptions = options(settings, ingested_at, settings.history);
            Box::new(HubSpot::new(client.clone(), options))
        }
        Crm::Pipedrive => {
            let options: PipedriveOptions = options(settings, ingested_at, settings.history.map(|h| h.others));
            Box::new(Pipedrive::new(client.clone(), options))
        }
    };
    let is_sandbox = sandbox.is_some();
    Ok(Connected { extractor, client, sandbox: is_sandbox, _sandbox: sandbox })
}

/// What both extractors take from the settings; `history` in the source's own terms.
fn options<H>(settings: &SourceSettings, ingested_at: Arc<str>, history: Option<H>) -> SourceOptions<H> {
    SourceOptions {
        objects: settings.objects.clone(),
        concurrency: settings.concurrency,
        ingested_at,
        history,
        every_pair: settings.every_pair,
    }
}

/// A secret from the environment; blank counts as unset.
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|t| !t.trim().is_empty())
}

/// The HTTP client of `crm` at `base_url`.
fn client(
    settings: &SourceSettings,
    crm: Crm,
    base_url: &str,
    auth: Auth,
    default_limit: RateLimit,
) -> Result<HttpClient> {
    let base_url =
        url::Url::parse(base_url).map_err(|e| Error::Config(format!("--base-url '{base_url}' is not a URL: {e}")))?;
    let real = settings.kind != SourceKind::Sandbox;
    let (search, unauthorized_hint, daily_hint, token_costs) = match crm {
        Crm::Hubspot => (
            settings.search_rate_limit,
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
        rate_limit: settings.rate_limit.unwrap_or(default_limit),
        search_rate_limit: search,
        // A real account's headers size the limiter, unless a limit was given.
        adjust_from_headers: real && settings.rate_limit.is_none(),
        max_attempts: 6,
        connect_timeout: Duration::from_secs(10),
        request_timeout: settings.request_timeout,
        unauthorized_hint,
        daily_hint,
        token_costs,
        max_url_bytes: settings.max_url_bytes,
    })
}

/// The company domain from `GET https://api.pipedrive.com/v1/users/me`.
async fn discover_company_domain(settings: &SourceSettings, auth: &Auth) -> Result<String> {
    let client = client(settings, Crm::Pipedrive, PIPEDRIVE_API, auth.clone(), PIPEDRIVE_DEFAULT)?;
    let me: serde_json::Value =
        client.get_json("/v1/users/me", &[]).await.map_err(|e| e.in_stream("account", "GET /v1/users/me"))?;
    me.pointer("/data/company_domain").and_then(|d| d.as_str()).map(str::to_string).ok_or_else(|| {
        Error::Config(
            "Pipedrive did not say the company domain: pass --company-domain (acme for acme.pipedrive.com)".into(),
        )
    })
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

/// A token nobody else knows, for the in-process sandbox.
fn rand_token() -> u128 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    t.as_nanos() ^ ((std::process::id() as u128) << 64)
}
