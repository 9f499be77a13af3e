//! The HubSpot extractor: discovery, then reference tables, owners, pipelines, and for each
//! object type its records and associations, as declared in [`crate::model::STANDARD_TYPES`].

pub mod api;
mod objects;
mod reference;

use std::collections::HashSet;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use super::{AssociationPair, Catalog, Emit, Extractor, ObjectStream, PropertyDefinition};
use crate::error::{Error, ErrorClass, Result};
use crate::http::HttpClient;
use crate::model::{self, ObjectType};
use crate::schema::{self, ColumnType, TableSchema, fixed_table};

pub use objects::RECORDS_PER_PAGE;

/// What to export and how.
#[derive(Debug, Clone)]
pub struct HubSpotOptions {
    /// Object types by API name, type id or custom-object name; `None` for the defaults.
    pub objects: Option<Vec<String>>,
    /// Object types extracted at the same time.
    pub concurrency: usize,
    /// The export run's start time, canonical text, for INGESTEDAT.
    pub ingested_at: Arc<str>,
}

pub struct HubSpot {
    client: Arc<HttpClient>,
    options: HubSpotOptions,
    discovery: std::sync::OnceLock<Discovery>,
}

/// Discovery's per-type findings that reference tables need later.
struct DiscoveredType {
    object_type: ObjectType,
    properties: Vec<api::Property>,
    schema: Option<api::ObjectSchema>,
}

impl HubSpot {
    pub fn new(client: Arc<HttpClient>, options: HubSpotOptions) -> HubSpot {
        HubSpot {
            client,
            options,
            discovery: std::sync::OnceLock::new(),
        }
    }

    pub fn client(&self) -> &Arc<HttpClient> {
        &self.client
    }

    /// Finds the account, object types, their properties and the associated pairs.
    async fn discover_all(&self) -> Result<(Catalog, Discovery)> {
        let account = match self
            .client
            .get_json::<api::AccountDetails>("/account-info/v3/details", &[])
            .await
        {
            Ok(a) => a.portal_id,
            Err(e) if e.class() == ErrorClass::Auth && is_status(&e, 403) => "unknown".to_string(),
            Err(e) => return Err(e.in_stream("account details", "GET /account-info/v3/details")),
        };
        let schemas: Vec<api::ObjectSchema> = self
            .client
            .get_json::<api::BatchResults<api::ObjectSchema>>("/crm/v3/schemas", &[])
            .await
            .map_err(|e| e.in_stream("custom object schemas", "GET /crm/v3/schemas"))?
            .results;
        let object_types = self.select_types(&schemas)?;

        let mut discovered = Vec::new();
        for (object_type, schema) in object_types {
            let path = format!("/crm/v3/properties/{}", object_type.api_name);
            let properties = self
                .client
                .get_json::<api::BatchResults<api::Property>>(&path, &[])
                .await
                .map_err(|e| {
                    e.in_stream(
                        format!("properties of {}", object_type.api_name),
                        format!("GET {path}"),
                    )
                })?
                .results;
            discovered.push(DiscoveredType {
                object_type,
                properties,
                schema,
            });
        }

        let mut labels = Vec::new();
        let mut pairs = Vec::new();
        for from in &discovered {
            for to in &discovered {
                let (f, t) = (&from.object_type, &to.object_type);
                let path = format!("/crm/v4/associations/{}/{}/labels", f.api_name, t.api_name);
                let found = self
                    .client
                    .get_json::<api::BatchResults<api::AssociationLabel>>(&path, &[])
                    .await
                    .map_err(|e| e.in_stream("association labels", format!("GET {path}")))?
                    .results;
                if found.is_empty() {
                    continue;
                }
                pairs.push(Arc::new(AssociationPair {
                    from: f.clone(),
                    to: t.clone(),
                    table: schema::association_schema(
                        &f.plural,
                        &t.plural,
                        &f.singular,
                        &t.singular,
                    ),
                }));
                labels.push((f.clone(), t.clone(), found));
            }
        }

        let objects: Vec<Arc<ObjectStream>> = discovered.iter().map(object_stream).collect();
        let mut tables: Vec<Arc<TableSchema>> = [
            "OBJECTS",
            "OBJECT_WITH_OBJECT_PROPERTIES",
            "OBJECT_PROPERTIES",
            "ASSOCIATIONS",
            "ASSOCIATION_DEFINITIONS",
            "OBJECT_AND_EVENT_TYPE_DEFINITIONS",
            "PROPERTY_DEFINITIONS",
            "OWNERS",
            "OWNER_TEAM",
            "PIPELINES",
            "PIPELINE_STAGES",
        ]
        .iter()
        .map(|n| fixed_table(n))
        .collect();
        tables.extend(objects.iter().map(|o| o.table.clone()));
        tables.extend(pairs.iter().map(|p| p.table.clone()));
        tables.sort_by(|a, b| a.name.cmp(&b.name));

        let catalog = Catalog {
            account,
            objects,
            pairs,
            tables,
        };
        Ok((
            catalog,
            Discovery {
                types: discovered,
                labels,
            },
        ))
    }

