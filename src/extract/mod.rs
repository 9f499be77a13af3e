//! Extractors page through a CRM's API and emit Arrow record batches; they never write
//! files. Discovery (types, properties, association labels) comes first and yields the
//! [`Catalog`] of every table the export will write, so that empty tables still appear.

pub mod hubspot;
pub mod pipedrive;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;

use crate::error::{Error, Result};
use crate::model::ObjectType;
pub use crate::model::{Extent, Window};
use crate::schema::{ColumnType, TableSchema};

/// A property definition as the exporter keeps it.
#[derive(Debug, Clone)]
pub struct PropertyDefinition {
    pub name: String,
    /// The API's property type (`string`, `number`, `datetime`, ...).
    pub property_type: String,
    /// Its column in `OBJECTS_<PLURAL>`.
    pub column: String,
}

/// One object type to export, with its two schemas.
#[derive(Debug)]
pub struct ObjectStream {
    pub object_type: ObjectType,
    pub properties: Vec<PropertyDefinition>,
    /// Shape of the batches the extractor emits: the `OBJECTS` columns, then one Utf8
    /// column per property (named by property name) holding the value exactly as sent.
    pub raw: Arc<TableSchema>,
    /// `OBJECTS_<PLURAL>`: the `OBJECTS` columns, then typed `PROPERTY_` columns.
    pub table: Arc<TableSchema>,
}

impl ObjectStream {
    /// The stream of `object_type` with these properties (columns already chosen), its raw
    /// and typed schemas derived from them.
    pub fn new(object_type: ObjectType, properties: Vec<PropertyDefinition>) -> ObjectStream {
        let types: Vec<ColumnType> =
            properties.iter().map(|p| ColumnType::from_property_type(&p.property_type)).collect();
        ObjectStream::typed(object_type, properties, &types, &crate::schema::fixed_table("OBJECTS"))
    }

    /// The stream with these column types (one per property) after the `base` columns
    /// (`OBJECTS`, or its text-id form for Pipedrive).
    pub fn typed(
        object_type: ObjectType,
        properties: Vec<PropertyDefinition>,
        types: &[ColumnType],
        base: &TableSchema,
    ) -> ObjectStream {
        let columns: Vec<(String, String, ColumnType)> =
            properties.iter().zip(types).map(|(p, ty)| (p.name.clone(), p.column.clone(), *ty)).collect();
        let (raw, table) = crate::schema::object_schemas(&object_type.table_name(), base, &columns);
        ObjectStream { object_type, properties, raw, table }
    }
}

#[cfg(test)]
impl ObjectStream {
    /// A stream from `(name, property type)` pairs, columns `PROPERTY_<UPPER(name)>`.
    pub(crate) fn from_names(object_type: ObjectType, properties: &[(&str, &str)]) -> ObjectStream {
        let properties = properties
            .iter()
            .map(|(name, ty)| PropertyDefinition {
                name: name.to_string(),
                property_type: ty.to_string(),
                column: crate::model::property_column(name),
            })
            .collect();
        ObjectStream::new(object_type, properties)
    }
}

/// One direction of an associated pair of object types.
#[derive(Debug)]
pub struct AssociationPair {
    pub from: ObjectType,
    pub to: ObjectType,
    /// `ASSOCIATIONS_<FROM>_TO_<TO>`.
    pub table: Arc<TableSchema>,
}

impl AssociationPair {
    pub fn new(from: ObjectType, to: ObjectType) -> AssociationPair {
        let table = crate::schema::association_schema(&from.plural, &to.plural, &from.singular, &to.singular);
        AssociationPair { from, to, table }
    }
}

/// One event type to export.
#[derive(Debug)]
pub struct EventStream {
    /// The API's event type name (`e_visited_page`, `pe123_my_event`).
    pub event_type: String,
    /// (property name, column) in table order.
    pub properties: Vec<(String, String)>,
    /// `EVENTS_<UPPER(name)>`.
    pub table: Arc<TableSchema>,
}

/// Something the manifest's warnings should carry: a skipped type, a missing scope.
#[derive(Debug, Clone)]
pub struct Notice {
    pub kind: String,
    pub table: String,
    pub detail: String,
    /// How many times it happened, when it is countable (bad records, repaired pages).
    pub count: Option<u64>,
}

/// Everything discovery learnt: the streams to run and every table they produce.
#[derive(Debug)]
pub struct Catalog {
    pub account: String,
    pub objects: Vec<Arc<ObjectStream>>,
    pub pairs: Vec<Arc<AssociationPair>>,
    pub events: Vec<Arc<EventStream>>,
    /// What discovery skipped and why.
    pub notices: Vec<Notice>,
    /// Every output table, in the order the manifest lists them.
    pub tables: Vec<Arc<TableSchema>>,
    /// The pairs earlier runs found associated or asked about, with their types (from the
    /// state), `None` before the first: see [`Catalog::learn_associations`].
    pub association_types: Option<crate::model::AssociationTypes>,
}

