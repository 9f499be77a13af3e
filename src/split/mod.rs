//! Builds the output tables from what extractors emit: pure functions over record batches,
//! no network, no files.
//!
//! A page of records (raw shape: the `OBJECTS` columns then one verbatim Utf8 column per
//! property) becomes rows of `OBJECTS_<PLURAL>` (typed property columns), `OBJECTS`,
//! `OBJECT_WITH_OBJECT_PROPERTIES` and `OBJECT_PROPERTIES`; association rows in the
//! `ASSOCIATIONS` shape also become rows of their `ASSOCIATIONS_<FROM>_TO_<TO>` table.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray, StringBuilder};
use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::extract::{AssociationPair, ObjectStream};
use crate::schema::{
    BatchBuilder, ColumnType, INGESTED_AT, PAIR_COLUMNS_FROM_COMBINED, TableSchema, canonicalize, fixed_table,
};

/// One table's share of a split.
#[derive(Debug)]
pub struct TableRows {
    pub table: String,
    pub batch: RecordBatch,
    /// Values that did not parse as their column's type (now NULL in `batch`).
    pub unparseable: u64,
}

/// Number of `OBJECTS` columns at the start of a raw object batch.
fn base_width() -> usize {
    fixed_table("OBJECTS").columns.len()
}

/// Splits one page of records into the four object tables.
pub fn split_objects(stream: &ObjectStream, raw: &RecordBatch, ingested: &Arc<str>) -> Result<Vec<TableRows>> {
    let base = base_width();
    let mut out = Vec::with_capacity(4);

    // OBJECTS: the base columns as they are.
    let objects = fixed_table("OBJECTS");
    out.push(TableRows {
        table: objects.name.clone(),
        batch: with_schema(&objects, raw.columns()[..base].to_vec())?,
        unparseable: 0,
    });

    // OBJECTS_<PLURAL>: Utf8 properties shared as they are, typed ones canonicalised.
    let mut unparseable = 0;
    let mut columns: Vec<ArrayRef> = raw.columns()[..base].to_vec();
    for (i, column) in stream.table.columns[base..].iter().enumerate() {
        let values = raw.column(base + i);
        if matches!(column.ty, ColumnType::Utf8 | ColumnType::Json) {
            columns.push(values.clone());
        } else {
            let (typed, bad) = canonical_column(values.as_string::<i32>(), column.ty);
            unparseable += bad;
            columns.push(Arc::new(typed));
        }
    }
    out.push(TableRows { table: stream.table.name.clone(), batch: with_schema(&stream.table, columns)?, unparseable });

    // OBJECT_WITH_OBJECT_PROPERTIES and OBJECT_PROPERTIES: non-null values as sent.
    let props: Vec<&StringArray> = raw.columns()[base..].iter().map(|c| c.as_string::<i32>()).collect();
    let names: Vec<&str> = stream.properties.iter().map(|p| p.name.as_str()).collect();
    let rows = raw.num_rows();
    let type_ids = raw.column(0).as_string::<i32>();
    let ids = raw.column(1).as_string::<i32>();
    let updated = raw.column(3).as_string::<i32>();
    let mut with_props = BatchBuilder::new(fixed_table("OBJECT_WITH_OBJECT_PROPERTIES"), ingested.clone(), rows);
    let mut long = BatchBuilder::new(fixed_table("OBJECT_PROPERTIES"), ingested.clone(), rows * 16);
    let mut json: Vec<u8> = Vec::new();
    let ingested_column = raw.schema().index_of(INGESTED_AT).ok();
    for r in 0..rows {
        json.clear();
        json.push(b'{');
        let mut first = true;
        for (p, values) in props.iter().enumerate() {
            if values.is_null(r) {
                continue;
            }
            let value = values.value(r);
            if !first {
                json.push(b',');
            }
            first = false;
            push_json_string(&mut json, names[p]);
            json.push(b':');
            push_json_string(&mut json, value);
            long.push_canonical(Some(type_ids.value(r)));
            long.push_canonical(Some(ids.value(r)));
            long.push_canonical(Some(names[p]));
            long.push_canonical(Some(value));
            long.push_canonical((!updated.is_null(r)).then(|| updated.value(r)));
            long.end_row();
        }
        json.push(b'}');
        for c in (0..base).filter(|&c| Some(c) != ingested_column) {
            let col = raw.column(c).as_string::<i32>();
            with_props.push_canonical((!col.is_null(r)).then(|| col.value(r)));
        }
        with_props.push_canonical(Some(std::str::from_utf8(&json).expect("serde_json writes UTF-8")));
        with_props.end_row();
    }
    out.push(TableRows { table: "OBJECT_WITH_OBJECT_PROPERTIES".into(), batch: with_props.finish()?, unparseable: 0 });
    out.push(TableRows { table: "OBJECT_PROPERTIES".into(), batch: long.finish()?, unparseable: 0 });
    let deleted = deleted_objects(stream, raw, &props, ingested)?;
    if deleted.batch.num_rows() > 0 {
        out.push(deleted);
    }
    Ok(out)
}

