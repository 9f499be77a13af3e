//! The HubSpot extractor: discovery (types, properties, association labels, lists, event
//! types, teams), then reference tables, owners, pipelines, lists and their memberships,
//! events, and for each object type its records (live and archived), property history and
//! associations. Object types are data: [`crate::model::STANDARD_TYPES`] plus the schemas API.
//!
//! A type or feature the token has no scope for (403) is skipped with one notice naming the
//! scope; a 401, or a 403 on every object type, fails the export.

pub mod api;
mod events;
mod lists;
mod objects;
mod pairs;
mod reference;
mod search;

use std::collections::HashSet;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};

use super::{AssociationPair, Catalog, EventStream, Extent, Notice, ObjectStream, PropertyDefinition, Sender};
use crate::error::{Error, Result};
use crate::http::HttpClient;
use crate::model::{self, ObjectType};
use crate::schema::fixed_table;

pub use objects::page_batches;

/// How many historical values to keep per (record, property), newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    pub contacts: usize,
    pub others: usize,
}

impl HistoryLimits {
    /// 45 for contacts, 20 for other types (docs/FORMAT.md, "OBJECT_PROPERTIES_HISTORY").
    pub const DEFAULT: HistoryLimits = HistoryLimits { contacts: 45, others: 20 };

    pub fn for_type(&self, object_type: &ObjectType) -> usize {
        if object_type.type_id == "0-1" { self.contacts } else { self.others }
    }
}

/// What to export and how: object types by API name, type id or custom-object name;
/// property history kept per (record, property) by type.
pub type HubSpotOptions = super::SourceOptions<HistoryLimits>;

pub struct HubSpot {
    client: Arc<HttpClient>,
    options: HubSpotOptions,
    discovery: std::sync::OnceLock<Discovery>,
    /// The pairs' association types as this process's last run left them: a backfill's later
    /// days start from them.
    learnt: std::sync::Mutex<Option<model::AssociationTypes>>,
}

/// Discovery's per-type findings that reference tables need later.
struct DiscoveredType {
    object_type: ObjectType,
    properties: Vec<api::Property>,
    schema: Option<api::ObjectSchema>,
}

/// Discovery results kept for the run.
/// Association types per pair, as the API answered them.
type Labels = Vec<(ObjectType, ObjectType, Vec<model::AssociationType>)>;

pub struct Discovery {
    types: Vec<DiscoveredType>,
    /// Every pair's association types, when discovery asked about every pair.
    labels: Labels,
    /// `None` when the token may not read lists; else the first page of lists, which the
    /// first run takes (a backfill's later days read it again).
    lists: Option<std::sync::Mutex<Option<api::ListSearch>>>,
    events: Vec<Arc<events::DiscoveredEvent>>,
    teams: Option<Vec<api::Team>>,
}

/// The scope HubSpot reports in a 403, or a description when it names none.
fn missing_scope(e: &Error) -> Option<String> {
    super::forbidden(e).map(|(_, hint)| hint.to_string())
}

/// `Ok(None)` for a 403 (the caller records a notice), the value otherwise.
fn unless_forbidden<T>(r: Result<T>) -> Result<std::result::Result<T, String>> {
    match r {
        Ok(v) => Ok(Ok(v)),
        Err(e) => match missing_scope(&e) {
            Some(why) => Ok(Err(why)),
            None => Err(e),
        },
    }
}

/// `found`'s value, or `None` with a notice that `what` (of `table`) was skipped when the
/// token may not read it (a 403); any other error is returned.
fn readable<T>(found: Result<T>, notices: &mut Vec<Notice>, table: &str, what: &str) -> Result<Option<T>> {
    match unless_forbidden(found)? {
        Ok(value) => Ok(Some(value)),
        Err(why) => {
            notices.push(Notice::missing_scope(table, format!("{what} skipped: {why}")));
            Ok(None)
        }
    }
}

impl HubSpot {
    pub fn new(client: Arc<HttpClient>, options: HubSpotOptions) -> HubSpot {
        HubSpot { client, options, discovery: std::sync::OnceLock::new(), learnt: std::sync::Mutex::new(None) }
    }