/// Whether the canonical or API timestamp `text` falls in `window` (false if unparseable).
pub(crate) fn in_window(window: &Window, text: Option<&str>) -> bool {
    text.and_then(crate::schema::parse_instant).is_some_and(|t| window.contains(t))
}

impl Catalog {
    /// Streams that can be read by window (object types and event types), by table name.
    pub fn streams(&self) -> Vec<String> {
        self.objects
            .iter()
            .map(|o| o.table.name.clone())
            .chain(self.events.iter().map(|e| e.table.name.clone()))
            .collect()
    }
}

/// What extractors send downstream.
#[derive(Debug)]
pub enum Emit {
    /// A page of records in the shape of `stream.raw`; the splitter builds the object tables.
    /// `unparseable` counts the records' own values (timestamps) that did not parse as their
    /// type and are NULL in `batch` (property values are counted by the splitter).
    Objects { stream: Arc<ObjectStream>, batch: RecordBatch, unparseable: u64 },
    /// Association rows in the `ASSOCIATIONS` shape; the splitter builds the per-pair table.
    Associations { pair: Arc<AssociationPair>, batch: RecordBatch },
    /// Final rows of one table, with the count of values that did not parse as their
    /// column's type (NULL in `batch`).
    Rows { table: String, batch: RecordBatch, unparseable: u64 },
    /// Something worth a line in the manifest's warnings (a skipped type, a missing scope).
    Warning(Notice),
    /// A reconcile's listing of one object type: the ids that exist now (every id of the type
    /// across its `Listed` emits), and the requests the listing and the association refresh
    /// took.
    Listed { type_id: String, ids: Vec<String>, listing_requests: u64, association_requests: u64 },
    /// A pair found associated during the run (not in the catalog): its table is written,
    /// with rows or empty, and listed in the manifest.
    Pair(Arc<AssociationPair>),
    /// The associated pairs and their types as the run leaves them, for the state.
    AssociationTypes(crate::model::AssociationTypes),
    /// These tables will receive no more rows in this run: their writers close now, so that
    /// an account with a thousand event types or custom objects never holds a thousand open
    /// writers.
    Complete(Vec<String>),
}

impl Notice {
    /// A table or feature skipped because the token may not read it.
    pub(crate) fn missing_scope(table: &str, detail: String) -> Notice {
        Notice { kind: "missing_scope".into(), table: table.into(), detail, count: None }
    }

    /// Records of `table` left out because they could not be read (no id, not an object).
    pub(crate) fn bad_records(table: &str, count: u64, detail: String) -> Notice {
        Notice { kind: "bad_record".into(), table: table.into(), detail, count: Some(count) }
    }

    /// Responses for `table` whose invalid UTF-8 was replaced by U+FFFD so the rest could be read.
    pub(crate) fn invalid_utf8(table: &str, count: u64, from: &str) -> Notice {
        Notice {
            kind: "invalid_utf8".into(),
            table: table.into(),
            detail: format!("responses with invalid UTF-8{from}, read with U+FFFD in place of the bad bytes"),
            count: Some(count),
        }
    }
}

/// The fixed tables both sources write (each adds its own: HubSpot's teams and lists).
pub(crate) fn common_tables(history: bool) -> Vec<&'static str> {
    let mut tables = vec![
        "OBJECTS",
        "OBJECT_WITH_OBJECT_PROPERTIES",
        "OBJECT_PROPERTIES",
        "ASSOCIATIONS",
        "ASSOCIATION_DEFINITIONS",
        "OBJECT_AND_EVENT_TYPE_DEFINITIONS",
        "PROPERTY_DEFINITIONS",
        "OWNERS",
        "PIPELINES",
        "PIPELINE_STAGES",
        "DELETED_OBJECTS",
    ];
    if history {
        tables.push("OBJECT_PROPERTIES_HISTORY");
    }
    tables
}

impl Catalog {
    /// A catalog whose tables are `fixed` and those of every object type, pair and event
    /// type, in name order.
    pub(crate) fn assemble(
        account: String,
        objects: Vec<Arc<ObjectStream>>,
        pairs: Vec<Arc<AssociationPair>>,
        events: Vec<Arc<EventStream>>,
        notices: Vec<Notice>,
        fixed: Vec<Arc<TableSchema>>,
    ) -> Catalog {
        let mut tables = fixed;
        tables.extend(objects.iter().map(|o| o.table.clone()));
        tables.extend(pairs.iter().map(|p| p.table.clone()));
        tables.extend(events.iter().map(|e| e.table.clone()));
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        Catalog { account, objects, pairs, events, notices, tables, association_types: None }
    }

