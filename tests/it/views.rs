//! `crmdump ddl`: idempotent loads and the analytics views, run in real engines (DuckDB and
//! Spark through their Python packages, PostgreSQL through psql) and compared with the
//! sandboxes' own APIs after a sequence of nights: a full export, then modifications,
//! deletions (a privacy deletion among them), a merge chain, a restore, associations changed
//! between records that did not change otherwise, a property added between two nights, one
//! date exported twice, and a reconcile. A HubSpot account (daily CSV, and the same nights as
//! hive Parquet) and a Pipedrive account (hive CSV) share every engine.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use chrono::NaiveDate;
use serde_json::{Value, json};

use crate::sequence::{Account, Crm, World, canonical, hubspot_truth, pipedrive_truth, recently, replay};
use crate::support::*;
use crate::webhooks::{api, pipedrive_records, text_id};

type Rows = Vec<Vec<Option<String>>>;

/// Runs `tests/reader/engines.py ENGINE` on `scripts`, then `queries`.
fn engine(name: &str, scripts: &[PathBuf], queries: &[(&str, String)], dir: &Path) -> BTreeMap<String, Rows> {
    let job = dir.join(format!("job-{name}.json"));
    let queries: serde_json::Map<String, Value> = queries.iter().map(|(n, q)| (n.to_string(), json!(q))).collect();
    std::fs::write(&job, json!({"scripts": scripts, "queries": queries}).to_string()).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/reader/engines.py");
    let out = Command::new(python()).arg(script).arg(name).arg(&job).output().unwrap();
    assert!(out.status.success(), "{name} failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{name}: {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

/// `crmdump ddl` with `args`, its SQL saved in `dir` as `name`.
fn ddl(dir: &Path, name: &str, args: &[&str]) -> PathBuf {
    let out = run(crmdump().arg("ddl").args(args));
    assert_success(&out);
    let path = dir.join(name);
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

fn pg_server() -> String {
    std::env::var("CRMDUMP_TEST_PG")
        .expect("CRMDUMP_TEST_PG is not set: run the tests with scripts/test, which starts a local PostgreSQL server")
}

fn psql_file(url: &str, file: &Path) {
    let out =
        Command::new("psql").arg(url).args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-f"]).arg(file).output().unwrap();
    assert!(out.status.success(), "psql -f {}: {}", file.display(), String::from_utf8_lossy(&out.stderr));
}

/// A PostgreSQL value as the other engines print it: timestamps in UTC with milliseconds.
fn pg_value(v: &str) -> String {
    match chrono::DateTime::parse_from_str(v, "%Y-%m-%d %H:%M:%S%.f%#z") {
        Ok(t) => t.with_timezone(&chrono::Utc).to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        Err(_) => v.to_string(),
    }
}

fn pg_queries(url: &str, queries: &[(&str, String)]) -> BTreeMap<String, Rows> {
    let mut out = BTreeMap::new();
    for (name, q) in queries {
        let result = Command::new("psql")
            .arg(url)
            .args(["-X", "-v", "ON_ERROR_STOP=1", "-At", "-F", "\u{1f}", "-R", "\u{1e}", "-P", "null=\u{1d}"])
            .args(["-c", "SET TIME ZONE 'UTC'", "-c", q])
            .output()
            .unwrap();
        assert!(result.status.success(), "{name}: {}", String::from_utf8_lossy(&result.stderr));
        let text = String::from_utf8(result.stdout).unwrap();
        let text = text.strip_prefix("SET").unwrap_or(&text).trim_start_matches('\n');
        let rows = text
            .trim_end_matches('\n')
            .split('\u{1e}')
            .filter(|r| !r.is_empty())
            .map(|r| r.split('\u{1f}').map(|v| (v != "\u{1d}").then(|| pg_value(v))).collect())
            .collect();
        out.insert(name.to_string(), rows);
    }
    out
}

/// Every table's rows, hashed, so that two states of the database can be compared.
fn pg_fingerprint(url: &str) -> BTreeMap<String, String> {
    let tables = pg_queries(
        url,
        &[(
            "tables",
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'"
                .to_string(),
        )],
    );
    let queries: Vec<(String, String)> = tables["tables"]
        .iter()
        .map(|r| {
            let t = r[0].clone().unwrap();
            (t.clone(), format!("SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM \"{t}\" t"))
        })
        .collect();
    let borrowed: Vec<(&str, String)> = queries.iter().map(|(n, q)| (n.as_str(), q.clone())).collect();
    pg_queries(url, &borrowed).into_iter().map(|(t, rows)| (t, rows[0][0].clone().unwrap())).collect()
}

/// The same fingerprint in DuckDB.
fn duckdb_fingerprint(tables: &[String]) -> Vec<(&str, String)> {
    tables
        .iter()
        .map(|t| {
            (
                t.as_str(),
                format!(
                    "SELECT count(*) || ':' || coalesce(md5(string_agg(CAST(t AS VARCHAR), '|' ORDER BY CAST(t AS VARCHAR))), '') FROM \"{t}\" t"
                ),
            )
        })
        .collect()
}

/// What the engines are asked, the same SQL in each.
fn queries(touch_property: &str) -> Vec<(&'static str, String)> {
    vec![
        (
            "objects",
            "SELECT \"SOURCE\", \"OBJECTTYPEID\", \"OBJECTID\", \"UPDATEDAT\", CAST(\"ARCHIVED\" AS VARCHAR) FROM \"CURRENT_OBJECTS\"".into(),
        ),
        (
            "links",
            "SELECT DISTINCT \"SOURCE\", \"FROMOBJECTTYPEID\", \"FROMOBJECTID\", \"TOOBJECTTYPEID\", \"TOOBJECTID\" FROM \"CURRENT_ASSOCIATIONS\"".into(),
        ),
        ("pair", "SELECT \"CONTACT_OBJECTID\", \"COMPANY_OBJECTID\" FROM \"CURRENT_ASSOCIATIONS_CONTACTS_TO_COMPANIES\"".into()),
        (
            "props",
            "SELECT \"OBJECTID\", \"NAME\", \"VALUE\" FROM \"CURRENT_OBJECT_PROPERTIES\" WHERE \"SOURCE\" = 'hubspot' AND \"OBJECTTYPEID\" = '0-1'".into(),
        ),
        ("tier", "SELECT \"OBJECTID\", \"PROPERTY_CUSTOMER_TIER\" FROM \"CURRENT_OBJECTS_CONTACTS\" WHERE \"PROPERTY_CUSTOMER_TIER\" IS NOT NULL".into()),
        ("persons", "SELECT \"OBJECTID\", \"PROPERTY_NAME\" FROM \"CURRENT_OBJECTS_PERSONS\"".into()),
        (
            "spans",
            format!(
                "SELECT \"SOURCE\", \"OBJECTTYPEID\", \"OBJECTID\", \"NAME\", \"VALUE\", \"VALID_FROM\", \"VALID_TO\", CAST(\"IS_EARLIEST_RETAINED\" AS VARCHAR) FROM \"OBJECT_PROPERTIES_HISTORY_SPANS\" WHERE \"NAME\" IN ('dealstage', 'lifecyclestage', 'customer_tier', '{touch_property}') OR \"SOURCE\" = 'pipedrive'"
            ),
        ),
        (
            "stages",
            "SELECT \"OBJECTID\", \"PIPELINEID\", \"STAGEID\", \"STAGELABEL\", \"ENTEREDAT\", \"LEFTAT\", \"SECONDSINSTAGE\" FROM \"PIPELINE_STAGE_SPANS\" WHERE \"SOURCE\" = 'hubspot'".into(),
        ),
        ("merged", "SELECT \"OBJECTTYPEID\", \"OBJECTID\", \"SURVIVOR\" FROM \"MERGED_OBJECTS\" WHERE \"SOURCE\" = 'hubspot'".into()),
        (
            "survivors",
            "SELECT DISTINCT \"OBJECTID\", \"SURVIVOR\" FROM \"OBJECT_PROPERTIES_HISTORY_SPANS\" WHERE \"OBJECTID\" <> \"SURVIVOR\"".into(),
        ),
        (
            "deleted",
            "SELECT DISTINCT \"OBJECTTYPEID\", \"OBJECTID\", \"DELETEDAT\" FROM \"OBJECT_PROPERTIES_HISTORY_SPANS\" WHERE \"DELETED\"".into(),
        ),
    ]
}

/// One sandbox account's nights, the dates exported and what the hooks did.
struct Nights {
    hub: World,
    /// The HubSpot nights again, as hive Parquet.
    hub_hive: PathBuf,
    pd: World,
    dates: Vec<NaiveDate>,
    touch_property: String,
    /// (merged away, its final survivor) of the HubSpot merge chain.
    chain: Vec<(String, String)>,
    /// HubSpot records deleted: (type id, id).
    deleted: Vec<(String, String)>,
}

impl Nights {
    fn export(&mut self, date: NaiveDate, extra: &[&str]) {
        let date_text = date.to_string();
        for (w, dest, layout) in [
            (&self.hub, self.hub.dest.clone(), &[][..]),
            (&self.hub, self.hub_hive.clone(), &["--layout", "hive", "--format", "parquet"][..]),
            (&self.pd, self.pd.dest.clone(), &["--layout", "hive"][..]),
        ] {
            let out = run(w.command_to("export", &dest).args(["--date", &date_text]).args(layout).args(extra));
            assert_success(&out);
        }
    }

    fn hub(&self, hook: &str, body: Value) -> Value {
        self.hub.sandbox.hook(hook, body)
    }

    fn pd(&self, hook: &str, body: Value) -> Value {
        self.pd.sandbox.hook(hook, body)
    }
}

/// The HubSpot property values of live contacts, from the API: id -> name -> value.
fn hubspot_contact_values(w: &World, ids: &[String]) -> BTreeMap<String, BTreeMap<String, String>> {
    let (_, defs) = api(&w.sandbox, "GET", "/crm/v3/properties/contacts", None);
    let names: Vec<Value> = defs["results"].as_array().unwrap().iter().map(|d| d["name"].clone()).collect();
    let mut out = BTreeMap::new();
    for chunk in ids.chunks(100) {
        let inputs: Vec<Value> = chunk.iter().map(|id| json!({"id": id})).collect();
        let (status, page) = api(
            &w.sandbox,
            "POST",
            "/crm/v3/objects/contacts/batch/read",
            Some(json!({"inputs": inputs, "properties": names})),
        );
        assert_eq!(status, 200, "{page}");
        for r in page["results"].as_array().unwrap() {
            let values = r["properties"]
                .as_object()
                .unwrap()
                .iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect();
            out.insert(r["id"].as_str().unwrap().to_string(), values);
        }
    }
    out
}

/// Full histories (the API keeps more than an export does) of `properties` of live records:
/// (source, type id, id, property) -> [(instant, value)], oldest first.
type Histories = BTreeMap<(String, String, String, String), Vec<(String, String)>>;

fn hubspot_histories(w: &World, object_type: &str, type_id: &str, ids: &[String], properties: &[&str]) -> Histories {
    let mut out = Histories::new();
    for chunk in ids.chunks(50) {
        let inputs: Vec<Value> = chunk.iter().map(|id| json!({"id": id})).collect();
        let (status, page) = api(
            &w.sandbox,
            "POST",
            &format!("/crm/v3/objects/{object_type}/batch/read"),
            Some(json!({"inputs": inputs, "properties": [], "propertiesWithHistory": properties})),
        );
        assert_eq!(status, 200, "{page}");
        for r in page["results"].as_array().unwrap() {
            for (name, entries) in r["propertiesWithHistory"].as_object().into_iter().flatten() {
                let mut list: Vec<(String, String)> = entries
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| (canonical(e["timestamp"].as_str().unwrap()), e["value"].as_str().unwrap().to_string()))
                    .collect();
                list.sort();
                let key = ("hubspot".into(), type_id.into(), r["id"].as_str().unwrap().to_string(), name.clone());
                out.insert(key, list);
            }
        }
    }
    out
}

/// A Pipedrive changelog's instant (`2026-11-01 10:00:00`, UTC) as the tables write one.
fn pipedrive_instant(text: &str) -> String {
    let t = chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S").unwrap_or_else(|e| panic!("{text}: {e}"));
    t.and_utc().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn pipedrive_histories(w: &World, ids: &[String]) -> Histories {
    let mut out = Histories::new();
    for id in ids {
        for e in pipedrive_records(&w.sandbox, &format!("/api/v1/persons/{id}/changelog")) {
            let Some(value) = e["new_value"]
                .as_str()
                .map(str::to_string)
                .or_else(|| (!e["new_value"].is_null()).then(|| text_id(&e["new_value"])))
            else {
                continue;
            };
            let key = ("pipedrive".into(), "person".into(), id.clone(), e["field_key"].as_str().unwrap().to_string());
            out.entry(key).or_default().push((pipedrive_instant(e["time"].as_str().unwrap()), value));
        }
    }
    for list in out.values_mut() {
        list.sort();
    }
    out
}

/// Everything the engines are compared with.
struct Truth {
    account: Account,
    contacts: BTreeMap<String, BTreeMap<String, String>>,
    persons: BTreeMap<String, String>,
    histories: Histories,
    /// Stage id -> (pipeline, label), for deals.
    stages: BTreeMap<String, (String, String)>,
}

fn truth(n: &Nights) -> Truth {
    let mut account = Account::default();
    let hub = hubspot_truth(&n.hub.sandbox, Crm::HubSpot.types());
    let pd = pipedrive_truth(&n.pd.sandbox);
    for (source, a) in [("hubspot", hub), ("pipedrive", pd)] {
        for ((t, id), v) in a.records {
            account.records.insert((format!("{source}/{t}"), id), v);
        }
        for l in a.links {
            account.links.insert((format!("{source}/{}", l.0), l.1, format!("{source}/{}", l.2), l.3));
        }
    }
    let live = |source: &str, t: &str| -> Vec<String> {
        let key = format!("{source}/{t}");
        account
            .records
            .iter()
            .filter(|((tt, _), (_, archived))| *tt == key && !archived)
            .map(|((_, id), _)| id.clone())
            .collect()
    };
    let contacts = hubspot_contact_values(&n.hub, &live("hubspot", "0-1"));
    let persons = pipedrive_records(&n.pd.sandbox, "/api/v2/persons")
        .iter()
        .map(|p| (text_id(&p["id"]), p["name"].as_str().unwrap_or_default().to_string()))
        .collect();
    let mut histories = hubspot_histories(&n.hub, "deals", "0-3", &live("hubspot", "0-3"), &["dealstage"]);
    histories.extend(hubspot_histories(
        &n.hub,
        "contacts",
        "0-1",
        &live("hubspot", "0-1"),
        &["lifecyclestage", "customer_tier", &n.touch_property],
    ));
    histories.extend(pipedrive_histories(&n.pd, &live("pipedrive", "person")));
    let (_, pipelines) = api(&n.hub.sandbox, "GET", "/crm/v3/pipelines/deals", None);
    let mut stages = BTreeMap::new();
    for p in pipelines["results"].as_array().unwrap() {
        for s in p["stages"].as_array().unwrap() {
            stages.insert(
                s["id"].as_str().unwrap().to_string(),
                (p["id"].as_str().unwrap().to_string(), s["label"].as_str().unwrap().to_string()),
            );
        }
    }
    Truth { account, contacts, persons, histories, stages }
}

/// The account an engine's CURRENT views show, keyed as [`truth`] keys it.
fn shown(rows: &BTreeMap<String, Rows>) -> Account {
    let mut a = Account::default();
    for r in &rows["objects"] {
        let v = |i: usize| r[i].clone().unwrap();
        a.records.insert((format!("{}/{}", v(0), v(1)), v(2)), (canonical(&v(3)), v(4) == "true"));
    }
    for r in &rows["links"] {
        let v = |i: usize| r[i].clone().unwrap();
        a.links.insert((format!("{}/{}", v(0), v(1)), v(2), format!("{}/{}", v(0), v(3)), v(4)));
    }
    a
}

fn compare_account(engine: &str, what: &str, got: &Account, want: &Account) {
    let missing: Vec<_> = want.records.iter().filter(|(k, v)| got.records.get(*k) != Some(*v)).take(5).collect();
    let extra: Vec<_> = got.records.keys().filter(|k| !want.records.contains_key(*k)).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{engine} {what}: differs: {missing:?} (shown {:?}); extra {extra:?}",
        missing.iter().map(|(k, _)| got.records.get(*k)).collect::<Vec<_>>()
    );
    let diff: Vec<_> = want.links.symmetric_difference(&got.links).take(5).collect();
    assert!(diff.is_empty(), "{engine} {what}: associations differ: {diff:?}");
    assert_eq!(got, want, "{engine} {what}");
}

/// The views of one engine against the truth.
fn check(engine: &str, rows: &BTreeMap<String, Rows>, t: &Truth, n: &Nights) {
    compare_account(engine, "CURRENT_OBJECTS and CURRENT_ASSOCIATIONS", &shown(rows), &t.account);
    let sources: BTreeSet<&str> = rows["objects"].iter().map(|r| r[0].as_deref().unwrap()).collect();
    assert_eq!(sources, BTreeSet::from(["hubspot", "pipedrive"]), "{engine}: two accounts side by side");

    // Per-pair view: the contact-company rows of CURRENT_ASSOCIATIONS, named by type.
    let pairs: BTreeSet<(String, String)> =
        rows["pair"].iter().map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap())).collect();
    let want: BTreeSet<(String, String)> = t
        .account
        .links
        .iter()
        .filter(|l| l.0 == "hubspot/0-1" && l.2 == "hubspot/0-2")
        .map(|l| (l.1.clone(), l.3.clone()))
        .collect();
    assert_eq!(pairs, want, "{engine}: CURRENT_ASSOCIATIONS_CONTACTS_TO_COMPANIES");

    // Value for value: every property of every live contact.
    let mut props: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for r in &rows["props"] {
        if let Some(value) = r[2].clone() {
            props.entry(r[0].clone().unwrap()).or_default().insert(r[1].clone().unwrap(), value);
        }
    }
    for (id, values) in &t.contacts {
        let shown = props.get(id).cloned().unwrap_or_default();
        let diff: Vec<_> = values
            .iter()
            .filter(|(k, v)| shown.get(*k) != Some(*v))
            .map(|(k, v)| (k, v, shown.get(k)))
            .take(3)
            .collect();
        assert!(
            diff.is_empty() && shown.len() == values.len(),
            "{engine}: contact {id}: (property, API, view) {diff:?}"
        );
    }
    // The property added between two nights: a column of its own, set where the API sets it.
    let tier: BTreeMap<String, String> =
        rows["tier"].iter().map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap())).collect();
    let want: BTreeMap<String, String> =
        t.contacts.iter().filter_map(|(id, v)| v.get("customer_tier").map(|tier| (id.clone(), tier.clone()))).collect();
    assert!(!want.is_empty(), "the scenario sets the added property");
    assert_eq!(tier, want, "{engine}: PROPERTY_CUSTOMER_TIER");
    let persons: BTreeMap<String, String> =
        rows["persons"].iter().map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap_or_default())).collect();
    assert_eq!(persons, t.persons, "{engine}: CURRENT_OBJECTS_PERSONS names");

    check_spans(engine, rows, t);
    check_stages(engine, rows, t);

    let merged: BTreeMap<String, String> =
        rows["merged"].iter().map(|r| (r[1].clone().unwrap(), r[2].clone().unwrap())).collect();
    for (away, survivor) in &n.chain {
        assert_eq!(merged.get(away), Some(survivor), "{engine}: MERGED_OBJECTS resolves the chain");
    }
    let survivors: BTreeMap<String, String> =
        rows["survivors"].iter().map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap())).collect();
    for (away, survivor) in &n.chain {
        assert_eq!(survivors.get(away), Some(survivor), "{engine}: a merged record's history counts for its survivor");
    }
    let deleted: BTreeMap<(String, String), Option<String>> =
        rows["deleted"].iter().map(|r| ((r[0].clone().unwrap(), r[1].clone().unwrap()), r[2].clone())).collect();
    for record in &n.deleted {
        let at =
            deleted.get(record).unwrap_or_else(|| panic!("{engine}: {record:?} keeps its history, flagged deleted"));
        assert!(at.is_some(), "{engine}: {record:?} says when it was deleted");
    }
}

