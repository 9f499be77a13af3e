//! extract -> split -> encode -> sink, through bounded channels, then the commit.
//!
//! The extractor, the router (which splits emits into table rows) and the table writers
//! ([`writers`]) run at once, joined so that the first failure of any of them ends the
//! others: nothing waits forever on a queue that nobody reads. Memory is bounded by the
//! channel depths and the open writers, never by the number of records or tables. The
//! manifest is written last, after parts of an earlier run of the same date that this run
//! did not rewrite are removed.

mod writers;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use arrow::record_batch::RecordBatch;
use chrono::{NaiveDate, Utc};
use tokio::sync::mpsc;

use crate::error::Result;
use crate::extract::{Catalog, Emit, Extent, Extractor, Notice};
use crate::progress::Progress;
use crate::schema::iso;
use crate::sink::Sink;
use crate::sink::commit::DayCommit;
use crate::sink::layout::Layout;
use crate::sink::manifest::{ColumnEntry, Manifest, ReconcileEntry, TableEntry, Warning};
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

/// What an export run needs beyond the extractor, its catalog and the sink.
#[derive(Debug, Clone)]
pub struct ExportSettings {
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
    arrow::compute::filter_record_batch(&batch, &keep).map_err(|e| crate::error::Error::Internal(e.to_string()))
}

/// The rows the journal's events make, and the `CHANGE_EVENTS` table they go to, in the
/// record-id types of the source's `DELETED_OBJECTS` among `tables`.
fn journal_rows(
    lines: &[crate::webhook::journal::Line],
    tables: &[Arc<crate::schema::TableSchema>],
    ingested_at: &Arc<str>,
) -> Result<(Vec<Emit>, Arc<crate::schema::TableSchema>)> {
    let (deleted, events) = crate::schema::journal_tables(tables);
    let (gone, gone_bad, changes, changes_bad) =
        crate::webhook::consume::tables(lines, &deleted, &events, ingested_at)?;
    let emits = vec![
        Emit::Rows { table: "DELETED_OBJECTS".into(), batch: gone, unparseable: gone_bad },
        Emit::Rows { table: "CHANGE_EVENTS".into(), batch: changes, unparseable: changes_bad },
    ];
    Ok((emits, events))
}

/// What a finished export reports.
#[derive(Debug)]
pub struct ExportReport {
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
    /// Records merged away this run reported through a survivor's merge property
    /// (`<type id>/<id>`), for the state.
    pub merges_reported: std::collections::BTreeSet<String>,
    /// Which records the run showed to exist or be gone, for the baseline of ids.
    pub sightings: Sightings,
    /// The associated pairs and their types as the run left them, for the state (`None`
    /// when the source keeps none).
    pub association_types: Option<crate::model::AssociationTypes>,
}

/// What the router learnt besides rows: tables found during the run, and the pairs' types.
#[derive(Default)]
struct Learnt {
    tables: Vec<Arc<crate::schema::TableSchema>>,
    association_types: Option<crate::model::AssociationTypes>,
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
    settings: &ExportSettings,
    progress: &Arc<Progress>,
) -> Result<ExportReport> {
    let clock = Instant::now();

    let date = settings.date.format("%Y-%m-%d").to_string();
    let layout = settings.layout;
    let day = DayCommit::begin(sink, layout, &date).await?;
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
            let (emits, change_events) = journal_rows(lines, &tables, &settings.ingested_at)?;
            tables.push(change_events);
            tables.sort_by(|a, b| a.name.cmp(&b.name));
            emits
        }
        None => Vec::new(),
    };
    let mut writers = Writers::new(spec, &tables, progress.clone());

    let (tx, rx) = mpsc::channel::<Emit>(EMIT_QUEUE);
    let extraction = async {
        for emit in journal {
            tx.send(emit).await.map_err(|_| crate::error::Error::Cancelled)?;
        }
        extractor.run(catalog, &settings.extent, tx).await
    };
    let mut merges_reported = std::collections::BTreeSet::new();
    let mut sightings = Sightings::new(extractor.archived_exist());
    let mut learnt = Learnt::default();
    let routing = route_all(
        rx,
        &mut writers,
        &settings.ingested_at,
        progress,
        (&settings.merges_reported, &mut merges_reported),
        (&mut sightings, &mut learnt),
    );
    // The first error of either ends both: the extraction future is dropped (its requests
    // and tasks with it) or the router's receiver is, so the extractor's next send fails.
    let routed = tokio::try_join!(extraction, routing);
    let (unparseable, notes) = match routed {
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
    tables.extend(std::mem::take(&mut learnt.tables));
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    let mut warnings: Vec<Warning> = catalog.notices.iter().cloned().map(warning).collect();
    warnings.extend(notes);
    let reconcile = settings.extent.reconcile().map(|r| {
        if r.known.is_none() {
            warnings.push(warning(Notice {
                kind: "no_baseline".into(),
                table: "DELETED_OBJECTS".into(),
                detail: "the destination has no baseline of ids yet: this reconcile listed every id and reports no deletion; the next one compares with what it listed".into(),
                count: None,
            }));
        }
        ReconcileEntry {
            baseline: r.known.is_some(),
            ids: sightings.listed_count(),
            deleted: sightings.reconciled_gone,
            listing_requests: sightings.listing_requests,
            association_requests: sightings.association_requests,
        }
    });

    // Every table's last part closes now.
    let mut receipts: BTreeMap<String, Vec<PartReceipt>> = match writers.finish().await {
        Ok(finished) => finished.into_iter().collect(),
        Err(e) => {
            day.abandon(&e);
            return Err(e);
        }
    };

    for (table, count) in unparseable {
        warnings.push(Warning { kind: "unparseable_value".into(), table, count: Some(count), detail: None });
    }
    let stats = extractor.http_stats();
    let manifest = Manifest {
        format_version: crate::sink::manifest::FORMAT_VERSION,
        crmdump_version: env!("CARGO_PKG_VERSION").to_string(),
        source: extractor.source().to_string(),
        account: catalog.account.clone(),
        objects: catalog.objects.iter().map(|o| o.object_type.type_id.clone()).collect(),
        streams: catalog.streams(),
        export_date: date,
        mode: settings.mode.name().into(),
        window: settings.extent.span().map(|w| crate::sink::manifest::Window { from: iso(w.from), to: iso(w.to) }),
        started_at: settings.ingested_at.to_string(),
        finished_at: iso(Utc::now()),
        format: settings.format.manifest_name().into(),
        layout: layout.name().into(),
        tables: tables
            .iter()
            .map(|t| {
                let files = receipts.remove(&t.name).unwrap_or_default();
                TableEntry {
                    name: t.name.clone(),
                    rows: files.iter().map(|f| f.rows).sum(),
                    columns: t
                        .columns
                        .iter()
                        .map(|c| ColumnEntry {
                            name: c.name.clone(),
                            ty: c.ty.manifest_name().to_string(),
                            nullable: c.nullable,
                        })
                        .collect(),
                    files,
                }
            })
            .collect(),
        associations: Some(if settings.extent.holds_every_association() { "all" } else { "of_records" }.into()),
        reconcile,
        requests: stats.requests.load(Ordering::Relaxed).saturating_sub(settings.counted_before.0),
        retries: stats.retries.load(Ordering::Relaxed).saturating_sub(settings.counted_before.1),
        warnings,
    };
    let manifest_key = day.commit(&manifest).await?;
    let (tokens, paced) = (stats.tokens.load(Ordering::Relaxed), stats.paced.load(Ordering::Relaxed));
    // Discovery is part of the first export's count only (a backfill's later days exclude it).
    let discovery = if settings.counted_before.0 == 0 { stats.discovery.load(Ordering::Relaxed) } else { 0 };
    let elapsed = clock.elapsed();
    let association_types = learnt.association_types;
    Ok(ExportReport {
        manifest,
        manifest_key,
        elapsed,
        tokens,
        paced,
        discovery,
        merges_reported,
        sightings,
        association_types,
    })
}

