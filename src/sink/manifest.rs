//! `_manifest.json`: the commit marker of a day folder (docs/FORMAT.md, "Manifest"). A reader trusts a
//! day folder only when its manifest is there; every part it lists exists with that size,
//! checksum and row count.

use serde::{Deserialize, Serialize};

use crate::write::PartReceipt;

pub const MANIFEST_FILE: &str = "_manifest.json";
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub crmdump_version: String,
    pub source: String,
    pub account: String,
    /// The data is the built-in sandbox's, generated, not an account's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub sandbox: bool,
    /// The object types read (type ids: `0-1`, `2-123`; Pipedrive's entity names), so that
    /// a narrower re-run of the date can be told apart and refused.
    #[serde(default)]
    pub objects: Vec<String>,
    /// The streams read (object and event tables), whole or by window.
    #[serde(default)]
    pub streams: Vec<String>,
    /// Each object type read: its type id, its table and the words its association tables'
    /// names and columns use (`CONTACT`, `CONTACTS`), so that readers can tell a pair's table
    /// by its type ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub object_types: Vec<ObjectTypeEntry>,
    pub export_date: String,
    pub mode: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub window: Option<Window>,
    pub started_at: String,
    pub finished_at: String,
    pub format: String,
    /// `daily` or `hive`: file paths are relative to the day folder (daily) or to the
    /// destination root (hive).
    #[serde(default = "daily")]
    pub layout: String,
    pub tables: Vec<TableEntry>,
    /// `all` when the day folder holds every association of the account (a full export),
    /// `of_records` when it holds every current association of the records it holds.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub associations: Option<String>,
    /// What a reconcile run (`--reconcile`) listed and found, and what it cost.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub reconcile: Option<ReconcileEntry>,
    pub requests: u64,
    pub retries: u64,
    pub warnings: Vec<Warning>,
}

/// One object type of a manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectTypeEntry {
    pub id: String,
    pub table: String,
    pub singular: String,
    pub plural: String,
}

/// The manifest's account of a reconcile.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReconcileEntry {
    /// Whether a baseline of ids was there to compare with (the first reconcile has none).
    pub baseline: bool,
    /// Ids listed over every object type.
    pub ids: u64,
    /// Records found gone (`DELETED_OBJECTS` rows with `SOURCE` `reconcile`).
    pub deleted: u64,
    pub listing_requests: u64,
    pub association_requests: u64,
}

impl Manifest {
    /// The manifest in `bytes`, read from `key` (named when it is damaged).
    pub fn parse(bytes: &[u8], key: &str) -> crate::error::Result<Manifest> {
        serde_json::from_slice(bytes).map_err(|e| {
            crate::error::Error::corrupt(
                key,
                format!("not a crmdump manifest ({e}); restore it, or move it away and export that date again"),
            )
        })
    }

    /// Warnings about the data itself (values that did not parse, records left out,
    /// repaired bytes), as opposed to notes on what was skipped by permission.
    pub fn data_warnings(&self) -> u64 {
        self.warnings
            .iter()
            .filter(|w| matches!(w.kind.as_str(), "unparseable_value" | "bad_record" | "invalid_utf8"))
            .map(|w| w.count.unwrap_or(1))
            .sum()
    }
}

fn daily() -> String {
    "daily".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TableEntry {
    pub name: String,
    pub rows: u64,
    pub columns: Vec<ColumnEntry>,
    pub files: Vec<PartReceipt>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ColumnEntry {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    pub nullable: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Warning {
    pub kind: String,
    pub table: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub detail: Option<String>,
}

impl Warning {
    /// What happened, in a few words, and where the values went: one line for a person.
    pub fn sentence(&self) -> String {
        let (table, n) = (&self.table, self.count.unwrap_or(1));
        match (self.kind.as_str(), &self.detail) {
            ("unparseable_value", _) if table.starts_with("OBJECTS_") => format!(
                "{table}: {n} values did not parse as their column's type (such as \"N/A\" in number fields, which real accounts hold): NULL in their column, kept as sent in OBJECT_PROPERTIES.VALUE"
            ),
            ("unparseable_value", _) => {
                format!("{table}: {n} values did not parse as their column's type: NULL in their column")
            }
            (_, Some(detail)) => match self.count {
                Some(n) => format!("{table}: {detail} ({n})"),
                None => format!("{table}: {detail}"),
            },
            (kind, None) => format!("{table}: {kind} ({n})"),
        }
    }
}
