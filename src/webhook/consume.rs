//! What an export makes of the webhook journal's events: one `CHANGE_EVENTS` row per event
//! (each once, by its key), and a `DELETED_OBJECTS` row per record the events say is gone:
//! deleted, privacy-deleted or merged into another. A privacy deletion also arrives as a plain
//! deletion, in either order: it is one row, `privacy_deleted`. A record restored after its
//! deletion among the same events is no longer gone.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use serde_json::Value;

use super::journal::Line;
use crate::error::Result;
use crate::schema::{BatchBuilder, TableSchema};

/// HubSpot's object type id of a subscription's object name (`contact` -> `0-1`,
/// `line_item` -> `0-8`): the standard type of that singular name.
fn hubspot_type_id(object: &str) -> Option<&'static str> {
    crate::model::STANDARD_TYPES.iter().find(|t| t.singular.eq_ignore_ascii_case(object)).map(|t| t.type_id)
}

/// Text of a JSON id or value (numbers and strings alike; null and absent as `None`).
fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

/// Why a record is gone, by the events.
#[derive(Debug, Clone, PartialEq)]
struct Gone {
    object_type: String,
    object_id: String,
    at_ms: Option<i64>,
    kind: &'static str,
    merged_into: Option<String>,
}

/// The rows of both tables for `lines` (one source's events, any accounts), built against
/// `deleted` (`DELETED_OBJECTS`) and `events` (`CHANGE_EVENTS`) as the source writes them.
/// A deletion event is no deletion until confirmed: HubSpot sends `.deletion` when a record
/// goes to the recycle bin as well as when it is deleted for good, so the records of
/// `archived_now` (type id, id: still in the recycle bin) are `archived`, not `deleted`.
pub fn tables(
    lines: &[Line],
    deleted: &Arc<TableSchema>,
    events: &Arc<TableSchema>,
    ingested_at: &Arc<str>,
    archived_now: &HashSet<(String, String)>,
) -> Result<(RecordBatch, u64, RecordBatch, u64)> {
    let mut ordered: Vec<&Line> = Vec::with_capacity(lines.len());
    let mut keys = HashSet::new();
    for line in lines {
        if keys.insert((line.source.as_str(), line.account.as_str(), line.key.as_str())) {
            ordered.push(line);
        }
    }
    ordered.sort_by(|a, b| (a.occurred_at_ms, &a.key).cmp(&(b.occurred_at_ms, &b.key)));
    let mut rows = BatchBuilder::new(events.clone(), ingested_at.clone(), ordered.len());
    let mut gone: BTreeMap<(String, String), Gone> = BTreeMap::new();
    for line in &ordered {
        let row = match line.source.as_str() {
            "pipedrive" => pipedrive_row(line, &mut gone),
            _ => hubspot_row(line, &mut gone),
        };
        rows.push_row(row.iter().map(|v| v.as_deref()));
    }
    let event_batch_unparseable = rows.unparseable();
    let event_batch = rows.finish()?;
    let mut out = BatchBuilder::new(deleted.clone(), ingested_at.clone(), gone.len());
    for g in gone.values() {
        let at = g.at_ms.map(|ms| ms.to_string());
        let key = (g.object_type.clone(), g.object_id.clone());
        let kind = if g.kind == "deleted" && archived_now.contains(&key) { "archived" } else { g.kind };
        out.push_row([
            Some(g.object_type.as_str()),
            Some(g.object_id.as_str()),
            at.as_deref(),
            Some(kind),
            g.merged_into.as_deref(),
            Some("webhook"),
        ]);
    }
    let deleted_unparseable = out.unparseable();
    Ok((out.finish()?, deleted_unparseable, event_batch, event_batch_unparseable))
}

