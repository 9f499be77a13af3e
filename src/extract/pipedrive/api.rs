//! Pipedrive's shapes as the extractor reads them: the `{success, data, additional_data}`
//! envelope with both paging styles (v2 `next_cursor`; v1 `start`/`limit` with or without
//! the `pagination` wrapper), field definitions of v1 and v2, and values turned into text.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::Result;
use crate::http::HttpClient;
use crate::schema::ColumnType;

/// Items per page (the most Pipedrive allows on v1 and v2).
pub const PAGE: usize = 500;

/// How a list pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paging {
    /// v2 (and v1 changelogs): `cursor`, `additional_data.next_cursor`.
    Cursor,
    /// v1: `start`, `additional_data[.pagination].more_items_in_collection` / `next_start`.
    Offset,
}

/// Records each v1 page asks for again from the end of the page before. A record removed from
/// the list (deleted, archived) before the next page is asked moves every later record one
/// place closer to the start; with this overlap up to `OVERLAP - 1` removals cost nothing.
const OVERLAP: u64 = 10;

/// Walks the pages of one list; [`Pager::next`] answers `None` after the last.
///
/// v1 lists page by `start`, an offset, and are asked for in id order (`sort=id ASC`), which a
/// modification never changes. Only a removal can shift records past a page boundary, so every
/// page after the first starts [`OVERLAP`] records early and must begin with a record already
/// read: otherwise more records were removed than the overlap covers, and the pager steps back
/// a page at a time until it finds one ([`Pager::stepped_back`] counts these re-reads). Records
/// already returned are dropped, so each is returned once.
pub struct Pager<'a> {
    client: &'a HttpClient,
    path: String,
    query: Vec<(String, String)>,
    paging: Paging,
    cursor: Option<String>,
    start: u64,
    done: bool,
    /// v1: ids returned so far.
    seen: HashSet<String>,
    /// Pages whose invalid UTF-8 was replaced by U+FFFD so the rest could be read.
    pub repaired: u64,
    /// v1: pages read again because records removed during the listing shifted the offsets.
    pub stepped_back: u64,
}

impl<'a> Pager<'a> {
    pub fn new(
        client: &'a HttpClient,
        path: impl Into<String>,
        query: Vec<(String, String)>,
        paging: Paging,
    ) -> Pager<'a> {
        Pager {
            client,
            path: path.into(),
            query,
            paging,
            cursor: None,
            start: 0,
            done: false,
            seen: HashSet::new(),
            repaired: 0,
            stepped_back: 0,
        }
    }

    /// The path and query of the page about to be read, for error messages.
    pub fn describe(&self) -> String {
        match (&self.cursor, self.paging) {
            (Some(c), _) => format!("GET {} (cursor {c})", self.path),
            (None, Paging::Offset) if self.start > 0 => format!("GET {} (start {})", self.path, self.start),
            _ => format!("GET {}", self.path),
        }
    }

    /// The next page's items (an empty or null `data` is an empty page).
    pub async fn next(&mut self) -> Result<Option<Vec<Value>>> {
        if self.done {
            return Ok(None);
        }
        if self.paging == Paging::Cursor {
            let (items, additional) = self.fetch(None).await?;
            self.cursor = additional.get("next_cursor").and_then(Value::as_str).map(str::to_string);
            self.done = self.cursor.is_none();
            return Ok(Some(items));
        }
        // The first page starts at 0; every later one OVERLAP records before the last ended.
        let mut ask = self.start.saturating_sub(OVERLAP);
        loop {
            let (items, additional) = self.fetch(Some(ask)).await?;
            let p = additional.get("pagination").unwrap_or(&additional);
            let more = p.get("more_items_in_collection").and_then(Value::as_bool).unwrap_or(false);
            let first_id = items.iter().find_map(record_id);
            let anchored = ask == 0 || first_id.as_ref().is_some_and(|id| self.seen.contains(id));
            if !anchored && (first_id.is_some() || items.is_empty()) {
                // More records left the list than the overlap covers: read from further back.
                self.stepped_back += 1;
                ask = ask.saturating_sub(PAGE as u64 - OVERLAP);
                continue;
            }
            let next = p.get("next_start").and_then(Value::as_u64).unwrap_or(ask + items.len() as u64);
            self.done = !more || items.is_empty() || next <= ask;
            self.start = next;
            // Records up to the last one already returned are the overlap.
            let fresh =
                items.iter().rposition(|r| record_id(r).is_some_and(|id| self.seen.contains(&id))).map_or(0, |k| k + 1);
            let items: Vec<Value> = items.into_iter().skip(fresh).collect();
            self.seen.extend(items.iter().filter_map(record_id));
            return Ok(Some(items));
        }
    }

    /// One page: at `start` (v1) or the cursor (v2); its items and `additional_data`.
    async fn fetch(&mut self, start: Option<u64>) -> Result<(Vec<Value>, Value)> {
        let limit = PAGE.to_string();
        let start = start.map(|s| s.to_string());
        let mut query: Vec<(&str, &str)> = self.query.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        query.push(("limit", &limit));
        match (&start, &self.cursor) {
            (Some(s), _) => query.push(("start", s)),
            (None, Some(c)) => query.push(("cursor", c)),
            (None, None) => {}
        }
        let (mut page, repaired): (Value, bool) = self.client.get_json_repaired(&self.path, &query).await?;
        self.repaired += u64::from(repaired);
        let items = match page.get_mut("data").map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        Ok((items, page.get_mut("additional_data").map(Value::take).unwrap_or(Value::Null)))
    }
}

