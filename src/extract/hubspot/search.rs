//! Records changed in a time window, through CRM search, without losing any to HubSpot's
//! 10,000-results-per-query cap (SPEC section 6; peers lose records exactly here).
//!
//! Searches filter the last-modified date to `[from, to)` sorted ascending and page by
//! offset. When a query reaches 10,000 results, the last instant it reached is drained on its
//! own: `EQ` the instant and `hs_object_id GT` the last id, sorted by id, as many queries as
//! it takes (more than 10,000 records may share one millisecond after a bulk update); then a
//! fresh range query starts strictly after that instant. Records seen twice are dropped. Search answers ids and dates only; callers read the
//! records' properties, history and associations through batch reads.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::api;
use crate::error::Result;
use crate::extract::Window;
use crate::http::HttpClient;
use crate::model::ObjectType;

/// HubSpot stops every search query at this many results (a 400 past it).
pub const RESULT_CAP: usize = 10_000;
/// HubSpot's largest search page.
pub const SEARCH_PAGE: usize = 200;

/// The property search filters on: `lastmodifieddate` for contacts, `hs_lastmodifieddate`
/// for every other type.
pub fn last_modified_property(object_type: &ObjectType) -> &'static str {
    if object_type.type_id == "0-1" { "lastmodifieddate" } else { "hs_lastmodifieddate" }
}

/// Where the next query starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    /// Last-modified from `from` (inclusive or not) to the window's end, by date.
    Range {
        from_ms: i64,
        inclusive: bool,
        offset: usize,
    },
    /// Every record modified at `at_ms` with an id above `after_id`, by id.
    Instant {
        at_ms: i64,
        after_id: Option<i64>,
        offset: usize,
    },
    Done,
}

/// A paginator over the records of one type changed in a window.
pub struct ChangedRecords<'a> {
    client: &'a HttpClient,
    path: String,
    property: &'static str,
    window: Window,
    cursor: Cursor,
    /// Ids already returned: restarts re-read the records at their boundary instant.
    seen: HashSet<i64>,
    /// Search requests sent so far.
    pub queries: u64,
}

