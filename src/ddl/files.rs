//! File engines read the committed dates' parts in place: DuckDB (with `--views`) and Spark
//! through the manifests' own file lists, Athena through one partition per committed date. A
//! killed run's files are never read. Each table becomes a view named after it with the same
//! columns as a loaded table (`SOURCE`, `ACCOUNT`, `EXPORT_DATE`, then every column any date
//! has, NULL where a date lacks it), so the analytics views are the same SQL everywhere.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use super::Day;
use super::catalog::{self, Table};
use super::dialect::{Dialect, Names, date, literal, string};

/// Spark's CSV reader turns a quoted `""` into NULL unless its `nullValue` is something else:
/// with this (a NUL character), an empty unquoted field is NULL and `""` the empty string.
const SPARK_NULL_VALUE: &str = "\\u0000";

/// A `SELECT` of one date's rows of `t`: meta columns as literals, every column of the
/// catalog from `source` (its columns typed `source_types`; text when `from_text`), NULL
/// where the date lacks it.
fn select(
    n: Names,
    t: &Table,
    day: &Day,
    source: &str,
    source_types: &BTreeMap<String, String>,
    from_text: bool,
) -> String {
    let d = n.dialect;
    let mut columns = Vec::new();
    for (m, ty) in t.meta() {
        let value = match m {
            "SOURCE" => literal(d, Some(&day.manifest.source), ty),
            "ACCOUNT" => literal(d, Some(&day.manifest.account), ty),
            _ => date(day.date()),
        };
        columns.push(format!("{value} AS {}", n.col(m)));
    }
    for c in &t.columns {
        let expr = match source_types.get(&c.name) {
            None => literal(d, None, &c.ty),
            Some(_) if from_text => d.parse_text(&n.col(&c.name), &c.ty),
            Some(ty) => d.convert(&n.col(&c.name), ty, &c.ty),
        };
        columns.push(format!("{expr} AS {}", n.col(t.loaded_name(&c.name))));
    }
    format!("SELECT {} FROM {source}", columns.join(", "))
}

/// The relation of no rows with `t`'s columns, for a table no date in range has.
fn empty(n: Names, t: &Table) -> String {
    let d = n.dialect;
    let columns: Vec<String> =
        t.loaded_columns().iter().map(|(c, ty)| format!("{} AS {}", literal(d, None, ty), n.col(c))).collect();
    format!("SELECT {} WHERE 1 = 0", columns.join(", "))
}

/// Base views of every table over the committed parts of `days`, and `EXPORTS`.
pub fn base(n: Names, tables: &[Table], days: &[Day], out: &mut String) {
    for t in tables {
        out.push('\n');
        let selects = match n.dialect {
            Dialect::Duckdb => duckdb(n, t, days),
            Dialect::Spark => spark(n, t, days, out),
            Dialect::Athena => athena(n, t, days, out),
            _ => unreachable!("warehouses load"),
        };
        let body = if selects.is_empty() { empty(n, t) } else { selects.join("\nUNION ALL\n") };
        out.push_str(&format!("{} AS\n{body};\n", n.dialect.create_view(&t.name)));
    }
    let rows: Vec<String> = days
        .iter()
        .map(|day| {
            let values: Vec<String> = catalog::exports_row(day)
                .iter()
                .zip(catalog::EXPORTS)
                .map(|(v, (c, ty))| format!("{} AS {}", literal(n.dialect, v.as_deref(), ty), n.col(c)))
                .collect();
            format!("SELECT {}", values.join(", "))
        })
        .collect();
    let exports = if rows.is_empty() {
        let columns: Vec<String> = catalog::EXPORTS
            .iter()
            .map(|(c, ty)| format!("{} AS {}", literal(n.dialect, None, ty), n.col(c)))
            .collect();
        format!("SELECT {} WHERE 1 = 0", columns.join(", "))
    } else {
        rows.join("\nUNION ALL\n")
    };
    out.push_str(&format!("\n{} AS\n{exports};\n", n.dialect.create_view("EXPORTS")));
}

/// The types a date's files give each column of `table`: the manifest's, JSON as text.
fn file_types(day: &Day, table: &str) -> BTreeMap<String, String> {
    day.columns(table)
        .unwrap_or_default()
        .iter()
        .map(|c| (c.name.clone(), if c.ty == "Json" { catalog::TEXT.to_string() } else { c.ty.clone() }))
        .collect()
}

