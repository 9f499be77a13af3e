//! Records of one object type (live, then archived), their property history, and the
//! associations of the live ones.
//!
//! Call plan: when every property name (twice, with history) fits in one GET URL (under
//! `--max-url-bytes`, 15,000 by default, a margin below HubSpot's 16,000), one list request
//! per page (100 records, 50 with history, as HubSpot allows). Otherwise the list pages ids
//! only and `batch/read` fetches every property in the JSON body; a 414 turns the pass to the
//! same from the refused page on, and the client keeps URLs under 8 KiB from then on. The
//! plan and its requests per 1,000 records are logged per type.
//!
//! A full listing asks each page for its records' associations inline (`associations=` with
//! every type): only the pairs a record shows are read, and only for the records that show
//! them. A windowed read (search, batch reads) reads every pair from the type that has
//! association types, asking once about those no run asked about.
//! Either way record ids are buffered by the thousand per pair and read through v4 batch
//! reads, following each input's own `after`; the association types the answers show go to
//! the run's [`Registry`]. A reconcile then lists every id of the type and reads the
//! associations of those the run did not read.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde_json::json;
use serde_json::value::RawValue;

use super::pairs::{Inline, Registry};
use super::search::{ChangedRecords, SEARCH_PAGE};
use super::{Sender, api};
use crate::error::{Error, Result};
use crate::extract::{AssociationPair, Emit, Notice, ObjectStream, Window};
use crate::http::HttpClient;
use crate::model::{AssociationType, ObjectType};
use crate::schema::iso;
use crate::schema::{BatchBuilder, fixed_table};

/// HubSpot's largest page for list and batch read.
const RECORDS_PER_PAGE: usize = 100;
/// HubSpot's largest page when `propertiesWithHistory` is asked for.
const RECORDS_PER_PAGE_WITH_HISTORY: usize = 50;

/// The largest page of full records a list or batch read may ask for.
fn page_of_records(history: Option<usize>) -> usize {
    if history.is_some() { RECORDS_PER_PAGE_WITH_HISTORY } else { RECORDS_PER_PAGE }
}
/// HubSpot's largest association batch read (since 2025-02-10).
const ASSOCIATION_INPUTS: usize = 1000;
/// Room kept in the URL for the `after` cursor and the other parameters.
const URL_RESERVE: usize = 256;
/// Properties whose values a history does not hold: the id has no history, and a survivor's
/// merged ids are asked as values so that a merge never depends on how its history reads.
const NO_HISTORY: &str = "hs_object_id,hs_merged_object_ids";

/// How one pass reads its records.
#[derive(Clone)]
struct Plan {
    path: String,
    archived: &'static str,
    /// Every property (and history) in the list URL; otherwise ids, then batch reads.
    all_in_url: bool,
    /// With history, when the names fit the URL once but not twice: the list asks every
    /// property's history and takes the current value from its newest entry
    /// ([`current_from_history`]); `properties=` asks only [`NO_HISTORY`].
    current_from_history: bool,
    names: String,
    history: Option<usize>,
    page_size: usize,
    /// `associations=`: the types whose associations each listed record shows inline, so
    /// that only pairs found associated are read (a full listing of live records).
    associations: Option<String>,
}

impl Plan {
    fn new(
        client: &HttpClient,
        stream: &ObjectStream,
        archived: bool,
        history: Option<usize>,
        associations: Option<String>,
    ) -> Result<Plan> {
        let path = format!("/crm/v3/objects/{}", stream.object_type.api_name);
        let names = stream.properties.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(",");
        let page_size = page_of_records(history);
        let mut plan = Plan {
            path,
            archived: if archived { "true" } else { "false" },
            all_in_url: true,
            current_from_history: false,
            names,
            history,
            page_size,
            associations,
        };
        if !plan.fits(client)? && history.is_some() {
            plan.current_from_history = true;
        }
        if !plan.fits(client)? {
            plan.ids_only();
        }
        Ok(plan)
    }

    /// Whether the first page's URL stays under the client's limit (with room for `after`).
    fn fits(&self, client: &HttpClient) -> Result<bool> {
        let query = self.list_query(None);
        let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Ok(client.url(&self.path, &query)?.as_str().len() + URL_RESERVE <= client.url_limit())
    }