impl<'a> ChangedRecords<'a> {
    pub fn new(client: &'a HttpClient, object_type: &ObjectType, window: Window) -> ChangedRecords<'a> {
        ChangedRecords {
            client,
            path: format!("/crm/v3/objects/{}/search", object_type.api_name),
            property: last_modified_property(object_type),
            window,
            cursor: Cursor::Range { from_ms: window.from.timestamp_millis(), inclusive: true, offset: 0 },
            seen: HashSet::new(),
            queries: 0,
        }
    }

    /// The next page of records not returned before (ids and dates only); `None` when the
    /// window is exhausted. A page may be empty when it held only records already seen.
    pub async fn next_page(&mut self) -> Result<Option<Vec<api::SimpleObject>>> {
        let (body, offset) = match self.cursor {
            Cursor::Done => return Ok(None),
            Cursor::Range { from_ms, inclusive, offset } => (self.range_query(from_ms, inclusive, offset), offset),
            Cursor::Instant { at_ms, after_id, offset } => (self.instant_query(at_ms, after_id, offset), offset),
        };
        self.queries += 1;
        let page: api::Page<api::SimpleObject> = self.client.post_json(&self.path, &body).await?;
        let more = page.next_after().is_some();
        let last = page.results.last().map(|r| (self.modified_ms(r), r.id.parse::<i64>().ok()));
        let fetched = page.results.len();
        self.cursor = advance(self.cursor, offset + fetched, more && fetched > 0, last);
        let fresh = page
            .results
            .into_iter()
            .filter(|r| self.window.contains_text(r.properties.get(self.property).and_then(|v| v.as_deref())))
            .filter(|r| r.id.parse::<i64>().map(|id| self.seen.insert(id)).unwrap_or(true))
            .collect();
        Ok(Some(fresh))
    }

    fn modified_ms(&self, r: &api::SimpleObject) -> Option<i64> {
        let text = r.properties.get(self.property).and_then(|v| v.as_deref())?;
        crate::schema::parse_instant(text).map(|t| t.timestamp_millis())
    }

    fn range_query(&self, from_ms: i64, inclusive: bool, offset: usize) -> Value {
        let filters = json!([
            {"propertyName": self.property, "operator": if inclusive { "GTE" } else { "GT" }, "value": iso_ms(from_ms)},
            {"propertyName": self.property, "operator": "LT", "value": crate::schema::iso(self.window.to)},
        ]);
        self.query(filters, self.property, offset)
    }

    fn instant_query(&self, at_ms: i64, after_id: Option<i64>, offset: usize) -> Value {
        let mut filters = vec![json!({"propertyName": self.property, "operator": "EQ", "value": iso_ms(at_ms)})];
        if let Some(id) = after_id {
            filters.push(json!({"propertyName": "hs_object_id", "operator": "GT", "value": id.to_string()}));
        }
        self.query(Value::Array(filters), "hs_object_id", offset)
    }

    fn query(&self, filters: Value, sort_by: &str, offset: usize) -> Value {
        json!({
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": sort_by, "direction": "ASCENDING"}],
            "properties": ["hs_object_id", self.property],
            "limit": SEARCH_PAGE,
            "after": offset.to_string(),
        })
    }
}

/// The cursor after a page that brought the query to `read` results; `more` when the API
/// offered a next page, `last` the (last-modified ms, id) of the page's last record.
fn advance(cursor: Cursor, read: usize, more: bool, last: Option<(Option<i64>, Option<i64>)>) -> Cursor {
    let at_cap = read + SEARCH_PAGE > RESULT_CAP;
    match cursor {
        Cursor::Done => Cursor::Done,
        Cursor::Range { from_ms, inclusive, .. } => {
            if !more {
                return Cursor::Done;
            }
            if !at_cap {
                return Cursor::Range { from_ms, inclusive, offset: read };
            }
            // Sorted ascending: the last record holds the latest instant read. Records at
            // that instant may go on past the cap in any order, so drain the instant by id
            // (usually one page), then go on strictly after it.
            match last {
                Some((Some(last_ms), _)) => Cursor::Instant { at_ms: last_ms, after_id: None, offset: 0 },
                _ => Cursor::Instant { at_ms: from_ms, after_id: None, offset: 0 },
            }
        }
        Cursor::Instant { at_ms, after_id, .. } => {
            if !more {
                return Cursor::Range { from_ms: at_ms, inclusive: false, offset: 0 };
            }
            if !at_cap {
                return Cursor::Instant { at_ms, after_id, offset: read };
            }
            let last_id = last.and_then(|(_, id)| id);
            Cursor::Instant { at_ms, after_id: last_id.or(after_id), offset: 0 }
        }
    }
}

fn iso_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map(crate::schema::iso).unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_query_drains_its_last_instant_by_id_then_goes_on_after_it() {
        let range = Cursor::Range { from_ms: 100, inclusive: true, offset: 0 };
        // Below the cap: next page of the same query.
        assert_eq!(
            advance(range, 200, true, Some((Some(150), Some(7)))),
            Cursor::Range { from_ms: 100, inclusive: true, offset: 200 }
        );
        // At the cap: drain the last instant read by id, whether time moved or not.
        assert_eq!(
            advance(range, 10_000, true, Some((Some(180), Some(7)))),
            Cursor::Instant { at_ms: 180, after_id: None, offset: 0 }
        );
        let instant = advance(range, 10_000, true, Some((Some(100), Some(7))));
        assert_eq!(instant, Cursor::Instant { at_ms: 100, after_id: None, offset: 0 });
        let next = advance(instant, 10_000, true, Some((Some(100), Some(99_000))));
        assert_eq!(next, Cursor::Instant { at_ms: 100, after_id: Some(99_000), offset: 0 });
        // The instant drained: the range resumes strictly after it.
        assert_eq!(
            advance(next, 400, false, Some((Some(100), Some(99_400)))),
            Cursor::Range { from_ms: 100, inclusive: false, offset: 0 }
        );
        assert_eq!(advance(range, 50, false, Some((Some(150), Some(7)))), Cursor::Done);
    }
}
