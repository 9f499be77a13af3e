//! `crmdump sandbox`: the fake CRM as a server of its own.

use clap::Args;

use crate::error::{Error, Result};
use crate::sandbox::{Faults, Flavor, SandboxConfig, SandboxServer};

/// Settings of the sandbox account, shared by `crmdump sandbox` and `export --source sandbox`.
#[derive(Debug, Clone, Args)]
pub struct SandboxData {
    /// Which CRM's API to imitate.
    #[arg(long = "flavor", value_enum, default_value_t = Flavor::Hubspot)]
    pub flavor: Flavor,
    /// Seed of the generated data: the same seed and scale always give the same account.
    #[arg(long = "seed", default_value_t = 1)]
    pub seed: u64,
    /// Records per object type (contacts, companies, deals, tickets, cars).
    #[arg(long = "scale", default_value_t = 2000)]
    pub scale: u64,
    /// "Now" of the generated data (RFC 3339); default: the start of today, UTC.
    #[arg(long = "anchor")]
    pub anchor: Option<String>,
    /// Requests allowed per rolling period, like a HubSpot account (100/10s for a Starter
    /// private app): beyond it, 429 with HubSpot's TEN_SECONDLY_ROLLING body. Default: none.
    #[arg(long = "rate-limit", value_parser = crate::http::RateLimit::parse)]
    pub rate_limit: Option<crate::http::RateLimit>,
    /// Faults injected per request, as probabilities:
    /// 5xx=0.05,drop=0.02,truncate=0.01,malformed=0.01,429=0.02,slow=0.01.
    #[arg(long = "faults", default_value = "none", value_parser = Faults::parse)]
    pub faults: Faults,
    /// Retry-After of injected 429s.
    #[arg(long = "fault-retry-after", default_value = "200ms", value_parser = super::parse_duration)]
    pub fault_retry_after: chrono::Duration,
    /// Share of records served with a defect: no id, bytes that are not UTF-8, or a 2 MiB
    /// value (to see how crmdump reports bad data).
    #[arg(long = "bad-records", default_value_t = 0.0)]
    pub bad_records: f64,
    /// Number fields hold numbers only. Without it, about one in ten values of a few of them
    /// (annual revenue, employees, amount) is "N/A", as in real HubSpot accounts; some
    /// clients stop on that.
    #[arg(long = "clean-numbers")]
    pub clean_numbers: bool,
    /// Requests the account may make in all (Pipedrive: tokens, each request costing its
    /// operation's token cost): past it, 429 with the daily-limit body (to see how crmdump
    /// stops when the daily budget is spent).
    #[arg(long = "daily-limit")]
    pub daily_limit: Option<u64>,
    /// How long an injected slow response waits (past the client's --request-timeout).
    #[arg(long = "slow-delay", default_value = "65s", value_parser = super::parse_duration)]
    pub slow_delay: chrono::Duration,
    /// Custom behavioral event types to add to the account (`pe<portal>_load_NNNN`, a few
    /// events each), for an account whose export has a thousand tables (HubSpot flavour).
    #[arg(long = "extra-event-types", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub extra_event_types: u32,
    /// Records modified while a search is being paged: after each page of a search on the
    /// last-modified date that has a next page, this many of the records it returned are
    /// modified (now), leaving the search's window (listed in /_sandbox/stats as `churned`).
    #[arg(long = "search-churn", default_value_t = 0)]
    pub search_churn: u32,
    /// Search results out of order by last-modified, within this bound (each record sorted as
    /// if modified up to that much later), as HubSpot's search index can answer.
    #[arg(long = "search-disorder", default_value = "0s", value_parser = super::parse_duration)]
    pub search_disorder: chrono::Duration,
    /// A change becomes searchable only this long after it was made (HubSpot's index lags).
    #[arg(long = "index-delay", default_value = "0s", value_parser = super::parse_duration)]
    pub index_delay: chrono::Duration,
    /// Longest request URL answered; a longer one gets HubSpot's 414 (HubSpot refuses URLs
    /// from about 16,000 bytes).
    #[arg(long = "max-url-length", default_value_t = 16_000)]
    pub max_url_length: usize,
}