    /// The plan in words, and the requests it takes per 1,000 records. The cheapest that
    /// fits is chosen: every name in the URL takes a request per page (100 records, 50 with
    /// history); ids then batch reads take a list page per 100 and a read per 100 (50 with
    /// history); names cut into URL-sized chunks would take a list page per chunk per page,
    /// never fewer than ids and reads once two chunks are needed.
    fn described(&self) -> (String, usize) {
        let pages = 1000usize.div_ceil(self.page_size);
        let what = if self.history.is_some() { "properties and history" } else { "properties" };
        if self.all_in_url && self.current_from_history {
            let how = format!(
                "list pages of {} with every property's history in the URL (values from the newest entry)",
                self.page_size
            );
            return (how, pages);
        }
        if self.all_in_url {
            return (format!("list pages of {} with every name of the {what} in the URL", self.page_size), pages);
        }
        let read = page_of_records(self.history);
        (
            format!("ids in list pages of {}, then the {what} by batch reads of {read}", self.page_size),
            pages + 1000usize.div_ceil(read),
        )
    }

    /// Lists ids (and dates) only; properties come through batch reads.
    fn ids_only(&mut self) {
        self.all_in_url = false;
        self.current_from_history = false;
        self.page_size = RECORDS_PER_PAGE;
    }

    fn list_query<'a>(&'a self, after: Option<&'a str>) -> Vec<(&'a str, String)> {
        let mut q = vec![("limit", self.page_size.to_string()), ("archived", self.archived.to_string())];
        if self.all_in_url {
            let values = if self.current_from_history { NO_HISTORY.to_string() } else { self.names.clone() };
            q.push(("properties", values));
            if self.history.is_some() {
                q.push(("propertiesWithHistory", self.names.clone()));
            }
        } else {
            q.push(("properties", "hs_object_id".to_string()));
        }
        if let Some(types) = &self.associations {
            q.push(("associations", types.clone()));
        }
        if let Some(a) = after {
            q.push(("after", a.to_string()));
        }
        q
    }
}

/// What of one type a run reads.
pub(super) struct Reach {
    /// The changes in this window; `None` for every record.
    pub window: Option<Window>,
    /// These records by id, besides the window (those webhooks named).
    pub named: Vec<String>,
    /// List every id too, and compare with the baseline.
    pub reconcile: Option<crate::model::Reconcile>,
    /// The type's ids in the baseline, which a whole read (not a reconcile) compares with.
    pub known: Option<HashSet<String>>,
}

/// Reads the records of one type: all of them (no window), or those changed in the window,
/// those archived in it, and the `named` ones (by id) that search did not return.
pub(super) async fn extract(
    client: &HttpClient,
    stream: Arc<ObjectStream>,
    found: Found,
    history: Option<usize>,
    reach: Reach,
    ingested: &Arc<str>,
    out: &Sender,
) -> Result<()> {
    let Reach { window, named, reconcile, known } = reach;
    let mut emitter = Emitter {
        client,
        stream: stream.clone(),
        found,
        whole: window.is_none(),
        asked: false,
        history,
        ingested,
        out,
        pending: BTreeMap::new(),
        problems: Problems::default(),
        read: HashSet::new(),
    };
    match window {
        None => {
            for archived in [false, true] {
                // Archived records have no associations to read.
                let inline = (!archived).then(|| emitter.found.inline.query.clone());
                let plan = Plan::new(client, &stream, archived, history, inline)?;
                if !archived {
                    let (how, requests) = plan.described();
                    tracing::info!(table = %stream.table.name, plan = %how, requests_per_1000_records = requests, "Call plan.");
                }
                listing(client, &stream, &plan, None, &mut emitter).await?;
            }
        }
        Some(window) => {
            changed(client, &stream, window, &mut emitter).await?;
            // Archiving leaves the last-modified date alone and search never shows archived
            // records: list the recycle bin (ids only) and keep what was archived in the window.
            let mut plan = Plan::new(client, &stream, true, history, None)?;
            plan.ids_only();
            listing(client, &stream, &plan, Some(window), &mut emitter).await?;
            // Records webhook events named that the window did not hold (an association
            // changed, a record restored or merged into, an event older than the window).
            let missing: Vec<api::SimpleObject> =
                named.into_iter().filter(|id| !emitter.read.contains(id)).map(api::SimpleObject::with_id).collect();
            if !missing.is_empty() {
                let table = stream.table.name.clone();
                let count = missing.len();
                let rows = batch_read(client, &stream, "false", history, missing, &mut emitter.problems)
                    .await
                    .map_err(|e| e.in_stream(&table, "records named by webhook events"))?;
                tracing::info!(table = %table, named = count, read = rows.len(), "Records named by webhook events read by id.");
                emitter.emit(rows, false, None).await?;
            }
        }
    }
    if let Some(r) = reconcile {
        let type_id = &stream.object_type.type_id;
        emitter.reconcile(r.known.as_ref().and_then(|k| k.get(type_id))).await?;
    } else if let (true, Some(known)) = (emitter.whole, known) {
        // A whole read saw every live and archived record: what the baseline had and the read
        // lacks vanished since, and is confirmed by id as a reconcile confirms it.
        let mut missing: Vec<String> = known.into_iter().filter(|id| !emitter.read.contains(id)).collect();
        missing.sort();
        let table = stream.table.name.clone();
        let (gone, _) = confirm_gone(client, &stream, missing)
            .await
            .map_err(|e| e.in_stream(&table, "reading the ids the baseline had and the read lacks"))?;
        if !gone.is_empty() {
            tracing::info!(table = %table, gone = gone.len(), "Records the baseline had are gone.");
        }
        out.reconciled(&stream, &gone, ingested).await?;
    }
    emitter.finish().await
}

