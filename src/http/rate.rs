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
        let millis = match unit {
            "ms" => Some(num),
            "s" | "" => num.checked_mul(1000),
            "m" | "min" => num.checked_mul(60_000),
            "h" => num.checked_mul(3_600_000),
            _ => return Err(bad()),
        };
        let out_of_range = || {
            format!(
                "'{text}' is out of range: the period must be between 1ms and 24h, with at most {MAX_PER_SECOND} requests per second"
            )
        };
        let millis = millis.filter(|m| (1..=MAX_PERIOD_MS).contains(m)).ok_or_else(out_of_range)?;
        if requests == 0 {
            return Err(bad());
        }
        if u64::from(requests) * 1000 > MAX_PER_SECOND * millis {
            return Err(out_of_range());
        }
        Ok(RateLimit::PerPeriod { requests, period: Duration::from_millis(millis) })
    }
}

/// The longest period a rate limit may have (a day: the longest window any CRM counts in).
const MAX_PERIOD_MS: u64 = 24 * 3600 * 1000;
/// The fastest pace a rate limit may ask for: beyond it the limiter's spacing would round to
/// nothing (and no CRM allows it).
const MAX_PER_SECOND: u64 = 100_000;

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

    #[test]
    fn out_of_range_limits_are_refused_and_every_accepted_one_builds_a_limiter() {
        for text in ["4294967295/1ms", "1/99999999999999999m", "1/18446744073709551615ms", "1/0s", "5/25h"] {
            assert!(RateLimit::parse(text).is_err(), "{text} was accepted");
        }
        for text in ["100000/1s", "1/24h", "1/1440m", "1/1ms", "4294967295/86400000ms"] {
            let Ok(limit) = RateLimit::parse(text) else { continue };
            assert!(Limiter::new(limit).is_some() && Limiter::steady(limit).is_some(), "{text}");
        }
        assert!(RateLimit::parse("100000/1s").is_ok() && RateLimit::parse("1/1440m").is_ok());
    }
}
