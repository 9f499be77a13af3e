//! What a run costs in requests: a small account's full export and a quiet nightly run ask
//! the API about what the account holds, not about every pair of its 33 object types, and
//! still write every association and association type.

use std::collections::BTreeSet;
use std::path::Path;

use serde_json::{Value, json};

use crate::support::*;

const SEED: u64 = 1;
/// Five records of each core type, one of each other type: 33 types, all holding records.
const SCALE: u64 = 5;
/// Requests of the reference tables and their discovery (account, schemas, owners, teams,
/// pipelines, lists and their memberships, event types and their events), whatever the
/// number of object types.
const REFERENCE: u64 = 25;

/// The sandbox's counts so far: labels requests, association batch reads, all requests.
fn counts(sandbox: &SandboxProcess) -> [u64; 3] {
    let stats = sandbox.stats();
    let by = |path: &str| stats["by_endpoint"][path].as_u64().unwrap_or(0);
    [
        by("GET /crm/v4/associations/{from}/{to}/labels"),
        by("POST /crm/v4/associations/{from}/{to}/batch/read"),
        stats["requests"].as_u64().unwrap(),
    ]
}

fn since(before: [u64; 3], after: [u64; 3]) -> [u64; 3] {
    [after[0] - before[0], after[1] - before[1], after[2] - before[2]]
}

type Link = (String, String, String, String, String);
/// `(from type id, to type id, association type id, label)`.
type Definition = (String, String, String, Option<String>);

/// `(from type id, from id, to type id, to id, association type id)` of a folder's
/// `ASSOCIATIONS`, and its `ASSOCIATION_DEFINITIONS` as `(from, to, type id, label)`.
fn folder_associations(day: &Path) -> (BTreeSet<Link>, BTreeSet<Definition>) {
    let export = read_export(day, &["ASSOCIATIONS", "ASSOCIATION_DEFINITIONS"]);
    let (c, all) = rows(&export, "ASSOCIATIONS");
    let cell = |r: &Vec<Option<String>>, name: &str| r[col(&c, name)].clone().unwrap();
    let links = all
        .iter()
        .map(|r| {
            let id = |n: &str| cell(r, n);
            (
                id("FROMOBJECTTYPEID"),
                id("FROMOBJECTID"),
                id("TOOBJECTTYPEID"),
                id("TOOBJECTID"),
                id("ASSOCIATIONTYPEID"),
            )
        })
        .collect();
    let (d, defs) = rows(&export, "ASSOCIATION_DEFINITIONS");
    let defs = defs
        .iter()
        .map(|r| {
            let v = |n: &str| r[col(&d, n)].clone();
            (v("FROMOBJECTTYPEID").unwrap(), v("TOOBJECTTYPEID").unwrap(), v("ASSOCIATIONTYPEID").unwrap(), v("LABEL"))
        })
        .collect();
    (links, defs)
}

