//! `crmdump tables` and `crmdump check` against the sandbox.

use crate::support::*;

#[test]
fn tables_lists_every_table_with_typed_columns() {
    let out = run(crmdump().args(["tables", "--source", "sandbox", "--json", "--sandbox-scale", "10"]));
    assert_success(&out);
    let tables: Vec<serde_json::Value> =
        String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let g = generator(1, 10);
    let find = |name: &str| tables.iter().find(|t| t["table"] == name).unwrap_or_else(|| panic!("no {name}"));
    let contacts = find("OBJECTS_CONTACTS");
    let columns = contacts["columns"].as_array().unwrap();
    assert_eq!(columns.len(), 7 + g.defined_properties(0).count());
    let column = |name: &str| columns.iter().find(|c| c["name"] == name).unwrap()["type"].as_str().unwrap().to_string();
    assert_eq!(column("PROPERTY_EMAIL"), "Utf8");
    assert_eq!(column("PROPERTY_ANNUALREVENUE"), "Float64");
    assert_eq!(column("PROPERTY_NOTES_LAST_CONTACTED"), "Timestamp(ms, UTC)");
    assert_eq!(column("PROPERTY_DATE_OF_BIRTH"), "Date32");
    assert_eq!(column("PROPERTY_HS_EMAIL_OPTOUT"), "Boolean");
    assert_eq!(column("OBJECTID"), "Int64");
    assert_eq!(find("OBJECTS_PRODUCTS")["columns"].as_array().unwrap().len(), 7 + 1200);
    for t in ["OBJECT_PROPERTIES_HISTORY", "LISTS", "LIST_MEMBERSHIPS", "TEAMS", "EVENTS_E_VISITED_PAGE"] {
        assert!(find(t).get("written").is_none(), "{t} is in every export");
    }
    let deleted = find("DELETED_OBJECTS");
    assert!(deleted.get("written").is_none(), "DELETED_OBJECTS is in every day folder");
    let events = find("CHANGE_EVENTS");
    assert_eq!(events["written"], "with_webhook_journal");
    let names: Vec<&str> = events["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    for c in ["EVENTID", "EVENTTYPE", "OBJECTID", "ASSOCIATIONREMOVED", "MERGEDOBJECTIDS", "PAYLOAD", "INGESTEDAT"] {
        assert!(names.contains(&c), "CHANGE_EVENTS.{c}");
    }
    let id_type = |t: &serde_json::Value| {
        t["columns"].as_array().unwrap().iter().find(|c| c["name"] == "OBJECTID").unwrap()["type"].clone()
    };
    assert_eq!(id_type(events), "Int64");
    assert_eq!(id_type(events), id_type(deleted));
}

#[test]
fn check_reports_scopes_rate_limit_and_destination() {
    let sandbox = SandboxProcess::start(&[
        "--scale",
        "10",
        "--token",
        "good",
        "--missing-scopes",
        "crm.objects.quotes.read,crm.lists.read",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let out = run(crmdump()
        .args([
            "check",
            "--source",
            "hubspot",
            "--rate-limit",
            "none",
            "--base-url",
            &sandbox.base_url,
            "--dest",
            dir.path().to_str().unwrap(),
        ])
        .env("HUBSPOT_ACCESS_TOKEN", "good"));
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("[ OK ] token: valid"), "{stdout}");
    assert!(stdout.contains("[ OK ] contacts: ") && stdout.contains("property definitions read"), "{stdout}");
    // Only what check asked the API is called OK: owners and records were never requested.
    assert!(!stdout.contains("[ OK ] OWNERS") && !stdout.contains("readable"), "{stdout}");
    assert!(stdout.contains("[ -- ] records, owners"), "{stdout}");
    assert!(stdout.contains("[SKIP] OBJECTS_QUOTES") && stdout.contains("crm.objects.quotes.read"), "{stdout}");
    assert!(stdout.contains("[SKIP] LISTS") && stdout.contains("crm.lists.read"));
    assert!(stdout.contains("rate limit: 100 requests per 10000 ms"), "{stdout}");
    assert!(stdout.contains("writable"));
    assert!(std::fs::read_dir(dir.path().join("_crmdump_check")).unwrap().next().is_none(), "the probe is removed");

    let out = run(crmdump()
        .args(["check", "--source", "hubspot", "--rate-limit", "none", "--base-url", &sandbox.base_url])
        .env("HUBSPOT_ACCESS_TOKEN", "bad"));
    assert_eq!(out.status.code(), Some(3));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("[FAIL] token") && stdout.contains("Regenerate"), "{stdout}");

    let out = run(crmdump()
        .args([
            "check",
            "--source",
            "hubspot",
            "--rate-limit",
            "none",
            "--base-url",
            &sandbox.base_url,
            "--dest",
            "/proc/crmdump-not-writable",
        ])
        .env("HUBSPOT_ACCESS_TOKEN", "good"));
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/proc/crmdump-not-writable"));
}
