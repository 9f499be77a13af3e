//! The tables `ddl` creates, from the manifests of every day it covers: each table's columns
//! unioned by name across days (in the order they first appear), a type that changed between
//! days widened to text, and record ids always text, so that HubSpot's integer ids and
//! Pipedrive's UUIDs share one column type when several roots load into one place.

use std::collections::BTreeMap;

use super::Day;
use crate::sink::manifest::TableEntry;

/// The manifest type of text.
pub const TEXT: &str = "Utf8";

/// One column of a table as loaded: its name in the files and its manifest type.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub ty: String,
}

/// One table across the days.
#[derive(Debug, Clone)]
pub struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    /// Columns whose type differs between days (loaded as text).
    pub widened: Vec<String>,
    /// How many days hold the table, and how many hold each column (in `columns`' order).
    days: usize,
    seen: Vec<usize>,
}

/// Whether `column` holds record ids, which are text in every table `ddl` creates.
pub fn is_record_id(column: &str) -> bool {
    column.ends_with("OBJECTID") || column == "MERGEDINTO"
}

/// `column`'s type as loaded, from its manifest type in one day.
pub fn loaded_type<'a>(column: &str, manifest_type: &'a str) -> &'a str {
    if is_record_id(column) { TEXT } else { manifest_type }
}

/// The tables the views read whatever the days hold (a `--no-history` export has no
/// `OBJECT_PROPERTIES_HISTORY`): empty ones are created from their fixed columns.
pub const VIEW_INPUTS: &[&str] = &[
    "OBJECTS",
    "OBJECT_PROPERTIES",
    "OBJECT_PROPERTIES_HISTORY",
    "ASSOCIATIONS",
    "DELETED_OBJECTS",
    "PIPELINE_STAGES",
];

/// Every table of `days`, by name; with `views`, the views' inputs too.
pub fn tables(days: &[Day], views: bool) -> Vec<Table> {
    let mut by_name: BTreeMap<String, Table> = BTreeMap::new();
    for day in days {
        for entry in &day.manifest.tables {
            add(&mut by_name, entry);
        }
    }
    if views {
        for name in VIEW_INPUTS {
            if !by_name.contains_key(*name) {
                let schema = crate::schema::fixed_table(name);
                let columns = schema
                    .columns
                    .iter()
                    .map(|c| Column { name: c.name.clone(), ty: loaded_type(&c.name, c.ty.manifest_name()).into() })
                    .collect();
                by_name.insert(
                    name.to_string(),
                    Table { name: name.to_string(), columns, widened: Vec::new(), days: 0, seen: Vec::new() },
                );
            }
        }
    }
    by_name.into_values().collect()
}

fn add(by_name: &mut BTreeMap<String, Table>, entry: &TableEntry) {
    let table = by_name.entry(entry.name.clone()).or_insert_with(|| Table {
        name: entry.name.clone(),
        columns: Vec::new(),
        widened: Vec::new(),
        days: 0,
        seen: Vec::new(),
    });
    table.days += 1;
    for c in &entry.columns {
        let ty = loaded_type(&c.name, &c.ty);
        let at = table.columns.iter().position(|known| known.name == c.name);
        if let Some(at) = at {
            table.seen[at] += 1;
        }
        match at.map(|at| &mut table.columns[at]) {
            None => {
                table.columns.push(Column { name: c.name.clone(), ty: ty.to_string() });
                table.seen.push(1);
            }
            Some(known) if known.ty != ty => {
                known.ty = TEXT.to_string();
                if !table.widened.contains(&c.name) {
                    table.widened.push(c.name.clone());
                }
            }
            Some(_) => {}
        }
    }
}

/// `EXPORTS`: one row per loaded date, from its manifest (the views need each date's
/// `ASSOCIATIONS`).
pub const EXPORTS: &[(&str, &str)] = &[
    ("SOURCE", TEXT),
    ("ACCOUNT", TEXT),
    ("EXPORT_DATE", "Date32"),
    ("MODE", TEXT),
    ("ASSOCIATIONS", TEXT),
    ("FORMAT", TEXT),
    ("LAYOUT", TEXT),
    ("STARTEDAT", "Timestamp(ms, UTC)"),
    ("FINISHEDAT", "Timestamp(ms, UTC)"),
    ("SANDBOX", "Boolean"),
    ("CRMDUMPVERSION", TEXT),
];

