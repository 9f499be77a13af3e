//! HubSpot response shapes (reference/hubspot-api.md). Only the fields we export; every
//! field that HubSpot may leave out is optional, and property values accept any JSON scalar.

use std::collections::HashMap;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

#[derive(Debug, Deserialize)]
pub struct NextPage {
    pub after: String,
}

#[derive(Debug, Deserialize)]
pub struct Paging {
    pub next: Option<NextPage>,
}

/// `CollectionResponse...ForwardPaging`: `results` plus an optional cursor.
#[derive(Debug, Deserialize)]
pub struct Page<T> {
    pub results: Vec<T>,
    pub paging: Option<Paging>,
}

impl<T> Page<T> {
    pub fn next_after(&self) -> Option<String> {
        self.paging.as_ref()?.next.as_ref().map(|n| n.after.clone())
    }
}

/// `SimplePublicObject`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SimpleObject {
    pub id: String,
    #[serde(default, deserialize_with = "scalar_map")]
    pub properties: HashMap<String, Option<String>>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    #[serde(default)]
    pub archived: bool,
    pub archived_at: Option<String>,
    #[serde(default)]
    pub properties_with_history: HashMap<String, Vec<HistoryEntry>>,
}

/// Records of a page read one by one: a record that is not a `SimpleObject` with a numeric
/// id is left out and described (a data problem of that record, not of the page).
pub fn records(values: Vec<serde_json::Value>) -> (Vec<SimpleObject>, Vec<String>) {
    let mut good = Vec::with_capacity(values.len());
    let mut bad = Vec::new();
    for v in values {
        let id = v.get("id").map(|i| i.to_string()).unwrap_or_else(|| "without an id".into());
        match serde_json::from_value::<SimpleObject>(v) {
            Ok(r) if !r.id.is_empty() && r.id.bytes().all(|b| b.is_ascii_digit()) => good.push(r),
            Ok(r) => bad.push(format!("record {:?}: the id is not a number", r.id)),
            Err(e) => bad.push(format!("record {id}: {e}")),
        }
    }
    (good, bad)
}

/// `ValueWithTimestamp`: one historical value of a property.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    #[serde(default, deserialize_with = "opt_id_text")]
    pub value: Option<String>,
    pub timestamp: String,
    pub source_type: Option<String>,
    #[serde(default, deserialize_with = "opt_id_text")]
    pub source_id: Option<String>,
    #[serde(default, deserialize_with = "opt_id_text")]
    pub updated_by_user_id: Option<String>,
}

/// Property values are strings in HubSpot's spec; numbers and booleans are accepted too.
fn scalar_map<'de, D: Deserializer<'de>>(d: D) -> Result<HashMap<String, Option<String>>, D::Error> {
    let raw: HashMap<String, Value> = HashMap::deserialize(d)?;
    Ok(raw.into_iter().map(|(k, v)| (k, scalar_text(v))).collect())
}

pub fn scalar_text(v: Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

/// Accepts an id sent as a JSON string or number.
pub fn id_text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s),
        Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!("expected an id, got {other}"))),
    }
}

pub fn opt_id_text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(Option::<Value>::deserialize(d)?.and_then(scalar_text))
}

#[derive(Debug, Deserialize)]
pub struct BatchResults<T> {
    pub results: Vec<T>,
}

/// `Property` (properties API and custom-object schemas).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Property {
    pub name: String,
    pub label: Option<String>,
    #[serde(rename = "type")]
    pub property_type: Option<String>,
    pub field_type: Option<String>,
    pub group_name: Option<String>,
    pub description: Option<String>,
    #[serde(default)]
    pub options: Value,
    pub calculated: Option<bool>,
    pub hubspot_defined: Option<bool>,
    pub has_unique_value: Option<bool>,
    pub hidden: Option<bool>,
    pub archived: Option<bool>,
    pub data_sensitivity: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Labels {
    pub singular: Option<String>,
    pub plural: Option<String>,
}

/// `ObjectSchema` of a custom object.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectSchema {
    pub id: Option<String>,
    pub object_type_id: Option<String>,
    pub name: String,
    pub fully_qualified_name: Option<String>,
    pub labels: Labels,
    pub primary_display_property: Option<String>,
    pub archived: Option<bool>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

/// v4 association label (`AssociationSpecWithLabel`).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationLabel {
    pub category: Option<String>,
    pub type_id: i64,
    pub label: Option<String>,
}

/// v4 batch read result for one input.
#[derive(Debug, Deserialize)]
pub struct AssociationResult {
    pub from: AssociationFrom,
    #[serde(default)]
    pub to: Vec<AssociationTo>,
    pub paging: Option<Paging>,
}