/// `DELETED_OBJECTS` rows a page of records yields without webhooks: archived records (HubSpot's
/// recycle bin, Pipedrive's archived and deleted deals and leads; `KIND` `deleted` where the
/// record says `is_deleted`), and the ids a HubSpot survivor lists in `hs_merged_object_ids`
/// (merged into it; `DELETEDAT` is the survivor's last modification, the closest the API tells).
fn deleted_objects(
    stream: &ObjectStream,
    raw: &RecordBatch,
    props: &[&StringArray],
    ingested: &Arc<str>,
) -> Result<TableRows> {
    let column = |name: &str| stream.properties.iter().position(|p| p.name == name).map(|p| props[p]);
    let (merged, is_deleted) = (column("hs_merged_object_ids"), column("is_deleted"));
    let text = |i: usize| raw.column(i).as_string::<i32>();
    let (type_ids, ids, updated, archived, archived_at) = (text(0), text(1), text(3), text(4), text(5));
    fn value(a: &StringArray, r: usize) -> Option<&str> {
        (!a.is_null(r)).then(|| a.value(r))
    }
    // In the id types of the source's tables (Pipedrive's ids are text).
    let table = crate::schema::with_ids_of(fixed_table("DELETED_OBJECTS"), &stream.table);
    let mut rows = BatchBuilder::new(table, ingested.clone(), 0);
    for r in 0..raw.num_rows() {
        if value(archived, r) == Some("true") {
            let kind = if is_deleted.and_then(|d| value(d, r)) == Some("true") { "deleted" } else { "archived" };
            let at = value(archived_at, r).or_else(|| value(updated, r));
            rows.push_row([value(type_ids, r), value(ids, r), at, Some(kind), None, Some("recycle_bin")]);
        }
        for id in merged.and_then(|m| value(m, r)).into_iter().flat_map(|v| v.split(';')).filter(|v| !v.is_empty()) {
            let row = [value(type_ids, r), Some(id.trim()), value(updated, r), Some("merged"), value(ids, r)];
            rows.push_row(row.into_iter().chain([Some("merge_property")]));
        }
    }
    Ok(TableRows { table: "DELETED_OBJECTS".into(), unparseable: rows.unparseable(), batch: rows.finish()? })
}

/// Association rows for the combined table and the pair's own table.
pub fn split_associations(pair: &AssociationPair, combined: &RecordBatch) -> Result<Vec<TableRows>> {
    // The pair table is FROMOBJECTID, TOOBJECTID, then the combined table's shared tail.
    let mut columns = vec![combined.column(1).clone(), combined.column(3).clone()];
    columns.extend(combined.columns()[PAIR_COLUMNS_FROM_COMBINED..].iter().cloned());
    Ok(vec![
        TableRows { table: pair.table.name.clone(), batch: with_schema(&pair.table, columns)?, unparseable: 0 },
        TableRows { table: "ASSOCIATIONS".into(), batch: combined.clone(), unparseable: 0 },
    ])
}

