//! `crmdump verify PATH|URL`: a day folder (holding `_manifest.json`), or an export root
//! whose day folders are all checked (`--date` picks one).

use clap::Args;

use crate::error::{Error, Result};
use crate::sink::Sink;
use crate::sink::manifest::MANIFEST_FILE;
use crate::sink::verify::verify_day;

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// A day folder or an export root: local path, file://, s3://bucket/prefix.
    pub path: String,
    /// Only this export date (with an export root).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<chrono::NaiveDate>,
}

pub async fn run(args: VerifyArgs) -> Result<()> {
    let sink = Sink::open(&args.path)?;
    let days: Vec<String> = if let Some(d) = args.date {
        vec![d.format("%Y-%m-%d").to_string()]
    } else if sink.get(MANIFEST_FILE).await?.is_some() {
        vec![String::new()]
    } else {
        let mut days: Vec<String> = sink
            .list("")
            .await?
            .into_iter()
            .filter_map(|(key, _)| key.strip_suffix(&format!("/{MANIFEST_FILE}")).map(str::to_string))
            .filter(|d| !d.contains('/'))
            .collect();
        days.sort();
        days
    };
    if days.is_empty() {
        return Err(Error::Destination {
            dest: args.path.clone(),
            detail: "no _manifest.json here or in a day folder below: nothing committed to verify".into(),
        });
    }
    let mut problems = 0;
    for day in &days {
        let report = verify_day(&sink, day).await?;
        let name = if day.is_empty() { args.path.as_str() } else { day.as_str() };
        for p in &report.problems {
            println!("MISMATCH {p}");
        }
        println!("{name}: {} files checked, {} problems", report.files_checked, report.problems.len());
        problems += report.problems.len();
    }
    if problems > 0 {
        return Err(Error::Verify(problems));
    }
    Ok(())
}
