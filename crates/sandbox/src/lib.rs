//! The built-in fake CRM: a loopback HTTP server that answers the HubSpot
//! API paths with HubSpot's JSON shapes, from data generated lazily by [`Generator`], or
//! with `--flavor pipedrive` Pipedrive's v1 and v2 paths from [`pipedrive::World`].
//! It exists so that anyone can run a real export without an account, and so that every
//! test and bench runs the real extractor over HTTP.

mod changes;
mod faults;
mod generator;
pub mod pipedrive;
mod search;
mod server;
mod settings;
mod time;
pub mod webhooks;

pub use faults::{Fault, Faults};
pub use generator::{
    AssociationType, Defect, Flavor, Generator, Owner, Pipeline, PropertyDef, Record, SandboxConfig, SandboxType,
    UPDATE_SPAN_DAYS, default_anchor, iso,
};
pub use server::{SandboxServer, Stats};
pub use settings::{DEFAULT_MAX_URL_BYTES, DEFAULT_SCALE, DEFAULT_SEED, SandboxSettings, parse_duration};
pub use webhooks::{WebhookConfig, WebhookStats};