    /// The portal id: it names the owner of every day folder and the watermarks' file, so an
    /// export whose account cannot be told is refused, never filed under a shared name.
    async fn portal_id(&self) -> Result<String> {
        let path = "/account-info/v3/details";
        let account = self
            .client
            .get_json::<api::AccountDetails>(path, &[])
            .await
            .map_err(|e| e.in_stream("account details (the portal id)", format!("GET {path}")))?
            .portal_id;
        if account.is_empty() {
            return Err(Error::Malformed {
                method: "GET",
                path: path.into(),
                detail: "no portalId: crmdump keys the day folders' owner and the watermarks by it".into(),
            });
        }
        Ok(account)
    }

    /// The object types to export with their property definitions: the standard types asked
    /// for and the custom objects, less those the token may not read (each a notice).
    async fn discover_types(&self, notices: &mut Vec<Notice>) -> Result<Vec<DiscoveredType>> {
        let schemas = self
            .client
            .get_json::<api::BatchResults<api::ObjectSchema>>("/crm/v3/schemas", &[])
            .await
            .map_err(|e| e.in_stream("custom object schemas", "GET /crm/v3/schemas"));
        let schemas = readable(schemas, notices, "OBJECT_AND_EVENT_TYPE_DEFINITIONS", "custom objects")?
            .map(|s| s.results)
            .unwrap_or_default();
        let candidates = self.select_types(&schemas)?;
        // Discovery requests are independent: run them `concurrency * 2` at a time (the
        // rate limiter still paces them), keeping the order of the answers.
        let found: Vec<_> = futures::stream::iter(candidates)
            .map(|(object_type, schema)| async move {
                let path = format!("/crm/v3/properties/{}", object_type.api_name);
                let found =
                    self.client.get_json::<api::BatchResults<api::Property>>(&path, &[]).await.map_err(|e| {
                        e.in_stream(format!("properties of {}", object_type.api_name), format!("GET {path}"))
                    });
                (object_type, schema, found)
            })
            .buffered(self.parallel_discovery())
            .collect()
            .await;
        let mut discovered = Vec::new();
        for (object_type, schema, found) in found {
            let table = object_type.table_name();
            if let Some(p) = readable(found, notices, &table, &object_type.api_name)? {
                discovered.push(DiscoveredType { object_type, properties: p.results, schema });
            }
        }
        if discovered.is_empty() {
            return Err(super::nothing_readable(
                "/crm/v3/properties",
                "object type",
                "Give the private app the crm.objects.<type>.read scopes of the types to export",
            ));
        }
        Ok(discovered)
    }

    /// Discovery requests in flight at once.
    fn parallel_discovery(&self) -> usize {
        self.options.concurrency.max(1) * 2
    }

    /// The pairs known before any record is read: from the schemas, and when every pair is
    /// asked about (`tables`, `check`, a request per pair) from the labels' answers, which
    /// are returned too. An export learns the others from the state and its reads.
    async fn discover_pairs(&self, discovered: &[DiscoveredType]) -> Result<(Vec<Arc<AssociationPair>>, Labels)> {
        let mut labels = Vec::new();
        let mut known: Vec<(ObjectType, ObjectType)> = pairs::declared(discovered);
        if self.options.every_pair {
            let types: Vec<ObjectType> = discovered.iter().map(|d| d.object_type.clone()).collect();
            labels = pairs::every_pair(&self.client, &types, self.parallel_discovery()).await?;
            labels.retain(|(_, _, l)| !l.is_empty());
            for (from, to, _) in &labels {
                if !known.iter().any(|(f, t)| f == from && t == to) {
                    known.push((from.clone(), to.clone()));
                }
            }
        }
        Ok((known.into_iter().map(|(f, t)| Arc::new(AssociationPair::new(f, t))).collect(), labels))
    }

