//! Which pairs of object types are associated, and their association types, at the fewest
//! requests. An export knows pairs from the state (what earlier runs found or asked), from
//! custom objects' schemas, and from the associations inline in a full listing's pages; it
//! asks for a pair's labels once the pair is found associated: once a run when the type is
//! read whole (so that the definitions stay current), otherwise when a read shows a type the
//! run did not know. A windowed read, whose pages carry no associations, asks once about each
//! pair from a type with changed records that no run asked about; the state keeps every
//! answer, most of them "none". Asking about every pair at once, one request per pair and
//! direction, is left to `tables`, `check` and a reconcile (which promises every
//! association). A pair the token may not ask about is recorded as having no type until a
//! reconcile asks again.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::StreamExt;

use super::{DiscoveredType, api, unless_forbidden};
use crate::error::Result;
use crate::extract::AssociationPair;
use crate::http::HttpClient;
use crate::model::{AssociationType, AssociationTypes, ObjectType, pair_key};

type Found = Vec<(ObjectType, ObjectType, Vec<AssociationType>)>;

/// Labels requests a type's job sends at once when it asks about its pairs (the rate
/// limiter still paces them).
const PARALLEL_ASKS: usize = 4;

/// `GET .../labels` of one direction.
async fn labels(client: &HttpClient, from: &ObjectType, to: &ObjectType) -> Result<Vec<AssociationType>> {
    let path = format!("/crm/v4/associations/{}/{}/labels", from.api_name, to.api_name);
    let found = client
        .get_json::<api::BatchResults<api::AssociationLabel>>(&path, &[])
        .await
        .map_err(|e| e.in_stream("association labels", format!("GET {path}")))?;
    Ok(found.results.iter().map(api::AssociationLabel::to_model).collect())
}

/// The labels of each pair, `parallel` requests at a time; a pair the token may not read
/// has none.
async fn ask(client: &HttpClient, pairs: Vec<(ObjectType, ObjectType)>, parallel: usize) -> Result<Found> {
    let answers: Vec<_> = futures::stream::iter(pairs)
        .map(|(from, to)| async move {
            let found = labels(client, &from, &to).await;
            (from, to, found)
        })
        .buffered(parallel.max(1))
        .collect()
        .await;
    answers.into_iter().map(|(from, to, found)| Ok((from, to, unless_forbidden(found)?.unwrap_or_default()))).collect()
}

/// Every pair of `types` with its association types, none for most. Association types exist
/// in both directions or in neither: each unordered pair is asked once, then the reverse
/// direction of those that have some.
pub(super) async fn every_pair(client: &HttpClient, types: &[ObjectType], parallel: usize) -> Result<Found> {
    let forward: Vec<(ObjectType, ObjectType)> =
        (0..types.len()).flat_map(|i| (i..types.len()).map(move |j| (types[i].clone(), types[j].clone()))).collect();
    let mut found = ask(client, forward, parallel).await?;
    let reverse: Vec<(ObjectType, ObjectType)> =
        found.iter().filter(|(f, t, l)| f != t && !l.is_empty()).map(|(f, t, _)| (t.clone(), f.clone())).collect();
    found.extend(ask(client, reverse, parallel).await?);
    Ok(found)
}

/// The pairs custom objects' schemas declare, in both directions, among `types`.
pub(super) fn declared(types: &[DiscoveredType]) -> Vec<(ObjectType, ObjectType)> {
    let find = |id: &Option<String>| types.iter().map(|d| &d.object_type).find(|t| Some(&t.type_id) == id.as_ref());
    let mut out: Vec<(ObjectType, ObjectType)> = Vec::new();
    for a in types.iter().filter_map(|d| d.schema.as_ref()).flat_map(|s| &s.associations) {
        let (Some(from), Some(to)) = (find(&a.from_object_type_id), find(&a.to_object_type_id)) else { continue };
        for (f, t) in [(from, to), (to, from)] {
            if !out.iter().any(|(a, b)| a == f && b == t) {
                out.push((f.clone(), t.clone()));
            }
        }
    }
    out
}

/// The association types of each pair as this run knows them, shared by the types' jobs:
/// what the state held, what reads showed, what labels requests answered. A pair known
/// with no type was asked and has none.
pub(super) struct Registry {
    known: Mutex<AssociationTypes>,
    /// Pairs whose labels this run asked for.
    asked: Mutex<HashSet<String>>,
    /// The run's object types.
    types: Vec<ObjectType>,
}

impl Registry {
    pub fn new(known: Option<AssociationTypes>, types: Vec<ObjectType>) -> Registry {
        Registry { known: Mutex::new(known.unwrap_or_default()), asked: Mutex::new(HashSet::new()), types }
    }