/// Pages through a list pass; with `archived_in`, keeps only records archived in that window.
///
/// The next page is requested while the current one is read in full and emitted, so the
/// API's latency overlaps our work instead of adding to it.
async fn listing(
    client: &HttpClient,
    stream: &Arc<ObjectStream>,
    plan: &Plan,
    archived_in: Option<Window>,
    emitter: &mut Emitter<'_>,
) -> Result<()> {
    let table = stream.table.name.clone();
    let (mut records, mut pages) = (0u64, 0u64);
    // A 414 (the server takes shorter URLs than the limit) turns the pass to ids and batch
    // reads from the page that was refused; the client keeps URLs shorter from then on.
    let mut plan = plan.clone();
    let mut current = match list_page(client, stream, &plan, None, 1).await {
        Err(e) if plan.all_in_url && e.status() == Some(414) => {
            plan.ids_only();
            list_page(client, stream, &plan, None, 1).await?
        }
        other => other?,
    };
    let plan = &mut plan;
    loop {
        let (page, repaired) = current;
        let next = page.next_after();
        let (mut listed, bad) = api::records(page.results);
        emitter.problems.page(repaired, bad);
        if let Some(w) = archived_in {
            listed.retain(|r| crate::extract::in_window(&w, r.archived_at.as_deref()));
        }
        // Taken from the listed records: a batch read's answer has no associations.
        let targets: Option<HashMap<String, Vec<ObjectType>>> = plan
            .associations
            .as_ref()
            .map(|_| listed.iter().map(|r| (r.id.clone(), emitter.found.inline.targets(r))).collect());
        let page_name = format!("page {} (archived={})", pages + 1, plan.archived);
        let work = async {
            let rows = if plan.all_in_url && plan.current_from_history {
                listed.into_iter().map(|r| current_from_history(stream, r)).collect()
            } else if plan.all_in_url {
                listed
            } else {
                batch_read(client, stream, plan.archived, plan.history, listed, &mut emitter.problems)
                    .await
                    .map_err(|e| e.in_stream(&table, &page_name))?
            };
            records += rows.len() as u64;
            emitter.emit(rows, plan.archived == "true", targets).await
        };
        let prefetch = async {
            match &next {
                Some(after) => list_page(client, stream, plan, Some(after), pages + 2).await.map(Some),
                None => Ok(None),
            }
        };
        let (worked, fetched) = tokio::join!(work, prefetch);
        worked?;
        pages += 1;
        if pages.is_multiple_of(50) {
            tracing::info!(table = %table, records, pages, archived = plan.archived, "Reading records.");
        }
        let fetched = match fetched {
            Err(e) if plan.all_in_url && e.status() == Some(414) => {
                plan.ids_only();
                list_page(client, stream, plan, next.as_deref(), pages + 1).await.map(Some)
            }
            other => other,
        };
        match fetched? {
            Some(p) => current = p,
            None => break,
        }
    }
    tracing::info!(table = %table, records, pages, archived = plan.archived, "Records read.");
    Ok(())
}

/// A record listed with every property's history and only [`NO_HISTORY`] as values: each
/// other property's value is its history's newest entry, and null when its history is empty
/// (a property never set). HubSpot's answers hold this: a history's newest entry is the
/// current value, and a property with no value has an empty history.
fn current_from_history(stream: &ObjectStream, mut record: api::SimpleObject) -> api::SimpleObject {
    for p in &stream.properties {
        if record.properties.contains_key(p.name.as_str()) {
            continue;
        }
        let newest = record
            .properties_with_history
            .get(p.name.as_str())
            .and_then(|h| h.iter().max_by(|a, b| instant_order(&a.timestamp, &b.timestamp)))
            .and_then(|e| e.value.clone());
        record.properties.insert(p.name.clone(), newest);
    }
    record
}

