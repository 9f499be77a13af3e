//! `<dest>/_state/<source>-<account>.json`: how far each stream's committed exports reach,
//! so that a nightly run reads only what changed (docs/FORMAT.md, "Modes").
//!
//! Per stream (named by its table) a watermark: every change before it is in a committed
//! day folder. An incremental run reads `[start - lookback, run start - settle lag)`, where
//! `start` is the stream's watermark, or, when the date was already exported, the watermark
//! that date's first run started from: a re-run rewrites the day folder, so it must hold
//! everything the first run held. The file is written only after the day's manifest, so a
//! failed or interrupted run never moves a watermark; a crash between the two only makes
//! the next run read some changes again.

pub mod baseline;

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Duration, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model::{Extent, Window, day_key};
use crate::schema::{iso, parse_instant};
use crate::sink::Sink;

const FORMAT_VERSION: u32 = 1;
/// Export dates whose starting watermarks are kept (re-running an older date reads it whole).
const DAYS_KEPT: usize = 62;
/// Export dates whose baselines of ids are kept (a re-run of an older date compares with the
/// oldest kept).
const BASELINES_KEPT: usize = 7;

/// How far a watermark may lie ahead of this machine's clock before it is refused: clocks of
/// the machines that run crmdump disagree by seconds, not minutes.
pub const CLOCK_SKEW: Duration = Duration::minutes(5);

/// Lookback and settle lag of incremental runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Read this much before the watermark again: changes HubSpot indexes late are not lost.
    pub lookback: Duration,
    /// Leave the newest changes to the next run: search shows them "after a few moments".
    pub settle: Duration,
}

impl Timing {
    pub const DEFAULT: Timing = Timing { lookback: Duration::minutes(10), settle: Duration::minutes(1) };
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub format_version: u32,
    pub source: String,
    pub account: String,
    /// Stream (table name) -> every change before this instant is committed.
    pub watermarks: BTreeMap<String, String>,
    /// Export date -> the watermarks its first committed run started from (a stream that
    /// run read whole is absent).
    pub days: BTreeMap<String, BTreeMap<String, String>>,
    /// The webhook journal: the last part a committed export consumed (`<day>/<seq>`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal: Option<String>,
    /// Export date -> the journal position its first committed run started after (`""`:
    /// the journal's start), so that a re-run of the date consumes the same events again.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub journal_days: BTreeMap<String, String>,
    /// Records merged away that a survivor's merge property reported (`<type id>/<id>`), and
    /// the export date that first did: reported once, again only by a re-run of that date.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub merges_reported: BTreeMap<String, String>,
    /// Export date -> the baseline of ids its last committed run left: object type id -> the
    /// file of its ids (see [`baseline`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub baselines: BTreeMap<String, BTreeMap<String, String>>,
    /// The account's associated pairs and their association types as the last committed
    /// export knew them: later runs read these pairs without asking the API which pairs
    /// exist (HubSpot; absent before the first export that learnt them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub association_types: Option<crate::model::AssociationTypes>,
    pub updated_at: String,
}

impl Plan {
    /// Reads `stream` whole in this run (its next watermark is still the run's).
    pub fn read_whole(&mut self, stream: &str) {
        self.extent.clear(stream);
        self.starts.insert(stream.to_string(), None);
    }
}

/// What an incremental run reads, and what to record once it is committed.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub extent: Extent,
    /// Per stream, the watermark the window started from (`None`: read whole).
    pub starts: BTreeMap<String, Option<DateTime<Utc>>>,
    /// The next watermark of every stream of the run.
    pub until: DateTime<Utc>,
}

impl State {
    /// Where the state of `source`/`account` lives under the destination.
    pub fn key(source: &str, account: &str) -> String {
        format!("_state/{source}-{}.json", crate::sink::claim::safe_segment(account))
    }

    pub async fn load(sink: &Sink, source: &str, account: &str) -> Result<Option<State>> {
        let key = State::key(source, account);
        let Some(bytes) = sink.get(&key).await? else {
            return Ok(None);
        };
        let state: State = serde_json::from_slice(&bytes).map_err(|e| {
            Error::corrupt(
                format!("the state file {}/{key}", sink.display()),
                format!("not valid ({e}); restore it, or delete it and run `--mode full`"),
            )
        })?;
        if state.format_version != FORMAT_VERSION {
            return Err(Error::Config(format!(
                "the state file {}/{key} has format {} but this crmdump reads format {FORMAT_VERSION}: upgrade crmdump",
                sink.display(),
                state.format_version
            )));
        }
        Ok(Some(state))
    }

