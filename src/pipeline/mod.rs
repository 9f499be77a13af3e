//! extract -> split -> encode -> sink, through bounded channels, then the commit.
//!
//! The extractor, the router (which splits emits into table rows) and the table writers
//! ([`writers`]) run at once, joined so that the first failure of any of them ends the
//! others: nothing waits forever on a queue that nobody reads. Memory is bounded by the
//! channel depths and the open writers, never by the number of records or tables. The
//! manifest is written last, after parts of an earlier run of the same date that this run
//! did not rewrite are removed.

mod assemble;
mod writers;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use chrono::NaiveDate;
use tokio::sync::mpsc;

use crate::error::{Error, Result};
use crate::extract::{Catalog, Emit, Extent, Extractor, Notice};
use crate::model::day_key;
use crate::progress::Progress;
use crate::sink::Sink;
use crate::sink::commit::DayCommit;
use crate::sink::layout::Layout;
use crate::sink::manifest::{Manifest, Warning};
use crate::split;
use crate::state::baseline::Sightings;
use crate::write::{OutputFormat, PartReceipt};
use writers::{WriterSpec, Writers};

/// Emits queued between the extractor and the splitter.
const EMIT_QUEUE: usize = 16;

/// How a day folder's records were chosen (the manifest's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Every record.
    Full,
    /// What changed since the last committed run.
    Incremental,
    /// What was last modified on the export date.
    Backfill,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Incremental => "incremental",
            Mode::Backfill => "backfill",
        }
    }
}

/// What the export of one day folder needs beyond the extractor, its catalog and the sink.
#[derive(Debug, Clone)]
pub struct DaySettings {
    pub mode: Mode,
    /// Which part of each stream to read.
    pub extent: Extent,
    pub date: NaiveDate,
    pub max_file_size: u64,
    pub format: OutputFormat,
    pub layout: Layout,
    /// The run's start, canonical text: INGESTEDAT and the manifest's `started_at`.
    pub ingested_at: Arc<str>,
    /// Requests and retries the source's client had made before this run's share (the
    /// manifest counts the rest): zero for one export, the previous days' for a backfill.
    pub counted_before: (u64, u64),
    /// The webhook journal's events this run consumes, when the account has a journal: they
    /// become `CHANGE_EVENTS` and `DELETED_OBJECTS` rows.
    pub journal: Option<Arc<Vec<crate::webhook::journal::Line>>>,
    /// Records merged away that earlier export dates already reported through a survivor's
    /// merge property, as `<type id>/<id>`: not reported again.
    pub merges_reported: Arc<std::collections::HashSet<String>>,
    /// Records (type id, id) the journal's deletion events name that the recycle bin still
    /// holds: archived, not deleted.
    pub archived_now: Arc<std::collections::HashSet<(String, String)>>,
    /// The data is the built-in sandbox's (fake): the manifest says so.
    pub sandbox: bool,
    /// The destination's lease, checked right before the manifest is written.
    pub lease: Arc<crate::sink::lease::Lease>,
}

/// `DELETED_OBJECTS` rows without the merge-property rows of records already reported; the
/// others' `<type id>/<id>` added to `reported`.
fn new_merges(
    batch: RecordBatch,
    known: &std::collections::HashSet<String>,
    reported: &mut std::collections::BTreeSet<String>,
) -> Result<RecordBatch> {
    use arrow::array::{Array, AsArray, BooleanArray};
    let (types, ids, sources) =
        (batch.column(0).as_string::<i32>(), batch.column(1).as_string::<i32>(), batch.column(5).as_string::<i32>());
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|r| {
            if sources.is_null(r) || sources.value(r) != "merge_property" {
                return Some(true);
            }
            let key = format!("{}/{}", types.value(r), ids.value(r));
            let new = !known.contains(&key);
            if new {
                reported.insert(key);
            }
            Some(new)
        })
        .collect();
    arrow::compute::filter_record_batch(&batch, &keep).map_err(|e| Error::Internal(e.to_string()))
}