fn duckdb(n: Names, t: &Table, days: &[Day]) -> Vec<String> {
    let d = n.dialect;
    days.iter()
        .filter_map(|day| {
            let parts = day.parts(&t.name);
            if parts.is_empty() {
                return None;
            }
            let list = parts.iter().map(|(key, _)| string(&day.url(key))).collect::<Vec<_>>().join(", ");
            let types = file_types(day, &t.name);
            let reader = if day.parquet() {
                format!("read_parquet([{list}], hive_partitioning = false)")
            } else {
                let columns = day
                    .columns(&t.name)
                    .unwrap_or_default()
                    .iter()
                    .map(|c| format!("{}: {}", string(&c.name), string(d.sql_type(&types[&c.name]))))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!(
                    "read_csv([{list}], hive_partitioning = false, header = true, allow_quoted_nulls = false, auto_detect = false, columns = {{{columns}}})"
                )
            };
            Some(select(n, t, day, &reader, &types, false))
        })
        .collect()
}

/// Spark: a temporary view per date and table over exactly the manifest's parts (a brace glob
/// of their names), then a `SELECT` from it.
fn spark(n: Names, t: &Table, days: &[Day], out: &mut String) -> Vec<String> {
    let mut selects = Vec::new();
    for (k, day) in days.iter().enumerate() {
        let parts = day.parts(&t.name);
        if parts.is_empty() {
            continue;
        }
        let dir = day.url(&day.table_dir(&t.name));
        let names: Vec<&str> = parts.iter().map(|(key, _)| key.rsplit('/').next().unwrap_or(key)).collect::<Vec<_>>();
        let path = format!("{dir}/{{{}}}", names.join(","));
        let view = format!("_crmdump_{}_{k}", t.name);
        let options = if day.parquet() {
            format!("USING parquet OPTIONS (path {})", string(&path))
        } else {
            format!(
                "USING csv OPTIONS (path {}, header 'true', multiLine 'true', escape '\"', nullValue '{SPARK_NULL_VALUE}', mode 'FAILFAST')",
                string(&path)
            )
        };
        out.push_str(&format!("CREATE OR REPLACE TEMPORARY VIEW {} {options};\n", n.dialect.ident(&view)));
        let types = file_types(day, &t.name);
        selects.push(select(n, t, day, &n.dialect.ident(&view), &types, !day.parquet()));
    }
    selects
}

/// Athena: an external table per root and set of columns (its CSV reader goes by position,
/// so days whose columns differ cannot share one), a partition per committed date, and a
/// `SELECT` of the dates in range.
fn athena(n: Names, t: &Table, days: &[Day], out: &mut String) -> Vec<String> {
    let d = n.dialect;
    // (root, columns) -> days
    let mut groups: BTreeMap<(usize, String), Vec<&Day>> = BTreeMap::new();
    for day in days.iter().filter(|day| !day.parts(&t.name).is_empty()) {
        let columns = day
            .columns(&t.name)
            .unwrap_or_default()
            .iter()
            .map(|c| format!("{}:{}", c.name, c.ty))
            .collect::<Vec<_>>()
            .join(",");
        let shape = format!("{}|{columns}", if day.parquet() { "parquet" } else { "csv" });
        groups.entry((day.root_index, shape)).or_default().push(day);
    }
    let mut selects = Vec::new();
    for ((_, shape), group) in groups {
        let first = group[0];
        let hash = hex::encode(&Sha256::digest(format!("{}\n{shape}", first.root))[..4]);
        let name = format!("{}__{hash}", t.name);
        let parquet = first.parquet();
        let types = file_types(first, &t.name);
        let columns: Vec<String> = first
            .columns(&t.name)
            .unwrap_or_default()
            .iter()
            .map(|c| {
                let ty = if parquet { d.sql_type(&types[&c.name]) } else { "STRING" };
                let ty = if ty == "VARCHAR" { "STRING" } else { ty };
                format!("  {} {ty}", d.ddl_ident(&super::dialect::column_name(d, &c.name)))
            })
            .collect();
        let storage = if parquet {
            "STORED AS PARQUET\n".to_string()
        } else {
            "ROW FORMAT SERDE 'org.apache.hadoop.hive.serde2.OpenCSVSerde'\nSTORED AS TEXTFILE\n".to_string()
        };
        let props = if parquet { "" } else { "TBLPROPERTIES ('skip.header.line.count'='1')\n" };
        out.push_str(&format!(
            "CREATE EXTERNAL TABLE IF NOT EXISTS {} (\n{}\n)\nPARTITIONED BY (`export_date` STRING)\n{storage}LOCATION {}\n{props};\n",
            d.ddl_ident(&name),
            columns.join(",\n"),
            string(&format!("{}/", first.root))
        ));
        for day in &group {
            out.push_str(&format!(
                "ALTER TABLE {} ADD IF NOT EXISTS PARTITION (`export_date` = {}) LOCATION {};\n",
                d.ddl_ident(&name),
                string(day.date()),
                string(&format!("{}/", day.url(&day.table_dir(&t.name))))
            ));
        }
        for day in group {
            let source = format!("{} WHERE \"export_date\" = {}", n.rel(&name), string(day.date()));
            selects.push(select(n, t, day, &source, &types, !parquet));
        }
    }
    selects
}
