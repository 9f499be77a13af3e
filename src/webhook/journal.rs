//! The journal: where acknowledged webhook events land in the destination, for the exports
//! of the same account to read and for people to query.
//!
//! `<dest>/_webhooks/<source>/<account>/<YYYY-MM-DD>/part-<seq>.ndjson.gz` holds events, one
//! JSON object per line, gzip; the day is the day they were received (UTC), and `seq` grows
//! with every part the listener writes, so `(day, seq)` orders an account's parts and a
//! reader's position is the last one it consumed. Each part is committed by a marker written
//! after it, `<day>/_committed/part-<seq>.json`: a manifest (the same format and the same
//! check as a day folder's) listing the part with its size, sha256 and line count. A part
//! without its marker is not yet committed: readers skip it, and the listener that wrote it
//! writes it again with its marker after a restart. Nothing is ever rewritten per request:
//! a part is written once, by one `put`, which no reader sees half done.
//!
//! Bodies that came from an authenticated sender but are no events (dead letters) are kept
//! the same way under the account `_dead_letters`.

use std::io::{Read, Write};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::sink::Sink;
use crate::sink::claim::safe_segment;
use crate::sink::manifest::{FORMAT_VERSION, Manifest, TableEntry};
use crate::sink::verify::{Report, Target, verify};
use crate::write::PartReceipt;

/// The journal's folder in a destination.
pub const ROOT: &str = "_webhooks";
/// The account under which dead letters are kept.
pub const DEAD_LETTERS: &str = "_dead_letters";
/// The folder of a day's markers.
const COMMITTED: &str = "_committed";
/// A part's extension.
pub const EXT: &str = "ndjson.gz";
/// What a marker calls its table: events, or dead letters.
pub const EVENTS_TABLE: &str = "EVENTS";
pub const DEAD_LETTERS_TABLE: &str = "DEAD_LETTERS";

/// One part of the journal.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PartId {
    pub source: String,
    /// As it appears in keys (see [`safe_segment`]).
    pub account: String,
    /// `YYYY-MM-DD`, the day its events were received (UTC).
    pub day: String,
    pub seq: u64,
}

impl PartId {
    pub fn new(source: &str, account: &str, received_at_ms: i64, seq: u64) -> PartId {
        let day = crate::model::day_key(
            chrono::DateTime::from_timestamp_millis(received_at_ms).unwrap_or_default().date_naive(),
        );
        PartId { source: source.to_string(), account: safe_segment(account), day, seq }
    }

    /// The day's folder, relative to the destination.
    pub fn folder(&self) -> String {
        format!("{}/{}", account_folder(&self.source, &self.account), self.day)
    }

    fn name(&self) -> String {
        format!("part-{:020}", self.seq)
    }

    pub fn part_key(&self) -> String {
        format!("{}/{}.{EXT}", self.folder(), self.name())
    }

    pub fn marker_key(&self) -> String {
        format!("{}/{COMMITTED}/{}.json", self.folder(), self.name())
    }

    pub fn position(&self) -> Position {
        Position { day: self.day.clone(), seq: self.seq }
    }

    /// The part a key names (a part or a marker, relative to the destination), and whether
    /// it is the marker.
    pub fn of_key(key: &str) -> Option<(PartId, bool)> {
        let rest = key.strip_prefix(ROOT)?.strip_prefix('/')?;
        let segments: Vec<&str> = rest.split('/').collect();
        let (source, account, day, file, marker) = match segments[..] {
            [s, a, d, f] => (s, a, d, f.strip_suffix(&format!(".{EXT}"))?, false),
            [s, a, d, COMMITTED, f] => (s, a, d, f.strip_suffix(".json")?, true),
            _ => return None,
        };
        let seq = file.strip_prefix("part-")?.parse().ok()?;
        day.parse::<chrono::NaiveDate>().ok()?;
        Some((PartId { source: source.into(), account: account.into(), day: day.into(), seq }, marker))
    }
}

/// The folder of an account's journal, relative to the destination.
pub fn account_folder(source: &str, account: &str) -> String {
    format!("{ROOT}/{source}/{}", safe_segment(account))
}

/// Where a reader of an account's journal stopped: the last part it consumed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Position {
    pub day: String,
    pub seq: u64,
}

impl std::fmt::Display for Position {
    /// `<day>/<seq>`, as the state file keeps it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{:020}", self.day, self.seq)
    }
}