/// `DELETED_OBJECTS` rows without those whose (type id, id, kind) an earlier row of this run
/// said already (a webhook's archiving and the recycle bin's, a merge the property and an
/// event both report): one row per record and kind per folder.
fn once_per_kind(
    batch: RecordBatch,
    said: &mut std::collections::HashSet<(String, String, String)>,
) -> Result<RecordBatch> {
    use arrow::array::{Array, AsArray, BooleanArray};
    let text = |i: usize| arrow::compute::cast(batch.column(i), &arrow::datatypes::DataType::Utf8);
    let (types, ids, kinds) = (text(0), text(1), text(3));
    let (types, ids, kinds) = match (types, ids, kinds) {
        (Ok(t), Ok(i), Ok(k)) => (t, i, k),
        _ => return Err(Error::Internal("DELETED_OBJECTS columns are not text".into())),
    };
    let (types, ids, kinds) = (types.as_string::<i32>(), ids.as_string::<i32>(), kinds.as_string::<i32>());
    let keep: BooleanArray = (0..batch.num_rows())
        .map(|r| {
            let value =
                |a: &arrow::array::StringArray| if a.is_null(r) { String::new() } else { a.value(r).to_string() };
            Some(said.insert((value(types), value(ids), value(kinds))))
        })
        .collect();
    arrow::compute::filter_record_batch(&batch, &keep).map_err(|e| Error::Internal(e.to_string()))
}

/// The rows the journal's events make, and the `CHANGE_EVENTS` table they go to, in the
/// record-id types of the source's `DELETED_OBJECTS` among `tables`.
fn journal_rows(
    lines: &[crate::webhook::journal::Line],
    tables: &[Arc<crate::schema::TableSchema>],
    ingested_at: &Arc<str>,
    archived_now: &std::collections::HashSet<(String, String)>,
) -> Result<(Vec<Emit>, Arc<crate::schema::TableSchema>)> {
    let (deleted, events) = crate::schema::journal_tables(tables);
    let (gone, gone_bad, changes, changes_bad) =
        crate::webhook::consume::tables(lines, &deleted, &events, ingested_at, archived_now)?;
    let emits = vec![
        Emit::Rows { table: "DELETED_OBJECTS".into(), batch: gone, unparseable: gone_bad },
        Emit::Rows { table: "CHANGE_EVENTS".into(), batch: changes, unparseable: changes_bad },
    ];
    Ok((emits, events))
}

/// What a committed day folder reports to whoever shows it.
#[derive(Debug)]
pub struct DaySummary {
    pub manifest: Manifest,
    pub manifest_key: String,
    pub elapsed: std::time::Duration,
    /// Pipedrive API tokens this process has spent so far (0 for other sources).
    pub tokens: u64,
    /// Requests this process held back so far because the rate limit's window was full.
    pub paced: u64,
    /// Requests the account's discovery made, when this export's `requests` count them (the
    /// first export of a process; 0 for a backfill's later days).
    pub discovery: u64,
}

/// What a committed day folder teaches the state.
#[derive(Debug)]
pub struct Learnt {
    /// Records merged away this run reported through a survivor's merge property
    /// (`<type id>/<id>`).
    pub merges_reported: std::collections::BTreeSet<String>,
    /// Which records the run showed to exist or be gone, for the baseline of ids.
    pub sightings: Sightings,
    /// The associated pairs and their types as the run left them (`None` when the source
    /// keeps none).
    pub association_types: Option<crate::model::AssociationTypes>,
}

/// What a finished day export reports.
#[derive(Debug)]
pub struct DayReport {
    pub summary: DaySummary,
    pub learnt: Learnt,
}

