//! Proactive rate limiting: a token bucket sized to the account's limit (governor).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota};

/// Requests allowed per period, or no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimit {
    Unlimited,
    PerPeriod { requests: u32, period: Duration },
}

impl RateLimit {
    /// What crmdump allows itself on HubSpot's CRM search (HubSpot allows 5 per second).
    pub const HUBSPOT_SEARCH: RateLimit = RateLimit::PerPeriod { requests: 4, period: Duration::from_secs(1) };

    /// HubSpot's default for private apps: 100 requests per 10 seconds.
    pub const HUBSPOT_DEFAULT: RateLimit = RateLimit::PerPeriod { requests: 100, period: Duration::from_secs(10) };

    /// Parses `100/10s`, `10/1s`, `600/60s`, `5/500ms` or `none`.
    pub fn parse(text: &str) -> Result<RateLimit, String> {
        let t = text.trim();
        if matches!(t, "none" | "unlimited" | "off") {
            return Ok(RateLimit::Unlimited);
        }
        let bad =
            || format!("'{text}' is not a rate limit: write REQUESTS/PERIOD such as 100/10s or 5/500ms, or 'none'");
        let (n, period) = t.split_once('/').ok_or_else(bad)?;
        let requests: u32 = n.trim().parse().map_err(|_| bad())?;
        let period = period.trim();
        let (num, unit) = period.split_at(period.find(|c: char| !c.is_ascii_digit()).unwrap_or(period.len()));
        let num: u64 = if num.is_empty() { 1 } else { num.parse().map_err(|_| bad())? };
        let period = match unit {
            "ms" => Duration::from_millis(num),
            "s" | "" => Duration::from_secs(num),
            "m" | "min" => Duration::from_secs(num * 60),
            _ => return Err(bad()),
        };
        if requests == 0 || period.is_zero() {
            return Err(bad());
        }
        Ok(RateLimit::PerPeriod { requests, period })
    }
}

pub(crate) struct Limiter(DefaultDirectRateLimiter);

impl Limiter {
    /// A limiter for a server that counts `requests` in any rolling `period` (HubSpot's
    /// TEN_SECONDLY_ROLLING): paced at 96% of the limit with a burst of 2%, so that no window
    /// ever holds more than 98% of the limit (two requests of slack for network jitter at
    /// 100/10s), and a long export takes at most about 4% longer than the limit allows.
    pub(crate) fn new(limit: RateLimit) -> Option<Limiter> {
        match limit {
            RateLimit::Unlimited => None,
            RateLimit::PerPeriod { requests, period } => {
                let paced = ((requests as f64 * 0.96).floor() as u32).max(1);
                let burst = NonZeroU32::new((requests / 50).max(1)).expect("at least 1");
                let quota = Quota::with_period(period / paced).expect("non-zero period").allow_burst(burst);
                Some(Limiter(DefaultDirectRateLimiter::direct(quota)))
            }
        }
    }

    /// Evenly spaced requests with no burst: at most `requests` in any window of `period`,
    /// for limits the server counts over a rolling window as short as one second.
    pub(crate) fn steady(limit: RateLimit) -> Option<Limiter> {
        match limit {
            RateLimit::Unlimited => None,
            RateLimit::PerPeriod { requests, period } => {
                let quota = Quota::with_period(period / requests).expect("non-zero period");
                Some(Limiter(DefaultDirectRateLimiter::direct(quota)))
            }
        }
    }

    pub(crate) async fn until_ready(&self) {
        self.0.until_ready().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rate_limits() {
        assert_eq!(RateLimit::parse("100/10s"), Ok(RateLimit::HUBSPOT_DEFAULT));
        assert_eq!(
            RateLimit::parse("5/500ms"),
            Ok(RateLimit::PerPeriod { requests: 5, period: Duration::from_millis(500) })
        );
        assert_eq!(RateLimit::parse("none"), Ok(RateLimit::Unlimited));
        assert!(RateLimit::parse("fast").unwrap_err().contains("100/10s"));
        assert!(RateLimit::parse("0/1s").is_err());
    }
}
