//! The drainer: moves what the spool holds into the journal, once.
//!
//! One batch at a time: the oldest spooled requests are parsed into events, events already
//! in the journal are dropped (HubSpot and Pipedrive both deliver some events twice), and the
//! rest go to one journal part per source, account and day, each part's marker written after
//! it. Only then are the requests removed from the spool.
//!
//! A crash at any point loses nothing and writes nothing twice. Before a batch touches the
//! destination, its requests and the length of the de-duplication log are written down (the
//! intent). A restart finds the intent and runs the same batch again against the same
//! de-duplication state, so it plans the same parts under the same names: those already
//! committed are left alone, a part written without its marker is written again with it, the
//! rest are written. Once the batch is committed the intent says so, and the requests are
//! removed.
//!
//! De-duplication remembers the most recent events (`window` of them) as 128-bit
//! fingerprints, in memory and in an append-only log beside the spool that survives
//! restarts. Memory stays bounded by the window; a duplicate older than it reaches the
//! journal, where readers drop it by its key.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::event::{self, Event};
use super::journal::{self, DEAD_LETTERS, DEAD_LETTERS_TABLE, DeadLetter, EVENTS_TABLE, Line, PartId};
use super::spool::{Entry, Spool, write_durably};
use super::stats::{Stats, add};
use crate::error::{Error, Result};
use crate::sink::Sink;
use crate::sink::claim;

/// The intent's file, in the spool folder.
const INTENT: &str = "drain.intent";
/// The de-duplication log's file, in the spool folder.
/// The de-duplication log of the spool's destination: `seen-<digest of the destination>.log`,
/// so that the events a journal holds are never taken for those of another's.
const SEEN_LOG: &str = "seen";
/// The destination the spool's requests were acknowledged for.
const DESTINATION: &str = "destination";
/// Spooled bytes drained per batch, at most: parsed events take several times their raw
/// size, and a batch's work is one burst of CPU on the listener's cores, so batches stay small
/// (memory bounded, acknowledgements not held up).
const BATCH_BYTES: u64 = 2 << 20;
/// Bytes of one fingerprint in the log.
const FINGERPRINT: u64 = 16;

/// The fingerprint of an event: its source, account and key.
fn fingerprint(source: &str, account: &str, key: &str) -> u128 {
    let digest = Sha256::new()
        .chain_update(source)
        .chain_update([0])
        .chain_update(account)
        .chain_update([0])
        .chain_update(key)
        .finalize();
    u128::from_be_bytes(digest[..16].try_into().expect("16 bytes"))
}

/// The events most recently written to the journal, in memory and in the log.
struct Seen {
    set: HashSet<u128>,
    order: VecDeque<u128>,
    window: usize,
    log: PathBuf,
    /// Bytes of the log.
    log_len: u64,
}

impl Seen {
    /// Loads the last `window` fingerprints of `destination`'s log (cut to whole fingerprints).
    fn open(dir: &Path, destination: &str, window: usize) -> io::Result<Seen> {
        let digest = hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(destination.as_bytes())[..8]);
        let log = dir.join(format!("{SEEN_LOG}-{digest}.log"));
        let mut seen = Seen { set: HashSet::new(), order: VecDeque::new(), window, log, log_len: 0 };
        seen.reload(None)?;
        Ok(seen)
    }

    /// Reads the log again, first cutting it to `len` bytes when given.
    fn reload(&mut self, len: Option<u64>) -> io::Result<()> {
        let mut file = OpenOptions::new().create(true).truncate(false).read(true).write(true).open(&self.log)?;
        let whole = file.metadata()?.len() / FINGERPRINT * FINGERPRINT;
        let len = len.unwrap_or(whole).min(whole);
        if len != file.metadata()?.len() {
            file.set_len(len)?;
            file.sync_all()?;
        }
        let keep = (self.window as u64 * FINGERPRINT).min(len);
        file.seek(SeekFrom::Start(len - keep))?;
        let mut bytes = Vec::with_capacity(keep as usize);
        file.take(keep).read_to_end(&mut bytes)?;
        self.set.clear();
        self.order.clear();
        self.log_len = len;
        for chunk in bytes.chunks_exact(FINGERPRINT as usize) {
            self.remember(u128::from_be_bytes(chunk.try_into().expect("16 bytes")));
        }
        Ok(())
    }

    fn remember(&mut self, f: u128) {
        if self.set.insert(f) {
            self.order.push_back(f);
            if self.order.len() > self.window
                && let Some(old) = self.order.pop_front()
            {
                self.set.remove(&old);
            }
        }
    }

    fn contains(&self, f: u128) -> bool {
        self.set.contains(&f)
    }

    /// Adds fingerprints to the log (fsync'd) and to memory.
    fn append(&mut self, new: &[u128]) -> io::Result<()> {
        if new.is_empty() {
            return Ok(());
        }
        let bytes: Vec<u8> = new.iter().flat_map(|f| f.to_be_bytes()).collect();
        let mut file = OpenOptions::new().append(true).open(&self.log)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        self.log_len += bytes.len() as u64;
        for &f in new {
            self.remember(f);
        }
        Ok(())
    }

    /// Rewrites the log with the window only, once it holds twice that.
    fn compact(&mut self) -> io::Result<()> {
        if self.log_len <= 2 * self.window as u64 * FINGERPRINT {
            return Ok(());
        }
        let bytes: Vec<u8> = self.order.iter().flat_map(|f| f.to_be_bytes()).collect();
        write_durably(&self.log, &[&bytes])?;
        self.log_len = bytes.len() as u64;
        Ok(())
    }
}