/// What the router finds besides rows: tables found during the run, the pairs' types, what
/// it must tell the state, and the warnings and unparseable-value counts of the manifest.
struct Routed {
    tables: Vec<Arc<crate::schema::TableSchema>>,
    learnt: Learnt,
    unparseable: BTreeMap<String, u64>,
    warnings: Vec<Warning>,
    /// (type id, id, kind) of the `DELETED_OBJECTS` rows routed so far.
    deleted_said: std::collections::HashSet<(String, String, String)>,
}

/// Discovers what the account holds (every table an export will write).
pub async fn discover(extractor: &dyn Extractor, progress: &Arc<Progress>) -> Result<Catalog> {
    let stats = extractor.http_stats();
    progress.set_http(stats.clone());
    let before = stats.requests.load(Ordering::Relaxed);
    let catalog = extractor.discover().await?;
    let requests = stats.requests.load(Ordering::Relaxed) - before;
    stats.discovery.store(requests, Ordering::Relaxed);
    tracing::info!(account = %catalog.account, tables = catalog.tables.len(), object_types = catalog.objects.len(), requests, "Discovered the account.");
    Ok(catalog)
}

/// Exports one day folder of `catalog` (from [`discover`]) into `sink` and commits it.
pub async fn export(
    extractor: &dyn Extractor,
    catalog: &Catalog,
    sink: &Sink,
    settings: &DaySettings,
    progress: &Arc<Progress>,
) -> Result<DayReport> {
    let clock = Instant::now();
    let date = day_key(settings.date);
    let day = DayCommit::begin(sink, settings.layout, &date).await?;
    let spec = WriterSpec {
        day: day.clone(),
        format: settings.format,
        max_file_size: settings.max_file_size,
        source: extractor.source().to_string(),
    };
    // The catalog's tables, and CHANGE_EVENTS when the account has a webhook journal.
    let mut tables = catalog.tables.clone();
    let journal = match &settings.journal {
        Some(lines) => {
            let (emits, change_events) = journal_rows(lines, &tables, &settings.ingested_at, &settings.archived_now)?;
            tables.push(change_events);
            emits
        }
        None => Vec::new(),
    };
    let mut writers = Writers::new(spec, &tables, progress.clone());

    let (tx, rx) = mpsc::channel::<Emit>(EMIT_QUEUE);
    let extraction = async {
        for emit in journal {
            tx.send(emit).await.map_err(|_| Error::Cancelled)?;
        }
        extractor.run(catalog, &settings.extent, tx).await
    };
    let router = Router {
        writers: &mut writers,
        ingested: &settings.ingested_at,
        progress,
        merges_known: &settings.merges_reported,
        routed: Routed::new(extractor.archived_exist()),
    };
    // The first error of either ends both: the extraction future is dropped (its requests
    // and tasks with it) or the router's receiver is, so the extractor's next send fails.
    let routed = match tokio::try_join!(extraction, router.route_all(rx)) {
        Ok(((), routed)) => routed,
        // Only a consequence of another failure: report that one.
        Err(e) if e.is_cancelled() => {
            let e = writers.failure().await;
            day.abandon(&e);
            return Err(e);
        }
        Err(e) => {
            writers.abort().await;
            day.abandon(&e);
            return Err(e);
        }
    };
    // Every table's last part closes now.
    let receipts: BTreeMap<String, Vec<PartReceipt>> = match writers.finish().await {
        Ok(finished) => finished.into_iter().collect(),
        Err(e) => {
            day.abandon(&e);
            return Err(e);
        }
    };
    tables.extend(routed.tables.iter().cloned());
    let manifest =
        assemble::manifest(assemble::Inputs { extractor, catalog, settings, date, tables, receipts, routed: &routed });
    let manifest_key = day.commit(&manifest, &settings.lease).await?;
    let stats = extractor.http_stats();
    let summary = DaySummary {
        manifest,
        manifest_key,
        elapsed: clock.elapsed(),
        tokens: stats.tokens.load(Ordering::Relaxed),
        paced: stats.paced.load(Ordering::Relaxed),
        // Discovery is part of the first export's count only (a backfill's later days exclude it).
        discovery: if settings.counted_before.0 == 0 { stats.discovery.load(Ordering::Relaxed) } else { 0 },
    };
    Ok(DayReport { summary, learnt: routed.learnt })
}