    /// The pairs from `from` a windowed read must read: those to the run's types that have
    /// association types. A pair never asked about is asked now (once: the state keeps the
    /// answer), so that a changed record's association in a pair no earlier run found is
    /// read too.
    pub async fn pairs_from(&self, client: &HttpClient, from: &ObjectType) -> Result<Vec<ObjectType>> {
        let unknown: Vec<(ObjectType, ObjectType)> = {
            let known = self.known.lock().expect("known lock");
            self.types
                .iter()
                .filter(|to| !known.contains_key(&pair_key(from, to)))
                .map(|to| (from.clone(), to.clone()))
                .collect()
        };
        if !unknown.is_empty() {
            tracing::info!(object_type = %from.api_name, pairs = unknown.len(), "Asking which types this one may be associated with.");
        }
        for (f, t, types) in ask(client, unknown, PARALLEL_ASKS).await? {
            self.answered(&f, &t, types);
        }
        let known = self.known.lock().expect("known lock");
        Ok(self
            .types
            .iter()
            .filter(|to| known.get(&pair_key(from, to)).is_some_and(|k| !k.is_empty()))
            .cloned()
            .collect())
    }

    /// The labels of `from` -> `to` as a labels request just answered them. None means none
    /// the other way either: association types exist in both directions or in neither.
    pub fn answered(&self, from: &ObjectType, to: &ObjectType, types: Vec<AssociationType>) {
        let key = pair_key(from, to);
        self.asked.lock().expect("asked lock").insert(key.clone());
        let mut known = self.known.lock().expect("known lock");
        if types.is_empty() {
            known.entry(pair_key(to, from)).or_default();
        }
        known.insert(key, sorted(types));
    }

    /// After a read of `pair` showed `seen`: keeps them, and asks for the pair's labels (the
    /// ones no record uses too) once a run when `refresh`, or when a type was new.
    pub async fn saw(
        &self,
        client: &HttpClient,
        pair: &AssociationPair,
        seen: Vec<AssociationType>,
        refresh: bool,
    ) -> Result<()> {
        if !self.keep(&pair.from, &pair.to, &seen, refresh) {
            return Ok(());
        }
        if let Ok(mut types) = unless_forbidden(labels(client, &pair.from, &pair.to).await)? {
            // The answer is the pair's current list; a type a read showed stays even if the
            // answer lacks it.
            types
                .extend(seen.into_iter().filter(|s| !types.iter().any(|t| t.type_id == s.type_id)).collect::<Vec<_>>());
            self.known.lock().expect("known lock").insert(pair_key(&pair.from, &pair.to), sorted(types));
        }
        Ok(())
    }

    /// Adds `seen` to the pair's types; true when its labels are to be asked for now: not
    /// yet this run, and `refresh` or a type was new.
    fn keep(&self, from: &ObjectType, to: &ObjectType, seen: &[AssociationType], refresh: bool) -> bool {
        let key = pair_key(from, to);
        let new = {
            let mut known = self.known.lock().expect("known lock");
            let entry = known.entry(key.clone()).or_default();
            let before = entry.len();
            entry.extend(seen.iter().cloned());
            *entry = sorted(std::mem::take(entry));
            entry.len() > before
        };
        (refresh || new) && self.asked.lock().expect("asked lock").insert(key)
    }

    /// Every pair known, with its types.
    pub fn snapshot(&self) -> AssociationTypes {
        self.known.lock().expect("known lock").clone()
    }
}

fn sorted(mut types: Vec<AssociationType>) -> Vec<AssociationType> {
    types.sort();
    types.dedup_by(|a, b| a.type_id == b.type_id);
    types
}

/// What a full listing asks inline (`associations=`), and how the answer names the types.
pub(super) struct Inline {
    /// The `associations=` value: every type of the catalog.
    pub query: String,
    /// Each name HubSpot may give a type in the answer (API name, type id, plural, singular,
    /// a custom object's name and fully qualified name), lower case, to the type.
    names: HashMap<String, ObjectType>,
    warned: AtomicBool,
}

impl Inline {
    pub fn new(types: &[DiscoveredType]) -> Inline {
        let mut names = HashMap::new();
        let mut asked = Vec::new();
        for d in types {
            let t = &d.object_type;
            let schema = d.schema.as_ref();
            let aliases = [Some(&t.api_name), Some(&t.type_id), Some(&t.plural), Some(&t.singular)]
                .into_iter()
                .chain([schema.map(|s| &s.name), schema.and_then(|s| s.fully_qualified_name.as_ref())]);
            for alias in aliases.flatten() {
                names.entry(alias.to_lowercase()).or_insert_with(|| t.clone());
            }
            asked.push(schema.and_then(|s| s.fully_qualified_name.clone()).unwrap_or_else(|| t.api_name.clone()));
        }
        Inline { query: asked.join(","), names, warned: AtomicBool::new(false) }
    }