impl SandboxData {
    pub fn config(&self, token: Option<String>) -> Result<SandboxConfig> {
        let mut config = SandboxConfig::new(self.seed, self.scale);
        if self.scale == 0 {
            return Err(Error::Config("--scale must be at least 1".into()));
        }
        if let Some(a) = &self.anchor {
            config.anchor = chrono::DateTime::parse_from_rfc3339(a)
                .map_err(|e| Error::Config(format!("--anchor '{a}' is not an RFC 3339 timestamp: {e}")))?
                .with_timezone(&chrono::Utc);
        }
        config.token = token;
        config.flavor = self.flavor;
        config.rate_limit = match self.rate_limit {
            Some(crate::http::RateLimit::PerPeriod { requests, period }) => Some((requests, period)),
            _ => None,
        };
        config.daily_limit = self.daily_limit;
        if !(0.0..=1.0).contains(&self.bad_records) {
            return Err(Error::Config(format!("--bad-records {} is not a share between 0 and 1", self.bad_records)));
        }
        config.bad_records = self.bad_records;
        config.clean_numbers = self.clean_numbers;
        config.extra_event_types = self.extra_event_types;
        config.search_churn = self.search_churn;
        config.search_disorder_ms = self.search_disorder.num_milliseconds().max(0);
        config.index_delay_ms = self.index_delay.num_milliseconds().max(0);
        config.max_url_bytes = self.max_url_length;
        config.faults = Faults {
            retry_after: self.fault_retry_after.to_std().unwrap_or_default(),
            slow_delay: self.slow_delay.to_std().unwrap_or_default(),
            ..self.faults.clone()
        };
        Ok(config)
    }
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Port on 127.0.0.1 (0 picks a free one, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    #[command(flatten)]
    pub data: SandboxData,
    /// Scopes the token lacks, comma-separated: endpoints needing them answer 403
    /// (HubSpot: crm.objects.<type>.read, crm.lists.read, analytics.behavioral_events.read,
    /// settings.users.teams.read; Pipedrive: base, deals:read, contacts:read,
    /// activities:read, products:read, leads:read, users:read, recents:read).
    #[arg(long, value_delimiter = ',')]
    pub missing_scopes: Vec<String>,
    /// Answer every API request with `307 Temporary Redirect` to the same path under this base
    /// URL (to test that a client's token does not follow a redirect to another origin).
    #[arg(long, value_name = "URL")]
    pub redirect_to: Option<String>,
    /// Accept only this Bearer token (default: any non-empty token).
    #[arg(long, env = "CRMDUMP_SANDBOX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
}

/// Where and how the sandbox sends the webhooks of the changes its test hooks make.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Send webhooks here (for example to `crmdump listen`): HubSpot's signed batches, or
    /// Pipedrive's v2 events with basic auth.
    #[arg(long = "webhook-url", value_name = "URL")]
    pub url: Option<String>,
    /// The URL HubSpot signs, when --webhook-url is a proxy's inside address (default: the
    /// --webhook-url itself).
    #[arg(long = "webhook-signed-url", value_name = "URL")]
    pub signed_url: Option<String>,
    /// The HubSpot app's client secret the batches are signed with.
    #[arg(long = "webhook-secret", env = "CRMDUMP_HUBSPOT_CLIENT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The Pipedrive webhook's basic-auth user and password.
    #[arg(long = "webhook-user", env = "CRMDUMP_PIPEDRIVE_WEBHOOK_USER", hide_env_values = true)]
    pub user: Option<String>,
    #[arg(long = "webhook-password", env = "CRMDUMP_PIPEDRIVE_WEBHOOK_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Waits before each retry of a failed delivery, comma-separated (default HubSpot:
    /// 10 retries from 1s to 30m, the real one spreads them over a day; Pipedrive: 3s,30s,150s).
    #[arg(long = "webhook-retries", value_delimiter = ',', value_parser = super::parse_duration)]
    pub retries: Option<Vec<chrono::Duration>>,
    /// How long a delivery may take before it counts as failed (default: HubSpot 5s,
    /// Pipedrive 10s).
    #[arg(long = "webhook-timeout", value_parser = super::parse_duration)]
    pub timeout: Option<chrono::Duration>,
    /// Count HubSpot event ids per subscription, so that they repeat across subscriptions
    /// (and across sandboxes of other portals), as HubSpot's do.
    #[arg(long = "webhook-collide-ids")]
    pub collide_ids: bool,
}