/// A manifest warning from a notice, logged as it is made.
fn warning(notice: Notice) -> Warning {
    tracing::warn!(table = %notice.table, kind = %notice.kind, "{}", notice.detail);
    Warning { kind: notice.kind, table: notice.table, count: notice.count, detail: Some(notice.detail) }
}

impl Routed {
    fn new(archived_exist: bool) -> Routed {
        Routed {
            tables: Vec::new(),
            learnt: Learnt {
                merges_reported: Default::default(),
                sightings: Sightings::new(archived_exist),
                association_types: None,
            },
            unparseable: BTreeMap::new(),
            warnings: Vec::new(),
            deleted_said: Default::default(),
        }
    }

    fn count_unparseable(&mut self, table: &str, count: u64) {
        if count > 0 {
            *self.unparseable.entry(table.to_string()).or_default() += count;
        }
    }
}

/// Splits emits into table rows for the writers.
struct Router<'a> {
    writers: &'a mut Writers,
    ingested: &'a Arc<str>,
    progress: &'a Progress,
    /// Records merged away that earlier dates reported (not reported again).
    merges_known: &'a std::collections::HashSet<String>,
    routed: Routed,
}

impl Router<'_> {
    /// Reads emits until the extractor is done. Stops at once when a writer fails (dropping
    /// `rx`, so that the extractor stops too).
    async fn route_all(mut self, mut rx: mpsc::Receiver<Emit>) -> Result<Routed> {
        loop {
            let emit = tokio::select! {
                emit = rx.recv() => emit,
                // The writer's own error, not the extractor's closed channel: `rx` stays open
                // until the failure is known, and closes when this returns.
                _ = self.writers.cancelled() => return Err(self.writers.failure().await),
            };
            let Some(emit) = emit else { break };
            self.route(emit).await?;
        }
        Ok(self.routed)
    }

    async fn route(&mut self, emit: Emit) -> Result<()> {
        let routed = &mut self.routed;
        let rows = match emit {
            Emit::Objects { stream, batch, unparseable } => {
                routed.count_unparseable(&stream.table.name, unparseable);
                routed.learnt.sightings.objects(&batch)?;
                split::split_objects(&stream, &batch, self.ingested)?
            }
            Emit::Associations { pair, batch } => split::split_associations(&pair, &batch)?,
            Emit::Rows { table, batch, unparseable } => vec![split::TableRows { table, batch, unparseable }],
            Emit::Warning(notice) => {
                routed.warnings.push(warning(notice));
                return Ok(());
            }
            Emit::Listed { type_id, ids, listing_requests, association_requests } => {
                routed.learnt.sightings.listed(&type_id, ids, listing_requests, association_requests);
                return Ok(());
            }
            Emit::Pair(pair) => {
                if self.writers.declare(pair.table.clone()) {
                    routed.tables.push(pair.table.clone());
                }
                return Ok(());
            }
            Emit::AssociationTypes(types) => {
                routed.learnt.association_types = Some(types);
                return Ok(());
            }
            Emit::Complete(tables) => {
                for t in &tables {
                    self.writers.complete(t).await?;
                }
                return Ok(());
            }
        };
        for mut r in rows {
            if r.table == "DELETED_OBJECTS" {
                r.batch = new_merges(r.batch, self.merges_known, &mut routed.learnt.merges_reported)?;
                r.batch = once_per_kind(r.batch, &mut routed.deleted_said)?;
                routed.learnt.sightings.deleted(&r.batch)?;
            }
            routed.count_unparseable(&r.table, r.unparseable);
            if r.batch.num_rows() > 0 {
                self.progress.add_rows(&r.table, r.batch.num_rows() as u64);
                self.writers.route(&r.table, r.batch).await?;
            }
        }
        Ok(())
    }
}
