//! `crmdump export`: validate flags, open the destination, start the source, pick the mode
//! from the state, run, commit, then advance the watermarks and the baseline of ids.

use std::collections::HashSet;

use clap::{Args, ValueEnum};

use super::output::{OutputArgs, Run};
use super::source::SourceArgs;
use crate::error::{Error, Result};
use crate::model::{KnownIds, Reconcile};
use crate::pipeline::{self, ExportSettings, Mode};
use crate::schema::iso;
use crate::state::{State, Timing, baseline};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Every record.
    Full,
    /// Records created, changed or archived since the last committed run (minus the lookback).
    Incremental,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// Export date, the name of the day folder (default: today, UTC).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<chrono::NaiveDate>,
    /// full or incremental; default: incremental once <dest>/_state holds this account's
    /// watermarks, full before.
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// How far before the watermark an incremental run starts reading again.
    #[arg(long, default_value = "10m", value_parser = super::parse_duration)]
    pub lookback: chrono::Duration,
    /// Changes newer than this, at the run's start, are left to the next run.
    #[arg(long, default_value = "1m", value_parser = super::parse_duration)]
    pub settle_lag: chrono::Duration,
    /// Re-run a date with fewer object types than its committed export read: the streams
    /// only that export read are read again whole, so that the day folder keeps them.
    #[arg(long)]
    pub force: bool,
    /// Also list every id of every object type and compare them with the ids the destination
    /// knows to exist: the missing become DELETED_OBJECTS rows (SOURCE reconcile), and the
    /// day folder holds every association of the account. Run it weekly, or daily without
    /// webhooks (docs/FORMAT.md, "Reconcile").
    #[arg(long)]
    pub reconcile: bool,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub async fn run(args: ExportArgs, quiet: bool) -> Result<()> {
    let started_at = chrono::Utc::now();
    let date = args.date.unwrap_or_else(|| started_at.date_naive());
    let mut run = Run::open(&args.output, &args.source, quiet, started_at).await?;
    let day = date.format("%Y-%m-%d").to_string();
    let reread = run.claim(&args.source, args.output.layout(), &day, args.force).await?.reread;
    let state = run.load_state().await?;
    let (sink, extractor, catalog, progress) = (&run.sink, run.extractor(), &run.catalog, &run.progress);

    let timing = Timing { lookback: args.lookback, settle: args.settle_lag };
    let streams = catalog.streams();
    let incremental = match args.mode {
        Some(ModeArg::Full) => false,
        Some(ModeArg::Incremental) => true,
        None => state.is_some(),
    };
    let mut state = state.unwrap_or_else(|| State::new(extractor.source(), &catalog.account));
    if incremental && let Some(newer) = state.forgotten(date) {
        return Err(Error::Config(format!(
            "{day} is older than the last export ({newer}) and the watermarks its first run started from are not kept \
             (or it was never exported): an incremental run would write today's changes under {day}. \
             Use `crmdump backfill --from {day} --to {day}` for the records last modified that day, or --mode full"
        )));
    }
    let mut plan = if incremental {
        state.plan_incremental(date, &streams, timing, started_at)
    } else {
        State::plan_full(&streams, timing, started_at)
    };
    for stream in &reread {
        plan.read_whole(stream);
    }
    let whole: Vec<&String> = streams.iter().filter(|s| plan.extent.window(s).is_none()).collect();
    if incremental && !whole.is_empty() {
        tracing::info!(streams = whole.len(), first = %whole[0], "No watermark for these streams yet: reading them whole.");
    }
    let journal_start = state.journal_start(date);
    let journal =
        super::output::read_journal(sink, extractor.source(), &catalog.account, journal_start.as_deref()).await?;
    // Records the events name are read by id when search does not show them.
    if let Some((lines, _)) = &journal {
        for (type_id, ids) in crate::webhook::consume::named_records(lines) {
            if let Some(o) = catalog.objects.iter().find(|o| o.object_type.type_id == type_id) {
                plan.extent.add_ids(&o.table.name, ids);
            }
        }
    }
    // The ids known to exist, as the last earlier date left them: a reconcile compares with
    // them, and every export moves them by what it sees.
    let baseline_refs = state.baseline_before(date).cloned();
    let previous = std::sync::Arc::new(match &baseline_refs {
        Some(refs) => baseline::load(sink, refs).await?,
        None => KnownIds::new(),
    });
    if args.reconcile {
        let known = baseline_refs.is_some().then(|| previous.clone());
        if known.is_none() {
            tracing::warn!("No baseline of ids yet: this reconcile lists every id and reports no deletion.");
        }
        plan.extent.reconcile_with(Reconcile { known });
    }
    let settings = ExportSettings {
        mode: if plan.extent.is_whole() { Mode::Full } else { Mode::Incremental },
        extent: plan.extent.clone(),
        date,
        ingested_at: run.ingested_at.clone(),
        journal: journal.as_ref().map(|(lines, _)| lines.clone()),
        merges_reported: std::sync::Arc::new(state.merges_known_before(date)),
        ..args.output.settings()
    };
    let mut report = pipeline::export(extractor, catalog, sink, &settings, progress).await?;
    // Only now, with the day committed, may the watermarks and the journal position move.
    state.commit(date, &plan);
    state.commit_merges(date, &report.merges_reported);
    if let Some(types) = report.association_types.take() {
        state.association_types = Some(types);
    }
    if let Some((_, end)) = journal {
        state.commit_journal(date, journal_start, end);
    }
    // A baseline starts with a full export or a reconcile; later exports move it.
    let read_whole: HashSet<String> = catalog
        .objects
        .iter()
        .filter(|o| plan.extent.window(&o.table.name).is_none())
        .map(|o| o.object_type.type_id.clone())
        .collect();
    let prefix = baseline::prefix(extractor.source(), &catalog.account);
    if baseline_refs.is_some() || args.reconcile || !read_whole.is_empty() {
        let next = std::mem::take(&mut report.sightings).apply(&previous, &read_whole);
        let run_name = started_at.format("%Y%m%dT%H%M%S%3fZ").to_string();
        let refs =
            baseline::save(sink, &prefix, &run_name, &next, (&previous, &baseline_refs.unwrap_or_default())).await?;
        state.commit_baseline(date, refs);
    }
    let key = state.save(sink).await?;
    tracing::info!(key = %key, until = %iso(plan.until), "Watermarks advanced.");
    let kept: HashSet<&String> = state.baselines.values().flat_map(|refs| refs.values()).collect();
    let pruned = baseline::prune(sink, &prefix, &kept).await?;
    if pruned > 0 {
        tracing::info!(files = pruned, "Baseline files no kept date names removed.");
    }
    super::output::print_summary(&run.dest, &report);
    super::output::strict_check(args.output.strict, report.manifest.data_warnings())
}
