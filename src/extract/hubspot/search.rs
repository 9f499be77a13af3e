//! Records changed in a time window, through CRM search, without losing any to HubSpot's
//! 10,000-results-per-query cap (SPEC section 6; peers lose records exactly here).
//!
//! No query is paged by offset. An offset counts positions in a result set that moves while
//! it is read: a record returned on an earlier page and modified during the run leaves the
//! window, every later result shifts left by one, and one unrelated change would never be
//! read. So every page is a fresh query that re-anchors on the last instant read: last-modified
//! `GTE` that instant and `LT` the window's end, sorted ascending, dropping ids already
//! returned. When a whole page shares one instant (a bulk update can put more than 10,000
//! changes in one millisecond), that instant is drained on its own by `EQ` the instant and
//! `hs_object_id GT` the last id read, sorted by id; then the range goes on strictly after it.
//! No query reads past its first page, so HubSpot's 10,000-results cap is never reached.
//! Search answers ids and dates only; callers read the records' properties, history and
//! associations through batch reads.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::api;
use crate::error::Result;
use crate::extract::Window;
use crate::http::HttpClient;
use crate::model::ObjectType;

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
    },
    /// Every record modified at `at_ms` with an id above `after_id`, by id.
    Instant {
        at_ms: i64,
        after_id: Option<i64>,
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
            cursor: Cursor::Range { from_ms: window.from.timestamp_millis(), inclusive: true },
            seen: HashSet::new(),
            queries: 0,
        }
    }

    /// The next page of records not returned before (ids and dates only); `None` when the
    /// window is exhausted. A page may be empty when it held only records already seen.
    pub async fn next_page(&mut self) -> Result<Option<Vec<api::SimpleObject>>> {
        let body = match self.cursor {
            Cursor::Done => return Ok(None),
            Cursor::Range { from_ms, inclusive } => self.range_query(from_ms, inclusive),
            Cursor::Instant { at_ms, after_id } => self.instant_query(at_ms, after_id),
        };
        self.queries += 1;
        let page: api::Page<api::SimpleObject> = self.client.post_json(&self.path, &body).await?;
        let more = page.next_after().is_some() && !page.results.is_empty();
        let instants: Vec<Option<i64>> = page.results.iter().map(|r| self.modified_ms(r)).collect();
        let read = PageRead {
            more,
            last_ms: instants.last().copied().flatten(),
            one_instant: instants.windows(2).all(|w| w[0] == w[1]),
            last_id: page.results.last().and_then(|r| r.id.parse::<i64>().ok()),
        };
        self.cursor = advance(self.cursor, read);
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

    fn range_query(&self, from_ms: i64, inclusive: bool) -> Value {
        let filters = json!([
            {"propertyName": self.property, "operator": if inclusive { "GTE" } else { "GT" }, "value": iso_ms(from_ms)},
            {"propertyName": self.property, "operator": "LT", "value": crate::schema::iso(self.window.to)},
        ]);
        self.query(filters, self.property)
    }

    fn instant_query(&self, at_ms: i64, after_id: Option<i64>) -> Value {
        let mut filters = vec![json!({"propertyName": self.property, "operator": "EQ", "value": iso_ms(at_ms)})];
        if let Some(id) = after_id {
            filters.push(json!({"propertyName": "hs_object_id", "operator": "GT", "value": id.to_string()}));
        }
        self.query(Value::Array(filters), "hs_object_id")
    }

    /// A first page, always: no `after`.
    fn query(&self, filters: Value, sort_by: &str) -> Value {
        json!({
            "filterGroups": [{"filters": filters}],
            "sorts": [{"propertyName": sort_by, "direction": "ASCENDING"}],
            "properties": ["hs_object_id", self.property],
            "limit": SEARCH_PAGE,
        })
    }
}

