//! `crmdump sandbox`: the fake CRM as a server of its own.

use clap::Args;

use crate::error::{Error, Result};
use crate::sandbox::{Flavor, SandboxServer, SandboxSettings};

/// The sandbox's own flags, each with a `sandbox-` prefix (`--sandbox-seed`), for
/// `export --source sandbox`: one definition with `crmdump sandbox`'s, defaults included.
#[derive(Debug, Clone, Default)]
pub struct SandboxFlags(pub SandboxSettings);

impl clap::FromArgMatches for SandboxFlags {
    fn from_arg_matches(matches: &clap::ArgMatches) -> std::result::Result<Self, clap::Error> {
        SandboxSettings::from_arg_matches(matches).map(SandboxFlags)
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> std::result::Result<(), clap::Error> {
        self.0.update_from_arg_matches(matches)
    }
}

impl clap::Args for SandboxFlags {
    fn augment_args(command: clap::Command) -> clap::Command {
        prefixed(command, SandboxSettings::augment_args(clap::Command::new("sandbox")))
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        prefixed(command, SandboxSettings::augment_args_for_update(clap::Command::new("sandbox")))
    }
}

/// `command` with `own`'s flags renamed `--sandbox-<flag>` (their ids stay, so that the
/// sandbox's settings read them back unchanged).
fn prefixed(mut command: clap::Command, own: clap::Command) -> clap::Command {
    for arg in own.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let renamed = arg.clone().long(format!("sandbox-{long}")).help_heading("Sandbox (with --source sandbox)");
        command = command.arg(renamed);
    }
    command
}

#[derive(Debug, Args)]
pub struct SandboxArgs {
    /// Port on 127.0.0.1 (0 picks a free one, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    #[command(flatten)]
    pub settings: SandboxSettings,
    /// Answer every API request with `307 Temporary Redirect` to the same path under this base
    /// URL (to test that a client's token does not follow a redirect to another origin).
    #[arg(long, value_name = "URL")]
    pub redirect_to: Option<String>,
    /// Accept only this Bearer token (default: any non-empty token).
    #[arg(long, env = "CRMDUMP_SANDBOX_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(flatten)]
    pub webhooks: WebhookArgs,
}

/// Where and how the sandbox sends the webhooks of the changes its test hooks make.
#[derive(Debug, Clone, Args)]
pub struct WebhookArgs {
    /// Send webhooks here (for example to `crmdump listen`): HubSpot's signed batches, or
    /// Pipedrive's v2 events with basic auth.
    #[arg(long = "webhook-url", value_name = "URL")]
    pub url: Option<String>,
    /// The URL HubSpot signs, when --webhook-url is a proxy's inside address (default: the
    /// --webhook-url itself).
    #[arg(long = "webhook-signed-url", value_name = "URL")]
    pub signed_url: Option<String>,
    /// The HubSpot app's client secret the batches are signed with.
    #[arg(long = "webhook-secret", env = "CRMDUMP_HUBSPOT_CLIENT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// The Pipedrive webhook's basic-auth user and password.
    #[arg(long = "webhook-user", env = "CRMDUMP_PIPEDRIVE_WEBHOOK_USER", hide_env_values = true)]
    pub user: Option<String>,
    #[arg(long = "webhook-password", env = "CRMDUMP_PIPEDRIVE_WEBHOOK_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
    /// Waits before each retry of a failed delivery, comma-separated (default HubSpot:
    /// 10 retries from 1s to 30m, the real one spreads them over a day; Pipedrive: 3s,30s,150s).
    #[arg(long = "webhook-retries", value_delimiter = ',', value_parser = crate::sandbox::parse_duration)]
    pub retries: Option<Vec<std::time::Duration>>,
    /// How long a delivery may take before it counts as failed (default: HubSpot 5s,
    /// Pipedrive 10s).
    #[arg(long = "webhook-timeout", value_parser = crate::sandbox::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    /// Count HubSpot event ids per subscription, so that they repeat across subscriptions
    /// (and across sandboxes of other portals), as HubSpot's do.
    #[arg(long = "webhook-collide-ids")]
    pub collide_ids: bool,
}

impl WebhookArgs {
    fn config(&self, flavor: Flavor) -> Result<Option<crate::sandbox::WebhookConfig>> {
        let Some(url) = &self.url else {
            return Ok(None);
        };
        let seconds = |list: &[u64]| list.iter().map(|&s| std::time::Duration::from_secs(s)).collect::<Vec<_>>();
        let (retries, timeout) = match flavor {
            Flavor::Hubspot => (seconds(&[1, 2, 5, 10, 30, 60, 120, 300, 600, 1800]), 5),
            Flavor::Pipedrive => (seconds(&[3, 30, 150]), 10),
        };
        let missing = |what: &str| Error::Config(format!("--webhook-url needs {what}"));
        let (secret, user, password) = match flavor {
            Flavor::Hubspot => (
                self.secret.clone().ok_or_else(|| missing("--webhook-secret (the HubSpot app's client secret)"))?,
                String::new(),
                String::new(),
            ),
            Flavor::Pipedrive => (
                String::new(),
                self.user.clone().ok_or_else(|| missing("--webhook-user (the webhook's basic-auth user)"))?,
                self.password.clone().ok_or_else(|| missing("--webhook-password"))?,
            ),
        };
        Ok(Some(crate::sandbox::WebhookConfig {
            url: url.clone(),
            signed_url: self.signed_url.clone(),
            secret,
            user,
            password,
            retry_schedule: self.retries.clone().unwrap_or(retries),
            timeout: self.timeout.unwrap_or(std::time::Duration::from_secs(timeout)),
            collide_ids: self.collide_ids,
        }))
    }
}

pub async fn run(args: SandboxArgs) -> Result<()> {
    let mut config = args.settings.config(args.token.clone());
    config.redirect_to = args.redirect_to.clone();
    config.webhooks = args.webhooks.config(args.settings.flavor)?;
    let (seed, scale) = (config.seed, config.scale);
    let server = SandboxServer::start(config, args.port).await.map_err(sandbox_failed)?;
    let (flavor, token) = match args.settings.flavor {
        Flavor::Hubspot => ("hubspot", "HUBSPOT_ACCESS_TOKEN"),
        Flavor::Pipedrive => ("pipedrive", "PIPEDRIVE_API_TOKEN"),
    };
    say!("Sandbox ({flavor}) listening on {} (seed {seed}, {scale} records per type)", server.base_url());
    say!(
        "Export from it with: {token}=any crmdump export --source {flavor} --base-url {} --dest ./export",
        server.base_url()
    );
    if let Some(url) = &args.webhooks.url {
        say!("Sending the webhooks of /_sandbox/touch and /_sandbox/archive to {url}");
    }
    tokio::select! {
        r = server.wait() => r.map_err(sandbox_failed),
        _ = tokio::signal::ctrl_c() => Ok(()),
    }
}

/// The sandbox's own I/O errors, as the CLI reports them.
pub(crate) fn sandbox_failed(e: std::io::Error) -> crate::error::Error {
    crate::error::Error::Sandbox(e.to_string())
}