impl std::str::FromStr for Position {
    type Err = Error;
    fn from_str(s: &str) -> Result<Position> {
        let bad = || {
            Error::corrupt(
                "the state's journal position",
                format!("'{s}' is not a journal position (<day>/<seq>); restore the state file"),
            )
        };
        let (day, seq) = s.split_once('/').ok_or_else(bad)?;
        Ok(Position { day: day.to_string(), seq: seq.parse().map_err(|_| bad())? })
    }
}

/// One event as the journal keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Line {
    pub source: String,
    pub account: String,
    /// The same for every delivery of the event (see [`super::event::Event::key`]).
    pub key: String,
    /// `contact.propertyChange`, `deal.change`, ...
    pub kind: String,
    pub object_id: Option<String>,
    pub occurred_at_ms: Option<i64>,
    pub received_at_ms: i64,
    /// The event's bytes as the sender sent them (of its first delivery that arrived), with
    /// insignificant whitespace removed so that the line stays one line: numbers, key order
    /// and escapes untouched.
    pub event: Box<serde_json::value::RawValue>,
}

impl Line {
    /// The event, parsed.
    pub fn value(&self) -> Value {
        serde_json::from_str(self.event.get()).unwrap_or(Value::Null)
    }
}

/// A body from an authenticated sender that holds no event, as the journal keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub source: String,
    pub received_at_ms: i64,
    /// Why it is no event.
    pub error: String,
    /// The body as text (bytes that are not UTF-8 replaced).
    pub body: String,
    /// The body's exact bytes, base64.
    pub body_base64: String,
}

/// Gzip NDJSON of `lines`.
pub fn encode<T: Serialize>(lines: &[T]) -> Result<Bytes> {
    // Level 1: the listener compresses on the path of every event, where CPU is latency.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    for line in lines {
        let json = serde_json::to_vec(line).map_err(|e| Error::Internal(e.to_string()))?;
        gz.write_all(&json).and_then(|()| gz.write_all(b"\n")).map_err(|e| Error::io("compressing", e))?;
    }
    Ok(Bytes::from(gz.finish().map_err(|e| Error::io("compressing", e))?))
}

/// The lines of a part's bytes.
pub fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<Vec<T>> {
    let mut text = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut text)
        .map_err(|e| Error::corrupt(key, format!("not gzip ({e})")))?;
    text.split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .enumerate()
        .map(|(i, l)| {
            serde_json::from_slice(l)
                .map_err(|e| Error::corrupt(key, format!("line {}: not a journal line ({e})", i + 1)))
        })
        .collect()
}

/// Writes a part and then its marker. Idempotent: a part already committed is left alone,
/// and a part written without its marker (by a listener killed in between) is written again,
/// whole, before the marker. Returns whether it was already committed.
pub async fn commit_part(sink: &Sink, id: &PartId, table: &str, bytes: Bytes, rows: u64) -> Result<bool> {
    if sink.get(&id.marker_key()).await?.is_some() {
        return Ok(true);
    }
    let receipt = PartReceipt {
        path: format!("{}.{EXT}", id.name()),
        rows,
        bytes: bytes.len() as u64,
        sha256: hex::encode(Sha256::digest(&bytes)),
    };
    sink.put(&id.part_key(), bytes).await?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let marker = Manifest {
        format_version: FORMAT_VERSION,
        crmdump_version: env!("CARGO_PKG_VERSION").to_string(),
        source: id.source.clone(),
        account: id.account.clone(),
        sandbox: false,
        objects: Vec::new(),
        streams: Vec::new(),
        object_types: Vec::new(),
        export_date: id.day.clone(),
        mode: "webhook".into(),
        window: None,
        started_at: now.clone(),
        finished_at: now,
        format: EXT.into(),
        layout: "journal".into(),
        tables: vec![TableEntry { name: table.into(), rows, columns: Vec::new(), files: vec![receipt] }],
        associations: None,
        reconcile: None,
        requests: 0,
        retries: 0,
        warnings: Vec::new(),
    };
    let body = serde_json::to_vec_pretty(&marker).map_err(|e| Error::Internal(e.to_string()))?;
    sink.put(&id.marker_key(), Bytes::from(body)).await?;
    Ok(false)
}

