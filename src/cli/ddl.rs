//! `crmdump ddl --dialect D ROOT...`: the tables, idempotent loads and (with `--views`) the
//! analytics views for the committed dates of one or more export roots.

use bytes::Bytes;
use chrono::NaiveDate;
use clap::Args;

use crate::ddl::{Day, Dialect, Options, script};
use crate::error::{Error, Result};
use crate::sink::Sink;
use crate::sink::layout::Layout;
use crate::sink::manifest::{MANIFEST_FILE, Manifest};

#[derive(Debug, Args)]
pub struct DdlArgs {
    /// SQL dialect of the statements.
    #[arg(long, value_enum)]
    pub dialect: Dialect,
    /// Export roots (daily or hive layout; local folders or URLs), several for several
    /// accounts side by side. A daily day folder stands for its root and its date.
    #[arg(required = true, value_name = "ROOT")]
    pub roots: Vec<String>,
    /// First export date to load or read (default: the first committed one).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub from: Option<NaiveDate>,
    /// Last export date to load or read (default: the last committed one).
    #[arg(long, value_name = "YYYY-MM-DD")]
    pub to: Option<NaiveDate>,
    /// One export date (--from and --to at once).
    #[arg(long, value_name = "YYYY-MM-DD", conflicts_with_all = ["from", "to"])]
    pub date: Option<NaiveDate>,
    /// Add the analytics views (CURRENT_*, history and stage spans); for DuckDB, over the
    /// committed files instead of loaded tables.
    #[arg(long)]
    pub views: bool,
    /// Create the tables (and views) without loading any date.
    #[arg(long)]
    pub no_load: bool,
    /// Qualify every table and view with this schema (a dataset in BigQuery).
    #[arg(long, value_name = "NAME")]
    pub schema: Option<String>,
}

/// Every committed date of `path` (an export root, or a daily day folder standing for its
/// root and date), with the sink it was read through.
async fn committed(path: &str, index: usize) -> Result<(Sink, Vec<Day>, Option<String>)> {
    let trimmed = path.trim_end_matches('/');
    let probe = Sink::open_existing(trimmed)?;
    let (root, only) = match probe.get(MANIFEST_FILE).await? {
        Some(body) => {
            let manifest = Manifest::parse(&body, &Layout::join(trimmed, MANIFEST_FILE))?;
            let root = trimmed.rsplit_once('/').map(|(r, _)| r).unwrap_or(".").to_string();
            (root, Some(manifest.export_date))
        }
        None => (trimmed.to_string(), None),
    };
    let sink = if only.is_some() { Sink::open_existing(&root)? } else { probe };
    let location = match std::fs::canonicalize(&root) {
        Ok(p) if !root.contains("://") => p.to_string_lossy().to_string(),
        _ => root.clone(),
    };
    let scan = crate::sink::scan::scan(&sink, &[]).await?;
    let mut days: Vec<Day> = scan
        .days
        .into_iter()
        .filter_map(|d| {
            d.manifest.map(|manifest| Day { root: location.clone(), root_index: index, layout: d.layout, manifest })
        })
        .collect();
    // A date in both layouts (the layout changed): the newer export counts.
    days.sort_by(|a, b| (a.date(), &a.manifest.finished_at).cmp(&(b.date(), &b.manifest.finished_at)));
    days.dedup_by(|later, earlier| {
        let same = later.date() == earlier.date();
        if same {
            std::mem::swap(later, earlier);
        }
        same
    });
    if days.is_empty() {
        return Err(Error::Destination {
            dest: path.to_string(),
            detail: "no committed export date here: give an export root (the --dest of crmdump export)".into(),
        });
    }
    Ok((sink, days, only))
}

pub async fn run(args: DdlArgs) -> Result<()> {
    let (from, to) = match args.date {
        Some(d) => (Some(d), Some(d)),
        None => (args.from, args.to),
    };
    let mut sinks = Vec::new();
    let mut all = Vec::new();
    let mut range = Vec::new();
    for (index, path) in args.roots.iter().enumerate() {
        let (sink, days, only) = committed(path, index).await?;
        let wanted = |d: &Day| {
            let date: NaiveDate = d.date().parse().unwrap_or_default();
            only.as_deref().is_none_or(|o| o == d.date())
                && from.is_none_or(|f| date >= f)
                && to.is_none_or(|t| date <= t)
        };
        range.extend(days.iter().filter(|d| wanted(d)).cloned());
        all.extend(days);
        sinks.push(sink);
    }
    if range.is_empty() && !args.no_load {
        let span = match (from, to) {
            (Some(f), Some(t)) if f == t => format!("on {f}"),
            (f, t) => format!(
                "between {} and {}",
                f.map(|d| d.to_string()).unwrap_or("the first".into()),
                t.map(|d| d.to_string()).unwrap_or("the last".into())
            ),
        };
        return Err(Error::Destination {
            dest: args.roots.join(", "),
            detail: format!("no committed export date {span}: `crmdump verify ROOT` lists the dates there are"),
        });
    }
    let options = Options { views: args.views, no_load: args.no_load, schema: args.schema.clone() };
    let out = script(args.dialect, &all, &range, &options);
    for (index, key, body) in out.files {
        sinks[index].put(&key, Bytes::from(body)).await?;
    }
    say!("{}", out.sql.strip_suffix('\n').unwrap_or(&out.sql));
    Ok(())
}