    /// The types `record` has associations with, by what its inline answer holds.
    pub fn targets(&self, record: &api::SimpleObject) -> Vec<ObjectType> {
        let mut out: Vec<ObjectType> = Vec::new();
        for (name, found) in &record.associations {
            if found.results.is_empty() {
                continue;
            }
            // HubSpot answers in lower case: the lookup allocates only when it does not.
            let known = self.names.get(name).or_else(|| self.names.get(&name.to_lowercase()));
            match known {
                Some(t) if !out.contains(t) => out.push(t.clone()),
                Some(_) => {}
                None if !self.warned.swap(true, Ordering::Relaxed) => {
                    tracing::warn!(name = %name, "A listed record has associations with a type crmdump does not know by this name; they are read when the state or a reconcile names the pair.")
                }
                None => {}
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model;

    fn t(name: &str) -> ObjectType {
        model::standard_type(name).unwrap().to_object_type()
    }

    fn kind(type_id: i64, label: Option<&str>) -> AssociationType {
        AssociationType { type_id, category: Some("HUBSPOT_DEFINED".into()), label: label.map(str::to_string) }
    }

    #[test]
    fn labels_are_asked_once_a_run_and_only_when_refreshing_or_a_type_is_new() {
        let (contacts, companies, deals) = (t("contacts"), t("companies"), t("deals"));
        let mut state = AssociationTypes::new();
        state.insert(pair_key(&contacts, &companies), vec![kind(1, Some("Primary")), kind(279, None)]);
        let registry = Registry::new(Some(state), vec![contacts.clone(), companies.clone(), deals.clone()]);
        // Known types on a windowed read: nothing to ask.
        assert!(!registry.keep(&contacts, &companies, &[kind(279, None)], false));
        // A type the state lacks: ask, once.
        assert!(registry.keep(&contacts, &companies, &[kind(1001, Some("Billing"))], false));
        assert!(!registry.keep(&contacts, &companies, &[kind(1002, Some("Other"))], false));
        // A pair read whole: asked once this run, even with nothing new.
        assert!(registry.keep(&contacts, &deals, &[], true));
        assert!(!registry.keep(&contacts, &deals, &[kind(4, None)], true));
        let known = registry.snapshot();
        let ids: Vec<i64> = known[&pair_key(&contacts, &companies)].iter().map(|k| k.type_id).collect();
        assert_eq!(ids, [1, 279, 1001, 1002], "every type seen is kept, in order, once");
        assert_eq!(known[&pair_key(&contacts, &deals)], [kind(4, None)]);
        // A labels answer replaces what the pair had.
        registry.answered(&contacts, &deals, vec![kind(4, None), kind(3, Some("Primary"))]);
        assert_eq!(registry.snapshot()[&pair_key(&contacts, &deals)], [kind(3, Some("Primary")), kind(4, None)]);
        // None one way is none the other way: neither is asked again.
        registry.answered(&companies, &deals, Vec::new());
        let known = registry.snapshot();
        assert!(known[&pair_key(&deals, &companies)].is_empty() && known[&pair_key(&companies, &deals)].is_empty());
    }

    fn discovered(object_type: ObjectType, schema: Option<api::ObjectSchema>) -> DiscoveredType {
        DiscoveredType { object_type, properties: Vec::new(), schema }
    }

    fn cars() -> (ObjectType, api::ObjectSchema) {
        let schema: api::ObjectSchema = serde_json::from_value(serde_json::json!({
            "objectTypeId": "2-77", "name": "cars", "fullyQualifiedName": "p42_cars",
            "labels": {"singular": "Car", "plural": "Cars"},
            "associations": [
                {"fromObjectTypeId": "2-77", "toObjectTypeId": "0-1", "id": "9", "name": "car_to_contact"},
                {"fromObjectTypeId": "2-77", "toObjectTypeId": "0-999", "id": "10"}
            ]
        }))
        .unwrap();
        (super::super::custom_type(&schema).unwrap(), schema)
    }

    #[test]
    fn schemas_declare_their_pairs_both_ways_among_the_types_read() {
        let (car, schema) = cars();
        let types = [discovered(t("contacts"), None), discovered(car.clone(), Some(schema))];
        let pairs = declared(&types);
        assert_eq!(pairs, [(car.clone(), t("contacts")), (t("contacts"), car)], "0-999 is not read: left out");
    }

    #[test]
    fn inline_answers_name_types_as_hubspot_does_and_empty_ones_do_not_count() {
        let (car, schema) = cars();
        let inline = Inline::new(&[
            discovered(t("contacts"), None),
            discovered(t("companies"), None),
            discovered(car.clone(), Some(schema)),
        ]);
        assert_eq!(inline.query, "contacts,companies,p42_cars");
        let record: api::SimpleObject = serde_json::from_value(serde_json::json!({
            "id": "1",
            "associations": {
                "companies": {"results": [{"id": "7", "type": "contact_to_company"}]},
                "p42_cars": {"results": [{"id": "8", "type": "contact_to_car"}]},
                "deals": {"results": []},
                "unknown_things": {"results": [{"id": "9"}]}
            }
        }))
        .unwrap();
        let mut found = inline.targets(&record);
        found.sort_by(|a, b| a.type_id.cmp(&b.type_id));
        assert_eq!(found, [t("companies"), car]);
    }
}
