//! Output table definitions and the batches that carry their rows.
//!
//! A table has a *logical* schema (the types of docs/FORMAT.md, reported in the manifest and
//! used by the Parquet writer) while its record batches carry every column as Utf8 holding the
//! value's canonical text. That is deliberate: the CSV must keep a number exactly as the API
//! sent its digits (a Float64 round trip would turn `1234.50` into `1234.5`), and canonical
//! text converts losslessly to any typed writer. Canonicalisation happens in one place,
//! [`BatchBuilder`], so every table (records, reference tables, associations) follows it.

mod canonical;

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

pub use canonical::{canonicalize, is_canonical_instant, iso, parse_instant};

use crate::error::{Error, Result};

/// The logical type of a column (docs/FORMAT.md, "Types").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ColumnType {
    Utf8,
    Int64,
    Int32,
    Float64,
    Boolean,
    /// Timestamp(ms, UTC); text form `YYYY-MM-DDTHH:MM:SS.sssZ`.
    Timestamp,
    /// Date32; text form `YYYY-MM-DD`.
    Date32,
    /// Compact JSON text (Utf8 in files; VARIANT/JSON where a warehouse has one).
    Json,
}

impl ColumnType {
    /// The name written to the manifest.
    pub fn manifest_name(self) -> &'static str {
        match self {
            ColumnType::Utf8 => "Utf8",
            ColumnType::Int64 => "Int64",
            ColumnType::Int32 => "Int32",
            ColumnType::Float64 => "Float64",
            ColumnType::Boolean => "Boolean",
            ColumnType::Timestamp => "Timestamp(ms, UTC)",
            ColumnType::Date32 => "Date32",
            ColumnType::Json => "Json",
        }
    }

    /// Column type of a property from its definition's `type`, in HubSpot's words (`number`,
    /// `datetime`, `date`, `bool`; anything else is text), which the Pipedrive extractor
    /// maps its field types onto.
    pub fn from_property_type(property_type: &str) -> ColumnType {
        match property_type {
            "number" => ColumnType::Float64,
            "datetime" => ColumnType::Timestamp,
            "date" => ColumnType::Date32,
            "bool" | "boolean" => ColumnType::Boolean,
            _ => ColumnType::Utf8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub ty: ColumnType,
    pub nullable: bool,
}

impl Column {
    pub fn new(name: impl Into<String>, ty: ColumnType, nullable: bool) -> Column {
        Column { name: name.into(), ty, nullable }
    }
}

/// The name of the column every table carries with the export run's start time.
pub const INGESTED_AT: &str = "INGESTEDAT";

/// A table's name and logical columns, plus the Arrow schema of its (Utf8) batches.
#[derive(Debug)]
pub struct TableSchema {
    pub name: String,
    pub columns: Vec<Column>,
    arrow: SchemaRef,
}

impl TableSchema {
    pub fn new(name: impl Into<String>, columns: Vec<Column>) -> TableSchema {
        let fields: Vec<Field> = columns
            .iter()
            .map(|c| {
                Field::new(&c.name, DataType::Utf8, c.nullable).with_metadata(std::collections::HashMap::from([(
                    "crmdump.type".to_string(),
                    c.ty.manifest_name().to_string(),
                )]))
            })
            .collect();
        TableSchema { name: name.into(), columns, arrow: Arc::new(Schema::new(fields)) }
    }

    /// Schema of the Utf8 record batches of this table.
    pub fn arrow_schema(&self) -> SchemaRef {
        self.arrow.clone()
    }

    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    /// This table's columns under another name (per-pair association tables, ...).
    pub fn renamed(&self, name: impl Into<String>) -> TableSchema {
        TableSchema::new(name, self.columns.clone())
    }
}

#[derive(Deserialize)]
struct SchemaFile {
    tables: BTreeMap<String, Vec<(String, ColumnType, bool)>>,
}

/// The tables both CRMs write whatever the account holds (`OBJECTS`, `OWNERS`, ...), declared
/// in `schemas/tables.json`.
static FIXED_TABLES: LazyLock<BTreeMap<String, Arc<TableSchema>>> = LazyLock::new(|| {
    let file: SchemaFile = serde_json::from_str(include_str!("../../schemas/tables.json"))
        .expect("schemas/tables.json is valid (checked by a unit test)");
    file.tables
        .into_iter()
        .map(|(name, cols)| {
            let columns = cols.into_iter().map(|(n, ty, nullable)| Column::new(n, ty, nullable)).collect();
            (name.clone(), Arc::new(TableSchema::new(name, columns)))
        })
        .collect()
});

/// One of the fixed tables of `schemas/tables.json`.
pub fn fixed_table(name: &str) -> Arc<TableSchema> {
    FIXED_TABLES.get(name).unwrap_or_else(|| panic!("table {name} is declared in schemas/tables.json")).clone()
}

/// The raw and typed schemas of one object type: `raw` is what the extractor emits (the
/// `OBJECTS` columns, then one Utf8 column per property named by the property), `typed` is
/// `OBJECTS_<PLURAL>` (the same, with `PROPERTY_` columns typed from the definitions).
pub fn object_schemas(
    table_name: &str,
    base: &TableSchema,
    properties: &[(String, String, ColumnType)],
) -> (Arc<TableSchema>, Arc<TableSchema>) {
    let base = base.columns.clone();
    let mut raw = base.clone();
    let mut typed = base;
    for (name, column, ty) in properties {
        raw.push(Column::new(name.clone(), ColumnType::Utf8, true));
        typed.push(Column::new(column.clone(), *ty, true));
    }
    (Arc::new(TableSchema::new(format!("{table_name}__RAW"), raw)), Arc::new(TableSchema::new(table_name, typed)))
}

/// `table` with its record-id columns (`OBJECTID`, `FROMOBJECTID`, `TOOBJECTID`,
/// `<TYPE>_OBJECTID`) as Utf8: Pipedrive's ids are not all integers (lead ids are UUIDs).
pub fn with_text_ids(table: &TableSchema) -> Arc<TableSchema> {
    let columns = table
        .columns
        .iter()
        .map(|c| {
            let id = c.name.ends_with("OBJECTID");
            Column::new(c.name.clone(), if id { ColumnType::Utf8 } else { c.ty }, c.nullable)
        })
        .collect();
    Arc::new(TableSchema::new(table.name.clone(), columns))
}

/// `table` in the record-id types of `like`: with text ids ([`with_text_ids`]) when `like`'s
/// `OBJECTID` is Utf8 (a Pipedrive table), as declared otherwise.
pub fn with_ids_of(table: Arc<TableSchema>, like: &TableSchema) -> Arc<TableSchema> {
    let text = like.column_index("OBJECTID").is_some_and(|i| like.columns[i].ty == ColumnType::Utf8);
    if text { with_text_ids(&table) } else { table }
}

/// `DELETED_OBJECTS` as the source declares it among `tables`, and `CHANGE_EVENTS` (which
/// only an export with a webhook journal writes) in the same record-id types.
pub fn journal_tables(tables: &[Arc<TableSchema>]) -> (Arc<TableSchema>, Arc<TableSchema>) {
    let deleted =
        tables.iter().find(|t| t.name == "DELETED_OBJECTS").cloned().unwrap_or_else(|| fixed_table("DELETED_OBJECTS"));
    let events = with_ids_of(fixed_table("CHANGE_EVENTS"), &deleted);
    (deleted, events)
}

/// `ASSOCIATIONS_<FROM>_TO_<TO>`: `<FROM>_OBJECTID`, `<TO>_OBJECTID` (`FROM_`/`TO_` prefixed
/// when a type is associated with itself), then the association type columns.
pub fn association_schema(
    from_plural: &str,
    to_plural: &str,
    from_singular: &str,
    to_singular: &str,
) -> Arc<TableSchema> {
    let (from_col, to_col) = if from_singular == to_singular {
        (format!("FROM_{from_singular}_OBJECTID"), format!("TO_{to_singular}_OBJECTID"))
    } else {
        (format!("{from_singular}_OBJECTID"), format!("{to_singular}_OBJECTID"))
    };
    let combined = fixed_table("ASSOCIATIONS");
    let mut columns =
        vec![Column::new(from_col, ColumnType::Int64, false), Column::new(to_col, ColumnType::Int64, false)];
    columns.extend(combined.columns[PAIR_COLUMNS_FROM_COMBINED..].iter().cloned());
    Arc::new(TableSchema::new(format!("ASSOCIATIONS_{from_plural}_TO_{to_plural}"), columns))
}

/// `EVENTS_<NAME>`: the `EVENTS` base columns, then one typed `PROPERTY_` column per event
/// property.
pub fn event_schema(table_name: &str, properties: &[(String, ColumnType)]) -> Arc<TableSchema> {
    let mut columns = fixed_table("EVENTS").columns.clone();
    columns.extend(properties.iter().map(|(column, ty)| Column::new(column.clone(), *ty, true)));
    Arc::new(TableSchema::new(table_name, columns))
}

/// Index in `ASSOCIATIONS` of the first column a per-pair table shares with it.
pub const PAIR_COLUMNS_FROM_COMBINED: usize = 4;

/// Builds Utf8 record batches for one table, canonicalising every value by its column's
/// logical type. A value that does not parse as its type becomes NULL and is counted.
pub struct BatchBuilder {
    schema: Arc<TableSchema>,
    columns: Vec<StringBuilder>,
    ingested_index: Option<usize>,
    ingested_at: Arc<str>,
    rows: usize,
    unparseable: u64,
    next_column: usize,
}

impl BatchBuilder {
    pub fn new(schema: Arc<TableSchema>, ingested_at: Arc<str>, capacity: usize) -> BatchBuilder {
        let columns = schema.columns.iter().map(|_| StringBuilder::with_capacity(capacity, capacity * 16)).collect();
        let ingested_index = schema.column_index(INGESTED_AT);
        BatchBuilder { schema, columns, ingested_index, ingested_at, rows: 0, unparseable: 0, next_column: 0 }
    }

    /// Appends the next column's value of the current row (INGESTEDAT is filled by
    /// [`BatchBuilder::end_row`], never passed here).
    pub fn push(&mut self, value: Option<&str>) {
        if Some(self.next_column) == self.ingested_index {
            self.next_column += 1;
        }
        let col = self.next_column;
        let ty = self.schema.columns[col].ty;
        match value {
            None => self.columns[col].append_null(),
            Some(raw) => match canonicalize(raw, ty) {
                Ok(None) => self.columns[col].append_null(),
                Ok(Some(text)) => self.columns[col].append_value(&*text),
                Err(canonical::Unparseable) => {
                    self.unparseable += 1;
                    self.columns[col].append_null()
                }
            },
        }
        self.next_column += 1;
    }

    /// Appends a value that is already canonical text (skips parsing; for hot paths that
    /// produce the text themselves, such as JSON written by the splitter).
    pub fn push_canonical(&mut self, value: Option<&str>) {
        if Some(self.next_column) == self.ingested_index {
            self.next_column += 1;
        }
        self.columns[self.next_column].append_option(value);
        self.next_column += 1;
    }

    /// Closes the current row: fills INGESTEDAT and checks that every column got a value.
    pub fn end_row(&mut self) {
        if let Some(i) = self.ingested_index {
            self.columns[i].append_value(&*self.ingested_at);
            if self.next_column == i {
                self.next_column += 1;
            }
        }
        debug_assert_eq!(
            self.next_column,
            self.columns.len(),
            "row of {} has the wrong number of values",
            self.schema.name
        );
        self.next_column = 0;
        self.rows += 1;
    }

    pub fn push_row<'a>(&mut self, values: impl IntoIterator<Item = Option<&'a str>>) {
        for v in values {
            self.push(v);
        }
        self.end_row();
    }

    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Values that did not parse as their column's type since the last [`Self::finish`].
    pub fn unparseable(&self) -> u64 {
        self.unparseable
    }

    /// The rows built so far as one batch; the builder starts over empty.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(|b| Arc::new(b.finish()) as ArrayRef).collect();
        self.rows = 0;
        self.unparseable = 0;
        RecordBatch::try_new(self.schema.arrow_schema(), arrays)
            .map_err(|e| Error::Internal(format!("building a batch of {}: {e}", self.schema.name)))
    }

    pub fn schema(&self) -> &Arc<TableSchema> {
        &self.schema
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

    #[test]
    fn fixed_tables_load_and_end_with_ingestedat_where_spec_says() {
        for name in ["OBJECTS", "OWNERS", "PIPELINE_STAGES", "ASSOCIATIONS"] {
            let t = fixed_table(name);
            assert!(t.column_index(INGESTED_AT).is_some(), "{name}");
        }
        assert_eq!(fixed_table("OBJECTS").columns[1].ty, ColumnType::Int64);
    }

    #[test]
    fn builder_canonicalises_and_counts_bad_values() {
        let t = Arc::new(TableSchema::new(
            "T",
            vec![
                Column::new("N", ColumnType::Float64, true),
                Column::new(INGESTED_AT, ColumnType::Timestamp, false),
                Column::new("TS", ColumnType::Timestamp, true),
            ],
        ));
        let mut b = BatchBuilder::new(t, "2026-01-01T00:00:00.000Z".into(), 4);
        b.push_row([Some("1234.50"), Some("2024-03-05T10:11:12Z")]);
        b.push_row([Some("N/A"), Some("1709633472345")]);
        b.push_row([Some(""), None]);
        assert_eq!(b.unparseable(), 1);
        let batch = b.finish().unwrap();
        let n = batch.column(0).as_string::<i32>();
        assert_eq!(n.value(0), "1234.50");
        assert!(n.is_null(1) && n.is_null(2));
        let ts = batch.column(2).as_string::<i32>();
        assert_eq!(ts.value(0), "2024-03-05T10:11:12.000Z");
        assert_eq!(ts.value(1), "2024-03-05T10:11:12.345Z");
        assert_eq!(batch.column(1).as_string::<i32>().value(2), "2026-01-01T00:00:00.000Z");
    }
}
