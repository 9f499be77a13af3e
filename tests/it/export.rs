//! A whole sandbox export, read back and compared with the generator's ground truth.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use crmdump::sandbox::Generator;
use serde_json::Value;

use crate::support::*;

const SEED: u64 = 7;
const SCALE: u64 = 240;

type Row = Vec<Option<String>>;

/// Independent expectation of a typed column's text for a value as the API sent it.
fn expected_typed(raw: Option<&str>, property_type: &str) -> Option<String> {
    let raw = raw?;
    let instant = |t: &str| -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(t)
            .map(|d| d.with_timezone(&Utc))
            .ok()
            .or_else(|| t.parse::<i64>().ok().and_then(DateTime::from_timestamp_millis))
    };
    match property_type {
        "number" => raw.parse::<f64>().ok().filter(|f| f.is_finite()).map(|_| raw.to_string()),
        "datetime" => instant(raw).map(|d| d.to_rfc3339_opts(SecondsFormat::Millis, true)),
        "date" => NaiveDate::parse_from_str(raw, "%Y-%m-%d")
            .ok()
            .or_else(|| instant(raw).map(|d| d.date_naive()))
            .map(|d| d.format("%Y-%m-%d").to_string()),
        "bool" => match raw {
            "true" | "false" => Some(raw.to_string()),
            _ => None,
        },
        _ => Some(raw.to_string()),
    }
}

fn upper(label: &str) -> String {
    label.to_uppercase().replace(' ', "_")
}

fn table_name(g: &Generator, t: usize) -> String {
    format!("OBJECTS_{}", upper(&g.types[t].plural_label))
}

fn singular(g: &Generator, t: usize) -> String {
    upper(&g.types[t].singular_label)
}

#[test]
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
fn sandbox_export_matches_the_ground_truth() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(crmdump().args([
        "export",
        "--source",
        "sandbox",
        "--dest",
        dir.path().to_str().unwrap(),
        "--date",
        DATE,
        "--sandbox-seed",
        &SEED.to_string(),
        "--sandbox-scale",
        &SCALE.to_string(),
        "--sandbox-anchor",
        ANCHOR,
    ]));
    assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("Committed") && stdout.contains("requests"), "no summary: {stdout}");

    let export = read_export(&dir.path().join(DATE), &[]);
    let g = generator(SEED, SCALE);
    let names = check_manifest(&g, &export);
    check_objects(&g, &export);
    check_long_tables(&g, &export);
    check_associations(&g, &export, &names);
    check_reference(&g, &export);
    check_history(&g, &export);
    check_lists(&g, &export);
    check_events(&g, &export);
}

