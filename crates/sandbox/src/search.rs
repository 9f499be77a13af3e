//! The sandbox's CRM search (`POST /crm/v3/objects/{type}/search`) with HubSpot's rules:
//! filter groups ORed, filters in a group ANDed, one sort, pages of at most 200, numeric
//! `after` offsets, and no result past the 10,000th (a 400, as HubSpot answers). It searches
//! the two properties incremental exporters use: the last-modified date and `hs_object_id`.

use serde::Deserialize;
use serde_json::Value;

/// HubSpot stops every search at this many results.
pub const RESULT_CAP: usize = 10_000;
/// HubSpot's largest search page.
pub const MAX_PAGE: usize = 200;
const MAX_GROUPS: usize = 5;
const MAX_FILTERS_PER_GROUP: usize = 6;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SearchBody {
    #[serde(default)]
    pub filter_groups: Vec<FilterGroup>,
    #[serde(default)]
    pub sorts: Vec<Value>,
    #[serde(default)]
    pub properties: Vec<String>,
    pub limit: Option<usize>,
    pub after: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct FilterGroup {
    #[serde(default)]
    pub filters: Vec<Filter>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    pub property_name: String,
    pub operator: String,
    pub value: Option<Value>,
    pub high_value: Option<Value>,
}

/// The searchable fields of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    Modified,
    Id,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Eq(i64),
    Gt(i64),
    Gte(i64),
    Lt(i64),
    Lte(i64),
    Between(i64, i64),
}

impl Op {
    fn matches(self, v: i64) -> bool {
        match self {
            Op::Eq(x) => v == x,
            Op::Gt(x) => v > x,
            Op::Gte(x) => v >= x,
            Op::Lt(x) => v < x,
            Op::Lte(x) => v <= x,
            Op::Between(lo, hi) => lo <= v && v <= hi,
        }
    }
}

/// One page of a search: ids in order, and how many matched in all.
#[derive(Debug, PartialEq)]
pub struct SearchPage {
    pub ids: Vec<i64>,
    pub total: usize,
    /// The `after` of the next page, when there is one (even past the cap, as HubSpot does).
    pub next_after: Option<usize>,
}

/// Runs `body` over `index` (`(last-modified ms, id)` sorted ascending). `modified` names the
/// type's last-modified property. `disorder_ms` > 0 sorts by last-modified as a lagging
/// index does: each record as if modified up to that many milliseconds later than it was
/// (the same shift for a record every time). `Err` is the 400 message.
pub fn search(index: &[(i64, i64)], modified: &str, body: &SearchBody, disorder_ms: i64) -> Result<SearchPage, String> {
    let limit = body.limit.unwrap_or(10);
    if limit == 0 || limit > MAX_PAGE {
        return Err(format!("limit must be between 1 and {MAX_PAGE}, got {limit}"));
    }
    let after = match &body.after {
        None => 0,
        Some(Value::String(s)) if s.is_empty() => 0,
        Some(Value::String(s)) => s.parse().map_err(|_| format!("after must be a number, got '{s}'"))?,
        Some(Value::Number(n)) => n.as_u64().ok_or("after must be a non-negative number")? as usize,
        Some(other) => return Err(format!("after must be a string, got {other}")),
    };
    if after + limit > RESULT_CAP {
        return Err(format!(
            "There was a problem with the request. The search API returns at most {RESULT_CAP} results per query (after {after} + limit {limit})."
        ));
    }
    if body.filter_groups.len() > MAX_GROUPS {
        return Err(format!("at most {MAX_GROUPS} filter groups are allowed"));
    }
    let groups: Vec<Vec<(Field, Op)>> = body
        .filter_groups
        .iter()
        .map(|g| {
            if g.filters.len() > MAX_FILTERS_PER_GROUP {
                return Err(format!("at most {MAX_FILTERS_PER_GROUP} filters are allowed per group"));
            }
            g.filters.iter().map(|f| parse_filter(f, modified)).collect()
        })
        .collect::<Result<_, String>>()?;
    let (sort_field, descending) = parse_sort(&body.sorts, modified)?;

    // One group: narrow to its last-modified range by binary search before filtering.
    let candidates: &[(i64, i64)] = match groups.as_slice() {
        [only] => {
            let (lo, hi) = modified_bounds(only);
            let start = index.partition_point(|e| e.0 < lo);
            let end = index.partition_point(|e| e.0 <= hi);
            &index[start..end.max(start)]
        }
        _ => index,
    };
    let matches = |e: &(i64, i64)| {
        groups.is_empty()
            || groups
                .iter()
                .any(|g| g.iter().all(|(field, op)| op.matches(if *field == Field::Modified { e.0 } else { e.1 })))
    };
    let mut hits: Vec<(i64, i64)> = candidates.iter().filter(|e| matches(e)).copied().collect();
    match sort_field {
        Field::Modified if disorder_ms > 0 => {
            let shift = |id: i64| ((id as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 24) as i64 % disorder_ms;
            hits.sort_by_key(|e| (e.0 + shift(e.1), e.1));
        }
        Field::Modified => {}
        Field::Id => hits.sort_unstable_by_key(|e| e.1),
    }
    if descending {
        hits.reverse();
    }
    let total = hits.len();
    let end = (after + limit).min(total);
    let ids = hits[after.min(end)..end].iter().map(|e| e.1).collect();
    Ok(SearchPage { ids, total, next_after: (end < total).then_some(end) })
}

fn parse_filter(f: &Filter, modified: &str) -> Result<(Field, Op), String> {
    let field = if f.property_name == modified {
        Field::Modified
    } else if f.property_name == "hs_object_id" {
        Field::Id
    } else {
        return Err(format!("the sandbox searches on {modified} and hs_object_id only, not on '{}'", f.property_name));
    };
    let value = |v: &Option<Value>, what: &str| -> Result<i64, String> {
        let v = v.as_ref().ok_or_else(|| format!("{} needs a {what}", f.operator))?;
        scalar(v, field).ok_or_else(|| format!("'{v}' is not a valid value for {}", f.property_name))
    };
    let op = match f.operator.as_str() {
        "EQ" => Op::Eq(value(&f.value, "value")?),
        "GT" => Op::Gt(value(&f.value, "value")?),
        "GTE" => Op::Gte(value(&f.value, "value")?),
        "LT" => Op::Lt(value(&f.value, "value")?),
        "LTE" => Op::Lte(value(&f.value, "value")?),
        "BETWEEN" => Op::Between(value(&f.value, "value")?, value(&f.high_value, "highValue")?),
        other => return Err(format!("the sandbox does not support the operator {other}")),
    };
    Ok((field, op))
}

/// A filter value: epoch milliseconds or an ISO timestamp for dates, an integer for ids.
fn scalar(v: &Value, field: Field) -> Option<i64> {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => return None,
    };
    if let Ok(n) = text.parse::<i64>() {
        return Some(n);
    }
    match field {
        Field::Modified => crate::time::instant(&text).map(|t| t.timestamp_millis()),
        Field::Id => None,
    }
}

