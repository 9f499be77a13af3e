//! The baseline a reconcile compares the account with: per object type, the ids that exist as
//! crmdump last knew them.
//!
//! A full export or a reconcile sets a type's baseline to the ids it read or listed; every
//! other export moves it by what its day folder shows (records held live are added; records
//! archived, deleted or merged away are removed). Each type's ids are one gzip file of sorted
//! lines under `_state/baselines/<source>-<account>/`, named by the run that wrote it; the
//! state file, written after the day's manifest, says which files each export date left. So a
//! killed run never changes the baseline the next one reads, and a re-run of a date compares
//! with what the date's first run compared with (the newest baseline of an earlier date).

use std::collections::{BTreeMap, HashSet};
use std::io::{Read, Write};

use arrow::array::{Array, AsArray};
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::model::KnownIds;
use crate::sink::Sink;

/// Where a source account's baseline files live.
pub fn prefix(source: &str, account: &str) -> String {
    format!("_state/baselines/{source}-{}/", crate::sink::claim::safe_segment(account))
}

/// What one export run shows of which records exist, gathered as its rows go by.
#[derive(Debug, Default)]
pub struct Sightings {
    archived_exist: bool,
    added: KnownIds,
    removed: KnownIds,
    /// Per type a reconcile listed: every id listed.
    listed: KnownIds,
    /// A reconcile's cost: requests for the id listing and for the association refresh.
    pub listing_requests: u64,
    pub association_requests: u64,
    /// `DELETED_OBJECTS` rows a reconcile wrote.
    pub reconciled_gone: u64,
}

/// Column `i` of `batch` as text (record ids are Int64 in HubSpot's typed tables).
fn texts(batch: &RecordBatch, i: usize) -> Result<arrow::array::StringArray> {
    let column = arrow::compute::cast(batch.column(i), &DataType::Utf8).map_err(|e| Error::Internal(e.to_string()))?;
    Ok(column.as_string::<i32>().clone())
}

impl Sightings {
    /// `archived_exist`: whether an archived record still exists (see
    /// [`crate::extract::Extractor::archived_exist`]).
    pub fn new(archived_exist: bool) -> Sightings {
        Sightings { archived_exist, ..Sightings::default() }
    }

    fn note(map: &mut KnownIds, type_id: &str, id: &str) {
        map.entry(type_id.to_string()).or_default().insert(id.to_string());
    }

    /// A page of records in the raw `OBJECTS` shape (type id, id, .., `ARCHIVED` fifth).
    pub fn objects(&mut self, raw: &RecordBatch) -> Result<()> {
        let (types, ids, archived) = (texts(raw, 0)?, texts(raw, 1)?, texts(raw, 4)?);
        for r in 0..raw.num_rows() {
            if types.is_null(r) || ids.is_null(r) {
                continue;
            }
            let exists = archived.is_null(r) || archived.value(r) != "true" || self.archived_exist;
            let map = if exists { &mut self.added } else { &mut self.removed };
            Sightings::note(map, types.value(r), ids.value(r));
        }
        Ok(())
    }

    /// `DELETED_OBJECTS` rows (type id, id, .., `KIND` fourth).
    pub fn deleted(&mut self, rows: &RecordBatch) -> Result<()> {
        let (types, ids, kinds) = (texts(rows, 0)?, texts(rows, 1)?, texts(rows, 3)?);
        let sources = texts(rows, 5)?;
        self.reconciled_gone +=
            (0..rows.num_rows()).filter(|&r| sources.is_valid(r) && sources.value(r) == "reconcile").count() as u64;
        for r in 0..rows.num_rows() {
            if types.is_null(r) || ids.is_null(r) {
                continue;
            }
            if kinds.is_null(r) || kinds.value(r) != "archived" || !self.archived_exist {
                Sightings::note(&mut self.removed, types.value(r), ids.value(r));
            }
        }
        Ok(())
    }