#[derive(Debug, Deserialize)]
pub struct AssociationFrom {
    #[serde(deserialize_with = "id_text")]
    pub id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AssociationTo {
    #[serde(deserialize_with = "id_text")]
    pub to_object_id: String,
    #[serde(default)]
    pub association_types: Vec<AssociationLabel>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerTeam {
    #[serde(deserialize_with = "id_text")]
    pub id: String,
    pub name: Option<String>,
    pub primary: Option<bool>,
}

/// `PublicOwner`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    #[serde(deserialize_with = "id_text")]
    pub id: String,
    #[serde(rename = "type")]
    pub owner_type: Option<String>,
    pub email: Option<String>,
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    #[serde(default, deserialize_with = "opt_id_text")]
    pub user_id: Option<String>,
    #[serde(default, deserialize_with = "opt_id_text")]
    pub user_id_including_inactive: Option<String>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    #[serde(default)]
    pub archived: bool,
    #[serde(default)]
    pub teams: Vec<OwnerTeam>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineStage {
    pub id: String,
    pub label: Option<String>,
    pub display_order: Option<i64>,
    #[serde(default)]
    pub metadata: serde_json::Map<String, Value>,
    pub archived: Option<bool>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Pipeline {
    pub id: String,
    pub label: Option<String>,
    pub display_order: Option<i64>,
    pub archived: Option<bool>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    #[serde(default)]
    pub stages: Vec<PipelineStage>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountDetails {
    #[serde(deserialize_with = "id_text")]
    pub portal_id: String,
}

/// `ListSearchResponse` (offset paging).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListSearch {
    pub lists: Vec<List>,
    #[serde(default)]
    pub has_more: bool,
    #[serde(default)]
    pub offset: u64,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct List {
    #[serde(deserialize_with = "id_text")]
    pub list_id: String,
    pub name: Option<String>,
    pub object_type_id: Option<String>,
    pub processing_type: Option<String>,
    pub processing_status: Option<String>,
    #[serde(default, deserialize_with = "opt_id_text")]
    pub list_version: Option<String>,
    #[serde(default, deserialize_with = "opt_id_text")]
    pub size: Option<String>,
    #[serde(default)]
    pub additional_properties: HashMap<String, Value>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    pub deleted_at: Option<String>,
    #[serde(default, deserialize_with = "opt_id_text")]
    pub created_by_id: Option<String>,
    #[serde(default, deserialize_with = "opt_id_text")]
    pub updated_by_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Membership {
    #[serde(deserialize_with = "id_text")]
    pub record_id: String,
    pub membership_timestamp: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventTypes {
    pub event_types: Vec<String>,
}

/// `ExternalUnifiedEvent`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    #[serde(deserialize_with = "id_text")]
    pub id: String,
    pub event_type: Option<String>,
    pub object_type: Option<String>,
    #[serde(default, deserialize_with = "opt_id_text")]
    pub object_id: Option<String>,
    pub occurred_at: Option<String>,
    #[serde(default, deserialize_with = "scalar_map")]
    pub properties: HashMap<String, Option<String>>,
}

#[derive(Debug, Deserialize)]
pub struct EventProperty {
    pub name: String,
    #[serde(rename = "type")]
    pub property_type: Option<String>,
}

/// A custom behavioral event definition.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventDefinition {
    pub name: String,
    pub fully_qualified_name: Option<String>,
    pub labels: Option<Labels>,
    pub object_type_id: Option<String>,
    pub archived: Option<bool>,
    pub created_at: Option<String>,
    pub updated_at: Option<String>,
    #[serde(default)]
    pub properties: Vec<EventProperty>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Team {
    #[serde(deserialize_with = "id_text")]
    pub id: String,
    pub name: Option<String>,
    #[serde(default)]
    pub user_ids: Vec<Value>,
    #[serde(default)]
    pub secondary_user_ids: Vec<Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn association_ids_accept_numbers_and_strings() {
        let r: AssociationResult = serde_json::from_str(
            r#"{"from":{"id":"1"},"to":[{"toObjectId":2002,"associationTypes":[{"category":"HUBSPOT_DEFINED","typeId":279,"label":null}]},{"toObjectId":"2003","associationTypes":[]}]}"#,
        )
        .unwrap();
        assert_eq!(r.to[0].to_object_id, "2002");
        assert_eq!(r.to[1].to_object_id, "2003");
        assert!(r.paging.is_none());
    }

    /// Arbitrary bytes, and a real page mutated byte by byte, never panic the page parsers:
    /// they parse or return an error (which the client retries, then reports with a snippet).
    #[test]
    fn page_parsers_survive_arbitrary_and_mutated_bytes() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../../fixtures/hubspot/contacts-page.json")).unwrap();
        let page = serde_json::to_vec(&fixture["api"]["get"]["/crm/v3/objects/contacts"]["response"]).unwrap();
        let mut state: u64 = 0x5EED;
        let mut next = || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            state >> 33
        };
        let alphabet = b"{}[]\":,0123456789.-eEtrufalsn\\ \xff\xfe\x00abc";
        let mut parsed = 0;
        for round in 0..20_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let mut b = page.clone();
                for _ in 0..1 + next() % 8 {
                    let at = (next() as usize) % b.len();
                    match next() % 3 {
                        0 => b[at] = alphabet[(next() as usize) % alphabet.len()],
                        1 => {
                            b.remove(at);
                        }
                        _ => b.truncate(at),
                    }
                    if b.is_empty() {
                        break;
                    }
                }
                b
            } else {
                (0..next() % 64).map(|_| alphabet[(next() as usize) % alphabet.len()]).collect()
            };
            parsed += serde_json::from_slice::<Page<SimpleObject>>(&bytes).is_ok() as u32;
            let _ = serde_json::from_slice::<BatchResults<AssociationResult>>(&bytes);
            let _ = serde_json::from_slice::<Page<Event>>(&bytes);
        }
        assert!(parsed > 100, "some mutations still parse (values changed, shape kept): {parsed}");
    }
}
