//! Records of one object type, and the associations of those records.
//!
//! Call plan: when every property name fits in one GET URL (under 8 KiB), one list request
//! per 100 records. Otherwise the list pages ids only and `batch/read` fetches every
//! property in the JSON body (two requests per 100 records, whatever the property count).
//! Record ids are buffered by the thousand and their associations read for every pair that
//! starts at this type through v4 batch reads, following each input's own `after` cursor.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::json;

use super::{Sender, api};
use crate::error::{Error, Result};
use crate::extract::{AssociationPair, Emit, ObjectStream};
use crate::http::{HttpClient, MAX_URL_BYTES};
use crate::schema::{BatchBuilder, fixed_table};

/// HubSpot's largest page for list and batch read.
pub const RECORDS_PER_PAGE: usize = 100;
/// HubSpot's largest association batch read (since 2025-02-10).
const ASSOCIATION_INPUTS: usize = 1000;
/// Room kept in the URL for the `after` cursor and the other parameters.
const URL_RESERVE: usize = 256;

enum Plan {
    /// Every property in the list request's URL.
    ListAll(String),
    /// Ids from the list, properties through batch read.
    ListIdsThenBatchRead,
}

pub(super) async fn extract(
    client: &HttpClient,
    stream: Arc<ObjectStream>,
    pairs: Vec<Arc<AssociationPair>>,
    ingested: &Arc<str>,
    out: &Sender,
) -> Result<()> {
    let t = &stream.object_type;
    let path = format!("/crm/v3/objects/{}", t.api_name);
    let all_names = stream
        .properties
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let limit = RECORDS_PER_PAGE.to_string();
    let probe = client.url(
        &path,
        &[
            ("limit", &limit),
            ("archived", "false"),
            ("properties", &all_names),
        ],
    )?;
    let plan = if probe.as_str().len() + URL_RESERVE <= MAX_URL_BYTES {
        Plan::ListAll(all_names)
    } else {
        Plan::ListIdsThenBatchRead
    };
    let table = stream.table.name.clone();
    let mut after: Option<String> = None;
    let mut pending_ids: Vec<String> = Vec::new();
    let mut records = 0u64;
    let mut pages = 0u64;
    loop {
        let page_name = format!(
            "page {} (after={})",
            pages + 1,
            after.as_deref().unwrap_or("start")
        );
        let properties = match &plan {
            Plan::ListAll(names) => names.as_str(),
            Plan::ListIdsThenBatchRead => "hs_object_id",
        };
        let mut query = vec![
            ("limit", limit.as_str()),
            ("archived", "false"),
            ("properties", properties),
        ];
        if let Some(a) = &after {
            query.push(("after", a.as_str()));
        }
        let page: api::Page<api::SimpleObject> = client
            .get_json(&path, &query)
            .await
            .map_err(|e| e.in_stream(&table, &page_name))?;
        let next = page.next_after();
        let rows = match plan {
            Plan::ListAll(_) => page.results,
            Plan::ListIdsThenBatchRead => batch_read(client, &stream, page.results)
                .await
                .map_err(|e| e.in_stream(&table, &page_name))?,
        };
        records += rows.len() as u64;
        pages += 1;
        pending_ids.extend(rows.iter().map(|r| r.id.clone()));
        let batch = raw_batch(&stream, &rows, ingested)?;
        out.send(Emit::Objects {
            stream: stream.clone(),
            batch,
        })
        .await?;
        while pending_ids.len() >= ASSOCIATION_INPUTS {
            let chunk: Vec<String> = pending_ids.drain(..ASSOCIATION_INPUTS).collect();
            associations(client, &pairs, &chunk, ingested, out).await?;
        }
        if pages.is_multiple_of(50) {
            tracing::info!(table = %table, records, pages, "Reading records.");
        }
        match next {
            Some(a) => after = Some(a),
            None => break,
        }
    }
    if !pending_ids.is_empty() {
        associations(client, &pairs, &pending_ids, ingested, out).await?;
    }
    tracing::info!(table = %table, records, pages, "Records read.");
    Ok(())
}

