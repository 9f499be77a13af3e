//! Records changed in a time window, through CRM search, without losing any to HubSpot's
//! 10,000-results-per-query cap (other exporters lose records exactly here).
//!
//! No query is paged, by offset or otherwise, and no answer is trusted to be in order.
//! An offset counts positions in a result set that moves while it is read: a record returned
//! on an earlier page and modified during the run leaves the window, every later result
//! shifts left by one, and one unrelated change would never be read. HubSpot's search index
//! also returns results out of order (by up to about an hour, as other connectors saw), so
//! re-anchoring each page on the last instant read could skip the records sorted after it.
//!
//! So the window is walked in time slices sized so that each slice's matches fit on one page
//! (200): a slice whose answer says more matched (`total` over the page) is cut smaller and
//! asked again, a slice answered whole is done whatever the order of its results, and the
//! next slice's length follows the density just seen. A slice of one millisecond that still
//! holds more than a page (a bulk update can put more than 10,000 changes in one
//! millisecond) is drained by `hs_object_id GT` the last id read, sorted by id. No query
//! reads a second page, so HubSpot's 10,000-results cap is never reached. A slice that
//! returned fewer records than the `total` it reported is read once more (the count is in
//! the manifest's warnings as `search_window_reread`). Ids already returned are dropped.
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

/// Results aimed at per slice: under a page, so that a slice grown from a sparser one
/// still fits.
const SLICE_TARGET: i64 = 150;

/// Where the next query starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cursor {
    /// Last-modified in `[from_ms, from_ms + span_ms)` (cut at the window's end), by date.
    Slice {
        from_ms: i64,
        span_ms: i64,
        reread: bool,
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
    /// Ids already returned: slices read again and drains re-read records.
    seen: HashSet<i64>,
    /// Search requests sent so far.
    pub queries: u64,
    /// Slices read again because they returned fewer records than they reported.
    pub rereads: u64,
    /// Answers in a row that held records, none of them matching the query's filter.
    contradictions: u32,
}

/// Answers in a row that contradict their filter before a search is given up. HubSpot's index
/// can return a few records whose last modification moved since they were indexed, but never
/// a whole page of them four times running.
const CONTRADICTIONS: u32 = 4;