    /// The standard types asked for (or all of them) plus the custom objects.
    fn select_types(&self, schemas: &[api::ObjectSchema]) -> Result<Vec<(ObjectType, Option<api::ObjectSchema>)>> {
        let custom: Vec<(ObjectType, api::ObjectSchema)> =
            schemas.iter().filter_map(|s| Some((custom_type(s)?, s.clone()))).collect();
        let wanted: Vec<String> = match &self.options.objects {
            Some(list) => list.clone(),
            None => model::STANDARD_TYPES
                .iter()
                .map(|s| s.api_name.to_string())
                .chain(custom.iter().map(|(t, _)| t.type_id.clone()))
                .collect(),
        };
        let mut out: Vec<(ObjectType, Option<api::ObjectSchema>)> = Vec::new();
        let mut seen = HashSet::new();
        for name in &wanted {
            let found = if let Some(std) = model::standard_type(name) {
                Some((std.to_object_type(), None))
            } else {
                custom
                    .iter()
                    .find(|(t, s)| {
                        t.type_id == *name
                            || s.name.eq_ignore_ascii_case(name)
                            || s.fully_qualified_name.as_deref() == Some(name.as_str())
                            || t.plural.eq_ignore_ascii_case(name)
                    })
                    .map(|(t, s)| (t.clone(), Some(s.clone())))
            };
            let Some((t, s)) = found else {
                let known: Vec<String> = model::STANDARD_TYPES
                    .iter()
                    .map(|t| t.api_name.to_string())
                    .chain(custom.iter().map(|(_, s)| s.name.clone()))
                    .collect();
                return Err(Error::Config(format!(
                    "--objects names '{name}', which is not an object type of this account; known types: {}",
                    known.join(", ")
                )));
            };
            if seen.insert(t.type_id.clone()) {
                out.push((t, s));
            }
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl super::CrmExtractor for HubSpot {
    const NAME: &'static str = "hubspot";
    type Discovery = Discovery;

    fn client(&self) -> &HttpClient {
        &self.client
    }

    fn discovered(&self) -> &std::sync::OnceLock<Discovery> {
        &self.discovery
    }

    async fn discover_all(&self) -> Result<(Catalog, Discovery)> {
        let mut notices = Vec::new();
        let account = self.portal_id().await?;
        let discovered = self.discover_types(&mut notices).await?;
        let (pairs, labels) = self.discover_pairs(&discovered).await?;
        let lists = readable(lists::probe(&self.client).await, &mut notices, "LISTS", "lists and memberships")?
            .map(|first| std::sync::Mutex::new(Some(first)));
        let events: Vec<Arc<events::DiscoveredEvent>> =
            readable(events::discover(&self.client).await, &mut notices, "EVENTS_*", "events")?
                .unwrap_or_default()
                .into_iter()
                .map(Arc::new)
                .collect();
        let teams = self
            .client
            .get_json::<api::BatchResults<api::Team>>("/settings/v3/users/teams", &[])
            .await
            .map_err(|e| e.in_stream("TEAMS", "GET /settings/v3/users/teams"));
        let teams = readable(teams, &mut notices, "TEAMS", "teams")?.map(|t| t.results);

        let objects: Vec<Arc<ObjectStream>> = discovered.iter().map(object_stream).collect();
        let event_streams: Vec<Arc<EventStream>> = events.iter().map(|e| e.stream.clone()).collect();
        let mut fixed = super::common_tables(self.options.history.is_some());
        fixed.push("OWNER_TEAM");
        if lists.is_some() {
            fixed.extend(["LISTS", "LIST_MEMBERSHIPS"]);
        }
        if teams.is_some() {
            fixed.push("TEAMS");
        }
        let fixed = fixed.iter().map(|n| fixed_table(n)).collect();
        let catalog = Catalog::assemble(account, objects, pairs, event_streams, notices, fixed);
        Ok((catalog, Discovery { types: discovered, labels, lists, events, teams }))
    }

    async fn in_recycle_bin(&self, catalog: &Catalog, type_id: &str, ids: &[String]) -> Result<Vec<String>> {
        let Some(stream) = catalog.objects.iter().find(|o| o.object_type.type_id == type_id) else {
            return Ok(Vec::new());
        };
        objects::in_recycle_bin(&self.client, stream, ids)
            .await
            .map_err(|e| e.in_stream(&stream.table.name, "records deletion events name"))
    }

    async fn run_all(&self, catalog: &Catalog, discovery: &Discovery, extent: &Extent, sender: Sender) -> Result<()> {
        let ingested = self.options.ingested_at.clone();
        reference::emit_definitions(catalog, discovery, &ingested, &sender).await?;
        reference::owners(&self.client, &ingested, &sender).await?;
        reference::pipelines(&self.client, catalog, &ingested, &sender).await?;
        if let Some(teams) = &discovery.teams {
            reference::teams(teams, &ingested, &sender).await?;
        }
        // What the state knew, or what this process's last run left (a backfill's later days).
        let known = self.learnt.lock().expect("learnt lock").clone().or_else(|| catalog.association_types.clone());
        let types: Vec<ObjectType> = catalog.objects.iter().map(|o| o.object_type.clone()).collect();
        let registry = Arc::new(pairs::Registry::new(known, types.clone()));
        let mut known_pairs = catalog.pairs.clone();
        for (from, to, types) in &discovery.labels {
            registry.answered(from, to, types.clone());
        }
        // A reconcile promises every association: it asks about every pair first.
        if extent.reconcile().is_some() {
            let parallel = self.options.concurrency.max(1) * 2;
            for (from, to, types) in pairs::every_pair(&self.client, &types, parallel).await? {
                let typed = !types.is_empty();
                registry.answered(&from, &to, types);
                if typed && !known_pairs.iter().any(|p| p.from == from && p.to == to) {
                    let pair = Arc::new(AssociationPair::new(from, to));
                    sender.send(super::Emit::Pair(pair.clone())).await?;
                    known_pairs.push(pair);
                }
            }
        }
        let inline = Arc::new(pairs::Inline::new(&discovery.types));
        let history = self.options.history;
        // Each type on its own task, so that parsing pages and building rows use every core;
        // the set aborts the others when one fails. Lists and event types are jobs beside them,
        // not a wait before them.
        let objects = catalog.objects.iter().cloned().map(|stream| {
            let pairs: Vec<Arc<AssociationPair>> =
                known_pairs.iter().filter(|p| p.from.type_id == stream.object_type.type_id).cloned().collect();
            let found = objects::Found { pairs, registry: registry.clone(), inline: inline.clone() };
            let sender = sender.clone();
            let client = self.client.clone();
            let ingested = ingested.clone();
            let keep = history.map(|h| h.for_type(&stream.object_type));
            let reach = objects::Reach {
                window: extent.window(&stream.table.name),
                named: extent.ids(&stream.table.name),
                reconcile: extent.reconcile().cloned(),
                known: extent.baseline().and_then(|k| k.get(&stream.object_type.type_id)).cloned(),
            };
            async move { objects::extract(&client, stream, found, keep, reach, &ingested, &sender).await }.boxed()
        });
        let (client, lists_ingested, lists_sender) = (self.client.clone(), ingested.clone(), sender.clone());
        let lists = discovery.lists.as_ref().map(|first| {
            let first = first.lock().expect("lists lock").take();
            async move { lists::extract(&client, first, &lists_ingested, &lists_sender).await }.boxed()
        });
        let events = discovery.events.iter().cloned().map(|e| {
            let (client, ingested, sender) = (self.client.clone(), ingested.clone(), sender.clone());
            let window = extent.window(&e.stream.table.name);
            async move { events::extract(&client, &e, window, &ingested, &sender).await }.boxed()
        });
        let jobs: Vec<futures::future::BoxFuture<'static, Result<()>>> = objects.chain(lists).chain(events).collect();
        super::run_streams(jobs, self.options.concurrency).await?;
        // The definitions once the reads have shown what each pair holds.
        let learnt = registry.snapshot();
        *self.learnt.lock().expect("learnt lock") = Some(learnt.clone());
        reference::association_definitions(catalog, &learnt, &ingested, &sender).await?;
        sender.send(super::Emit::AssociationTypes(learnt)).await
    }
}

fn custom_type(s: &api::ObjectSchema) -> Option<ObjectType> {
    let type_id = s.object_type_id.clone().or_else(|| s.id.as_ref().map(|id| format!("2-{id}")))?;
    let plural = s.labels.plural.clone().unwrap_or_else(|| s.name.clone());
    let singular = s.labels.singular.clone().unwrap_or_else(|| s.name.clone());
    Some(ObjectType {
        api_name: type_id.clone(),
        type_id,
        singular: model::upper_identifier(&singular),
        plural: model::upper_identifier(&plural),
        has_pipelines: false,
        custom: true,
    })
}

/// Columns named `PROPERTY_<UPPER(name)>`, with `_2`, `_3`... on a clash.
pub(crate) fn unique_columns<'a>(names: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    super::unique_names(names.into_iter().map(model::property_column))
}

fn object_stream(d: &DiscoveredType) -> Arc<ObjectStream> {
    let live: Vec<&api::Property> = d.properties.iter().filter(|p| p.archived != Some(true)).collect();
    let columns = unique_columns(live.iter().map(|p| p.name.as_str()));
    let properties: Vec<PropertyDefinition> = live
        .iter()
        .zip(columns)
        .map(|(p, column)| PropertyDefinition {
            name: p.name.clone(),
            property_type: p.property_type.clone().unwrap_or_else(|| "string".into()),
            column,
        })
        .collect();
    Arc::new(ObjectStream::new(d.object_type.clone(), properties))
}
