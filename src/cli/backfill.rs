//! `crmdump backfill --from D1 --to D2`: one day folder per day holding the records last
//! modified (or archived, or events that occurred) that day, plus the reference tables,
//! committed day by day. Days already committed are skipped unless `--force`, so an
//! interrupted backfill resumes at the first uncommitted day. The nightly watermarks are
//! not touched.

use chrono::NaiveDate;
use clap::Args;

use super::output::OutputArgs;
use super::source::SourceArgs;
use crate::error::Result;
use crate::run::{self, BackfillDay, BackfillSettings};

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

pub async fn run(args: BackfillArgs, quiet: bool) -> Result<()> {
    let started = std::time::Instant::now();
    let output = args.output.settings();
    let settings = BackfillSettings {
        source: args.source.settings(false),
        output,
        from: args.from,
        to: args.to,
        force: args.force,
        progress: super::progress_mode(quiet),
    };
    let outcome = run::backfill(&settings, |day| match day {
        BackfillDay::Skipped(date) => say!("{date}: already committed; skipped (--force exports it again)"),
        BackfillDay::Committed { date, dest, day: report } => {
            let m = &report.manifest;
            let records: u64 = m.tables.iter().filter(|t| t.name == "OBJECTS").map(|t| t.rows).sum();
            say!(
                "{date}: committed {}/{}: {records} records, {} requests, {:.1} s",
                dest.trim_end_matches('/'),
                report.manifest_key,
                m.requests,
                report.elapsed.as_secs_f64()
            );
        }
    })
    .await?;
    say!(
        "Backfill {} .. {} into {}: {} days exported, {} already committed, {:.1} s",
        args.from,
        args.to,
        outcome.dest.trim_end_matches('/'),
        outcome.exported,
        outcome.skipped,
        started.elapsed().as_secs_f64()
    );
    outcome.strict(args.output.strict)
}