impl<'a> ChangedRecords<'a> {
    pub fn new(client: &'a HttpClient, object_type: &ObjectType, window: Window) -> ChangedRecords<'a> {
        let (from_ms, to_ms) = (window.from.timestamp_millis(), window.to.timestamp_millis());
        ChangedRecords {
            client,
            path: format!("/crm/v3/objects/{}/search", object_type.api_name),
            property: last_modified_property(object_type),
            window,
            cursor: if from_ms < to_ms {
                Cursor::Slice { from_ms, span_ms: to_ms - from_ms, reread: false }
            } else {
                Cursor::Done
            },
            seen: HashSet::new(),
            queries: 0,
            rereads: 0,
            contradictions: 0,
        }
    }

    /// The next page of records not returned before (ids and dates only); `None` when the
    /// window is exhausted. A page may be empty when it held only records already seen.
    pub async fn next_page(&mut self) -> Result<Option<Vec<api::SimpleObject>>> {
        let to_ms = self.window.to.timestamp_millis();
        let (body, asked) = match self.cursor {
            Cursor::Done => return Ok(None),
            Cursor::Slice { from_ms, span_ms, .. } => {
                let until_ms = (from_ms + span_ms).min(to_ms);
                (self.slice_query(from_ms, until_ms), from_ms..until_ms)
            }
            Cursor::Instant { at_ms, after_id } => (self.instant_query(at_ms, after_id), at_ms..at_ms + 1),
        };
        self.queries += 1;
        let page: api::Page<api::SimpleObject> = self.client.post_json(&self.path, &body).await?;
        let read = PageRead {
            more: page.next_after().is_some() && !page.results.is_empty(),
            returned: page.results.len() as u64,
            total: page.total,
            last_id: page.results.last().and_then(|r| r.id.parse::<i64>().ok()),
        };
        self.check_progress(&page.results, &asked, read, &body)?;
        self.cursor = advance(self.cursor, read, to_ms);
        if matches!(self.cursor, Cursor::Slice { reread: true, .. }) {
            self.rereads += 1;
            tracing::warn!(path = %self.path, returned = read.returned, total = ?read.total, "A search slice returned fewer records than it reported; reading it again.");
        }
        let fresh = page
            .results
            .into_iter()
            .filter(|r| {
                crate::extract::in_window(&self.window, r.properties.get(self.property).and_then(|v| v.as_deref()))
            })
            .filter(|r| r.id.parse::<i64>().map(|id| self.seen.insert(id)).unwrap_or(true))
            .collect();
        Ok(Some(fresh))
    }

    /// Ends a search that makes no progress: a drain by id whose last id does not rise (the
    /// server ignores the id filter), or answers that hold records of which none matches the
    /// time filter, several in a row (the server ignores the time filter). Either would
    /// otherwise repeat without end; a fixed cap on queries would instead cut a legitimate
    /// window of millions of changes.
    fn check_progress(
        &mut self,
        results: &[api::SimpleObject],
        asked: &std::ops::Range<i64>,
        read: PageRead,
        body: &Value,
    ) -> Result<()> {
        let filter = || body["filterGroups"].to_string();
        if let (Cursor::Instant { after_id: Some(after), .. }, true) = (self.cursor, read.more)
            && read.last_id.is_none_or(|last| last <= after)
        {
            return Err(self.no_progress(format!(
                "a page of records modified in one millisecond sorted by id ended at id {:?}, not above the {after} it asked for (filter {})",
                read.last_id,
                filter()
            )));
        }
        let modified = |r: &api::SimpleObject| {
            r.properties.get(self.property).and_then(|v| v.as_deref()).and_then(crate::schema::parse_instant)
        };
        let inside = results.iter().filter_map(modified).any(|t| asked.contains(&t.timestamp_millis()));
        self.contradictions = if results.is_empty() || inside { 0 } else { self.contradictions + 1 };
        if self.contradictions >= CONTRADICTIONS {
            return Err(self.no_progress(format!(
                "{CONTRADICTIONS} answers in a row held {} records, none modified in the window asked for (filter {})",
                read.returned,
                filter()
            )));
        }
        Ok(())
    }

    fn no_progress(&self, detail: String) -> crate::error::Error {
        crate::error::Error::Inconsistent {
            method: "POST",
            path: self.path.clone(),
            detail: format!(
                "{detail}: the search ignores its filters (a proxy in between, or a server that is not HubSpot?), so \
                 the changes of this window cannot be found. Nothing was committed; --mode full reads every record \
                 without search"
            ),
        }
    }

    fn slice_query(&self, from_ms: i64, until_ms: i64) -> Value {
        let filters = json!([
            {"propertyName": self.property, "operator": "GTE", "value": iso_ms(from_ms)},
            {"propertyName": self.property, "operator": "LT", "value": iso_ms(until_ms)},
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

/// Every live id of a type, for a reconcile: search pages of 200 ids (list pages hold 100, and
/// search has a budget of its own, so the account's general one is left to the association
/// refresh). Each query asks for the ids above the highest one read, sorted by id, so none
/// reads a second page and the 10,000-results cap is never reached; the highest id of a page
/// is its anchor whatever order the page came in. Returns the ids and the requests sent.
pub async fn every_id(client: &HttpClient, object_type: &ObjectType) -> Result<(Vec<String>, u64)> {
    let path = format!("/crm/v3/objects/{}/search", object_type.api_name);
    let (mut ids, mut requests, mut after) = (Vec::new(), 0u64, None::<i64>);
    loop {
        let filters: Vec<Value> = after
            .map(|a| json!({"propertyName": "hs_object_id", "operator": "GT", "value": a.to_string()}))
            .into_iter()
            .collect();
        let body = json!({
            "filterGroups": if filters.is_empty() { json!([]) } else { json!([{"filters": filters}]) },
            "sorts": [{"propertyName": "hs_object_id", "direction": "ASCENDING"}],
            "properties": ["hs_object_id"],
            "limit": SEARCH_PAGE,
        });
        requests += 1;
        let page: api::Page<api::SimpleObject> = client.post_json(&path, &body).await?;
        let page_ids: Vec<i64> = page.results.iter().filter_map(|r| r.id.parse().ok()).collect();
        let highest = page_ids.iter().copied().max();
        ids.extend(page_ids.iter().filter(|id| after.is_none_or(|a| **id > a)).map(i64::to_string));
        match highest {
            Some(h) if page.results.len() >= SEARCH_PAGE && after.is_none_or(|a| h > a) => after = Some(h),
            _ => return Ok((ids, requests)),
        }
    }
}

/// What a page said about where the next query starts.
#[derive(Debug, Clone, Copy)]
struct PageRead {
    /// More results matched than the page held.
    more: bool,
    /// Results on the page.
    returned: u64,
    /// How many matched in all, as the API reported.
    total: Option<u64>,
    /// Id of the page's last record.
    last_id: Option<i64>,
}

/// The cursor after a page; `to_ms` is the window's end.
fn advance(cursor: Cursor, page: PageRead, to_ms: i64) -> Cursor {
    match cursor {
        Cursor::Done => Cursor::Done,
        Cursor::Slice { from_ms, span_ms, reread } => {
            let span_ms = span_ms.min(to_ms - from_ms).max(1);
            let total = page.total.unwrap_or(page.returned).max(page.returned) as i64;
            if page.more {
                if span_ms == 1 {
                    return Cursor::Instant { at_ms: from_ms, after_id: None };
                }
                // Too many for one page: a slice as long as the density says fits.
                let cut = (span_ms * SLICE_TARGET / total.max(1)).clamp(1, span_ms / 2);
                return Cursor::Slice { from_ms, span_ms: cut, reread: false };
            }
            if (page.returned as i64) < total && !reread {
                return Cursor::Slice { from_ms, span_ms, reread: true };
            }
            let next = from_ms + span_ms;
            if next >= to_ms {
                return Cursor::Done;
            }
            // Longer when sparse, never longer than the density seen allows.
            let grown = if total == 0 { span_ms * 4 } else { span_ms * SLICE_TARGET / total };
            Cursor::Slice { from_ms: next, span_ms: grown.clamp(1, span_ms * 4).max(1), reread: false }
        }
        Cursor::Instant { at_ms, after_id } => match (page.more, page.last_id) {
            (true, Some(id)) => Cursor::Instant { at_ms, after_id: Some(id) },
            (true, None) => Cursor::Instant { at_ms, after_id },
            (false, _) if at_ms + 1 >= to_ms => Cursor::Done,
            (false, _) => Cursor::Slice { from_ms: at_ms + 1, span_ms: 1, reread: false },
        },
    }
}

fn iso_ms(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).map(crate::schema::iso).unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(more: bool, returned: u64, total: u64, last_id: i64) -> PageRead {
        PageRead { more, returned, total: Some(total), last_id: Some(last_id) }
    }

    #[test]
    fn slices_shrink_to_fit_a_page_grow_when_sparse_and_one_millisecond_is_drained_by_id() {
        let to = 1_000_000;
        let whole = Cursor::Slice { from_ms: 0, span_ms: to, reread: false };
        // 3,000 matched: a slice the density says holds about 150.
        assert_eq!(
            advance(whole, page(true, 200, 3000, 7), to),
            Cursor::Slice { from_ms: 0, span_ms: 50_000, reread: false }
        );
        // Answered whole: the next slice starts where it ended, sized by what it held.
        let done = advance(Cursor::Slice { from_ms: 0, span_ms: 50_000, reread: false }, page(false, 100, 100, 7), to);
        assert_eq!(done, Cursor::Slice { from_ms: 50_000, span_ms: 75_000, reread: false });
        // Fewer returned than reported: the same slice once more, then on.
        let short = advance(Cursor::Slice { from_ms: 0, span_ms: 10, reread: false }, page(false, 90, 100, 7), to);
        assert_eq!(short, Cursor::Slice { from_ms: 0, span_ms: 10, reread: true });
        assert!(matches!(advance(short, page(false, 90, 100, 7), to), Cursor::Slice { from_ms: 10, .. }));
        // One millisecond over a page: drained by id, then the next millisecond.
        let ms = Cursor::Slice { from_ms: 500, span_ms: 1, reread: false };
        let drain = advance(ms, page(true, 200, 25_000, 7), to);
        assert_eq!(drain, Cursor::Instant { at_ms: 500, after_id: None });
        let next = advance(drain, page(true, 200, 25_000, 99_000), to);
        assert_eq!(next, Cursor::Instant { at_ms: 500, after_id: Some(99_000) });
        assert_eq!(
            advance(next, page(false, 50, 50, 99_050), to),
            Cursor::Slice { from_ms: 501, span_ms: 1, reread: false }
        );
        // The window's end.
        assert_eq!(
            advance(Cursor::Slice { from_ms: 900_000, span_ms: 200_000, reread: false }, page(false, 3, 3, 1), to),
            Cursor::Done
        );
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
            max_url_bytes: crate::http::DEFAULT_MAX_URL_BYTES,
        })
        .unwrap();
        let contacts = crate::model::standard_type("contacts").unwrap().to_object_type();
        let window = Window {
            from: crate::schema::parse_instant("2026-11-01T00:00:00Z").unwrap(),
            to: crate::schema::parse_instant("2026-11-02T00:00:00Z").unwrap(),
        };
        let pager = ChangedRecords::new(&client, &contacts, window);
        for body in [pager.slice_query(1, 2), pager.instant_query(1, Some(5))] {
            assert!(body.get("after").is_none(), "{body}");
        }
    }
}