/// The order of two history timestamps as instants (canonical ones compare as text; one that
/// does not parse comes first).
fn instant_order(a: &str, b: &str) -> std::cmp::Ordering {
    use crate::schema::{is_canonical_instant, parse_instant};
    if is_canonical_instant(a) && is_canonical_instant(b) {
        return a.cmp(b);
    }
    let millis = |t: &str| parse_instant(t).map(|t| t.timestamp_millis()).unwrap_or(i64::MIN);
    millis(a).cmp(&millis(b))
}

type RawPage = (api::Page<Box<RawValue>>, bool);

/// Page `number` of a list pass, cut into each record's JSON (parsed by [`api::records`]).
async fn list_page(
    client: &HttpClient,
    stream: &ObjectStream,
    plan: &Plan,
    after: Option<&str>,
    number: u64,
) -> Result<RawPage> {
    let query = plan.list_query(after);
    let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
    client.get_json_repaired(&plan.path, &query).await.map_err(|e| {
        let page = format!("page {number} (archived={}, after={})", plan.archived, after.unwrap_or("start"));
        e.in_stream(&stream.table.name, page)
    })
}

/// Records changed in `window`: ids through search, then every property by batch read.
async fn changed(
    client: &HttpClient,
    stream: &Arc<ObjectStream>,
    window: Window,
    emitter: &mut Emitter<'_>,
) -> Result<()> {
    let table = stream.table.name.clone();
    let read = page_of_records(emitter.history);
    let plan = format!("search pages of {SEARCH_PAGE} ids, then batch reads of {read}");
    let requests = 1000usize.div_ceil(SEARCH_PAGE) + 1000usize.div_ceil(read);
    tracing::info!(table = %table, plan = %plan, requests_per_1000_records = requests, "Call plan.");
    let mut search = ChangedRecords::new(client, &stream.object_type, window);
    let mut records = 0u64;
    loop {
        let page_name = format!("search {} ({} to {})", search.queries + 1, iso(window.from), iso(window.to));
        let Some(listed) = search.next_page().await.map_err(|e| e.in_stream(&table, &page_name))? else {
            break;
        };
        let rows = batch_read(client, stream, "false", emitter.history, listed, &mut emitter.problems)
            .await
            .map_err(|e| e.in_stream(&table, &page_name))?;
        records += rows.len() as u64;
        emitter.emit(rows, false, None).await?;
        if search.queries.is_multiple_of(50) {
            tracing::info!(table = %table, records, searches = search.queries, "Reading changed records.");
        }
    }
    tracing::info!(table = %table, records, searches = search.queries, from = %iso(window.from), to = %iso(window.to), "Changed records read.");
    if search.rereads > 0 {
        emitter
            .out
            .send(Emit::Warning(Notice {
                kind: "search_window_reread".into(),
                table: table.clone(),
                detail: "search slices that returned fewer records than they reported, read again".into(),
                count: Some(search.rereads),
            }))
            .await?;
    }
    Ok(())
}

/// How a type's job learns which pairs to read: the pairs known to start at the type, the
/// run's record of every pair's association types, and what a full listing asks inline.
pub(super) struct Found {
    pub pairs: Vec<Arc<AssociationPair>>,
    pub registry: Arc<Registry>,
    pub inline: Arc<Inline>,
}

/// Turns pages of full records into object rows, history rows and (for live records)
/// association reads, a thousand ids at a time per pair.
struct Emitter<'a> {
    client: &'a HttpClient,
    stream: Arc<ObjectStream>,
    /// The pairs read from this type, growing as listed records show new ones.
    found: Found,
    /// The type is read whole: each pair found associated has its labels asked once.
    whole: bool,
    /// The pairs from the type were settled for reads without inline associations.
    asked: bool,
    history: Option<usize>,
    ingested: &'a Arc<str>,
    out: &'a Sender,
    /// Per pair (by the other type's id), the ids whose associations are still to read.
    pending: BTreeMap<String, Vec<String>>,
    problems: Problems,
    /// Ids of the records emitted so far.
    read: HashSet<String>,
}

/// Data problems met reading one type's records, reported per table once it is read.
#[derive(Default)]
struct Problems {
    bad_records: u64,
    /// The first few, for the manifest.
    examples: Vec<String>,
    repaired_pages: u64,
}

impl Problems {
    fn page(&mut self, repaired: bool, bad: Vec<String>) {
        self.repaired_pages += repaired as u64;
        self.bad_records += bad.len() as u64;
        for b in bad {
            tracing::warn!(problem = %b, "A record was left out.");
            if self.examples.len() < 3 {
                self.examples.push(b);
            }
        }
    }

