//! A real PostgreSQL server (started by scripts/test on 127.0.0.1) loads a CSV export through
//! `crmdump ddl --dialect postgres`: row counts equal the manifest, NULL stays NULL, the empty
//! string stays empty, and sampled typed values equal the sandbox's ground truth.

use std::process::Command;

use crate::support::*;

fn server() -> String {
    std::env::var("CRMDUMP_TEST_PG")
        .expect("CRMDUMP_TEST_PG is not set: run the tests with scripts/test, which starts a local PostgreSQL server")
}

fn psql(url: &str, args: &[&str]) -> String {
    let out = Command::new("psql")
        .arg(url)
        .args(["-X", "-v", "ON_ERROR_STOP=1", "-At", "-P", "null=<NULL>"])
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "psql failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
#[ignore = "needs PostgreSQL: run scripts/test"]
fn postgres_loads_a_csv_export_through_the_generated_ddl() {
    let admin = server();
    let db = format!("crmdump_{}", std::process::id());
    psql(&admin, &["-c", &format!("CREATE DATABASE {db}")]);
    let url = format!("{}/{db}", admin.rsplit_once('/').unwrap().0);

    let dir = tempfile::tempdir().unwrap();
    assert_success(&run(crmdump()
        .args(["export", "--source", "sandbox", "--sandbox-scale", "60", "--sandbox-seed", "2"])
        .args(["--sandbox-anchor", ANCHOR, "--date", DATE, "--dest", dir.path().to_str().unwrap()])));
    let out = run(crmdump().args(["ddl", "--dialect", "postgres", "--date", DATE, dir.path().to_str().unwrap()]));
    assert_success(&out);
    let sql = dir.path().join("load.sql");
    std::fs::write(&sql, &out.stdout).unwrap();
    psql(&url, &["-q", "-f", sql.to_str().unwrap()]);

    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join(DATE).join("_manifest.json")).unwrap()).unwrap();
    // Tables too wide for a PostgreSQL row are skipped by the DDL, with a comment saying so.
    let sql_text = String::from_utf8_lossy(&out.stdout).to_string();
    let (wide, tables): (Vec<&serde_json::Value>, Vec<&serde_json::Value>) = manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .partition(|t| t["columns"].as_array().unwrap().len() > crmdump::internals::POSTGRES_MAX_COLUMNS);
    assert!(wide.iter().any(|t| t["name"] == "OBJECTS_PRODUCTS"));
    for t in &wide {
        assert!(sql_text.contains(&format!("-- {} is skipped", t["name"].as_str().unwrap())));
    }
    let query = tables
        .iter()
        .map(|t| format!("SELECT '{0}', count(*) FROM \"{0}\"", t["name"].as_str().unwrap()))
        .collect::<Vec<_>>()
        .join(" UNION ALL ");
    let counts = psql(&url, &["-F", "\t", "-c", &query]);
    for line in counts.lines() {
        let (name, n) = line.split_once('\t').unwrap();
        let t = tables.iter().find(|t| t["name"] == name).unwrap();
        assert_eq!(n.parse::<u64>().unwrap(), t["rows"].as_u64().unwrap(), "{name}");
    }
    assert_eq!(counts.lines().count(), tables.len());

    let g = generator(2, 60);
    let props = &g.types[0].properties;
    let p = |name: &str| props.iter().position(|d| d.name == name).unwrap();
    for i in (0..60).step_by(5) {
        let id = g.record(0, i).id;
        let row = psql(
            &url,
            &[
                "-F",
                "\u{1f}",
                "-c",
                &format!(
                    "SELECT \"PROPERTY_JOBTITLE\", \"PROPERTY_ANNUALREVENUE\", to_char(\"UPDATEDAT\" AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \"PROPERTY_HS_EMAIL_OPTOUT\" FROM \"OBJECTS_CONTACTS\" WHERE \"OBJECTID\" = '{id}'"
                ),
            ],
        );
        let fields: Vec<&str> = row.split('\u{1f}').collect();
        let value = |name: &str| g.property_value(0, i, p(name));
        assert_eq!(fields[0], value("jobtitle").as_deref().unwrap_or("<NULL>"), "NULL and empty text survive for {id}");
        let revenue = value("annualrevenue").and_then(|v| v.parse::<f64>().ok());
        assert_eq!(fields[1].parse::<f64>().ok(), revenue, "{id} annualrevenue");
        assert_eq!(fields[2], g.record(0, i).updated_at, "{id} UPDATEDAT");
        let optout = value("hs_email_optout").filter(|v| !v.is_empty()).map(|v| if v == "true" { "t" } else { "f" });
        assert_eq!(fields[3], optout.unwrap_or("<NULL>"), "{id} bool");
    }
    let empty_strings = psql(&url, &["-c", "SELECT count(*) FROM \"OBJECT_PROPERTIES\" WHERE \"VALUE\" = ''"]);
    assert!(empty_strings.parse::<u64>().unwrap() > 0, "empty strings load as empty, not NULL");
}
