//! `crmdump export --reconcile`: deletions and association changes no webhook reported,
//! found by listing every id and reading every association, against the sandbox's truth.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{SandboxProcess, assert_success, col, crmdump, read_export, rows};
use crate::webhooks::{assert_every_association_of, deleted_rows_of, listed, pipedrive_links, strings};

fn manifest(day: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(day.join("_manifest.json")).unwrap()).unwrap()
}

/// The rows a day folder's `DELETED_OBJECTS` holds from a reconcile, by id.
fn reconciled(day: &Path, object_type: Option<&str>) -> BTreeMap<String, (String, Option<String>)> {
    deleted_rows_of(day, object_type)
        .into_iter()
        .filter_map(|(id, found)| {
            found.into_iter().find(|(_, source, _)| source == "reconcile").map(|(kind, _, into)| (id, (kind, into)))
        })
        .collect()
}

/// The associations a day folder holds, `(from type, from, to type, to)`.
fn folder_links(day: &Path) -> BTreeSet<(String, String, String, String)> {
    let export = read_export(day, &["ASSOCIATIONS"]);
    let (columns, rows) = rows(&export, "ASSOCIATIONS");
    let c = |n: &str| col(&columns, n);
    rows.iter()
        .map(|r| {
            let v = |n: &str| r[c(n)].clone().unwrap();
            (v("FROMOBJECTTYPEID"), v("FROMOBJECTID"), v("TOOBJECTTYPEID"), v("TOOBJECTID"))
        })
        .collect()
}

const TYPES: [(&str, &str); 3] = [("contacts", "0-1"), ("companies", "0-2"), ("deals", "0-3")];

#[test]
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
fn a_reconcile_finds_every_deletion_and_holds_every_association_without_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path();
    let sandbox = SandboxProcess::start(&["--scale", "1500", "--seed", "12"]);
    let objects = ["--objects", "contacts,companies,deals", "--no-history"];
    // The first reconcile of a destination without a baseline says so and reports nothing;
    // its listing becomes the baseline.
    let out = sandbox.export(dest, "2026-11-20", &[&objects[..], &["--reconcile"]].concat());
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("no baseline yet"), "{stdout}");
    let first = dest.join("2026-11-20");
    let m = manifest(&first);
    assert_eq!(m["reconcile"]["baseline"], false);
    assert!(m["warnings"].as_array().unwrap().iter().any(|w| w["kind"] == "no_baseline"));
    assert!(reconciled(&first, None).is_empty());
    let live: usize = TYPES.iter().map(|(t, _)| listed(&sandbox, t, false).len()).sum();
    assert_eq!(m["reconcile"]["ids"], live, "every live id listed");

    // Between two runs, with no webhooks: 100 records deleted for good (20 for privacy), 300
    // associations changed between otherwise unchanged records, and records restored from the
    // recycle bin (ids new to the live set) in the same window as the deletions.
    let deleted = strings(&sandbox.hook("delete", json!({"objectType": "contacts", "count": 60}))["ids"]);
    let deleted: Vec<String> = deleted
        .into_iter()
        .chain(strings(&sandbox.hook("delete", json!({"objectType": "deals", "count": 20}))["ids"]))
        .chain(strings(&sandbox.hook("privacy-delete", json!({"objectType": "contacts", "count": 20}))["ids"]))
        .collect();
    // Before the settle lag, so that the next run's window holds them.
    let at = (chrono::Utc::now() - chrono::Duration::minutes(5)).to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let restored = strings(&sandbox.hook("restore", json!({"objectType": "contacts", "count": 5, "at": at}))["ids"]);
    sandbox.hook("associate", json!({"fromObjectType": "contacts", "toObjectType": "companies", "count": 150}));
    sandbox.hook("dissociate", json!({"fromObjectType": "contacts", "toObjectType": "companies", "count": 150}));
    assert_success(&sandbox.export(dest, "2026-11-21", &objects));
    let second = dest.join("2026-11-21");
    assert_eq!(manifest(&second)["associations"], "of_records", "a nightly run without webhooks");

    let out = sandbox.export(dest, "2026-11-22", &[&objects[..], &["--reconcile"]].concat());
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("per 1,000 records"), "the summary prints the cost: {stdout}");
    let third = dest.join("2026-11-22");
    let m = manifest(&third);
    assert_eq!(m["associations"], "all");
    let found = reconciled(&third, None);
    let expected: BTreeMap<String, (String, Option<String>)> =
        deleted.iter().map(|id| (id.clone(), ("deleted".to_string(), None))).collect();
    assert_eq!(found, expected, "exactly the records deleted for good");
    assert_eq!(m["reconcile"]["deleted"], 100);
    assert!(restored.iter().all(|id| !found.contains_key(id)), "a restored record is no deletion");
    let listing = m["reconcile"]["listing_requests"].as_u64().unwrap();
    let ids = m["reconcile"]["ids"].as_u64().unwrap();
    assert!(listing * 200 >= ids && listing <= ids / 200 + 10, "pages of 200 ids: {listing} for {ids}");

    // The reconcile's folder holds every association of every live record.
    let live: BTreeMap<String, BTreeSet<String>> =
        TYPES.iter().map(|(t, id)| (id.to_string(), listed(&sandbox, t, false))).collect();
    let checked = assert_every_association_of(&sandbox, &folder_links(&third), &live, &TYPES);
    assert!(checked > 1000, "associations checked: {checked}");
    crate::webhooks::replay_gives_the_current_state(&sandbox, &[&first, &second, &third], &TYPES);

    // A re-run of the date compares with the same baseline: the same deletions.
    assert_success(&sandbox.export(dest, "2026-11-22", &[&objects[..], &["--reconcile"]].concat()));
    assert_eq!(reconciled(&third, None), expected);
    // The next reconcile finds nothing new.
    let out = sandbox.export(dest, "2026-11-23", &[&objects[..], &["--reconcile"]].concat());
    assert_success(&out);
    assert!(reconciled(&dest.join("2026-11-23"), None).is_empty(), "each deletion reported once");
    let verify = crate::support::run(crmdump().args(["verify", dest.to_str().unwrap()]));
    assert!(verify.status.success(), "{}", String::from_utf8_lossy(&verify.stdout));
}

