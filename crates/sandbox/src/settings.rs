//! The settings of a sandbox account, as flags: `crmdump sandbox --seed 3` and
//! `crmdump export --source sandbox --sandbox-seed 3` read this one definition (the export
//! names each flag with a `sandbox-` prefix), so that both start the same account and every
//! default lives here, with the sandbox.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::faults::Faults;
use crate::generator::{Flavor, SandboxConfig};

/// Seed of the default account.
pub const DEFAULT_SEED: u64 = 1;
/// Records per object type of the default account.
pub const DEFAULT_SCALE: u64 = 2000;
/// HubSpot refuses request URLs from about 16,000 bytes.
pub const DEFAULT_MAX_URL_BYTES: usize = 16_000;

/// One sandbox account and how its API behaves. Argument ids carry a `sandbox_` prefix so
/// that they never collide with the flags of a command that embeds them.
#[derive(Debug, Clone, clap::Args)]
pub struct SandboxSettings {
    /// Which CRM's API to imitate.
    #[arg(id = "sandbox_flavor", long = "flavor", value_enum, default_value_t = Flavor::Hubspot)]
    pub flavor: Flavor,
    /// Seed of the generated data: the same seed and scale always give the same account.
    #[arg(id = "sandbox_seed", long = "seed", default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Records per object type (contacts, companies, deals, tickets, cars; a tenth of it for
    /// the other standard types).
    #[arg(id = "sandbox_scale", long = "scale", default_value_t = DEFAULT_SCALE,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub scale: u64,
    /// "Now" of the generated data (RFC 3339); default: the start of today, UTC.
    #[arg(id = "sandbox_anchor", long = "anchor", value_parser = parse_anchor)]
    pub anchor: Option<DateTime<Utc>>,
    /// Scopes the token lacks, comma-separated: endpoints needing them answer 403
    /// (HubSpot: crm.objects.{type}.read, crm.lists.read, analytics.behavioral_events.read,
    /// settings.users.teams.read; Pipedrive: base, deals:read, contacts:read,
    /// activities:read, products:read, leads:read, users:read, recents:read).
    #[arg(id = "sandbox_missing_scopes", long = "missing-scopes", value_delimiter = ',')]
    pub missing_scopes: Vec<String>,
    /// Requests allowed per rolling period, like a HubSpot account (100/10s for a Starter
    /// private app): beyond it, 429 with HubSpot's TEN_SECONDLY_ROLLING body. Default: none.
    #[arg(id = "sandbox_rate_limit", long = "rate-limit", value_parser = parse_rate_limit)]
    pub rate_limit: Option<RateLimit>,
    /// Faults injected per request, as probabilities:
    /// 5xx=0.05,drop=0.02,truncate=0.01,malformed=0.01,429=0.02,slow=0.01.
    #[arg(id = "sandbox_faults", long = "faults", default_value = "none", value_parser = Faults::parse)]
    pub faults: Faults,
    /// Retry-After of injected 429s.
    #[arg(id = "sandbox_fault_retry_after", long = "fault-retry-after", default_value = "200ms",
          value_parser = parse_duration)]
    pub fault_retry_after: Duration,
    /// How long an injected slow response waits (past the client's request timeout).
    #[arg(id = "sandbox_slow_delay", long = "slow-delay", default_value = "65s", value_parser = parse_duration)]
    pub slow_delay: Duration,
    /// Share of records served with a defect: no id, bytes that are not UTF-8, a 2 MiB
    /// value or a creation time that is no timestamp (to see how a client reports bad data).
    #[arg(id = "sandbox_bad_records", long = "bad-records", default_value_t = 0.0, value_parser = parse_share)]
    pub bad_records: f64,
    /// Number fields hold numbers only. Without it, about one in ten values of a few of them
    /// (annual revenue, employees, amount) is "N/A", as in real HubSpot accounts; some
    /// clients stop on that.
    #[arg(id = "sandbox_clean_numbers", long = "clean-numbers")]
    pub clean_numbers: bool,
    /// Requests the account may make in all (Pipedrive: tokens, each request costing its
    /// operation's token cost): past it, 429 with the daily-limit body.
    #[arg(id = "sandbox_daily_limit", long = "daily-limit")]
    pub daily_limit: Option<u64>,
    /// Custom behavioral event types to add to the account (`pe<portal>_load_NNNN`, a few
    /// events each), for an account whose export has a thousand tables (HubSpot flavour).
    #[arg(id = "sandbox_extra_event_types", long = "extra-event-types", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub extra_event_types: u32,
    /// Records modified while a search is being paged: after each page of a search on the
    /// last-modified date that has a next page, this many of the records it returned are
    /// modified (now), leaving the search's window (listed in /_sandbox/stats as `churned`).
    #[arg(id = "sandbox_search_churn", long = "search-churn", default_value_t = 0)]
    pub search_churn: u32,
    /// Search results out of order by last-modified, within this bound (each record sorted as
    /// if modified up to that much later), as HubSpot's search index can answer.
    #[arg(id = "sandbox_search_disorder", long = "search-disorder", default_value = "0s", value_parser = parse_duration)]
    pub search_disorder: Duration,
    /// Searches answer as if they had no filter (the same records whatever the window), as a
    /// broken proxy or a misbehaving index could: a client must notice and stop.
    #[arg(id = "sandbox_search_ignores_filters", long = "search-ignores-filters")]
    pub search_ignores_filters: bool,
    /// A change becomes searchable only this long after it was made (HubSpot's index lags).
    #[arg(id = "sandbox_index_delay", long = "index-delay", default_value = "0s", value_parser = parse_duration)]
    pub index_delay: Duration,
    /// Longest request URL answered; a longer one gets HubSpot's 414 (HubSpot refuses URLs
    /// from about 16,000 bytes).
    #[arg(id = "sandbox_max_url_length", long = "max-url-length", default_value_t = DEFAULT_MAX_URL_BYTES)]
    pub max_url_length: usize,
}