    async fn report(&self, table: &str, out: &Sender) -> Result<()> {
        if self.bad_records > 0 {
            let detail = format!("records left out because they could not be read: {}", self.examples.join("; "));
            out.send(Emit::Warning(Notice::bad_records(table, self.bad_records, detail))).await?;
        }
        if self.repaired_pages > 0 {
            out.send(Emit::Warning(Notice::invalid_utf8(table, self.repaired_pages, ""))).await?;
        }
        Ok(())
    }
}

impl Emitter<'_> {
    /// Emits `rows`; for live ones, queues their associations: with `targets` (what the
    /// listing showed inline), of the pairs each record is associated in, otherwise of every
    /// known pair.
    async fn emit(
        &mut self,
        rows: Vec<api::SimpleObject>,
        archived: bool,
        targets: Option<HashMap<String, Vec<ObjectType>>>,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        self.read.extend(rows.iter().map(|r| r.id.clone()));
        if let Some(keep) = self.history {
            let mut h = history_rows(&self.stream, &rows, keep, self.ingested);
            self.out.rows("OBJECT_PROPERTIES_HISTORY", &mut h).await?;
        }
        // Archived records have no associations to read.
        if !archived {
            match &targets {
                Some(targets) => {
                    for r in &rows {
                        for to in targets.get(&r.id).into_iter().flatten() {
                            self.pair_to(to).await?;
                            self.pending.entry(to.type_id.clone()).or_default().push(r.id.clone());
                        }
                    }
                }
                None => {
                    if !self.asked {
                        // Search and batch reads carry no associations: every pair from the type
                        // that has association types is read, asked about once if unknown.
                        self.asked = true;
                        let from = self.stream.object_type.clone();
                        for to in self.found.registry.pairs_from(self.client, &from).await? {
                            self.pair_to(&to).await?;
                        }
                    }
                    for pair in &self.found.pairs {
                        let ids = self.pending.entry(pair.to.type_id.clone()).or_default();
                        ids.extend(rows.iter().map(|r| r.id.clone()));
                    }
                }
            }
        }
        let (batch, unparseable) = raw_batch(&self.stream, &rows, self.ingested)?;
        self.out.send(Emit::Objects { stream: self.stream.clone(), batch, unparseable }).await?;
        let full: Vec<String> =
            self.pending.iter().filter(|(_, ids)| ids.len() >= ASSOCIATION_INPUTS).map(|(to, _)| to.clone()).collect();
        for to in full {
            while self.pending[&to].len() >= ASSOCIATION_INPUTS {
                let chunk: Vec<String> =
                    self.pending.get_mut(&to).expect("listed above").drain(..ASSOCIATION_INPUTS).collect();
                self.read_pair(&to, &chunk).await?;
            }
        }
        Ok(())
    }

    /// The pair from this type to `to`, added (and its table declared) when it is new.
    async fn pair_to(&mut self, to: &ObjectType) -> Result<()> {
        if self.found.pairs.iter().any(|p| p.to == *to) {
            return Ok(());
        }
        let pair = Arc::new(AssociationPair::new(self.stream.object_type.clone(), to.clone()));
        self.out.send(Emit::Pair(pair.clone())).await?;
        self.found.pairs.push(pair);
        Ok(())
    }

    /// Reads the associations of `ids` in the pair to `to`, and notes the types they showed.
    async fn read_pair(&self, to: &str, ids: &[String]) -> Result<u64> {
        let Some(pair) = self.found.pairs.iter().find(|p| p.to.type_id == to) else {
            return Ok(0);
        };
        let (requests, seen) = associations(self.client, pair, ids, self.ingested, self.out).await?;
        self.found.registry.saw(self.client, pair, seen, self.whole).await?;
        Ok(requests)
    }

    /// A reconcile of the type, once its records are read: lists every live id, reports
    /// those `known` holds that the listing lacks and reads confirm are gone, and reads the
    /// associations of every listed id this run did not read, so that the day folder holds
    /// every association of the type.
    async fn reconcile(&mut self, known: Option<&HashSet<String>>) -> Result<()> {
        let table = self.stream.table.name.clone();
        let object_type = &self.stream.object_type;
        let (ids, listing_requests) = super::search::every_id(self.client, object_type)
            .await
            .map_err(|e| e.in_stream(&table, "reconcile: every id"))?;
        let listed: HashSet<&String> = ids.iter().collect();
        let mut missing: Vec<String> = known.into_iter().flatten().filter(|id| !listed.contains(id)).cloned().collect();
        missing.sort();
        let (gone, confirm_requests) = confirm_gone(self.client, &self.stream, missing)
            .await
            .map_err(|e| e.in_stream(&table, "reconcile: reading the missing ids"))?;
        self.out.reconciled(&self.stream, &gone, self.ingested).await?;
        let mut association_requests = 0;
        let unread: Vec<String> = ids.iter().filter(|id| !self.read.contains(*id)).cloned().collect();
        let others: Vec<String> = self.found.pairs.iter().map(|p| p.to.type_id.clone()).collect();
        for to in &others {
            for chunk in unread.chunks(ASSOCIATION_INPUTS) {
                association_requests += self.read_pair(to, chunk).await?;
            }
        }
        tracing::info!(table = %table, ids = ids.len(), gone = gone.len(), listing_requests, association_requests, "Reconciled.");
        let listing_requests = listing_requests + confirm_requests;
        let type_id = object_type.type_id.clone();
        self.out.send(Emit::Listed { type_id, ids, listing_requests, association_requests }).await
    }

    async fn finish(mut self) -> Result<()> {
        for (to, ids) in std::mem::take(&mut self.pending) {
            if !ids.is_empty() {
                self.read_pair(&to, &ids).await?;
            }
        }
        self.problems.report(&self.stream.table.name, self.out).await?;
        let done = std::iter::once(self.stream.table.name.clone())
            .chain(self.found.pairs.iter().map(|p| p.table.name.clone()));
        self.out.complete(done.collect()).await
    }
}

