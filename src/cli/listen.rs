//! `crmdump listen`: receives HubSpot's and Pipedrive's webhooks and keeps every event it
//! acknowledges in the destination's journal (`<dest>/_webhooks/`).

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};
use crate::sink::claim;
use crate::sink::lease::Lease;
use crate::webhook::drain::{Destination, Drainer};
use crate::webhook::listen::{self, BasicAuth, HubSpotAuth, Settings};
use crate::webhook::spool::Spool;
use crate::webhook::stats::Stats;

/// The app's client secret, with which HubSpot signs its requests.
pub const HUBSPOT_SECRET_VAR: &str = "CRMDUMP_HUBSPOT_CLIENT_SECRET";
/// The basic-auth user and password set on the Pipedrive webhook.
pub const PIPEDRIVE_USER_VAR: &str = "CRMDUMP_PIPEDRIVE_WEBHOOK_USER";
pub const PIPEDRIVE_PASSWORD_VAR: &str = "CRMDUMP_PIPEDRIVE_WEBHOOK_PASSWORD";

#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Address and port to serve on.
    #[arg(long, default_value = "0.0.0.0:8080")]
    pub listen: std::net::SocketAddr,
    /// Where the journal goes (<dest>/_webhooks/<source>/<account>/<day>/): a local path,
    /// file://, s3://bucket/prefix; {source} and {account} put each account's journal beside
    /// its exports.
    #[arg(long)]
    pub dest: String,
    /// A local folder where requests are made durable before they are acknowledged, and
    /// drained from into the destination. One listener per folder.
    #[arg(long, default_value = "crmdump-spool")]
    pub spool: PathBuf,
    /// Past this many spooled bytes not yet in the destination, requests are answered 503
    /// (the senders retry later).
    #[arg(long, default_value = "1GiB", value_parser = crate::write::parse_size)]
    pub spool_limit: u64,
    /// Larger request bodies are answered 413 (HubSpot's batches of 100 events take about 50 KB).
    #[arg(long, default_value = "1MiB", value_parser = crate::write::parse_size)]
    pub max_body: u64,
    /// Requests handled at once; more wait for a turn (with --max-body, bounds memory).
    #[arg(long, default_value_t = 64)]
    pub max_in_flight: usize,
    /// The public base URL the CRMs call (https://hooks.example.com), when a proxy or a load
    /// balancer terminates TLS in front of the listener: HubSpot signs the URL it called,
    /// which is <public-url><hubspot-path>.
    #[arg(long, value_name = "URL")]
    pub public_url: Option<url::Url>,
    /// Take the public scheme and host from X-Forwarded-Proto and X-Forwarded-Host (only
    /// behind a proxy that sets them, never when clients can reach the listener directly).
    #[arg(long, conflicts_with = "public_url")]
    pub trust_forwarded_headers: bool,
    /// Path of HubSpot's endpoint (served when CRMDUMP_HUBSPOT_CLIENT_SECRET is set).
    #[arg(long, default_value = "/hubspot")]
    pub hubspot_path: String,
    /// Path of Pipedrive's endpoint (served when CRMDUMP_PIPEDRIVE_WEBHOOK_USER and
    /// CRMDUMP_PIPEDRIVE_WEBHOOK_PASSWORD are set).
    #[arg(long, default_value = "/pipedrive")]
    pub pipedrive_path: String,
    /// Accept HubSpot requests signed with v1 only. v1 has no timestamp, so a replayed
    /// request cannot be refused: use only for apps that cannot send v3.
    #[arg(long)]
    pub allow_v1_signatures: bool,
    /// Events remembered for de-duplication (about 50 bytes each in memory); an older
    /// duplicate reaches the journal and is dropped by its key when read.
    #[arg(long, default_value_t = 1_000_000)]
    pub dedup_window: usize,
    /// How long requests are gathered before a journal part is written.
    #[arg(long, default_value = "5s", value_parser = super::parse_duration)]
    pub flush_interval: chrono::Duration,
    /// A connection that takes longer to send a request's headers (or sits idle longer between
    /// requests) is closed: slow or stalled senders cannot hold the listener.
    #[arg(long, default_value = "10s", value_parser = super::parse_duration)]
    pub header_timeout: chrono::Duration,
    /// A request whose body takes longer is answered 408 (counted as `timed_out`).
    #[arg(long, default_value = "30s", value_parser = super::parse_duration)]
    pub body_timeout: chrono::Duration,
    #[command(flatten)]
    pub lease: super::output::LeaseArgs,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The credentials of each source, from the environment only.