impl WebhookArgs {
    fn config(&self, flavor: Flavor) -> Result<Option<crate::sandbox::WebhookConfig>> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let seconds = |list: &[u64]| list.iter().map(|&s| std::time::Duration::from_secs(s)).collect::<Vec<_>>();
        let (retries, timeout) = match flavor {
            Flavor::Hubspot => (seconds(&[1, 2, 5, 10, 30, 60, 120, 300, 600, 1800]), 5),
            Flavor::Pipedrive => (seconds(&[3, 30, 150]), 10),
        };
        let missing = |what: &str| Error::Config(format!("--webhook-url needs {what}"));
        let (secret, user, password) = match flavor {
            Flavor::Hubspot => (
                self.secret.clone().ok_or_else(|| missing("--webhook-secret (the HubSpot app's client secret)"))?,
                String::new(),
                String::new(),
            ),
            Flavor::Pipedrive => (
                String::new(),
                self.user.clone().ok_or_else(|| missing("--webhook-user (the webhook's basic-auth user)"))?,
                self.password.clone().ok_or_else(|| missing("--webhook-password"))?,
            ),
        };
        Ok(Some(crate::sandbox::WebhookConfig {
            url: url.clone(),
            signed_url: self.signed_url.clone(),
            secret,
            user,
            password,
            retry_schedule: match &self.retries {
                Some(list) => list.iter().map(|d| d.to_std().unwrap_or_default()).collect(),
                None => retries,
            },
            timeout: self.timeout.and_then(|d| d.to_std().ok()).unwrap_or(std::time::Duration::from_secs(timeout)),
            collide_ids: self.collide_ids,
        }))
    }
}

pub async fn run(args: SandboxArgs) -> Result<()> {
    let mut config = args.data.config(args.token.clone())?;
    config.missing_scopes = args.missing_scopes.clone();
    config.redirect_to = args.redirect_to.clone();
    config.webhooks = args.webhooks.config(args.data.flavor)?;
    let (seed, scale) = (config.seed, config.scale);
    let server = SandboxServer::start(config, args.port).await.map_err(sandbox_failed)?;
    let (flavor, token) = match args.data.flavor {
        Flavor::Hubspot => ("hubspot", "HUBSPOT_ACCESS_TOKEN"),
        Flavor::Pipedrive => ("pipedrive", "PIPEDRIVE_API_TOKEN"),
    };
    say!("Sandbox ({flavor}) listening on {} (seed {seed}, {scale} records per type)", server.base_url());
    say!(
        "Export from it with: {token}=any crmdump export --source {flavor} --base-url {} --dest ./export",
        server.base_url()
    );
    if let Some(url) = &args.webhooks.url {
        say!("Sending the webhooks of /_sandbox/touch and /_sandbox/archive to {url}");
    }
    tokio::select! {
        r = server.wait() => r.map_err(sandbox_failed),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// The sandbox's own I/O errors, as the CLI reports them.
pub(crate) fn sandbox_failed(e: std::io::Error) -> crate::error::Error {
    crate::error::Error::Sandbox(e.to_string())
}