/// Of ids a listing lacked, those a read confirms are gone: not live and not in the recycle
/// bin (archivings are reported from there). A read of a merged id answers its survivor: the
/// batch reads place the ids the answers' `hs_merged_object_ids` name; each id still unplaced
/// is read on its own, and when that answers another record the id was merged into it (the
/// survivor the API names, even when its merge property does not list the id, as after a
/// chain of merges), and only a 404 makes it deleted. An id the live batch read reports not
/// found was answered by no survivor: it is deleted without a read of its own. Returns the gone ids with the survivor of
/// each merged one, and the requests sent.
async fn confirm_gone(
    client: &HttpClient,
    stream: &ObjectStream,
    missing: Vec<String>,
) -> Result<(Vec<(String, Option<String>)>, u64)> {
    let (mut gone, mut requests) = (Vec::new(), 0);
    for chunk in missing.chunks(100) {
        let mut survivors: HashMap<String, Option<String>> = chunk.iter().map(|id| (id.clone(), None)).collect();
        let mut found: HashSet<String> = HashSet::new();
        // Ids the live read reported not found: answered by no survivor either.
        let mut not_live: HashSet<String> = HashSet::new();
        for archived in ["false", "true"] {
            let path = format!("/crm/v3/objects/{}/batch/read?archived={archived}", stream.object_type.api_name);
            let inputs: Vec<_> = chunk.iter().filter(|id| !found.contains(*id)).map(|id| json!({"id": id})).collect();
            if inputs.is_empty() {
                break;
            }
            let body = json!({"inputs": inputs, "properties": ["hs_object_id", "hs_merged_object_ids"]});
            requests += 1;
            let page: api::BatchResults<api::SimpleObject> = client.post_json(&path, &body).await?;
            if archived == "false" {
                not_live.extend(page.not_found().map(str::to_string));
            }
            for r in page.results {
                if survivors.contains_key(&r.id) {
                    found.insert(r.id.clone());
                    continue;
                }
                // The survivor of merged ids: they are gone, merged into it.
                let merged = r.properties.get("hs_merged_object_ids").cloned().flatten().unwrap_or_default();
                for m in merged.split(';').map(str::trim) {
                    if let Some(survivor) = survivors.get_mut(m) {
                        *survivor = Some(r.id.clone());
                    }
                }
            }
        }
        for id in chunk.iter().filter(|id| !found.contains(*id)) {
            let survivor = match &survivors[id] {
                Some(survivor) => Some(survivor.clone()),
                None if not_live.contains(id) => None,
                None => {
                    requests += 1;
                    read_survivor(client, stream, id).await?
                }
            };
            gone.push((id.clone(), survivor));
        }
    }
    Ok((gone, requests))
}

/// Which of `ids` the type's recycle bin holds (batch reads of 100 with `archived=true`).
pub(super) async fn in_recycle_bin(client: &HttpClient, stream: &ObjectStream, ids: &[String]) -> Result<Vec<String>> {
    let path = format!("/crm/v3/objects/{}/batch/read?archived=true", stream.object_type.api_name);
    let mut found = Vec::new();
    for chunk in ids.chunks(100) {
        let inputs: Vec<_> = chunk.iter().map(|id| json!({"id": id})).collect();
        let body = json!({"inputs": inputs, "properties": ["hs_object_id"]});
        let page: api::BatchResults<api::SimpleObject> = client.post_json(&path, &body).await?;
        found.extend(page.results.into_iter().filter(|r| r.archived && chunk.contains(&r.id)).map(|r| r.id));
    }
    Ok(found)
}

