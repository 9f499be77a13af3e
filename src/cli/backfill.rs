//! `crmdump backfill --from D1 --to D2`: one day folder per day holding the records last
//! modified (or archived, or events that occurred) that day, plus the reference tables,
//! committed day by day. Days already committed are skipped unless `--force`, so an
//! interrupted backfill resumes at the first uncommitted day. The nightly watermarks are
//! not touched.

use chrono::{Duration, NaiveDate};
use clap::Args;

use super::output::{OutputArgs, Run};
use super::source::SourceArgs;
use crate::error::{Error, Result};
use crate::extract::{Extent, Extractor, Window};
use crate::pipeline::{self, ExportSettings, Mode};
use crate::state::Timing;

#[derive(Debug, Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub output: OutputArgs,
    /// First day to export (UTC).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub from: NaiveDate,
    /// Last day to export (UTC), at the latest yesterday.
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub to: NaiveDate,
    /// Export days again even when they are already committed.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub source: SourceArgs,
}

/// Requests and retries so far (the first exported day's manifest counts discovery too).
fn counted(extractor: &dyn Extractor) -> (u64, u64) {
    use std::sync::atomic::Ordering::Relaxed;
    let stats = extractor.http_stats();
    (stats.requests.load(Relaxed), stats.retries.load(Relaxed))
}

/// `[day 00:00, next day 00:00)` UTC.
fn day_window(day: NaiveDate) -> Window {
    let from = day.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc();
    Window { from, to: from + Duration::days(1) }
}

pub async fn run(args: BackfillArgs, quiet: bool) -> Result<()> {
    let started_at = chrono::Utc::now();
    if args.from > args.to {
        return Err(Error::Config(format!("--from {} is after --to {}: swap them", args.from, args.to)));
    }
    // A day is over once its last changes have settled into search (the settle lag).
    if day_window(args.to).to > started_at - Timing::DEFAULT.settle {
        return Err(Error::Config(format!(
            "--to {} has not ended yet (UTC): a day is backfilled once it is over; `crmdump export` covers today",
            args.to
        )));
    }
    let mut run = Run::open(&args.output, &args.source, quiet, started_at).await?;
    let layout = args.output.layout();
    // The pairs the nightly runs found associated or asked about (a backfill reads the state
    // and leaves it alone).
    run.load_state().await?;

    // The webhook journal, read once: each day takes the events that occurred on it (the
    // nightly position does not move).
    let journal = super::output::read_journal(&run.sink, run.extractor().source(), &run.catalog.account, None).await?;

    let (mut done, mut skipped, mut data_warnings) = (0u32, 0u32, 0u64);
    let mut day = args.from;
    while day <= args.to {
        let date = day.format("%Y-%m-%d").to_string();
        // Another account's day is refused, committed or not; a narrower one too, unless
        // --force (which widens this run to what the committed day read).
        let claimed = run.claim(&args.source, layout, &date, args.force).await?;
        let (sink, extractor, catalog, progress) = (&run.sink, run.extractor(), &run.catalog, &run.progress);
        let streams = catalog.streams();
        if !args.force && claimed.committed {
            say!("{date}: already committed; skipped (--force exports it again)");
            skipped += 1;
            day += Duration::days(1);
            continue;
        }
        let window = day_window(day);
        let mut extent = Extent::whole();
        for s in &streams {
            extent.set(s, window);
        }
        let in_day =
            |ms: Option<i64>| ms.and_then(chrono::DateTime::from_timestamp_millis).is_some_and(|t| window.contains(t));
        let journal = journal.as_ref().map(|(lines, _)| {
            std::sync::Arc::new(lines.iter().filter(|l| in_day(l.occurred_at_ms)).cloned().collect::<Vec<_>>())
        });
        let settings = ExportSettings {
            journal,
            mode: Mode::Backfill,
            extent,
            date: day,
            ingested_at: run.ingested_at.clone(),
            counted_before: if done == 0 { (0, 0) } else { counted(extractor) },
            ..args.output.settings()
        };
        let report = pipeline::export(extractor, catalog, sink, &settings, progress).await?;
        let m = &report.manifest;
        data_warnings += m.data_warnings();
        let records: u64 = m.tables.iter().filter(|t| t.name == "OBJECTS").map(|t| t.rows).sum();
        say!(
            "{date}: committed {}/{}: {records} records, {} requests, {:.1} s",
            run.dest.trim_end_matches('/'),
            report.manifest_key,
            m.requests,
            report.elapsed.as_secs_f64()
        );
        done += 1;
        day += Duration::days(1);
    }
    say!(
        "Backfill {} .. {}: {done} days exported, {skipped} already committed, {:.1} s",
        args.from,
        args.to,
        (chrono::Utc::now() - started_at).as_seconds_f64()
    );
    super::output::strict_check(args.output.strict, data_warnings)
}
