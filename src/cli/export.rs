//! `crmdump export`: flags into the library's export settings, the run, and its summary.

use clap::{Args, ValueEnum};

use super::output::{OutputArgs, print_summary};
use super::source::SourceArgs;
use crate::error::Result;
use crate::run::{self, ExportSettings, RequestedMode};
use crate::state::Timing;

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
    let settings = ExportSettings {
        date: args.date,
        mode: args.mode.map(|m| match m {
            ModeArg::Full => RequestedMode::Full,
            ModeArg::Incremental => RequestedMode::Incremental,
        }),
        timing: Timing { lookback: args.lookback, settle: args.settle_lag },
        force: args.force,
        reconcile: args.reconcile,
        progress: super::progress_mode(quiet),
        ..ExportSettings::new(args.source.settings(false), args.output.settings())
    };
    let outcome = run::export(&settings).await?;
    print_summary(&outcome.dest, &outcome.day);
    outcome.strict(args.output.strict)
}