/// `OBJECT_PROPERTIES_HISTORY_SPANS`: for every property followed, the spans are the newest
/// values the API has, each valid until the next, as many as an export keeps at least; an
/// instant before the first span has no value (history longer than the cap).
fn check_spans(engine: &str, rows: &BTreeMap<String, Rows>, t: &Truth) {
    // key -> (VALID_FROM, VALUE, VALID_TO, IS_EARLIEST_RETAINED)
    type Span = (String, String, Option<String>, bool);
    let mut spans: BTreeMap<(String, String, String, String), Vec<Span>> = BTreeMap::new();
    for r in &rows["spans"] {
        let v = |i: usize| r[i].clone().unwrap_or_default();
        spans.entry((v(0), v(1), v(2), v(3))).or_default().push((
            canonical(&v(5)),
            v(4),
            r[6].as_deref().map(canonical),
            v(7) == "true",
        ));
    }
    let mut capped = 0;
    for (key, history) in &t.histories {
        let mut shown = spans.get(key).cloned().unwrap_or_default();
        shown.sort();
        let cap = match (key.0.as_str(), key.1.as_str()) {
            ("hubspot", "0-1") => 45,
            _ => 20,
        };
        assert!(
            shown.len() >= history.len().min(cap) && shown.len() <= history.len(),
            "{engine} {key:?}: {} spans for {} values: {shown:?} / {history:?}",
            shown.len(),
            history.len()
        );
        let kept = &history[history.len() - shown.len()..];
        for (i, (from, value, to, earliest)) in shown.iter().enumerate() {
            assert_eq!((from, value), (&kept[i].0, &kept[i].1), "{engine} {key:?}: span {i}");
            assert_eq!(
                to.as_ref(),
                kept.get(i + 1).map(|k| &k.0),
                "{engine} {key:?}: span {i} ends where the next begins"
            );
            assert_eq!(*earliest, i == 0, "{engine} {key:?}: IS_EARLIEST_RETAINED");
        }
        if shown.len() < history.len() {
            capped += 1;
        }
    }
    assert!(capped > 0, "{engine}: some history is longer than the export keeps");
    assert!(t.histories.keys().any(|k| k.0 == "pipedrive"), "Pipedrive changelogs are compared too");
}