fn with_schema(table: &TableSchema, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    RecordBatch::try_new(table.arrow_schema(), columns)
        .map_err(|e| Error::Internal(format!("splitting into {}: {e}", table.name)))
}

fn canonical_column(values: &StringArray, ty: ColumnType) -> (StringArray, u64) {
    let mut b = StringBuilder::with_capacity(values.len(), values.value_data().len());
    let mut bad = 0;
    for v in values.iter() {
        match v.map(|s| canonicalize(s, ty)) {
            None | Some(Ok(None)) => b.append_null(),
            Some(Ok(Some(text))) => b.append_value(&*text),
            Some(Err(_)) => {
                bad += 1;
                b.append_null()
            }
        }
    }
    (b.finish(), bad)
}

/// Appends `s` as a JSON string literal (compact, escaping what JSON requires).
fn push_json_string(out: &mut Vec<u8>, s: &str) {
    // serde_json's escaping, straight into the row's text.
    serde_json::to_writer(out, s).expect("writing to a Vec cannot fail");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model;

    fn stream() -> ObjectStream {
        let props = [("email", "string"), ("amount", "number"), ("closed", "datetime")];
        ObjectStream::from_names(model::standard_type("contacts").unwrap().to_object_type(), &props)
    }

    #[test]
    fn a_page_splits_into_four_tables_with_typed_and_verbatim_values() {
        let s = stream();
        let ingested: Arc<str> = "2026-11-23T00:00:00.000Z".into();
        let mut b = BatchBuilder::new(s.raw.clone(), ingested.clone(), 2);
        for (id, email, amount, closed) in
            [("1", Some("a@x, \"y\""), Some("N/A"), Some("1700000000000")), ("2", None, Some("12.50"), None)]
        {
            b.push(Some("0-1"));
            b.push(Some(id));
            b.push(Some("2024-01-01T00:00:00Z"));
            b.push(Some("2024-01-02T00:00:00.5Z"));
            b.push(Some("false"));
            b.push(None);
            b.push_canonical(email);
            b.push_canonical(amount);
            b.push_canonical(closed);
            b.end_row();
        }
        let raw = b.finish().unwrap();
        let parts = split_objects(&s, &raw, &ingested).unwrap();
        let by = |n: &str| parts.iter().find(|p| p.table == n).unwrap();
        let typed = &by("OBJECTS_CONTACTS").batch;
        assert_eq!(by("OBJECTS_CONTACTS").unparseable, 1);
        let amount = typed.column(typed.schema().index_of("PROPERTY_AMOUNT").unwrap()).as_string::<i32>();
        assert!(amount.is_null(0));
        assert_eq!(amount.value(1), "12.50");
        let closed = typed.column(typed.schema().index_of("PROPERTY_CLOSED").unwrap()).as_string::<i32>();
        assert_eq!(closed.value(0), "2023-11-14T22:13:20.000Z");
        assert_eq!(typed.column(3).as_string::<i32>().value(0), "2024-01-02T00:00:00.500Z");

        let long = &by("OBJECT_PROPERTIES").batch;
        assert_eq!(long.num_rows(), 4);
        let values = long.column(3).as_string::<i32>();
        assert_eq!(values.value(1), "N/A", "the long table keeps values verbatim");
        assert_eq!(values.value(2), "1700000000000");

        let json = by("OBJECT_WITH_OBJECT_PROPERTIES").batch.column(7).as_string::<i32>().value(0).to_string();
        let parsed: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(parsed["email"], "a@x, \"y\"");
        assert_eq!(parsed["amount"], "N/A");
        assert_eq!(by("OBJECTS").batch.num_columns(), 7);
    }
}
