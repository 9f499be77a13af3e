//! `crmdump verify PATH|URL`: a day folder (holding `_manifest.json`), or an export root
//! whose committed days are all checked, daily or hive layout (`--date` picks one day), and
//! its webhook journal, part by part.

use clap::Args;

use crate::error::{Error, Result};
use crate::sink::Sink;
use crate::sink::layout::Layout;
use crate::sink::verify::{Target, verify};
use crate::webhook::journal::verify_journal;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A day folder or an export root: local path, file://, s3://bucket/prefix.
    pub path: String,
    /// Only this export date (with an export root).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<chrono::NaiveDate>,
}

/// The committed days under `sink`, in both layouts.
async fn targets(sink: &Sink, date: Option<String>) -> Result<Vec<(String, Target)>> {
    let own = Layout::day_folder_manifest_key();
    if date.is_none() && sink.get(own).await?.is_some() {
        // PATH is a day folder of the daily layout.
        let present = sink.files_under("").await?.into_iter().filter(|k| k != own).collect();
        let target = Target { manifest_key: own.into(), base: String::new(), present };
        return Ok(vec![("(this folder)".into(), target)]);
    }
    let mut days: Vec<(String, Layout)> = Vec::new();
    for (key, _) in sink.list("").await? {
        if let Some((layout, day)) = Layout::of_manifest_key(&key) {
            days.push((day, layout));
        }
    }
    if let Some(d) = &date {
        days.retain(|(day, _)| day == d);
        if days.is_empty() {
            // Name the missing manifest of the daily layout.
            days.push((d.clone(), Layout::Daily));
        }
    }
    days.sort();
    let mut out = Vec::new();
    for (day, layout) in days {
        let target = Target::of_day(sink, layout, &day).await?;
        out.push((format!("{day} ({})", layout.name()), target));
    }
    Ok(out)
}

pub async fn run(args: VerifyArgs) -> Result<()> {
    let sink = Sink::open_existing(&args.path)?;
    let targets = targets(&sink, args.date.map(crate::model::day_key)).await?;
    // The webhook journal, when this is an export root (not one day folder or one date).
    let journal = match (args.date, targets.first()) {
        (None, Some((_, t))) if t.manifest_key == Layout::day_folder_manifest_key() => Vec::new(),
        (None, _) => verify_journal(&sink).await?,
        (Some(_), _) => Vec::new(),
    };
    if targets.is_empty() && journal.is_empty() {
        return Err(Error::Destination {
            dest: args.path.clone(),
            detail: "no manifest here (no _manifest.json, no <date>/_manifest.json, no _manifests/<date>.json): nothing committed to verify".into(),
        });
    }
    let mut problems = 0;
    for (name, target) in &targets {
        let report = verify(&sink, target).await?;
        for p in &report.problems {
            say!("MISMATCH {p}");
        }
        let fake = if report.sandbox { " (sandbox data: generated, not an account's)" } else { "" };
        say!("{name}{fake}: {} files checked, {} problems", report.files_checked, report.problems.len());
        problems += report.problems.len();
    }
    for (folder, report) in &journal {
        for p in &report.problems {
            say!("MISMATCH {p}");
        }
        say!("{folder} (journal): {} parts checked, {} problems", report.files_checked, report.problems.len());
        problems += report.problems.len();
    }
    if problems > 0 {
        return Err(Error::Verify(problems));
    }
    Ok(())
}
