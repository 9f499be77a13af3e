//! `crmdump tables`: the tables and columns an export of this account would produce
//! (discovery only: no records are read).

use std::sync::Arc;

use clap::Args;

use super::source::SourceArgs;
use crate::error::Result;
use crate::schema::{iso, journal_tables};

#[derive(Debug, Args)]
pub struct TablesArgs {
    /// Print one JSON object per table (name, columns with types) instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub async fn run(args: TablesArgs) -> Result<()> {
    let ingested: Arc<str> = iso(chrono::Utc::now()).into();
    let source = crate::run::connect(&args.source.settings(true), ingested).await?;
    let catalog = source.extractor.discover().await?;
    let (_, journal_table) = journal_tables(&catalog.tables);
    let tables = catalog.tables.iter().map(|t| (t, None)).chain([(&journal_table, Some(JOURNAL_ONLY))]);
    for (t, written) in tables {
        if args.json {
            let columns: Vec<serde_json::Value> = t
                .columns
                .iter()
                .map(|c| serde_json::json!({"name": c.name, "type": c.ty.manifest_name(), "nullable": c.nullable}))
                .collect();
            let mut line = serde_json::json!({"table": t.name, "columns": columns});
            if let Some(when) = written {
                line["written"] = when.into();
            }
            say!("{line}");
        } else {
            let when = written.map(|w| format!(", written {}", w.replace('_', " "))).unwrap_or_default();
            say!("{} ({} columns{when})", t.name, t.columns.len());
            for c in &t.columns {
                say!("  {:<60} {}{}", c.name, c.ty.manifest_name(), if c.nullable { "" } else { " NOT NULL" });
            }
        }
    }
    for n in &catalog.notices {
        note!("skipped: {} ({})", n.table, n.detail);
    }
    note!(
        "{} tables for account {}, and CHANGE_EVENTS when the destination holds a webhook journal",
        catalog.tables.len(),
        catalog.account
    );
    Ok(())
}

/// When `CHANGE_EVENTS` is written: only by exports whose destination holds the account's
/// webhook journal (`crmdump listen`), which discovery cannot know.
const JOURNAL_ONLY: &str = "with_webhook_journal";