/// `PIPELINE_STAGE_SPANS`: each deal's retained stages, with the stage's pipeline and label,
/// and the seconds spent equal to the API's history.
fn check_stages(engine: &str, rows: &BTreeMap<String, Rows>, t: &Truth) {
    let mut stages: BTreeMap<String, Vec<Vec<Option<String>>>> = BTreeMap::new();
    for r in &rows["stages"] {
        stages.entry(r[0].clone().unwrap()).or_default().push(r.clone());
    }
    let mut spans = 0;
    for ((_, _, id, name), history) in t.histories.iter().filter(|(k, _)| k.3 == "dealstage") {
        let _ = name;
        let mut shown = stages.get(id).cloned().unwrap_or_default();
        shown.sort_by_key(|r| canonical(r[4].as_deref().unwrap()));
        let kept = &history[history.len() - shown.len()..];
        assert!(!shown.is_empty(), "{engine}: deal {id} has stage spans");
        for (i, r) in shown.iter().enumerate() {
            let (stage, entered) = (&kept[i].1, &kept[i].0);
            assert_eq!(r[2].as_ref(), Some(stage), "{engine}: deal {id} stage {i}");
            assert_eq!(canonical(r[4].as_deref().unwrap()), *entered);
            let (pipeline, label) = &t.stages[stage];
            assert_eq!((r[1].as_ref(), r[3].as_ref()), (Some(pipeline), Some(label)), "{engine}: deal {id} stage {i}");
            match kept.get(i + 1) {
                Some((left, _)) => {
                    let seconds = (chrono::DateTime::parse_from_rfc3339(left).unwrap()
                        - chrono::DateTime::parse_from_rfc3339(entered).unwrap())
                    .num_milliseconds() as f64
                        / 1000.0;
                    let got: f64 = r[6].as_deref().unwrap().parse().unwrap();
                    assert!((got - seconds).abs() < 1.0, "{engine}: deal {id} stage {i}: {got} s, the API {seconds} s");
                    assert_eq!(r[5].as_deref().map(canonical).as_ref(), Some(left));
                    spans += 1;
                }
                None => assert!(r[5].is_none() && r[6].is_none(), "{engine}: the current stage is open"),
            }
        }
    }
    assert!(spans > 0, "{engine}: some stages were left");
}