/// The records HubSpot's `.deletion` events name, by type id: gone, or only archived (in the
/// recycle bin), which a read tells apart.
pub fn deletions_named(lines: &[Line]) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut named: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for line in lines.iter().filter(|l| l.source == "hubspot" && l.kind.ends_with(".deletion")) {
        let e = &line.value();
        let (object, _) = line.kind.split_once('.').unwrap_or((line.kind.as_str(), ""));
        let object_type = text(e.get("objectTypeId")).or_else(|| hubspot_type_id(object).map(String::from));
        if let (Some(t), Some(id)) = (object_type, text(e.get("objectId"))) {
            named.entry(t).or_default().insert(id);
        }
    }
    named
}

/// The records HubSpot events name as live and changed (created, changed, restored, merged
/// into, either end of an association change), by type id: an export reads them by id when
/// search did not show them, so that its day folder holds them, and their associations, current.
pub fn named_records(lines: &[Line]) -> BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut named: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
    for line in lines.iter().filter(|l| l.source == "hubspot") {
        let e = &line.value();
        let field = |k: &str| text(e.get(k));
        let (object, action) = line.kind.split_once('.').unwrap_or((line.kind.as_str(), ""));
        let object_type = field("objectTypeId").or_else(|| hubspot_type_id(object).map(String::from));
        let mut add = |t: Option<String>, id: Option<String>| {
            if let (Some(t), Some(id)) = (t, id) {
                named.entry(t).or_default().insert(id);
            }
        };
        match action {
            "creation" | "propertyChange" | "restore" => add(object_type, field("objectId")),
            "merge" => add(object_type, field("newObjectId").or_else(|| field("primaryObjectId"))),
            "associationChange" => {
                add(field("fromObjectTypeId").or(object_type), field("fromObjectId"));
                add(field("toObjectTypeId"), field("toObjectId"));
            }
            _ => {}
        }
    }
    named
}

/// Records `id` of `object_type` as gone (a privacy deletion wins over a plain one, whatever
/// their order).
fn mark_gone(gone: &mut BTreeMap<(String, String), Gone>, g: Gone) {
    let key = (g.object_type.clone(), g.object_id.clone());
    match gone.get(&key) {
        Some(existing) if existing.kind == "privacy_deleted" && g.kind == "deleted" => {}
        _ => {
            gone.insert(key, g);
        }
    }
}

/// The `CHANGE_EVENTS` values of a HubSpot event, in column order (without INGESTEDAT).
fn hubspot_row(line: &Line, gone: &mut BTreeMap<(String, String), Gone>) -> Vec<Option<String>> {
    let e = &line.value();
    let field = |k: &str| text(e.get(k));
    let (object, action) = line.kind.split_once('.').unwrap_or((line.kind.as_str(), ""));
    let object_type = field("objectTypeId").or_else(|| hubspot_type_id(object).map(String::from));
    let object_id = field("objectId");
    if let (Some(t), Some(id)) = (&object_type, &object_id) {
        let mark = |kind| Gone {
            object_type: t.clone(),
            object_id: id.clone(),
            at_ms: line.occurred_at_ms,
            kind,
            merged_into: None,
        };
        match action {
            "deletion" => mark_gone(gone, mark("deleted")),
            "privacyDeletion" => mark_gone(gone, mark("privacy_deleted")),
            "restore" => {
                gone.remove(&(t.clone(), id.clone()));
            }
            _ => {}
        }
    }
    let merged: Vec<String> = e
        .get("mergedObjectIds")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| text(Some(v)))
        .collect();
    if action == "merge"
        && let Some(t) = &object_type
    {
        let survivor = field("newObjectId").or_else(|| field("primaryObjectId"));
        for id in &merged {
            let g = Gone {
                object_type: t.clone(),
                object_id: id.clone(),
                at_ms: line.occurred_at_ms,
                kind: "merged",
                merged_into: survivor.clone(),
            };
            mark_gone(gone, g);
        }
    }
    let (from_type, to_type) = match (field("fromObjectTypeId"), field("toObjectTypeId")) {
        (Some(f), t) => (Some(f), t),
        // The legacy association events name the ends' types only in `associationType`
        // (CONTACT_TO_COMPANY); the subscription's object is the `from` end.
        (None, t) if action == "associationChange" => (object_type.clone(), t),
        (None, t) => (None, t),
    };
    vec![
        Some(line.source.clone()),
        Some(line.account.clone()),
        Some(line.key.clone()),
        Some(line.kind.clone()),
        object_type,
        object_id,
        field("propertyName"),
        field("propertyValue"),
        field("changeSource"),
        line.occurred_at_ms.map(|ms| ms.to_string()),
        field("attemptNumber"),
        from_type,
        field("fromObjectId"),
        to_type,
        field("toObjectId"),
        field("associationTypeId"),
        field("associationRemoved"),
        field("primaryObjectId"),
        e.get("mergedObjectIds").map(|v| v.to_string()),
        field("newObjectId"),
        Some(line.event.get().to_string()),
    ]
}