/// The record a read of `id` answers when it is another one (`id` was merged into it); `None`
/// when the read finds nothing (404: deleted).
async fn read_survivor(client: &HttpClient, stream: &ObjectStream, id: &str) -> Result<Option<String>> {
    let path = format!("/crm/v3/objects/{}/{id}", stream.object_type.api_name);
    match client.get_json::<api::SimpleObject>(&path, &[("properties", "hs_object_id")]).await {
        Ok(record) => Ok((record.id != id).then_some(record.id)),
        Err(e) if e.status() == Some(404) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Reads every property (and its history) of the listed records through `batch/read`, in
/// list order. A record deleted between the two calls is left out (it is no longer there).
async fn batch_read(
    client: &HttpClient,
    stream: &ObjectStream,
    archived: &str,
    history: Option<usize>,
    listed: Vec<api::SimpleObject>,
    problems: &mut Problems,
) -> Result<Vec<api::SimpleObject>> {
    if listed.is_empty() {
        return Ok(listed);
    }
    let path = format!("/crm/v3/objects/{}/batch/read?archived={archived}", stream.object_type.api_name);
    let names: Vec<&str> = stream.properties.iter().map(|p| p.name.as_str()).collect();
    let with_history: &[&str] = if history.is_some() { &names } else { &[] };
    let chunk = page_of_records(history);
    // The chunks of one page are read at the same time (the rate limiter still paces them).
    let reads = listed.chunks(chunk).map(|ids| {
        let body = json!({
            "inputs": ids.iter().map(|r| json!({"id": r.id})).collect::<Vec<_>>(),
            "properties": names,
            "propertiesWithHistory": with_history,
        });
        let path = &path;
        async move { client.post_json_repaired::<api::BatchResults<Box<RawValue>>, _>(path, &body).await }
    });
    let mut by_id: HashMap<String, api::SimpleObject> = HashMap::with_capacity(listed.len());
    for (read, repaired) in futures::future::try_join_all(reads).await? {
        let (good, bad) = api::records(read.results);
        problems.page(repaired, bad);
        by_id.extend(good.into_iter().map(|r| (r.id.clone(), r)));
    }
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

/// `OBJECT_PROPERTIES_HISTORY` rows: per (record, property) the newest `keep` values by
/// timestamp (HubSpot does not promise an order).
fn history_rows(stream: &ObjectStream, rows: &[api::SimpleObject], keep: usize, ingested: &Arc<str>) -> BatchBuilder {
    let mut b = BatchBuilder::new(fixed_table("OBJECT_PROPERTIES_HISTORY"), ingested.clone(), rows.len() * 8);
    let type_id = stream.object_type.type_id.as_str();
    for r in rows {
        for p in &stream.properties {
            let Some(entries) = r.properties_with_history.get(&p.name) else {
                continue;
            };
            let mut sorted: Vec<(i64, &api::HistoryEntry)> = entries.iter().map(|e| (0, e)).collect();
            if entries.iter().all(|e| crate::schema::is_canonical_instant(&e.timestamp)) {
                // Canonical timestamps sort as their instants: no parsing needed.
                sorted.sort_by(|a, b| b.1.timestamp.cmp(&a.1.timestamp));
            } else {
                for e in &mut sorted {
                    e.0 =
                        crate::schema::parse_instant(&e.1.timestamp).map(|t| t.timestamp_millis()).unwrap_or(i64::MIN);
                }
                sorted.sort_by_key(|e| std::cmp::Reverse(e.0));
            }
            for (_, e) in sorted.into_iter().take(keep) {
                b.push_row([
                    Some(type_id),
                    Some(r.id.as_str()),
                    Some(p.name.as_str()),
                    e.value.as_deref(),
                    Some(e.timestamp.as_str()),
                    e.source_type.as_deref(),
                    e.source_id.as_deref(),
                    e.updated_by_user_id.as_deref(),
                ]);
            }
        }
    }
    b
}

/// The CPU work of one page of records: the response body (JSON) to the object batch and
/// the `OBJECT_PROPERTIES_HISTORY` rows the export emits for it, through the functions the
/// export uses. For the benches, which measure it without a server.
pub fn page_batches(
    stream: &ObjectStream,
    body: &[u8],
    keep: usize,
    ingested: &Arc<str>,
) -> Result<(arrow::record_batch::RecordBatch, arrow::record_batch::RecordBatch)> {
    let page: api::Page<Box<RawValue>> = serde_json::from_slice(body).map_err(|e| Error::Malformed {
        method: "GET",
        path: format!("/crm/v3/objects/{}", stream.object_type.api_name),
        detail: e.to_string(),
    })?;
    let (rows, _) = api::records(page.results);
    let history = history_rows(stream, &rows, keep, ingested).finish()?;
    Ok((raw_batch(stream, &rows, ingested)?.0, history))
}

/// One page of records in the raw shape of `stream.raw`, and how many of the records' own
/// timestamps did not parse (NULL in the batch, counted in the manifest's warnings: one bad
/// timestamp is a data problem, not a reason to fail the export or drop the record).
fn raw_batch(
    stream: &ObjectStream,
    rows: &[api::SimpleObject],
    ingested: &Arc<str>,
) -> Result<(arrow::record_batch::RecordBatch, u64)> {
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
    let unparseable = b.unparseable();
    Ok((b.finish()?, unparseable))
}

/// Associations of `ids` in `pair`, following per-input paging until none is left. Returns
/// the requests sent and the association types the answers showed.
async fn associations(
    client: &HttpClient,
    pair: &Arc<AssociationPair>,
    ids: &[String],
    ingested: &Arc<str>,
    out: &Sender,
) -> Result<(u64, Vec<AssociationType>)> {
    let mut requests = 0;
    let mut seen: Vec<AssociationType> = Vec::new();
    let path = format!("/crm/v4/associations/{}/{}/batch/read", pair.from.api_name, pair.to.api_name);
    let mut builder = BatchBuilder::new(fixed_table("ASSOCIATIONS"), ingested.clone(), ids.len());
    let mut inputs: Vec<serde_json::Value> = ids.iter().map(|id| json!({"id": id})).collect();
    let mut round = 0;
    while !inputs.is_empty() {
        round += 1;
        requests += 1;
        let body = json!({ "inputs": inputs });
        let page: api::BatchResults<api::AssociationResult> = client.post_json(&path, &body).await.map_err(|e| {
            e.in_stream(&pair.table.name, format!("ids {}..{} round {round}", ids[0], ids[ids.len() - 1]))
        })?;
        inputs = Vec::new();
        for result in page.results {
            for to in &result.to {
                for kind in &to.association_types {
                    if !seen.iter().any(|s| s.type_id == kind.type_id) {
                        seen.push(kind.to_model());
                    }
                    let type_id = kind.type_id.to_string();
                    let primary =
                        kind.category.as_deref() == Some("HUBSPOT_DEFINED") && kind.label.as_deref() == Some("Primary");
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
        out.send(Emit::Associations { pair: pair.clone(), batch: builder.finish()? }).await?;
    }
    Ok((requests, seen))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model;
    use arrow::array::{Array, AsArray};

    fn stream(props: &[(&str, &str)]) -> ObjectStream {
        ObjectStream::from_names(model::standard_type("contacts").unwrap().to_object_type(), props)
    }

    /// Our own fixture in the shape of a recorded HubSpot contacts page.
    #[test]
    fn a_recorded_shape_page_parses_into_the_right_rows() {
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../../../fixtures/hubspot/contacts-page.json")).unwrap();
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
        let (raw, bad_times) = raw_batch(&s, &page.results, &ingested).unwrap();
        assert_eq!(bad_times, 0);
        let parts = crate::split::split_objects(&s, &raw, &ingested).unwrap();
        let typed = &parts.iter().find(|p| p.table == "OBJECTS_CONTACTS").unwrap().batch;
        let column = |name: &str| typed.column(typed.schema().index_of(name).unwrap()).as_string::<i32>().clone();
        assert_eq!(column("OBJECTID").value(1), "512000000002");
        assert_eq!(column("UPDATEDAT").value(0), "2025-06-01T12:30:00.000Z");
        assert_eq!(column("PROPERTY_FIRSTNAME").value(0), "Zoë, \"Z\"");
        assert_eq!(column("PROPERTY_FIRSTNAME").value(1), "line\nbreak");
        assert_eq!(column("PROPERTY_EMAIL").value(1), "", "the empty string stays empty");
        assert_eq!(column("PROPERTY_ANNUALREVENUE").value(0), "1234.50");
        assert!(column("PROPERTY_ANNUALREVENUE").is_null(1), "N/A is NULL in a number column");
        assert_eq!(column("PROPERTY_NOTES_LAST_CONTACTED").value(0), "2025-01-10T08:00:00.000Z");
        assert!(column("PROPERTY_HS_EMAIL_OPTOUT").is_null(1));
        assert!(column("PROPERTY_NOT_SENT").is_null(0), "a property absent from the response is NULL");
        let long = &parts.iter().find(|p| p.table == "OBJECT_PROPERTIES").unwrap().batch;
        assert_eq!(long.num_rows(), 5 + 3, "non-null values only");
    }
}
