//! `LISTS` (lists search, offset paging) and `LIST_MEMBERSHIPS` (cursor paging per list).

use std::sync::Arc;

use serde_json::json;

use super::{Sender, api};
use crate::error::Result;
use crate::http::HttpClient;
use crate::schema::{BatchBuilder, fixed_table};

const SEARCH: &str = "/crm/v3/lists/search";
/// The lists API's largest page of lists, and of memberships.
const LISTS_PER_PAGE: u64 = 500;
const MEMBERS_PER_PAGE: &str = "250";

async fn search(client: &HttpClient, offset: u64, count: u64) -> Result<api::ListSearch> {
    let body = json!({"query": "", "offset": offset, "count": count, "additionalProperties": []});
    client.post_json(SEARCH, &body).await.map_err(|e| e.in_stream("LISTS", format!("POST {SEARCH} offset {offset}")))
}

/// The first page of lists: fails with 403 when the token may not read lists, and is the
/// export's first page when it runs next.
pub(super) async fn probe(client: &HttpClient) -> Result<api::ListSearch> {
    search(client, 0, LISTS_PER_PAGE).await
}

/// `LISTS` and `LIST_MEMBERSHIPS`, starting from `first` (the probe's page) when given.
pub(super) async fn extract(
    client: &HttpClient,
    first: Option<api::ListSearch>,
    ingested: &Arc<str>,
    out: &Sender,
) -> Result<()> {
    let mut all = Vec::new();
    let mut offset = 0;
    let mut first = first;
    loop {
        let page = match first.take() {
            Some(page) => page,
            None => search(client, offset, LISTS_PER_PAGE).await?,
        };
        let more = page.has_more && page.offset > offset;
        offset = page.offset;
        all.extend(page.lists);
        if !more {
            break;
        }
    }
    let mut lists = BatchBuilder::new(fixed_table("LISTS"), ingested.clone(), all.len());
    for l in &all {
        let size = l
            .size
            .clone()
            .or_else(|| l.additional_properties.get("hs_list_size").and_then(|v| api::scalar_text(v.clone())));
        lists.push_row([
            Some(l.list_id.as_str()),
            l.name.as_deref(),
            l.object_type_id.as_deref(),
            l.processing_type.as_deref(),
            l.processing_status.as_deref(),
            l.list_version.as_deref(),
            size.as_deref(),
            l.created_at.as_deref(),
            l.updated_at.as_deref(),
            l.deleted_at.as_deref(),
            l.created_by_id.as_deref(),
            l.updated_by_id.as_deref(),
        ]);
    }
    out.rows("LISTS", &mut lists).await?;

    for l in &all {
        let path = format!("/crm/v3/lists/{}/memberships", l.list_id);
        let mut after: Option<String> = None;
        loop {
            let mut query = vec![("limit", MEMBERS_PER_PAGE)];
            if let Some(a) = &after {
                query.push(("after", a.as_str()));
            }
            let page: api::Page<api::Membership> = client.get_json(&path, &query).await.map_err(|e| {
                e.in_stream(
                    "LIST_MEMBERSHIPS",
                    format!("list {} after {}", l.list_id, after.as_deref().unwrap_or("start")),
                )
            })?;
            let mut rows = BatchBuilder::new(fixed_table("LIST_MEMBERSHIPS"), ingested.clone(), page.results.len());
            for m in &page.results {
                rows.push_row([
                    Some(l.list_id.as_str()),
                    l.object_type_id.as_deref(),
                    Some(m.record_id.as_str()),
                    m.membership_timestamp.as_deref(),
                ]);
            }
            out.rows("LIST_MEMBERSHIPS", &mut rows).await?;
            after = page.next_after();
            if after.is_none() {
                break;
            }
        }
    }
    Ok(())
}
