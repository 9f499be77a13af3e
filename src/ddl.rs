//! Warehouse DDL from a manifest: a CREATE TABLE per table with the manifest's column types
//! mapped to each dialect, and the statement that loads the day's files.
//! Pure text generation: no network, no files.

use crate::sink::layout::Layout;
use crate::sink::manifest::{Manifest, TableEntry};

/// The SQL dialects `crmdump ddl` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dialect {
    Snowflake,
    Bigquery,
    Redshift,
    Duckdb,
    Athena,
    Postgres,
}

/// A column type of the manifest in a dialect. Athena's CSV SerDe reads only strings, so its
/// CSV tables are all STRING.
fn sql_type(dialect: Dialect, manifest_type: &str, parquet: bool) -> &'static str {
    use Dialect::*;
    if dialect == Athena && !parquet {
        return "STRING";
    }
    match (dialect, manifest_type) {
        (Snowflake, "Int64") => "NUMBER(19,0)",
        (Snowflake, "Int32") => "NUMBER(10,0)",
        (Snowflake, "Float64") => "DOUBLE",
        (Snowflake, "Boolean") => "BOOLEAN",
        (Snowflake, "Timestamp(ms, UTC)") => "TIMESTAMP_TZ(3)",
        (Snowflake, "Date32") => "DATE",
        (Snowflake, "Json") => "VARIANT",
        (Snowflake, _) => "VARCHAR",
        (Bigquery, "Int64" | "Int32") => "INT64",
        (Bigquery, "Float64") => "FLOAT64",
        (Bigquery, "Boolean") => "BOOL",
        (Bigquery, "Timestamp(ms, UTC)") => "TIMESTAMP",
        (Bigquery, "Date32") => "DATE",
        (Bigquery, "Json") => "JSON",
        (Bigquery, _) => "STRING",
        (Redshift, "Int64") => "BIGINT",
        (Redshift, "Int32") => "INTEGER",
        (Redshift, "Float64") => "DOUBLE PRECISION",
        (Redshift, "Boolean") => "BOOLEAN",
        (Redshift, "Timestamp(ms, UTC)") => "TIMESTAMPTZ",
        (Redshift, "Date32") => "DATE",
        (Redshift, "Json") => "SUPER",
        (Redshift, _) => "VARCHAR(65535)",
        (Duckdb, "Int64") => "BIGINT",
        (Duckdb, "Int32") => "INTEGER",
        (Duckdb, "Float64") => "DOUBLE",
        (Duckdb, "Boolean") => "BOOLEAN",
        (Duckdb, "Timestamp(ms, UTC)") => "TIMESTAMPTZ",
        (Duckdb, "Date32") => "DATE",
        (Duckdb, "Json") => "JSON",
        (Duckdb, _) => "VARCHAR",
        (Athena, "Int64") => "BIGINT",
        (Athena, "Int32") => "INT",
        (Athena, "Float64") => "DOUBLE",
        (Athena, "Boolean") => "BOOLEAN",
        (Athena, "Timestamp(ms, UTC)") => "TIMESTAMP",
        (Athena, "Date32") => "DATE",
        (Athena, _) => "STRING",
        (Postgres, "Int64") => "BIGINT",
        (Postgres, "Int32") => "INTEGER",
        (Postgres, "Float64") => "DOUBLE PRECISION",
        (Postgres, "Boolean") => "BOOLEAN",
        (Postgres, "Timestamp(ms, UTC)") => "TIMESTAMPTZ",
        (Postgres, "Date32") => "DATE",
        (Postgres, "Json") => "JSONB",
        (Postgres, _) => "TEXT",
    }
}

/// Widest table the postgres DDL creates: a row of many small TEXT values stays inline and
/// PostgreSQL refuses rows over 8 KB (a 1,200-property type fails to load).
pub const POSTGRES_MAX_COLUMNS: usize = 600;

/// Longest identifier a dialect keeps (PostgreSQL silently truncates at 63 bytes, so two
/// long property columns would collide).
fn max_identifier(dialect: Dialect) -> usize {
    match dialect {
        Dialect::Postgres => 63,
        Dialect::Redshift => 127,
        Dialect::Athena => 255,
        Dialect::Snowflake => 255,
        Dialect::Duckdb | Dialect::Bigquery => 300,
    }
}

/// `name` as a column of `dialect`: too long a name keeps its start and gets a short hash
/// of the whole name, so names stay unique and stable across exports.
pub fn column_name(dialect: Dialect, name: &str) -> String {
    let max = max_identifier(dialect);
    if name.len() <= max {
        return name.to_string();
    }
    use sha2::{Digest, Sha256};
    let hash = hex::encode(&Sha256::digest(name.as_bytes())[..4]);
    format!("{}_{hash}", &name[..name.floor_char_boundary(max - 9)])
}

