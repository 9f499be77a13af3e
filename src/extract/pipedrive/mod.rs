//! The Pipedrive extractor (tables in docs/FORMAT.md): the same
//! table families as HubSpot so one warehouse model serves both CRMs.
//!
//! Discovery reads the account (`/v1/users/me`) and each entity's field definitions; custom
//! fields (40-character hash keys) become `PROPERTY_<slug of the name>` columns. A run reads
//! each entity's list (v2 with cursor paging for persons, organizations, deals, activities
//! and products; v1 with offset paging for leads and notes; archived deals and leads from
//! their own lists), builds associations from the foreign keys and deal products, and
//! property history from the deal, person and organization changelogs. Incremental and
//! backfill runs filter lists by `updated_since`/`updated_until` (never `/v1/recents`, which
//! keeps one month only).

mod api;
mod entities;
mod reference;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::{StreamExt, TryStreamExt};
use serde_json::Value;

use super::{AssociationPair, Catalog, Emit, Extent, Notice, ObjectStream, PropertyDefinition, Sender, Window};
use crate::error::{Error, Result};
use crate::http::HttpClient;
use crate::schema::{self, BatchBuilder, ColumnType, TableSchema, fixed_table, with_text_ids};
use api::{Field, Pager, Paging};
use entities::{CATEGORY, DEAL_PRODUCTS, ENTITIES, Entity, RELATIONS, Relation, TimeFilter, entity, object_type};

/// Deal ids per `/api/v2/deals/products` request (Pipedrive's maximum).
const DEAL_IDS_PER_REQUEST: usize = 100;

/// Most records of one entity whose pointing records an incremental run looks up by foreign
/// key (`/api/v2/deals?person_id=`), a request per record and list. Above it the pointing
/// entity's lists are read whole for their keys instead, a request per 500 records: cheaper
/// for all but large accounts, and never more than an entity's full read.
const REVERSE_LOOKUPS: usize = 25;

/// What to export and how: entities by name or plural (`deals`, `person`); the historical
/// values kept per (record, field), newest first. Changelogs are read `2 * concurrency` at a
/// time.
pub type PipedriveOptions = super::SourceOptions<usize>;

/// One column of an entity's table: the field and, for an extra data field, which of its
/// subfields.
struct Column {
    field: usize,
    sub: Option<usize>,
}

impl Column {
    fn subfield<'f>(&self, fields: &'f [Field]) -> Option<&'f api::Subfield> {
        self.sub.map(|s| &fields[self.field].subfields[s])
    }
}

/// What discovery learnt of one entity.
struct Discovered {
    entity: &'static Entity,
    fields: Vec<Field>,
    columns: Vec<Column>,
    stream: Arc<ObjectStream>,
}

pub(crate) struct Discovery {
    entities: Vec<Arc<Discovered>>,
}

/// Cheap to clone: each entity's stream runs on a task of its own with a clone.
#[derive(Clone)]
pub struct Pipedrive {
    client: Arc<HttpClient>,
    options: Arc<PipedriveOptions>,
    discovery: Arc<std::sync::OnceLock<Discovery>>,
    /// Set once a changelog answered 403 (no `recents:read`): history is skipped from then on.
    history_forbidden: Arc<std::sync::atomic::AtomicBool>,
    /// The ids each entity's windowed lists returned this run: the records a day folder holds,
    /// whose associations from records it does not hold the reverse pass completes.
    held: Arc<std::sync::Mutex<HashMap<&'static str, HashSet<String>>>>,
}

/// A fixed table with text record ids (Pipedrive's lead ids are UUIDs).
fn table(name: &str) -> Arc<TableSchema> {
    with_text_ids(&fixed_table(name))
}

