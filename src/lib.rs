//! crmdump dumps a CRM account (HubSpot first) into files that warehouses load and analysts
//! query: one folder per export day, one folder per table, gzip CSV parts of at most 15 MiB,
//! and a manifest written last as the commit marker.
//!
//! Layers, imports flowing down: `model` and `schema` (names, tables, canonical values);
//! `http` (one client); `extract` (sources, emitting Arrow batches); `split` (per-type and
//! combined tables); `write` (encoders and the size-limited chunker); `sink` (object_store
//! and the manifest); `state` (watermarks of incremental runs); `pipeline` (all of it, with
//! bounded channels); `cli`.

pub mod cli;
pub mod ddl;
pub mod error;
pub mod extract;
pub mod http;
pub mod model;
pub mod pipeline;
pub mod progress;
pub mod schema;
pub mod sink;
pub mod split;
pub mod state;
pub mod webhook;
pub mod write;

/// The built-in fake CRM, a crate of its own (it shares no code with the exporter it checks).
pub use crmdump_sandbox as sandbox;
pub use error::{Error, ErrorClass, Result};