/// An account's request limit: this many requests per rolling period.
pub type RateLimit = (u32, Duration);

impl Default for SandboxSettings {
    /// The settings of `crmdump sandbox` without flags.
    fn default() -> SandboxSettings {
        use clap::{Args, FromArgMatches};
        let command = SandboxSettings::augment_args(clap::Command::new("sandbox"));
        let matches = command.try_get_matches_from(["sandbox"]).expect("the defaults parse");
        SandboxSettings::from_arg_matches(&matches).expect("the defaults parse")
    }
}

impl SandboxSettings {
    /// The account these settings describe; `token` is the only Bearer token it accepts
    /// (`None`: any non-empty token).
    pub fn config(&self, token: Option<String>) -> SandboxConfig {
        let mut config = SandboxConfig::new(self.seed, self.scale);
        if let Some(anchor) = self.anchor {
            config.anchor = anchor;
        }
        config.token = token;
        config.flavor = self.flavor;
        config.missing_scopes = self.missing_scopes.clone();
        config.rate_limit = self.rate_limit;
        config.daily_limit = self.daily_limit;
        config.bad_records = self.bad_records;
        config.clean_numbers = self.clean_numbers;
        config.extra_event_types = self.extra_event_types;
        config.search_churn = self.search_churn;
        config.search_disorder_ms = millis(self.search_disorder);
        config.index_delay_ms = millis(self.index_delay);
        config.search_ignores_filters = self.search_ignores_filters;
        config.max_url_bytes = self.max_url_length;
        config.faults =
            Faults { retry_after: self.fault_retry_after, slow_delay: self.slow_delay, ..self.faults.clone() };
        config
    }
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `10m`, `90s`, `200ms`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|e| format!("'{text}' is not a duration ({e}): write it like 200ms, 90s or 10m"))
}

fn parse_anchor(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("'{text}' is not an RFC 3339 timestamp ({e}): write it like 2026-11-01T00:00:00Z"))
}

fn parse_share(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(share) if (0.0..=1.0).contains(&share) => Ok(share),
        _ => Err(format!("'{text}' is not a share between 0 and 1")),
    }
}

/// `100/10s` (requests per rolling period); `none` for no limit.
pub fn parse_rate_limit(text: &str) -> Result<RateLimit, String> {
    let bad = || format!("'{text}' is not a rate limit: write it like 100/10s");
    let (requests, period) = text.trim().split_once('/').ok_or_else(bad)?;
    let requests: u32 = requests.trim().parse().map_err(|_| bad())?;
    let period = humantime::parse_duration(period.trim()).map_err(|_| bad())?;
    if requests == 0 || period.is_zero() {
        return Err(bad());
    }
    Ok((requests, period))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_the_generators_and_flags_parse() {
        let d = SandboxSettings::default();
        assert_eq!((d.seed, d.scale, d.max_url_length), (DEFAULT_SEED, DEFAULT_SCALE, DEFAULT_MAX_URL_BYTES));
        assert_eq!(d.fault_retry_after, Duration::from_millis(200));
        let config = d.config(None);
        assert_eq!(config.max_url_bytes, SandboxConfig::new(1, 1).max_url_bytes);
        assert_eq!(parse_rate_limit("100/10s").unwrap(), (100, Duration::from_secs(10)));
        assert!(parse_rate_limit("0/1s").is_err() && parse_rate_limit("fast").is_err());
        assert!(parse_share("1.5").unwrap_err().contains("between 0 and 1"));
    }
}