/// A batch written down before it touches the destination.
#[derive(Debug, Serialize, Deserialize)]
struct Intent {
    /// The spool files of its requests.
    entries: Vec<PathBuf>,
    /// The de-duplication log's length before the batch.
    seen_len: u64,
    /// Set once every part is committed and the log holds the batch's events.
    committed: bool,
}

/// What a batch writes.
struct Plan {
    parts: BTreeMap<PartId, (&'static str, Bytes, u64)>,
    new: Vec<u128>,
    events: u64,
    duplicates: u64,
    dead_letters: u64,
}

/// The events of a spooled request, or why it holds none.
fn events_of(entry: &Entry) -> std::result::Result<Vec<Event>, event::Unparseable> {
    match entry.source.as_str() {
        "hubspot" => event::hubspot(&entry.body),
        "pipedrive" => event::pipedrive(&entry.body),
        other => Err(event::Unparseable(format!("unknown source {other}"))),
    }
}

/// Plans the parts of a batch: its events not yet seen, grouped by source, account and day
/// (each group named after the first request it holds events of), and its dead letters.
fn plan(entries: &[Entry], seen: &Seen) -> Result<Plan> {
    let mut events: BTreeMap<(String, String, String), (u64, Vec<Line>)> = BTreeMap::new();
    let mut dead: BTreeMap<(String, String), (u64, Vec<DeadLetter>)> = BTreeMap::new();
    let mut new = Vec::new();
    let mut in_batch = HashSet::new();
    let mut duplicates = 0;
    for entry in entries {
        let day = PartId::new(&entry.source, "", entry.received_at_ms, 0).day;
        match events_of(entry) {
            Ok(found) => {
                for e in found {
                    let f = fingerprint(&entry.source, &e.account, &e.key);
                    if seen.contains(f) || !in_batch.insert(f) {
                        duplicates += 1;
                        continue;
                    }
                    new.push(f);
                    let group = events.entry((entry.source.clone(), e.account.clone(), day.clone()));
                    group.or_insert_with(|| (entry.seq, Vec::new())).1.push(Line {
                        source: entry.source.clone(),
                        account: e.account,
                        key: e.key,
                        kind: e.kind,
                        object_id: e.object_id,
                        occurred_at_ms: e.occurred_at_ms,
                        received_at_ms: entry.received_at_ms,
                        event: e.body,
                    });
                }
            }
            Err(why) => {
                let letter = DeadLetter {
                    source: entry.source.clone(),
                    received_at_ms: entry.received_at_ms,
                    error: why.0,
                    body: String::from_utf8_lossy(&entry.body).into_owned(),
                    body_base64: base64::engine::general_purpose::STANDARD.encode(&entry.body),
                };
                dead.entry((entry.source.clone(), day)).or_insert_with(|| (entry.seq, Vec::new())).1.push(letter);
            }
        }
    }
    let mut parts = BTreeMap::new();
    let (mut event_count, mut dead_count) = (0, 0);
    for ((source, account, day), (seq, lines)) in events {
        let id = PartId { source, account: claim::safe_segment(&account), day, seq };
        event_count += lines.len() as u64;
        parts.insert(id, (EVENTS_TABLE, journal::encode(&lines)?, lines.len() as u64));
    }
    for ((source, day), (seq, letters)) in dead {
        let id = PartId { source, account: DEAD_LETTERS.into(), day, seq };
        dead_count += letters.len() as u64;
        parts.insert(id, (DEAD_LETTERS_TABLE, journal::encode(&letters)?, letters.len() as u64));
    }
    Ok(Plan { parts, new, events: event_count, duplicates, dead_letters: dead_count })
}

/// Records that the spool in `dir` serves `destination`, refusing when it holds requests
/// acknowledged for another.
fn bind_destination(spool: &Spool, dir: &Path, destination: &str) -> Result<()> {
    let path = dir.join(DESTINATION);
    let bound = match fs::read_to_string(&path) {
        Ok(text) => Some(text.trim().to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    if bound.as_deref() == Some(destination) {
        return Ok(());
    }
    let pending = spool.pending()?.len() + usize::from(dir.join(INTENT).exists());
    if let Some(other) = &bound
        && pending > 0
    {
        return Err(Error::Config(format!(
            "the spool {} holds {pending} requests acknowledged for the destination {other}: start the listener with \
             --dest {other} until it has drained them, or give --dest {destination} a spool of its own (--spool)",
            dir.display()
        )));
    }
    if let Some(other) = bound {
        tracing::info!(from = %other, to = %destination, "The spool is empty: it now serves another destination.");
    }
    write_durably(&path, &[destination.as_bytes()]).map_err(io("recording the spool's destination"))
}

/// Where the journal goes: one destination, or a template naming `{source}` and `{account}`
/// (as the exports' `--dest` does), each account's journal beside its exports.
pub struct Destination {
    template: String,
    sinks: HashMap<String, Sink>,
}

impl Destination {
    pub fn new(template: &str) -> Destination {
        Destination { template: template.to_string(), sinks: HashMap::new() }
    }

    fn sink(&mut self, source: &str, account: &str) -> Result<Sink> {
        let dest = claim::resolve_dest(&self.template, source, account)?;
        if let Some(sink) = self.sinks.get(&dest) {
            return Ok(sink.clone());
        }
        let sink = Sink::open(&dest)?;
        self.sinks.insert(dest, sink.clone());
        Ok(sink)
    }
}

/// What one step drained.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    pub requests: usize,
    pub parts: usize,
}

/// Drains a spool into the journal.
pub struct Drainer {
    spool: Arc<Spool>,
    dir: PathBuf,
    dest: Destination,
    seen: Seen,
    stats: Arc<Stats>,
    /// Spooled bytes taken per batch, at most (at least one request).
    batch_bytes: u64,
    /// The destination's lease, checked before each batch's parts are written.
    lease: Option<Arc<crate::sink::lease::Lease>>,
}

fn io(what: &str) -> impl FnOnce(io::Error) -> Error + '_ {
    move |e| Error::io(what.to_string(), e)
}

impl Drainer {
    /// `dir` is the spool's folder, where the intent and the de-duplication log are kept. A
    /// spool belongs to one destination: one holding requests acknowledged for another is
    /// refused (they would land in the wrong journal); an empty one is taken over.
    pub fn open(spool: Arc<Spool>, dir: &Path, dest: Destination, window: usize, stats: Arc<Stats>) -> Result<Drainer> {
        bind_destination(&spool, dir, &dest.template)?;
        let seen = Seen::open(dir, &dest.template, window.max(1)).map_err(io("reading the de-duplication log"))?;
        Ok(Drainer { spool, dir: dir.to_path_buf(), dest, seen, stats, batch_bytes: BATCH_BYTES, lease: None })
    }

