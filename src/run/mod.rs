//! One export or backfill run, from settings to commit, as library calls: [`export`] and
//! [`backfill`]. In order: the destination is opened (and probed), the source connected and
//! discovered, the date claimed, the mode planned from the state, the webhook journal's new
//! events and the baseline of ids read, the day folder written and committed by the
//! pipeline, and only then the watermarks, journal position and baseline moved.
//!
//! Nothing here prints: the command line shows what the returned outcomes say.

mod connect;
mod settings;

use std::collections::HashSet;
use std::sync::Arc;

use chrono::{DateTime, Duration, NaiveDate, Utc};

pub use crate::extract::hubspot::HistoryLimits;
pub use crate::http::RateLimit;
pub use crate::pipeline::DaySummary;
pub use crate::progress::ProgressMode;
pub use crate::sink::layout::Layout;
pub use crate::sink::lease::{DEFAULT_STALE_AFTER, LeaseOptions};
pub use crate::sink::manifest::{Manifest, TableEntry, Warning};
pub use crate::state::Timing;
pub use crate::write::{OutputFormat, PartReceipt};
pub use connect::{Connected, connect};
pub use settings::{
    BackfillSettings, DEFAULT_CONCURRENCY, DEFAULT_GZIP_LEVEL, DEFAULT_MAX_FILE_SIZE, DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_SEARCH_RATE_LIMIT, ExportSettings, OutputSettings, RequestedMode, SandboxSettings, SourceKind,
    SourceSettings,
};

use crate::error::{Error, Result};
use crate::extract::{Catalog, Extent, Extractor, Window};
use crate::model::{Reconcile, day_key};
use crate::pipeline::{self, DayReport, DaySettings, Mode};
use crate::progress::{Progress, ProgressGuard};
use crate::schema::iso;
use crate::sink::Sink;
use crate::sink::claim::{self, Claim, Owner};
use crate::sink::lease::Lease;
use crate::state::baseline::{self, Baseline};
use crate::state::{Plan, State};
use crate::webhook::journal::Pending;

/// What a committed export reports.
#[derive(Debug)]
pub struct ExportOutcome {
    /// The destination, placeholders resolved.
    pub dest: String,
    pub day: DaySummary,
}

impl ExportOutcome {
    /// With `strict`, data warnings in the committed manifest are an error (exit code 4).
    pub fn strict(&self, strict: bool) -> Result<()> {
        strict_check(strict, self.day.manifest.data_warnings())
    }
}

/// What one day of a backfill did.
#[derive(Debug)]
pub enum BackfillDay<'a> {
    /// Already committed, and not forced: left as it is.
    Skipped(NaiveDate),
    /// Committed into `dest` (placeholders resolved).
    Committed { date: NaiveDate, dest: &'a str, day: Box<DaySummary> },
}

/// What a finished backfill reports.
#[derive(Debug, Default)]
pub struct BackfillOutcome {
    pub dest: String,
    pub exported: u32,
    pub skipped: u32,
    pub data_warnings: u64,
}

impl BackfillOutcome {
    /// With `strict`, data warnings in the committed manifests are an error (exit code 4).
    pub fn strict(&self, strict: bool) -> Result<()> {
        strict_check(strict, self.data_warnings)
    }
}

fn strict_check(strict: bool, data_warnings: u64) -> Result<()> {
    if strict && data_warnings > 0 { Err(Error::DataWarnings(data_warnings)) } else { Ok(()) }
}

/// Exports one date (today by default) and commits it; then moves the state. The run holds
/// the destination's lease for the account throughout, and stops without committing if it
/// loses it.
pub async fn export(settings: &ExportSettings) -> Result<ExportOutcome> {
    let started_at = Utc::now();
    let mut run = Run::open(&settings.output, &settings.source, settings.progress, started_at, "export").await?;
    let lost = run.lease.lost();
    let result = tokio::select! {
        result = export_date(&mut run, settings) => result,
        () = lost.cancelled() => Err(run_lost(&run.dest)),
    };
    run.release().await;
    result
}

/// The error of a run whose lease was lost while it ran.
fn run_lost(dest: &str) -> Error {
    Error::LeaseLost {
        dest: dest.to_string(),
        why: "it could not be renewed in time, or another run took it over".into(),
    }
}