    /// Takes in the pairs earlier runs asked about or found associated (the state's), so that
    /// this run reads those with association types and writes their tables without asking
    /// the API which pairs exist. Pairs of types this catalog does not hold are kept for the
    /// state but not read.
    pub fn learn_associations(&mut self, known: Option<crate::model::AssociationTypes>) {
        // A pair asked about with no association type has no table.
        let typed = known.iter().flat_map(|k| k.iter()).filter(|(_, types)| !types.is_empty());
        for key in typed.map(|(key, _)| key) {
            let Some((from, to)) = crate::model::pair_of_key(key) else { continue };
            let find = |id: &str| self.objects.iter().find(|o| o.object_type.type_id == id).map(|o| &o.object_type);
            let (Some(from), Some(to)) = (find(from), find(to)) else { continue };
            if self.pairs.iter().any(|p| p.from == *from && p.to == *to) {
                continue;
            }
            let pair = Arc::new(AssociationPair::new(from.clone(), to.clone()));
            self.tables.push(pair.table.clone());
            self.pairs.push(pair);
        }
        self.tables.sort_by(|a, b| a.name.cmp(&b.name));
        self.association_types = known;
    }
}

/// The error when discovery finds nothing the token may read: a 403 of the whole account,
/// not a table to skip.
pub(crate) fn nothing_readable(path: &str, what: &str, hint: &str) -> Error {
    Error::Api {
        method: "GET",
        path: path.into(),
        status: 403,
        message: format!("the token cannot read any {what}"),
        correlation: None,
        hint: hint.into(),
    }
}

/// Runs one job per stream, each on a task of its own so that parsing pages and building
/// rows use every core, at most `concurrency` at a time. The first error ends the others
/// (dropping the set aborts its tasks).
pub(crate) async fn run_streams<F>(jobs: impl IntoIterator<Item = F>, concurrency: usize) -> Result<()>
where
    F: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let mut jobs = jobs.into_iter();
    let mut running = tokio::task::JoinSet::new();
    loop {
        while running.len() < concurrency.max(1) {
            let Some(job) = jobs.next() else { break };
            running.spawn(job);
        }
        match running.join_next().await {
            None => return Ok(()),
            Some(Ok(done)) => done?,
            Some(Err(e)) => return Err(Error::Internal(format!("a stream's extraction panicked: {e}"))),
        }
    }
}

/// The API's message and crmdump's hint when `e` is (or wraps) a 403: something the token
/// may not read, which sources skip with a notice rather than fail on.
pub(crate) fn forbidden(e: &Error) -> Option<(&str, &str)> {
    match e {
        Error::Api { status: 403, message, hint, .. } => Some((message, hint)),
        Error::Stream { source, .. } => forbidden(source),
        _ => None,
    }
}

/// `columns` made unique in order: a name seen before gets `_2`, `_3`... (the first keeps
/// its name), so that two properties whose names map to one column both keep a column.
pub(crate) fn unique_names(columns: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut used = std::collections::HashSet::new();
    columns
        .into_iter()
        .map(|base| {
            let mut column = base.clone();
            let mut n = 2;
            while !used.insert(column.clone()) {
                column = format!("{base}_{n}");
                n += 1;
            }
            column
        })
        .collect()
}

/// Sends downstream; a closed channel means the pipeline already failed and reports why
/// (the send answers [`Error::Cancelled`], which the pipeline replaces with that failure).
#[derive(Clone)]
pub(crate) struct Sender(pub(crate) tokio::sync::mpsc::Sender<Emit>);

impl Sender {
    pub(crate) async fn send(&self, emit: Emit) -> Result<()> {
        self.0.send(emit).await.map_err(|_| Error::Cancelled)
    }

    /// Says that `tables` are complete (see [`Emit::Complete`]).
    pub(crate) async fn complete(&self, tables: Vec<String>) -> Result<()> {
        self.send(Emit::Complete(tables)).await
    }

    /// `DELETED_OBJECTS` rows of a reconcile: the ids of `stream`'s type its listing lacked,
    /// `merged` into the survivor where one is known, `deleted` otherwise, dated the run's start.
    pub(crate) async fn reconciled(
        &self,
        stream: &ObjectStream,
        gone: &[(String, Option<String>)],
        ingested: &Arc<str>,
    ) -> Result<()> {
        let table = crate::schema::with_ids_of(crate::schema::fixed_table("DELETED_OBJECTS"), &stream.table);
        let mut rows = crate::schema::BatchBuilder::new(table, ingested.clone(), gone.len());
        let type_id = stream.object_type.type_id.as_str();
        for (id, survivor) in gone {
            let kind = if survivor.is_some() { "merged" } else { "deleted" };
            let row = [Some(type_id), Some(id.as_str()), Some(&**ingested), Some(kind), survivor.as_deref()];
            rows.push_row(row.into_iter().chain([Some("reconcile")]));
        }
        self.rows("DELETED_OBJECTS", &mut rows).await
    }