#[test]
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
fn a_small_account_costs_what_it_holds_and_a_quiet_night_a_few_requests_per_type() {
    let sandbox = SandboxProcess::start(&["--scale", &SCALE.to_string(), "--seed", &SEED.to_string()]);
    let g = generator(SEED, SCALE);
    let dest = tempfile::tempdir().unwrap();

    // The ground truth: every association of every live record, and the pairs that have any.
    let mut links: BTreeSet<Link> = BTreeSet::new();
    let mut in_use: BTreeSet<(usize, usize)> = BTreeSet::new();
    for t in 0..g.types.len() {
        for i in (0..g.count(t)).filter(|i| g.is_live(t, *i)) {
            for u in 0..g.types.len() {
                for (j, kinds) in g.associations(t, i, u) {
                    in_use.insert((t, u));
                    for k in kinds {
                        let (from, to) = (g.types[t].type_id.clone(), g.types[u].type_id.clone());
                        let (id, other) = (g.types[t].id_of(i).to_string(), g.types[u].id_of(j).to_string());
                        links.insert((from, id, to, other, k.type_id.to_string()));
                    }
                }
            }
        }
    }
    let definitions: BTreeSet<Definition> = in_use
        .iter()
        .flat_map(|&(t, u)| {
            let (from, to) = (g.types[t].type_id.clone(), g.types[u].type_id.clone());
            g.association_labels(t, u)
                .into_iter()
                .map(move |l| (from.clone(), to.clone(), l.type_id.to_string(), l.label.map(str::to_string)))
        })
        .collect();
    let (types, pairs) = (g.types.len() as u64, in_use.len() as u64);
    assert_eq!(types, 33);
    assert!(pairs >= 10, "the account needs associated pairs: {pairs}");

    // A full export: labels are asked of the pairs found associated only, once each.
    let before = counts(&sandbox);
    assert_success(&sandbox.export(dest.path(), "2026-11-20", &["--no-history"]));
    let [labels, reads, total] = since(before, counts(&sandbox));
    assert_eq!(
        labels,
        pairs,
        "one labels request per associated pair; none for the other {} pairs",
        types * types - pairs
    );
    assert_eq!(reads, pairs, "one association read per associated pair (each type holds under 1,000 records)");
    // Per type: its properties, its live and its archived list.
    let budget = 3 * types + 2 * pairs + REFERENCE;
    assert!(
        total <= budget,
        "the full export made {total} requests, over 3 per type + 2 per pair + {REFERENCE}: {budget}"
    );
    let (got, defs) = folder_associations(&dest.path().join("2026-11-20"));
    assert_eq!(got, links, "every association of every live record");
    assert_eq!(defs, definitions, "every association type of every associated pair, the unused ones too");
    println!(
        "full export: {total} requests ({labels} labels, {reads} association reads) for {types} types, {pairs} pairs"
    );

    // A quiet night: no labels request, no association read, a few requests per type.
    let before = counts(&sandbox);
    assert_success(&sandbox.export(dest.path(), "2026-11-21", &["--no-history"]));
    let [labels, reads, total] = since(before, counts(&sandbox));
    assert_eq!((labels, reads), (0, 0), "nothing changed: nothing to ask about associations");
    let budget = 3 * types + REFERENCE;
    assert!(total <= budget, "the quiet night made {total} requests, over 3 per type + {REFERENCE}: {budget}");
    let (got, quiet_defs) = folder_associations(&dest.path().join("2026-11-21"));
    assert!(got.is_empty());
    assert_eq!(quiet_defs, definitions, "the definitions come whole from the state's record");
    println!("quiet night: {total} requests");

    // Changed contacts, one of whose pairs the state knows with a type too few: the pairs
    // from contacts no run asked about are asked now, once each, and the short one again.
    let path = crate::incremental::state_file(dest.path());
    let mut state: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let whole = state["association_types"]["0-1/0-2"].clone();
    assert!(whole.as_array().unwrap().len() >= 2, "contacts to companies has several types: {whole}");
    state["association_types"]["0-1/0-2"] = json!([whole[0]]);
    std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
    let contacts = g.type_index("contacts").unwrap();
    let known_from_contacts = in_use.iter().filter(|(t, _)| *t == contacts).count() as u64;
    let touch = || {
        let at = crmdump::sandbox::iso(chrono::Utc::now() - chrono::Duration::minutes(2));
        let touched = sandbox.hook("touch", json!({"objectType": "contacts", "count": SCALE, "at": at}));
        let ids: BTreeSet<String> =
            touched["ids"].as_array().unwrap().iter().map(|i| i.as_str().unwrap().to_string()).collect();
        assert_eq!(ids.len() as u64, SCALE, "{touched}");
        ids
    };
    let touched = touch();
    let before = counts(&sandbox);
    assert_success(&sandbox.export(dest.path(), "2026-11-22", &["--no-history"]));
    let [labels, _, _] = since(before, counts(&sandbox));
    assert_eq!(
        labels,
        types - known_from_contacts + 1,
        "the {known_from_contacts} known pairs are not asked, but the short one"
    );
    let state: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(state["association_types"]["0-1/0-2"], whole);
    let (got, defs) = folder_associations(&dest.path().join("2026-11-22"));
    assert_eq!(defs, definitions);
    // Every association of the changed contacts, in every pair.
    let want: BTreeSet<Link> = links.iter().filter(|l| l.0 == "0-1" && touched.contains(&l.1)).cloned().collect();
    let from_contacts: BTreeSet<Link> = got.into_iter().filter(|l| l.0 == "0-1").collect();
    assert_eq!(from_contacts, want);

    // The next changes ask nothing: every pair from contacts is known now.
    touch();
    let before = counts(&sandbox);
    assert_success(&sandbox.export(dest.path(), "2026-11-23", &["--no-history"]));
    let [labels, reads, _] = since(before, counts(&sandbox));
    assert_eq!(labels, 0);
    assert_eq!(reads, known_from_contacts, "one read per associated pair from contacts");
}

/// A full export with history reads each type's records in one request per 50 (HubSpot's
/// page with history): the list asks every property's history and takes the values from it
/// when the names fit the URL once (contacts: 250 properties), or asks both when they fit
/// twice (companies); a type whose names do not fit at all (products: 1,200 properties) lists
/// ids by the 100 and reads 50 at a time. Counted by the sandbox.
#[test]
fn a_full_export_with_history_costs_one_request_per_fifty_records() {
    for (object_type, table, most_per_1000) in [
        ("contacts", "OBJECTS_CONTACTS", 20.0),
        ("companies", "OBJECTS_COMPANIES", 20.0),
        ("products", "OBJECTS_PRODUCTS", 30.0),
    ] {
        let sandbox = SandboxProcess::start(&["--seed", "3", "--scale", "2000"]);
        let dir = tempfile::tempdir().unwrap();
        let out = sandbox.export(dir.path(), DATE, &["--objects", object_type]);
        assert_success(&out);
        let manifest: Value =
            serde_json::from_slice(&std::fs::read(dir.path().join(DATE).join("_manifest.json")).unwrap()).unwrap();
        let rows = |name: &str| {
            manifest["tables"].as_array().unwrap().iter().find(|t| t["name"] == name).unwrap()["rows"].as_u64().unwrap()
        };
        let records = rows(table);
        assert!(rows("OBJECT_PROPERTIES_HISTORY") > records, "history was read");
        let stats = sandbox.stats();
        let by = |path: &str| stats["by_endpoint"][path].as_u64().unwrap_or(0);
        let reads = by("GET /crm/v3/objects/{object_type}") + by("POST /crm/v3/objects/{object_type}/batch/read");
        let per_1000 = reads as f64 * 1000.0 / records as f64;
        // Live and archived records are listed apart: each pass may end on a partial page.
        let partial_pages = 2.0 * 1000.0 / records as f64;
        assert!(per_1000 <= most_per_1000 + partial_pages, "{object_type}: {reads} requests for {records} records");
        assert!(per_1000 >= most_per_1000 - partial_pages, "{object_type}: {reads} requests for {records} records");
    }
}
