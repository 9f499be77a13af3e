//! `crmdump lease list DEST` and `crmdump lease break DEST NAME`: the destination's leases, and
//! removing one by hand (after saying whose it is) when its run is known to be dead and nobody
//! wants to wait for it to go stale.

use clap::{Args, Subcommand};

use crate::error::{Error, Result};
use crate::sink::Sink;
use crate::sink::lease;

#[derive(Debug, Args)]
pub struct LeaseArgs {
    #[command(subcommand)]
    pub action: LeaseAction,
}

#[derive(Debug, Subcommand)]
pub enum LeaseAction {
    /// Every lease of the destination: its name, holder, and whether it is held.
    List {
        /// The destination (as given to `export --dest`, placeholders resolved).
        dest: String,
    },
    /// Removes a lease, after printing whose it is. A run that still holds it stops at its
    /// next renewal without committing; a lock on a local folder cannot be broken (it ends
    /// with its process). `--force` on an export never breaks a lease: this does.
    Break {
        /// The destination (as given to `export --dest`, placeholders resolved).
        dest: String,
        /// The lease: `<source>-<account>` (`hubspot-12345678`), or `listen`.
        name: String,
    },
}

pub async fn run(args: LeaseArgs) -> Result<()> {
    match args.action {
        LeaseAction::List { dest } => {
            let sink = Sink::open_existing(&dest)?;
            let leases = lease::list(&sink).await?;
            if leases.is_empty() {
                say!("{dest}: no lease");
            }
            for l in leases {
                say!("{}", describe(&l));
            }
            Ok(())
        }
        LeaseAction::Break { dest, name } => {
            let sink = Sink::open_existing(&dest)?;
            match lease::break_lease(&sink, &name).await? {
                Some(holder) => say!("Removed the lease {name} of {dest}, held by {}", holder.describe()),
                None => {
                    return Err(Error::Config(format!(
                        "{dest} has no lease {name}; `crmdump lease list {dest}` lists those it has"
                    )));
                }
            }
            Ok(())
        }
    }
}

/// One line of `lease list` (and of `verify`): name, holder, held or how old.
pub(crate) fn describe(l: &lease::Seen) -> String {
    let holder = l.holder.as_ref().map_or_else(|| "an unreadable holder".into(), |h| h.describe());
    let state = match (l.held, l.age) {
        (Some(true), _) => "held by a live process".to_string(),
        (Some(false), _) => "not held (the lock file of a run that ended; harmless)".to_string(),
        (None, Some(age)) => format!("written {} s ago by the store's clock", age.num_seconds()),
        (None, None) => String::new(),
    };
    format!("lease {}: {holder}; {state}", l.name)
}