    /// Checks `lease` before every journal part is written: a listener that lost its lease
    /// (another took it over while this one was paused) writes no more.
    pub fn fenced_by(mut self, lease: Arc<crate::sink::lease::Lease>) -> Drainer {
        self.lease = Some(lease);
        self
    }

    fn read_intent(&self) -> Result<Option<Intent>> {
        match fs::read(self.dir.join(INTENT)) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                Error::corrupt(
                    self.dir.join(INTENT).display().to_string(),
                    format!("{e}; remove it only if the spool is empty"),
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io("reading the drain intent", e)),
        }
    }

    fn write_intent(&self, intent: &Intent) -> Result<()> {
        let bytes = serde_json::to_vec(intent).map_err(|e| Error::Internal(e.to_string()))?;
        write_durably(&self.dir.join(INTENT), &[&bytes]).map_err(io("writing the drain intent"))
    }

    /// The next batch: the one a crash interrupted, or the oldest spooled requests.
    fn next_batch(&self) -> Result<Option<Intent>> {
        if let Some(intent) = self.read_intent()? {
            return Ok(Some(intent));
        }
        let mut entries = Vec::new();
        let mut bytes = 0;
        for path in self.spool.pending()? {
            let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if !entries.is_empty() && bytes + size > self.batch_bytes {
                break;
            }
            bytes += size;
            entries.push(path);
        }
        if entries.is_empty() {
            return Ok(None);
        }
        let intent = Intent { entries, seen_len: self.seen.log_len, committed: false };
        self.write_intent(&intent)?;
        Ok(Some(intent))
    }