/// A record's `id` as text (numbers and UUID strings alike).
fn record_id(record: &Value) -> Option<String> {
    match record.get("id")? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A field definition, from v2 (`field_code`, `field_name`, `is_custom_field`) or v1 (`key`,
/// `name`, `edit_flag`).
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub key: String,
    pub name: String,
    pub field_type: String,
    pub custom: bool,
    /// The option set as sent (`[{id, label}]`), or null.
    pub options: Value,
    pub description: Option<String>,
    /// Extra data fields beside the main value (monetary currency, address parts, date range end).
    pub subfields: Vec<Subfield>,
    /// Where a v2 record may carry a built-in field missing under its own key: its plural
    /// (v2 lists a person's `phones` as the field `phone`).
    plural_key: String,
}

/// One extra data field of a field.
#[derive(Debug, Clone, PartialEq)]
pub struct Subfield {
    /// The property it is kept as: `<field key>_<part>` (`<hash>_currency`, `address_country`).
    pub key: String,
    /// Its name inside a v2 value object (`currency`, `country`).
    pub part: String,
    pub name: String,
    pub field_type: String,
}

impl Subfield {
    /// Reads a subfield of `field`. v1 codes a part as a whole key (`<hash>_currency`,
    /// `address_country`), v2 by the part's own name (`currency`, `country`) and lists the
    /// main value itself as the part `value`, which is no extra field (`None`). A built-in
    /// monetary field's currency is the record's own `currency` (v2 deals send `value` and
    /// `currency` side by side).
    fn parse(field_key: &str, field_type: &str, custom: bool, sub: &Value) -> Option<Subfield> {
        let s = |k: &str| sub.get(k).and_then(Value::as_str).map(str::to_string);
        let code = s("field_code").or_else(|| s("key"))?;
        let whole = code.strip_prefix(field_key).and_then(|rest| rest.strip_prefix('_'));
        let part = whole.unwrap_or(&code).to_string();
        if whole.is_none() && part == "value" {
            return None;
        }
        let key = match whole {
            Some(_) => code.clone(),
            None if !custom && field_type == "monetary" && part == "currency" => part.clone(),
            None => format!("{field_key}_{part}"),
        };
        Some(Subfield {
            key,
            part,
            name: s("field_name").or_else(|| s("name")).unwrap_or_default(),
            field_type: s("field_type").unwrap_or_else(|| "varchar".into()),
        })
    }
}

impl Field {
    pub fn parse(v: &Value) -> Option<Field> {
        let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let key = s("field_code").or_else(|| s("key"))?;
        let field_type = s("field_type").unwrap_or_else(|| "varchar".into());
        let custom = v.get("is_custom_field").or_else(|| v.get("edit_flag")).and_then(Value::as_bool).unwrap_or(false);
        let subfields = v
            .get("subfields")
            .and_then(Value::as_array)
            .map(|subs| subs.iter().filter_map(|sub| Subfield::parse(&key, &field_type, custom, sub)).collect())
            .unwrap_or_default();
        Some(Field {
            name: s("field_name").or_else(|| s("name")).unwrap_or_else(|| key.clone()),
            field_type,
            custom,
            options: v.get("options").cloned().unwrap_or(Value::Null),
            description: s("description"),
            subfields,
            plural_key: format!("{key}s"),
            key,
        })
    }
}

/// The column type of a Pipedrive field. Built-in `*_time` fields are typed `date` by
/// Pipedrive but hold instants; ids of users, people, organizations, deals, pipelines and
/// stages are integers (leads' are UUIDs, so text).
pub fn column_type(key: &str, field_type: &str) -> ColumnType {
    match field_type {
        "date" if key.ends_with("_time") => ColumnType::Timestamp,
        "date" | "daterange" => ColumnType::Date32,
        "int" | "user" | "org" | "people" | "deal" | "stage" | "pipeline" | "product" | "activity" | "project" => {
            ColumnType::Int64
        }
        "double" | "monetary" => ColumnType::Float64,
        "boolean" => ColumnType::Boolean,
        "json" | "price_list" => ColumnType::Json,
        _ => ColumnType::Utf8,
    }
}

/// The text kept for a value: strings as sent, numbers as JSON prints them, booleans
/// `true`/`false`, arrays of scalars (option sets, label ids) as comma lists, other arrays
/// and objects as compact JSON; `None` for null and for an empty array.
pub fn text(v: &Value) -> Option<String> {
    match v {
        // An empty list (no labels, no emails) is no value, as null is.
        Value::Null => None,
        Value::Array(items) if items.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Array(items) if items.iter().all(|i| i.is_number() || i.is_string()) => {
            Some(items.iter().filter_map(text).collect::<Vec<_>>().join(","))
        }
        other => Some(other.to_string()),
    }
}

/// The value of a field (or of one of its extra data fields) on a record: v1 keeps every
/// key flat; v2 nests custom fields in `custom_fields`, and an object value with extra data
/// fields (monetary, address, date range) holds the main value in `value` and each part under
/// its name. v2 names a person's `emails` and `phones` in the singular in its field list
/// (`email`, `phone`): a built-in field missing under its own key is read from its plural.
pub fn field_value<'r>(record: &'r Value, field: &Field, v2: bool, sub: Option<&Subfield>) -> Option<&'r Value> {
    if !v2 {
        return record.get(sub.map_or(field.key.as_str(), |s| s.key.as_str()));
    }
    let holder = if field.custom { record.get("custom_fields")? } else { record };
    let value = holder.get(&field.key).or_else(|| (!field.custom).then(|| holder.get(&field.plural_key)).flatten());
    match (value, sub) {
        (Some(Value::Object(o)), Some(sub)) => o.get(&sub.part),
        (Some(Value::Object(o)), None) if !field.subfields.is_empty() => o.get("value"),
        (value, None) => value,
        // A subfield of a field sent as a plain value (or a subfield v2 sends flat).
        (_, Some(sub)) => holder.get(&sub.key),
    }
}

