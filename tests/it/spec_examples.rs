//! The Pipedrive extractor fed Pipedrive's own documented answers: a server
//! (`tests/reader/spec_examples_server.py`, written apart from crmdump and the sandbox) answers
//! every request with the example response of the vendored v1 and v2 specs, and every value of
//! the export is checked against those examples, written out here by hand.
//!
//! The examples are not one consistent company: deal 1 and lead `adf21080-...` are both in
//! the open and in the archived list, so each appears twice, once live and once archived.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// The examples server, killed when dropped.
struct ExamplesServer {
    child: Child,
    base_url: String,
}

impl ExamplesServer {
    fn start() -> ExamplesServer {
        let root = env!("CARGO_MANIFEST_DIR");
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        let mut child = Command::new(python())
            .arg(format!("{root}/tests/reader/spec_examples_server.py"))
            .arg(format!("{root}/fixtures/specs/pipedrive"))
            .arg(&port_file)
            .stderr(Stdio::null())
            .spawn()
            .expect("the examples server starts");
        let deadline = Instant::now() + Duration::from_secs(120);
        let port = loop {
            if let Some(port) = std::fs::read_to_string(&port_file).ok().filter(|p| !p.is_empty()) {
                break port;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("the examples server exited: {status}");
            }
            assert!(Instant::now() < deadline, "the examples server did not start");
            std::thread::sleep(Duration::from_millis(100));
        };
        ExamplesServer { child, base_url: format!("http://127.0.0.1:{}", port.trim()) }
    }
}

impl Drop for ExamplesServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The rows of `table` as (column, value) maps, without `INGESTEDAT`, sorted.
fn table_rows(export: &serde_json::Value, table: &str) -> Vec<BTreeMap<String, Option<String>>> {
    let (columns, rows) = rows(export, table);
    let mut out: Vec<BTreeMap<String, Option<String>>> =
        rows.into_iter().map(|r| columns.iter().cloned().zip(r).filter(|(c, _)| c != "INGESTEDAT").collect()).collect();
    out.sort();
    out
}

/// A row from (column, value) pairs; an empty value is NULL.
fn row(pairs: &[(&str, &str)]) -> BTreeMap<String, Option<String>> {
    pairs.iter().map(|(c, v)| (c.to_string(), (!v.is_empty()).then(|| v.to_string()))).collect()
}

fn object(kind: &str, id: &str, created: &str, updated: &str, archived_at: &str) -> Vec<(String, String)> {
    [
        ("OBJECTTYPEID", kind),
        ("OBJECTID", id),
        ("CREATEDAT", created),
        ("UPDATEDAT", updated),
        ("ARCHIVED", if archived_at.is_empty() { "false" } else { "true" }),
        ("ARCHIVEDAT", archived_at),
    ]
    .iter()
    .map(|(c, v)| (c.to_string(), v.to_string()))
    .collect()
}

fn with(base: Vec<(String, String)>, properties: &[(&str, &str)]) -> BTreeMap<String, Option<String>> {
    let mut all: Vec<(&str, &str)> = base.iter().map(|(c, v)| (c.as_str(), v.as_str())).collect();
    all.extend_from_slice(properties);
    row(&all)
}

/// Three columns of every row of `table`, in the table's order (NULL as "").
fn triples(export: &serde_json::Value, table: &str, names: [&str; 3]) -> Vec<(String, String, String)> {
    let (columns, found) = rows(export, table);
    let g = |r: &Vec<Option<String>>, c: &str| r[col(&columns, c)].clone().unwrap_or_default();
    found.iter().map(|r| (g(r, names[0]), g(r, names[1]), g(r, names[2]))).collect()
}

fn owned_set(items: &[(&str, &str, &str)]) -> BTreeSet<(String, String, String)> {
    items.iter().map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string())).collect()
}