/// DuckDB's views over the files of one root after a night, against the replay rule.
fn check_night(dir: &Path, dest: &Path, date: NaiveDate) {
    let sql = ddl(dir, &format!("night-{date}.sql"), &["--dialect", "duckdb", "--views", dest.to_str().unwrap()]);
    let q = queries("x");
    let rows = engine("duckdb", &[sql], &q[..2], dir);
    let mut want = Account::default();
    let replayed = replay(dest);
    for ((t, id), v) in replayed.records {
        want.records.insert((format!("hubspot/{t}"), id), v);
    }
    for l in replayed.links {
        want.links.insert((format!("hubspot/{}", l.0), l.1, format!("hubspot/{}", l.2), l.3));
    }
    compare_account("duckdb", &format!("views after {date} against the replay rule"), &shown(&rows), &want);
}

#[test]
#[ignore = "needs Python (duckdb, pyspark), Java and PostgreSQL: run scripts/test"]
fn views_in_duckdb_postgres_and_spark_equal_the_accounts_after_a_sequence_of_nights() {
    let dir = tempfile::tempdir().unwrap();
    let admin = pg_server();
    let db = format!("crmdump_views_{}", std::process::id());
    pg_queries(&admin, &[("create", format!("CREATE DATABASE {db}"))]);
    let pg = format!("{}/{db}", admin.rsplit_once('/').unwrap().0);

    let mut hub = World::new(Crm::HubSpot, false, 21);
    hub.history = true;
    let mut pd = World::new(Crm::Pipedrive, false, 22);
    pd.history = true;
    let hub_hive = dir.path().join("hubspot-hive");
    let first = hub.first;
    let mut n = Nights {
        hub,
        hub_hive,
        pd,
        dates: Vec::new(),
        touch_property: String::new(),
        chain: Vec::new(),
        deleted: Vec::new(),
    };
    let roots = |n: &Nights| [n.hub.dest.to_str().unwrap().to_string(), n.pd.dest.to_str().unwrap().to_string()];
    // The nightly recipe: export, then load the date.
    let nightly = |n: &mut Nights, date: NaiveDate, extra: &[&str]| {
        n.export(date, extra);
        n.dates.push(date);
        let [hub_root, pd_root] = roots(n);
        let sql = ddl(
            dir.path(),
            &format!("pg-{date}.sql"),
            &["--dialect", "postgres", "--date", &date.to_string(), &hub_root, &pd_root],
        );
        psql_file(&pg, &sql);
        check_night(dir.path(), &n.hub.dest, date);
    };

    nightly(&mut n, first, &[]);
    // Night 1: changes of every kind.
    let touched = n.hub("touch", json!({"objectType": "contacts", "count": 3, "at": recently()}));
    n.touch_property = touched["property"].as_str().unwrap().to_string();
    n.hub("touch", json!({"objectType": "deals", "count": 2, "at": recently()}));
    n.hub("archive", json!({"objectType": "contacts", "count": 1, "at": recently()}));
    n.hub(
        "associate",
        json!({"fromObjectType": "contacts", "toObjectType": "companies", "count": 2, "at": recently()}),
    );
    let one = n.hub("merge", json!({"objectType": "deals", "count": 1, "at": recently()}));
    let two = n.hub("merge", json!({"objectType": "deals", "count": 1, "at": recently()}));
    let survivor = two["merges"][0]["survivor"].as_str().unwrap().to_string();
    assert_eq!(two["merges"][0]["merged"], one["merges"][0]["survivor"], "a chain");
    n.chain = vec![
        (one["merges"][0]["merged"].as_str().unwrap().to_string(), survivor.clone()),
        (two["merges"][0]["merged"].as_str().unwrap().to_string(), survivor),
    ];
    let company = n.hub("delete", json!({"objectType": "companies", "count": 1, "at": recently()}));
    let contact = n.hub("privacy-delete", json!({"objectType": "contacts", "count": 1, "at": recently()}));
    n.deleted = vec![
        ("0-2".into(), company["ids"][0].as_str().unwrap().to_string()),
        ("0-1".into(), contact["ids"][0].as_str().unwrap().to_string()),
    ];
    n.hub("add-property", json!({"objectType": "contacts", "at": recently()}));
    n.hub("touch", json!({"objectType": "contacts", "count": 2, "at": recently()}));
    n.pd("touch", json!({"objectType": "persons", "count": 2, "at": recently()}));
    n.pd("delete", json!({"objectType": "organizations", "count": 1, "at": recently()}));
    n.pd("merge", json!({"objectType": "persons", "count": 1, "at": recently()}));
    n.pd("archive", json!({"objectType": "deals", "count": 1, "at": recently()}));
    nightly(&mut n, first + chrono::Duration::days(1), &[]);
    // Night 2: a restore, a dissociation between unchanged records; the date exported twice.
    n.hub("restore", json!({"objectType": "contacts", "count": 1, "at": recently()}));
    n.hub(
        "dissociate",
        json!({"fromObjectType": "contacts", "toObjectType": "companies", "count": 1, "at": recently()}),
    );
    n.hub("touch", json!({"objectType": "contacts", "count": 1, "at": recently()}));
    n.pd("restore", json!({"objectType": "deals", "count": 1, "at": recently()}));
    n.pd("touch", json!({"objectType": "deals", "count": 1, "at": recently()}));
    let second = first + chrono::Duration::days(2);
    n.export(second, &[]);
    nightly(&mut n, second, &[]);
    n.dates.dedup();
    // Night 3: a reconcile finds what no run read.
    nightly(&mut n, first + chrono::Duration::days(3), &["--reconcile"]);

    let t = truth(&n);
    let [hub_root, pd_root] = roots(&n);
    let q = queries(&n.touch_property);

    // PostgreSQL: loaded night by night; loading dates again, in another order, changes nothing.
    let before = pg_fingerprint(&pg);
    assert!(before.contains_key("OBJECTS_CONTACTS") && before.contains_key("EXPORTS"));
    for (i, date) in [n.dates[2], n.dates[0], n.dates[2], n.dates[1]].iter().enumerate() {
        let sql = ddl(
            dir.path(),
            &format!("pg-again-{i}.sql"),
            &["--dialect", "postgres", "--date", &date.to_string(), &hub_root, &pd_root],
        );
        psql_file(&pg, &sql);
    }
    assert_eq!(pg_fingerprint(&pg), before, "loading dates again changes no table");
    let views =
        ddl(dir.path(), "pg-views.sql", &["--dialect", "postgres", "--views", "--no-load", &hub_root, &pd_root]);
    psql_file(&pg, &views);
    let rows = pg_queries(&pg, &q);
    check("postgres", &rows, &t, &n);
    let instant = &n.dates.last().unwrap().to_string();
    let as_of = pg_queries(
        &pg,
        &[(
            "as_of",
            format!(
                "SELECT count(*) FROM \"PROPERTIES_AS_OF\"(TIMESTAMPTZ '{instant} 00:00:00+00') WHERE \"NAME\" = 'dealstage'"
            ),
        )],
    );
    assert!(as_of["as_of"][0][0].as_deref().unwrap().parse::<u64>().unwrap() > 0, "PROPERTIES_AS_OF answers");

    // DuckDB: loads in order and in another order (with repeats) give the same tables; the
    // views over the committed files equal the accounts.
    let all = ddl(dir.path(), "duck-all.sql", &["--dialect", "duckdb", &hub_root, &pd_root]);
    let mut shuffled = Vec::new();
    for (i, date) in [n.dates[3], n.dates[1], n.dates[0], n.dates[2], n.dates[2]].iter().enumerate() {
        shuffled.push(ddl(
            dir.path(),
            &format!("duck-{i}.sql"),
            &["--dialect", "duckdb", "--date", &date.to_string(), &hub_root, &pd_root],
        ));
    }
    let tables: Vec<String> = before.keys().cloned().collect();
    let in_order = engine("duckdb", &[all], &duckdb_fingerprint(&tables), dir.path());
    let out_of_order = engine("duckdb", &shuffled, &duckdb_fingerprint(&tables), dir.path());
    assert_eq!(in_order, out_of_order, "DuckDB: any order, any repeats, the same tables");
    let files = ddl(dir.path(), "duck-views.sql", &["--dialect", "duckdb", "--views", &hub_root, &pd_root]);
    let rows = engine("duckdb", &[files], &q, dir.path());
    check("duckdb", &rows, &t, &n);

    // Spark: the hive Parquet export of HubSpot and the hive CSV export of Pipedrive.
    let spark =
        ddl(dir.path(), "spark.sql", &["--dialect", "spark", "--views", n.hub_hive.to_str().unwrap(), &pd_root]);
    let rows = engine("spark", &[spark], &q, dir.path());
    check("spark", &rows, &t, &n);
}