/// What a page said about where the next query starts.
#[derive(Debug, Clone, Copy)]
struct PageRead {
    /// More results matched than the page held.
    more: bool,
    /// Last-modified of the page's last record.
    last_ms: Option<i64>,
    /// Every record of the page has the same last-modified instant.
    one_instant: bool,
    /// Id of the page's last record.
    last_id: Option<i64>,
}

/// The cursor after a page.
fn advance(cursor: Cursor, page: PageRead) -> Cursor {
    match cursor {
        Cursor::Done => Cursor::Done,
        Cursor::Range { from_ms, .. } => {
            if !page.more {
                return Cursor::Done;
            }
            let Some(last_ms) = page.last_ms else {
                // No date on the last record (never seen from HubSpot): drain where it began.
                return Cursor::Instant { at_ms: from_ms, after_id: None };
            };
            if page.one_instant {
                // A page of one instant: more records may share it than a page holds.
                Cursor::Instant { at_ms: last_ms, after_id: None }
            } else {
                // Re-anchor on the last instant read; its records already read are dropped.
                Cursor::Range { from_ms: last_ms, inclusive: true }
            }
        }
        Cursor::Instant { at_ms, after_id } => match (page.more, page.last_id) {
            (true, Some(id)) => Cursor::Instant { at_ms, after_id: Some(id) },
            (true, None) => Cursor::Instant { at_ms, after_id },
            (false, _) => Cursor::Range { from_ms: at_ms, inclusive: false },
        },
    }
}

fn iso_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map(crate::schema::iso).unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(more: bool, last_ms: i64, one_instant: bool, last_id: i64) -> PageRead {
        PageRead { more, last_ms: Some(last_ms), one_instant, last_id: Some(last_id) }
    }

    #[test]
    fn every_page_re_anchors_and_a_page_of_one_instant_is_drained_by_id() {
        let range = Cursor::Range { from_ms: 100, inclusive: true };
        // A page spanning instants: the next query starts at its last instant (inclusive).
        assert_eq!(advance(range, page(true, 150, false, 7)), Cursor::Range { from_ms: 150, inclusive: true });
        // A page of one instant: drain it by id, then go on strictly after it.
        let instant = advance(range, page(true, 150, true, 7));
        assert_eq!(instant, Cursor::Instant { at_ms: 150, after_id: None });
        let next = advance(instant, page(true, 150, true, 99_000));
        assert_eq!(next, Cursor::Instant { at_ms: 150, after_id: Some(99_000) });
        assert_eq!(advance(next, page(false, 150, true, 99_400)), Cursor::Range { from_ms: 150, inclusive: false });
        // Everything matched fit on the page: done.
        assert_eq!(advance(range, page(false, 150, false, 7)), Cursor::Done);
    }

    #[test]
    fn no_query_carries_an_offset() {
        let client = crate::http::HttpClient::new(crate::http::ClientOptions {
            base_url: url::Url::parse("http://127.0.0.1:9").unwrap(),
            auth: crate::http::Auth::Bearer("t".into()),
            rate_limit: crate::http::RateLimit::Unlimited,
            search_rate_limit: crate::http::RateLimit::Unlimited,
            adjust_from_headers: false,
            max_attempts: 1,
            connect_timeout: std::time::Duration::from_secs(1),
            request_timeout: std::time::Duration::from_secs(1),
            unauthorized_hint: "",
            daily_hint: "",
            token_costs: None,
        })
        .unwrap();
        let contacts = crate::model::standard_type("contacts").unwrap().to_object_type();
        let window = Window {
            from: crate::schema::parse_instant("2026-11-01T00:00:00Z").unwrap(),
            to: crate::schema::parse_instant("2026-11-02T00:00:00Z").unwrap(),
        };
        let pager = ChangedRecords::new(&client, &contacts, window);
        for body in [pager.range_query(1, true), pager.instant_query(1, Some(5))] {
            assert!(body.get("after").is_none(), "{body}");
        }
    }
}