/// The instant of an API time (`2024-01-01T10:00:00Z` or v1's `2024-01-01 10:00:00`).
pub fn instant(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str().and_then(crate::schema::parse_instant)
}

/// `PROPERTY_<UPPER(slug)>` of a custom field's name: transliterated to ASCII, runs of
/// other characters turned into one `_`.
pub fn slug_column(name: &str) -> String {
    let ascii = deunicode::deunicode(name);
    let mut slug = String::new();
    for c in ascii.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_uppercase());
        } else if !slug.ends_with('_') && !slug.is_empty() {
            slug.push('_');
        }
    }
    let slug = slug.trim_end_matches('_');
    format!("PROPERTY_{}", if slug.is_empty() { "FIELD" } else { slug })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn slugs_are_readable_ascii() {
        assert_eq!(slug_column("Größe (cm)"), "PROPERTY_GROSSE_CM");
        assert_eq!(slug_column("Is priority?"), "PROPERTY_IS_PRIORITY");
        assert_eq!(slug_column("Référence client"), "PROPERTY_REFERENCE_CLIENT");
        assert_eq!(slug_column("???"), "PROPERTY_FIELD");
    }

    #[test]
    fn values_come_from_v2_custom_fields_and_v1_flat_keys() {
        // v1 codes a part as a whole key, v2 by the part's name with the main value first.
        let v1_money = Field::parse(&json!({
            "key": "abc", "name": "Contract", "field_type": "monetary", "edit_flag": true,
            "subfields": [{"key": "abc_currency", "name": "Currency", "field_type": "varchar"}]
        }))
        .unwrap();
        let money = Field::parse(&json!({
            "field_code": "abc", "field_name": "Contract", "field_type": "monetary", "is_custom_field": true,
            "subfields": [{"field_code": "value", "field_name": "Amount", "field_type": "double"},
                          {"field_code": "currency", "field_name": "Currency", "field_type": "varchar"}]
        }))
        .unwrap();
        assert_eq!(money.subfields, v1_money.subfields, "one extra field, keyed abc_currency");
        let currency = &money.subfields[0];
        assert_eq!((currency.key.as_str(), currency.part.as_str()), ("abc_currency", "currency"));
        let v2 = json!({"id": 1, "custom_fields": {"abc": {"value": 12.5, "currency": "EUR"}}});
        assert_eq!(field_value(&v2, &money, true, None), Some(&json!(12.5)));
        assert_eq!(field_value(&v2, &money, true, Some(currency)), Some(&json!("EUR")));
        let v1 = json!({"id": "x", "abc": 12.5, "abc_currency": "EUR"});
        assert_eq!(field_value(&v1, &money, false, Some(currency)), Some(&json!("EUR")));
        // A deal's built-in monetary value: its currency is the record's own `currency`.
        let value = Field::parse(&json!({
            "field_code": "value", "field_name": "Value", "field_type": "monetary", "is_custom_field": false,
            "subfields": [{"field_code": "value", "field_name": "Amount of Value", "field_type": "double"},
                          {"field_code": "currency", "field_name": "Currency of Value", "field_type": "varchar"}]
        }))
        .unwrap();
        assert_eq!(value.subfields.len(), 1);
        let deal = json!({"id": 1, "value": 200, "currency": "USD"});
        assert_eq!(field_value(&deal, &value, true, None), Some(&json!(200)));
        assert_eq!(field_value(&deal, &value, true, Some(&value.subfields[0])), Some(&json!("USD")));
        // v2 lists a person's phones as `phone`; records carry `phones`.
        let phone =
            Field::parse(&json!({"field_code": "phone", "field_name": "Phone", "field_type": "phone"})).unwrap();
        let person = json!({"id": 1, "phones": [{"value": "12345", "primary": true}]});
        assert_eq!(field_value(&person, &phone, true, None), Some(&person["phones"]));
        assert_eq!(text(&json!([3, 4])).as_deref(), Some("3,4"));
        assert_eq!(text(&json!([{"a": 1}])).as_deref(), Some("[{\"a\":1}]"));
        assert_eq!(text(&json!([])), None, "an empty list is no value");
        assert_eq!(text(&Value::Null), None);
        assert_eq!(column_type("add_time", "date"), ColumnType::Timestamp);
        assert_eq!(column_type("due_date", "date"), ColumnType::Date32);
    }
}
