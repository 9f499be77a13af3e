//! What happened to the sandbox's records after they were generated, through the test hooks
//! (`POST /_sandbox/touch`, `archive`, `delete`, `privacy-delete`, `merge`, `restore`,
//! `associate`, `dissociate`): records touched (one property value and `updatedAt` changed),
//! archived, deleted for good, merged into another, restored from the recycle bin, and
//! associations added or removed. The generator consults this on every read, so list, batch
//! read, search, associations and memberships all see one account.

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
    /// The survivor, for a record merged away.
    pub into: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// A property value and the last-modified time changed.
    Modified,
    /// Archived (HubSpot's recycle bin; Pipedrive's archived deals and leads).
    Archived,
    /// Deleted for good: in no list, read or recycle bin.
    Deleted,
    /// A contact's GDPR deletion (gone like a deletion).
    PrivacyDeleted,
    /// Merged into another record (gone; a read of its id answers the survivor).
    Merged,
    /// Back from the recycle bin (live again, last-modified moved).
    Restored,
}

/// Why a record is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gone {
    Deleted,
    PrivacyDeleted,
    /// Into the survivor's index.
    Merged(u64),
}

/// A record of one type, by type and index.
pub type RecordRef = (usize, u64);

/// An association added or removed by a hook.
#[derive(Debug, Clone, Copy)]
pub struct LinkChange {
    pub from: RecordRef,
    pub to: RecordRef,
    pub removed: bool,
    pub at: DateTime<Utc>,
}

/// `(last-modified millisecond, record id)` of a type's live records, sorted: what the
/// search endpoint answers from.
pub type ModifiedIndex = Arc<Vec<(i64, i64)>>;

