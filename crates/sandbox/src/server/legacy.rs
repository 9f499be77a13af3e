//! HubSpot's legacy v1 and v2 CRM endpoints that widely used clients still call (singer's
//! tap-hubspot reads companies and deals through them): `GET /companies/v2/properties`,
//! `/companies/v2/companies/paged`, `/companies/v2/companies/{id}` and `/deals/v1/deal/paged`.
//!
//! They answer the same records as the v3 API in the legacy shape: a record's id as a number
//! (`companyId`, `dealId`), each property as `{value, timestamp, source, sourceId, versions}`
//! with only the properties that have a value, and instants as epoch milliseconds, as
//! HubSpot's legacy APIs give them; pages by `offset` with `has-more` (companies) or `hasMore`
//! (deals).

use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use serde_json::{Map, Value, json};

use super::{Answer, Query, Shared, json_answer, legacy_properties, reject, require, resolve_type};
use crate::generator::Generator;

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/companies/v2/properties", get(|s: State<Shared>| legacy_properties(s, Path("companies".into()))))
        .route("/companies/v2/companies/paged", get(companies_paged))
        .route("/companies/v2/companies/{id}", get(company))
        .route("/deals/v1/deal/paged", get(deals_paged))
}

/// Epoch milliseconds of an ISO instant or date (legacy APIs send both that way); other
/// values as they are.
fn legacy_value(ty: &str, value: String) -> String {
    let millis = match ty {
        "datetime" => crate::time::instant(&value).map(|t| t.timestamp_millis()),
        "date" => chrono::NaiveDate::parse_from_str(&value, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .map(|t| t.and_utc().timestamp_millis()),
        _ => None,
    };
    millis.map(|m| m.to_string()).unwrap_or(value)
}

fn millis(iso: &str) -> i64 {
    crate::time::instant(iso).map_or(0, |t| t.timestamp_millis())
}

/// `properties` of a legacy record: the named ones (all when `names` is None) that have a
/// value, each with its versions, newest first.
fn legacy_properties_of(g: &Generator, t: usize, index: u64, names: Option<&[String]>) -> Map<String, Value> {
    let updated = millis(&g.record(t, index).updated_at);
    let mut out = Map::new();
    for (p, def) in g.types[t].properties.iter().enumerate() {
        if names.is_some_and(|n| !n.contains(&def.name)) || !g.is_defined(t, p) {
            continue;
        }
        let Some(value) = g.property_value(t, index, p) else { continue };
        let value = legacy_value(def.ty, value);
        // Newest first, as legacy `versions` are.
        let history = g.history(t, index, p);
        let timestamp = history.first().map(|h| millis(&h.timestamp)).unwrap_or(updated);
        let source = history.first().map(|h| h.source_type).unwrap_or("API");
        let versions: Vec<Value> = history
            .iter()
            .map(|h| {
                json!({
                    "name": def.name, "value": legacy_value(def.ty, h.value.clone()), "timestamp": millis(&h.timestamp),
                    "source": h.source_type, "sourceId": h.source_id, "sourceVid": [],
                })
            })
            .collect();
        let versions = if versions.is_empty() {
            vec![
                json!({"name": def.name, "value": value, "timestamp": timestamp, "source": source, "sourceId": null, "sourceVid": []}),
            ]
        } else {
            versions
        };
        out.insert(
            def.name.clone(),
            json!({"value": value, "timestamp": timestamp, "source": source, "sourceId": null, "versions": versions}),
        );
    }
    out
}

/// The live records of `t` from `offset`, at most `limit`, and the offset after them.
fn live_page(g: &Generator, t: usize, offset: u64, limit: usize) -> (Vec<u64>, u64) {
    let mut index = offset;
    let mut page = Vec::with_capacity(limit);
    while index < g.count(t) && page.len() < limit {
        if g.is_live(t, index) {
            page.push(index);
        }
        index += 1;
    }
    (page, index)
}

/// A legacy page request for `type_name`: the type, the query, and its offset and limit.
fn page_request(
    g: &Generator,
    type_name: &str,
    q: Option<String>,
) -> std::result::Result<(usize, Query, u64, usize), super::Rejection> {
    let t = resolve_type(g, type_name)?;
    require(g, &g.types[t].scope)?;
    let q = Query::parse(q);
    let (offset, limit) = offset_and_limit(&q, 100, 250)?;
    Ok((t, q, offset, limit))
}

fn offset_and_limit(q: &Query, default: usize, max: usize) -> std::result::Result<(u64, usize), super::Rejection> {
    let number = |key: &str| q.get(key).map(|v| v.parse::<u64>());
    let offset = match number("offset") {
        None => 0,
        Some(Ok(o)) => o,
        Some(Err(_)) => return Err(reject(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", "offset must be a number")),
    };
    let limit = match number("limit").or_else(|| number("count")) {
        None => default,
        Some(Ok(l)) => (l as usize).clamp(1, max),
        Some(Err(_)) => return Err(reject(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", "limit must be a number")),
    };
    Ok((offset, limit))
}

fn company_json(g: &Generator, t: usize, index: u64, names: Option<&[String]>) -> Value {
    json!({
        "portalId": g.portal_id,
        "companyId": g.types[t].id_of(index),
        "isDeleted": false,
        "properties": legacy_properties_of(g, t, index, names),
        "additionalDomains": [],
        "stateChanges": [],
        "mergeAudits": [],
    })
}

/// `GET /companies/v2/companies/paged`: only the `properties=` asked for (none by default).
async fn companies_paged(State(state): State<Shared>, RawQuery(q): RawQuery) -> Answer {
    let g = &state.generator;
    let (t, q, offset, limit) = page_request(g, "companies", q)?;
    let names = q.list("properties").unwrap_or_default();
    let (page, next) = live_page(g, t, offset, limit);
    let companies: Vec<Value> = page.iter().map(|&i| company_json(g, t, i, Some(&names))).collect();
    let body = json!({"companies": companies, "has-more": next < g.count(t), "offset": next});
    Ok(json_answer(g, StatusCode::OK, &body))
}

/// `GET /companies/v2/companies/{id}`: one company with every property that has a value.
async fn company(State(state): State<Shared>, Path(id): Path<String>) -> Answer {
    let g = &state.generator;
    let t = resolve_type(g, "companies")?;
    require(g, &g.types[t].scope)?;
    let index = id.parse::<i64>().ok().and_then(|id| g.types[t].index_of(id)).filter(|&i| g.is_live(t, i));
    let Some(index) = index else {
        return Err(reject(StatusCode::NOT_FOUND, "OBJECT_NOT_FOUND", format!("company {id} does not exist")));
    };
    Ok(json_answer(g, StatusCode::OK, &company_json(g, t, index, None)))
}

/// `GET /deals/v1/deal/paged`: `properties=` named, or all with `includeAllProperties=true`;
/// the associated contacts, companies and deals with `includeAssociations=true`.
async fn deals_paged(State(state): State<Shared>, RawQuery(q): RawQuery) -> Answer {
    let g = &state.generator;
    let (t, q, offset, limit) = page_request(g, "deals", q)?;
    // Python clients send `True`: HubSpot reads flags case-insensitively.
    let flag = |key: &str| q.get(key).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let all = flag("includeAllProperties");
    let names = q.list("properties").unwrap_or_default();
    let with_associations = flag("includeAssociations");
    let ids_of = |to: &str, index: u64| -> Vec<i64> {
        g.type_index(to)
            .map(|u| g.associations(t, index, u).into_iter().map(|(j, _)| g.types[u].id_of(j)).collect())
            .unwrap_or_default()
    };
    let (page, next) = live_page(g, t, offset, limit);
    let deals: Vec<Value> = page
        .iter()
        .map(|&i| {
            let associations = with_associations.then(|| {
                json!({
                    "associatedVids": ids_of("contacts", i), "associatedCompanyIds": ids_of("companies", i),
                    "associatedDealIds": [], "associatedTicketIds": ids_of("tickets", i),
                })
            });
            json!({
                "portalId": g.portal_id,
                "dealId": g.types[t].id_of(i),
                "isDeleted": false,
                "associations": associations,
                "properties": legacy_properties_of(g, t, i, (!all).then_some(names.as_slice())),
                "imports": [],
                "stateChanges": [],
            })
        })
        .collect();
    let body = json!({"deals": deals, "hasMore": next < g.count(t), "offset": next});
    Ok(json_answer(g, StatusCode::OK, &body))
}