    /// Ids a reconcile listed (a type's listing may come in several pieces).
    pub fn listed(&mut self, type_id: &str, ids: Vec<String>, listing_requests: u64, association_requests: u64) {
        self.listed.entry(type_id.to_string()).or_default().extend(ids);
        self.listing_requests += listing_requests;
        self.association_requests += association_requests;
    }

    /// Ids a reconcile listed, over every type.
    pub fn listed_count(&self) -> u64 {
        self.listed.values().map(|ids| ids.len() as u64).sum()
    }

    /// The baseline after this run: a listed type's listing; otherwise, for a type the run
    /// read whole (`read_whole`, type ids), the records it read; otherwise the previous
    /// baseline moved by what the run saw (a type with no previous baseline stays without
    /// one). Removals win over additions.
    pub fn apply(mut self, previous: &KnownIds, read_whole: &HashSet<String>) -> KnownIds {
        let mut types: HashSet<String> = previous.keys().cloned().collect();
        types.extend(self.listed.keys().cloned());
        types.extend(read_whole.iter().cloned());
        let mut next = KnownIds::new();
        for t in types {
            let removed = self.removed.remove(&t).unwrap_or_default();
            let mut ids = match self.listed.remove(&t) {
                Some(listed) => listed,
                None if read_whole.contains(&t) => HashSet::new(),
                None => previous.get(&t).cloned().unwrap_or_default(),
            };
            ids.extend(self.added.remove(&t).unwrap_or_default());
            ids.retain(|id| !removed.contains(id));
            next.insert(t, ids);
        }
        next
    }
}

/// One type's ids as a gzip file of sorted lines.
pub fn encode(ids: &HashSet<String>) -> Result<Bytes> {
    let mut sorted: Vec<&String> = ids.iter().collect();
    sorted.sort_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b)));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    for id in sorted {
        gz.write_all(id.as_bytes()).and_then(|_| gz.write_all(b"\n")).map_err(|e| Error::io("gzip baseline", e))?;
    }
    Ok(Bytes::from(gz.finish().map_err(|e| Error::io("gzip baseline", e))?))
}

pub fn decode(bytes: &[u8], key: &str) -> Result<HashSet<String>> {
    let mut text = String::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_string(&mut text)
        .map_err(|e| Error::io(format!("gunzip baseline {key}"), e))?;
    Ok(text.lines().filter(|l| !l.is_empty()).map(str::to_string).collect())
}

/// The baseline a run starts from: the ids, and the files they were read from (`None` when
/// the destination has no baseline yet, which is not the same as one with no ids).
#[derive(Debug, Default)]
pub struct Baseline {
    pub ids: std::sync::Arc<KnownIds>,
    pub files: Option<BTreeMap<String, String>>,
}

impl Baseline {
    /// Reads the baseline files `files` names (type id -> key); `None` gives an empty baseline.
    pub async fn load(sink: &Sink, files: Option<&BTreeMap<String, String>>) -> Result<Baseline> {
        let Some(files) = files else {
            return Ok(Baseline::default());
        };
        let mut known = KnownIds::new();
        for (type_id, key) in files {
            let bytes = sink.get(key).await?.ok_or_else(|| {
                Error::Config(format!(
                    "the baseline file {}/{key} that the state file names is missing: run `crmdump export --reconcile` with `--mode full`, or restore it",
                    sink.display()
                ))
            })?;
            known.insert(type_id.clone(), decode(&bytes, key)?);
        }
        Ok(Baseline { ids: std::sync::Arc::new(known), files: Some(files.clone()) })
    }

    /// Writes the types of `next` that differ from this baseline (under `run`'s name) and
    /// returns the files of every type: new ones, and this baseline's of unchanged types.
    pub async fn save(
        &self,
        sink: &Sink,
        prefix: &str,
        run: &str,
        next: &KnownIds,
    ) -> Result<BTreeMap<String, String>> {
        let mut refs = BTreeMap::new();
        for (type_id, ids) in next {
            match self.files.as_ref().and_then(|f| f.get(type_id)) {
                Some(key) if self.ids.get(type_id) == Some(ids) => {
                    refs.insert(type_id.clone(), key.clone());
                }
                _ => {
                    let key = format!("{prefix}{run}/{}.ids.gz", crate::sink::claim::safe_segment(type_id));
                    sink.put(&key, encode(ids)?).await?;
                    refs.insert(type_id.clone(), key);
                }
            }
        }
        Ok(refs)
    }
}