    /// Sends what `rows` holds (if anything) and empties it.
    pub(crate) async fn rows(&self, table: &str, rows: &mut crate::schema::BatchBuilder) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let unparseable = rows.unparseable();
        let batch = rows.finish()?;
        self.send(Emit::Rows { table: table.to_string(), batch, unparseable }).await
    }
}

/// What to export and how, for any source; `H` says how much property history to keep.
#[derive(Debug, Clone)]
pub struct SourceOptions<H> {
    /// The object types to read (names as the source's `--objects` takes them); `None` for all.
    pub objects: Option<Vec<String>>,
    /// Streams extracted at the same time.
    pub concurrency: usize,
    /// The export run's start time, canonical text, for INGESTEDAT.
    pub ingested_at: Arc<str>,
    /// How much property history to keep; `None` skips history.
    pub history: Option<H>,
    /// Discovery asks about every pair of object types (what `tables` and `check` list);
    /// otherwise an export learns the associated pairs from its reads and the state.
    pub every_pair: bool,
}

/// How each CRM's extractor is built: discovery learns what its runs need (`Discovery`),
/// kept once found; a run reads with it. Every `CrmExtractor` is an [`Extractor`].
#[async_trait::async_trait]
pub(crate) trait CrmExtractor: Send + Sync {
    /// `hubspot`, `pipedrive`.
    const NAME: &'static str;
    /// See [`Extractor::archived_exist`].
    const ARCHIVED_EXIST: bool = false;
    /// What discovery learnt beyond the catalog.
    type Discovery: Send + Sync;
    /// The source's HTTP client.
    fn client(&self) -> &crate::http::HttpClient;
    /// Where its discovery is kept once found.
    fn discovered(&self) -> &std::sync::OnceLock<Self::Discovery>;
    async fn discover_all(&self) -> Result<(Catalog, Self::Discovery)>;
    async fn run_all(&self, catalog: &Catalog, discovery: &Self::Discovery, extent: &Extent, out: Sender)
    -> Result<()>;
    /// See [`Extractor::in_recycle_bin`]; a source without a recycle bin answers none.
    async fn in_recycle_bin(&self, _catalog: &Catalog, _type_id: &str, _ids: &[String]) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
}

#[async_trait::async_trait]
impl<S: CrmExtractor> Extractor for S {
    fn source(&self) -> &'static str {
        S::NAME
    }

    async fn discover(&self) -> Result<Catalog> {
        let (catalog, discovery) = self.discover_all().await?;
        let _ = self.discovered().set(discovery);
        Ok(catalog)
    }

    async fn run(&self, catalog: &Catalog, extent: &Extent, out: tokio::sync::mpsc::Sender<Emit>) -> Result<()> {
        let discovery = self.discovered().get().ok_or_else(|| Error::Internal("run() before discover()".into()))?;
        self.run_all(catalog, discovery, extent, Sender(out)).await
    }

    fn http_stats(&self) -> Arc<crate::http::HttpStats> {
        self.client().stats.clone()
    }

    fn archived_exist(&self) -> bool {
        S::ARCHIVED_EXIST
    }

    async fn in_recycle_bin(&self, catalog: &Catalog, type_id: &str, ids: &[String]) -> Result<Vec<String>> {
        CrmExtractor::in_recycle_bin(self, catalog, type_id, ids).await
    }
}

/// A CRM source: discovery first, then a run that sends every batch downstream.
#[async_trait::async_trait]
pub trait Extractor: Send + Sync {
    /// `hubspot`, `pipedrive`: names the source in the manifest and the state file.
    fn source(&self) -> &'static str;
    /// Finds what the account holds and every table the export will write.
    async fn discover(&self) -> crate::error::Result<Catalog>;
    /// Extracts what `extent` asks of every stream in `catalog` (from [`Extractor::discover`]),
    /// sending to `out`. May be called again with the same catalog (backfill runs a day each).
    async fn run(
        &self,
        catalog: &Catalog,
        extent: &Extent,
        out: tokio::sync::mpsc::Sender<Emit>,
    ) -> crate::error::Result<()>;
    /// Request counters of this source's HTTP client.
    fn http_stats(&self) -> Arc<crate::http::HttpStats>;
    /// Whether an archived record still exists for the baseline of ids (Pipedrive's archived
    /// deals and leads are listed apart; HubSpot's archived records are in the recycle bin).
    fn archived_exist(&self) -> bool;
    /// Which of `ids` (of type `type_id`) the recycle bin holds: archived, which a deletion
    /// event does not tell from deleted for good.
    async fn in_recycle_bin(&self, catalog: &Catalog, type_id: &str, ids: &[String]) -> Result<Vec<String>>;
}