/// Reads every property of the listed records through `batch/read`, in list order. A record
/// deleted between the two calls is left out (it is no longer in the account).
async fn batch_read(
    client: &HttpClient,
    stream: &ObjectStream,
    listed: Vec<api::SimpleObject>,
) -> Result<Vec<api::SimpleObject>> {
    if listed.is_empty() {
        return Ok(listed);
    }
    let path = format!("/crm/v3/objects/{}/batch/read", stream.object_type.api_name);
    let body = json!({
        "inputs": listed.iter().map(|r| json!({"id": r.id})).collect::<Vec<_>>(),
        "properties": stream.properties.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        "propertiesWithHistory": [],
    });
    let read: api::BatchResults<api::SimpleObject> = client.post_json(&path, &body).await?;
    let mut by_id: HashMap<String, api::SimpleObject> = read
        .results
        .into_iter()
        .map(|r| (r.id.clone(), r))
        .collect();
    let mut out = Vec::with_capacity(listed.len());
    for r in listed {
        match by_id.remove(&r.id) {
            Some(full) => out.push(full),
            None => {
                tracing::warn!(object_type = %stream.object_type.api_name, id = %r.id, "Record listed but gone at batch read; skipped.")
            }
        }
    }
    Ok(out)
}

/// One page of records in the raw shape of `stream.raw`.
fn raw_batch(
    stream: &ObjectStream,
    rows: &[api::SimpleObject],
    ingested: &Arc<str>,
) -> Result<arrow::record_batch::RecordBatch> {
    let mut b = BatchBuilder::new(stream.raw.clone(), ingested.clone(), rows.len());
    let type_id = stream.object_type.type_id.as_str();
    for r in rows {
        b.push(Some(type_id));
        b.push(Some(r.id.as_str()));
        b.push(r.created_at.as_deref());
        b.push(r.updated_at.as_deref());
        b.push(Some(if r.archived { "true" } else { "false" }));
        b.push(r.archived_at.as_deref());
        for p in &stream.properties {
            b.push_canonical(r.properties.get(&p.name).and_then(|v| v.as_deref()));
        }
        b.end_row();
    }
    if b.unparseable() > 0 {
        return Err(Error::Malformed {
            method: "GET",
            path: format!("/crm/v3/objects/{}", stream.object_type.api_name),
            detail: "a record id or timestamp is not in HubSpot's format".into(),
        });
    }
    b.finish()
}

