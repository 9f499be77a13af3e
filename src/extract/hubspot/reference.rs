//! Reference tables, always exported whole: type and property definitions (from
//! discovery), association definitions (once the reads showed each pair's types), owners
//! with their teams, and pipelines with their stages.

use std::sync::Arc;

use super::{Catalog, Discovery, Sender, api};
use crate::error::Result;
use crate::http::HttpClient;
use crate::model;
use crate::schema::{BatchBuilder, fixed_table};

fn builder(table: &str, ingested: &Arc<str>, capacity: usize) -> BatchBuilder {
    BatchBuilder::new(fixed_table(table), ingested.clone(), capacity)
}

fn flag(b: Option<bool>) -> Option<&'static str> {
    b.map(|v| if v { "true" } else { "false" })
}

/// "LINE_ITEM" -> "Line item".
fn label_from_identifier(id: &str) -> String {
    let lower = id.to_lowercase().replace('_', " ");
    let mut chars = lower.chars();
    chars.next().map(|c| c.to_uppercase().collect::<String>() + chars.as_str()).unwrap_or_default()
}

pub(super) async fn emit_definitions(
    catalog: &Catalog,
    discovery: &Discovery,
    ingested: &Arc<str>,
    out: &Sender,
) -> Result<()> {
    let mut types = builder("OBJECT_AND_EVENT_TYPE_DEFINITIONS", ingested, discovery.types.len());
    let mut props = builder("PROPERTY_DEFINITIONS", ingested, 256);
    for d in &discovery.types {
        let t = &d.object_type;
        match &d.schema {
            Some(s) => types.push_row([
                Some(t.type_id.as_str()),
                Some("OBJECT"),
                Some(s.name.as_str()),
                s.fully_qualified_name.as_deref(),
                s.labels.singular.as_deref(),
                s.labels.plural.as_deref(),
                s.primary_display_property.as_deref(),
                flag(s.archived.or(Some(false))),
                s.created_at.as_deref(),
                s.updated_at.as_deref(),
            ]),
            None => {
                let singular = label_from_identifier(&t.singular);
                let plural = label_from_identifier(&t.plural);
                types.push_row([
                    Some(t.type_id.as_str()),
                    Some("OBJECT"),
                    Some(t.api_name.as_str()),
                    Some(t.api_name.as_str()),
                    Some(singular.as_str()),
                    Some(plural.as_str()),
                    None,
                    Some("false"),
                    None,
                    None,
                ]);
            }
        }
        let stream = catalog.objects.iter().find(|o| o.object_type.type_id == t.type_id);
        for p in &d.properties {
            let column = stream
                .and_then(|s| s.properties.iter().find(|q| q.name == p.name))
                .map(|q| q.column.clone())
                .unwrap_or_else(|| model::property_column(&p.name));
            let options = (!p.options.is_null()).then(|| p.options.to_string());
            props.push_row([
                Some(t.type_id.as_str()),
                Some(p.name.as_str()),
                p.label.as_deref(),
                p.property_type.as_deref(),
                p.field_type.as_deref(),
                p.group_name.as_deref(),
                p.description.as_deref(),
                options.as_deref(),
                flag(p.calculated),
                flag(p.hubspot_defined),
                flag(p.has_unique_value),
                flag(p.hidden),
                flag(p.archived),
                p.data_sensitivity.as_deref(),
                Some(column.as_str()),
                p.created_at.as_deref(),
                p.updated_at.as_deref(),
            ]);
        }
    }
    for e in &discovery.events {
        let name = e.stream.event_type.as_str();
        let d = e.definition.as_ref();
        let labels = d.and_then(|d| d.labels.as_ref());
        types.push_row([
            Some(name),
            Some("EVENT"),
            Some(d.map(|d| d.name.as_str()).unwrap_or(name)),
            Some(d.and_then(|d| d.fully_qualified_name.as_deref()).unwrap_or(name)),
            labels.and_then(|l| l.singular.as_deref()),
            labels.and_then(|l| l.plural.as_deref()),
            None,
            flag(d.and_then(|d| d.archived).or(Some(false))),
            d.and_then(|d| d.created_at.as_deref()),
            d.and_then(|d| d.updated_at.as_deref()),
        ]);
    }
    out.rows("OBJECT_AND_EVENT_TYPE_DEFINITIONS", &mut types).await?;
    out.rows("PROPERTY_DEFINITIONS", &mut props).await
}

