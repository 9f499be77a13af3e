//! The test hooks that change the account the way users and the CRM itself do between two
//! nightly runs, beyond touch and archive: delete for good, privacy deletion, merge, restore,
//! associate and dissociate (privacy deletion and associations for HubSpot only: in Pipedrive
//! an association is a foreign key, and changing one is an ordinary change, a touch). Each changes the data every endpoint serves and the
//! ground truth (`GET /_sandbox/changes`, `GET /_sandbox/association-changes`), and sends the
//! webhooks HubSpot sends for it when the sandbox has a webhook URL.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Answer, HookBody, Shared, invalid_json, reject, resolve_type};
use crate::webhooks::PipedriveChange;

pub(super) fn routes() -> axum::Router<Shared> {
    axum::Router::new()
        .route("/_sandbox/delete", post(delete))
        .route("/_sandbox/privacy-delete", post(privacy_delete))
        .route("/_sandbox/merge", post(merge))
        .route("/_sandbox/restore", post(restore))
        .route("/_sandbox/associate", post(associate))
        .route("/_sandbox/dissociate", post(dissociate))
        .route("/_sandbox/association-changes", get(association_changes))
}

fn hubspot_only(state: &Shared) -> std::result::Result<(), super::Rejection> {
    match state.pipedrive {
        Some(_) => Err(reject(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", "this hook is for the HubSpot flavour")),
        None => Ok(()),
    }
}

fn bad(message: String) -> super::Rejection {
    reject(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
}

/// A Pipedrive id as its JSON: a number, or a string (leads' UUIDs).
fn number(id: &str) -> Value {
    id.parse::<i64>().map(Value::from).unwrap_or_else(|_| json!(id))
}

fn ids(ids: &[i64]) -> Vec<String> {
    ids.iter().map(|id| id.to_string()).collect()
}

/// `POST /_sandbox/delete`: deletes records for good (gone from lists, reads, search,
/// associations and the recycle bin). Webhook: `<type>.deletion`.
async fn delete(State(state): State<Shared>, body: Result<Json<HookBody>, JsonRejection>) -> Answer {
    let Json(body) = body.map_err(invalid_json)?;
    if let Some(w) = &state.pipedrive {
        let e = super::pipedrive_entity(w, &body.object_type)?;
        let at = super::super::pipedrive::seconds(body.at()?);
        let deleted = w.delete(e, body.count, at).map_err(bad)?;
        if let Some(sender) = &state.webhooks {
            let entity = super::super::pipedrive::ENTITIES[e].name;
            let events = deleted
                .iter()
                .map(|id| {
                    let change = PipedriveChange {
                        entity,
                        action: "delete",
                        id,
                        at,
                        data: Value::Null,
                        previous: json!({"id": number(id)}),
                        meta: json!({}),
                    };
                    sender.pipedrive_event(w.company_id, change)
                })
                .collect();
            sender.send_pipedrive(events);
        }
        return Ok(
            Json(json!({"objectType": body.object_type, "at": super::super::iso(at), "ids": deleted})).into_response()
        );
    }
    let g = &state.generator;
    let t = resolve_type(g, &body.object_type)?;
    let at = body.at()?;
    let deleted = g.delete(t, body.count, at, false).map_err(bad)?;
    if let Some(sender) = &state.webhooks {
        let changes: Vec<(String, i64)> = deleted.iter().map(|id| (id.to_string(), at.timestamp_millis())).collect();
        sender.send_hubspot(sender.hubspot_events(g.portal_id, &g.types[t].type_id, "deletion", None, &changes));
    }
    Ok(Json(json!({"objectType": g.types[t].api_name, "at": super::super::iso(at), "ids": ids(&deleted)}))
        .into_response())
}

/// `POST /_sandbox/privacy-delete`: a contact's GDPR deletion. Webhooks, as HubSpot sends
/// them: `contact.privacyDeletion` and `contact.deletion` for each, in separate batches, in an
/// order that varies between calls.
async fn privacy_delete(State(state): State<Shared>, body: Result<Json<HookBody>, JsonRejection>) -> Answer {
    hubspot_only(&state)?;
    let Json(body) = body.map_err(invalid_json)?;
    let g = &state.generator;
    let t = resolve_type(g, &body.object_type)?;
    let at = body.at()?;
    let deleted = g.delete(t, body.count, at, true).map_err(bad)?;
    if let Some(sender) = &state.webhooks {
        let changes: Vec<(String, i64)> = deleted.iter().map(|id| (id.to_string(), at.timestamp_millis())).collect();
        let type_id = &g.types[t].type_id;
        let privacy = sender.hubspot_events(g.portal_id, type_id, "privacyDeletion", None, &changes);
        let deletion = sender.hubspot_events(g.portal_id, type_id, "deletion", None, &changes);
        if deleted.first().is_some_and(|id| id % 2 == 0) {
            sender.send_hubspot(deletion);
            sender.send_hubspot(privacy);
        } else {
            sender.send_hubspot(privacy);
            sender.send_hubspot(deletion);
        }
    }
    Ok(Json(json!({"objectType": g.types[t].api_name, "at": super::super::iso(at), "ids": ids(&deleted)}))
        .into_response())
}

/// `POST /_sandbox/merge`: `count` merges, each of two live records, the higher id into the
/// lower. Webhook: `<type>.merge` with `primaryObjectId`, `mergedObjectIds`, `newObjectId`.
async fn merge(State(state): State<Shared>, body: Result<Json<HookBody>, JsonRejection>) -> Answer {
    let Json(body) = body.map_err(invalid_json)?;
    if let Some(w) = &state.pipedrive {
        let e = super::pipedrive_entity(w, &body.object_type)?;
        let at = super::super::pipedrive::seconds(body.at()?);
        let pairs = w.merge(e, body.count, at).map_err(bad)?;
        if let Some(sender) = &state.webhooks {
            // Pipedrive's v2 merge: the merged-away record's delete with `merged_to_id`, the
            // survivor's change with `merged_from_id`.
            let entity = super::super::pipedrive::ENTITIES[e].name;
            let mut events = Vec::new();
            for (survivor, merged) in &pairs {
                let deleted = PipedriveChange {
                    entity,
                    action: "delete",
                    id: merged,
                    at,
                    data: Value::Null,
                    previous: json!({"id": number(merged)}),
                    meta: json!({"merged_to_id": survivor}),
                };
                events.push(sender.pipedrive_event(w.company_id, deleted));
                let survived = PipedriveChange {
                    entity,
                    action: "change",
                    id: survivor,
                    at,
                    data: json!({"id": number(survivor), "update_time": super::super::iso(at)}),
                    previous: json!({}),
                    meta: json!({"merged_from_id": merged}),
                };
                events.push(sender.pipedrive_event(w.company_id, survived));
            }
            sender.send_pipedrive(events);
        }
        let merges: Vec<Value> = pairs.iter().map(|(s, m)| json!({"survivor": s, "merged": m})).collect();
        return Ok(Json(json!({"objectType": body.object_type, "at": super::super::iso(at), "merges": merges}))
            .into_response());
    }
    let g = &state.generator;
    let t = resolve_type(g, &body.object_type)?;
    let at = body.at()?;
    let pairs = g.merge(t, body.count, at).map_err(bad)?;
    if let Some(sender) = &state.webhooks {
        let events = pairs
            .iter()
            .map(|&(survivor, merged)| {
                let extra = json!({"primaryObjectId": survivor, "mergedObjectIds": [merged],
                                   "newObjectId": survivor, "numberOfPropertiesMoved": 0});
                sender.hubspot_event(
                    g.portal_id,
                    &g.types[t].type_id,
                    "merge",
                    &survivor.to_string(),
                    at.timestamp_millis(),
                    extra,
                )
            })
            .collect();
        sender.send_hubspot(events);
    }
    let merges: Vec<Value> =
        pairs.iter().map(|(s, m)| json!({"survivor": s.to_string(), "merged": m.to_string()})).collect();
    Ok(Json(json!({"objectType": g.types[t].api_name, "at": super::super::iso(at), "merges": merges})).into_response())
}

/// `POST /_sandbox/restore`: takes archived records out of the recycle bin. Webhook:
/// `<type>.restore`.
async fn restore(State(state): State<Shared>, body: Result<Json<HookBody>, JsonRejection>) -> Answer {
    let Json(body) = body.map_err(invalid_json)?;
    if let Some(w) = &state.pipedrive {
        let e = super::pipedrive_entity(w, &body.object_type)?;
        let at = super::super::pipedrive::seconds(body.at()?);
        let restored = w.restore(e, body.count, at).map_err(bad)?;
        if let Some(sender) = &state.webhooks {
            let changes = restored
                .iter()
                .map(|id| {
                    (
                        id.clone(),
                        at,
                        json!({"id": number(id), "is_archived": false, "archive_time": null}),
                        json!({"is_archived": true}),
                    )
                })
                .collect();
            sender.send_pipedrive(sender.pipedrive_events(
                w.company_id,
                super::super::pipedrive::ENTITIES[e].name,
                changes,
            ));
        }
        return Ok(
            Json(json!({"objectType": body.object_type, "at": super::super::iso(at), "ids": restored})).into_response()
        );
    }
    let g = &state.generator;
    let t = resolve_type(g, &body.object_type)?;
    let at = body.at()?;
    let restored = g.restore(t, body.count, at).map_err(bad)?;
    if let Some(sender) = &state.webhooks {
        let changes: Vec<(String, i64)> = restored.iter().map(|id| (id.to_string(), at.timestamp_millis())).collect();
        sender.send_hubspot(sender.hubspot_events(g.portal_id, &g.types[t].type_id, "restore", None, &changes));
    }
    Ok(Json(json!({"objectType": g.types[t].api_name, "at": super::super::iso(at), "ids": ids(&restored)}))
        .into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LinkBody {
    from_object_type: String,
    to_object_type: String,
    count: u64,
    at: Option<String>,
}

async fn associate(State(state): State<Shared>, body: Result<Json<LinkBody>, JsonRejection>) -> Answer {
    link(&state, body, false)
}

async fn dissociate(State(state): State<Shared>, body: Result<Json<LinkBody>, JsonRejection>) -> Answer {
    link(&state, body, true)
}

/// `POST /_sandbox/associate` and `/_sandbox/dissociate`: associations added or removed
/// without moving either record's last-modified date. Webhooks: `<type>.associationChange`
/// from each end, with `associationRemoved`.
fn link(state: &Shared, body: Result<Json<LinkBody>, JsonRejection>, remove: bool) -> Answer {
    hubspot_only(state)?;
    let Json(body) = body.map_err(invalid_json)?;
    let g = &state.generator;
    let (from, to) = (resolve_type(g, &body.from_object_type)?, resolve_type(g, &body.to_object_type)?);
    let hook = HookBody { object_type: String::new(), count: body.count, at: body.at.clone(), spread_ms: 0 };
    let at = hook.at()?;
    let pairs = g.link(from, to, body.count, remove, at).map_err(bad)?;
    if let Some(sender) = &state.webhooks {
        let name = |t: usize| g.types[t].singular_label.to_uppercase().replace(' ', "_");
        let type_id = |a: usize, b: usize| g.association_labels(a, b).first().map(|l| l.type_id).unwrap_or_default();
        let mut events = Vec::new();
        for &(a, b) in &pairs {
            for (x, xid, y, yid) in [(from, a, to, b), (to, b, from, a)] {
                let extra = json!({
                    "associationType": format!("{}_TO_{}", name(x), name(y)),
                    "fromObjectId": xid, "toObjectId": yid, "associationRemoved": remove,
                    "isPrimaryAssociation": false, "fromObjectTypeId": g.types[x].type_id,
                    "toObjectTypeId": g.types[y].type_id, "associationTypeId": type_id(x, y),
                    "associationCategory": "HUBSPOT_DEFINED",
                });
                events.push(sender.hubspot_event(
                    g.portal_id,
                    &g.types[x].type_id,
                    "associationChange",
                    "",
                    at.timestamp_millis(),
                    extra,
                ));
            }
        }
        sender.send_hubspot(events);
    }
    let pairs: Vec<Value> = pairs.iter().map(|(a, b)| json!({"from": a.to_string(), "to": b.to_string()})).collect();
    Ok(Json(json!({"at": super::super::iso(at), "removed": remove, "pairs": pairs})).into_response())
}

/// `GET /_sandbox/association-changes`: every association a hook added or removed, in order.
async fn association_changes(State(state): State<Shared>) -> Answer {
    let g = &state.generator;
    let changes: Vec<Value> = g
        .link_changes()
        .iter()
        .map(|c| {
            json!({
                "fromObjectType": g.types[c.from.0].api_name, "fromId": g.types[c.from.0].id_of(c.from.1).to_string(),
                "toObjectType": g.types[c.to.0].api_name, "toId": g.types[c.to.0].id_of(c.to.1).to_string(),
                "removed": c.removed, "at": super::super::iso(c.at),
            })
        })
        .collect();
    Ok(Json(json!({"changes": changes})).into_response())
}