    /// The standard types asked for (or the defaults) plus the custom objects.
    fn select_types(
        &self,
        schemas: &[api::ObjectSchema],
    ) -> Result<Vec<(ObjectType, Option<api::ObjectSchema>)>> {
        let custom: Vec<(ObjectType, api::ObjectSchema)> = schemas
            .iter()
            .filter_map(|s| Some((custom_type(s)?, s.clone())))
            .collect();
        let wanted: Vec<String> = match &self.options.objects {
            Some(list) => list.clone(),
            None => {
                let mut all: Vec<String> = model::DEFAULT_OBJECTS
                    .iter()
                    .map(|s| s.to_string())
                    .collect();
                all.extend(custom.iter().map(|(t, _)| t.type_id.clone()));
                all
            }
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

    /// Runs every stream of the catalog, sending batches to `out`.
    async fn run_all(
        &self,
        catalog: &Catalog,
        discovery: &Discovery,
        out: mpsc::Sender<Emit>,
    ) -> Result<()> {
        let ingested = self.options.ingested_at.clone();
        let sender = Sender(out);
        reference::emit_definitions(catalog, discovery, &ingested, &sender).await?;
        reference::owners(&self.client, &ingested, &sender).await?;
        reference::pipelines(&self.client, catalog, &ingested, &sender).await?;
        futures::stream::iter(catalog.objects.iter().cloned())
            .map(|stream| {
                let pairs: Vec<Arc<AssociationPair>> = catalog
                    .pairs
                    .iter()
                    .filter(|p| p.from.type_id == stream.object_type.type_id)
                    .cloned()
                    .collect();
                let sender = sender.clone();
                let client = self.client.clone();
                let ingested = ingested.clone();
                async move { objects::extract(&client, stream, pairs, &ingested, &sender).await }
            })
            .buffer_unordered(self.options.concurrency.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl Extractor for HubSpot {
    fn source(&self) -> &'static str {
        "hubspot"
    }

    async fn discover(&self) -> Result<Catalog> {
        let (catalog, discovery) = self.discover_all().await?;
        let _ = self.discovery.set(discovery);
        Ok(catalog)
    }

    async fn run(&self, catalog: &Catalog, out: mpsc::Sender<Emit>) -> Result<()> {
        let discovery = self
            .discovery
            .get()
            .ok_or_else(|| Error::Internal("run() before discover()".into()))?;
        self.run_all(catalog, discovery, out).await
    }

    fn http_stats(&self) -> Arc<crate::http::HttpStats> {
        self.client.stats.clone()
    }
}

/// Discovery results kept for the reference tables.
pub struct Discovery {
    types: Vec<DiscoveredType>,
    labels: Vec<(ObjectType, ObjectType, Vec<api::AssociationLabel>)>,
}

/// Sends downstream; a closed channel means the pipeline already failed and reports why.
#[derive(Clone)]
struct Sender(mpsc::Sender<Emit>);

impl Sender {
    async fn send(&self, emit: Emit) -> Result<()> {
        self.0
            .send(emit)
            .await
            .map_err(|_| Error::Internal("the writers stopped before extraction finished".into()))
    }

    async fn rows(&self, table: &str, batch: arrow::record_batch::RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.send(Emit::Rows {
            table: table.to_string(),
            batch,
        })
        .await
    }
}

fn is_status(e: &Error, status: u16) -> bool {
    match e {
        Error::Api { status: s, .. } => *s == status,
        Error::Stream { source, .. } => is_status(source, status),
        _ => false,
    }
}

fn custom_type(s: &api::ObjectSchema) -> Option<ObjectType> {
    let type_id = s
        .object_type_id
        .clone()
        .or_else(|| s.id.as_ref().map(|id| format!("2-{id}")))?;
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

/// Property columns named `PROPERTY_<UPPER(name)>`, with `_2`, `_3`... on a clash.
fn object_stream(d: &DiscoveredType) -> Arc<ObjectStream> {
    let mut used = HashSet::new();
    let properties: Vec<PropertyDefinition> = d
        .properties
        .iter()
        .filter(|p| p.archived != Some(true))
        .map(|p| {
            let base = model::property_column(&p.name);
            let mut column = base.clone();
            let mut n = 2;
            while !used.insert(column.clone()) {
                column = format!("{base}_{n}");
                n += 1;
            }
            PropertyDefinition {
                name: p.name.clone(),
                property_type: p.property_type.clone().unwrap_or_else(|| "string".into()),
                column,
            }
        })
        .collect();
    let columns: Vec<(String, String, ColumnType)> = properties
        .iter()
        .map(|p| {
            (
                p.name.clone(),
                p.column.clone(),
                ColumnType::from_hubspot_property_type(&p.property_type),
            )
        })
        .collect();
    let (raw, table) = schema::object_schemas(&d.object_type.table_name(), &columns);
    Arc::new(ObjectStream {
        object_type: d.object_type.clone(),
        properties,
        raw,
        table,
    })
}
