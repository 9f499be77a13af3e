//! Command-line surface: one file per command. Each turns its flags (and the config file's
//! keys, [`config`]) into the library's settings, calls the library, and prints what it
//! returns; the runs themselves live in [`crate::run`].

/// Prints a line on stdout like `println!`, but a closed stdout (`crmdump tables | head -1`)
/// is no error: the rest of the output is dropped quietly and the command's exit code stays
/// what its work decides (a committed export still exits 0).
macro_rules! say {
    ($($arg:tt)*) => { $crate::cli::stdout_line(format_args!($($arg)*)) };
}

/// Prints a line on stderr like `eprintln!`, but a closed or full stderr (`2>&1 | head -1`,
/// `2>/dev/full`) is ignored: what is written to stderr never decides how a run ends.
macro_rules! note {
    ($($arg:tt)*) => { $crate::cli::stderr_line(format_args!($($arg)*)) };
}

mod backfill;
mod check;
pub mod config;
mod ddl;
mod export;
mod lease;
mod listen;
mod output;
mod sandbox;
mod source;
mod status;
mod tables;
mod verify;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::error::Result;
use crate::progress::ProgressMode;

/// Dump a CRM account (HubSpot, Pipedrive) into warehouse-ready files: pg_dump for CRMs.
///
/// Try it without an account:  crmdump export --source sandbox --dest ./export
#[derive(Debug, Parser)]
#[command(name = "crmdump", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: GlobalArgs,
}

// These doc comments are `--help` text, where `<dest>` is a placeholder, not HTML.
#[allow(rustdoc::invalid_html_tags)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Export an account into <dest>/<YYYY-MM-DD>/<TABLE>/part-NNNNN.csv.gz plus _manifest.json.
    Export(export::ExportArgs),
    /// Export a range of past days, one day folder each, holding the records last modified
    /// that day; committed days are skipped, so a re-run resumes where one stopped.
    Backfill(backfill::BackfillArgs),
    /// Check the token, which tables it can read (and the scopes it lacks), the account's
    /// rate-limit tier, and that the destination is writable.
    Check(check::CheckArgs),
    /// List the tables and columns an export of this account would produce.
    Tables(tables::TablesArgs),
    /// Check an export against its manifest: every part present with its size, sha256 and
    /// row count, nothing unlisted; exit 1 naming each mismatch.
    Verify(verify::VerifyArgs),
    /// Tables, idempotent loads and analytics views for an export root's committed dates, per
    /// SQL dialect.
    Ddl(ddl::DdlArgs),
    /// What a destination holds: committed dates, gaps, killed runs, leases, the webhook
    /// journal; exit 1 past --max-age (for monitors).
    Status(status::StatusArgs),
    /// Receive HubSpot's and Pipedrive's webhooks and keep every acknowledged event in
    /// <dest>/_webhooks/<source>/<account>/<day>/ (secrets from the environment).
    Listen(listen::ListenArgs),
    /// List a destination's leases, or break one by hand.
    Lease(lease::LeaseArgs),
    /// Serve the built-in fake HubSpot (or Pipedrive) API on 127.0.0.1 (for trying crmdump and
    /// for tests).
    Sandbox(sandbox::SandboxArgs),
}

/// Flags every command takes: the config file and how to log.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// A TOML file of flag defaults (keys are flag names, `${VAR}` reads the environment);
    /// default: ./crmdump.toml when present.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    /// Only print warnings and errors on stderr.
    #[arg(long, global = true)]
    pub quiet: bool,
    /// Log format on stderr: human-readable text or one JSON object per line (for orchestrators).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Writes `args` and a newline to stderr, ignoring any failure: what is written to stderr
/// never decides how a run ends.
pub fn stderr_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = err.write_fmt(args).and_then(|()| err.write_all(b"\n"));
}

/// Sets up logging on stderr: `RUST_LOG` wins, else info (warn with --quiet, and on a
/// terminal during an export, where progress bars take the place of info lines).
pub fn init_logging(args: &GlobalArgs, command: &Command) {
    use std::io::IsTerminal;
    let bars = matches!(command, Command::Export(_) | Command::Backfill(_))
        && std::io::stderr().is_terminal()
        && matches!(args.log_format, LogFormat::Text);
    let default = if args.quiet || bars { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("crmdump={default},warn")));
    // A log line that cannot be written is dropped: tracing's own report of the failure
    // would go to a stderr that is closed or full, and panic there.
    let builder =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).log_internal_errors(false);
    match args.log_format {
        LogFormat::Text => builder.with_target(false).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// `10m`, `90s`, `1h 30m`, `0s`: durations of flags.
pub fn parse_duration(text: &str) -> std::result::Result<chrono::Duration, String> {
    let d = humantime::parse_duration(text)
        .map_err(|e| format!("'{text}' is not a duration ({e}): write it like 10m, 90s or 1h"))?;
    chrono::Duration::from_std(d).map_err(|e| e.to_string())
}

/// Bars on a terminal, log lines otherwise, nothing with --quiet.
pub(crate) fn progress_mode(quiet: bool) -> ProgressMode {
    use std::io::IsTerminal;
    if quiet {
        ProgressMode::Off
    } else if std::io::stderr().is_terminal() {
        ProgressMode::Bars
    } else {
        ProgressMode::Lines
    }
}

/// Set once stdout is found closed: nothing more is written to it.
static STDOUT_CLOSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Writes `args` and a newline to stdout (see [`say!`]).
pub(crate) fn stdout_line(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    use std::sync::atomic::Ordering;
    if STDOUT_CLOSED.load(Ordering::Relaxed) {
        return;
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush()) {
        STDOUT_CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            tracing::warn!(error = %e, "Cannot write to stdout; the rest of the output is dropped.");
        }
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Export(args) => export::run(args, cli.global.quiet).await,
        Command::Backfill(args) => backfill::run(args, cli.global.quiet).await,
        Command::Check(args) => check::run(args).await,
        Command::Tables(args) => tables::run(args).await,
        Command::Verify(args) => verify::run(args).await,
        Command::Ddl(args) => ddl::run(args).await,
        Command::Status(args) => status::run(args).await,
        Command::Listen(args) => listen::run(args).await,
        Command::Lease(args) => lease::run(args).await,
        Command::Sandbox(args) => sandbox::run(args).await,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