/// Associations of `ids` for every pair, following per-input paging until none is left.
async fn associations(
    client: &HttpClient,
    pairs: &[Arc<AssociationPair>],
    ids: &[String],
    ingested: &Arc<str>,
    out: &Sender,
) -> Result<()> {
    for pair in pairs {
        let path = format!(
            "/crm/v4/associations/{}/{}/batch/read",
            pair.from.api_name, pair.to.api_name
        );
        let mut builder =
            BatchBuilder::new(fixed_table("ASSOCIATIONS"), ingested.clone(), ids.len());
        let mut inputs: Vec<serde_json::Value> = ids.iter().map(|id| json!({"id": id})).collect();
        let mut round = 0;
        while !inputs.is_empty() {
            round += 1;
            let body = json!({ "inputs": inputs });
            let page: api::BatchResults<api::AssociationResult> =
                client.post_json(&path, &body).await.map_err(|e| {
                    e.in_stream(
                        &pair.table.name,
                        format!("ids {}..{} round {round}", ids[0], ids[ids.len() - 1]),
                    )
                })?;
            inputs = Vec::new();
            for result in page.results {
                for to in &result.to {
                    for kind in &to.association_types {
                        let type_id = kind.type_id.to_string();
                        let primary = kind.category.as_deref() == Some("HUBSPOT_DEFINED")
                            && kind.label.as_deref() == Some("Primary");
                        builder.push_row([
                            Some(pair.from.type_id.as_str()),
                            Some(result.from.id.as_str()),
                            Some(pair.to.type_id.as_str()),
                            Some(to.to_object_id.as_str()),
                            Some(type_id.as_str()),
                            kind.category.as_deref(),
                            kind.label.as_deref(),
                            Some(if primary { "true" } else { "false" }),
                        ]);
                    }
                }
                if let Some(next) = result.paging.and_then(|p| p.next) {
                    inputs.push(json!({"id": result.from.id, "after": next.after}));
                }
            }
        }
        if !builder.is_empty() {
            out.send(Emit::Associations {
                pair: pair.clone(),
                batch: builder.finish()?,
            })
            .await?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extract::PropertyDefinition;
    use crate::model;
    use crate::schema::{ColumnType, object_schemas};
    use arrow::array::{Array, AsArray};

    fn stream(props: &[(&str, &str)]) -> ObjectStream {
        let properties: Vec<PropertyDefinition> = props
            .iter()
            .map(|(n, t)| PropertyDefinition {
                name: n.to_string(),
                property_type: t.to_string(),
                column: model::property_column(n),
            })
            .collect();
        let cols: Vec<_> = properties
            .iter()
            .map(|p| {
                (
                    p.name.clone(),
                    p.column.clone(),
                    ColumnType::from_hubspot_property_type(&p.property_type),
                )
            })
            .collect();
        let (raw, table) = object_schemas("OBJECTS_CONTACTS", &cols);
        ObjectStream {
            object_type: model::standard_type("contacts").unwrap().to_object_type(),
            properties,
            raw,
            table,
        }
    }

    /// Our own fixture in the shape of reference/recorded/hubspot/contacts.test.json.
    #[test]
    fn a_recorded_shape_page_parses_into_the_right_rows() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../../fixtures/hubspot/contacts-page.json"))
                .unwrap();
        let response = fixture["api"]["get"]["/crm/v3/objects/contacts"]["response"].clone();
        let page: api::Page<api::SimpleObject> = serde_json::from_value(response).unwrap();
        assert_eq!(page.next_after().as_deref(), Some("512000000003"));
        let s = stream(&[
            ("firstname", "string"),
            ("email", "string"),
            ("annualrevenue", "number"),
            ("notes_last_contacted", "datetime"),
            ("hs_email_optout", "bool"),
            ("not_sent", "string"),
        ]);
        let ingested: Arc<str> = "2026-11-23T00:00:00.000Z".into();
        let raw = raw_batch(&s, &page.results, &ingested).unwrap();
        let parts = crate::split::split_objects(&s, &raw, &ingested).unwrap();
        let typed = &parts
            .iter()
            .find(|p| p.table == "OBJECTS_CONTACTS")
            .unwrap()
            .batch;
        let column = |name: &str| {
            typed
                .column(typed.schema().index_of(name).unwrap())
                .as_string::<i32>()
                .clone()
        };
        assert_eq!(column("OBJECTID").value(1), "512000000002");
        assert_eq!(column("UPDATEDAT").value(0), "2025-06-01T12:30:00.000Z");
        assert_eq!(column("PROPERTY_FIRSTNAME").value(0), "Zoë, \"Z\"");
        assert_eq!(column("PROPERTY_FIRSTNAME").value(1), "line\nbreak");
        assert_eq!(
            column("PROPERTY_EMAIL").value(1),
            "",
            "the empty string stays empty"
        );
        assert_eq!(column("PROPERTY_ANNUALREVENUE").value(0), "1234.50");
        assert!(
            column("PROPERTY_ANNUALREVENUE").is_null(1),
            "N/A is NULL in a number column"
        );
        assert_eq!(
            column("PROPERTY_NOTES_LAST_CONTACTED").value(0),
            "2025-01-10T08:00:00.000Z"
        );
        assert!(column("PROPERTY_HS_EMAIL_OPTOUT").is_null(1));
        assert!(
            column("PROPERTY_NOT_SENT").is_null(0),
            "a property absent from the response is NULL"
        );
        let long = &parts
            .iter()
            .find(|p| p.table == "OBJECT_PROPERTIES")
            .unwrap()
            .batch;
        assert_eq!(long.num_rows(), 5 + 3, "non-null values only");
    }
}
