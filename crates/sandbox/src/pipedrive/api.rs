//! HTTP side of the Pipedrive flavour: API v2 lists with cursor paging and
//! `updated_since`/`updated_until`, the v1 endpoints that remain (leads, notes, users,
//! changelogs, lead and note fields) with offset paging, and Pipedrive's envelopes
//! (`{"success": true, "data": ..., "additional_data": ...}`, errors as `success: false`).

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::{ACTIVITY, DEAL, ENTITIES, LEAD, NOTE, ORGANIZATION, PERSON, PRODUCT, World, instant_text, number};
use crate::generator::Defect;
use crate::server::{HUGE_VALUE, INVALID_UTF8_MARK, Query, Shared, json_answer};

/// Most items a page may ask for (v1 and v2 alike).
const MAX_LIMIT: usize = 500;
/// Items a page holds when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;
/// Deal ids `/api/v2/deals/products` accepts at once.
const MAX_DEAL_IDS: usize = 100;

/// A request the sandbox refuses, answered with Pipedrive's error envelope.
struct Refusal {
    status: StatusCode,
    error: String,
    info: &'static str,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        pd_error(self.status, &self.error, self.info)
    }
}

type Answer = std::result::Result<Response, Refusal>;

/// Pipedrive's error envelope.
pub(crate) fn pd_error(status: StatusCode, error: &str, info: &str) -> Response {
    let body = json!({"success": false, "error": error, "error_info": info, "data": null, "additional_data": null});
    (status, Json(body)).into_response()
}

fn bad_request(message: String) -> Refusal {
    Refusal { status: StatusCode::BAD_REQUEST, error: message, info: "Please check developers.pipedrive.com" }
}

fn world(state: &Shared) -> &World {
    state.pipedrive.as_ref().expect("the Pipedrive routes are mounted only with the Pipedrive flavour")
}

/// The OAuth scope a path needs (the sandbox refuses it with `--missing-scopes`); `base`
/// is needed by every path.
fn scope_of(path: &str) -> &'static str {
    let rest = path.trim_start_matches("/api/v2/").trim_start_matches("/api/v1/");
    if rest.ends_with("/changelog") {
        "recents:read"
    } else if rest.starts_with("deal") || rest.starts_with("pipelines") || rest.starts_with("stages") {
        "deals:read"
    } else if rest.starts_with("person") || rest.starts_with("organization") {
        "contacts:read"
    } else if rest.starts_with("activit") {
        "activities:read"
    } else if rest.starts_with("product") {
        "products:read"
    } else if rest.starts_with("lead") {
        "leads:read"
    } else if rest.starts_with("users") && rest != "users/me" {
        "users:read"
    } else {
        "base"
    }
}

/// 403 when the token lacks the path's scope (or `base`).
async fn scopes(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let missing = &state.generator.config.missing_scopes;
    let needed = scope_of(request.uri().path());
    if let Some(scope) = [needed, "base"].into_iter().find(|s| missing.iter().any(|m| m == s)) {
        return pd_error(
            StatusCode::FORBIDDEN,
            "Scope and URL mismatch",
            &format!("The token lacks the scope {scope}"),
        );
    }
    next.run(request).await
}

pub(crate) fn routes(state: Shared) -> Router<Shared> {
    routes_unscoped().route_layer(axum::middleware::from_fn_with_state(state, scopes))
}