/// Seconds-resolution bounds of a window, as Pipedrive filters take them: the start rounded
/// down and the end up, so that every record of `[from, to)` is in `[since, until)`.
fn bounds(w: Window) -> (DateTime<Utc>, DateTime<Utc>) {
    let since = DateTime::from_timestamp(w.from.timestamp(), 0).unwrap_or(w.from);
    let up = if w.to.timestamp_subsec_nanos() > 0 { w.to.timestamp() + 1 } else { w.to.timestamp() };
    (since, DateTime::from_timestamp(up, 0).unwrap_or(w.to))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

impl Pipedrive {
    pub fn new(client: Arc<HttpClient>, options: PipedriveOptions) -> Pipedrive {
        Pipedrive {
            client,
            options: Arc::new(options),
            discovery: Arc::new(std::sync::OnceLock::new()),
            history_forbidden: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            held: Arc::default(),
        }
    }

    fn selected(&self) -> Result<Vec<&'static Entity>> {
        let Some(names) = &self.options.objects else {
            return Ok(ENTITIES.iter().collect());
        };
        let mut out: Vec<&'static Entity> = Vec::new();
        for n in names {
            let e = ENTITIES
                .iter()
                .find(|e| e.name.eq_ignore_ascii_case(n) || e.plural.eq_ignore_ascii_case(n))
                .ok_or_else(|| {
                    Error::Config(format!(
                        "--objects names '{n}', which is not a Pipedrive entity crmdump exports; known: {}",
                        ENTITIES.iter().map(|e| e.plural).collect::<Vec<_>>().join(", ")
                    ))
                })?;
            if !out.iter().any(|o| o.name == e.name) {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// Every list of one entity (live, then archived).
    /// `known`: the entity's ids in the baseline, which a whole read compares with: those it
    /// lacks (or read as deleted) vanished since, and are reported as a reconcile would.
    async fn entity(
        &self,
        d: &Discovered,
        window: Option<Window>,
        pairs: Vec<Arc<AssociationPair>>,
        known: Option<HashSet<String>>,
        out: &Sender,
    ) -> Result<()> {
        let mut present = known.as_ref().filter(|_| window.is_none()).map(|_| HashSet::new());
        for list in lists_of(d) {
            self.list(d, list, window, &pairs, present.as_mut(), out).await?;
        }
        if let (Some(present), Some(known)) = (present, known) {
            let mut gone: Vec<(String, Option<String>)> =
                known.into_iter().filter(|id| !present.contains(id)).map(|id| (id, None)).collect();
            gone.sort();
            self.reconciled(d, &gone, out).await?;
        }
        Ok(())
    }

    async fn reconciled(&self, d: &Discovered, gone: &[(String, Option<String>)], out: &Sender) -> Result<()> {
        out.reconciled(&d.stream, gone, &self.options.ingested_at).await
    }

    /// Reads one list of an entity, page by page: records, associations, history; the ids of
    /// the records that are not deleted go to `present` when given.
    async fn list(
        &self,
        d: &Discovered,
        list: ListSpec,
        window: Option<Window>,
        pairs: &[Arc<AssociationPair>],
        present: Option<&mut HashSet<String>>,
        out: &Sender,
    ) -> Result<()> {
        let mut present = present;
        let ListSpec { path, filter, extra } = list;
        let ingested = &self.options.ingested_at;
        let paging = paging_of(d);
        let mut query = list_query(extra, paging);
        let bounds = window.map(bounds);
        if let Some((since, until)) = bounds {
            if filter != TimeFilter::None {
                query.push(("updated_since".into(), rfc3339(since)));
            }
            if filter == TimeFilter::SinceUntil {
                query.push(("updated_until".into(), rfc3339(until)));
            }
        }
        let table = &d.stream.table.name;
        let mut pager = Pager::new(&self.client, path, query, paging);
        let mut bad = 0u64;
        loop {
            let page = pager.describe();
            let Some(items) = pager.next().await.map_err(|e| e.in_stream(table, &page))? else {
                break;
            };
            let items: Vec<&Value> = items
                .iter()
                .filter(|r| match bounds {
                    None => true,
                    Some((since, until)) => {
                        r.get("update_time").and_then(api::instant).is_some_and(|t| since <= t && t < until)
                    }
                })
                .collect();
            if let Some(present) = present.as_deref_mut() {
                let live = items.iter().filter(|r| !is_deleted(r)).filter_map(|r| r.get("id").and_then(api::text));
                present.extend(live);
            }
            let (batch, ids, skipped, unparseable) = self.records(d, &items, ingested)?;
            bad += skipped;
            if ids.is_empty() {
                continue;
            }
            if window.is_some() {
                let mut held = self.held.lock().expect("no panic while holding the lock");
                held.entry(d.entity.name).or_default().extend(ids.iter().cloned());
            }
            out.send(Emit::Objects { stream: d.stream.clone(), batch, unparseable }).await?;
            self.foreign_keys(d, &items, pairs, ingested, out).await?;
            // `pairs` start at this entity: only deals have the product pair.
            if let Some(pair) = pairs.iter().find(|p| p.to.type_id == "product") {
                self.deal_products(pair, &ids, ingested, out).await?;
            }
            if let (Some(keep), true) = (self.options.history, d.entity.changelog)
                && !self.history_forbidden.load(std::sync::atomic::Ordering::Relaxed)
            {
                match self.history(d, &ids, keep, ingested, out).await {
                    Err(e) if forbidden(&e).is_some() => {
                        if !self.history_forbidden.swap(true, std::sync::atomic::Ordering::Relaxed) {
                            out.send(Emit::Warning(missing_scope(
                                "OBJECT_PROPERTIES_HISTORY",
                                format!(
                                    "history skipped: the token may not read changelogs ({})",
                                    forbidden(&e).unwrap_or_default()
                                ),
                            )))
                            .await?;
                        }
                    }
                    other => other?,
                }
            }
        }
        if bad > 0 {
            let detail = format!("{bad} records without an id were left out ({path})");
            out.send(Emit::Warning(Notice::bad_records(table, bad, detail))).await?;
        }
        if pager.stepped_back > 0 {
            out.send(Emit::Warning(Notice {
                kind: "list_page_reread".into(),
                table: table.clone(),
                detail: format!("pages of {path} read again because records left the list while it was paged"),
                count: Some(pager.stepped_back),
            }))
            .await?;
        }
        if pager.repaired > 0 {
            out.send(Emit::Warning(Notice::invalid_utf8(table, pager.repaired, &format!(" from {path}")))).await?;
        }
        Ok(())
    }

    /// The raw batch of a page (`OBJECTS` columns then one verbatim column per property), the
    /// ids read, how many records had no id, and how many of the records' own timestamps did
    /// not parse (NULL in the batch).
    fn records(
        &self,
        d: &Discovered,
        items: &[&Value],
        ingested: &Arc<str>,
    ) -> Result<(arrow::record_batch::RecordBatch, Vec<String>, u64, u64)> {
        let mut b = BatchBuilder::new(d.stream.raw.clone(), ingested.clone(), items.len());
        let mut ids = Vec::with_capacity(items.len());
        let mut bad = 0;
        for r in items {
            let Some(id) = r.get("id").and_then(api::text).filter(|id| !id.is_empty()) else {
                bad += 1;
                continue;
            };
            let archived = r.get("is_archived").and_then(Value::as_bool).unwrap_or(false) || is_deleted(r);
            // Deleted records and archived leads carry no archive time: the update that
            // deleted or archived them is their last. A live record has none, whatever an
            // `archive_time` left from an earlier archiving says.
            let archived_at = archived
                .then(|| r.get("archive_time").and_then(api::text).or_else(|| r.get("update_time").and_then(api::text)))
                .flatten();
            b.push(Some(d.entity.name));
            b.push(Some(&id));
            b.push(r.get("add_time").and_then(api::text).as_deref());
            b.push(r.get("update_time").and_then(api::text).as_deref());
            b.push(Some(if archived { "true" } else { "false" }));
            b.push(archived_at.as_deref());
            for c in &d.columns {
                let value = api::field_value(r, &d.fields[c.field], d.entity.v2, c.subfield(&d.fields));
                b.push(value.and_then(api::text).as_deref());
            }
            b.end_row();
            ids.push(id);
        }
        let unparseable = b.unparseable();
        Ok((b.finish()?, ids, bad, unparseable))
    }

    /// Association rows from the page's foreign keys, one batch per pair.
    async fn foreign_keys(
        &self,
        d: &Discovered,
        items: &[&Value],
        pairs: &[Arc<AssociationPair>],
        ingested: &Arc<str>,
        out: &Sender,
    ) -> Result<()> {
        for pair in pairs {
            let Some(rel) = RELATIONS.iter().find(|r| r.from == d.entity.name && r.to == pair.to.type_id) else {
                continue;
            };
            if rel.key == DEAL_PRODUCTS {
                continue;
            }
            let mut b = BatchBuilder::new(table("ASSOCIATIONS"), ingested.clone(), items.len());
            for r in items {
                let (Some(from), Some(to)) = (r.get("id").and_then(api::text), r.get(rel.key).and_then(fk_id)) else {
                    continue;
                };
                push_association(&mut b, rel, &from, &to);
            }
            if !b.is_empty() {
                out.send(Emit::Associations { pair: pair.clone(), batch: b.finish()? }).await?;
            }
        }
        Ok(())
    }

    /// Deal -> product associations from the line items of `ids`, 100 deals per request.
    async fn deal_products(
        &self,
        pair: &Arc<AssociationPair>,
        ids: &[String],
        ingested: &Arc<str>,
        out: &Sender,
    ) -> Result<()> {
        let rel = RELATIONS.iter().find(|r| r.key == DEAL_PRODUCTS).expect("declared");
        for chunk in ids.chunks(DEAL_IDS_PER_REQUEST) {
            let query = vec![("deal_ids".to_string(), chunk.join(","))];
            let mut pager = Pager::new(&self.client, "/api/v2/deals/products", query, Paging::Cursor);
            let mut seen = HashSet::new();
            let mut b = BatchBuilder::new(table("ASSOCIATIONS"), ingested.clone(), chunk.len());
            loop {
                let page = pager.describe();
                let Some(items) = pager.next().await.map_err(|e| e.in_stream(&pair.table.name, &page))? else {
                    break;
                };
                for item in &items {
                    let (Some(deal), Some(product)) =
                        (item.get("deal_id").and_then(api::text), item.get("product_id").and_then(api::text))
                    else {
                        continue;
                    };
                    if seen.insert((deal.clone(), product.clone())) {
                        push_association(&mut b, rel, &deal, &product);
                    }
                }
            }
            if !b.is_empty() {
                out.send(Emit::Associations { pair: pair.clone(), batch: b.finish()? }).await?;
            }
        }
        Ok(())
    }

    /// Completes the association rule on the side without the key: for every record an
    /// incremental run holds, the associations of the records pointing at it that the run
    /// did not read (a held person's deals, activities and leads; a held product's deals).
    /// Pairs whose pointing entity was read whole already hold every key.
    async fn reverse(&self, catalog: &Catalog, discovery: &Discovery, extent: &Extent, out: &Sender) -> Result<()> {
        let held = std::mem::take(&mut *self.held.lock().expect("no panic while holding the lock"));
        let none = HashSet::new();
        for pair in &catalog.pairs {
            let Some(rel) = RELATIONS.iter().find(|r| r.from == pair.from.type_id && r.to == pair.to.type_id) else {
                continue;
            };
            let Some(d) = discovery.entities.iter().find(|d| d.entity.name == rel.from) else { continue };
            let Some(targets) = held.get(rel.to).filter(|t| !t.is_empty()) else { continue };
            if extent.window(&d.stream.table.name).is_none() {
                continue;
            }
            let skip = held.get(rel.from).unwrap_or(&none);
            let mut targets: Vec<&String> = targets.iter().collect();
            targets.sort();
            let lists = lists_of(d);
            let lookups: Vec<_> = if rel.key == DEAL_PRODUCTS {
                targets
                    .iter()
                    .map(|id| {
                        let lookup = Lookup {
                            path: format!("/api/v1/products/{id}/deals"),
                            paging: Paging::Offset,
                            query: list_query(&[], Paging::Offset),
                            product: Some(id.as_str()),
                        };
                        self.pointing(d, pair, lookup, skip, out)
                    })
                    .collect()
            } else if targets.len() <= REVERSE_LOOKUPS {
                targets
                    .iter()
                    .flat_map(|id| lists.iter().map(move |list| (*id, *list)))
                    .map(|(id, list)| {
                        let mut query = list_query(list.extra, paging_of(d));
                        query.push((rel.key.to_string(), id.clone()));
                        let lookup = Lookup { path: list.path.to_string(), paging: paging_of(d), query, product: None };
                        self.pointing(d, pair, lookup, skip, out)
                    })
                    .collect()
            } else {
                lists
                    .iter()
                    .map(|list| {
                        let query = list_query(list.extra, paging_of(d));
                        let lookup = Lookup { path: list.path.to_string(), paging: paging_of(d), query, product: None };
                        self.pointing(d, pair, lookup, skip, out)
                    })
                    .collect()
            };
            let parallel = self.options.concurrency.max(1) * 2;
            futures::stream::iter(lookups).buffer_unordered(parallel).try_collect::<Vec<()>>().await?;
        }
        Ok(())
    }

    /// Pages through a list of records pointing at others, emitting `pair`'s association rows
    /// of the records not in `skip` (already in the folder with theirs).
    async fn pointing(
        &self,
        d: &Discovered,
        pair: &Arc<AssociationPair>,
        lookup: Lookup<'_>,
        skip: &HashSet<String>,
        out: &Sender,
    ) -> Result<()> {
        let Lookup { path, paging, query, product } = lookup;
        let ingested = &self.options.ingested_at;
        let mut pager = Pager::new(&self.client, path, query, paging);
        loop {
            let page = pager.describe();
            let Some(items) = pager.next().await.map_err(|e| e.in_stream(&pair.table.name, &page))? else {
                return Ok(());
            };
            let items: Vec<&Value> = items
                .iter()
                .filter(|r| r.get("id").and_then(api::text).is_some_and(|id| !skip.contains(&id)))
                .collect();
            match product {
                None => self.foreign_keys(d, &items, std::slice::from_ref(pair), ingested, out).await?,
                Some(product) => {
                    let rel = RELATIONS.iter().find(|r| r.key == DEAL_PRODUCTS).expect("declared");
                    let mut b = BatchBuilder::new(table("ASSOCIATIONS"), ingested.clone(), items.len());
                    for deal in items.iter().filter_map(|r| r.get("id").and_then(api::text)) {
                        push_association(&mut b, rel, &deal, product);
                    }
                    if !b.is_empty() {
                        out.send(Emit::Associations { pair: pair.clone(), batch: b.finish()? }).await?;
                    }
                }
            }
        }
    }

    /// A reconcile of one entity: lists every record (live and archived; Pipedrive has no
    /// cheaper listing than pages of 500), reports the ids `known` holds that the lists lack
    /// (deleted for good), and emits the associations of every record the run did not hold
    /// (`held`; none when the entity was read whole), so that the day folder holds them all.
    async fn reconcile(
        &self,
        d: &Discovered,
        pairs: Vec<Arc<AssociationPair>>,
        known: Option<HashSet<String>>,
        held: Held,
        out: &Sender,
    ) -> Result<()> {
        let ingested = &self.options.ingested_at;
        let table = &d.stream.table.name;
        let (mut ids, mut listing_requests, mut unheld) = (Vec::new(), 0u64, Vec::new());
        for list in lists_of(d) {
            let mut pager = Pager::new(&self.client, list.path, list_query(list.extra, paging_of(d)), paging_of(d));
            loop {
                let page = pager.describe();
                let Some(items) = pager.next().await.map_err(|e| e.in_stream(table, format!("reconcile: {page}")))?
                else {
                    break;
                };
                listing_requests += 1;
                let mut fresh: Vec<&Value> = Vec::new();
                for r in &items {
                    let Some(id) = r.get("id").and_then(api::text).filter(|id| !id.is_empty()) else { continue };
                    if !held.holds(&id) {
                        fresh.push(r);
                        unheld.push(id.clone());
                    }
                    if !is_deleted(r) {
                        ids.push(id);
                    }
                }
                self.foreign_keys(d, &fresh, &pairs, ingested, out).await?;
            }
        }
        let mut association_requests = 0;
        if let Some(pair) = pairs.iter().find(|p| p.to.type_id == "product") {
            association_requests = unheld.len().div_ceil(DEAL_IDS_PER_REQUEST) as u64;
            self.deal_products(pair, &unheld, ingested, out).await?;
        }
        let listed: HashSet<&String> = ids.iter().collect();
        let mut missing: Vec<(String, Option<String>)> =
            known.iter().flatten().filter(|id| !listed.contains(id)).map(|id| (id.clone(), None)).collect();
        missing.sort();
        self.reconciled(d, &missing, out).await?;
        tracing::info!(table = %table, ids = ids.len(), gone = missing.len(), listing_requests, association_requests, "Reconciled.");
        let type_id = d.entity.name.to_string();
        out.send(Emit::Listed { type_id, ids, listing_requests, association_requests }).await
    }

    /// `OBJECT_PROPERTIES_HISTORY` of `ids` from their changelogs (newest first), keeping
    /// the newest `keep` values per field.
    async fn history(
        &self,
        d: &Discovered,
        ids: &[String],
        keep: usize,
        ingested: &Arc<str>,
        out: &Sender,
    ) -> Result<()> {
        let parallel = self.options.concurrency.max(1) * 2;
        let reads: Vec<_> = ids.iter().map(|id| self.changelog(d, id)).collect();
        let logs: Vec<(&String, Vec<Value>)> = futures::stream::iter(reads).buffered(parallel).try_collect().await?;
        let mut b = BatchBuilder::new(table("OBJECT_PROPERTIES_HISTORY"), ingested.clone(), logs.len() * 4);
        for (id, entries) in &logs {
            let id: &str = id;
            let mut per_field: HashMap<&str, usize> = HashMap::new();
            for c in entries {
                let Some(key) = c.get("field_key").and_then(Value::as_str) else { continue };
                let n = per_field.entry(key).or_default();
                if *n >= keep {
                    continue;
                }
                *n += 1;
                let s = |k: &str| c.get(k).and_then(api::text);
                b.push(Some(d.entity.name));
                b.push(Some(id));
                b.push(Some(key));
                b.push(s("new_value").as_deref());
                b.push(s("time").as_deref());
                b.push(s("change_source").as_deref());
                b.push(s("change_source_user_agent").as_deref());
                b.push(s("actor_user_id").as_deref());
                b.end_row();
            }
        }
        out.rows("OBJECT_PROPERTIES_HISTORY", &mut b).await
    }

    /// Every page of one record's changelog.
    async fn changelog<'i>(&self, d: &Discovered, id: &'i String) -> Result<(&'i String, Vec<Value>)> {
        let path = format!("/api/v1/{}/{id}/changelog", d.entity.plural);
        let mut pager = Pager::new(&self.client, path, Vec::new(), Paging::Cursor);
        let mut entries = Vec::new();
        loop {
            let page = pager.describe();
            match pager.next().await {
                Ok(Some(items)) => entries.extend(items),
                Ok(None) => break,
                // A record deleted since its page was read has no changelog any more.
                Err(Error::Api { status: 404 | 410, .. }) => break,
                Err(e) => return Err(e.in_stream("OBJECT_PROPERTIES_HISTORY", page)),
            }
        }
        Ok((id, entries))
    }
}

/// The API's message when `e` is a 403 (a scope the token lacks).
/// Pipedrive's message when `e` is a 403 (a scope the token lacks).
fn forbidden(e: &Error) -> Option<String> {
    super::forbidden(e).map(|(message, _)| message.to_string())
}

fn missing_scope(table: &str, detail: String) -> Notice {
    Notice::missing_scope(table, detail)
}

/// A foreign key's id: a number, a string, or (v1) an object with `value`.
fn fk_id(v: &Value) -> Option<String> {
    match v {
        Value::Object(o) => o.get("value").and_then(fk_id),
        other => api::text(other).filter(|s| !s.is_empty()),
    }
}

fn push_association(b: &mut BatchBuilder, rel: &Relation, from: &str, to: &str) {
    let type_id = rel.type_id.to_string();
    b.push_row([
        Some(rel.from),
        Some(from),
        Some(rel.to),
        Some(to),
        Some(type_id.as_str()),
        Some(CATEGORY),
        Some(rel.key),
        Some("true"),
    ]);
}

/// The entity's columns: built-in fields as `PROPERTY_<UPPER(key)>`, custom fields as
/// `PROPERTY_<UPPER(slug of the name)>`, extra data fields after their field (custom:
/// `<field column>_<PART>`), with `_2`, `_3`... on a clash.
fn discovered(entity: &'static Entity, fields: Vec<Field>) -> Discovered {
    let fields: Vec<Field> = fields.into_iter().filter(|f| f.key != "id").collect();
    let mut columns = Vec::new();
    let mut wanted: Vec<(String, String, ColumnType)> = Vec::new();
    for (i, f) in fields.iter().enumerate() {
        let base = if f.custom { api::slug_column(&f.name) } else { crate::model::property_column(&f.key) };
        columns.push(Column { field: i, sub: None });
        wanted.push((f.key.clone(), base.clone(), api::column_type(&f.key, &f.field_type)));
        for (s, sub) in f.subfields.iter().enumerate() {
            let column = if f.custom {
                format!("{base}_{}", crate::model::upper_identifier(&sub.part))
            } else {
                crate::model::property_column(&sub.key)
            };
            columns.push(Column { field: i, sub: Some(s) });
            wanted.push((sub.key.clone(), column, api::column_type(&sub.key, &sub.field_type)));
        }
    }
    let unique = super::unique_names(wanted.iter().map(|(_, column, _)| column.clone()));
    let properties: Vec<PropertyDefinition> = wanted
        .iter()
        .zip(unique)
        .map(|((name, _, ty), column)| PropertyDefinition {
            name: name.clone(),
            property_type: ty.manifest_name().to_string(),
            column,
        })
        .collect();
    let types: Vec<ColumnType> = wanted.iter().map(|(_, _, ty)| *ty).collect();
    let stream = Arc::new(ObjectStream::typed(object_type(entity), properties, &types, &table("OBJECTS")));
    Discovered { entity, fields, columns, stream }
}

#[async_trait::async_trait]
impl super::CrmExtractor for Pipedrive {
    const NAME: &'static str = "pipedrive";
    const ARCHIVED_EXIST: bool = true;
    type Discovery = Discovery;

    fn client(&self) -> &HttpClient {
        &self.client
    }

    fn discovered(&self) -> &std::sync::OnceLock<Discovery> {
        &self.discovery
    }

    async fn discover_all(&self) -> Result<(Catalog, Discovery)> {
        let me: Value = self
            .client
            .get_json("/api/v1/users/me", &[])
            .await
            .map_err(|e| e.in_stream("account", "GET /api/v1/users/me"))?;
        let account = me
            .pointer("/data/company_id")
            .and_then(api::text)
            .or_else(|| me.pointer("/data/company_domain").and_then(api::text))
            .filter(|a| !a.is_empty())
            .ok_or_else(|| Error::Malformed {
                method: "GET",
                path: "/api/v1/users/me".into(),
                detail: "the answer names no company_id or company_domain, and crmdump keys the day folders' owner and the watermarks by it; check --base-url".into(),
            })?;
        let mut notices = Vec::new();
        let mut entities = Vec::new();
        for entity in self.selected()? {
            let mut pager = Pager::new(&self.client, entity.fields, Vec::new(), entity.fields_paging);
            let mut fields = Vec::new();
            let read: Result<()> = async {
                while let Some(items) = pager.next().await? {
                    fields.extend(items.iter().filter_map(Field::parse));
                }
                Ok(())
            }
            .await;
            match read {
                Ok(()) => entities.push(Arc::new(discovered(entity, fields))),
                Err(e) if forbidden(&e).is_some() => notices.push(missing_scope(
                    &object_type(entity).table_name(),
                    format!(
                        "{} skipped: the token may not read them ({})",
                        entity.plural,
                        forbidden(&e).unwrap_or_default()
                    ),
                )),
                Err(e) => return Err(e.in_stream(format!("fields of {}", entity.plural), pager.describe())),
            }
        }
        if entities.is_empty() {
            return Err(super::nothing_readable(
                "/api/v2/dealFields",
                "entity",
                "Use the API token of a user who can see deals, persons and organizations",
            ));
        }
        let has = |name: &str| entities.iter().any(|d| d.entity.name == name);
        let pairs: Vec<Arc<AssociationPair>> = RELATIONS
            .iter()
            .filter(|r| has(r.from) && has(r.to))
            .map(|r| {
                let (from, to) = (entity(r.from), entity(r.to));
                let (from, to) = (object_type(from), object_type(to));
                let table = schema::association_schema(&from.plural, &to.plural, &from.singular, &to.singular);
                Arc::new(AssociationPair { table: with_text_ids(&table), from, to })
            })
            .collect();
        let objects: Vec<Arc<ObjectStream>> = entities.iter().map(|d| d.stream.clone()).collect();
        let fixed = super::common_tables(self.options.history.is_some()).iter().map(|n| table(n)).collect();
        let catalog = Catalog::assemble(account, objects, pairs, Vec::new(), notices, fixed);
        Ok((catalog, Discovery { entities }))
    }

    async fn run_all(&self, catalog: &Catalog, discovery: &Discovery, extent: &Extent, out: Sender) -> Result<()> {
        self.definitions(catalog, discovery, &out).await?;
        self.owners(&out).await?;
        match self.pipelines(&out).await {
            Err(e) if forbidden(&e).is_some() => {
                let why = forbidden(&e).unwrap_or_default();
                out.send(Emit::Warning(missing_scope("PIPELINES", format!("pipelines and stages skipped: {why}"))))
                    .await?;
            }
            other => other?,
        }
        // Each entity on its own task, as HubSpot's types.
        let jobs: Vec<_> = discovery
            .entities
            .iter()
            .map(|d| {
                let pairs = pairs_from(catalog, d);
                let window = extent.window(&d.stream.table.name);
                // A reconcile compares its own listing; a full read compares what it read.
                let known = match extent.reconcile() {
                    Some(_) => None,
                    None => extent.baseline().and_then(|k| k.get(d.entity.name)).cloned(),
                };
                let (me, d, out) = (self.clone(), d.clone(), out.clone());
                async move { me.entity(&d, window, pairs, known, &out).await }
            })
            .collect();
        super::run_streams(jobs, self.options.concurrency).await?;
        if let Some(reconcile) = extent.reconcile() {
            // Every association of the account comes with the listing: no reverse pass.
            let held = std::mem::take(&mut *self.held.lock().expect("no panic while holding the lock"));
            let jobs: Vec<_> = discovery
                .entities
                .iter()
                .map(|d| {
                    let pairs = pairs_from(catalog, d);
                    let known = reconcile.known.as_ref().and_then(|k| k.get(d.entity.name)).cloned();
                    let held = match extent.window(&d.stream.table.name) {
                        None => Held::Every,
                        Some(_) => Held::These(held.get(d.entity.name).cloned().unwrap_or_default()),
                    };
                    let (me, d, out) = (self.clone(), d.clone(), out.clone());
                    async move { me.reconcile(&d, pairs, known, held, &out).await }
                })
                .collect();
            super::run_streams(jobs, self.options.concurrency).await
        } else if !extent.is_whole() {
            self.reverse(catalog, discovery, extent, &out).await
        } else {
            Ok(())
        }
    }
}

/// Which records of an entity a run's day folder holds, with their associations.
enum Held {
    /// The entity was read whole.
    Every,
    These(HashSet<String>),
}

impl Held {
    fn holds(&self, id: &str) -> bool {
        match self {
            Held::Every => true,
            Held::These(ids) => ids.contains(id),
        }
    }
}

/// The association pairs that start at `d`'s entity (read from its records' keys).
fn pairs_from(catalog: &Catalog, d: &Discovered) -> Vec<Arc<AssociationPair>> {
    catalog.pairs.iter().filter(|p| p.from.type_id == d.entity.name).cloned().collect()
}

/// Query parameters a list carries on every page.
type Params = &'static [(&'static str, &'static str)];

/// One list endpoint of an entity.
#[derive(Debug, Clone, Copy)]
struct ListSpec {
    path: &'static str,
    /// How it takes a time window.
    filter: TimeFilter,
    /// Its own query parameters.
    extra: Params,
}

/// An entity's lists: live records, and archived ones where they are listed apart.
fn lists_of(d: &Discovered) -> Vec<ListSpec> {
    let mut lists = vec![ListSpec { path: d.entity.list, filter: d.entity.filter, extra: d.entity.extra }];
    if let Some((path, filter)) = d.entity.archived {
        lists.push(ListSpec { path, filter, extra: &[] });
    }
    lists
}

/// A list's query: its own parameters and, for offset paging, id order (a record modified
/// while the list is paged keeps its place).
fn list_query(extra: &[(&str, &str)], paging: Paging) -> Vec<(String, String)> {
    let mut query: Vec<(String, String)> = extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    if paging == Paging::Offset {
        query.push(("sort".into(), "id ASC".into()));
    }
    query
}

/// Deleted records: Pipedrive's `is_deleted`, or a deal's `status` `deleted`.
fn is_deleted(r: &Value) -> bool {
    r.get("is_deleted").and_then(Value::as_bool).unwrap_or(false)
        || r.get("status").and_then(Value::as_str) == Some("deleted")
}

/// One list of records pointing at others, read for their associations.
struct Lookup<'a> {
    path: String,
    paging: Paging,
    query: Vec<(String, String)>,
    /// The product a `/products/{id}/deals` list is of (the deals carry no key to it).
    product: Option<&'a str>,
}

/// How an entity's lists page: v2 by cursor, v1 by offset.
fn paging_of(d: &Discovered) -> Paging {
    if d.entity.v2 { Paging::Cursor } else { Paging::Offset }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn windows_widen_to_whole_seconds() {
        let w = Window {
            from: Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::milliseconds(700),
            to: Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap() + chrono::Duration::milliseconds(1),
        };
        let (since, until) = bounds(w);
        assert_eq!(rfc3339(since), "2026-01-01T00:00:00Z");
        assert_eq!(rfc3339(until), "2026-01-02T00:00:01Z");
    }

    #[test]
    fn clashing_names_get_suffixes() {
        let field = |key: &str, name: &str, custom: bool| {
            Field::parse(&serde_json::json!({"field_code": key, "field_name": name, "is_custom_field": custom}))
                .expect("a field definition")
        };
        let d = discovered(
            entity("deal"),
            vec![
                field("title", "Title", false),
                field(&"a".repeat(40), "Title", true),
                field(&"b".repeat(40), "Title", true),
            ],
        );
        let names: Vec<&str> = d.stream.properties.iter().map(|p| p.column.as_str()).collect();
        assert_eq!(names, ["PROPERTY_TITLE", "PROPERTY_TITLE_2", "PROPERTY_TITLE_3"]);
        assert_eq!(d.stream.table.columns[1].ty, ColumnType::Utf8, "OBJECTID holds text ids");
    }
}
