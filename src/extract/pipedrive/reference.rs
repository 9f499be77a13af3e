//! The reference tables of a Pipedrive export: type, property and association definitions,
//! owners (users), pipelines and stages. Always read whole.

use serde_json::{Value, json};

use super::entities::{CATEGORY, RELATIONS};
use super::{Discovery, Pipedrive, api, forbidden, missing_scope, table};
use crate::error::Result;
use crate::extract::{Catalog, Emit, Sender};
use crate::schema::{BatchBuilder, fixed_table};
use api::{Pager, Paging};

impl Pipedrive {
    /// `OBJECT_AND_EVENT_TYPE_DEFINITIONS`, `PROPERTY_DEFINITIONS` and `ASSOCIATION_DEFINITIONS`.
    pub(super) async fn definitions(&self, catalog: &Catalog, discovery: &Discovery, out: &Sender) -> Result<()> {
        let ingested = &self.options.ingested_at;
        let mut types = BatchBuilder::new(table("OBJECT_AND_EVENT_TYPE_DEFINITIONS"), ingested.clone(), 8);
        let mut props = BatchBuilder::new(table("PROPERTY_DEFINITIONS"), ingested.clone(), 256);
        for d in &discovery.entities {
            let e = d.entity;
            let fq = format!("pipedrive.{}", e.name);
            types.push_row([
                Some(e.name),
                Some("OBJECT"),
                Some(e.name),
                Some(fq.as_str()),
                Some(e.singular_label),
                Some(e.plural_label),
                Some(e.display),
                Some("false"),
                None,
                None,
            ]);
            for (c, column) in d.columns.iter().zip(&d.stream.table.columns[fixed_table("OBJECTS").columns.len()..]) {
                let f = &d.fields[c.field];
                let (key, label, field_type) = match c.subfield(&d.fields) {
                    None => (f.key.as_str(), f.name.clone(), f.field_type.as_str()),
                    Some(sub) => (sub.key.as_str(), format!("{} ({})", f.name, sub.name), sub.field_type.as_str()),
                };
                let options = (!f.options.is_null() && c.sub.is_none()).then(|| f.options.to_string());
                props.push_row([
                    Some(e.name),
                    Some(key),
                    Some(label.as_str()),
                    Some(field_type),
                    Some(field_type),
                    None,
                    f.description.as_deref().filter(|_| c.sub.is_none()),
                    options.as_deref(),
                    Some("false"),
                    Some(if f.custom { "false" } else { "true" }),
                    Some("false"),
                    Some("false"),
                    Some("false"),
                    None,
                    Some(column.name.as_str()),
                    None,
                    None,
                ]);
            }
        }
        let mut assoc = BatchBuilder::new(table("ASSOCIATION_DEFINITIONS"), ingested.clone(), RELATIONS.len());
        for pair in &catalog.pairs {
            let rel =
                RELATIONS.iter().find(|r| r.from == pair.from.type_id && r.to == pair.to.type_id).expect("declared");
            let type_id = rel.type_id.to_string();
            let name = format!("{}_to_{}", rel.from, rel.to);
            assoc.push_row([
                Some(rel.from),
                Some(rel.to),
                Some(type_id.as_str()),
                Some(CATEGORY),
                Some(rel.key),
                Some(name.as_str()),
            ]);
        }
        out.rows("OBJECT_AND_EVENT_TYPE_DEFINITIONS", &mut types).await?;
        out.rows("PROPERTY_DEFINITIONS", &mut props).await?;
        out.rows("ASSOCIATION_DEFINITIONS", &mut assoc).await
    }

    /// `OWNERS` from `/v1/users` (deactivated users too, as ARCHIVED, so every owner id resolves).
    pub(super) async fn owners(&self, out: &Sender) -> Result<()> {
        let users: Value = match self.client.get_json("/api/v1/users", &[]).await {
            Ok(users) => users,
            Err(e) if forbidden(&e).is_some() => {
                let why = forbidden(&e).unwrap_or_default();
                return out.send(Emit::Warning(missing_scope("OWNERS", format!("owners skipped: {why}")))).await;
            }
            Err(e) => return Err(e.in_stream("OWNERS", "GET /api/v1/users")),
        };
        let users = users.get("data").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut b = BatchBuilder::new(table("OWNERS"), self.options.ingested_at.clone(), users.len());
        for u in &users {
            let s = |k: &str| u.get(k).and_then(api::text);
            let Some(id) = s("id") else { continue };
            let name = s("name").unwrap_or_default();
            let (first, last) =
                name.split_once(' ').map(|(f, l)| (f.to_string(), Some(l.to_string()))).unwrap_or((name.clone(), None));
            let active = u.get("active_flag").and_then(Value::as_bool).unwrap_or(true);
            b.push_row([
                Some(id.as_str()),
                Some(id.as_str()),
                Some(id.as_str()),
                s("email").as_deref(),
                (!first.is_empty()).then_some(first.as_str()),
                last.as_deref(),
                Some("PERSON"),
                Some(if active { "false" } else { "true" }),
                s("created").as_deref(),
                s("modified").as_deref(),
            ]);
        }
        out.rows("OWNERS", &mut b).await
    }

    /// `PIPELINES` and `PIPELINE_STAGES` (deal pipelines).
    pub(super) async fn pipelines(&self, out: &Sender) -> Result<()> {
        let ingested = &self.options.ingested_at;
        let mut pipelines = BatchBuilder::new(table("PIPELINES"), ingested.clone(), 8);
        let mut pager = Pager::new(&self.client, "/api/v2/pipelines", Vec::new(), Paging::Cursor);
        while let Some(items) = pager.next().await.map_err(|e| e.in_stream("PIPELINES", "GET /api/v2/pipelines"))? {
            for p in &items {
                let s = |k: &str| p.get(k).and_then(api::text);
                pipelines.push_row([
                    Some("deal"),
                    s("id").as_deref(),
                    s("name").as_deref(),
                    s("order_nr").as_deref(),
                    s("is_deleted").as_deref(),
                    s("add_time").as_deref(),
                    s("update_time").as_deref(),
                ]);
            }
        }
        let mut stages = BatchBuilder::new(table("PIPELINE_STAGES"), ingested.clone(), 32);
        let mut pager = Pager::new(&self.client, "/api/v2/stages", Vec::new(), Paging::Cursor);
        while let Some(items) = pager.next().await.map_err(|e| e.in_stream("PIPELINE_STAGES", "GET /api/v2/stages"))? {
            for st in &items {
                let s = |k: &str| st.get(k).and_then(api::text);
                let metadata = json!({
                    "is_deal_rot_enabled": st.get("is_deal_rot_enabled"),
                    "days_to_rotten": st.get("days_to_rotten"),
                })
                .to_string();
                stages.push_row([
                    Some("deal"),
                    s("pipeline_id").as_deref(),
                    s("id").as_deref(),
                    s("name").as_deref(),
                    s("order_nr").as_deref(),
                    s("deal_probability").as_deref(),
                    None,
                    Some(metadata.as_str()),
                    s("is_deleted").as_deref(),
                    s("add_time").as_deref(),
                    s("update_time").as_deref(),
                ]);
            }
        }
        out.rows("PIPELINES", &mut pipelines).await?;
        out.rows("PIPELINE_STAGES", &mut stages).await
    }
}