fn routes_unscoped() -> Router<Shared> {
    let mut r = Router::new()
        .route("/api/v1/users/me", get(users_me))
        .route("/api/v1/users", get(users))
        .route("/api/v2/pipelines", get(pipelines))
        .route("/api/v2/stages", get(stages))
        .route("/api/v2/deals/products", get(deal_products))
        .route("/api/v1/products/{id}/deals", get(product_deals))
        .route("/api/v2/deals/archived", get(|s: State<Shared>, q: RawQuery| v2_list(s, q, DEAL, true)))
        .route("/api/v1/leads/archived", get(|s: State<Shared>, q: RawQuery| v1_list(s, q, LEAD, true)))
        .route("/api/v1/leads", get(|s: State<Shared>, q: RawQuery| v1_list(s, q, LEAD, false)))
        .route("/api/v1/notes", get(|s: State<Shared>, q: RawQuery| v1_list(s, q, NOTE, false)))
        .route("/api/v1/leadFields", get(|s: State<Shared>, q: RawQuery| v1_fields(s, q, LEAD)))
        .route("/api/v1/noteFields", get(|s: State<Shared>, q: RawQuery| v1_fields(s, q, NOTE)));
    for e in [PERSON, ORGANIZATION, DEAL, ACTIVITY, PRODUCT] {
        let plural = ENTITIES[e].plural;
        r = r
            .route(&format!("/api/v2/{plural}"), get(move |s: State<Shared>, q: RawQuery| v2_list(s, q, e, false)))
            .route(
                &format!("/api/v2/{}Fields", ENTITIES[e].name),
                get(move |s: State<Shared>, q: RawQuery| v2_fields(s, q, e)),
            );
        if ENTITIES[e].changelog {
            r = r.route(
                &format!("/api/v1/{plural}/{{id}}/changelog"),
                get(move |s: State<Shared>, p: Path<String>, q: RawQuery| changelog(s, p, q, e)),
            );
        }
    }
    r
}

fn limit(q: &Query) -> std::result::Result<usize, Refusal> {
    match q.get("limit") {
        None => Ok(DEFAULT_LIMIT),
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err(bad_request(format!("Parameter 'limit' must be an integer between 1 and {MAX_LIMIT}"))),
        },
    }
}

/// v2 cursors are opaque: here the hex of `{"id": <last position>}`.
fn encode_cursor(position: u64) -> String {
    hex::encode(json!({"field": "id", "position": position}).to_string())
}

fn decode_cursor(q: &Query) -> std::result::Result<u64, Refusal> {
    let Some(c) = q.get("cursor") else { return Ok(0) };
    hex::decode(c)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["position"].as_u64())
        .ok_or_else(|| bad_request("Invalid cursor".into()))
}

/// `updated_since` / `updated_until`: RFC 3339 without fractional seconds (v2 refuses them).
fn time_param(q: &Query, key: &str) -> std::result::Result<Option<DateTime<Utc>>, Refusal> {
    let Some(t) = q.get(key) else { return Ok(None) };
    if t.contains('.') || t.contains(' ') {
        return Err(bad_request(format!(
            "Parameter '{key}' must be RFC 3339 without fractional seconds, e.g. 2025-01-01T10:20:00Z"
        )));
    }
    DateTime::parse_from_rfc3339(t)
        .map(|d| Some(d.with_timezone(&Utc)))
        .map_err(|_| bad_request(format!("Parameter '{key}' is not an RFC 3339 timestamp: {t}")))
}

fn v2_page<T>(
    q: &Query,
    total: u64,
    mut item: impl FnMut(u64) -> Option<T>,
) -> std::result::Result<(Vec<T>, Option<String>), Refusal> {
    let limit = limit(q)?;
    let mut position = decode_cursor(q)?;
    let mut out = Vec::new();
    while position < total && out.len() < limit {
        if let Some(v) = item(position) {
            out.push(v);
        }
        position += 1;
    }
    Ok((out, (position < total).then(|| encode_cursor(position))))
}