async fn export_date(run: &mut Run, settings: &ExportSettings) -> Result<ExportOutcome> {
    let date = settings.date.unwrap_or_else(|| run.started_at.date_naive());
    refuse_future(date, run.started_at)?;
    let state = run.load_state().await?;
    if settings.mode != Some(RequestedMode::Full) {
        run.refuse_watermarks_ahead(state.as_ref())?;
    }
    let claimed = run.claim(date, settings.force).await?;
    // A re-run keeps the promise of the committed run: a reconcile's folder held every
    // deletion it found and every association, and so does its re-run.
    let reconcile = settings.reconcile || claimed.committed.as_ref().is_some_and(|m| m.reconcile.is_some());
    if reconcile && !settings.reconcile {
        tracing::info!("The committed export of this date was a reconcile: re-running it as one.");
    }
    // A full export's folder held every record and reported what vanished: so does its re-run.
    let full_again = claimed.committed.as_ref().is_some_and(|m| m.mode == Mode::Full.name());
    if full_again && settings.mode != Some(RequestedMode::Full) {
        tracing::info!("The committed export of this date was full: re-running it full.");
    }
    let incremental = match settings.mode {
        _ if full_again => false,
        Some(RequestedMode::Full) => false,
        Some(RequestedMode::Incremental) => true,
        None => state.is_some(),
    };
    let mut state = state.unwrap_or_else(|| State::new(run.extractor().source(), &run.catalog.account));
    let mut plan = run.plan(&state, date, incremental, settings.timing, &claimed.reread)?;
    let journal_start = state.journal_start(date);
    let journal = run.pending_journal(journal_start.as_deref()).await?;
    run.read_named_records(journal.as_ref(), &mut plan.extent);
    // The ids known to exist, as the last earlier date left them: a reconcile compares with
    // them, and every export moves them by what it sees.
    let baseline = Baseline::load(&run.sink, state.baseline_before(date)).await?;
    if reconcile {
        plan.extent.reconcile_with(reconcile_against(&baseline));
    } else if baseline.files.is_some() {
        // Streams read whole list every id anyway: what vanished since is reported.
        plan.extent.compare_whole_reads_with(baseline.ids.clone());
    }
    // A type read whole should end with about the ids the baseline holds: progress can say
    // how far along it is.
    for stream in &run.catalog.objects {
        let known = baseline.ids.get(&stream.object_type.type_id).map(|ids| ids.len() as u64);
        if let (None, Some(known)) = (plan.extent.window(&stream.table.name), known) {
            run.progress.expect(&stream.table.name, known);
        }
    }
    let day = DaySettings {
        mode: if plan.extent.is_whole() { Mode::Full } else { Mode::Incremental },
        extent: plan.extent.clone(),
        journal: journal.as_ref().map(|p| p.lines.clone()),
        archived_now: run.archived_now(journal.as_ref().map(|p| &p.lines[..])).await?,
        merges_reported: Arc::new(state.merges_known_before(date)),
        ..run.day_settings(date)
    };
    let report = run.export_day(&day).await?;
    // Only now, with the day committed, may the watermarks, the journal position and the
    // baseline move.
    let committed = Committed { date, plan: &plan, journal_start, journal, baseline, reconcile };
    run.advance(&mut state, committed, report.learnt)
        .await
        .map_err(|e| Error::StateNotSaved { source: Box::new(e) })?;
    Ok(ExportOutcome { dest: run.dest.clone(), day: report.summary })
}