fn quote(dialect: Dialect, name: &str) -> String {
    match dialect {
        Dialect::Bigquery | Dialect::Athena => format!("`{name}`"),
        _ => format!("\"{name}\""),
    }
}

fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// DDL and load statements for every table of `manifest`, whose files live under `location`
/// (the export root for hive, the day folder for daily; a local path or a URL).
pub fn ddl(dialect: Dialect, manifest: &Manifest, location: &str) -> String {
    let parquet = manifest.format == "parquet";
    let hive = manifest.layout == "hive";
    let location = location.trim_end_matches('/');
    let mut out = format!(
        "-- crmdump {} DDL for the {} export of {} (account {}), {} files, {} layout\n",
        format!("{dialect:?}").to_lowercase(),
        manifest.export_date,
        manifest.source,
        manifest.account,
        manifest.format,
        manifest.layout
    );
    for t in &manifest.tables {
        out.push('\n');
        if dialect == Dialect::Postgres && t.columns.len() > POSTGRES_MAX_COLUMNS {
            out.push_str(&format!(
                "-- {} is skipped: its {} columns do not fit a PostgreSQL row (8 KB); its values are in\n-- OBJECT_PROPERTIES (one row per record and property), filter by OBJECTTYPEID.\n",
                t.name,
                t.columns.len()
            ));
            continue;
        }
        out.push_str(&create_table(dialect, t, parquet, hive, location));
        out.push_str(&load(dialect, t, parquet, hive, location, &manifest.export_date));
    }
    out
}

fn create_table(dialect: Dialect, t: &TableEntry, parquet: bool, hive: bool, location: &str) -> String {
    let name = quote(dialect, &t.name);
    let columns: Vec<String> = t
        .columns
        .iter()
        .map(|c| {
            let not_null = if c.nullable || dialect == Dialect::Athena { "" } else { " NOT NULL" };
            format!(
                "  {} {}{not_null}",
                quote(dialect, &column_name(dialect, &c.name)),
                sql_type(dialect, &c.ty, parquet)
            )
        })
        .collect();
    let body = columns.join(",\n");
    let renamed: Vec<String> = t
        .columns
        .iter()
        .filter(|c| column_name(dialect, &c.name) != c.name)
        .map(|c| format!("--   {} -> {}\n", c.name, column_name(dialect, &c.name)))
        .collect();
    let note = if renamed.is_empty() {
        String::new()
    } else {
        format!(
            "-- Columns renamed to fit this dialect's identifier limit (loads are by position):\n{}",
            renamed.concat()
        )
    };
    match dialect {
        Dialect::Athena => {
            let partition = if hive { "PARTITIONED BY (`dt` STRING)\n" } else { "" };
            let format = if parquet {
                "STORED AS PARQUET\n".to_string()
            } else {
                "ROW FORMAT SERDE 'org.apache.hadoop.hive.serde2.OpenCSVSerde'\nSTORED AS TEXTFILE\n".to_string()
            };
            let props = if parquet { "" } else { "TBLPROPERTIES ('skip.header.line.count'='1')\n" };
            format!(
                "{note}CREATE EXTERNAL TABLE IF NOT EXISTS {name} (\n{body}\n)\n{partition}{format}LOCATION {}\n{props};\n",
                sql_string(&format!("{location}/{}/", t.name))
            )
        }
        _ => format!("{note}CREATE TABLE IF NOT EXISTS {name} (\n{body}\n);\n"),
    }
}

