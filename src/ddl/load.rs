//! Loads into the warehouses (PostgreSQL, DuckDB, Snowflake, BigQuery, Redshift), one pattern
//! in each: the date's committed parts go into a staging table (loaders cannot add the literal
//! `SOURCE`, `ACCOUNT` and `EXPORT_DATE` columns), then one transaction deletes whatever any
//! table held for that source, account and date and inserts the staged rows by column name.
//! Loading a date again, or dates out of order, gives the same tables.

use sha2::{Digest, Sha256};

use super::catalog::{self, Table};
use super::dialect::{Dialect, Names, POSTGRES_MAX_COLUMNS, literal, string};
use super::{Day, Script};

/// Snowflake's `COPY ... FILES = (...)` takes at most this many names.
const SNOWFLAKE_FILES_PER_COPY: usize = 1000;

/// Whether the dialect cannot hold `t` (PostgreSQL refuses rows over 8 KB: a type with a
/// thousand properties; its values are in `OBJECT_PROPERTIES`).
pub fn too_wide(dialect: Dialect, t: &Table) -> bool {
    dialect == Dialect::Postgres && t.columns.len() + catalog::META.len() > POSTGRES_MAX_COLUMNS
}

/// `CREATE TABLE IF NOT EXISTS` for every table and `EXPORTS`, and the columns a table made
/// from fewer days may lack.
pub fn tables(n: Names, tables: &[Table], out: &mut String) {
    let d = n.dialect;
    let mut drift = Vec::new();
    for t in tables {
        out.push('\n');
        if too_wide(d, t) {
            out.push_str(&format!(
                "-- {} is skipped: its {} columns do not fit a PostgreSQL row (8 KB); its values are in\n-- OBJECT_PROPERTIES (one row per record and property), filter by OBJECTTYPEID.\n",
                t.name,
                t.columns.len()
            ));
            continue;
        }
        out.push_str(&renamed_note(d, t));
        for c in &t.widened {
            out.push_str(&format!("-- {}.{c}: its type differs between days, so it is text.\n", t.name));
        }
        out.push_str(&create_table(n, &t.name, &t.loaded_columns()));
        drift.extend(t.drifting().map(|c| (t, c)));
    }
    let exports: Vec<(String, String)> =
        catalog::EXPORTS.iter().map(|(c, ty)| (c.to_string(), ty.to_string())).collect();
    out.push('\n');
    out.push_str(&create_table(n, "EXPORTS", &exports));
    if drift.is_empty() {
        return;
    }
    out.push_str("\n-- Columns some dates lack (a property added later): added where a table lacks them.\n");
    if d == Dialect::Redshift {
        out.push_str(REDSHIFT_ADD_COLUMN);
    }
    for (t, c) in drift {
        let column = t.loaded_name(&c.name);
        out.push_str(&match d {
            Dialect::Redshift => format!(
                "CALL crmdump_add_column({}, {}, {}, {});\n",
                string(n.schema.unwrap_or_default()),
                string(&t.name),
                string(&super::dialect::column_name(d, column)),
                string(d.sql_type(&c.ty))
            ),
            _ => format!(
                "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {};\n",
                n.rel(&t.name),
                n.col(column),
                d.sql_type(&c.ty)
            ),
        });
    }
}

/// Redshift has no `ADD COLUMN IF NOT EXISTS`: a procedure checks the catalog first.
const REDSHIFT_ADD_COLUMN: &str = "CREATE OR REPLACE PROCEDURE crmdump_add_column(sch VARCHAR, tbl VARCHAR, col VARCHAR, ty VARCHAR) AS $$
DECLARE
  target VARCHAR;
BEGIN
  IF sch = '' THEN
    sch := current_schema();
  END IF;
  IF NOT EXISTS (SELECT 1 FROM svv_columns WHERE table_schema = sch AND LOWER(table_name) = LOWER(tbl) AND LOWER(column_name) = LOWER(col)) THEN
    target := quote_ident(sch) || '.' || quote_ident(tbl);
    EXECUTE 'ALTER TABLE ' || target || ' ADD COLUMN ' || quote_ident(col) || ' ' || ty;
  END IF;
END;
$$ LANGUAGE plpgsql;
";

fn renamed_note(d: Dialect, t: &Table) -> String {
    let renamed: Vec<String> = t
        .columns
        .iter()
        .map(|c| t.loaded_name(&c.name))
        .filter(|c| super::dialect::column_name(d, c) != *c)
        .map(|c| format!("--   {c} -> {}\n", super::dialect::column_name(d, c)))
        .collect();
    if renamed.is_empty() {
        return String::new();
    }
    format!("-- Columns renamed to fit this dialect's identifier limit:\n{}", renamed.concat())
}