/// The committed parts of an account's journal after `after` (all of them without it), in
/// order, each with its events. A part whose bytes do not match its marker is an error: the
/// journal is damaged and `crmdump verify` says where.
pub async fn read_since(
    sink: &Sink,
    source: &str,
    account: &str,
    after: Option<&Position>,
) -> Result<Vec<(PartId, Vec<Line>)>> {
    let folder = account_folder(source, account);
    let offset = after.map(|p| {
        let id = PartId { source: source.into(), account: safe_segment(account), day: p.day.clone(), seq: p.seq };
        id.marker_key()
    });
    let mut ids: Vec<PartId> = sink
        .list_after(&folder, offset.as_deref())
        .await?
        .into_iter()
        .filter_map(|o| PartId::of_key(&o.key))
        .filter(|(id, marker)| *marker && after.is_none_or(|a| id.position() > *a))
        .map(|(id, _)| id)
        .collect();
    ids.sort();
    let mut parts = Vec::with_capacity(ids.len());
    for id in ids {
        let damaged = |detail: String| Error::corrupt(id.part_key(), format!("{detail}; run crmdump verify"));
        let marker = sink.get(&id.marker_key()).await?.ok_or_else(|| damaged("its marker vanished".into()))?;
        let marker: Manifest = serde_json::from_slice(&marker).map_err(|e| damaged(format!("marker: {e}")))?;
        let receipt =
            marker.tables.first().and_then(|t| t.files.first()).ok_or_else(|| damaged("empty marker".into()))?;
        let bytes = sink.get(&id.part_key()).await?.ok_or_else(|| damaged("missing".into()))?;
        if hex::encode(Sha256::digest(&bytes)) != receipt.sha256 {
            return Err(damaged("its sha256 differs from its marker's".into()));
        }
        let lines = decode(&id.part_key(), &bytes)?;
        parts.push((id, lines));
    }
    Ok(parts)
}

/// The events of an account's journal that a run has not consumed yet.
#[derive(Debug, Clone)]
pub struct Pending {
    pub lines: std::sync::Arc<Vec<Line>>,
    /// The last part read, or the start position when nothing is new.
    pub end: Option<String>,
}

impl Pending {
    /// The journal's events of `account` after `start` (a position, `None` for the journal's
    /// start); `None` when the account has no journal.
    pub async fn read(sink: &Sink, source: &str, account: &str, start: Option<&str>) -> Result<Option<Pending>> {
        let after: Option<Position> = start.map(str::parse).transpose()?;
        let parts = read_since(sink, source, account, after.as_ref()).await?;
        if parts.is_empty() && start.is_none() {
            return Ok(None);
        }
        let end = parts.last().map(|(id, _)| id.position().to_string()).or_else(|| start.map(String::from));
        let lines: Vec<Line> = parts.into_iter().flat_map(|(_, lines)| lines).collect();
        tracing::info!(events = lines.len(), after = start.unwrap_or("the start"), "Read the webhook journal.");
        Ok(Some(Pending { lines: std::sync::Arc::new(lines), end }))
    }
}

/// How long a part may sit without its marker before `verify` calls it a problem: a running
/// listener writes the marker right after the part.
const UNCOMMITTED_GRACE: chrono::Duration = chrono::Duration::minutes(10);

