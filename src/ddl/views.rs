//! The analytics views, one SQL text for every dialect (docs/VIEWS.md states their rules): the
//! newest version of each record, what is gone, merge chains, associations by the association
//! rule, property history as spans of validity and the time spent in each pipeline stage.
//!
//! Templates name relations `@NAME` and columns `"NAME"`; [`render`] quotes them for the
//! dialect (and qualifies relations with `--schema`). String literals pass untouched.

use std::collections::{BTreeMap, BTreeSet};

use super::Day;
use super::catalog::Table;
use super::dialect::{Dialect, Names, string};

/// Merge chains longer than this (a into b into ... ) resolve to the record this many hops on.
pub const MERGE_HOPS: usize = 10;

/// The identity of a record in every view.
const RECORD: [&str; 4] = ["SOURCE", "ACCOUNT", "OBJECTTYPEID", "OBJECTID"];

/// The stage properties the stage spans follow: (source, type id, property).
const STAGE_PROPERTIES: [(&str, &str, &str); 3] =
    [("hubspot", "0-3", "dealstage"), ("hubspot", "0-5", "hs_pipeline_stage"), ("pipedrive", "deal", "stage_id")];

/// `a.X = b.X AND ...` over `columns`.
fn on(a: &str, b: &str, columns: &[&str]) -> String {
    columns.iter().map(|c| format!("{a}.\"{c}\" = {b}.\"{c}\"")).collect::<Vec<_>>().join(" AND ")
}

fn quoted(columns: &[&str]) -> String {
    columns.iter().map(|c| format!("\"{c}\"")).collect::<Vec<_>>().join(", ")
}