fn create_table(n: Names, name: &str, columns: &[(String, String)]) -> String {
    let meta = catalog::META.iter().map(|(m, _)| *m).collect::<Vec<_>>();
    let body: Vec<String> = columns
        .iter()
        .map(|(c, ty)| {
            let not_null = if meta.contains(&c.as_str()) { " NOT NULL" } else { "" };
            format!("  {} {}{not_null}", n.col(c), n.dialect.sql_type(ty))
        })
        .collect();
    format!("CREATE TABLE IF NOT EXISTS {} (\n{}\n);\n", n.rel(name), body.join(",\n"))
}

/// A staging table's type for a file column: as the file holds it, JSON as text.
fn staged_type(manifest_type: &str) -> &str {
    if manifest_type == "Json" { catalog::TEXT } else { manifest_type }
}

/// The statements that load `day`, and the files they read that `ddl` writes.
pub fn day(n: Names, tables: &[Table], day: &Day, script: &mut Script) {
    let d = n.dialect;
    let m = &day.manifest;
    let out = &mut script.sql;
    out.push_str(&format!("\n-- {} {} account {} ({}, {})\n", day.date(), m.source, m.account, m.mode, m.format));
    if d == Dialect::Postgres && day.parquet() {
        out.push_str("-- PostgreSQL has no Parquet reader: export with --format csv to load this date here.\n");
        return;
    }
    let tag = hex::encode(&Sha256::digest(format!("{}\n{}\n{}", m.source, m.account, m.export_date))[..4]);
    let mut staged = Vec::new();
    for t in tables.iter().filter(|t| !too_wide(d, t)) {
        let Some(columns) = day.columns(&t.name) else { continue };
        let stage = format!("_crmdump_stage_{}_{tag}", t.name);
        let stage_columns: Vec<(String, String)> =
            columns.iter().map(|c| (c.name.clone(), staged_type(&c.ty).to_string())).collect();
        out.push_str(&stage_table(n, &stage, &stage_columns));
        out.push_str(&fill_stage(n, &stage, &stage_columns, day, &t.name, &mut script.files));
        staged.push((t, stage, stage_columns));
    }
    let (begin, commit) = match d {
        Dialect::Bigquery => ("BEGIN TRANSACTION;\n", "COMMIT TRANSACTION;\n"),
        _ => ("BEGIN;\n", "COMMIT;\n"),
    };
    out.push_str(begin);
    let this_date = format!(
        "{} = {} AND {} = {} AND {} = {}",
        n.col("SOURCE"),
        string(&m.source),
        n.col("ACCOUNT"),
        string(&m.account),
        n.col("EXPORT_DATE"),
        super::dialect::date(&m.export_date)
    );
    for t in tables.iter().filter(|t| !too_wide(d, t)) {
        out.push_str(&format!("DELETE FROM {} WHERE {this_date};\n", n.rel(&t.name)));
    }
    out.push_str(&format!("DELETE FROM {} WHERE {this_date};\n", n.rel("EXPORTS")));
    for (t, stage, stage_columns) in &staged {
        let mut targets = Vec::new();
        let mut values = Vec::new();
        for (m_col, ty) in t.meta() {
            targets.push(n.col(m_col));
            values.push(literal(d, Some(meta_value(day, m_col)), ty));
        }
        for (c, ty) in stage_columns {
            let target_ty = &t.column(c).expect("the catalog holds every day's columns").ty;
            targets.push(n.col(t.loaded_name(c)));
            values.push(d.convert(&n.col(c), ty, target_ty));
        }
        out.push_str(&format!(
            "INSERT INTO {} ({}) SELECT {} FROM {};\n",
            n.rel(&t.name),
            targets.join(", "),
            values.join(", "),
            stage_rel(n, stage)
        ));
    }
    let row: Vec<String> = catalog::exports_row(day)
        .iter()
        .zip(catalog::EXPORTS)
        .map(|(v, (_, ty))| literal(d, v.as_deref(), ty))
        .collect();
    out.push_str(&format!("INSERT INTO {} SELECT {};\n", n.rel("EXPORTS"), row.join(", ")));
    out.push_str(commit);
    for (_, stage, _) in &staged {
        out.push_str(&format!("DROP TABLE IF EXISTS {};\n", stage_rel(n, stage)));
    }
}

fn meta_value<'a>(day: &'a Day, column: &str) -> &'a str {
    match column {
        "SOURCE" => &day.manifest.source,
        "ACCOUNT" => &day.manifest.account,
        _ => day.date(),
    }
}

/// Staging tables are temporary (private to the session) except in BigQuery, where they live
/// in the dataset until the load drops them.
fn stage_rel(n: Names, stage: &str) -> String {
    match n.dialect {
        Dialect::Bigquery => n.rel(stage),
        _ => n.dialect.ident(stage),
    }
}

