//! `crmdump ddl --dialect duckdb`: DuckDB (a real engine, through its Python package)
//! executes the generated statements on a CSV and on a Parquet export; every table's row count
//! equals the manifest, and sampled typed values equal the sandbox's ground truth.

use std::process::Command;

use crate::support::*;

const SCRIPT: &str = r#"
import json, sys, duckdb
sql, checks = open(sys.argv[1]).read(), json.loads(sys.argv[2])
con = duckdb.connect()
con.execute(sql)
out = {"counts": {}, "contacts": {}}
for t in checks["tables"]:
    out["counts"][t] = con.execute(f'SELECT count(*) FROM "{t}"').fetchone()[0]
for i in checks["ids"]:
    row = con.execute(
        'SELECT PROPERTY_EMAIL, PROPERTY_ANNUALREVENUE, strftime(UPDATEDAT AT TIME ZONE \'UTC\', \'%Y-%m-%dT%H:%M:%S.%gZ\'), '
        'CAST(PROPERTY_DATE_OF_BIRTH AS VARCHAR), PROPERTY_HS_EMAIL_OPTOUT FROM OBJECTS_CONTACTS WHERE OBJECTID = ?', [i]).fetchone()
    out["contacts"][str(i)] = list(row)
print(json.dumps(out))
"#;

/// Loads the export day `date` under `root` into DuckDB through `crmdump ddl`, returning the
/// row count of every table of the manifest next to the manifest's own count.
pub fn duckdb_counts(root: &std::path::Path) -> Vec<(String, u64, u64)> {
    let out = run(crmdump().args(["ddl", "--dialect", "duckdb", "--date", DATE, root.to_str().unwrap()]));
    assert_success(&out);
    let sql = root.join("load.sql");
    std::fs::write(&sql, &out.stdout).unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join(DATE).join("_manifest.json")).unwrap()).unwrap();
    let tables: Vec<String> =
        manifest["tables"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect();
    let checks = serde_json::json!({ "tables": tables, "ids": [] });
    let out = Command::new(python()).args(["-c", SCRIPT]).arg(&sql).arg(checks.to_string()).output().unwrap();
    assert!(out.status.success(), "DuckDB failed: {}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let name = t["name"].as_str().unwrap().to_string();
            (name.clone(), got["counts"][&name].as_u64().unwrap(), t["rows"].as_u64().unwrap())
        })
        .collect()
}

#[test]
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
fn duckdb_loads_csv_and_parquet_exports_through_the_generated_ddl() {
    let g = generator(2, 60);
    for format in ["csv", "parquet"] {
        let dir = tempfile::tempdir().unwrap();
        let out = run(crmdump()
            .args(["export", "--source", "sandbox", "--sandbox-scale", "60", "--sandbox-seed", "2", "--no-history"])
            .args([
                "--sandbox-anchor",
                ANCHOR,
                "--date",
                DATE,
                "--format",
                format,
                "--dest",
                dir.path().to_str().unwrap(),
            ]));
        assert_success(&out);
        let out = run(crmdump().args(["ddl", "--dialect", "duckdb", "--date", DATE, dir.path().to_str().unwrap()]));
        assert_success(&out);
        let sql = dir.path().join("load.sql");
        std::fs::write(&sql, &out.stdout).unwrap();
        let manifest: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(DATE).join("_manifest.json")).unwrap()).unwrap();
        let tables: Vec<String> =
            manifest["tables"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect();
        let ids: Vec<i64> = (0..60).step_by(7).map(|i| g.record(0, i).id).collect();
        let checks = serde_json::json!({ "tables": tables, "ids": ids });
        let out = Command::new(python()).args(["-c", SCRIPT]).arg(&sql).arg(checks.to_string()).output().unwrap();
        assert!(out.status.success(), "DuckDB failed ({format}): {}", String::from_utf8_lossy(&out.stderr));
        let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        for t in manifest["tables"].as_array().unwrap() {
            assert_eq!(got["counts"][t["name"].as_str().unwrap()], t["rows"], "{format} {}", t["name"]);
        }
        let props = &g.types[0].properties;
        let p = |name: &str| props.iter().position(|d| d.name == name).unwrap();
        for (n, i) in (0..60).step_by(7).enumerate() {
            let row = &got["contacts"][ids[n].to_string()];
            let value = |name: &str| g.property_value(0, i, p(name));
            assert_eq!(row[0].as_str(), value("email").as_deref(), "{format} email");
            let revenue = value("annualrevenue").and_then(|v| v.parse::<f64>().ok());
            assert_eq!(row[1].as_f64(), revenue, "{format} annualrevenue (N/A is NULL)");
            assert_eq!(row[2].as_str(), Some(g.record(0, i).updated_at.as_str()), "{format} UPDATEDAT");
            assert_eq!(row[3].as_str(), value("date_of_birth").as_deref().filter(|v| !v.is_empty()), "{format} date");
            let optout = value("hs_email_optout").filter(|v| !v.is_empty()).map(|v| v == "true");
            assert_eq!(row[4].as_bool(), optout, "{format} bool");
        }
    }
}