/// Quotes `@RELATION`s and `"COLUMN"`s of `template` for the dialect.
pub fn render(n: Names, template: &str) -> String {
    let mut out = String::with_capacity(template.len() + template.len() / 8);
    let chars: Vec<char> = template.chars().collect();
    let word = |from: usize| -> usize {
        let mut end = from;
        while end < chars.len() && (chars[end].is_ascii_alphanumeric() || chars[end] == '_') {
            end += 1;
        }
        end
    };
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\'' => {
                let mut end = i + 1;
                while end < chars.len() && chars[end] != '\'' {
                    end += 1;
                }
                out.extend(&chars[i..(end + 1).min(chars.len())]);
                i = end + 1;
            }
            '@' if i + 1 < chars.len() && chars[i + 1].is_ascii_uppercase() => {
                let end = word(i + 1);
                out.push_str(&n.rel(&chars[i + 1..end].iter().collect::<String>()));
                i = end;
            }
            '"' => {
                let end = word(i + 1);
                if end > i + 1 && end < chars.len() && chars[end] == '"' {
                    out.push_str(&n.col(&chars[i + 1..end].iter().collect::<String>()));
                    i = end + 1;
                } else {
                    out.push('"');
                    i += 1;
                }
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

/// Every view, in dependency order.
pub fn all(n: Names, tables: &[Table], days: &[Day], out: &mut String) {
    let d = n.dialect;
    let mut view = |name: &str, template: String| {
        out.push_str(&format!("\n{} AS\n{};\n", d.create_view(name), render(n, &template)));
    };
    view("LAST_DELETIONS", last_deletions());
    view("MERGED_OBJECTS", merged_objects());
    let objects = tables.iter().find(|t| t.name == "OBJECTS").expect("the views' inputs are in the catalog");
    view("CURRENT_OBJECTS", current("OBJECTS", objects));
    for t in object_tables(tables) {
        if super::load::too_wide(d, t) {
            continue;
        }
        view(&format!("CURRENT_{}", t.name), current(&t.name, t));
    }
    view("CURRENT_OBJECT_PROPERTIES", current_properties());
    view("CURRENT_ASSOCIATIONS", current_associations());
    for (name, columns, pairs) in pair_tables(tables, days) {
        view(&format!("CURRENT_{name}"), pair_view(&columns, &pairs));
    }
    view("OBJECT_PROPERTIES_HISTORY_SPANS", history_spans());
    view("PIPELINE_STAGE_SPANS", stage_spans(d));
    let as_of = "SELECT * FROM @OBJECT_PROPERTIES_HISTORY_SPANS WHERE \"VALID_FROM\" <= at_instant AND (\"VALID_TO\" IS NULL OR \"VALID_TO\" > at_instant)";
    match d {
        Dialect::Duckdb => out.push_str(&format!(
            "\nCREATE OR REPLACE MACRO {}(at_instant) AS TABLE {};\n",
            n.rel("PROPERTIES_AS_OF"),
            render(n, as_of)
        )),
        Dialect::Postgres => out.push_str(&format!(
            "\nCREATE OR REPLACE FUNCTION {}(at_instant TIMESTAMPTZ) RETURNS SETOF {} LANGUAGE sql STABLE AS $$\n{}\n$$;\n",
            n.rel("PROPERTIES_AS_OF"),
            n.rel("OBJECT_PROPERTIES_HISTORY_SPANS"),
            render(n, as_of)
        )),
        _ => {}
    }
}

/// Each record's newest row of kind deleted, privacy_deleted or merged.
fn last_deletions() -> String {
    let record = quoted(&RECORD);
    format!(
        "SELECT {record}, \"EXPORT_DATE\", \"DELETEDAT\", \"KIND\", \"MERGEDINTO\" FROM (
  SELECT d.*, ROW_NUMBER() OVER (PARTITION BY {record} ORDER BY \"EXPORT_DATE\" DESC, \"DELETEDAT\" DESC NULLS LAST) AS \"CRMDUMP_RANK\"
  FROM @DELETED_OBJECTS d
  WHERE \"KIND\" IN ('deleted', 'privacy_deleted', 'merged')
) r
WHERE \"CRMDUMP_RANK\" = 1"
    )
}

/// Records merged away and their final survivor, through up to [`MERGE_HOPS`] merges.
fn merged_objects() -> String {
    let mut joins = String::new();
    let mut survivor = Vec::new();
    for k in 1..=MERGE_HOPS {
        let prev = k - 1;
        joins.push_str(&format!(
            "\nLEFT JOIN e e{k} ON {} AND e{k}.\"OBJECTID\" = e{prev}.\"MERGEDINTO\"",
            on(&format!("e{k}"), &format!("e{prev}"), &RECORD[..3])
        ));
        survivor.push(format!("e{k}.\"MERGEDINTO\""));
    }
    survivor.reverse();
    survivor.push("e0.\"MERGEDINTO\"".to_string());
    format!(
        "WITH e AS (
  SELECT {} , \"MERGEDINTO\" FROM @LAST_DELETIONS WHERE \"KIND\" = 'merged' AND \"MERGEDINTO\" IS NOT NULL
)
SELECT e0.\"SOURCE\", e0.\"ACCOUNT\", e0.\"OBJECTTYPEID\", e0.\"OBJECTID\", e0.\"MERGEDINTO\", COALESCE({}) AS \"SURVIVOR\"
FROM e e0{joins}",
        quoted(&RECORD),
        survivor.join(", ")
    )
}

/// Whether the deletion `g` is newer than the version `v` (export date first, then the
/// deletion time against `UPDATEDAT`); FALSE when there is none.
fn gone(g: &str, v: &str) -> String {
    format!(
        "COALESCE({g}.\"EXPORT_DATE\" > {v}.\"EXPORT_DATE\" OR ({g}.\"EXPORT_DATE\" = {v}.\"EXPORT_DATE\" AND ({v}.\"UPDATEDAT\" IS NULL OR COALESCE({g}.\"DELETEDAT\" >= {v}.\"UPDATEDAT\", FALSE))), FALSE)"
    )
}

/// The newest version of each record of `relation` that is not gone.
fn current(relation: &str, t: &Table) -> String {
    let record = quoted(&RECORD);
    let columns: Vec<String> = t.loaded_columns().iter().map(|(c, _)| format!("v.\"{c}\"")).collect();
    format!(
        "SELECT {} FROM (
  SELECT o.*, ROW_NUMBER() OVER (PARTITION BY {record} ORDER BY \"EXPORT_DATE\" DESC, \"UPDATEDAT\" DESC NULLS LAST, \"INGESTEDAT\" DESC) AS \"CRMDUMP_RANK\"
  FROM @{relation} o
) v
LEFT JOIN @LAST_DELETIONS g ON {}
WHERE v.\"CRMDUMP_RANK\" = 1 AND NOT {}",
        columns.join(", "),
        on("g", "v", &RECORD),
        gone("g", "v")
    )
}

/// The object tables (`OBJECTS_<TYPE>`) of the catalog.
fn object_tables(tables: &[Table]) -> impl Iterator<Item = &Table> {
    tables.iter().filter(|t| {
        t.name.starts_with("OBJECTS_")
            && ["OBJECTTYPEID", "OBJECTID", "UPDATEDAT", "INGESTEDAT"].iter().all(|c| t.column(c).is_some())
    })
}

fn current_properties() -> String {
    format!(
        "SELECT p.\"SOURCE\", p.\"ACCOUNT\", p.\"OBJECTTYPEID\", p.\"OBJECTID\", p.\"NAME\", p.\"VALUE\", p.\"UPDATEDAT\", c.\"ARCHIVED\", p.\"EXPORT_DATE\"
FROM @OBJECT_PROPERTIES p
JOIN @CURRENT_OBJECTS c ON {} AND c.\"EXPORT_DATE\" = p.\"EXPORT_DATE\"",
        on("c", "p", &RECORD)
    )
}

const ENDS: [&str; 6] = ["SOURCE", "ACCOUNT", "FROMOBJECTTYPEID", "FROMOBJECTID", "TOOBJECTTYPEID", "TOOBJECTID"];

/// `a`'s ends equal to `b`'s ends reversed.
fn reversed(a: &str, b: &str) -> String {
    format!(
        "{a}.\"SOURCE\" = {b}.\"SOURCE\" AND {a}.\"ACCOUNT\" = {b}.\"ACCOUNT\" AND {a}.\"FROMOBJECTTYPEID\" = {b}.\"TOOBJECTTYPEID\" AND {a}.\"FROMOBJECTID\" = {b}.\"TOOBJECTID\" AND {a}.\"TOOBJECTTYPEID\" = {b}.\"FROMOBJECTTYPEID\" AND {a}.\"TOOBJECTID\" = {b}.\"FROMOBJECTID\""
    )
}

/// Associations by the association rule: the folder that speaks for a record is the newest
/// holding it or holding every association; a pair of live records is associated when a
/// folder at least as new as the newer of their two speakers lists it, in either direction.
/// Each direction's rows come from the newest folder listing that direction; a direction no
/// folder has listed yet (only the other end was read since) has NULL types.
fn current_associations() -> String {
    let ends = quoted(&ENDS);
    let speaker = "CASE WHEN hf.\"HOLDER\" > ht.\"HOLDER\" THEN hf.\"HOLDER\" ELSE ht.\"HOLDER\" END";
    format!(
        "WITH listed AS (
  SELECT {ends}, MAX(\"EXPORT_DATE\") AS \"LISTED\" FROM @ASSOCIATIONS GROUP BY {ends}
),
directions AS (
  SELECT DISTINCT \"SOURCE\", \"ACCOUNT\", \"FROMOBJECTTYPEID\", \"TOOBJECTTYPEID\" FROM @ASSOCIATIONS
),
pairs AS (
  SELECT {ends} FROM (
    SELECT {ends} FROM listed
    UNION ALL
    SELECT l.\"SOURCE\", l.\"ACCOUNT\", l.\"TOOBJECTTYPEID\", l.\"TOOBJECTID\", l.\"FROMOBJECTTYPEID\", l.\"FROMOBJECTID\"
    FROM listed l
    JOIN directions r ON r.\"SOURCE\" = l.\"SOURCE\" AND r.\"ACCOUNT\" = l.\"ACCOUNT\" AND r.\"FROMOBJECTTYPEID\" = l.\"TOOBJECTTYPEID\" AND r.\"TOOBJECTTYPEID\" = l.\"FROMOBJECTTYPEID\"
  ) u
  GROUP BY {ends}
),
everything AS (
  SELECT \"SOURCE\", \"ACCOUNT\", MAX(\"EXPORT_DATE\") AS \"LASTALL\" FROM @EXPORTS WHERE \"ASSOCIATIONS\" = 'all' GROUP BY \"SOURCE\", \"ACCOUNT\"
),
holders AS (
  SELECT c.\"SOURCE\", c.\"ACCOUNT\", c.\"OBJECTTYPEID\", c.\"OBJECTID\",
    CASE WHEN a.\"LASTALL\" > c.\"EXPORT_DATE\" THEN a.\"LASTALL\" ELSE c.\"EXPORT_DATE\" END AS \"HOLDER\"
  FROM @CURRENT_OBJECTS c
  LEFT JOIN everything a ON a.\"SOURCE\" = c.\"SOURCE\" AND a.\"ACCOUNT\" = c.\"ACCOUNT\"
  WHERE NOT c.\"ARCHIVED\"
),
spoken AS (
  SELECT p.\"SOURCE\", p.\"ACCOUNT\", p.\"FROMOBJECTTYPEID\", p.\"FROMOBJECTID\", p.\"TOOBJECTTYPEID\", p.\"TOOBJECTID\", f.\"LISTED\" AS \"FORWARD\"
  FROM pairs p
  JOIN holders hf ON hf.\"SOURCE\" = p.\"SOURCE\" AND hf.\"ACCOUNT\" = p.\"ACCOUNT\" AND hf.\"OBJECTTYPEID\" = p.\"FROMOBJECTTYPEID\" AND hf.\"OBJECTID\" = p.\"FROMOBJECTID\"
  JOIN holders ht ON ht.\"SOURCE\" = p.\"SOURCE\" AND ht.\"ACCOUNT\" = p.\"ACCOUNT\" AND ht.\"OBJECTTYPEID\" = p.\"TOOBJECTTYPEID\" AND ht.\"OBJECTID\" = p.\"TOOBJECTID\"
  LEFT JOIN listed f ON {}
  LEFT JOIN listed b ON {}
  WHERE COALESCE(f.\"LISTED\" >= {speaker}, FALSE) OR COALESCE(b.\"LISTED\" >= {speaker}, FALSE)
)
SELECT s.\"SOURCE\", s.\"ACCOUNT\", s.\"FROMOBJECTTYPEID\", s.\"FROMOBJECTID\", s.\"TOOBJECTTYPEID\", s.\"TOOBJECTID\",
  a.\"ASSOCIATIONTYPEID\", a.\"ASSOCIATIONCATEGORY\", a.\"ASSOCIATIONLABEL\", a.\"ISMAINASSOCIATIONDEFINITION\", s.\"FORWARD\" AS \"EXPORT_DATE\"
FROM spoken s
LEFT JOIN @ASSOCIATIONS a ON {} AND a.\"EXPORT_DATE\" = s.\"FORWARD\"",
        on("f", "p", &ENDS),
        reversed("b", "p"),
        on("a", "s", &ENDS)
    )
}

/// A per-pair table: its name, its two id columns, and the (source, from type, to type) it
/// holds.
type PairTable = (String, [String; 2], BTreeSet<(String, String, String)>);

/// The per-pair tables of the catalog, their types found through the manifests' object types.
fn pair_tables(tables: &[Table], days: &[Day]) -> Vec<PairTable> {
    // plural word -> (source, type id)
    let mut plurals: BTreeMap<String, BTreeSet<(String, String)>> = BTreeMap::new();
    for day in days {
        for t in &day.manifest.object_types {
            plurals.entry(t.plural.clone()).or_default().insert((day.manifest.source.clone(), t.id.clone()));
        }
    }
    let mut out = Vec::new();
    for t in tables {
        let Some(rest) = t.name.strip_prefix("ASSOCIATIONS_") else { continue };
        if t.columns.len() < 2 {
            continue;
        }
        let mut pairs = BTreeSet::new();
        for (at, _) in rest.match_indices("_TO_") {
            let (from, to) = (&rest[..at], &rest[at + 4..]);
            for (source, from_id) in plurals.get(from).into_iter().flatten() {
                for (to_source, to_id) in plurals.get(to).into_iter().flatten() {
                    if source == to_source {
                        pairs.insert((source.clone(), from_id.clone(), to_id.clone()));
                    }
                }
            }
        }
        if !pairs.is_empty() {
            out.push((t.name.clone(), [t.columns[0].name.clone(), t.columns[1].name.clone()], pairs));
        }
    }
    out
}

fn pair_view(columns: &[String; 2], pairs: &BTreeSet<(String, String, String)>) -> String {
    let which: Vec<String> = pairs
        .iter()
        .map(|(source, from, to)| {
            format!(
                "(\"SOURCE\" = {} AND \"FROMOBJECTTYPEID\" = {} AND \"TOOBJECTTYPEID\" = {})",
                string(source),
                string(from),
                string(to)
            )
        })
        .collect();
    format!(
        "SELECT \"SOURCE\", \"ACCOUNT\", \"FROMOBJECTID\" AS \"{}\", \"TOOBJECTID\" AS \"{}\", \"ASSOCIATIONTYPEID\", \"ASSOCIATIONCATEGORY\", \"ASSOCIATIONLABEL\", \"ISMAINASSOCIATIONDEFINITION\", \"EXPORT_DATE\"
FROM @CURRENT_ASSOCIATIONS
WHERE {}",
        columns[0],
        columns[1],
        which.join(" OR ")
    )
}

/// Every retained value of every property with the span it held: the history rows of all
/// folders, one per instant (the newest folder's), each valid until the next.
fn history_spans() -> String {
    let record = quoted(&RECORD);
    format!(
        "WITH h AS (
  SELECT {record}, \"NAME\", \"VALUE\", \"UPDATEDAT\", \"SOURCETYPE\", \"SOURCEID\", \"UPDATEDBYUSERID\",
    ROW_NUMBER() OVER (PARTITION BY {record}, \"NAME\", \"UPDATEDAT\" ORDER BY \"EXPORT_DATE\" DESC, \"INGESTEDAT\" DESC) AS \"CRMDUMP_RANK\"
  FROM @OBJECT_PROPERTIES_HISTORY
  WHERE \"UPDATEDAT\" IS NOT NULL
),
s AS (
  SELECT h.*,
    LEAD(\"UPDATEDAT\") OVER (PARTITION BY {record}, \"NAME\" ORDER BY \"UPDATEDAT\") AS \"VALID_TO\",
    ROW_NUMBER() OVER (PARTITION BY {record}, \"NAME\" ORDER BY \"UPDATEDAT\") AS \"CRMDUMP_ORDER\"
  FROM h
  WHERE \"CRMDUMP_RANK\" = 1
)
SELECT s.\"SOURCE\", s.\"ACCOUNT\", s.\"OBJECTTYPEID\", s.\"OBJECTID\", COALESCE(m.\"SURVIVOR\", s.\"OBJECTID\") AS \"SURVIVOR\",
  s.\"NAME\", s.\"VALUE\", s.\"UPDATEDAT\" AS \"VALID_FROM\", s.\"VALID_TO\", s.\"SOURCETYPE\", s.\"SOURCEID\", s.\"UPDATEDBYUSERID\",
  CASE WHEN s.\"CRMDUMP_ORDER\" = 1 THEN TRUE ELSE FALSE END AS \"IS_EARLIEST_RETAINED\",
  CASE WHEN c.\"OBJECTID\" IS NULL THEN TRUE ELSE FALSE END AS \"DELETED\",
  CASE WHEN c.\"OBJECTID\" IS NULL THEN g.\"DELETEDAT\" END AS \"DELETEDAT\"
FROM s
LEFT JOIN @MERGED_OBJECTS m ON {}
LEFT JOIN @CURRENT_OBJECTS c ON {}
LEFT JOIN @LAST_DELETIONS g ON {}",
        on("m", "s", &RECORD),
        on("c", "s", &RECORD),
        on("g", "s", &RECORD)
    )
}

/// Each stage a deal or ticket entered, from the history spans of its stage property, with the
/// stage's pipeline, label, order and closed flag from the newest `PIPELINE_STAGES` exported
/// on or before the day it entered (the oldest export for earlier days).
fn stage_spans(d: Dialect) -> String {
    let which: Vec<String> = STAGE_PROPERTIES
        .iter()
        .map(|(source, type_id, property)| {
            format!(
                "(\"SOURCE\" = {} AND \"OBJECTTYPEID\" = {} AND \"NAME\" = {})",
                string(source),
                string(type_id),
                string(property)
            )
        })
        .collect();
    let is_closed = d.json_text("st.\"METADATA\"", "isClosed");
    let entered = d.utc_date("s.\"VALID_FROM\"");
    let entered_bare = d.utc_date("\"VALID_FROM\"");
    format!(
        "WITH s AS (
  SELECT * FROM @OBJECT_PROPERTIES_HISTORY_SPANS WHERE {}
),
entered AS (
  SELECT DISTINCT \"SOURCE\", \"ACCOUNT\", {entered_bare} AS \"ENTERED_ON\" FROM s
),
stage_dates AS (
  SELECT DISTINCT \"SOURCE\", \"ACCOUNT\", \"EXPORT_DATE\" FROM @PIPELINE_STAGES
),
chosen AS (
  SELECT e.\"SOURCE\", e.\"ACCOUNT\", e.\"ENTERED_ON\",
    COALESCE(MAX(CASE WHEN sd.\"EXPORT_DATE\" <= e.\"ENTERED_ON\" THEN sd.\"EXPORT_DATE\" END), MIN(sd.\"EXPORT_DATE\")) AS \"STAGES_DATE\"
  FROM entered e
  JOIN stage_dates sd ON sd.\"SOURCE\" = e.\"SOURCE\" AND sd.\"ACCOUNT\" = e.\"ACCOUNT\"
  GROUP BY e.\"SOURCE\", e.\"ACCOUNT\", e.\"ENTERED_ON\"
)
SELECT s.\"SOURCE\", s.\"ACCOUNT\", s.\"OBJECTTYPEID\", s.\"OBJECTID\", s.\"SURVIVOR\", st.\"PIPELINEID\", s.\"VALUE\" AS \"STAGEID\",
  st.\"LABEL\" AS \"STAGELABEL\", st.\"DISPLAYORDER\" AS \"STAGEDISPLAYORDER\",
  CASE WHEN st.\"TICKETSTATE\" IS NOT NULL THEN (CASE WHEN st.\"TICKETSTATE\" = 'CLOSED' THEN TRUE ELSE FALSE END)
       WHEN {is_closed} IS NOT NULL THEN (CASE WHEN {is_closed} = 'true' THEN TRUE ELSE FALSE END) END AS \"STAGEISCLOSED\",
  s.\"VALID_FROM\" AS \"ENTEREDAT\", s.\"VALID_TO\" AS \"LEFTAT\", {} AS \"SECONDSINSTAGE\",
  s.\"IS_EARLIEST_RETAINED\", s.\"DELETED\", s.\"DELETEDAT\", c.\"STAGES_DATE\" AS \"STAGESASOF\"
FROM s
LEFT JOIN chosen c ON c.\"SOURCE\" = s.\"SOURCE\" AND c.\"ACCOUNT\" = s.\"ACCOUNT\" AND c.\"ENTERED_ON\" = {entered}
LEFT JOIN @PIPELINE_STAGES st ON st.\"SOURCE\" = s.\"SOURCE\" AND st.\"ACCOUNT\" = s.\"ACCOUNT\" AND st.\"EXPORT_DATE\" = c.\"STAGES_DATE\"
  AND st.\"OBJECTTYPEID\" = s.\"OBJECTTYPEID\" AND st.\"STAGEID\" = s.\"VALUE\"",
        which.join(" OR "),
        d.seconds_between("s.\"VALID_FROM\"", "s.\"VALID_TO\"")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_quotes_for_the_dialect_and_leaves_literals() {
        let t = "SELECT \"OBJECTID\", '\"X\" @Y' FROM @OBJECTS o";
        let bq = Names { dialect: Dialect::Bigquery, schema: Some("crm") };
        assert_eq!(render(bq, t), "SELECT `OBJECTID`, '\"X\" @Y' FROM `crm`.`OBJECTS` o");
        let pg = Names { dialect: Dialect::Postgres, schema: None };
        assert_eq!(render(pg, t), "SELECT \"OBJECTID\", '\"X\" @Y' FROM \"OBJECTS\" o");
    }
}
