//! `EVENTS_<NAME>`, one table per event type. Columns come from the event definitions where
//! HubSpot has them (custom behavioral events); for standard event types, from the
//! properties seen on the first page. Properties seen later that have no column are counted
//! in a notice rather than dropped silently.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Sender, api, unique_columns};
use crate::error::Result;
use crate::extract::{Emit, EventStream, Notice, Window};
use crate::http::HttpClient;
use crate::model;
use crate::schema::{BatchBuilder, ColumnType, event_schema, iso};

const EVENTS: &str = "/events/v3/events";
const PER_PAGE: &str = "100";

pub(super) struct DiscoveredEvent {
    pub stream: Arc<EventStream>,
    pub definition: Option<api::EventDefinition>,
}

/// One page of events of `event_type`, only those that occurred in `window` when given.
async fn page(
    client: &HttpClient,
    event_type: &str,
    window: Option<Window>,
    after: Option<&str>,
) -> Result<api::Page<api::Event>> {
    let bounds = window.map(|w| (iso(w.from), iso(w.to)));
    let mut query = vec![("eventType", event_type), ("limit", PER_PAGE)];
    if let Some((from, to)) = &bounds {
        query.extend([("occurredAfter", from.as_str()), ("occurredBefore", to.as_str())]);
    }
    if let Some(a) = after {
        query.push(("after", a));
    }
    client
        .get_json(EVENTS, &query)
        .await
        .map_err(|e| e.in_stream(format!("events {event_type}"), format!("after {}", after.unwrap_or("start"))))
}

pub(super) async fn discover(client: &HttpClient) -> Result<Vec<DiscoveredEvent>> {
    let types: api::EventTypes = client
        .get_json("/events/v3/events/event-types", &[])
        .await
        .map_err(|e| e.in_stream("event types", "GET /events/v3/events/event-types"))?;
    let mut definitions: HashMap<String, api::EventDefinition> = HashMap::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![("limit", "100"), ("includeProperties", "true")];
        if let Some(a) = &after {
            query.push(("after", a.as_str()));
        }
        let page: api::Page<api::EventDefinition> = client
            .get_json("/events/v3/event-definitions", &query)
            .await
            .map_err(|e| e.in_stream("event definitions", "GET /events/v3/event-definitions"))?;
        after = page.next_after();
        for d in page.results {
            definitions.insert(d.fully_qualified_name.clone().unwrap_or_else(|| d.name.clone()), d);
        }
        if after.is_none() {
            break;
        }
    }
    let mut out = Vec::new();
    for name in types.event_types {
        let definition = definitions.remove(&name);
        let properties: Vec<(String, ColumnType)> = match &definition {
            Some(d) => d
                .properties
                .iter()
                .map(|p| {
                    (p.name.clone(), ColumnType::from_property_type(p.property_type.as_deref().unwrap_or("string")))
                })
                .collect(),
            None => {
                let mut seen: Vec<String> = Vec::new();
                for e in page(client, &name, None, None).await?.results {
                    let mut keys: Vec<&String> = e.properties.keys().collect();
                    keys.sort();
                    for k in keys {
                        if !seen.contains(k) {
                            seen.push(k.clone());
                        }
                    }
                }
                seen.into_iter().map(|n| (n, ColumnType::Utf8)).collect()
            }
        };
        let columns = unique_columns(properties.iter().map(|(n, _)| n.as_str()));
        let table = event_schema(
            &format!("EVENTS_{}", model::upper_identifier(&name)),
            &columns.iter().cloned().zip(properties.iter().map(|(_, t)| *t)).collect::<Vec<_>>(),
        );
        out.push(DiscoveredEvent {
            stream: Arc::new(EventStream {
                event_type: name,
                properties: properties.into_iter().map(|(n, _)| n).zip(columns).collect(),
                table,
            }),
            definition,
        });
    }
    Ok(out)
}

/// `contact` -> `0-1`; an id such as `2-123` stays as it is.
fn object_type_id(object_type: &str) -> String {
    model::STANDARD_TYPES
        .iter()
        .find(|t| t.singular.eq_ignore_ascii_case(object_type) || t.api_name.eq_ignore_ascii_case(object_type))
        .map(|t| t.type_id.to_string())
        .unwrap_or_else(|| object_type.to_string())
}

/// Every event of one type, or with `window` those that occurred in it.
pub(super) async fn extract(
    client: &HttpClient,
    e: &DiscoveredEvent,
    window: Option<Window>,
    ingested: &Arc<str>,
    out: &Sender,
) -> Result<()> {
    let stream = &e.stream;
    let mut after: Option<String> = None;
    let mut unknown: HashMap<String, u64> = HashMap::new();
    loop {
        let page = page(client, &stream.event_type, window, after.as_deref()).await?;
        let mut rows = BatchBuilder::new(stream.table.clone(), ingested.clone(), page.results.len());
        // The API's bounds are checked again here: the window is half-open.
        let in_window =
            |ev: &&api::Event| window.is_none_or(|w| crate::extract::in_window(&w, ev.occurred_at.as_deref()));
        for ev in page.results.iter().filter(in_window) {
            let type_id = ev.object_type.as_deref().map(object_type_id);
            rows.push(Some(ev.id.as_str()));
            rows.push(Some(ev.event_type.as_deref().unwrap_or(&stream.event_type)));
            rows.push(type_id.as_deref());
            rows.push(ev.object_id.as_deref());
            rows.push(ev.occurred_at.as_deref());
            for (name, _) in &stream.properties {
                rows.push(ev.properties.get(name).and_then(|v| v.as_deref()));
            }
            rows.end_row();
            for k in ev.properties.keys().filter(|k| !stream.properties.iter().any(|(n, _)| n == *k)) {
                *unknown.entry(k.clone()).or_default() += 1;
            }
        }
        out.rows(&stream.table.name, &mut rows).await?;
        after = page.next_after();
        if after.is_none() {
            break;
        }
    }
    if !unknown.is_empty() {
        let mut names: Vec<_> = unknown.into_iter().map(|(k, n)| format!("{k} ({n})")).collect();
        names.sort();
        out.send(Emit::Warning(Notice {
            kind: "event_property_without_column".into(),
            table: stream.table.name.clone(),
            detail: format!("properties not on the first page, so without a column: {}", names.join(", ")),
            count: None,
        }))
        .await?;
    }
    out.complete(vec![stream.table.name.clone()]).await
}