/// `ASSOCIATION_DEFINITIONS`: the association types of every known pair between the
/// catalog's types.
pub(super) async fn association_definitions(
    catalog: &Catalog,
    types: &model::AssociationTypes,
    ingested: &Arc<str>,
    out: &Sender,
) -> Result<()> {
    let held = |id: &str| catalog.objects.iter().any(|o| o.object_type.type_id == id);
    let mut defs = builder("ASSOCIATION_DEFINITIONS", ingested, 64);
    for (key, labels) in types {
        let Some((from, to)) = model::pair_of_key(key).filter(|(f, t)| held(f) && held(t)) else { continue };
        for l in labels {
            let type_id = l.type_id.to_string();
            defs.push_row([
                Some(from),
                Some(to),
                Some(type_id.as_str()),
                l.category.as_deref(),
                l.label.as_deref(),
                None,
            ]);
        }
    }
    out.rows("ASSOCIATION_DEFINITIONS", &mut defs).await
}

/// `OWNERS` and `OWNER_TEAM`, active and archived owners both, so that every owner id on a
/// record resolves.
pub(super) async fn owners(client: &HttpClient, ingested: &Arc<str>, out: &Sender) -> Result<()> {
    let mut owners = builder("OWNERS", ingested, 100);
    let mut teams = builder("OWNER_TEAM", ingested, 100);
    for archived in ["false", "true"] {
        let mut after: Option<String> = None;
        loop {
            let mut query = vec![("limit", "100"), ("archived", archived)];
            if let Some(a) = &after {
                query.push(("after", a.as_str()));
            }
            let page: api::Page<api::Owner> = client.get_json("/crm/v3/owners", &query).await.map_err(|e| {
                e.in_stream("OWNERS", format!("archived={archived}, after={}", after.as_deref().unwrap_or("start")))
            })?;
            for o in &page.results {
                owners.push_row([
                    Some(o.id.as_str()),
                    o.user_id.as_deref(),
                    o.user_id_including_inactive.as_deref(),
                    o.email.as_deref(),
                    o.first_name.as_deref(),
                    o.last_name.as_deref(),
                    o.owner_type.as_deref(),
                    flag(Some(o.archived)),
                    o.created_at.as_deref(),
                    o.updated_at.as_deref(),
                ]);
                for t in &o.teams {
                    teams.push_row([Some(o.id.as_str()), Some(t.id.as_str()), t.name.as_deref(), flag(t.primary)]);
                }
            }
            after = page.next_after();
            if after.is_none() {
                break;
            }
        }
    }
    out.rows("OWNERS", &mut owners).await?;
    out.rows("OWNER_TEAM", &mut teams).await
}

/// `PIPELINES` and `PIPELINE_STAGES` of every exported type that has pipelines.
pub(super) async fn pipelines(client: &HttpClient, catalog: &Catalog, ingested: &Arc<str>, out: &Sender) -> Result<()> {
    let mut pipelines = builder("PIPELINES", ingested, 16);
    let mut stages = builder("PIPELINE_STAGES", ingested, 64);
    for stream in catalog.objects.iter().filter(|o| o.object_type.has_pipelines) {
        let t = &stream.object_type;
        let path = format!("/crm/v3/pipelines/{}", t.api_name);
        let found: api::BatchResults<api::Pipeline> =
            client.get_json(&path, &[]).await.map_err(|e| e.in_stream("PIPELINES", format!("GET {path}")))?;
        for p in &found.results {
            let order = p.display_order.map(|d| d.to_string());
            pipelines.push_row([
                Some(t.type_id.as_str()),
                Some(p.id.as_str()),
                p.label.as_deref(),
                order.as_deref(),
                flag(p.archived),
                p.created_at.as_deref(),
                p.updated_at.as_deref(),
            ]);
            for s in &p.stages {
                let order = s.display_order.map(|d| d.to_string());
                let meta_text = |k: &str| s.metadata.get(k).and_then(|v| api::scalar_text(v.clone()));
                let probability = meta_text("probability");
                let ticket_state = meta_text("ticketState");
                let metadata = serde_json::Value::Object(s.metadata.clone()).to_string();
                stages.push_row([
                    Some(t.type_id.as_str()),
                    Some(p.id.as_str()),
                    Some(s.id.as_str()),
                    s.label.as_deref(),
                    order.as_deref(),
                    probability.as_deref(),
                    ticket_state.as_deref(),
                    Some(metadata.as_str()),
                    flag(s.archived),
                    s.created_at.as_deref(),
                    s.updated_at.as_deref(),
                ]);
            }
        }
    }
    out.rows("PIPELINES", &mut pipelines).await?;
    out.rows("PIPELINE_STAGES", &mut stages).await
}

/// `TEAMS`, read during discovery (one request, no paging).
pub(super) async fn teams(teams: &[api::Team], ingested: &Arc<str>, out: &Sender) -> Result<()> {
    let mut rows = builder("TEAMS", ingested, teams.len());
    for t in teams {
        let users = serde_json::Value::Array(t.user_ids.clone()).to_string();
        let secondary = serde_json::Value::Array(t.secondary_user_ids.clone()).to_string();
        rows.push_row([Some(t.id.as_str()), t.name.as_deref(), Some(users.as_str()), Some(secondary.as_str())]);
    }
    out.rows("TEAMS", &mut rows).await
}