#[derive(Default)]
struct Log {
    /// Every touch of each record, oldest first.
    touched: HashMap<(usize, u64), Vec<Touch>>,
    /// Per type: when its late property was added (`POST /_sandbox/add-property`).
    revealed: HashMap<usize, DateTime<Utc>>,
    archived: HashMap<(usize, u64), DateTime<Utc>>,
    /// Per type: the record index the next touch starts from.
    touch_cursor: HashMap<usize, u64>,
    /// Per type: how many records from the end the next archive starts from.
    archive_cursor: HashMap<usize, u64>,
    gone: HashMap<RecordRef, (Gone, DateTime<Utc>)>,
    /// Records back from the recycle bin, and when.
    restored: HashMap<RecordRef, DateTime<Utc>>,
    /// Survivors, and the records merged into them.
    merged_into: HashMap<RecordRef, Vec<u64>>,
    /// When a record's last-modified time moved without a property change of its own
    /// (restored, or the survivor of a merge).
    bumped: HashMap<RecordRef, DateTime<Utc>>,
    /// Associations added, both directions.
    /// Associations hooks added, from each end, with whether that end is the one the hook
    /// named first (the association's forward direction).
    links_added: HashMap<RecordRef, Vec<(RecordRef, bool)>>,
    /// Associations removed, both directions.
    links_removed: std::collections::HashSet<(RecordRef, RecordRef)>,
    link_log: Vec<LinkChange>,
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
        self.log.read().expect("changes lock").touched.get(&(t, index)).and_then(|all| all.last().cloned())
    }

    /// Every touch of the record, oldest first.
    pub fn touches(&self, t: usize, index: u64) -> Vec<Touch> {
        if !self.any.load(Ordering::Acquire) {
            return Vec::new();
        }
        self.log.read().expect("changes lock").touched.get(&(t, index)).cloned().unwrap_or_default()
    }

    /// When type `t`'s late property was added, if it was.
    pub fn revealed_at(&self, t: usize) -> Option<DateTime<Utc>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.log.read().expect("changes lock").revealed.get(&t).copied()
    }

    /// Adds type `t`'s late property at `at` (once: later calls keep the first time).
    pub fn reveal(&self, t: usize, at: DateTime<Utc>) -> DateTime<Utc> {
        let first = *self.log.write().expect("changes lock").revealed.entry(t).or_insert(at);
        self.changed(t);
        first
    }

    pub fn archived_at(&self, t: usize, index: u64) -> Option<DateTime<Utc>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.log.read().expect("changes lock").archived.get(&(t, index)).copied()
    }

    pub fn gone(&self, t: usize, index: u64) -> Option<(Gone, DateTime<Utc>)> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.log.read().expect("changes lock").gone.get(&(t, index)).copied()
    }

    pub fn restored_at(&self, t: usize, index: u64) -> Option<DateTime<Utc>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.log.read().expect("changes lock").restored.get(&(t, index)).copied()
    }

    /// When the record's last-modified time moved without a property change of its own.
    pub fn bumped_at(&self, t: usize, index: u64) -> Option<DateTime<Utc>> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        self.log.read().expect("changes lock").bumped.get(&(t, index)).copied()
    }

    /// The records merged into this one.
    pub fn merged_into(&self, t: usize, index: u64) -> Vec<u64> {
        if !self.any.load(Ordering::Acquire) {
            return Vec::new();
        }
        self.log.read().expect("changes lock").merged_into.get(&(t, index)).cloned().unwrap_or_default()
    }

    /// Associations of `from` added (each with whether `from` was the end the hook named
    /// first) and removed by hooks.
    pub fn links_of(&self, from: RecordRef) -> (Vec<(RecordRef, bool)>, Vec<RecordRef>) {
        if !self.any.load(Ordering::Acquire) {
            return (Vec::new(), Vec::new());
        }
        let log = self.log.read().expect("changes lock");
        let added = log.links_added.get(&from).cloned().unwrap_or_default();
        let removed = log.links_removed.iter().filter(|(f, _)| *f == from).map(|(_, t)| *t).collect();
        (added, removed)
    }

    /// Every association change, in order.
    pub fn link_log(&self) -> Vec<LinkChange> {
        self.log.read().expect("changes lock").link_log.clone()
    }

    /// Records `indexes` of type `t` as gone at `at`.
    pub fn record_gone(&self, t: usize, indexes: &[(u64, Gone)], at: DateTime<Utc>) {
        {
            let mut log = self.log.write().expect("changes lock");
            for &(i, why) in indexes {
                log.gone.insert((t, i), (why, at));
                log.archived.remove(&(t, i));
                if let Gone::Merged(into) = why {
                    log.merged_into.entry((t, into)).or_default().push(i);
                    log.bumped.insert((t, into), at);
                }
            }
        }
        self.changed(t);
    }

    /// Takes `indexes` of type `t` out of the recycle bin at `at`.
    pub fn record_restores(&self, t: usize, indexes: &[u64], at: DateTime<Utc>) {
        {
            let mut log = self.log.write().expect("changes lock");
            for &i in indexes {
                log.archived.remove(&(t, i));
                log.restored.insert((t, i), at);
                log.bumped.insert((t, i), at);
            }
        }
        self.changed(t);
    }

    /// Adds (or removes) the association between `from` and `to`, both directions.
    pub fn record_link(&self, from: RecordRef, to: RecordRef, removed: bool, at: DateTime<Utc>) {
        {
            let mut log = self.log.write().expect("changes lock");
            for (a, b, forward) in [(from, to, true), (to, from, false)] {
                if removed {
                    log.links_removed.insert((a, b));
                    if let Some(added) = log.links_added.get_mut(&a) {
                        added.retain(|(x, _)| *x != b);
                    }
                } else {
                    log.links_removed.remove(&(a, b));
                    log.links_added.entry(a).or_default().push((b, forward));
                }
            }
            log.link_log.push(LinkChange { from, to, removed, at });
        }
        self.changed(from.0);
        self.changed(to.0);
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
                log.touched.entry((t, i)).or_default().push(touch.clone());
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
        let touched = log.touched.iter().filter(|((ty, _), _)| *ty == t).filter_map(|(&(_, index), all)| {
            all.last().map(|touch| Change { index, kind: ChangeKind::Modified, at: touch.at, into: None })
        });
        let archived = log.archived.iter().filter(|((ty, _), _)| *ty == t).map(|(&(_, index), &at)| Change {
            index,
            kind: ChangeKind::Archived,
            at,
            into: None,
        });
        let gone = log.gone.iter().filter(|((ty, _), _)| *ty == t).map(|(&(_, index), &(why, at))| {
            let (kind, into) = match why {
                Gone::Deleted => (ChangeKind::Deleted, None),
                Gone::PrivacyDeleted => (ChangeKind::PrivacyDeleted, None),
                Gone::Merged(into) => (ChangeKind::Merged, Some(into)),
            };
            Change { index, kind, at, into }
        });
        let restored = log.restored.iter().filter(|((ty, _), _)| *ty == t).map(|(&(_, index), &at)| Change {
            index,
            kind: ChangeKind::Restored,
            at,
            into: None,
        });
        // A survivor's merge moved its last-modified time: a modification.
        let survivors = log.merged_into.keys().filter(|(ty, _)| *ty == t).filter_map(|key| {
            log.bumped.get(key).map(|&at| Change { index: key.1, kind: ChangeKind::Modified, at, into: None })
        });
        // A record touched and then archived (or the other way round) shows its last change.
        let mut last: HashMap<u64, Change> = HashMap::new();
        for change in touched.chain(archived).chain(restored).chain(survivors).chain(gone) {
            let kept = last.entry(change.index).or_insert(change);
            // The later change wins; at the same instant, a removal over a modification.
            let removal = matches!(change.kind, ChangeKind::Deleted | ChangeKind::PrivacyDeleted | ChangeKind::Merged);
            if change.at > kept.at || (change.at == kept.at && removal) {
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