/// Exports each day from `settings.from` to `settings.to` (the records last modified that
/// day), committing each before the next; `each_day` hears of every day as it is done.
pub async fn backfill(settings: &BackfillSettings, each_day: impl FnMut(BackfillDay<'_>)) -> Result<BackfillOutcome> {
    let started_at = Utc::now();
    if settings.from > settings.to {
        return Err(Error::Config(format!("--from {} is after --to {}: swap them", settings.from, settings.to)));
    }
    // A day is over once its last changes have settled into search (the settle lag).
    if day_window(settings.to).to > started_at - Timing::DEFAULT.settle {
        return Err(Error::Config(format!(
            "--to {} has not ended yet (UTC): a day is backfilled once it is over; `crmdump export` covers today",
            settings.to
        )));
    }
    let mut run = Run::open(&settings.output, &settings.source, settings.progress, started_at, "backfill").await?;
    let lost = run.lease.lost();
    let result = tokio::select! {
        result = backfill_days(&mut run, settings, each_day) => result,
        () = lost.cancelled() => Err(run_lost(&run.dest)),
    };
    run.release().await;
    result
}

async fn backfill_days(
    run: &mut Run,
    settings: &BackfillSettings,
    mut each_day: impl FnMut(BackfillDay<'_>),
) -> Result<BackfillOutcome> {
    // Another account's committed day in the range refuses the whole backfill before it starts.
    let mut day = settings.from;
    while day <= settings.to {
        run.refuse_foreign(day).await?;
        day += Duration::days(1);
    }
    // The pairs the nightly runs found associated or asked about (a backfill reads the state
    // and leaves it alone).
    run.load_state().await?;
    // The webhook journal, read once: each day takes the events that occurred on it (the
    // nightly position does not move).
    let journal = run.pending_journal(None).await?;
    let mut outcome = BackfillOutcome::default();
    let mut day = settings.from;
    while day <= settings.to {
        // Another account's day is refused, committed or not; a narrower one too, unless
        // forced (which widens this run to what the committed day read).
        let claimed = run.claim(day, settings.force).await?;
        match &claimed.committed {
            Some(_) if !settings.force => {
                outcome.skipped += 1;
                each_day(BackfillDay::Skipped(day));
                day += Duration::days(1);
                continue;
            }
            // What an export delivered (its deletions, change events and association changes,
            // which the state already counts as delivered) is no backfill's to replace.
            Some(m) if m.mode != Mode::Backfill.name() => {
                return Err(Error::Config(format!(
                    "{} was committed by `crmdump export` ({} mode): a backfill would replace that day folder with the \
                     records last modified that day and lose what the export delivered (its deletions, change events \
                     and association changes). Nothing was touched; re-run that date with `crmdump export --date {}` \
                     instead, or back up and remove its day folder first",
                    run.place(&day_key(day)),
                    m.mode,
                    day_key(day)
                )));
            }
            _ => {}
        }
        let window = day_window(day);
        let mut extent = Extent::whole();
        for s in &run.catalog.streams() {
            extent.set(s, window);
        }
        let in_day = |ms: Option<i64>| ms.and_then(DateTime::from_timestamp_millis).is_some_and(|t| window.contains(t));
        let journal = journal
            .as_ref()
            .map(|p| Arc::new(p.lines.iter().filter(|l| in_day(l.occurred_at_ms)).cloned().collect::<Vec<_>>()));
        let archived_now = run.archived_now(journal.as_ref().map(|j| &j[..])).await?;
        let settings = DaySettings {
            journal,
            archived_now,
            mode: Mode::Backfill,
            extent,
            counted_before: if outcome.exported == 0 { (0, 0) } else { run.counted() },
            ..run.day_settings(day)
        };
        let report = run.export_day(&settings).await?;
        outcome.data_warnings += report.summary.manifest.data_warnings();
        outcome.exported += 1;
        each_day(BackfillDay::Committed { date: day, dest: &run.dest, day: Box::new(report.summary) });
        day += Duration::days(1);
    }
    outcome.dest = run.dest.clone();
    Ok(outcome)
}

/// Refuses an export date that has not begun anywhere on Earth yet (UTC+14 is the furthest
/// ahead): its folder would sit above every nightly that follows.
fn refuse_future(date: NaiveDate, now: DateTime<Utc>) -> Result<()> {
    let latest = (now + Duration::hours(14)).date_naive();
    if date > latest {
        return Err(Error::Config(format!(
            "--date {date} is in the future (today is {} in UTC): its folder would sort above every nightly that \
             follows. Leave --date out for today",
            now.date_naive()
        )));
    }
    Ok(())
}

/// `[day 00:00, next day 00:00)` UTC.
fn day_window(day: NaiveDate) -> Window {
    let from = day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    Window { from, to: from + Duration::days(1) }
}

/// A reconcile compares with `baseline`, when the destination has one.
fn reconcile_against(baseline: &Baseline) -> Reconcile {
    let known = baseline.files.is_some().then(|| baseline.ids.clone());
    if known.is_none() {
        tracing::warn!("No baseline of ids yet: this reconcile lists every id and reports no deletion.");
    }
    Reconcile { known }
}

/// Records (type id, id) that deletion events name but the recycle bin still holds.
type ArchivedNow = Arc<std::collections::HashSet<(String, String)>>;

/// What [`Run::claim`] found of a date.
struct Claimed {
    /// The date's committed export, if any.
    committed: Option<Manifest>,
    /// Streams to read whole: those only the committed export read (when forced).
    reread: Vec<String>,
}

/// What a committed export of `date` moves in the state.
struct Committed<'a> {
    date: NaiveDate,
    plan: &'a Plan,
    /// Where the run started reading the journal, and what it read.
    journal_start: Option<String>,
    journal: Option<Pending>,
    /// The baseline of ids the run started from.
    baseline: Baseline,
    reconcile: bool,
}

/// What `export` and `backfill` set up before their first day: the destination (checked
/// writable), the connected source, progress on display, and the account's catalog.
struct Run {
    sink: Sink,
    /// The destination with `{source}` and `{account}` resolved.
    dest: String,
    started_at: DateTime<Utc>,
    ingested_at: Arc<str>,
    source_settings: SourceSettings,
    output: OutputSettings,
    source: Connected,
    progress: Arc<Progress>,
    catalog: Catalog,
    /// The destination's lease for this account, held from before the first write.
    lease: Arc<Lease>,
    /// The dates this run claimed, given back when it ends.
    claimed: Vec<String>,
    _display: ProgressGuard,
}

/// Opens `dest` (placeholders resolved) and checks it is writable.
async fn open_sink(dest: &str) -> Result<Sink> {
    let sink = Sink::open(dest)?;
    sink.probe_writable().await?;
    Ok(sink)
}

impl Run {
    /// Opens the destination, connects and discovers the source, and takes the destination's
    /// lease for the account (for `command`, named in the lease).
    async fn open(
        output: &OutputSettings,
        source_settings: &SourceSettings,
        progress: ProgressMode,
        started_at: DateTime<Utc>,
        command: &str,
    ) -> Result<Run> {
        source_settings.validate()?;
        // Without placeholders the destination is checked first, so that a missing bucket
        // fails before any request to the CRM; with them, once discovery named the account.
        let early = match claim::has_placeholders(&output.dest) {
            false => Some(open_sink(&output.dest).await?),
            true => None,
        };
        let ingested_at: Arc<str> = iso(started_at).into();
        let source = connect(source_settings, ingested_at.clone()).await?;
        let progress = Progress::new(progress);
        let display = progress.start();
        let catalog = pipeline::discover(source.extractor.as_ref(), &progress).await?;
        let dest = claim::resolve_dest(&output.dest, source.extractor.source(), &catalog.account)?;
        let sink = match early {
            Some(sink) => sink,
            None => {
                tracing::info!(dest = %dest, "Destination resolved.");
                open_sink(&dest).await?
            }
        };
        let name = claim::lease_name(source.extractor.source(), &catalog.account);
        let lease = Arc::new(Lease::acquire(&sink, &name, command, &output.lease).await?);
        Ok(Run {
            lease,
            claimed: Vec::new(),
            sink,
            dest,
            started_at,
            ingested_at,
            source_settings: source_settings.clone(),
            output: output.clone(),
            source,
            progress,
            catalog,
            _display: display,
        })
    }

    fn extractor(&self) -> &dyn Extractor {
        self.source.extractor.as_ref()
    }

    /// Requests and retries the source's client made so far.
    fn counted(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        let stats = self.extractor().http_stats();
        (stats.requests.load(Relaxed), stats.retries.load(Relaxed))
    }

    /// The destination's state for this account, and the pairs earlier runs found associated
    /// or asked about taught to the catalog, so that they are read without asking again.
    async fn load_state(&mut self) -> Result<Option<State>> {
        let state = State::load(&self.sink, self.extractor().source(), &self.catalog.account).await?;
        self.catalog.learn_associations(state.as_ref().and_then(|s| s.association_types.clone()));
        Ok(state)
    }

    /// Checks the committed export of `date` (if any) against this run: another source or
    /// account is refused; a narrower run is refused unless `force`, which widens it.
    async fn claim(&mut self, date: NaiveDate, force: bool) -> Result<Claimed> {
        let day = day_key(date);
        let place = self.place(&day);
        let streams = self.catalog.streams();
        let owner = Owner { source: self.extractor().source(), account: &self.catalog.account, streams: &streams };
        // Held, the claim keeps every other account's run out of the date; only then does the
        // committed manifest say for sure whose the date is.
        claim::take_date(&self.sink, &day, &owner, &place).await?;
        self.claimed.push(day.clone());
        let committed = self.committed(&day).await?;
        let reread = match claim::check(committed.as_ref(), &owner, &place)? {
            Claim::Free | Claim::Rerun => Vec::new(),
            Claim::Narrower { streams, .. } if !force => return Err(claim::narrower_refusal(&place, &day, &streams)),
            Claim::Narrower { streams, objects } => {
                tracing::warn!(
                    streams = streams.len(),
                    "--force: re-reading whole the streams the committed export of this date read."
                );
                self.widen(&objects).await?;
                streams
            }
        };
        Ok(Claimed { committed, reread })
    }

    /// Gives back the dates this run claimed, then its lease (whatever the run's outcome; a
    /// failure to give back is left to the next run, which takes over what no lease holds).
    async fn release(&self) {
        if !self.lease.lost().is_cancelled() {
            let owner = Owner { source: self.extractor().source(), account: &self.catalog.account, streams: &[] };
            for day in &self.claimed {
                if let Err(e) = claim::release_date(&self.sink, day, &owner).await {
                    tracing::warn!(date = %day, error = %e, "Could not give back the claim of the date.");
                }
            }
            let _ = self.sink.remove_empty_folders("_crmdump/claims");
        }
        self.lease.release().await;
    }

    /// Where the manifest of `day` lives, for messages.
    fn place(&self, day: &str) -> String {
        format!("{}/{}", self.dest.trim_end_matches('/'), self.output.layout.manifest_key(day))
    }

    /// The committed manifest of `day`, if any.
    async fn committed(&self, day: &str) -> Result<Option<Manifest>> {
        let key = self.output.layout.manifest_key(day);
        match self.sink.get(&key).await? {
            None => Ok(None),
            Some(bytes) => Ok(Some(Manifest::parse(&bytes, &self.place(day))?)),
        }
    }

    /// Refuses `date` when another source or account committed it.
    async fn refuse_foreign(&self, date: NaiveDate) -> Result<()> {
        let day = day_key(date);
        let owner = Owner { source: self.extractor().source(), account: &self.catalog.account, streams: &[] };
        claim::check(self.committed(&day).await?.as_ref(), &owner, &self.place(&day)).map(|_| ())
    }

    /// Refuses a state whose watermarks lie in the future (before anything is written).
    fn refuse_watermarks_ahead(&self, state: Option<&State>) -> Result<()> {
        let Some((stream, at)) = state.and_then(|s| s.watermark_ahead_of(self.started_at)) else { return Ok(()) };
        Err(Error::Config(format!(
            "the state {} says {stream} was exported up to {}, later than now ({}): a restored or hand-edited \
             state, or a clock that jumped. An incremental run would read nothing, so nothing was read or written. \
             Restore the state file from before, or run once with --mode full (which reads everything and sets \
             the watermarks to now)",
            State::key(self.extractor().source(), &self.catalog.account),
            iso(at),
            iso(self.started_at)
        )))
    }

    /// Connects the source again reading these object types too (a forced re-run of a date
    /// whose committed export read more), and discovers the wider catalog.
    async fn widen(&mut self, objects: &[String]) -> Result<()> {
        let mut wider = self.source_settings.clone();
        let mut names: Vec<String> = match &wider.objects {
            Some(list) => list.clone(),
            None => self.catalog.objects.iter().map(|o| o.object_type.type_id.clone()).collect(),
        };
        for o in objects {
            if !names.contains(o) && !self.catalog.objects.iter().any(|c| &c.object_type.type_id == o) {
                names.push(o.clone());
            }
        }
        wider.objects = Some(names);
        self.source = connect(&wider, self.ingested_at.clone()).await?;
        let known = self.catalog.association_types.take();
        self.catalog = pipeline::discover(self.source.extractor.as_ref(), &self.progress).await?;
        self.catalog.learn_associations(known);
        Ok(())
    }

    /// What `date`'s streams read: windows from the state (incremental) or whole, and
    /// `reread` whole in any case.
    fn plan(
        &self,
        state: &State,
        date: NaiveDate,
        incremental: bool,
        timing: Timing,
        reread: &[String],
    ) -> Result<Plan> {
        let streams = self.catalog.streams();
        let day = day_key(date);
        if incremental && let Some(newer) = state.forgotten(date) {
            return Err(Error::Config(format!(
                "{day} is older than the last export ({newer}) and the watermarks its first run started from are not kept \
                 (or it was never exported): an incremental run would write today's changes under {day}. \
                 Use `crmdump backfill --from {day} --to {day}` for the records last modified that day, or --mode full"
            )));
        }
        let mut plan = if incremental {
            state.plan_incremental(date, &streams, timing, self.started_at)
        } else {
            State::plan_full(&streams, timing, self.started_at)
        };
        for stream in reread {
            plan.read_whole(stream);
        }
        let whole: Vec<&String> = streams.iter().filter(|s| plan.extent.window(s).is_none()).collect();
        if incremental && !whole.is_empty() {
            tracing::info!(streams = whole.len(), first = %whole[0], "No watermark for these streams yet: reading them whole.");
        }
        Ok(plan)
    }

    /// The webhook journal's events after `start` (`None`: from the journal's start), when
    /// the account has a journal.
    async fn pending_journal(&self, start: Option<&str>) -> Result<Option<Pending>> {
        Pending::read(&self.sink, self.extractor().source(), &self.catalog.account, start).await
    }

    /// The records the journal's deletion events name that can still be read from the recycle
    /// bin: archived, not deleted (HubSpot sends `.deletion` for both).
    async fn archived_now(&self, journal: Option<&[crate::webhook::journal::Line]>) -> Result<ArchivedNow> {
        let mut archived = std::collections::HashSet::new();
        let Some(lines) = journal else { return Ok(Arc::new(archived)) };
        for (type_id, ids) in crate::webhook::consume::deletions_named(lines) {
            if !self.catalog.objects.iter().any(|o| o.object_type.type_id == type_id) {
                continue;
            }
            let ids: Vec<String> = ids.into_iter().collect();
            for id in self.extractor().in_recycle_bin(&self.catalog, &type_id, &ids).await? {
                archived.insert((type_id.clone(), id));
            }
        }
        Ok(Arc::new(archived))
    }

    /// Records the journal's events name are read by id when search does not show them.
    fn read_named_records(&self, journal: Option<&Pending>, extent: &mut Extent) {
        let Some(journal) = journal else { return };
        for (type_id, ids) in crate::webhook::consume::named_records(&journal.lines) {
            if let Some(o) = self.catalog.objects.iter().find(|o| o.object_type.type_id == type_id) {
                extent.add_ids(&o.table.name, ids);
            }
        }
    }

    /// The settings of a full export of `date` into this run's destination; callers set the
    /// rest.
    fn day_settings(&self, date: NaiveDate) -> DaySettings {
        DaySettings {
            mode: Mode::Full,
            extent: Extent::whole(),
            date,
            max_file_size: self.output.max_file_size,
            format: self.output.format,
            layout: self.output.layout,
            ingested_at: self.ingested_at.clone(),
            counted_before: (0, 0),
            journal: None,
            merges_reported: Default::default(),
            archived_now: Default::default(),
            sandbox: self.source.sandbox,
            lease: self.lease.clone(),
        }
    }

    /// Writes and commits one day folder.
    async fn export_day(&self, day: &DaySettings) -> Result<DayReport> {
        pipeline::export(self.extractor(), &self.catalog, &self.sink, day, &self.progress).await
    }

    /// Moves the state by what a committed export did, and saves it: the watermarks, merges
    /// reported, the pairs' association types, the journal position and the baseline of ids.
    async fn advance(&self, state: &mut State, day: Committed<'_>, learnt: pipeline::Learnt) -> Result<()> {
        let Committed { date, plan, journal_start, journal, baseline, reconcile } = day;
        state.commit(date, plan);
        state.commit_merges(date, &learnt.merges_reported);
        if let Some(types) = learnt.association_types {
            state.association_types = Some(types);
        }
        if let Some(journal) = journal {
            state.commit_journal(date, journal_start, journal.end);
        }
        // A baseline starts with a full export or a reconcile; later exports move it.
        let read_whole: HashSet<String> = self
            .catalog
            .objects
            .iter()
            .filter(|o| plan.extent.window(&o.table.name).is_none())
            .map(|o| o.object_type.type_id.clone())
            .collect();
        let prefix = baseline::prefix(self.extractor().source(), &self.catalog.account);
        if baseline.files.is_some() || reconcile || !read_whole.is_empty() {
            let next = learnt.sightings.apply(&baseline.ids, &read_whole);
            let run_name = self.started_at.format("%Y%m%dT%H%M%S%3fZ").to_string();
            let files = baseline.save(&self.sink, &prefix, &run_name, &next).await?;
            state.commit_baseline(date, files);
        }
        self.lease.fence().await?;
        let key = state.save(&self.sink).await?;
        tracing::info!(key = %key, until = %iso(plan.until), "Watermarks advanced.");
        let kept: HashSet<&String> = state.baselines.values().flat_map(|refs| refs.values()).collect();
        let pruned = baseline::prune(&self.sink, &prefix, &kept).await?;
        if pruned > 0 {
            tracing::info!(files = pruned, "Baseline files no kept date names removed.");
        }
        Ok(())
    }
}