fn parse_sort(sorts: &[Value], modified: &str) -> Result<(Field, bool), String> {
    let (name, descending) = match sorts {
        [] => return Ok((Field::Modified, false)),
        [Value::String(s)] => match s.strip_prefix('-') {
            Some(n) => (n.to_string(), true),
            None => (s.clone(), false),
        },
        [Value::Object(o)] => {
            let name = o.get("propertyName").and_then(Value::as_str).ok_or("a sort needs a propertyName")?;
            let direction = o.get("direction").and_then(Value::as_str).unwrap_or("ASCENDING");
            (name.to_string(), direction == "DESCENDING")
        }
        _ => return Err("only one sort is allowed".into()),
    };
    if name == modified {
        Ok((Field::Modified, descending))
    } else if name == "hs_object_id" {
        Ok((Field::Id, descending))
    } else {
        Err(format!("the sandbox sorts on {modified} or hs_object_id only, not on '{name}'"))
    }
}

/// The last-modified range a group's filters allow (inclusive).
fn modified_bounds(group: &[(Field, Op)]) -> (i64, i64) {
    let (mut lo, mut hi) = (i64::MIN, i64::MAX);
    for (field, op) in group {
        if *field != Field::Modified {
            continue;
        }
        match *op {
            Op::Eq(x) => (lo, hi) = (lo.max(x), hi.min(x)),
            Op::Gt(x) => lo = lo.max(x.saturating_add(1)),
            Op::Gte(x) => lo = lo.max(x),
            Op::Lt(x) => hi = hi.min(x.saturating_sub(1)),
            Op::Lte(x) => hi = hi.min(x),
            Op::Between(a, b) => (lo, hi) = (lo.max(a), hi.min(b)),
        }
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(v: Value) -> SearchBody {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn filters_sort_and_page_like_hubspot() {
        // 5 records at ms 10, 3 at ms 20, ids ascending within each.
        let index: Vec<(i64, i64)> = (0..5).map(|i| (10, 100 + i)).chain((0..3).map(|i| (20, 200 + i))).collect();
        let range = body(json!({
            "filterGroups": [{"filters": [
                {"propertyName": "lastmodifieddate", "operator": "GTE", "value": "10"},
                {"propertyName": "lastmodifieddate", "operator": "LT", "value": "1970-01-01T00:00:00.020Z"}]}],
            "sorts": [{"propertyName": "lastmodifieddate", "direction": "ASCENDING"}], "limit": 3, "after": "3"}));
        let page = search(&index, "lastmodifieddate", &range, 0).unwrap();
        assert_eq!(page, SearchPage { ids: vec![103, 104], total: 5, next_after: None });

        let instant = body(json!({
            "filterGroups": [{"filters": [
                {"propertyName": "lastmodifieddate", "operator": "EQ", "value": 10},
                {"propertyName": "hs_object_id", "operator": "GT", "value": "101"}]}],
            "sorts": [{"propertyName": "hs_object_id", "direction": "DESCENDING"}], "limit": 2}));
        let page = search(&index, "lastmodifieddate", &instant, 0).unwrap();
        assert_eq!(page, SearchPage { ids: vec![104, 103], total: 3, next_after: Some(2) });
    }

    #[test]
    fn refuses_to_page_past_ten_thousand_results() {
        let index: Vec<(i64, i64)> = (0..10_500).map(|i| (5, i)).collect();
        let last = search(&index, "m", &body(json!({"limit": 200, "after": "9800"})), 0).unwrap();
        assert_eq!(last.next_after, Some(10_000), "HubSpot still offers a next page");
        let past = search(&index, "m", &body(json!({"limit": 200, "after": "10000"})), 0).unwrap_err();
        assert!(past.contains("10000"), "{past}");
        let other = search(
            &index,
            "m",
            &body(json!({"filterGroups": [{"filters": [
            {"propertyName": "email", "operator": "EQ", "value": "x"}]}]})),
            0,
        );
        assert!(other.unwrap_err().contains("email"));
    }
}