#[test]
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
fn the_baseline_survives_a_killed_reconcile() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path();
    let sandbox = SandboxProcess::start(&["--scale", "3000", "--seed", "13"]);
    let objects = ["--objects", "contacts,companies", "--no-history"];
    assert_success(&sandbox.export(dest, "2026-11-20", &objects));
    let state_file = || std::fs::read(crate::incremental::state_file(dest)).unwrap();
    let before = state_file();
    let deleted = strings(&sandbox.hook("delete", json!({"objectType": "contacts", "count": 40}))["ids"]);
    // Killed while it lists (search answers at 5 a second).
    let mut child = crmdump()
        .args(["export", "--source", "hubspot", "--base-url", &sandbox.base_url, "--rate-limit", "none"])
        .args(["--dest", dest.to_str().unwrap(), "--date", "2026-11-21", "--reconcile"])
        .args(objects)
        .env("HUBSPOT_ACCESS_TOKEN", "sandbox-token")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let searches = || sandbox.stats()["by_endpoint"]["POST /crm/v3/objects/{object_type}/search"].as_u64().unwrap_or(0);
    let at_start = searches();
    while searches() < at_start + 5 && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!dest.join("2026-11-21/_manifest.json").exists(), "killed before its commit");
    assert_eq!(state_file(), before, "the state, and the baseline it names, are as they were");

    // The next reconcile is still right.
    assert_success(&sandbox.export(dest, "2026-11-21", &[&objects[..], &["--reconcile"]].concat()));
    let found = reconciled(&dest.join("2026-11-21"), Some("0-1"));
    let expected: BTreeSet<String> = deleted.into_iter().collect();
    assert_eq!(found.keys().cloned().collect::<BTreeSet<_>>(), expected);
    // Files of the killed run that no date names are gone.
    let state: Value = serde_json::from_slice(&state_file()).unwrap();
    let named: BTreeSet<String> = state["baselines"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|refs| refs.as_object().unwrap().values().map(|k| k.as_str().unwrap().to_string()))
        .collect();
    let mut on_disk = BTreeSet::new();
    let mut stack = vec![dest.join("_state/baselines")];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                on_disk.insert(e.path().strip_prefix(dest).unwrap().to_string_lossy().replace('\\', "/"));
            }
        }
    }
    assert_eq!(on_disk, named);
}

#[test]
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
fn a_pipedrive_reconcile_finds_every_deletion_and_holds_every_association() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path();
    let sandbox = SandboxProcess::start(&["--flavor", "pipedrive", "--scale", "300"]);
    let extra = ["--no-history", "--rate-limit", "none"];
    assert_success(&sandbox.export_pipedrive(dest, "2026-11-20", &extra));
    let persons = strings(&sandbox.hook("delete", json!({"objectType": "persons", "count": 30}))["ids"]);
    let deals = strings(&sandbox.hook("delete", json!({"objectType": "deals", "count": 20}))["ids"]);
    let orgs: Vec<String> = sandbox.hook("merge", json!({"objectType": "organizations", "count": 10}))["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["merged"].as_str().unwrap().to_string())
        .collect();
    assert_success(&sandbox.export_pipedrive(dest, "2026-11-21", &[&extra[..], &["--reconcile"]].concat()));
    let day = dest.join("2026-11-21");
    assert_eq!(manifest(&day)["associations"], "all");
    for (object_type, ids) in [("person", &persons), ("deal", &deals), ("organization", &orgs)] {
        let found: BTreeSet<String> = reconciled(&day, Some(object_type)).into_keys().collect();
        assert_eq!(found, ids.iter().cloned().collect::<BTreeSet<_>>(), "{object_type}");
    }
    // Every association of the account, once.
    let truth = pipedrive_links(&sandbox);
    let export = read_export(&day, &["ASSOCIATIONS"]);
    assert_eq!(rows(&export, "ASSOCIATIONS").1.len(), folder_links(&day).len(), "no association twice");
    let links = folder_links(&day);
    let (extra, missing): (Vec<_>, Vec<_>) = (links.difference(&truth).collect(), truth.difference(&links).collect());
    assert!(extra.is_empty() && missing.is_empty(), "not in the account {extra:?}; not in the folder {missing:?}");
    assert_eq!(manifest(&day)["reconcile"]["deleted"], 60, "30 persons, 20 deals, 10 organizations merged away");
}