    pub fn new(source: &str, account: &str) -> State {
        State { format_version: FORMAT_VERSION, source: source.into(), account: account.into(), ..State::default() }
    }

    /// The windows of an incremental run of `date` over `streams` started at `started_at`.
    pub fn plan_incremental(
        &self,
        date: NaiveDate,
        streams: &[String],
        timing: Timing,
        started_at: DateTime<Utc>,
    ) -> Plan {
        let until = started_at - timing.settle;
        let first_run = self.days.get(&day_key(date));
        let mut extent = Extent::whole();
        let mut starts = BTreeMap::new();
        for stream in streams {
            let start = match first_run {
                Some(starts) => starts.get(stream),
                None => self.watermarks.get(stream),
            }
            .and_then(|t| parse_instant(t));
            if let Some(start) = start {
                extent.set(stream, Window { from: (start - timing.lookback).min(until), to: until });
            }
            starts.insert(stream.clone(), start);
        }
        Plan { extent, starts, until }
    }

    /// Where a run of `date` starts reading the webhook journal: after the position that
    /// date's first run started from, else after the last consumed part (`None`: from the
    /// journal's start).
    pub fn journal_start(&self, date: NaiveDate) -> Option<String> {
        match self.journal_days.get(&day_key(date)) {
            Some(start) => Some(start.clone()).filter(|s| !s.is_empty()),
            None => self.journal.clone(),
        }
    }

    /// Records that a committed run of `date` consumed the journal from after `start` to
    /// `end` (both `None` when it holds nothing yet).
    pub fn commit_journal(&mut self, date: NaiveDate, start: Option<String>, end: Option<String>) {
        self.journal_days.entry(day_key(date)).or_insert_with(|| start.unwrap_or_default());
        if end.is_some() && end > self.journal {
            self.journal = end;
        }
        while self.journal_days.len() > DAYS_KEPT {
            self.journal_days.pop_first();
        }
    }

    /// The merged records reported before `date` (not to be reported again by a run of it).
    pub fn merges_known_before(&self, date: NaiveDate) -> std::collections::HashSet<String> {
        let day = day_key(date);
        self.merges_reported.iter().filter(|(_, first)| **first < day).map(|(id, _)| id.clone()).collect()
    }

    /// Records the merged records a committed run of `date` reported.
    pub fn commit_merges(&mut self, date: NaiveDate, reported: &std::collections::BTreeSet<String>) {
        for id in reported {
            self.merges_reported.entry(id.clone()).or_insert_with(|| day_key(date));
        }
    }

    /// For an incremental run of `date`: the newest export date after it, when `date`'s
    /// starting watermarks are not kept (never exported, or too long ago). Such a run would
    /// start from the current watermarks and write recent changes under an old date.
    pub fn forgotten(&self, date: NaiveDate) -> Option<String> {
        let key = day_key(date);
        if self.days.contains_key(&key) {
            return None;
        }
        self.days.keys().next_back().filter(|newest| **newest > key).cloned()
    }

    /// A watermark later than `now` by more than [`CLOCK_SKEW`], when there is one (the
    /// stream and its instant): a restored or hand-edited state, or a clock that jumped. An
    /// incremental run from it would read an empty window.
    pub fn watermark_ahead_of(&self, now: DateTime<Utc>) -> Option<(String, DateTime<Utc>)> {
        self.watermarks
            .iter()
            .chain(self.days.values().flat_map(|starts| starts.iter()))
            .filter_map(|(stream, t)| Some((stream.clone(), parse_instant(t)?)))
            .filter(|(_, t)| *t > now + CLOCK_SKEW)
            .max_by_key(|(_, t)| *t)
    }

    /// A full run of `streams`: everything whole.
    pub fn plan_full(streams: &[String], timing: Timing, started_at: DateTime<Utc>) -> Plan {
        Plan {
            extent: Extent::whole(),
            starts: streams.iter().map(|s| (s.clone(), None)).collect(),
            until: started_at - timing.settle,
        }
    }