fn stage_table(n: Names, stage: &str, columns: &[(String, String)]) -> String {
    let d = n.dialect;
    let body: Vec<String> = columns.iter().map(|(c, ty)| format!("{} {}", n.col(c), d.sql_type(ty))).collect();
    let body = body.join(", ");
    match d {
        Dialect::Bigquery => format!("CREATE OR REPLACE TABLE {} ({body});\n", stage_rel(n, stage)),
        Dialect::Duckdb => format!("CREATE OR REPLACE TEMP TABLE {} ({body});\n", stage_rel(n, stage)),
        Dialect::Snowflake => format!("CREATE OR REPLACE TEMPORARY TABLE {} ({body});\n", stage_rel(n, stage)),
        _ => format!("DROP TABLE IF EXISTS {0};\nCREATE TEMP TABLE {0} ({body});\n", stage_rel(n, stage)),
    }
}

/// The loader statements that fill `stage` with the committed parts of `table` on `day`.
fn fill_stage(
    n: Names,
    stage: &str,
    columns: &[(String, String)],
    day: &Day,
    table: &str,
    files: &mut Vec<(usize, String, String)>,
) -> String {
    let d = n.dialect;
    let parts = day.parts(table);
    if parts.is_empty() {
        return String::new();
    }
    let parquet = day.parquet();
    let target = stage_rel(n, stage);
    let urls: Vec<String> = parts.iter().map(|(key, _)| day.url(key)).collect();
    match d {
        Dialect::Postgres => urls
            .iter()
            .map(|f| {
                format!(
                    "\\copy {target} FROM PROGRAM {} WITH (FORMAT csv, HEADER true)\n",
                    string(&format!("gzip -dc \"{}\"", f.replace('"', "\\\"")))
                )
            })
            .collect(),
        Dialect::Duckdb => {
            let list = urls.iter().map(|f| string(f)).collect::<Vec<_>>().join(", ");
            if parquet {
                format!("INSERT INTO {target} SELECT * FROM read_parquet([{list}], hive_partitioning = false);\n")
            } else {
                let types = columns
                    .iter()
                    .map(|(c, ty)| format!("{}: {}", string(c), string(d.sql_type(ty))))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "INSERT INTO {target} SELECT * FROM read_csv([{list}], hive_partitioning = false, header = true, allow_quoted_nulls = false, auto_detect = false, columns = {{{types}}});\n"
                )
            }
        }
        Dialect::Snowflake => {
            let stage_name = if day.root_index == 0 {
                "crmdump_stage".to_string()
            } else {
                format!("crmdump_stage_{}", day.root_index + 1)
            };
            let dir = day.table_dir(table);
            let format = if parquet {
                "FILE_FORMAT = (TYPE = PARQUET) MATCH_BY_COLUMN_NAME = CASE_SENSITIVE".to_string()
            } else {
                "FILE_FORMAT = (TYPE = CSV COMPRESSION = GZIP SKIP_HEADER = 1 FIELD_OPTIONALLY_ENCLOSED_BY = '\"' EMPTY_FIELD_AS_NULL = TRUE NULL_IF = ())".to_string()
            };
            let names: Vec<String> =
                parts.iter().map(|(key, _)| key.strip_prefix(&format!("{dir}/")).unwrap_or(key).to_string()).collect();
            names
                .chunks(SNOWFLAKE_FILES_PER_COPY)
                .map(|chunk| {
                    let list = chunk.iter().map(|f| string(f)).collect::<Vec<_>>().join(", ");
                    format!(
                        "COPY INTO {target} FROM {} FILES = ({list}) {format} FORCE = TRUE;\n",
                        string(&format!("@{stage_name}/{dir}/"))
                    )
                })
                .collect()
        }
        Dialect::Bigquery => {
            let list = urls.iter().map(|f| string(f)).collect::<Vec<_>>().join(", ");
            let body: Vec<String> = columns.iter().map(|(c, ty)| format!("{} {}", n.col(c), d.sql_type(ty))).collect();
            let format = if parquet {
                "format = 'PARQUET'"
            } else {
                "format = 'CSV', skip_leading_rows = 1, compression = 'GZIP', allow_quoted_newlines = TRUE"
            };
            format!("LOAD DATA OVERWRITE {target} ({}) FROM FILES ({format}, uris = [{list}]);\n", body.join(", "))
        }
        Dialect::Redshift => {
            let key = format!("_crmdump/redshift/{}/{table}.manifest", day.date());
            let entries: Vec<serde_json::Value> = parts
                .iter()
                .map(|(k, f)| {
                    serde_json::json!({"url": day.url(k), "mandatory": true, "meta": {"content_length": f.bytes}})
                })
                .collect();
            let body = serde_json::to_string_pretty(&serde_json::json!({ "entries": entries })).expect("JSON");
            files.push((day.root_index, key.clone(), body));
            let format = if parquet {
                "FORMAT AS PARQUET"
            } else {
                "FORMAT AS CSV IGNOREHEADER 1 GZIP EMPTYASNULL TIMEFORMAT 'auto'"
            };
            format!(
                "COPY {target} FROM {} IAM_ROLE '<your-redshift-role-arn>' MANIFEST {format};\n",
                string(&day.url(&key))
            )
        }
        Dialect::Athena | Dialect::Spark => unreachable!("file engines read the files in place"),
    }
}