/// Every table is present; the manifest tells the truth about every file and lists every
/// file there is. Returns the table names.
fn check_manifest(g: &Generator, export: &Value) -> BTreeSet<String> {
    let manifest = &export["manifest"];
    let names: BTreeSet<String> =
        manifest["tables"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap().to_string()).collect();
    let mut required: Vec<String> = [
        "OBJECTS",
        "OBJECT_WITH_OBJECT_PROPERTIES",
        "OBJECT_PROPERTIES",
        "OBJECT_PROPERTIES_HISTORY",
        "ASSOCIATIONS",
        "ASSOCIATION_DEFINITIONS",
        "PROPERTY_DEFINITIONS",
        "OWNERS",
        "OWNER_TEAM",
        "TEAMS",
        "PIPELINES",
        "PIPELINE_STAGES",
        "LISTS",
        "LIST_MEMBERSHIPS",
        "OBJECT_AND_EVENT_TYPE_DEFINITIONS",
        "EVENTS_E_VISITED_PAGE",
        "ASSOCIATIONS_COMPANIES_TO_COMPANIES",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    required.extend((0..g.types.len()).map(|t| table_name(g, t)));
    for r in &required {
        assert!(names.contains(r), "missing table {r}; have {names:?}");
    }
    let mut listed = BTreeSet::new();
    for t in manifest["tables"].as_array().unwrap() {
        let mut rows = 0;
        let columns: Vec<&str> = t["columns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        for f in t["files"].as_array().unwrap() {
            let path = f["path"].as_str().unwrap();
            let part = &export["parts"][path];
            assert_eq!(part["bytes"], f["bytes"], "{path} bytes");
            assert_eq!(part["sha256"], f["sha256"], "{path} sha256");
            assert_eq!(part["rows"], f["rows"], "{path} rows");
            let header: Vec<&str> = part["header"].as_array().unwrap().iter().map(|h| h.as_str().unwrap()).collect();
            assert_eq!(header, columns, "{path} header");
            rows += f["rows"].as_u64().unwrap();
            listed.insert(path.to_string());
        }
        assert_eq!(t["rows"].as_u64().unwrap(), rows);
    }
    let on_disk: BTreeSet<String> =
        export["files_on_disk"].as_array().unwrap().iter().map(|f| f.as_str().unwrap().to_string()).collect();
    listed.insert("_manifest.json".into());
    assert_eq!(on_disk, listed, "files on disk differ from the manifest");
    let warnings = manifest["warnings"].as_array().unwrap();
    assert!(warnings.iter().any(|w| w["kind"] == "unparseable_value" && w["table"] == "OBJECTS_CONTACTS"));
    names
}

/// `OBJECTS_<PLURAL>` of every type: every record once (archived ones flagged), every value
/// typed as its property says.
fn check_objects(g: &Generator, export: &Value) {
    let mut archived_seen = 0;
    for t in 0..g.types.len() {
        let ty = &g.types[t];
        let table = table_name(g, t);
        let (columns, rows) = rows(export, &table);
        assert_eq!(rows.len() as u64, g.count(t), "{table} row count (archived records included)");
        let id_col = col(&columns, "OBJECTID");
        let by_id: HashMap<&str, &Row> = rows.iter().map(|r| (r[id_col].as_deref().unwrap(), r)).collect();
        assert_eq!(by_id.len(), rows.len(), "{table} has duplicate ids");
        for i in 0..g.count(t) {
            let record = g.record(t, i);
            let row =
                by_id.get(record.id.to_string().as_str()).unwrap_or_else(|| panic!("{table} lacks {}", record.id));
            assert_eq!(row[col(&columns, "OBJECTTYPEID")].as_deref(), Some(ty.type_id.as_str()));
            assert_eq!(row[col(&columns, "UPDATEDAT")].as_deref(), Some(record.updated_at.as_str()));
            assert_eq!(row[col(&columns, "ARCHIVED")].as_deref(), Some(record.archived.to_string().as_str()));
            assert_eq!(row[col(&columns, "ARCHIVEDAT")], record.archived_at, "{table} {} archivedAt", record.id);
            archived_seen += record.archived as usize;
            for (p, def) in g.defined_properties(t) {
                let raw = g.property_value(t, i, p);
                let column = format!("PROPERTY_{}", def.name.to_uppercase());
                assert_eq!(
                    row[col(&columns, &column)].as_deref(),
                    expected_typed(raw.as_deref(), def.ty).as_deref(),
                    "{table} record {} {column} (sent {raw:?})",
                    record.id
                );
            }
        }
    }
    assert!(archived_seen > 0, "the sample should have archived records");
    let products = g.type_index("products").unwrap();
    let (columns, _) = rows(export, "OBJECTS_PRODUCTS");
    assert_eq!(g.types[products].properties.len(), 1200);
    assert_eq!(columns.iter().filter(|c| c.starts_with("PROPERTY_")).count(), 1200);
}

/// `OBJECT_PROPERTIES` (one row per non-null value, verbatim) and
/// `OBJECT_WITH_OBJECT_PROPERTIES` (JSON of the non-null values).
fn check_long_tables(g: &Generator, export: &Value) {
    let (columns, long) = rows(export, "OBJECT_PROPERTIES");
    let total: usize = (0..g.types.len())
        .map(|t| {
            (0..g.count(t))
                .map(|i| g.defined_properties(t).filter(|&(p, _)| g.property_value(t, i, p).is_some()).count())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(long.len(), total);
    let (c_type, c_id, c_name, c_value) =
        (col(&columns, "OBJECTTYPEID"), col(&columns, "OBJECTID"), col(&columns, "NAME"), col(&columns, "VALUE"));
    let by_key: HashMap<(&str, &str, &str), &Option<String>> = long
        .iter()
        .map(|r| {
            ((r[c_type].as_deref().unwrap(), r[c_id].as_deref().unwrap(), r[c_name].as_deref().unwrap()), &r[c_value])
        })
        .collect();
    let mut saw_na = false;
    for t in 0..g.types.len() {
        for i in (0..g.count(t)).step_by(7) {
            let id = g.record(t, i).id.to_string();
            for (p, def) in g.defined_properties(t) {
                let key = (g.types[t].type_id.as_str(), id.as_str(), def.name.as_str());
                let raw = g.property_value(t, i, p);
                saw_na |= raw.as_deref() == Some("N/A");
                match raw {
                    None => assert!(!by_key.contains_key(&key), "null value exported: {key:?}"),
                    Some(v) => assert_eq!(by_key.get(&key), Some(&&Some(v)), "{key:?}"),
                }
            }
        }
    }
    assert!(saw_na, "the sample should include an N/A number");

    let (columns, with_props) = rows(export, "OBJECT_WITH_OBJECT_PROPERTIES");
    assert_eq!(with_props.len() as u64, (0..g.types.len()).map(|t| g.count(t)).sum::<u64>());
    let contacts = g.type_index("contacts").unwrap();
    let id = g.record(contacts, 3).id.to_string();
    let row = with_props.iter().find(|r| r[col(&columns, "OBJECTID")].as_deref() == Some(id.as_str())).unwrap();
    let json: BTreeMap<String, String> =
        serde_json::from_str(row[col(&columns, "PROPERTIES")].as_deref().unwrap()).unwrap();
    let expected: BTreeMap<String, String> = g.types[contacts]
        .properties
        .iter()
        .enumerate()
        .filter_map(|(p, def)| g.property_value(contacts, 3, p).map(|v| (def.name.clone(), v)))
        .collect();
    assert_eq!(json, expected);
}

/// Every associated pair, both directions, with type ids, labels and the primary flag;
/// archived records have none.
fn check_associations(g: &Generator, export: &Value, names: &BTreeSet<String>) {
    let mut combined = 0;
    for from in 0..g.types.len() {
        for to in 0..g.types.len() {
            let table =
                format!("ASSOCIATIONS_{}_TO_{}", upper(&g.types[from].plural_label), upper(&g.types[to].plural_label));
            if g.association_labels(from, to).is_empty() {
                assert!(!names.contains(&table), "{table} should not exist");
                continue;
            }
            let (columns, got) = rows(export, &table);
            let (fs, ts) = (singular(g, from), singular(g, to));
            let (fc, tc) = if from == to {
                (format!("FROM_{fs}_OBJECTID"), format!("TO_{ts}_OBJECTID"))
            } else {
                (format!("{fs}_OBJECTID"), format!("{ts}_OBJECTID"))
            };
            let got: BTreeSet<(String, String, String, Option<String>, String)> = got
                .iter()
                .map(|r| {
                    (
                        r[col(&columns, &fc)].clone().unwrap(),
                        r[col(&columns, &tc)].clone().unwrap(),
                        r[col(&columns, "ASSOCIATIONTYPEID")].clone().unwrap(),
                        r[col(&columns, "ASSOCIATIONLABEL")].clone(),
                        r[col(&columns, "ISMAINASSOCIATIONDEFINITION")].clone().unwrap(),
                    )
                })
                .collect();
            let mut want = BTreeSet::new();
            for i in 0..g.count(from) {
                for (j, kinds) in g.associations(from, i, to) {
                    for k in kinds {
                        let main = k.label == Some("Primary") && k.category == "HUBSPOT_DEFINED";
                        want.insert((
                            g.record(from, i).id.to_string(),
                            g.types[to].id_of(j).to_string(),
                            k.type_id.to_string(),
                            k.label.map(str::to_string),
                            main.to_string(),
                        ));
                    }
                }
            }
            assert_eq!(got, want, "{table}");
            combined += want.len();
        }
    }
    let (_, all) = rows(export, "ASSOCIATIONS");
    assert_eq!(all.len(), combined);
    let (contacts, companies) = (g.type_index("contacts").unwrap(), g.type_index("companies").unwrap());
    assert!(g.associations(companies, SCALE - 1, contacts).len() > 20, "the hub needs more than one page per input");
}

fn check_reference(g: &Generator, export: &Value) {
    let (columns, owners) = rows(export, "OWNERS");
    assert_eq!(owners.len(), g.owners.len(), "archived owners are included");
    let archived = owners.iter().filter(|r| r[col(&columns, "ARCHIVED")].as_deref() == Some("true")).count();
    assert_eq!(archived, g.owners.iter().filter(|o| o.archived).count());
    let (_, owner_teams) = rows(export, "OWNER_TEAM");
    assert_eq!(owner_teams.len(), g.owners.iter().map(|o| o.teams.len()).sum::<usize>());
    let (columns, defs) = rows(export, "PROPERTY_DEFINITIONS");
    assert_eq!(defs.len(), (0..g.types.len()).map(|t| g.defined_properties(t).count()).sum::<usize>());
    assert!(defs.iter().all(|r| { r[col(&columns, "COLUMNNAME")].as_deref().unwrap().starts_with("PROPERTY_") }));
    let (columns, stages) = rows(export, "PIPELINE_STAGES");
    let (deals, tickets) = (g.type_index("deals").unwrap(), g.type_index("tickets").unwrap());
    let stage_count: usize = [deals, tickets].iter().flat_map(|t| g.pipelines(*t)).map(|p| p.stages.len()).sum();
    assert_eq!(stages.len(), stage_count);
    let won = stages.iter().find(|r| r[col(&columns, "STAGEID")].as_deref() == Some("closedwon")).unwrap();
    assert_eq!(won[col(&columns, "PROBABILITY")].as_deref(), Some("1.0"));
    assert_eq!(won[col(&columns, "CREATEDAT")].as_deref(), Some("1970-01-01T00:00:00.000Z"));
    let (columns, types) = rows(export, "OBJECT_AND_EVENT_TYPE_DEFINITIONS");
    let cars = types.iter().find(|r| r[col(&columns, "ID")].as_deref() == Some("2-3508482")).unwrap();
    assert_eq!(cars[col(&columns, "PLURALLABEL")].as_deref(), Some("Cars"));
    let objects = types.iter().filter(|r| r[col(&columns, "KIND")].as_deref() == Some("OBJECT")).count();
    assert_eq!(objects, g.types.len());
    let (columns, teams) = rows(export, "TEAMS");
    assert_eq!(teams.len(), g.teams().len());
    for (id, name, users, secondary) in g.teams() {
        let row = teams.iter().find(|r| r[col(&columns, "TEAMID")].as_deref() == Some(id.as_str())).unwrap();
        assert_eq!(row[col(&columns, "NAME")].as_deref(), Some(name.as_str()));
        let parsed: Vec<String> = serde_json::from_str(row[col(&columns, "USERIDS")].as_deref().unwrap()).unwrap();
        assert_eq!(parsed, users);
        let parsed: Vec<String> =
            serde_json::from_str(row[col(&columns, "SECONDARYUSERIDS")].as_deref().unwrap()).unwrap();
        assert_eq!(parsed, secondary);
    }
}

/// Every kept history entry equals the generator's: the newest 45 (contacts) or 20 (others)
/// per (record, property), and nothing newer dropped.
fn check_history(g: &Generator, export: &Value) {
    let (columns, rows) = rows(export, "OBJECT_PROPERTIES_HISTORY");
    let (c_type, c_id, c_name, c_at) =
        (col(&columns, "OBJECTTYPEID"), col(&columns, "OBJECTID"), col(&columns, "NAME"), col(&columns, "UPDATEDAT"));
    let mut got: HashMap<(String, String, String), Vec<&Row>> = HashMap::new();
    for r in &rows {
        got.entry((r[c_type].clone().unwrap(), r[c_id].clone().unwrap(), r[c_name].clone().unwrap()))
            .or_default()
            .push(r);
    }
    let mut expected_rows = 0;
    let mut truncated = 0;
    for t in 0..g.types.len() {
        let keep = if g.types[t].type_id == "0-1" { 45 } else { 20 };
        for i in 0..g.count(t) {
            let id = g.record(t, i).id.to_string();
            for (p, def) in g.defined_properties(t) {
                let all = g.history(t, i, p);
                truncated += (all.len() > keep) as usize;
                let want: Vec<_> = all.into_iter().take(keep).collect();
                expected_rows += want.len();
                // Every long history, and a sample of the one-entry ones.
                if want.is_empty() || (want.len() < 2 && i % 5 != 0) {
                    continue;
                }
                let key = (g.types[t].type_id.clone(), id.clone(), def.name.clone());
                let mut have = got.remove(&key).unwrap_or_default();
                have.sort_by(|a, b| b[c_at].cmp(&a[c_at]));
                assert_eq!(have.len(), want.len(), "history of {key:?}");
                for (h, w) in have.iter().zip(&want) {
                    assert_eq!(h[col(&columns, "VALUE")].as_deref(), Some(w.value.as_str()), "{key:?}");
                    assert_eq!(h[c_at].as_deref(), Some(w.timestamp.as_str()));
                    assert_eq!(h[col(&columns, "SOURCETYPE")].as_deref(), Some(w.source_type));
                    assert_eq!(h[col(&columns, "SOURCEID")], w.source_id);
                    assert_eq!(h[col(&columns, "UPDATEDBYUSERID")], w.updated_by_user_id.map(|u| u.to_string()));
                }
            }
        }
    }
    assert_eq!(rows.len(), expected_rows, "history row count");
    assert!(truncated > 0, "some histories should be longer than what is kept");
}

fn check_lists(g: &Generator, export: &Value) {
    let (columns, lists) = rows(export, "LISTS");
    assert_eq!(lists.len(), g.lists().len());
    let (mcols, members) = rows(export, "LIST_MEMBERSHIPS");
    let mut expected = 0;
    for (k, l) in g.lists().iter().enumerate() {
        let row = lists.iter().find(|r| r[col(&columns, "LISTID")].as_deref() == Some(l.list_id.as_str())).unwrap();
        let want = g.list_members(k);
        assert_eq!(row[col(&columns, "NAME")].as_deref(), Some(l.name.as_str()));
        assert_eq!(row[col(&columns, "SIZE")].as_deref(), Some(want.len().to_string().as_str()));
        assert_eq!(row[col(&columns, "PROCESSINGTYPE")].as_deref(), Some(l.processing_type));
        let got: Vec<(String, String)> = members
            .iter()
            .filter(|r| r[col(&mcols, "LISTID")].as_deref() == Some(l.list_id.as_str()))
            .map(|r| (r[col(&mcols, "OBJECTID")].clone().unwrap(), r[col(&mcols, "ADDEDAT")].clone().unwrap()))
            .collect();
        let want: Vec<(String, String)> =
            want.into_iter().map(|(i, at)| (g.types[l.object_type].id_of(i).to_string(), at)).collect();
        assert_eq!(got, want, "members of list {}", l.list_id);
        expected += want.len();
    }
    assert_eq!(members.len(), expected);
}

fn check_events(g: &Generator, export: &Value) {
    for (e, def) in g.event_types().iter().enumerate() {
        let table = format!("EVENTS_{}", def.name.to_uppercase().replace(|c: char| !c.is_ascii_alphanumeric(), "_"));
        let (columns, got) = rows(export, &table);
        assert_eq!(got.len() as u64, def.count, "{table}");
        for (j, row) in got.iter().enumerate() {
            let ev = g.event(e, j as u64);
            assert_eq!(row[col(&columns, "ID")].as_deref(), Some(ev.id.as_str()));
            assert_eq!(row[col(&columns, "EVENTTYPEID")].as_deref(), Some(def.name.as_str()));
            assert_eq!(row[col(&columns, "OBJECTTYPEID")].as_deref(), Some(g.types[def.object_type].type_id.as_str()));
            assert_eq!(
                row[col(&columns, "OBJECTID")],
                Some(g.types[def.object_type].id_of(ev.object_index).to_string())
            );
            assert_eq!(row[col(&columns, "OCCURREDAT")].as_deref(), Some(ev.occurred_at.as_str()));
            for (name, value) in &ev.properties {
                let ty = def.properties.iter().find(|(n, _, _)| n == name).unwrap().2;
                // Custom events have definitions, so typed columns; standard ones are text.
                let expected = if def.custom { expected_typed(value.as_deref(), ty) } else { value.clone() };
                assert_eq!(
                    row[col(&columns, &format!("PROPERTY_{}", name.to_uppercase()))],
                    expected,
                    "{table} {name}"
                );
            }
        }
    }
    let (columns, types) = rows(export, "OBJECT_AND_EVENT_TYPE_DEFINITIONS");
    let events = types.iter().filter(|r| r[col(&columns, "KIND")].as_deref() == Some("EVENT")).count();
    assert_eq!(events, g.event_types().len());
}
