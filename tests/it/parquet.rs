//! Typed Parquet: the same account exported as CSV and as Parquet holds the same values
//! (the CSV is checked against the ground truth elsewhere), read back by pyarrow with the
//! types of docs/FORMAT.md; parts respect the size limit.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::support::*;

fn export(dir: &std::path::Path, format: &str, extra: &[&str]) {
    let out = run(crmdump()
        .args([
            "export",
            "--source",
            "sandbox",
            "--sandbox-scale",
            "120",
            "--sandbox-seed",
            "5",
            "--sandbox-anchor",
            ANCHOR,
        ])
        .args(["--date", DATE, "--format", format, "--dest", dir.to_str().unwrap()])
        .args(extra));
    assert_success(&out);
}

/// A CSV field as the value its column's type makes of it.
fn typed(text: &Option<String>, ty: &str) -> Value {
    let Some(t) = text else { return Value::Null };
    match ty {
        "Int64" | "Int32" => Value::from(t.parse::<i64>().unwrap()),
        "Float64" => Value::from(t.parse::<f64>().unwrap()),
        "Boolean" => Value::from(t == "true"),
        _ => Value::from(t.clone()),
    }
}

#[test]
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
fn parquet_holds_the_same_typed_values_as_csv() {
    let (csv_dir, pq_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    export(csv_dir.path(), "csv", &[]);
    export(pq_dir.path(), "parquet", &[]);
    let csv = read_export(&csv_dir.path().join(DATE), &[]);
    let pq = read_export(&pq_dir.path().join(DATE), &[]);
    assert_eq!(pq["manifest"]["format"], "parquet");
    let tables = csv["manifest"]["tables"].as_array().unwrap();
    assert_eq!(tables.len(), pq["manifest"]["tables"].as_array().unwrap().len());
    for t in tables {
        let name = t["name"].as_str().unwrap();
        let types: Vec<String> =
            t["columns"].as_array().unwrap().iter().map(|c| c["type"].as_str().unwrap().to_string()).collect();
        let (csv_columns, csv_rows) = rows(&csv, name);
        let pq_table = &pq["tables"][name];
        let pq_columns: Vec<&str> =
            pq_table["columns"].as_array().unwrap().iter().map(|c| c.as_str().unwrap()).collect();
        assert_eq!(pq_columns, csv_columns, "{name} columns");
        // INGESTEDAT differs between the two runs; compare everything else.
        let ingested = csv_columns.iter().position(|c| c == "INGESTEDAT").unwrap();
        let mut want: Vec<String> = csv_rows
            .iter()
            .map(|r| {
                let v: Vec<Value> = r
                    .iter()
                    .zip(&types)
                    .enumerate()
                    .filter(|(i, _)| *i != ingested)
                    .map(|(_, (f, ty))| typed(f, ty))
                    .collect();
                serde_json::to_string(&v).unwrap()
            })
            .collect();
        let mut got: Vec<String> = pq_table["rows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let v: Vec<Value> = r
                    .as_array()
                    .unwrap()
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| *i != ingested)
                    .map(|(_, v)| v.clone())
                    .collect();
                serde_json::to_string(&v).unwrap()
            })
            .collect();
        want.sort();
        got.sort();
        assert_eq!(got.len(), want.len(), "{name} rows");
        assert!(got == want, "{name}: Parquet values differ from CSV values");
    }
    // Types, file metadata, and the empty-table rule.
    let parts: &BTreeMap<String, Value> = &serde_json::from_value(pq["parts"].clone()).unwrap();
    let contacts = parts.iter().find(|(p, _)| p.starts_with("OBJECTS_CONTACTS/")).unwrap().1;
    let types: Vec<&str> = contacts["types"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let header: Vec<&str> = contacts["header"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let type_of = |c: &str| types[header.iter().position(|h| *h == c).unwrap()];
    assert_eq!(type_of("OBJECTID"), "int64");
    assert_eq!(type_of("UPDATEDAT"), "timestamp[ms, tz=UTC]");
    assert_eq!(type_of("PROPERTY_ANNUALREVENUE"), "double");
    assert_eq!(type_of("PROPERTY_DATE_OF_BIRTH"), "date32[day]");
    assert_eq!(type_of("PROPERTY_HS_EMAIL_OPTOUT"), "bool");
    assert_eq!(contacts["metadata"]["crmdump.source"], "hubspot");
    assert!(contacts["metadata"]["crmdump.version"].is_string());
    let empty = parts.iter().find(|(p, _)| p.starts_with("EVENTS_E_FORM_SUBMISSION_V2/")).unwrap().1;
    assert_eq!(empty["rows"], 0);
    assert!(empty["types"].as_array().unwrap().len() >= 6, "an empty table still carries its schema");
}

#[test]
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
fn parquet_parts_respect_the_size_limit() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(crmdump()
        .args(["export", "--source", "sandbox", "--objects", "contacts", "--sandbox-scale", "6000", "--no-history"])
        .args([
            "--date",
            DATE,
            "--format",
            "parquet",
            "--max-file-size",
            "1MiB",
            "--dest",
            dir.path().to_str().unwrap(),
        ]));
    assert_success(&out);
    let export = read_export(&dir.path().join(DATE), &["OBJECTS_CONTACTS"]);
    let table = export["manifest"]["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "OBJECT_PROPERTIES")
        .unwrap()
        .clone();
    let files = table["files"].as_array().unwrap();
    assert!(files.len() >= 3, "expected several parts, got {}", files.len());
    for (i, f) in files.iter().enumerate() {
        let bytes = f["bytes"].as_u64().unwrap();
        assert!(bytes <= 1 << 20, "part {i} is {bytes} bytes");
        if i + 1 < files.len() {
            assert!(bytes * 10 >= 9 << 20, "part {i} is only {bytes} bytes");
        }
    }
    let (_, contacts) = rows(&export, "OBJECTS_CONTACTS");
    assert_eq!(contacts.len(), 6000);
}