fn credentials() -> Result<(Option<HubSpotAuth>, Option<BasicAuth>)> {
    let hubspot = env(HUBSPOT_SECRET_VAR);
    let pipedrive = match (env(PIPEDRIVE_USER_VAR), env(PIPEDRIVE_PASSWORD_VAR)) {
        (Some(user), Some(password)) => Some(BasicAuth { user, password }),
        (None, None) => None,
        _ => {
            return Err(Error::Config(format!(
                "set both {PIPEDRIVE_USER_VAR} and {PIPEDRIVE_PASSWORD_VAR} (the basic auth of the Pipedrive webhook), or neither"
            )));
        }
    };
    if hubspot.is_none() && pipedrive.is_none() {
        return Err(Error::Config(format!(
            "no source to listen for: set {HUBSPOT_SECRET_VAR} (the HubSpot app's client secret) and/or \
             {PIPEDRIVE_USER_VAR} and {PIPEDRIVE_PASSWORD_VAR} (the Pipedrive webhook's basic auth)"
        )));
    }
    Ok((hubspot.map(|secret| HubSpotAuth { secret, allow_v1: false }), pipedrive))
}

fn path(flag: &str, value: &str) -> Result<String> {
    if !value.starts_with('/') || value == listen::HEALTH_PATH {
        return Err(Error::Config(format!(
            "--{flag} '{value}' must be a path starting with / other than {}",
            listen::HEALTH_PATH
        )));
    }
    Ok(value.to_string())
}

pub async fn run(args: ListenArgs) -> Result<()> {
    let (hubspot, pipedrive) = credentials()?;
    let hubspot = hubspot.map(|h| HubSpotAuth { allow_v1: args.allow_v1_signatures, ..h });
    let settings = Settings {
        hubspot_path: path("hubspot-path", &args.hubspot_path)?,
        pipedrive_path: path("pipedrive-path", &args.pipedrive_path)?,
        hubspot,
        pipedrive,
        public_url: args.public_url.as_ref().map(|u| u.as_str().trim_end_matches('/').to_string()),
        trust_forwarded: args.trust_forwarded_headers,
        max_body: args.max_body as usize,
        max_in_flight: args.max_in_flight,
        flush_interval: args.flush_interval.to_std().unwrap_or_default(),
        header_timeout: positive("header-timeout", args.header_timeout)?,
        body_timeout: positive("body-timeout", args.body_timeout)?,
    };
    if settings.hubspot.is_some() && settings.pipedrive.is_some() && settings.hubspot_path == settings.pipedrive_path {
        return Err(Error::Config("--hubspot-path and --pipedrive-path must differ".into()));
    }
    if !claim::has_placeholders(&args.dest) {
        crate::sink::Sink::open(&args.dest)?.probe_writable().await?;
    }
    // One listener per destination: its journal's sequence numbers come from one spool's
    // clock, so a second one (a rolling update) could write a part below a position a reader
    // has passed. The lease lives at the destination's root, before any placeholder.
    let root = crate::sink::Sink::open(claim::static_root(&args.dest))?;
    let lease = Arc::new(Lease::acquire(&root, "listen", "listen", &args.lease.options()).await?);
    let spool =
        Arc::new(Spool::open(&args.spool, args.spool_limit).map_err(|e| Error::Config(format!("--spool: {e}")))?);
    let stats = Arc::new(Stats::default());
    let drainer =
        Drainer::open(spool.clone(), &args.spool, Destination::new(&args.dest), args.dedup_window, stats.clone())?
            .fenced_by(lease.clone());
    let pending = spool.pending().map(|p| p.len()).unwrap_or(0);
    if pending > 0 {
        tracing::info!(requests = pending, "Draining the requests a previous run acknowledged.");
    }
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| Error::Config(format!("cannot listen on {}: {e}", args.listen)))?;
    let addr = listener.local_addr().map_err(|e| Error::io("listening", e))?;
    let public = settings.public_url.clone().unwrap_or_else(|| format!("http://{addr}"));
    say!("Listening on {addr}; health at http://{addr}{}", listen::HEALTH_PATH);
    if settings.hubspot.is_some() {
        say!("HubSpot target URL: {public}{}", settings.hubspot_path);
    }
    if settings.pipedrive.is_some() {
        say!("Pipedrive subscription_url: {public}{}", settings.pipedrive_path);
    }
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    let lost = lease.lost();
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown_signal() => tracing::info!("Stopping: no new requests; draining what the spool holds."),
            () = lost.cancelled() => tracing::error!("The destination's lease was lost (another listener took it over): stopping; the spool keeps what it holds."),
        }
        stop.cancel();
    });
    let served = listen::serve(listener, settings, spool, drainer, stats.clone(), shutdown).await;
    lease.release().await;
    served?;
    say!("Stopped: {}", stats.snapshot());
    if lease.lost().is_cancelled() {
        return Err(lease.lost_error("another listener took it over"));
    }
    Ok(())
}

/// A flag's duration, refused when it is zero.
fn positive(flag: &str, value: chrono::Duration) -> Result<std::time::Duration> {
    match value.to_std() {
        Ok(d) if !d.is_zero() => Ok(d),
        _ => Err(Error::Config(format!("--{flag} must be longer than zero"))),
    }
}

/// Ctrl-C or SIGTERM (how orchestrators stop a service).
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