/// The `CHANGE_EVENTS` values of a Pipedrive event (v2, or v1), in column order.
fn pipedrive_row(line: &Line, gone: &mut BTreeMap<(String, String), Gone>) -> Vec<Option<String>> {
    let e = &line.value();
    let meta = |k: &str| text(e.get("meta").and_then(|m| m.get(k)));
    let entity = meta("entity").or_else(|| meta("object"));
    let action = meta("action").unwrap_or_default();
    if let (Some(t), Some(id)) = (&entity, &line.object_id)
        && matches!(action.as_str(), "delete" | "deleted")
    {
        let merged_into = meta("merged_to_id");
        let kind = if merged_into.is_some() { "merged" } else { "deleted" };
        mark_gone(
            gone,
            Gone { object_type: t.clone(), object_id: id.clone(), at_ms: line.occurred_at_ms, kind, merged_into },
        );
    }
    vec![
        Some(line.source.clone()),
        Some(line.account.clone()),
        Some(line.key.clone()),
        Some(line.kind.clone()),
        entity,
        line.object_id.clone(),
        None,
        None,
        meta("change_source"),
        line.occurred_at_ms.map(|ms| ms.to_string()),
        meta("attempt").or_else(|| text(e.get("retry"))),
        None,
        None,
        None,
        None,
        None,
        None,
        None,
        meta("merged_from_id").map(|id| Value::Array(vec![Value::String(id)]).to_string()),
        meta("merged_from_id").is_some().then(|| line.object_id.clone()).flatten(),
        Some(line.event.get().to_string()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};
    use serde_json::json;

    fn line(source: &str, key: &str, kind: &str, at: i64, event: Value) -> Line {
        Line {
            source: source.into(),
            account: "7".into(),
            key: key.into(),
            kind: kind.into(),
            object_id: text(event.get("objectId")).or_else(|| text(event.get("meta").and_then(|m| m.get("entity_id")))),
            occurred_at_ms: Some(at),
            received_at_ms: at + 5,
            event: serde_json::value::RawValue::from_string(event.to_string()).unwrap(),
        }
    }

    fn column(batch: &RecordBatch, schema: &TableSchema, name: &str) -> Vec<Option<String>> {
        let c = batch.column(schema.column_index(name).unwrap()).as_string::<i32>();
        (0..c.len()).map(|i| c.is_valid(i).then(|| c.value(i).to_string())).collect()
    }

    #[test]
    fn hubspot_deletions_merges_and_restores_become_rows_once() {
        let deleted = crate::schema::fixed_table("DELETED_OBJECTS");
        let events = crate::schema::fixed_table("CHANGE_EVENTS");
        let lines = vec![
            line(
                "hubspot",
                "7/1/1",
                "contact.deletion",
                10,
                json!({"objectId": 5, "subscriptionType": "contact.deletion"}),
            ),
            line("hubspot", "7/2/1", "contact.privacyDeletion", 20, json!({"objectId": 5})),
            line("hubspot", "7/1/1", "contact.deletion", 10, json!({"objectId": 5, "attemptNumber": 1})),
            line(
                "hubspot",
                "7/3/9",
                "company.merge",
                30,
                json!({"objectId": 8, "primaryObjectId": 8, "mergedObjectIds": [9, 10], "newObjectId": 8}),
            ),
            line("hubspot", "7/1/2", "contact.deletion", 40, json!({"objectId": 6})),
            line("hubspot", "7/4/1", "contact.restore", 50, json!({"objectId": 6})),
            line(
                "hubspot",
                "7/5/1",
                "contact.associationChange",
                60,
                json!({"fromObjectId": 1, "toObjectId": 2, "associationRemoved": true, "associationTypeId": 1, "toObjectTypeId": "0-2"}),
            ),
            line("hubspot", "7/6/1", "object.deletion", 70, json!({"objectId": 77, "objectTypeId": "2-123"})),
        ];
        let (gone, _, changes, bad) =
            tables(&lines, &deleted, &events, &"2026-11-29T00:00:00.000Z".into(), &HashSet::new()).unwrap();
        assert_eq!(bad, 0);
        assert_eq!(changes.num_rows(), 7, "the retried deletion is one event");
        let rows: Vec<[Option<String>; 4]> = (0..gone.num_rows())
            .map(|i| ["OBJECTTYPEID", "OBJECTID", "KIND", "MERGEDINTO"].map(|n| column(&gone, &deleted, n)[i].clone()))
            .collect();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            rows,
            vec![
                [s("0-1"), s("5"), s("privacy_deleted"), None],
                [s("0-2"), s("10"), s("merged"), s("8")],
                [s("0-2"), s("9"), s("merged"), s("8")],
                [s("2-123"), s("77"), s("deleted"), None],
            ],
            "one privacy deletion, two merged ids, the restored contact not gone"
        );
        assert_eq!(column(&changes, &events, "ASSOCIATIONREMOVED")[5], s("true"));
        assert_eq!(column(&changes, &events, "FROMOBJECTTYPEID")[5], s("0-1"));
        assert_eq!(column(&changes, &events, "MERGEDOBJECTIDS")[2], s("[9,10]"));
        let named = named_records(&lines);
        let ids = |t: &str| named.get(t).map(|s| s.iter().cloned().collect::<Vec<_>>()).unwrap_or_default();
        assert_eq!(ids("0-1"), ["1", "6"], "the restored contact and an association's end");
        assert_eq!(ids("0-2"), ["2", "8"], "the other end and the merge's survivor");
    }

    #[test]
    fn pipedrive_deletes_and_merge_halves() {
        let deleted = crate::schema::with_text_ids(&crate::schema::fixed_table("DELETED_OBJECTS"));
        let events = crate::schema::with_text_ids(&crate::schema::fixed_table("CHANGE_EVENTS"));
        let meta = |action: &str, id: &str, extra: Value| {
            let mut m = json!({"action": action, "entity": "person", "entity_id": id, "id": format!("u-{action}-{id}"), "attempt": 1});
            for (k, v) in extra.as_object().unwrap() {
                m[k] = v.clone();
            }
            json!({"meta": m, "data": null, "previous": {}})
        };
        let lines = vec![
            line("pipedrive", "u1", "person.delete", 10, meta("delete", "3", json!({}))),
            line("pipedrive", "u2", "person.delete", 20, meta("delete", "4", json!({"merged_to_id": "2"}))),
            line("pipedrive", "u3", "person.change", 20, meta("change", "2", json!({"merged_from_id": "4"}))),
        ];
        let (gone, _, changes, _) =
            tables(&lines, &deleted, &events, &"2026-11-29T00:00:00.000Z".into(), &HashSet::new()).unwrap();
        assert_eq!(column(&gone, &deleted, "KIND"), vec![Some("deleted".into()), Some("merged".into())]);
        assert_eq!(column(&gone, &deleted, "MERGEDINTO"), vec![None, Some("2".into())]);
        assert_eq!(column(&changes, &events, "NEWOBJECTID")[2], Some("2".into()));
        assert_eq!(column(&changes, &events, "MERGEDOBJECTIDS")[2], Some("[\"4\"]".into()));
    }
}
