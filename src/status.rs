//! `crmdump status`: what a destination holds, for people and monitors. Per source and
//! account: the committed dates (mode, window, rows, requests, warnings, when), the dates
//! missing between the first and the newest, and the webhook journal's newest event; per root:
//! folders without a manifest and leases, held or stale. Read through the same scanner as
//! `verify` ([`crate::sink::scan`]).

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;

use crate::error::Result;
use crate::sink::Sink;
use crate::sink::lease;
use crate::sink::scan::scan;
use crate::state::State;
use crate::webhook::journal::{self, PartId};

/// One committed export date.
#[derive(Debug, Serialize)]
pub struct DateStatus {
    pub date: String,
    pub layout: String,
    pub mode: String,
    /// `[from, to)` of an incremental run.
    pub window: Option<[String; 2]>,
    pub rows: u64,
    pub requests: u64,
    pub warnings: usize,
    pub finished_at: String,
    /// Seconds since it was committed.
    pub age_seconds: Option<i64>,
}

/// The webhook journal of an account.
#[derive(Debug, Serialize)]
pub struct JournalStatus {
    pub parts: usize,
    /// When the newest journaled event was received.
    pub newest_received_at: Option<String>,
    pub newest_age_seconds: Option<i64>,
    /// Committed parts no committed export has consumed yet.
    pub unconsumed_parts: usize,
}

/// One source and account of a root.
#[derive(Debug, Serialize)]
pub struct AccountStatus {
    pub source: String,
    pub account: String,
    pub sandbox: bool,
    pub dates: Vec<DateStatus>,
    /// Dates between the first and the newest committed one that have no committed export.
    pub missing: Vec<String>,
    pub journal: Option<JournalStatus>,
}

impl AccountStatus {
    pub fn newest(&self) -> Option<&DateStatus> {
        self.dates.last()
    }
}

/// A lease of the root.
#[derive(Debug, Serialize)]
pub struct LeaseStatus {
    pub name: String,
    pub holder: Option<String>,
    /// `held`, `stale` (not renewed for longer than a holder renews), or `unknown`.
    pub state: &'static str,
    pub age_seconds: Option<i64>,
}

/// One export root.
#[derive(Debug, Serialize)]
pub struct RootStatus {
    pub root: String,
    pub accounts: Vec<AccountStatus>,
    /// Dates with parts and no manifest: a run killed, failed or still running.
    pub uncommitted: Vec<String>,
    pub leases: Vec<LeaseStatus>,
}

fn age(at: &str, now: DateTime<Utc>) -> Option<i64> {
    DateTime::parse_from_rfc3339(at).ok().map(|t| (now - t.with_timezone(&Utc)).num_seconds())
}

/// The status of the root `sink` (shown as `root`).
pub async fn root_status(sink: &Sink, root: &str, now: DateTime<Utc>) -> Result<RootStatus> {
    let scanned = scan(sink, &[journal::ROOT]).await?;
    let mut accounts: BTreeMap<(String, String), AccountStatus> = BTreeMap::new();
    let mut uncommitted = Vec::new();
    for day in &scanned.days {
        let Some(m) = &day.manifest else {
            uncommitted.push(day.date.clone());
            continue;
        };
        let a = accounts.entry((m.source.clone(), m.account.clone())).or_insert_with(|| AccountStatus {
            source: m.source.clone(),
            account: m.account.clone(),
            sandbox: m.sandbox,
            dates: Vec::new(),
            missing: Vec::new(),
            journal: None,
        });
        a.dates.push(DateStatus {
            date: day.date.clone(),
            layout: day.layout.name().to_string(),
            mode: m.mode.clone(),
            window: m.window.as_ref().map(|w| [w.from.clone(), w.to.clone()]),
            rows: m.tables.iter().map(|t| t.rows).sum(),
            requests: m.requests,
            warnings: m.warnings.len(),
            finished_at: m.finished_at.clone(),
            age_seconds: age(&m.finished_at, now),
        });
    }
    uncommitted.dedup();
    // Accounts whose journal holds events, exported yet or not.
    let mut parts: BTreeMap<(String, String), Vec<PartId>> = BTreeMap::new();
    for (key, _) in sink.list(journal::ROOT).await? {
        if let Some((id, true)) = PartId::of_key(&key)
            && id.account != journal::DEAD_LETTERS
        {
            parts.entry((id.source.clone(), id.account.clone())).or_default().push(id);
        }
    }
    for (source, account) in parts.keys() {
        let known = accounts.keys().any(|(s, a)| s == source && crate::sink::claim::safe_segment(a) == *account);
        if !known {
            accounts.insert(
                (source.clone(), account.clone()),
                AccountStatus {
                    source: source.clone(),
                    account: account.clone(),
                    sandbox: false,
                    dates: Vec::new(),
                    missing: Vec::new(),
                    journal: None,
                },
            );
        }
    }
    for a in accounts.values_mut() {
        a.dates.sort_by(|x, y| x.date.cmp(&y.date));
        a.missing = missing_dates(&a.dates);
        let key = (a.source.clone(), crate::sink::claim::safe_segment(&a.account));
        if let Some(committed) = parts.remove(&key) {
            a.journal = Some(journal_status(sink, a, committed, now).await?);
        }
    }
    let leases = scanned
        .leases
        .iter()
        .map(|l| {
            let stale = l.age.and_then(|a| a.to_std().ok()).is_some_and(|a| a > lease::DEFAULT_STALE_AFTER);
            let state = match l.held {
                Some(true) => "held",
                Some(false) => "stale",
                None if stale => "stale",
                None if l.age.is_some() => "held",
                None => "unknown",
            };
            LeaseStatus {
                name: l.name.clone(),
                holder: l
                    .holder
                    .as_ref()
                    .map(|h| format!("{} on {} (pid {}), since {}", h.command, h.host, h.pid, h.started_at)),
                state,
                age_seconds: l.age.map(|a| a.num_seconds()),
            }
        })
        .collect();
    Ok(RootStatus { root: root.to_string(), accounts: accounts.into_values().collect(), uncommitted, leases })
}

