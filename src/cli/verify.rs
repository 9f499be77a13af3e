//! `crmdump verify PATH|URL`: a day folder (holding `_manifest.json`), or an export root,
//! daily or hive layout (`--date` picks one day). A root is checked whole: every committed
//! date against its manifest, every date without one, every file that is no part of an
//! export, the leases, and the webhook journal part by part.

use clap::Args;

use crate::error::{Error, Result};
use crate::sink::Sink;
use crate::sink::layout::Layout;
use crate::sink::scan::scan;
use crate::sink::verify::{Target, verify};
use crate::webhook::journal::{ROOT as JOURNAL, verify_journal};

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A day folder or an export root: local path, file://, s3://bucket/prefix.
    pub path: String,
    /// Only this export date (with an export root).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<chrono::NaiveDate>,
}

/// Counts problems as they are printed.
#[derive(Default)]
struct Tally {
    problems: usize,
    checked: usize,
}

impl Tally {
    fn report(&mut self, name: &str, report: &crate::sink::verify::Report) {
        for p in &report.problems {
            say!("MISMATCH {p}");
        }
        let fake = if report.sandbox { " (sandbox data: generated, not an account's)" } else { "" };
        say!("{name}{fake}: {} files checked, {} problems", report.files_checked, report.problems.len());
        self.problems += report.problems.len();
        self.checked += 1;
    }
}

pub async fn run(args: VerifyArgs) -> Result<()> {
    let sink = Sink::open_existing(&args.path)?;
    let mut tally = Tally::default();
    let own = Layout::day_folder_manifest_key();
    if args.date.is_none() && sink.get(own).await?.is_some() {
        // PATH is a day folder of the daily layout.
        let present = sink.files_under("").await?.into_iter().filter(|k| k != own).collect();
        let target = Target { manifest_key: own.into(), base: String::new(), present };
        tally.report("(this folder)", &verify(&sink, &target).await?);
    } else if let Some(date) = args.date.map(crate::model::day_key) {
        let mut layouts = Vec::new();
        for layout in [Layout::Daily, Layout::Hive] {
            if sink.get(&layout.manifest_key(&date)).await?.is_some() {
                layouts.push(layout);
            }
        }
        // Without a manifest, the daily layout's is the one named missing.
        for layout in if layouts.is_empty() { vec![Layout::Daily] } else { layouts } {
            let target = Target::of_day(&sink, layout, &date).await?;
            tally.report(&format!("{date} ({})", layout.name()), &verify(&sink, &target).await?);
        }
    } else {
        verify_root(&sink, &args.path, &mut tally).await?;
    }
    if tally.problems > 0 {
        return Err(Error::Verify(tally.problems));
    }
    Ok(())
}

/// Every date, stray, lease and journal part of an export root.
async fn verify_root(sink: &Sink, path: &str, tally: &mut Tally) -> Result<()> {
    let root = scan(sink, &[JOURNAL]).await?;
    for day in root.days.iter().filter(|d| d.manifest.is_some()) {
        let target = Target {
            manifest_key: day.layout.manifest_key(&day.date),
            base: day.layout.base(&day.date),
            present: day.files.clone(),
        };
        tally.report(&format!("{} ({})", day.date, day.layout.name()), &verify(sink, &target).await?);
    }
    for l in &root.leases {
        say!("{}", super::lease::describe(l));
    }
    let problems = root.problems();
    for p in &problems {
        say!("PROBLEM {p}");
    }
    tally.problems += problems.len();
    let journal = verify_journal(sink).await?;
    for (folder, report) in &journal {
        tally.report(&format!("{folder} (journal)"), report);
    }
    if tally.checked == 0 && problems.is_empty() {
        return Err(Error::Destination {
            dest: path.to_string(),
            detail: "no manifest here (no _manifest.json, no <date>/_manifest.json, no _manifests/<date>.json): nothing committed to verify".into(),
        });
    }
    say!("{path}: {} dates, {} problems of the root", root.days.len(), problems.len());
    Ok(())
}
