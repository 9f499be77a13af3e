//! `crmdump status ROOT [--json] [--max-age 26h]`: what a destination holds, per source and
//! account; exit 1 when an account's newest committed export is older than `--max-age`.

use clap::Args;

use crate::error::{Error, Result};
use crate::sink::Sink;
use crate::status::{RootStatus, root_status, roots};

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// An export root (local path or URL), or a template with {source} and {account} whose
    /// every filling is reported.
    pub root: String,
    /// One JSON object per root, on one line each.
    #[arg(long)]
    pub json: bool,
    /// Exit 1 when an account's newest committed export finished longer ago than this (or
    /// none has): what a monitor or a scheduler's sensor checks.
    #[arg(long, value_parser = super::parse_duration, value_name = "DURATION")]
    pub max_age: Option<chrono::Duration>,
}

fn ago(seconds: Option<i64>) -> String {
    match seconds {
        None => "?".into(),
        Some(s) if s < 120 => format!("{s}s ago"),
        Some(s) if s < 7_200 => format!("{}m ago", s / 60),
        Some(s) if s < 172_800 => format!("{}h ago", s / 3_600),
        Some(s) => format!("{}d ago", s / 86_400),
    }
}

fn print(status: &RootStatus) {
    say!("{}", status.root);
    if status.accounts.is_empty() {
        say!("  no committed export");
    }
    for a in &status.accounts {
        let fake = if a.sandbox { " (sandbox data)" } else { "" };
        say!("  {} account {}{fake}: {} committed dates", a.source, a.account, a.dates.len());
        if let Some(n) = a.newest() {
            say!("    newest: {} ({}), committed {}", n.date, n.mode, ago(n.age_seconds));
        }
        if !a.missing.is_empty() {
            say!("    missing: {} (backfill them: crmdump backfill --from .. --to ..)", a.missing.join(", "));
        }
        for d in a.dates.iter().rev().take(10) {
            let window = d.window.as_ref().map(|w| format!(" [{} .. {})", w[0], w[1])).unwrap_or_default();
            say!(
                "    {}  {:<11} rows {:>9}  requests {:>6}  warnings {:>3}  {}{window}",
                d.date,
                d.mode,
                d.rows,
                d.requests,
                d.warnings,
                ago(d.age_seconds)
            );
        }
        if a.dates.len() > 10 {
            say!("    ... {} earlier dates", a.dates.len() - 10);
        }
        if let Some(j) = &a.journal {
            say!(
                "    webhook journal: {} parts, newest event received {}, {} parts not yet exported",
                j.parts,
                ago(j.newest_age_seconds),
                j.unconsumed_parts
            );
        }
    }
    for d in &status.uncommitted {
        say!("  {d}: files without a manifest (a run killed, failed or running)");
    }
    for l in &status.leases {
        let holder = l.holder.as_deref().unwrap_or("holder unknown");
        say!("  lease {}: {} ({holder}; written {})", l.name, l.state, ago(l.age_seconds));
    }
}

pub async fn run(args: StatusArgs) -> Result<()> {
    let now = chrono::Utc::now();
    let mut late = Vec::new();
    let found = roots(&args.root).await?;
    if found.is_empty() {
        return Err(Error::Destination { dest: args.root.clone(), detail: "no folder fills this template".into() });
    }
    for root in found {
        let sink = Sink::open_existing(&root)?;
        let status = root_status(&sink, &root, now).await?;
        if args.json {
            say!("{}", serde_json::to_string(&status).map_err(|e| Error::Internal(e.to_string()))?);
        } else {
            print(&status);
        }
        if let Some(max) = args.max_age {
            if status.accounts.is_empty() {
                late.push(format!("{root}: no committed export"));
            }
            for a in &status.accounts {
                let age = a.newest().and_then(|n| n.age_seconds);
                if age.is_none_or(|s| s > max.num_seconds()) {
                    late.push(format!(
                        "{} account {} in {root}: newest export committed {}",
                        a.source,
                        a.account,
                        ago(age)
                    ));
                }
            }
        }
    }
    if late.is_empty() {
        return Ok(());
    }
    Err(Error::Stale(format!(
        "older than --max-age {}: {}",
        humantime::format_duration(args.max_age.and_then(|m| m.to_std().ok()).unwrap_or_default()),
        late.join("; ")
    )))
}