/// A day's `EXPORTS` values, in [`EXPORTS`]' order.
pub fn exports_row(day: &Day) -> Vec<Option<String>> {
    let m = &day.manifest;
    vec![
        Some(m.source.clone()),
        Some(m.account.clone()),
        Some(m.export_date.clone()),
        Some(m.mode.clone()),
        m.associations.clone(),
        Some(m.format.clone()),
        Some(m.layout.clone()),
        Some(m.started_at.clone()).filter(|s| !s.is_empty()),
        Some(m.finished_at.clone()).filter(|s| !s.is_empty()),
        Some(m.sandbox.to_string()),
        Some(m.crmdump_version.clone()),
    ]
}

/// The columns every loaded table (and base view) starts with, filled from the manifest.
pub const META: [(&str, &str); 3] = [("SOURCE", TEXT), ("ACCOUNT", TEXT), ("EXPORT_DATE", "Date32")];

impl Table {
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// Columns some day lacks: a table created from fewer days may lack them, so loads add
    /// them when missing.
    pub fn drifting(&self) -> impl Iterator<Item = &Column> {
        self.columns.iter().zip(&self.seen).filter(|(_, n)| **n < self.days).map(|(c, _)| c)
    }

    /// A file column's name as loaded: `DELETED_OBJECTS`' own `SOURCE` (how crmdump learnt of
    /// the deletion) is `DETECTEDBY`, leaving `SOURCE` to name the CRM as in every table.
    pub fn loaded_name<'a>(&self, column: &'a str) -> &'a str {
        match (self.name.as_str(), column) {
            ("DELETED_OBJECTS", "SOURCE") => "DETECTEDBY",
            _ => column,
        }
    }

    /// The meta columns this table gets (`CHANGE_EVENTS` has `SOURCE` and `ACCOUNT` already).
    pub fn meta(&self) -> Vec<(&'static str, &'static str)> {
        META.into_iter().filter(|(m, _)| !self.columns.iter().any(|c| self.loaded_name(&c.name) == *m)).collect()
    }

    /// Every column as loaded: (loaded name, manifest type), the meta columns first.
    pub fn loaded_columns(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self.meta().into_iter().map(|(n, t)| (n.into(), t.into())).collect();
        out.extend(self.columns.iter().map(|c| (self.loaded_name(&c.name).to_string(), c.ty.clone())));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::manifest::ColumnEntry;

    fn entry(columns: &[(&str, &str)]) -> TableEntry {
        TableEntry {
            name: "OBJECTS_DEALS".into(),
            rows: 0,
            columns: columns
                .iter()
                .map(|(n, t)| ColumnEntry { name: n.to_string(), ty: t.to_string(), nullable: true })
                .collect(),
            files: vec![],
        }
    }

    #[test]
    fn columns_union_by_name_and_changed_types_widen_to_text() {
        let mut by_name = BTreeMap::new();
        add(&mut by_name, &entry(&[("OBJECTID", "Int64"), ("PROPERTY_AMOUNT", "Float64")]));
        add(&mut by_name, &entry(&[("OBJECTID", "Int64"), ("PROPERTY_NEW", "Boolean"), ("PROPERTY_AMOUNT", "Utf8")]));
        let t = &by_name["OBJECTS_DEALS"];
        let got: Vec<(&str, &str)> = t.columns.iter().map(|c| (c.name.as_str(), c.ty.as_str())).collect();
        assert_eq!(got, [("OBJECTID", "Utf8"), ("PROPERTY_AMOUNT", "Utf8"), ("PROPERTY_NEW", "Boolean")]);
        assert_eq!(t.widened, ["PROPERTY_AMOUNT"]);
        let drifting: Vec<&str> = t.drifting().map(|c| c.name.as_str()).collect();
        assert_eq!(drifting, ["PROPERTY_NEW"], "a property added on a later day");
    }
}