    /// Records a committed run of `date`.
    pub fn commit(&mut self, date: NaiveDate, plan: &Plan) {
        // Only the date's first run sets its starts: a stream absent from them is read whole
        // by every later run of the date.
        self.days
            .entry(day_key(date))
            .or_insert_with(|| plan.starts.iter().filter_map(|(s, t)| Some((s.clone(), iso((*t)?)))).collect());
        for stream in plan.starts.keys() {
            self.watermarks.insert(stream.clone(), iso(plan.until));
        }
        while self.days.len() > DAYS_KEPT {
            let oldest = self.days.keys().next().cloned().expect("not empty");
            self.days.remove(&oldest);
        }
        self.updated_at = iso(Utc::now());
    }

    /// The baseline a run of `date` starts from: the newest an earlier date left.
    pub fn baseline_before(&self, date: NaiveDate) -> Option<&BTreeMap<String, String>> {
        self.baselines.range(..day_key(date)).next_back().map(|(_, refs)| refs)
    }

    /// Records the baseline a committed run of `date` left, keeping the newest few dates.
    pub fn commit_baseline(&mut self, date: NaiveDate, refs: BTreeMap<String, String>) {
        self.baselines.insert(day_key(date), refs);
        while self.baselines.len() > BASELINES_KEPT {
            let oldest = self.baselines.keys().next().cloned().expect("not empty");
            self.baselines.remove(&oldest);
        }
    }

    pub async fn save(&self, sink: &Sink) -> Result<String> {
        let key = State::key(&self.source, &self.account);
        let body = serde_json::to_vec_pretty(self).map_err(|e| Error::Internal(e.to_string()))?;
        sink.put(&key, Bytes::from(body)).await?;
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        parse_instant(s).unwrap()
    }

    #[test]
    fn a_rerun_of_a_date_starts_where_that_dates_first_run_started() {
        let streams = vec!["OBJECTS_CONTACTS".to_string(), "OBJECTS_DEALS".to_string()];
        let timing = Timing::DEFAULT;
        let d1 = NaiveDate::from_ymd_opt(2026, 11, 20).unwrap();
        let d2 = NaiveDate::from_ymd_opt(2026, 11, 21).unwrap();
        let mut state = State::new("hubspot", "123");

        // First run ever: full; watermark = start - settle.
        let full = State::plan_full(&streams, timing, at("2026-11-20T02:00:00Z"));
        state.commit(d1, &full);
        assert_eq!(state.watermarks["OBJECTS_CONTACTS"], "2026-11-20T01:59:00.000Z");

        // Next night: from the watermark minus the lookback.
        let night = state.plan_incremental(d2, &streams, timing, at("2026-11-21T02:00:00Z"));
        let w = night.extent.window("OBJECTS_CONTACTS").unwrap();
        assert_eq!((iso(w.from), iso(w.to)), ("2026-11-20T01:49:00.000Z".into(), "2026-11-21T01:59:00.000Z".into()));
        state.commit(d2, &night);

        // A second run of d2 the same day starts where d2's first run did, not at the new watermark.
        let again = state.plan_incremental(d2, &streams, timing, at("2026-11-21T09:00:00Z"));
        let w = again.extent.window("OBJECTS_DEALS").unwrap();
        assert_eq!((iso(w.from), iso(w.to)), ("2026-11-20T01:49:00.000Z".into(), "2026-11-21T08:59:00.000Z".into()));
        state.commit(d2, &again);
        assert_eq!(state.watermarks["OBJECTS_DEALS"], "2026-11-21T08:59:00.000Z");

        // Re-running d1 (first run full) reads whole again; a stream never seen reads whole.
        let mut more = streams.clone();
        more.push("OBJECTS_CARS".into());
        let redo = state.plan_incremental(d1, &more, timing, at("2026-11-21T10:00:00Z"));
        assert!(redo.extent.is_whole());
        let next = state.plan_incremental(d2, &more, timing, at("2026-11-21T10:00:00Z"));
        assert!(next.extent.window("OBJECTS_CARS").is_none() && next.extent.window("OBJECTS_CONTACTS").is_some());
    }
}
