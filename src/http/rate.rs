//! Proactive rate limiting. The account's limit is a rolling window (HubSpot's 100 requests in
//! any 10 seconds, Pipedrive's 2-second window): [`Limiter::new`] sends at once while the
//! window has room and waits only when it is full, so a short run is never paced. Search's
//! per-second limit is paced evenly instead ([`Limiter::steady`], governor's token bucket).

use std::time::Duration;

use tokio::time::Instant;

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

/// Share of a rolling window's limit crmdump uses: two requests of slack at 100/10s.
const WINDOW_SHARE: f64 = 0.98;

/// How often a full window of requests still in flight is looked at again.
const IN_FLIGHT_POLL: Duration = Duration::from_millis(20);

/// A request counted in a rolling window: from when it was let go until its answer came, then
/// for a window after that. The server counts a request when it arrives, between the two, so
/// no window the server sees holds more than crmdump counted, whatever the network's delays.
#[derive(Debug, Clone, Copy)]
struct Counted {
    id: u64,
    /// When it was let go, then when its answer came.
    at: Instant,
    answered: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Window {
    counted: Vec<Counted>,
    next_id: u64,
}

pub(crate) enum Limiter {
    /// At most `budget` requests counted in any `window`.
    Rolling { window: Duration, budget: usize, state: std::sync::Mutex<Window> },
    /// Evenly spaced.
    Steady(DefaultDirectRateLimiter),
}

/// A request let go by a [`Limiter`]: its answer is counted when this is dropped.
pub(crate) struct Permit {
    limiter: Option<(std::sync::Arc<Limiter>, u64)>,
    /// Whether the request had to wait for the window.
    pub waited: bool,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some((limiter, id)) = self.limiter.take()
            && let Limiter::Rolling { state, .. } = &*limiter
        {
            let mut state = state.lock().expect("limiter lock");
            if let Some(c) = state.counted.iter_mut().find(|c| c.id == id) {
                c.at = Instant::now();
                c.answered = true;
            }
        }
    }
}

impl Limiter {
    /// A limiter for a server that counts `requests` in any rolling `period` (HubSpot's
    /// TEN_SECONDLY_ROLLING, Pipedrive's 2-second window): requests go at once while fewer
    /// than 98% of the limit are counted in the last `period`, so a run that fits the window
    /// is never held, and a long one runs at about 98% of the limit.
    pub(crate) fn new(limit: RateLimit) -> Option<Limiter> {
        Limiter::following(limit, None)
    }

    /// [`Limiter::new`], carrying over the requests `previous` counted, so that a limit learnt
    /// from the headers mid-run does not start from an empty window.
    pub(crate) fn following(limit: RateLimit, previous: Option<&Limiter>) -> Option<Limiter> {
        match limit {
            RateLimit::Unlimited => None,
            RateLimit::PerPeriod { requests, period } => {
                let budget = ((requests as f64 * WINDOW_SHARE).floor() as usize).max(1);
                // The previous limiter's requests still in flight answer to it: count them here
                // as answered now, a full window from now.
                let now = Instant::now();
                let counted: Vec<Counted> = match previous {
                    Some(Limiter::Rolling { state, .. }) => state
                        .lock()
                        .expect("limiter lock")
                        .counted
                        .iter()
                        .map(|c| Counted { at: if c.answered { c.at } else { now }, answered: true, ..*c })
                        .collect(),
                    _ => Vec::new(),
                };
                let next_id = counted.iter().map(|c| c.id + 1).max().unwrap_or(0);
                let state = std::sync::Mutex::new(Window { counted, next_id });
                Some(Limiter::Rolling { window: period, budget, state })
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
                Some(Limiter::Steady(DefaultDirectRateLimiter::direct(quota)))
            }
        }
    }

    /// Waits until a request may go. Keep the permit until its answer has come.
    pub(crate) async fn until_ready(self: &std::sync::Arc<Self>) -> Permit {
        match &**self {
            Limiter::Steady(bucket) => {
                let waited = bucket.check().is_err();
                if waited {
                    bucket.until_ready().await;
                }
                Permit { limiter: None, waited }
            }
            Limiter::Rolling { window, budget, state } => {
                let mut waited = false;
                loop {
                    let wait = {
                        let mut state = state.lock().expect("limiter lock");
                        let now = Instant::now();
                        state.counted.retain(|c| !c.answered || now.duration_since(c.at) < *window);
                        if state.counted.len() < *budget {
                            let id = state.next_id;
                            state.next_id += 1;
                            state.counted.push(Counted { id, at: now, answered: false });
                            return Permit { limiter: Some((self.clone(), id)), waited };
                        }
                        let expiring = state.counted.iter().filter(|c| c.answered).map(|c| c.at + *window - now).min();
                        expiring.unwrap_or(IN_FLIGHT_POLL)
                    };
                    waited = true;
                    tokio::time::sleep(wait).await;
                }
            }
        }
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

    /// Send times of `n` requests through `limiter`, each answered at once (tokio's paused
    /// clock: no real waiting).
    async fn send_times(limiter: &std::sync::Arc<Limiter>, n: usize) -> Vec<(Duration, bool)> {
        let start = tokio::time::Instant::now();
        let mut times = Vec::new();
        for _ in 0..n {
            let permit = limiter.until_ready().await;
            times.push((start.elapsed(), permit.waited));
        }
        times
    }

    #[tokio::test(start_paused = true)]
    async fn a_rolling_window_sends_at_once_until_full_and_never_holds_more_than_its_share() {
        let limiter = std::sync::Arc::new(Limiter::new(RateLimit::HUBSPOT_DEFAULT).unwrap());
        let times = send_times(&limiter, 300).await;
        assert!(times[..98].iter().all(|(t, waited)| t.is_zero() && !waited), "98 at once");
        assert!(times[98].1 && times[98].0 >= Duration::from_secs(10), "the 99th waits for the window");
        for (i, (t, _)) in times.iter().enumerate().skip(98) {
            let window_start = *t - Duration::from_secs(10);
            let in_window = times[..=i].iter().filter(|(u, _)| *u > window_start).count();
            assert!(in_window <= 98, "{in_window} requests in the 10 s before request {i}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_limit_learnt_mid_run_keeps_the_window_already_spent() {
        let first = std::sync::Arc::new(Limiter::new(RateLimit::HUBSPOT_DEFAULT).unwrap());
        send_times(&first, 98).await;
        let higher = RateLimit::PerPeriod { requests: 150, period: Duration::from_secs(10) };
        let next = std::sync::Arc::new(Limiter::following(higher, Some(&first)).unwrap());
        let times = send_times(&next, 60).await;
        assert!(times[..147 - 98].iter().all(|(t, waited)| t.is_zero() && !waited), "the rest of the window at once");
        assert!(times[147 - 98].0 >= Duration::from_secs(10), "then the window is full");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_counts_until_a_window_after_its_answer() {
        let limiter = std::sync::Arc::new(
            Limiter::new(RateLimit::PerPeriod { requests: 2, period: Duration::from_secs(1) }).unwrap(),
        );
        let slow = limiter.until_ready().await;
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(slow);
        let start = tokio::time::Instant::now();
        let next = limiter.until_ready().await;
        assert!(next.waited && start.elapsed() >= Duration::from_secs(1), "the slow request counted from its answer");
    }
}
