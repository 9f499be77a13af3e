//! What can go wrong between crmdump and a CRM, injected on purpose (`--faults`): each API
//! request independently meets at most one fault, with the configured probabilities, drawn
//! from a counter-based generator seeded by the sandbox's seed (the same run of requests
//! meets the same faults).

use std::time::Duration;

/// A fault a request meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 500, 502 (an HTML page, as from a proxy) or 503.
    ServerError(u16),
    /// The connection closes before the response body is sent.
    Drop,
    /// The response declares its full length and stops halfway.
    Truncate,
    /// A 200 whose body is not JSON.
    Malformed,
    /// A 429 with `Retry-After`.
    Throttle,
    /// The response comes after `slow_delay` (past the client's request timeout).
    Slow,
}

impl Fault {
    /// The name in `--faults` and in `/_sandbox/stats`.
    pub fn name(self) -> &'static str {
        match self {
            Fault::ServerError(_) => "5xx",
            Fault::Drop => "drop",
            Fault::Truncate => "truncate",
            Fault::Malformed => "malformed",
            Fault::Throttle => "429",
            Fault::Slow => "slow",
        }
    }
}

/// Per-request probabilities of each fault, and how the slow and 429 faults behave.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    pub server_error: f64,
    pub drop: f64,
    pub truncate: f64,
    pub malformed: f64,
    pub throttle: f64,
    pub slow: f64,
    /// `Retry-After` of injected 429s (short, so tests stay fast).
    pub retry_after: Duration,
    /// How long a slow response waits.
    pub slow_delay: Duration,
}

impl Default for Faults {
    fn default() -> Faults {
        Faults {
            server_error: 0.0,
            drop: 0.0,
            truncate: 0.0,
            malformed: 0.0,
            throttle: 0.0,
            slow: 0.0,
            retry_after: Duration::from_millis(200),
            slow_delay: Duration::from_secs(65),
        }
    }
}

impl Faults {
    /// Parses `5xx=0.05,drop=0.02,truncate=0.01,malformed=0.01,429=0.02,slow=0.01` (any
    /// subset; `none` for no faults).
    pub fn parse(text: &str) -> Result<Faults, String> {
        let mut f = Faults::default();
        if matches!(text.trim(), "" | "none") {
            return Ok(f);
        }
        for item in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (name, value) = item
                .split_once('=')
                .ok_or_else(|| format!("'{item}' is not NAME=PROBABILITY (for example 5xx=0.05)"))?;
            let p: f64 = value
                .trim()
                .parse()
                .ok()
                .filter(|p: &f64| (0.0..=1.0).contains(p))
                .ok_or_else(|| format!("'{value}' in '{item}' is not a probability between 0 and 1"))?;
            let slot = match name.trim() {
                "5xx" => &mut f.server_error,
                "drop" => &mut f.drop,
                "truncate" => &mut f.truncate,
                "malformed" => &mut f.malformed,
                "429" => &mut f.throttle,
                "slow" => &mut f.slow,
                other => {
                    return Err(format!("unknown fault '{other}': use 5xx, drop, truncate, malformed, 429 or slow"));
                }
            };
            *slot = p;
        }
        if f.total() > 1.0 {
            return Err(format!("the fault probabilities add up to {:.3}, more than 1", f.total()));
        }
        Ok(f)
    }

    fn total(&self) -> f64 {
        self.server_error + self.drop + self.truncate + self.malformed + self.throttle + self.slow
    }

    pub fn any(&self) -> bool {
        self.total() > 0.0
    }

    /// The fault of a request whose uniform draw in `[0, 1)` is `roll` (`pick` is another
    /// draw, choosing among 5xx statuses).
    pub fn pick(&self, roll: f64, pick: u64) -> Option<Fault> {
        let table = [
            (self.server_error, Fault::ServerError([500, 502, 503][(pick % 3) as usize])),
            (self.drop, Fault::Drop),
            (self.truncate, Fault::Truncate),
            (self.malformed, Fault::Malformed),
            (self.throttle, Fault::Throttle),
            (self.slow, Fault::Slow),
        ];
        let mut edge = 0.0;
        for (p, fault) in table {
            edge += p;
            if roll < edge {
                return Some(fault);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_spec_example_and_refuses_nonsense() {
        let f = Faults::parse("5xx=0.05,drop=0.02,truncate=0.01,malformed=0.01,429=0.02,slow=0.01").unwrap();
        assert_eq!((f.server_error, f.drop, f.throttle, f.slow), (0.05, 0.02, 0.02, 0.01));
        assert_eq!(f.pick(0.0, 1), Some(Fault::ServerError(502)));
        assert_eq!(f.pick(0.06, 0), Some(Fault::Drop));
        assert_eq!(f.pick(0.115, 0), Some(Fault::Slow));
        assert_eq!(f.pick(0.12, 0), None);
        assert!(Faults::parse("5xx=2").unwrap_err().contains("between 0 and 1"));
        assert!(Faults::parse("gremlins=0.1").unwrap_err().contains("gremlins"));
        assert!(Faults::parse("5xx=0.6,drop=0.6").unwrap_err().contains("more than 1"));
        assert!(!Faults::parse("none").unwrap().any());
    }
}
