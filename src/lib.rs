//! crmdump dumps a CRM account (HubSpot, Pipedrive) into files that warehouses load and
//! analysts query: one folder per export day, one folder per table, gzip CSV or Parquet parts
//! of at most 15 MiB, and a manifest written last as the commit marker.
//!
//! The library's entry points are [`run::export`] and [`run::backfill`]: settings in, a
//! committed day folder (or an error that says what failed and what to do) out. The
//! `crmdump` binary is a thin shell around them ([`cli`]).
//!
//! Layers, imports flowing down (docs/ARCHITECTURE.md): `error`; `model`, `schema` and
//! `http`; `extract` (sources, emitting Arrow batches); `split` (per-type and combined
//! tables); `write` (encoders and the size-limited chunker); `sink` (object_store, the commit
//! protocol, the manifest); `ddl`, `state`, `progress` and `webhook`; `pipeline` (one day
//! folder, with bounded channels); `run` (one export or backfill, from settings to commit);
//! `cli`.

pub mod cli;
pub(crate) mod ddl;
pub mod error;
pub(crate) mod extract;
pub(crate) mod http;
pub(crate) mod model;
pub(crate) mod pipeline;
pub(crate) mod progress;
pub mod run;
pub(crate) mod schema;
pub(crate) mod sink;
pub(crate) mod split;
pub(crate) mod state;
pub(crate) mod status;
pub(crate) mod webhook;
pub(crate) mod write;

/// The built-in fake CRM, a crate of its own (it shares no code with the exporter it checks).
pub use crmdump_sandbox as sandbox;
pub use error::{Error, ErrorClass, Result};

/// What the benches and the end-to-end tests reach inside the crate; not a stable API.
#[doc(hidden)]
pub mod internals {
    pub use crate::ddl::POSTGRES_MAX_COLUMNS;
    pub use crate::extract::hubspot::page_batches;
    pub use crate::extract::{ObjectStream, PropertyDefinition};
    pub use crate::model::{STANDARD_TYPES, property_column, standard_type};
    pub use crate::schema::BatchBuilder;
    pub use crate::sink::Sink;
    pub use crate::sink::manifest::Manifest;
    pub use crate::split::split_objects;
    pub use crate::webhook::journal::verify_journal;
    pub use crate::write::csv::Rows;
    pub use crate::write::{CsvGzipWriter, OutputFormat, PartSink};
}