/// Checks every committed journal part in `sink` against its marker (size, sha256, lines),
/// and finds parts left without a marker. One report per journal day.
pub async fn verify_journal(sink: &Sink) -> Result<Vec<(String, Report)>> {
    let listed = sink.list_after(ROOT, None).await?;
    let mut days: std::collections::BTreeMap<String, (Vec<PartId>, Vec<PartId>)> = Default::default();
    let mut parts = std::collections::HashSet::new();
    let mut stale = Vec::new();
    let now = chrono::Utc::now();
    for o in &listed {
        let Some((id, marker)) = PartId::of_key(&o.key) else { continue };
        let (markers, _) = days.entry(id.folder()).or_default();
        if marker {
            markers.push(id);
        } else {
            parts.insert(id.clone());
            if now - o.modified > UNCOMMITTED_GRACE {
                stale.push(id);
            }
        }
    }
    for id in stale {
        days.entry(id.folder()).or_default().1.push(id);
    }
    let mut out = Vec::new();
    for (folder, (markers, uncommitted)) in days {
        let mut report = Report::default();
        for id in &markers {
            let target = Target {
                manifest_key: id.marker_key(),
                base: id.folder(),
                present: if parts.contains(id) { vec![id.part_key()] } else { Vec::new() },
            };
            let found = verify(sink, &target).await?;
            report.files_checked += found.files_checked;
            report.problems.extend(found.problems);
        }
        for id in uncommitted.iter().filter(|id| !markers.contains(id)) {
            report.problems.push(format!(
                "{}: written but never committed (no marker after {} minutes): restart the listener that wrote it, which commits it",
                id.part_key(),
                UNCOMMITTED_GRACE.num_minutes()
            ));
        }
        out.push((folder, report));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(account: &str, key: &str) -> Line {
        Line {
            source: "hubspot".into(),
            account: account.into(),
            key: key.into(),
            kind: "contact.propertyChange".into(),
            object_id: Some("1".into()),
            occurred_at_ms: Some(1),
            received_at_ms: 2,
            event: serde_json::value::RawValue::from_string(r#"{"eventId":1}"#.into()).unwrap(),
        }
    }

    #[test]
    fn keys_name_their_part_and_order_by_day_then_sequence() {
        let id = PartId::new("hubspot", "62515", 1_764_374_400_000, 42);
        assert_eq!(id.day, "2025-11-29");
        assert_eq!(id.part_key(), "_webhooks/hubspot/62515/2025-11-29/part-00000000000000000042.ndjson.gz");
        assert_eq!(id.marker_key(), "_webhooks/hubspot/62515/2025-11-29/_committed/part-00000000000000000042.json");
        assert_eq!(PartId::of_key(&id.part_key()), Some((id.clone(), false)));
        assert_eq!(PartId::of_key(&id.marker_key()), Some((id.clone(), true)));
        assert_eq!(PartId::of_key("_webhooks/hubspot/62515/notaday/part-1.ndjson.gz"), None);
        assert_eq!(PartId::new("pipedrive", "../x", 0, 1).account, "___x", "an account is one safe segment");
        let later = PartId::new("hubspot", "62515", 1_764_374_400_000 + 86_400_000, 1);
        assert!(later.position() > id.position(), "a later day sorts after, whatever its sequence");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn parts_commit_once_read_from_a_position_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::open(dir.path().to_str().unwrap()).unwrap();
        let ids: Vec<PartId> = (1..=3).map(|seq| PartId::new("hubspot", "7", 1_764_374_400_000, seq)).collect();
        for (i, id) in ids.iter().enumerate() {
            let lines = vec![line("7", &format!("k{i}a")), line("7", &format!("k{i}b"))];
            assert!(!commit_part(&sink, id, EVENTS_TABLE, encode(&lines).unwrap(), 2).await.unwrap());
        }
        assert!(commit_part(&sink, &ids[0], EVENTS_TABLE, encode(&[line("7", "x")]).unwrap(), 1).await.unwrap());
        let all = read_since(&sink, "hubspot", "7", None).await.unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].1[0].key, "k0a", "a committed part is never rewritten");
        let rest = read_since(&sink, "hubspot", "7", Some(&ids[0].position())).await.unwrap();
        assert_eq!(rest.iter().map(|(id, _)| id.seq).collect::<Vec<_>>(), [2, 3]);
        assert!(read_since(&sink, "hubspot", "8", None).await.unwrap().is_empty());
        let reports = verify_journal(&sink).await.unwrap();
        assert_eq!(reports.len(), 1);
        assert!(reports[0].1.problems.is_empty(), "{:?}", reports[0].1.problems);
        // A part written without its marker is no part of the journal yet.
        let loose = PartId::new("hubspot", "7", 1_764_374_400_000, 4);
        sink.put(&loose.part_key(), encode(&[line("7", "loose")]).unwrap()).await.unwrap();
        assert_eq!(read_since(&sink, "hubspot", "7", None).await.unwrap().len(), 3);
        // A flipped byte is found, by verify and by a reader.
        let path = dir.path().join(ids[1].part_key());
        let mut bytes = std::fs::read(&path).unwrap();
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0x01;
        std::fs::write(&path, bytes).unwrap();
        let problems = &verify_journal(&sink).await.unwrap()[0].1.problems;
        assert!(problems.iter().any(|p| p.contains("sha256") && p.contains(&ids[1].part_key())), "{problems:?}");
        assert!(read_since(&sink, "hubspot", "7", None).await.unwrap_err().to_string().contains("damaged"));
    }
}