    /// Drains one batch, or finishes the one a crash interrupted. Safe to call again after
    /// an error: it takes up the same batch.
    pub async fn step(&mut self) -> Result<Drained> {
        let Some(mut intent) = self.next_batch()? else {
            return Ok(Drained::default());
        };
        let requests = intent.entries.len();
        let mut parts = 0;
        if !intent.committed {
            if self.seen.log_len != intent.seen_len {
                self.seen.reload(Some(intent.seen_len)).map_err(io("rewinding the de-duplication log"))?;
            }
            let entries: Vec<Entry> =
                intent.entries.iter().map(|p| self.spool.read(p)).collect::<std::result::Result<_, _>>()?;
            let plan = tokio::task::block_in_place(|| plan(&entries, &self.seen))?;
            if let Some(lease) = &self.lease {
                lease.fence().await?;
            }
            for (id, (table, bytes, rows)) in &plan.parts {
                let sink = self.dest.sink(&id.source, &id.account)?;
                if journal::commit_part(&sink, id, table, bytes.clone(), *rows).await? {
                    tracing::info!(part = %id.part_key(), "Already committed before a restart.");
                }
                parts += 1;
            }
            self.seen.append(&plan.new).map_err(io("appending to the de-duplication log"))?;
            intent.committed = true;
            self.write_intent(&intent)?;
            add(&self.stats.events, plan.events);
            add(&self.stats.duplicates, plan.duplicates);
            add(&self.stats.dead_letters, plan.dead_letters);
            add(&self.stats.parts, parts as u64);
            if plan.dead_letters > 0 {
                tracing::warn!(count = plan.dead_letters, "Authentic requests without events kept as dead letters.");
            }
        }
        for path in &intent.entries {
            if path.exists() {
                self.spool.remove(path)?;
            }
        }
        fs::remove_file(self.dir.join(INTENT)).map_err(io("removing the drain intent"))?;
        self.seen.compact().map_err(io("compacting the de-duplication log"))?;
        Ok(Drained { requests, parts })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hubspot_batch(portal: u64, ids: std::ops::Range<u64>) -> Vec<u8> {
        let events: Vec<_> = ids
            .map(|i| {
                json!({"eventId": i, "subscriptionId": 1, "portalId": portal, "occurredAt": 1_764_374_400_000_i64,
                            "subscriptionType": "contact.propertyChange", "objectId": i, "attemptNumber": 0})
            })
            .collect();
        serde_json::to_vec(&events).unwrap()
    }

    async fn journal_keys(dest: &Path, source: &str, account: &str) -> Vec<String> {
        let sink = Sink::open(dest.to_str().unwrap()).unwrap();
        let parts = journal::read_since(&sink, source, account, None).await.unwrap();
        parts.into_iter().flat_map(|(_, lines)| lines).map(|l| l.key).collect()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_event_lands_once_by_account_and_dead_letters_apart() {
        let (spool_dir, dest) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let spool = Arc::new(Spool::open(spool_dir.path(), 1 << 30).unwrap());
        let stats = Arc::new(Stats::default());
        let open = |stats: Arc<Stats>| {
            Drainer::open(spool.clone(), spool_dir.path(), Destination::new(dest.path().to_str().unwrap()), 1000, stats)
                .unwrap()
        };
        let mut drainer = open(stats.clone());
        let now = 1_764_374_400_000;
        spool.accept("hubspot", now, &hubspot_batch(1, 0..50)).unwrap();
        spool.accept("hubspot", now, &hubspot_batch(2, 0..50)).unwrap();
        spool.accept("hubspot", now, &hubspot_batch(1, 25..75)).unwrap();
        spool.accept("hubspot", now, b"garbage").unwrap();
        assert_eq!(drainer.step().await.unwrap(), Drained { requests: 4, parts: 3 });
        assert_eq!(drainer.step().await.unwrap(), Drained::default());
        let keys = journal_keys(dest.path(), "hubspot", "1").await;
        assert_eq!(keys.len(), 75, "25 duplicates dropped");
        assert_eq!(journal_keys(dest.path(), "hubspot", "2").await.len(), 50, "the other portal apart");
        assert_eq!(stats.dead_letters.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert!(spool.pending().unwrap().is_empty());
        // A restart remembers what the journal holds.
        drop(drainer);
        let mut drainer = open(stats.clone());
        spool.accept("hubspot", now, &hubspot_batch(1, 70..80)).unwrap();
        drainer.step().await.unwrap();
        assert_eq!(journal_keys(dest.path(), "hubspot", "1").await.len(), 80);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_interrupted_anywhere_is_finished_once() {
        let (spool_dir, dest) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let spool = Arc::new(Spool::open(spool_dir.path(), 1 << 30).unwrap());
        let open = || {
            Drainer::open(
                spool.clone(),
                spool_dir.path(),
                Destination::new(dest.path().to_str().unwrap()),
                1000,
                Default::default(),
            )
            .unwrap()
        };
        let now = 1_764_374_400_000;
        spool.accept("hubspot", now, &hubspot_batch(1, 0..10)).unwrap();
        spool.accept("hubspot", now, &hubspot_batch(2, 0..10)).unwrap();
        // Killed after the parts and the log were written, before the intent said so: the
        // log is rewound, the same parts are planned, found committed, and nothing doubles.
        let mut drainer = open();
        let intent = drainer.next_batch().unwrap().unwrap();
        let entries: Vec<Entry> = intent.entries.iter().map(|p| spool.read(p).unwrap()).collect();
        let planned = plan(&entries, &drainer.seen).unwrap();
        for (id, (table, bytes, rows)) in &planned.parts {
            let sink = drainer.dest.sink(&id.source, &id.account).unwrap();
            journal::commit_part(&sink, id, table, bytes.clone(), *rows).await.unwrap();
        }
        // And one part's marker lost, as if killed between the part and its marker.
        let (first, _) = planned.parts.iter().next().unwrap();
        fs::remove_file(dest.path().join(first.marker_key())).unwrap();
        drainer.seen.append(&planned.new).unwrap();
        drop(drainer);
        let mut drainer = open();
        assert_eq!(drainer.step().await.unwrap(), Drained { requests: 2, parts: 2 });
        assert_eq!(journal_keys(dest.path(), "hubspot", "1").await.len(), 10);
        assert_eq!(journal_keys(dest.path(), "hubspot", "2").await.len(), 10);
        let sink = Sink::open(dest.path().to_str().unwrap()).unwrap();
        let reports = journal::verify_journal(&sink).await.unwrap();
        assert!(reports.iter().all(|(_, r)| r.problems.is_empty()), "{reports:?}");
        assert!(spool.pending().unwrap().is_empty());
        assert!(!spool_dir.path().join(INTENT).exists());
    }

    #[test]
    fn the_window_bounds_memory_and_the_log_compacts() {
        let dir = tempfile::tempdir().unwrap();
        let mut seen = Seen::open(dir.path(), "dest", 10).unwrap();
        for i in 0..25u128 {
            seen.append(&[i]).unwrap();
            seen.compact().unwrap();
        }
        assert_eq!(seen.set.len(), 10);
        assert!(seen.contains(24) && !seen.contains(14));
        assert!(seen.log_len <= 20 * FINGERPRINT);
        let reopened = Seen::open(dir.path(), "dest", 10).unwrap();
        assert_eq!(reopened.order, seen.order);
    }
}
