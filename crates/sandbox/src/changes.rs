//! What happened to the sandbox's records after they were generated: records touched (one
//! property value and `updatedAt` changed) and records archived, through the test hooks
//! `POST /_sandbox/touch` and `POST /_sandbox/archive`. The generator consults this on every
//! read, so list, batch read, search, associations and memberships all see one account.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use chrono::{DateTime, Utc};

/// A touched record's new state.
#[derive(Debug, Clone)]
pub struct Touch {
    pub at: DateTime<Utc>,
    /// The new value of the type's touched property.
    pub value: String,
}

/// One change of the log, as `GET /_sandbox/changes` reports it.
#[derive(Debug, Clone, Copy)]
pub struct Change {
    pub index: u64,
    pub kind: ChangeKind,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A property value and the last-modified time changed.
    Modified,
    /// Archived (HubSpot's recycle bin; Pipedrive's archived deals and leads).
    Archived,
}

/// `(last-modified millisecond, record id)` of a type's live records, sorted: what the
/// search endpoint answers from.
pub type ModifiedIndex = Arc<Vec<(i64, i64)>>;

#[derive(Default)]
struct Log {
    touched: HashMap<(usize, u64), Touch>,
    archived: HashMap<(usize, u64), DateTime<Utc>>,
    /// Per type: the record index the next touch starts from.
    touch_cursor: HashMap<usize, u64>,
    /// Per type: how many records from the end the next archive starts from.
    archive_cursor: HashMap<usize, u64>,
}

/// The change log plus the search index built from it; cheap to read when nothing changed.
#[derive(Default)]
pub struct Changes {
    any: AtomicBool,
    log: RwLock<Log>,
    indexes: Mutex<HashMap<usize, ModifiedIndex>>,
}

impl Changes {
    pub fn touched(&self, t: usize, index: u64) -> Option<Touch> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.log.read().expect("changes lock").touched.get(&(t, index)).cloned()
    }

    pub fn archived_at(&self, t: usize, index: u64) -> Option<DateTime<Utc>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.log.read().expect("changes lock").archived.get(&(t, index)).copied()
    }

    pub fn touch_cursor(&self, t: usize) -> u64 {
        self.log.read().expect("changes lock").touch_cursor.get(&t).copied().unwrap_or(0)
    }

    pub fn archive_cursor(&self, t: usize) -> u64 {
        self.log.read().expect("changes lock").archive_cursor.get(&t).copied().unwrap_or(0)
    }

    /// Records `indexes` of type `t` as touched (`touches` in the same order); the next touch
    /// starts at `cursor`.
    pub fn record_touches(&self, t: usize, indexes: &[u64], touches: &[Touch], cursor: u64) {
        {
            let mut log = self.log.write().expect("changes lock");
            for (&i, touch) in indexes.iter().zip(touches) {
                log.touched.insert((t, i), touch.clone());
            }
            log.touch_cursor.insert(t, cursor);
        }
        self.changed(t);
    }

    /// Records `indexes` of type `t` as archived at `at`; the next archive starts `cursor`
    /// records from the end.
    pub fn record_archives(&self, t: usize, indexes: &[u64], at: DateTime<Utc>, cursor: u64) {
        {
            let mut log = self.log.write().expect("changes lock");
            for &i in indexes {
                log.archived.insert((t, i), at);
            }
            log.archive_cursor.insert(t, cursor);
        }
        self.changed(t);
    }

    /// The last change made to each record of type `t` (a touch or the archiving): the ground
    /// truth `GET /_sandbox/changes` serves.
    pub fn of_type(&self, t: usize) -> Vec<Change> {
        let log = self.log.read().expect("changes lock");
        let touched = log.touched.iter().filter(|((ty, _), _)| *ty == t).map(|(&(_, index), touch)| Change {
            index,
            kind: ChangeKind::Modified,
            at: touch.at,
        });
        let archived = log.archived.iter().filter(|((ty, _), _)| *ty == t).map(|(&(_, index), &at)| Change {
            index,
            kind: ChangeKind::Archived,
            at,
        });
        // A record touched and then archived (or the other way round) shows its last change.
        let mut last: HashMap<u64, Change> = HashMap::new();
        for change in touched.chain(archived) {
            let kept = last.entry(change.index).or_insert(change);
            if change.at > kept.at {
                *kept = change;
            }
        }
        let mut all: Vec<Change> = last.into_values().collect();
        all.sort_by_key(|c| (c.at, c.index));
        all
    }

    /// Called with no log lock held: [`Changes::index`] reads the log under the index lock.
    fn changed(&self, t: usize) {
        self.any.store(true, Ordering::Release);
        self.indexes.lock().expect("index lock").remove(&t);
    }

    /// The search index of type `t`, built by `build` when missing or outdated.
    pub fn index(&self, t: usize, build: impl FnOnce() -> Vec<(i64, i64)>) -> ModifiedIndex {
        let mut indexes = self.indexes.lock().expect("index lock");
        indexes.entry(t).or_insert_with(|| Arc::new(build())).clone()
    }
}