/// Every date between the first and the last of `dates` (sorted) that is not among them.
fn missing_dates(dates: &[DateStatus]) -> Vec<String> {
    let parsed: Vec<NaiveDate> = dates.iter().filter_map(|d| d.date.parse().ok()).collect();
    let (Some(first), Some(last)) = (parsed.first(), parsed.last()) else { return Vec::new() };
    first.iter_days().take_while(|d| d <= last).filter(|d| !parsed.contains(d)).map(crate::model::day_key).collect()
}

/// The journal of account `a` from its committed parts (not empty).
async fn journal_status(
    sink: &Sink,
    a: &AccountStatus,
    mut committed: Vec<PartId>,
    now: DateTime<Utc>,
) -> Result<JournalStatus> {
    committed.sort();
    let newest = committed.last().expect("not empty");
    let lines: Vec<journal::Line> = match sink.get(&newest.part_key()).await? {
        Some(bytes) => journal::decode(&newest.part_key(), &bytes)?,
        None => Vec::new(),
    };
    let received = lines.iter().map(|l| l.received_at_ms).max().and_then(DateTime::from_timestamp_millis);
    let consumed = State::load(sink, &a.source, &a.account).await?.and_then(|s| s.journal);
    let unconsumed = committed
        .iter()
        .filter(|id| consumed.as_deref().is_none_or(|c| id.position().to_string().as_str() > c))
        .count();
    Ok(JournalStatus {
        parts: committed.len(),
        newest_received_at: received.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        newest_age_seconds: received.map(|t| (now - t).num_seconds()),
        unconsumed_parts: unconsumed,
    })
}

/// The roots a destination template names: itself, or with `{source}` and `{account}` every
/// folder that fills them.
pub async fn roots(template: &str) -> Result<Vec<String>> {
    let Some(at) = template.find('{') else { return Ok(vec![template.to_string()]) };
    let (prefix, pattern) = template.split_at(at);
    let prefix = prefix.trim_end_matches('/');
    let sink = Sink::open_existing(prefix)?;
    let mut found = vec![(String::new(), prefix.to_string())];
    for segment in pattern.split('/').filter(|s| !s.is_empty()) {
        let mut next = Vec::new();
        for (key, url) in found {
            if segment.starts_with('{') && segment.ends_with('}') {
                for name in sink.folders(&key).await? {
                    if !name.starts_with('_') {
                        let child = if key.is_empty() { name.clone() } else { format!("{key}/{name}") };
                        next.push((child, format!("{url}/{name}")));
                    }
                }
            } else {
                let child = if key.is_empty() { segment.to_string() } else { format!("{key}/{segment}") };
                next.push((child, format!("{url}/{segment}")));
            }
        }
        found = next;
    }
    Ok(found.into_iter().map(|(_, url)| url).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dated(d: &str) -> DateStatus {
        DateStatus {
            date: d.into(),
            layout: "daily".into(),
            mode: "incremental".into(),
            window: None,
            rows: 0,
            requests: 0,
            warnings: 0,
            finished_at: String::new(),
            age_seconds: None,
        }
    }

    #[test]
    fn missing_dates_lie_between_the_first_and_the_newest() {
        let dates: Vec<DateStatus> = ["2026-11-01", "2026-11-02", "2026-11-05"].into_iter().map(dated).collect();
        assert_eq!(missing_dates(&dates), ["2026-11-03", "2026-11-04"]);
        assert!(missing_dates(&[]).is_empty());
    }
}