fn warning(notice: Notice) -> Warning {
    tracing::warn!(table = %notice.table, kind = %notice.kind, "{}", notice.detail);
    Warning { kind: notice.kind, table: notice.table, count: notice.count, detail: Some(notice.detail) }
}

/// Reads emits until the extractor is done, splitting them into table rows for the
/// writers. Returns the unparseable-value counts per table and the warnings. Stops at once
/// when a writer fails (dropping `rx`, so that the extractor stops too).
async fn route_all(
    mut rx: mpsc::Receiver<Emit>,
    writers: &mut Writers,
    ingested: &Arc<str>,
    progress: &Progress,
    (known_merges, reported): (&std::collections::HashSet<String>, &mut std::collections::BTreeSet<String>),
    (sightings, learnt): (&mut Sightings, &mut Learnt),
) -> Result<(BTreeMap<String, u64>, Vec<Warning>)> {
    let mut unparseable: BTreeMap<String, u64> = BTreeMap::new();
    let mut notes: Vec<Warning> = Vec::new();
    loop {
        let emit = tokio::select! {
            emit = rx.recv() => emit,
            // The writer's own error, not the extractor's closed channel: `rx` stays open
            // until the failure is known, and closes when this returns.
            _ = writers.cancelled() => return Err(writers.failure().await),
        };
        let Some(emit) = emit else { break };
        let rows = match emit {
            Emit::Objects { stream, batch, unparseable: own } => {
                if own > 0 {
                    *unparseable.entry(stream.table.name.clone()).or_default() += own;
                }
                sightings.objects(&batch)?;
                split::split_objects(&stream, &batch, ingested)?
            }
            Emit::Associations { pair, batch } => split::split_associations(&pair, &batch)?,
            Emit::Rows { table, batch, unparseable } => vec![split::TableRows { table, batch, unparseable }],
            Emit::Warning(notice) => {
                notes.push(warning(notice));
                continue;
            }
            Emit::Listed { type_id, ids, listing_requests, association_requests } => {
                sightings.listed(&type_id, ids, listing_requests, association_requests);
                continue;
            }
            Emit::Pair(pair) => {
                if writers.declare(pair.table.clone()) {
                    learnt.tables.push(pair.table.clone());
                }
                continue;
            }
            Emit::AssociationTypes(types) => {
                learnt.association_types = Some(types);
                continue;
            }
            Emit::Complete(tables) => {
                for t in &tables {
                    writers.complete(t).await?;
                }
                continue;
            }
        };
        for mut r in rows {
            if r.table == "DELETED_OBJECTS" {
                r.batch = new_merges(r.batch, known_merges, reported)?;
                sightings.deleted(&r.batch)?;
            }
            if r.unparseable > 0 {
                *unparseable.entry(r.table.clone()).or_default() += r.unparseable;
            }
            if r.batch.num_rows() > 0 {
                progress.add_rows(&r.table, r.batch.num_rows() as u64);
                writers.route(&r.table, r.batch).await?;
            }
        }
    }
    Ok((unparseable, notes))
}