/// The text of field `f` of record `i` (a status, a pipeline id), if it has one.
fn field_text(w: &World, e: usize, i: u64, f: Option<usize>) -> Option<String> {
    match w.value(e, i, f?)? {
        super::Val::Text(t) => Some(t),
        super::Val::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

async fn v2_list(State(state): State<Shared>, RawQuery(q): RawQuery, e: usize, archived: bool) -> Answer {
    let w = world(&state);
    let q = Query::parse(q);
    let sort_by = q.get("sort_by").unwrap_or("id");
    if !matches!(sort_by, "id" | "update_time" | "add_time") {
        return Err(bad_request(format!(
            "Parameter 'sort_by' must be one of id, update_time, add_time, not {sort_by}"
        )));
    }
    let descending = match q.get("sort_direction").unwrap_or("asc") {
        "asc" => false,
        "desc" => true,
        other => return Err(bad_request(format!("Parameter 'sort_direction' must be asc or desc, not {other}"))),
    };
    let pipeline = q.get("pipeline_id").map(str::to_string);
    if pipeline.is_some() && e != DEAL {
        return Err(bad_request("Parameter 'pipeline_id' is only for deals".into()));
    }
    let since = time_param(&q, "updated_since")?;
    let until = if e == PRODUCT && q.get("updated_until").is_some() {
        return Err(bad_request("Parameter 'updated_until' is not supported for products".into()));
    } else {
        time_param(&q, "updated_until")?
    };
    let statuses: Vec<String> = q.list("status").unwrap_or_default();
    if e != DEAL && !statuses.is_empty() {
        return Err(bad_request("Parameter 'status' is only for deals".into()));
    }
    let with_deleted = statuses.iter().any(|s| s == "deleted");
    let references = reference_filters(w, e, &q)?;
    // Deals of every status unless asked otherwise; `deleted` ones only when asked for.
    let every_status = ["open", "won", "lost"].iter().all(|s| statuses.iter().any(|t| t == s));
    let field = |key: &str| w.fields[e].iter().position(|f| f.key == key);
    let (status_field, pipeline_field) = (field("status"), field("pipeline_id"));
    let wanted = |i: u64| {
        if w.is_archived(e, i) != archived || (w.is_deleted(e, i) && !with_deleted) {
            return false;
        }
        let rec = w.record(e, i);
        if since.is_some_and(|s| rec.update_time < s) || until.is_some_and(|u| rec.update_time >= u) {
            return false;
        }
        if !refers(w, e, i, &references) {
            return false;
        }
        if !statuses.is_empty() && !every_status && !w.is_deleted(e, i) {
            let status = field_text(w, e, i, status_field).unwrap_or_default();
            if !statuses.contains(&status) {
                return false;
            }
        }
        pipeline.as_ref().is_none_or(|p| field_text(w, e, i, pipeline_field).as_ref() == Some(p))
    };
    let (data, next) = if sort_by == "id" && !descending {
        v2_page(&q, w.count(e), |i| wanted(i).then(|| (i, served(w, e, i))))?
    } else {
        // Another order: the matching records sorted, the cursor a place in that order.
        let mut order: Vec<u64> = (0..w.count(e)).filter(|&i| wanted(i)).collect();
        match sort_by {
            "update_time" => order.sort_by_cached_key(|&i| (w.record(e, i).update_time, i)),
            "add_time" => order.sort_by_cached_key(|&i| (w.record(e, i).add_time, i)),
            _ => {}
        }
        if descending {
            order.reverse();
        }
        v2_page(&q, order.len() as u64, |k| {
            let i = order[k as usize];
            Some((i, served(w, e, i)))
        })?
    };
    let (indexes, data): (Vec<u64>, Vec<Value>) = data.into_iter().unzip();
    let response = answer(&state, json!(data), json!({"next_cursor": next}));
    // --search-churn: records this page of a changed-records list returned are modified
    // before the next page is asked (they leave the window).
    let churn = state.generator.config.search_churn as usize;
    if churn > 0 && next.is_some() && since.is_some() {
        let changed = w.touch_records(e, &indexes[..churn.min(indexes.len())], Utc::now());
        state.churned(changed);
    }
    Ok(response)
}

/// The foreign-key filters a list takes (`person_id=`, `org_id=`, `deal_id=`, leads'
/// `person_id=`/`organization_id=`): the entity's built-in reference fields the query names,
/// with the id each must hold.
fn reference_filters(w: &World, e: usize, q: &Query) -> std::result::Result<Vec<(usize, String)>, Refusal> {
    let mut filters = Vec::new();
    for (f, field) in w.fields[e].iter().enumerate() {
        if field.custom || !matches!(field.kind, super::Kind::Ref(_)) {
            continue;
        }
        if let Some(id) = q.get(&field.key) {
            let id = id.trim();
            if id.is_empty() || (field.kind != super::Kind::Ref(LEAD) && id.parse::<u64>().is_err()) {
                return Err(bad_request(format!("Parameter '{}' must be an id, not '{id}'", field.key)));
            }
            filters.push((f, id.to_string()));
        }
    }
    Ok(filters)
}

/// True when record `i` of `e` holds every id the filters ask for.
fn refers(w: &World, e: usize, i: u64, filters: &[(usize, String)]) -> bool {
    filters.iter().all(|(f, id)| field_text(w, e, i, Some(*f)).as_deref() == Some(id.as_str()))
}

/// `GET /api/v1/products/{id}/deals`: the deals (not deleted) whose line items hold the
/// product, with `start`/`limit` paging.
async fn product_deals(State(state): State<Shared>, Path(id): Path<String>, RawQuery(q): RawQuery) -> Answer {
    let w = world(&state);
    let q = Query::parse(q);
    let limit = limit(&q)?;
    let start: u64 =
        q.get("start").map(|s| s.parse().map_err(|_| bad_request("Invalid start".into()))).transpose()?.unwrap_or(0);
    let Some(product) = w.index_of(PRODUCT, &id) else {
        return Err(Refusal { status: StatusCode::NOT_FOUND, error: format!("Product {id} not found"), info: "" });
    };
    let product = product as i64 + 1;
    let matching: Vec<u64> = (0..w.count(DEAL))
        .filter(|&i| !w.is_deleted(DEAL, i) && w.deal_products(i).iter().any(|p| p.product_id == product))
        .collect();
    let page: Vec<Value> = matching.iter().skip(start as usize).take(limit).map(|&i| served(w, DEAL, i)).collect();
    let more = (start as usize + page.len()) < matching.len();
    let mut pagination = json!({"start": start, "limit": limit, "more_items_in_collection": more});
    if more {
        pagination["next_start"] = json!(start as usize + page.len());
    }
    let data = if page.is_empty() { Value::Null } else { json!(page) };
    Ok(answer(&state, data, json!({ "pagination": pagination })))
}

/// A record as served, with its defect when `--bad-records` gave it one.
fn served(w: &World, e: usize, i: u64) -> Value {
    let mut record = w.record_json(e, i);
    match w.defect(e, i) {
        None => {}
        Some(Defect::NoId) => {
            record.as_object_mut().map(|o| o.remove("id"));
        }
        Some(Defect::InvalidUtf8) => record[ENTITIES[e].text_key] = json!(format!("bad {INVALID_UTF8_MARK} bytes")),
        Some(Defect::Huge) => record[ENTITIES[e].text_key] = json!("h".repeat(HUGE_VALUE)),
        Some(Defect::BadTimestamp) => record["add_time"] = json!(Defect::BAD_TIMESTAMP),
    }
    record
}

/// A success envelope; with bad records on, the invalid-UTF-8 marks become real bad bytes.
fn answer(state: &Shared, data: Value, additional: Value) -> Response {
    let body = json!({"success": true, "data": data, "additional_data": additional});
    json_answer(&state.generator, StatusCode::OK, &body)
}

/// v1 lists with `start`/`limit`. Leads answer the bare `additional_data` form, notes the
/// `pagination` form with `next_start` (both appear in Pipedrive's spec); an empty page's
/// `data` is null, as Pipedrive's v1 sends it.
async fn v1_list(State(state): State<Shared>, RawQuery(q): RawQuery, e: usize, archived: bool) -> Answer {
    let w = world(&state);
    let q = Query::parse(q);
    let limit = limit(&q)?;
    let start: u64 =
        q.get("start").map(|s| s.parse().map_err(|_| bad_request("Invalid start".into()))).transpose()?.unwrap_or(0);
    if archived && q.get("updated_since").is_some() {
        return Err(bad_request("Parameter 'updated_since' is not supported for archived leads".into()));
    }
    let since = time_param(&q, "updated_since")?;
    let order = v1_sort(&q)?;
    let references = reference_filters(w, e, &q)?;
    let mut matching: Vec<u64> = (0..w.count(e))
        .filter(|&i| w.is_archived(e, i) == archived && !w.is_deleted(e, i))
        .filter(|&i| refers(w, e, i, &references))
        .filter(|&i| since.is_none_or(|s| w.record(e, i).update_time >= s))
        .collect();
    match order {
        // Pipedrive's default: the order records were created in (the spec says so of leads,
        // whose ids are UUIDs; other entities' indexes are their creation order).
        None if e == LEAD => matching.sort_by_cached_key(|&i| (w.record(e, i).add_time, i)),
        None => {}
        Some((key, descending)) => {
            match key {
                "id" if e == LEAD => matching.sort_by_cached_key(|&i| w.id(e, i)),
                "id" => {}
                "add_time" => matching.sort_by_cached_key(|&i| (w.record(e, i).add_time, i)),
                _ => matching.sort_by_cached_key(|&i| (w.record(e, i).update_time, i)),
            }
            if descending {
                matching.reverse();
            }
        }
    }
    let indexes: Vec<u64> = matching.iter().skip(start as usize).take(limit).copied().collect();
    let page: Vec<Value> = indexes.iter().map(|&i| served(w, e, i)).collect();
    let more = (start as usize + page.len()) < matching.len();
    let data = if page.is_empty() { Value::Null } else { json!(page) };
    let additional = if e == LEAD {
        json!({"start": start, "limit": limit, "more_items_in_collection": more})
    } else {
        let mut p = json!({"start": start, "limit": limit, "more_items_in_collection": more});
        if more {
            p["next_start"] = json!(start as usize + page.len());
        }
        json!({ "pagination": p })
    };
    let response = answer(&state, data, additional);
    // --search-churn on a list of changed records: records this page returned are modified
    // before the next page is asked and, for leads, as many others are archived (they leave the
    // list, so every later record moves that many places closer to the start).
    let churn = state.generator.config.search_churn as usize;
    if churn > 0 && more && since.is_some() && !indexes.is_empty() {
        let now = Utc::now();
        let mut changed = w.touch_records(e, &indexes[..churn.min(indexes.len())], now);
        if ENTITIES[e].archivable {
            let middle = &indexes[indexes.len() / 2..];
            changed.extend(w.archive_records(e, &middle[..churn.min(middle.len())], now));
        }
        state.churned(changed);
    }
    Ok(response)
}

/// v1 `sort`: `field ASC|DESC` (the first of a comma list), for the fields the sandbox keeps.
fn v1_sort(q: &Query) -> std::result::Result<Option<(&'static str, bool)>, Refusal> {
    let Some(sort) = q.get("sort") else { return Ok(None) };
    let first = sort.split(',').next().unwrap_or_default().trim();
    let mut words = first.split_whitespace();
    let field = words.next().unwrap_or_default();
    let descending = match words.next().map(str::to_ascii_uppercase).as_deref() {
        None | Some("ASC") => false,
        Some("DESC") => true,
        Some(other) => return Err(bad_request(format!("Invalid sort direction '{other}': use ASC or DESC"))),
    };
    let key = ["id", "add_time", "update_time"].into_iter().find(|k| *k == field).ok_or_else(|| {
        bad_request(format!("the sandbox sorts v1 lists by id, add_time or update_time only, not '{field}'"))
    })?;
    Ok(Some((key, descending)))
}

/// A v2 field definition. As in Pipedrive's v2 examples, a field with extra data lists its
/// parts by their own names, the main value first as `value` (`value`, `currency`;
/// `value`, `country`, `locality`, ...), and a field without options or parts answers
/// `options: null` and `subfields: null` (the schema says arrays; the examples and the live
/// API send null).
fn v2_field_json(e: usize, f: &super::FieldDef) -> Value {
    v2_field_with(e, f, f.field_type, &f.subfields)
}

fn v2_field_with(e: usize, f: &super::FieldDef, field_type: &str, parts: &[(&str, String, &str)]) -> Value {
    let options = (!f.options.is_empty())
        .then(|| f.options.iter().map(|(id, label)| json!({"id": id, "label": label})).collect::<Vec<_>>());
    let subfields = (!parts.is_empty()).then(|| {
        let main = json!({"field_code": "value", "field_name": format!("Value of {}", f.name), "field_type": main_type(field_type)});
        std::iter::once(main)
            .chain(parts.iter().map(|(part, name, ty)| {
                json!({"field_code": part, "field_name": format!("{name} of {}", f.name), "field_type": ty})
            }))
            .collect::<Vec<_>>()
    });
    let description = if f.custom {
        format!("{} (a custom field)", f.name)
    } else {
        format!("The {} of the {}", f.name.to_lowercase(), super::ENTITIES[e].name)
    };
    json!({
        "field_name": f.name, "field_code": f.key, "field_type": field_type, "description": description,
        "options": options, "subfields": subfields, "is_custom_field": f.custom, "is_optional_response_field": false,
    })
}

/// The type of a field's main value: a monetary field's amount is a number, an address's a
/// text, a date range's its start.
fn main_type(field_type: &str) -> &'static str {
    match field_type {
        "monetary" => "double",
        "daterange" => "date",
        _ => "varchar",
    }
}

/// The v2 definitions of `e`'s fields. A deal's built-in `value` and `currency` are one
/// monetary field there, as v2's deal fields example shows, while deal records keep the two
/// side by side.
fn v2_field_defs(e: usize, fields: &[super::FieldDef]) -> Vec<Value> {
    let builtin = |key: &str| fields.iter().any(|f| !f.custom && f.key == key);
    let monetary_value = builtin("value") && builtin("currency");
    fields
        .iter()
        .filter(|f| !(monetary_value && !f.custom && f.key == "currency"))
        .map(|f| {
            if monetary_value && !f.custom && f.key == "value" {
                v2_field_with(e, f, "monetary", &[("currency", "Currency".into(), "varchar")])
            } else {
                v2_field_json(e, f)
            }
        })
        .collect()
}

async fn v2_fields(State(state): State<Shared>, RawQuery(q): RawQuery, e: usize) -> Answer {
    let w = world(&state);
    let q = Query::parse(q);
    let defs = v2_field_defs(e, &w.fields[e]);
    let (data, next) = v2_page(&q, defs.len() as u64, |i| defs.get(i as usize).cloned())?;
    Ok(answer(&state, json!(data), json!({"next_cursor": next})))
}

/// v1 `*Fields`: `key`, `name`, `edit_flag` (custom), subfields as `{key, name, field_type}`.
async fn v1_fields(State(state): State<Shared>, RawQuery(q): RawQuery, e: usize) -> Answer {
    let w = world(&state);
    let q = Query::parse(q);
    let limit = limit(&q)?;
    let start: usize = q.get("start").and_then(|s| s.parse().ok()).unwrap_or(0);
    let fields = &w.fields[e];
    let page: Vec<Value> = fields
        .iter()
        .enumerate()
        .skip(start)
        .take(limit)
        .map(|(k, f)| {
            let v2 = v2_field_json(e, f);
            json!({
                "id": k + 1, "key": f.key, "name": f.name, "field_type": f.field_type, "edit_flag": f.custom,
                "active_flag": true, "order_nr": k, "options": v2["options"],
                "subfields": f.subfields.iter().map(|(suffix, name, ty)| json!({"key": format!("{}_{suffix}", f.key), "name": name, "field_type": ty})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let more = start + page.len() < fields.len();
    Ok(answer(
        &state,
        json!(page),
        json!({"pagination": {"start": start, "limit": limit, "more_items_in_collection": more}}),
    ))
}

fn user_json(w: &World, k: usize) -> Value {
    let u = &w.users[k];
    json!({
        "id": u.id, "name": u.name, "email": u.email, "active_flag": u.active, "is_admin": k == 0,
        "created": instant_text(u.created, true), "modified": instant_text(u.modified, true),
        "role_id": 1, "timezone_name": "Europe/Tallinn", "default_currency": "EUR", "lang": 1, "locale": "en_US",
        "icon_url": null, "is_you": k == 0, "is_deleted": !u.active,
    })
}

async fn users_me(State(state): State<Shared>) -> Response {
    let w = world(&state);
    let mut me = user_json(w, 0);
    me["company_id"] = json!(w.company_id);
    me["company_domain"] = json!(w.company_domain());
    me["company_name"] = json!(format!("Sandbox Company {}", w.seed));
    answer(&state, me, Value::Null)
}

async fn users(State(state): State<Shared>) -> Response {
    let w = world(&state);
    answer(&state, json!((0..w.users.len()).map(|k| user_json(w, k)).collect::<Vec<_>>()), Value::Null)
}

fn v2_time(w: &World, days_before: i64) -> String {
    instant_text(w.anchor - chrono::Duration::days(days_before), false)
}

async fn pipelines(State(state): State<Shared>, RawQuery(q): RawQuery) -> Answer {
    let w = world(&state);
    let q = Query::parse(q);
    let (data, next) = v2_page(&q, w.pipelines.len() as u64, |i| {
        let p = &w.pipelines[i as usize];
        Some(json!({
            "id": p.id, "name": p.name, "order_nr": p.order_nr, "is_deleted": false,
            "is_deal_probability_enabled": true, "add_time": v2_time(w, 700), "update_time": v2_time(w, 60),
        }))
    })?;
    Ok(answer(&state, json!(data), json!({"next_cursor": next})))
}

async fn stages(State(state): State<Shared>, RawQuery(q): RawQuery) -> Answer {
    let w = world(&state);
    let q = Query::parse(q);
    let pipeline: Option<i64> = q
        .get("pipeline_id")
        .map(|p| p.parse().map_err(|_| bad_request(format!("Invalid pipeline_id '{p}'"))))
        .transpose()?;
    let all: Vec<(i64, &super::Stage)> = w
        .pipelines
        .iter()
        .filter(|p| pipeline.is_none_or(|id| p.id == id))
        .flat_map(|p| p.stages.iter().map(move |s| (p.id, s)))
        .collect();
    // The spec's default order: by id, ascending.
    let mut all = all;
    all.sort_by_key(|(_, s)| s.0);
    let (data, next) = v2_page(&q, all.len() as u64, |i| {
        let (pipeline_id, (id, name, order, probability)) = all[i as usize];
        Some(json!({
            "id": id, "order_nr": order, "name": name, "is_deleted": false, "deal_probability": probability,
            "pipeline_id": pipeline_id, "is_deal_rot_enabled": *id % 2 == 0, "days_to_rotten": (*id % 2 == 0).then_some(30),
            "add_time": v2_time(w, 690), "update_time": v2_time(w, 50),
        }))
    })?;
    Ok(answer(&state, json!(data), json!({"next_cursor": next})))
}

async fn deal_products(State(state): State<Shared>, RawQuery(q): RawQuery) -> Answer {
    let w = world(&state);
    let q = Query::parse(q);
    let ids = q.list("deal_ids").unwrap_or_default();
    if ids.is_empty() || ids.len() > MAX_DEAL_IDS {
        return Err(bad_request(format!("Parameter 'deal_ids' is required and takes at most {MAX_DEAL_IDS} ids")));
    }
    let items: Vec<_> = ids.iter().filter_map(|id| w.index_of(DEAL, id)).flat_map(|i| w.deal_products(i)).collect();
    let (data, next) = v2_page(&q, items.len() as u64, |i| {
        let p = &items[i as usize];
        Some(json!({
            "id": p.id, "deal_id": p.deal_id, "product_id": p.product_id, "name": format!("Product {}", p.product_id),
            "quantity": p.quantity, "item_price": p.item_price, "sum": number(p.item_price * p.quantity as f64).parse::<f64>().unwrap_or(0.0),
            "currency": "EUR", "tax": 0, "discount": 0, "discount_type": "percentage", "is_enabled": true,
            "add_time": v2_time(w, 100), "update_time": v2_time(w, 10),
        }))
    })?;
    Ok(answer(&state, json!(data), json!({"next_cursor": next})))
}

async fn changelog(State(state): State<Shared>, Path(id): Path<String>, RawQuery(q): RawQuery, e: usize) -> Answer {
    let w = world(&state);
    let q = Query::parse(q);
    let index = w.index_of(e, &id).ok_or_else(|| Refusal {
        status: StatusCode::NOT_FOUND,
        error: "Entity was not found".into(),
        info: "Object was not found.",
    })?;
    let entries = w.changelog(e, index);
    let (data, next) = v2_page(&q, entries.len() as u64, |i| {
        let c = &entries[i as usize];
        Some(json!({
            "field_key": c.field_key, "old_value": c.old_value, "new_value": c.new_value,
            "actor_user_id": c.actor_user_id, "time": instant_text(c.time, true), "change_source": c.change_source,
            "change_source_user_agent": c.user_agent, "is_bulk_update_flag": false,
        }))
    })?;
    Ok(answer(&state, json!(data), json!({"next_cursor": next})))
}