fn load(dialect: Dialect, t: &TableEntry, parquet: bool, hive: bool, location: &str, date: &str) -> String {
    let name = quote(dialect, &t.name);
    let files: Vec<String> = t.files.iter().map(|f| Layout::join(location, &f.path)).collect();
    let dir = if hive { format!("{location}/{}/dt={date}/", t.name) } else { format!("{location}/{}/", t.name) };
    match dialect {
        Dialect::Duckdb => {
            let list = files.iter().map(|f| sql_string(f)).collect::<Vec<_>>().join(", ");
            if parquet {
                format!("INSERT INTO {name} SELECT * FROM read_parquet([{list}]);\n")
            } else {
                let types = t
                    .columns
                    .iter()
                    .map(|c| format!("{}: {}", sql_string(&c.name), sql_string(sql_type(dialect, &c.ty, false))))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "INSERT INTO {name} SELECT * FROM read_csv([{list}], header = true, allow_quoted_nulls = false, auto_detect = false, columns = {{{types}}});\n"
                )
            }
        }
        Dialect::Postgres => {
            if parquet {
                return "-- PostgreSQL has no Parquet reader: export with --format csv to load this table.\n".into();
            }
            files
                .iter()
                .map(|f| {
                    format!(
                        "\\copy {name} FROM PROGRAM {} WITH (FORMAT csv, HEADER true)\n",
                        sql_string(&format!("gzip -dc {}", shell_quote(f)))
                    )
                })
                .collect()
        }
        Dialect::Snowflake => {
            let format = if parquet {
                "FILE_FORMAT = (TYPE = PARQUET) MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE".to_string()
            } else {
                "FILE_FORMAT = (TYPE = CSV COMPRESSION = GZIP SKIP_HEADER = 1 FIELD_OPTIONALLY_ENCLOSED_BY = '\"' EMPTY_FIELD_AS_NULL = TRUE NULL_IF = ())".to_string()
            };
            format!(
                "COPY INTO {name} FROM '@crmdump_stage/{}' {format};\n",
                dir.trim_start_matches(location).trim_start_matches('/')
            )
        }
        Dialect::Bigquery => {
            let format = if parquet {
                "format = 'PARQUET'"
            } else {
                "format = 'CSV', skip_leading_rows = 1, compression = 'GZIP'"
            };
            let ext = if parquet { "parquet" } else { "csv.gz" };
            format!("LOAD DATA INTO {name} FROM FILES ({format}, uris = [{}]);\n", sql_string(&format!("{dir}*.{ext}")))
        }
        Dialect::Redshift => {
            let format = if parquet {
                "FORMAT AS PARQUET".to_string()
            } else {
                "FORMAT AS CSV IGNOREHEADER 1 GZIP TIMEFORMAT 'auto'".to_string()
            };
            format!("COPY {name} FROM {} IAM_ROLE '<your-redshift-role-arn>' {format};\n", sql_string(&dir))
        }
        Dialect::Athena => {
            if hive {
                format!(
                    "ALTER TABLE {name} ADD IF NOT EXISTS PARTITION (`dt` = {}) LOCATION {};\n",
                    sql_string(date),
                    sql_string(&dir)
                )
            } else {
                String::new()
            }
        }
    }
}

fn shell_quote(path: &str) -> String {
    format!("\"{}\"", path.replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::manifest::ColumnEntry;
    use crate::write::PartReceipt;

    fn manifest(format: &str, layout: &str) -> Manifest {
        Manifest {
            format_version: 1,
            crmdump_version: "0".into(),
            source: "hubspot".into(),
            account: "1".into(),
            objects: vec![],
            streams: vec![],
            export_date: "2026-11-23".into(),
            mode: "full".into(),
            window: None,
            started_at: String::new(),
            finished_at: String::new(),
            format: format.into(),
            layout: layout.into(),
            tables: vec![TableEntry {
                name: "OWNERS".into(),
                rows: 1,
                columns: vec![
                    ColumnEntry { name: "OWNERID".into(), ty: "Int64".into(), nullable: false },
                    ColumnEntry { name: "UPDATEDAT".into(), ty: "Timestamp(ms, UTC)".into(), nullable: true },
                    ColumnEntry { name: "META".into(), ty: "Json".into(), nullable: true },
                ],
                files: vec![PartReceipt {
                    path: "OWNERS/part-00000.csv.gz".into(),
                    rows: 1,
                    bytes: 1,
                    sha256: String::new(),
                }],
            }],
            associations: None,
            reconcile: None,
            requests: 0,
            retries: 0,
            warnings: vec![],
        }
    }

    #[test]
    fn types_and_loads_per_dialect() {
        let m = manifest("csv.gz", "daily");
        let sf = ddl(Dialect::Snowflake, &m, "/x");
        assert!(
            sf.contains("\"OWNERID\" NUMBER(19,0) NOT NULL")
                && sf.contains("TIMESTAMP_TZ(3)")
                && sf.contains("VARIANT")
        );
        assert!(sf.contains("COPY INTO \"OWNERS\""));
        assert!(ddl(Dialect::Bigquery, &m, "gs://b/x").contains("`OWNERID` INT64 NOT NULL"));
        assert!(
            ddl(Dialect::Postgres, &m, "/x")
                .contains("\\copy \"OWNERS\" FROM PROGRAM 'gzip -dc \"/x/OWNERS/part-00000.csv.gz\"'")
        );
        assert!(ddl(Dialect::Redshift, &m, "s3://b/x").contains("SUPER"));
        let athena_csv = ddl(Dialect::Athena, &m, "s3://b/x");
        assert!(athena_csv.contains("`OWNERID` STRING") && athena_csv.contains("OpenCSVSerde"), "{athena_csv}");
        let athena_hive = ddl(Dialect::Athena, &manifest("parquet", "hive"), "s3://b/x");
        assert!(athena_hive.contains("`OWNERID` BIGINT") && athena_hive.contains("PARTITIONED BY (`dt` STRING)"));
        assert!(
            athena_hive.contains(
                "ADD IF NOT EXISTS PARTITION (`dt` = '2026-11-23') LOCATION 's3://b/x/OWNERS/dt=2026-11-23/'"
            )
        );
    }
}
