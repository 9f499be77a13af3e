//! A whole sandbox export, read back and compared with the generator's ground truth.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, NaiveDate, SecondsFormat, Utc};
use crmdump::sandbox::Generator;
use serde_json::Value;

use crate::support::*;

const SEED: u64 = 7;
const SCALE: u64 = 240;

/// Independent expectation of a typed column's text for a value as the API sent it.
fn expected_typed(raw: Option<&str>, property_type: &str) -> Option<String> {
    let raw = raw?;
    let instant = |t: &str| -> Option<DateTime<Utc>> {
        DateTime::parse_from_rfc3339(t)
            .map(|d| d.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                t.parse::<i64>()
                    .ok()
                    .and_then(DateTime::from_timestamp_millis)
            })
    };
    match property_type {
        "number" => raw
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(|_| raw.to_string()),
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

fn col(columns: &[String], name: &str) -> usize {
    columns
        .iter()
        .position(|c| c == name)
        .unwrap_or_else(|| panic!("no column {name} in {columns:?}"))
}

fn table_name(g: &Generator, t: usize) -> String {
    format!("OBJECTS_{}", g.types[t].plural_label.to_uppercase())
}

fn singular(g: &Generator, t: usize) -> String {
    g.types[t].singular_label.to_uppercase()
}

#[test]
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
    assert!(
        stdout.contains("Committed") && stdout.contains("requests"),
        "no summary: {stdout}"
    );

    let day = dir.path().join(DATE);
    let export = read_export(&day, &[]);
    let g = generator(SEED, SCALE);
    let manifest = &export["manifest"];

    // Every table of SPEC section 4 that this issue covers is present.
    let names: BTreeSet<String> = manifest["tables"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    for required in [
        "OBJECTS",
        "OBJECT_WITH_OBJECT_PROPERTIES",
        "OBJECT_PROPERTIES",
        "ASSOCIATIONS",
        "ASSOCIATION_DEFINITIONS",
        "PROPERTY_DEFINITIONS",
        "OWNERS",
        "OWNER_TEAM",
        "PIPELINES",
        "PIPELINE_STAGES",
        "OBJECT_AND_EVENT_TYPE_DEFINITIONS",
        "OBJECTS_CONTACTS",
        "OBJECTS_COMPANIES",
        "OBJECTS_DEALS",
        "OBJECTS_TICKETS",
        "OBJECTS_CARS",
        "ASSOCIATIONS_CONTACTS_TO_COMPANIES",
        "ASSOCIATIONS_COMPANIES_TO_CONTACTS",
        "ASSOCIATIONS_COMPANIES_TO_COMPANIES",
    ] {
        assert!(
            names.contains(required),
            "missing table {required}; have {names:?}"
        );
    }

    // The manifest tells the truth about every file, and lists every file there is.
    let mut listed = BTreeSet::new();
    for t in manifest["tables"].as_array().unwrap() {
        let mut rows = 0;
        for f in t["files"].as_array().unwrap() {
            let path = f["path"].as_str().unwrap();
            let part = &export["parts"][path];
            assert_eq!(part["bytes"], f["bytes"], "{path} bytes");
            assert_eq!(part["sha256"], f["sha256"], "{path} sha256");
            assert_eq!(part["rows"], f["rows"], "{path} rows");
            let header: Vec<&str> = part["header"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h.as_str().unwrap())
                .collect();
            let columns: Vec<&str> = t["columns"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap())
                .collect();
            assert_eq!(header, columns, "{path} header");
            rows += f["rows"].as_u64().unwrap();
            listed.insert(path.to_string());
        }
        assert_eq!(t["rows"].as_u64().unwrap(), rows);
    }
    let on_disk: BTreeSet<String> = export["files_on_disk"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap().to_string())
        .collect();
    listed.insert("_manifest.json".into());
    assert_eq!(on_disk, listed, "files on disk differ from the manifest");

    let mut total_non_null = 0usize;
    for t in 0..g.types.len() {
        let ty = &g.types[t];
        let table = table_name(&g, t);
        let (columns, rows) = rows(&export, &table);
        assert_eq!(rows.len() as u64, SCALE, "{table} row count");
        let id_col = col(&columns, "OBJECTID");
        for (i, row) in rows.iter().enumerate() {
            let record = g.record(t, i as u64);
            assert_eq!(
                row[id_col].as_deref(),
                Some(record.id.to_string().as_str()),
                "{table} ids in order"
            );
            assert_eq!(
                row[col(&columns, "OBJECTTYPEID")].as_deref(),
                Some(ty.type_id.as_str())
            );
            assert_eq!(
                row[col(&columns, "UPDATEDAT")].as_deref(),
                Some(record.updated_at.as_str())
            );
            assert_eq!(row[col(&columns, "ARCHIVED")].as_deref(), Some("false"));
            for (p, def) in ty.properties.iter().enumerate() {
                let raw = g.property_value(t, i as u64, p);
                total_non_null += raw.is_some() as usize;
                let column = format!("PROPERTY_{}", def.name.to_uppercase());
                let got = &row[col(&columns, &column)];
                assert_eq!(
                    got.as_deref(),
                    expected_typed(raw.as_deref(), def.ty).as_deref(),
                    "{table} record {} {column} (sent {raw:?})",
                    record.id
                );
            }
        }
    }

    // OBJECT_PROPERTIES: one row per non-null value, verbatim (N/A and epoch millis included).
    let (columns, long) = rows(&export, "OBJECT_PROPERTIES");
    assert_eq!(long.len(), total_non_null);
    let (c_type, c_id, c_name, c_value) = (
        col(&columns, "OBJECTTYPEID"),
        col(&columns, "OBJECTID"),
        col(&columns, "NAME"),
        col(&columns, "VALUE"),
    );
    let mut by_key: HashMap<(String, String, String), Option<String>> = HashMap::new();
    for r in &long {
        by_key.insert(
            (
                r[c_type].clone().unwrap(),
                r[c_id].clone().unwrap(),
                r[c_name].clone().unwrap(),
            ),
            r[c_value].clone(),
        );
    }
    let mut saw_na = false;
    for t in 0..g.types.len() {
        for i in (0..SCALE).step_by(7) {
            for (p, def) in g.types[t].properties.iter().enumerate() {
                let key = (
                    g.types[t].type_id.clone(),
                    g.record(t, i).id.to_string(),
                    def.name.clone(),
                );
                let raw = g.property_value(t, i, p);
                saw_na |= raw.as_deref() == Some("N/A");
                match raw {
                    None => assert!(!by_key.contains_key(&key), "null value exported: {key:?}"),
                    Some(v) => assert_eq!(by_key.get(&key), Some(&Some(v)), "{key:?}"),
                }
            }
        }
    }
    assert!(saw_na, "the sample should include an N/A number");

    // OBJECT_WITH_OBJECT_PROPERTIES: PROPERTIES is the JSON of non-null values.
    let (columns, with_props) = rows(&export, "OBJECT_WITH_OBJECT_PROPERTIES");
    assert_eq!(with_props.len() as u64, SCALE * g.types.len() as u64);
    let contacts = g.type_index("contacts").unwrap();
    let first_contact = with_props
        .iter()
        .find(|r| {
            r[col(&columns, "OBJECTID")].as_deref()
                == Some(g.record(contacts, 3).id.to_string().as_str())
        })
        .unwrap();
    let json: BTreeMap<String, String> = serde_json::from_str(
        first_contact[col(&columns, "PROPERTIES")]
            .as_deref()
            .unwrap(),
    )
    .unwrap();
    let expected: BTreeMap<String, String> = g.types[contacts]
        .properties
        .iter()
        .enumerate()
        .filter_map(|(p, def)| {
            g.property_value(contacts, 3, p)
                .map(|v| (def.name.clone(), v))
        })
        .collect();
    assert_eq!(json, expected);

    // Associations: every pair, both directions, with type ids and labels.
    let mut combined = 0;
    for from in 0..g.types.len() {
        for to in 0..g.types.len() {
            let labels = g.association_labels(from, to);
            let table = format!(
                "ASSOCIATIONS_{}_TO_{}",
                g.types[from].plural_label.to_uppercase(),
                g.types[to].plural_label.to_uppercase()
            );
            if labels.is_empty() {
                assert!(!names.contains(&table), "{table} should not exist");
                continue;
            }
            let (columns, got) = rows(&export, &table);
            let (fs, ts) = (singular(&g, from), singular(&g, to));
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
                        r[col(&columns, "ISMAINASSOCIATIONDEFINITION")]
                            .clone()
                            .unwrap(),
                    )
                })
                .collect();
            let mut want = BTreeSet::new();
            for i in 0..SCALE {
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
    let (_, all_assoc) = rows(&export, "ASSOCIATIONS");
    assert_eq!(all_assoc.len(), combined);
    // The hub company has more associations than one page per input holds.
    let companies = g.type_index("companies").unwrap();
    assert!(g.associations(companies, SCALE - 1, contacts).len() > 20);

    // Reference tables.
    let (columns, owners) = rows(&export, "OWNERS");
    assert_eq!(owners.len(), g.owners.len(), "archived owners are included");
    let archived = owners
        .iter()
        .filter(|r| r[col(&columns, "ARCHIVED")].as_deref() == Some("true"))
        .count();
    assert_eq!(archived, g.owners.iter().filter(|o| o.archived).count());
    let (_, teams) = rows(&export, "OWNER_TEAM");
    assert_eq!(
        teams.len(),
        g.owners.iter().map(|o| o.teams.len()).sum::<usize>()
    );
    let (columns, defs) = rows(&export, "PROPERTY_DEFINITIONS");
    assert_eq!(
        defs.len(),
        g.types.iter().map(|t| t.properties.len()).sum::<usize>()
    );
    assert!(defs.iter().all(|r| {
        r[col(&columns, "COLUMNNAME")]
            .as_deref()
            .unwrap()
            .starts_with("PROPERTY_")
    }));
    let (columns, stages) = rows(&export, "PIPELINE_STAGES");
    let deals = g.type_index("deals").unwrap();
    let tickets = g.type_index("tickets").unwrap();
    let stage_count: usize = [deals, tickets]
        .iter()
        .flat_map(|t| g.pipelines(*t))
        .map(|p| p.stages.len())
        .sum();
    assert_eq!(stages.len(), stage_count);
    let won = stages
        .iter()
        .find(|r| r[col(&columns, "STAGEID")].as_deref() == Some("closedwon"))
        .unwrap();
    assert_eq!(won[col(&columns, "PROBABILITY")].as_deref(), Some("1.0"));
    assert_eq!(
        won[col(&columns, "CREATEDAT")].as_deref(),
        Some("1970-01-01T00:00:00.000Z")
    );
    let (columns, types) = rows(&export, "OBJECT_AND_EVENT_TYPE_DEFINITIONS");
    let cars = types
        .iter()
        .find(|r| r[col(&columns, "ID")].as_deref() == Some("2-3508482"))
        .unwrap();
    assert_eq!(cars[col(&columns, "PLURALLABEL")].as_deref(), Some("Cars"));

    // Unparseable values are counted in the manifest's warnings.
    let warnings: Vec<&Value> = manifest["warnings"].as_array().unwrap().iter().collect();
    assert!(
        warnings
            .iter()
            .any(|w| w["kind"] == "unparseable_value" && w["table"] == "OBJECTS_CONTACTS")
    );
}
