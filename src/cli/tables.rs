//! `crmdump tables`: the tables and columns an export of this account would produce
//! (discovery only: no records are read).

use std::sync::Arc;

use clap::Args;

use super::source::SourceArgs;
use crate::error::Result;
use crate::schema::iso;

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
    let source = args.source.connect(ingested).await?;
    let catalog = source.extractor.discover().await?;
    for t in &catalog.tables {
        if args.json {
            let columns: Vec<serde_json::Value> = t
                .columns
                .iter()
                .map(|c| serde_json::json!({"name": c.name, "type": c.ty.manifest_name(), "nullable": c.nullable}))
                .collect();
            say!("{}", serde_json::json!({"table": t.name, "columns": columns}));
        } else {
            say!("{} ({} columns)", t.name, t.columns.len());
            for c in &t.columns {
                say!("  {:<60} {}{}", c.name, c.ty.manifest_name(), if c.nullable { "" } else { " NOT NULL" });
            }
        }
    }
    for n in &catalog.notices {
        eprintln!("skipped: {} ({})", n.table, n.detail);
    }
    eprintln!("{} tables for account {}", catalog.tables.len(), catalog.account);
    Ok(())
}
