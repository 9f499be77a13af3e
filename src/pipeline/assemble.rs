//! The manifest of a day folder, assembled from what the run wrote (every table's parts),
//! what it found (warnings, a reconcile's figures) and what it was asked (mode, window).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use chrono::Utc;

use super::{DaySettings, Routed, warning};
use crate::extract::{Catalog, Extractor, Notice};
use crate::schema::{TableSchema, iso};
use crate::sink::manifest::{ColumnEntry, Manifest, ObjectTypeEntry, ReconcileEntry, TableEntry, Warning};
use crate::write::PartReceipt;

/// Everything a manifest is made of.
pub(super) struct Inputs<'a> {
    pub extractor: &'a dyn Extractor,
    pub catalog: &'a Catalog,
    pub settings: &'a DaySettings,
    pub date: String,
    /// Every table of the day, the catalog's and those found during the run.
    pub tables: Vec<Arc<TableSchema>>,
    /// Every table's parts, by table name.
    pub receipts: BTreeMap<String, Vec<PartReceipt>>,
    pub routed: &'a Routed,
}

/// The manifest of `inputs`' day folder, its tables in name order.
pub(super) fn manifest(inputs: Inputs<'_>) -> Manifest {
    let Inputs { extractor, catalog, settings, date, mut tables, mut receipts, routed } = inputs;
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    let mut warnings: Vec<Warning> = catalog.notices.iter().cloned().map(warning).collect();
    warnings.extend(routed.warnings.iter().cloned());
    let reconcile = settings.extent.reconcile().map(|r| {
        if r.known.is_none() {
            warnings.push(warning(Notice {
                kind: "no_baseline".into(),
                table: "DELETED_OBJECTS".into(),
                detail: "the destination has no baseline of ids yet: this reconcile listed every id and reports no deletion; the next one compares with what it listed".into(),
                count: None,
            }));
        }
        let sightings = &routed.learnt.sightings;
        ReconcileEntry {
            baseline: r.known.is_some(),
            ids: sightings.listed_count(),
            deleted: sightings.reconciled_gone,
            listing_requests: sightings.listing_requests,
            association_requests: sightings.association_requests,
        }
    });
    for (table, count) in &routed.unparseable {
        warnings.push(Warning {
            kind: "unparseable_value".into(),
            table: table.clone(),
            count: Some(*count),
            detail: None,
        });
    }
    let stats = extractor.http_stats();
    Manifest {
        format_version: crate::sink::manifest::FORMAT_VERSION,
        crmdump_version: env!("CARGO_PKG_VERSION").to_string(),
        source: extractor.source().to_string(),
        account: catalog.account.clone(),
        sandbox: settings.sandbox,
        objects: catalog.objects.iter().map(|o| o.object_type.type_id.clone()).collect(),
        streams: catalog.streams(),
        object_types: catalog
            .objects
            .iter()
            .map(|o| ObjectTypeEntry {
                id: o.object_type.type_id.clone(),
                table: o.table.name.clone(),
                singular: o.object_type.singular.clone(),
                plural: o.object_type.plural.clone(),
            })
            .collect(),
        export_date: date,
        mode: settings.mode.name().into(),
        window: settings.extent.span().map(|w| crate::sink::manifest::Window { from: iso(w.from), to: iso(w.to) }),
        started_at: settings.ingested_at.to_string(),
        finished_at: iso(Utc::now()),
        format: settings.format.manifest_name().into(),
        layout: settings.layout.name().into(),
        tables: tables.iter().map(|t| table_entry(t, receipts.remove(&t.name).unwrap_or_default())).collect(),
        associations: Some(if settings.extent.holds_every_association() { "all" } else { "of_records" }.into()),
        reconcile,
        requests: stats.requests.load(Ordering::Relaxed).saturating_sub(settings.counted_before.0),
        retries: stats.retries.load(Ordering::Relaxed).saturating_sub(settings.counted_before.1),
        warnings,
    }
}

fn table_entry(table: &TableSchema, files: Vec<PartReceipt>) -> TableEntry {
    TableEntry {
        name: table.name.clone(),
        rows: files.iter().map(|f| f.rows).sum(),
        columns: table
            .columns
            .iter()
            .map(|c| ColumnEntry { name: c.name.clone(), ty: c.ty.manifest_name().to_string(), nullable: c.nullable })
            .collect(),
        files,
    }
}