/// Removes the baseline files under `prefix` that no kept date names (those of killed runs
/// and of dates no longer kept), and the folders that leaves empty.
pub async fn prune(sink: &Sink, prefix: &str, kept: &HashSet<&String>) -> Result<u64> {
    let mut removed = 0;
    for (key, _) in sink.list(prefix).await? {
        if !kept.contains(&key) {
            sink.remove(&key).await?;
            removed += 1;
        }
    }
    sink.remove_empty_folders(prefix)?;
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn ids(v: &[&str]) -> HashSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn raw(rows: &[(&str, &str, &str)]) -> RecordBatch {
        let col = |i: usize| -> arrow::array::ArrayRef {
            Arc::new(arrow::array::StringArray::from(
                rows.iter()
                    .map(|r| {
                        Some(match i {
                            0 => r.0,
                            1 => r.1,
                            4 => r.2,
                            _ => "x",
                        })
                    })
                    .collect::<Vec<_>>(),
            ))
        };
        let fields: Vec<arrow::datatypes::Field> =
            (0..6).map(|i| arrow::datatypes::Field::new(format!("c{i}"), DataType::Utf8, true)).collect();
        RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), (0..6).map(col).collect()).unwrap()
    }

    #[test]
    fn a_baseline_moves_by_what_an_export_saw_and_a_listing_replaces_it() {
        let previous: KnownIds = [("0-1".to_string(), ids(&["1", "2", "3"]))].into();
        let mut seen = Sightings::new(false);
        seen.objects(&raw(&[("0-1", "4", "false"), ("0-1", "2", "true"), ("0-2", "9", "false")])).unwrap();
        // DELETED_OBJECTS: type, id, deleted at, kind.
        seen.deleted(&raw(&[("0-1", "3", "x")])).unwrap();
        let next = seen.apply(&previous, &HashSet::new());
        assert_eq!(next["0-1"], ids(&["1", "4"]), "added 4; 2 archived, 3 gone");
        assert!(!next.contains_key("0-2"), "a type without a baseline gets none from an incremental run");

        let mut seen = Sightings::new(false);
        seen.listed("0-1", vec!["1".into(), "5".into()], 1, 2);
        seen.listed("0-2", vec!["9".into()], 1, 2);
        let next = seen.apply(&previous, &HashSet::new());
        assert_eq!((next["0-1"].clone(), next["0-2"].clone()), (ids(&["1", "5"]), ids(&["9"])));
    }

    #[test]
    fn archived_records_stay_where_they_still_exist() {
        let previous: KnownIds = [("deal".to_string(), ids(&["1", "2"]))].into();
        let mut seen = Sightings::new(true);
        seen.objects(&raw(&[("deal", "2", "true")])).unwrap();
        let mut kinds = raw(&[("deal", "2", "x")]);
        let archived = Arc::new(arrow::array::StringArray::from(vec!["archived"])) as arrow::array::ArrayRef;
        let mut columns = kinds.columns().to_vec();
        columns[3] = archived;
        kinds = RecordBatch::try_new(kinds.schema(), columns).unwrap();
        seen.deleted(&kinds).unwrap();
        assert_eq!(seen.apply(&previous, &HashSet::new())["deal"], ids(&["1", "2"]));
    }

    #[test]
    fn ids_round_trip_through_gzip() {
        let set = ids(&["10", "9", "abc-uuid", ""]);
        let back = decode(&encode(&set).unwrap(), "k").unwrap();
        assert_eq!(back, ids(&["10", "9", "abc-uuid"]));
    }
}
