//! `crmdump check`: a checklist before the first export. The token works; what discovery
//! could read (each object type's properties, association labels, event types) and which
//! scopes it lacks; the account's rate-limit tier from the response headers; and that the
//! destination accepts writes. It says only what it asked the API: records, owners and
//! pipelines are not requested here, and says so.

use std::sync::Arc;

use bytes::Bytes;
use clap::Args;

use super::source::SourceArgs;
use crate::error::{Error, Result};
use crate::schema::iso;
use crate::sink::Sink;

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Destination to test for writes (a probe object is written and removed).
    #[arg(long)]
    pub dest: Option<String>,
    #[command(flatten)]
    pub source: SourceArgs,
}

pub async fn run(args: CheckArgs) -> Result<()> {
    let ingested: Arc<str> = iso(chrono::Utc::now()).into();
    let source = crate::run::connect(&args.source.settings(true), ingested).await?;
    // Discovery touches every endpoint an export needs: a 401 fails here with its hint, a
    // 403 becomes a notice naming the scope.
    let catalog = match source.extractor.discover().await {
        Ok(c) => c,
        Err(e) => {
            say!("[FAIL] token: {e}");
            return Err(e);
        }
    };
    say!("[ OK ] token: valid for account {}", catalog.account);
    for o in &catalog.objects {
        say!(
            "[ OK ] {}: {} property definitions read ({} columns in {})",
            o.object_type.api_name,
            o.properties.len(),
            o.table.columns.len(),
            o.table.name
        );
    }
    for p in &catalog.pairs {
        say!("[ OK ] {}: association labels read", p.table.name);
    }
    for e in &catalog.events {
        say!("[ OK ] {}: event type definition read", e.table.name);
    }
    for n in &catalog.notices {
        say!("[SKIP] {}: {}", n.table, n.detail);
    }
    let limits = source.client.stats.limits.lock().expect("limits lock").clone();
    // Pipedrive's daily budget is in tokens, HubSpot's in requests.
    let unit = if source.extractor.source() == "pipedrive" { "tokens" } else { "requests" };
    match limits {
        Some(l) => say!(
            "[ OK ] rate limit: {} requests per {} ms{}",
            l.max.map(|m| m.to_string()).unwrap_or_else(|| "?".into()),
            l.interval_ms.map(|m| m.to_string()).unwrap_or_else(|| "?".into()),
            match (l.daily, l.daily_remaining) {
                (Some(d), Some(r)) => format!(", {r} of {d} {unit} left today"),
                (Some(d), None) => format!(", {d} {unit} per day"),
                _ => String::new(),
            }
        ),
        None => say!("[ ?? ] rate limit: the responses carried no rate-limit headers"),
    }
    say!(
        "[ -- ] records, owners, pipelines, lists and history were not requested by check: an export reads them, and skips with a warning what the token may not read"
    );
    if let Some(dest) = &args.dest {
        let sink = Sink::open(dest)?;
        let key = format!("_crmdump_check/{}.probe", std::process::id());
        let written = sink.put(&key, Bytes::from_static(b"crmdump check\n")).await;
        let removed = sink.delete(&key).await;
        match written.and(removed) {
            Ok(()) => say!("[ OK ] destination {dest}: writable"),
            Err(e) => {
                say!("[FAIL] destination {dest}: {e}");
                return Err(Error::Destination { dest: dest.clone(), detail: format!("not writable: {e}") });
            }
        }
    }
    Ok(())
}
