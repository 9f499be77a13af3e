//! `crmdump ddl --dialect D PATH|URL`: CREATE TABLE and load statements for a committed export.

use clap::Args;

use crate::ddl::{Dialect, ddl};
use crate::error::{Error, Result};
use crate::sink::Sink;
use crate::sink::layout::Layout;
use crate::sink::manifest::Manifest;

#[derive(Debug, Args)]
pub struct DdlArgs {
    /// SQL dialect of the statements.
    #[arg(long, value_enum)]
    pub dialect: Dialect,
    /// A day folder (daily layout) or, with --date, an export root (daily or hive).
    pub path: String,
    /// The export date (with an export root).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub date: Option<chrono::NaiveDate>,
}

pub async fn run(args: DdlArgs) -> Result<()> {
    let sink = Sink::open_existing(&args.path)?;
    let root = args.path.trim_end_matches('/');
    let (body, location) = match args.date.map(crate::model::day_key) {
        None => (sink.get(Layout::day_folder_manifest_key()).await?, root.to_string()),
        Some(d) => {
            let mut found = (None, root.to_string());
            for layout in [Layout::Daily, Layout::Hive] {
                if let Some(body) = sink.get(&layout.manifest_key(&d)).await? {
                    found = (Some(body), layout.location(root, &d));
                    break;
                }
            }
            found
        }
    };
    let body = body.ok_or_else(|| Error::Destination {
        dest: args.path.clone(),
        detail: "no committed export here: give a day folder, or an export root with --date".into(),
    })?;
    let manifest = Manifest::parse(&body, &args.path)?;
    let location = match std::fs::canonicalize(&location) {
        Ok(p) if !location.contains("://") => p.to_string_lossy().to_string(),
        _ => location,
    };
    let text = ddl(args.dialect, &manifest, &location);
    say!("{}", text.strip_suffix('\n').unwrap_or(&text));
    Ok(())
}