const T2021: &str = "2021-01-01T00:00:00.000Z";
const ADDRESS: &[(&str, &str)] = &[
    ("", "123 Main St"),
    ("_STREET_NUMBER", "123"),
    ("_ROUTE", "Main St"),
    ("_LOCALITY", "Sunnyvale"),
    ("_ADMIN_AREA_LEVEL_1", "CA"),
    ("_ADMIN_AREA_LEVEL_2", "Santa Clara"),
    ("_COUNTRY", "USA"),
    ("_POSTAL_CODE", "94085"),
    // Not in the examples' values, though their field lists it.
    ("_FORMATTED_ADDRESS", ""),
];

/// The address columns of field `column` (`PROPERTY_ADDRESS`), with the example's subpremise.
fn address(column: &str, subpremise: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        ADDRESS.iter().map(|(part, v)| (format!("{column}{part}"), v.to_string())).collect();
    out.push((format!("{column}_SUBPREMISE"), subpremise.to_string()));
    out
}

fn owned(pairs: &[(String, String)]) -> Vec<(&str, &str)> {
    pairs.iter().map(|(c, v)| (c.as_str(), v.as_str())).collect()
}

#[test]
#[ignore = "needs Python (pyarrow, duckdb): run scripts/test"]
fn the_pipedrive_extractor_reads_every_value_of_pipedrives_own_examples() {
    let server = ExamplesServer::start();
    let dest = tempfile::tempdir().unwrap();
    let out = run(crmdump()
        .args(["export", "--source", "pipedrive", "--base-url", &server.base_url])
        .args(["--dest", dest.path().to_str().unwrap(), "--date", DATE])
        .env("PIPEDRIVE_API_TOKEN", PIPEDRIVE_TOKEN));
    assert_success(&out);
    let export = read_export(&dest.path().join(DATE), &[]);
    assert_eq!(export["manifest"]["account"], "54235233", "the company of /users/me");

    // Deals: the built-in monetary value once, its currency the record's own.
    let deal = |archived: bool| {
        with(
            object("deal", "1", T2021, T2021, if archived { T2021 } else { "" }),
            &[
                ("PROPERTY_TITLE", "Deal Title"),
                ("PROPERTY_VALUE", "200"),
                ("PROPERTY_CURRENCY", "USD"),
                ("PROPERTY_PRIORITY", ""),
            ],
        )
    };
    assert_eq!(table_rows(&export, "OBJECTS_DEALS"), vec![deal(false), deal(true)]);

    // Organizations and activities: every part of an address under its field's name.
    let org = address("PROPERTY_ADDRESS", "123A");
    let org_row = with(object("organization", "1", T2021, T2021, ""), &{
        let mut p = owned(&org);
        p.extend([("PROPERTY_NAME", "Organization Name"), ("PROPERTY_INDUSTRY", "")]);
        p
    });
    assert_eq!(table_rows(&export, "OBJECTS_ORGANIZATIONS"), vec![org_row]);
    let location = address("PROPERTY_LOCATION", "Apt 1");
    let activity_row = with(object("activity", "1", T2021, T2021, ""), &{
        let mut p = owned(&location);
        p.extend([("PROPERTY_SUBJECT", "Activity Subject"), ("PROPERTY_STATUS", "")]);
        p
    });
    assert_eq!(table_rows(&export, "OBJECTS_ACTIVITIES"), vec![activity_row]);

    // Persons: the field `phone` read from the record's `phones`.
    let phones =
        r#"[{"label":"work","primary":true,"value":"12345"},{"label":"home","primary":false,"value":"54321"}]"#;
    assert_eq!(
        table_rows(&export, "OBJECTS_PERSONS"),
        vec![with(
            object("person", "1", T2021, T2021, ""),
            &[("PROPERTY_NAME", "Person Name"), ("PROPERTY_PHONE", phones), ("PROPERTY_LEAD_SOURCE", ""),]
        )]
    );

    // Products: the custom Price and its currency part are columns of the price, not a
    // property named `currency`; the example's custom values are no defined field.
    let t2019 = "2019-12-19T11:36:49.000Z";
    assert_eq!(
        table_rows(&export, "OBJECTS_PRODUCTS"),
        vec![with(
            object("product", "1", t2019, t2019, ""),
            &[
                ("PROPERTY_NAME", "Mechanical Pencil"),
                ("PROPERTY_PRICE", ""),
                ("PROPERTY_PRICE_CURRENCY", ""),
                ("PROPERTY_CATEGORIES", ""),
            ]
        )]
    );

    // v1: leads (RFC 3339 times with milliseconds) and notes (v1's own time format).
    let lead_id = "adf21080-0e10-11eb-879b-05d71fb426ec";
    let t_lead = "2020-10-14T11:30:36.551Z";
    let lead = |archived: bool| {
        with(
            object("lead", lead_id, t_lead, t_lead, if archived { t_lead } else { "" }),
            &[("PROPERTY_TITLE", "Jane Doe Lead"), ("PROPERTY_CUSTOMER_TYPE", "")],
        )
    };
    assert_eq!(table_rows(&export, "OBJECTS_LEADS"), vec![lead(false), lead(true)]);
    assert_eq!(
        table_rows(&export, "OBJECTS_NOTES"),
        vec![with(
            object("note", "1", "2019-12-09T13:59:21.000Z", "2019-12-09T14:26:11.000Z", ""),
            &[("PROPERTY_CONTENT", "abc"), ("PROPERTY_NOTE_IS_PINNED_TO_DEAL", "true"),]
        )]
    );

    // Every property defined once per entity: no `value` part, no bare `currency` of a
    // custom field, no `_2` column.
    let defs = triples(&export, "PROPERTY_DEFINITIONS", ["OBJECTTYPEID", "NAME", "COLUMNNAME"]);
    let defined: BTreeSet<(String, String, String)> = defs.iter().cloned().collect();
    assert_eq!(defined.len(), defs.len(), "a property defined twice");
    let hash = "40characterhashforcustomfieldidentifier";
    let mut want: BTreeSet<(String, String, String)> = BTreeSet::new();
    let mut define = |kind: &str, name: &str, column: &str| {
        want.insert((kind.to_string(), name.to_string(), column.to_string()));
    };
    for (kind, field, column) in
        [("organization", "address", "PROPERTY_ADDRESS"), ("activity", "location", "PROPERTY_LOCATION")]
    {
        define(kind, field, column);
        for part in [
            "street_number",
            "route",
            "subpremise",
            "locality",
            "admin_area_level_1",
            "admin_area_level_2",
            "country",
            "postal_code",
            "formatted_address",
        ] {
            define(kind, &format!("{field}_{part}"), &format!("{column}_{}", part.to_uppercase()));
        }
    }
    define("organization", "name", "PROPERTY_NAME");
    define("organization", hash, "PROPERTY_INDUSTRY");
    define("activity", "subject", "PROPERTY_SUBJECT");
    define("activity", hash, "PROPERTY_STATUS");
    define("deal", "title", "PROPERTY_TITLE");
    define("deal", "value", "PROPERTY_VALUE");
    define("deal", "currency", "PROPERTY_CURRENCY");
    define("deal", hash, "PROPERTY_PRIORITY");
    define("person", "name", "PROPERTY_NAME");
    define("person", "phone", "PROPERTY_PHONE");
    define("person", hash, "PROPERTY_LEAD_SOURCE");
    define("product", "name", "PROPERTY_NAME");
    define("product", hash, "PROPERTY_PRICE");
    define("product", &format!("{hash}_currency"), "PROPERTY_PRICE_CURRENCY");
    define("product", "40characterhashforcustomfieldcategories", "PROPERTY_CATEGORIES");
    define("lead", "title", "PROPERTY_TITLE");
    define("lead", "9dc80c50d78a15643bfc4ca79d76156a73a1ca0e", "PROPERTY_CUSTOMER_TYPE");
    define("note", "content", "PROPERTY_CONTENT");
    define("note", "pinned_to_deal_flag", "PROPERTY_NOTE_IS_PINNED_TO_DEAL");
    assert_eq!(defined, want);

    // OBJECT_PROPERTIES: each value sent, once per record read.
    let mut got = triples(&export, "OBJECT_PROPERTIES", ["OBJECTTYPEID", "NAME", "VALUE"]);
    got.sort();
    let mut want: Vec<(String, String, String)> = Vec::new();
    let mut value = |kind: &str, name: &str, v: &str| want.push((kind.into(), name.into(), v.into()));
    for _ in 0..2 {
        value("deal", "title", "Deal Title");
        value("deal", "value", "200");
        value("deal", "currency", "USD");
        value("lead", "title", "Jane Doe Lead");
    }
    for (kind, field, subpremise) in [("organization", "address", "123A"), ("activity", "location", "Apt 1")] {
        value(kind, field, "123 Main St");
        for (part, v) in [
            ("street_number", "123"),
            ("route", "Main St"),
            ("subpremise", subpremise),
            ("locality", "Sunnyvale"),
            ("admin_area_level_1", "CA"),
            ("admin_area_level_2", "Santa Clara"),
            ("country", "USA"),
            ("postal_code", "94085"),
        ] {
            value(kind, &format!("{field}_{part}"), v);
        }
    }
    value("organization", "name", "Organization Name");
    value("activity", "subject", "Activity Subject");
    value("person", "name", "Person Name");
    value("person", "phone", phones);
    value("product", "name", "Mechanical Pencil");
    value("note", "content", "abc");
    value("note", "pinned_to_deal_flag", "true");
    want.sort();
    assert_eq!(got, want);

    // Users, pipelines and stages, changelogs and foreign keys as the examples give them.
    let owners: Vec<(Option<String>, Option<String>, Option<String>)> = {
        let (columns, found) = rows(&export, "OWNERS");
        found
            .iter()
            .map(|r| {
                (
                    r[col(&columns, "OWNERID")].clone(),
                    r[col(&columns, "EMAIL")].clone(),
                    r[col(&columns, "FIRSTNAME")].clone(),
                )
            })
            .collect()
    };
    let some = |s: &str| Some(s.to_string());
    assert_eq!(
        owners,
        vec![
            (some("1"), some("john@pipedrive.com"), some("John")),
            (some("2"), some("jane@pipedrive.com"), some("Jane"))
        ]
    );
    let (columns, stages) = rows(&export, "PIPELINE_STAGES");
    assert_eq!(stages.len(), 1);
    for (c, v) in [("PIPELINEID", "1"), ("STAGEID", "1"), ("LABEL", "Stage Name"), ("PROBABILITY", "100")] {
        assert_eq!(stages[0][col(&columns, c)].as_deref(), Some(v), "{c}");
    }
    let history: BTreeSet<(String, String, String)> =
        triples(&export, "OBJECT_PROPERTIES_HISTORY", ["OBJECTTYPEID", "NAME", "VALUE"]).into_iter().collect();
    let changed = "51c27e4a19c3bedd91162a9d446707c1f95174ea";
    let want = owned_set(&[
        ("deal", "title", "My Deal"),
        ("deal", "value", "100"),
        ("organization", "name", "Org 11"),
        ("organization", changed, "20"),
        ("person", changed, "200"),
        ("person", "email", "jane.doe@pipedrive.com"),
    ]);
    assert_eq!(history, want);
    let links: BTreeSet<(String, String, String)> =
        triples(&export, "ASSOCIATIONS", ["FROMOBJECTTYPEID", "TOOBJECTTYPEID", "TOOBJECTID"]).into_iter().collect();
    let want = owned_set(&[
        ("deal", "person", "1"),
        ("deal", "organization", "1"),
        ("deal", "product", "1"),
        ("activity", "deal", "5"),
        ("activity", "person", "6"),
        ("activity", "organization", "7"),
        ("lead", "person", "1092"),
        ("person", "organization", "1"),
    ]);
    assert_eq!(links, want);
}
